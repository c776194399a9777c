"""The functional evaluator: a LoweredProgram run as pure array-API calls (no out= buffers, no in-place writes).

The JAX, dask and CuPy backends share it. Each step is translated from its op record (`step.op`, its class
and attributes, and the step's concrete shape and dtype) by one kernel of the table `KERNELS`:
`kernel(env, step, *args) -> array`, written against `env.xp`, an array API namespace (array-api-compat).
The few things the standard lacks or that differ per engine are methods of the `Env` (label-range checks,
bit casts, erfinv); the non-standard kernels (softmax family, logsumexp, sigmoid, one-hot and the
cross-entropies, scatter-add, the Threefry generator) are written once on top of the namespace.

A program with an op that has no functional kernel is refused at load with a GraphCompilerError naming the
ops and the backend: never a silently wrong result. This module imports only NumPy and lowered.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .lowered import Const, LoweredProgram
from ..errors import ExecutionError, GraphCompilerError

Kernel = Callable[..., Any]
KERNELS: dict[str, Kernel] = {}


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


def kernel(*names: str) -> Callable[[Kernel], Kernel]:
    def register(fn: Kernel) -> Kernel:
        for n in names:
            KERNELS[n] = fn
        return fn

    return register


# -- elementwise ---------------------------------------------------------------------------------

_UNARY = {
    "negative": "negative",
    "square": "square",
    "sqrt": "sqrt",
    "exp": "exp",
    "log": "log",
    "log1p": "log1p",
    "sin": "sin",
    "cos": "cos",
    "tanh": "tanh",
    "abs": "abs",
    "sign": "sign",
    "expm1": "expm1",
    "tan": "tan",
    "arctan": "atan",
    "sinh": "sinh",
    "cosh": "cosh",
    "floor": "floor",
    "ceil": "ceil",
    "round": "round",
    "invert": "invert",
}
_BINARY = {
    "add": "add",
    "subtract": "subtract",
    "multiply": "multiply",
    "divide": "divide",
    "power": "pow",
    "maximum": "maximum",
    "minimum": "minimum",
    "greater": "greater",
    "less": "less",
    "greater_equal": "greater_equal",
    "less_equal": "less_equal",
    "equal": "equal",
    "not_equal": "not_equal",
    "logaddexp": "logaddexp",
    "mod": "remainder",
    "floor_divide": "floor_divide",
    "bitwise_and": "bitwise_and",
    "bitwise_or": "bitwise_or",
    "bitwise_xor": "bitwise_xor",
}


def _unary(fname: str) -> Kernel:
    return lambda env, st, x: getattr(env.xp, fname)(x)


def _binary(fname: str) -> Kernel:
    return lambda env, st, a, b: getattr(env.xp, fname)(a, b)


for _op, _f in _UNARY.items():
    KERNELS[_op] = _unary(_f)
for _op, _f in _BINARY.items():
    KERNELS[_op] = _binary(_f)


@kernel("identity", "stop_gradient")
def _identity(env, st, x):
    return x


@kernel("sigmoid")
def _sigmoid(env, st, x):  # exp(-log(1 + e^-x)): finite and accurate at |x| = 1e4
    xp = env.xp
    return xp.exp(-xp.logaddexp(xp.zeros_like(x), -x))


@kernel("relu")
def _relu(env, st, x):
    return env.xp.maximum(x, env.xp.zeros_like(x))


@kernel("reciprocal")
def _reciprocal(env, st, x):
    return 1 / x


@kernel("softplus")
def _softplus(env, st, x):
    return env.xp.logaddexp(env.xp.zeros_like(x), x)


@kernel("log_sigmoid")
def _log_sigmoid(env, st, x):
    return -env.xp.logaddexp(env.xp.zeros_like(x), -x)


@kernel("clip")
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


@kernel("erf", "gammaln", "digamma")
def _special(env, st, x):
    return env.special(st.op_name, x)


@kernel("polygamma")
def _polygamma(env, st, x):
    return env.special("polygamma", x, st.op.n)


@kernel("where")
def _where(env, st, c, a, b):
    return env.xp.where(c, a, b)


@kernel("astype")
def _astype(env, st, x):
    return env.xp.astype(x, _dt(env, st.dtype))


# -- reductions and contractions -----------------------------------------------------------------


@kernel("sum")
def _sum(env, st, x):
    return env.xp.sum(x, axis=tuple(st.op.axis), keepdims=st.op.keepdims)


@kernel("mean")
def _mean(env, st, x):
    xp = env.xp
    if x.dtype not in (xp.float32, xp.float64):
        x = xp.astype(x, _dt(env, st.dtype))
    return xp.mean(x, axis=tuple(st.op.axis), keepdims=st.op.keepdims)


@kernel("max")
def _max(env, st, x):
    return env.xp.max(x, axis=tuple(st.op.axis), keepdims=st.op.keepdims)


@kernel("prod")
def _prod(env, st, x):
    return env.xp.prod(x, axis=tuple(st.op.axis), keepdims=st.op.keepdims)


@kernel("min")
def _min(env, st, x):
    return env.xp.min(x, axis=tuple(st.op.axis), keepdims=st.op.keepdims)


@kernel("var", "std")
def _var(env, st, x):
    xp = env.xp
    if x.dtype not in (xp.float32, xp.float64):
        x = xp.astype(x, _dt(env, st.dtype))
    return getattr(xp, st.op_name)(x, axis=tuple(st.op.axis), keepdims=st.op.keepdims, correction=st.op.ddof)


@kernel("cumsum")
def _cumsum(env, st, x):
    xp, a = env.xp, st.op.axis
    f = getattr(xp, "cumulative_sum", None) or xp.cumsum
    if st.op.reverse:
        return xp.flip(f(xp.flip(x, axis=a), axis=a), axis=a)
    return f(x, axis=a)


@kernel("argmax", "argmin")
def _argmax(env, st, x):
    return getattr(env.xp, st.op_name)(x, axis=st.op.axis, keepdims=st.op.keepdims)


@kernel("matmul")
def _matmul(env, st, a, b):
    return env.xp.matmul(a, b)


@kernel("einsum")
def _einsum(env, st, *xs):
    return env.einsum(st.op.subscripts, *xs)


@kernel("triangle")
def _triangle(env, st, x):
    xp, op = env.xp, st.op
    out = xp.tril(x) if op.lower else xp.triu(x)
    if op.diag != 1.0:
        r, c = x.shape[-2], x.shape[-1]
        on = xp.reshape(xp.arange(r), (r, 1)) == xp.reshape(xp.arange(c), (1, c))
        out = xp.where(on, out * op.diag, out)
    return out


@kernel("dot_all")
def _dot_all(env, st, a, b):
    return env.xp.sum(a * b)


# -- shapes --------------------------------------------------------------------------------------


@kernel("reshape", "reshape_like", "expand_dims", "squeeze")
def _reshape(env, st, x, *like):
    return env.xp.reshape(x, tuple(st.shape))


@kernel("transpose")
def _transpose(env, st, x):
    return env.xp.permute_dims(x, tuple(st.op.axes))


@kernel("broadcast_to", "broadcast_like")
def _broadcast(env, st, x, *like):
    return env.xp.broadcast_to(x, tuple(st.shape))


@kernel("sum_like")
def _sum_like(env, st, g, like):
    shape = tuple(st.shape)
    if tuple(g.shape) == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + k for k, d in enumerate(shape) if d == 1 and g.shape[lead + k] != 1)
    xp = env.xp
    return xp.reshape(xp.sum(g, axis=axes, keepdims=True), shape) if axes else xp.reshape(g, shape)


@kernel("zeros_like")
def _zeros_like(env, st, x):
    return env.xp.zeros(tuple(st.shape), dtype=_dt(env, st.dtype))


@kernel("count")
def _count(env, st, x):
    n = math.prod(x.shape[a] for a in st.op.axis)
    return env.asarray(n, dtype=_dt(env, st.dtype))


def _index(index: tuple) -> tuple:
    out = []
    for it in index:
        kind = it[0]
        out.append(slice(*it[1:]) if kind == "s" else it[1] if kind == "i" else None if kind == "new" else ...)
    return tuple(out)


@kernel("getitem")
def _getitem(env, st, x):
    return x[_index(st.op.index)]


@kernel("scatter_like")
def _scatter_like(env, st, g, like):
    """Zeros with g at a static basic index, built functionally: pad the selected block back to full size."""
    xp = env.xp
    z = xp.zeros(tuple(st.shape), dtype=_dt(env, st.dtype))
    return env.set_index(z, _index(st.op.index), g)


@kernel("concatenate")
def _concatenate(env, st, *xs):
    return env.xp.concat(list(xs), axis=st.op.axis)


@kernel("concat_part")
def _concat_part(env, st, g, *likes):
    a = st.op.axis
    start = sum(l.shape[a] for l in likes[: st.op.part])
    stop = start + likes[st.op.part].shape[a]
    return g[(slice(None),) * a + (slice(start, stop),)]


@kernel("stack")
def _stack(env, st, *xs):
    return env.xp.stack(list(xs), axis=st.op.axis)


@kernel("flip")
def _flip(env, st, x):
    return env.xp.flip(x, axis=tuple(st.op.axis))


@kernel("roll")
def _roll(env, st, x):
    return env.xp.roll(x, shift=tuple(st.op.shift), axis=tuple(st.op.axis))


@kernel("pad")
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


@kernel("tile")
def _tile(env, st, x):
    """np.tile as reshape, broadcast, reshape: (d,) -> (1, d) -> (r, d) -> (r * d,) per axis."""
    xp, reps = env.xp, tuple(st.op.reps)
    base = _tiled_base(x, reps)
    split = tuple(v for d in base for v in (1, d))
    wide = tuple(v for r, d in zip(reps, base) for v in (r, d))
    return xp.reshape(xp.broadcast_to(xp.reshape(x, split), wide), tuple(st.shape))


@kernel("tile_sum")
def _tile_sum(env, st, g, like):
    xp, reps = env.xp, tuple(st.op.reps)
    base = (1,) * (len(reps) - len(st.shape)) + tuple(st.shape)
    split = tuple(v for r, d in zip(reps, base) for v in (r, d))
    return xp.reshape(xp.sum(xp.reshape(g, split), axis=tuple(range(0, 2 * len(base), 2))), tuple(st.shape))


@kernel("repeat")
def _repeat(env, st, x):
    xp, a, n = env.xp, st.op.axis, st.op.n
    e = xp.expand_dims(x, axis=a + 1)
    return xp.reshape(xp.broadcast_to(e, tuple(x.shape[: a + 1]) + (n,) + tuple(x.shape[a + 1 :])), tuple(st.shape))


@kernel("repeat_sum")
def _repeat_sum(env, st, g):
    xp, a, n = env.xp, st.op.axis, st.op.n
    return xp.sum(xp.reshape(g, tuple(g.shape[:a]) + (g.shape[a] // n, n) + tuple(g.shape[a + 1 :])), axis=a + 1)


def _diag_layout(op, r: int, c: int, n: int) -> tuple[int, int]:
    """Where the diagonal lies in the flattened (r, c) matrix: (start, step)."""
    return max(0, -op.offset) * c + max(0, op.offset), c + 1


@kernel("diagonal")
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


@kernel("trace")
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


@kernel("diagonal_scatter")
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


@kernel("softmax")
def _softmax(env, st, x):
    xp, a = env.xp, st.op.axis
    e = xp.exp(x - _stable_max(xp, x, a))
    return e / xp.sum(e, axis=a, keepdims=True)


@kernel("log_softmax")
def _log_softmax(env, st, x):
    return x - logsumexp(env.xp, x, st.op.axis, True)


@kernel("logsumexp")
def _logsumexp(env, st, x):
    return logsumexp(env.xp, x, tuple(st.op.axis), st.op.keepdims)


def one_hot(env, labels, n: int, dtype):
    """labels.shape + (n,): 1 at each label (a comparison with arange: no scatter, any engine)."""
    xp = env.xp
    return xp.astype(xp.expand_dims(labels, axis=-1) == xp.arange(n, dtype=labels.dtype), dtype)


@kernel("one_hot")
def _one_hot(env, st, labels, like):
    return one_hot(env, labels, st.shape[-1], _dt(env, st.dtype))


@kernel("one_hot_depth")
def _one_hot_depth(env, st, labels):
    labels = env.check_labels(labels, st.op.depth, st.label)
    return one_hot(env, labels, st.op.depth, _dt(env, st.dtype))


@kernel("eye_like")
def _eye_like(env, st, like):
    n = st.shape[0]
    return env.xp.eye(n, n, k=st.op.k, dtype=_dt(env, st.dtype))


@kernel("softmax_cross_entropy")
def _softmax_cross_entropy(env, st, logits, labels):
    xp = env.xp
    c = logits.shape[-1]
    labels = env.check_labels(labels, c, st.label)
    picked = xp.sum(logits * one_hot(env, labels, c, logits.dtype), axis=-1)
    return xp.mean(logsumexp(xp, logits, -1, False) - picked)


@kernel("pick_mean")
def _pick_mean(env, st, logp, labels):
    xp = env.xp
    c = logp.shape[-1]
    labels = env.check_labels(labels, c, st.label)
    return -xp.mean(xp.sum(logp * one_hot(env, labels, c, logp.dtype), axis=-1))


@kernel("minus_one_hot")
def _minus_one_hot(env, st, p, labels):
    return p - one_hot(env, labels, p.shape[-1], p.dtype)


@kernel("mse")
def _mse(env, st, p, t):
    d = p - t
    return env.xp.mean(d * d)


# -- gathers and scatter-adds --------------------------------------------------------------------


@kernel("take")
def _take(env, st, x, idx):
    n = x.shape[st.op.axis]
    idx = env.check_labels(idx, n, st.label, -n)
    xp = env.xp
    idx = xp.where(idx < 0, idx + n, idx)
    flat = xp.reshape(idx, (-1,))
    got = xp.take(x, flat, axis=st.op.axis)
    return xp.reshape(got, tuple(st.shape))


@kernel("scatter_add")
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


@kernel("take_along_axis")
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


@kernel("scatter_add_along_axis")
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


@kernel("random_uniform")
def _random_uniform(env, st, key, *like):
    xp = env.xp
    dt = np.dtype(st.dtype)
    low, high = dt.type(st.op.low), dt.type(st.op.high)
    u = uniform_bits(env, key, tuple(st.shape), dt) * (high - low) + low
    return xp.minimum(
        xp.maximum(u, env.asarray(low, dtype=u.dtype)), env.asarray(np.nextafter(high, low), dtype=u.dtype)
    )


@kernel("random_normal")
def _random_normal(env, st, key, *like):
    xp = env.xp
    dt = np.dtype(st.dtype)
    lo = np.nextafter(dt.type(-1), dt.type(0))
    u = uniform_bits(env, key, tuple(st.shape), dt) * (dt.type(1) - lo) + lo
    u = xp.maximum(u, env.asarray(lo, dtype=u.dtype))
    return xp.astype(env.asarray(np.sqrt(2), dtype=u.dtype) * env.erfinv(u), _dt(env, dt))


@kernel("random_split")
def _random_split(env, st, key):
    n = st.op.n
    hi, lo = threefry2x32(env, key, env.asarray(np.zeros(n, np.uint32)), env.asarray(np.arange(n, dtype=np.uint32)))
    return env.xp.stack([hi, lo], axis=-1)


@kernel("random_bernoulli")
def _random_bernoulli(env, st, key, p):
    dt = np.dtype(p.dtype) if np.dtype(p.dtype) in (np.float32, np.float64) else np.dtype(np.float64)
    return uniform_bits(env, key, tuple(st.shape), dt) < p


@kernel("dropout_mask")
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
    """The op names with a functional kernel."""
    return sorted(KERNELS)


def missing_kernels(lowered: LoweredProgram) -> list[str]:
    return sorted({st.op_name for st in lowered.steps if st.op_name not in KERNELS})


def check_coverage(lowered: LoweredProgram, backend: str) -> None:
    """Refuse a program with ops the functional kernels do not cover (never a silently wrong result)."""
    missing = missing_kernels(lowered)
    if missing:
        users = [st.label for st in lowered.steps if st.op_name in missing][:3]
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
            r = KERNELS[st.op_name](env, st, *args)
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
