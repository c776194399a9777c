"""gc.scipy.stats: scipy.stats' densities and distribution functions on graph nodes (as jax.scipy.stats).

Each distribution is an object with SciPy's methods, parameter names and defaults: `norm.logpdf(x, loc=0,
scale=1)`, `poisson.logpmf(k, mu, loc=0)`, `multivariate_normal.logpdf(x, mean=None, cov=1)`. The arguments
may be nodes, NumPy arrays or numbers, broadcast together; with no node among them the call returns
scipy.stats' own value. Outside the support a log density is -inf and a density 0, as SciPy; the branch
that `where` discards is fed a safe value, so gradients stay finite.
"""

from __future__ import annotations

import functools
import math
import inspect
from typing import Callable

import numpy as np

from ..errors import GraphCompilerError, ShapeError
from ..graph import Node
from ..ops import (
    abs as _abs,
    arctan,
    diagonal,
    equal,
    exp,
    expand_dims,
    expm1,
    greater,
    greater_equal,
    less,
    less_equal,
    max as gc_max,
    min as gc_min,
    not_equal,
    log,
    log1p,
    log_sigmoid,
    sigmoid,
    square,
    squeeze,
    sum as _sum,
    where,
)
from ..linalg import cholesky, triangular_solve
from ..ops.base import Deferred
from .special import (
    betaln,
    both,
    either,
    gammaln,
    lift,
    negate,
    not_integer,
    log_ndtr,
    ndtr,
    ndtri,
    scipy_module,
    xlog1py,
    xlogy,
)

_LOG_2PI = math.log(2 * np.pi)


def _method(fn: Callable) -> Callable:
    """A method of a distribution: its arguments are lifted to nodes; with no node, scipy.stats answers."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def call(self, *args, **kwargs):
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        values = list(bound.arguments.values())[1:]
        who = f"stats.{self.name}.{fn.__name__}"
        nodes = lift(who, *values, names=list(bound.arguments)[1:] if self.elementwise else None)
        if nodes is None:
            return getattr(getattr(scipy_module("stats"), self.name), fn.__name__)(*args, **kwargs)
        return fn(self, *nodes)

    return call


def _outside(out: Node, value: Node) -> Node:
    """value where `out` is false, -inf where it is true (a log density outside the support)."""
    return where(out, -np.inf, value)


def _safe(cond: Node, x: Node, value: float) -> Node:
    return where(cond, value, x)


class Distribution:
    """A distribution's methods; pdf = exp(logpdf) (pmf = exp(logpmf)) unless a subclass says otherwise."""

    name = ""
    elementwise = True  # its arguments broadcast together (not dirichlet's, multinomial's x and p)

    def __repr__(self) -> str:
        return f"gc.scipy.stats.{self.name}"


def _has_node(args: tuple, kwargs: dict) -> bool:
    return any(isinstance(v, (Node, Deferred)) for v in (*args, *kwargs.values()))


class Continuous(Distribution):
    def logpdf(self, *args, **kwargs):
        raise NotImplementedError

    def pdf(self, *args, **kwargs):
        if not _has_node(args, kwargs):
            return getattr(scipy_module("stats"), self.name).pdf(*args, **kwargs)
        return exp(self.logpdf(*args, **kwargs))


class Discrete(Distribution):
    def logpmf(self, *args, **kwargs):
        raise NotImplementedError

    def pmf(self, *args, **kwargs):
        if not _has_node(args, kwargs):
            return getattr(scipy_module("stats"), self.name).pmf(*args, **kwargs)
        return exp(self.logpmf(*args, **kwargs))


# -- continuous, location and scale ---------------------------------------------------------------


class Norm(Continuous):
    name = "norm"

    @_method
    def logpdf(self, x, loc=0, scale=1):
        return -0.5 * square((x - loc) / scale) - log(scale) - 0.5 * _LOG_2PI

    @_method
    def cdf(self, x, loc=0, scale=1):
        return ndtr((x - loc) / scale)

    @_method
    def logcdf(self, x, loc=0, scale=1):
        return log_ndtr((x - loc) / scale)

    @_method
    def sf(self, x, loc=0, scale=1):
        return ndtr((loc - x) / scale)

    @_method
    def logsf(self, x, loc=0, scale=1):
        return log_ndtr((loc - x) / scale)

    @_method
    def ppf(self, q, loc=0, scale=1):
        return loc + scale * ndtri(q)

    @_method
    def isf(self, q, loc=0, scale=1):
        return loc - scale * ndtri(q)


