"""gc.linalg: forward values against numpy.linalg / scipy.linalg, first and second derivatives against central
differences (batched shapes too), run-time NumericsError for singular and indefinite matrices, files, pictures
and symbolic export of every op."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.linalg

import graphcompiler as gc
from gradcheck import check_gradients
from test_ops import Case, away, normal

LA = gc.linalg


# -- domains: matrices the ops are defined (and well conditioned) on ------------------------------------

def wellcond(rng, shape):
    """A general (non-symmetric) matrix with its eigenvalues kept away from zero."""
    n = shape[-1]
    return rng.uniform(-1.0, 1.0, size=shape) + 3.0 * np.eye(n)


def tri_lower(rng, shape):
    return np.tril(wellcond(rng, shape))


def sym(b):
    """(B + B^T) / 2 as graph ops: the symmetric parametrisation eigh and cholesky are differentiated through."""
    return (b + gc.transpose(b, _swap(b.ndim))) * 0.5


def spd(b):
    """B B^T + I: symmetric positive definite for any B."""
    n = b.shape[-1]
    return gc.matmul(b, gc.transpose(b, _swap(b.ndim))) + np.eye(n)


def np_spd(b):
    return b @ np.swapaxes(b, -1, -2) + np.eye(b.shape[-1])


def np_sym(b):
    return (b + np.swapaxes(b, -1, -2)) / 2


def _swap(nd):
    axes = list(range(nd))
    axes[-1], axes[-2] = axes[-2], axes[-1]
    return tuple(axes)


def sign_fixed(v):
    """V_ij V_0j: eigenvectors with each column's sign ambiguity squared away."""
    return v * v[..., :1, :]


CASES: list[Case] = []

for sa, sb in [((3, 3), (3,)), ((3, 3), (3, 2)), ((2, 3, 3), (3,)), ((2, 3, 3), (2, 3, 2)), ((3, 3), (2, 3, 1)),
               ((2, 1, 3, 3), (3, 3, 2)), ((1, 1), (1,))]:
    CASES.append(Case(f"solve{sa}{sb}", LA.solve, np.linalg.solve, [sa, sb], [wellcond, normal]))

for s in [(3, 3), (2, 3, 3), (1, 1)]:
    CASES += [
        Case(f"inv{s}", LA.inv, np.linalg.inv, [s], [wellcond]),
        Case(f"det{s}", LA.det, np.linalg.det, [s], [wellcond]),
        Case(f"det_general{s}", LA.det, np.linalg.det, [s], [normal]),
        Case(f"slogdet_logabsdet{s}", lambda a: LA.slogdet(a).logabsdet, lambda a: np.linalg.slogdet(a)[1],
             [s], [normal]),
        Case(f"slogdet_sign{s}", lambda a: LA.slogdet(a).sign * LA.det(a), lambda a: np.abs(np.linalg.det(a)),
             [s], [normal]),
        Case(f"cholesky{s}", lambda b: LA.cholesky(spd(b)), lambda b: np.linalg.cholesky(np_spd(b)), [s]),
        Case(f"cholesky_upper{s}", lambda b: LA.cholesky(spd(b), upper=True),
             lambda b: np.linalg.cholesky(np_spd(b), upper=True), [s]),
        Case(f"eigh_values{s}", lambda b: LA.eigh(sym(b)).eigenvalues, lambda b: np.linalg.eigh(np_sym(b))[0], [s]),
        Case(f"eigh_vectors{s}", lambda b: sign_fixed(LA.eigh(sym(b)).eigenvectors),
             lambda b: sign_fixed(np.linalg.eigh(np_sym(b))[1]), [s]),
    ]

def expm_sym(b):
    """V diag(e^w) V^T = expm(A) for the symmetric A = (B + B^T)/2: eigenvalues and eigenvectors together."""
    w, v = LA.eigh(sym(b))
    return gc.matmul(v * gc.expand_dims(gc.exp(w), -2), gc.transpose(v, (0, 2, 1)))


