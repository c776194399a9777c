"""compile and Program: every pass keeps results identical ("optimised agrees with unoptimised") on the
seeds' examples and on random graphs; each rewrite rule fires; the schedule, buffer plan and cache work."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

import graphcompiler as gc
from conftest import build_mlp
from graphcompiler.compiler.program import PASSES

PASS_SETS = [True, {"simplify"}, {"schedule"}, {"buffers"}, {"schedule", "buffers"}]


def close(a, b, dtype):
    tol = 2e-5 if np.dtype(dtype) == np.float32 else 1e-10
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def agree(outputs, feeds, optimize=True, updates=None):
    """Run the outputs optimised and unoptimised on the same feeds; return both results."""
    ref = gc.compile(outputs, optimize=False).run(feeds)
    got = gc.compile(outputs, optimize=optimize).run(feeds)
    assert len(got) == len(ref)
    for a, b, o in zip(got, ref, outputs):
        assert a.shape == b.shape == tuple(np.shape(b))
        close(a, b, o.dtype)
    return got, ref


# -- the seeds' examples ------------------------------------------------------------------------

def d2l_mlp(dtype="float64", batch=None, d=4, h=5, c=3, act=gc.relu):
    """D2L's MLP (conftest.build_mlp) with dJ/dW1, dJ/dW2 and feeds for a batch of 7."""
    rng = np.random.default_rng(0)
    g, n = build_mlp(rng=rng, dtype=dtype, batch=batch, d=d, hidden=h, classes=c, act=act, grads=True)
    W1, W2 = n["W1"], n["W2"]
    X = rng.standard_normal((7, d)).astype(dtype)
    Y = rng.integers(0, c, 7)
    return g, n["J"], {W1: n["dW1"], W2: n["dW2"]}, (W1, W2), {"x": X, "y": Y}


def chain(n=6, size=5):
    """Figure 6.10: z = f(f(f(w))), here f alternating sin and tanh, with dz/dw."""
    g = gc.Graph("chain")
    w = g.input("w", shape=(size,))
    z = w
    for k in range(n):
        z = (gc.sin if k % 2 == 0 else gc.tanh)(z)
    total = gc.sum(z, name="total")
    grads = gc.build_grad(total, [w])
    return [total, grads[w]], {"w": np.linspace(-2, 2, size)}


def mlp_657(dtype="float64"):
    """Goodfellow 6.5.7: H = max(0, X W1), cross-entropy of H W2, weight decay lambda (sum W1^2 + sum W2^2)."""
    rng = np.random.default_rng(3)
    g = gc.Graph("mlp657")
    X = g.input("X", shape=(None, 6), dtype=dtype)
    y = g.input("y", shape=(None,), dtype="int64")
    W1 = g.parameter("W1", rng.standard_normal((6, 8)).astype(dtype))
    W2 = g.parameter("W2", rng.standard_normal((8, 4)).astype(dtype))
    H = gc.relu(gc.matmul(X, W1), name="H")
    J_mle = gc.softmax_cross_entropy(gc.matmul(H, W2), y, name="J_MLE")
    J = gc.add(J_mle, 0.1 * (gc.sum(gc.square(W1)) + gc.sum(gc.square(W2))), name="J")
    grads = gc.build_grad(J, [W1, W2])
    return [J, grads[W1], grads[W2]], {"X": rng.standard_normal((9, 6)).astype(dtype), "y": rng.integers(0, 4, 9)}


@pytest.mark.parametrize("optimize", PASS_SETS, ids=str)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_d2l_mlp_agrees(optimize, dtype):
    g, J, grads, (W1, W2), feeds = d2l_mlp(dtype)
    agree([J, grads[W1], grads[W2]], feeds, optimize)


@pytest.mark.parametrize("optimize", PASS_SETS, ids=str)
def test_chain_and_657_agree(optimize):
    agree(*chain(), optimize=optimize)
    agree(*mlp_657(), optimize=optimize)


