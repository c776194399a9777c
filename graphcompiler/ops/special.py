"""Special and further elementwise functions (softplus, erf, gammaln, digamma, clip, floor, mod, ...).

One block per op, as in elementwise.py. SciPy's special functions are imported inside the kernels (through
`_special()`), so `import graphcompiler` stays free of SciPy. Derivative rules build graph nodes only, so
second derivatives work: digamma's derivative is `polygamma(1, x)`, whose own derivative is `polygamma(2, x)`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import DTypeError, GraphCompilerError, ShapeError
from . import elementwise as E
from . import shape as S
from ..graph import Node
from .base import Op, apply, broadcast_shapes, install, sp, undefined_to_sympy
from .elementwise import Binary, Unary


@functools.cache
def _special() -> Any:
    """scipy.special, imported on first use (a kernel runs), never at `import graphcompiler`."""
    import scipy.special  # type: ignore[import-untyped]

    return scipy.special


# -- stable log-domain functions --------------------------------------------------------------


@dataclass(frozen=True)
class LogAddExp(Binary):
    name: ClassVar[str] = "logaddexp"
    ufunc: ClassVar = np.logaddexp  # max(a, b) + log1p(exp(-|a - b|)): finite at +-800

    def bprop(self, i, x, y, g):  # d log(e^a + e^b)/da = e^a/(e^a + e^b) = sigmoid(a - b)
        return S.sum_to(E.multiply(g, E.sigmoid(E.subtract(x[i], x[1 - i]))), x[i])  # exact at +-800

    sympy_fn = lambda a, b: sp.log(sp.exp(a) + sp.exp(b))


@dataclass(frozen=True)
class Softplus(Unary):
    name: ClassVar[str] = "softplus"

    def kernel(self, x, out=None):  # log(1 + e^x) = logaddexp(0, x): exact at +-800
        return np.logaddexp(0, x, out=out)

    def bprop(self, i, x, y, g):
        return E.multiply(g, E.sigmoid(x[0]))  # d softplus(a) = sigmoid(a) da

    sympy_fn = lambda t: sp.log(1 + sp.exp(t))


@dataclass(frozen=True)
class LogSigmoid(Unary):
    name: ClassVar[str] = "log_sigmoid"

    def kernel(self, x, out=None):  # log sigmoid(x) = -softplus(-x)
        if out is None:
            return np.negative(np.logaddexp(0, np.negative(x)))
        np.negative(x, out=out)  # elementwise, so safe when out is x
        np.logaddexp(0, out, out=out)
        return np.negative(out, out=out)

    def bprop(self, i, x, y, g):
        return E.multiply(g, E.sigmoid(E.negative(x[0])))  # d log s(a) = 1 - s(a) = s(-a), exact for a >> 0

    sympy_fn = lambda t: -sp.log(1 + sp.exp(-t))


# -- special functions (SciPy) ----------------------------------------------------------------


@dataclass(frozen=True)
class Erf(Unary):
    name: ClassVar[str] = "erf"

    def kernel(self, x, out=None):
        return _special().erf(x, out=out)

    def bprop(self, i, x, y, g):  # d erf(a) = 2/sqrt(pi) e^(-a^2) da
        return E.multiply(g, E.multiply(E.exp(E.negative(E.square(x[0]))), 2 / np.sqrt(np.pi)))

    sympy_fn = lambda t: sp.erf(t)


@dataclass(frozen=True)
class Gammaln(Unary):
    name: ClassVar[str] = "gammaln"

    def kernel(self, x, out=None):  # log|Gamma(x)|, accurate at 1e300 where Gamma overflows
        return _special().gammaln(x, out=out)

    def bprop(self, i, x, y, g):
        return E.multiply(g, digamma(x[0]))  # d log Gamma(a) = psi(a) da

    sympy_fn = lambda t: sp.loggamma(t)


@dataclass(frozen=True)
class Digamma(Unary):
    name: ClassVar[str] = "digamma"

    def kernel(self, x, out=None):
        return _special().digamma(x, out=out)

    def bprop(self, i, x, y, g):
        return E.multiply(g, polygamma(1, x[0]))  # d psi(a) = psi'(a) da (the trigamma function)

    sympy_fn = lambda t: sp.polygamma(0, t)


@dataclass(frozen=True)
class Polygamma(Unary):
    """psi^(n)(x), the n-th derivative of digamma: the derivative rules of digamma and of itself need it."""

    name: ClassVar[str] = "polygamma"
    sympy_any_rank: ClassVar[bool] = True
    writes_out: ClassVar[bool] = False
    n: int = 1

    def __post_init__(self):
        if not isinstance(self.n, (int, np.integer)) or isinstance(self.n, bool) or self.n < 0:
            raise ValueError(f"polygamma's order n must be a non-negative integer, got {self.n!r}")

    def kernel(self, x):
        return np.asarray(_special().polygamma(self.n, x), dtype=x.dtype)

    def bprop(self, i, x, y, g):
        return E.multiply(g, polygamma(self.n + 1, x[0]))  # d psi^(n)(a) = psi^(n+1)(a) da

    def to_sympy(self, node, x):
        from ..symbolic_terms import elementwise, sp

        return elementwise(node, lambda t: sp.polygamma(self.n, t), x)


# -- elementary functions ---------------------------------------------------------------------


@dataclass(frozen=True)
class Expm1(Unary):
    name: ClassVar[str] = "expm1"
    ufunc: ClassVar = np.expm1

    def bprop(self, i, x, y, g):
        return E.multiply(g, E.exp(x[0]))  # d (e^a - 1) = e^a da

    sympy_fn = lambda t: sp.exp(t) - 1


@dataclass(frozen=True)
class Tan(Unary):
    name: ClassVar[str] = "tan"
    ufunc: ClassVar = np.tan

    def bprop(self, i, x, y, g):
        return E.multiply(g, E.add(E.square(y), 1))  # d tan a = (1 + tan^2 a) da

    sympy_fn = lambda t: sp.tan(t)


@dataclass(frozen=True)
class Arctan(Unary):
    name: ClassVar[str] = "arctan"
    ufunc: ClassVar = np.arctan

    def bprop(self, i, x, y, g):
        return E.divide(g, E.add(E.square(x[0]), 1))  # d atan a = da / (1 + a^2)

    sympy_fn = lambda t: sp.atan(t)


@dataclass(frozen=True)
class Sinh(Unary):
    name: ClassVar[str] = "sinh"
    ufunc: ClassVar = np.sinh

    def bprop(self, i, x, y, g):
        return E.multiply(g, cosh(x[0]))  # d sinh a = cosh a da

    sympy_fn = lambda t: sp.sinh(t)


@dataclass(frozen=True)
class Cosh(Unary):
    name: ClassVar[str] = "cosh"
    ufunc: ClassVar = np.cosh

    def bprop(self, i, x, y, g):
        return E.multiply(g, sinh(x[0]))  # d cosh a = sinh a da

    sympy_fn = lambda t: sp.cosh(t)


@dataclass(frozen=True)
class Reciprocal(Unary):
    name: ClassVar[str] = "reciprocal"
    ufunc: ClassVar = np.reciprocal

    def bprop(self, i, x, y, g):
        return E.negative(E.multiply(g, E.square(y)))  # d (1/a) = -da / a^2 = -y^2 da

    sympy_fn = lambda t: 1 / t


# -- inverse trigonometric and hyperbolic functions (outside their domain: NaN, as NumPy, derivative too) --


def _sqrt_one_minus_square(a):
    """sqrt((1 - a)(1 + a)): exact near |a| = 1 (no cancellation in 1 - a^2), NaN for |a| > 1."""
    return E.sqrt(E.multiply(E.subtract(1.0, a), E.add(a, 1.0)))


@dataclass(frozen=True)
class Arcsin(Unary):
    name: ClassVar[str] = "arcsin"
    ufunc: ClassVar = np.arcsin

    def bprop(self, i, x, y, g):
        return E.divide(g, _sqrt_one_minus_square(x[0]))  # d asin a = da / sqrt(1 - a^2)

    sympy_fn = lambda t: sp.asin(t)


@dataclass(frozen=True)
class Arccos(Unary):
    name: ClassVar[str] = "arccos"
    ufunc: ClassVar = np.arccos

    def bprop(self, i, x, y, g):
        return E.negative(E.divide(g, _sqrt_one_minus_square(x[0])))  # d acos a = -da / sqrt(1 - a^2)

    sympy_fn = lambda t: sp.acos(t)


@dataclass(frozen=True)
class Arcsinh(Unary):
    name: ClassVar[str] = "arcsinh"
    ufunc: ClassVar = np.arcsinh

    def bprop(self, i, x, y, g):
        return E.divide(g, E.sqrt(E.add(E.square(x[0]), 1.0)))  # d asinh a = da / sqrt(1 + a^2)

    sympy_fn = lambda t: sp.asinh(t)


@dataclass(frozen=True)
class Arccosh(Unary):
    """acosh x; NaN for x < 1 (as NumPy), and so is its derivative there."""

    name: ClassVar[str] = "arccosh"
    ufunc: ClassVar = np.arccosh

    def bprop(self, i, x, y, g):  # d acosh a = da / sqrt(a^2 - 1), as sqrt(a - 1) sqrt(a + 1): NaN for a < 1
        a = x[0]
        return E.divide(g, E.multiply(E.sqrt(E.subtract(a, 1.0)), E.sqrt(E.add(a, 1.0))))

    sympy_fn = lambda t: sp.acosh(t)


@dataclass(frozen=True)
class Arctanh(Unary):
    """atanh x; +-inf at x = +-1 and NaN for |x| > 1 (as NumPy), and so is its derivative."""

    name: ClassVar[str] = "arctanh"
    ufunc: ClassVar = np.arctanh

    def bprop(self, i, x, y, g):  # d atanh a = da / (1 - a^2); squaring the root makes it NaN for |a| > 1
        return E.divide(g, E.square(_sqrt_one_minus_square(x[0])))

    sympy_fn = lambda t: sp.atanh(t)


# -- NaN-ignoring maximum and minimum -------------------------------------------------------------------


def _nan_ignoring_share(mine, other, wins, dtype):
    """1 where `mine` is chosen (it wins, or `other` is NaN and `mine` is not), 1/2 on a tie, 0 elsewhere."""
    only_mine = E.multiply(E.astype(E.not_equal(other, other), dtype), E.astype(E.equal(mine, mine), dtype))
    return E.add(E._share(mine, other, wins, dtype), only_mine)


@dataclass(frozen=True)
class Fmax(Binary):
    """max(a, b) ignoring a NaN operand (np.fmax); the gradient goes to the side chosen, halves on a tie."""

    name: ClassVar[str] = "fmax"
    ufunc: ClassVar = np.fmax

    def bprop(self, i, x, y, g):
        return S.sum_to(E.multiply(g, _nan_ignoring_share(x[i], x[1 - i], E.greater, g.dtype)), x[i])

    sympy_fn = lambda a, b: sp.Max(a, b)


@dataclass(frozen=True)
class Fmin(Binary):
    """min(a, b) ignoring a NaN operand (np.fmin); the gradient goes to the side chosen, halves on a tie."""

    name: ClassVar[str] = "fmin"
    ufunc: ClassVar = np.fmin

    def bprop(self, i, x, y, g):
        return S.sum_to(E.multiply(g, _nan_ignoring_share(x[i], x[1 - i], E.less, g.dtype)), x[i])

    sympy_fn = lambda a, b: sp.Min(a, b)


# -- piecewise constant: rounding (a zero derivative, like the comparisons) -------------------


@dataclass(frozen=True)
class Floor(Unary):
    name: ClassVar[str] = "floor"
    ufunc: ClassVar = np.floor
    piecewise_constant: ClassVar[bool] = True

    sympy_fn = lambda t: sp.floor(t)


@dataclass(frozen=True)
class Ceil(Unary):
    name: ClassVar[str] = "ceil"
    ufunc: ClassVar = np.ceil
    piecewise_constant: ClassVar[bool] = True

    sympy_fn = lambda t: sp.ceiling(t)


@dataclass(frozen=True)
class Round(Unary):
    """Round half to even, as np.round."""

    name: ClassVar[str] = "round"
    ufunc: ClassVar = np.rint
    piecewise_constant: ClassVar[bool] = True

    to_sympy = undefined_to_sympy  # SymPy has no round-half-to-even: an undefined function


@dataclass(frozen=True)
class FloorDivide(Binary):
    """a // b (np.floor_divide): floor(a / b) for floats, integer division for integers. Locally constant, so
    its derivative is zero (as NumPy's and JAX's conventions), like floor's; integers carry no gradient."""

    name: ClassVar[str] = "floor_divide"
    ufunc: ClassVar = np.floor_divide
    piecewise_constant: ClassVar[bool] = True

    sympy_fn = lambda a, b: sp.floor(a / b)


