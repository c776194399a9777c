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
