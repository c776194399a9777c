"""Elementwise ops: arithmetic, functions, comparisons, where and casts, each with its derivative rule."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import DTypeError
from .base import Op, apply, broadcast_shapes
from . import shape as S


# -- shared shape rules ---------------------------------------------------------------------

@dataclass(frozen=True)
class Unary(Op):
    """An elementwise function of one array: same shape; floats only unless `any_dtype`."""

    arity: ClassVar[int] = 1
    ufunc: ClassVar[Any] = None
    any_dtype: ClassVar[bool] = False
    writes_out: ClassVar[bool] = True    # the kernel can write into a planned buffer
    elementwise: ClassVar[bool] = True

    def fast_kernel(self, writes, shape, in_shape, dtype):
        if self.ufunc is not None and type(self).kernel is Unary.kernel:
            return self.ufunc, (), {}                              # the ufunc itself: one Python frame less
        return self.kernel, (), {}

    def infer(self, x):
        if not self.any_dtype and x.dtype.kind != "f":
            raise DTypeError(f"{self.name} needs a floating input, got {x.dtype} from {x.name!r}; "
                             f"cast it first with gc.astype({x.name}, 'float64')")
        return x.shape, x.dtype

    def kernel(self, x, out=None):
        return self.ufunc(x, out=out)


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


@dataclass(frozen=True)
class Comparison(Binary):
    """A comparison: a bool result, piecewise constant, so a path through it adds zero to a gradient."""

    elementwise: ClassVar[bool] = False      # a bool result: never written over its inputs

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
        return S.sum_to(g, x[i])                                   # d(a+b) = da + db

    def to_sympy(self, node, a, b):
        from ..symbolic import elementwise
        return elementwise(node, lambda a, b: a + b, a, b)


@dataclass(frozen=True)
class Subtract(Binary):
    name: ClassVar[str] = "subtract"
    ufunc: ClassVar = np.subtract

    def bprop(self, i, x, y, g):
        return S.sum_to(g if i == 0 else negative(g), x[i])       # d(a-b) = da - db

    def to_sympy(self, node, a, b):
        from ..symbolic import elementwise
        return elementwise(node, lambda a, b: a - b, a, b)


@dataclass(frozen=True)
class Multiply(Binary):
    name: ClassVar[str] = "multiply"
    ufunc: ClassVar = np.multiply

    def bprop(self, i, x, y, g):
        return S.sum_to(multiply(g, x[1 - i]), x[i])              # d(ab) = b da + a db

    def to_sympy(self, node, a, b):
        from ..symbolic import elementwise
        return elementwise(node, lambda a, b: a * b, a, b)  # a Hadamard product of matrices


@dataclass(frozen=True)
class Divide(Binary):
    name: ClassVar[str] = "divide"
    ufunc: ClassVar = np.true_divide

    def bprop(self, i, x, y, g):
        a, b = x
        if i == 0:
            return S.sum_to(divide(g, b), a)                       # d(a/b)/da = 1/b
        return S.sum_to(negative(divide(multiply(g, y), b)), b)   # d(a/b)/db = -(a/b)/b

    def to_sympy(self, node, a, b):
        from ..symbolic import elementwise
        return elementwise(node, lambda a, b: a / b, a, b)


@dataclass(frozen=True)
class Power(Binary):
    name: ClassVar[str] = "power"
    ufunc: ClassVar = np.power

    def bprop(self, i, x, y, g):
        a, b = x
        if i == 0:                                                 # d(a^b)/da = b a^(b-1)
            return S.sum_to(multiply(g, multiply(b, power(a, subtract(b, 1)))), a)
        safe_log = log(where(greater(a, 0), a, 1))                 # d(a^b)/db = a^b log a (0 where a <= 0)
        return S.sum_to(multiply(g, multiply(y, safe_log)), b)

    def to_sympy(self, node, a, b):
        from ..symbolic import elementwise
        return elementwise(node, lambda a, b: a**b, a, b)


@dataclass(frozen=True)
class Maximum(Binary):
    name: ClassVar[str] = "maximum"
    ufunc: ClassVar = np.maximum

    def bprop(self, i, x, y, g):                                   # ties share the gradient equally
        return S.sum_to(multiply(g, _share(x[i], x[1 - i], greater, g.dtype)), x[i])

    def to_sympy(self, node, a, b):
        from ..symbolic import elementwise, sp
        return elementwise(node, sp.Max, a, b)


@dataclass(frozen=True)
class Minimum(Binary):
    name: ClassVar[str] = "minimum"
    ufunc: ClassVar = np.minimum

    def bprop(self, i, x, y, g):
        return S.sum_to(multiply(g, _share(x[i], x[1 - i], less, g.dtype)), x[i])

    def to_sympy(self, node, a, b):
        from ..symbolic import elementwise, sp
        return elementwise(node, sp.Min, a, b)


def _share(mine, other, wins, dtype):
    """1 where `mine` wins, 1/2 on a tie, 0 where it loses: the subgradient JAX and PyTorch pick."""
    return add(astype(wins(mine, other), dtype), multiply(astype(equal(mine, other), dtype), 0.5))


@dataclass(frozen=True)
class Negative(Unary):
    name: ClassVar[str] = "negative"
    ufunc: ClassVar = np.negative
    any_dtype: ClassVar[bool] = True

    def bprop(self, i, x, y, g):
        return negative(g)                                         # d(-a) = -da

    def to_sympy(self, node, x):
        from ..symbolic import elementwise
        return elementwise(node, lambda t: -t, x)


@dataclass(frozen=True)
class Square(Unary):
    name: ClassVar[str] = "square"
    ufunc: ClassVar = np.square
    any_dtype: ClassVar[bool] = True

    def bprop(self, i, x, y, g):
        return multiply(g, multiply(x[0], 2))                      # d(a^2) = 2a da

    def to_sympy(self, node, x):
        from ..symbolic import elementwise
        return elementwise(node, lambda t: t**2, x)


@dataclass(frozen=True)
class Sqrt(Unary):
    name: ClassVar[str] = "sqrt"
    ufunc: ClassVar = np.sqrt

    def bprop(self, i, x, y, g):
        return divide(g, multiply(y, 2))                           # d sqrt(a) = da / (2 sqrt(a))

    def to_sympy(self, node, x):
        from ..symbolic import elementwise, sp
        return elementwise(node, sp.sqrt, x)


@dataclass(frozen=True)
class Exp(Unary):
    name: ClassVar[str] = "exp"
    ufunc: ClassVar = np.exp

    def bprop(self, i, x, y, g):
        return multiply(g, y)                                      # d e^a = e^a da: reuses y (eq. 6.52)

    def to_sympy(self, node, x):
        from ..symbolic import elementwise, sp
        return elementwise(node, sp.exp, x)


@dataclass(frozen=True)
class Log(Unary):
    name: ClassVar[str] = "log"
    ufunc: ClassVar = np.log

    def bprop(self, i, x, y, g):
        return divide(g, x[0])                                     # d log a = da / a

    def to_sympy(self, node, x):
        from ..symbolic import elementwise, sp
        return elementwise(node, sp.log, x)


@dataclass(frozen=True)
class Log1p(Unary):
    name: ClassVar[str] = "log1p"
    ufunc: ClassVar = np.log1p

    def bprop(self, i, x, y, g):
        return divide(g, add(x[0], 1))                             # d log(1+a) = da / (1+a)

    def to_sympy(self, node, x):
        from ..symbolic import elementwise, sp
        return elementwise(node, lambda t: sp.log(1 + t), x)


@dataclass(frozen=True)
class Sin(Unary):
    name: ClassVar[str] = "sin"
    ufunc: ClassVar = np.sin

    def bprop(self, i, x, y, g):
        return multiply(g, cos(x[0]))                              # d sin a = cos a da

    def to_sympy(self, node, x):
        from ..symbolic import elementwise, sp
        return elementwise(node, sp.sin, x)


@dataclass(frozen=True)
class Cos(Unary):
    name: ClassVar[str] = "cos"
    ufunc: ClassVar = np.cos

    def bprop(self, i, x, y, g):
        return negative(multiply(g, sin(x[0])))                    # d cos a = -sin a da

    def to_sympy(self, node, x):
        from ..symbolic import elementwise, sp
        return elementwise(node, sp.cos, x)


@dataclass(frozen=True)
class Tanh(Unary):
    name: ClassVar[str] = "tanh"
    ufunc: ClassVar = np.tanh

    def bprop(self, i, x, y, g):
        return multiply(g, subtract(1, square(y)))                 # d tanh a = (1 - tanh^2 a) da

    def to_sympy(self, node, x):
        from ..symbolic import elementwise, sp
        return elementwise(node, sp.tanh, x)


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

    def bprop(self, i, x, y, g):
        return multiply(g, multiply(y, subtract(1, y)))            # d s(a) = s(a)(1 - s(a)) da

    def to_sympy(self, node, x):
        from ..symbolic import elementwise, sp
        return elementwise(node, lambda t: 1 / (1 + sp.exp(-t)), x)


@dataclass(frozen=True)
class Relu(Unary):
    name: ClassVar[str] = "relu"
    any_dtype: ClassVar[bool] = True

    def kernel(self, x, out=None):
        return np.maximum(x, 0, out=out)

    def fast_kernel(self, writes, shape, in_shape, dtype):
        return np.maximum, (np.zeros((), dtype=dtype),), {}

    def bprop(self, i, x, y, g):
        return multiply(g, astype(greater(x[0], 0), g.dtype))      # d relu(a) = [a > 0] da

    def to_sympy(self, node, x):
        from ..symbolic import elementwise, sp
        return elementwise(node, lambda t: sp.Max(t, 0), x)


@dataclass(frozen=True)
class Abs(Unary):
    name: ClassVar[str] = "abs"
    ufunc: ClassVar = np.absolute
    any_dtype: ClassVar[bool] = True

    def bprop(self, i, x, y, g):
        return multiply(g, sign(x[0]))                             # d|a| = sign(a) da

    def to_sympy(self, node, x):
        from ..symbolic import elementwise, sp
        return elementwise(node, sp.Abs, x)


@dataclass(frozen=True)
class Sign(Unary):
    name: ClassVar[str] = "sign"
    ufunc: ClassVar = np.sign
    any_dtype: ClassVar[bool] = True
    piecewise_constant: ClassVar[bool] = True

    def to_sympy(self, node, x):
        from ..symbolic import elementwise, sp
        return elementwise(node, sp.sign, x)


@dataclass(frozen=True)
class Identity(Unary):
    name: ClassVar[str] = "identity"
    any_dtype: ClassVar[bool] = True
    is_view: ClassVar[bool] = True            # it returns its input

    def kernel(self, x, out=None):
        if out is None:
            return x
        np.copyto(out, x)
        return out

    def bprop(self, i, x, y, g):
        return g

    def to_sympy(self, node, x):
        from ..symbolic import elementwise
        return elementwise(node, lambda t: t, x)  # stop_gradient too: the identity in value


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

    def to_sympy(self, node, a, b):
        from ..symbolic import elementwise, sp
        return elementwise(node, sp.StrictGreaterThan, a, b)


@dataclass(frozen=True)
class Less(Comparison):
    name: ClassVar[str] = "less"
    ufunc: ClassVar = np.less

    def to_sympy(self, node, a, b):
        from ..symbolic import elementwise, sp
        return elementwise(node, sp.StrictLessThan, a, b)


@dataclass(frozen=True)
class GreaterEqual(Comparison):
    name: ClassVar[str] = "greater_equal"
    ufunc: ClassVar = np.greater_equal

    def to_sympy(self, node, a, b):
        from ..symbolic import elementwise, sp
        return elementwise(node, sp.GreaterThan, a, b)


@dataclass(frozen=True)
class LessEqual(Comparison):
    name: ClassVar[str] = "less_equal"
    ufunc: ClassVar = np.less_equal

    def to_sympy(self, node, a, b):
        from ..symbolic import elementwise, sp
        return elementwise(node, sp.LessThan, a, b)


@dataclass(frozen=True)
class Equal(Comparison):
    name: ClassVar[str] = "equal"
    ufunc: ClassVar = np.equal

    def to_sympy(self, node, a, b):
        from ..symbolic import elementwise, sp
        return elementwise(node, lambda a, b: sp.Eq(a, b, evaluate=False), a, b)


@dataclass(frozen=True)
class NotEqual(Comparison):
    name: ClassVar[str] = "not_equal"
    ufunc: ClassVar = np.not_equal

    def to_sympy(self, node, a, b):
        from ..symbolic import elementwise, sp
        return elementwise(node, lambda a, b: sp.Ne(a, b, evaluate=False), a, b)


# -- where and casts ------------------------------------------------------------------------

@dataclass(frozen=True)
class Where(Op):
    name: ClassVar[str] = "where"
    arity: ClassVar[int] = 3
    broadcasting: ClassVar[bool] = True

    def infer(self, c, a, b):
        if c.dtype != bool:
            raise DTypeError(f"where's condition must be bool, got {c.dtype} from {c.name!r}; "
                             "build it with gc.greater/less/equal or gc.astype(c, 'bool')")
        return broadcast_shapes(c.shape, a.shape, b.shape), np.result_type(a.dtype, b.dtype)

    def kernel(self, c, a, b):
        return np.where(c, a, b)

    def bprop(self, i, x, y, g):
        c = x[0]
        zero = np.zeros((), g.dtype)
        if i == 1:
            return S.sum_to(where(c, g, zero), x[1])               # the chosen branch gets the gradient
        return S.sum_to(where(c, zero, g), x[2])

    def to_sympy(self, node, c, a, b):
        from ..symbolic import elementwise, sp
        return elementwise(node, lambda c, a, b: sp.Piecewise((a, c), (b, True)), c, a, b)


@dataclass(frozen=True)
class Astype(Op):
    name: ClassVar[str] = "astype"
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
        return astype(g, x[0].dtype)                               # float -> float: cast the gradient back

    def to_sympy(self, node, x):
        from ..symbolic import elementwise, indicator, sp
        src, dst = node.inputs[0].dtype, node.dtype
        if src == bool and dst != bool:                            # [c] as 0/1 (a step function)
            return elementwise(node, indicator, x)
        if dst == bool:
            return elementwise(node, lambda t: sp.Ne(t, 0), x)
        if src.kind == "f" and dst.kind in "iu":                  # truncation toward zero
            return elementwise(node, lambda t: sp.sign(t) * sp.floor(sp.Abs(t)), x)
        return elementwise(node, lambda t: t, x)  # a change of precision is the identity


# -- the public functions -------------------------------------------------------------------

def add(a, b, name: str | None = None): return apply(Add(), (a, b), name)
def subtract(a, b, name: str | None = None): return apply(Subtract(), (a, b), name)
def multiply(a, b, name: str | None = None): return apply(Multiply(), (a, b), name)
def divide(a, b, name: str | None = None): return apply(Divide(), (a, b), name)
def power(a, b, name: str | None = None): return apply(Power(), (a, b), name)
def maximum(a, b, name: str | None = None): return apply(Maximum(), (a, b), name)
def minimum(a, b, name: str | None = None): return apply(Minimum(), (a, b), name)
def negative(x, name: str | None = None): return apply(Negative(), (x,), name)
def square(x, name: str | None = None): return apply(Square(), (x,), name)
def sqrt(x, name: str | None = None): return apply(Sqrt(), (x,), name)
def exp(x, name: str | None = None): return apply(Exp(), (x,), name)
def log(x, name: str | None = None): return apply(Log(), (x,), name)
def log1p(x, name: str | None = None): return apply(Log1p(), (x,), name)
def sin(x, name: str | None = None): return apply(Sin(), (x,), name)
def cos(x, name: str | None = None): return apply(Cos(), (x,), name)
def tanh(x, name: str | None = None): return apply(Tanh(), (x,), name)
def sigmoid(x, name: str | None = None): return apply(Sigmoid(), (x,), name)
def relu(x, name: str | None = None): return apply(Relu(), (x,), name)
def abs(x, name: str | None = None): return apply(Abs(), (x,), name)
def sign(x, name: str | None = None): return apply(Sign(), (x,), name)
def identity(x, name: str | None = None): return apply(Identity(), (x,), name)
def stop_gradient(x, name: str | None = None): return apply(StopGradient(), (x,), name)
def greater(a, b, name: str | None = None): return apply(Greater(), (a, b), name)
def less(a, b, name: str | None = None): return apply(Less(), (a, b), name)
def greater_equal(a, b, name: str | None = None): return apply(GreaterEqual(), (a, b), name)
def less_equal(a, b, name: str | None = None): return apply(LessEqual(), (a, b), name)
def equal(a, b, name: str | None = None): return apply(Equal(), (a, b), name)
def not_equal(a, b, name: str | None = None): return apply(NotEqual(), (a, b), name)
def where(cond, a, b, name: str | None = None): return apply(Where(), (cond, a, b), name)


def astype(x, dtype: Any, name: str | None = None):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise DTypeError(f"astype: {dtype!r} is not a dtype; use e.g. 'float32', 'int64', 'bool'") from None
    if dt.kind not in "biuf":
        raise DTypeError(f"astype: dtype {dt} is not supported; use bool, an integer or a float dtype")
    return apply(Astype(dt.name), (x,), name)
