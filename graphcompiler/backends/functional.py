"""The functional evaluator: a LoweredProgram run as pure array-API calls (no out= buffers, no in-place writes).

The JAX, dask and CuPy backends share it. Each step is translated from its op record (`step.op`, its class
and attributes, and the step's concrete shape and dtype) by its kernel in `KERNELS`, found by the op's class:
`kernel(env, step, *args) -> array`, written against `env.xp`, an array API namespace (array-api-compat).
The few things the standard lacks or that differ per engine are methods of the `Env` (label-range checks,
bit casts, erfinv); the non-standard kernels (softmax family, logsumexp, sigmoid, one-hot and the
cross-entropies, scatter-add, the Threefry generator) are written once on top of the namespace.

A program with an op that has no functional kernel is refused at load with a GraphCompilerError naming the
ops and the backend: never a silently wrong result. This module imports NumPy, lowered.py and the op classes
it registers kernels for (dispatch.py: by class, never by name; the elementwise ops' kernels come from their
`ufunc`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import ExecutionError, GraphCompilerError
from ..graph import OPS
from ..ops.contract import Einsum
from ..ops.elementwise import Astype, Identity, Relu, Sigmoid, StopGradient, Where
from ..ops.fused import DotAll, MinusOneHot, PickMean
from ..ops.indexing import (
    Diagonal,
    DiagonalScatter,
    EyeLike,
    Flip,
    OneHotDepth,
    Pad,
    Repeat,
    RepeatSum,
    Roll,
    ScatterAdd,
    ScatterAddAlongAxis,
    Stack,
    Take,
    TakeAlongAxis,
    Tile,
    TileSum,
    Trace,
)
from ..ops.linalg import Matmul
from ..ops.linalg_ops import Triangle
from ..ops.nn import MSE, LogSoftmax, LogSumExp, OneHot, Softmax, SoftmaxCrossEntropy
from ..ops.random import DropoutMask, RandomBernoulli, RandomNormal, RandomSplit, RandomUniform
from ..ops.reduce import Max, Mean, Sum
from ..ops.reductions import ArgMax, ArgMin, ArgSort, Cumsum, Min, Prod, Std, Var
from ..ops.shape import (
    BroadcastLike,
    BroadcastTo,
    ConcatPart,
    Concatenate,
    Count,
    ExpandDims,
    GetItem,
    Reshape,
    ReshapeLike,
    ScatterLike,
    Squeeze,
    SumLike,
    Transpose,
    ZerosLike,
)
from ..ops.special import Clip, Digamma, Erf, Gammaln, LogSigmoid, Polygamma, Reciprocal, Softplus
from .dispatch import Dispatch, array_api_name
from .lowered import Const, LoweredProgram

Kernel = Callable[..., Any]


def _from_ufunc(u: np.ufunc) -> Kernel:
    """The kernel of an op whose record declares `ufunc = u`: the namespace's function of that name (the
    array API's name where it differs from NumPy's; the engine's own module where the standard has none)."""
    name = array_api_name(u)

    def run(env, st, *xs):
        f = getattr(env.xp, name, None) or getattr(_engine_module(xs[0]), u.__name__)
        return f(*xs)

    return run


KERNELS = Dispatch("functional", derive=_from_ufunc)  # op class -> kernel(env, step, *args)


class Env:
    """What kernels need beyond the namespace; subclassed per engine (jax, dask) where it differs."""

    name = "array-api"
    leaf_ids: dict = {}  # id of each leaf value -> its position (set by evaluate)

    def __init__(self, xp: Any):
        self.xp = xp

    def check_labels(self, labels, n: int, label: str, low: int = 0):
        """labels, after checking low <= labels < n (eagerly here; jax and dask do it their own way).

        low=0: class labels; low=-n: indices, NumPy's rule (negative ones count from the end)."""
        check_range(np.asarray(labels), n, label, low)
        return labels

    def check_finite(self, st, r, args):
        """nan_check: r, after checking it holds no NaN or infinity (NumericsError naming the step)."""
        from .numpy import check_finite

        check_finite(st.label, st.op_name, np.asarray(r), [np.asarray(a) for a in args], st.arg_names)
        return r

    def bitcast(self, x, dtype):
        return x.view(dtype)

    def einsum(self, subscripts: str, *xs):
        """einsum is not in the array API standard: the engine's own (NumPy, jax.numpy, dask.array, CuPy)."""
        return _engine_module(next((x for x in xs if not isinstance(x, np.ndarray)), xs[0])).einsum(subscripts, *xs)

    def special(self, name: str, x, *n):
        """A scipy.special function (erf, gammaln, digamma; polygamma with its order n first) on the engine."""
        import scipy.special

        return getattr(scipy.special, name)(*n, x)

    def erfinv(self, x):
        from scipy.special import erfinv

        return erfinv(x)

    def asarray(self, value, dtype=None):
        return self.xp.asarray(value, dtype=dtype)

    def set_index(self, z, index, g):
        """z with z[index] = g, as a new array (jax: z.at[index].set(g))."""
        z = self.xp.asarray(z, copy=True)
        z[index] = g
        return z


