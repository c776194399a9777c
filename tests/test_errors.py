"""Every way a user can go wrong gets an error of API section 6 whose message names the nodes, ops and shapes
involved and says what to do; a rejected op leaves the graph as it was and a failed run leaves the program
usable (issue 7)."""

from __future__ import annotations

import re

import numpy as np
import pytest

import graphcompiler as gc
from conftest import build_mlp


def raises(cls, *fragments):
    """pytest.raises(cls) that also checks each fragment appears in the message."""
    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(cls)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            swallow = self.ctx.__exit__(*exc)
            msg = str(self.info.value)
            for f in fragments:
                assert f in msg, f"{f!r} not in message {msg!r}"
            return swallow
    return _Check()


@pytest.fixture
def mlp(rng):
    """The graph of API section 1 up to the loss (W2 left without a value)."""
    g, n = build_mlp(rng=rng, W2_value=False, regularize=False)
    return g, n["x"], n["y"], n["W1"], n["W2"], n["z"], n["h"], n["o"], n["L"]


def test_every_error_class_is_a_graph_compiler_error():
    for cls in (gc.ShapeError, gc.DTypeError, gc.FeedError, gc.UndefinedGradientError, gc.NumericsError,
                gc.DisconnectedInputError, gc.GraphFileError, gc.ExecutionError, gc.DuplicateNameError,
                gc.GraphMismatchError):
        assert issubclass(cls, gc.GraphCompilerError)
    assert issubclass(gc.ShapeError, ValueError) and issubclass(gc.DTypeError, TypeError)


# -- while the graph is declared ------------------------------------------------------------

def test_broadcast_mismatch_names_both_operands(mlp):
    g, x, y, W1, W2, z, *_ = mlp
    b = g.parameter("b", np.zeros(5))
    with raises(gc.ShapeError, "add 'zb'", "(None, 3)", "(5,)", "do not broadcast", "z (matmul, shape (None, 3)",
                "b (parameter, shape (5,)", "equal or 1"):
        gc.add(z, b, name="zb")


def test_matmul_mismatch_names_shapes_and_says_what_to_do(mlp):
    g, x, y, W1, W2, z, *_ = mlp
    with raises(gc.ShapeError, "matmul 'bad'", "3 and 4", "(None, 3)", "(4, 3)", "z (matmul", "W1 (parameter",
                "transpose"):
        gc.matmul(z, W1, name="bad")


def test_other_shape_errors(mlp):
    g, x, y, W1, W2, z, *_ = mlp
    with raises(gc.ShapeError, "reshape", "(4, 3)", "12 elements", "(5, 2)", "W1 (parameter"):
        gc.reshape(W1, (5, 2))
    with raises(gc.ShapeError, "softmax of 'x'", "(None, 4)", "axis 3", "rank 2", "from -2 to 1"):
        gc.softmax(x, axis=3)
    with raises(gc.ShapeError, "sum of 'W1'", "(4, 3)", "axis 2"):
        gc.sum(W1, axis=2)
    with raises(gc.ShapeError, "transpose", "not a permutation", "'x'"):
        gc.transpose(x, (0, 0))
    with raises(gc.ShapeError, "indexing 'x'", "too many indices (3)", "rank 2"):
        x[0, 0, 0]
    with raises(gc.ShapeError, "parameter 'W1'", "(4, 3)", "(3, 3)"):
        g.set_value(W1, np.ones((3, 3)))
    with raises(gc.ShapeError, "input 'bad'", "-1", "non-negative int or None"):
        g.input("bad", shape=(None, -1))
    with raises(gc.ShapeError, "parameter 'p'", "give a value or a shape"):
        g.parameter("p")


def test_dtype_errors_say_what_to_do(mlp):
    g, x, y, W1, W2, z, h, o, L = mlp
    yf = g.input("yf", shape=(None,))
    with raises(gc.DTypeError, "softmax_cross_entropy 'L2'", "integer class labels", "float64", "'yf'",
                "dtype='int64'", "yf (input, shape (None,), float64)"):
        gc.softmax_cross_entropy(o, yf, name="L2")
    with raises(gc.DTypeError, "log", "floating input", "int64", "'y'", "gc.astype"):
        gc.log(y)
    with raises(gc.DTypeError, "where", "condition must be bool", "'x'", "gc.greater"):
        gc.where(x, x, x)
    with raises(gc.DTypeError, "input 'c'", "complex128", "not supported"):
        g.input("c", shape=(2,), dtype="complex128")
    with raises(gc.DTypeError, "astype", "'float99' is not a dtype"):
        gc.astype(x, "float99")
    with raises(gc.DTypeError, "cannot use str 'abc'"):
        x + "abc"
    with raises(gc.DTypeError, "parameter 'W1'", "float64", "complex128", "losing its kind"):
        g.set_value(W1, np.ones((4, 3), dtype=complex))


