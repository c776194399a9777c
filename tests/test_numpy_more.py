"""The NumPy functions of issue 27 item 5 at their edges: the inverse trigonometric and hyperbolic functions
outside their domains (NaN, +-inf, as NumPy, and derivatives as NumPy's values imply), fmax/fmin with NaN
operands (the gradient goes to the side chosen), nan_to_num (derivative 1 where kept, 0 where replaced),
logaddexp2 far out, and each new op on every backend with its derivative. The smooth insides are rows of the
op tables (tests/test_ops_special.py) and of tests/test_numpy_api.py."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import graphcompiler as gc
from gradcheck import check_gradients

from graphcompiler.backends.c import find_compiler


def _values_and_grads(fn, *arrays, dtype="float64"):
    """fn's value on nodes fed `arrays`, and the gradient of sum(fn) with respect to each (numpy backend)."""
    g = gc.Graph("edges")
    xs = [g.input(f"x{k}", shape=np.shape(a), dtype=dtype) for k, a in enumerate(arrays)]
    y = fn(*xs)
    grads = gc.build_grad(gc.sum(y), xs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the NaN and inf are the point here
        res = gc.compile([y, *(grads[x] for x in xs)]).run({x.name: a for x, a in zip(xs, arrays)})
    return [np.asarray(r) for r in res]


def _same(got, want):
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)  # equal_nan by default; inf must match inf


# -- domains ----------------------------------------------------------------------------------------
EDGES = [
    ("arcsin", gc.arcsin, np.arcsin, [-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5], lambda x: 1 / np.sqrt(1 - x * x)),
    ("arccos", gc.arccos, np.arccos, [-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5], lambda x: -1 / np.sqrt(1 - x * x)),
    ("arccosh", gc.arccosh, np.arccosh, [-2.0, 0.0, 0.5, 1.0, 1.5, 3.0, 1e200],
     lambda x: 1 / (np.sqrt(x - 1) * np.sqrt(x + 1))),
    ("arctanh", gc.arctanh, np.arctanh, [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5], lambda x: 1 / (1 - x * x)),
    ("arcsinh", gc.arcsinh, np.arcsinh, [-1e200, -3.0, 0.0, 0.5, 1e200], lambda x: 1 / np.sqrt(1 + x * x)),
]


@pytest.mark.parametrize("name,f,ref,xs,deriv", EDGES, ids=[e[0] for e in EDGES])
def test_inverse_functions_at_and_outside_their_domain(name, f, ref, xs, deriv):
    x = np.array(xs)
    y, dx = _values_and_grads(f, x)
    with np.errstate(all="ignore"):
        want_y, want_d = ref(x), deriv(x)
        inside = ~np.isnan(want_y)
        want_d = np.where(inside, want_d, np.nan)  # no value, no derivative: NaN where NumPy's value is NaN
    _same(y, want_y)
    _same(dx, want_d)


def test_arctanh_and_arccosh_derivatives_are_exact_near_their_edges():
    """1 - x^2 and x^2 - 1 cancel near |x| = 1; the rules use (1 - x)(1 + x) and sqrt(x - 1) sqrt(x + 1)."""
    x = np.array([1 - 2.0**-40, -(1 - 2.0**-40)])
    _, dx = _values_and_grads(gc.arctanh, x)
    np.testing.assert_allclose(dx, 1 / ((1 - x) * (1 + x)), rtol=1e-15)
    x = np.array([1 + 2.0**-40])
    _, dx = _values_and_grads(gc.arccosh, x)
    np.testing.assert_allclose(dx, 1 / np.sqrt((x - 1) * (x + 1)), rtol=1e-15)


# -- fmax, fmin ----------------------------------------------------------------------------------------
A = np.array([1.0, np.nan, 3.0, np.nan, 2.0, -1.0])
B = np.array([2.0, 5.0, np.nan, np.nan, 2.0, -4.0])


@pytest.mark.parametrize("f,ref", [(gc.fmax, np.fmax), (gc.fmin, np.fmin)], ids=["fmax", "fmin"])
def test_fmax_fmin_ignore_nan_and_send_the_gradient_to_the_side_chosen(f, ref):
    y, da, db = _values_and_grads(f, A, B)
    _same(y, ref(A, B))
    larger = f is gc.fmax
    pick_a = np.array([not larger, False, True, False, 0.5, larger], dtype=float)
    pick_b = np.array([larger, True, False, False, 0.5, not larger], dtype=float)
    np.testing.assert_array_equal(da, pick_a)  # where both are NaN neither gets any
    np.testing.assert_array_equal(db, pick_b)