def _engine_module(x):
    """The engine's own module of array x (numpy, jax.numpy, dask.array, cupy): for calls beyond the standard."""
    import array_api_compat

    if array_api_compat.is_jax_array(x):
        import jax.numpy

        return jax.numpy
    if array_api_compat.is_dask_array(x):
        import dask.array

        return dask.array
    if array_api_compat.is_cupy_array(x):
        import cupy

        return cupy
    return np


def range_message(bad: int, n: int, label: str, low: int = 0) -> str:
    if low == 0:
        return f"while computing {label}: label {bad} is out of range for {n} classes (labels must be in [0, {n}))"
    return (
        f"while computing {label}: index {bad} is out of range for an axis of size {n} "
        f"(indices must be in [{low}, {n}))"
    )


def check_range(arr: np.ndarray, n: int, label: str, low: int = 0) -> None:
    """ExecutionError naming the step when an entry of arr (NumPy) is outside [low, n)."""
    if arr.size and (arr.min() < low or arr.max() >= n):
        raise ExecutionError(range_message(int(arr[(arr < low) | (arr >= n)].ravel()[0]), n, label, low))


def kernel(*classes: type) -> Callable[[Kernel], Kernel]:
    """Decorator: the functional kernel of these op classes (KERNELS.register)."""
    return KERNELS.register(*classes)


# -- elementwise ---------------------------------------------------------------------------------


@kernel(Identity, StopGradient)
def _identity(env, st, x):
    return x


@kernel(Sigmoid)
def _sigmoid(env, st, x):  # exp(-log(1 + e^-x)): finite and accurate at |x| = 1e4
    xp = env.xp
    return xp.exp(-xp.logaddexp(xp.zeros_like(x), -x))


@kernel(Relu)
def _relu(env, st, x):
    return env.xp.maximum(x, env.xp.zeros_like(x))


@kernel(Reciprocal)
def _reciprocal(env, st, x):
    return 1 / x


@kernel(Softplus)
def _softplus(env, st, x):
    return env.xp.logaddexp(env.xp.zeros_like(x), x)


@kernel(LogSigmoid)
def _log_sigmoid(env, st, x):
    return -env.xp.logaddexp(env.xp.zeros_like(x), -x)


@kernel(Clip)
def _clip(env, st, *xs):
    xp = env.xp
    x = xs[0]
    lo = xs[1] if st.op.lower else None
    hi = xs[1 + st.op.lower] if st.op.upper else None
    if lo is not None:
        x = xp.maximum(x, lo)
    if hi is not None:
        x = xp.minimum(x, hi)
    return xp.broadcast_to(x, tuple(st.shape))


@kernel(Erf, Gammaln, Digamma)
def _special(env, st, x):
    return env.special(st.op_name, x)


@kernel(Polygamma)
def _polygamma(env, st, x):
    return env.special("polygamma", x, st.op.n)


@kernel(Where)
def _where(env, st, c, a, b):
    return env.xp.where(c, a, b)


@kernel(Astype)
def _astype(env, st, x):
    return env.xp.astype(x, _dt(env, st.dtype))


# -- reductions and contractions -----------------------------------------------------------------


@kernel(Sum)
def _sum(env, st, x):
    return env.xp.sum(x, axis=tuple(st.op.axis), keepdims=st.op.keepdims)


@kernel(Mean)
def _mean(env, st, x):
    xp = env.xp
    if x.dtype not in (xp.float32, xp.float64):
        x = xp.astype(x, _dt(env, st.dtype))
    return xp.mean(x, axis=tuple(st.op.axis), keepdims=st.op.keepdims)


