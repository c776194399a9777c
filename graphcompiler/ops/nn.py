"""The neural-network ops: softmax, log_softmax and the losses, with stable kernels.

logsumexp is defined in elementwise.py (exp's derivative builds it, and its derivative builds exp) and
re-exported here.

Each kernel subtracts the maximum before exponentiating, so logits of +-1e4 give finite results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import DTypeError, ShapeError, fmt_shape
from .base import Op, apply, broadcast_shapes, float_dtype, normalize_axis, undefined_to_sympy
from . import elementwise as E
from . import reduce as R
from . import shape as S
from .elementwise import LogSumExp, logsumexp, logsumexp_kernel, stable_max  # noqa: F401  LogSumExp re-exported


_UNSIGNED = {np.dtype(t): np.dtype("u" + t) for t in ("int8", "int16", "int32", "int64")}


def check_labels(labels: np.ndarray, c: int, batch: tuple, what: str) -> None:
    """Integer class labels must have the logits' batch shape and lie in [0, c): never NumPy's negative
    indexing (label -1 picking the last class) and never a broadcast of one label over the batch.

    Every kernel that reads labels (the loss, one_hot and the optimiser's fused forms) calls this, so an
    optimised program raises exactly where the declared one does. One reduction: as unsigned, a negative
    label is a huge number, so `max < c` checks both ends.
    """
    if labels.shape != tuple(batch):
        raise ValueError(
            f"{what}: labels of shape {fmt_shape(labels.shape)} for logits of batch shape "
            f"{fmt_shape(batch)}; feed one label per row of the logits"
        )
    if not labels.size:
        return
    u = labels.view(_UNSIGNED[labels.dtype]) if labels.dtype in _UNSIGNED else labels
    if labels.dtype.kind not in "iu" or u.max() >= c:
        bad = labels[(labels < 0) | (labels >= c)].ravel()
        shown = bad[0] if bad.size else labels.ravel()[0]
        raise ValueError(f"{what}: label {shown} is out of range for {c} classes (labels must be in [0, {c}))")


def check_label_shapes(logits, labels, what: str = "softmax_cross_entropy") -> None:
    """The shape rule of every op that reads class labels: labels (...,) for logits (..., C)."""
    if labels.dtype.kind not in "iu":
        raise DTypeError(
            f"{what} takes integer class labels, got {labels.dtype} from "
            f"{labels.name!r}; declare the labels with dtype='int64' (one class index per "
            "row), or use log_softmax and a sum for soft targets"
        )
    if logits.ndim < 1 or labels.ndim != logits.ndim - 1:
        raise ShapeError(
            f"logits {fmt_shape(logits.shape)} need labels of shape "
            f"{fmt_shape(logits.shape[:-1])}, got {fmt_shape(labels.shape)}"
        )
    broadcast_shapes(logits.shape[:-1], labels.shape)
    for a, b in zip(logits.shape[:-1], labels.shape):
        if a is not None and b is not None and a != b:
            raise ShapeError(
                f"logits {fmt_shape(logits.shape)} need labels of shape "
                f"{fmt_shape(logits.shape[:-1])}, got {fmt_shape(labels.shape)}"
            )


@dataclass(frozen=True)
class Softmax(Op):
    name: ClassVar[str] = "softmax"
    arity: ClassVar[int] = 1
    scratch: ClassVar[int] = 1
    axis: int = -1

    def infer(self, x):
        return x.shape, float_dtype(x, "softmax")

    def kernel(self, x):
        e = np.exp(x - stable_max(x, self.axis))
        e /= np.sum(e, axis=self.axis, keepdims=True)
        return e

    def bprop(self, i, x, y, g):  # dx = y * (g - sum(g * y))
        a, rest = E.split_quotient(g, y)
        out = None
        if a is not None:  # g = a / y (log's bprop): y * (a/y - sum(a)) = a - y sum(a), finite where y = 0
            out = E.subtract(a, E.multiply(y, R.sum(a, axis=self.axis, keepdims=True)))
        if rest is not None:
            s = R.sum(E.multiply(rest, y), axis=self.axis, keepdims=True)
            part = E.multiply(y, E.subtract(rest, s))
            out = part if out is None else E.add(out, part)
        return out

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class LogSoftmax(Op):
    name: ClassVar[str] = "log_softmax"
    arity: ClassVar[int] = 1
    scratch: ClassVar[int] = 1
    axis: int = -1

    def infer(self, x):
        return x.shape, float_dtype(x, "log_softmax")

    def kernel(self, x):
        return x - logsumexp_kernel(x, self.axis, keepdims=True)

    def fast_kernel(self, writes, shape, in_shape, dtype):
        if len(shape) and self.axis == len(shape) - 1:
            return _log_softmax_last, (), {}
        return self.kernel, (), {}

    def bprop(self, i, x, y, g):  # dx = g - softmax(x) * sum(g)
        s = R.sum(g, axis=self.axis, keepdims=True)
        return E.subtract(g, E.multiply(E.exp(y), s))

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class OneHot(Op):
    """one_hot(labels, like): like's shape and dtype, 1 at each label along the last axis."""

    name: ClassVar[str] = "one_hot"
    arity: ClassVar[int] = 2
    shape_only: ClassVar[tuple] = (1,)
    piecewise_constant: ClassVar[bool] = True

    def infer(self, labels, like):
        check_label_shapes(like, labels, "one_hot")
        return like.shape, like.dtype

    def kernel(self, labels, like):
        check_labels(labels, like.shape[-1], like.shape[:-1], "one_hot")
        out = np.zeros(like.shape, like.dtype)
        np.put_along_axis(out, labels[..., None], 1, axis=-1)
        return out

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class SoftmaxCrossEntropy(Op):
    """mean over the batch of -log softmax(logits)[label], integer labels; logits (..., C), labels (...)."""

    name: ClassVar[str] = "softmax_cross_entropy"
    scratch: ClassVar[int] = 2
    arity: ClassVar[int] = 2

    def infer(self, logits, labels):
        float_dtype(logits, "softmax_cross_entropy's logits")
        check_label_shapes(logits, labels)
        return (), logits.dtype

    def kernel(self, logits, labels):
        check_labels(labels, logits.shape[-1], logits.shape[:-1], "softmax_cross_entropy")
        picked = np.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
        nll = logsumexp_kernel(logits, -1, keepdims=False) - picked
        return np.asarray(np.mean(nll), dtype=logits.dtype)

    def bprop(self, i, x, y, g):  # dlogits = (softmax - onehot) g / n
        logits, labels = x
        n = S.count(labels, tuple(range(labels.ndim)), g.dtype)
        diff = E.subtract(softmax(logits, -1), apply(OneHot(), (labels, logits)))
        return E.multiply(diff, E.divide(g, n))

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class MSE(Op):
    """mean((prediction - target)^2) over every element (shapes broadcast)."""

    name: ClassVar[str] = "mse"
    sympy_any_rank: ClassVar[bool] = True
    scratch: ClassVar[int] = 1
    arity: ClassVar[int] = 2

    def infer(self, p, t):
        broadcast_shapes(p.shape, t.shape)
        dtype = np.result_type(p.dtype, t.dtype)
        if dtype.kind != "f":
            raise DTypeError(f"mse needs floating values, got {p.dtype} and {t.dtype}")
        return (), dtype

    def kernel(self, p, t):
        d = p - t
        return np.asarray(np.mean(d * d), dtype=d.dtype)

    def bprop(self, i, x, y, g):  # d mse = 2 (p - t) / n, and its negative
        p, t = x
        d = E.subtract(p, t)
        scale = E.divide(E.multiply(g, 2), S.count(d, tuple(range(d.ndim)), g.dtype))
        gd = E.multiply(d, scale)
        return S.sum_to(gd if i == 0 else E.negative(gd), x[i])

    def to_sympy(self, node, p, t):
        from ..symbolic_terms import count, elementwise, reduce_sum

        sq = elementwise(broadcast_shapes(p.shape, t.shape), lambda a, b: (a - b) ** 2, p, t)
        total = reduce_sum(node, sq, tuple(range(sq.ndim)), False)  # ||P - T||_F^2 = tr((P-T)^T (P-T))
        return elementwise(node, lambda s, k: s / k, total, count(node, sq, tuple(range(sq.ndim))))


def softmax(x, axis: int = -1, name: str | None = None):
    return apply(Softmax(normalize_axis(axis, x.ndim, "softmax", x)), (x,), name)


def log_softmax(x, axis: int = -1, name: str | None = None):
    return apply(LogSoftmax(normalize_axis(axis, x.ndim, "log_softmax", x)), (x,), name)


def softmax_cross_entropy(logits, labels, name: str | None = None):
    return apply(SoftmaxCrossEntropy(), (logits, labels), name)


def mse(prediction, target, name: str | None = None):
    return apply(MSE(), (prediction, target), name)


def _log_softmax_last(x):
    """log_softmax over the last axis: (x - max) - log(sum(exp(x - max))), finite for logits of +-1e4.

    LogSoftmax's fast kernel for the last axis (fewer temporaries than its kernel). A row holding +inf gives
    NaN in every entry here (the op's own kernel gives -inf beside the NaN); nan_check reports either.
    """
    m = np.maximum.reduce(x, axis=-1, keepdims=True)
    d = np.subtract(x, m)
    e = np.exp(d)
    s = np.add.reduce(e, axis=-1, keepdims=True)
    np.log(s, out=s)
    return np.subtract(d, s, out=d)