def test_fmax_broadcasts_and_sums_the_gradient_back():
    a = np.array([[1.0, np.nan], [5.0, 0.0], [np.nan, np.nan]])
    b = np.array([2.0, np.nan])
    y, da, db = _values_and_grads(np.fmax, a, b)  # through NumPy's dispatch on nodes
    _same(y, np.fmax(a, b))
    np.testing.assert_array_equal(da, [[0, 0], [1, 1], [0, 0]])
    np.testing.assert_array_equal(db, [2, 0])


# -- nan_to_num -----------------------------------------------------------------------------------------
X = np.array([1.5, np.nan, np.inf, -np.inf, -2.0, 0.0])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_nan_to_num_values_and_derivative(dtype):
    x = X.astype(dtype)
    y, dx = _values_and_grads(gc.nan_to_num, x, dtype=dtype)
    want = np.nan_to_num(x)
    assert y.dtype == want.dtype
    np.testing.assert_array_equal(y, want)  # posinf and neginf: the dtype's largest and lowest finite values
    np.testing.assert_array_equal(dx, [1, 0, 0, 0, 1, 1])


def test_nan_to_num_by_numpy_with_replacements():
    y, dx = _values_and_grads(lambda t: np.nan_to_num(t, nan=-7.0, posinf=9.0, neginf=-9.0) * 2.0, X)
    np.testing.assert_array_equal(y, np.nan_to_num(X, nan=-7.0, posinf=9.0, neginf=-9.0) * 2.0)
    np.testing.assert_array_equal(dx, [2, 0, 0, 0, 2, 2])


def test_nan_to_num_refusals_and_integers():
    g = gc.Graph("n")
    x = g.input("x", shape=(3,))
    with pytest.raises(gc.GraphCompilerError, match="copy=False"):
        np.nan_to_num(x, copy=False)
    with pytest.raises(gc.GraphCompilerError, match="takes a node"):
        gc.nan_to_num(np.array([1.0, np.nan]))
    k = g.input("k", shape=(3,), dtype="int64")
    assert gc.nan_to_num(k) is k  # nothing to replace in an integer