def test_d2l_mlp_closed_forms():
    """The gradients equal D2L's closed forms dJ/dW2 = dJ/do h^T + lambda W2 (row form: h^T dJ/do)."""
    g, J, grads, (W1, W2), feeds = d2l_mlp()
    j, dW1, dW2 = gc.compile([J, grads[W1], grads[W2]]).run(feeds)
    X, Y = feeds["x"], feeds["y"]
    w1, w2 = g.value(W1), g.value(W2)
    z = X @ w1
    h = np.maximum(z, 0)
    o = h @ w2
    p = np.exp(o - o.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    do = p.copy()
    do[np.arange(len(Y)), Y] -= 1
    do /= len(Y)
    np.testing.assert_allclose(dW2, h.T @ do + 0.01 * w2, rtol=1e-10)
    np.testing.assert_allclose(dW1, X.T @ ((do @ w2.T) * (z > 0)) + 0.01 * w1, rtol=1e-10)
    np.testing.assert_allclose(j, -np.log(p[np.arange(len(Y)), Y]).mean() + 0.005 * ((w1 ** 2).sum() + (w2 ** 2).sum()),
                               rtol=1e-10)


def test_long_chain_runs_in_the_loop_evaluator():
    """A chain long enough that the evaluator runs a loop instead of generated code agrees too."""
    outs, feeds = chain(n=800, size=3)
    agree(outs, feeds)


# -- random graphs ------------------------------------------------------------------------------

UNARY = [gc.sin, gc.tanh, gc.exp, gc.negative, gc.square, gc.sigmoid, gc.relu,
         lambda x: gc.log1p(gc.square(x)), lambda x: gc.transpose(gc.transpose(x)),
         lambda x: x * 1.0, lambda x: x + 0.0, lambda x: x - 0.0, lambda x: x / 1.0, lambda x: -(-x),
         lambda x: gc.log(gc.softmax(x)), lambda x: gc.reshape(x, (-1, 4))]
BINARY = [gc.add, gc.subtract, gc.multiply, lambda a, b: gc.maximum(a, b), lambda a, b: a * b + a]


@st.composite
def random_graph(draw):
    """A random DAG over two (3, 4) inputs and a parameter, reduced to a scalar, with its gradients."""
    g = gc.Graph("random")
    a = g.input("a", shape=(3, 4))
    b = g.input("b", shape=(None, 4))
    W = g.parameter("W", np.linspace(-1, 1, 16).reshape(4, 4))
    pool = [a, b, W]
    for _ in range(draw(st.integers(2, 9))):
        kind = draw(st.sampled_from(["unary", "binary", "matmul", "sum"]))
        x = draw(st.sampled_from(pool))
        if kind == "unary":
            pool.append(draw(st.sampled_from(UNARY))(x))
        elif kind == "binary":
            y = draw(st.sampled_from([p for p in pool if p.shape == x.shape]))
            pool.append(draw(st.sampled_from(BINARY))(x, y))
        elif kind == "matmul":
            pool.append(gc.matmul(x, W))
        else:
            pool.append(gc.sum(x, axis=draw(st.sampled_from([0, 1, None])), keepdims=True) + x)
    total = gc.sum(pool[-1]) + gc.sum(gc.tanh(pool[len(pool) // 2]))
    grads = gc.build_grad(total, [a, W], disconnected="zero")
    return [total, grads[a], grads[W], pool[-1]]


@given(random_graph(), st.sampled_from(PASS_SETS))
def test_random_graphs_agree(outputs, optimize):
    rng = np.random.default_rng(1)
    feeds = {"a": rng.standard_normal((3, 4)) * 0.5, "b": rng.standard_normal((3, 4)) * 0.5}
    agree(outputs, feeds, optimize)


# -- each rule fires ----------------------------------------------------------------------------

def ops_of(program):
    return [s.op for s in program.schedule]


@pytest.mark.parametrize("build, gone, rule", [
    (lambda x: x * 1.0, "multiply", "times_one"),
    (lambda x: x + 0.0, "add", "plus_zero"),
    (lambda x: x - 0.0, "subtract", "minus_zero"),
    (lambda x: x / 1.0, "divide", "over_one"),
    (lambda x: -(-x), "negative", "neg_neg"),
    (lambda x: gc.transpose(gc.transpose(x)), "transpose", "transpose_transpose"),
    (lambda x: gc.reshape(x, (3, 4)), "reshape", "reshape_same"),
    (lambda x: gc.broadcast_to(x, (3, 4)), "broadcast_to", "broadcast_same"),
    (lambda x: gc.sum(x, axis=()), "sum", "sum_no_axes"),
    (lambda x: gc.log(gc.softmax(x)), "softmax", "log_exp"),       # softmax -> exp(log_softmax) first
    (lambda x: gc.log(1.0 + gc.square(x)), "add", "log_one_plus"),
    (lambda x: gc.log(gc.sum(gc.exp(x), axis=1)), "exp", "log_sum_exp"),
    (lambda x: gc.sin(x) + gc.sin(x) * 2.0, None, "cse"),
    (lambda x: x * gc.exp(x.graph.constant(0.5)), "exp", "fold"),
])
def test_each_rule_fires_and_agrees(build, gone, rule):
    g = gc.Graph("rule")
    x = g.input("x", shape=(3, 4))
    y = build(x)
    p = gc.compile([y])
    assert p.stats["rewrites"].get(rule, 0) >= 1, p.stats["rewrites"]
    if gone:
        assert gone not in ops_of(p)
    agree([y], {"x": np.linspace(0.1, 2, 12).reshape(3, 4)})


def test_stable_forms_are_used():
    g = gc.Graph("stable")
    x = g.input("x", shape=(2, 3))
    outs = [gc.log(gc.softmax(x)), gc.log(1.0 + gc.exp(x)), gc.log(gc.sum(gc.exp(x), axis=1))]
    p = gc.compile(outs)
    assert {"log_softmax", "log1p", "logsumexp"} <= set(ops_of(p))
    big = np.array([[1000.0, 0.0, -1000.0], [3.0, 2.0, 1.0]])
    ls, l1p, lse = p.run({"x": big})
    assert np.isfinite(ls).all() and np.isfinite(lse).all()
    np.testing.assert_allclose(lse[0], 1000.0)


def test_seed_of_ones_dropped_and_constants_folded():
    """The gradient seed dJ/dJ = 1 multiplies nothing in the program; lambda/2 is one folded constant."""
    g, J, grads, (W1, W2), feeds = d2l_mlp()
    p = gc.compile([J, grads[W1], grads[W2]])
    p.run(feeds)                                  # the batch size (a None dim) is known: 1/n folds too
    names = [x.name for s in p.schedule for x in s.value.inputs]
    assert "dJ/dJ" not in names
    assert p.stats["rewrites"].get("fold", 0) >= 1 and p.stats["rewrites"].get("times_one", 0) + \
        p.stats["rewrites"].get("fold", 0) >= 2
    assert p.stats["removed_simplify"] > 0
    assert p.stats["nodes_out"] < p.stats["nodes_in"]


def test_prune_keeps_only_ancestors():
    g = gc.Graph("prune")
    x = g.input("x", shape=(3,))
    a = gc.sin(x, name="a")
    gc.cos(x, name="unused")
    p = gc.compile([a])
    assert [n.name for n in p.nodes] == ["x", "a"]
    assert p.stats["removed_prune"] == 1
    assert p.run({"x": np.zeros(3), "unused": np.ones(3)})[0].tolist() == [0, 0, 0]   # feeds of unread nodes ignored


# -- schedule and buffers -----------------------------------------------------------------------

def test_schedule_is_topological_and_frees_early():
    g, J, grads, (W1, W2), feeds = d2l_mlp(batch=64, d=32, h=64, c=10)
    outs = [J, grads[W1], grads[W2]]
    p = gc.compile(outs)
    p.run({"x": np.zeros((64, 32)), "y": np.zeros(64, dtype=np.int64)})
    seen = set()
    for s in p.schedule:
        for x in s.value.inputs:
            assert x.op.name in ("input", "parameter", "constant") or x in seen or \
                not s.value.op.reads_value(s.value.inputs.index(x))
        seen.add(s.value)
    declared = gc.compile(outs, optimize={"simplify", "buffers"})
    declared.run({"x": np.zeros((64, 32)), "y": np.zeros(64, dtype=np.int64)})
    assert p.stats["peak_bytes"] <= declared.stats["peak_bytes"]


def test_greedy_order_beats_declared_order():
    """Two big temporaries declared first but needed last: the schedule computes them late."""
    g = gc.Graph("order")
    x = g.input("x", shape=(1000,))
    big1, big2 = gc.exp(x), gc.sin(x)
    small = gc.sum(gc.cos(x))
    out = gc.sum(big1 * big2) + small
    fast = gc.compile([out])
    slow = gc.compile([out], optimize={"buffers"})
    assert fast.stats["peak_bytes"] <= slow.stats["peak_bytes"]
    agree([out], {"x": np.linspace(0, 1, 1000)})


def test_buffers_are_reused_and_written_in_place():
    outs, feeds = chain(n=20, size=100)
    p = gc.compile(outs)
    p.run(feeds)
    steps_with_buffers = sum(1 for s in p.schedule if s.buffer is not None)
    assert p.stats["buffers"] < steps_with_buffers / 3
    assert p.stats["inplace"] > 0
    assert all(p.buffer_of(s.node) == s.buffer for s in p.schedule)
    unplanned = gc.compile(outs, optimize={"simplify", "schedule"})
    unplanned.run(feeds)
    assert unplanned.stats["buffers"] == 0


def test_text_form_has_one_line_per_step_with_its_buffer():
    outs, feeds = chain(n=4, size=8)
    p = gc.compile(outs)
    lines = str(p).splitlines()
    assert len(lines) == 1 + len(p.schedule)
    assert any("buf " in line for line in lines[1:])
    assert "steps" in lines[0] and "peak" in lines[0]


def test_stats_keys():
    g, J, grads, (W1, W2), feeds = d2l_mlp(batch=7)
    p = gc.compile([J, grads[W1], grads[W2]])
    for key in ("nodes_in", "nodes_out", "buffers", "peak_bytes", "removed_prune", "removed_simplify",
                "removed_specialize", "recomputed"):
        assert key in p.stats
    assert p.stats["peak_bytes"] > 0


def test_kept_for_backward_names_forward_values():
    g, J, grads, (W1, W2), feeds = d2l_mlp()
    p = gc.compile([J, grads[W1], grads[W2]])
    kept = {n.name for n in p.kept_for_backward()}
    assert {"z", "h"} & kept
    assert all(not n.is_gradient for n in p.kept_for_backward())


# -- specialisation -----------------------------------------------------------------------------

def test_none_dims_and_cache(monkeypatch):
    g, J, grads, (W1, W2), feeds = d2l_mlp()
    p = gc.compile([J, grads[W1], grads[W2]])
    first = p.run(feeds)
    from graphcompiler.compiler import program as P

    def no_planning(*a, **k):
        raise AssertionError("planned again for shapes already seen")
    monkeypatch.setattr(P, "plan_buffers", no_planning)
    again = p.run(feeds)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    monkeypatch.undo()
    X2, Y2 = np.ones((3, 4)), np.array([0, 1, 2])
    other = p.run({"x": X2, "y": Y2})
    ref = gc.compile([J, grads[W1], grads[W2]], optimize=False).run({"x": X2, "y": Y2})
    for a, b in zip(other, ref):
        close(a, b, "float64")
    assert len(p._cache) == 2


def test_conflicting_none_dims_are_reported_before_running():
    g = gc.Graph("lineup")
    x = g.input("x", shape=(None, 4))
    b = g.input("b", shape=(None, 4))
    total = gc.sum(gc.tanh(x + b))
    grads = gc.build_grad(total, [b])
    p = gc.compile([total, grads[b]])
    with pytest.raises(gc.ShapeError, match=r"b .*\(1, 4\)"):
        p.run({"x": np.ones((5, 4)), "b": np.ones((1, 4))})
    out = p.run({"x": np.ones((5, 4)), "b": np.ones((5, 4))})       # the program is still usable
    assert out[1].shape == (5, 4)


def test_conflicting_matmul_sizes_are_a_shape_error():
    g = gc.Graph("mm")
    a = g.input("a", shape=(2, None))
    b = g.input("b", shape=(None, 3))
    p = gc.compile([gc.matmul(a, b, name="ab")])
    with pytest.raises(gc.ShapeError, match="ab"):
        p.run({"a": np.ones((2, 4)), "b": np.ones((5, 3))})


# -- the optimize argument ----------------------------------------------------------------------

def test_unknown_pass_is_an_error():
    g = gc.Graph("p")
    x = g.input("x", shape=(2,))
    with pytest.raises(gc.GraphCompilerError, match="unknown optimisation pass"):
        gc.compile([gc.sin(x)], optimize={"fuse"})
    assert set(PASSES) == {"simplify", "schedule", "buffers"}


def test_introspection_for_pictures():
    """What viz.to_dot reads: steps with node/op/buffer/recomputed, buffer_of, kept_for_backward, a mimebundle."""
    g, J, grads, (W1, W2), feeds = d2l_mlp()
    p = gc.compile([J, grads[W1], grads[W2]])
    before = p.schedule
    assert all(s.buffer is None for s in before)                  # None dims: no buffers before a run
    p.run(feeds)
    for s in p.schedule:
        assert isinstance(s.op, str) and s.recomputed is False
        assert s.buffer is None or isinstance(s.buffer, int)
        assert p.buffer_of(s.node) == s.buffer
    assert p.buffer_of(g["z"]) is not None
    assert p.buffer_of(W1) is None                                 # a parameter is not a program buffer
    user_nodes = [s.node for s in p.schedule if s.node in g]
    assert g["z"] in user_nodes and g["h"] in user_nodes
    bundle = p._repr_mimebundle_()
    assert "text/plain" in bundle and "steps" in bundle["text/plain"]
