"""A run's time budget (Program.run(max_seconds=), budget.py): loops check it every iteration, the evaluator
between steps; a run past its budget stops with ExecutionError naming what it was executing and the budget,
applies no update, and leaves the program usable."""

from __future__ import annotations

import numpy as np
import pytest

import graphcompiler as gc


def endless_loop_graph():
    """A while_loop that runs while c > limit: fed limit=-1 it never ends (c grows), fed limit=5 it ends at once."""
    g = gc.Graph("endless")
    c0 = g.input("c0", ())
    limit = g.input("limit", ())
    out = gc.while_loop(lambda c: gc.greater(c, limit), lambda c: c + 1.0, c0, name="spin")
    return g, out


@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_an_endless_while_loop_stops_at_its_budget_and_the_program_stays_usable(backend):
    g, out = endless_loop_graph()
    prog = gc.compile([out], backend=backend)
    with pytest.raises(gc.ExecutionError, match=r"while_loop 'spin', at step \d+.*0\.2 s"):
        prog.run({"c0": 0.0, "limit": -1.0}, max_seconds=0.2)
    np.testing.assert_allclose(prog.run({"c0": 1.0, "limit": 5.0})[0], 1.0)   # usable afterwards
    np.testing.assert_allclose(prog.run({"c0": 1.0, "limit": 5.0}, max_seconds=30)[0], 1.0)


def test_a_long_scan_stops_at_its_budget_and_applies_no_update():
    g = gc.Graph("long")
    W = g.parameter("W", np.ones(3))
    h_T, _ = gc.scan(lambda h, _: (gc.tanh(h * W), None), W, length=10**8, name="slow")
    prog = gc.compile([gc.sum(h_T)], updates={W: W + h_T})
    with pytest.raises(gc.ExecutionError, match=r"scan 'slow', at step \d+ of 100000000.*max_seconds=0\.2"):
        prog.run(max_seconds=0.2)
    np.testing.assert_array_equal(g.value(W), np.ones(3))                  # no update half-applied


def test_the_evaluator_checks_the_budget_between_steps():
    g = gc.Graph("chain")
    x = g.input("x", (2,))
    y = x
    for k in range(600):
        y = gc.sin(y, name=f"s{k}")
    prog = gc.compile([y], optimize=False, backend="numpy")  # C runs a straight-line program in one call
    with pytest.raises(gc.ExecutionError, match=r"after computing s\d+ = sin.*time budget"):
        prog.run({"x": np.ones(2)}, max_seconds=1e-9)
    np.testing.assert_allclose(prog.run({"x": np.ones(2)})[0], prog.run({"x": np.ones(2)}, max_seconds=60)[0])


def test_max_seconds_is_checked():
    g, out = endless_loop_graph()
    prog = gc.compile([out])
    for bad in (0, -1, float("nan"), "1", True):
        with pytest.raises(gc.GraphCompilerError, match="max_seconds must be a positive number of seconds"):
            prog.run({"c0": 1.0, "limit": 5.0}, max_seconds=bad)
