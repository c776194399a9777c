"""build_grad's explicit marks: a bprop may answer ZERO (or None, its older spelling) for an input that adds
nothing and UNDEFINED for one with no derivative; graph.edge_mark is the one dtype rule for every edge."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import pytest

import graphcompiler as gc
from graphcompiler.graph import UNDEFINED, ZERO, Undefined, Zero, carries_gradient, edge_mark
from graphcompiler.ops.base import Op, apply


@dataclasses.dataclass(frozen=True)
class _Scaled(Op):
    """y = 3 a + 0 b for the test: the answer for b is given by `answer`, a's is the true derivative."""

    arity: ClassVar[int] = 2
    answer: str = "zero"

    def infer(self, a, b):
        return a.shape, a.dtype

    def kernel(self, a, b):
        return 3 * a

    def bprop(self, i, x, y, g):
        if i == 0:
            return gc.multiply(g, 3.0)
        return {"zero": ZERO, "none": None, "undefined": UNDEFINED}[self.answer]


_Scaled.name = "test_scaled"    # set after the class: a test op stays out of the OPS allowlist


def _graph(answer):
    g = gc.Graph()
    a = g.input("a", (3,))
    b = g.input("b", (3,))
    J = gc.sum(apply(_Scaled(answer), (a, b)), name="J")
    return g, a, b, J


@pytest.mark.parametrize("answer", ["zero", "none"])
def test_a_zero_answer_gives_zeros(answer):
    g, a, b, J = _graph(answer)
    grads = gc.build_grad(J, [a, b])
    da, db = gc.compile([grads[a], grads[b]]).run({"a": np.arange(3.0), "b": np.ones(3)})
    np.testing.assert_array_equal(da, np.full(3, 3.0))
    np.testing.assert_array_equal(db, np.zeros(3))
    assert grads[b].name == "dJ/db"


def test_an_undefined_answer_raises_only_when_needed():
    g, a, b, J = _graph("undefined")
    grads = gc.build_grad(J, [a])                       # b's derivative is not asked for: fine
    assert grads[a].name == "dJ/da"
    n = len(g)
    with pytest.raises(gc.UndefinedGradientError, match="test_scaled"):
        gc.build_grad(J, [b])
    assert len(g) == n                                  # a failed build_grad leaves the graph as it was


def test_the_marks():
    assert Zero() is ZERO and repr(ZERO) == "ZERO"
    assert UNDEFINED == Undefined() and UNDEFINED.edge is None
    g = gc.Graph()
    x = g.input("x", (2,))
    k = g.input("k", (2,), dtype="int64")
    y = gc.greater(x, 0)
    assert edge_mark(y.op, x, y, 0) is ZERO                          # a comparison adds nothing
    c = gc.astype(k, "float64")
    assert edge_mark(c.op, k, c, 0) == Undefined((c, 0))             # an integer input: undefined
    t = gc.tanh(x)
    assert edge_mark(t.op, x, t, 0) is None                          # the op's bprop decides
    assert carries_gradient(np.dtype("float32")) and not carries_gradient(np.dtype("int64"))
    assert not carries_gradient(np.dtype(bool))
