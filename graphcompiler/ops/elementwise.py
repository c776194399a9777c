"""Elementwise ops: arithmetic, functions, comparisons, where and casts, each with its derivative rule.

Also logsumexp (re-exported by nn.py): exp's derivative of log(sum(exp(x))) builds a logsumexp node and
logsumexp's derivative builds exp, so the two blocks live in one module. Broadcasting ops' derivatives sum
back with shape.sum_to; this module imports shape.py and base.py only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import DTypeError, GraphCompilerError, fmt_shape
from ..graph import Node
from .base import (
    Deferred,
    Op,
    apply,
    broadcast_shapes,
    elementwise_to_sympy,
    float_dtype,
    install,
    normalize_axes,
    sp,
    undefined_to_sympy,
)
from . import shape as S


# -- shared shape rules ---------------------------------------------------------------------


@dataclass(frozen=True)
class Unary(Op):
    """An elementwise function of one array: same shape; floats only unless `any_dtype`."""

    arity: ClassVar[int] = 1
    ufunc: ClassVar[Any] = None
    any_dtype: ClassVar[bool] = False
    writes_out: ClassVar[bool] = True  # the kernel can write into a planned buffer
    elementwise: ClassVar[bool] = True

    def fast_kernel(self, writes, shape, in_shape, dtype):
        if self.ufunc is not None and type(self).kernel is Unary.kernel:
            return self.ufunc, (), {}  # the ufunc itself: one Python frame less
        return self.kernel, (), {}

    def infer(self, x):
        if not self.any_dtype and x.dtype.kind != "f":
            raise DTypeError(
                f"{self.name} needs a floating input, got {x.dtype} from {x.name!r}; "
                f"cast it first with gc.astype({x.name}, 'float64')"
            )
        return x.shape, x.dtype

    def kernel(self, x, out=None):
        return self.ufunc(x, out=out)

    to_sympy = elementwise_to_sympy  # from the subclass's sympy_fn


@dataclass(frozen=True)
class Binary(Op):
    """An elementwise function of two arrays with NumPy broadcasting and dtype promotion."""

    arity: ClassVar[int] = 2
    ufunc: ClassVar[Any] = None
    writes_out: ClassVar[bool] = True
    elementwise: ClassVar[bool] = True
    broadcasting: ClassVar[bool] = True

    def fast_kernel(self, writes, shape, in_shape, dtype):
        if self.ufunc is not None and type(self).kernel is Binary.kernel:
            return self.ufunc, (), {}
        return self.kernel, (), {}

    def infer(self, a, b):
        shape = broadcast_shapes(a.shape, b.shape)
        try:
            dtype = _result_dtype(self.ufunc, a.dtype, b.dtype)
        except TypeError:
            raise DTypeError(f"{self.name} is not defined for dtypes {a.dtype} and {b.dtype}") from None
        return shape, dtype

    def kernel(self, a, b, out=None):
        return self.ufunc(a, b, out=out)

    to_sympy = elementwise_to_sympy  # from the subclass's sympy_fn


@dataclass(frozen=True)
class Comparison(Binary):
    """A comparison: a bool result, piecewise constant, so a path through it adds zero to a gradient."""

    elementwise: ClassVar[bool] = False  # a bool result: never written over its inputs

    piecewise_constant: ClassVar[bool] = True

    def infer(self, a, b):
        return broadcast_shapes(a.shape, b.shape), np.dtype(bool)


@functools.lru_cache(maxsize=None)
def _result_dtype(ufunc, a: np.dtype, b: np.dtype) -> np.dtype:
    return ufunc.resolve_dtypes((a, b, None))[-1]


# -- arithmetic -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Add(Binary):
    name: ClassVar[str] = "add"
    ufunc: ClassVar = np.add

    def bprop(self, i, x, y, g):
        return S.sum_to(g, x[i])  # d(a+b) = da + db

    sympy_fn = lambda a, b: a + b


@dataclass(frozen=True)
class Subtract(Binary):
    name: ClassVar[str] = "subtract"
    ufunc: ClassVar = np.subtract

    def bprop(self, i, x, y, g):
        return S.sum_to(g if i == 0 else negative(g), x[i])  # d(a-b) = da - db

    sympy_fn = lambda a, b: a - b


@dataclass(frozen=True)
class Multiply(Binary):
    name: ClassVar[str] = "multiply"
    ufunc: ClassVar = np.multiply

    def bprop(self, i, x, y, g):
        return S.sum_to(multiply(g, x[1 - i]), x[i])  # d(ab) = b da + a db

    sympy_fn = lambda a, b: a * b  # a Hadamard product of matrices


@dataclass(frozen=True)
class Divide(Binary):
    name: ClassVar[str] = "divide"
    ufunc: ClassVar = np.true_divide

    def bprop(self, i, x, y, g):
        a, b = x
        if i == 0:
            return S.sum_to(divide(g, b), a)  # d(a/b)/da = 1/b
        return S.sum_to(negative(divide(multiply(g, y), b)), b)  # d(a/b)/db = -(a/b)/b

    sympy_fn = lambda a, b: a / b


@dataclass(frozen=True)
class Power(Binary):
    name: ClassVar[str] = "power"
    ufunc: ClassVar = np.power

    def bprop(self, i, x, y, g):
        a, b = x
        if i == 0:  # d(a^b)/da = b a^(b-1)
            return S.sum_to(multiply(g, multiply(b, power(a, subtract(b, 1)))), a)
        safe_log = log(where(greater(a, 0), a, 1))  # d(a^b)/db = a^b log a (0 where a <= 0)
        return S.sum_to(multiply(g, multiply(y, safe_log)), b)

    sympy_fn = lambda a, b: a**b


@dataclass(frozen=True)
class Maximum(Binary):
    name: ClassVar[str] = "maximum"
    ufunc: ClassVar = np.maximum

    def bprop(self, i, x, y, g):  # ties share the gradient equally
        return S.sum_to(multiply(g, _share(x[i], x[1 - i], greater, g.dtype)), x[i])

    sympy_fn = lambda a, b: sp.Max(a, b)


@dataclass(frozen=True)
class Minimum(Binary):
    name: ClassVar[str] = "minimum"
    ufunc: ClassVar = np.minimum

    def bprop(self, i, x, y, g):
        return S.sum_to(multiply(g, _share(x[i], x[1 - i], less, g.dtype)), x[i])

    sympy_fn = lambda a, b: sp.Min(a, b)


def _share(mine, other, wins, dtype):
    """1 where `mine` wins, 1/2 on a tie, 0 where it loses: the subgradient JAX and PyTorch pick."""
    return add(astype(wins(mine, other), dtype), multiply(astype(equal(mine, other), dtype), 0.5))


@dataclass(frozen=True)
class Negative(Unary):
    name: ClassVar[str] = "negative"
    ufunc: ClassVar = np.negative
    any_dtype: ClassVar[bool] = True

    def bprop(self, i, x, y, g):
        return negative(g)  # d(-a) = -da

    sympy_fn = lambda t: -t


@dataclass(frozen=True)
class Square(Unary):
    name: ClassVar[str] = "square"
    ufunc: ClassVar = np.square
    any_dtype: ClassVar[bool] = True

    def bprop(self, i, x, y, g):
        return multiply(g, multiply(x[0], 2))  # d(a^2) = 2a da

    sympy_fn = lambda t: t**2


@dataclass(frozen=True)
class Sqrt(Unary):
    name: ClassVar[str] = "sqrt"
    ufunc: ClassVar = np.sqrt

    def bprop(self, i, x, y, g):
        return divide(g, multiply(y, 2))  # d sqrt(a) = da / (2 sqrt(a))

    sympy_fn = lambda t: sp.sqrt(t)


@dataclass(frozen=True)
class Exp(Unary):
    name: ClassVar[str] = "exp"
    ufunc: ClassVar = np.exp

    def bprop(self, i, x, y, g):
        a = _over_sum_of(g, y)
        if a is not None:  # g = a / sum(e^x) broadcast (log(sum(exp))): a e^(x - logsumexp x), finite at 1e300
            s = a[1]
            return multiply(a[0], exp(subtract(x[0], logsumexp(x[0], axis=s.op.axis, keepdims=True))))
        return multiply(g, y)  # d e^a = e^a da: reuses y (eq. 6.52)

    sympy_fn = lambda t: sp.exp(t)


@dataclass(frozen=True)
class Log(Unary):
    name: ClassVar[str] = "log"
    ufunc: ClassVar = np.log

    def bprop(self, i, x, y, g):
        return divide(g, x[0])  # d log a = da / a

    sympy_fn = lambda t: sp.log(t)


@dataclass(frozen=True)
class Log1p(Unary):
    name: ClassVar[str] = "log1p"
    ufunc: ClassVar = np.log1p

    def bprop(self, i, x, y, g):
        return divide(g, add(x[0], 1))  # d log(1+a) = da / (1+a)

    sympy_fn = lambda t: sp.log(1 + t)


@dataclass(frozen=True)
class Sin(Unary):
    name: ClassVar[str] = "sin"
    ufunc: ClassVar = np.sin

    def bprop(self, i, x, y, g):
        return multiply(g, cos(x[0]))  # d sin a = cos a da

    sympy_fn = lambda t: sp.sin(t)


@dataclass(frozen=True)
class Cos(Unary):
    name: ClassVar[str] = "cos"
    ufunc: ClassVar = np.cos

    def bprop(self, i, x, y, g):
        return negative(multiply(g, sin(x[0])))  # d cos a = -sin a da

    sympy_fn = lambda t: sp.cos(t)


@dataclass(frozen=True)
class Tanh(Unary):
    name: ClassVar[str] = "tanh"
    ufunc: ClassVar = np.tanh

    def bprop(self, i, x, y, g):
        return multiply(g, subtract(1, square(y)))  # d tanh a = (1 - tanh^2 a) da

    sympy_fn = lambda t: sp.tanh(t)


def _over_sum_of(g: Node, y: Node):
    """(a with the summed axes kept, the sum node) when g = broadcast(a / sum(y, axes)) as sum's and log's
    bprops build it for log(sum(exp(x))); else None."""
    n = g
    if n.op.name in ("broadcast_to", "broadcast_like"):
        n = n.inputs[0]
    expanded = n.op.name == "expand_dims"
    if expanded:
        n = n.inputs[0]
    if n.op.name != "divide":
        return None
    a, s = n.inputs
    sum_op = s.op
    if (
        not isinstance(sum_op, S.Reduction)
        or sum_op.name != "sum"
        or s.inputs[0] is not y
        or a.shape != s.shape
        or a.dtype != y.dtype
    ):
        return None
    if expanded:
        ex = g.op if g.op.name == "expand_dims" else g.inputs[0].op
        assert isinstance(ex, S.ExpandDims)  # n is g or g.inputs[0], and n's op is expand_dims
        if tuple(ex.axis) != tuple(sum_op.axis):
            return None
    if not sum_op.keepdims and sum_op.axis:
        if not expanded:
            return None
        a = S.expand_dims(a, sum_op.axis)
    return a, s


# -- logsumexp: exp's derivative of log(sum(exp(x))) builds it, and its own derivative builds exp -----


def stable_max(x, axis, keepdims=True):
    m = np.max(x, axis=axis, keepdims=keepdims)
    return np.where(np.isfinite(m), m, 0)  # an all -inf slice stays -inf, not nan


def logsumexp_kernel(x, axis, keepdims):
    m = stable_max(x, axis)
    s = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return s if keepdims else np.squeeze(s, axis=axis)


@dataclass(frozen=True)
class LogSumExp(Op):
    name: ClassVar[str] = "logsumexp"
    scratch: ClassVar[int] = 2
    arity: ClassVar[int] = 1
    axis: tuple = ()
    keepdims: bool = False

    def infer(self, x):
        float_dtype(x, "logsumexp")
        if self.keepdims:
            return tuple(1 if k in self.axis else d for k, d in enumerate(x.shape)), x.dtype
        return tuple(d for k, d in enumerate(x.shape) if k not in self.axis), x.dtype

    def kernel(self, x):
        return logsumexp_kernel(x, self.axis, self.keepdims)

    def bprop(self, i, x, y, g):  # dx = g * exp(x - lse) = g * softmax(x)
        keep = (lambda v: v) if self.keepdims or not self.axis else (lambda v: S.expand_dims(v, self.axis))
        return multiply(keep(g), exp(subtract(x[0], keep(y))))

    to_sympy = undefined_to_sympy


def split_quotient(g: Node, y: Node, complement: bool = False) -> tuple[Node | None, Node | None]:
    """Write a gradient g arriving at y as a / y + rest (or, with complement, as -a / (1 - y) + rest).

    log's bprop divides by its input; when that input is a softmax or a sigmoid, y can underflow to 0
    while the forward (rewritten to log_softmax) stays finite, and y * (a / y) is 0 * inf. The bprops of
    softmax and sigmoid take the quotient apart here and cancel y symbolically, so the gradient of
    log(softmax(z)) is a - softmax(z) sum(a), exact at logits of 1e300. Either part may be None.
    """

    def match(n):
        if complement:
            if n.op.name != "negative":
                return None
            n = n.inputs[0]
        if n.op.name != "divide" or n.shape != y.shape or n.inputs[0].shape != y.shape:
            return None
        d = n.inputs[1]
        if not complement:
            return n.inputs[0] if d is y else None
        one, s = d.inputs if d.op.name == "subtract" else (None, None)
        if s is y and one.op.name == "constant" and one.ndim == 0 and one.graph.stored_value(one) == 1.0:
            return n.inputs[0]
        return None

    found, rest, stack = [], [], [g]
    while stack:
        n = stack.pop()
        a = match(n)
        if a is not None:
            found.append(a)
        elif n.op.name == "add" and n.inputs[0].shape == n.inputs[1].shape == y.shape:
            stack.extend(n.inputs)
        else:
            rest.append(n)
    if not found:
        return None, g

    def total(ns):
        out = ns[0]
        for n in ns[1:]:
            out = add(out, n)
        return out

    return total(found), (total(rest) if rest else None)


@dataclass(frozen=True)
class Sigmoid(Unary):
    name: ClassVar[str] = "sigmoid"

    def kernel(self, x, out=None):
        # 1/(1+e^-x) = exp(-log(1+e^-x)); logaddexp keeps it finite and accurate at |x| = 1e4
        if out is None:
            return np.exp(-np.logaddexp(0, -x))
        np.negative(x, out=out)
        np.logaddexp(0, out, out=out)
        np.negative(out, out=out)
        return np.exp(out, out=out)

    def bprop(self, i, x, y, g):  # d s(a) = s(a)(1 - s(a)) da
        a, rest = split_quotient(g, y)
        b, rest = split_quotient(rest, y, complement=True) if rest is not None else (None, None)
        parts = []
        if a is not None:  # g = a / s (log(sigmoid)): a (1 - s) = a s(-x), finite where s underflows to 0
            parts.append(multiply(a, sigmoid(negative(x[0]))))  # s(-x), not 1 - s: exact where s rounds to 1
        if b is not None:  # g = -b / (1 - s) (log(1 - sigmoid)): -b s, finite where 1 - s rounds to 0
            parts.append(negative(multiply(b, y)))
        if rest is not None:
            parts.append(multiply(rest, multiply(y, subtract(1, y))))
        out = parts[0]
        for p in parts[1:]:
            out = add(out, p)
        return out

    sympy_fn = lambda t: 1 / (1 + sp.exp(-t))


@dataclass(frozen=True)
class Relu(Unary):
    name: ClassVar[str] = "relu"
    any_dtype: ClassVar[bool] = True

    def kernel(self, x, out=None):
        return np.maximum(x, 0, out=out)

    def fast_kernel(self, writes, shape, in_shape, dtype):
        return np.maximum, (np.zeros((), dtype=dtype),), {}

    def bprop(self, i, x, y, g):
        return multiply(g, astype(greater(x[0], 0), g.dtype))  # d relu(a) = [a > 0] da

    sympy_fn = lambda t: sp.Max(t, 0)


@dataclass(frozen=True)
class Abs(Unary):
    name: ClassVar[str] = "abs"
    ufunc: ClassVar = np.absolute
    any_dtype: ClassVar[bool] = True

    def bprop(self, i, x, y, g):
        return multiply(g, sign(x[0]))  # d|a| = sign(a) da

    sympy_fn = lambda x: sp.Abs(x)


@dataclass(frozen=True)
class Sign(Unary):
    name: ClassVar[str] = "sign"
    ufunc: ClassVar = np.sign
    any_dtype: ClassVar[bool] = True
    piecewise_constant: ClassVar[bool] = True

    sympy_fn = lambda t: sp.sign(t)


@dataclass(frozen=True)
class Identity(Unary):
    name: ClassVar[str] = "identity"
    any_dtype: ClassVar[bool] = True
    is_view: ClassVar[bool] = True  # it returns its input

    def kernel(self, x, out=None):
        if out is None:
            return x
        np.copyto(out, x)
        return out

    def bprop(self, i, x, y, g):
        return g

    sympy_fn = lambda t: t  # stop_gradient too: the identity in value


@dataclass(frozen=True)
class StopGradient(Identity):
    """The identity in a run; in build_grad a path through it adds zero (JAX's lax.stop_gradient)."""

    name: ClassVar[str] = "stop_gradient"
    piecewise_constant: ClassVar[bool] = True


# -- comparisons ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Greater(Comparison):
    name: ClassVar[str] = "greater"
    ufunc: ClassVar = np.greater

    sympy_fn = lambda a, b: sp.StrictGreaterThan(a, b)


@dataclass(frozen=True)
class Less(Comparison):
    name: ClassVar[str] = "less"
    ufunc: ClassVar = np.less

    sympy_fn = lambda a, b: sp.StrictLessThan(a, b)


@dataclass(frozen=True)
class GreaterEqual(Comparison):
    name: ClassVar[str] = "greater_equal"
    ufunc: ClassVar = np.greater_equal

    sympy_fn = lambda a, b: sp.GreaterThan(a, b)


@dataclass(frozen=True)
class LessEqual(Comparison):
    name: ClassVar[str] = "less_equal"
    ufunc: ClassVar = np.less_equal

    sympy_fn = lambda a, b: sp.LessThan(a, b)


@dataclass(frozen=True)
class Equal(Comparison):
    name: ClassVar[str] = "equal"
    ufunc: ClassVar = np.equal

    sympy_fn = lambda a, b: sp.Eq(a, b, evaluate=False)


@dataclass(frozen=True)
class NotEqual(Comparison):
    name: ClassVar[str] = "not_equal"
    ufunc: ClassVar = np.not_equal

    sympy_fn = lambda a, b: sp.Ne(a, b, evaluate=False)


# -- where and casts ------------------------------------------------------------------------


@dataclass(frozen=True)
class Where(Op):
    name: ClassVar[str] = "where"
    arity: ClassVar[int] = 3
    broadcasting: ClassVar[bool] = True

    def infer(self, c, a, b):
        if c.dtype != bool:
            raise DTypeError(
                f"where's condition must be bool, got {c.dtype} from {c.name!r}; "
                "build it with gc.greater/less/equal or gc.astype(c, 'bool')"
            )
        return broadcast_shapes(c.shape, a.shape, b.shape), np.result_type(a.dtype, b.dtype)

    def kernel(self, c, a, b):
        return np.where(c, a, b)

    def bprop(self, i, x, y, g):
        c = x[0]
        zero = np.zeros((), g.dtype)
        if i == 1:
            return S.sum_to(where(c, g, zero), x[1])  # the chosen branch gets the gradient
        return S.sum_to(where(c, zero, g), x[2])

    sympy_fn = lambda c, a, b: sp.Piecewise((a, c), (b, True))
    to_sympy = elementwise_to_sympy


@dataclass(frozen=True)
class Astype(Op):
    name: ClassVar[str] = "astype"
    sympy_any_rank: ClassVar[bool] = True
    arity: ClassVar[int] = 1
    dtype: str = "float64"

    def __post_init__(self):
        object.__setattr__(self, "dtype", np.dtype(self.dtype).name)

    def infer(self, x):
        return x.shape, np.dtype(self.dtype)

    def kernel(self, x, out=None):
        if out is None:
            return x.astype(self.dtype)
        np.copyto(out, x, casting="unsafe")
        return out

    writes_out: ClassVar[bool] = True

    def bprop(self, i, x, y, g):
        return astype(g, x[0].dtype)  # float -> float: cast the gradient back

    def to_sympy(self, node, x):
        from ..symbolic_terms import elementwise, indicator, sp

        src, dst = node.inputs[0].dtype, node.dtype
        if src.kind == "b" and dst.kind != "b":  # [c] as 0/1 (a step function)
            return elementwise(node, indicator, x)
        if dst.kind == "b":
            return elementwise(node, lambda t: sp.Ne(t, 0), x)
        if src.kind == "f" and dst.kind in "iu":  # truncation toward zero
            return elementwise(node, lambda t: sp.sign(t) * sp.floor(sp.Abs(t)), x)
        return elementwise(node, lambda t: t, x)  # a change of precision is the identity


# -- the public functions -------------------------------------------------------------------


def add(a, b, name: str | None = None):
    return apply(Add(), (a, b), name)


def subtract(a, b, name: str | None = None):
    return apply(Subtract(), (a, b), name)


def multiply(a, b, name: str | None = None):
    return apply(Multiply(), (a, b), name)


def divide(a, b, name: str | None = None):
    return apply(Divide(), (a, b), name)


def power(a, b, name: str | None = None):
    return apply(Power(), (a, b), name)


def maximum(a, b, name: str | None = None):
    return apply(Maximum(), (a, b), name)


def minimum(a, b, name: str | None = None):
    return apply(Minimum(), (a, b), name)


def negative(x, name: str | None = None):
    return apply(Negative(), (x,), name)


def square(x, name: str | None = None):
    return apply(Square(), (x,), name)


def sqrt(x, name: str | None = None):
    return apply(Sqrt(), (x,), name)


def logsumexp(x, axis=None, keepdims: bool = False, name: str | None = None):
    return apply(LogSumExp(normalize_axes(axis, x.ndim, "logsumexp", x), bool(keepdims)), (x,), name)


def exp(x, name: str | None = None):
    return apply(Exp(), (x,), name)


def log(x, name: str | None = None):
    return apply(Log(), (x,), name)


def log1p(x, name: str | None = None):
    return apply(Log1p(), (x,), name)


def sin(x, name: str | None = None):
    return apply(Sin(), (x,), name)


def cos(x, name: str | None = None):
    return apply(Cos(), (x,), name)


def tanh(x, name: str | None = None):
    return apply(Tanh(), (x,), name)


def sigmoid(x, name: str | None = None):
    return apply(Sigmoid(), (x,), name)


def relu(x, name: str | None = None):
    return apply(Relu(), (x,), name)


def abs(x, name: str | None = None):
    return apply(Abs(), (x,), name)


def sign(x, name: str | None = None):
    return apply(Sign(), (x,), name)


def identity(x, name: str | None = None):
    return apply(Identity(), (x,), name)


def stop_gradient(x, name: str | None = None):
    return apply(StopGradient(), (x,), name)


def greater(a, b, name: str | None = None):
    return apply(Greater(), (a, b), name)


def less(a, b, name: str | None = None):
    return apply(Less(), (a, b), name)


def greater_equal(a, b, name: str | None = None):
    return apply(GreaterEqual(), (a, b), name)


def less_equal(a, b, name: str | None = None):
    return apply(LessEqual(), (a, b), name)


def equal(a, b, name: str | None = None):
    return apply(Equal(), (a, b), name)


def not_equal(a, b, name: str | None = None):
    return apply(NotEqual(), (a, b), name)


def where(cond, a, b, name: str | None = None):
    return apply(Where(), (cond, a, b), name)


def astype(x, dtype: Any, name: str | None = None):
    if isinstance(dtype, (Node, Deferred)):  # np.dtype would read its .dtype: say what was meant instead
        raise DTypeError(f"astype: the dtype is a node ({dtype!r}); give a dtype, e.g. 'float32' or y.dtype")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise DTypeError(f"astype: {dtype!r} is not a dtype; use e.g. 'float32', 'int64', 'bool'") from None
    if dt.kind not in "biuf":
        raise DTypeError(f"astype: dtype {dt} is not supported; use bool, an integer or a float dtype")
    return apply(Astype(dt.name), (x,), name)


# -- x == y and x != y: elementwise, never a silent Python bool ------------------------------


class DeferredComparison(Deferred):
    """`a == b` or `a != b` with the node a on the left: not yet a node.

    Where an op, a NumPy function or an operator reads it, it becomes the elementwise `equal` / `not_equal`
    node of a's graph (once: `node()` caches it), so `np.where(x == 0, 1.0, x)` in traced NumPy code compares
    element by element. Used as a Python bool it adds nothing to the graph: between two nodes it is identity
    (`node in nodes`, `list.index` and dict probes work as for any object); with a number or an array it
    raises, since the node has no value until a program runs. A deferred object, not a node, because
    `node in nodes` asks `==` of every element: a node made each time would grow the user's graph.
    """

    __slots__ = ("a", "b", "negate", "_node")
    __array_priority__ = 1001  # NumPy arrays defer to its reflected operators, as to a node's
    __hash__ = object.__hash__

    def __init__(self, a: Node, b: Any, negate: bool):
        self.a, self.b, self.negate = a, b, negate
        self._node: Node | None = None

    def node(self) -> Node:
        """The `equal` (or `not_equal`) node of a's graph; made on the first call only."""
        made = self._node
        if made is None:
            made = self._node = (not_equal if self.negate else equal)(self.a, self.b)
        return made

    def _text(self) -> str:
        b = (
            self.b.name
            if isinstance(self.b, Node)
            else type(self.b).__name__
            if isinstance(self.b, (Deferred, np.ndarray, list, tuple))
            else repr(self.b)
        )
        return f"{self.a.name} {'!=' if self.negate else '=='} {b}"

    def __bool__(self) -> bool:
        if type(self.b) is Node:
            return (self.a is self.b) is not self.negate  # nodes compared as Python objects: identity
        a = self.a
        raise GraphCompilerError(
            f"`{self._text()}`: node {a.name!r} ({a.op.name}, shape {fmt_shape(a.shape)}) has no value until a "
            "program runs, so the comparison cannot be a Python bool (if, and, or, assert); it is elementwise: "
            "choose inside the graph with gc.where / numpy.where, or compare nodes as objects with `is`"
        )

    def __repr__(self) -> str:
        made = f" = {self._node.name}" if self._node is not None else ""
        return f"<deferred comparison {self._text()}{made}>"

    def __getattr__(self, name: str) -> Any:
        # .shape, .dtype, .astype, .sum ... read the node; private and special names (probes such as
        # __array_interface__ or _repr_html_) do not make it
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.node(), name)

    def _no_value(self, what: str) -> GraphCompilerError:
        return GraphCompilerError(
            f"{what} of `{self._text()}`: a comparison of nodes has no value until a program runs; "
            "compile and run it (gc.compile, gc.function), or keep computing with graph ops"
        )

    def __array__(self, dtype=None, copy=None):
        raise self._no_value("numpy.asarray")

    def __float__(self):
        raise self._no_value("float()")

    def __int__(self):
        raise self._no_value("int()")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        made, changed = _made(inputs)
        if not changed:  # only in out=
            raise GraphCompilerError(
                f"numpy.{ufunc.__name__}(..., out=...) cannot write into `{self._text()}`: a comparison of nodes "
                "has no storage until a program runs; drop out= and use the returned value"
            )
        return getattr(ufunc, method)(*made, **kwargs)  # again, now on nodes: Node.__array_ufunc__

    def __array_function__(self, func, types, args, kwargs):
        args, changed = _made(args)
        kwargs, changed_k = _made(kwargs)
        if not (changed or changed_k):
            return NotImplemented
        return func(*args, **kwargs)  # again, now on nodes: Node.__array_function__