# -- logic and bits on bools and integers: no derivative (bool paths add zero, integers have none) --------


@dataclass(frozen=True)
class _Bits(Binary):
    """An elementwise op of bools or integers (NumPy's dtype rule: floats are refused with a DTypeError)."""

    def infer(self, a, b):
        if a.dtype.kind not in "biu" or b.dtype.kind not in "biu":
            raise DTypeError(
                f"{self.name} takes bools or integers, got {a.dtype} ({a.name!r}) and {b.dtype} ({b.name!r}); "
                "compare floats first (x > 0) or cast them (gc.astype(x, 'bool'))"
            )
        return super().infer(a, b)

    logic: ClassVar[Any] = None  # the SymPy connective on bools (sp.And, ...); integers export undefined

    def to_sympy(self, node, *terms):
        from ..symbolic_terms import apply_undefined, elementwise

        if node.dtype.kind != "b":
            return apply_undefined(node, *terms)
        return elementwise(node, lambda a, b: type(self).logic(sp, a, b), *terms)


@dataclass(frozen=True)
class BitwiseAnd(_Bits):
    """a & b: logical and of bools, bitwise and of integers."""

    name: ClassVar[str] = "bitwise_and"
    ufunc: ClassVar = np.bitwise_and
    logic = staticmethod(lambda sp, a, b: sp.And(a, b))


