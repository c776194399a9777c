"""gc.scipy.special and gc.scipy.stats against SciPy: values on broadcast shapes (through gc.function and
through a Graph and gc.compile), first and second derivatives against central differences, the far tails,
and the autograd-style uses that SciPy's own functions refuse (they call np.asarray on a node)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.special as ss
import scipy.stats as st

import graphcompiler as gc
from gradcheck import check_gradients

S = gc.scipy.special
T = gc.scipy.stats
RTOL = 1e-10  # values against SciPy (float64)

# the domain of each argument: a sampler of values inside it
DOMAINS = {
    "real": lambda r, s: r.normal(0, 2, s),
    "pos": lambda r, s: r.uniform(0.5, 3.0, s),
    "big": lambda r, s: r.uniform(1.5, 4.0, s),  # df, shape parameters with a smooth density
    "unit": lambda r, s: r.uniform(0.05, 0.95, s),
    "count": lambda r, s: r.integers(0, 6, s).astype(float),
    "bit": lambda r, s: r.integers(0, 2, s).astype(float),
    "neg1": lambda r, s: r.uniform(-0.9, 3.0, s),
}

SPECIAL = [  # name, domains of the arguments
    ("expit", ["real"]),
    ("log_expit", ["real"]),
    ("logit", ["unit"]),
    ("xlogy", ["real", "pos"]),
    ("xlog1py", ["real", "neg1"]),
    ("entr", ["pos"]),
    ("rel_entr", ["pos", "pos"]),
    ("kl_div", ["pos", "pos"]),
    ("gammaln", ["pos"]),
    ("digamma", ["pos"]),
    ("betaln", ["pos", "pos"]),
    ("erf", ["real"]),
    ("erfc", ["real"]),
    ("erfcx", ["real"]),
    ("ndtr", ["real"]),
    ("log_ndtr", ["real"]),
    ("ndtri", ["unit"]),
]
SHAPES = {1: [(), (5,), (3, 4)], 2: [(3, 4), (4,)], 3: [(3, 1), (1, 4), ()]}


def _shapes(n: int) -> list[list[tuple]]:
    """Broadcasting shape sets for n arguments."""
    if n == 1:
        return [[s] for s in SHAPES[1]]
    return [[(3, 4), (4,), ()][:n], [(3, 1), (1, 4), (4,)][:n], [(), (5,), (1,)][:n]]


def _args(domains, shapes, seed=0):
    r = np.random.default_rng(seed)
    return [np.asarray(DOMAINS[d](r, s), dtype=float) for d, s in zip(domains, shapes)]


def _through_graph(fn, arrays):
    """fn traced on inputs of a Graph, compiled, run."""
    g = gc.Graph()
    xs = [g.input(f"a{k}", a.shape) for k, a in enumerate(arrays)]
    (out,) = gc.compile([fn(*xs)]).run({f"a{k}": a for k, a in enumerate(arrays)})
    return out


@pytest.mark.parametrize("name,domains", SPECIAL, ids=[c[0] for c in SPECIAL])
def test_special_values_against_scipy(name, domains):
    fn, ref = getattr(S, name), getattr(ss, name)
    for shapes in _shapes(len(domains)):
        arrays = _args(domains, shapes)
        want = ref(*arrays)
        np.testing.assert_allclose(gc.function(fn)(*arrays), want, rtol=RTOL, atol=1e-300, err_msg=str(shapes))
        np.testing.assert_allclose(_through_graph(fn, arrays), want, rtol=RTOL, atol=1e-300)
        got = fn(*arrays)  # no node: SciPy's own value
        assert isinstance(got, (np.ndarray, np.floating, float)) and np.allclose(got, want, rtol=0, equal_nan=True)


@pytest.mark.parametrize("name,domains", SPECIAL, ids=[c[0] for c in SPECIAL])
def test_special_derivatives(name, domains):
    arrays = _args(domains, [(3,)] * len(domains), seed=1)
    g = gc.Graph()
    xs = [g.input(f"a{k}", a.shape) for k, a in enumerate(arrays)]
    cost = gc.sum(getattr(S, name)(*xs) * np.array([1.0, -0.5, 2.0]))
    check_gradients(g, cost, xs, {f"a{k}": a for k, a in enumerate(arrays)}, rtol=1e-5, atol=1e-7)


def test_special_with_a_constant_argument():
    y = np.array([0.5, 2.0, 3.0])
    got = gc.function(lambda x: S.xlogy(x, y) + S.betaln(x, 2.0))(np.array([1.0, 0.0, 2.5]))
    np.testing.assert_allclose(got, ss.xlogy([1.0, 0.0, 2.5], y) + ss.betaln([1.0, 0.0, 2.5], 2.0), rtol=RTOL)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # erfcx(30) is inf, as SciPy's
@pytest.mark.parametrize("x", [-40.0, -30.0, -20.0, -8.0, -3.0, 0.0, 3.0, 8.0, 10.0, 30.0])
def test_the_normal_tails_are_exact(x):
    """log_ndtr/logcdf far in the lower tail (where ndtr underflows) and erfc/ndtr relative to their size."""
    f = gc.function(lambda v: [S.log_ndtr(v), S.ndtr(v), S.erfc(-v), T.norm.logcdf(v, 0.0, 1.0),
                               T.norm.logsf(-v), S.erfcx(-v)])
    got = f(np.array(x))
    want = [ss.log_ndtr(x), ss.ndtr(x), ss.erfc(-x), st.norm.logcdf(x), st.norm.logsf(-x), ss.erfcx(-x)]
    for k, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=0, err_msg=f"output {k} at x = {x}")
    assert np.isfinite(got[0]) and got[0] < -400 if x <= -30 else True


def test_ndtri_across_the_range():
    """The inverse of ndtr to about 1e-15 from p = 1e-300 to 1 - 1e-16, exact 0 at 1/2, the edges as SciPy's,
    and d ndtri/dp = 1 / pdf(ndtri(p)) there."""
    p = np.array([0.0, 1e-300, 1e-50, 1e-10, 1e-3, 0.3, 0.5, 0.5 + 1e-12, 0.5 - 1e-9, 0.9, 1 - 1e-10, 1 - 1e-16, 1.0,
                  1.5, -0.1, np.nan])
    got = gc.function(S.ndtri)(p)
    want = ss.ndtri(p)
    np.testing.assert_allclose(got, want, rtol=5e-15, atol=0)
    assert got[6] == 0.0
    inside = slice(1, 12)
    d = gc.grad(lambda v: gc.sum(S.ndtri(v)))(p[inside])
    np.testing.assert_allclose(d, np.exp(-st.norm.logpdf(want[inside])), rtol=1e-12)
    np.testing.assert_allclose(gc.function(lambda v: T.norm.ppf(v, 1.0, 2.0))(p), st.norm.ppf(p, 1.0, 2.0),
                               rtol=5e-15)


def test_log_ndtr_derivative_in_the_tail():
    """d log ndtr(x)/dx = pdf/cdf ~ -x for x -> -inf: finite and right at -30, not NaN."""
    d = gc.grad(lambda v: gc.sum(S.log_ndtr(v)))(np.array([-30.0, -5.0, 0.0, 5.0]))
    want = np.exp(st.norm.logpdf([-30.0, -5.0, 0.0, 5.0]) - ss.log_ndtr([-30.0, -5.0, 0.0, 5.0]))
    np.testing.assert_allclose(d, want, rtol=1e-10)


@pytest.mark.parametrize("axis,keepdims", [(None, False), (1, False), (0, True), ((0, 1), False), (-1, True)])
def test_logsumexp_softmax(axis, keepdims):
    a = np.random.default_rng(2).normal(0, 3, (3, 4))
    b = np.random.default_rng(3).uniform(0.1, 2, (4,))
    f = gc.function(lambda x, w: [S.logsumexp(x, axis=axis, keepdims=keepdims),
                                  S.logsumexp(x, axis=axis, b=w, keepdims=keepdims)])
    got = f(a, b)
    np.testing.assert_allclose(got[0], ss.logsumexp(a, axis=axis, keepdims=keepdims), rtol=RTOL)
    np.testing.assert_allclose(got[1], ss.logsumexp(a, axis=axis, b=b, keepdims=keepdims), rtol=RTOL)
    if not isinstance(axis, tuple):
        sm = gc.function(lambda x: [S.softmax(x, axis=axis), S.log_softmax(x, axis=axis)])(a)
        np.testing.assert_allclose(sm[0], ss.softmax(a, axis=axis), rtol=RTOL)
        np.testing.assert_allclose(sm[1], ss.log_softmax(a, axis=axis), rtol=RTOL)


def test_logsumexp_return_sign_and_derivative():
    a = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 800.0]])
    b = np.array([1.0, -2.0, 0.5])
    got = gc.function(lambda x: list(S.logsumexp(x, axis=1, b=b, return_sign=True)))(a)
    want = ss.logsumexp(a, axis=1, b=b, return_sign=True)
    np.testing.assert_allclose(got[0], want[0], rtol=RTOL)
    np.testing.assert_array_equal(got[1], want[1])
    g = gc.Graph()
    x, w = g.input("x", (2, 3)), g.input("w", (3,))
    cost = gc.sum(S.logsumexp(x, axis=1, b=w) * np.array([1.0, 2.0]))
    check_gradients(g, cost, [x, w], {"x": a * 0.3, "w": np.array([1.0, 2.0, 0.5])})


def test_multigammaln_and_polygamma():
    a = np.array([2.5, 3.0, 7.2])
    got = gc.function(lambda x: [S.multigammaln(x, 3), S.polygamma(2, x), S.psi(x)])(a)
    for u, v in zip(got, [ss.multigammaln(a, 3), ss.polygamma(2, a), ss.psi(a)]):
        np.testing.assert_allclose(u, v, rtol=RTOL)
    with pytest.raises(gc.GraphCompilerError, match="positive integer"):
        gc.function(lambda x: S.multigammaln(x, 0))(a)


def test_xlogy_at_zero_is_zero_with_finite_derivatives():
    x = np.array([0.0, 0.0, 0.0, 1.0])
    y = np.array([0.0, 2.0, -1.0, 3.0])
    dx, dy = gc.grad(lambda u, v: gc.sum(S.xlogy(u, v)), argnums=(0, 1))(x, y)
    np.testing.assert_array_equal(gc.function(lambda u, v: S.xlogy(u, v))(x, y), ss.xlogy(x, y))
    assert np.all(np.isfinite(dx)) and np.all(np.isfinite(dy))
    np.testing.assert_allclose(dx[1], np.log(2.0))  # d(x log y)/dx = log y where log y is finite, as JAX
    np.testing.assert_allclose(dy[3], 1 / 3.0)


# -- stats ----------------------------------------------------------------------------------------

STATS = [  # distribution, method, domains of the arguments (x first)
    ("norm", "logpdf", ["real", "real", "pos"]),
    ("norm", "pdf", ["real", "real", "pos"]),
    ("norm", "cdf", ["real", "real", "pos"]),
    ("norm", "logcdf", ["real", "real", "pos"]),
    ("norm", "sf", ["real", "real", "pos"]),
    ("norm", "logsf", ["real", "real", "pos"]),
    ("norm", "ppf", ["unit", "real", "pos"]),
    ("norm", "isf", ["unit", "real", "pos"]),
    ("t", "logpdf", ["real", "big", "real", "pos"]),
    ("t", "pdf", ["real", "big", "real", "pos"]),
    ("gamma", "logpdf", ["pos", "big", "real", "pos"]),
    ("gamma", "pdf", ["pos", "big"]),
    ("chi2", "logpdf", ["pos", "big"]),
    ("beta", "logpdf", ["unit", "big", "big"]),
    ("beta", "pdf", ["unit", "big", "big"]),
    ("expon", "logpdf", ["pos", "real", "pos"]),
    ("expon", "cdf", ["pos", "real", "pos"]),
    ("expon", "sf", ["pos"]),
    ("expon", "logsf", ["pos"]),
    ("laplace", "logpdf", ["real", "real", "pos"]),
    ("laplace", "cdf", ["real", "real", "pos"]),
    ("cauchy", "logpdf", ["real", "real", "pos"]),
    ("cauchy", "cdf", ["real", "real", "pos"]),
    ("logistic", "logpdf", ["real", "real", "pos"]),
    ("logistic", "cdf", ["real", "real", "pos"]),
    ("logistic", "logcdf", ["real", "real", "pos"]),
    ("logistic", "sf", ["real", "real", "pos"]),
    ("logistic", "logsf", ["real", "real", "pos"]),
    ("uniform", "logpdf", ["real", "real", "pos"]),
    ("uniform", "pdf", ["real", "real", "pos"]),
    ("uniform", "cdf", ["real", "real", "pos"]),
    ("poisson", "logpmf", ["count", "pos"]),
    ("poisson", "pmf", ["count", "pos"]),
    ("bernoulli", "logpmf", ["bit", "unit"]),
    ("bernoulli", "pmf", ["bit", "unit"]),
    ("bernoulli", "cdf", ["real", "unit"]),
    ("binom", "logpmf", ["count", "big", "unit"]),
    ("geom", "logpmf", ["count", "unit"]),
    ("nbinom", "logpmf", ["count", "big", "unit"]),
    ("nbinom", "pmf", ["count", "big", "unit"]),
    ("pareto", "logpdf", ["big", "big"]),
    ("pareto", "pdf", ["big", "big"]),
]
DIFFERENTIABLE = {"count": False, "bit": False}  # pmf arguments k are not differentiated


@pytest.mark.parametrize("dist,method,domains", STATS, ids=[f"{a}.{b}" for a, b, _ in STATS])
def test_stats_values_against_scipy(dist, method, domains):
    fn, ref = getattr(getattr(T, dist), method), getattr(getattr(st, dist), method)
    for shapes in _shapes(len(domains)):
        arrays = _args(domains, shapes)
        if dist == "binom":
            arrays[1] = np.round(arrays[1]) + 2  # n a whole number
        want = ref(*arrays)
        np.testing.assert_allclose(gc.function(fn)(*arrays), want, rtol=1e-9, atol=1e-300, err_msg=str(shapes))
        np.testing.assert_allclose(_through_graph(fn, arrays), want, rtol=1e-9, atol=1e-300)
        np.testing.assert_allclose(fn(*arrays), want, rtol=0)  # no node: SciPy's own value


@pytest.mark.parametrize("dist,method,domains", STATS, ids=[f"{a}.{b}" for a, b, _ in STATS])
def test_stats_derivatives(dist, method, domains):
    arrays = _args(domains, [(3,)] * len(domains), seed=4)
    if dist == "binom":
        arrays[1] = np.round(arrays[1]) + 4  # n >= k: a finite pmf
    if dist == "uniform":
        arrays[0] = arrays[1] + arrays[2] * np.array([0.2, 0.5, 0.7])  # inside (loc, loc + scale): smooth there
    if dist == "laplace":
        arrays[0] = arrays[1] + np.array([-1.0, 0.5, 2.0])  # away from the kink at loc
    g = gc.Graph()
    xs = [g.input(f"a{k}", a.shape) for k, a in enumerate(arrays)]
    cost = gc.sum(getattr(getattr(T, dist), method)(*xs) * np.array([1.0, -0.5, 2.0]))
    wrt = [x for x, d in zip(xs, domains) if DIFFERENTIABLE.get(d, True) and not (dist == "binom" and x is xs[1])]
    check_gradients(g, cost, wrt, {f"a{k}": a for k, a in enumerate(arrays)}, rtol=1e-5, atol=1e-7,
                    second=method in ("logpdf", "logpmf", "logcdf"))


@pytest.mark.parametrize("dist,method,args", [
    ("gamma", "logpdf", ([-1.0, 0.0, 2.0], 1.0)),
    ("beta", "logpdf", ([-0.5, 0.25, 0.5, 1.5], 2.0, 3.0)),
    ("beta", "logpdf", ([-0.5, 0.0, 0.5, 1.0, 1.5], 1.0, 1.0)),
    ("expon", "logpdf", ([-1.0, 0.0, 1.0],)),
    ("uniform", "logpdf", ([-0.5, 0.0, 0.5, 1.0, 1.5],)),
    ("poisson", "logpmf", ([-1.0, 0.0, 1.5, 2.0], 3.0)),
    ("bernoulli", "logpmf", ([-1.0, 0.0, 0.5, 1.0, 2.0], 0.3)),
    ("binom", "logpmf", ([-1.0, 0.0, 2.5, 3.0, 5.0, 6.0], 5.0, 0.4)),
    ("geom", "logpmf", ([0.0, 1.0, 2.5, 3.0], 0.4)),
    ("nbinom", "logpmf", ([-1.0, 0.0, 2.5, 3.0], 4.5, 0.3)),
    ("pareto", "logpdf", ([0.5, 1.0, 2.0], 3.0)),
])
def test_outside_the_support_as_scipy_and_gradients_finite(dist, method, args):
    x = np.array(args[0])
    fn = getattr(getattr(T, dist), method)
    got = gc.function(lambda v: fn(v, *args[1:]))(x)
    np.testing.assert_allclose(got, getattr(getattr(st, dist), method)(x, *args[1:]), rtol=1e-12)
    if len(args) > 1:  # the points outside add nothing to the gradient in the first parameter (not NaN)
        inside = np.isfinite(got)
        assert not inside.all()
        d_all = gc.grad(lambda p: gc.sum(fn(x, p, *args[2:])))(np.array(args[1]))
        d_in = gc.grad(lambda p: gc.sum(fn(x[inside], p, *args[2:])))(np.array(args[1]))
        np.testing.assert_allclose(d_all, d_in, rtol=1e-12)


@pytest.mark.parametrize("cov_kind", ["full", "diag", "scalar"])
@pytest.mark.parametrize("xshape", [(3,), (5, 3), (2, 4, 3)])
def test_multivariate_normal(cov_kind, xshape):
    r = np.random.default_rng(5)
    a = r.normal(size=(3, 3))
    cov = {"full": a @ a.T + 3 * np.eye(3), "diag": r.uniform(0.5, 2, 3), "scalar": np.array(1.7)}[cov_kind]
    mean, x = r.normal(size=3), r.normal(size=xshape)
    want = st.multivariate_normal.logpdf(x, mean, cov)
    f = gc.function(lambda u, m, c: [T.multivariate_normal.logpdf(u, m, c), T.multivariate_normal.pdf(u, m, c)])
    got = f(x, mean, cov)
    np.testing.assert_allclose(got[0], want, rtol=1e-10)
    np.testing.assert_allclose(got[1], st.multivariate_normal.pdf(x, mean, cov), rtol=1e-10)
    np.testing.assert_allclose(_through_graph(lambda u: T.multivariate_normal.logpdf(u, mean, cov), [x]), want,
                               rtol=1e-10)


def test_multivariate_normal_derivatives_and_one_dimension():
    r = np.random.default_rng(6)
    a = r.normal(size=(3, 3))
    g = gc.Graph()
    x, m, c = g.input("x", (4, 3)), g.input("m", (3,)), g.input("c", (3, 3))
    sym = (c + gc.transpose(c)) * 0.5  # the derivative in cov is the symmetric one
    cost = gc.sum(T.multivariate_normal.logpdf(x, m, sym))
    check_gradients(g, cost, [x, m, c], {"x": r.normal(size=(4, 3)), "m": r.normal(size=3),
                                         "c": a @ a.T + 3 * np.eye(3)}, second=False)
    xs = np.array([0.3, -1.0, 2.0])  # d == 1: a 1-D x is three points, as SciPy
    got = gc.function(lambda u: T.multivariate_normal.logpdf(u, 0.5, 2.0))(xs)
    np.testing.assert_allclose(got, st.multivariate_normal.logpdf(xs, 0.5, 2.0), rtol=1e-12)


def test_multivariate_normal_refuses_what_it_cannot_do():
    g = gc.Graph()
    x = g.input("x", (5, 3))
    with pytest.raises(gc.GraphCompilerError, match="allow_singular"):
        T.multivariate_normal.logpdf(x, np.zeros(3), np.eye(3), allow_singular=True)
    with pytest.raises(gc.ShapeError, match="dimension 2"):
        T.multivariate_normal.logpdf(x, np.zeros(2), np.eye(2))
    with pytest.raises(gc.ShapeError, match="disagree"):
        T.multivariate_normal.logpdf(x, np.zeros(3), np.eye(2))


def test_multinomial():
    p = np.array([0.2, 0.3, 0.5])
    x = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0], [1.0, 2.0, 2.0], [-1.0, 3.0, 4.0], [0.5, 2.5, 3.0]])
    want = st.multinomial.logpmf(x, 6, p)  # the last three: a wrong total, a negative count, not whole: -inf
    got = gc.function(lambda u, q: [T.multinomial.logpmf(u, 6, q), T.multinomial.pmf(u, 6, q)])(x, p)
    np.testing.assert_allclose(got[0], want, rtol=1e-12)
    np.testing.assert_allclose(got[1], st.multinomial.pmf(x, 6, p), rtol=1e-12)
    d = gc.grad(lambda q: gc.sum(T.multinomial.logpmf(x[:2], 6, q)))(p)
    np.testing.assert_allclose(d, x[:2].sum(0) / p, rtol=1e-12)
    with pytest.raises(gc.ShapeError, match="last axes"):
        gc.function(lambda q: T.multinomial.logpmf(x, 6, q))(np.ones(4) / 4)


def test_dirichlet():
    alpha = np.array([1.5, 2.0, 3.5])
    x = np.random.default_rng(7).dirichlet(alpha, size=4).T  # (K, n): SciPy's layout
    got = gc.function(lambda u, a: [T.dirichlet.logpdf(u, a), T.dirichlet.pdf(u[:, 0], a)])(x, alpha)
    np.testing.assert_allclose(got[0], st.dirichlet.logpdf(x, alpha), rtol=1e-10)
    np.testing.assert_allclose(got[1], st.dirichlet.pdf(x[:, 0], alpha), rtol=1e-10)
    g = gc.Graph()
    a = g.input("a", (3,))
    check_gradients(g, gc.sum(T.dirichlet.logpdf(x, a)), [a], {"a": alpha})


def test_autograd_style_use():
    """The calls that made 5 of the 19 autograd examples rewrite their code: gradients through SciPy's names."""
    x = np.random.default_rng(8).normal(1.0, 2.0, 50)
    d = gc.grad(lambda mu: np.sum(gc.scipy.stats.norm.logpdf(x, mu, 1.0)))(np.array(0.3))
    np.testing.assert_allclose(d, np.sum(x - 0.3), rtol=1e-12)
    d2 = gc.grad(lambda s: np.sum(gc.scipy.stats.norm.logpdf(x, 1.0, s)))(np.array(1.5))
    np.testing.assert_allclose(d2, np.sum((x - 1.0) ** 2 / 1.5**3 - 1 / 1.5), rtol=1e-10)
    w = np.random.default_rng(9).normal(size=(4, 3))
    lse = gc.grad(lambda v: gc.scipy.special.logsumexp(v))(w)
    np.testing.assert_allclose(lse, ss.softmax(w), rtol=1e-12)
    cov = np.array([[2.0, 0.3], [0.3, 1.0]])
    pts = np.random.default_rng(10).normal(size=(6, 2))
    dm = gc.grad(lambda m: np.sum(gc.scipy.stats.multivariate_normal.logpdf(pts, m, cov)))(np.zeros(2))
    np.testing.assert_allclose(dm, np.linalg.solve(cov, pts.sum(0)), rtol=1e-10)