class Uniform(Continuous):
    name = "uniform"

    @_method
    def logpdf(self, x, loc=0, scale=1):
        inside = both(greater_equal(x, loc), less_equal(x, loc + scale))
        return where(inside, -log(scale) + 0.0 * x, -np.inf)

    @_method
    def cdf(self, x, loc=0, scale=1):
        y = (x - loc) / scale
        return where(less(y, 0.0), 0.0, where(greater(y, 1.0), 1.0, y))


class Expon(Continuous):
    name = "expon"

    @_method
    def logpdf(self, x, loc=0, scale=1):
        y = (x - loc) / scale
        return _outside(less(y, 0.0), -y - log(scale))

    @_method
    def cdf(self, x, loc=0, scale=1):
        y = (x - loc) / scale
        return where(less(y, 0.0), 0.0, -expm1(-y))

    @_method
    def sf(self, x, loc=0, scale=1):
        y = (x - loc) / scale
        return where(less(y, 0.0), 1.0, exp(-y))

    @_method
    def logsf(self, x, loc=0, scale=1):
        y = (x - loc) / scale
        return where(less(y, 0.0), 0.0, -y)


class Laplace(Continuous):
    name = "laplace"

    @_method
    def logpdf(self, x, loc=0, scale=1):
        return -_abs((x - loc) / scale) - log(2.0 * scale)

    @_method
    def cdf(self, x, loc=0, scale=1):
        y = (x - loc) / scale
        neg = less(y, 0.0)
        return where(neg, 0.5 * exp(where(neg, y, 0.0)), 1.0 - 0.5 * exp(-_safe(neg, y, 0.0)))


class Cauchy(Continuous):
    name = "cauchy"

    @_method
    def logpdf(self, x, loc=0, scale=1):
        return -math.log(np.pi) - log(scale) - log1p(square((x - loc) / scale))

    @_method
    def cdf(self, x, loc=0, scale=1):
        return 0.5 + arctan((x - loc) / scale) / np.pi


class Logistic(Continuous):
    name = "logistic"

    @_method
    def logpdf(self, x, loc=0, scale=1):
        y = (x - loc) / scale
        return log_sigmoid(y) + log_sigmoid(-y) - log(scale)

    @_method
    def cdf(self, x, loc=0, scale=1):
        return sigmoid((x - loc) / scale)

    @_method
    def logcdf(self, x, loc=0, scale=1):
        return log_sigmoid((x - loc) / scale)

    @_method
    def sf(self, x, loc=0, scale=1):
        return sigmoid((loc - x) / scale)

    @_method
    def logsf(self, x, loc=0, scale=1):
        return log_sigmoid((loc - x) / scale)


# -- continuous, with shape parameters --------------------------------------------------------------


class T(Continuous):
    name = "t"

    @_method
    def logpdf(self, x, df, loc=0, scale=1):
        y = (x - loc) / scale
        half = 0.5 * (df + 1.0)
        norm = gammaln(half) - gammaln(0.5 * df) - 0.5 * log(df * np.pi) - log(scale)
        return norm - half * log1p(square(y) / df)


class Gamma(Continuous):
    name = "gamma"

    @_method
    def logpdf(self, x, a, loc=0, scale=1):
        y = (x - loc) / scale
        out = less(y, 0.0)
        ys = _safe(out, y, 1.0)
        return _outside(out, xlogy(a - 1.0, ys) - ys - gammaln(a) - log(scale))


class Chi2(Continuous):
    name = "chi2"

    @_method
    def logpdf(self, x, df, loc=0, scale=1):
        return GAMMA.logpdf(x, 0.5 * df, loc, 2.0 * scale)


class Beta(Continuous):
    name = "beta"

    @_method
    def logpdf(self, x, a, b, loc=0, scale=1):
        y = (x - loc) / scale
        out = either(less(y, 0.0), greater(y, 1.0))
        ys = _safe(out, y, 0.5)
        return _outside(out, xlogy(a - 1.0, ys) + xlog1py(b - 1.0, -ys) - betaln(a, b) - log(scale))


