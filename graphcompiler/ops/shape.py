"""Ops that move data without arithmetic: reshape, transpose, broadcast, slicing, gathers, concatenation.

getitem is defined here with both its forms: a static slice (a view) and an integer array index (a take,
whose derivative scatter-adds); indexing.py re-exports take, scatter_add and their op classes.

Also the internal `*_like` ops the derivative rules need when a size is fixed only at run time: their second
input is read for its shape alone (`shape_only`), so a compiled program need not keep its value alive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import DTypeError, ShapeError, fmt_shape
from ..graph import Node
from .base import (
    Op,
    apply,
    broadcast_shapes,
    install,
    is_static,
    normalize_axes,
    normalize_axis,
    size_of,
    undefined_to_sympy,
)


# -- reshape, transpose, expand/squeeze ------------------------------------------------------


@dataclass(frozen=True)
class Reshape(Op):
    name: ClassVar[str] = "reshape"
    sympy_any_rank: ClassVar[bool] = True
    is_view: ClassVar[bool] = True

    def fast_kernel(self, writes, shape, in_shape, dtype):
        return _reshape_kernel(self, shape, in_shape)

    arity: ClassVar[int] = 1
    shape: tuple = ()

    def infer(self, x):
        target = list(self.shape)
        if target.count(-1) > 1:
            raise ShapeError(f"at most one -1 in a reshape target, got {self.shape}")
        if is_static(x.shape):
            n = size_of(x.shape)
            known = size_of([d for d in target if d != -1])
            if -1 in target:
                if known == 0 or n % known:
                    raise ShapeError(f"cannot reshape {fmt_shape(x.shape)} ({n} elements) to {self.shape}")
                target[target.index(-1)] = n // known
            elif known != n:
                raise ShapeError(
                    f"cannot reshape {fmt_shape(x.shape)} ({n} elements) to {fmt_shape(self.shape)} ({known} elements)"
                )
            return tuple(target), x.dtype
        return tuple(None if d == -1 else d for d in target), x.dtype

    def kernel(self, x):
        return np.reshape(x, self.shape)

    def bprop(self, i, x, y, g):
        return reshape_to(g, x[0])

    def to_sympy(self, node, x):
        from ..symbolic_terms import reshape

        return reshape(node, x)  # the same matrix, or its transpose


@dataclass(frozen=True)
class ReshapeLike(Op):
    name: ClassVar[str] = "reshape_like"
    sympy_any_rank: ClassVar[bool] = True
    is_view: ClassVar[bool] = True
    arity: ClassVar[int] = 2
    shape_only: ClassVar[tuple] = (1,)

    def infer(self, x, like):
        return like.shape, x.dtype

    def kernel(self, x, like):
        return np.reshape(x, like.shape)

    def bprop(self, i, x, y, g):
        return reshape_to(g, x[0])

    def to_sympy(self, node, x, like):
        from ..symbolic_terms import reshape

        return reshape(node, x)


@dataclass(frozen=True)
class Transpose(Op):
    name: ClassVar[str] = "transpose"
    is_view: ClassVar[bool] = True

    def fast_kernel(self, writes, shape, in_shape, dtype):
        if len(in_shape):
            return np.ndarray.transpose, (tuple(self.axes),), {}
        return self.kernel, (), {}

    arity: ClassVar[int] = 1
    axes: tuple = ()

    def infer(self, x):
        if sorted(self.axes) != list(range(x.ndim)):
            raise ShapeError(f"axes {self.axes} are not a permutation of the {x.ndim} axes of {x.name!r}")
        return tuple(x.shape[a] for a in self.axes), x.dtype

    def kernel(self, x):
        return np.transpose(x, self.axes)

    def bprop(self, i, x, y, g):
        return transpose(g, tuple(int(a) for a in np.argsort(self.axes)))  # the inverse permutation

    def to_sympy(self, node, x):
        from ..symbolic_terms import transpose

        return transpose(node, x, self.axes)  # X^T


@dataclass(frozen=True)
class ExpandDims(Op):
    name: ClassVar[str] = "expand_dims"
    sympy_any_rank: ClassVar[bool] = True
    is_view: ClassVar[bool] = True

    def fast_kernel(self, writes, shape, in_shape, dtype):
        return _reshape_kernel(self, shape, in_shape)

    arity: ClassVar[int] = 1
    axis: tuple = ()

    def infer(self, x):
        shape = list(x.shape)
        for a in self.axis:
            shape.insert(a, 1)
        return tuple(shape), x.dtype

    def kernel(self, x):
        return np.expand_dims(x, self.axis)

    def bprop(self, i, x, y, g):
        return squeeze(g, self.axis)

    def to_sympy(self, node, x):
        from ..symbolic_terms import reshape

        return reshape(node, x)


@dataclass(frozen=True)
class Squeeze(Op):
    name: ClassVar[str] = "squeeze"
    sympy_any_rank: ClassVar[bool] = True
    is_view: ClassVar[bool] = True

    def fast_kernel(self, writes, shape, in_shape, dtype):
        return _reshape_kernel(self, shape, in_shape)

    arity: ClassVar[int] = 1
    axis: tuple = ()

    def infer(self, x):
        for a in self.axis:
            if x.shape[a] not in (1, None):
                raise ShapeError(f"cannot squeeze axis {a} of size {x.shape[a]}")
        return tuple(d for k, d in enumerate(x.shape) if k not in self.axis), x.dtype

    def kernel(self, x):
        return np.squeeze(x, self.axis)

    def bprop(self, i, x, y, g):
        return expand_dims(g, self.axis)

    def to_sympy(self, node, x):
        from ..symbolic_terms import reshape

        return reshape(node, x)


# -- broadcasting and its inverse -------------------------------------------------------------
# broadcast_to's derivative sums the broadcast axes (sum_to, a Sum node) and sum's derivative broadcasts, so the
# Sum op and its Reduction base class are defined here; reduce.py defines sum, mean and max on top of them.


@dataclass(frozen=True)
class BroadcastTo(Op):
    name: ClassVar[str] = "broadcast_to"
    sympy_any_rank: ClassVar[bool] = True
    is_view: ClassVar[bool] = True
    arity: ClassVar[int] = 1
    shape: tuple = ()

    def infer(self, x):
        if len(self.shape) < x.ndim or broadcast_shapes(x.shape, self.shape) != tuple(self.shape):
            raise ShapeError(f"cannot broadcast {fmt_shape(x.shape)} to {fmt_shape(self.shape)}")
        return tuple(self.shape), x.dtype

    def kernel(self, x):
        return np.broadcast_to(x, self.shape)

    def bprop(self, i, x, y, g):
        return sum_to(g, x[0])

    def to_sympy(self, node, x):
        from ..symbolic_terms import broadcast

        return broadcast(node, x)  # with ones vectors: v 1^T


@dataclass(frozen=True)
class BroadcastLike(Op):
    name: ClassVar[str] = "broadcast_like"
    sympy_any_rank: ClassVar[bool] = True
    is_view: ClassVar[bool] = True
    arity: ClassVar[int] = 2
    shape_only: ClassVar[tuple] = (1,)

    def infer(self, x, like):
        return broadcast_shapes(x.shape, like.shape), x.dtype

    def kernel(self, x, like):
        return np.broadcast_to(x, np.broadcast_shapes(x.shape, like.shape))

    def bprop(self, i, x, y, g):
        return sum_to(g, x[0])

    def to_sympy(self, node, x, like):
        from ..symbolic_terms import broadcast

        return broadcast(node, x)


@dataclass(frozen=True)
class SumLike(Op):
    """Sum g down to the shape of `like`: the inverse of broadcasting, for sizes known only at run time."""

    name: ClassVar[str] = "sum_like"
    is_view: ClassVar[bool] = True
    arity: ClassVar[int] = 2
    shape_only: ClassVar[tuple] = (1,)

    def infer(self, g, like):
        return like.shape, g.dtype

    def kernel(self, g, like):
        return unbroadcast(g, like.shape)

    def bprop(self, i, x, y, g):
        return broadcast_to_node(g, x[0])

    def to_sympy(self, node, g, like):
        from ..symbolic_terms import sum_to

        return sum_to(node, g, like)  # G 1, 1^T G


def unbroadcast(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum the broadcast axes of g so that it has `shape` (NumPy, run time)."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + k for k, d in enumerate(shape) if d == 1 and g.shape[lead + k] != 1)
    return np.sum(g, axis=axes, keepdims=True).reshape(shape) if axes else g.reshape(shape)


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
        return g if self.keepdims or not self.axis else expand_dims(g, self.axis)


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
        return broadcast_to_node(self.keep(g), x[0])  # d sum(a) = 1 for every element

    def to_sympy(self, node, x):
        from ..symbolic_terms import reduce_sum

        return reduce_sum(node, x, self.axis, self.keepdims)  # 1^T X 1, tr(A^T B)


def reduction(cls, x, axis, keepdims, name):
    """A node of the Reduction `cls` over `axis` (None: every axis) of x."""
    axes = normalize_axes(axis, x.ndim, cls.name, x)
    return apply(cls(axes, bool(keepdims)), (x,), name)


def sum_to(g, x):
    """The gradient g of a broadcast result, summed to the shape of the operand x (undoes broadcasting).

    Decided statically where the shapes say which axes were broadcast; a None dim is taken to match the
    None dim it lines up with. Otherwise a sum_like node decides at run time.
    """
    if g.shape == x.shape:
        return g
    lead = g.ndim - x.ndim
    axes = list(range(lead))
    for k, d in enumerate(x.shape):
        gd = g.shape[lead + k]
        if d == gd:
            continue
        if d == 1:
            axes.append(lead + k)
        else:  # x's dim is None against a fixed size (or the other way): decide at run time
            return apply(SumLike(), (g, x))
    out = reduction(Sum, g, tuple(axes), True, None) if axes else g
    return (
        reshape(out, x.shape)
        if out.shape != x.shape and is_static(x.shape)
        else (squeeze(out, tuple(range(lead))) if lead else out)
    )


def broadcast_to_node(g, x):
    """g broadcast to x's shape: statically when x's shape is fixed, else at run time."""
    if g.shape == x.shape:
        return g
    if is_static(x.shape):
        return broadcast_to(g, x.shape)
    return apply(BroadcastLike(), (g, x))


def reshape_to(g, x):
    if g.shape == x.shape and is_static(x.shape):
        return g
    if is_static(x.shape):
        return reshape(g, x.shape)
    return apply(ReshapeLike(), (g, x))


@dataclass(frozen=True)
class ZerosLike(Op):
    name: ClassVar[str] = "zeros_like"
    sympy_any_rank: ClassVar[bool] = True
    arity: ClassVar[int] = 1
    shape_only: ClassVar[tuple] = (0,)
    piecewise_constant: ClassVar[bool] = True

    def infer(self, x):
        return x.shape, x.dtype

    def kernel(self, x):
        return np.zeros(x.shape, x.dtype)

    def to_sympy(self, node, x):
        from ..symbolic_terms import zeros

        return zeros(node)


@dataclass(frozen=True)
class Count(Op):
    """The number of elements of x (over `axis`) as a scalar of `dtype`: a mean's divisor at run time."""

    name: ClassVar[str] = "count"
    sympy_any_rank: ClassVar[bool] = True
    arity: ClassVar[int] = 1
    shape_only: ClassVar[tuple] = (0,)
    piecewise_constant: ClassVar[bool] = True
    axis: tuple = ()
    dtype: str = "float64"

    def infer(self, x):
        return (), np.dtype(self.dtype)

    def kernel(self, x):
        return np.array(size_of([x.shape[a] for a in self.axis]), dtype=self.dtype)

    def to_sympy(self, node, x):
        from ..symbolic_terms import count

        return count(node, node.inputs[0], self.axis)  # a product of dims, n at run time


