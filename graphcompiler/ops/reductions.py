"""More reductions and scans: prod, min, var, std, cumsum, argmax and argmin (reduce.py has sum, mean, max).

prod's derivative is the product of the other entries, built as a tree of pairwise products (as JAX does), so
it is exact where x holds zeros and its own derivative is exact too. argmax/argmin give int64 indices: a path
through them has no derivative, and build_grad says so if asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import ShapeError, UndefinedGradientError, fmt_shape
from . import elementwise as E
from . import reduce as R
from . import shape as S
from .base import Op, apply, normalize_axes, normalize_axis, undefined_to_sympy
from .reduce import Max, Reduction


@dataclass(frozen=True)
class Prod(Reduction):
    name: ClassVar[str] = "prod"

    def out_dtype(self, dtype):
        return np.prod(np.zeros(1, dtype)).dtype  # NumPy's accumulator: bool and small ints -> int64

    def kernel(self, x):
        return np.prod(x, axis=self.axis, keepdims=self.keepdims)

    def bprop(self, i, x, y, g):
        # d prod(a)/da_k = the product of the other entries; one axis at a time: prod over (a1, a2) is
        # prod over a1 of prod over a2, so u_k = prod(x, axes[:k]) (kept as size 1) carry the chain rule
        axes = self.axis
        us = [x[0]]
        for a in axes[:-1]:
            us.append(prod(us[-1], axis=a, keepdims=True))
        gk = self.keep(g)
        for k in reversed(range(len(axes))):
            gk = _times_others(us[k], axes[k], gk, self)
        return gk

    to_sympy = undefined_to_sympy


def _times_others(u, a: int, g, op):
    """g * (the product of u's other entries along axis a), g of u's shape with size 1 along a.

    Pairwise products halve the axis level by level (left half times right half, an odd entry carried);
    the backward pass sends g down the tree: the left half gets g * right, the right half g * left. Only
    multiplies, slices and concatenations: exact with zeros, and differentiable again.
    """
    m = u.shape[a]
    if m is None:
        raise ShapeError(
            f"the derivative of {op.name} over axis {a} of {u.name!r} (shape {fmt_shape(u.shape)}) "
            "needs that axis's size, which is unknown (None); declare the input with a fixed size "
            "there, or reduce over the other axes"
        )
    if m == 0:
        return S.zeros_like(u)

    def part(v, start, stop):
        return S.getitem(v, (slice(None),) * a + (slice(start, stop),))

    levels = []  # (size, left half, right half) per level
    v = u
    while m > 1:
        h = m // 2
        left, right = part(v, 0, h), part(v, h, 2 * h)
        nxt = E.multiply(left, right)
        if m % 2:
            nxt = S.concatenate([nxt, part(v, 2 * h, m)], axis=a)
        levels.append((m, left, right))
        v, m = nxt, (m + 1) // 2
    gv = g
    for m, left, right in reversed(levels):
        h = m // 2
        gp = part(gv, 0, h) if m % 2 else gv
        parts = [E.multiply(gp, right), E.multiply(gp, left)]
        if m % 2:
            parts.append(part(gv, h, h + 1))
        gv = S.concatenate(parts, axis=a)
    return gv if gv.shape == u.shape else S.broadcast_to_node(gv, u)


@dataclass(frozen=True)
class Min(Reduction):
    name: ClassVar[str] = "min"

    def kernel(self, x):
        return np.min(x, axis=self.axis, keepdims=self.keepdims)

    bprop = Max.bprop  # the gradient goes to the minima, shared equally among ties (as max)

    to_sympy = undefined_to_sympy


def _dof(op, x, dtype):
    """n - ddof: the divisor of var, a constant when the reduced dims are fixed, else a node."""
    n = S.count(x, op.axis, dtype)
    if isinstance(n, np.ndarray):
        return np.asarray(n - op.ddof, dtype=dtype)
    return E.subtract(n, np.asarray(op.ddof, dtype=dtype))


@dataclass(frozen=True)
class _Spread(Reduction):
    """var and std: a ddof, and a floating result (float64 for integer input, as NumPy)."""

    ddof: int = 0

    def __post_init__(self):
        _check_ddof(self.ddof, self.name)

    def out_dtype(self, dtype):
        return dtype if dtype.kind == "f" else np.dtype("float64")

    def divisor(self, a, y, dtype):
        """n - ddof for the derivative. Where it is known to be <= 0 NumPy's value is inf or nan and has no
        derivative: UndefinedGradientError (build_grad leaves the graph as it was). Where n is known only
        at run time, a node that is NaN there, so such a gradient reads NaN, never a finite wrong number."""
        dof = _dof(self, a, dtype)
        if isinstance(dof, np.ndarray):
            if dof <= 0:
                raise UndefinedGradientError(
                    f"the derivative of {self.name} {y.name!r} (ddof={self.ddof}, over axes {self.axis} of "
                    f"{a.name!r}, shape {fmt_shape(a.shape)}) is undefined: n - ddof = {int(dof)} <= 0, so its value "
                    "is NumPy's inf or nan; use a ddof smaller than the number of reduced elements"
                )
            return dof
        return E.where(E.greater(dof, np.zeros((), dtype)), dof, np.full((), np.nan, dtype))


@dataclass(frozen=True)
class Var(_Spread):
    name: ClassVar[str] = "var"

    def kernel(self, x):
        return np.var(x, axis=self.axis, keepdims=self.keepdims, ddof=self.ddof)

    def bprop(self, i, x, y, g):  # d var(a) = 2 (a - mean(a)) / (n - ddof)
        a = x[0]
        dof = self.divisor(a, y, g.dtype)
        centred = E.subtract(a, R.mean(a, axis=self.axis, keepdims=True))
        scale = E.divide(E.multiply(self.keep(g), 2), dof)
        return E.multiply(centred, scale)  # one element: centred is 0, so 0 (var is identically 0 there)

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class Std(_Spread):
    name: ClassVar[str] = "std"

    def kernel(self, x):
        return np.std(x, axis=self.axis, keepdims=self.keepdims, ddof=self.ddof)

    def bprop(self, i, x, y, g):  # d std(a) = (a - mean(a)) / ((n - ddof) std(a))
        # Where std(a) = 0 (one element: std is identically 0; equal entries: a kink, as |t| at 0) the
        # derivative is 0. The double where: the divisor is made 1 there first, so no 0/0 is ever computed
        # and the derivative of this rule (a second derivative) is finite too.
        a = x[0]
        dof = self.divisor(a, y, g.dtype)
        s = self.keep(y)
        flat = E.equal(s, np.zeros((), s.dtype))
        safe = E.where(flat, np.ones((), s.dtype), s)
        centred = E.subtract(a, R.mean(a, axis=self.axis, keepdims=True))
        scale = E.divide(self.keep(g), E.multiply(safe, dof))
        return E.where(flat, np.zeros((), g.dtype), E.multiply(centred, scale))

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class Cumsum(Op):
    """Running sums along `axis`; reverse=True sums from the end (the derivative of a cumsum)."""

    name: ClassVar[str] = "cumsum"
    arity: ClassVar[int] = 1
    axis: int = 0
    reverse: bool = False

    def infer(self, x):
        if not 0 <= self.axis < x.ndim:
            raise ShapeError(f"cumsum: axis {self.axis} is out of range for {x.name!r} of rank {x.ndim}")
        return x.shape, np.cumsum(np.zeros(1, x.dtype)).dtype

    def kernel(self, x):
        if not self.reverse:
            return np.cumsum(x, axis=self.axis)
        return np.flip(np.cumsum(np.flip(x, self.axis), axis=self.axis), self.axis)

    def bprop(self, i, x, y, g):  # y_j = sum_{k<=j} x_k: dx_k = sum_{j>=k} g_j
        return apply(Cumsum(self.axis, not self.reverse), (g,))

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class ArgMax(Op):
    """The index of the maximum along `axis` (the first among ties), as int64; no derivative."""

    name: ClassVar[str] = "argmax"
    arity: ClassVar[int] = 1
    axis: int = 0
    keepdims: bool = False

    def infer(self, x):
        if not 0 <= self.axis < x.ndim:
            raise ShapeError(f"{self.name}: axis {self.axis} is out of range for {x.name!r} of rank {x.ndim}")
        if x.shape[self.axis] == 0:
            raise ShapeError(
                f"{self.name} of {x.name!r} over axis {self.axis} of size 0: an empty sequence "
                "has no maximum or minimum"
            )
        if self.keepdims:
            return tuple(1 if k == self.axis else d for k, d in enumerate(x.shape)), np.dtype("int64")
        return tuple(d for k, d in enumerate(x.shape) if k != self.axis), np.dtype("int64")

    def kernel(self, x):
        return np.argmax(x, axis=self.axis, keepdims=self.keepdims).astype(np.int64, copy=False)

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class ArgMin(ArgMax):
    name: ClassVar[str] = "argmin"

    def kernel(self, x):
        return np.argmin(x, axis=self.axis, keepdims=self.keepdims).astype(np.int64, copy=False)


@dataclass(frozen=True)
class ArgSort(Op):
    """The indices that sort x along `axis` (stable: ties keep their order, NaN last), as int64; no derivative
    (a permutation is locally constant): sort's derivative flows through take_along_axis instead."""

    name: ClassVar[str] = "argsort"
    arity: ClassVar[int] = 1
    piecewise_constant: ClassVar[bool] = True  # a path through the permutation adds zero
    axis: int = -1

    def infer(self, x):
        if not 0 <= self.axis < x.ndim:
            raise ShapeError(f"argsort: axis {self.axis} is out of range for {x.name!r} of rank {x.ndim}")
        return tuple(x.shape), np.dtype("int64")

    def kernel(self, x):
        return np.argsort(x, axis=self.axis, kind="stable").astype(np.int64, copy=False)

    to_sympy = undefined_to_sympy


# -- the public functions -------------------------------------------------------------------


def prod(x, axis=None, keepdims: bool = False, name: str | None = None):
    return S.reduction(Prod, x, axis, keepdims, name)


def min(x, axis=None, keepdims: bool = False, name: str | None = None):
    return S.reduction(Min, x, axis, keepdims, name)


def _check_ddof(ddof, what: str) -> int:
    if not isinstance(ddof, (int, np.integer)) or isinstance(ddof, bool) or ddof < 0:
        raise ShapeError(f"{what}: ddof must be a non-negative integer, got {ddof!r}")
    return int(ddof)


def var(x, axis=None, keepdims: bool = False, ddof: int = 0, name: str | None = None):
    axes = normalize_axes(axis, x.ndim, "var", x)
    return apply(Var(axes, bool(keepdims), _check_ddof(ddof, "var")), (x,), name)


def std(x, axis=None, keepdims: bool = False, ddof: int = 0, name: str | None = None):
    axes = normalize_axes(axis, x.ndim, "std", x)
    return apply(Std(axes, bool(keepdims), _check_ddof(ddof, "std")), (x,), name)


def _flat_or_axis(x, axis, what: str):
    """(x, axis) with axis=None meaning the flattened array, as NumPy's cumsum and argmax do."""
    if axis is None:
        return (x if x.ndim == 1 else S.reshape(x, (-1,))), 0
    return x, normalize_axis(axis, x.ndim, what, x)


def cumsum(x, axis: int | None = None, name: str | None = None):
    """np.cumsum: running sums along axis (None: over the flattened array)."""
    x, a = _flat_or_axis(x, axis, "cumsum")
    return apply(Cumsum(a, False), (x,), name)


def cumprod(x, axis: int | None = None, name: str | None = None):
    """np.cumprod: running products along axis (None: over the flattened array).

    A composition: y[..., j] = prod over k of where(k <= j, x[..., k], 1), one product per position, so the
    derivatives of any order are prod's, exact where x has zeros (no division by x). It holds n x n values per
    run along the axis (n its length, which must be known when the graph is built)."""
    x, a = _flat_or_axis(x, axis, "cumprod")
    n = x.shape[a]
    if not isinstance(n, (int, np.integer)):
        raise ShapeError(
            f"cumprod of {x.name!r} (shape {fmt_shape(x.shape)}) along axis {a}: that axis' length must be known "
            "when the graph is built; give the input a fixed shape there"
        )
    last = S.transpose(x, [d for d in range(x.ndim) if d != a] + [a]) if a != x.ndim - 1 else x
    # [j, k]: k <= j, as a comparison of a constant (a bool constant would not export to SymPy as a number)
    upto = E.greater(x.graph.constant(np.tril(np.ones((int(n), int(n))))), 0.5)
    y = prod(E.where(upto, S.expand_dims(last, -2), 1), axis=-1)
    if a != x.ndim - 1:
        back = list(range(x.ndim - 1))
        back.insert(a, x.ndim - 1)
        y = S.transpose(y, back)
    return y if name is None else E.identity(y, name=name)


def argsort(x, axis: int | None = -1, name: str | None = None):
    """np.argsort(x, axis, kind="stable"): axis=None sorts the flattened x."""
    x, a = _flat_or_axis(x, axis, "argsort")
    return apply(ArgSort(a), (x,), name)


def argmax(x, axis: int | None = None, keepdims: bool = False, name: str | None = None):
    """np.argmax: int64 indices of the maxima (None: into the flattened array); carries no gradient."""
    if axis is None and keepdims:
        raise ShapeError("argmax: keepdims=True needs an axis")
    x, a = _flat_or_axis(x, axis, "argmax")
    return apply(ArgMax(a, bool(keepdims)), (x,), name)


def argmin(x, axis: int | None = None, keepdims: bool = False, name: str | None = None):
    """np.argmin: int64 indices of the minima (None: into the flattened array); carries no gradient."""
    if axis is None and keepdims:
        raise ShapeError("argmin: keepdims=True needs an axis")
    x, a = _flat_or_axis(x, axis, "argmin")
    return apply(ArgMin(a, bool(keepdims)), (x,), name)
