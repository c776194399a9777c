"""The op table for shapes and indexing: stack, pad, flip, roll, tile, repeat, diagonal, trace, eye, one_hot,
integer-array indexing, take, take_along_axis and scatter_add: forward against NumPy, first and second
derivatives against central differences, repeated indices accumulating, run-time index checks naming the node,
and every new op saving, loading, drawing and exporting."""

from __future__ import annotations

import numpy as np
import pytest

import graphcompiler as gc
from gradcheck import check_gradients
from test_io import assert_same_graph
from test_ops import Case

I = np.array  # noqa: E741  index arrays, baked into a case as constants


def _scatter_ref(shape, idx, values, axis):
    out = np.zeros(shape)
    np.add.at(np.moveaxis(out, axis, 0), idx, np.moveaxis(values, tuple(range(axis, axis + idx.ndim)),
                                                           tuple(range(idx.ndim))))
    return out


CASES: list[Case] = [
    Case("stack0", lambda a, b: gc.stack([a, b]), lambda a, b: np.stack([a, b]), [(3, 2), (3, 2)]),
    Case("stack1_three", lambda a, b, c: gc.stack([a, b, c], axis=1), lambda a, b, c: np.stack([a, b, c], 1),
         [(3, 2), (3, 2), (3, 2)]),
    Case("stack-1", lambda a, b: gc.stack([a, b], axis=-1), lambda a, b: np.stack([a, b], -1), [(3, 2), (3, 2)]),
    Case("stack_scalars", lambda a, b: gc.stack([a, b]), lambda a, b: np.stack([a, b]), [(), ()]),
    Case("pad_pairs", lambda x: gc.pad(x, ((1, 2), (0, 1)), value=0.5),
         lambda x: np.pad(x, ((1, 2), (0, 1)), constant_values=0.5), [(3, 2)]),
    Case("pad_int", lambda x: gc.pad(x, 1), lambda x: np.pad(x, 1), [(2, 3)]),
    Case("pad_3d", lambda x: gc.pad(x, ((0, 0), (2, 0), (1, 1))), lambda x: np.pad(x, ((0, 0), (2, 0), (1, 1))),
         [(2, 2, 3)]),
    Case("flip_all", gc.flip, np.flip, [(3, 2)]),
    Case("flip0", lambda x: gc.flip(x, 0), lambda x: np.flip(x, 0), [(3, 2)]),
    Case("flip02", lambda x: gc.flip(x, (0, -1)), lambda x: np.flip(x, (0, -1)), [(2, 3, 2)]),
    Case("roll0", lambda x: gc.roll(x, 1, 0), lambda x: np.roll(x, 1, 0), [(4, 2)]),
    Case("roll_two_axes", lambda x: gc.roll(x, (1, -2), (0, 1)), lambda x: np.roll(x, (1, -2), (0, 1)), [(3, 4)]),
    Case("roll_repeated_axis", lambda x: gc.roll(x, (1, 2), (1, 1)), lambda x: np.roll(x, (1, 2), (1, 1)),
         [(3, 4)]),
    Case("roll_flat", lambda x: gc.roll(x, 5, None), lambda x: np.roll(x, 5), [(3, 4)]),
    Case("tile21", lambda x: gc.tile(x, (2, 1)), lambda x: np.tile(x, (2, 1)), [(2, 3)]),
    Case("tile_int", lambda x: gc.tile(x, 3), lambda x: np.tile(x, 3), [(2, 3)]),
    Case("tile_promote", lambda x: gc.tile(x, (2, 1, 3)), lambda x: np.tile(x, (2, 1, 3)), [(2, 3)]),
    Case("repeat0", lambda x: gc.repeat(x, 2, 0), lambda x: np.repeat(x, 2, 0), [(3, 2)]),
    Case("repeat1", lambda x: gc.repeat(x, 3, axis=1), lambda x: np.repeat(x, 3, 1), [(3, 2)]),
    Case("repeat_flat", lambda x: gc.repeat(x, 2), lambda x: np.repeat(x, 2), [(3, 2)]),
    Case("diagonal", gc.diagonal, np.diagonal, [(3, 3)]),
    Case("diagonal_offset", lambda x: gc.diagonal(x, 1), lambda x: np.diagonal(x, 1), [(3, 4)]),
    Case("diagonal_negative_offset", lambda x: gc.diagonal(x, -1), lambda x: np.diagonal(x, -1), [(4, 3)]),
    Case("diagonal_batched", lambda x: gc.diagonal(x, 0, 1, 2), lambda x: np.diagonal(x, 0, 1, 2), [(2, 3, 3)]),
    Case("diagonal_axes_swapped", lambda x: gc.diagonal(x, 1, 2, 0), lambda x: np.diagonal(x, 1, 2, 0),
         [(3, 2, 4)]),
    Case("trace", gc.trace, np.trace, [(3, 3)]),
    Case("trace_offset", lambda x: gc.trace(x, 1), lambda x: np.trace(x, 1), [(3, 4)]),
    Case("trace_batched", lambda x: gc.trace(x, 0, 1, 2), lambda x: np.trace(x, 0, 1, 2), [(2, 3, 3)]),
    Case("trace_squared", lambda x: gc.trace(x @ x), lambda x: np.trace(x @ x), [(3, 3)]),
    Case("eye", lambda x: x * gc.eye(3) + gc.eye(3, 3, 1) @ x, lambda x: x * np.eye(3) + np.eye(3, 3, 1) @ x,
         [(3, 3)]),
    Case("eye_like", lambda x: x * gc.eye_like(x) + gc.eye_like(x, 0, k=1) @ x,
         lambda x: x * np.eye(3) + np.eye(3, 3, 1) @ x, [(3, 3)]),
    Case("eye_like_batched", lambda x: x + gc.eye_like(x, -1), lambda x: x + np.eye(4), [(2, 4, 4)]),
    Case("take0_repeated", lambda x: gc.take(x, I([0, 2, 2, 1, 2]), 0), lambda x: np.take(x, [0, 2, 2, 1, 2], 0),
         [(3, 2)]),
    Case("take1_2d_index", lambda x: gc.take(x, I([[0, 1], [1, 1], [2, 0]]), 1),
         lambda x: np.take(x, [[0, 1], [1, 1], [2, 0]], 1), [(2, 3)]),
    Case("take_negative", lambda x: gc.take(x, I([-1, 0, -3, -1]), 0), lambda x: np.take(x, [-1, 0, -3, -1], 0),
         [(3, 2)]),
    Case("take_flat", lambda x: gc.take(x, I([5, 0, 5])), lambda x: np.take(x, [5, 0, 5]), [(3, 2)]),
    Case("take_middle_axis", lambda x: gc.take(x, I([1, 1, 0]), 1), lambda x: np.take(x, [1, 1, 0], 1),
         [(2, 3, 2)]),
    Case("take_scalar_index", lambda x: gc.take(x, I(1), 0), lambda x: np.take(x, 1, 0), [(3, 2)]),
    Case("index_array", lambda x: x[I([2, 0, 2])], lambda x: x[[2, 0, 2]], [(3, 2)]),
    Case("index_list_after_slice", lambda x: x[:, [1, 1, 0]], lambda x: x[:, [1, 1, 0]], [(3, 2)]),
    Case("index_then_slice", lambda x: x[I([1, 1])][:, 1:], lambda x: x[[1, 1]][:, 1:], [(3, 3)]),
    Case("take_along_axis1", lambda x: gc.take_along_axis(x, I([[0, 0], [3, 1], [2, 2]]), 1),
         lambda x: np.take_along_axis(x, I([[0, 0], [3, 1], [2, 2]]), 1), [(3, 4)]),
    Case("take_along_axis0", lambda x: gc.take_along_axis(x, I([[1, 0, 1, 1]]), 0),
         lambda x: np.take_along_axis(x, I([[1, 0, 1, 1]]), 0), [(3, 4)]),
    Case("take_along_axis_broadcast", lambda x: gc.take_along_axis(x, I([[0, 2, 2]]), 1),
         lambda x: np.take_along_axis(np.broadcast_to(x, (3, 4)), np.broadcast_to(I([[0, 2, 2]]), (3, 3)), 1),
         [(3, 4)]),
    Case("take_along_axis_x_broadcast", lambda x: gc.take_along_axis(x, I([[0], [2], [1]]), 1) * 1.0,
         lambda x: np.take_along_axis(np.broadcast_to(x, (3, 4)), I([[0], [2], [1]]), 1), [(1, 4)]),
    Case("scatter_add_values", lambda v: gc.scatter_add(v.graph.constant(np.zeros((4, 3))), I([0, 2, 0]), v, 0),
         lambda v: _scatter_ref((4, 3), I([0, 2, 0]), v, 0), [(3, 3)]),
    Case("scatter_add_axis1", lambda v: gc.scatter_add(v.graph.constant(np.zeros((2, 3))), I([[2, 2], [0, -1]]),
                                                       v, 1),
         lambda v: _scatter_ref((2, 3), I([[2, 2], [0, -1]]), v, 1), [(2, 2, 2)]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_forward_and_derivatives(case: Case):
    rng = np.random.default_rng(abs(hash(case.id)) % 2**32)
    arrays = case.arrays(rng)
    g = gc.Graph(case.id)
    xs = [g.input(f"x{k}", shape=a.shape) for k, a in enumerate(arrays)]
    y = case.build(*xs)
    feeds = {x.name: a for x, a in zip(xs, arrays)}
    (out,) = gc.compile([y]).run(feeds)
    (out_ref,) = gc.compile([y], optimize=False).run(feeds)
    expected = case.ref(*arrays)
    assert out.shape == np.shape(expected) == y.shape
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out_ref, expected, rtol=1e-12, atol=1e-12)
    weights = g.constant(rng.uniform(0.5, 1.5, size=y.shape))
    cost = gc.sum(y * weights * (1.0 + y), name="J")       # quadratic: second derivatives are not all zero
    check_gradients(g, cost, xs, feeds, second=case.second)


# -- repeated indices, batched and run-time indices -------------------------------------------

def test_repeated_indices_accumulate_in_the_gradient():
    g = gc.Graph()
    x = g.input("x", shape=(4,))
    idx = g.input("idx", shape=(None,), dtype="int64")
    (dx,) = gc.compile([gc.build_grad(gc.sum(x[idx] * g.constant(np.array([1.0, 2.0, 3.0, 4.0]))), [x])[x]]) \
        .run({"x": np.zeros(4), "idx": [2, 2, 0, -2]})
    np.testing.assert_array_equal(dx, [3.0, 0.0, 1.0 + 2.0 + 4.0, 0.0])   # x[-2] is x[2]


def test_batched_take_with_fed_indices_and_none_dims():
    rng = np.random.default_rng(5)
    g = gc.Graph()
    emb = g.input("emb", shape=(6, 3))
    tok = g.input("tok", shape=(None, 4), dtype="int32")
    h = gc.take(emb, tok, axis=0, name="h")                  # (None, 4, 3): an embedding look-up
    assert h.shape == (None, 4, 3)
    E, T = rng.standard_normal((6, 3)), rng.integers(-6, 6, size=(5, 4)).astype(np.int32)
    (out,) = gc.compile([h]).run({"emb": E, "tok": T})
    np.testing.assert_array_equal(out, E[T])
    cost = gc.sum(gc.tanh(h) * h)
    check_gradients(g, cost, [emb], {"emb": E, "tok": T})


def test_take_along_axis_picks_labels_like_a_loss():
    rng = np.random.default_rng(6)
    g = gc.Graph()
    logp = g.input("logp", shape=(7, 5))
    y = g.input("y", shape=(None, 1), dtype="int64")
    nll = -gc.mean(gc.take_along_axis(logp, y, axis=1))
    L, Y = rng.standard_normal((7, 5)), rng.integers(0, 5, size=(7, 1))
    (v,) = gc.compile([nll]).run({"logp": L, "y": Y})
    np.testing.assert_allclose(v, -np.mean(np.take_along_axis(L, Y, 1)))
    check_gradients(g, nll * nll, [logp], {"logp": L, "y": Y})


def test_scatter_add_is_differentiable_in_its_values_and_its_gradient_is_a_take():
    g = gc.Graph()
    v = g.input("v", shape=(3, 2))
    t = g.input("t", shape=(4, 2))
    s = gc.scatter_add(t, np.array([1, 3, 1]), v)
    gv = gc.build_grad(gc.sum(s * s * t), [v])[v]
    assert any(n.op.name == "take" for n in g.nodes if n.is_gradient)
    V, T = np.arange(6.0).reshape(3, 2), np.ones((4, 2))
    out, d = gc.compile([s, gv]).run({"v": V, "t": T})
    np.testing.assert_array_equal(out, [[0, 0], V[0] + V[2], [0, 0], V[1]])
    np.testing.assert_allclose(d, 2 * out[[1, 3, 1]])
    check_gradients(g, gc.sum(s * s * t), [v, t], {"v": V, "t": T})


def test_static_slices_still_views():
    g = gc.Graph()
    x = g.input("x", shape=(4, 3))
    assert x[1:3].op.name == "getitem" and x[np.array([1, 2])].op.name == "take"
    assert x[g.constant(np.array([0, 1]))].op.name == "take"


def test_one_hot_values_dtype_and_no_gradient_to_labels():
    g = gc.Graph()
    y = g.input("y", shape=(None,), dtype="int64")
    h = gc.one_hot(y, 4)
    assert h.shape == (None, 4) and h.dtype == np.float64
    assert gc.one_hot(y, 3, dtype="float32").dtype == np.float32
    (out,) = gc.compile([h]).run({"y": [3, 0, 0]})
    np.testing.assert_array_equal(out, np.eye(4)[[3, 0, 0]])
    with pytest.raises(gc.UndefinedGradientError):
        gc.build_grad(gc.sum(h), [y])
    with pytest.raises(gc.DTypeError, match="integer"):
        gc.one_hot(g.input("f", shape=(2,)), 3)
    # one_hot in a loss: the cross-entropy through it matches the built-in op
    rng = np.random.default_rng(7)
    o = g.input("o", shape=(None, 4))
    L = -gc.mean(gc.sum(gc.one_hot(y, 4) * gc.log_softmax(o), axis=1))
    ref = gc.softmax_cross_entropy(o, y)
    a, b = gc.compile([L, ref]).run({"o": rng.standard_normal((3, 4)), "y": [1, 3, 0]})
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_eye_as_constant_and_in_a_graph():
    g = gc.Graph()
    e = gc.eye(3, dtype="float32", graph=g, name="I3")
    assert e.op.name == "constant" and e.dtype == np.float32 and e.name == "I3"
    np.testing.assert_array_equal(g.value(e), np.eye(3))
    np.testing.assert_array_equal(gc.eye(2, 3, k=1), np.eye(2, 3, 1))
    with pytest.raises(gc.GraphCompilerError, match="graph=g"):
        gc.eye(3, name="I")  # a name with no graph to hold the node is not dropped silently


def test_eye_like_takes_its_size_at_run_time(tmp_path):
    """K + s I for a kernel matrix of run-time size: the identity follows K's (None) dim on every run, its
    gradient in s is tr(dJ/dA), the export writes I_n, and it saves and loads; eye(node) says what to write."""
    from graphcompiler.symbolic import evaluate

    g = gc.Graph()
    K = g.input("K", shape=(None, None))
    s = g.parameter("s", np.array(0.5))
    A = gc.add(K, s * gc.eye_like(K), name="A")
    J = gc.sum(A * A, name="J")
    grads = gc.build_grad(J, [s, K])
    prog = gc.compile([A, grads[s], grads[K]])
    rng = np.random.default_rng(0)
    for n in (2, 5):
        kv = rng.standard_normal((n, n))
        a, ds, dk = prog.run({"K": kv})
        np.testing.assert_allclose(a, kv + 0.5 * np.eye(n))
        np.testing.assert_allclose(ds, np.trace(2 * a))
        np.testing.assert_allclose(dk, 2 * a)
        for node, want in zip([A, grads[s], grads[K]], (a, ds, dk)):
            got = evaluate(gc.to_sympy(node, form="leaves"), {"K": kv}, graph=g)
            np.testing.assert_allclose(got.reshape(np.shape(want)), want, rtol=1e-12)
    assert gc.to_latex(A) == r"s \mathbb{I} + K"
    g.save(tmp_path / "g.json")
    h = gc.load(tmp_path / "g.json")
    np.testing.assert_array_equal(gc.compile([h["A"]]).run({"K": kv})[0], a)
    with pytest.raises(gc.ShapeError, match=r"eye_like\(x, axis\)"):
        gc.eye(K)


# -- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("build, bad", [
    (lambda x, i: gc.take(x, i, 0), 4), (lambda x, i: x[i], -5),
    (lambda x, i: gc.take_along_axis(x, gc.reshape(i, (-1, 1)), 0), 7),
    (lambda x, i: gc.scatter_add(x, i, gc.take(x, i * 0, 0), 0), 9),
    (lambda x, i: gc.scatter_add(x[:, 0], i, gc.take(x[:, 0], i * 0)), -5),     # 1-D: the bincount path
    (lambda x, i: gc.one_hot(i, 4), -1),
])
def test_index_out_of_range_raises_naming_the_node_and_index(build, bad):
    g = gc.Graph()
    x = g.input("x", shape=(4, 2))
    i = g.input("i", shape=(None,), dtype="int64")
    y = build(x, i)
    prog = gc.compile([y])
    X = np.arange(8.0).reshape(4, 2)
    with pytest.raises(gc.ExecutionError) as e:
        prog.run({"x": X, "i": [0, bad, 1]})
    msg = str(e.value)
    assert y.name in msg and y.op.name in msg and str(bad) in msg
    prog.run({"x": X, "i": [0, 3, -4][:2 if y.op.name == "one_hot_depth" else 3]})   # still usable


