"""Shared test set-up: a fixed, bounded hypothesis profile so `make test` is repeatable and quick."""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings


def build_mlp(*, rng: np.random.Generator | None = None, name: str = "mlp", dtype: str = "float64",
              batch: int | None = None, d: int = 4, hidden: int = 3, classes: int = 2, act=None,
              W2_value: bool = True, name_o: bool = True, regularize: bool = True, grads: bool = False):
    """D2L's one-hidden-layer MLP, the graph of API.md section 1: z = x W1, h = act(z) (relu), o = h W2,
    L = softmax_cross_entropy(o, y), s = lambda/2 (sum W1*W1 + sum W2*W2), J = L + s.

    Returns (graph, {name: node}) with x, y, W1, W2, z, h, o, L (and lam, s, J when `regularize`; dW1, dW2
    from build_grad when `grads`). Weights are drawn from `rng` (default_rng(0) if none), W1 then W2, so a
    caller that passes its rng draws its feeds after them. W2_value=False declares W2 by shape only;
    name_o=False writes o = h @ W2 with the operator and an automatic name, as API.md does.
    """
    import graphcompiler as gc
    rng = np.random.default_rng(0) if rng is None else rng
    g = gc.Graph(name)
    x = g.input("x", shape=(batch, d), dtype=dtype)
    y = g.input("y", shape=(batch,), dtype="int64")
    W1 = g.parameter("W1", rng.standard_normal((d, hidden)).astype(dtype))
    if W2_value:
        W2 = g.parameter("W2", rng.standard_normal((hidden, classes)).astype(dtype))
    else:
        W2 = g.parameter("W2", shape=(hidden, classes), dtype=dtype)
    lam = g.constant(np.array(0.01, dtype), name="lambda") if regularize else None
    z = gc.matmul(x, W1, name="z")
    h = (act or gc.relu)(z, name="h")
    o = gc.matmul(h, W2, name="o") if name_o else h @ W2
    L = gc.softmax_cross_entropy(o, y, name="L")
    n = dict(x=x, y=y, W1=W1, W2=W2, z=z, h=h, o=o, L=L)
    if lam is not None:
        s = gc.multiply(lam / 2, gc.sum(W1 * W1) + gc.sum(W2 * W2), name="s")
        n.update(lam=lam, s=s, J=gc.add(L, s, name="J"))
    if grads:
        grad = gc.build_grad(n["J"], [W1, W2])
        n.update(dW1=grad[W1], dW2=grad[W2])
    return g, n


@pytest.fixture
def make_mlp():
    """build_mlp, the D2L MLP several test files start from: `g, n = make_mlp(**options)`."""
    return build_mlp


settings.register_profile(
    "graphcompiler", max_examples=int(os.environ.get("GC_HYPOTHESIS_EXAMPLES", "40")), deadline=None,
    derandomize=True, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("graphcompiler")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# The compiler and runtime tests run on every backend that runs compiled programs here (NumPy, and C: each
# program compiled natively, or on NumPy with a warning where no C compiler is found).
BOTH_BACKENDS = {"test_compiler", "test_runtime", "test_seeds"}
NUMPY_ONLY = {"test_evaluator_is_separate_and_reused"}       # inspects the NumPy evaluator's own internals


def pytest_generate_tests(metafunc):
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if module in BOTH_BACKENDS and metafunc.function.__name__ not in NUMPY_ONLY:
        metafunc.parametrize("gc_backend", ["numpy", "c"], indirect=True)


@pytest.fixture(autouse=True)
def gc_backend(request, monkeypatch):
    """The backend gc.compile uses when none is named: "numpy", or the parametrised one."""
    import graphcompiler.compiler as compiler
    name = getattr(request, "param", None)
    if name is not None:
        monkeypatch.setattr(compiler, "DEFAULT_BACKEND", name)
    return name or compiler.DEFAULT_BACKEND