def test_scipy_keywords_and_defaults():
    x = np.array([-1.0, 0.5, 2.0])
    f = gc.function(lambda v, m: [T.norm.logpdf(v, scale=2.0, loc=m), T.norm.logpdf(v), T.t.pdf(v, df=3.0),
                                  T.gamma.logpdf(v + 2.0, a=2.5, scale=0.5), T.poisson.logpmf(k=np.arange(3), mu=m)])
    got = f(x, np.array(0.7))
    want = [st.norm.logpdf(x, scale=2.0, loc=0.7), st.norm.logpdf(x), st.t.pdf(x, df=3.0),
            st.gamma.logpdf(x + 2.0, a=2.5, scale=0.5), st.poisson.logpmf(k=np.arange(3), mu=0.7)]
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("fn,ref", [
    (lambda v: T.norm.logpdf(v, 0.5, 2.0), lambda v: st.norm.logpdf(v, 0.5, 2.0)),
    (S.ndtri, ss.ndtri), (S.log_ndtr, ss.log_ndtr), (S.erfc, ss.erfc),
    (lambda v: S.rel_entr(v, 0.5), lambda v: ss.rel_entr(v, 0.5)),
    (lambda v: T.gamma.logpdf(v, 2.0), lambda v: st.gamma.logpdf(v, 2.0)),
    (lambda v: T.poisson.logpmf(v, 2.0), lambda v: st.poisson.logpmf(v, 2.0)),
], ids=["norm.logpdf", "ndtri", "log_ndtr", "erfc", "rel_entr", "gamma.logpdf", "poisson.logpmf"])
def test_float32_stays_float32(fn, ref):
    """Numbers take the nodes' dtype (as in every gc op), also where both branches of a where are numbers."""
    x = np.array([0.25, 0.5, 0.75], np.float32)
    got = gc.function(fn)(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref(x.astype(float)), rtol=2e-5)