def test_gradient_through_an_integer_index_is_undefined():
    g = gc.Graph()
    x = g.input("x", shape=(4,))
    i = g.input("i", shape=(2,), dtype="int64")
    for y in [x[i], gc.take_along_axis(x, i, 0), gc.scatter_add(x, i, x[i])]:
        with pytest.raises(gc.UndefinedGradientError, match="'i'"):
            gc.build_grad(gc.sum(y), [i])


def test_shape_and_dtype_errors_name_the_nodes():
    g = gc.Graph()
    a, b = g.input("a", shape=(3, 2)), g.input("b", shape=(2, 3))
    with pytest.raises(gc.ShapeError, match="stack"):
        gc.stack([a, b])
    with pytest.raises(gc.DTypeError, match="integer"):
        gc.take(a, g.input("fidx", shape=(2,)), 0)
    with pytest.raises(gc.ShapeError, match="pad_width"):
        gc.pad(a, ((1, 2, 3),))
    with pytest.raises(gc.ShapeError):
        gc.pad(a, -1)
    with pytest.raises(gc.ShapeError, match="axis 2"):
        gc.flip(a, 2)
    with pytest.raises(gc.ShapeError):
        gc.diagonal(g.input("v", shape=(3,)))
    with pytest.raises(gc.ShapeError):
        gc.scatter_add(a, np.array([0, 1]), b, 0)
    with pytest.raises(gc.ShapeError, match="alone or after full slices"):
        a[np.array([0, 1]), 1:]
    with pytest.raises(gc.ShapeError, match="boolean"):
        a[a > 0]          # a boolean node (a constant NumPy mask gathers its np.nonzero indices: issue 14)
    with pytest.raises(gc.ShapeError, match="take_along_axis"):
        gc.take_along_axis(a, np.array([0, 1]), 1)
    n = len(g)
    with pytest.raises(gc.ShapeError, match="index 3 is out of range for axis 0 of size 3"):
        a[np.array([0, 3])]                                   # a NumPy index is checked at once
    with pytest.raises(gc.ShapeError, match="index -3 is out of range"):
        gc.take_along_axis(a, np.array([[0, -3]]), 1)
    assert len(g) == n
    n = len(g)
    with pytest.raises(gc.ShapeError):
        gc.repeat(a, 2, axis=3)
    assert len(g) == n                                        # a rejected op adds nothing