class Pareto(Continuous):
    name = "pareto"

    @_method
    def logpdf(self, x, b, loc=0, scale=1):
        y = (x - loc) / scale
        out = less(y, 1.0)
        return _outside(out, log(b) - (b + 1.0) * log(_safe(out, y, 1.0)) - log(scale))


# -- discrete ---------------------------------------------------------------------------------------


class Poisson(Discrete):
    name = "poisson"

    @_method
    def logpmf(self, k, mu, loc=0):
        j = k - loc
        out = either(less(j, 0.0), not_integer(j))
        js = _safe(out, j, 0.0)
        return _outside(out, xlogy(js, mu) - gammaln(js + 1.0) - mu)


class Bernoulli(Discrete):
    name = "bernoulli"

    @_method
    def logpmf(self, k, p, loc=0):
        j = k - loc
        out = negate(either(equal(j, 0.0), equal(j, 1.0)))
        js = _safe(out, j, 0.0)
        return _outside(out, xlogy(js, p) + xlog1py(1.0 - js, -p))

    @_method
    def cdf(self, k, p, loc=0):
        j = k - loc
        return where(less(j, 0.0), 0.0, where(less(j, 1.0), 1.0 - p, 1.0))


class Binom(Discrete):
    name = "binom"

    @_method
    def logpmf(self, k, n, p, loc=0):
        j = k - loc
        out = either(either(less(j, 0.0), greater(j, n)), not_integer(j))
        js = _safe(out, j, 0.0)
        count = gammaln(n + 1.0) - gammaln(js + 1.0) - gammaln(n - js + 1.0)
        return _outside(out, count + xlogy(js, p) + xlog1py(n - js, -p))


class Geom(Discrete):
    name = "geom"

    @_method
    def logpmf(self, k, p, loc=0):
        j = k - loc
        out = either(less(j, 1.0), not_integer(j))
        js = _safe(out, j, 1.0)
        return _outside(out, xlog1py(js - 1.0, -p) + log(p))


class Nbinom(Discrete):
    name = "nbinom"

    @_method
    def logpmf(self, k, n, p, loc=0):
        j = k - loc
        out = either(less(j, 0.0), not_integer(j))
        js = _safe(out, j, 0.0)
        count = gammaln(js + n) - gammaln(n) - gammaln(js + 1.0)
        return _outside(out, count + xlogy(n, p) + xlog1py(js, -p))


# -- multivariate ---------------------------------------------------------------------------------


class MultivariateNormal(Continuous):
    """logpdf/pdf(x, mean=None, cov=1, allow_singular=False): x's last axis holds the d components (a 1-D x
    is d points of one component when d == 1); cov a (d, d) matrix, a vector (its diagonal) or a number
    (times the identity); the result is squeezed as SciPy's (a single point gives a scalar)."""

    name = "multivariate_normal"

    def logpdf(self, x, mean=None, cov=1, allow_singular=False):
        nodes = lift("stats.multivariate_normal.logpdf", x, mean, cov)
        if nodes is None:
            return scipy_module("stats").multivariate_normal.logpdf(x, mean, cov, allow_singular=allow_singular)
        if allow_singular:
            raise GraphCompilerError(
                "gc.scipy.stats.multivariate_normal.logpdf: allow_singular=True is not supported on nodes "
                "(the density goes through a Cholesky factor); give a positive definite cov"
            )
        x, mean, cov = nodes
        dims = [n.shape[-1] for n in (mean,) if n is not None and n.ndim >= 1]
        dims += [n.shape[-1] for n in (cov,) if n.ndim >= 1]
        d = dims[0] if dims else 1
        if (
            any(k != d for k in dims)
            or mean is not None
            and mean.ndim > 1
            or cov.ndim > 2
            or cov.ndim == 2
            and cov.shape[0] != cov.shape[1]
        ):
            raise ShapeError(
                f"gc.scipy.stats.multivariate_normal.logpdf: mean {None if mean is None else mean.shape} and cov "
                f"{cov.shape} disagree; give mean of shape (d,) and cov of shape (d, d), (d,) or ()"
            )
        if x.ndim == 0 or d == 1 and x.shape[-1] != 1:
            x = expand_dims(x, -1)
        if x.shape[-1] not in (d, None):
            raise ShapeError(
                f"gc.scipy.stats.multivariate_normal.logpdf: x {x.name!r} has shape {x.shape} but the "
                f"distribution has dimension {d}; x's last axis holds the components"
            )
        diff = x if mean is None else x - mean
        if cov.ndim == 2:
            chol = cholesky(cov)
            z = triangular_solve(chol, expand_dims(diff, -1), lower=True)
            maha = _sum(square(z), axis=(-2, -1))
            logdet = 2.0 * _sum(log(diagonal(chol)))
        elif cov.ndim == 1:
            maha = _sum(square(diff) / cov, axis=-1)
            logdet = _sum(log(cov))
        else:
            maha = _sum(square(diff), axis=-1) / cov
            logdet = d * log(cov)
        out = -0.5 * (d * _LOG_2PI + logdet + maha)
        return squeeze(out) if any(k == 1 for k in out.shape) else out

    def pdf(self, x, mean=None, cov=1, allow_singular=False):
        if not _has_node((x, mean, cov), {}):
            return scipy_module("stats").multivariate_normal.pdf(x, mean, cov, allow_singular=allow_singular)
        return exp(self.logpdf(x, mean, cov, allow_singular))


