"""NumPy's protocols on Node: a conformance test over every entry of gc.numpy_functions() (forward against
NumPy on the same data, gradients against central differences of the NumPy function itself), and the
refusals (np.asarray, float(), out=, unsupported functions, boolean mask nodes).

An entry whose gc op is not in this build (it comes from another module) is skipped with the reason naming
that op; once every op module is merged, no test here may be skipped.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special as sc

import graphcompiler as gc
from graphcompiler.numpy_api import OpNotAvailableError, UnsupportedFunctionError

R = np.random.default_rng(11)


def N(*shape):
    return R.standard_normal(shape)


def P(*shape):                      # positive, away from 0
    return R.uniform(0.5, 2.0, shape)


def U(*shape):                      # inside (-1, 1)
    return R.uniform(-0.9, 0.9, shape)


def SPD(n):
    a = N(n, n)
    return a @ a.T + n * np.eye(n)


MASK = R.random((3, 4)) > 0.5
IDX = np.array([[0, 2, 1, 3], [3, 3, 0, 1], [1, 0, 2, 2]])
sym = lambda a: (a + a.T) / 2      # noqa: E731  eigh reads one triangle: differentiate a symmetric input

# name -> (function of arrays or nodes, example inputs). Every function calls the NumPy callable it is named for.
CASES: dict[str, tuple] = {
    # ufuncs
    "numpy.add": (lambda a, b: np.add(a, b), [N(3, 4), N(4)]),
    "numpy.subtract": (lambda a, b: np.subtract(a, b), [N(3, 4), N(3, 1)]),
    "numpy.multiply": (lambda a, b: np.multiply(a, b), [N(3, 4), N(4)]),
    "numpy.divide": (lambda a, b: np.divide(a, b), [N(3, 4), P(4)]),
    "numpy.negative": (lambda a: np.negative(a), [N(3, 4)]),
    "numpy.positive": (lambda a: np.positive(a) * 2.0, [N(3, 4)]),
    "numpy.power": (lambda a, b: np.power(a, b), [P(3, 4), N(3, 4)]),
    "numpy.square": (lambda a: np.square(a), [N(3, 4)]),
    "numpy.sqrt": (lambda a: np.sqrt(a), [P(3, 4)]),
    "numpy.exp": (lambda a: np.exp(a), [N(3, 4)]),
    "numpy.exp2": (lambda a: np.exp2(a), [N(3, 4)]),
    "numpy.log": (lambda a: np.log(a), [P(3, 4)]),
    "numpy.log2": (lambda a: np.log2(a), [P(3, 4)]),
    "numpy.log10": (lambda a: np.log10(a), [P(3, 4)]),
    "numpy.log1p": (lambda a: np.log1p(a), [P(3, 4)]),
    "numpy.expm1": (lambda a: np.expm1(a), [N(3, 4)]),
    "numpy.sin": (lambda a: np.sin(a), [N(3, 4)]),
    "numpy.cos": (lambda a: np.cos(a), [N(3, 4)]),
    "numpy.tan": (lambda a: np.tan(a), [U(3, 4)]),
    "numpy.arctan": (lambda a: np.arctan(a), [N(3, 4)]),
    "numpy.arcsin": (lambda a: np.arcsin(a), [U(3, 4)]),
    "numpy.arccos": (lambda a: np.arccos(a), [U(3, 4)]),
    "numpy.arcsinh": (lambda a: np.arcsinh(a), [N(3, 4)]),
    "numpy.arccosh": (lambda a: np.arccosh(a), [P(3, 4) + 1.0]),
    "numpy.arctanh": (lambda a: np.arctanh(a), [U(3, 4)]),
    "numpy.sinh": (lambda a: np.sinh(a), [N(3, 4)]),
    "numpy.cosh": (lambda a: np.cosh(a), [N(3, 4)]),
    "numpy.tanh": (lambda a: np.tanh(a), [N(3, 4)]),
    "numpy.absolute": (lambda a: np.abs(a), [N(3, 4)]),
    "numpy.fabs": (lambda a: np.fabs(a), [N(3, 4)]),
    "numpy.sign": (lambda a: np.sign(a) * a, [N(3, 4)]),
    "numpy.maximum": (lambda a, b: np.maximum(a, b), [N(3, 4), N(3, 4)]),
    "numpy.minimum": (lambda a, b: np.minimum(a, b), [N(3, 4), N(4)]),
    "numpy.greater": (lambda a, b: np.greater(a, b), [N(3, 4), N(4)]),
    "numpy.greater_equal": (lambda a, b: np.greater_equal(a, b), [N(3, 4), N(4)]),
    "numpy.less": (lambda a, b: np.less(a, b), [N(3, 4), N(4)]),
    "numpy.less_equal": (lambda a, b: np.less_equal(a, b), [N(3, 4), N(4)]),
    "numpy.equal": (lambda a, b: np.equal(a, b), [np.round(N(3, 4)), np.round(N(4))]),
    "numpy.not_equal": (lambda a: np.not_equal(a, 0.0), [np.round(N(3, 4))]),
    "numpy.logaddexp": (lambda a, b: np.logaddexp(a, b), [N(3, 4), N(4)]),
    "numpy.logaddexp2": (lambda a, b: np.logaddexp2(a, b), [N(3, 4), N(4)]),
    "numpy.fmax": (lambda a, b: np.fmax(a, b), [N(3, 4), N(4)]),
    "numpy.fmin": (lambda a, b: np.fmin(a, b), [N(3, 4), N(3, 1)]),
    "numpy.nan_to_num": (lambda a: np.nan_to_num(np.log(a), nan=-1.0, neginf=-5.0) * a, [N(3, 4)]),
    "numpy.floor": (lambda a: np.floor(a) + a, [3 * N(3, 4)]),
    "numpy.ceil": (lambda a: np.ceil(a) * a, [3 * N(3, 4)]),
    "numpy.rint": (lambda a: np.rint(a) + a, [3 * N(3, 4)]),
    "numpy.remainder": (lambda a, b: np.remainder(a, b), [3 * N(3, 4), P(4)]),
    "numpy.matmul": (lambda a, b: np.matmul(a, b), [N(2, 3, 4), N(4, 5)]),
    "numpy.reciprocal": (lambda a: np.reciprocal(a), [P(3, 4)]),
    "numpy.deg2rad": (lambda a: np.deg2rad(a), [N(3, 4)]),
    "numpy.radians": (lambda a: np.radians(a), [N(3, 4)]),
    "numpy.rad2deg": (lambda a: np.rad2deg(a), [N(3, 4)]),
    "numpy.degrees": (lambda a: np.degrees(a), [N(3, 4)]),
    "numpy.isnan": (lambda a: np.isnan(np.log(a)), [N(3, 4)]),
    "numpy.isinf": (lambda a: np.isinf(1.0 / a), [np.round(N(3, 4))]),
    "numpy.isfinite": (lambda a: np.isfinite(np.log(a) / a), [np.round(N(3, 4))]),
    "numpy.logical_not": (lambda a: np.logical_not(a > 0), [N(3, 4)]),
    "numpy.floor_divide": (lambda a, b: np.floor_divide(a, b) * a, [3 * N(3, 4), P(4)]),
    "numpy.divmod": (lambda a, b: np.divmod(a, b)[0] * a + np.divmod(a, b)[1], [3 * N(3, 4), P(4)]),
    "numpy.bitwise_and": (lambda a, b: np.where(np.bitwise_and(a > 0, b > 0), a, b), [N(3, 4), N(4)]),
    "numpy.bitwise_or": (lambda a, b: np.where(np.bitwise_or(a > 0, b > 0), a, b), [N(3, 4), N(4)]),
    "numpy.bitwise_xor": (lambda a, b: np.where(np.bitwise_xor(a > 0, b > 0), a, b), [N(3, 4), N(4)]),
    "numpy.invert": (lambda a: np.where(np.invert(a > 0), a, 2.0), [N(3, 4)]),
    "numpy.logical_and": (lambda a, b: np.logical_and(a > 0, b), [N(3, 4), np.round(N(4))]),
    "numpy.logical_or": (lambda a, b: np.logical_or(a > 0, b > 0), [N(3, 4), N(4)]),
    "numpy.logical_xor": (lambda a, b: np.logical_xor(a > 0, b > 0), [N(3, 4), N(4)]),
    "scipy.special.erf": (lambda a: sc.erf(a), [N(3, 4)]),
    "scipy.special.expit": (lambda a: sc.expit(a), [N(3, 4)]),
    "scipy.special.gammaln": (lambda a: sc.gammaln(a), [P(3, 4)]),
    "scipy.special.psi": (lambda a: sc.psi(a), [P(3, 4)]),
    "scipy.special.log_expit": (lambda a: sc.log_expit(a), [N(3, 4)]),
    **({"scipy.special.softplus": (lambda a: sc.softplus(a), [N(3, 4)])} if hasattr(sc, "softplus") else {}),
    "numpy.add.reduce": (lambda a: np.add.reduce(a, axis=1), [N(3, 4)]),
    "numpy.multiply.reduce": (lambda a: np.multiply.reduce(a), [P(3, 4)]),
    "numpy.maximum.reduce": (lambda a: np.maximum.reduce(a, axis=1, keepdims=True), [N(3, 4)]),
    "numpy.minimum.reduce": (lambda a: np.minimum.reduce(a), [N(3, 4)]),
    "numpy.add.accumulate": (lambda a: np.add.accumulate(a, axis=1), [N(3, 4)]),
    # reductions
    "numpy.sum": (lambda a: np.sum(a, axis=0) + np.sum(a), [N(3, 4)]),
    "numpy.mean": (lambda a: np.mean(a, axis=(0, 2), keepdims=True), [N(2, 3, 4)]),
    "numpy.prod": (lambda a: np.prod(a, axis=1), [P(3, 4)]),
    "numpy.max": (lambda a: np.max(a, axis=1, keepdims=True), [N(3, 4)]),
    "numpy.amax": (lambda a: np.amax(a), [N(3, 4)]),
    "numpy.min": (lambda a: np.min(a, axis=0), [N(3, 4)]),
    "numpy.amin": (lambda a: np.amin(a), [N(3, 4)]),
    "numpy.var": (lambda a: np.var(a, axis=1, ddof=1), [N(3, 4)]),
    "numpy.std": (lambda a: np.std(a, axis=0), [N(3, 4)]),
    "numpy.argmax": (lambda a: np.argmax(a, axis=1), [N(3, 4)]),
    "numpy.argmin": (lambda a: np.argmin(a), [N(3, 4)]),
    "numpy.sort": (lambda a: np.sort(a, axis=0), [N(3, 4)]),
    "numpy.argsort": (lambda a: np.argsort(a, axis=None), [N(3, 4)]),
    "numpy.gradient": (lambda a: np.gradient(a, 0.5, edge_order=2), [N(4, 3)]),
    # only the kth places are NumPy's contract (the rest of the order is introselect's): compare those
    "numpy.partition": (lambda a: np.partition(a, (0, 2), axis=0)[[0, 2]], [N(4, 3)]),
    "numpy.argpartition": (lambda a: np.argpartition(a, 3)[..., 3], [N(3, 5)]),
    "numpy.cumprod": (lambda a: np.cumprod(a, axis=1), [N(3, 4) * np.array([1.0, 0.0, 1.0, 1.0])]),
    "numpy.cumsum": (lambda a: np.cumsum(a, axis=1), [N(3, 4)]),
    "numpy.trace": (lambda a: np.trace(a), [N(4, 4)]),
    # contractions
    "numpy.dot": (lambda a, b, c: np.dot(a, b) + np.dot(a, c).sum(), [N(3, 4), N(4), N(4, 2)]),
    "numpy.vdot": (lambda a, b: np.vdot(a, b), [N(3, 4), N(3, 4)]),
    "numpy.inner": (lambda a, b: np.inner(a, b), [N(3, 4), N(5, 4)]),
    "numpy.einsum": (lambda a, b: np.einsum("bij,jk->bik", a, b), [N(2, 3, 4), N(4, 5)]),
    "numpy.tensordot": (lambda a, b: np.tensordot(a, b, axes=([1, 2], [0, 1])), [N(2, 3, 4), N(3, 4, 5)]),
    "numpy.kron": (lambda a, b: np.kron(a, b), [N(2, 3), N(4)]),
    "numpy.linalg.multi_dot": (lambda a, b, c: np.linalg.multi_dot([a, b, c]), [N(2, 3), N(3, 4), N(4, 2)]),
    "numpy.outer": (lambda a, b: np.outer(a, b), [N(3), N(4)]),
    # shapes and indexing
    "numpy.shape": (lambda a: np.shape(a), [N(3, 4)]),
    "numpy.ndim": (lambda a: np.ndim(a), [N(3, 4)]),
    "numpy.size": (lambda a: np.size(a), [N(3, 4)]),
    "numpy.reshape": (lambda a: np.reshape(a, (4, 3)), [N(3, 4)]),
    "numpy.ravel": (lambda a: np.ravel(a), [N(3, 4)]),
    "numpy.transpose": (lambda a: np.transpose(a, (2, 0, 1)), [N(2, 3, 4)]),
    "numpy.swapaxes": (lambda a: np.swapaxes(a, 0, 2), [N(2, 3, 4)]),
    "numpy.moveaxis": (lambda a: np.moveaxis(a, 0, -1), [N(2, 3, 4)]),
    "numpy.squeeze": (lambda a: np.squeeze(a, axis=1), [N(3, 1, 4)]),
    "numpy.expand_dims": (lambda a: np.expand_dims(a, 1), [N(3, 4)]),
    "numpy.broadcast_to": (lambda a: np.broadcast_to(a, (3, 4)), [N(4)]),
    "numpy.atleast_1d": (lambda a: np.atleast_1d(a), [N()]),
    "numpy.atleast_2d": (lambda a: np.atleast_2d(a), [N(4)]),
    "numpy.atleast_3d": (lambda a: np.atleast_3d(a), [N(4)]),
    "numpy.column_stack": (lambda a, b: np.column_stack([a, b]), [N(4), N(4, 2)]),
    "numpy.dstack": (lambda a, b: np.dstack([a, b]), [N(3, 4), N(3, 4)]),
    "numpy.rollaxis": (lambda a: np.rollaxis(a, 2, 0), [N(2, 3, 4)]),
    "numpy.matrix_transpose": (lambda a: np.matrix_transpose(a), [N(2, 3, 4)]),
    "numpy.linalg.matrix_transpose": (lambda a: np.linalg.matrix_transpose(a), [N(3, 4)]),
    "numpy.rot90": (lambda a: np.rot90(a) + np.rot90(a, 3).T + np.rot90(a.T, 2).T, [N(4, 4)]),
    "numpy.average": (lambda a, w: np.average(a, axis=1, weights=w) + np.average(a), [N(3, 4), P(3, 4)]),
    "numpy.real": (lambda a: np.real(a) * 2.0, [N(3, 4)]),
    "numpy.concatenate": (lambda a, b: np.concatenate([a, b, np.ones((3, 1))], axis=1), [N(3, 4), N(3, 2)]),
    "numpy.stack": (lambda a, b: np.stack([a, b], axis=1), [N(3, 4), N(3, 4)]),
    "numpy.hstack": (lambda a, b: np.hstack([a, b]), [N(3, 4), N(3, 2)]),
    "numpy.vstack": (lambda a, b: np.vstack([a, b]), [N(4), N(2, 4)]),
    "numpy.split": (lambda a: np.split(a, 2, axis=1), [N(3, 4)]),
    "numpy.array_split": (lambda a: np.array_split(a, 3, axis=1), [N(3, 4)]),
    "numpy.hsplit": (lambda a: np.hsplit(a, [1]), [N(3, 4)]),
    "numpy.vsplit": (lambda a: np.vsplit(a, 3), [N(3, 4)]),
    "numpy.dsplit": (lambda a: np.dsplit(a, 2), [N(2, 3, 4)]),
    "numpy.append": (lambda a, b: np.append(a, b) + np.append(b, 1.0, axis=None).sum(), [N(3, 4), N(2)]),
    "numpy.block": (lambda a, b: np.block([[a, np.ones((3, 1))], [b, 2.0 * b[:, :1]]]), [N(3, 4), N(2, 4)]),
    "numpy.array": (lambda a, b: np.array([a, [b[0], 1.0]], like=a), [N(2), N(2)]),
    "numpy.asarray": (lambda a, b: np.asarray([[a, b], [b, a]], like=a), [N(2), N(2)]),
    "numpy.asanyarray": (lambda a: np.asanyarray([a[1], a[0], 3.0], like=a), [N(2)]),
    "numpy.where": (lambda a, b: np.where(MASK, a, b), [N(3, 4), N(4)]),
    "numpy.clip": (lambda a: np.clip(a, -0.5, 0.7), [N(3, 4)]),
    "numpy.pad": (lambda a: np.pad(a, ((1, 2), (0, 1)), constant_values=0.5), [N(3, 4)]),
    "numpy.flip": (lambda a: np.flip(a, axis=0), [N(3, 4)]),
    "numpy.fliplr": (lambda a: np.fliplr(a), [N(3, 4)]),
    "numpy.flipud": (lambda a: np.flipud(a), [N(3, 4)]),
    "numpy.roll": (lambda a: np.roll(a, 2, axis=1), [N(3, 4)]),
    "numpy.tile": (lambda a: np.tile(a, (2, 1)), [N(3, 4)]),
    "numpy.repeat": (lambda a: np.repeat(a, 2, axis=0), [N(3, 4)]),
    "numpy.diagonal": (lambda a: np.diagonal(a), [N(4, 4)]),
    "numpy.diag": (lambda a: np.diag(a), [N(4)]),
    "numpy.select": (lambda a, b: np.select([a > 0, b > 0], [a * b, b], default=a), [N(3, 4), N(4)]),
    "numpy.cross": (lambda a, b: np.cross(a, b), [N(4, 3), N(3)]),
    "numpy.linspace": (lambda a, b: np.linspace(a, b, 5, axis=-1), [N(3), N(2, 3)]),
    "numpy.real_if_close": (lambda a: np.real_if_close(a) * a, [N(3, 4)]),
    "numpy.diagflat": (lambda a: np.diagflat(a, -1), [N(2, 2)]),
    "numpy.triu": (lambda a: np.triu(a, 1), [N(4, 4)]),
    "numpy.tril": (lambda a: np.tril(a), [N(3, 4)]),
    "numpy.full_like": (lambda a: np.full_like(a, 3.0) + a, [N(3, 4)]),
    "numpy.zeros_like": (lambda a: np.zeros_like(a) + a, [N(3, 4)]),
    "numpy.ones_like": (lambda a: np.ones_like(a) * a, [N(3, 4)]),
    "numpy.copy": (lambda a: np.copy(a), [N(3, 4)]),
    "numpy.round": (lambda a: np.round(a) + a, [3 * N(3, 4)]),
    "numpy.around": (lambda a: np.around(a) * a, [3 * N(3, 4)]),
    "numpy.diff": (lambda a: np.diff(a, n=2, axis=1), [N(3, 5)]),
    "numpy.take": (lambda a: np.take(a, np.array([0, 2, 2]), axis=1), [N(3, 4)]),
    "numpy.take_along_axis": (lambda a: np.take_along_axis(a, IDX, axis=1), [N(3, 4)]),
    # linear algebra
    "numpy.linalg.solve": (lambda a, b: np.linalg.solve(a, b), [SPD(3), N(3, 2)]),
    "numpy.linalg.inv": (lambda a: np.linalg.inv(a), [SPD(3)]),
    "numpy.linalg.cholesky": (lambda a: np.linalg.cholesky(a @ a.T + 3 * np.eye(3))
                              + np.linalg.cholesky(a @ a.T + 3 * np.eye(3), upper=True), [N(3, 3)]),
    "numpy.linalg.det": (lambda a: np.linalg.det(a), [SPD(3)]),
    "numpy.linalg.slogdet": (lambda a: np.linalg.slogdet(a).logabsdet, [SPD(3)]),
    "numpy.linalg.eigh": (lambda a: tuple(np.linalg.eigh(sym(a))[0:1]) + (np.linalg.eigh(sym(a))[1] ** 2,),
                          [SPD(3)]),
    "numpy.linalg.eigvalsh": (lambda a: np.linalg.eigvalsh(sym(a)), [SPD(3)]),
    "numpy.linalg.svdvals": (lambda a: np.linalg.svdvals(a), [N(3, 4)]),
    "numpy.linalg.svd": (lambda a: np.linalg.svd(a, compute_uv=False), [N(4, 3)]),
    "numpy.linalg.norm": (lambda a: np.linalg.norm(a) + np.linalg.norm(a, axis=1, keepdims=True), [N(3, 4)]),
}


def _outs(result) -> list:
    return list(result) if isinstance(result, (tuple, list)) else [result]


def _build(name):
    fn, arrays = CASES[name]
    g = gc.Graph(name)
    nodes = [g.input(f"a{k}", a.shape, a.dtype) for k, a in enumerate(arrays)]
    try:
        result = fn(*nodes)
    except OpNotAvailableError as e:
        pytest.skip(str(e))
    return g, nodes, arrays, fn, result


def test_every_listed_function_has_a_case():
    listed = set(gc.numpy_functions())
    assert listed == set(CASES), (f"no case for {sorted(listed - set(CASES))}; "
                                  f"cases for unlisted {sorted(set(CASES) - listed)}")
    assert len(listed) >= 100


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")   # isnan/isinf cases make NaN and inf
@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_matches_numpy(name):
    g, nodes, arrays, fn, result = _build(name)
    expected = _outs(fn(*[a.copy() for a in arrays]))
    outs = _outs(result)
    assert len(outs) == len(expected)
    if not any(isinstance(o, gc.Node) for o in outs):            # np.shape, np.ndim, np.size: static facts
        assert outs == expected
        return
    got = gc.compile(outs).run(dict(zip(nodes, arrays)))
    for o, v, e in zip(outs, got, expected):
        e = np.asarray(e)
        assert o.shape == e.shape, f"{name}: node shape {o.shape} vs NumPy {e.shape}"
        assert v.dtype == e.dtype or (v.dtype.kind == e.dtype.kind == "i"), f"{name}: {v.dtype} vs {e.dtype}"
        if e.dtype.kind in "biu":
            np.testing.assert_array_equal(v, e)
        else:
            np.testing.assert_allclose(v, e, rtol=1e-12, atol=1e-13)


def _weights(outs_np):
    rng = np.random.default_rng(5)
    return [rng.standard_normal(np.shape(e)) for e in outs_np]


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_matches_central_differences(name):
    g, nodes, arrays, fn, result = _build(name)
    outs = _outs(result)
    float_outs = [k for k, o in enumerate(outs) if isinstance(o, gc.Node) and o.dtype.kind == "f"]
    if not float_outs:
        pytest.skip(f"{name} has no floating output to differentiate")
    wts = _weights([np.zeros(outs[k].shape) for k in float_outs])
    L = None
    for k, w in zip(float_outs, wts):
        term = gc.sum(outs[k] * g.constant(w))
        L = term if L is None else L + term
    targets = [n for n in nodes if n.dtype.kind == "f"]
    grads = gc.build_grad(L, targets, disconnected="zero")
    got = gc.compile([grads[t] for t in targets]).run(dict(zip(nodes, arrays)))

    def loss(*xs):
        res = _outs(fn(*xs))
        return sum(float(np.sum(np.asarray(res[k]) * w)) for k, w in zip(float_outs, wts))

    eps = 1e-6
    for t, gv in zip(targets, got):
        k = nodes.index(t)
        num = np.zeros_like(arrays[k])
        for idx in np.ndindex(arrays[k].shape):
            plus = [a.copy() for a in arrays]
            minus = [a.copy() for a in arrays]
            plus[k][idx] += eps
            minus[k][idx] -= eps
            num[idx] = (loss(*plus) - loss(*minus)) / (2 * eps)
        np.testing.assert_allclose(gv, num, rtol=1e-5, atol=1e-6, err_msg=f"{name}: d/d{t.name}")


# -- mixing, methods, indexing ---------------------------------------------------------------------

def graph_and_x(shape=(3, 4), dtype="float64"):
    g = gc.Graph()
    return g, g.input("x", shape, dtype)


def test_arrays_on_the_left_dispatch_to_the_node():
    g, x = graph_and_x()
    a = N(3, 4)
    for expr in (a + x, a * x, a - x, a / x, a ** x, a > x, np.ones((5, 3)) @ x, 2.0 * x, np.float64(2) * x):
        assert isinstance(expr, gc.Node)
    X = N(3, 4)
    got = gc.compile([a - x, np.ones((5, 3)) @ x]).run({x: X})
    np.testing.assert_allclose(got[0], a - X)
    np.testing.assert_allclose(got[1], np.ones((5, 3)) @ X)


def test_python_scalars_keep_float32():
    g, x = graph_and_x(dtype="float32")
    y = np.exp(x) * 2.0 + 1
    assert y.dtype == np.float32
    assert np.sum(x, dtype=np.float64).dtype == np.float64


def test_node_methods_mirror_ndarray():
    g, x = graph_and_x()
    X = N(3, 4)
    assert x.ndim == 2 and x.size == 12 and len(x) == 3 and x.T.shape == (4, 3)
    exprs = [x.sum(), x.sum(axis=0), x.mean(1), x.max(), x.max(axis=0, keepdims=True), x.reshape(2, 6),
             x.reshape((6, 2)), x.astype("float32"), x.dot(np.ones(4)), x.transpose(1, 0), x.ravel(),
             x.flatten(), x.reshape(3, 1, 4).squeeze(), x.swapaxes(0, 1)]
    refs = [X.sum(), X.sum(axis=0), X.mean(1), X.max(), X.max(axis=0, keepdims=True), X.reshape(2, 6),
            X.reshape((6, 2)), X.astype("float32"), X.dot(np.ones(4)), X.transpose(1, 0), X.ravel(),
            X.flatten(), X.reshape(3, 1, 4).squeeze(), X.swapaxes(0, 1)]
    got = gc.compile(exprs).run({x: X})
    for v, r in zip(got, refs):
        assert v.dtype == r.dtype and v.shape == r.shape
        np.testing.assert_allclose(v, r, rtol=1e-6 if r.dtype == np.float32 else 1e-14)
    rows = list(x)
    assert len(rows) == 3 and rows[1].shape == (4,)
    np.testing.assert_array_equal(gc.compile(rows[1]).run({x: X})[0], X[1])


def test_boolean_numpy_mask_becomes_indices():
    g, x = graph_and_x()
    X = N(3, 4)
    try:
        picked = x[MASK]
        rows = x[np.array([True, False, True])]
    except gc.GraphCompilerError as e:
        if getattr(gc, "take", None) is not None:
            raise
        pytest.skip(f"constant boolean masks become integer indices, which need gc.take, not available: {e}")
    got = gc.compile([picked, rows]).run({x: X})
    np.testing.assert_array_equal(got[0], X[MASK])
    np.testing.assert_array_equal(got[1], X[[0, 2]])


def test_integer_array_indexing():
    g, x = graph_and_x()
    X = N(3, 4)
    try:
        ys = [x[[2, 0, -1]], x[:, np.array([3, 1])]]
    except gc.GraphCompilerError as e:
        if getattr(gc, "take", None) is not None:
            raise
        pytest.skip(f"integer-array indexing needs gc.take, not available: {e}")
    got = gc.compile(ys).run({x: X})
    np.testing.assert_array_equal(got[0], X[[2, 0, -1]])
    np.testing.assert_array_equal(got[1], X[:, [3, 1]])


def test_too_many_array_indices_is_a_shape_error():
    g = gc.Graph()
    y = g.input("y", shape=(None, 5))
    with pytest.raises(gc.ShapeError, match=r"too many indices \(3\) for a value of rank 2, shape \(None, 5\)"):
        y[:, [0, 4], [1, 2]]
    assert [n.name for n in g.nodes] == ["y"]  # nothing added
    assert y[:, [0, 4]].shape == (None, 2)


# -- refusals ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda x: np.asarray(x), lambda x: np.array(x), lambda x: float(x[0, 0]),
                                  lambda x: int(x[0, 0]), lambda x: bool(x[0, 0])],
                         ids=["asarray", "array", "float", "int", "bool"])
def test_a_node_has_no_value(make):
    g, x = graph_and_x()
    with pytest.raises(gc.GraphCompilerError, match="no value until a program runs"):
        make(x)


def test_out_is_refused():
    g, x = graph_and_x()
    with pytest.raises(gc.GraphCompilerError, match=r"numpy\.add\(\.\.\., out=\.\.\.\)"):
        np.add(x, 1.0, out=np.zeros((3, 4)))
    a = np.zeros((3, 4))
    with pytest.raises(gc.GraphCompilerError, match="out="):
        a += x
    with pytest.raises(gc.GraphCompilerError, match=r"numpy\.sum\(\.\.\., out="):
        np.sum(x, axis=0, out=np.zeros(4))


def test_unsupported_functions_are_named():
    g, x = graph_and_x()
    with pytest.raises(UnsupportedFunctionError, match=r"numpy\.fft\.fft is not supported"):
        np.fft.fft(x)
    with pytest.raises(UnsupportedFunctionError, match=r"numpy\.spacing is not supported"):
        np.spacing(x)
    with pytest.raises(UnsupportedFunctionError, match=r"numpy\.sort_complex is not supported"):
        np.sort_complex(x)
    with pytest.raises(UnsupportedFunctionError, match=r"numpy\.add\.outer"):
        np.add.outer(x, x)
    with pytest.raises(UnsupportedFunctionError, match="run-time shape"):
        np.where(x > 0)
    assert issubclass(UnsupportedFunctionError, gc.GraphCompilerError)


def test_boolean_mask_node_is_refused():
    g, x = graph_and_x()
    with pytest.raises(gc.ShapeError, match="boolean node"):
        x[x > 0]


def test_assignment_is_refused():
    g, x = graph_and_x()
    with pytest.raises(gc.GraphCompilerError, match="cannot be assigned"):
        x[0] = 1.0


def test_run_time_dims():
    g, x = graph_and_x(shape=(None, 4))
    with pytest.raises(gc.ShapeError, match="first dimension"):
        len(x)
    with pytest.raises(gc.ShapeError, match="size"):
        x.size
    y = np.tanh(x).sum(axis=1) + np.zeros_like(x).mean(axis=1)   # run-time shapes still build and run
    X = N(5, 4)
    np.testing.assert_allclose(gc.compile(y).run({x: X})[0], np.tanh(X).sum(1), rtol=1e-14)


def test_missing_op_message_names_it():
    g, x = graph_and_x()
    import graphcompiler.numpy_api as api
    with pytest.raises(OpNotAvailableError, match=r"numpy\.foo needs gc\.no_such_op, not available"):
        api._gc("no_such_op", "numpy.foo")


@pytest.mark.parametrize("name", sorted(CASES))
def test_second_derivative_matches_differences_of_the_gradient(name):
    """Hessian-vector products (build_grad of <gradient, v>) against central differences of the compiled
    gradient, whose first derivatives the test above checks against NumPy: every rule is differentiable."""
    g, nodes, arrays, fn, result = _build(name)
    outs = _outs(result)
    float_outs = [k for k, o in enumerate(outs) if isinstance(o, gc.Node) and o.dtype.kind == "f"]
    targets = [n for n in nodes if n.dtype.kind == "f"]
    if not float_outs or not targets:
        pytest.skip(f"{name} has no floating input and output to differentiate")
    wts = _weights([np.zeros(outs[k].shape) for k in float_outs])
    L = None
    for k, w in zip(float_outs, wts):
        term = gc.sum(outs[k] * g.constant(w))
        L = term if L is None else L + term
    grads = gc.build_grad(L, targets, disconnected="zero")
    rng = np.random.default_rng(9)
    vs = {t: rng.standard_normal(t.shape) for t in targets}
    inner = None
    for t in targets:
        term = gc.sum(grads[t] * g.constant(vs[t]))
        inner = term if inner is None else inner + term
    hv = gc.build_grad(inner, targets, disconnected="zero")
    grad_prog = gc.compile([grads[t] for t in targets])
    got = gc.compile([hv[t] for t in targets]).run(dict(zip(nodes, arrays)))
    eps = 1e-5
    plus = [a + eps * vs[n] if n in vs else a for n, a in zip(nodes, arrays)]
    minus = [a - eps * vs[n] if n in vs else a for n, a in zip(nodes, arrays)]
    gp = grad_prog.run(dict(zip(nodes, plus)))
    gm = grad_prog.run(dict(zip(nodes, minus)))
    for t, h, a, b in zip(targets, got, gp, gm):
        np.testing.assert_allclose(h, (a - b) / (2 * eps), rtol=1e-4, atol=1e-5, err_msg=f"{name}: d2/d{t.name}")


def test_svd_with_vectors_is_refused():
    g, x = graph_and_x()
    with pytest.raises(UnsupportedFunctionError, match="compute_uv=True"):
        np.linalg.svd(x)
