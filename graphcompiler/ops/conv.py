"""Convolution and pooling with PyTorch's semantics (NCHW inputs, OIHW kernels), and their gradient ops.

Every convolution kernel is im2col: a strided window view of the padded input (`sliding_window_view`), one
copy into a column matrix and one batched matmul over the groups. Pooling loops over the few taps of its
window, each step one vectorised op over every window; no Python loop runs over pixels. The derivatives are
ops of their own, closed under differentiation:

    y  = conv(x, w)              dy/dx -> conv_input_grad(g, w)    dy/dw -> conv_weight_grad(x, g)
    gx = conv_input_grad(g, w)   (a transposed convolution)        d/dg -> conv(G, w), d/dw -> conv_weight_grad(G, g)
    gw = conv_weight_grad(x, g)  (a correlation of x with g)       d/dx -> conv_input_grad(g, G), d/dg -> conv(x, G)

so second derivatives are convolutions again. Max pooling shares the gradient equally among the tied maxima
of a window (the convention of `max`); average pooling divides by the full window (PyTorch's default
count_include_pad=True: padded zeros count).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import DTypeError, ShapeError, fmt_shape
from .base import Op, apply, undefined_to_sympy

IntOrTuple = int | tuple[int, ...]


# -- shared helpers ---------------------------------------------------------------------------


def _tuple(v, nd: int, what: str, low: int) -> tuple[int, ...]:
    """An int or a sequence of nd ints (each >= low) -> a tuple of nd Python ints."""
    items = (
        (v,) * nd
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool)
        else tuple(v)
        if isinstance(v, (tuple, list))
        else None
    )
    if (
        items is None
        or len(items) != nd
        or not all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= low for k in items)
    ):
        raise ShapeError(f"{what} must be an integer >= {low} or {nd} of them, got {v!r}")
    return tuple(int(k) for k in items)


def _out_size(size, k: int, s: int, p: int, d: int):
    """PyTorch's output length: floor((size + 2p - d(k-1) - 1) / s) + 1; None stays None."""
    if size is None:
        return None
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _spatial_out(x_shape, kernel, stride, padding, dilation, what: str, kind: str = "kernel") -> tuple:
    """Output spatial sizes; a ShapeError when a (dilated) kernel is larger than the padded input."""
    out = []
    for ax, (size, k, s, p, d) in enumerate(zip(x_shape, kernel, stride, padding, dilation)):
        if size is not None and size + 2 * p < d * (k - 1) + 1:
            raise ShapeError(
                f"{what}: the {kind} covers {d * (k - 1) + 1} positions along spatial axis {ax} "
                f"(size {k}, dilation {d}) but the input has only {size} + 2*{p} (padding) = "
                f"{size + 2 * p}; use a smaller {kind}, more padding or a larger input"
            )
        out.append(_out_size(size, k, s, p, d))
    return tuple(out)


def _same(a, b) -> bool:
    return a is None or b is None or a == b


def _float(dtype_a: np.dtype, dtype_b: np.dtype, what: str, names: tuple[str, str]) -> np.dtype:
    if dtype_a.kind != "f" or dtype_b.kind != "f":
        raise DTypeError(
            f"{what} needs floating inputs, got {dtype_a} ({names[0]!r}) and {dtype_b} "
            f"({names[1]!r}); cast them with gc.astype(..., 'float64')"
        )
    return np.result_type(dtype_a, dtype_b)


def _pad(x: np.ndarray, padding: tuple, value: float = 0.0) -> np.ndarray:
    """x (N, C, *spatial) with `value` added on both sides of each spatial axis."""
    if not any(padding):
        return x
    out = np.full(x.shape[:2] + tuple(s + 2 * p for s, p in zip(x.shape[2:], padding)), value, dtype=x.dtype)
    out[(slice(None),) * 2 + tuple(slice(p, p + s) for p, s in zip(padding, x.shape[2:]))] = x
    return out