@kernel(Max)
def _max(env, st, x):
    return env.xp.max(x, axis=tuple(st.op.axis), keepdims=st.op.keepdims)


@kernel(Prod)
def _prod(env, st, x):
    return env.xp.prod(x, axis=tuple(st.op.axis), keepdims=st.op.keepdims)


@kernel(Min)
def _min(env, st, x):
    return env.xp.min(x, axis=tuple(st.op.axis), keepdims=st.op.keepdims)


@kernel(Var, Std)
def _var(env, st, x):
    xp = env.xp
    if x.dtype not in (xp.float32, xp.float64):
        x = xp.astype(x, _dt(env, st.dtype))
    return getattr(xp, st.op_name)(x, axis=tuple(st.op.axis), keepdims=st.op.keepdims, correction=st.op.ddof)


@kernel(Cumsum)
def _cumsum(env, st, x):
    xp, a = env.xp, st.op.axis
    f = getattr(xp, "cumulative_sum", None) or xp.cumsum
    if st.op.reverse:
        return xp.flip(f(xp.flip(x, axis=a), axis=a), axis=a)
    return f(x, axis=a)


@kernel(ArgMax, ArgMin)
def _argmax(env, st, x):
    return getattr(env.xp, st.op_name)(x, axis=st.op.axis, keepdims=st.op.keepdims)


@kernel(ArgSort)
def _argsort(env, st, x):
    return env.xp.astype(env.xp.argsort(x, axis=st.op.axis, stable=True), env.xp.int64)


@kernel(Matmul)
def _matmul(env, st, a, b):
    return env.xp.matmul(a, b)


@kernel(Einsum)
def _einsum(env, st, *xs):
    return env.einsum(st.op.subscripts, *xs)


@kernel(Triangle)
def _triangle(env, st, x):
    xp, op = env.xp, st.op
    out = xp.tril(x) if op.lower else xp.triu(x)
    if op.diag != 1.0:
        r, c = x.shape[-2], x.shape[-1]
        on = xp.reshape(xp.arange(r), (r, 1)) == xp.reshape(xp.arange(c), (1, c))
        out = xp.where(on, out * op.diag, out)
    return out


@kernel(DotAll)
def _dot_all(env, st, a, b):
    return env.xp.sum(a * b)


# -- shapes --------------------------------------------------------------------------------------


@kernel(Reshape, ReshapeLike, ExpandDims, Squeeze)
def _reshape(env, st, x, *like):
    return env.xp.reshape(x, tuple(st.shape))


@kernel(Transpose)
def _transpose(env, st, x):
    return env.xp.permute_dims(x, tuple(st.op.axes))


@kernel(BroadcastTo, BroadcastLike)
def _broadcast(env, st, x, *like):
    return env.xp.broadcast_to(x, tuple(st.shape))


@kernel(SumLike)
def _sum_like(env, st, g, like):
    shape = tuple(st.shape)
    if tuple(g.shape) == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + k for k, d in enumerate(shape) if d == 1 and g.shape[lead + k] != 1)
    xp = env.xp
    return xp.reshape(xp.sum(g, axis=axes, keepdims=True), shape) if axes else xp.reshape(g, shape)


@kernel(ZerosLike)
def _zeros_like(env, st, x):
    return env.xp.zeros(tuple(st.shape), dtype=_dt(env, st.dtype))


@kernel(Count)
def _count(env, st, x):
    n = math.prod(x.shape[a] for a in st.op.axis)
    return env.asarray(n, dtype=_dt(env, st.dtype))


def _index(index: tuple) -> tuple:
    out = []
    for it in index:
        kind = it[0]
        out.append(slice(*it[1:]) if kind == "s" else it[1] if kind == "i" else None if kind == "new" else ...)
    return tuple(out)


@kernel(GetItem)
def _getitem(env, st, x):
    return x[_index(st.op.index)]


@kernel(ScatterLike)
def _scatter_like(env, st, g, like):
    """Zeros with g at a static basic index, built functionally: pad the selected block back to full size."""
    xp = env.xp
    z = xp.zeros(tuple(st.shape), dtype=_dt(env, st.dtype))
    return env.set_index(z, _index(st.op.index), g)