def test_mixing_graphs_names_both_graphs_and_nodes(mlp):
    g, x, *_ = mlp
    other = gc.Graph("other")
    a = other.input("a", shape=(4,))
    with raises(gc.GraphMismatchError, "'x' (input, shape (None, 4))", "'mlp'", "'a' (input, shape (4,))", "'other'",
                "same gc.Graph"):
        x + a
    with raises(gc.GraphMismatchError, "'sa'", "'other'", "'mlp'"):
        gc.compile([g["L"], gc.sum(a, name="sa")])
    with raises(gc.GraphMismatchError, "target 'a'", "'other'", "'L'"):
        gc.build_grad(g["L"], [a])


def test_duplicate_names_name_the_existing_node(mlp):
    g, x, y, W1, *_ = mlp
    with raises(gc.DuplicateNameError, "'mlp'", "already has a node named 'z'", "matmul", "(None, 3)",
                "another name"):
        gc.relu(x, name="z")
    with raises(gc.DuplicateNameError, "'x'", "input"):
        g.input("x", shape=(3,))


def test_a_rejected_op_leaves_the_graph_as_it_was(mlp):
    g, x, y, W1, W2, z, *_ = mlp
    before = [n.name for n in g.nodes]
    consumers = {n.name: len(g.consumers(n)) for n in g.nodes}
    for bad in (lambda: z + np.ones(7),                       # the constant must not be added
                lambda: gc.matmul(z, W1, name="m"),
                lambda: gc.relu(x, name="z"),
                lambda: gc.softmax_cross_entropy(z, x),
                lambda: gc.multiply(x, 3.0, name="W1")):
        with pytest.raises(gc.GraphCompilerError):
            bad()
        assert [n.name for n in g.nodes] == before
        assert {n.name: len(g.consumers(n)) for n in g.nodes} == consumers


# -- build_grad -----------------------------------------------------------------------------

def test_non_scalar_cost_without_seed(mlp):
    g, x, y, W1, W2, z, *_ = mlp
    with raises(gc.ShapeError, "scalar cost", "'z'", "matmul", "(None, 3)", "gc.sum", "seed="):
        gc.build_grad(z, [W1])
    seed = g.input("seed", shape=(None, 2))
    with raises(gc.ShapeError, "seed has shape (None, 2)", "'z'", "(None, 3)"):
        gc.build_grad(z, [W1], seed=seed)


def test_disconnected_target(mlp):
    g, x, y, W1, W2, z, *_ = mlp
    s = gc.sum(z, name="s")
    n = len(g)
    with raises(gc.DisconnectedInputError, "s (sum, shape ())", "does not depend on W2", "(3, 2)",
                "disconnected='zero'"):
        gc.build_grad(s, [W1, W2])
    assert len(g) == n                                       # a failed build_grad adds nothing
    grads = gc.build_grad(s, [W1, W2], disconnected="zero")
    assert grads[W2].shape == (3, 2)


def test_undefined_gradient_names_op_node_and_path(mlp):
    g, x, y, W1, W2, z, *_ = mlp
    rounded = gc.astype(gc.astype(z, "int64", name="zi"), "float64", name="zf")
    cost = gc.sum(rounded * 2.0, name="cost")
    n = len(g)
    with raises(gc.UndefinedGradientError, "'cost'", "'W1'", "astype 'zf'", "'zi'", "int64",
                "W1 (parameter, float64) -> z (matmul, float64) -> zi (astype, int64) -> zf", "gc.stop_gradient"):
        gc.build_grad(cost, [W1])
    assert len(g) == n
    with raises(gc.UndefinedGradientError, "'y'", "int64", "undefined"):
        gc.build_grad(g["L"], [y])


# -- running --------------------------------------------------------------------------------

