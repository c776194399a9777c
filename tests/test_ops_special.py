"""The op table for the ops of API section 9 in special.py, reductions.py and contract.py: forward against
NumPy/SciPy, first and second derivatives against central differences in float64, stability at the edges,
and a save/load, picture and SymPy round for every op."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.special as sps
from gradcheck import check_gradients
from hypothesis import given
from hypothesis import strategies as st
from test_io import assert_same_graph
from test_ops import PAIRS, Case, away, normal, pos

import graphcompiler as gc
from graphcompiler.ops.special import polygamma
from graphcompiler.symbolic import evaluate

SHAPES = [(), (2,), (3, 2), (2, 3, 2)]


def small(rng, shape):          # inside tan's period, away from its poles
    return rng.uniform(-1.0, 1.0, size=shape)


def wide(rng, shape):           # where mod wraps several times
    return rng.uniform(-4.0, 4.0, size=shape)


def low(rng, shape):            # clip's lower bounds
    return rng.uniform(-1.0, -0.2, size=shape)


def high(rng, shape):           # clip's upper bounds
    return rng.uniform(0.2, 1.0, size=shape)


def with_zeros(rng, shape):     # prod's hard case: rows with one zero and with two
    x = rng.uniform(0.5, 1.5, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    flat = x.reshape(-1)
    flat[0] = 0.0
    if flat.size > 3:
        flat[-1] = flat[-2] = 0.0
    return x


def inside(rng, shape):         # inside (-1, 1), away from arcsin's and arctanh's edges
    return rng.uniform(-0.9, 0.9, size=shape)


def above_one(rng, shape):      # arccosh's domain, away from its edge at 1
    return rng.uniform(1.2, 3.0, size=shape)


CASES: list[Case] = []

UNARY = [
    ("softplus", gc.softplus, lambda x: np.log1p(np.exp(x)), normal),
    ("log_sigmoid", gc.log_sigmoid, lambda x: -np.log1p(np.exp(-x)), normal),
    ("erf", gc.erf, sps.erf, normal),
    ("gammaln", gc.gammaln, sps.gammaln, pos),
    ("gammaln_negative", gc.gammaln, sps.gammaln, lambda rng, s: -pos(rng, s) * 0.4 - 0.1),  # log|Gamma|
    ("digamma", gc.digamma, sps.digamma, pos),
    ("polygamma1", lambda x: polygamma(1, x), lambda x: sps.polygamma(1, x), pos),
    ("polygamma3", lambda x: polygamma(3, x), lambda x: sps.polygamma(3, x), pos),
    ("expm1", gc.expm1, np.expm1, normal), ("tan", gc.tan, np.tan, small),
    ("arctan", gc.arctan, np.arctan, normal), ("sinh", gc.sinh, np.sinh, normal),
    ("cosh", gc.cosh, np.cosh, normal), ("arcsin", gc.arcsin, np.arcsin, inside),
    ("arccos", gc.arccos, np.arccos, inside), ("arcsinh", gc.arcsinh, np.arcsinh, normal),
    ("arccosh", gc.arccosh, np.arccosh, above_one), ("arctanh", gc.arctanh, np.arctanh, inside),
    ("nan_to_num", gc.nan_to_num, np.nan_to_num, normal), ("reciprocal", gc.reciprocal, np.reciprocal, pos),
    ("floor", gc.floor, np.floor, wide), ("ceil", gc.ceil, np.ceil, wide), ("round", gc.round, np.round, wide),
    ("clip_numbers", lambda x: gc.clip(x, -0.5, 0.7), lambda x: np.clip(x, -0.5, 0.7), normal),
    ("clip_lower_only", lambda x: gc.clip(x, -0.5, None), lambda x: np.clip(x, -0.5, None), normal),
    ("clip_upper_only", lambda x: gc.clip(x, None, 0.5), lambda x: np.clip(x, None, 0.5), normal),
]
for (name, f, ref, dom), shape in itertools.product(UNARY, SHAPES):
    CASES.append(Case(f"{name}{shape}", f, ref, [shape], [dom]))

BINARY = [("logaddexp", gc.logaddexp, np.logaddexp, normal, normal), ("mod", gc.mod, np.mod, wide, pos),
          ("logaddexp2", gc.logaddexp2, np.logaddexp2, normal, normal), ("fmax", gc.fmax, np.fmax, normal, normal),
          ("fmin", gc.fmin, np.fmin, normal, normal)]
for (name, f, ref, da, db), (sa, sb) in itertools.product(BINARY, PAIRS + [((2, 3, 2), (3, 1))]):
    CASES.append(Case(f"{name}{sa}{sb}", f, ref, [sa, sb], [da, db]))

for sx, slo, shi in [((3, 2), (3, 2), (3, 2)), ((3, 2), (2,), ()), ((2,), (3, 1), (3, 2)), ((), (2,), ())]:
    CASES.append(Case(f"clip_nodes{sx}{slo}{shi}", gc.clip, np.clip, [sx, slo, shi], [normal, low, high]))
CASES.append(Case("clip_lo_above_hi", gc.clip, np.clip, [(3, 2), (3, 2), (2,)], [normal, high, low]))

# -- reductions and scans: every axis, with and without keepdims -------------------------------
for shape in [(3, 2), (2, 3, 2)]:
    nd = len(shape)
    axes = [None] + list(range(nd)) + [-1, (0, nd - 1)]
    for axis, keep in itertools.product(axes, [False, True]):
        for name, f, ref, dom in [("prod", gc.prod, np.prod, normal), ("prod_zeros", gc.prod, np.prod, with_zeros),
                                  ("min", gc.min, np.min, away),
                                  ("var", gc.var, np.var, normal), ("std", gc.std, np.std, normal),
                                  ("var_ddof1", lambda x, **k: gc.var(x, ddof=1, **k),
                                   lambda x, **k: np.var(x, ddof=1, **k), normal),
                                  ("std_ddof1", lambda x, **k: gc.std(x, ddof=1, **k),
                                   lambda x, **k: np.std(x, ddof=1, **k), normal)]:
            CASES.append(Case(f"{name}{shape}axis={axis},keepdims={keep}",
                              lambda x, f=f, axis=axis, keep=keep: f(x, axis=axis, keepdims=keep),
                              lambda x, ref=ref, axis=axis, keep=keep: ref(x, axis=axis, keepdims=keep),
                              [shape], [dom]))
for shape, axis in [((1,), None), ((), None), ((3, 1), 1), ((1, 2), 0), ((2, 1, 2), 1)]:
    for name, f, ref in [("var", gc.var, np.var), ("std", gc.std, np.std)]:  # one element: identically 0
        CASES.append(Case(f"{name}_one{shape}axis={axis}", lambda x, f=f, a=axis: f(x, axis=a) + x * x,
                          lambda x, ref=ref, a=axis: ref(x, axis=a) + x * x, [shape], [normal]))
for shape, axis in [((7,), 0), ((2, 5), 1), ((6, 2), 0), ((3, 4, 3), (0, 2)), ((9,), None)]:
    for dom in (normal, with_zeros):           # longer and odd axes: every level of the product tree
        CASES.append(Case(f"prod{shape}axis={axis},{dom.__name__}", lambda x, a=axis: gc.prod(x, axis=a),
                          lambda x, a=axis: np.prod(x, axis=a), [shape], [dom]))
for shape in [(4,), (3, 2), (2, 3, 2)]:
    for axis in list(range(len(shape))) + [-1, None]:
        CASES.append(Case(f"cumsum{shape}axis={axis}", lambda x, a=axis: gc.cumsum(x, a),
                          lambda x, a=axis: np.cumsum(x, a), [shape]))
        CASES.append(Case(f"sort{shape}axis={axis}", lambda x, a=axis: gc.sort(x, a),
                          lambda x, a=axis: np.sort(x, a), [shape]))
        for dom in (normal, with_zeros):   # zeros: the derivative is prod's, no division by x
            CASES.append(Case(f"cumprod{shape}axis={axis},{dom.__name__}", lambda x, a=axis: gc.cumprod(x, a),
                              lambda x, a=axis: np.cumprod(x, a), [shape], [dom]))

# -- contractions -------------------------------------------------------------------------------
EINSUM = [
    ("ij,jk->ik", [(2, 3), (3, 4)]), ("ij,jk", [(2, 3), (3, 4)]), ("bij,bjk->bik", [(2, 2, 3), (2, 3, 2)]),
    ("ij->ji", [(2, 3)]), ("ij->", [(2, 3)]), ("ij->i", [(2, 3)]), ("ij->j", [(2, 3)]), ("ii->", [(3, 3)]),
    ("ii->i", [(3, 3)]), ("iij->ij", [(2, 2, 3)]), ("iji->j", [(2, 3, 2)]), ("i,j->ij", [(3,), (2,)]),
    ("i,i->", [(3,), (3,)]), ("i,i->i", [(3,), (3,)]), ("ij,ij->ij", [(1, 3), (4, 3)]),
    ("ij,jk,kl->il", [(2, 3), (3, 2), (2, 4)]), ("bi,bj->bij", [(2, 3), (2, 2)]), ("ij,k->ijk", [(2, 2), (3,)]),
    ("...ij,...jk->...ik", [(2, 1, 2, 3), (3, 3, 2)]), ("...i->...", [(2, 3, 4)]), ("i...->...", [(2, 3)]),
    ("...i,i", [(2, 3), (3,)]), ("ij,jk->", [(2, 3), (3, 2)]), ("iIj,Ij->i", [(2, 2, 3), (2, 3)]),
    ("ij,ij->", [(3, 2), (3, 2)]), ("i,ij,j->", [(2,), (2, 3), (3,)]),
]
for subs, shapes in EINSUM:
    CASES.append(Case(f"einsum[{subs}]{shapes}", lambda *xs, s=subs: gc.einsum(s, *xs),
                      lambda *xs, s=subs: np.einsum(s, *xs), shapes))
CASES.append(Case("einsum[i,i->]same_node", lambda x: gc.einsum("i,i->", x, x), lambda x: x @ x, [(4,)]))
CASES.append(Case("einsum[ij,jk->ik]same_node", lambda x: gc.einsum("ij,jk->ik", x, x), lambda x: x @ x,
                  [(3, 3)]))
for axes, sa, sb in [(2, (2, 3, 4), (3, 4, 2)), (1, (2, 3), (3, 4)), (0, (2,), (3, 2)),
                     (([1, 0], [0, 1]), (2, 3, 2), (3, 2)), ((2, 0), (2, 3, 4), (4, 2)), (1, (3,), (3,))]:
    CASES.append(Case(f"tensordot{sa}{sb}axes={axes}", lambda a, b, ax=axes: gc.tensordot(a, b, ax),
                      lambda a, b, ax=axes: np.tensordot(a, b, ax), [sa, sb]))
for sa, sb in [((3,), (2,)), ((2, 2), (3,)), ((), (2,))]:
    CASES.append(Case(f"outer{sa}{sb}", gc.outer, np.outer, [sa, sb]))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_forward_and_derivatives(case: Case):
    rng = np.random.default_rng(abs(hash(case.id)) % 2**32)
    arrays = case.arrays(rng)
    g = gc.Graph(case.id)
    xs = [g.input(f"x{k}", shape=a.shape) for k, a in enumerate(arrays)]
    y = case.build(*xs)
    feeds = {x.name: a for x, a in zip(xs, arrays)}
    (out,) = gc.compile([y]).run(feeds)
    expected = case.ref(*arrays)
    assert out.shape == np.shape(expected) == y.shape
    assert out.dtype == y.dtype
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    weights = g.constant(rng.uniform(0.5, 1.5, size=y.shape))
    cost = gc.sum(y * weights, name="J")
    check_gradients(g, cost, xs, feeds, second=case.second)


# -- stability at the edges -------------------------------------------------------------------

def _run(build, *arrays, grads=True):
    """Values of build(*inputs), and (if grads) first derivatives of sum(build) and second ones (diagonal)."""
    g = gc.Graph()
    xs = [g.input(f"x{k}", shape=np.shape(a)) for k, a in enumerate(arrays)]
    y = build(*xs)
    outs = [y]
    if grads:
        d = gc.build_grad(gc.sum(y), xs)
        outs += [d[x] for x in xs]
        d2 = gc.build_grad(gc.sum(d[xs[0]]), [xs[0]], disconnected="zero")
        outs.append(d2[xs[0]])
    return gc.compile(outs).run({f"x{k}": np.asarray(a, dtype=float) for k, a in enumerate(arrays)})


def test_logaddexp_softplus_log_sigmoid_exact_at_800():
    a = np.array([800.0, -800.0, 800.0, -800.0, 0.0])
    b = np.array([800.0, -800.0, -800.0, 800.0, 0.0])
    y, da, db, d2 = _run(gc.logaddexp, a, b)
    np.testing.assert_array_equal(y, [800 + np.log(2), -800 + np.log(2), 800.0, 800.0, np.log(2)])
    np.testing.assert_array_equal(da, [0.5, 0.5, 1.0, 0.0, 0.5])
    np.testing.assert_array_equal(db, [0.5, 0.5, 0.0, 1.0, 0.5])
    np.testing.assert_array_equal(d2, [0.25, 0.25, 0.0, 0.0, 0.25])
    x = np.array([800.0, -800.0, 40.0, -40.0, 0.0])
    y, d, d2 = _run(gc.softplus, x)
    np.testing.assert_allclose(y, [800.0, 0.0, 40 + np.exp(-40.0), np.exp(-40.0), np.log(2)], rtol=1e-15, atol=0)
    np.testing.assert_allclose(d, [1.0, 0.0, 1 / (1 + np.exp(-40.0)), np.exp(-40) / (1 + np.exp(-40)), 0.5],
                               rtol=1e-15, atol=0)
    assert np.all(np.isfinite(d2)) and d2[0] == 0 and d2[1] == 0
    y, d, d2 = _run(gc.log_sigmoid, x)
    np.testing.assert_allclose(y, [0.0, -800.0, -np.exp(-40.0), -40 - np.exp(-40.0), -np.log(2)],
                               rtol=1e-15, atol=0)
    np.testing.assert_allclose(d, [0.0, 1.0, np.exp(-40) / (1 + np.exp(-40)), 1 / (1 + np.exp(-40.0)), 0.5],
                               rtol=1e-15, atol=0)
    assert y[2] < 0 and d[2] > 0                                      # not rounded to 0 at x = 40
    assert np.all(np.isfinite(d2))


def test_gammaln_and_digamma_at_large_arguments():
    x = np.array([1e3, 1e10, 1e100, 1e300])
    y, d, d2 = _run(gc.gammaln, x)
    stirling = (x - 0.5) * np.log(x) - x + 0.5 * np.log(2 * np.pi) + 1 / (12 * x)
    np.testing.assert_allclose(y, stirling, rtol=1e-14)
    r = 1 / x
    np.testing.assert_allclose(d, np.log(x) - r / 2 - r * r / 12, rtol=1e-14)                # digamma
    np.testing.assert_allclose(d2, r + r * r / 2 + r**3 / 6, rtol=1e-13)        # trigamma; next term r^5/30
    assert np.all(np.isfinite(y))


def test_float32_stays_float32():
    g = gc.Graph()
    x = g.input("x", shape=(3,), dtype="float32")
    ys = [f(x) for f in (gc.softplus, gc.log_sigmoid, gc.erf, gc.gammaln, gc.digamma, gc.expm1, gc.tan,
                         gc.arctan, gc.sinh, gc.cosh, gc.reciprocal, gc.floor, gc.ceil, gc.round)]
    ys += [gc.logaddexp(x, 1.0), gc.mod(x, 0.3), gc.clip(x, 0.1, 0.9), gc.prod(x), gc.min(x), gc.var(x),
           gc.std(x), gc.cumsum(x, 0), gc.einsum("i,i->", x, x), gc.outer(x, x), gc.tensordot(x, x, 1)]
    d = gc.build_grad(gc.sum(gc.digamma(x)) + gc.prod(x), [x])[x]
    vals = gc.compile(ys + [d]).run({"x": np.array([0.5, 1.0, 1.5], np.float32)})
    for y, v in zip(ys + [d], vals):
        assert y.dtype == np.float32 and v.dtype == np.float32, y.op


def test_prod_gradient_with_zeros_is_the_product_of_the_others():
    x = np.array([[2.0, 0.0, 3.0, 4.0, 5.0], [0.0, 2.0, 0.0, 3.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    g = gc.Graph()
    xn = g.input("x", shape=x.shape)
    p = gc.prod(xn, axis=1)
    d = gc.build_grad(gc.sum(p), [xn])[xn]
    (dv,) = gc.compile([d]).run({"x": x})
    others = np.array([[np.prod(np.delete(row, k)) for k in range(5)] for row in x])
    np.testing.assert_array_equal(dv, others)
    assert dv[0, 1] == 120.0 and np.all(dv[1] == 0)
    # the Hessian of each row's product: d2/dxk dxl = the product of the entries other than k and l
    v = np.arange(15.0).reshape(3, 5) / 7
    hv = gc.build_grad(gc.sum(d * g.constant(v)), [xn])[xn]
    (hvv,) = gc.compile([hv]).run({"x": x})
    expect = np.zeros_like(x)
    for r in range(3):
        for k in range(5):
            expect[r, k] = sum(np.prod(np.delete(x[r], [k, l])) * v[r, l] for l in range(5) if l != k)
    np.testing.assert_allclose(hvv, expect, rtol=1e-14)


def test_min_shares_gradient_among_ties():
    g = gc.Graph()
    x = g.input("x", shape=(2, 3))
    m = gc.min(x, axis=1)
    (dx,) = gc.compile([gc.build_grad(gc.sum(m), [x])[x]]).run({"x": np.array([[1., 0, 0], [2, 0, 1]])})
    np.testing.assert_array_equal(dx, [[0, 0.5, 0.5], [0, 1, 0]])


def test_clip_and_mod_derivatives_at_their_conventions():
    x = np.array([-2.0, -0.5, 0.0, 0.7, 2.0])
    y, dx, dlo, dhi, _ = _run(gc.clip, x, np.full(5, -0.5), np.full(5, 0.7))
    np.testing.assert_array_equal(y, np.clip(x, -0.5, 0.7))
    np.testing.assert_array_equal(dx, [0, 1, 1, 1, 0])          # 1 inside, the bounds included
    np.testing.assert_array_equal(dlo, [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(dhi, [0, 0, 0, 0, 1])
    y, da, db, _ = _run(gc.mod, np.array([5.5, -5.5]), np.array([2.0, 2.0]))
    np.testing.assert_array_equal(y, [1.5, 0.5])
    np.testing.assert_array_equal(da, [1, 1])
    np.testing.assert_array_equal(db, [-2, 3])                  # -floor(a/b)
    y, d, d2 = _run(lambda x: gc.floor(x) + gc.ceil(x) + gc.round(x), np.array([0.5, 1.5, -2.5, 0.2]))
    np.testing.assert_array_equal(y, np.floor([0.5, 1.5, -2.5, 0.2]) + np.ceil([0.5, 1.5, -2.5, 0.2])
                                  + np.array([0.0, 2.0, -2.0, 0.0]))          # round half to even
    np.testing.assert_array_equal(d, 0)
    np.testing.assert_array_equal(d2, 0)


# -- argmax / argmin ----------------------------------------------------------------------------

@pytest.mark.parametrize("fn,ref", [(gc.argmax, np.argmax), (gc.argmin, np.argmin)])
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4)])
def test_argmax_argmin_forward(fn, ref, shape):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape)
    x.reshape(-1)[-1] = x.reshape(-1)[0] = x.max() + 1 if fn is gc.argmax else x.min() - 1  # a tie: first wins
    g = gc.Graph()
    xn = g.input("x", shape=shape)
    cases = [(None, False)] + [(a, k) for a in list(range(len(shape))) + [-1] for k in (False, True)]
    nodes = [fn(xn, axis=a, keepdims=k) for a, k in cases]
    outs = gc.compile(nodes).run({"x": x})
    for (a, k), node, out in zip(cases, nodes, outs):
        expected = ref(x, axis=a, keepdims=k)
        assert node.dtype == np.int64 and out.dtype == np.int64 and node.shape == out.shape == expected.shape
        np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("fn", [gc.argmax, gc.argmin])
def test_argmax_argmin_have_no_derivative(fn):
    g = gc.Graph()
    x = g.input("x", shape=(3, 4))
    idx = fn(x, axis=1, name="picked")
    cost = gc.sum(gc.astype(idx, "float64") * gc.sum(x, axis=1))
    with pytest.raises(gc.UndefinedGradientError, match=rf"picked \({fn.__name__}"):
        gc.build_grad(cost, [x])
    # an accuracy (argmax compared with labels) is piecewise constant: it adds zero, no error
    labels = g.input("y", shape=(3,), dtype="int64")
    acc = gc.mean(gc.astype(gc.equal(idx, labels), "float64"))
    d = gc.build_grad(acc + gc.sum(x), [x])[x]
    (dv,) = gc.compile([d]).run({"x": np.ones((3, 4)), "y": np.zeros(3, np.int64)})
    np.testing.assert_array_equal(dv, 1.0)


# -- bad input names what is wrong ------------------------------------------------------------

def test_bad_arguments_raise_the_package_errors():
    g = gc.Graph()
    x, m = g.input("x", shape=(2, 3)), g.input("m", shape=(3, 4))
    with pytest.raises(gc.ShapeError, match="names 3 axes"):
        gc.einsum("ijk,jk->i", x, m)
    with pytest.raises(gc.ShapeError, match="letter 'j' has size 3 .* and 4"):
        gc.einsum("ij,jk->ik", x, gc.transpose(m))
    with pytest.raises(gc.ShapeError, match="output has no '...'"):
        gc.einsum("...j->j", x)
    with pytest.raises(gc.ShapeError, match="2 operands but 1"):
        gc.einsum("ij,jk->ik", x)
    with pytest.raises(gc.ShapeError, match="tensordot"):
        gc.tensordot(x, m, 3)
    with pytest.raises(gc.ShapeError, match="ddof"):
        gc.var(x, ddof=-1)
    with pytest.raises(gc.ShapeError, match="out of range"):
        gc.cumsum(x, 2)
    with pytest.raises(gc.DTypeError, match="floating"):
        gc.erf(g.input("k", shape=(2,), dtype="int64"))
    with pytest.raises(gc.ShapeError, match="do not broadcast"):
        gc.clip(x, g.input("lo", shape=(4,)), 1.0)
    v = g.input("v", shape=(None, 3))
    p = gc.prod(v, axis=0)
    with pytest.raises(gc.ShapeError, match="unknown"):
        gc.build_grad(gc.sum(p), [v])


def _batch_cost(batch):
    g = gc.Graph()
    x = g.input("x", shape=(batch, 3))
    w = g.input("w", shape=(3, 2))
    cost = (gc.sum(gc.einsum("bi,ij->bj", x, w)) + gc.sum(gc.var(x, axis=0)) + gc.sum(gc.std(x, axis=(0, 1)))
            + gc.sum(gc.prod(x, axis=1)) + gc.sum(gc.cumsum(x, 0)) + gc.sum(gc.min(x, axis=0))
            + gc.sum(gc.clip(x, -0.5, 0.5)) + gc.sum(gc.logaddexp(x, gc.sum(w, axis=1)))
            + gc.sum(gc.einsum("...i,...i->...", x, x) * gc.mod(gc.sum(x, axis=1), 0.7)))
    return g, cost, x, w


def test_run_time_sized_batches():
    """A None batch dim: the rules follow the run-time shapes (sum_like, broadcast_like) and agree with the
    fixed-size graph, whose derivatives are checked against central differences."""
    rng = np.random.default_rng(2)
    feeds = {"x": rng.standard_normal((4, 3)), "w": rng.standard_normal((3, 2))}
    v = {"x": rng.standard_normal((4, 3)), "w": rng.standard_normal((3, 2))}
    g, cost, x, w = _batch_cost(4)
    check_gradients(g, cost, [x, w], feeds)
    results = []
    for batch in (4, None):
        g, cost, x, w = _batch_cost(batch)
        d = gc.build_grad(cost, [x, w])
        inner = gc.sum(d[x] * g.constant(v["x"])) + gc.sum(d[w] * g.constant(v["w"]))
        h = gc.build_grad(inner, [x, w])
        results.append(gc.compile([cost, d[x], d[w], h[x], h[w]]).run(feeds))
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=1e-13, atol=1e-13)


# -- every op saves and loads, draws and exports ----------------------------------------------

ROUND = {
    "logaddexp": lambda x, y: gc.logaddexp(x, y), "softplus": lambda x, y: gc.softplus(x),
    "log_sigmoid": lambda x, y: gc.log_sigmoid(x), "erf": lambda x, y: gc.erf(x),
    "gammaln": lambda x, y: gc.gammaln(y), "digamma": lambda x, y: gc.digamma(y),
    "polygamma": lambda x, y: polygamma(2, y), "expm1": lambda x, y: gc.expm1(x), "tan": lambda x, y: gc.tan(x),
    "arctan": lambda x, y: gc.arctan(x), "sinh": lambda x, y: gc.sinh(x), "cosh": lambda x, y: gc.cosh(x),
    "reciprocal": lambda x, y: gc.reciprocal(y), "clip": lambda x, y: gc.clip(x, -0.5, y),
    "clip_one_side": lambda x, y: gc.clip(x, None, 0.5), "floor": lambda x, y: gc.floor(x) * x,
    "ceil": lambda x, y: gc.ceil(x) * x, "round": lambda x, y: gc.round(x) * x, "mod": lambda x, y: gc.mod(x, y),
    "prod": lambda x, y: gc.prod(x, axis=1), "min": lambda x, y: gc.min(x, axis=0, keepdims=True),
    "var": lambda x, y: gc.var(x, axis=1, ddof=1), "std": lambda x, y: gc.std(x),
    "cumsum": lambda x, y: gc.cumsum(x, 1), "argmax": lambda x, y: gc.argmax(x, axis=1),
    "argmin": lambda x, y: gc.argmin(x), "einsum": lambda x, y: gc.einsum("ij,ij->i", x, y),
    "einsum_diagonal": lambda x, y: gc.einsum("ii->i", gc.einsum("ij,kj->ik", x, y)),
    "tensordot": lambda x, y: gc.tensordot(x, y, ([1], [1])), "outer": lambda x, y: gc.outer(x[0], y[1]),
}


@pytest.mark.parametrize("op", list(ROUND))
def test_every_op_saves_loads_draws_and_exports(op, tmp_path):
    rng = np.random.default_rng(7)
    g = gc.Graph(f"round_{op}")
    x = g.input("x", shape=(2, 3))
    y = g.parameter("y", rng.uniform(0.5, 2.0, size=(2, 3)))
    out = gc.identity(ROUND[op](x, y), name="out")
    nodes = [out]
    if out.dtype.kind == "f":                    # the derivative nodes too (polygamma, reverse cumsum, ...)
        d = gc.build_grad(gc.sum(out * out), [x, y], disconnected="zero")
        nodes += [d[x], d[y]]
    g.save(tmp_path / "g.json")
    g2 = gc.load(tmp_path / "g.json")
    assert_same_graph(g, g2)
    feeds = {"x": rng.standard_normal((2, 3))}
    before = gc.compile(nodes).run(feeds)
    after = gc.compile([g2[n.name] for n in nodes]).run(feeds)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert "digraph" in str(gc.to_dot(g))
    expr = gc.to_sympy(out)
    assert gc.to_latex(out)
    if op not in SCIPY_ONLY:                     # the export stands for the same numbers
        value = np.asarray(evaluate(expr, feeds, graph=g), dtype=float).reshape(before[0].shape)
        np.testing.assert_allclose(value, before[0], rtol=1e-12, atol=1e-12)


SCIPY_ONLY = ("erf", "gammaln", "digamma", "polygamma")    # evaluate() lambdifies with NumPy alone


@pytest.mark.parametrize("f,ref", [(gc.erf, sps.erf), (gc.gammaln, sps.gammaln), (gc.digamma, sps.digamma),
                                   (lambda x: polygamma(2, x), lambda v: sps.polygamma(2, v))])
def test_special_function_exports_evaluate_to_scipy(f, ref):
    g = gc.Graph()
    x = g.input("x", shape=())
    expr = gc.to_sympy(f(x))
    (sym,) = expr.free_symbols
    for v in (0.3, 1.7, 6.0):
        assert float(expr.subs(sym, v).evalf(30)) == pytest.approx(float(ref(v)), rel=1e-13)


EINSUM_EXPORTS = [("ij,jk->ik", [(2, 3), (3, 4)]), ("ij,kj->ik", [(2, 3), (4, 3)]), ("ji,jk->ik", [(3, 2), (3, 4)]),
                  ("ij,jk->ki", [(2, 3), (3, 4)]), ("ij,j->i", [(2, 3), (3,)]), ("j,jk->k", [(3,), (3, 4)]),
                  ("j,kj->k", [(3,), (4, 3)]), ("i,j->ij", [(2,), (3,)]), ("i,j->ji", [(2,), (3,)]),
                  ("i,i->", [(3,), (3,)]), ("ij,ij->", [(2, 3), (2, 3)]), ("ij,ji->", [(2, 3), (3, 2)]),
                  ("ij->ji", [(2, 3)]), ("ii->", [(3, 3)]), ("ij,jk", [(2, 3), (3, 4)]),
                  ("ij,ij->ij", [(2, 3), (2, 3)])]


@pytest.mark.parametrize("subs,shapes", EINSUM_EXPORTS, ids=[e[0] for e in EINSUM_EXPORTS])
def test_einsum_exports_as_matrix_algebra(subs, shapes):
    rng = np.random.default_rng(3)
    g = gc.Graph()
    xs = [g.input(f"x{k}", shape=s) for k, s in enumerate(shapes)]
    out = gc.einsum(subs, *xs)
    vals = {f"x{k}": rng.standard_normal(s) for k, s in enumerate(shapes)}
    (v,) = gc.compile([out]).run(vals)
    expr = gc.to_sympy(out)
    assert "einsum" not in str(expr)                       # A B, a b^T, tr(A^T B), A∘B ..., not einsum(A, B)
    np.testing.assert_allclose(np.asarray(evaluate(expr, vals), float).reshape(v.shape), v, rtol=1e-12)


def test_every_new_op_is_public_and_in_the_table():
    names = ["logaddexp", "softplus", "log_sigmoid", "erf", "gammaln", "digamma", "expm1", "tan", "arctan", "sinh",
             "cosh", "reciprocal", "clip", "floor", "ceil", "round", "mod", "prod", "min", "var", "std", "cumsum",
             "argmax", "argmin", "einsum", "tensordot", "outer"]
    for n in names:
        assert callable(getattr(gc, n)), n
        assert n in gc.OPS or n in ("tensordot", "outer"), n      # those two are einsums
        assert n in ROUND
    tested = " ".join(c.id for c in CASES)
    assert not [n for n in names if n not in tested and n not in ("argmax", "argmin")]


@pytest.mark.parametrize("op,attr,bad,message", [
    ("einsum", "subscripts", "ij,jk->ikk", "repeats a letter"), ("einsum", "subscripts", "i$,j->i", "not a letter"),
    ("einsum", "subscripts", "ij,jk->iz", "in no input"), ("var", "ddof", -1, "ddof"),
    ("polygamma", "n", -2, "non-negative"), ("cumsum", "axis", 5, "out of range"),
])
def test_the_loader_checks_the_new_attributes(op, attr, bad, message, tmp_path):
    import json
    g = gc.Graph("bad")
    x = g.input("x", shape=(3, 3))
    node = {"einsum": lambda: gc.einsum("ij,jk->ik", x, x), "var": lambda: gc.var(x, ddof=1),
            "polygamma": lambda: polygamma(1, x), "cumsum": lambda: gc.cumsum(x, 1)}[op]()
    doc = json.loads(gc.io.dumps(g))
    rec = next(r for r in doc["nodes"] if r["name"] == node.name)
    rec["attrs"][attr] = bad
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(gc.GraphFileError, match=message):
        gc.load(path)


@pytest.mark.parametrize("subs", ["ij->ji", "ii->i", "ij->ij", "ij"])
def test_einsum_of_one_operand_is_not_a_view_the_planner_can_overwrite(subs):
    """np.einsum of one operand returns a view; the planner reuses the dying input's buffer for sin(y)."""
    xv = np.random.default_rng(0).standard_normal((30, 30))
    g = gc.Graph()
    x = g.input("x", shape=(30, 30))
    y = gc.exp(x)
    t = gc.einsum(subs, y)
    w = gc.tanh(gc.sin(y) * 2.0) + 1.0
    (v,) = gc.compile([gc.sum(t) * gc.sum(w) + gc.sum(t * t)]).run({"x": xv})
    yv = np.exp(xv)
    tv = np.einsum(subs, yv)
    np.testing.assert_allclose(v, tv.sum() * (np.tanh(np.sin(yv) * 2) + 1).sum() + (tv * tv).sum(), rtol=1e-12)


