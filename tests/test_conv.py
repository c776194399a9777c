"""Convolution and pooling: forward against slow loop references (and PyTorch when installed), first and
second derivatives against central differences, shape errors, files, pictures and symbolic export."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from gradcheck import check_gradients

import graphcompiler as gc

try:                                     # an optional oracle: pip install torch==2.13.0
    import torch
    import torch.nn.functional as F
except ImportError:                      # pragma: no cover - the loop references still run
    torch = None


# -- slow references: one output entry at a time ----------------------------------------------------

def ref_conv(x, w, stride, padding, dilation, groups):
    """PyTorch's conv (cross-correlation) over 1 or 2 spatial axes, by explicit loops."""
    nd = x.ndim - 2
    s, p, d = ([v] * nd if isinstance(v, int) else list(v) for v in (stride, padding, dilation))
    xp = np.pad(x, [(0, 0), (0, 0)] + [(q, q) for q in p])
    n = x.shape[0]
    o, cg = w.shape[:2]
    k = w.shape[2:]
    out = [(xp.shape[2 + a] - d[a] * (k[a] - 1) - 1) // s[a] + 1 for a in range(nd)]
    y = np.zeros([n, o] + out)
    og = o // groups
    for b in range(n):
        for oc in range(o):
            grp = oc // og
            for pos in itertools.product(*[range(m) for m in out]):
                acc = 0.0
                for ci in range(cg):
                    for tap in itertools.product(*[range(m) for m in k]):
                        src = tuple(pos[a] * s[a] + tap[a] * d[a] for a in range(nd))
                        acc += xp[(b, grp * cg + ci) + src] * w[(oc, ci) + tap]
                y[(b, oc) + pos] = acc
    return y


def ref_pool(x, kernel, stride, padding, kind):
    k, s, p = ([v] * 2 if isinstance(v, int) else list(v) for v in (kernel, stride, padding))
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, [(0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])], constant_values=fill)
    out = [(xp.shape[2 + a] - k[a]) // s[a] + 1 for a in range(2)]
    y = np.zeros(x.shape[:2] + tuple(out))
    for b, c, i, j in itertools.product(range(x.shape[0]), range(x.shape[1]), range(out[0]), range(out[1])):
        win = xp[b, c, i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]]
        y[b, c, i, j] = win.max() if kind == "max" else win.sum() / (k[0] * k[1])
    return y


def run(node, feeds):
    return gc.compile([node]).run(feeds)[0]


# -- forward ------------------------------------------------------------------------------------------

CONV2D = [  # (x shape, w shape, stride, padding, dilation, groups)
    ((1, 1, 5, 5), (2, 1, 3, 3), 1, 0, 1, 1),
    ((3, 2, 6, 5), (4, 2, 3, 2), 1, 1, 1, 1),
    ((3, 3, 7, 7), (2, 3, 3, 3), 2, 0, 1, 1),
    ((1, 2, 7, 6), (3, 2, 2, 3), (2, 1), (1, 2), 1, 1),
    ((3, 2, 8, 7), (2, 2, 3, 2), 1, 2, 2, 1),
    ((1, 2, 9, 9), (3, 2, 2, 2), (3, 2), 1, (2, 3), 1),
    ((3, 4, 5, 6), (6, 2, 3, 3), 1, 1, 1, 2),
    ((1, 6, 6, 6), (6, 1, 3, 3), 2, 1, 1, 6),             # depthwise
    ((3, 4, 7, 5), (2, 2, 2, 2), (2, 3), (1, 0), (2, 1), 2),
]


@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups", CONV2D)
def test_conv2d_forward(xs, ws, stride, padding, dilation, groups):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    g = gc.Graph()
    y = gc.conv2d(g.input("x", shape=(None,) + xs[1:]), g.parameter("w", w), stride, padding, dilation, groups)
    out = run(y, {"x": x})
    expected = ref_conv(x, w, stride, padding, dilation, groups)
    assert y.shape == (None,) + expected.shape[1:]
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    if torch is not None:
        t = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=stride, padding=padding,
                     dilation=dilation, groups=groups).numpy()
        np.testing.assert_allclose(out, t, rtol=1e-10, atol=1e-10)


CONV1D = [((1, 1, 6), (2, 1, 3), 1, 0, 1, 1), ((3, 2, 9), (4, 2, 3), 2, 1, 1, 1),
          ((3, 4, 10), (2, 2, 2), 3, 2, 3, 2), ((1, 3, 7), (3, 1, 4), 1, 3, 1, 3)]


