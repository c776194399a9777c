"""Host randomness in a traced function (np.random.*, a RandomState, default_rng()) is drawn once while
tracing and frozen into every call: gc.function / grad / value_and_grad trace a signature twice on its first
call and warn (FrozenRandomnessWarning) when a constant differs between the two traces."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import graphcompiler as gc

X = np.linspace(-1.0, 1.0, 6).reshape(2, 3)
TRANSFORMS = [gc.function, gc.grad, gc.value_and_grad]


def _global_draw(x):
    return np.sum(x * np.random.randn(*x.shape))


def _legacy_uniform(x):
    return np.sum(x + np.random.uniform(size=x.shape) + np.random.random())


def _fresh_generator(x):
    return np.sum(x * np.random.default_rng().normal(size=x.shape))


STATE = np.random.RandomState(0)


def _random_state(x):
    return np.sum(x * STATE.standard_normal(x.shape))


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("fn", [_global_draw, _legacy_uniform, _fresh_generator, _random_state])
def test_host_randomness_warns_naming_the_constant_and_gc_random(transform, fn):
    f = transform(fn)
    with pytest.warns(gc.FrozenRandomnessWarning, match=r"constant '.*' \(shape \(2, 3\).*read by.*gc\.random"):
        f(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f(X)  # the signature is traced and checked once: later calls neither trace nor warn


def _deterministic(x):
    e = np.eye(3)
    k = np.arange(6.0).reshape(2, 3)
    r = np.random.default_rng(0).normal(size=(3,))  # seeded: the same numbers in each trace
    m = np.random.RandomState(4).rand(3)
    return np.sum(np.tanh(x @ e + k) * r + m + np.linspace(0, 1, 3) + np.full((2, 3), np.nan * 0 + 1.0))


def _with_nan_constant(x):
    return np.sum(np.where(np.isnan(np.array([np.nan, 1.0, 2.0])), 0.0, x))


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("fn", [_deterministic, _with_nan_constant])
def test_deterministic_functions_do_not_warn(transform, fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        transform(fn)(X)


def test_checked_once_per_signature_and_the_global_rng_advances_as_one_trace_does():
    calls = []

    def fn(x):
        calls.append(1)
        return np.sum(x * np.random.randn(*x.shape))

    f = gc.function(fn)
    np.random.seed(123)
    with pytest.warns(gc.FrozenRandomnessWarning):
        f(X)
    after_first = np.random.get_state()[1].copy()
    np.random.seed(123)
    np.random.randn(*X.shape)  # what the user's function draws once
    np.testing.assert_array_equal(after_first, np.random.get_state()[1])
    assert len(calls) == 2  # the trace and the check
    f(X)
    f(X)
    assert len(calls) == 2  # no more tracing for this signature
    with pytest.warns(gc.FrozenRandomnessWarning):
        f(np.ones(4))  # a new signature is checked too
    assert len(calls) == 4


def test_a_function_whose_graph_changes_between_traces_warns():
    count = [0]

    def fn(x):
        count[0] += 1
        return np.sum(x ** 2) if count[0] % 2 else np.sum(np.tanh(x))

    with pytest.warns(gc.FrozenRandomnessWarning, match="two different graphs"):
        gc.function(fn)(X)


def test_the_warning_is_a_user_warning_of_the_package():
    assert issubclass(gc.FrozenRandomnessWarning, gc.GraphCompilerWarning)
    assert issubclass(gc.GraphCompilerWarning, UserWarning)