def count(x, axis, dtype):
    """Number of elements of x over `axis`: a constant when those dims are fixed, a count node otherwise."""
    dims = [x.shape[a] for a in axis]
    if is_static(dims):
        return np.array(size_of(dims), dtype=dtype)
    return apply(Count(tuple(axis), np.dtype(dtype).name), (x,))


# -- slicing and concatenation ---------------------------------------------------------------


def _encode_index(index, ndim: int, what: str) -> tuple:
    """A static NumPy basic index -> a hashable tuple: ("i", k), ("s", start, stop, step), ("new",), ("...",)."""
    if not isinstance(index, tuple):
        index = (index,)
    out: list[tuple] = []
    for it in index:
        if isinstance(it, slice):
            for v in (it.start, it.stop, it.step):
                if v is not None and (not isinstance(v, (int, np.integer)) or isinstance(v, bool)):
                    raise ShapeError(f"{what}: slice bounds must be static ints, got {it!r}")
            if it.step == 0:
                raise ShapeError(f"{what}: slice step cannot be zero")
            out.append(("s", _int(it.start), _int(it.stop), _int(it.step)))
        elif it is None:
            out.append(("new",))
        elif it is Ellipsis:
            out.append(("...",))
        elif isinstance(it, (int, np.integer)) and not isinstance(it, bool):
            out.append(("i", int(it)))
        else:
            raise ShapeError(
                f"{what}: only static ints, slices, None and ... can index a node, not "
                f"{type(it).__name__} {it!r} (no fancy or boolean indexing)"
            )
    if sum(1 for it in out if it[0] == "...") > 1:
        raise ShapeError(f"{what}: an index can have only one ellipsis")
    consumed = sum(1 for it in out if it[0] in ("i", "s"))
    if consumed > ndim:
        raise ShapeError(f"{what}: too many indices ({consumed}) for a value of rank {ndim}")
    return tuple(out)