@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups", CONV1D)
def test_conv1d_forward(xs, ws, stride, padding, dilation, groups):
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    g = gc.Graph()
    y = gc.conv1d(g.input("x", shape=xs), g.input("w", shape=ws), stride=stride, padding=padding,
                  dilation=dilation, groups=groups)
    out = run(y, {"x": x, "w": w})
    np.testing.assert_allclose(out, ref_conv(x, w, stride, padding, dilation, groups), rtol=1e-12, atol=1e-12)
    if torch is not None:
        t = F.conv1d(torch.from_numpy(x), torch.from_numpy(w), stride=stride, padding=padding,
                     dilation=dilation, groups=groups).numpy()
        np.testing.assert_allclose(out, t, rtol=1e-10, atol=1e-10)


POOLS = [  # (x shape, kernel, stride, padding)
    ((1, 1, 4, 4), 2, None, 0), ((3, 2, 5, 6), 2, None, 0), ((3, 2, 7, 6), 3, 2, 1),
    ((1, 3, 6, 5), (2, 3), (1, 2), (1, 1)), ((3, 1, 5, 5), 3, 1, 1),
]


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("xs,kernel,stride,padding", POOLS)
def test_pool_forward(kind, xs, kernel, stride, padding):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(xs)
    g = gc.Graph()
    fn = gc.max_pool2d if kind == "max" else gc.avg_pool2d
    y = fn(g.input("x", shape=xs), kernel, stride, padding)
    out = run(y, {"x": x})
    expected = ref_pool(x, kernel, kernel if stride is None else stride, padding, kind)
    assert y.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    if torch is not None:
        tfn = F.max_pool2d if kind == "max" else F.avg_pool2d
        t = tfn(torch.from_numpy(x), kernel, stride, padding).numpy()
        np.testing.assert_allclose(out, t, rtol=1e-12, atol=1e-12)


# -- derivatives ------------------------------------------------------------------------------------

def weighted_cost(g, y, rng, name="J"):
    """A scalar that weights each output entry differently (so every partial derivative is seen), and is
    quadratic in y, so second derivatives through the (linear) convolution are not all zero."""
    wts = g.constant(rng.uniform(0.5, 1.5, size=y.shape))
    return gc.sum(y * wts + 0.3 * y * y, name=name)


GRAD_CONV2D = [
    ((2, 2, 5, 4), (3, 2, 3, 2), 1, 1, 1, 1),
    ((1, 2, 6, 6), (2, 2, 2, 3), 2, (0, 1), 1, 1),
    ((2, 4, 6, 5), (2, 2, 2, 2), (2, 1), 1, (2, 1), 2),
    ((1, 3, 7, 7), (3, 1, 3, 3), 3, 2, 1, 3),           # stride 3 leaves the last input rows unread
]


@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups", GRAD_CONV2D)
def test_conv2d_first_and_second_derivatives(xs, ws, stride, padding, dilation, groups):
    rng = np.random.default_rng(3)
    g = gc.Graph()
    x, w = g.input("x", shape=xs), g.input("w", shape=ws)
    y = gc.conv2d(x, w, stride, padding, dilation, groups)
    check_gradients(g, weighted_cost(g, y, rng), [x, w],
                    {"x": rng.standard_normal(xs), "w": rng.standard_normal(ws)})


@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups",
                         [((2, 2, 7), (3, 2, 3), 2, 1, 1, 1), ((1, 4, 9), (2, 2, 2), 1, 2, 3, 2)])
def test_conv1d_first_and_second_derivatives(xs, ws, stride, padding, dilation, groups):
    rng = np.random.default_rng(4)
    g = gc.Graph()
    x, w = g.input("x", shape=xs), g.input("w", shape=ws)
    y = gc.conv1d(x, w, stride, padding, dilation, groups)
    check_gradients(g, weighted_cost(g, y, rng), [x, w],
                    {"x": rng.standard_normal(xs), "w": rng.standard_normal(ws)})