CASES.append(Case("eigh_reconstruct(2,3,3)", expm_sym, lambda b: scipy.linalg.expm(np_sym(b)), [(2, 3, 3)]))
CASES.append(Case("cholesky_solve(3,3)", lambda b, y: LA.triangular_solve(
    LA.cholesky(spd(b)), LA.triangular_solve(LA.cholesky(spd(b)), y), transpose_a=True),
    lambda b, y: np.linalg.solve(np_spd(b), y), [(3, 3), (3, 2)]))           # L^{-T} L^{-1} y = A^{-1} y


def np_triangular(lower, trans):
    def ref(a, b):
        if a.ndim == 2:
            return scipy.linalg.solve_triangular(a, b, lower=lower, trans=trans)
        t = np.tril(a) if lower else np.triu(a)
        if trans:
            t = np.swapaxes(t, -1, -2)
        return np.linalg.solve(t, b)
    return ref


for (sa, sb), lower, trans in itertools.product([((3, 3), (3,)), ((3, 3), (3, 2)), ((2, 3, 3), (3,)),
                                                 ((2, 3, 3), (2, 3, 2)), ((3, 3), (2, 3, 2))],
                                                [True, False], [False, True]):
    CASES.append(Case(f"triangular_solve{sa}{sb}lower={lower},trans={trans}",
                      lambda a, b, lo=lower, tr=trans: LA.triangular_solve(a, b, lower=lo, transpose_a=tr),
                      np_triangular(lower, int(trans)), [sa, sb], [wellcond, normal]))

for s in [(3, 3), (4, 2), (2, 3), (2, 4, 3)]:
    CASES.append(Case(f"svdvals{s}", LA.svdvals, lambda a: np.linalg.svd(a, compute_uv=False), [s], [normal]))

# norm: every ord NumPy has, as vector norms (one axis) and matrix norms (two axes), keepdims too
VECTOR_ORDS = [None, 2, 1, np.inf, -np.inf, 0, 3, 0.5, -1.5]
for ord_, (shape, axis), keep in itertools.product(VECTOR_ORDS, [((4,), None), ((3, 4), 1), ((3, 4), 0),
                                                                  ((2, 3, 4), -2)], [False, True]):
    if keep and shape == (4,) and ord_ not in (None, 2):
        continue
    CASES.append(Case(f"norm{shape}ord={ord_},axis={axis},keepdims={keep}",
                      lambda x, o=ord_, a=axis, k=keep: LA.norm(x, ord=o, axis=a, keepdims=k),
                      lambda x, o=ord_, a=axis, k=keep: np.linalg.norm(x, ord=o, axis=a, keepdims=k),
                      [shape], [away]))
MATRIX_ORDS = [None, "fro", "nuc", 1, -1, 2, -2, np.inf, -np.inf]
for ord_, (shape, axis), keep in itertools.product(MATRIX_ORDS, [((3, 4), None), ((2, 3, 4), (1, 2)),
                                                                  ((2, 3, 4), (2, 0)), ((3, 2, 2), (-1, -3))],
                                                   [False, True]):
    if keep and axis is None and ord_ not in ("nuc", 1):
        continue
    CASES.append(Case(f"norm{shape}ord={ord_},axis={axis},keepdims={keep}",
                      lambda x, o=ord_, a=axis, k=keep: LA.norm(x, ord=o, axis=a, keepdims=k),
                      lambda x, o=ord_, a=axis, k=keep: np.linalg.norm(x, ord=o, axis=a, keepdims=k),
                      [shape], [away]))
CASES.append(Case("norm_all_entries(2,3,4)", LA.norm, np.linalg.norm, [(2, 3, 4)], [normal]))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_forward_and_derivatives(case: Case):
    """The op table's check: forward against NumPy/SciPy; gradients and Hessian-vector products against
    central differences in float64."""
    rng = np.random.default_rng(sum(map(ord, case.id)))
    arrays = case.arrays(rng)
    g = gc.Graph("linalg")
    xs = [g.input(f"x{k}", shape=a.shape) for k, a in enumerate(arrays)]
    y = case.build(*xs)
    feeds = {x.name: a for x, a in zip(xs, arrays)}
    out, = gc.compile([y]).run(feeds)
    expected = case.ref(*arrays)
    assert out.shape == np.shape(expected) == y.shape
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)
    unopt, = gc.compile([y], optimize=False).run(feeds)
    np.testing.assert_allclose(unopt, out, rtol=1e-12, atol=1e-14)
    weights = g.constant(rng.uniform(0.5, 1.5, size=y.shape))
    cost = gc.sum(y * weights, name="J")
    check_gradients(g, cost, xs, feeds, second=case.second)


