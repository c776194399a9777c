"""The command line (cli.py) and the demo it runs (demo.py): results, files, and one-line errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import graphcompiler as gc
from graphcompiler.cli import main
from graphcompiler.demo import build_mlp, gradient_check, load_digits_split, run_demo

COMMANDS = ["demo", "render", "grad", "export", "run", "show", "explore"]
HAS_DOT = shutil.which("dot") is not None


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the command line in-process: (exit status, stdout, stderr)."""
    try:
        status = main([str(a) for a in args])
    except SystemExit as e:               # argparse: --help, --version and bad arguments
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status: int, err: str, *fragments: str) -> None:
    assert status != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("graphcompiler")
    for f in fragments:
        assert f in lines[0], (f, lines[0])


@pytest.fixture
def mlp_file(tmp_path):
    """The README's MLP saved without gradients, with a batch of feeds as .npy files."""
    rng = np.random.default_rng(3)
    g = gc.Graph("mlp")
    x = g.input("x", shape=(None, 4))
    y = g.input("y", shape=(None,), dtype="int64")
    W1 = g.parameter("W1", rng.standard_normal((4, 3)))
    W2 = g.parameter("W2", rng.standard_normal((3, 2)))
    lam = g.constant(0.01, name="lambda")
    h = gc.relu(gc.matmul(x, W1, name="z"), name="h")
    o = gc.matmul(h, W2, name="o")
    L = gc.softmax_cross_entropy(o, y, name="L")
    s = gc.multiply(lam / 2, gc.sum(W1 * W1) + gc.sum(W2 * W2), name="s")
    gc.add(L, s, name="J")
    path = tmp_path / "mlp.json"
    g.save(path)
    X, Y = rng.standard_normal((6, 4)), rng.integers(0, 2, size=6)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", Y)
    return path, g, X, Y


# -- help and argument errors ---------------------------------------------------------------------------

def test_help_lists_every_command(capsys):
    status, out, _ = cli(capsys, "--help")
    assert status == 0
    for c in COMMANDS:
        assert c in out


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(capsys, command):
    status, out, _ = cli(capsys, command, "--help")
    assert status == 0
    assert out.startswith(f"usage: graphcompiler {command}")