# -- files, pictures, export --------------------------------------------------------------------

def _graph_with(op_name: str):
    """A small graph whose forward or gradient nodes use op_name; outputs of rank <= 2 (for export)."""
    g = gc.Graph(op_name)
    x = g.input("x", shape=(3, 3))
    i = g.input("i", shape=(2,), dtype="int64")
    builders = {
        "stack": lambda: gc.stack([x[0], x[2]], axis=1),
        "pad": lambda: gc.pad(x, ((1, 0), (0, 2)), value=1.5),
        "flip": lambda: gc.flip(x, (0, 1)),
        "roll": lambda: gc.roll(x, (1, -1), (0, 1)),
        "tile": lambda: gc.tile(x, (1, 2)),
        "tile_sum": lambda: gc.tile(x, (2, 1)),
        "repeat": lambda: gc.repeat(x, 2, 1),
        "repeat_sum": lambda: gc.repeat(x, 2, 0),
        "diagonal": lambda: gc.diagonal(x, 1),
        "diagonal_scatter": lambda: gc.diagonal(x),
        "trace": lambda: gc.trace(x),
        "one_hot_depth": lambda: gc.one_hot(i, 3) @ x,
        "take": lambda: x[i],
        "scatter_add": lambda: gc.take(x, i, 1),
        "take_along_axis": lambda: gc.take_along_axis(x, gc.reshape(i, (1, 2)), 1),
        "scatter_add_along_axis": lambda: gc.take_along_axis(x, gc.reshape(i, (2, 1)), 0),
    }
    y = builders[op_name]()
    J = gc.sum(y * y, name="J")
    grads = gc.build_grad(J, [x])
    return g, [y, J, grads[x]], {"x": np.arange(9.0).reshape(3, 3) / 7, "i": np.array([2, 0])}