def test_bad_argument_is_a_clear_error():
    g = gc.Graph()
    x = g.input("x", (3,))
    with pytest.raises(gc.DTypeError, match="norm.logpdf.*str"):
        T.norm.logpdf(x, "a")
    with pytest.raises(gc.ShapeError, match=r"stats.norm.logpdf: .*x \(3,\), loc \(4,\), scale \(\)"):
        T.norm.logpdf(x, np.zeros(4))
    with pytest.raises(gc.ShapeError, match=r"special.xlogy: .*x \(3,\), y \(2,\)"):
        S.xlogy(x, np.zeros(2))
    n = len(g.nodes)
    with pytest.raises(gc.ShapeError, match="stats.poisson.logpmf"):
        T.poisson.logpmf(x, mu=np.ones((2, 2)))
    assert len(g.nodes) == n  # a refused call adds nothing to the graph


def test_import_graphcompiler_does_not_load_scipy():
    code = ("import sys, graphcompiler as gc; assert 'scipy' not in sys.modules, 'scipy loaded'; "
            "gc.scipy.stats.norm; gc.scipy.special.xlogy; assert 'scipy' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def _available(name: str) -> bool:
    return any(b["name"] == name and b["available"] for b in gc.backends())


@pytest.mark.filterwarnings("ignore:graphcompiler. the C backend runs")
@pytest.mark.parametrize("backend", ["numpy", "c", "jax"])
def test_every_backend_runs_the_compositions(backend):
    """The functions are gc ops only, so the C and JAX backends run them, derivatives included, unchanged."""
    if not _available(backend):
        pytest.skip(f"backend {backend} is not available here")
    g = gc.Graph()
    x, mu = g.input("x", (6,)), g.input("mu", ())
    outs = [T.norm.logcdf(x, mu, 2.0), S.log_ndtr(x), T.poisson.logpmf(x, 3.0), S.xlogy(x, 2.0),
            T.beta.logpdf(x, 2.0, mu + 2.0), T.uniform.logpdf(x, -1.0, 3.0), S.rel_entr(x, 2.0), S.erfc(x)]
    grad = gc.build_grad(gc.sum(outs[0]), [mu])[mu]
    xv = np.array([-70.0, -3.0, 0.0, 0.5, 4.0, 12.0])
    with np.errstate(divide="ignore"):
        got = gc.compile(outs + [grad], backend=backend).run({"x": xv, "mu": np.array(0.3)})
    want = [st.norm.logcdf(xv, 0.3, 2.0), ss.log_ndtr(xv), st.poisson.logpmf(xv, 3.0), ss.xlogy(xv, 2.0),
            st.beta.logpdf(xv, 2.0, 2.3), st.uniform.logpdf(xv, -1.0, 3.0), ss.rel_entr(xv, 2.0), ss.erfc(xv)]
    for k, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(a, b, rtol=1e-13, err_msg=f"output {k}")
    z = (xv - 0.3) / 2.0
    np.testing.assert_allclose(got[-1], -np.sum(np.exp(st.norm.logpdf(z) - ss.log_ndtr(z))) / 2.0, rtol=1e-10)
