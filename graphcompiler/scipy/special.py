"""gc.scipy.special: scipy.special's functions on graph nodes, as compositions of gc ops (as jax.scipy.special).

Each function takes nodes, NumPy arrays and numbers; arrays and numbers become constants of the nodes'
graph. With no node among the arguments it returns scipy.special's own value. Derivatives are those of
the composition, so every order works; where a branch would be undefined (log 0, a division by 0) the
other branch is fed a safe value first (the double `where`), so no NaN reaches a gradient.

erfc, log_ndtr and their kin are exact in the far tail: for z >= 2.5, erfc(z) = e^(-z^2) / (sqrt(pi) t(z))
with t the continued fraction z + (1/2)/(z + 1/(z + (3/2)/(z + ...))) cut after 32 terms (relative error
under 1e-14 there), computed in the log domain, so log_ndtr(-30) = -454.32... and not log(0).
"""

from __future__ import annotations

import functools
import math
import inspect
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import DTypeError, GraphCompilerError, ShapeError, fmt_shape
from ..graph import Node
from ..ops import (
    astype,
    digamma as _digamma,
    equal,
    erf as _erf,
    exp,
    floor,
    gammaln as _gammaln,
    greater,
    greater_equal,
    less,
    less_equal,
    log,
    log1p,
    log_sigmoid,
    log_softmax as _log_softmax,
    logsumexp as _logsumexp,
    max as _max,
    multiply,
    not_equal,
    sigmoid,
    sign,
    softmax as _softmax,
    sqrt,
    square,
    stop_gradient,
    sum as _sum,
    where,
)
from ..ops.base import Deferred, broadcast_shapes
from ..ops.special import polygamma as _polygamma

_TAIL = 2.5  # erfc(z) from its continued fraction at z >= _TAIL, 1 - erf(z) below
_TERMS = 32
_LOG_SQRT_PI = 0.5 * math.log(np.pi)
_LOG_SQRT_2PI = 0.5 * math.log(2 * np.pi)


@functools.cache
def scipy_module(name: str) -> Any:
    """scipy.special or scipy.stats, imported on first use (a call with no node), never at import."""
    import importlib

    return importlib.import_module(f"scipy.{name}")


def lift(who: str, *values: Any, names: list[str] | None = None) -> list[Any] | None:
    """The values as float nodes of one graph (None stays None), or None when no value is a node.

    Numbers and arrays become constants of the nodes' graph, in the floating dtype of the nodes (float64
    when none is floating); integer and bool nodes are cast to it.
    """
    values = tuple(v.node() if isinstance(v, Deferred) else v for v in values)
    nodes = [v for v in values if isinstance(v, Node)]
    if not nodes:
        return None
    if names is not None:  # before any constant joins the graph: a refused call adds nothing
        check_broadcast(who, names, values)
    graph = nodes[0].graph
    floats = [n.dtype for n in nodes if n.dtype.kind == "f"]
    dtype = np.result_type(*floats) if floats else np.dtype("float64")
    out: list[Any] = []
    for k, v in enumerate(values):
        if v is None or isinstance(v, Node):
            out.append(v if v is None or v.dtype.kind == "f" else astype(v, dtype))
            continue
        arr = np.asarray(v)
        if arr.dtype.kind not in "biuf":
            raise DTypeError(
                f"gc.scipy.{who}: argument {k} is {type(v).__name__} {v!r} (dtype {arr.dtype}); give a node, "
                "a number or a real numeric array"
            )
        if arr.dtype.kind != "f" or not isinstance(v, np.ndarray):
            arr = arr.astype(dtype)
        out.append(graph.constant(arr))
    return out


def check_broadcast(who: str, names: list[str], nodes: Sequence[Any]) -> None:
    """The arguments of an elementwise function broadcast together, or a ShapeError naming each of them."""
    given = [(k, n.shape if isinstance(n, Node) else np.shape(n)) for k, n in zip(names, nodes) if n is not None]
    try:
        broadcast_shapes(*(shape for _, shape in given))
    except ShapeError:
        shapes = ", ".join(f"{k} {fmt_shape(shape)}" for k, shape in given)
        raise ShapeError(
            f"gc.scipy.{who}: the arguments do not broadcast together: {shapes}; give shapes that NumPy "
            "broadcasts (equal sizes or 1, aligned from the right)"
        ) from None