@dataclass(frozen=True)
class BitwiseOr(_Bits):
    """a | b: logical or of bools, bitwise or of integers."""

    name: ClassVar[str] = "bitwise_or"
    ufunc: ClassVar = np.bitwise_or
    logic = staticmethod(lambda sp, a, b: sp.Or(a, b))


@dataclass(frozen=True)
class BitwiseXor(_Bits):
    """a ^ b: logical xor of bools, bitwise xor of integers."""

    name: ClassVar[str] = "bitwise_xor"
    ufunc: ClassVar = np.bitwise_xor
    logic = staticmethod(lambda sp, a, b: sp.Xor(a, b))


@dataclass(frozen=True)
class Invert(Unary):
    """~x: logical not of bools, bitwise not of integers (np.invert)."""

    name: ClassVar[str] = "invert"
    ufunc: ClassVar = np.invert
    any_dtype: ClassVar[bool] = True

    def infer(self, x):
        if x.dtype.kind not in "biu":
            raise DTypeError(
                f"invert (~) takes a bool or an integer, got {x.dtype} from {x.name!r}; for a float condition "
                "use a comparison (x <= 0 for ~(x > 0)) or numpy.logical_not"
            )
        return x.shape, x.dtype

    def to_sympy(self, node, x):
        from ..symbolic_terms import apply_undefined, elementwise

        return elementwise(node, lambda t: sp.Not(t), x) if node.dtype.kind == "b" else apply_undefined(node, x)