# -- logaddexp2 --------------------------------------------------------------------------------------------
def test_logaddexp2_far_out_and_its_derivative():
    a = np.array([-2000.0, 2000.0, 3.0, -1.0, 1000.0])
    b = np.array([-2000.0, -2000.0, 3.5, 40.0, 999.0])
    y, da, db = _values_and_grads(gc.logaddexp2, a, b)
    np.testing.assert_allclose(y, np.logaddexp2(a, b), rtol=1e-14)
    share = 1 / (1 + np.exp2(b - a))  # d/da log2(2^a + 2^b) = 2^a / (2^a + 2^b)
    np.testing.assert_allclose(da, share, rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(db, 1 - share, rtol=1e-13, atol=1e-300)


# -- every backend, no backend edit -------------------------------------------------------------------------
NEW = [("arcsin", gc.arcsin, 0.8), ("arccos", gc.arccos, 0.8), ("arcsinh", gc.arcsinh, 3.0),
       ("arccosh", lambda t: gc.arccosh(gc.add(gc.square(t), 1.5)), 2.0), ("arctanh", gc.arctanh, 0.8),
       ("fmax", lambda t: gc.fmax(t, gc.multiply(t, -0.5)), 2.0),
       ("fmin", lambda t: gc.fmin(t, gc.multiply(t, -0.5)), 2.0),
       ("logaddexp2", lambda t: gc.logaddexp2(t, gc.multiply(t, 0.3)), 3.0),
       ("sort", lambda t: gc.sort(t, 0), 2.0), ("cumprod", lambda t: gc.cumprod(t, 1), 2.0)]
SEGMENTS = {"sort", "cumprod"}  # not elementwise: C runs part of them as NumPy segments (and says so)


@pytest.mark.parametrize("backend", ["numpy", "c", "jax", "dask"])
@pytest.mark.parametrize("name,f,scale", NEW, ids=[n[0] for n in NEW])
def test_new_ops_on_every_backend(backend, name, f, scale):
    if backend == "c" and find_compiler() is None:
        pytest.skip("no C compiler on this machine")
    if backend in ("jax", "dask"):
        pytest.importorskip(backend)
    rng = np.random.default_rng(5)
    x = rng.uniform(-scale, scale, size=(4, 3))
    g = gc.Graph(name)
    xn = g.input("x", shape=(4, 3))
    y = f(xn)
    dx = gc.build_grad(gc.sum(gc.multiply(y, y)), [xn])[xn]
    want = [np.asarray(r) for r in gc.compile([y, dx]).run({"x": x})]
    with warnings.catch_warnings():
        if name in SEGMENTS:
            warnings.filterwarnings("ignore", "graphcompiler: the C backend runs", RuntimeWarning)
        else:
            warnings.simplefilter("error", RuntimeWarning)  # a NumPy segment inside a C program warns: refused
        got = gc.compile([y, dx], backend=backend).run({"x": x})
    got = [np.asarray(r.compute() if hasattr(r, "compute") else r) for r in got]
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


# -- trace, diagonal, diag, diagflat with offsets and axes --------------------------------------------------
DIAGS = [
    ("trace_offset", lambda a: np.trace(a, 1), (3, 4)),
    ("trace_negative_offset", lambda a: np.trace(a, -2), (4, 3)),
    ("trace_axes", lambda a: np.trace(a, offset=1, axis1=2, axis2=0), (3, 2, 4)),
    ("trace_negative_axes", lambda a: np.trace(a, -1, -1, -2), (2, 3, 3)),
    ("trace_offset_past_the_end", lambda a: np.trace(a, 5) + np.sum(a), (3, 3)),
    ("diagonal_offset_axes", lambda a: np.diagonal(a, -1, 2, 1), (2, 3, 4)),
    ("diag_k", lambda a: np.diag(a, 2), (3,)),
    ("diag_negative_k", lambda a: np.diag(a, -1), (3,)),
    ("diag_of_matrix_k", lambda a: np.diag(a, -1), (3, 4)),
    ("diag_of_matrix_k_up", lambda a: np.diag(a, 2), (3, 4)),
    ("diagflat", lambda a: np.diagflat(a), (2, 2)),
    ("diagflat_k", lambda a: np.diagflat(a, 1), (2, 3)),
    ("diagflat_scalar", lambda a: np.diagflat(a, -2), ()),
]


@pytest.mark.parametrize("name,fn,shape", DIAGS, ids=[d[0] for d in DIAGS])
def test_diagonals_with_offsets_and_axes_match_numpy_with_derivatives(name, fn, shape):
    rng = np.random.default_rng(len(name))
    a = rng.standard_normal(shape)
    g = gc.Graph(name)
    x = g.input("x", shape=shape)
    y = fn(x)
    want = fn(a)
    got = gc.compile([y]).run({"x": a})[0]
    assert np.shape(got) == np.shape(want)
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-14)
    w = g.constant(rng.uniform(0.5, 1.5, size=np.shape(want)))
    check_gradients(g, gc.sum(gc.square(y) * w), [x], {"x": a})


def test_trace_dtype_and_rank_errors():
    g = gc.Graph("t")
    x = g.input("x", shape=(3, 3), dtype="float32")
    y = np.trace(x, 1, dtype="float64")
    assert y.dtype == np.float64
    a = np.arange(9, dtype="float32").reshape(3, 3)
    np.testing.assert_allclose(gc.compile([y]).run({"x": a})[0], np.trace(a, 1, dtype="float64"))
    v = g.input("v", shape=(3,))
    with pytest.raises(gc.ShapeError, match="at least 2 dimensions"):
        np.trace(v)
    with pytest.raises(gc.ShapeError, match="at least 2 dimensions"):
        np.diagonal(v)


# -- einsum's interleaved (operand, sublist) form -------------------------------------------------------------
ELL = Ellipsis
INTERLEAVED = [
    ("matmul", lambda a, b: np.einsum(a, [0, 1], b, [1, 2], [0, 2]), [(2, 3), (3, 4)]),
    ("implicit_output", lambda a, b: np.einsum(a, [0, 1], b, [1, 2]), [(2, 3), (3, 4)]),
    ("trace", lambda a: np.einsum(a, [5, 5]), [(3, 3)]),
    ("lowercase_labels", lambda a, b: np.einsum(a, [30, 1], b, [1, 40], [40, 30]), [(2, 3), (3, 4)]),
    ("ellipsis", lambda a, b: np.einsum(a, [ELL, 0, 1], b, [ELL, 1, 2], [ELL, 0, 2]), [(2, 2, 3), (3, 2)]),
    ("to_scalar", lambda a, b: np.einsum(a, [0], b, [0], []), [(4,), (4,)]),
]


