"""Draw the seeds' figures with graphcompiler itself: `python docs/make_figures.py docs/figures`.

- Goodfellow et al., Figure 6.10: z = f(f(f(w))) (left) and the same graph with its derivative graph (right).
- Dive into Deep Learning, the one-hidden-layer MLP with l2 regularisation: its forward graph and its
  backward graph.
- Torralba et al., Figure 14.17: the forward-backward network of a three-layer MLP ("it's just another
  neural net"), grouped by layer, with a provenance variant and a collapsed overview.
- The compiled training step of the D2L MLP: schedule order, buffers, values kept for backward.

Every figure is written as SVG and PNG; `figures(folder)` returns the paths written.
"""

from __future__ import annotations

import os
import sys

import numpy as np

import graphcompiler as gc

PNG_DPI = 110


def goodfellow_6_10() -> tuple[gc.Graph, gc.Node, gc.Node]:
    """z = f(f(f(w))) with f = sin, so each f' of the book's figure is a cos node; returns (graph, z, dz/dw)."""
    g = gc.Graph("Figure 6.10: z = f(f(f(w)))")
    w = g.input("w", shape=())
    x = gc.sin(w, name="x")
    y = gc.sin(x, name="y")
    z = gc.sin(y, name="z")
    dz_dw = gc.build_grad(z, [w])[w]
    return g, z, dz_dw


def d2l_mlp() -> tuple[gc.Graph, dict]:
    """The D2L one-hidden-layer MLP in its column-vector form: z = W1 x, h = relu(z), o = W2 h, J = L + s."""
    rng = np.random.default_rng(0)
    g = gc.Graph("D2L one-hidden-layer MLP")
    x = g.input("x", shape=(4,))
    y = g.input("y", shape=(2,))
    W1 = g.parameter("W1", rng.normal(size=(3, 4)))
    W2 = g.parameter("W2", rng.normal(size=(2, 3)))
    lam = g.constant(0.01, name="lambda")
    z = gc.matmul(W1, x, name="z")
    h = gc.relu(z, name="h")
    o = gc.matmul(W2, h, name="o")
    L = gc.mse(o, y, name="L")
    norms = gc.add(gc.sum(gc.square(W1, name="W1_sq"), name="norm_W1"),
                   gc.sum(gc.square(W2, name="W2_sq"), name="norm_W2"), name="norms")
    s = gc.multiply(gc.divide(lam, 2.0, name="half_lambda"), norms, name="s")
    J = gc.add(L, s, name="J")
    grads = gc.build_grad(J, [W1, W2])
    return g, {"J": J, "W1": W1, "W2": W2, "dJ/dW1": grads[W1], "dJ/dW2": grads[W2], "x": x, "y": y}


def torralba_mlp() -> tuple[gc.Graph, dict]:
    """The three-layer MLP of Torralba et al. 14.6.4 (no biases; x in R^4, z and h in R^3, y-hat in R^2),
    each layer in a name scope, with an L2 loss and the gradients of all three weight matrices."""
    rng = np.random.default_rng(1)
    g = gc.Graph("Figure 14.17: forward-backward of a three-layer MLP")
    x = g.input("x", shape=(4,))
    y = g.input("y", shape=(2,))
    sizes = [(3, 4), (3, 3), (2, 3)]
    h, weights = x, []
    for k, (m, n) in enumerate(sizes, start=1):
        W = g.parameter(f"layer{k}/W{k}", rng.normal(size=(m, n)))
        weights.append(W)
        z = gc.matmul(W, h, name=f"layer{k}/z{k}" if k < 3 else "layer3/yhat")
        h = gc.relu(z, name=f"layer{k}/h{k}") if k < 3 else z
    J = gc.mse(h, y, name="loss/J")
    grads = gc.build_grad(J, weights)
    return g, {"J": J, "weights": weights, "grads": [grads[W] for W in weights]}


def figures(folder: str | os.PathLike) -> list[str]:
    """Write every figure as SVG and PNG into folder; return the paths."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    written: list[str] = []

    def both(stem: str, what, **options) -> None:
        for suffix in (".svg", ".png"):
            extra = {"dpi": PNG_DPI} if suffix == ".png" else {}
            written.append(gc.render(what, os.path.join(folder, stem + suffix), **options, **extra))

    g, z, dz_dw = goodfellow_6_10()
    both("goodfellow_6_10_left", g, show="forward", rankdir="BT",
         title="Figure 6.10 (left): z = f(f(f(w))), here f = sin")
    both("goodfellow_6_10_right", g, rankdir="BT", align=True,
         title="Figure 6.10 (right): the graph with its derivative graph dz/dw")

    g, n = d2l_mlp()
    both("d2l_mlp_forward", g, show="forward", title="D2L MLP: forward graph")
    both("d2l_mlp_backward", g, show="backward", title="D2L MLP: backward graph (pale: forward values it reads)")

    g, n = torralba_mlp()
    both("torralba_14_17", g, align=True, title="Torralba Fig. 14.17: forward-backward is just a bigger network")
    both("torralba_14_17_scopes", g, align=True, group=True, title="the same, one box per layer scope")
    both("torralba_14_17_provenance", g, align=True, provenance=True,
         title="the same, with provenance: each backward node points to the forward op whose bprop made it")
    both("torralba_14_17_collapsed", g, collapse=True, align=True, title="the same, each layer collapsed")

    g, n = d2l_mlp()
    step = gc.compile([n["J"], n["dJ/dW1"], n["dJ/dW2"]])
    step.run({"x": np.ones(4), "y": np.zeros(2)})
    both("d2l_mlp_program", step, title="compiled training step of the D2L MLP")
    return written


def main(argv: list[str]) -> int:
    folder = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(__file__), "figures")
    for path in figures(folder):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