def _made(obj: Any) -> tuple[Any, bool]:
    """obj with each Deferred in it (in nested lists, tuples and dict values) replaced by its node."""
    if isinstance(obj, Deferred):
        return obj.node(), True
    if isinstance(obj, (list, tuple)):
        parts = [_made(o) for o in obj]
        if not any(c for _, c in parts):
            return obj, False
        items = [p for p, _ in parts]
        return (items if isinstance(obj, list) else tuple(items)), True
    if isinstance(obj, dict):
        parts2 = {k: _made(v) for k, v in obj.items()}
        if not any(c for _, c in parts2.values()):
            return obj, False
        return {k: p for k, (p, _) in parts2.items()}, True
    return obj, False


def _operator(name: str):
    def method(self: DeferredComparison, *args: Any) -> Any:
        return getattr(self.node(), name)(*args)  # whatever the op layers installed on Node

    method.__name__ = name
    return method


for _name in (
    "__add__ __radd__ __sub__ __rsub__ __mul__ __rmul__ __truediv__ __rtruediv__ __floordiv__ __rfloordiv__ "
    "__divmod__ __rdivmod__ __mod__ __rmod__ __pow__ __rpow__ __matmul__ __rmatmul__ "
    "__and__ __rand__ __or__ __ror__ __xor__ __rxor__ "
    "__lt__ __le__ __gt__ __ge__ __eq__ __ne__ __neg__ __pos__ __abs__ __invert__ __getitem__ __len__ __iter__"
).split():
    setattr(DeferredComparison, _name, _operator(_name))
