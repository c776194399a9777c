"""`x == y` and `x != y` on nodes (API.md section 14): elementwise where a value is read, never a silent
Python bool; identity when used as a bool between nodes, so nodes still key dicts and sit in lists."""

from __future__ import annotations

import numpy as np
import pytest

import graphcompiler as gc
from graphcompiler.ops.elementwise import DeferredComparison

X = np.array([0.0, 1.5, -2.0, 0.0, 3.0])


def _num_grad(f, x, eps=1e-6):
    out = np.zeros_like(x)
    for k in range(x.size):
        p, m = x.copy(), x.copy()
        p[k] += eps
        m[k] -= eps
        out[k] = (f(p) - f(m)) / (2 * eps)
    return out


def where_loss(x):
    return np.sum(np.where(x == 0, 100.0, x) ** 2)


def test_where_of_equal_in_traced_numpy_gives_values_and_gradient():
    f = gc.function(lambda x: np.where(x == 0, 100.0, x))
    np.testing.assert_array_equal(f(X), np.where(X == 0, 100.0, X))
    value, grad = gc.value_and_grad(where_loss)(X)
    np.testing.assert_allclose(value, where_loss(X), rtol=1e-12)
    np.testing.assert_allclose(grad, np.where(X == 0, 0.0, 2 * X), rtol=1e-12)
    away = X + 0.25  # central differences where no entry sits on the jump
    np.testing.assert_allclose(gc.grad(where_loss)(away), _num_grad(where_loss, away), rtol=1e-6, atol=1e-6)


def test_not_equal_and_equal_of_two_nodes_are_elementwise():
    a, b = np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.0, 2.0, 2.0, -3.0])
    ne, eq = gc.function(lambda x, y: (x != y, x == y))(a, b)
    np.testing.assert_array_equal(ne, a != b)
    np.testing.assert_array_equal(eq, a == b)
    masked = gc.function(lambda x, y: np.sum(np.where(x != y, x, 0.0) + (x == y) * 10.0))(a, b)
    np.testing.assert_allclose(masked, np.sum(np.where(a != b, a, 0.0) + (a == b) * 10.0))


@pytest.mark.parametrize("expr, ref", [
    (lambda x: ~(x == 0), lambda x: ~(x == 0)),
    (lambda x: (x == 0) | (x > 2), lambda x: (x == 0) | (x > 2)),
    (lambda x: (x != 0) & (x > 0), lambda x: (x != 0) & (x > 0)),
    (lambda x: np.logical_not(x == 0), lambda x: np.logical_not(x == 0)),
    (lambda x: (x == 0).astype(np.float64) * 2.0, lambda x: (x == 0).astype(np.float64) * 2.0),
    (lambda x: np.sum(x == 0), lambda x: np.sum(x == 0)),
    (lambda x: gc.where(x == 0, 1.0, x), lambda x: np.where(x == 0, 1.0, x)),
    (lambda x: 3.0 * (x == 1.5) + np.ones(5) * (x == 0), lambda x: 3.0 * (x == 1.5) + np.ones(5) * (x == 0)),
    (lambda x: x == np.array([0.0, 1.5, 0.0, 0.0, 3.0]), lambda x: x == np.array([0.0, 1.5, 0.0, 0.0, 3.0])),
    (lambda x: x == [0.0, 1.5, 0.0, 0.0, 3.0], lambda x: x == np.array([0.0, 1.5, 0.0, 0.0, 3.0])),
])
def test_comparisons_flow_into_ops_numpy_and_operators(expr, ref):
    np.testing.assert_array_equal(gc.function(expr)(X), ref(X))


def test_a_comparison_becomes_one_node_however_often_it_is_read():
    g = gc.Graph()
    x = g.input("x", (3,))
    c = x == 0
    before = len(g)
    gc.where(c, 1.0, x)
    gc.astype(c, "float64")
    assert sum(n.op.name == "equal" for n in g.nodes) == 1
    assert c.node() is c.node() and c.shape == (3,) and c.dtype == np.bool_
    assert len(g) == before + 5  # the constant 0 and equal, once; the constant 1.0, where, astype


def test_nodes_still_key_dicts_and_sit_in_lists_with_no_graph_side_effect():
    g = gc.Graph()
    x, y = g.input("x", (3,)), g.input("y", (3,))
    n = len(g)
    assert bool(x == x) and not bool(x == y) and bool(x != y) and not bool(x != x)
    assert x in [y, x] and [y, x].index(x) == 1 and [x, y, x].count(x) == 2
    assert {x: 1, y: 2}[y] == 2 and hash(x) == hash(x) and len({x, y, x}) == 2
    assert (x, y) == (x, y) and (x, y) != (y, x)
    assert x not in (None, "x") and x in (None, "x", x)  # other objects: Python's identity fallback
    assert not (x == None) and (x != "x")  # noqa: E711
    other = gc.Graph().input("x", (3,))
    assert x not in [other]
    assert len(g) == n  # nothing was added