def _int(v):
    return None if v is None else int(v)


def _decode_index(index: tuple) -> tuple:
    out = []
    for it in index:
        kind = it[0]
        out.append(slice(*it[1:]) if kind == "s" else it[1] if kind == "i" else None if kind == "new" else ...)
    return tuple(out)


@dataclass(frozen=True)
class GetItem(Op):
    name: ClassVar[str] = "getitem"
    is_view: ClassVar[bool] = True
    arity: ClassVar[int] = 1
    index: tuple = ()

    def infer(self, x):
        idx = list(self.index)
        n_used = sum(1 for it in idx if it[0] in ("i", "s"))
        if ("...",) in idx:
            k = idx.index(("...",))
            idx[k : k + 1] = [("s", None, None, None)] * (x.ndim - n_used)
        idx += [("s", None, None, None)] * (x.ndim - sum(1 for it in idx if it[0] in ("i", "s")))
        shape, axis = [], 0
        for it in idx:
            if it[0] == "new":
                shape.append(1)
                continue
            d = x.shape[axis]
            if it[0] == "i":
                if d is not None and not -d <= it[1] < d:
                    raise ShapeError(f"index {it[1]} is out of bounds for axis {axis} of size {d}")
            else:
                shape.append(None if d is None else len(range(*slice(*it[1:]).indices(d))))
            axis += 1
        return tuple(shape), x.dtype

    def kernel(self, x):
        return x[_decode_index(self.index)]

    def bprop(self, i, x, y, g):
        return apply(ScatterLike(self.index), (g, x[0]))  # g placed into zeros of x's shape

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class ScatterLike(Op):
    """Zeros of like's shape with g written at a static index: the derivative of x[index]."""

    name: ClassVar[str] = "scatter_like"
    arity: ClassVar[int] = 2
    shape_only: ClassVar[tuple] = (1,)
    index: tuple = ()

    def infer(self, g, like):
        return like.shape, g.dtype

    def kernel(self, g, like):
        out = np.zeros(like.shape, g.dtype)
        out[_decode_index(self.index)] = g
        return out

    def bprop(self, i, x, y, g):
        return apply(GetItem(self.index), (g,))

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class Concatenate(Op):
    name: ClassVar[str] = "concatenate"
    axis: int = 0

    def infer(self, *xs):
        nd = xs[0].ndim
        if nd == 0:
            raise ShapeError("cannot concatenate scalars; reshape them to (1,) first")
        for x in xs:
            if x.ndim != nd:
                raise ShapeError(
                    f"all inputs must have the same rank; {xs[0].name!r} has rank {nd} and {x.name!r} rank {x.ndim}"
                )
        shape = []
        for k in range(nd):
            dims = [x.shape[k] for x in xs]
            if k == self.axis:
                shape.append(None if None in dims else sum(dims))
            else:
                fixed = {d for d in dims if d is not None}
                if len(fixed) > 1:
                    raise ShapeError(
                        f"dimension {k} differs ({', '.join(map(str, dims))}); only axis {self.axis} may differ"
                    )
                shape.append(fixed.pop() if fixed else None)
        dtype = np.result_type(*[x.dtype for x in xs])
        return tuple(shape), dtype

    def kernel(self, *xs):
        return np.concatenate(xs, axis=self.axis)

    def bprop(self, i, x, y, g):
        return apply(ConcatPart(self.axis, i), (g, *x))

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class ConcatPart(Op):
    """The part of g that input `part` of a concatenation filled (the derivative of concatenate)."""

    name: ClassVar[str] = "concat_part"
    is_view: ClassVar[bool] = True
    axis: int = 0
    part: int = 0

    def reads_value(self, i: int) -> bool:
        return i == 0  # the other inputs give only their sizes along the axis

    def infer(self, g, *likes):
        return likes[self.part].shape, g.dtype

    def kernel(self, g, *likes):
        start = sum(l.shape[self.axis] for l in likes[: self.part])
        stop = start + likes[self.part].shape[self.axis]
        return g[(slice(None),) * self.axis + (slice(start, stop),)]

    def bprop(self, i, x, y, g):
        if i != 0:
            return None
        parts = [g if k == self.part else zeros_like(l) for k, l in enumerate(x[1:])]
        return concatenate(parts, axis=self.axis)

    to_sympy = undefined_to_sympy