def test_gradient_ops_are_differentiable_on_their_own():
    """conv2d_input_grad and conv2d_weight_grad as functions of both their inputs, to second order."""
    rng = np.random.default_rng(5)
    g = gc.Graph()
    x, w = g.input("x", shape=(2, 2, 5, 5)), g.input("w", shape=(4, 1, 3, 2))
    y = gc.conv2d(x, w, stride=2, padding=1, groups=2)
    gy = g.input("gy", shape=y.shape)
    (dx, dw) = (gc.build_grad(y, [x, w], seed=gy)[n] for n in (x, w))
    assert {dx.op.name, dw.op.name} == {"conv2d_input_grad", "conv2d_weight_grad"}
    feeds = {"x": rng.standard_normal(x.shape), "w": rng.standard_normal(w.shape),
             "gy": rng.standard_normal(y.shape)}
    check_gradients(g, weighted_cost(g, dx, rng, "Jx") + weighted_cost(g, dw, rng, "Jw"), [x, w, gy], feeds)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("xs,kernel,stride,padding", [((2, 2, 4, 6), 2, None, 0), ((1, 2, 5, 5), 3, 2, 1),
                                                      ((2, 1, 5, 4), (2, 3), 1, (1, 1))])
def test_pool_first_and_second_derivatives(kind, xs, kernel, stride, padding):
    rng = np.random.default_rng(6)
    g = gc.Graph()
    x, w = g.input("x", shape=xs), g.input("w", shape=(2, xs[1], 1, 1))
    h = gc.conv2d(x, w)                     # the pool's gradient then meets a weight: second order is not zero
    fn = gc.max_pool2d if kind == "max" else gc.avg_pool2d
    y = fn(h * h, kernel, stride, padding)
    xv = rng.permutation(np.arange(np.prod(xs))).reshape(xs) / np.prod(xs) + 0.5   # distinct: no ties
    check_gradients(g, weighted_cost(g, y, rng), [x, w], {"x": xv, "w": rng.uniform(0.5, 1.5, w.shape)})


def test_max_pool_shares_the_gradient_among_ties():
    """As gc.max does: a window with k tied maxima gives each of them 1/k of its gradient."""
    g = gc.Graph()
    x = g.input("x", shape=(1, 1, 2, 4))
    y = gc.max_pool2d(x, 2)
    dx = gc.build_grad(gc.sum(y), [x])[x]
    xv = np.array([[[[1.0, 3.0, 2.0, 2.0], [3.0, 0.0, 2.0, 2.0]]]])
    out, d = gc.compile([y, dx]).run({"x": xv})
    np.testing.assert_array_equal(out, [[[[3.0, 2.0]]]])
    np.testing.assert_array_equal(d, [[[[0, 0.5, 0.25, 0.25], [0.5, 0, 0.25, 0.25]]]])
    # the same sharing as gc.max over the window
    m = gc.max(gc.reshape(x, (2, 4))[:, :2])
    np.testing.assert_array_equal(gc.compile([gc.build_grad(m, [x])[x]]).run({"x": xv})[0][..., :2],
                                  d[..., :2])