NEW_OPS = ["stack", "pad", "flip", "roll", "tile", "tile_sum", "repeat", "repeat_sum", "diagonal",
           "diagonal_scatter", "trace", "one_hot_depth", "take", "scatter_add", "take_along_axis",
           "scatter_add_along_axis"]


@pytest.mark.parametrize("op_name", NEW_OPS)
def test_saves_loads_draws_and_exports(tmp_path, op_name):
    g, outs, feeds = _graph_with(op_name)
    assert op_name in {n.op.name for n in g.nodes}
    g.save(tmp_path / "g.json")
    g2 = gc.load(tmp_path / "g.json")
    assert_same_graph(g, g2)
    a = gc.compile(outs).run(feeds)
    b = gc.compile([g2[n.name] for n in outs]).run(feeds)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert op_name in gc.to_dot(g).source
    for n in g.nodes:
        if n.op.name == op_name:
            assert gc.to_sympy(n) is not None
    gc.to_sympy(outs[1])
    gc.to_latex(outs[2])


def test_trace_exports_as_the_matrix_trace():
    import sympy as sp
    g = gc.Graph()
    X = g.input("X", shape=(3, 3))
    e = gc.to_sympy(gc.trace(X))
    assert e.has(sp.Trace) or e == sp.Trace(sp.MatrixSymbol("X", 3, 3))