# -- the public functions -------------------------------------------------------------------


def reshape(x, shape, name: str | None = None):
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    for d in shape:
        if not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d < -1:
            raise ShapeError(
                f"reshape{' ' + repr(name) if name else ''}: target {shape!r} must hold "
                "non-negative ints and at most one -1"
            )
    return apply(Reshape(tuple(int(d) for d in shape)), (x,), name)


def transpose(x, axes=None, name: str | None = None):
    nd = _ndim(x)
    axes = tuple(reversed(range(nd))) if axes is None else tuple(int(a) % nd if nd else int(a) for a in axes)
    return apply(Transpose(axes), (x,), name)


def swapaxes_last(x):
    """x with its last two axes swapped (the matrix transpose of a stack of matrices)."""
    axes = list(range(x.ndim))
    axes[-1], axes[-2] = axes[-2], axes[-1]
    return transpose(x, tuple(axes))


def expand_dims(x, axis, name: str | None = None):
    axis = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    nd = _ndim(x) + len(axis)
    return apply(ExpandDims(normalize_axes(axis, nd, "expand_dims")), (x,), name)


def squeeze(x, axis=None, name: str | None = None):
    if axis is None:
        axis = tuple(k for k, d in enumerate(x.shape) if d == 1)
    return apply(Squeeze(normalize_axes(axis, _ndim(x), "squeeze", x)), (x,), name)