def test_gradients_match_pytorch_autograd():
    if torch is None:
        pytest.skip("torch is not installed (pip install torch==2.13.0)")
    rng = np.random.default_rng(7)
    xv, wv = rng.standard_normal((3, 4, 9, 8)), rng.standard_normal((6, 2, 3, 3))
    g = gc.Graph()
    x, w = g.input("x", shape=xv.shape), g.input("w", shape=wv.shape)
    h = gc.conv2d(x, w, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    J = gc.sum(gc.avg_pool2d(gc.max_pool2d(h, 3, 1, 1), 2, 1, 1) ** 2)
    got = gc.compile([J, *gc.build_grad(J, [x, w]).values()]).run({"x": xv, "w": wv})
    tx, tw = (torch.tensor(v, requires_grad=True) for v in (xv, wv))
    th = F.conv2d(tx, tw, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    tj = (F.avg_pool2d(F.max_pool2d(th, 3, 1, 1), 2, 1, 1) ** 2).sum()
    tj.backward()
    for a, b in zip(got, [tj.detach().numpy(), tx.grad.numpy(), tw.grad.numpy()]):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_float32_stays_float32():
    g = gc.Graph()
    x = g.input("x", shape=(2, 1, 5, 5), dtype="float32")
    w = g.parameter("w", np.ones((2, 1, 3, 3), np.float32))
    y = gc.max_pool2d(gc.conv2d(x, w, padding=1), 2) + gc.avg_pool2d(gc.conv2d(x, w, padding=1), 2)
    grads = gc.build_grad(gc.sum(y), [x, w])
    outs = gc.compile([y, grads[x], grads[w]]).run({"x": np.ones((2, 1, 5, 5), np.float32)})
    assert [o.dtype for o in outs] == [np.float32] * 3 and y.dtype == np.float32


# -- errors -----------------------------------------------------------------------------------------

def test_shape_errors_name_the_nodes_and_shapes():
    g = gc.Graph()
    x = g.input("img", shape=(None, 3, 4, 4))
    with pytest.raises(gc.ShapeError, match=r"not divisible by groups=2.*img.*\(None, 3, 4, 4\)"):
        gc.conv2d(x, g.parameter("k1", shape=(4, 1, 3, 3)), groups=2)
    with pytest.raises(gc.ShapeError, match=r"expects 2 x 1 \(groups\) = 2 input channels but the input has 3"):
        gc.conv2d(x, g.parameter("k2", shape=(4, 2, 3, 3)))
    with pytest.raises(gc.ShapeError, match=r"covers 5 positions.*only 4 \+ 2\*0"):
        gc.conv2d(x, g.parameter("k3", shape=(4, 3, 5, 5)), name="c")
    with pytest.raises(gc.ShapeError, match=r"covers 7 positions.*dilation 3"):
        gc.conv2d(x, g.parameter("k4", shape=(4, 3, 3, 3)), dilation=3, padding=1)
    with pytest.raises(gc.ShapeError, match=r"rank 4 \(N, C, H, W\)"):
        gc.conv2d(g.input("flat", shape=(3, 4)), g.parameter("k5", shape=(4, 3, 3, 3)))
    with pytest.raises(gc.ShapeError, match="stride must be an integer >= 1"):
        gc.conv2d(x, g.parameter("k6", shape=(4, 3, 3, 3)), stride=0)
    with pytest.raises(gc.ShapeError, match="padding must be"):
        gc.conv2d(x, g.parameter("k7", shape=(4, 3, 3, 3)), padding=(1, 2, 3))
    with pytest.raises(gc.ShapeError, match="pooling window covers 5"):
        gc.max_pool2d(x, 5)
    with pytest.raises(gc.ShapeError, match="at most half the kernel"):
        gc.avg_pool2d(x, 2, padding=2)
    with pytest.raises(gc.DTypeError, match="floating"):
        gc.max_pool2d(g.input("ints", shape=(1, 1, 4, 4), dtype="int64"), 2)
    n = len(g)
    with pytest.raises(gc.ShapeError):
        gc.conv1d(g.input("seq", shape=(2, 3, 8)), g.parameter("k8", shape=(2, 3, 3)), groups=3)
    assert len(g) == n + 2           # the two leaves; the rejected op added nothing


# -- files, pictures, symbolic export -----------------------------------------------------------------

def _lenet_like():
    g = gc.Graph("convnet")
    x = g.input("x", shape=(None, 2, 6, 6))
    w1 = g.parameter("w1", np.random.default_rng(0).standard_normal((4, 2, 3, 3)))
    w2 = g.parameter("w2", np.random.default_rng(1).standard_normal((3, 4, 2)))
    h = gc.max_pool2d(gc.relu(gc.conv2d(x, w1, stride=1, padding=(1, 2), dilation=(1, 2), name="c1")), 2,
                      name="p1")
    a = gc.avg_pool2d(h, (2, 1), stride=1, padding=(1, 0), name="p2")
    s = gc.conv1d(gc.reshape(a, (-1, 4, a.shape[2] * a.shape[3])), w2, stride=2, groups=1, name="c2")
    J = gc.sum(s * s, name="J")
    grads = gc.build_grad(J, [w1, w2, x])
    hv = gc.build_grad(gc.sum(grads[w1] * grads[w1]), [w1])       # second order: the grad ops' own bprops
    return g, J, grads, hv


def test_save_and_load_round_trip(tmp_path):
    g, J, grads, hv = _lenet_like()
    path = tmp_path / "convnet.json"
    g.save(path)
    h = gc.load(path)
    assert [(n.name, n.op, n.shape, n.is_gradient) for n in h.nodes] == \
           [(n.name, n.op, n.shape, n.is_gradient) for n in g.nodes]
    ops = {n.op.name for n in h.nodes}
    assert {"conv2d", "conv1d", "max_pool2d", "avg_pool2d", "conv2d_input_grad", "conv2d_weight_grad",
            "conv1d_weight_grad", "conv1d_input_grad", "max_pool2d_grad", "max_pool2d_gather", "avg_pool2d_grad"} <= ops
    x = np.random.default_rng(2).standard_normal((3, 2, 6, 6))
    names = [J.name, grads[g["w1"]].name, hv[g["w1"]].name]
    a = gc.compile([g[k] for k in names]).run({"x": x})
    b = gc.compile([h[k] for k in names]).run({"x": x})
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def test_loader_rejects_bad_convolution_attributes(tmp_path):
    import json
    g = gc.Graph()
    gc.conv2d(g.input("x", shape=(1, 1, 4, 4)), g.parameter("w", np.ones((1, 1, 2, 2))), stride=2, name="y")
    path = tmp_path / "g.json"
    g.save(path)
    doc = json.loads(path.read_text())
    for bad in ([0, 2], [2], [2, "a"]):
        doc["nodes"][-1]["attrs"]["stride"] = bad
        path.write_text(json.dumps(doc))
        with pytest.raises(gc.GraphFileError, match="stride"):
            gc.load(path)


def test_to_dot_shows_each_op():
    g = _lenet_like()[0]
    src = gc.to_dot(g).source
    for op in ("conv2d", "conv1d", "max_pool2d", "avg_pool2d", "conv2d_input_grad", "conv2d_weight_grad",
               "max_pool2d_grad", "max_pool2d_gather", "avg_pool2d_grad"):
        assert op in src, op


def test_convnet_exports_and_the_export_evaluates_to_the_programs_values():
    """A convnet's values (rank 3 and 4: matrices of their first axis by the rest) export, the convolution
    reads X * W in LaTeX, and every export, gradients and second order included, evaluates (undefined
    functions by their kernels) to what the compiled program computes."""
    from graphcompiler.symbolic import TensorSymbol, evaluate

    g, J, grads, hv = _lenet_like()
    x = np.random.default_rng(2).standard_normal((3, 2, 6, 6))
    nodes = [g["c1"], g["p1"], g["c2"], J, grads[g["w1"]], grads[g["w2"]], grads[g["x"]], hv[g["w1"]]]
    outs = gc.compile(nodes).run({"x": x})
    for node, want in zip(nodes, outs):
        got = evaluate(gc.to_sympy(node, form="leaves"), {"x": x}, graph=g)
        np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-9, atol=1e-10, err_msg=node.name)
    assert gc.to_latex(g["c1"]) == r"x \ast w_{1}"
    assert gc.to_latex(g["p1"]) == r"\operatorname{max\_pool2d}\left(\max\left(0, c_{1}\right)\right)"  # c1 named
    assert gc.to_latex(g["p1"], form="leaves") == (
        r"\operatorname{max\_pool2d}\left(\max\left(0, \left(x \ast w_{1}\right)\right)\right)")
    sym = gc.to_sympy(g["c1"]).args[2]
    assert isinstance(sym, TensorSymbol) and sym.tensor_shape[1:] == (2, 6, 6) and sym.shape[1] == 72


def test_convolution_bias_broadcast_exports_as_kronecker_products():
    """A bias (c,) reshaped to (1, c, 1, 1) and added to (n, c, h, w) is 1_n (b^T kron 1_hw^T) in the
    n x chw form, and evaluates to the program's value; a broadcast in the middle of the rest axes has no
    such form and exports as an undefined function, still evaluating right."""
    from graphcompiler.symbolic import evaluate

    rng = np.random.default_rng(3)
    g = gc.Graph()
    x = g.input("X", shape=(None, 3, 4, 5))
    b = g.input("b", shape=(3,))
    m = g.input("m", shape=(3, 1, 5))
    y = gc.conv2d(x, g.parameter("W", rng.standard_normal((2, 3, 1, 1)))) + gc.reshape(b[:2], (1, 2, 1, 1))
    z = x * m  # (3, 1, 5) over (n, 3, 4, 5): the middle axis broadcasts
    tex = gc.to_latex(y)
    assert r"\otimes \mathbf{1}_{20}^{T}" in tex and r"\mathbf{1}_{n}" in tex, tex
    feeds = {"X": rng.standard_normal((2, 3, 4, 5)), "b": rng.standard_normal(3), "m": rng.standard_normal((3, 1, 5))}
    for node, want in zip([y, z], gc.compile([y, z]).run(feeds)):
        got = evaluate(gc.to_sympy(node), feeds, graph=g)
        np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-12, err_msg=node.name)
    assert "multiply" in str(gc.to_sympy(z))