def test_every_linalg_op_is_exercised():
    for name in ["solve", "inv", "cholesky", "triangular_solve", "det", "slogdet", "eigh", "norm", "svdvals"]:
        assert callable(getattr(LA, name)), name
        assert any(c.id.startswith(name) for c in CASES), name
    for op in ["solve", "inv", "det", "slogdet_sign", "logabsdet", "cholesky", "triangle", "triangular_solve",
               "eigh_values", "eigh_vectors", "eigh_gap", "svdvals"]:
        assert op in gc.OPS, op


def test_namespace_and_matmul():
    assert LA.__name__ == "graphcompiler.linalg"
    g = gc.Graph()
    a, b = g.input("a", shape=(2, 3)), g.input("b", shape=(3, 2))
    assert gc.matmul(a, b).op.name == LA.matmul(a, b).op.name == (a @ b).op.name == "matmul"


def test_float32_stays_float32():
    g = gc.Graph()
    a = g.input("a", shape=(3, 3), dtype="float32")
    b = g.input("b", shape=(3,), dtype="float32")
    outs = [LA.solve(a, b), LA.inv(a), LA.det(a), LA.slogdet(a).logabsdet, LA.cholesky(a),
            LA.triangular_solve(a, b), LA.eigh(a).eigenvalues, LA.svdvals(a), LA.norm(a)]
    grads = gc.build_grad(gc.sum(outs[0]) + gc.sum(outs[1]) + outs[2], [a])
    assert all(o.dtype == np.float32 for o in outs) and grads[a].dtype == np.float32
    spd_value = (np.eye(3) * 3 + 0.1).astype(np.float32)
    vals = gc.compile(outs).run({"a": spd_value, "b": np.ones(3, np.float32)})
    assert all(v.dtype == np.float32 for v in vals)
    np.testing.assert_allclose(vals[0], np.linalg.solve(spd_value, np.ones(3)), rtol=1e-5)


def test_run_time_batch_dims():
    """A None batch dim (and a None matrix size) is fixed when the program runs."""
    rng = np.random.default_rng(5)
    g = gc.Graph()
    a = g.input("a", shape=(None, 3, 3))
    b = g.input("b", shape=(None, None))
    x = LA.solve(a, b)
    assert x.shape == (None, 3, None)
    c = g.input("c", shape=(None, None))
    L = LA.cholesky(c)
    assert L.shape == (None, None)
    av, bv = wellcond(rng, (4, 3, 3)), rng.standard_normal((3, 2))
    cv = np_spd(rng.standard_normal((5, 5)))
    xv, Lv = gc.compile([x, L]).run({"a": av, "b": bv, "c": cv})
    np.testing.assert_allclose(xv, np.linalg.solve(av, bv), rtol=1e-12)
    np.testing.assert_allclose(Lv, np.linalg.cholesky(cv), rtol=1e-12)
    gL = gc.build_grad(gc.sum(L * L), [c])[c]
    (gv,) = gc.compile([gL]).run({"c": cv})
    assert gv.shape == (5, 5) and np.all(np.isfinite(gv))


def test_solve_follows_numpy_2_rule_for_1d_b():
    """NumPy 2: a 1-D b is a vector for every matrix of the stack, never a stack of 1 x n right-hand sides."""
    rng = np.random.default_rng(6)
    g = gc.Graph()
    a, b = g.input("a", shape=(2, 3, 3)), g.input("b", shape=(3,))
    x = LA.solve(a, b)
    av, bv = wellcond(rng, (2, 3, 3)), rng.standard_normal(3)
    assert x.shape == np.linalg.solve(av, bv).shape == (2, 3)


# -- errors ------------------------------------------------------------------------------------------------