@pytest.fixture
def feeds(rng):
    return {"x": rng.standard_normal((5, 4)), "y": np.array([0, 1, 1, 0, 1])}


def test_missing_feed(mlp, feeds):
    g, x, y, W1, W2, z, h, o, L = mlp
    p = gc.compile([gc.sum(z, name="s")])
    with raises(gc.FeedError, "input 'x'", "(None, 4)", "not fed", "run({'x'"):
        p.run({})
    with raises(gc.FeedError, "'W2'", "(3, 2)", "no stored value", "set_value"):
        gc.compile([L]).run(feeds)


def test_unknown_feed_name_suggests_the_closest_input(mlp, feeds):
    g, *_ = mlp
    p = gc.compile([g["z"]])
    with raises(gc.FeedError, "'X'", "did you mean 'x'"):
        p.run({"X": feeds["x"]})
    with raises(gc.FeedError, "'W_1'", "'W1'"):
        p.run({"x": feeds["x"], "W_1": np.ones((4, 3))})


def test_feed_of_wrong_shape_rank_or_dtype_names_the_input_and_both_shapes(mlp, feeds):
    g, x, y, W1, W2, z, h, o, L = mlp
    g.set_value(W2, np.ones((3, 2)))
    p = gc.compile([L])
    with raises(gc.FeedError, "'x'", "(None, 4)", "(5, 3)"):
        p.run({**feeds, "x": np.ones((5, 3))})
    with raises(gc.FeedError, "'x'", "(None, 4)", "(5, 4, 1)"):
        p.run({**feeds, "x": np.ones((5, 4, 1))})
    with raises(gc.FeedError, "'y'", "int64", "float64"):
        p.run({**feeds, "y": feeds["y"] + 0.5})
    with raises(gc.FeedError, "'W1'", "parameter", "(4, 3)", "(3, 3)"):
        p.run({**feeds, "W1": np.ones((3, 3))})
    with raises(gc.FeedError, "'x'", "numeric array"):
        p.run({**feeds, "x": [["a"] * 4] * 5})
    other = gc.Graph("other").input("x", shape=(None, 4))
    with raises(gc.FeedError, "'x'", "'other'"):
        p.run({other: feeds["x"], "y": feeds["y"]})


def test_run_time_shape_conflicts_name_the_step(rng):
    g = gc.Graph("dyn")
    xx = g.input("x", shape=(None, None))
    W = g.input("W1", shape=(None, 3))
    gc.matmul(xx, W, name="z")
    p = gc.compile([g["z"]])
    with raises(gc.GraphCompilerError, "z = matmul(x, W1)", "(2, 4)", "(5, 3)"):
        p.run({"x": np.ones((2, 4)), "W1": np.ones((5, 3))})
    out = p.run({"x": np.ones((2, 5)), "W1": np.ones((5, 3))})         # the program is still usable
    np.testing.assert_allclose(out[0], np.full((2, 3), 5.0))


@pytest.mark.parametrize("optimize", [False, True])
def test_kernel_failure_names_the_users_step(mlp, feeds, optimize):
    g, x, y, W1, W2, z, h, o, L = mlp
    g.set_value(W2, np.ones((3, 2)))
    p = gc.compile([L], optimize=optimize)
    with raises(gc.ExecutionError, "while computing L = softmax_cross_entropy(o, y)", "label 7", "2 classes"):
        p.run({**feeds, "y": np.array([0, 1, 7, 0, 1])})


def test_a_failed_run_leaves_the_program_and_parameters_usable(mlp, feeds, rng):
    g, x, y, W1, W2, z, h, o, L = mlp
    g.set_value(W2, rng.standard_normal((3, 2)))
    grads = gc.build_grad(L, [W1, W2])
    train = gc.compile([L], updates={W1: W1 - 0.1 * grads[W1], W2: W2 - 0.1 * grads[W2]})
    fresh = gc.compile([L, grads[W1]])
    expected = fresh.run(feeds)
    w1 = g.value(W1).copy()
    bad = [{**feeds, "y": np.array([0, 1, 9, 0, 1])}, {**feeds, "x": np.ones((5, 2))}, {"y": feeds["y"]}]
    for b in bad:
        with pytest.raises(gc.GraphCompilerError):
            train.run(b)
        np.testing.assert_array_equal(g.value(W1), w1)      # no half-applied update
        with pytest.raises(gc.GraphCompilerError):
            fresh.run(b)
        got = fresh.run(feeds)
        for a, e in zip(got, expected):
            np.testing.assert_allclose(a, e, rtol=1e-12)
    (loss,) = train.run(feeds)
    np.testing.assert_allclose(loss, expected[0], rtol=1e-12)
    assert not np.allclose(g.value(W1), w1)