# -- many random configurations: the adjoint identities, and PyTorch's autograd when installed ----------

def _random_configs(count: int, seed: int = 11):
    """(nd, x shape, w shape, stride, padding, dilation, groups): valid, often with padding wider than the
    dilated kernel (g entries that only touch padding) and strides that leave input rows unread."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        nd = int(rng.integers(1, 3))
        groups = int(rng.choice([1, 2, 3]))
        cg, og = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        k = tuple(int(v) for v in rng.integers(1, 4, nd))
        s = tuple(int(v) for v in rng.integers(1, 4, nd))
        d = tuple(int(v) for v in rng.integers(1, 3, nd))
        p = tuple(int(v) for v in rng.integers(0, 4, nd))
        size = tuple(int(v) for v in rng.integers(1, 9, nd))
        if any(sz + 2 * pp < dd * (kk - 1) + 1 for sz, pp, dd, kk in zip(size, p, d, k)):
            continue
        n = int(rng.choice([1, 3]))
        out.append((nd, (n, cg * groups) + size, (og * groups, cg) + k, s, p, d, groups))
    return out


CONFIGS = _random_configs(40)


@pytest.mark.parametrize("nd,xs,ws,stride,padding,dilation,groups", CONFIGS)
def test_gradient_ops_are_the_adjoints_of_the_convolution(nd, xs, ws, stride, padding, dilation, groups):
    """<conv(x, w), g> = <x, conv_input_grad(g, w)> = <w, conv_weight_grad(x, g)>, for any x, w, g."""
    rng = np.random.default_rng(12)
    g = gc.Graph()
    x, w = g.input("x", shape=xs), g.input("w", shape=ws)
    conv = gc.conv2d if nd == 2 else gc.conv1d
    y = conv(x, w, stride, padding, dilation, groups)
    gy = g.input("gy", shape=y.shape)
    grads = gc.build_grad(y, [x, w], seed=gy)
    feeds = {"x": rng.standard_normal(xs), "w": rng.standard_normal(ws), "gy": rng.standard_normal(y.shape)}
    yv, dx, dw = gc.compile([y, grads[x], grads[w]]).run(feeds)
    assert yv.shape == y.shape and dx.shape == xs and dw.shape == ws
    inner = np.sum(yv * feeds["gy"])
    np.testing.assert_allclose(np.sum(feeds["x"] * dx), inner, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.sum(feeds["w"] * dw), inner, rtol=1e-10, atol=1e-10)
    if torch is not None:
        tx, tw = (torch.tensor(feeds[k], requires_grad=True) for k in ("x", "w"))
        tconv = F.conv2d if nd == 2 else F.conv1d
        ty = tconv(tx, tw, stride=stride, padding=padding, dilation=dilation, groups=groups)
        ty.backward(torch.from_numpy(feeds["gy"]))
        for a, b in ((yv, ty), (dx, tx.grad), (dw, tw.grad)):
            np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-10, atol=1e-10)


def _random_pools(count: int, seed: int = 13):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        k = tuple(int(v) for v in rng.integers(1, 4, 2))
        s = tuple(int(v) for v in rng.integers(1, 4, 2))
        p = tuple(int(rng.integers(0, kk // 2 + 1)) for kk in k)
        size = tuple(int(v) for v in rng.integers(1, 8, 2))
        if any(sz + 2 * pp < kk for sz, pp, kk in zip(size, p, k)):
            continue
        out.append(((int(rng.choice([1, 3])), 2) + size, k, s, p))
    return out


@pytest.mark.parametrize("xs,kernel,stride,padding", _random_pools(30))
def test_pooling_gradients_on_random_configurations(xs, kernel, stride, padding):
    """Forward against the loops; avg_pool2d_grad is avg_pool2d's adjoint; max_pool2d_grad and
    max_pool2d_gather are each other's adjoints; and both gradients match PyTorch when installed."""
    rng = np.random.default_rng(14)
    g = gc.Graph()
    x = g.input("x", shape=xs)
    ya, ym = gc.avg_pool2d(x, kernel, stride, padding), gc.max_pool2d(x, kernel, stride, padding)
    ga, gm = g.input("ga", shape=ya.shape), g.input("gm", shape=ym.shape)
    da = gc.build_grad(ya, [x], seed=ga)[x]
    dm = gc.build_grad(ym, [x], seed=gm)[x]
    v = g.input("v", shape=xs)
    gather = gc.build_grad(gc.sum(dm * v), [gm])[gm]            # max_pool2d_grad's bprop: the gather
    assert (da.op.name, dm.op.name, gather.op.name) == ("avg_pool2d_grad", "max_pool2d_grad", "max_pool2d_gather")
    xv = rng.permutation(np.arange(np.prod(xs))).reshape(xs) * 0.1           # distinct values: no ties
    feeds = {"x": xv, "ga": rng.standard_normal(ya.shape), "gm": rng.standard_normal(ym.shape),
             "v": rng.standard_normal(xs)}
    a, m, dav, dmv, gav = gc.compile([ya, ym, da, dm, gather]).run(feeds)
    np.testing.assert_allclose(a, ref_pool(xv, kernel, stride, padding, "avg"), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m, ref_pool(xv, kernel, stride, padding, "max"), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.sum(dav * xv), np.sum(a * feeds["ga"]), rtol=1e-10)
    np.testing.assert_allclose(np.sum(dmv * feeds["v"]), np.sum(gav * feeds["gm"]), rtol=1e-10)
    np.testing.assert_allclose(np.sum(dmv * xv), np.sum(m * feeds["gm"]), rtol=1e-10)   # gather(x, x) = max
    if torch is not None:
        tx = torch.tensor(xv, requires_grad=True)
        (F.avg_pool2d(tx, kernel, stride, padding) * torch.from_numpy(feeds["ga"])).sum().backward()
        np.testing.assert_allclose(dav, tx.grad.numpy(), rtol=1e-12, atol=1e-12)
        tx.grad = None
        (F.max_pool2d(tx, kernel, stride, padding) * torch.from_numpy(feeds["gm"])).sum().backward()
        np.testing.assert_allclose(dmv, tx.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_sizes_fixed_only_at_run_time():
    """Batch, height and width declared None: one program runs images of two sizes, and agrees with the
    graph declared with each fixed shape."""
    rng = np.random.default_rng(15)
    wv = rng.standard_normal((3, 2, 3, 3))

    def build(shape):
        g = gc.Graph()
        x, w = g.input("x", shape=shape), g.parameter("w", wv)
        y = gc.avg_pool2d(gc.max_pool2d(gc.tanh(gc.conv2d(x, w, padding=1, stride=2)), 2, 1, 1), 2)
        J = gc.sum(y * y, name="J")
        grads = gc.build_grad(J, [w, x])
        return gc.compile([y, J, grads[w], grads[x]]), y
    dynamic, y = build((None, 2, None, None))
    assert y.shape == (None, 3, None, None)
    for shape in [(2, 2, 9, 7), (1, 2, 5, 12)]:
        xv = rng.standard_normal(shape)
        fixed, _ = build(shape)
        for a, b in zip(dynamic.run({"x": xv}), fixed.run({"x": xv})):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)