# -- mod and clip ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Mod(Binary):
    """a mod b with the sign of b (np.mod, Python's %)."""

    name: ClassVar[str] = "mod"
    ufunc: ClassVar = np.mod

    def bprop(self, i, x, y, g):  # a mod b = a - b floor(a/b); floor is locally constant
        a, b = x
        if i == 0:
            return S.sum_to(g, a)
        return S.sum_to(E.negative(E.multiply(g, floor(E.divide(a, b)))), b)

    sympy_fn = lambda a, b: sp.Mod(a, b)


@dataclass(frozen=True)
class Clip(Op):
    """min(max(x, lo), hi) as np.clip; `lower`/`upper` say whether lo/hi are inputs (None leaves a side open)."""

    name: ClassVar[str] = "clip"
    sympy_any_rank: ClassVar[bool] = True
    lower: bool = True
    upper: bool = True

    def infer(self, *xs):
        if len(xs) != 1 + self.lower + self.upper:
            raise ShapeError(
                f"clip with lower={self.lower}, upper={self.upper} takes "
                f"{1 + self.lower + self.upper} inputs, got {len(xs)}"
            )
        for v in xs:
            if v.dtype == bool:
                raise DTypeError(f"clip of a bool value {v.name!r}; cast it with gc.astype")
        return broadcast_shapes(*[v.shape for v in xs]), np.result_type(*[v.dtype for v in xs])

    def _bounds(self, xs):
        lo = xs[1] if self.lower else None
        hi = xs[1 + self.lower] if self.upper else None
        return lo, hi

    def kernel(self, *xs):
        lo, hi = self._bounds(xs)
        x = xs[0]
        if lo is None and hi is None:
            return np.array(x, copy=True)
        return np.clip(x, lo, hi)

    def bprop(self, i, x, y, g):
        # 1 for x inside [lo, hi] (the bounds included), else the bound that is returned gets g
        a = x[0]
        lo, hi = self._bounds(x)
        dt = g.dtype

        def ind(c):
            return E.astype(c, dt)

        if i == 0:
            inside = None
            if lo is not None:
                inside = ind(E.greater_equal(a, lo))
            if hi is not None:
                up = ind(E.less_equal(a, hi))
                inside = up if inside is None else E.multiply(inside, up)
            return S.sum_to(g if inside is None else E.multiply(g, inside), a)
        if self.lower and i == 1:  # lo is returned where x < lo <= hi
            w = ind(E.less(a, lo))
            if hi is not None:
                w = E.multiply(w, ind(E.less_equal(lo, hi)))
            return S.sum_to(E.multiply(g, w), lo)
        m = a if lo is None else E.maximum(a, lo)  # hi is returned where max(x, lo) > hi
        return S.sum_to(E.multiply(g, ind(E.greater(m, hi))), hi)

    def to_sympy(self, node, *args):
        from ..symbolic_terms import elementwise, sp

        def f(x, *b):
            lo, hi = self._bounds((x, *b))
            v = x if lo is None else sp.Max(x, lo)
            return v if hi is None else sp.Min(v, hi)

        return elementwise(node, f, *args)


