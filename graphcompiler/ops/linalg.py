"""matmul with NumPy's rules (1-D operands, stacks of matrices), and its two bprop rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import math

import numpy as np

from ..errors import DTypeError, ShapeError, fmt_shape
from ..graph import Node
from .base import Op, apply, broadcast_shapes, install
from . import elementwise as E
from . import reduce as R
from . import shape as S


@dataclass(frozen=True)
class Matmul(Op):
    name: ClassVar[str] = "matmul"
    arity: ClassVar[int] = 2
    writes_out: ClassVar[bool] = True

    def infer(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ShapeError("matmul needs operands of rank 1 or more; use multiply for a scalar")
        if a.dtype == bool or b.dtype == bool:
            raise DTypeError(
                f"matmul of bool operands ({a.name!r}: {a.dtype}, {b.name!r}: {b.dtype}); cast them with gc.astype"
            )
        ka = a.shape[-1]
        kb = b.shape[-2] if b.ndim > 1 else b.shape[0]
        if ka is not None and kb is not None and ka != kb:
            raise ShapeError(
                f"dimensions must be equal, but are {ka} and {kb} (the last of "
                f"{fmt_shape(a.shape)} and the {'second-to-last' if b.ndim > 1 else 'only'} "
                f"of {fmt_shape(b.shape)}); check the operands' order and shapes, or transpose "
                "one of them (gc.transpose or .T)"
            )
        batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
        rows = (a.shape[-2],) if a.ndim > 1 else ()
        cols = (b.shape[-1],) if b.ndim > 1 else ()
        return batch + rows + cols, np.result_type(a.dtype, b.dtype)

    def kernel(self, a, b, out=None):
        return np.matmul(a, b, out=out)

    def fast_kernel(self, writes, shape, in_shape, dtype):
        return np.matmul, (), {}

    def flops(self, node):
        a = node.inputs[0]
        k = a.shape[-1] if a.ndim else 1
        return 2 * math.prod(node.shape or (1,)) * k  # 2mkn

    def bprop(self, i, x, y, g):
        a, b = x
        if a.ndim == 1 and b.ndim == 1:  # a.b: da = g b, db = g a
            return E.multiply(g, b if i == 0 else a)
        if i == 0:
            if b.ndim == 1:  # (..., n, k) @ (k,): da = g b^T
                return S.sum_to(E.multiply(S.expand_dims(g, -1), b), a)
            if a.ndim == 1:  # (k,) @ (..., k, m): da = sum b g
                if b.ndim == 2:
                    return matmul(b, g)
                t = S.squeeze(matmul(b, S.expand_dims(g, -1)), -1)
                return R.sum(t, axis=tuple(range(t.ndim - 1)))
            return S.sum_to(matmul(g, S.swapaxes_last(b)), a)  # dA = G B^T (equation 6.54's example)
        if a.ndim == 1:  # (k,) @ (..., k, m): db = a g^T
            return S.sum_to(E.multiply(S.expand_dims(a, -1), S.expand_dims(g, -2)), b)
        if b.ndim == 1:  # (..., n, k) @ (k,): db = sum g a
            if a.ndim == 2:
                return matmul(g, a)
            t = S.squeeze(matmul(S.expand_dims(g, -2), a), -2)
            return R.sum(t, axis=tuple(range(t.ndim - 1)))
        return S.sum_to(matmul(S.swapaxes_last(a), g), b)  # dB = A^T G

    def to_sympy(self, node, a, b):
        from ..symbolic_terms import matmul

        return matmul(node, a, b)  # A B; 1-D operands are columns


def matmul(a, b, name: str | None = None):
    return apply(Matmul(), (a, b), name)


install(
    Node,
    __matmul__=lambda self, other: matmul(self, other),  # a @ b
    __rmatmul__=lambda self, other: matmul(other, self),
)