def test_no_number_is_computed_while_building_derivatives(monkeypatch):
    """bprop builds graph nodes only: first and second derivatives of every new op, with every kernel disabled."""
    from graphcompiler.ops import base
    for cls in base.OPS.values():
        monkeypatch.setattr(cls, "kernel", lambda self, *a, **k: pytest.fail("a kernel ran in build_grad"))
    g = gc.Graph()
    x = g.input("x", shape=(2, 3))
    y = g.parameter("y", np.ones((2, 3)))
    cost = None
    for f in ROUND.values():
        v = f(x, y)
        if v.dtype.kind == "f":
            cost = gc.sum(v) if cost is None else cost + gc.sum(v)
    d = gc.build_grad(cost, [x, y])
    gc.build_grad(gc.sum(d[x] * d[x]) + gc.sum(d[y]), [x, y])


SYMPY_ORACLE = {
    "logaddexp": lambda a, b: gc.logaddexp(a, b), "softplus": lambda a, b: gc.softplus(a) * b,
    "log_sigmoid": lambda a, b: gc.log_sigmoid(a * b), "erf": lambda a, b: gc.erf(a * b),
    "gammaln": lambda a, b: gc.gammaln(b + a * a), "digamma": lambda a, b: gc.digamma(b + a * a),
    "polygamma": lambda a, b: polygamma(1, b + a * a), "expm1": lambda a, b: gc.expm1(a * b),
    "tan": lambda a, b: gc.tan(a * b), "arctan": lambda a, b: gc.arctan(a * b), "sinh": lambda a, b: gc.sinh(a * b),
    "cosh": lambda a, b: gc.cosh(a * b), "reciprocal": lambda a, b: gc.reciprocal(a + b),
    "clip": lambda a, b: gc.clip(a * a, -b, b), "mod": lambda a, b: gc.mod(a * 5, b),
    "floor": lambda a, b: gc.floor(a * 7) * b, "einsum": lambda a, b: gc.einsum(",->", a * a, b),
}