def lifted(who: str, fallback: Callable[[], Callable]) -> Callable:
    """Decorate a composition of nodes: its arguments are lifted (`lift`); with no node among them, the call
    goes to `fallback()` (SciPy's function) with the arguments as given."""

    def wrap(fn: Callable) -> Callable:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def call(*args, **kwargs):
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            nodes = lift(who, *bound.arguments.values(), names=list(bound.arguments))
            if nodes is None:
                return fallback()(*args, **kwargs)
            return fn(*nodes)

        return call

    return wrap


def _special(name: str) -> Callable:
    return lifted(f"special.{name}", lambda: getattr(scipy_module("special"), name))


def _safe(cond: Node, x: Node, value: float) -> Node:
    """x where cond is false, `value` where it is true: the input of a branch that `where` then discards,
    so that branch never computes log 0 or 0/0 (whose NaN would reach the gradient)."""
    return where(cond, value, x)


def _keep(cond: Node, x: Node, value: float) -> Node:
    """x where cond is true, `value` elsewhere (`_safe` the other way round)."""
    return where(cond, x, value)


def both(a: Node, b: Node) -> Node:
    """a and b, elementwise (through `where`, which every backend runs natively)."""
    return where(a, b, False)


def either(a: Node, b: Node) -> Node:
    """a or b, elementwise."""
    return where(a, True, b)


def negate(a: Node) -> Node:
    """not a, elementwise."""
    return where(a, False, True)


# -- the log domain ---------------------------------------------------------------------------


def logsumexp(a, axis=None, b=None, keepdims: bool = False, return_sign: bool = False):
    """log(sum(b * exp(a))) over axis, as scipy.special.logsumexp; with return_sign, (log|s|, sign(s))."""
    nodes = lift("special.logsumexp", a, b)
    if nodes is None:
        return scipy_module("special").logsumexp(a, axis=axis, b=b, keepdims=keepdims, return_sign=return_sign)
    x, scale = nodes
    if scale is None:
        out = _logsumexp(x, axis=axis, keepdims=keepdims)
        if return_sign:
            return out, sign(exp(out))  # 1, or 0 where every a is -inf (as SciPy)
        return out
    top = stop_gradient(_max(x, axis=axis, keepdims=True))
    top = where(greater(top, -np.inf), top, 0.0)  # all -inf: shift by 0, not by -inf (NaN)
    s = _sum(multiply(scale, exp(x - top)), axis=axis, keepdims=keepdims)
    shift = top if keepdims else _sum(top, axis=axis)
    if return_sign:
        return log(abs(s)) + shift, sign(s)
    return log(s) + shift  # NaN where the sum is negative, as SciPy


def _over(fn: Callable, x: Node, axis) -> Node:
    if axis is None or not isinstance(axis, (int, np.integer)):
        return x - _logsumexp(x, axis=axis, keepdims=True)
    return fn(x, axis=int(axis))


def softmax(x, axis=None):
    """exp(x) / sum(exp(x)) over axis (all elements when None, as scipy.special.softmax)."""
    nodes = lift("special.softmax", x)
    if nodes is None:
        return scipy_module("special").softmax(x, axis=axis)
    if axis is None or not isinstance(axis, (int, np.integer)):
        return exp(_over(_log_softmax, nodes[0], axis))
    return _softmax(nodes[0], axis=int(axis))


def log_softmax(x, axis=None):
    """x - logsumexp(x) over axis (all elements when None, as scipy.special.log_softmax)."""
    nodes = lift("special.log_softmax", x)
    if nodes is None:
        return scipy_module("special").log_softmax(x, axis=axis)
    return _over(_log_softmax, nodes[0], axis)


@_special("expit")
def expit(x):
    """1 / (1 + exp(-x)), the logistic sigmoid."""
    return sigmoid(x)


@_special("log_expit")
def log_expit(x):
    """log(expit(x)), exact for large |x|."""
    return log_sigmoid(x)


@_special("logit")
def logit(p):
    """log(p / (1 - p)), the inverse of expit."""
    return log(p) - log1p(-p)