@kernel(Concatenate)
def _concatenate(env, st, *xs):
    return env.xp.concat(list(xs), axis=st.op.axis)


@kernel(ConcatPart)
def _concat_part(env, st, g, *likes):
    a = st.op.axis
    start = sum(l.shape[a] for l in likes[: st.op.part])
    stop = start + likes[st.op.part].shape[a]
    return g[(slice(None),) * a + (slice(start, stop),)]


@kernel(Stack)
def _stack(env, st, *xs):
    return env.xp.stack(list(xs), axis=st.op.axis)


@kernel(Flip)
def _flip(env, st, x):
    return env.xp.flip(x, axis=tuple(st.op.axis))


@kernel(Roll)
def _roll(env, st, x):
    return env.xp.roll(x, shift=tuple(st.op.shift), axis=tuple(st.op.axis))


@kernel(Pad)
def _pad(env, st, x):
    xp, pw = env.xp, st.op.pad_width
    dt = _dt(env, st.dtype)
    for k in range(x.ndim):
        lo, hi = pw[2 * k], pw[2 * k + 1]
        sides = [tuple(x.shape[:k]) + (n,) + tuple(x.shape[k + 1 :]) for n in (lo, hi)]
        parts = (
            ([xp.full(sides[0], st.op.value, dtype=dt)] if lo else [])
            + [x]
            + ([xp.full(sides[1], st.op.value, dtype=dt)] if hi else [])
        )
        if len(parts) > 1:
            x = xp.concat(parts, axis=k)
    return x


def _tiled_base(x, reps):
    return (1,) * (len(reps) - x.ndim) + tuple(x.shape)


@kernel(Tile)
def _tile(env, st, x):
    """np.tile as reshape, broadcast, reshape: (d,) -> (1, d) -> (r, d) -> (r * d,) per axis."""
    xp, reps = env.xp, tuple(st.op.reps)
    base = _tiled_base(x, reps)
    split = tuple(v for d in base for v in (1, d))
    wide = tuple(v for r, d in zip(reps, base) for v in (r, d))
    return xp.reshape(xp.broadcast_to(xp.reshape(x, split), wide), tuple(st.shape))


@kernel(TileSum)
def _tile_sum(env, st, g, like):
    xp, reps = env.xp, tuple(st.op.reps)
    base = (1,) * (len(reps) - len(st.shape)) + tuple(st.shape)
    split = tuple(v for r, d in zip(reps, base) for v in (r, d))
    return xp.reshape(xp.sum(xp.reshape(g, split), axis=tuple(range(0, 2 * len(base), 2))), tuple(st.shape))


@kernel(Repeat)
def _repeat(env, st, x):
    xp, a, n = env.xp, st.op.axis, st.op.n
    e = xp.expand_dims(x, axis=a + 1)
    return xp.reshape(xp.broadcast_to(e, tuple(x.shape[: a + 1]) + (n,) + tuple(x.shape[a + 1 :])), tuple(st.shape))