# -- the public functions -------------------------------------------------------------------


def logaddexp(a, b, name: str | None = None):
    return apply(LogAddExp(), (a, b), name)


def softplus(x, name: str | None = None):
    return apply(Softplus(), (x,), name)


def log_sigmoid(x, name: str | None = None):
    return apply(LogSigmoid(), (x,), name)


def erf(x, name: str | None = None):
    return apply(Erf(), (x,), name)


def gammaln(x, name: str | None = None):
    return apply(Gammaln(), (x,), name)


def digamma(x, name: str | None = None):
    return apply(Digamma(), (x,), name)


def expm1(x, name: str | None = None):
    return apply(Expm1(), (x,), name)


def tan(x, name: str | None = None):
    return apply(Tan(), (x,), name)


def arctan(x, name: str | None = None):
    return apply(Arctan(), (x,), name)


def sinh(x, name: str | None = None):
    return apply(Sinh(), (x,), name)


def cosh(x, name: str | None = None):
    return apply(Cosh(), (x,), name)


def reciprocal(x, name: str | None = None):
    return apply(Reciprocal(), (x,), name)


def floor(x, name: str | None = None):
    return apply(Floor(), (x,), name)


def ceil(x, name: str | None = None):
    return apply(Ceil(), (x,), name)


def round(x, name: str | None = None):
    return apply(Round(), (x,), name)


def mod(a, b, name: str | None = None):
    return apply(Mod(), (a, b), name)


def floor_divide(a, b, name: str | None = None):
    """a // b, as np.floor_divide; its derivative is zero (locally constant)."""
    return apply(FloorDivide(), (a, b), name)


def bitwise_and(a, b, name: str | None = None):
    """a & b of bools or integers, as np.bitwise_and (np.logical_and on bools)."""
    return apply(BitwiseAnd(), (a, b), name)


def bitwise_or(a, b, name: str | None = None):
    return apply(BitwiseOr(), (a, b), name)


