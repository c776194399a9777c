"""Fuzzing compiled programs with bad feeds: wrong shapes, ranks and dtypes, NaN and infinity, out-of-range
and negative labels, missing and unknown feeds. Each run either computes what the unoptimised program
computes (the graph as declared) or raises one of the package's own errors, the same class on both.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import graphcompiler as gc


def _mlp():
    g = gc.Graph("mlp")
    x = g.input("x", shape=(None, 4))
    y = g.input("y", shape=(None,), dtype="int64")
    W1 = g.parameter("W1", np.linspace(-1, 1, 12).reshape(4, 3))
    W2 = g.parameter("W2", np.linspace(1, -1, 9).reshape(3, 3))
    h = gc.relu(x @ W1, name="h")
    o = gc.matmul(h, W2, name="o")
    L = gc.add(gc.softmax_cross_entropy(o, y), 0.01 * gc.sum(W1 * W1), name="L")
    grads = gc.build_grad(L, [W1, W2])
    return g, [L, grads[W1], grads[W2]]


def _shapes():
    g = gc.Graph("shapes")
    a = g.input("a", shape=(None, 3))
    b = g.input("b", shape=(3,))
    c = gc.concatenate([a, gc.broadcast_to(b, (2, 3))], axis=0)
    s = gc.sum(gc.tanh(c[1:, :2]) * gc.log_softmax(c, axis=0)[1:, 1:], name="s")
    m = gc.mean(gc.sigmoid(a) * b, axis=0, name="m")
    grads = gc.build_grad(s + gc.sum(m), [a, b])
    return g, [s, m, grads[a], grads[b]]


def _indexing():
    """The new ops that read indices and matrices: take, take_along_axis, one_hot, solve, cholesky."""
    g = gc.Graph("indexing")
    x = g.input("x", shape=(None, 3))
    i = g.input("i", shape=(None,), dtype="int64")
    a = g.input("a", shape=(3, 3))
    t = gc.take(x, i, axis=1)
    picked = gc.take_along_axis(x, gc.expand_dims(i, 1), axis=1)
    spd = a @ gc.transpose(a) + 0.0 * gc.sum(x)            # symmetric; positive definite unless a is singular
    chol = gc.linalg.cholesky(spd)
    sol = gc.linalg.solve(a, gc.transpose(gc.sum(x, axis=0, keepdims=True)))
    s = gc.add(gc.sum(t * t) + gc.sum(picked) + gc.sum(gc.one_hot(i, 3) * x), gc.sum(chol) + gc.sum(sol),
               name="s")
    grads = gc.build_grad(s, [x, a])
    return g, [s, grads[x], grads[a]]


MODELS = {"mlp": _mlp, "shapes": _shapes, "indexing": _indexing}
FEEDS = {"mlp": {"x": ((None, 4), "float64"), "y": ((None,), "int64")},
         "shapes": {"a": ((None, 3), "float64"), "b": ((3,), "float64")},
         "indexing": {"x": ((None, 3), "float64"), "i": ((None,), "int64"), "a": ((3, 3), "float64")}}


@st.composite
def _bad_feeds(draw, model: str):
    batch = draw(st.integers(0, 4))
    feeds = {}
    for name, (shape, dtype) in FEEDS[model].items():
        kind = draw(st.sampled_from(["good", "good", "shape", "rank", "dtype", "nan", "missing", "label",
                                     "list"]))
        dims = [batch if d is None else d for d in shape]
        if kind == "missing":
            continue
        if kind == "shape":
            k = draw(st.integers(0, len(dims) - 1))
            dims[k] = draw(st.integers(0, 6))
        if kind == "rank":
            dims = dims + [1] if draw(st.booleans()) else dims[:-1]
        size = int(np.prod(dims, dtype=np.int64))
        if dtype.startswith("int"):
            hi = 3 if kind != "label" else 6
            lo = 0 if kind != "label" else -4
            value = np.array(draw(st.lists(st.integers(lo, hi - 1), min_size=size, max_size=size)),
                             dtype=np.int64).reshape(dims)
        else:
            value = np.array(draw(st.lists(st.floats(-3, 3, allow_nan=False), min_size=size, max_size=size)),
                             dtype=np.float64).reshape(dims)
            if name == "a" and kind == "good" and draw(st.booleans()):
                value = draw(st.sampled_from([np.zeros((3, 3)), np.ones((3, 3)), np.eye(3), np.diag([1.0, -1, 2]),
                                              np.arange(9.0).reshape(3, 3)]))
            if kind == "nan" and size:
                value.flat[draw(st.integers(0, size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        if kind == "dtype":
            value = value.astype(draw(st.sampled_from(["float32", "int32", "bool", "complex128", "U3", "O"])))
        if kind == "list":
            value = value.tolist()
        feeds[name] = value
    if draw(st.booleans()):
        feeds["no_such_node"] = np.ones(2)
    return feeds


def _outcome(program, feeds):
    try:
        with np.errstate(all="ignore"):
            return "ok", program.run(feeds)
    except gc.GraphCompilerError as e:
        return "error", type(e)


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("nan_check", [False, True])
def test_property_bad_feeds_run_right_or_raise_package_errors(model, nan_check):
    _graph, outputs = MODELS[model]()
    fast = gc.compile(outputs, nan_check=nan_check)
    slow = gc.compile(outputs, optimize=False, nan_check=nan_check)

    @given(feeds=_bad_feeds(model))
    def check(feeds):
        a = _outcome(fast, feeds)               # any exception that is not the package's fails the test
        b = _outcome(slow, feeds)
        assert a[0] == b[0], (feeds, a, b)
        if a[0] == "error":
            assert a[1] is b[1], (feeds, a, b)
        else:
            for u, v in zip(a[1], b[1]):
                assert np.shape(u) == np.shape(v)
                np.testing.assert_allclose(u, v, rtol=1e-9, atol=1e-12, equal_nan=True)
    check()
    # and the programs stay usable after all that
    good = {k: (np.eye(3) * 2 if k == "a" else np.ones([2 if d is None else d for d in s], dt))
            for k, (s, dt) in FEEDS[model].items()}
    for u, v in zip(fast.run(good), slow.run(good)):
        np.testing.assert_allclose(u, v, rtol=1e-9, atol=1e-12)