def _run_error(build, value, extra=None):
    g = gc.Graph()
    a = g.input("A", shape=value.shape)
    node = build(a, g)
    program = gc.compile([node])
    extra = {k: v for k, v in (extra or {}).items() if k in g}
    with pytest.raises(gc.NumericsError) as info:
        program.run({"A": value, **extra})
    return program, node, str(info.value)


@pytest.mark.parametrize("opname,build", [
    ("solve", lambda a, g: LA.solve(a, g.input("b", shape=(3,)), name="x")),
    ("inv", lambda a, g: LA.inv(a, name="x")),
    ("triangular_solve", lambda a, g: LA.triangular_solve(a, g.input("b", shape=(3,)), name="x")),
])
def test_singular_matrix_raises_numerics_error(opname, build):
    singular = np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    program, node, msg = _run_error(build, singular, {"b": np.ones(3)})
    assert f"x = {opname}(A" in msg and "(3, 3)" in msg and "singular" in msg
    # the program stays usable
    good = np.eye(3) * 2
    (out,) = program.run({"A": good, "b": np.ones(3)} if "b" in node.graph else {"A": good})
    assert np.all(np.isfinite(out))


def test_indefinite_cholesky_raises_and_names_the_matrix_of_a_stack():
    stack = np.stack([np.eye(3), np.diag([1.0, -1.0, 2.0])])
    _, _, msg = _run_error(lambda a, g: LA.cholesky(a, name="L"), stack)
    assert "L = cholesky(A)" in msg and "(2, 3, 3)" in msg and "positive definite" in msg
    assert "matrix (1,)" in msg and "jitter" in msg


def test_det_of_a_singular_matrix_is_zero_not_an_error():
    g = gc.Graph()
    a = g.input("A", shape=(2, 2))
    s, l = LA.slogdet(a)
    d, sv, lv = gc.compile([LA.det(a), s, l]).run({"A": np.ones((2, 2))})
    assert d == 0.0 and sv == 0.0 and lv == -np.inf


def test_repeated_eigenvalues_raise_only_for_the_eigenvector_derivative():
    g = gc.Graph()
    a = g.input("A", shape=(3, 3))
    w, v = LA.eigh(a)
    gw = gc.build_grad(gc.sum(w * np.array([1.0, 2.0, 3.0])), [a])[a]
    (val,) = gc.compile([gw]).run({"A": np.eye(3)})                 # the eigenvalues' derivative is defined
    np.testing.assert_allclose(val, np.diag([1.0, 2.0, 3.0]), atol=1e-12)
    gv = gc.build_grad(gc.sum(v * np.arange(9.0).reshape(3, 3)), [a])[a]
    with pytest.raises(gc.NumericsError, match="repeated eigenvalue"):
        gc.compile([gv]).run({"A": np.eye(3)})


@pytest.mark.parametrize("build,err,text", [
    (lambda g: LA.inv(g.input("a", shape=(2, 3))), gc.ShapeError, "square"),
    (lambda g: LA.det(g.input("a", shape=(3,))), gc.ShapeError, "stack of matrices"),
    (lambda g: LA.solve(g.input("a", shape=(3, 3)), g.input("b", shape=(4,))), gc.ShapeError, "4 rows"),
    (lambda g: LA.solve(g.input("a", shape=(2, 3, 3)), g.input("b", shape=(4, 3, 1))), gc.ShapeError,
     "broadcast"),
    (lambda g: LA.cholesky(g.input("a", shape=(3, 3), dtype="int64")), gc.DTypeError, "astype"),
    (lambda g: LA.norm(g.input("a", shape=(3,)), ord="fro"), gc.ShapeError, "for vectors"),
    (lambda g: LA.norm(g.input("a", shape=(3, 3)), ord=3), gc.ShapeError, "for matrices"),
    (lambda g: LA.norm(g.input("a", shape=(2, 3, 3)), ord=1), gc.ShapeError, "axis="),
    (lambda g: LA.norm(g.input("a", shape=(2, 3, 3)), axis=(0, 1, 2)), gc.ShapeError, "3 axes"),
    (lambda g: LA.norm(g.input("a", shape=(2, 3)), axis=2), gc.ShapeError, "out of range"),
])
def test_bad_arguments_raise_at_once(build, err, text):
    g = gc.Graph()
    with pytest.raises(err, match=text):
        build(g)