@pytest.mark.parametrize("op", list(SYMPY_ORACLE))
def test_exported_derivatives_agree_with_sympys_diff(op):
    """SymPy's own diff of the exported forward expression is an independent oracle for the exported
    first and second derivatives (the bprop rules and the SymPy rules checked against each other)."""
    import sympy as sp
    g = gc.Graph()
    a, b = g.input("a", shape=()), g.input("b", shape=())
    J = gc.identity(SYMPY_ORACLE[op](a, b), name="J")
    d = gc.build_grad(J, [a, b])
    dd = gc.build_grad(d[a], [a, b], disconnected="zero")
    f = gc.to_sympy(J).replace(sp.Mod, lambda x, y: x - y * sp.floor(x / y))   # SymPy cannot diff Mod
    held = {fl: sp.Dummy() for fl in f.atoms(sp.floor)}     # floor is locally constant: hold it fixed
    back = {v: k for k, v in held.items()}
    f = f.xreplace(held)
    sa, sb = sp.Symbol("a", real=True), sp.Symbol("b", real=True)
    for pt in ({sa: sp.Rational(3, 10), sb: sp.Rational(7, 5)}, {sa: sp.Rational(-6, 5), sb: sp.Rational(9, 4)}):
        for node, ref in [(d[a], sp.diff(f, sa)), (d[b], sp.diff(f, sb)), (dd[a], sp.diff(f, sa, 2)),
                          (dd[b], sp.diff(f, sa, sb))]:
            ours = float(gc.to_sympy(node).subs(pt).evalf(30))
            expected = float(ref.xreplace(back).subs(pt).evalf(30))
            assert ours == pytest.approx(expected, rel=1e-12, abs=1e-12), node.name