@pytest.mark.parametrize("name,fn,shapes", INTERLEAVED, ids=[c[0] for c in INTERLEAVED])
def test_einsum_interleaved_form(name, fn, shapes):
    rng = np.random.default_rng(len(name))
    arrays = [rng.standard_normal(s) for s in shapes]
    g = gc.Graph(name)
    xs = [g.input(f"x{k}", shape=s) for k, s in enumerate(shapes)]
    y = fn(*xs)
    want = fn(*arrays)
    got = gc.compile([y]).run({x.name: a for x, a in zip(xs, arrays)})[0]
    assert np.shape(got) == np.shape(want)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    w = g.constant(rng.uniform(0.5, 1.5, size=np.shape(want)))
    check_gradients(g, gc.sum(gc.square(y) * w), xs, {x.name: a for x, a in zip(xs, arrays)})


def test_einsum_interleaved_bad_labels_are_named():
    g = gc.Graph("e")
    x = g.input("x", shape=(2, 2))
    with pytest.raises(gc.GraphCompilerError, match=r"integer in \[0, 52\) or Ellipsis, got 60"):
        np.einsum(x, [0, 60])
    with pytest.raises(gc.GraphCompilerError, match="integer in"):
        np.einsum(x, ["i", "j"])


# -- select, cross, linspace, real_if_close ---------------------------------------------------------------
def _check_against_numpy(fn, shapes, seed=0, second=True):
    """fn on nodes against fn on arrays, then its derivatives against central differences."""
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s) for s in shapes]
    g = gc.Graph("c")
    xs = [g.input(f"x{k}", shape=s) for k, s in enumerate(shapes)]
    y = fn(*xs)
    want = fn(*arrays)
    got = gc.compile([y]).run({x.name: a for x, a in zip(xs, arrays)})[0]
    assert np.shape(got) == np.shape(want) and got.dtype == np.asarray(want).dtype
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-14)
    w = g.constant(rng.uniform(0.5, 1.5, size=np.shape(want)))
    check_gradients(g, gc.sum(gc.square(y) * w), xs, {x.name: a for x, a in zip(xs, arrays)}, second=second)


MORE = [
    ("select", lambda a, b: np.select([a > 0.5, b < 0, a < -1], [a * b, b, 2.0], default=a), [(3, 4), (4,)]),
    ("select_array_conditions", lambda a: np.select([np.eye(3, dtype=bool)], [a], 7.0), [(3, 3)]),
    ("cross", lambda a, b: np.cross(a, b), [(4, 3), (3,)]),
    ("cross_axes", lambda a, b: np.cross(a, b, axisa=0, axisb=1, axisc=0), [(3, 2), (2, 3)]),
    ("cross_axis", lambda a, b: np.cross(a, b, axis=0), [(3, 2, 1), (3, 1, 2)]),
    ("linspace_nodes", lambda a, b: np.linspace(a, b, 5), [(), ()]),
    ("linspace_arrays_axis", lambda a, b: np.linspace(a, b, 4, axis=-1), [(2, 3), (3,)]),
    ("linspace_no_endpoint", lambda a, b: np.linspace(a, b, 6, endpoint=False, axis=1), [(2,), (2,)]),
    ("linspace_retstep", lambda a, b: np.linspace(a, b, 3, retstep=True)[1] * np.linspace(a, b, 3), [(2,), ()]),
    ("linspace_number_start", lambda b: np.linspace(1.0, b, 4), [(2,)]),
    ("linspace_one", lambda a, b: np.linspace(a, b, 1), [(2,), (2,)]),
    ("real_if_close", lambda a: np.real_if_close(a) * 2.0, [(3,)]),
]


@pytest.mark.parametrize("name,fn,shapes", MORE, ids=[m[0] for m in MORE])
def test_compositions_match_numpy_with_derivatives(name, fn, shapes):
    _check_against_numpy(fn, shapes, seed=len(name))


def test_linspace_endpoint_is_exact_and_empty_works():
    g = gc.Graph("l")
    a, b = g.input("a", shape=()), g.input("b", shape=())
    y = np.linspace(a, b, 7)
    got = gc.compile([y]).run({"a": 0.1, "b": 0.7})[0]
    np.testing.assert_array_equal(got, np.linspace(0.1, 0.7, 7))  # the same formula: equal, not close
    assert np.linspace(a, b, 0).shape == (0,)


def test_select_and_cross_refusals_are_named():
    g = gc.Graph("r")
    x = g.input("x", shape=(2, 3))
    with pytest.raises(gc.DTypeError, match="not bool"):
        np.select([x], [x])
    with pytest.raises(gc.ShapeError, match="2 conditions for 1 choices"):
        np.select([x > 0, x < 0], [x])
    with pytest.raises(gc.ShapeError, match="takes 3-vectors"):
        np.cross(x, x, axis=0)
    with pytest.raises(gc.GraphCompilerError, match="give an integer"):
        np.linspace(x, x, 2.5)