# -- files, pictures, export ---------------------------------------------------------------------------------

def _all_ops_graph():
    g = gc.Graph("linalg_all")
    b = g.input("B", shape=(3, 3))
    y = g.input("y", shape=(3,))
    A = spd(b)
    L = LA.cholesky(A, name="L")
    z = LA.triangular_solve(L, y, name="z")
    zt = LA.triangular_solve(L, z, transpose_a=True, name="zt")
    s, l = LA.slogdet(A, name="sd")
    w, v = LA.eigh(A, name="e")
    parts = [gc.sum(LA.solve(A, y, name="x")), gc.sum(LA.inv(A, name="Ainv")), LA.det(A, name="d"), s * l,
             gc.sum(zt), gc.sum(w) + gc.sum(sign_fixed(v)), gc.sum(LA.svdvals(b, name="sv")),
             LA.norm(b, "nuc", name="nuc"), LA.norm(y, name="ny")]
    J = parts[0]
    for p in parts[1:]:
        J = J + p
    J = gc.identity(J, name="J")
    grads = gc.build_grad(J, [b, y])
    return g, J, grads, b, y


def test_save_load_round_trip(tmp_path):
    g, J, grads, b, y = _all_ops_graph()
    rng = np.random.default_rng(7)
    feeds = {"B": rng.standard_normal((3, 3)), "y": rng.standard_normal(3)}
    outs = [J, grads[b], grads[y]]
    before = gc.compile(outs).run(feeds)
    path = tmp_path / "linalg.json"
    g.save(path)
    h = gc.load(path)
    assert [n.name for n in h.nodes] == [n.name for n in g.nodes]
    assert [n.op for n in h.nodes] == [n.op for n in g.nodes]
    after = gc.compile([h[n.name] for n in outs]).run(feeds)
    for u, v in zip(before, after):
        np.testing.assert_array_equal(u, v)


def test_loader_validates_linalg_attributes(tmp_path):
    import json
    g = gc.Graph()
    a = g.input("a", shape=(3, 3))
    LA.triangular_solve(a, a, lower=False, name="x")
    doc = json.loads(_saved(g, tmp_path).read_text())
    rec = next(r for r in doc["nodes"] if r["name"] == "x")
    assert rec["attrs"] == {"lower": False, "transpose_a": False}
    rec["attrs"]["lower"] = "yes"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(gc.GraphFileError, match="true or false"):
        gc.load(bad)


def _saved(g, tmp_path):
    p = tmp_path / "g.json"
    g.save(p)
    return p


def test_to_dot_draws_every_op():
    g, *_ = _all_ops_graph()
    src = gc.to_dot(g).source
    for op in ("solve", "inv", "det", "slogdet_sign", "logabsdet", "cholesky", "triangle", "triangular_solve",
               "eigh_values", "eigh_vectors", "eigh_gap", "svdvals"):
        assert op in src, op


def test_symbolic_export_of_each_op():
    g = gc.Graph()
    A = g.input("A", shape=(3, 3))
    b = g.input("b", shape=(3,))
    cases = {
        LA.inv(A): r"A^{-1}",
        LA.solve(A, b): r"A^{-1} b",
        LA.det(A): r"\left|{A}\right|",
        LA.slogdet(A).logabsdet: r"\log{\left(\left|{\left|{A}\right|}\right| \right)}",
        LA.slogdet(A).sign: r"\operatorname{sign}{\left(\left|{A}\right| \right)}",
        LA.triangular_solve(A, b): r"A^{-1} b",
        LA.triangular_solve(A, b, transpose_a=True): r"A^{-T} b",
        LA.cholesky(A): r"\operatorname{cholesky}\left(A\right)",
        LA.eigh(A).eigenvalues: r"\operatorname{eigh\_values}\left(A\right)",
        LA.eigh(A).eigenvectors: r"\operatorname{eigh\_vectors}\left(A\right)",
        LA.svdvals(A): r"\operatorname{svdvals}\left(A\right)",
    }
    rng = np.random.default_rng(8)
    a = np.tril(wellcond(rng, (3, 3))) + np.tril(wellcond(rng, (3, 3)), -1).T   # symmetric, well conditioned
    a = (a + a.T) / 2 + 3 * np.eye(3)
    bv = rng.standard_normal(3)
    values = gc.compile(list(cases)).run({"A": a, "b": bv})
    for (node, tex), value in zip(cases.items(), values):
        assert gc.to_latex(node) == tex, (node.op.name, gc.to_latex(node))
        expr = gc.to_sympy(node)
        if node.op.name == "triangular_solve":
            continue            # the export is exact for a triangular A; this A is full
        got = gc.symbolic.evaluate(expr, {"A": a, "b": bv})
        np.testing.assert_allclose(got.reshape(np.shape(value)), value, rtol=1e-10, err_msg=node.op.name)


