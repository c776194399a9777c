"""Shared test set-up: a fixed, bounded hypothesis profile so `make test` is repeatable and quick."""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

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
