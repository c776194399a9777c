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