def test_loader_checks_the_new_ops_attributes(tmp_path):
    import json
    g, _, _ = _graph_with("stack")
    g.save(tmp_path / "g.json")
    doc = json.loads((tmp_path / "g.json").read_text())
    rec = next(r for r in doc["nodes"] if r["op"] == "stack")
    assert rec["attrs"] == {"axis": 1}                       # the new axis, in the output's rank
    rec["attrs"]["axis"] = 5
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(gc.GraphFileError, match="axis"):
        gc.load(tmp_path / "bad.json")
    g, _, _ = _graph_with("pad")
    g.save(tmp_path / "p.json")
    doc = json.loads((tmp_path / "p.json").read_text())
    rec = next(r for r in doc["nodes"] if r["op"] == "pad")
    rec["attrs"]["pad_width"] = [1, 0, -4, 2]
    (tmp_path / "badp.json").write_text(json.dumps(doc))
    with pytest.raises(gc.GraphFileError, match="pad_width"):
        gc.load(tmp_path / "badp.json")


def test_every_indexing_op_of_the_contract_exists_and_is_exercised():
    names = "stack pad flip roll tile repeat diagonal trace eye eye_like one_hot take take_along_axis scatter_add"
    for name in names.split():
        assert callable(getattr(gc, name)), name
    tested = " ".join(c.id for c in CASES)
    for name in "stack pad flip roll tile repeat diagonal trace eye take take_along_axis scatter_add".split():
        assert name in tested, name