# The convolutions work in a batch-last layout, (C, *spatial, N): the im2col copy then moves runs of N
# contiguous numbers at a time (on small images the spatial runs are only a few numbers long).


def _batch_last(x: np.ndarray, padding: tuple) -> np.ndarray:
    """x (N, C, *spatial) -> zero-padded (C, *padded, N), one copy."""
    nd = x.ndim - 2
    out = np.zeros(
        (x.shape[1],) + tuple(s + 2 * p for s, p in zip(x.shape[2:], padding)) + (x.shape[0],), dtype=x.dtype
    )
    out[(slice(None),) + tuple(slice(p, p + s) for p, s in zip(padding, x.shape[2:]))] = x.transpose(
        (1,) + tuple(range(2, 2 + nd)) + (0,)
    )
    return out


def _columns(xc: np.ndarray, kernel: tuple, stride: tuple, dilation: tuple, groups: int):
    """im2col of a batch-last padded xc (C, *padded, N): the column matrix (G, C/G * prod(kernel),
    prod(out) * N) (rows: channel and tap; columns: position and image), and out's sizes."""
    nd = len(kernel)
    ext = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    v = sliding_window_view(xc, ext, axis=tuple(range(1, 1 + nd)))  # (C, *out', N, *ext)
    v = v[
        (slice(None),)
        + tuple(slice(None, None, s) for s in stride)
        + (slice(None),)
        + tuple(slice(None, None, d) for d in dilation)
    ]  # (C, *out, N, *k)
    out = v.shape[1 : 1 + nd]
    perm = (0,) + tuple(range(2 + nd, 2 + 2 * nd)) + tuple(range(1, 2 + nd))  # (C, *k, *out, N)
    cols = v.transpose(perm).reshape(groups, -1, int(np.prod(out, dtype=np.int64)) * xc.shape[-1])
    return cols, out