# -- sort ---------------------------------------------------------------------------------------------------
def test_sort_sends_each_gradient_to_the_element_it_came_from():
    x = np.array([[3.0, np.nan, -1.0, 3.0, 0.5]])
    w = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]])
    g = gc.Graph("s")
    xn = g.input("x", shape=x.shape)
    y = np.sort(xn, axis=1)
    dx = gc.build_grad(gc.sum(y * g.constant(w)), [xn])[xn]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got, gx = gc.compile([y, dx]).run({"x": x})
    np.testing.assert_array_equal(got, np.sort(x, axis=1))  # NaN last, as NumPy
    # sorted: -1 (from 2), 0.5 (from 4), 3 (from 0), 3 (from 3: stable), nan (from 1)
    np.testing.assert_array_equal(gx, [[3.0, 5.0, 1.0, 4.0, 2.0]])
    np.testing.assert_array_equal(gc.compile([np.argsort(xn, axis=1)]).run({"x": x})[0],
                                  np.argsort(x, axis=1, kind="stable"))


def test_sort_refuses_order():
    g = gc.Graph("s")
    x = g.input("x", shape=(3,))
    with pytest.raises(gc.GraphCompilerError, match="order="):
        np.sort(x, order="f")


# -- gradient ------------------------------------------------------------------------------------------------
GRADIENTS = [
    ("vector", lambda a: np.gradient(a), (5,)),
    ("spacing", lambda a: np.gradient(a, 0.25), (4, 3)),
    ("per_axis_spacing_edge_order_2", lambda a: np.gradient(a, 0.5, 2.0, edge_order=2), (3, 4)),
    ("one_axis", lambda a: np.gradient(a, 0.3, axis=-1, edge_order=2), (2, 3, 4)),
    ("two_of_three_axes", lambda a: np.gradient(a, axis=(0, 2)), (2, 3, 4)),
]


@pytest.mark.parametrize("name,fn,shape", GRADIENTS, ids=[c[0] for c in GRADIENTS])
def test_gradient_matches_numpy_exactly_with_derivatives(name, fn, shape):
    rng = np.random.default_rng(len(name))
    a = rng.standard_normal(shape)
    g = gc.Graph(name)
    x = g.input("x", shape=shape)
    ys, wants = fn(x), fn(a)
    ys = list(ys) if isinstance(ys, tuple) else [ys]
    wants = list(wants) if isinstance(wants, (tuple, list)) else [wants]
    assert len(ys) == len(wants)
    for got, want in zip(gc.compile(ys).run({"x": a}), wants):
        np.testing.assert_array_equal(got, want)  # NumPy's formulas in NumPy's order: equal, not close
    cost = None
    for y in ys:
        term = gc.sum(gc.square(y) * g.constant(rng.uniform(0.5, 1.5, size=y.shape)))
        cost = term if cost is None else cost + term
    check_gradients(g, cost, [x], {"x": a})


def test_gradient_refusals_are_named():
    g = gc.Graph("r")
    x = g.input("x", shape=(2, 3))
    with pytest.raises(gc.ShapeError, match="at least edge_order"):
        np.gradient(x, edge_order=2)
    with pytest.raises(gc.GraphCompilerError, match="coordinate arrays"):
        np.gradient(x, np.arange(2.0), np.arange(3.0))


def test_partition_puts_every_kth_in_place_and_sends_gradients_back():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((3, 6))
    g = gc.Graph("p")
    x = g.input("x", shape=a.shape)
    y = np.partition(x, (1, 4), axis=1)
    got = gc.compile([y]).run({"x": a})[0]
    want = np.partition(a, (1, 4), axis=1)
    np.testing.assert_array_equal(got[:, [1, 4]], want[:, [1, 4]])
    assert (got[:, :1] <= got[:, 1:2]).all() and (got[:, 5:] >= got[:, 4:5]).all()
    idx = gc.compile([np.argpartition(x, 2, axis=None)]).run({"x": a})[0]
    assert a.reshape(-1)[idx[2]] == np.partition(a, 2, axis=None)[2]
    check_gradients(g, gc.sum(gc.square(y[:, 1]) + y[:, 4]), [x], {"x": a})
    with pytest.raises(gc.ShapeError, match="out of range"):
        np.partition(x, 6)
