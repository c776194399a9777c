"""Ops only the optimiser introduces (never in a user's graph, never in a file): cheaper forms of patterns
that the rules in simplify.py recognise. They are not registered in the op table, since a graph file may not
name them; each has a shape rule and a kernel (with `out=`), and no derivative (they appear after build_grad).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import Op
from .nn import check_label_shapes, check_labels


_ARANGE: dict[int, np.ndarray] = {}


def _arange(n: int) -> np.ndarray:
    """np.arange(n), made once per n (the row index of a fancy pick)."""
    a = _ARANGE.get(n)
    if a is None:
        a = _ARANGE[n] = np.arange(n)
        a.setflags(write=False)
    return a


@dataclass(frozen=True)
class PickMean(Op):
    """-mean(logp[..., label]): the cross-entropy read off log-probabilities (integer labels).

    It checks its labels as softmax_cross_entropy does (shape rule and kernel), so the optimised program
    raises where the declared one does: a label -1 is an error, not NumPy's last class.
    """

    arity: ClassVar[int] = 2

    def infer(self, logp, labels):
        check_label_shapes(logp, labels)
        return (), logp.dtype

    def kernel(self, logp, labels):
        check_labels(labels, logp.shape[-1], logp.shape[:-1], "softmax_cross_entropy")
        if logp.ndim == 2:
            picked = logp[_arange(logp.shape[0]), labels]
            if picked.size:
                return np.add.reduce(picked) * (-1.0 / picked.size)
        else:
            picked = np.take_along_axis(logp, labels[..., None], axis=-1)
        total = np.add.reduce(picked, axis=None)
        return np.asarray(total * (-1.0 / max(picked.size, 1)) if picked.size else np.nan, dtype=logp.dtype)


@dataclass(frozen=True)
class MinusOneHot(Op):
    """p - one_hot(labels): p with 1 subtracted at each label along the last axis (in place when p dies)."""

    arity: ClassVar[int] = 2
    writes_out: ClassVar[bool] = True
    elementwise: ClassVar[bool] = True  # p's shape; may write over p when p dies here

    def infer(self, p, labels):
        check_label_shapes(p, labels, "one_hot")
        return p.shape, p.dtype

    def kernel(self, p, labels, out=None):
        check_labels(labels, p.shape[-1], p.shape[:-1], "one_hot")
        if out is None:
            out = np.array(p, copy=True)
        elif out is not p:
            np.copyto(out, p)
        if out.ndim == 2:
            rows = _arange(out.shape[0])
            out[rows, labels] -= 1
        else:
            idx = labels[..., None]
            np.put_along_axis(out, idx, np.take_along_axis(out, idx, axis=-1) - 1, axis=-1)
        return out


@dataclass(frozen=True)
class DotAll(Op):
    """sum(a * b) over every element, as one BLAS dot (a and b of one shape, floating)."""

    arity: ClassVar[int] = 2

    def infer(self, a, b):
        return (), np.result_type(a.dtype, b.dtype)

    def kernel(self, a, b):
        return np.vdot(a, b)


PickMean.name = "pick_mean"  # set after the class body: not registered in ops.OPS
MinusOneHot.name = "minus_one_hot"
DotAll.name = "dot_all"
