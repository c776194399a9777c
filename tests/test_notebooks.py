"""The notebooks in notebooks/ run top to bottom in a fresh, temporary kernel of this very interpreter.

The kernel is ipykernel's "python3" kernelspec as installed in this environment (sys.prefix), or, where none
is installed there, ipykernel's built-in one, which also starts sys.executable. Kernelspecs under HOME are
never looked at: the tests run with an empty HOME that holds a broken "python3" spec, so a wrong choice fails.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = ["01_quickstart", "02_d2l_forward_backward", "03_goodfellow_backprop", "04_torralba_backprop",
            "05_models", "06_backprop_through_time"]
CELL_TIMEOUT = 120     # seconds; the six notebooks together take a few minutes


def kernel_manager():
    """A KernelManager for ipykernel's python3 kernel of this interpreter, blind to user-level kernelspecs."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    env_kernels = os.path.join(sys.prefix, "share", "jupyter", "kernels")
    # Only this environment's kernels; ensure_native_kernel (the default) falls back to ipykernel's own spec,
    # whose command is sys.executable. jupyter_client turns a bare "python" in a spec into sys.executable too.
    specs = KernelSpecManager(kernel_dirs=[env_kernels], ensure_native_kernel=True)
    return KernelManager(kernel_name="python3", kernel_spec_manager=specs)


@pytest.fixture
def clean_home(tmp_path, monkeypatch):
    """An empty HOME whose only kernelspec is a broken python3: the runner must not pick it up."""
    import matplotlib
    cache = matplotlib.get_configdir()                # keep matplotlib's font cache: no rebuild per kernel
    home = tmp_path / "home"
    broken = home / ".local" / "share" / "jupyter" / "kernels" / "python3"
    broken.mkdir(parents=True)
    (broken / "kernel.json").write_text('{"argv": ["/nonexistent/python", "-m", "ipykernel_launcher", '
                                        '"-f", "{connection_file}"], "display_name": "broken", '
                                        '"language": "python"}')
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("MPLCONFIGDIR", cache)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.delenv("JUPYTER_PATH", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    return work


def execute(nb, cwd: Path):
    client = nbclient.NotebookClient(nb, km=kernel_manager(), timeout=CELL_TIMEOUT, allow_errors=False,
                                     resources={"metadata": {"path": str(cwd)}})
    return client.execute()


def test_the_notebooks_are_there():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_executed(path):
    """Committed with its outputs (`make notebooks`), so it reads without running: every code cell ran, in
    order, without an error, and the pictures are there."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), \
        f"{path.name} is not committed executed top to bottom: run `make notebooks`"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"], f"{path.name} has an error output"
    assert any({"image/svg+xml", "image/png"} & set(o.get("data", {})) for o in outputs), \
        f"{path.name} shows no picture: run `make notebooks`"


def test_kernel_is_this_interpreter(clean_home):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys; print(sys.executable)")])
    out = execute(nb, clean_home)
    printed = out.cells[0].outputs[0]["text"].strip()
    assert Path(printed).resolve() == Path(sys.executable).resolve()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, clean_home):
    nb = nbformat.read(path, as_version=4)          # a copy in memory: the committed file is not touched
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    try:
        execute(nb, clean_home)
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{path.name} failed:\n{e}")
    produced = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in produced if o.get("output_type") == "error"]
    # pictures inline: at least one SVG or PNG among the outputs
    assert any({"image/svg+xml", "image/png"} & set(o.get("data", {})) for o in produced), \
        f"{path.name} shows no picture"