def bitwise_xor(a, b, name: str | None = None):
    return apply(BitwiseXor(), (a, b), name)


def invert(x, name: str | None = None):
    """~x of a bool or an integer, as np.invert."""
    return apply(Invert(), (x,), name)


def arcsin(x, name: str | None = None):
    return apply(Arcsin(), (x,), name)


def arccos(x, name: str | None = None):
    return apply(Arccos(), (x,), name)


def arcsinh(x, name: str | None = None):
    return apply(Arcsinh(), (x,), name)


def arccosh(x, name: str | None = None):
    """acosh x: NaN for x < 1, as np.arccosh."""
    return apply(Arccosh(), (x,), name)


def arctanh(x, name: str | None = None):
    """atanh x: +-inf at +-1, NaN for |x| > 1, as np.arctanh."""
    return apply(Arctanh(), (x,), name)


def fmax(a, b, name: str | None = None):
    """np.fmax: the larger of a and b, the other where one is NaN (NaN only where both are)."""
    return apply(Fmax(), (a, b), name)


def fmin(a, b, name: str | None = None):
    """np.fmin: the smaller of a and b, the other where one is NaN (NaN only where both are)."""
    return apply(Fmin(), (a, b), name)


def logaddexp2(a, b, name: str | None = None):
    """log2(2^a + 2^b), as np.logaddexp2: logaddexp(a ln 2, b ln 2) / ln 2 (finite at +-2000, like logaddexp)."""
    ln2 = float(np.log(2.0))
    return E.multiply(logaddexp(E.multiply(a, ln2), E.multiply(b, ln2)), 1.0 / ln2, name=name)


def nan_to_num(x, nan: float = 0.0, posinf: float | None = None, neginf: float | None = None, name: str | None = None):
    """np.nan_to_num(x, nan=, posinf=, neginf=) of a float node: NaN -> nan, +inf -> posinf (default the
    dtype's largest finite value), -inf -> neginf (default its lowest). The derivative is 1 where x is finite
    and 0 where a value was replaced. Integer and bool nodes come back as they are (nothing to replace)."""
    if not isinstance(x, Node):
        raise GraphCompilerError(f"gc.nan_to_num takes a node, got {type(x).__name__}: call np.nan_to_num on arrays")
    dtype = np.dtype(x.dtype)
    if dtype.kind not in "fc":
        return x if name is None else E.identity(x, name=name)
    if dtype.kind == "c":
        raise DTypeError(
            f"nan_to_num of complex node {x.name!r} ({dtype}) is not supported: pass its real and "
            "imaginary parts separately"
        )
    info = np.finfo(dtype)
    hi = float(info.max) if posinf is None else float(posinf)
    lo = float(info.min) if neginf is None else float(neginf)
    inner = E.where(E.equal(x, np.inf), hi, E.where(E.equal(x, -np.inf), lo, x))
    return E.where(E.not_equal(x, x), float(nan), inner, name=name)


install(
    Node,
    __floordiv__=lambda self, other: floor_divide(self, other),
    __rfloordiv__=lambda self, other: floor_divide(other, self),
    __and__=lambda self, other: bitwise_and(self, other),
    __rand__=lambda self, other: bitwise_and(other, self),
    __or__=lambda self, other: bitwise_or(self, other),
    __ror__=lambda self, other: bitwise_or(other, self),
    __xor__=lambda self, other: bitwise_xor(self, other),
    __rxor__=lambda self, other: bitwise_xor(other, self),
    __invert__=lambda self: invert(self),
    __divmod__=lambda self, other: (floor_divide(self, other), mod(self, other)),
    __rdivmod__=lambda self, other: (floor_divide(other, self), mod(other, self)),
)


def polygamma(n: int, x, name: str | None = None):
    """psi^(n)(x) (internal: the derivative of digamma and of itself)."""
    return apply(Polygamma(n), (x,), name)


def clip(x, lo, hi, name: str | None = None):
    """np.clip(x, lo, hi): lo and hi are numbers, arrays or nodes (None leaves that side open)."""
    bounds = tuple(b for b in (lo, hi) if b is not None)
    return apply(Clip(lo is not None, hi is not None), (x, *bounds), name)