DeferredComparison.__hash__ = object.__hash__  # type: ignore[assignment]  # __eq__ set above keeps it; be explicit


_COMPARABLE = (Node, Deferred, bool, int, float, complex, np.generic, np.ndarray)


def _comparison(negate: bool):
    def compare(self: Node, other: Any) -> Any:
        # a node, a number or an array: elementwise; anything else (None, a string, an object) is no value a
        # node can equal, so Python's own fallback answers (identity: False for ==)
        if isinstance(other, _COMPARABLE) or (isinstance(other, (list, tuple)) and _numeric(other)):
            return DeferredComparison(self, other, negate)
        return NotImplemented

    compare.__name__ = "__ne__" if negate else "__eq__"
    return compare


def _numeric(seq: list | tuple) -> bool:
    try:
        return np.asarray(seq).dtype.kind in "biufc"
    except (TypeError, ValueError):
        return False


# -- Node's operators, installed from this layer (graph.py imports no op) ---------------------

install(
    Node,
    __add__=lambda self, other: add(self, other),
    __radd__=lambda self, other: add(other, self),
    __sub__=lambda self, other: subtract(self, other),
    __rsub__=lambda self, other: subtract(other, self),
    __mul__=lambda self, other: multiply(self, other),
    __rmul__=lambda self, other: multiply(other, self),
    __truediv__=lambda self, other: divide(self, other),
    __rtruediv__=lambda self, other: divide(other, self),
    __pow__=lambda self, other: power(self, other),
    __rpow__=lambda self, other: power(other, self),
    __neg__=lambda self: negative(self),
    __abs__=lambda self: abs(self),
    __gt__=lambda self, other: greater(self, other),
    __lt__=lambda self, other: less(self, other),
    __ge__=lambda self, other: greater_equal(self, other),
    __le__=lambda self, other: less_equal(self, other),
    __eq__=_comparison(negate=False),
    __ne__=_comparison(negate=True),
)
