"""The evaluator and Program.run: feeds checked, errors name the step, outputs are the caller's, updates
apply after the outputs from the same run's values, nan_check stops at the first bad step."""

from __future__ import annotations

import numpy as np
import pytest

import graphcompiler as gc
from graphcompiler.backends.numpy import CODEGEN_LIMIT


def small():
    g = gc.Graph("small")
    x = g.input("x", shape=(None, 3))
    W = g.parameter("W", np.arange(6.0).reshape(3, 2))
    z = gc.matmul(x, W, name="z")
    return g, x, W, z


def test_feed_errors_name_the_input_and_shapes():
    g, x, W, z = small()
    p = gc.compile([gc.tanh(z)])
    with pytest.raises(gc.FeedError, match="'x'"):
        p.run({})
    with pytest.raises(gc.FeedError, match=r"did you mean 'x'"):
        p.run({"xx": np.ones((2, 3))})
    with pytest.raises(gc.FeedError, match=r"\(None, 3\).*\(2, 4\)"):
        p.run({"x": np.ones((2, 4))})
    with pytest.raises(gc.FeedError, match="dtype"):
        p.run({"x": np.ones((2, 3), dtype=np.complex128)})
    assert p.run({x: np.ones((2, 3))})[0].shape == (2, 2)          # feeds by node
    assert p(x=np.ones((1, 3)))[0].shape == (1, 2)                  # __call__


def test_kernel_failure_names_the_step_and_program_stays_usable():
    g = gc.Graph("ce")
    o = g.input("o", shape=(None, 3))
    y = g.input("y", shape=(None,), dtype="int64")
    L = gc.softmax_cross_entropy(o, y, name="L")
    p = gc.compile([L])
    with pytest.raises(gc.ExecutionError, match=r"while computing L.*out of range"):
        p.run({"o": np.zeros((2, 3)), "y": np.array([0, 7])})
    assert np.isclose(p.run({"o": np.zeros((2, 3)), "y": np.array([0, 2])})[0], np.log(3))


def test_outputs_belong_to_the_caller():
    g, x, W, z = small()
    h = gc.tanh(z, name="h")
    p = gc.compile([h, z, gc.transpose(h)])
    first = p.run({"x": np.ones((2, 3))})
    kept = [a.copy() for a in first]
    p.run({"x": -np.ones((2, 3))})
    for a, b in zip(first, kept):
        np.testing.assert_array_equal(a, b)
    first[0][...] = 99                                              # writing into a result changes nothing
    again = p.run({"x": np.ones((2, 3))})
    np.testing.assert_array_equal(again[0], kept[0])


def test_parameter_and_duplicate_outputs_are_copies():
    g, x, W, z = small()
    p = gc.compile([W, z, z])
    w, a, b = p.run({"x": np.ones((1, 3))})
    w[...] = 0
    assert g.value(W).sum() == 15
    assert a is not b


def test_updates_use_the_same_runs_values_in_place():
    g = gc.Graph("swap")
    A = g.parameter("A", np.array([1.0, 2.0]))
    B = g.parameter("B", np.array([3.0, 4.0]))
    stored_A = g.stored_value(A)
    total = gc.sum(A * B, name="total")
    p = gc.compile([total], updates={A: B, B: A + B})
    (t,) = p.run({})
    assert t == 11.0                                               # outputs from the values before the update
    np.testing.assert_array_equal(g.value(A), [3.0, 4.0])
    np.testing.assert_array_equal(g.value(B), [4.0, 6.0])          # A + B with the old A
    assert g.stored_value(A) is stored_A                                # in place


def test_sgd_updates_train():
    rng = np.random.default_rng(0)
    g = gc.Graph("sgd")
    x = g.input("x", shape=(None, 3))
    t = g.input("t", shape=(None,))
    w = g.parameter("w", np.zeros(3))
    L = gc.mse(gc.matmul(x, w), t, name="L")
    grads = gc.build_grad(L, [w])
    train = gc.compile([L], updates={w: w - 0.1 * grads[w]})
    X = rng.standard_normal((50, 3))
    T = X @ np.array([1.0, -2.0, 0.5])
    losses = [train.run({"x": X, "t": T})[0] for _ in range(200)]
    assert losses[-1] < 1e-3 * losses[0]
    np.testing.assert_allclose(g.value(w), [1.0, -2.0, 0.5], atol=1e-2)


def test_update_errors():
    g, x, W, z = small()
    with pytest.raises(gc.GraphCompilerError, match="only replace parameters"):
        gc.compile([z], updates={x: x})
    with pytest.raises(gc.ShapeError, match="W"):
        gc.compile([z], updates={W: gc.transpose(W)})


def test_nan_check_names_the_first_bad_step():
    g = gc.Graph("nan")
    x = g.input("x", shape=(3,))
    bad = gc.log(x, name="bad")
    out = gc.exp(bad, name="later")
    p = gc.compile([out], nan_check=True)
    with pytest.raises(gc.NumericsError, match=r"bad = log\(x\).*NaN.*x in \[-1"):
        p.run({"x": np.array([-1.0, 1.0, 2.0])})
    assert np.allclose(p.run({"x": np.array([1.0, 2.0, 3.0])})[0], [1.0, 2.0, 3.0])
    quiet = gc.compile([out])
    with np.errstate(invalid="ignore"):
        assert np.isnan(quiet.run({"x": np.array([-1.0, 1.0, 2.0])})[0][0])


