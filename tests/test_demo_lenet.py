"""`graphcompiler demo --model lenet`: the convnet trains on the bundled digits and writes its files."""

from __future__ import annotations

import contextlib
import io
import shutil

import numpy as np
import pytest

import graphcompiler as gc
from graphcompiler.cli import main
from graphcompiler.demo_lenet import build_lenet, gradient_check, load_digit_images


def test_lenet_gradient_check_passes_and_can_fail():
    X, _, y, _ = load_digit_images(0)
    net = build_lenet()
    good = gradient_check(net, X[:4], y[:4], per_param=1)
    assert good.max_rel_error < 1e-5 and len(good.entries) == len(net.params)
    c1 = net.graph["c1"]
    net.grads[c1] = net.grads[c1] * 1.01                        # a gradient 1% off is caught
    assert gradient_check(net, X[:4], y[:4], per_param=1).max_rel_error > 1e-3


def test_demo_lenet_trains_and_writes_its_files(tmp_path):
    out = tmp_path / "demo-output"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        status = main(["demo", "--model", "lenet", "--epochs", "3", "--out", str(out), "--no-progress"])
    assert status == 0
    stdout = buf.getvalue()
    lines = stdout.splitlines()
    assert lines[0].startswith("gradient check: 20 entries of dJ/dW3")
    epochs = [ln for ln in lines if ln.startswith("epoch ")]
    assert len(epochs) == 3
    losses = [float(ln.split("loss ")[1].split(",")[0]) for ln in epochs]
    assert losses[-1] < 0.6 * losses[0]
    final = [ln for ln in lines if ln.startswith("trained 3 epochs")]
    accuracy = float(final[0].split("held-out accuracy ")[1].rstrip("%")) / 100
    assert accuracy > 0.6                                         # ten classes: chance is 0.1
    # the saved graph is the trained convnet: it gives the printed accuracy on the saved held-out images
    trained = gc.load(out / "lenet.json")
    assert {"conv2d", "max_pool2d", "conv2d_input_grad", "conv2d_weight_grad", "max_pool2d_grad"} <= \
        {n.op.name for n in trained.nodes}
    (o,) = gc.compile([trained["o"]]).run({"x": np.load(out / "x_test_images.npy")})
    assert np.mean(o.argmax(axis=1) == np.load(out / "y_test.npy")) == pytest.approx(accuracy, abs=1e-3)
    assert (out / "lenet_loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "kept for backward" in (out / "lenet_memory_report.txt").read_text()
    if shutil.which("dot"):
        assert (out / "lenet_forward.svg").read_text().lstrip().startswith("<?xml")
    for path in out.iterdir():
        assert str(path) in stdout


def test_the_demos_share_one_home_for_their_common_steps():
    """demo_lenet takes the steps both demos make from demo.py; it defines only what is its model's own."""
    import ast
    import inspect

    from graphcompiler import demo, demo_lenet

    def defined(module):
        return {n.name for n in ast.parse(inspect.getsource(module)).body if isinstance(n, ast.FunctionDef)}

    assert defined(demo) & defined(demo_lenet) == {"gradient_check"}      # each model's own, by its name
    assert issubclass(demo_lenet.LeNet, demo.Model) and issubclass(demo.MLP, demo.Model)


def test_the_memory_report_step_leaves_the_parameters_as_they_were(tmp_path):
    from graphcompiler.demo import GradCheck, _one_step_memory, build_mlp, train_sgd

    X, _, y, _ = load_digit_images(0)
    X = X.reshape(len(X), -1)
    mlp = build_mlp(64, 8, 10)
    data = (X[:40], y[:40], X[40:60], y[40:60])
    result, train = train_sgd(mlp, GradCheck([]), data, tmp_path, epochs=1, batch=20, lr=0.1, seed=0,
                              progress=False, log=lambda line: None)
    before = [np.array(mlp.graph.value(p)) for p in mlp.params]
    report = _one_step_memory(mlp, train, {"x": X[:20], "y": y[:20]})
    assert "kept for backward" in str(report) and len(result.losses) == 1
    for p, value in zip(mlp.params, before):
        np.testing.assert_array_equal(mlp.graph.value(p), value)
