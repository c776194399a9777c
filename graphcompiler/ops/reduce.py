"""Reductions: sum, mean, max over axes, with keepdims; their derivatives broadcast g back.

The Reduction base class and the Sum op are defined in shape.py, beside broadcast_to: broadcasting's
derivative sums (sum_to) and sum's derivative broadcasts, so the two sit in one module below the arithmetic.
mean and max, whose derivatives divide and compare, are defined here above elementwise.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import undefined_to_sympy
from . import elementwise as E
from . import shape as S
from .shape import Reduction, Sum, reduction


@dataclass(frozen=True)
class Mean(Reduction):
    name: ClassVar[str] = "mean"
    sympy_any_rank: ClassVar[bool] = True

    def out_dtype(self, dtype):
        return dtype if dtype.kind == "f" else np.dtype("float64")

    def kernel(self, x):
        return np.mean(x, axis=self.axis, keepdims=self.keepdims)

    def bprop(self, i, x, y, g):  # d mean(a) = 1/n for every element
        n = S.count(x[0], self.axis, g.dtype)
        return S.broadcast_to_node(E.divide(self.keep(g), n), x[0])

    def to_sympy(self, node, x):
        from ..symbolic_terms import count, elementwise, reduce_sum

        total = reduce_sum(node, x, self.axis, self.keepdims)
        return elementwise(node, lambda s, k: s / k, total, count(node, node.inputs[0], self.axis))  # sum / count


@dataclass(frozen=True)
class Max(Reduction):
    name: ClassVar[str] = "max"

    def kernel(self, x):
        return np.max(x, axis=self.axis, keepdims=self.keepdims)

    def bprop(self, i, x, y, g):
        # the gradient goes to the maxima, shared equally among ties (as TensorFlow and PyTensor do)
        a = x[0]
        hit = E.astype(E.equal(a, S.broadcast_to_node(self.keep(y), a)), g.dtype)
        ties = sum(hit, axis=self.axis, keepdims=True)
        return E.multiply(hit, E.divide(self.keep(g), ties))

    to_sympy = undefined_to_sympy


def sum(x, axis=None, keepdims: bool = False, name: str | None = None):
    return reduction(Sum, x, axis, keepdims, name)


def mean(x, axis=None, keepdims: bool = False, name: str | None = None):
    return reduction(Mean, x, axis, keepdims, name)


def max(x, axis=None, keepdims: bool = False, name: str | None = None):
    return reduction(Max, x, axis, keepdims, name)