def test_optimised_program_equals_the_declared_one():
    """The compiler's passes (simplify, CSE, buffers) keep the convnet's loss and gradients as declared."""
    from graphcompiler.demo_lenet import build_lenet, load_digit_images
    X, _, y, _ = load_digit_images(0)
    net = build_lenet()
    outs = [net.J] + [net.grads[p] for p in net.params]
    feeds = {"x": X[:16], "y": y[:16]}
    fast, slow = gc.compile(outs), gc.compile(outs, optimize=False)
    for _ in range(2):                          # twice: planned buffers are reused across runs
        for a, b in zip(fast.run(feeds), slow.run(feeds)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_op_record_facts():
    """FLOPs for recomputation's budget (a convolution: 2 per output, input channel of its group and tap)."""
    g = gc.Graph()
    x, w = g.input("x", shape=(3, 4, 6, 6)), g.input("w", shape=(8, 2, 3, 3))
    y = gc.conv2d(x, w, padding=1, groups=2)
    grads = gc.build_grad(gc.sum(gc.max_pool2d(y, 2)), [x, w])
    assert y.op.flops(y) == 2 * (3 * 8 * 6 * 6) * (2 * 3 * 3)
    assert grads[x].op.flops(grads[x]) == 2 * (3 * 4 * 6 * 6) * (4 * 3 * 3)
    assert grads[w].op.flops(grads[w]) == 2 * (8 * 2 * 3 * 3) * (3 * 6 * 6)
    assert not y.op.is_view and not y.op.writes_out and gc.max_pool2d(x, 2).op.scratch == 1