def test_einsum_of_large_operands_takes_the_planned_path():
    """Operands of 1024+ elements go through NumPy's contraction path (BLAS); the same numbers as matmul."""
    rng = np.random.default_rng(4)
    av, bv, cv = rng.standard_normal((40, 50)), rng.standard_normal((50, 30)), rng.standard_normal((30, 20))
    g = gc.Graph()
    a, b, c = g.input("a", shape=av.shape), g.input("b", shape=bv.shape), g.input("c", shape=cv.shape)
    y = gc.einsum("ij,jk,kl->il", a, b, c)
    w = rng.standard_normal((40, 20))
    d = gc.build_grad(gc.sum(y * g.constant(w)), [a, b, c])
    yv, da, db, dc = gc.compile([y, d[a], d[b], d[c]]).run({"a": av, "b": bv, "c": cv})
    np.testing.assert_allclose(yv, av @ bv @ cv, rtol=1e-12)
    np.testing.assert_allclose(da, w @ (bv @ cv).T, rtol=1e-12)
    np.testing.assert_allclose(db, av.T @ w @ cv.T, rtol=1e-12)
    np.testing.assert_allclose(dc, (av @ bv).T @ w, rtol=1e-12)


@st.composite
def einsum_problems(draw):
    """Random einsums NumPy accepts: 1-3 operands over letters a-d, diagonals, size-1 broadcasting, sums of
    letters only one operand has, '...' anywhere, explicit outputs in any order or the implicit one."""
    sizes = {c: draw(st.integers(1, 3)) for c in "abcd"}
    batch = (2, 3)                                                    # the dims '...' may stand for
    ellipsis = draw(st.booleans())
    terms, shapes = [], []
    for _ in range(draw(st.integers(1, 3))):
        term = "".join(draw(st.lists(st.sampled_from("abcd"), min_size=0, max_size=3)))
        shape = []
        for c in term:
            repeated = term.count(c) > 1
            shape.append(1 if not repeated and draw(st.booleans()) and draw(st.booleans()) else sizes[c])
        if ellipsis:
            k = draw(st.integers(0, 2))
            lead = [1 if draw(st.booleans()) and draw(st.booleans()) else d for d in batch[2 - k:]]
            at = draw(st.integers(0, len(term)))
            term, shape = term[:at] + "..." + term[at:], shape[:at] + lead + shape[at:]
        terms.append(term)
        shapes.append(tuple(shape))
    letters = sorted(set("".join(terms)) - {"."})
    if draw(st.booleans()):
        subs = ",".join(terms)                                        # implicit output
    else:
        out = draw(st.permutations(letters))[:draw(st.integers(0, len(letters)))]
        if ellipsis:
            out.insert(draw(st.integers(0, len(out))), "...")
        subs = ",".join(terms) + "->" + "".join(out)
    return subs, shapes


@given(einsum_problems())
def test_einsum_fuzz_against_numpy_and_central_differences(problem):
    subs, shapes = problem
    rng = np.random.default_rng(abs(hash((subs, tuple(shapes)))) % 2**32)
    arrays = [rng.uniform(-1.5, 1.5, size=s) for s in shapes]
    g = gc.Graph()
    xs = [g.input(f"x{k}", shape=s) for k, s in enumerate(shapes)]
    y = gc.einsum(subs, *xs)
    feeds = {x.name: a for x, a in zip(xs, arrays)}
    (out,) = gc.compile([y]).run(feeds)
    expected = np.einsum(subs, *arrays)
    assert out.shape == expected.shape == y.shape
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    cost = gc.sum(y * g.constant(rng.uniform(0.5, 1.5, size=y.shape)))
    check_gradients(g, cost, xs, feeds)