class Multinomial(Discrete):
    """logpmf/pmf(x, n, p): x's last axis holds the counts of the K outcomes, p their probabilities."""

    name = "multinomial"
    elementwise = False

    @_method
    def logpmf(self, x, n, p):
        if p.ndim < 1 or x.ndim < 1 or p.shape[-1] not in (x.shape[-1], None) and x.shape[-1] is not None:
            raise ShapeError(
                f"gc.scipy.stats.multinomial.logpmf: x of shape {x.shape} and p of shape {p.shape}; their last "
                "axes hold the K outcomes and must agree"
            )
        out = either(
            either(less(gc_min(x, axis=-1), 0.0), not_equal(_sum(x, axis=-1), n)),
            gc_max(not_integer(x), axis=-1),
        )
        xs = where(not_integer(x), 0.0, x)
        value = gammaln(n + 1.0) + _sum(xlogy(xs, p) - gammaln(xs + 1.0), axis=-1)
        return _outside(out, value)


class Dirichlet(Continuous):
    """logpdf/pdf(x, alpha): as SciPy, x's FIRST axis holds the K components (x of shape (K,) or (K, n))."""

    name = "dirichlet"
    elementwise = False

    @_method
    def logpdf(self, x, alpha):
        if alpha.ndim != 1 or x.ndim not in (1, 2) or x.shape[0] != alpha.shape[0]:
            raise ShapeError(
                f"gc.scipy.stats.dirichlet.logpdf: x of shape {x.shape} and alpha of shape {alpha.shape}; give "
                "alpha of shape (K,) and x of shape (K,) or (K, n), its first axis the components (as SciPy)"
            )
        a = alpha if x.ndim == 1 else expand_dims(alpha, -1)
        norm = gammaln(_sum(alpha)) - _sum(gammaln(alpha))
        return norm + _sum(xlogy(a - 1.0, x), axis=0)


norm = Norm()
uniform = Uniform()
expon = Expon()
laplace = Laplace()
cauchy = Cauchy()
logistic = Logistic()
t = T()
GAMMA = gamma = Gamma()
chi2 = Chi2()
beta = Beta()
poisson = Poisson()
bernoulli = Bernoulli()
binom = Binom()
geom = Geom()
multivariate_normal = MultivariateNormal()
multinomial = Multinomial()
pareto = Pareto()
nbinom = Nbinom()
dirichlet = Dirichlet()

__all__ = [
    "bernoulli",
    "beta",
    "binom",
    "cauchy",
    "chi2",
    "dirichlet",
    "expon",
    "gamma",
    "geom",
    "laplace",
    "logistic",
    "multinomial",
    "multivariate_normal",
    "nbinom",
    "norm",
    "pareto",
    "poisson",
    "t",
    "uniform",
]