@kernel(RepeatSum)
def _repeat_sum(env, st, g):
    xp, a, n = env.xp, st.op.axis, st.op.n
    return xp.sum(xp.reshape(g, tuple(g.shape[:a]) + (g.shape[a] // n, n) + tuple(g.shape[a + 1 :])), axis=a + 1)


def _diag_layout(op, r: int, c: int, n: int) -> tuple[int, int]:
    """Where the diagonal lies in the flattened (r, c) matrix: (start, step)."""
    return max(0, -op.offset) * c + max(0, op.offset), c + 1


@kernel(Diagonal)
def _diagonal(env, st, x):
    """np.diagonal as a strided slice of the flattened matrix (exact: no products with a mask)."""
    xp, op = env.xp, st.op
    m = xp.moveaxis(x, (op.axis1, op.axis2), (-2, -1))
    r, c, n = m.shape[-2], m.shape[-1], st.shape[-1]
    if n == 0:
        return xp.zeros(tuple(st.shape), dtype=_dt(env, st.dtype))
    start, step = _diag_layout(op, r, c, n)
    flat = xp.reshape(m, tuple(m.shape[:-2]) + (r * c,))
    return flat[..., start : start + (n - 1) * step + 1 : step]


@kernel(Trace)
def _trace(env, st, x):
    xp, op = env.xp, st.op
    m = xp.moveaxis(x, (op.axis1, op.axis2), (-2, -1))
    r, c = m.shape[-2], m.shape[-1]
    n = max(0, min(r, c - op.offset) if op.offset >= 0 else min(r + op.offset, c))
    if n == 0:
        return xp.zeros(tuple(st.shape), dtype=_dt(env, st.dtype))
    start, step = _diag_layout(op, r, c, n)
    flat = xp.reshape(m, tuple(m.shape[:-2]) + (r * c,))
    return xp.sum(flat[..., start : start + (n - 1) * step + 1 : step], axis=-1)


@kernel(DiagonalScatter)
def _diagonal_scatter(env, st, g, like):
    """Zeros of like's shape with g on the diagonal: g interleaved with rows of zeros, then reshaped."""
    xp, op = env.xp, st.op
    a1, a2 = op.axis1, op.axis2
    shape = tuple(st.shape)
    rest = tuple(d for k, d in enumerate(shape) if k not in (a1, a2))
    r, c = shape[a1], shape[a2]
    n = max(0, min(r, c - op.offset) if op.offset >= 0 else min(r + op.offset, c))
    dt = _dt(env, st.dtype)
    moved = rest + (r, c)
    if n == 0:
        return xp.zeros(shape, dtype=dt)
    start, step = _diag_layout(op, r, c, n)
    g = xp.astype(xp.broadcast_to(g, rest + (n,)), dt)
    rows = xp.concat([xp.expand_dims(g, axis=-1), xp.zeros(rest + (n, c), dtype=dt)], axis=-1)
    flat = xp.reshape(rows, rest + (n * step,))
    parts = [xp.zeros(rest + (start,), dtype=dt)] if start else []
    parts.append(flat)
    total = start + n * step
    if total < r * c:
        parts.append(xp.zeros(rest + (r * c - total,), dtype=dt))
    flat = xp.concat(parts, axis=-1) if len(parts) > 1 else flat
    m = xp.reshape(flat[..., : r * c], moved)
    return xp.moveaxis(m, (-2, -1), (a1, a2))


# -- neural-network ops (not in the standard: written once on the namespace) ---------------------


def _stable_max(xp, x, axis):
    m = xp.max(x, axis=axis, keepdims=True)
    return xp.where(xp.isfinite(m), m, xp.zeros_like(m))  # an all -inf slice stays -inf, not nan


def logsumexp(xp, x, axis, keepdims):
    m = _stable_max(xp, x, axis)
    s = xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True)) + m
    return s if keepdims else xp.squeeze(s, axis=axis)


@kernel(Softmax)
def _softmax(env, st, x):
    xp, a = env.xp, st.op.axis
    e = xp.exp(x - _stable_max(xp, x, a))
    return e / xp.sum(e, axis=a, keepdims=True)


@kernel(LogSoftmax)
def _log_softmax(env, st, x):
    return x - logsumexp(env.xp, x, st.op.axis, True)


@kernel(LogSumExp)
def _logsumexp(env, st, x):
    return logsumexp(env.xp, x, tuple(st.op.axis), st.op.keepdims)


def one_hot(env, labels, n: int, dtype):
    """labels.shape + (n,): 1 at each label (a comparison with arange: no scatter, any engine)."""
    xp = env.xp
    return xp.astype(xp.expand_dims(labels, axis=-1) == xp.arange(n, dtype=labels.dtype), dtype)


@kernel(OneHot)
def _one_hot(env, st, labels, like):
    return one_hot(env, labels, st.shape[-1], _dt(env, st.dtype))


@kernel(OneHotDepth)
def _one_hot_depth(env, st, labels):
    labels = env.check_labels(labels, st.op.depth, st.label)
    return one_hot(env, labels, st.op.depth, _dt(env, st.dtype))


@kernel(EyeLike)
def _eye_like(env, st, like):
    n = st.shape[0]
    return env.xp.eye(n, n, k=st.op.k, dtype=_dt(env, st.dtype))


@kernel(SoftmaxCrossEntropy)
def _softmax_cross_entropy(env, st, logits, labels):
    xp = env.xp
    c = logits.shape[-1]
    labels = env.check_labels(labels, c, st.label)
    picked = xp.sum(logits * one_hot(env, labels, c, logits.dtype), axis=-1)
    return xp.mean(logsumexp(xp, logits, -1, False) - picked)


@kernel(PickMean)
def _pick_mean(env, st, logp, labels):
    xp = env.xp
    c = logp.shape[-1]
    labels = env.check_labels(labels, c, st.label)
    return -xp.mean(xp.sum(logp * one_hot(env, labels, c, logp.dtype), axis=-1))


@kernel(MinusOneHot)
def _minus_one_hot(env, st, p, labels):
    return p - one_hot(env, labels, p.shape[-1], p.dtype)


@kernel(MSE)
def _mse(env, st, p, t):
    d = p - t
    return env.xp.mean(d * d)


# -- gathers and scatter-adds --------------------------------------------------------------------


@kernel(Take)
def _take(env, st, x, idx):
    n = x.shape[st.op.axis]
    idx = env.check_labels(idx, n, st.label, -n)
    xp = env.xp
    idx = xp.where(idx < 0, idx + n, idx)
    flat = xp.reshape(idx, (-1,))
    got = xp.take(x, flat, axis=st.op.axis)
    return xp.reshape(got, tuple(st.shape))


@kernel(ScatterAdd)
def _scatter_add(env, st, target, idx, values):
    """np.add.at as a contraction with a one-hot matrix: functional on every engine (O(n * size))."""
    xp = env.xp
    a, n = st.op.axis, st.shape[st.op.axis]
    idx = env.check_labels(idx, n, st.label, -n)
    idx = xp.where(idx < 0, idx + n, idx)
    k = idx.ndim
    oh = one_hot(env, xp.reshape(idx, (-1,)), n, values.dtype)  # (m, n)
    v = xp.moveaxis(values, tuple(range(a, a + k)), tuple(range(k))) if k and a else values
    v = xp.reshape(v, (oh.shape[0], -1))  # (m, rest)
    out = xp.reshape(
        xp.matmul(xp.permute_dims(oh, (1, 0)), v), (n,) + tuple(d for j, d in enumerate(st.shape) if j != a)
    )
    return xp.moveaxis(out, 0, a) if a else out


def _axis_arange(xp, n: int, axis: int, ndim: int, dtype):
    """arange(n) shaped to lie along `axis` of a rank-ndim array."""
    return xp.reshape(xp.arange(n, dtype=dtype), tuple(n if k == axis else 1 for k in range(ndim)))


@kernel(TakeAlongAxis)
def _take_along_axis(env, st, x, idx):
    """result[..., j, ...] = x[..., idx[..., j, ...], ...]: a where over (j, i) pairs (exact; no products)."""
    xp, a = env.xp, st.op.axis
    n = x.shape[a]
    idx = env.check_labels(idx, n, st.label, -n)
    idx = xp.where(idx < 0, idx + n, idx)
    hit = xp.expand_dims(idx, axis=a + 1) == _axis_arange(xp, n, a + 1, idx.ndim + 1, idx.dtype)  # (.., k, n, ..)
    xs = xp.expand_dims(x, axis=a)  # (.., 1, n, ..)
    zero = xp.zeros((), dtype=x.dtype)
    return xp.broadcast_to(xp.sum(xp.where(hit, xs, zero), axis=a + 1), tuple(st.shape))


@kernel(ScatterAddAlongAxis)
def _scatter_add_along_axis(env, st, target, idx, values):
    """out[..., i, ...] = sum over j with idx[..., j, ...] == i of values[..., j, ...], summed to target's shape."""
    xp, a = env.xp, st.op.axis
    n = st.shape[a]
    idx = env.check_labels(idx, n, st.label, -n)
    idx = xp.where(idx < 0, idx + n, idx)
    idx = xp.broadcast_to(idx, tuple(values.shape))
    hit = xp.expand_dims(idx, axis=a) == _axis_arange(xp, n, a, values.ndim + 1, idx.dtype)  # (.., n, k, ..)
    zero = xp.zeros((), dtype=values.dtype)
    full = xp.sum(xp.where(hit, xp.expand_dims(values, axis=a), zero), axis=a + 1)  # (.., n, ..)
    shape = tuple(st.shape)
    axes = tuple(k for k, d in enumerate(shape) if d == 1 and full.shape[k] != 1)
    return xp.sum(full, axis=axes, keepdims=True) if axes else full


# -- random numbers (Threefry-2x32, the same uint32 arithmetic as ops/random.py) -----------------

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry2x32(env, key, x0, x1):
    xp = env.xp
    u32 = xp.uint32
    k0, k1 = key[0], key[1]
    ks = (k0, k1, k0 ^ k1 ^ env.asarray(0x1BD11BDA, dtype=u32))
    x0 = x0 + ks[0]
    x1 = x1 + ks[1]
    for block in range(5):
        for r in _ROTATIONS[block % 2]:
            x0 = x0 + x1
            x1 = xp.bitwise_left_shift(x1, env.asarray(r, dtype=u32)) | xp.bitwise_right_shift(
                x1, env.asarray(32 - r, dtype=u32)
            )
            x1 = x1 ^ x0
        x0 = x0 + ks[(block + 1) % 3]
        x1 = x1 + ks[(block + 2) % 3] + env.asarray(block + 1, dtype=u32)
    return x0, x1


def random_bits(env, key, shape, width):
    xp = env.xp
    n = math.prod(shape)
    c = np.arange(n, dtype=np.uint64)
    hi, lo = threefry2x32(
        env,
        key,
        env.asarray((c >> np.uint64(32)).astype(np.uint32)),
        env.asarray((c & np.uint64(0xFFFFFFFF)).astype(np.uint32)),
    )
    if width == 64:
        bits = xp.bitwise_left_shift(xp.astype(hi, xp.uint64), env.asarray(32, dtype=xp.uint64)) | xp.astype(
            lo, xp.uint64
        )
    else:
        bits = hi ^ lo
    return xp.reshape(bits, tuple(shape))


def uniform_bits(env, key, shape, dtype):
    xp = env.xp
    if np.dtype(dtype) == np.float64:
        bits = random_bits(env, key, shape, 64)
        bits = xp.bitwise_right_shift(bits, env.asarray(12, dtype=xp.uint64)) | env.asarray(
            0x3FF0000000000000, dtype=xp.uint64
        )
        return env.bitcast(bits, np.float64) - 1.0
    bits = random_bits(env, key, shape, 32)
    bits = xp.bitwise_right_shift(bits, env.asarray(9, dtype=xp.uint32)) | env.asarray(0x3F800000, dtype=xp.uint32)
    return xp.astype(env.bitcast(bits, np.float32) - env.asarray(1.0, dtype=xp.float32), _dt(env, dtype))


def _draw_shape(st, like):
    return tuple(st.shape)


@kernel(RandomUniform)
def _random_uniform(env, st, key, *like):
    xp = env.xp
    dt = np.dtype(st.dtype)
    low, high = dt.type(st.op.low), dt.type(st.op.high)
    u = uniform_bits(env, key, tuple(st.shape), dt) * (high - low) + low
    return xp.minimum(
        xp.maximum(u, env.asarray(low, dtype=u.dtype)), env.asarray(np.nextafter(high, low), dtype=u.dtype)
    )


@kernel(RandomNormal)
def _random_normal(env, st, key, *like):
    xp = env.xp
    dt = np.dtype(st.dtype)
    lo = np.nextafter(dt.type(-1), dt.type(0))
    u = uniform_bits(env, key, tuple(st.shape), dt) * (dt.type(1) - lo) + lo
    u = xp.maximum(u, env.asarray(lo, dtype=u.dtype))
    return xp.astype(env.asarray(np.sqrt(2), dtype=u.dtype) * env.erfinv(u), _dt(env, dt))


@kernel(RandomSplit)
def _random_split(env, st, key):
    n = st.op.n
    hi, lo = threefry2x32(env, key, env.asarray(np.zeros(n, np.uint32)), env.asarray(np.arange(n, dtype=np.uint32)))
    return env.xp.stack([hi, lo], axis=-1)


@kernel(RandomBernoulli)
def _random_bernoulli(env, st, key, p):
    dt = np.dtype(p.dtype) if np.dtype(p.dtype) in (np.float32, np.float64) else np.dtype(np.float64)
    return uniform_bits(env, key, tuple(st.shape), dt) < p


@kernel(DropoutMask)
def _dropout_mask(env, st, key, like):
    xp = env.xp
    keep = 1.0 - st.op.rate
    dt = _dt(env, st.dtype)
    if keep == 0.0:
        return xp.zeros(tuple(st.shape), dtype=dt)
    kept = uniform_bits(env, key, tuple(st.shape), np.float64) < keep
    return xp.astype(xp.astype(kept, xp.float64) * (1.0 / keep), dt)


# -- the evaluator -------------------------------------------------------------------------------


def _dt(env, dtype):
    """The namespace's dtype object for a NumPy dtype."""
    return getattr(env.xp, np.dtype(dtype).name)


def coverage() -> list[str]:
    """The op names with a functional kernel (the op table's classes and the optimiser's fused ops)."""
    classes = set(OPS.values()) | set(KERNELS.classes())
    names = {c: getattr(c, "name", None) for c in classes}
    return sorted(n for c, n in names.items() if isinstance(n, str) and KERNELS.lookup(c))


def missing_kernels(lowered: LoweredProgram) -> list[str]:
    return sorted({st.op_name for st in lowered.steps if KERNELS(st.op) is None})


def check_coverage(lowered: LoweredProgram, backend: str) -> None:
    """Refuse a program with ops the functional kernels do not cover (never a silently wrong result)."""
    missing = missing_kernels(lowered)
    if missing:
        users = [st.label for st in lowered.steps if KERNELS(st.op) is None][:3]
        raise GraphCompilerError(
            f"backend {backend!r} has no kernel for op{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} (used by {'; '.join(users)}); run this program on "
            f"backend='numpy'"
        )


def _const(env: Env, value: Any) -> Any:
    """A constant argument on the engine; a stand-in read only for its shape (zero strides) stays NumPy."""
    if isinstance(value, np.ndarray) and value.size > 1 and not any(value.strides):
        return value
    return env.asarray(value)


def evaluate(env: Env, lowered: LoweredProgram, leaves: Sequence[Any], wrap_errors: bool = True) -> list:
    """Every step of `lowered` as a pure call on env's namespace; the results in the order of lowered.results.

    A result whose dtype differs from the step's (a promotion rule of the engine) is cast back, so every
    engine computes in the program's dtypes.
    """
    values: list[Any] = [None] * lowered.n_slots
    for s, v in zip(lowered.leaves, leaves):
        values[s] = v
    env.leaf_ids = {id(v): k for k, v in enumerate(leaves)}  # which arguments are the run's leaves
    xp = env.xp
    for st in lowered.steps:
        # the graph inputs only: the NumPy call's extra constants (fast_kernel's) follow them
        args = [_const(env, a.value) if isinstance(a, Const) else values[a] for a in st.args[: len(st.arg_names)]]
        try:
            kernel = KERNELS(st.op)
            if kernel is None:  # load's check_coverage refuses such a program first
                raise GraphCompilerError(f"no {env.name} kernel for op {st.op_name} (used by {st.label})")
            r = kernel(env, st, *args)
            want = _dt(env, st.dtype)
            if getattr(r, "dtype", None) != want:
                r = xp.astype(env.asarray(r) if not hasattr(r, "dtype") else r, want)
            if lowered.nan_check and np.dtype(st.dtype).kind == "f":
                r = env.check_finite(st, r, args)
        except GraphCompilerError:
            raise
        except Exception as e:
            if not wrap_errors:
                raise
            shapes = ", ".join(f"{n}: {tuple(getattr(a, 'shape', ()))}" for n, a in zip(st.arg_names, args))
            raise ExecutionError(f"while computing {st.label}: {type(e).__name__}: {e} (input shapes {shapes})") from e
        values[st.slot] = r
        for f in st.frees:
            values[f] = None
    return [r.value if isinstance(r, Const) else values[r] for r in lowered.results]


class ArrayApiEvaluator:
    """The functional evaluator on any array API namespace (NumPy through array-api-compat by default)."""

    name = "array_api"
    run_options: frozenset = frozenset()

    def __init__(self, xp: Any = None):
        if xp is None:
            import array_api_compat.numpy as xp
        self.env = Env(xp)

    def load(self, lowered: LoweredProgram) -> ArrayApiEvaluator:
        check_coverage(lowered, self.name)
        self.lowered = lowered
        return self

    def run(self, leaves: Sequence[Any]) -> list:
        xp = self.env.xp
        res = evaluate(self.env, self.lowered, [xp.asarray(v) for v in leaves])
        return [np.array(r) for r in res]