def test_exported_gradients_evaluate_to_the_programs_values():
    """d det(A)/dA and d b^T A^{-1} b / dA exported and evaluated with NumPy equal the compiled gradients."""
    g = gc.Graph()
    A = g.input("A", shape=(3, 3))
    b = g.input("b", shape=(3,))
    J = gc.identity(LA.det(A) + gc.sum(b * LA.solve(A, b)) + gc.sum(LA.inv(A)), name="J")
    gA = gc.build_grad(J, [A])[A]
    rng = np.random.default_rng(9)
    a, bv = wellcond(rng, (3, 3)), rng.standard_normal(3)
    (want,) = gc.compile([gA]).run({"A": a, "b": bv})
    expr = gc.to_sympy(gA, form="leaves")
    got = gc.symbolic.evaluate(expr, {"A": a, "b": bv})
    np.testing.assert_allclose(got, want, rtol=1e-9)
    ainv = np.linalg.inv(a)
    closed = np.linalg.det(a) * ainv.T - np.outer(ainv.T @ bv, ainv @ bv) - ainv.T @ np.ones((3, 3)) @ ainv.T
    np.testing.assert_allclose(want, closed, rtol=1e-9)


def test_triangle_masks():
    g = gc.Graph()
    x = g.input("x", shape=(2, 3, 4))
    from graphcompiler.ops.linalg_ops import triangle
    lo, up, phi = LA.tril(x), LA.triu(x), triangle(x, lower=True, diag=0.5)
    v = np.random.default_rng(10).standard_normal((2, 3, 4))
    a, b, c = gc.compile([lo, up, phi]).run({"x": v})
    np.testing.assert_array_equal(a, np.tril(v))
    np.testing.assert_array_equal(b, np.triu(v))
    np.testing.assert_array_equal(c, np.tril(v) - 0.5 * v * np.eye(3, 4))
    assert math.isclose(float(np.sum(c)), float(np.sum(np.tril(v)) - 0.5 * np.trace(v, axis1=1, axis2=2).sum()))


