"""build_grad (API section 2): Algorithms 6.5/6.6, names and provenance, seeds, disconnected and
undefined gradients, higher orders, long chains, and random graphs checked against central differences."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

import graphcompiler as gc
from gradcheck import check_gradients


def test_gradients_are_named_marked_and_traceable(make_mlp):
    g, n = make_mlp(W2_value=False, name_o=False)
    n_forward = len(g)
    grads = gc.build_grad(n["J"], [n["W1"], n["W2"]])
    assert grads[n["W1"]].name == "dJ/dW1" and grads[n["W2"]].name == "dJ/dW2"
    assert g["dJ/dW1"] is grads[n["W1"]]
    new = g.nodes[n_forward:]
    assert new and all(node.is_gradient for node in new)
    assert not any(node.is_gradient for node in g.nodes[:n_forward])
    for node in new:          # every origin is an edge of G: (forward node, index of the input it differentiates)
        if node.origin is not None:
            fwd, i = node.origin
            assert not fwd.is_gradient and 0 <= i < len(fwd.inputs)
    origins = {node.origin for node in new if node.origin}
    assert (n["z"], 1) in origins and (n["o"], 0) in origins      # dJ/dW1 came through z's edge from W1
    assert g["dJ/dh"].origin == (n["o"], 0) and g["dJ/dz"].origin == (n["h"], 0)


def test_no_number_is_computed_while_building(make_mlp, monkeypatch):
    g, n = make_mlp(W2_value=False, name_o=False)
    import graphcompiler.ops.base as base
    for cls in base.OPS.values():
        monkeypatch.setattr(cls, "kernel", lambda self, *a, **k: pytest.fail("a kernel ran in build_grad"))
    gc.build_grad(n["J"], [n["W1"], n["W2"], n["x"]])


def test_calling_again_adds_a_fresh_subgraph_with_suffixed_names(make_mlp):
    g, n = make_mlp(W2_value=False, name_o=False)
    first = gc.build_grad(n["J"], [n["W1"]])
    second = gc.build_grad(n["J"], [n["W1"]])
    assert first[n["W1"]].name == "dJ/dW1" and second[n["W1"]].name == "dJ/dW1_2"
    X, Y = np.random.default_rng(0).standard_normal((5, 4)), np.array([0, 1, 0, 1, 1])
    g.set_value("W2", np.ones((3, 2)))
    a, b = gc.compile([first[n["W1"]], second[n["W1"]]]).run({"x": X, "y": Y})
    np.testing.assert_array_equal(a, b)


def test_targets_can_be_inputs_intermediates_and_the_cost(make_mlp):
    g, n = make_mlp(W2_value=False, name_o=False)
    g.set_value("W2", np.random.default_rng(1).standard_normal((3, 2)))
    grads = gc.build_grad(n["J"], [n["x"], n["h"], n["z"], n["J"], n["L"]])
    assert grads[n["J"]].name == "dJ/dJ" and grads[n["L"]].name == "dJ/dL"
    X, Y = np.random.default_rng(0).standard_normal((5, 4)), np.array([0, 1, 0, 1, 1])
    dJ, dL = gc.compile([grads[n["J"]], grads[n["L"]]]).run({"x": X, "y": Y})
    assert dJ == 1.0 and dL == 1.0
    check_gradients(g, n["J"], [n["x"]], {"x": X, "y": Y}, second=False)


def test_a_node_read_twice_gets_the_sum_of_both_paths():
    g = gc.Graph()
    w = g.input("w", shape=(3,))
    a = gc.sin(w)
    J = gc.sum(a * a + a)            # a is read by two consumers, and twice by one of them
    grads = gc.build_grad(J, [w])
    W = np.array([0.1, 0.7, -1.2])
    (dw,) = gc.compile([grads[w]]).run({"w": W})
    np.testing.assert_allclose(dw, (2 * np.sin(W) + 1) * np.cos(W))


def test_non_scalar_cost_needs_a_seed_and_seed_gives_vjp():
    g = gc.Graph()
    x = g.input("x", shape=(3,))
    W = g.parameter("W", np.arange(6.0).reshape(2, 3))
    y = gc.tanh(W @ x, name="y")
    n = len(g)
    with pytest.raises(gc.ShapeError, match=r"scalar cost.*'y'.*\(2,\).*seed"):
        gc.build_grad(y, [x])
    assert len(g) == n
    v = g.input("v", shape=(2,))
    vjp = gc.build_grad(y, [x, W], seed=v)
    X, V = np.array([0.1, -0.2, 0.3]), np.array([1.0, -2.0])
    dx, dW = gc.compile([vjp[x], vjp[W]]).run({"x": X, "v": V})
    Wv = np.arange(6.0).reshape(2, 3)
    d = V * (1 - np.tanh(Wv @ X) ** 2)
    np.testing.assert_allclose(dx, Wv.T @ d)
    np.testing.assert_allclose(dW, np.outer(d, X))
    with pytest.raises(gc.ShapeError, match="seed"):
        gc.build_grad(y, [x], seed=g.input("v3", shape=(3,)))


def test_disconnected_targets():
    g = gc.Graph()
    x, u = g.input("x", shape=(2,)), g.input("u", shape=(None, 2))
    P = g.parameter("P", np.ones((2, 2)))
    J = gc.sum(x * x)
    n = len(g)
    with pytest.raises(gc.DisconnectedInputError, match=r"does not depend on P.*disconnected='zero'"):
        gc.build_grad(J, [x, P])
    assert len(g) == n                        # the failed call left the graph as it was
    grads = gc.build_grad(J, [x, P, u], disconnected="zero")
    assert grads[P].name == "dJ/dP" if J.name == "J" else grads[P].name.endswith("/dP")
    dP, du = gc.compile([grads[P], grads[u]]).run({"x": [1.0, 2.0], "u": np.ones((3, 2))})
    np.testing.assert_array_equal(dP, np.zeros((2, 2)))
    np.testing.assert_array_equal(du, np.zeros((3, 2)))


def test_undefined_gradient_through_an_integer_cast_names_op_node_and_path():
    g = gc.Graph()
    w = g.input("w", shape=(3,))
    k = gc.astype(w * 10, "int64", name="k")
    J = gc.sum(gc.astype(k, "float64") * w, name="J")
    n = len(g)
    with pytest.raises(gc.UndefinedGradientError) as e:
        gc.build_grad(J, [w])
    msg = str(e.value)
    assert "astype" in msg and "'k'" in msg and "w (input" in msg and "J (sum" in msg
    assert len(g) == n
    # the same cast is fine when the gradient does not need it: stop_gradient cuts the path
    J2 = gc.sum(gc.astype(gc.stop_gradient(k), "float64") * w)
    (dw,) = gc.compile([gc.build_grad(J2, [w])[w]]).run({"w": [0.11, 0.26, -0.3]})
    np.testing.assert_array_equal(dw, [1.0, 2.0, -3.0])


def test_integer_labels_are_undefined_only_when_needed(make_mlp):
    g, n = make_mlp(W2_value=False, name_o=False)
    with pytest.raises(gc.UndefinedGradientError, match="'y'.*int64"):
        gc.build_grad(n["J"], [n["y"]])
    gc.build_grad(n["J"], [n["W1"]])          # the labels are read but not differentiated: fine


def test_comparison_paths_give_zeros_not_disconnected():
    g = gc.Graph()
    w = g.input("w", shape=(3,))
    J = gc.sum(gc.astype(w > 0, "float64"))
    (dw,) = gc.compile([gc.build_grad(J, [w])[w]]).run({"w": [1.0, -1.0, 2.0]})
    np.testing.assert_array_equal(dw, np.zeros(3))


@pytest.mark.parametrize("f", [gc.relu, gc.abs, lambda t: gc.max(t, axis=0),
                               lambda t: gc.where(t > 0, t * t, -t), lambda t: gc.maximum(t, 0.3 * t)])
def test_hessian_vector_products_through_piecewise_ops(f):
    g = gc.Graph()
    w = g.input("w", shape=(4, 3))
    J = gc.sum(gc.sin(f(gc.tanh(w) * 2.0)) ** 2)
    rng = np.random.default_rng(2)
    W = rng.uniform(0.2, 1.2, (4, 3)) * rng.choice([-1, 1], (4, 3))
    check_gradients(g, J, [w], {"w": W})


def test_gradient_of_a_gradient_is_a_graph_too():
    g = gc.Graph()
    x = g.input("x", shape=())
    y = x ** 3 + gc.sin(x)
    d1 = gc.build_grad(y, [x])[x]
    d2 = gc.build_grad(d1, [x])[x]
    d3 = gc.build_grad(d2, [x])[x]
    vals = gc.compile([d1, d2, d3]).run({"x": 0.7})
    np.testing.assert_allclose(vals, [3 * 0.49 + np.cos(0.7), 6 * 0.7 - np.sin(0.7), 6 - np.cos(0.7)])


def test_ten_thousand_op_chain_is_iterative():
    g = gc.Graph()
    w = g.input("w", shape=(4,))
    z = w
    for k in range(10_000):
        z = gc.sin(z) if k % 2 else gc.tanh(z)
    J = gc.sum(z)
    grads = gc.build_grad(J, [w])
    W = np.array([0.3, -0.5, 1.0, 2.0])
    (dw,) = gc.compile([grads[w]]).run({"w": W})
    # the same derivative by the chain rule in a NumPy loop
    v, d = W.copy(), np.ones(4)
    for k in range(10_000):
        if k % 2:
            d, v = d * np.cos(v), np.sin(v)
        else:
            t = np.tanh(v)
            d, v = d * (1 - t * t), t
    np.testing.assert_allclose(dw, d, rtol=1e-10)


def test_none_dims_in_gradients():
    g = gc.Graph()
    x = g.input("x", shape=(None, 3))
    b = g.parameter("b", np.zeros(3))
    J = gc.mean(gc.sum(gc.tanh(x + b) ** 2, axis=1)) + gc.sum(gc.max(x, axis=0))
    grads = gc.build_grad(J, [x, b])
    for n in (4, 7):
        X = np.random.default_rng(n).standard_normal((n, 3))
        check_gradients(g, J, [x], {"x": X}, second=False)
        dx, db = gc.compile([grads[x], grads[b]]).run({"x": X})
        assert dx.shape == (n, 3) and db.shape == (3,)


# -- random graphs ----------------------------------------------------------------------------

UNARY = [gc.sin, gc.cos, gc.tanh, gc.sigmoid, lambda t: t * t, lambda t: gc.exp(gc.tanh(t)),
         lambda t: gc.log1p(t * t), lambda t: -t]
BINARY = [gc.add, gc.subtract, gc.multiply, lambda a, b: a / (1.5 + gc.sin(b)),
          lambda a, b: gc.maximum(a, b) + gc.minimum(a, b)]
SHAPES = [(), (3,), (2, 3)]


@st.composite
def random_graph(draw):
    n_inputs = draw(st.integers(1, 3))
    shapes = [draw(st.sampled_from(SHAPES)) for _ in range(n_inputs)]
    steps = draw(st.lists(st.tuples(st.booleans(), st.integers(0, 10**6), st.integers(0, 10**6),
                                    st.integers(0, 10**6)), min_size=1, max_size=12))
    seed = draw(st.integers(0, 2**31))
    return shapes, steps, seed


@given(random_graph())
def test_random_graphs_match_central_differences(spec):
    shapes, steps, seed = spec
    g = gc.Graph()
    xs = [g.input(f"x{k}", shape=s) for k, s in enumerate(shapes)]
    pool = list(xs)
    for unary, a, b, op in steps:
        if unary:
            pool.append(UNARY[op % len(UNARY)](pool[a % len(pool)]))
        else:
            pool.append(BINARY[op % len(BINARY)](pool[a % len(pool)], pool[b % len(pool)]))
    total = None
    for node in pool:                     # every node feeds the cost: many are read several times
        term = gc.sum(node)
        total = term if total is None else total + term
    rng = np.random.default_rng(seed)
    feeds = {x.name: rng.uniform(-1, 1, size=x.shape) for x in xs}
    check_gradients(g, total, xs, feeds, rtol=1e-5, atol=1e-6)