# -- nan_check ------------------------------------------------------------------------------

def test_nan_check_names_node_op_and_input_ranges(mlp):
    g, x, *_ = mlp
    lx = gc.log(x, name="lx")
    s = gc.sum(lx, name="s")
    bad = -np.abs(np.arange(8.0).reshape(2, 4)) - 1.0
    p = gc.compile([s], nan_check=True)
    with raises(gc.NumericsError, "lx = log(x)", "log", "NaN", "x in [-8, -1]"), np.errstate(invalid="ignore"):
        p.run({"x": bad})
    (ok,) = p.run({"x": np.ones((2, 4))})                   # still usable
    assert ok == 0.0
    with np.errstate(invalid="ignore"):
        (quiet,) = gc.compile([s]).run({"x": bad})            # without nan_check the NaN comes back
    assert np.isnan(quiet)


def test_nan_check_reports_infinity_at_the_first_step(mlp):
    g, x, *_ = mlp
    e = gc.exp(x, name="e")
    r = gc.divide(1.0, e, name="r")
    p = gc.compile([gc.sum(r, name="s")], nan_check=True, optimize=False)
    with raises(gc.NumericsError, "e = exp(x)", "infinity", "x in [1000, 1000]"), np.errstate(over="ignore"):
        p.run({"x": np.full((1, 4), 1000.0)})


def test_nan_check_reports_the_ranges_of_intermediate_inputs(mlp):
    g, x, y, W1, *_ = mlp
    g.set_value(W1, np.ones((4, 3)))
    h = gc.log(g["z"], name="hl")
    p = gc.compile([gc.sum(h, name="s")], nan_check=True)
    with raises(gc.NumericsError, "hl = log(z)", "NaN", "z in [-4, -4]"), np.errstate(invalid="ignore"):
        p.run({"x": -np.ones((2, 4))})


# -- memory budget --------------------------------------------------------------------------

def test_a_budget_that_cannot_be_met_names_the_smallest_that_can(rng):
    g = gc.Graph("chain")
    x = g.input("x", shape=(64, 64))
    h = x
    for k in range(6):
        h = gc.tanh(h @ h, name=f"h{k}")
    cost = gc.sum(h, name="cost")
    with pytest.raises(gc.GraphCompilerError) as info:
        gc.compile([cost], memory_budget=1).run({"x": rng.standard_normal((64, 64)) * 0.01})
    msg = str(info.value)
    found = re.search(r"(\d[\d,_]*) bytes", msg)
    assert found and "budget" in msg, msg
    smallest = int(re.sub(r"[,_]", "", found.group(1)))
    p = gc.compile([cost], memory_budget=smallest)
    p.run({"x": rng.standard_normal((64, 64)) * 0.01})
    assert p.stats["peak_bytes"] <= smallest


def test_compile_argument_errors_name_the_nodes(mlp):
    g, x, y, W1, W2, z, *_ = mlp
    with raises(gc.GraphCompilerError, "at least one output"):
        gc.compile([])
    with raises(gc.GraphCompilerError, "graph nodes", "'z'"):
        gc.compile(["z"])
    with raises(gc.GraphCompilerError, "only", "parameters", "'x'", "input"):
        gc.compile([z], updates={x: x})
    with raises(gc.ShapeError, "'W1'", "(4, 3)", "()", "'s'", "sum"):
        gc.compile([z], updates={W1: gc.sum(z, name="s")})
    with raises(gc.GraphCompilerError, "memory_budget", "-5"):
        gc.compile([z], memory_budget=-5)


def test_a_node_is_not_a_python_bool(mlp):
    g, x, *_ = mlp
    with raises(gc.GraphCompilerError, "'x'", "input", "(None, 4)", "gc.where"):
        if x:
            pass
    with raises(gc.GraphCompilerError, "'greater_1'", "greater", "(None, 4)", "gc.where"):
        if x > 0:
            pass