@pytest.mark.parametrize("args, fragment", [
    (["grad", "g.json"], "required"),
    (["render", "g.json", "-o", "x.svg", "--show", "sideways"], "--show"),
    (["demo", "--epochs", "0"], "not positive"),
    (["demo", "--epochs", "ten"], "not a whole number"),
    (["run", "g.json", "--feed", "x"], "NAME=FILE.npy"),
    (["grad", "g.json", "--of", "J", "--wrt", "W1,,W2", "-o", "out.json"], "comma-separated"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_are_one_line(capsys, args, fragment):
    status, _, err = cli(capsys, *args)
    assert status == 2
    assert_one_line_error(status, err, fragment, "--help")


def test_no_command_prints_help(capsys):
    status, out, _ = cli(capsys)
    assert status == 2 and "COMMAND" in out


# -- bad files --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["show", "render", "grad", "export", "run"])
def test_missing_file_is_one_line(capsys, tmp_path, command):
    extra = {"render": ["-o", tmp_path / "a.svg"], "grad": ["--of", "J", "--wrt", "W1", "-o", tmp_path / "b.json"],
             "export": ["--node", "J"], "run": [], "show": []}[command]
    status, _, err = cli(capsys, command, tmp_path / "nope.json", *extra)
    assert_one_line_error(status, err, "nope.json", "no such graph file")


@pytest.mark.parametrize("content", ["not json at all {", '{"format": "something-else", "version": 1}',
                                     '{"format": "graphcompiler", "version": 1, "nodes": [{"name": "a", '
                                     '"op": "os.system", "inputs": [], "shape": [], "dtype": "float64", '
                                     '"attrs": {}, "is_gradient": false, "origin": null}]}'])
def test_bad_graph_file_is_one_line(capsys, tmp_path, content):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    status, _, err = cli(capsys, "show", bad)
    assert_one_line_error(status, err, "graphcompiler show: error:")
    assert status == 1


def test_unknown_node_suggests_names(capsys, mlp_file):
    path, *_ = mlp_file
    status, _, err = cli(capsys, "export", path, "--node", "lamda")
    assert_one_line_error(status, err, "'lamda'", "did you mean 'lambda'", "graphcompiler show")


# -- the commands -------------------------------------------------------------------------------------------

def test_show_prints_the_listing(capsys, mlp_file):
    path, g, *_ = mlp_file
    status, out, _ = cli(capsys, "show", path)
    assert status == 0
    assert out.strip() == str(gc.load(path)).strip()
    assert all(n.name in out for n in g.nodes)


def test_grad_adds_gradients_and_saves(capsys, mlp_file, tmp_path):
    path, g, X, Y = mlp_file
    out_path = tmp_path / "with_grads.json"
    status, out, _ = cli(capsys, "grad", path, "--of", "J", "--wrt", "W1,W2", "-o", out_path)
    assert status == 0 and "dJ/dW1" in out and "dJ/dW2" in out
    g2 = gc.load(out_path)
    d1, d2 = g2["dJ/dW1"], g2["dJ/dW2"]
    assert d1.is_gradient and d2.is_gradient and d1.shape == (4, 3) and d2.shape == (3, 2)
    # the same numbers as build_grad in this process
    ref = gc.build_grad(g["J"], [g["W1"], g["W2"]])
    want = gc.compile([ref[g["W1"]], ref[g["W2"]]]).run({"x": X, "y": Y})
    got = gc.compile([d1, d2]).run({"x": X, "y": Y})
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_grad_errors(capsys, mlp_file, tmp_path):
    path, *_ = mlp_file
    status, _, err = cli(capsys, "grad", path, "--of", "o", "--wrt", "W1", "-o", tmp_path / "g.json")
    assert_one_line_error(status, err, "scalar")                           # o is not a scalar
    status, _, err = cli(capsys, "grad", path, "--of", "L", "--wrt", "W1,lambda", "-o", tmp_path / "g.json")
    assert_one_line_error(status, err, "lambda")                           # L does not depend on lambda
    assert not (tmp_path / "g.json").exists()
    status, out, _ = cli(capsys, "grad", path, "--of", "L", "--wrt", "W1,lambda", "--disconnected", "zero",
                         "-o", tmp_path / "g.json")
    assert status == 0 and "dL/dlambda" in out


def test_export_prints_the_textbook_form(capsys, mlp_file, tmp_path):
    path, *_ = mlp_file
    grads_path = tmp_path / "grads.json"
    assert cli(capsys, "grad", path, "--of", "J", "--wrt", "W1,W2", "-o", grads_path)[0] == 0
    status, out, _ = cli(capsys, "export", grads_path, "--node", "dJ/dW2")
    assert status == 0
    text = out.strip()
    assert "dJ/do" in text and "lambda" in text                            # h^T dJ/do + lambda W2
    assert text == str(gc.to_sympy(gc.load(grads_path)["dJ/dW2"], form="textbook"))
    status, latex, _ = cli(capsys, "export", grads_path, "--node", "dJ/dW2", "--latex")
    assert status == 0 and r"\frac{\partial J}{\partial o}" in latex and r"\lambda" in latex
    status, expanded, _ = cli(capsys, "export", grads_path, "--node", "dJ/dW2", "--expand")
    assert status == 0 and "dJ/do" not in expanded and "softmax" in expanded


def test_export_derivation(capsys, mlp_file, tmp_path):
    path, *_ = mlp_file
    grads_path = tmp_path / "grads.json"
    assert cli(capsys, "grad", path, "--of", "J", "--wrt", "W1,W2", "-o", grads_path)[0] == 0
    status, out, _ = cli(capsys, "export", grads_path, "--node", "dJ/dW1,dJ/dW2", "--derivation")
    assert status == 0
    lhs = [line.split(" = ")[0] for line in out.strip().splitlines()]
    assert lhs[-1] == "dJ/dW1" and "dJ/dW2" in lhs and "dJ/do" in lhs       # backprop's order: dJ/dW1 last
    assert lhs.index("dJ/do") < lhs.index("dJ/dW2")
    loaded = gc.load(grads_path)
    assert out.strip() == str(gc.derivation([loaded["dJ/dW1"], loaded["dJ/dW2"]]))
    status, latex, _ = cli(capsys, "export", grads_path, "--node", "dJ/dW2", "--derivation", "--latex")
    assert status == 0 and latex.startswith(r"\begin{align}")
    status, _, err = cli(capsys, "export", grads_path, "--node", "W2", "--derivation")
    assert_one_line_error(status, err, "'W2' is not one")
    status, _, err = cli(capsys, "export", grads_path, "--node", "dJ/dW2,,", "--derivation")
    assert_one_line_error(status, err, "comma-separated")


def test_run_computes_and_saves(capsys, mlp_file, tmp_path):
    path, g, X, Y = mlp_file
    feeds = ["--feed", f"x={tmp_path / 'x.npy'}", "--feed", f"y={tmp_path / 'y.npy'}"]
    status, out, _ = cli(capsys, "run", path, *feeds, "--fetch", "J,o", "-o", tmp_path / "out.npz")
    assert status == 0 and out.startswith("J () float64:")
    J_ref, o_ref = gc.compile([g["J"], g["o"]]).run({"x": X, "y": Y})
    saved = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(saved["J"], J_ref, rtol=1e-12)
    np.testing.assert_allclose(saved["o"], o_ref, rtol=1e-12)
    assert f"{float(J_ref):.6f}" in out
    # default outputs: the nodes nothing reads (J here)
    status, out, _ = cli(capsys, "run", path, *feeds)
    assert status == 0 and out.startswith("J ()")


def test_run_errors(capsys, mlp_file, tmp_path):
    path, *_ = mlp_file
    x_feed = f"x={tmp_path / 'x.npy'}"
    status, _, err = cli(capsys, "run", path, "--feed", x_feed)
    assert_one_line_error(status, err, "'y'", "--feed y=FILE.npy")
    status, _, err = cli(capsys, "run", path, "--feed", x_feed, "--feed", f"y={tmp_path / 'missing.npy'}")
    assert_one_line_error(status, err, "missing.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    status, _, err = cli(capsys, "run", path, "--feed", x_feed, "--feed", f"y={tmp_path / 'obj.npy'}")
    assert_one_line_error(status, err, "obj.npy")                           # never unpickled
    np.save(tmp_path / "short.npy", np.zeros((6, 3)))
    status, _, err = cli(capsys, "run", path, "--feed", f"x={tmp_path / 'short.npy'}", "--fetch", "o")
    assert_one_line_error(status, err, "(None, 4)", "(6, 3)")


def test_render_dot_needs_no_graphviz(capsys, mlp_file, tmp_path):
    path, g, *_ = mlp_file
    status, out, _ = cli(capsys, "render", path, "-o", tmp_path / "g.dot")
    assert status == 0
    text = (tmp_path / "g.dot").read_text()
    assert text.lstrip().startswith("digraph") and all(n.name in text for n in g.nodes if n.name != "lambda")
    status, _, err = cli(capsys, "render", path, "-o", tmp_path / "g.txt")
    assert_one_line_error(status, err, ".svg")


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot is not installed")
def test_render_svg_shows_the_nodes(capsys, mlp_file, tmp_path):
    path, *_ = mlp_file
    grads_path = tmp_path / "grads.json"
    assert cli(capsys, "grad", path, "--of", "J", "--wrt", "W1,W2", "-o", grads_path)[0] == 0
    texts = {}
    for show in ("forward", "backward"):
        out = tmp_path / f"{show}.svg"
        status, _, _ = cli(capsys, "render", grads_path, "-o", out, "--show", show)
        assert status == 0
        root = ET.parse(out).getroot()
        texts[show] = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    assert "W1" in texts["forward"] and "dJ/dW1" not in texts["forward"]
    assert "dJ/dW1" in texts["backward"]


def test_python_dash_m_and_the_console_script():
    done = subprocess.run([sys.executable, "-m", "graphcompiler", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"graphcompiler {gc.__version__}"
    script = Path(sys.executable).parent / "graphcompiler"
    if script.exists():                       # installed with pip install -e .
        done = subprocess.run([str(script), "show", "missing.json"], capture_output=True, text=True)
        assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


# -- the demo ---------------------------------------------------------------------------------------------

def test_gradient_check_passes_and_can_fail():
    X, _, y, _ = load_digits_split(0)
    mlp = build_mlp(64, 16, 10)
    good = gradient_check(mlp, X[:8], y[:8])
    assert good.max_rel_error < 1e-5 and len(good.entries) == 6
    assert str(good).startswith("gradient check: 6 entries")
    mlp.grads[mlp.W2] = mlp.grads[mlp.W2] * 1.01      # a gradient 1% off is caught
    assert gradient_check(mlp, X[:8], y[:8]).max_rel_error > 1e-3


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`graphcompiler demo` run once for the module, as `make demo` runs it: (folder, stdout, seconds)."""
    import contextlib
    import io
    import time
    work = tmp_path_factory.mktemp("demo")
    out = work / "demo-output"
    buf = io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        status = main(["demo", "--out", str(out), "--no-progress"])
    assert status == 0
    return out, buf.getvalue(), time.perf_counter() - t


def test_demo_trains_and_writes_its_files(demo_run):
    out, stdout, seconds = demo_run
    assert seconds < 60
    lines = stdout.splitlines()
    assert lines[0].startswith("gradient check: 6 entries of dJ/dW1, dJ/dW2 agree")
    final = [ln for ln in lines if ln.startswith("trained 30 epochs")]
    assert final, stdout
    accuracy = float(final[0].split("held-out accuracy ")[1].rstrip("%")) / 100
    assert accuracy >= 0.95
    epochs = [ln for ln in lines if ln.startswith("epoch ")]
    assert len(epochs) == 30
    losses = [float(ln.split("loss ")[1].split(",")[0]) for ln in epochs]
    assert losses[-1] < 0.25 * losses[0]

    for png in ("loss_curve.png", "memory.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    memory = (out / "memory_report.txt").read_text()
    assert "kept for backward" in memory and "inference (J only)" in memory
    derivation = (out / "derivation.txt").read_text()
    assert "dJ/dW1" in derivation and "dJ/dW2" in derivation
    assert r"\begin{align}" in (out / "derivation.tex").read_text()
    trained = gc.load(out / "d2l_mlp.json")
    assert {"J", "dJ/dW1", "dJ/dW2"} <= {n.name for n in trained.nodes}
    # the saved model is the trained one: its accuracy on the saved held-out data is the one printed
    (o,) = gc.compile([trained["o"]]).run({"x": np.load(out / "x_test.npy")})
    assert np.mean(o.argmax(axis=1) == np.load(out / "y_test.npy")) == pytest.approx(accuracy, abs=1e-3)
    if HAS_DOT:
        for show in ("forward", "backward"):
            ET.parse(out / f"mlp_{show}.svg")                          # valid SVG
    for path in out.iterdir():
        assert str(path) in stdout                                     # the demo says where each file is


# -- the README's commands work ---------------------------------------------------------------------------

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang: str) -> list[str]:
    text = README.read_text()
    parts = text.split("```" + lang + "\n")[1:]
    return [p.split("```")[0] for p in parts]


def test_readme_links_point_at_files():
    import re
    links = re.findall(r"\]\(([^)#]+)\)", README.read_text())
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert len(local) >= 10
    missing = [link for link in local if not (README.parent / link).exists()]
    assert not missing


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (example,) = _blocks("python")
    if not HAS_DOT:
        example = example.replace('gc.render(g, "mlp.svg"', '(lambda *a, **k: None)(g, "mlp.svg"')
    exec(compile(example, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "lambda*W2 + h.T*dJ/do" in out                    # the textbook form the README promises
    if HAS_DOT:
        ET.parse(tmp_path / "mlp.svg")


def test_readme_commands_work(demo_run, monkeypatch, capsys):
    out, *_ = demo_run
    monkeypatch.chdir(out.parent)
    lines = [ln for block in _blocks("sh") for ln in block.splitlines() if ln.startswith("graphcompiler ")]
    assert len(lines) >= 6
    import shlex
    for line in lines:
        command = line.split("  #")[0].strip()
        args = shlex.split(command)[1:]
        if args[0] == "demo":                                  # run once, by the demo_run fixture
            assert args == ["demo", "--out", "demo-output", "--epochs", "30"]
            continue
        if args[0] == "render" and not HAS_DOT:
            continue
        status, stdout, err = cli(capsys, *args)
        assert status == 0, (command, err)
        if "--node" in args and "dJ/dW2" in args and "--latex" not in args:
            assert line.endswith("# " + stdout.strip())       # the README shows what it prints


def test_demo_without_graphviz_still_writes_the_rest(tmp_path, monkeypatch):
    import graphviz
    import graphcompiler.viz

    def no_dot(*args, **kwargs):
        raise graphviz.ExecutableNotFound(("dot",))
    monkeypatch.setattr(graphcompiler.viz, "render", no_dot)
    lines: list[str] = []
    result = run_demo(tmp_path, epochs=2, hidden=16, progress=False, log=lines.append)
    assert "pictures" in result.skipped and not list(tmp_path.glob("*.svg"))
    assert any(line.startswith("  skipped pictures: Graphviz's `dot` is not installed") for line in lines)
    assert {p.name for p in result.files.values()} >= {"loss_curve.png", "memory.png", "derivation.tex",
                                                        "d2l_mlp.json"}
    assert len(result.losses) == 2 and result.accuracy > 0.5


# -- bounded work and checked feed files (issue 22) -----------------------------------------------------

def test_run_stops_an_endless_loop_at_max_seconds(capsys, tmp_path):
    """A small graph file whose while_loop never ends: `run` stops at --max-seconds with one line naming the
    loop and the budget (it used to run forever); the default budget is MAX_SECONDS, 0/none lift it."""
    from graphcompiler.cli import MAX_SECONDS, build_parser

    g = gc.Graph("endless")
    c0 = g.input("c0", ())
    gc.while_loop(lambda c: gc.greater(c, -1.0), lambda c: c + 1.0, c0, name="spin")
    path = tmp_path / "endless.json"
    g.save(path)
    assert path.stat().st_size < 20_000
    np.save(tmp_path / "c0.npy", np.array(0.0))
    status, _, err = cli(capsys, "run", path, "--feed", f"c0={tmp_path / 'c0.npy'}", "--max-seconds", "0.3")
    assert_one_line_error(status, err, "'spin'", "0.3 s", "--max-seconds")
    parse = build_parser().parse_args
    assert parse(["run", "f.json"]).max_seconds == MAX_SECONDS > 0
    assert parse(["run", "f.json", "--max-seconds", "none"]).max_seconds is None
    assert parse(["run", "f.json", "--max-seconds", "0"]).max_seconds is None
    status, _, err = cli(capsys, "run", path, "--max-seconds", "-2")
    assert status == 2 and "positive number of seconds" in err
    # explore computes every node's value when fed: the same budget
    status, _, err = cli(capsys, "explore", path, "-o", tmp_path / "e.html", "--feed", f"c0={tmp_path / 'c0.npy'}",
                         "--max-seconds", "0.3")
    assert_one_line_error(status, err, "'spin'", "0.3 s")


def test_run_checks_feed_files_before_reading_them(capsys, mlp_file, tmp_path):
    path, *_ = mlp_file
    y_feed = f"y={tmp_path / 'y.npy'}"
    # a header that claims 10**12 rows over 24 bytes of data: refused, not allocated (was a raw MemoryError)
    with open(tmp_path / "huge.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 4)})
        f.write(b"\0" * 24)
    status, _, err = cli(capsys, "run", path, "--feed", f"x={tmp_path / 'huge.npy'}", "--feed", y_feed)
    assert_one_line_error(status, err, "'x'", "huge.npy", "(1000000000000, 4)", "24 bytes")
    # a truncated file
    np.save(tmp_path / "cut.npy", np.zeros((6, 4)))
    data = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:-8])
    status, _, err = cli(capsys, "run", path, "--feed", f"x={tmp_path / 'cut.npy'}", "--feed", y_feed)
    assert_one_line_error(status, err, "cut.npy", "(6, 4)", "truncated")
    # not a .npy file, an .npz, a folder
    (tmp_path / "text.npy").write_text("1, 2, 3")
    np.savez(tmp_path / "two.npz", a=np.zeros(2), b=np.ones(2))
    for bad, words in (("text.npy", "not a .npy file"), ("two.npz", "several arrays"), (".", "not a regular file")):
        status, _, err = cli(capsys, "run", path, "--feed", f"x={tmp_path / bad}", "--feed", y_feed)
        assert_one_line_error(status, err, words)
    # an object array: refused from its header (never unpickled)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    status, _, err = cli(capsys, "run", path, "--feed", f"x={tmp_path / 'obj.npy'}", "--feed", y_feed)
    assert_one_line_error(status, err, "obj.npy", "Python objects")


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no FIFOs here")
def test_run_refuses_a_fifo_feed_without_blocking(mlp_file, tmp_path):
    """A FIFO as a feed file: one line, at once (opening it used to wait forever for a writer). In a subprocess,
    so a hang fails the test instead of stopping the suite."""
    import os

    path, *_ = mlp_file
    os.mkfifo(tmp_path / "fifo.npy")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "graphcompiler", "run", str(path), "--feed", f"x={tmp_path / 'fifo.npy'}",
         "--feed", f"y={tmp_path / 'y.npy'}"],
        capture_output=True, text=True, timeout=60, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 1
    assert "fifo.npy" in done.stderr and "not a regular file" in done.stderr and "Traceback" not in done.stderr