def test_gaussian_process_example():
    """benchmarks/gp_regression.py: the NLL through cholesky and triangular solves, its gradient against central
    differences, and gradient descent by `updates` reaching scipy.optimize's optimum."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "gp_regression.py"
    spec = importlib.util.spec_from_file_location("gp_regression", path)
    gp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gp)
    f = gp.run(n=50, steps=250, verbose=False)
    assert f["value_check_abs_err"] < 1e-10
    assert f["grad_check_max_rel_err"] < 1e-6
    assert f["by_hand_max_abs_err"] < 1e-8                 # Rasmussen and Williams eq. 5.9
    assert f["nll_final"] < f["nll_start"] - 1.0
    assert abs(f["nll_final"] - f["nll_scipy"]) < 1e-6
    assert f["theta_max_abs_diff"] < 1e-3
    assert f["graph_nodes"] < 200                    # vs 2,883 with the Cholesky unrolled by hand


def test_a_constant_singular_matrix_is_reported_when_run_not_folded_into_a_wrong_value():
    g = gc.Graph()
    a = g.constant(np.ones((2, 2)), name="A")
    x = g.input("x", shape=(2,))
    y = gc.matmul(LA.inv(a, name="Ainv"), x, name="y")
    for optimize in (True, False):
        program = gc.compile([y], optimize=optimize)
        with pytest.raises(gc.NumericsError, match=r"Ainv = inv\(A\)"):
            program.run({"x": np.ones(2)})


def test_text_form_lists_the_ops():
    g = gc.Graph()
    a, b = g.input("A", shape=(3, 3)), g.input("b", shape=(3, 2))
    LA.triangular_solve(a, b, lower=False, transpose_a=True, name="x")
    LA.eigh(a, name="e")
    text = str(g)
    assert "triangular_solve[lower=False, transpose_a=True](A, b)" in text
    assert "e_eigenvalues" in text and "eigh_vectors" in text


EXPORTABLE = [c for c in CASES if not c.id.startswith("triangular_solve")]


@pytest.mark.parametrize("case", EXPORTABLE, ids=[c.id for c in EXPORTABLE])
def test_export_evaluates_to_the_programs_value(case: Case):
    """Every op table entry exports to SymPy/LaTeX (batched ones as the matrix of their first axis by the
    rest), and the export evaluated with NumPy (undefined functions by their kernels) equals the compiled
    program's value."""
    rng = np.random.default_rng(sum(map(ord, case.id)))
    arrays = case.arrays(rng)
    g = gc.Graph("export")
    xs = [g.input(f"x{k}", shape=a.shape) for k, a in enumerate(arrays)]
    y = case.build(*xs)
    feeds = {x.name: a for x, a in zip(xs, arrays)}
    (want,) = gc.compile([y]).run(feeds)
    assert gc.to_latex(y)
    got = gc.symbolic.evaluate(gc.to_sympy(y, form="leaves"), feeds)
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-9, atol=1e-12)


def test_exported_cholesky_gradient_evaluates_to_the_programs_value():
    """The Cholesky derivative's export (triangular solves as L^{-1}, L^{-T}, Phi as an undefined function)
    evaluates to the compiled gradient: exact here, since L is triangular."""
    g = gc.Graph()
    A = g.input("A", shape=(3, 3))
    y = g.input("y", shape=(3,))
    z = LA.triangular_solve(LA.cholesky(A, name="L"), y, name="z")
    J = gc.identity(gc.sum(z * z), name="J")                      # y^T A^{-1} y
    grads = gc.build_grad(J, [A, y])
    rng = np.random.default_rng(11)
    a, yv = np_spd(rng.standard_normal((3, 3))), rng.standard_normal(3)
    want_a, want_y = gc.compile([grads[A], grads[y]]).run({"A": a, "y": yv})
    for node, want in ((grads[A], want_a), (grads[y], want_y)):
        got = gc.symbolic.evaluate(gc.to_sympy(node, form="leaves"), {"A": a, "y": yv})
        np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-9)
    ainv_y = np.linalg.solve(a, yv)
    np.testing.assert_allclose(want_a, -np.outer(ainv_y, ainv_y), rtol=1e-9)   # d y^T A^{-1} y / dA
    np.testing.assert_allclose(want_y, 2 * ainv_y, rtol=1e-9)
    assert "L^{-T}" in gc.to_latex(grads[y])


@pytest.mark.parametrize("n", [3, 70])
@pytest.mark.parametrize("lower,trans", [(True, False), (False, True)])
def test_stacked_triangular_solves_small_and_large(n, lower, trans):
    """Stacks of small matrices go through one batched LU, large ones through SciPy's trsm per matrix:
    both agree with SciPy, and both report a zero on the diagonal as a singular matrix."""
    rng = np.random.default_rng(n)
    a = wellcond(rng, (2, n, n))
    b = rng.standard_normal((n, 2))
    g = gc.Graph()
    an, bn = g.input("A", shape=a.shape), g.input("b", shape=b.shape)
    x = LA.triangular_solve(an, bn, lower=lower, transpose_a=trans, name="x")
    program = gc.compile([x])
    (got,) = program.run({"A": a, "b": b})
    want = np.stack([scipy.linalg.solve_triangular(m, b, lower=lower, trans=int(trans)) for m in a])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    a[1, n // 2, n // 2] = 0.0
    with pytest.raises(gc.NumericsError, match=r"x = triangular_solve\(A, b\).*singular.*matrix \(1,\)"):
        program.run({"A": a, "b": b})
