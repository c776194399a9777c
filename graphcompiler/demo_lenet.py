"""`graphcompiler demo --model lenet`: a LeNet-style convnet trained on the bundled 8x8 digits, with pictures.

The 8x8 images are used as they are (no upsampling): both 5x5 convolutions are padded by 2 so they keep
the size, and each 2x2 max pool halves it, 8 -> 4 -> 2, so the dense part reads 16 x 2 x 2 = 64 features:

    x (N, 1, 8, 8) -> conv 1->6 5x5 pad 2, relu -> max pool 2 -> conv 6->16 5x5 pad 2, relu -> max pool 2
      -> flatten 64 -> dense 120, relu -> dense 84, relu -> dense 10 -> softmax cross-entropy
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .autodiff import build_grad
from .demo import (
    DemoResult,
    GradCheck,
    Model,
    _accepted,
    _finish,
    _one_step_memory,
    _output_folder,
    _save_held_out,
    _save_memory,
    _write_loss_curve,
    _write_pictures,
    central_differences,
    load_digits_split,
    train_sgd,
)
from .graph import Graph
from .ops import (
    add,
    conv2d,
    matmul,
    max_pool2d,
    multiply,
    relu,
    reshape,
    softmax_cross_entropy,
    sum,
)

SHAPES = {
    "c1": (6, 1, 5, 5),
    "b1": (6, 1, 1),
    "c2": (16, 6, 5, 5),
    "b2": (16, 1, 1),
    "W3": (64, 120),
    "b3": (120,),
    "W4": (120, 84),
    "b4": (84,),
    "W5": (84, 10),
    "b5": (10,),
}


@dataclass
class LeNet(Model):
    """The convnet of the module's docstring, its cost J = cross-entropy + lambda/2 |W|^2 and every dJ/dp."""


def init_params(seed: int = 0) -> dict[str, np.ndarray]:
    """He initialisation (relu layers) and biases of 0.01, so that the blank background of a digit (a zero
    patch) does not put relu on its kink at 0; the same numbers for graphcompiler and the benchmark."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in SHAPES.items():
        if name.startswith("b"):
            out[name] = np.full(shape, 0.01)
        else:
            fan_in = int(np.prod(shape[1:])) if name.startswith("c") else shape[0]
            out[name] = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    return out


def build_lenet(*, lam: float = 1e-4, seed: int = 0, dtype: str = "float64") -> LeNet:
    """Declare the convnet (NCHW digits, integer labels), its cost J = cross-entropy + lambda/2 |W|^2 and
    the gradients of J in every parameter."""
    g = Graph("lenet")
    x = g.input("x", shape=(None, 1, 8, 8), dtype=dtype)
    y = g.input("y", shape=(None,), dtype="int64")
    p = {k: g.parameter(k, v.astype(dtype)) for k, v in init_params(seed).items()}
    h1 = max_pool2d(relu(add(conv2d(x, p["c1"], padding=2, name="z1"), p["b1"]), name="h1"), 2, name="p1")
    h2 = max_pool2d(relu(add(conv2d(h1, p["c2"], padding=2, name="z2"), p["b2"]), name="h2"), 2, name="p2")
    f = reshape(h2, (-1, 64), name="f")
    h3 = relu(matmul(f, p["W3"]) + p["b3"], name="h3")
    h4 = relu(matmul(h3, p["W4"]) + p["b4"], name="h4")
    o = add(matmul(h4, p["W5"]), p["b5"], name="o")
    L = softmax_cross_entropy(o, y, name="L")
    weights = [p[k] for k in ("c1", "c2", "W3", "W4", "W5")]
    s = multiply(
        g.constant(lam / 2, name="lambda_2"),
        sum(weights[0] * weights[0])
        + sum(weights[1] * weights[1])
        + sum(weights[2] * weights[2])
        + sum(weights[3] * weights[3])
        + sum(weights[4] * weights[4]),
        name="s",
    )
    J = add(L, s, name="J")
    params = list(p.values())
    return LeNet(g, x, y, params, o, J, build_grad(J, params))


def load_digit_images(seed: int = 0):
    """The bundled digits as NCHW images (N, 1, 8, 8) in [0, 1], with the MLP demo's stratified split."""
    X_train, X_test, y_train, y_test = load_digits_split(seed)
    return X_train.reshape(-1, 1, 8, 8), X_test.reshape(-1, 1, 8, 8), y_train, y_test


def gradient_check(
    net: LeNet, X: np.ndarray, y: np.ndarray, *, per_param: int = 2, eps: float = 1e-5, seed: int = 0
) -> GradCheck:
    """A few entries of every dJ/dparameter against central differences of J."""
    return central_differences(net, {"x": X, "y": y}, per_param, eps, seed)


def run_lenet_demo(
    out: str | Path = "demo-output",
    *,
    epochs: int = 15,
    batch: int = 32,
    lr: float = 0.05,
    lam: float = 1e-4,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Train the convnet on the digits with SGD and write its pictures, memory report and loss curve to `out`."""
    t_start, out = time.perf_counter(), _output_folder(out)
    X_train, X_test, y_train, y_test = load_digit_images(seed)
    net = build_lenet(lam=lam, seed=seed)

    check = _accepted(gradient_check(net, X_train[:8], y_train[:8], seed=seed), log)
    log(f"data: scikit-learn digits, {len(X_train)} training and {len(X_test)} held-out 8x8 images (NCHW), 10 classes")
    log(
        f"model: {net.graph.name}, conv 1->6 5x5 pad 2, relu, max pool 2, conv 6->16 5x5 pad 2, relu, max pool 2, "
        f"dense 64-120-84-10, softmax cross-entropy, weight decay lambda={lam:g}; {len(net.graph)} nodes after "
        "build_grad"
    )
    data = (X_train, y_train, X_test, y_test)
    result, train = train_sgd(
        net,
        check,
        data,
        out,
        epochs=epochs,
        batch=batch,
        lr=lr,
        seed=seed,
        progress=progress,
        log=log,
        one_blas_thread=True,
    )

    path = out / "lenet.json"
    net.graph.save(path)
    result.files["the trained convnet with its gradients and SGD updates, for the graphcompiler command"] = path
    _save_held_out(
        result, X_test, y_test, "x_test_images.npy", "held-out images x (N, 1, 8, 8), to feed with graphcompiler run"
    )
    _write_pictures(net.graph, out / "lenet", result, ("forward graph of the convnet", "its backward graph"))
    feed = {"x": X_train[:batch], "y": y_train[:batch]}
    report = _one_step_memory(net, train, feed)
    text = (
        f"Memory of one LeNet training step on a minibatch of {len(feed['y'])} (peak_bytes: "
        f"{train.stats['peak_bytes']:,d})\n\n{report}\n"
    )
    _save_memory(result, report, text, prefix="lenet_")
    _write_loss_curve(result, out / "lenet_loss_curve.png", "LeNet-style convnet on scikit-learn digits")
    _finish(result, t_start, epochs, log, f"graphcompiler show {out / 'lenet.json'}")
    return result