def broadcast_to(x, shape, name: str | None = None):
    if isinstance(shape, Node):
        return apply(BroadcastLike(), (x, shape), name)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    for d in shape:
        if not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d < 0:
            raise ShapeError(
                f"broadcast_to: target {shape!r} must hold non-negative ints; to follow "
                "another node's run-time shape pass that node instead"
            )
    return apply(BroadcastTo(tuple(int(d) for d in shape)), (x,), name)


def zeros_like(x, name: str | None = None):
    return apply(ZerosLike(), (x,), name)


def getitem(x, index, name: str | None = None):
    if is_fancy(index):  # an integer array or node: a gather (take), not a view
        return fancy_index(x, index, name)
    return apply(GetItem(_encode_index(index, _ndim(x), f"indexing {getattr(x, 'name', x)!r}")), (x,), name)


install(Node, __getitem__=getitem, T=property(lambda self: transpose(self)))  # x[1:3], x.T


def concatenate(xs, axis: int = 0, name: str | None = None):
    xs = list(xs)
    if not xs:
        raise ShapeError("concatenate needs at least one input")
    nd = max(_ndim(x) for x in xs)
    if nd == 0:
        raise ShapeError("cannot concatenate scalars; reshape them to (1,) first")
    return apply(Concatenate(normalize_axis(axis, nd, "concatenate")), tuple(xs), name)


