"""Reductions: sum, mean, max over axes, with keepdims; their derivatives broadcast g back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import Op, apply, normalize_axes, undefined_to_sympy
from . import elementwise as E
from . import shape as S


@dataclass(frozen=True)
class Reduction(Op):
    arity: ClassVar[int] = 1
    axis: tuple = ()
    keepdims: bool = False

    def infer(self, x):
        if self.keepdims:
            shape = tuple(1 if k in self.axis else d for k, d in enumerate(x.shape))
        else:
            shape = tuple(d for k, d in enumerate(x.shape) if k not in self.axis)
        return shape, self.out_dtype(x.dtype)

    def out_dtype(self, dtype):
        return dtype

    def keep(self, g):
        """g with the reduced axes put back as size 1 (the keepdims form)."""
        return g if self.keepdims or not self.axis else S.expand_dims(g, self.axis)


@dataclass(frozen=True)
class Sum(Reduction):
    name: ClassVar[str] = "sum"
    sympy_any_rank: ClassVar[bool] = True

    def out_dtype(self, dtype):
        return np.sum(np.zeros(1, dtype)).dtype  # NumPy's accumulator: bool and small ints -> int64

    def kernel(self, x):
        return np.sum(x, axis=self.axis, keepdims=self.keepdims)

    def can_write_out(self, dtype):
        return np.dtype(dtype).kind == "f"  # np.add.reduce(..., out=) of a float sum

    def fast_kernel(self, writes, shape, in_shape, dtype):
        if writes:
            return np.add.reduce, (), {"axis": tuple(self.axis), "keepdims": self.keepdims}
        return self.kernel, (), {}

    def bprop(self, i, x, y, g):
        return S.broadcast_to_node(self.keep(g), x[0])  # d sum(a) = 1 for every element

    def to_sympy(self, node, x):
        from ..symbolic_terms import reduce_sum

        return reduce_sum(node, x, self.axis, self.keepdims)  # 1^T X 1, tr(A^T B)


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


def _reduce(cls, x, axis, keepdims, name):
    axes = normalize_axes(axis, x.ndim, cls.name, x)
    return apply(cls(axes, bool(keepdims)), (x,), name)


def sum(x, axis=None, keepdims: bool = False, name: str | None = None):
    return _reduce(Sum, x, axis, keepdims, name)


def mean(x, axis=None, keepdims: bool = False, name: str | None = None):
    return _reduce(Mean, x, axis, keepdims, name)


def max(x, axis=None, keepdims: bool = False, name: str | None = None):
    return _reduce(Max, x, axis, keepdims, name)