def _correlate_bl(xc: np.ndarray, w: np.ndarray, stride: tuple, dilation: tuple, groups: int) -> np.ndarray:
    """The grouped correlation in the batch-last layout: (C, *padded, N) -> (O, *out, N), one batched matmul."""
    cols, out = _columns(xc, w.shape[2:], stride, dilation, groups)
    o = w.shape[0]
    y = np.matmul(w.reshape(groups, o // groups, -1), cols)  # (G, Og, P * N)
    return y.reshape((o,) + out + (xc.shape[-1],))


def _batch_first(y: np.ndarray) -> np.ndarray:
    """(C, *spatial, N) -> a contiguous (N, C, *spatial)."""
    return np.ascontiguousarray(np.moveaxis(y, -1, 0))


def _correlate(x: np.ndarray, w: np.ndarray, stride: tuple, padding: tuple, dilation: tuple, groups: int) -> np.ndarray:
    """PyTorch's conv: y[n, o] = sum_c x[n, c] (star) w[o, c], grouped; one batched matmul over the groups."""
    return _batch_first(_correlate_bl(_batch_last(x, padding), w, stride, dilation, groups))


def _input_grad(
    g: np.ndarray, w: np.ndarray, in_spatial: tuple, stride: tuple, padding: tuple, dilation: tuple, groups: int
) -> np.ndarray:
    """The transposed convolution: dL/dx of y = conv(x, w) given g = dL/dy.

    gx[t] = sum_a gd[t + p - a d] w[a] with gd the stride-dilated g; flipping the taps makes it a stride-1
    correlation of gd, padded by q = d(k-1) - p in front, with the flipped and channel-swapped kernel.
    """
    nd = w.ndim - 2
    n, o = g.shape[:2]
    kernel = w.shape[2:]
    full = tuple(s + d * (k - 1) for s, k, d in zip(in_spatial, kernel, dilation))
    gd = np.zeros((o,) + full + (n,), dtype=np.result_type(g.dtype, w.dtype))  # batch-last
    src, dst = [slice(None)] * 2, [slice(None)]
    for length, size, k, s, p, d in zip(g.shape[2:], full, kernel, stride, padding, dilation):
        q = d * (k - 1) - p  # where g[0] lands in the padded frame
        lo = max(0, -(q // s) if q < 0 else 0)  # entries before the frame touch padding only
        hi = min(length, -(-(size - q) // s))  # so do entries past its end
        if hi <= lo:
            return np.zeros((n, w.shape[1] * groups) + tuple(in_spatial), dtype=gd.dtype)
        src.append(slice(lo, hi))
        dst.append(slice(q + lo * s, q + (hi - 1) * s + 1, s))
    gd[tuple(dst)] = g[tuple(src)].transpose(tuple(range(1, 2 + nd)) + (0,))
    og, cg = o // groups, w.shape[1]
    # w (G*Og, Cg, *k) -> (G*Cg, Og, *k) with the taps reversed
    wt = w.reshape((groups, og, cg) + kernel).swapaxes(1, 2).reshape((groups * cg, og) + kernel)
    wt = wt[(slice(None),) * 2 + (slice(None, None, -1),) * nd]
    return _batch_first(_correlate_bl(gd, wt, (1,) * nd, dilation, groups))


def _weight_grad(
    x: np.ndarray, g: np.ndarray, kernel: tuple, stride: tuple, padding: tuple, dilation: tuple, groups: int
) -> np.ndarray:
    """dL/dw of y = conv(x, w) given g = dL/dy: g's rows times x's columns, one batched matmul."""
    nd = x.ndim - 2
    cols, _ = _columns(_batch_last(x, padding), kernel, stride, dilation, groups)
    o = g.shape[1]
    gm = g.transpose((1,) + tuple(range(2, 2 + nd)) + (0,)).reshape(groups, o // groups, -1)  # (G, Og, P*N)
    gw = np.matmul(gm, cols.transpose(0, 2, 1))  # (G, Og, Cg * prod(k))
    return gw.reshape((o, x.shape[1] // groups) + tuple(kernel))


# -- convolution ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ConvAttrs(Op):
    """stride, padding, dilation (one int per spatial axis) and groups, checked when the op is made."""

    nd: ClassVar[int] = 2
    stride: tuple = ()
    padding: tuple = ()
    dilation: tuple = ()
    groups: int = 1

    def __post_init__(self):
        _tuple(self.stride, self.nd, f"{self.name}'s stride", 1)
        _tuple(self.padding, self.nd, f"{self.name}'s padding", 0)
        _tuple(self.dilation, self.nd, f"{self.name}'s dilation", 1)
        if not isinstance(self.groups, int) or isinstance(self.groups, bool) or self.groups < 1:
            raise ShapeError(f"{self.name}'s groups must be an integer >= 1, got {self.groups!r}")

    def _layout(self) -> str:
        return "(N, C, W)" if self.nd == 1 else "(N, C, H, W)"

    def _check_rank(self, node, role: str, layout: str) -> None:
        if node.ndim != 2 + self.nd:
            raise ShapeError(
                f"{self.name}: {role} {node.name!r} must have rank {2 + self.nd} {layout}, got "
                f"shape {fmt_shape(node.shape)}"
            )

    def _check_weight(self, w, channels) -> tuple[int, int]:
        """(O, C/G) of the kernel, checked against the input's channels and the groups."""
        kernel_layout = "(O, C/groups, W)" if self.nd == 1 else "(O, C/groups, kH, kW)"
        self._check_rank(w, "the kernel", kernel_layout)
        if any(d is None for d in w.shape):
            raise ShapeError(f"{self.name}: the kernel {w.name!r} needs a fixed shape, got {fmt_shape(w.shape)}")
        o, cg = w.shape[:2]
        if o % self.groups:
            raise ShapeError(
                f"{self.name}: the kernel {w.name!r} has {o} output channels, not divisible by groups={self.groups}"
            )
        if channels is not None:
            if channels % self.groups:
                raise ShapeError(
                    f"{self.name}: the input has {channels} channels, not divisible by groups={self.groups}"
                )
            if cg * self.groups != channels:
                raise ShapeError(
                    f"{self.name}: the kernel {w.name!r} {fmt_shape(w.shape)} expects "
                    f"{cg} x {self.groups} (groups) = {cg * self.groups} input channels but the "
                    f"input has {channels}; the kernel's layout is {kernel_layout}"
                )
        return o, cg

    def _conv_args(self):
        return self.stride, self.padding, self.dilation, self.groups


@dataclass(frozen=True)
class Conv2d(_ConvAttrs):
    """y = conv2d(x, w): PyTorch's cross-correlation, x (N, C, H, W), w (O, C/groups, kH, kW)."""

    name: ClassVar[str] = "conv2d"
    arity: ClassVar[int] = 2
    nd: ClassVar[int] = 2
    sympy_any_rank: ClassVar[bool] = True

    def infer(self, x, w):
        self._check_rank(x, "the input", self._layout())
        dtype = _float(x.dtype, w.dtype, self.name, (x.name, w.name))
        o, _ = self._check_weight(w, x.shape[1])
        out = _spatial_out(
            x.shape[2:],
            w.shape[2:],
            self.stride,
            self.padding,
            self.dilation,
            f"{self.name} of {x.name!r} {fmt_shape(x.shape)} with {w.name!r} {fmt_shape(w.shape)}",
        )
        return (x.shape[0], o) + out, dtype

    def kernel(self, x, w):
        return _correlate(x, w, *self._conv_args())

    def flops(self, node):  # 2 multiply-adds per output, input channel and tap
        return 2 * math.prod(node.shape) * math.prod(node.inputs[1].shape[1:])

    def bprop(self, i, x, y, g):
        if i == 0:  # dx: the transposed convolution of g with w
            return apply(INPUT_GRAD[self.nd](*self._conv_args()), (g, x[1], x[0]))
        return apply(WEIGHT_GRAD[self.nd](*self._conv_args(), x[1].shape[2:]), (x[0], g))  # dw

    def to_sympy(self, node, *args):
        from ..symbolic_terms import apply_undefined

        return apply_undefined(node, *args, infix=(r"\ast", "\u2217"))  # the books' X * W (evaluated by the kernel)


@dataclass(frozen=True)
class Conv1d(Conv2d):
    """y = conv1d(x, w): x (N, C, W), w (O, C/groups, kW)."""

    name: ClassVar[str] = "conv1d"
    nd: ClassVar[int] = 1


@dataclass(frozen=True)
class Conv2dInputGrad(_ConvAttrs):
    """gx = conv2d_input_grad(g, w, like): dL/dx of conv2d(x, w) given g = dL/dy; `like` gives x's shape."""

    name: ClassVar[str] = "conv2d_input_grad"
    arity: ClassVar[int] = 3
    shape_only: ClassVar[tuple] = (2,)
    nd: ClassVar[int] = 2

    def infer(self, g, w, like):
        self._check_rank(g, "the output gradient", self._layout())
        self._check_rank(like, "the input", self._layout())
        dtype = _float(g.dtype, w.dtype, self.name, (g.name, w.name))
        o, _ = self._check_weight(w, like.shape[1])
        out = _spatial_out(like.shape[2:], w.shape[2:], self.stride, self.padding, self.dilation, self.name)
        if (
            not _same(g.shape[1], o)
            or not all(_same(a, b) for a, b in zip(g.shape[2:], out))
            or not _same(g.shape[0], like.shape[0])
        ):
            raise ShapeError(
                f"{self.name}: the gradient {g.name!r} {fmt_shape(g.shape)} does not match the "
                f"output {fmt_shape((like.shape[0], o) + out)} of a convolution of "
                f"{like.name!r} {fmt_shape(like.shape)} with {w.name!r} {fmt_shape(w.shape)}"
            )
        n = like.shape[0] if like.shape[0] is not None else g.shape[0]
        return (n,) + tuple(like.shape[1:]), dtype

    def kernel(self, g, w, like):
        return _input_grad(g, w, like.shape[2:], *self._conv_args())

    def flops(self, node):  # the stride-1 correlation it runs, per input element
        w = node.inputs[1]
        return 2 * math.prod(node.shape) * (w.shape[0] // self.groups) * math.prod(w.shape[2:])

    def bprop(self, i, x, y, g):
        g_out, w, _ = x
        if i == 0:  # linear in g: its adjoint is the convolution
            return apply(CONV[self.nd](*self._conv_args()), (g, w))
        # <G, gx(g, w)> = <g, conv(G, w)>, so d/dw is the weight gradient of conv(G, w) at g
        return apply(WEIGHT_GRAD[self.nd](*self._conv_args(), w.shape[2:]), (g, g_out))

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class Conv1dInputGrad(Conv2dInputGrad):
    name: ClassVar[str] = "conv1d_input_grad"
    nd: ClassVar[int] = 1


@dataclass(frozen=True)
class Conv2dWeightGrad(_ConvAttrs):
    """gw = conv2d_weight_grad(x, g): dL/dw of conv2d(x, w) given g = dL/dy, for a kernel of size `kernel`."""

    name: ClassVar[str] = "conv2d_weight_grad"
    arity: ClassVar[int] = 2
    nd: ClassVar[int] = 2
    kernel_size: tuple = ()

    def __post_init__(self):
        super().__post_init__()
        _tuple(self.kernel_size, self.nd, f"{self.name}'s kernel_size", 1)

    def infer(self, x, g):
        self._check_rank(x, "the input", self._layout())
        self._check_rank(g, "the output gradient", self._layout())
        dtype = _float(x.dtype, g.dtype, self.name, (x.name, g.name))
        c, o = x.shape[1], g.shape[1]
        if c is None or o is None:
            raise ShapeError(
                f"{self.name}: the channels of {x.name!r} {fmt_shape(x.shape)} and {g.name!r} "
                f"{fmt_shape(g.shape)} must be fixed"
            )
        if c % self.groups or o % self.groups:
            raise ShapeError(
                f"{self.name}: {c} input and {o} output channels must both be divisible by groups={self.groups}"
            )
        out = _spatial_out(x.shape[2:], self.kernel_size, self.stride, self.padding, self.dilation, self.name)
        if not all(_same(a, b) for a, b in zip(g.shape[2:], out)) or not _same(g.shape[0], x.shape[0]):
            raise ShapeError(
                f"{self.name}: the gradient {g.name!r} {fmt_shape(g.shape)} does not match the "
                f"output {fmt_shape((x.shape[0], o) + out)} of a convolution of {x.name!r} "
                f"{fmt_shape(x.shape)} with a kernel of size {self.kernel_size}"
            )
        return (o, c // self.groups) + self.kernel_size, dtype

    def kernel(self, x, g):
        return _weight_grad(x, g, self.kernel_size, *self._conv_args())

    def flops(self, node):  # per kernel entry: a sum over images and positions
        g = node.inputs[1]
        return 2 * math.prod(node.shape) * (math.prod(g.shape) // g.shape[1] if g.shape[1] else 0)

    def bprop(self, i, x, y, g):
        x_in, g_out = x
        if i == 0:  # <G, gw(x, g)> = <g, conv(x, G)>: d/dx = conv^T(g, G)
            return apply(INPUT_GRAD[self.nd](*self._conv_args()), (g_out, g, x_in))
        return apply(CONV[self.nd](*self._conv_args()), (x_in, g))  # d/dg = conv(x, G)

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class Conv1dWeightGrad(Conv2dWeightGrad):
    name: ClassVar[str] = "conv1d_weight_grad"
    nd: ClassVar[int] = 1


CONV = {1: Conv1d, 2: Conv2d}
INPUT_GRAD = {1: Conv1dInputGrad, 2: Conv2dInputGrad}
WEIGHT_GRAD = {1: Conv1dWeightGrad, 2: Conv2dWeightGrad}


# -- pooling ----------------------------------------------------------------------------------


def _taps(xp: np.ndarray, kernel: tuple, stride: tuple, out: tuple):
    """(index, view) for each tap (a, b) of the window: the (N, C, *out) values at offset (a, b) of every
    window of the padded xp. Pooling loops over these few taps; each step is one vectorised op on all windows."""
    for a in range(kernel[0]):
        for b in range(kernel[1]):
            idx = (
                slice(None),
                slice(None),
                slice(a, a + stride[0] * (out[0] - 1) + 1, stride[0]),
                slice(b, b + stride[1] * (out[1] - 1) + 1, stride[1]),
            )
            yield idx, xp[idx]


@dataclass(frozen=True)
class _PoolAttrs(Op):
    """kernel, stride and padding, one int per spatial axis; padding at most half the kernel (as PyTorch)."""

    kernel_size: tuple = ()
    stride: tuple = ()
    padding: tuple = ()

    def __post_init__(self):
        k = _tuple(self.kernel_size, 2, f"{self.name}'s kernel", 1)
        _tuple(self.stride, 2, f"{self.name}'s stride", 1)
        p = _tuple(self.padding, 2, f"{self.name}'s padding", 0)
        if any(pp > kk // 2 for pp, kk in zip(p, k)):
            raise ShapeError(f"{self.name}: padding {p} must be at most half the kernel {k}")

    def _out(self, x) -> tuple:
        if x.ndim != 4:
            raise ShapeError(
                f"{self.name}: the input {x.name!r} must have rank 4 (N, C, H, W), got shape {fmt_shape(x.shape)}"
            )
        if x.dtype.kind != "f":
            raise DTypeError(
                f"{self.name} needs a floating input, got {x.dtype} from {x.name!r}; cast it "
                "with gc.astype(x, 'float64')"
            )
        return _spatial_out(
            x.shape[2:],
            self.kernel_size,
            self.stride,
            self.padding,
            (1, 1),
            f"{self.name} of {x.name!r} {fmt_shape(x.shape)}",
            "pooling window",
        )

    def flops(self, node):  # a few operations per window and tap
        return 2 * math.prod(self.kernel_size) * max(math.prod(x.shape) for x in node.inputs + (node,))

    def _check_g(self, g, x) -> None:
        want = tuple(x.shape[:2]) + self._out(x)
        if g.ndim != 4 or not all(_same(a, b) for a, b in zip(g.shape, want)):
            raise ShapeError(
                f"{self.name}: the gradient {g.name!r} {fmt_shape(g.shape)} does not match the "
                f"pooled shape {fmt_shape(want)} of {x.name!r} {fmt_shape(x.shape)}"
            )

    def _taps(self, xp: np.ndarray):
        out = tuple((s - k) // st + 1 for s, k, st in zip(xp.shape[2:], self.kernel_size, self.stride))
        return _taps(xp, self.kernel_size, self.stride, out)

    def _max(self, xp: np.ndarray) -> np.ndarray:
        y = None
        for _, t in self._taps(xp):
            y = t.copy() if y is None else np.maximum(y, t, out=y)
        assert y is not None  # a pooling window has at least one tap
        return y

    def _ties(self, x: np.ndarray):
        """The padded x (padding is -inf, never a maximum), each window's maximum y and 1 / its number of ties."""
        xp = _pad(x, self.padding, -np.inf)
        y = self._max(xp)
        count = np.zeros(y.shape, dtype=x.dtype)
        for _, t in self._taps(xp):
            count += t == y
        return xp, y, np.divide(1.0, count, out=count)

    def _spread(self, parts, like_shape: tuple, dtype) -> np.ndarray:
        """The adjoint of taking windows: add each tap's part back at its positions, then drop the padding."""
        p0, p1 = self.padding
        acc = np.zeros(tuple(like_shape[:2]) + (like_shape[2] + 2 * p0, like_shape[3] + 2 * p1), dtype=dtype)
        for (idx, _), part in parts(acc):
            acc[idx] += part
        return np.ascontiguousarray(acc[:, :, p0 : p0 + like_shape[2], p1 : p1 + like_shape[3]])


@dataclass(frozen=True)
class MaxPool2d(_PoolAttrs):
    """y = max over each window (padding with -inf); the gradient is shared equally among tied maxima."""

    name: ClassVar[str] = "max_pool2d"
    arity: ClassVar[int] = 1
    scratch: ClassVar[int] = 1  # the -inf padded copy

    def infer(self, x):
        return tuple(x.shape[:2]) + self._out(x), x.dtype

    def kernel(self, x):
        return self._max(_pad(x, self.padding, -np.inf))

    def bprop(self, i, x, y, g):
        return apply(MaxPool2dGrad(self.kernel_size, self.stride, self.padding), (g, x[0]))

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class MaxPool2dGrad(_PoolAttrs):
    """gx = max_pool2d_grad(g, x): each window's g routed to its maxima in x (split equally among ties).

    Linear in g; piecewise constant in x (the choice of maxima), so x's derivative is zero."""

    name: ClassVar[str] = "max_pool2d_grad"
    arity: ClassVar[int] = 2
    scratch: ClassVar[int] = 3  # padded x, the padded sum before the crop, the maxima and their shares

    def infer(self, g, x):
        self._check_g(g, x)
        return tuple(x.shape), _float(g.dtype, x.dtype, self.name, (g.name, x.name))

    def kernel(self, g, x):
        xp, y, share = self._ties(x)
        gs = g * share
        return self._spread(lambda acc: (((idx, t), (t == y) * gs) for idx, t in self._taps(xp)), x.shape, gs.dtype)

    def bprop(self, i, x, y, g):
        if i == 1:
            return None  # the maxima do not move under a small change of x
        return apply(MaxPool2dGather(self.kernel_size, self.stride, self.padding), (g, x[1]))

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class MaxPool2dGather(_PoolAttrs):
    """y = max_pool2d_gather(v, x): per window of x, the mean of v over x's maxima (the adjoint of
    max_pool2d_grad; max_pool2d(x) is max_pool2d_gather(x, x))."""

    name: ClassVar[str] = "max_pool2d_gather"
    arity: ClassVar[int] = 2
    scratch: ClassVar[int] = 3  # padded x and v, the maxima and their counts

    def infer(self, v, x):
        if v.ndim != 4 or not all(_same(a, b) for a, b in zip(v.shape, x.shape)):
            raise ShapeError(
                f"{self.name}: {v.name!r} {fmt_shape(v.shape)} must have the shape of {x.name!r} {fmt_shape(x.shape)}"
            )
        return tuple(x.shape[:2]) + self._out(x), _float(v.dtype, x.dtype, self.name, (v.name, x.name))

    def kernel(self, v, x):
        xp, y, share = self._ties(x)
        vp = _pad(v, self.padding)
        out = np.zeros(y.shape, dtype=np.result_type(v.dtype, share.dtype))
        for idx, t in self._taps(xp):
            out += (t == y) * vp[idx]
        return np.multiply(out, share, out=out)

    def bprop(self, i, x, y, g):
        if i == 1:
            return None
        return apply(MaxPool2dGrad(self.kernel_size, self.stride, self.padding), (g, x[1]))

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class AvgPool2d(_PoolAttrs):
    """y = the mean of each window, padded zeros included (PyTorch's count_include_pad=True)."""

    name: ClassVar[str] = "avg_pool2d"
    arity: ClassVar[int] = 1
    scratch: ClassVar[int] = 1  # the zero-padded copy

    def infer(self, x):
        return tuple(x.shape[:2]) + self._out(x), x.dtype

    def kernel(self, x):
        y = None
        for _, t in self._taps(_pad(x, self.padding)):
            y = t.copy() if y is None else np.add(y, t, out=y)
        return np.divide(y, self.kernel_size[0] * self.kernel_size[1], out=y)

    def bprop(self, i, x, y, g):
        return apply(AvgPool2dGrad(self.kernel_size, self.stride, self.padding), (g, x[0]))

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class AvgPool2dGrad(_PoolAttrs):
    """gx = avg_pool2d_grad(g, like): each window's g spread uniformly (g / window size) over it."""

    name: ClassVar[str] = "avg_pool2d_grad"
    arity: ClassVar[int] = 2
    scratch: ClassVar[int] = 2  # the padded sum before the crop, g's shares
    shape_only: ClassVar[tuple] = (1,)

    def infer(self, g, like):
        self._check_g(g, like)
        return tuple(like.shape), _float(g.dtype, like.dtype, self.name, (g.name, like.name))

    def kernel(self, g, like):
        share = g / (self.kernel_size[0] * self.kernel_size[1])
        return self._spread(lambda acc: ((tap, share) for tap in self._taps(acc)), like.shape, share.dtype)

    def bprop(self, i, x, y, g):  # linear in g: its adjoint is the average pool
        return apply(AvgPool2d(self.kernel_size, self.stride, self.padding), (g,))

    to_sympy = undefined_to_sympy


# -- the functions of gc ------------------------------------------------------------------------


def _conv(nd: int, x, w, stride, padding, dilation, groups, name):
    what = CONV[nd].name
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ShapeError(f"{what}: groups must be an integer >= 1, got {groups!r}")
    op = CONV[nd](
        _tuple(stride, nd, f"{what}'s stride", 1),
        _tuple(padding, nd, f"{what}'s padding", 0),
        _tuple(dilation, nd, f"{what}'s dilation", 1),
        int(groups),
    )
    return apply(op, (x, w), name)


def conv2d(
    x,
    w,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    name: str | None = None,
):
    """PyTorch's conv2d (a cross-correlation): x (N, C, H, W), w (O, C/groups, kH, kW) -> (N, O, Ho, Wo)."""
    return _conv(2, x, w, stride, padding, dilation, groups, name)


def conv1d(
    x,
    w,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    name: str | None = None,
):
    """PyTorch's conv1d: x (N, C, W), w (O, C/groups, kW) -> (N, O, Wo)."""
    return _conv(1, x, w, stride, padding, dilation, groups, name)


def _pool(cls, x, kernel, stride, padding, name):
    k = _tuple(kernel, 2, f"{cls.name}'s kernel", 1)
    s = k if stride is None else _tuple(stride, 2, f"{cls.name}'s stride", 1)
    return apply(cls(k, s, _tuple(padding, 2, f"{cls.name}'s padding", 0)), (x,), name)


def max_pool2d(
    x, kernel: IntOrTuple, stride: IntOrTuple | None = None, padding: IntOrTuple = 0, name: str | None = None
):
    """The maximum of each window (stride defaults to the kernel; padding is -inf, at most half the kernel)."""
    return _pool(MaxPool2d, x, kernel, stride, padding, name)


def avg_pool2d(
    x, kernel: IntOrTuple, stride: IntOrTuple | None = None, padding: IntOrTuple = 0, name: str | None = None
):
    """The mean of each window; padded zeros count (PyTorch's default count_include_pad=True)."""
    return _pool(AvgPool2d, x, kernel, stride, padding, name)