def split(x, indices_or_sections, axis: int = 0, name: str | None = None):
    """Split x along axis into a list of slices (NumPy's split): sections need a fixed size there."""
    axis = normalize_axis(axis, x.ndim, "split", x)
    n = x.shape[axis]
    if isinstance(indices_or_sections, (int, np.integer)):
        k = int(indices_or_sections)
        if n is None or k <= 0 or n % k:
            raise ShapeError(
                f"split: cannot cut axis {axis} of {x.name!r} (size {n}) into {k} equal parts"
                "; give the cut indices instead"
            )
        cuts = [n // k * j for j in range(1, k)]
    else:
        cuts = [int(c) for c in indices_or_sections]
    bounds = [None, *cuts, None]
    parts = []
    for j, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        index = (slice(None),) * axis + (slice(a, b),)
        parts.append(getitem(x, index, name=None if name is None else f"{name}_{j}"))
    return parts


# -- gathers: x[idx] with an integer array or node (a take), and the scatter-add that undoes one ---------


def _int_index(idx, what: str) -> None:
    if idx.dtype.kind not in "iu":
        raise DTypeError(
            f"{what} takes integer indices, got {idx.dtype} from {idx.name!r}; "
            f"cast them with gc.astype({idx.name}, 'int64')"
        )


def _check_range(idx: np.ndarray, n: int, axis: int) -> None:
    """NumPy's rule: an index i is valid for a size-n axis when -n <= i < n; anything else raises."""
    if idx.size and (idx.min() < -n or idx.max() >= n):
        bad = idx[(idx < -n) | (idx >= n)].ravel()[0]
        raise IndexError(
            f"index {int(bad)} is out of range for axis {axis} of size {n} (indices must be in [{-n}, {n}))"
        )


@dataclass(frozen=True)
class Take(Op):
    """np.take(x, idx, axis): x.shape[:axis] + idx.shape + x.shape[axis+1:]; indices checked at run time."""

    name: ClassVar[str] = "take"
    arity: ClassVar[int] = 2
    axis: int = 0

    def infer(self, x, idx):
        _int_index(idx, "take")
        normalize_axis(self.axis, x.ndim, "take", x)
        return x.shape[: self.axis] + idx.shape + x.shape[self.axis + 1 :], x.dtype

    def kernel(self, x, idx):
        _check_range(idx, x.shape[self.axis], self.axis)
        return np.take(x, idx, axis=self.axis)

    def bprop(self, i, x, y, g):  # repeated indices accumulate
        return scatter_add(x[0], x[1], g, self.axis)

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class ScatterAdd(Op):
    """Zeros of target's shape with values added at idx along axis (np.add.at): the derivative of take."""

    name: ClassVar[str] = "scatter_add"
    arity: ClassVar[int] = 3
    shape_only: ClassVar[tuple] = (0,)
    axis: int = 0

    def infer(self, target, idx, values):
        _int_index(idx, "scatter_add")
        normalize_axis(self.axis, target.ndim, "scatter_add", target)
        want = target.shape[: self.axis] + idx.shape + target.shape[self.axis + 1 :]
        if len(want) != values.ndim or any(
            a is not None and b is not None and a != b for a, b in zip(want, values.shape)
        ):
            raise ShapeError(
                f"values of shape {fmt_shape(values.shape)} do not fit indices "
                f"{fmt_shape(idx.shape)} into {fmt_shape(target.shape)} along axis {self.axis}; "
                f"they must have shape {fmt_shape(want)}"
            )
        return target.shape, values.dtype

    def kernel(self, target, idx, values):
        _check_range(idx, target.shape[self.axis], self.axis)
        if target.ndim == 1 and values.dtype.kind == "f":  # a histogram: bincount is ~7x add.at
            n = target.shape[0]
            return np.bincount(idx.ravel() % max(n, 1), values.ravel(), minlength=n).astype(values.dtype)
        out = np.zeros(target.shape, values.dtype)
        a, k = self.axis, idx.ndim
        np.add.at(np.moveaxis(out, a, 0), idx, np.moveaxis(values, tuple(range(a, a + k)), tuple(range(k))))
        return out

    def bprop(self, i, x, y, g):
        if i == 0:
            return None  # read for its shape only
        return take(g, x[1], self.axis)  # d scatter_add / d values = gather

    to_sympy = undefined_to_sympy


def _static_range(x, idx, axis: int, what: str, name) -> None:
    """An index given as a NumPy value is checked at once against a fixed size (a run checks the rest)."""
    n = x.shape[axis]
    if n is not None and not hasattr(idx, "op") and np.asarray(idx).dtype.kind in "iu":
        try:
            _check_range(np.asarray(idx), n, axis)
        except IndexError as e:
            raise ShapeError(
                f"{what}{' ' + repr(name) if name else ''} of {x.name!r} {fmt_shape(x.shape)}: {e}"
            ) from None


def take(x, idx, axis: int | None = None, name: str | None = None):
    """np.take(x, idx, axis): axis=None takes from the flattened x. Its derivative scatter-adds."""
    if axis is None:
        x, axis = reshape(x, (-1,)), 0
    axis = normalize_axis(axis, x.ndim, "take", x)
    _static_range(x, idx, axis, "take", name)
    return apply(Take(axis), (x, idx), name)


def scatter_add(target, idx, values, axis: int = 0, name: str | None = None):
    """Zeros of target's shape (target is read for its shape only) with values added at idx along axis;
    repeated indices accumulate (np.add.at). The derivative of take; its own derivative is take."""
    return apply(ScatterAdd(normalize_axis(axis, target.ndim, "scatter_add", target)), (target, idx, values), name)


def fancy_index(x, index, name: str | None = None):
    """x[idx] with an integer array or node idx, alone or after full slices (x[:, idx]): a take."""
    items = index if isinstance(index, tuple) else (index,)
    arrays = [
        k
        for k, it in enumerate(items)
        if not (isinstance(it, slice) or it is None or it is Ellipsis or isinstance(it, (int, np.integer)))
    ]
    ok = len(arrays) == 1 and all(it == slice(None) for k, it in enumerate(items) if k != arrays[0])
    if not ok:
        raise ShapeError(
            f"indexing {getattr(x, 'name', x)!r}: an integer array index works alone or after "
            f"full slices (x[idx], x[:, idx]); got {index!r}; use gc.take / gc.take_along_axis"
        )
    idx = items[arrays[0]]
    if not hasattr(idx, "op"):
        idx = np.asarray(idx)
        if idx.dtype == bool:
            raise ShapeError(
                f"indexing {x.name!r}: a boolean mask gives a shape known only at run time, not a "
                "static one, and is not supported; use gc.where"
            )
        if idx.dtype.kind not in "iu":
            raise DTypeError(f"indexing {x.name!r}: an array index must hold integers, got {idx.dtype}")
    return take(x, idx, axis=arrays[0], name=name)


def is_fancy(index) -> bool:
    """Whether a getitem index holds an integer array or node (then it is a take, not a static slice)."""
    items = index if isinstance(index, tuple) else (index,)
    return any(hasattr(it, "op") or isinstance(it, (list, np.ndarray)) for it in items)


def _ndim(x) -> int:
    return x.ndim if hasattr(x, "ndim") else np.ndim(x)


def _reshape_kernel(op, shape, in_shape):
    """ndarray.reshape to the step's concrete shape (a reshape, expand_dims or squeeze of a known result)."""
    if None not in shape and len(in_shape):
        return np.ndarray.reshape, (tuple(shape),), {}
    return op.kernel, (), {}
