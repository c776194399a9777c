"""Central-difference checks of first and second derivatives, shared by the op and graph tests."""

from __future__ import annotations

import numpy as np

import graphcompiler as gc


def numeric_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d f / d x by central differences, one entry at a time (float64)."""
    g = np.zeros_like(x, dtype=np.float64)
    flat = x.reshape(-1)
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + eps
        fp = f()
        flat[k] = old - eps
        fm = f()
        flat[k] = old
        g.reshape(-1)[k] = (fp - fm) / (2 * eps)
    return g


def check_gradients(graph: gc.Graph, cost: gc.Node, wrt: list[gc.Node], feeds: dict, *, second: bool = True,
                    rtol: float = 1e-5, atol: float = 1e-7, rng=None) -> None:
    """build_grad's first derivatives against central differences of cost; second derivatives as
    Hessian-vector products (build_grad of <grad, v>) against central differences of the first ones."""
    rng = rng or np.random.default_rng(1)
    feeds = {k: np.array(v, dtype=np.float64) if np.asarray(v).dtype.kind == "f" else np.asarray(v)
             for k, v in feeds.items()}
    grads = gc.build_grad(cost, wrt)
    f_cost = gc.compile([cost], optimize=False)
    f_grad = gc.compile([grads[w] for w in wrt])
    analytic = f_grad.run(feeds)
    for w, a in zip(wrt, analytic):
        num = numeric_grad(lambda: float(f_cost.run(feeds)[0]), feeds[w.name])
        np.testing.assert_allclose(a, num, rtol=rtol, atol=atol, err_msg=f"d{cost.name}/d{w.name}")
    if not second:
        return
    # Hessian-vector product: d/dw <dJ/dw, v> for a fixed random direction v per target
    dirs = [rng.standard_normal(w.shape) for w in wrt]
    inner = None
    for w, v in zip(wrt, dirs):
        term = gc.sum(grads[w] * graph.constant(v)) if w.shape else grads[w] * graph.constant(v)
        inner = term if inner is None else inner + term
    hv = gc.build_grad(inner, wrt, disconnected="zero")
    f_hv = gc.compile([hv[w] for w in wrt])
    analytic2 = f_hv.run(feeds)
    eps = 1e-5
    plus, minus = dict(feeds), dict(feeds)
    for w, v in zip(wrt, dirs):
        plus[w.name] = feeds[w.name] + eps * v
        minus[w.name] = feeds[w.name] - eps * v
    gp, gm = f_grad.run(plus), f_grad.run(minus)
    for w, a, p, m in zip(wrt, analytic2, gp, gm):
        np.testing.assert_allclose(a, (p - m) / (2 * eps), rtol=1e-4, atol=1e-6,
                                   err_msg=f"Hessian-vector product for {w.name}")