def test_a_comparison_with_a_value_is_no_python_bool():
    g = gc.Graph()
    x = g.input("x", (3,))
    with pytest.raises(gc.GraphCompilerError, match=r"x == 0.*no value until a program runs.*gc.where"):
        bool(x == 0)
    with pytest.raises(gc.GraphCompilerError, match="no value"):
        if x != np.zeros(3):
            pass
    with pytest.raises(gc.GraphCompilerError, match="no value"):
        np.asarray(x == 0)
    with pytest.raises(gc.GraphCompilerError, match="no value"):
        float(x == 0)
    assert len(g) == 1


def test_comparing_nodes_of_two_graphs_is_an_error_when_read():
    x, y = gc.Graph("a").input("x", (3,)), gc.Graph("b").input("y", (3,))
    with pytest.raises(gc.GraphMismatchError):
        gc.where(x == y, 1.0, 0.0)


def test_the_package_itself_makes_no_comparison_nodes(monkeypatch, tmp_path, make_mlp):
    made = []
    original = DeferredComparison.node

    def spy(self):
        made.append(self)
        return original(self)

    monkeypatch.setattr(DeferredComparison, "node", spy)
    g, n = make_mlp(grads=True)
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((6, 4)), "y": rng.integers(0, 2, 6)}
    prog = gc.compile([n["J"], n["dW1"], n["dW2"]])
    prog.run(feeds)
    gc.compile([n["J"]], updates={n["W1"]: n["W1"] - 0.1 * n["dW1"]}, optimize=False).run(feeds)
    path = tmp_path / "mlp.json"
    g.save(path)
    g2 = gc.load(path)
    assert [m.name for m in g2.nodes] == [m.name for m in g.nodes]
    h = gc.hessian(gc.sum(gc.tanh(n["W2"])), n["W2"])
    gc.compile([h]).run({})
    gc.jvp([n["s"]], [n["W1"]], [n["W1"]])
    assert made == []
    assert not any(m.op.name in ("equal", "not_equal") for m in g.nodes)


# -- small ones: dtype= of NumPy reductions -------------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda x: np.mean(x, dtype=int), lambda x: np.mean(x, dtype=np.int32), lambda x: np.mean(x, dtype=np.float32),
    lambda x: np.sum(x, dtype=int), lambda x: np.sum(x, axis=0, dtype=np.int32), lambda x: np.prod(x, dtype=int),
    lambda x: np.var(x, dtype=np.float32), lambda x: np.std(x, axis=1, dtype=np.float32),
    lambda x: x.mean(axis=1, dtype=int), lambda x: np.add.reduce(x, axis=0, dtype=np.int32),
    lambda x: np.cumsum(x, dtype=np.int32),
])
def test_reduction_dtype_is_the_accumulator_and_result_dtype_as_numpy(call):
    a = np.array([[1.5, 2.5, 3.7, -1.2], [-3.5, 0.4, 7.9, 2.2]])
    got, ref = gc.function(call)(a), call(a)
    assert got.dtype == np.asarray(ref).dtype
    np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_reduction_dtypes_numpy_computes_otherwise_are_refused():
    g = gc.Graph()
    x = g.input("x", (2, 3))
    for call in (lambda: np.var(x, dtype=int), lambda: np.std(x, dtype=bool), lambda: np.sum(x, dtype=bool),
                 lambda: np.mean(x, dtype=x)):
        with pytest.raises(gc.GraphCompilerError, match="dtype"):
            call()


def test_a_node_is_no_dtype_for_gc_astype():
    g = gc.Graph()
    x, y = g.input("x", (2,)), g.input("y", (2,), "int64")
    with pytest.raises(gc.DTypeError, match="dtype is a node"):
        gc.astype(x, y)
    with pytest.raises(gc.DTypeError, match="dtype is a node"):
        x.astype(y)
    assert gc.astype(x, y.dtype).dtype == np.int64


def test_comparisons_as_control_flow_predicates():
    g = gc.Graph()
    x = g.input("x", ())
    picked = gc.cond(x == 0, lambda a: a + 1, lambda a: a * 2, x)
    bounded = gc.while_loop(lambda h: h != 5.0, lambda h: h + 1, x, max_steps=10)
    free = gc.while_loop(lambda h: h != 5.0, lambda h: h + 1, x)
    _, ys = gc.scan(lambda h, t: (h + t, h == t), x, g.constant(np.array([0.0, 1.0, 2.0])))
    prog = gc.compile([picked, bounded, free, ys])
    for v in (0.0, 1.0, 3.0):
        p, b, f, y = prog.run({"x": v})
        assert p == (v + 1 if v == 0 else v * 2) and b == f == 5.0
        h = v + np.concatenate([[0.0], np.cumsum([0.0, 1.0])])
        np.testing.assert_array_equal(y, h == np.array([0.0, 1.0, 2.0]))


def test_writing_into_a_comparison_is_refused():
    g = gc.Graph()
    x = g.input("x", (3,))
    for target in (x, np.ones(3)):
        with pytest.raises(gc.GraphCompilerError, match="out="):
            np.add(target, 1, out=(x == 0,))
