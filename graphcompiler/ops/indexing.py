"""Shape and indexing ops: stack, pad, flip, roll, tile, repeat, diagonal, trace, eye, one_hot and
take_along_axis, each with its derivative rule (integer-array gathers scatter-add back). take and scatter_add
are defined in shape.py, beside getitem (x[idx] is a take), and re-exported here.

Kernels always return fresh arrays (never a view of an input): the memory planner treats every op not in
its view list as owning its result. Integer indices are checked at run time: an index outside [-n, n)
raises (the evaluator names the node), never a wrapped or clipped wrong answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import GraphCompilerError, ShapeError, fmt_shape
from .base import Op, apply, broadcast_shapes, normalize_axes, normalize_axis, undefined_to_sympy
from . import shape as S
from .reductions import ArgSort, _flat_or_axis
from .shape import _check_range, _int_index, _static_range
from .shape import ScatterAdd, Take, fancy_index, is_fancy, scatter_add, take  # noqa: F401  defined with getitem


def _merge_dims(dims, what: str) -> Any:
    """Dims that must agree (None matches anything): the fixed one, or None."""
    fixed = {d for d in dims if d is not None}
    if len(fixed) > 1:
        raise ShapeError(f"{what}: sizes {', '.join(map(str, dims))} differ")
    return fixed.pop() if fixed else None


# -- stack ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stack(Op):
    """stack(xs, axis): inputs of one shape joined along a new axis (NumPy's stack)."""

    name: ClassVar[str] = "stack"
    axis: int = 0

    def infer(self, *xs):
        nd = xs[0].ndim
        for x in xs:
            if x.ndim != nd:
                raise ShapeError(
                    f"all inputs must have the same shape; {xs[0].name!r} has rank {nd} and {x.name!r} rank {x.ndim}"
                )
        if not 0 <= self.axis <= nd:
            raise ShapeError(f"axis {self.axis} is out of range for stacking values of rank {nd}")
        shape = [_merge_dims([x.shape[k] for x in xs], f"stack: dimension {k}") for k in range(nd)]
        shape.insert(self.axis, len(xs))
        return tuple(shape), np.result_type(*[x.dtype for x in xs])

    def kernel(self, *xs):
        return np.stack(xs, axis=self.axis)

    def bprop(self, i, x, y, g):  # d stack: input i gets slice i of g
        return S.getitem(g, (slice(None),) * self.axis + (i,))

    to_sympy = undefined_to_sympy


# -- pad, flip, roll --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pad(Op):
    """Constant padding; pad_width is flat: (before_0, after_0, before_1, after_1, ...)."""

    name: ClassVar[str] = "pad"
    arity: ClassVar[int] = 1
    pad_width: tuple = ()
    value: float = 0.0

    def infer(self, x):
        pw = self.pad_width
        if len(pw) != 2 * x.ndim or any(p < 0 for p in pw):
            raise ShapeError(f"pad_width {pw} needs a non-negative (before, after) pair for each of the {x.ndim} axes")
        return tuple(None if d is None else d + pw[2 * k] + pw[2 * k + 1] for k, d in enumerate(x.shape)), x.dtype

    def kernel(self, x):
        pw = self.pad_width
        return np.pad(x, [(pw[2 * k], pw[2 * k + 1]) for k in range(x.ndim)], constant_values=self.value)

    def bprop(self, i, x, y, g):  # the padded border adds nothing
        pw = self.pad_width
        return S.getitem(g, tuple(slice(pw[2 * k], -pw[2 * k + 1] or None) for k in range(g.ndim)))

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class Flip(Op):
    name: ClassVar[str] = "flip"
    arity: ClassVar[int] = 1
    axis: tuple = ()

    def infer(self, x):
        normalize_axes(self.axis, x.ndim, "flip", x)
        return x.shape, x.dtype

    def kernel(self, x):
        return np.flip(x, self.axis).copy()

    def bprop(self, i, x, y, g):  # a flip is its own inverse
        return apply(Flip(self.axis), (g,))

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class Roll(Op):
    name: ClassVar[str] = "roll"
    arity: ClassVar[int] = 1
    shift: tuple = ()
    axis: tuple = ()

    def infer(self, x):
        if len(self.shift) != len(self.axis):
            raise ShapeError(f"roll: {len(self.shift)} shifts for {len(self.axis)} axes")
        normalize_axes(self.axis, x.ndim, "roll", x)
        return x.shape, x.dtype

    def kernel(self, x):
        return np.roll(x, self.shift, self.axis)

    def bprop(self, i, x, y, g):  # roll back by the same shift
        return apply(Roll(tuple(-s for s in self.shift), self.axis), (g,))

    to_sympy = undefined_to_sympy


# -- tile and repeat, with their summing derivatives ------------------------------------------


def _tile_shape(shape: tuple, reps: tuple) -> tuple:
    shape = (1,) * (len(reps) - len(shape)) + tuple(shape)
    return tuple(None if d is None else d * r for d, r in zip(shape, reps))


@dataclass(frozen=True)
class Tile(Op):
    """np.tile with len(reps) >= x.ndim (the public function pads reps with leading ones)."""

    name: ClassVar[str] = "tile"
    arity: ClassVar[int] = 1
    reps: tuple = ()

    def infer(self, x):
        if len(self.reps) < x.ndim or any(r < 0 for r in self.reps):
            raise ShapeError(f"reps {self.reps} need a non-negative count for each of the {x.ndim} axes")
        return _tile_shape(x.shape, self.reps), x.dtype

    def kernel(self, x):
        return np.array(np.tile(x, self.reps), copy=True)

    def bprop(self, i, x, y, g):  # every copy's gradient adds up
        return apply(TileSum(self.reps), (g, x[0]))

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class TileSum(Op):
    """The derivative of tile: g of the tiled shape summed over its copies, to like's shape."""

    name: ClassVar[str] = "tile_sum"
    arity: ClassVar[int] = 2
    shape_only: ClassVar[tuple] = (1,)
    reps: tuple = ()

    def infer(self, g, like):
        if len(self.reps) < like.ndim or g.ndim != len(self.reps):
            raise ShapeError(f"tile_sum: reps {self.reps} do not fit {fmt_shape(g.shape)} and {fmt_shape(like.shape)}")
        return like.shape, g.dtype

    def kernel(self, g, like):
        base = (1,) * (len(self.reps) - like.ndim) + like.shape
        split = [v for r, d in zip(self.reps, base) for v in (r, d)]
        summed = g.reshape(split).sum(axis=tuple(range(0, 2 * len(base), 2)))
        return summed.reshape(like.shape)

    def bprop(self, i, x, y, g):
        if i != 0:
            return None
        return S.reshape_to(apply(Tile(self.reps), (g,)), x[0])

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class Repeat(Op):
    """np.repeat(x, n, axis) with one count n for every element."""

    name: ClassVar[str] = "repeat"
    arity: ClassVar[int] = 1
    n: int = 1
    axis: int = 0

    def infer(self, x):
        normalize_axis(self.axis, x.ndim, "repeat", x)
        if self.n < 0:
            raise ShapeError(f"repeat count {self.n} must be non-negative")
        d = x.shape[self.axis]
        return x.shape[: self.axis] + (None if d is None else d * self.n,) + x.shape[self.axis + 1 :], x.dtype

    def kernel(self, x):
        return np.repeat(x, self.n, axis=self.axis)

    def bprop(self, i, x, y, g):  # each run of n copies sums back
        return apply(RepeatSum(self.n, self.axis), (g,))

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class RepeatSum(Op):
    """The derivative of repeat: sums of n consecutive entries along axis."""

    name: ClassVar[str] = "repeat_sum"
    arity: ClassVar[int] = 1
    n: int = 1
    axis: int = 0

    def infer(self, g):
        normalize_axis(self.axis, g.ndim, "repeat_sum", g)
        d = g.shape[self.axis]
        if self.n < 1 or d is not None and d % self.n:
            raise ShapeError(f"repeat_sum: axis {self.axis} of size {d} is not a multiple of {self.n}")
        return g.shape[: self.axis] + (None if d is None else d // self.n,) + g.shape[self.axis + 1 :], g.dtype

    def kernel(self, g):
        a = self.axis
        return g.reshape(g.shape[:a] + (g.shape[a] // self.n, self.n) + g.shape[a + 1 :]).sum(axis=a + 1)

    def bprop(self, i, x, y, g):
        return apply(Repeat(self.n, self.axis), (g,))

    to_sympy = undefined_to_sympy


# -- diagonal and trace -----------------------------------------------------------------------


def _diag_len(d1, d2, offset: int):
    if d1 is None or d2 is None:
        return None
    return max(0, min(d1, d2 - offset) if offset >= 0 else min(d1 + offset, d2))


def _check_diag_axes(op, x) -> None:
    if x.ndim < 2:
        raise ShapeError(f"{op.name} needs a value of rank >= 2, got {fmt_shape(x.shape)} from {x.name!r}")
    for a in (op.axis1, op.axis2):
        if not 0 <= a < x.ndim:
            raise ShapeError(f"{op.name}: axis {a} is out of range for {x.name!r} of rank {x.ndim}")
    if op.axis1 == op.axis2:
        raise ShapeError(f"{op.name}: axis1 and axis2 cannot be the same ({op.axis1})")


def _diag_view(a: np.ndarray, offset: int, axis1: int, axis2: int):
    """(view of a with the two axes last, row indices, column indices) of the diagonal."""
    m = np.moveaxis(a, (axis1, axis2), (-2, -1))
    n = _diag_len(m.shape[-2], m.shape[-1], offset)
    k = np.arange(n)
    return m, k + max(0, -offset), k + max(0, offset)


@dataclass(frozen=True)
class Diagonal(Op):
    """np.diagonal(x, offset, axis1, axis2): the other axes first, the diagonal last (a fresh copy)."""

    name: ClassVar[str] = "diagonal"
    arity: ClassVar[int] = 1
    offset: int = 0
    axis1: int = 0
    axis2: int = 1

    def infer(self, x):
        _check_diag_axes(self, x)
        rest = tuple(d for k, d in enumerate(x.shape) if k not in (self.axis1, self.axis2))
        return rest + (_diag_len(x.shape[self.axis1], x.shape[self.axis2], self.offset),), x.dtype

    def kernel(self, x):
        return np.diagonal(x, self.offset, self.axis1, self.axis2).copy()

    def bprop(self, i, x, y, g):  # g back onto the diagonal of zeros
        return apply(DiagonalScatter(self.offset, self.axis1, self.axis2), (g, x[0]))

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class DiagonalScatter(Op):
    """Zeros of like's shape with g (broadcast) written on the diagonal: the derivative of diagonal/trace."""

    name: ClassVar[str] = "diagonal_scatter"
    arity: ClassVar[int] = 2
    shape_only: ClassVar[tuple] = (1,)
    offset: int = 0
    axis1: int = 0
    axis2: int = 1

    def infer(self, g, like):
        _check_diag_axes(self, like)
        return like.shape, g.dtype

    def kernel(self, g, like):
        out = np.zeros(like.shape, g.dtype)
        m, r, c = _diag_view(out, self.offset, self.axis1, self.axis2)
        m[..., r, c] = g
        return out

    def bprop(self, i, x, y, g):
        if i != 0:
            return None
        return S.sum_to(apply(Diagonal(self.offset, self.axis1, self.axis2), (g,)), x[0])

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class Trace(Op):
    """np.trace(x, offset, axis1, axis2): the sum of a diagonal (of a matrix: tr X)."""

    name: ClassVar[str] = "trace"
    arity: ClassVar[int] = 1
    offset: int = 0
    axis1: int = 0
    axis2: int = 1

    def infer(self, x):
        _check_diag_axes(self, x)
        return tuple(d for k, d in enumerate(x.shape) if k not in (self.axis1, self.axis2)), x.dtype

    def kernel(self, x):
        return np.asarray(np.trace(x, self.offset, self.axis1, self.axis2))

    def bprop(self, i, x, y, g):  # d tr(X) = I (on the chosen diagonal)
        return apply(DiagonalScatter(self.offset, self.axis1, self.axis2), (S.expand_dims(g, -1), x[0]))

    def to_sympy(self, node, x):
        from ..symbolic_terms import of_matrix, sp, to_matrix

        if node.inputs[0].ndim == 2 and self.offset == 0:
            return of_matrix((), sp.Trace(to_matrix(x)))  # tr(X)
        return undefined_to_sympy(self, node, x)


# -- one_hot ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OneHotDepth(Op):
    """one_hot(labels, depth): labels.shape + (depth,), 1 at each label; a label outside [0, depth) raises.

    (The op `one_hot` is the cross-entropy's internal form, shaped like its logits.)
    """

    name: ClassVar[str] = "one_hot_depth"
    arity: ClassVar[int] = 1
    depth: int = 1
    dtype: str = "float64"

    def __post_init__(self):
        object.__setattr__(self, "dtype", np.dtype(self.dtype).name)

    def infer(self, labels):
        _int_index(labels, "one_hot")
        if self.depth < 0:
            raise ShapeError(f"one_hot depth {self.depth} must be non-negative")
        return labels.shape + (self.depth,), np.dtype(self.dtype)

    def kernel(self, labels):
        if labels.size and (labels.min() < 0 or labels.max() >= self.depth):
            bad = labels[(labels < 0) | (labels >= self.depth)].ravel()[0]
            raise IndexError(
                f"label {int(bad)} is out of range for depth {self.depth} (labels must be in [0, {self.depth}))"
            )
        return (labels[..., None] == np.arange(self.depth)).astype(self.dtype)

    to_sympy = undefined_to_sympy  # integer labels: no bprop (undefined)


@dataclass(frozen=True)
class EyeLike(Op):
    """eye_like(x, axis): the identity as large as x's axis, which may be a run-time (None) dim; x is read
    for its shape only (K + s * eye_like(K) for a kernel matrix of any size)."""

    name: ClassVar[str] = "eye_like"
    arity: ClassVar[int] = 1
    shape_only: ClassVar[tuple] = (0,)
    piecewise_constant: ClassVar[bool] = True
    axis: int = -1
    k: int = 0
    dtype: str = "float64"

    def __post_init__(self):
        object.__setattr__(self, "dtype", np.dtype(self.dtype).name)

    def infer(self, x):
        axis = normalize_axis(self.axis, x.ndim, "eye_like", x)
        return (x.shape[axis], x.shape[axis]), np.dtype(self.dtype)

    def kernel(self, x):
        n = x.shape[self.axis]
        return np.eye(n, n, self.k, dtype=self.dtype)

    def to_sympy(self, node, x):
        from ..symbolic_terms import _dim, of_matrix, sp

        if self.k:
            return undefined_to_sympy(self, node, x)
        return of_matrix(node.shape, sp.Identity(_dim(node.shape[0])))  # I_n (n: a run-time dim)


# -- gathers and their scatter-adds -----------------------------------------------------------


@dataclass(frozen=True)
class TakeAlongAxis(Op):
    """np.take_along_axis(x, idx, axis): idx of x's rank, broadcast with x on the other axes."""

    name: ClassVar[str] = "take_along_axis"
    arity: ClassVar[int] = 2
    axis: int = 0

    def infer(self, x, idx):
        _int_index(idx, "take_along_axis")
        if idx.ndim != x.ndim:
            raise ShapeError(
                f"indices {idx.name!r} of shape {fmt_shape(idx.shape)} must have the rank of "
                f"{x.name!r} {fmt_shape(x.shape)}"
            )
        normalize_axis(self.axis, x.ndim, "take_along_axis", x)
        a = self.axis
        rest = broadcast_shapes(x.shape[:a] + x.shape[a + 1 :], idx.shape[:a] + idx.shape[a + 1 :])
        return rest[:a] + (idx.shape[a],) + rest[a:], x.dtype

    def kernel(self, x, idx):
        _check_range(idx, x.shape[self.axis], self.axis)
        a = self.axis
        shape = np.broadcast_shapes(x.shape[:a] + (1,) + x.shape[a + 1 :], idx.shape[:a] + (1,) + idx.shape[a + 1 :])
        xb = np.broadcast_to(x, shape[:a] + (x.shape[a],) + shape[a + 1 :])
        ib = np.broadcast_to(idx, shape[:a] + (idx.shape[a],) + shape[a + 1 :])
        return np.take_along_axis(xb, ib, axis=a)

    def bprop(self, i, x, y, g):
        return apply(ScatterAddAlongAxis(self.axis), (x[0], x[1], g))

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class ScatterAddAlongAxis(Op):
    """The derivative of take_along_axis: values added at idx along axis into zeros of target's shape
    (summed over the axes where target was broadcast against idx)."""

    name: ClassVar[str] = "scatter_add_along_axis"
    arity: ClassVar[int] = 3
    shape_only: ClassVar[tuple] = (0,)
    axis: int = 0

    def infer(self, target, idx, values):
        _int_index(idx, "scatter_add_along_axis")
        normalize_axis(self.axis, target.ndim, "scatter_add_along_axis", target)
        if not idx.ndim == values.ndim == target.ndim:
            raise ShapeError(
                f"target {fmt_shape(target.shape)}, indices {fmt_shape(idx.shape)} and values "
                f"{fmt_shape(values.shape)} must have one rank"
            )
        a = self.axis
        rest = broadcast_shapes(target.shape[:a] + target.shape[a + 1 :], idx.shape[:a] + idx.shape[a + 1 :])
        want = rest[:a] + (idx.shape[a],) + rest[a:]
        if any(p is not None and q is not None and p != q for p, q in zip(want, values.shape)):
            raise ShapeError(f"values of shape {fmt_shape(values.shape)} must have shape {fmt_shape(want)}")
        return target.shape, values.dtype

    def kernel(self, target, idx, values):
        a = self.axis
        _check_range(idx, target.shape[a], a)
        full_shape = values.shape[:a] + (target.shape[a],) + values.shape[a + 1 :]
        out = np.zeros(full_shape, values.dtype)
        ib = np.broadcast_to(idx, values.shape)
        grid = list(np.indices(values.shape, sparse=True))
        grid[a] = ib
        np.add.at(out, tuple(grid), values)
        return S.unbroadcast(out, target.shape)

    def bprop(self, i, x, y, g):
        if i == 0:
            return None
        return apply(TakeAlongAxis(self.axis), (g, x[1]))

    to_sympy = undefined_to_sympy


# -- the public functions -------------------------------------------------------------------


def stack(xs, axis: int = 0, name: str | None = None):
    xs = list(xs)
    if not xs:
        raise ShapeError("stack needs at least one input")
    nd = max(S._ndim(x) for x in xs)
    return apply(Stack(normalize_axis(axis, nd + 1, "stack")), tuple(xs), name)


def pad(x, pad_width, value: float = 0, name: str | None = None):
    """Constant padding as np.pad(x, pad_width, constant_values=value); pad_width as NumPy takes it."""
    try:
        pairs = np.broadcast_to(np.asarray(pad_width, dtype=object), (x.ndim, 2))
        flat = tuple(int(p) for p in pairs.ravel())
        if any(int(p) != p for p in pairs.ravel()):
            raise ValueError
    except (ValueError, TypeError):
        raise ShapeError(
            f"pad{' ' + repr(name) if name else ''}: pad_width {pad_width!r} must be an int, a "
            f"(before, after) pair or one pair per axis of {x.name!r} {fmt_shape(x.shape)}"
        ) from None
    return apply(Pad(flat, float(value)), (x,), name)


def flip(x, axis=None, name: str | None = None):
    return apply(Flip(normalize_axes(axis, x.ndim, "flip", x)), (x,), name)


def roll(x, shift, axis=None, name: str | None = None):
    """np.roll: with axis=None the flattened value is rolled (a fixed shape is needed for that)."""
    if axis is None:
        if any(d is None for d in x.shape):
            raise ShapeError(
                f"roll of {x.name!r} {fmt_shape(x.shape)} with axis=None needs a fixed shape; give the axis"
            )
        flat = apply(Roll((int(shift),), (0,)), (S.reshape(x, (-1,)),))
        return S.reshape(flat, x.shape) if name is None else S.reshape(flat, x.shape, name=name)
    shifts = (shift,) if isinstance(shift, (int, np.integer)) else tuple(shift)
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    if len(shifts) == 1 and len(axes) > 1:
        shifts = shifts * len(axes)
    if len(shifts) != len(axes):
        raise ShapeError(f"roll: {len(shifts)} shifts for {len(axes)} axes")
    total: dict[int, int] = {}
    for s, a in zip(shifts, axes):  # NumPy adds the shifts of a repeated axis
        k = normalize_axis(a, x.ndim, "roll", x)
        total[k] = total.get(k, 0) + int(s)
    keys = tuple(sorted(total))
    return apply(Roll(tuple(total[k] for k in keys), keys), (x,), name)


def tile(x, reps, name: str | None = None):
    reps = (reps,) if isinstance(reps, (int, np.integer)) else tuple(reps)
    reps = (1,) * (x.ndim - len(reps)) + tuple(int(r) for r in reps)
    return apply(Tile(reps), (x,), name)


def repeat(x, n: int, axis: int | None = None, name: str | None = None):
    """np.repeat with one count for every element; axis=None repeats the flattened value."""
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
        raise ShapeError(f"repeat: the count must be one int (per-element counts are not supported), got {n!r}")
    if axis is None:
        x, axis = S.reshape(x, (-1,)), 0
    return apply(Repeat(int(n), normalize_axis(axis, x.ndim, "repeat", x)), (x,), name)


def diagonal(x, offset: int = 0, axis1: int = 0, axis2: int = 1, name: str | None = None):
    a1, a2 = (normalize_axis(a, max(x.ndim, 1), "diagonal", x) for a in (axis1, axis2))
    return apply(Diagonal(int(offset), a1, a2), (x,), name)


def trace(x, offset: int = 0, axis1: int = 0, axis2: int = 1, name: str | None = None):
    """The matrix trace, np.trace(x, offset, axis1, axis2) (not a function tracer: see gc.make_graph)."""
    a1, a2 = (normalize_axis(a, max(x.ndim, 1), "trace", x) for a in (axis1, axis2))
    return apply(Trace(int(offset), a1, a2), (x,), name)


def eye(n: int, m: int | None = None, k: int = 0, dtype: Any = "float64", *, graph=None, name: str | None = None):
    """The identity np.eye(n, m, k, dtype) of fixed size, as jnp.eye: a constant of `graph` when given, else
    the NumPy array, which any op taking it alongside a node turns into a constant of that node's graph.
    For an identity sized at run time (a None dim), use eye_like."""
    if hasattr(n, "op") or hasattr(m, "op"):
        raise ShapeError(
            "eye(n) takes int sizes (a graph's shapes do not depend on values); for an identity as large as "
            "a run-time dim of a node x, write gc.eye_like(x, axis)"
        )
    if name is not None and graph is None:
        raise GraphCompilerError(
            f"eye({n}, name={name!r}) has no graph to put a named node in: pass graph=g (a named constant), "
            "or drop name= (a NumPy array that becomes a constant of the graph it is used with)"
        )
    value = np.eye(int(n), None if m is None else int(m), int(k), dtype=np.dtype(dtype))
    return value if graph is None else graph.constant(value, name=name)


def eye_like(x, axis: int = -1, k: int = 0, dtype: Any = None, name: str | None = None):
    """The n x n identity (ones on diagonal k) with n = x.shape[axis], a run-time dim when it is None:
    `K + s * gc.eye_like(K)`. dtype: x's floating dtype by default."""
    dt = np.dtype(dtype) if dtype is not None else x.dtype if x.dtype.kind == "f" else np.dtype("float64")
    return apply(EyeLike(normalize_axis(axis, x.ndim, "eye_like", x), int(k), dt.name), (x,), name)


def one_hot(labels, depth: int, dtype: Any = "float64", name: str | None = None):
    """labels.shape + (depth,) with a 1 at each (integer) label; labels carry no gradient."""
    return apply(OneHotDepth(int(depth), np.dtype(dtype).name), (labels,), name)


def take_along_axis(x, idx, axis: int, name: str | None = None):
    axis = normalize_axis(axis, x.ndim, "take_along_axis", x)
    _static_range(x, idx, axis, "take_along_axis", name)
    return apply(TakeAlongAxis(axis), (x, idx), name)


def sort(x, axis: int | None = -1, name: str | None = None):
    """np.sort(x, axis): take_along_axis(x, argsort(x)), so the gradient goes back through the permutation
    (each sorted value's gradient to the element it came from; ties: to the one the stable sort put there)."""
    x, a = _flat_or_axis(x, axis, "sort")
    return take_along_axis(x, apply(ArgSort(a), (x,)), a, name=name)