def test_nan_check_in_the_loop_evaluator():
    g = gc.Graph("long")
    x = g.input("x", shape=(2,))
    z = x
    for k in range(CODEGEN_LIMIT + 10):
        z = gc.sin(z)
    out = gc.log(z - 10.0, name="neg_log")
    p = gc.compile([out], nan_check=True)
    with pytest.raises(gc.NumericsError, match="neg_log"):
        p.run({"x": np.zeros(2)})


def test_evaluator_is_separate_and_reused():
    g, x, W, z = small()
    p = gc.compile([gc.tanh(z)])
    p.run({"x": np.ones((2, 3))})
    ev = p._last.evaluator
    assert isinstance(ev, gc.NumpyEvaluator)
    p.run({"x": np.ones((2, 3))})
    assert p._last.evaluator is ev


def test_old_execute_interface_still_runs():
    g, x, W, z = small()
    ev = gc.NumpyEvaluator()
    values = [np.ones((2, 3)), g.value(W), None]
    ev.execute([(z, z.op.kernel, [0, 1], 2)], values)
    np.testing.assert_array_equal(values[2], np.ones((2, 3)) @ g.value(W))


# -- the fast path: a run fed like the last one skips the feed checks, with the same results and errors --


def fast_net():
    rng = np.random.default_rng(0)
    g = gc.Graph("fast")
    x = g.input("x", shape=(None, 3))
    y = g.input("y", shape=(None,), dtype="int64")
    W = g.parameter("W", rng.standard_normal((3, 4)))
    J = gc.softmax_cross_entropy(gc.matmul(gc.tanh(x), W), y, name="J")
    return g, x, y, W, J, gc.build_grad(J, [W])[W]


def by_hand(X, Y, W):
    """J and dJ/dW of fast_net in NumPy."""
    h = np.tanh(X)
    o = h @ W
    logp = o - o.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    n = len(Y)
    p = np.exp(logp)
    p[np.arange(n), Y] -= 1
    return -logp[np.arange(n), Y].mean(), h.T @ p / n


def test_a_run_fed_like_the_last_skips_the_feed_checks(monkeypatch):
    g, x, y, W, J, dW = fast_net()
    p = gc.compile([J, dW])
    X, Y = np.ones((5, 3)), np.arange(5) % 4
    first = p.run({"x": X, "y": Y})
    checked = []
    check = p._check_feeds
    monkeypatch.setattr(p, "_check_feeds", lambda feeds: checked.append(1) or check(feeds))
    again = p.run({"x": X, "y": Y})
    assert checked == []  # the fast path: no feed conversion, signature or cache look-up
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    p.run({"x": X.astype(np.float32), "y": Y})  # a value that needs a cast: checked again
    assert checked == [1]


def test_the_fast_path_gives_the_slow_paths_results_and_errors():
    g, x, y, W, J, dW = fast_net()
    p = gc.compile([J, dW])
    rng = np.random.default_rng(2)
    for n in (5, 5, 7, 5, 5, 2, 2, 7):  # alternate signatures; repeats take the fast path
        X, Y = rng.standard_normal((n, 3)), rng.integers(0, 4, n)
        j, d = p.run({x: X, "y": Y})
        rj, rd = by_hand(X, Y, g.value(W))
        np.testing.assert_allclose(j, rj, rtol=1e-12)
        np.testing.assert_allclose(d, rd, rtol=1e-12, atol=1e-15)
        assert isinstance(j, np.ndarray) and j.shape == ()  # a 0-d output is an array on both paths
        X[...] = 0.0  # the caller owns the results; the feeds are read afresh by the next run
        assert d is not p.run({x: X, "y": Y})[1]
    X, Y = np.ones((5, 3)), np.arange(5) % 4
    good = p.run({"x": X, "y": Y})
    good = p.run({"x": X, "y": Y})
    with pytest.raises(gc.FeedError, match=r"\(None, 3\).*\(5, 4\)"):  # same keys, another shape
        p.run({"x": np.ones((5, 4)), "y": Y})
    with pytest.raises(gc.FeedError, match="'y'"):  # a key missing
        p.run({"x": X})
    with pytest.raises(gc.FeedError, match=r"did you mean 'x'"):  # a key unknown
        p.run({"x": X, "xx": X})
    with pytest.raises(gc.ExecutionError, match="out of range"):  # a kernel fails on the fast path
        p.run({"x": X, "y": Y + 4})
    with pytest.raises(gc.ExecutionError, match="out of range"):
        p.run({"x": X, "y": Y + 4})
    after = p.run({"x": X, "y": Y})  # a good run after failed ones
    for a, b in zip(good, after):
        np.testing.assert_array_equal(a, b)
    g.set_value(W, np.zeros((3, 4)))  # a new stored value (a new array) is read by the next run
    np.testing.assert_allclose(p.run({"x": X, "y": Y})[0], np.log(4.0))
    np.testing.assert_allclose(p.run({"x": X, "y": Y, "W": np.ones((3, 4))})[0], np.log(4.0))  # W fed
    np.testing.assert_allclose(p.run({"x": X, "y": Y, "W": np.ones((3, 4))})[0], np.log(4.0))
    np.testing.assert_allclose(p.run({"x": X, "y": Y})[0], np.log(4.0))


def test_the_fast_path_applies_each_update_once_in_place():
    g = gc.Graph("count")
    x = g.input("x", shape=(2,))
    c = g.parameter("c", np.zeros(2))
    stored = g.stored_value(c)
    p = gc.compile([gc.sum(c)], updates={c: c + x})
    X = np.array([1.0, 2.0])
    seen = [float(p.run({"x": X})[0]) for _ in range(5)]
    assert seen == [0.0, 3.0, 6.0, 9.0, 12.0]
    np.testing.assert_array_equal(g.value(c), [5.0, 10.0])
    assert g.stored_value(c) is stored