def _x_log(x: Node, y: Node, log_fn: Callable, lowest: float) -> Node:
    """x * log_fn(y), 0 where x == 0 and log_fn(y) is not finite (y <= lowest or y == inf), NaN where y is NaN.

    Where x == 0 and log_fn(y) is finite the product itself gives 0, so d/dx is log_fn(y) there (as JAX);
    elsewhere at x == 0 log_fn reads 1 - lowest, a safe value, so no NaN reaches the gradient."""
    bad = both(equal(x, 0.0), negate(both(greater(y, lowest), less(y, np.inf))))
    value = x * log_fn(where(bad, 1.0 + lowest, y))
    return where(not_equal(y, y), np.nan, value)


@_special("xlogy")
def xlogy(x, y):
    """x * log(y), 0 where x == 0 (NaN where y is NaN); finite derivatives at x == 0."""
    return _x_log(x, y, log, 0.0)


@_special("xlog1py")
def xlog1py(x, y):
    """x * log1p(y), 0 where x == 0 (NaN where y is NaN); finite derivatives at x == 0."""
    return _x_log(x, y, log1p, -1.0)


@_special("entr")
def entr(x):
    """-x log x for x > 0, 0 at 0, -inf for x < 0."""
    return where(less(x, 0.0), -np.inf, -xlogy(x, x))


@_special("rel_entr")
def rel_entr(x, y):
    """x log(x / y) for x, y > 0; 0 where x == 0 and y >= 0; inf otherwise."""
    ok = both(greater(x, 0.0), greater(y, 0.0))
    value = xlogy(x, _keep(ok, x, 1.0)) - xlogy(x, _keep(ok, y, 1.0))
    zero, inf = np.zeros((), value.dtype), np.array(np.inf, value.dtype)  # typed: where's branches are both constants
    return where(ok, value, where(both(equal(x, 0.0), greater_equal(y, 0.0)), zero, inf))


@_special("kl_div")
def kl_div(x, y):
    """x log(x / y) - x + y for x, y > 0; y where x == 0 and y >= 0; inf otherwise."""
    return rel_entr(x, y) - x + y


# -- gamma and beta ---------------------------------------------------------------------------


@_special("gammaln")
def gammaln(x):
    """log |Gamma(x)|."""
    return _gammaln(x)


@_special("digamma")
def digamma(x):
    """psi(x) = d log Gamma(x) / dx."""
    return _digamma(x)


def psi(x):
    """Another name of digamma."""
    return digamma(x)


def polygamma(n: int, x):
    """psi^(n)(x), the n-th derivative of digamma (n a non-negative integer)."""
    nodes = lift("special.polygamma", x)
    if nodes is None:
        return scipy_module("special").polygamma(n, x)
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise GraphCompilerError(f"gc.scipy.special.polygamma: n must be a non-negative integer, got {n!r}")
    return _polygamma(int(n), nodes[0])


@_special("betaln")
def betaln(a, b):
    """log |B(a, b)| = gammaln(a) + gammaln(b) - gammaln(a + b)."""
    return _gammaln(a) + _gammaln(b) - _gammaln(a + b)


def multigammaln(a, d: int):
    """log of the multivariate gamma function of dimension d: d(d-1)/4 log(pi) + sum_j gammaln(a - j/2)."""
    nodes = lift("special.multigammaln", a)
    if nodes is None:
        return scipy_module("special").multigammaln(a, d)
    if not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d < 1:
        raise GraphCompilerError(f"gc.scipy.special.multigammaln: d must be a positive integer, got {d!r}")
    x = nodes[0]
    out = d * (d - 1) / 4 * math.log(np.pi) + _gammaln(x)
    for j in range(1, int(d)):
        out = out + _gammaln(x - j / 2)
    return out


# -- the error function and the normal distribution -----------------------------------------------


@_special("erf")
def erf(x):
    """2/sqrt(pi) * integral of exp(-t^2) from 0 to x."""
    return _erf(x)


def _fraction(z: Node) -> Node:
    """t(z) with erfc(z) = e^(-z^2) / (sqrt(pi) t(z)): Laplace's continued fraction, for z >= _TAIL."""
    t = z
    for k in range(_TERMS, 0, -1):
        t = z + (k / 2) / t
    return t


def _log_erfc(z: Node) -> Node:
    tail = greater_equal(z, _TAIL)
    far = -square(_keep(tail, z, _TAIL)) - log(_fraction(_keep(tail, z, _TAIL))) - _LOG_SQRT_PI
    return where(tail, far, log1p(-_erf(_safe(tail, z, 0.0))))


