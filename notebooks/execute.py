"""Execute every notebook in this folder in place, so they are committed with their outputs (`make notebooks`).

Each notebook runs top to bottom in a fresh kernel of this interpreter, in a temporary working folder (the
files a notebook writes do not land in the repository). Execution counts are renumbered from 1 and timing
metadata is dropped, so a re-run changes only what really changed.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import nbclient
import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

HERE = Path(__file__).resolve().parent


def execute(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    specs = KernelSpecManager(kernel_dirs=[str(Path(sys.prefix) / "share" / "jupyter" / "kernels")],
                              ensure_native_kernel=True)
    km = KernelManager(kernel_name="python3", kernel_spec_manager=specs)
    with tempfile.TemporaryDirectory() as work:
        nbclient.NotebookClient(nb, km=km, timeout=300, allow_errors=False,
                                resources={"metadata": {"path": work}}).execute()
    count = 0
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            count += 1
            cell.execution_count = count
            for out in cell.outputs:
                if "execution_count" in out:
                    out["execution_count"] = count
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)


if __name__ == "__main__":
    for p in sorted(HERE.glob("*.ipynb")) if len(sys.argv) < 2 else [Path(a) for a in sys.argv[1:]]:
        print(f"executing {p.name}", flush=True)
        execute(p)
