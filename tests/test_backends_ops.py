"""Every op case of the op tables (tests/test_ops*.py) on the functional kernels: forward and first derivatives.

Each case's value and the gradient of a weighted sum of it must equal the NumPy evaluator's, on NumPy's array
API namespace (every case: cheap) and on jax (every third case: one jit each); a case whose ops have no
functional kernel must be refused at load with a GraphCompilerError naming the op (never a wrong number).
"""

from __future__ import annotations

import numpy as np
import pytest
import test_ops
import test_ops_indexing
import test_ops_special

import graphcompiler as gc
from graphcompiler.backends.functional import KERNELS, ArrayApiEvaluator
import graphcompiler.backends as backends

CASES = list(test_ops.CASES) + list(test_ops_special.CASES) + list(test_ops_indexing.CASES)


def build(case):
    rng = np.random.default_rng(abs(hash(case.id)) % 2**32)
    arrays = case.arrays(rng)
    g = gc.Graph("case")
    xs = [g.input(f"x{k}", shape=np.shape(a), dtype=np.asarray(a).dtype) for k, a in enumerate(arrays)]
    y = case.build(*xs)
    outs = [y]
    if y.dtype.kind == "f":
        weights = g.constant(rng.uniform(0.5, 1.5, size=y.shape).astype(y.dtype))
        cost = gc.sum(y * weights, name="J")
        wrt = [x for x in xs if x.dtype.kind == "f"]
        if wrt:
            grads = gc.build_grad(cost, wrt, disconnected="zero")
            outs += [grads[x] for x in wrt]
    return outs, {x.name: a for x, a in zip(xs, arrays)}


def agree(case, backend):
    try:
        outs, feeds = build(case)
        ref = gc.compile(outs).run(feeds)
    except gc.GraphCompilerError as e:            # a case built to fail on NumPy already
        pytest.skip(f"fails on numpy too: {e}")
    try:
        got = gc.compile(outs, backend=backend).run(feeds)
    except gc.GraphCompilerError as e:
        if "has no kernel for op" in str(e):
            missing = str(e).split("has no kernel for op")[1].split("(used by")[0]
            assert all(m.strip() not in KERNELS for m in missing.replace("s ", " ", 1).split(","))
            pytest.skip(f"refused by name: {e}")
        raise
    for a, b in zip(got, ref):
        assert np.asarray(a).shape == np.shape(b) and np.asarray(a).dtype == np.asarray(b).dtype
        tol = 2e-5 if np.asarray(b).dtype == np.float32 else 1e-9
        np.testing.assert_allclose(np.asarray(a), b, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case_on_the_numpy_namespace(case, monkeypatch):
    monkeypatch.setitem(backends.BACKENDS, "array_api", ArrayApiEvaluator)
    agree(case, "array_api")


@pytest.mark.parametrize("case", CASES[::3], ids=[c.id for c in CASES[::3]])
def test_case_on_jax(case):
    pytest.importorskip("jax")
    agree(case, "jax")