def test_float32_graphs_stay_float32_through_the_new_ops_and_their_gradients():
    g = gc.Graph()
    x = g.input("x", shape=(None, 3), dtype="float32")
    i = g.input("i", shape=(None,), dtype="int64")
    ops = [x[i], gc.take_along_axis(x, gc.reshape(i, (-1, 1)), 1), gc.pad(x, 1), gc.flip(x), gc.roll(x, 1, 1),
           gc.tile(x, 2), gc.repeat(x, 2, 0), gc.stack([x, x]), gc.trace(x[:3]), gc.diagonal(x),
           gc.one_hot(i, 3, dtype="float32") * x[:, :1], gc.take(x[:, 0], i)]
    assert all(o.dtype == np.float32 for o in ops)
    J = gc.add(gc.sum(gc.stack([gc.sum(o * o) for o in ops])), 0.0, name="J")
    gx = gc.build_grad(J, [x])[x]
    X = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    v, d = gc.compile([J, gx]).run({"x": X, "i": [0, 2, 1, 1]})
    assert v.dtype == d.dtype == np.float32
    g64 = gc.Graph()                                           # the same cost in float64 agrees
    x64, i64 = g64.input("x", shape=(None, 3)), g64.input("i", shape=(None,), dtype="int64")
    ops64 = [x64[i64], gc.take_along_axis(x64, gc.reshape(i64, (-1, 1)), 1), gc.pad(x64, 1), gc.flip(x64),
             gc.roll(x64, 1, 1), gc.tile(x64, 2), gc.repeat(x64, 2, 0), gc.stack([x64, x64]), gc.trace(x64[:3]),
             gc.diagonal(x64), gc.one_hot(i64, 3) * x64[:, :1], gc.take(x64[:, 0], i64)]
    J64 = gc.sum(gc.stack([gc.sum(o * o) for o in ops64]))
    v64, d64 = gc.compile([J64, gc.build_grad(J64, [x64])[x64]]).run({"x": X.astype(float), "i": [0, 2, 1, 1]})
    np.testing.assert_allclose(v, v64, rtol=1e-5)
    np.testing.assert_allclose(d, d64, rtol=1e-5)