def _erfc(z: Node) -> Node:
    tail = greater_equal(z, _TAIL)
    zt = _keep(tail, z, _TAIL)
    far = exp(-square(zt) - log(_fraction(zt)) - _LOG_SQRT_PI)
    return where(tail, far, 1.0 - _erf(_safe(tail, z, 0.0)))


@_special("erfc")
def erfc(x):
    """1 - erf(x), exact in relative terms for large x (the continued fraction beyond 2.5)."""
    return _erfc(x)


@_special("erfcx")
def erfcx(x):
    """exp(x^2) erfc(x), the scaled complementary error function (finite for large x)."""
    tail = greater_equal(x, _TAIL)
    far = 1.0 / (math.sqrt(np.pi) * _fraction(_keep(tail, x, _TAIL)))
    near = _safe(tail, x, 0.0)
    return where(tail, far, exp(square(near)) * (1.0 - _erf(near)))


@_special("ndtr")
def ndtr(x):
    """The standard normal CDF, 0.5 erfc(-x / sqrt 2)."""
    return 0.5 * _erfc(x * -math.sqrt(0.5))


@_special("log_ndtr")
def log_ndtr(x):
    """log of the standard normal CDF, exact far in both tails (log_ndtr(-30) is finite; log_ndtr(10) is
    -7.6e-24, not 0)."""
    right = greater(x, 0.0)
    upper = log1p(-0.5 * _erfc(_keep(right, x, 1.0) * math.sqrt(0.5)))
    lower = _log_erfc(_safe(right, x, 0.0) * -math.sqrt(0.5)) - math.log(2.0)
    return where(right, upper, lower)


@_special("ndtri")
def ndtri(p):
    """The inverse of ndtr: x with ndtr(x) = p (-inf at 0, inf at 1, NaN outside [0, 1]).

    In the lower half, log_ndtr(x) = log(q) with q = min(p, 1 - p) is solved by Newton's method from the
    rational start of Abramowitz and Stegun 26.2.23 (error under 4.5e-4), four steps; the upper half is its
    mirror image; near p = 1/2, two more steps on 0.5 erf(x / sqrt 2) = p - 1/2. The steps are graph nodes,
    and at their fixed point the derivative of a Newton step in its start is 0, so the derivatives of the
    result are those of the inverse (1 / pdf(x), ...)."""
    upper = greater(p, 0.5)
    edge = either(either(less_equal(p, 0.0), greater_equal(p, 1.0)), not_equal(p, p))
    ps = _safe(edge, p, 0.25)
    log_q = where(upper, log1p(-_keep(upper, ps, 0.25)), log(_safe(upper, ps, 0.25)))
    t = sqrt(-2.0 * log_q)
    x = (2.515517 + t * (0.802853 + t * 0.010328)) / (1.0 + t * (1.432788 + t * (0.189269 + t * 0.001308))) - t
    for _ in range(4):  # Newton on log_ndtr(x) = log q; d log_ndtr/dx = pdf(x) / ndtr(x)
        log_cdf = log_ndtr(x)
        x = x - (log_cdf - log_q) * exp(log_cdf + 0.5 * square(x) + _LOG_SQRT_2PI)
    x = where(upper, -x, x)
    half = ps - 0.5  # exact for p in [0.25, 0.75]: there two Newton steps on erf keep x's relative accuracy at 0
    mid = x
    for _ in range(2):
        mid = mid - (0.5 * _erf(mid * math.sqrt(0.5)) - half) * exp(0.5 * square(mid) + _LOG_SQRT_2PI)
    x = where(less(abs(half), 0.25), mid, x)
    bound = where(less_equal(p, 0.0), np.array(-np.inf, x.dtype), np.array(np.inf, x.dtype))  # typed constants
    return where(edge, where(both(greater_equal(p, 0.0), less_equal(p, 1.0)), bound, np.nan), x)


def not_integer(x: Node) -> Node:
    """Where x is not a whole number (a bool node)."""
    return not_equal(floor(x), x)


__all__ = [
    "betaln",
    "digamma",
    "entr",
    "erf",
    "erfc",
    "erfcx",
    "expit",
    "gammaln",
    "kl_div",
    "log_expit",
    "log_ndtr",
    "log_softmax",
    "logit",
    "logsumexp",
    "multigammaln",
    "ndtr",
    "ndtri",
    "polygamma",
    "psi",
    "rel_entr",
    "softmax",
    "xlog1py",
    "xlogy",
]
