"""The payoff of kernels found from the op record (issue 23): an elementwise op declared with one block (its class
with `ufunc`, shape rule and derivative rule) and one row (its op function) runs natively on numpy, c, jax and
dask, its derivative too, with no edit anywhere in the backends."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import sympy as sp

import graphcompiler as gc
from graphcompiler.graph import OPS
from graphcompiler.backends.c import find_compiler
from graphcompiler.ops.base import apply
from graphcompiler.ops import shape as S
from graphcompiler.ops.elementwise import Binary, Unary


@pytest.fixture(autouse=True, scope="module")
def _forget_the_test_ops():
    """The ops this module declares leave the loader's allowlist when it is done (other tests read OPS)."""
    yield
    for name in ("test_asinh", "test_hypot", "test_deg2rad"):
        OPS.pop(name, None)


# -- the one block ------------------------------------------------------------------------------------
@gc.register_op
@dataclass(frozen=True)
class Asinh(Unary):
    """asinh x, an op the package does not have: the shape rule is Unary's, the kernels come from `ufunc`."""

    name: ClassVar[str] = "test_asinh"
    ufunc: ClassVar = np.arcsinh

    def bprop(self, i, x, y, g):
        return gc.divide(g, gc.sqrt(gc.add(gc.square(x[0]), 1.0)))  # d asinh a = da / sqrt(1 + a^2)

    sympy_fn = lambda t: sp.asinh(t)


@gc.register_op
@dataclass(frozen=True)
class Hypot(Binary):
    """sqrt(a^2 + b^2) with broadcasting, a binary op the package does not have."""

    name: ClassVar[str] = "test_hypot"
    ufunc: ClassVar = np.hypot

    def bprop(self, i, x, y, g):
        return S.sum_to(gc.multiply(g, gc.divide(x[i], y)), x[i])  # d hypot = (a da + b db) / hypot

    sympy_fn = lambda a, b: sp.sqrt(a**2 + b**2)


# -- the one row -------------------------------------------------------------------------------------
def asinh(x, name=None):
    return apply(Asinh(), (x,), name)


def hypot(a, b, name=None):
    return apply(Hypot(), (a, b), name)


BACKENDS = ["numpy", "c", "jax", "dask"]


def _backend_ready(backend):
    if backend == "c" and find_compiler() is None:
        pytest.skip("no C compiler on this machine")
    if backend in ("jax", "dask"):
        pytest.importorskip(backend)


def _run(outs, feeds, backend):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a NumPy segment in a C program warns: refused here
        prog = gc.compile(outs, backend=backend)
        res = prog.run(feeds)
    return prog, [np.asarray(r.compute() if hasattr(r, "compute") else r) for r in res]


def _graph(dtype):
    g = gc.Graph("one_block")
    x = g.input("x", shape=(5, 7), dtype=dtype)
    b = g.input("b", shape=(7,), dtype=dtype)
    y = asinh(x, name="y")
    h = hypot(y, b, name="h")
    J = gc.sum(gc.multiply(h, h), name="J")
    grads = gc.build_grad(J, [x, b])
    return y, h, J, grads[x], grads[b]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_new_elementwise_op_runs_natively_with_its_derivative(backend, dtype):
    _backend_ready(backend)
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((5, 7)) * 3).astype(dtype)
    b = (rng.standard_normal(7) + 0.5).astype(dtype)
    outs = _graph(dtype)
    prog, (y, h, J, dx, db) = _run(list(outs), {"x": x, "b": b}, backend)
    x64, b64 = x.astype(float), b.astype(float)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    want_y = np.arcsinh(x64)
    want_h = np.hypot(want_y, b64)
    np.testing.assert_allclose(y, want_y, **tol)
    np.testing.assert_allclose(h, want_h, **tol)
    np.testing.assert_allclose(J, np.sum(want_h**2), rtol=tol["rtol"] * 10)
    # d J / d x = 2 h * (y / h) * 1 / sqrt(1 + x^2) = 2 y / sqrt(1 + x^2); d J / d b = sum over rows of 2 b
    np.testing.assert_allclose(dx, 2 * want_y / np.sqrt(1 + x64**2), **tol)
    np.testing.assert_allclose(db, 2 * b64 * x.shape[0], **tol)
    assert y.dtype == np.dtype(dtype) and dx.dtype == np.dtype(dtype)
    if backend == "c":  # native: the ops are in the generated C, no NumPy segment (_run refuses the warning)
        src = prog.source()
        suffix = "f" if dtype == "float32" else ""
        assert f"asinh{suffix}(" in src and f"hypot{suffix}(" in src


@gc.register_op
@dataclass(frozen=True)
class Deg2rad(Unary):
    """A ufunc with no C99 counterpart: C runs it as a NumPy segment (saying so), the others natively."""

    name: ClassVar[str] = "test_deg2rad"
    ufunc: ClassVar = np.deg2rad

    def bprop(self, i, x, y, g):
        return gc.multiply(g, np.pi / 180)

    sympy_fn = lambda t: t * sp.pi / 180


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_ufunc_without_c_runs_right_everywhere(backend):
    _backend_ready(backend)
    g = gc.Graph("no_c")
    x = g.input("x", shape=(4,))
    y = apply(Deg2rad(), (x,), "y")
    dx = gc.build_grad(gc.sum(gc.multiply(y, y)), [x])[x]
    feeds = {"x": np.array([0.0, 90.0, -45.0, 360.0])}
    if backend == "c":
        with pytest.warns(RuntimeWarning, match="test_deg2rad"):
            res = gc.compile([y, dx], backend="c").run(feeds)
    else:
        _, res = _run([y, dx], feeds, backend)
    np.testing.assert_allclose(np.asarray(res[0]), np.deg2rad(feeds["x"]), rtol=1e-14)
    np.testing.assert_allclose(np.asarray(res[1]), 2 * np.deg2rad(feeds["x"]) * np.pi / 180, rtol=1e-14)
