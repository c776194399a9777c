"""The "c" backend against the NumPy evaluator: same numbers, same errors, fallbacks that say so, the disk cache."""

import os
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphcompiler as gc
from graphcompiler.backends import c as cbackend
from graphcompiler.backends.c import CEvaluator

from test_compiler import random_graph

HAS_CC = cbackend.find_compiler() is not None
needs_cc = pytest.mark.skipif(not HAS_CC, reason="no C compiler on this machine")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GRAPHCOMPILER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "gc-cache"))


def both(outputs, feeds, rtol=1e-10, atol=1e-12, **kw):
    ref = gc.compile(outputs, backend="numpy", **kw).run(feeds)
    p = gc.compile(outputs, backend="c", **kw)
    got = p.run(feeds)
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        assert np.shape(a) == np.shape(b) and np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    return p, got


def native(p) -> bool:
    ev = p._last.evaluator
    return isinstance(ev, CEvaluator) and ev.fallback_reason is None


def mlp(dtype="float64", batch=None, n=6):
    rng = np.random.default_rng(0)
    g = gc.Graph("mlp")
    x = g.input("x", shape=(batch, 4), dtype=dtype)
    y = g.input("y", shape=(batch,), dtype="int64")
    W1 = g.parameter("W1", rng.standard_normal((4, 5)).astype(dtype))
    W2 = g.parameter("W2", rng.standard_normal((5, 3)).astype(dtype))
    h = gc.relu(gc.matmul(x, W1, name="z"), name="h")
    o = gc.matmul(h, W2, name="o")
    L = gc.softmax_cross_entropy(o, y, name="L")
    J = gc.add(L, 0.01 * (gc.sum(W1 * W1) + gc.sum(W2 * W2)), name="J")
    grads = gc.build_grad(J, [W1, W2])
    feeds = {"x": rng.standard_normal((n, 4)).astype(dtype), "y": np.arange(n) % 3}
    return g, J, grads, (W1, W2), feeds


@needs_cc
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", 2e-5)])
@pytest.mark.parametrize("optimize", [True, False])
def test_mlp_training_step_agrees_and_runs_natively(dtype, rtol, optimize):
    g, J, grads, (W1, W2), feeds = mlp(dtype)
    p, _ = both([J, grads[W1], grads[W2]], feeds, rtol=rtol, atol=1e-6, optimize=optimize)
    assert native(p)
    assert "gc_run" in p.source("c") and "softmax_cross_entropy" in p.source("c")


@needs_cc
@settings(max_examples=25)
@given(random_graph(), st.booleans())
def test_random_graphs_agree_with_numpy(outputs, optimize):
    rng = np.random.default_rng(1)
    feeds = {"a": rng.standard_normal((3, 4)) * 0.5, "b": rng.standard_normal((3, 4)) * 0.5}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        both(outputs, feeds, rtol=1e-9, atol=1e-12, optimize=optimize)


@needs_cc
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kernels_on_odd_axes_strides_and_broadcasts(dtype):
    rng = np.random.default_rng(2)
    g = gc.Graph("k")
    x = g.input("x", shape=(3, 4, 5), dtype=dtype)
    v = g.input("v", shape=(5,), dtype=dtype)
    m = g.input("m", shape=(1, 5, 3), dtype=dtype)
    outs = [gc.softmax(x, axis=0), gc.log_softmax(x, axis=1), gc.logsumexp(x, axis=(1, 2)),
            gc.logsumexp(x, axis=1, keepdims=True), gc.sum(x, axis=(0, 2)), gc.mean(x, axis=1),
            gc.max(x, axis=(0, 1), keepdims=True), gc.transpose(x, (2, 0, 1)) * 2.0, gc.maximum(x, v),
            gc.where(gc.greater(x, v), gc.sigmoid(x * 30.0), gc.sqrt(gc.abs(x)) * gc.sign(x)),
            gc.matmul(x, v), gc.matmul(v, m), gc.matmul(x, m), gc.matmul(gc.transpose(x, (0, 2, 1)), x),
            gc.mse(x, v), gc.astype(gc.greater(x, 0.0), dtype) + gc.log1p(gc.exp(-gc.abs(x))),
            gc.tanh(gc.cos(x)) ** 2.0, gc.reshape(gc.transpose(x, (1, 0, 2)), (4, 15)), x[1:, ::2, 2]]
    feeds = {"x": rng.standard_normal((3, 4, 5)).astype(dtype), "v": rng.standard_normal(5).astype(dtype),
             "m": rng.standard_normal((1, 5, 3)).astype(dtype)}
    rtol = 1e-5 if dtype == "float32" else 1e-12
    p, _ = both(outs, feeds, rtol=rtol, atol=1e-6 if dtype == "float32" else 1e-13)
    assert native(p), p._last.evaluator.fallback_reason


@needs_cc
def test_stable_kernels_keep_large_logits_finite():
    g = gc.Graph("s")
    x = g.input("x", shape=(2, 3))
    y = g.input("y", shape=(2,), dtype="int64")
    outs = [gc.softmax(x), gc.log_softmax(x), gc.logsumexp(x, axis=1), gc.softmax_cross_entropy(x, y)]
    feeds = {"x": np.array([[1e4, -1e4, 0.0], [-np.inf, 0.0, 1.0]]), "y": np.array([0, 2])}
    p, got = both(outs, feeds)
    assert native(p) and np.isfinite(got[0][0]).all() and np.isfinite(got[3])


@needs_cc
def test_label_out_of_range_raises_the_numpy_error_naming_the_node():
    g, J, grads, (W1, W2), feeds = mlp()
    bad = dict(feeds, y=np.array([0, 1, 2, 0, 1, 7]))
    for optimize in (True, False):
        with pytest.raises(gc.ExecutionError) as ref:
            gc.compile([J, grads[W1]], optimize=optimize, backend="numpy").run(bad)
        p = gc.compile([J, grads[W1]], optimize=optimize, backend="c")
        p.run(feeds)
        assert native(p)
        with pytest.raises(gc.ExecutionError, match="while computing L = softmax_cross_entropy") as got:
            p.run(bad)
        assert str(got.value) == str(ref.value)
        with pytest.raises(gc.ExecutionError):
            p.run(dict(feeds, y=np.array([0, 1, 2, 0, 1, -1])))


@needs_cc
def test_feed_errors_updates_and_fresh_results():
    g, J, grads, (W1, W2), feeds = mlp(batch=None)
    p = gc.compile([J, grads[W1]], updates={W1: W1 - 0.1 * grads[W1]}, backend="c")
    w = g.value(W1).copy()
    ref = gc.compile([J, grads[W1]], backend="numpy").run(feeds)
    a = p.run(feeds)
    assert native(p)
    np.testing.assert_allclose(g.value(W1), w - 0.1 * ref[1], rtol=1e-12)
    a[1][...] = 0                                  # results belong to the caller: the next run is unaffected
    b = gc.compile([J, grads[W1]], backend="c").run(feeds)
    assert np.abs(b[1]).sum() > 0
    with pytest.raises(gc.FeedError, match="'x'"):
        p.run({"x": np.ones((6, 3)), "y": feeds["y"]})
    with pytest.raises(gc.FeedError):
        p.run({"y": feeds["y"]})


@needs_cc
def test_non_contiguous_and_readonly_feeds():
    g = gc.Graph("nc")
    x = g.input("x", shape=(3, 4))
    z = gc.sum(gc.exp(x) * 2.0, axis=1)
    base = np.arange(12.0).reshape(4, 3) / 10
    ro = base.T.copy()
    ro.setflags(write=False)
    for feed in (base.T, ro, np.asfortranarray(base.T)):
        p, _ = both([z], {"x": feed})
        assert native(p)


@needs_cc
def test_an_elementwise_chain_is_one_loop_and_needs_no_arena():
    g = gc.Graph("chain")
    w = g.input("w", shape=(1000,))
    z = w
    for k in range(200):
        z = gc.sin(z) if k % 2 == 0 else gc.tanh(z)
    p, _ = both([z], {"w": np.linspace(-1, 1, 1000)})
    body = p.source("c").split("int gc_run", 1)[1]
    # one loop over the 1,000 elements, 200 statements in it (vectorised: the vector loop and its scalar tail)
    assert body.count("for (") == (2 if "_ZGV" in body else 1)
    assert p._last.evaluator._arena_bytes == 0


@needs_cc
def test_steps_c_does_not_translate_run_on_numpy_between_c_segments_and_say_so():
    g = gc.Graph("cat")
    a = g.input("a", shape=(2, 3))
    y = g.input("y", shape=(4,), dtype="int64")
    W = g.parameter("W", np.linspace(-1, 1, 9).reshape(3, 3))
    c = gc.concatenate([gc.matmul(a, W), gc.sin(a)], axis=0)          # concatenate: not translated
    z = gc.softmax_cross_entropy(gc.tanh(c) * 2.0, y, name="L")
    J = gc.add(z, gc.sum(gc.concatenate([c, c], axis=1) ** 2.0), name="J")
    grads = gc.build_grad(J, [a, W])
    feeds = {"a": np.arange(6.0).reshape(2, 3) / 5, "y": np.array([0, 2, 1, 0])}
    cbackend._WARNED.clear()
    with pytest.warns(RuntimeWarning, match="runs concat.* through NumPy kernels between C segments"):
        p, _ = both([J, grads[a], grads[W]], feeds)
    assert native(p) and "gc_run_1" in p.source("c")
    assert "concatenate" in p._last.evaluator.numpy_steps
    bad = np.array([0, 2, 1, 3])                    # the C kernel's label check, then NumPy's message
    with pytest.raises(gc.ExecutionError) as ref:
        gc.compile([J], backend="numpy").run(dict(feeds, y=bad))
    with pytest.raises(gc.ExecutionError) as got:
        gc.compile([J], backend="c").run(dict(feeds, y=bad))
    assert str(got.value) == str(ref.value)
    # a negative label: C refuses it, naming the step (NumPy's pick_mean kernel reads it as the last class)
    with pytest.raises(gc.ExecutionError, match="L = softmax_cross_entropy"):
        gc.compile([J], backend="c").run(dict(feeds, y=np.array([0, -1, 1, 0])))


def test_without_a_compiler_it_says_so_and_runs_on_numpy(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(cbackend, "_toolchain", {})
    cbackend._WARNED.clear()
    g, J, grads, (W1, W2), feeds = mlp()
    with pytest.warns(RuntimeWarning, match="no C compiler found"):
        p, _ = both([J, grads[W1]], feeds)
    assert p._last.evaluator.fallback_reason.startswith("no C compiler")


@needs_cc
def test_nan_check_runs_on_numpy_and_names_the_step():
    g = gc.Graph("nan")
    x = g.input("x", shape=(3,))
    z = gc.log(x, name="z")
    p = gc.compile([z], nan_check=True, backend="c")
    with pytest.raises(gc.NumericsError, match="z = log"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p.run({"x": np.array([1.0, -1.0, 2.0])})
    assert "nan_check" in p._last.evaluator.fallback_reason


def test_source_errors():
    g, J, grads, _, feeds = mlp()
    with pytest.raises(gc.GraphCompilerError, match="backend='c'"):
        gc.compile([J], backend="numpy").source("c")
    p = gc.compile([J], backend="c")
    with pytest.raises(gc.GraphCompilerError, match="None dims.*run it once"):
        p.source("c")
    with pytest.raises(gc.GraphCompilerError):
        p.source("jax")


@needs_cc
def test_threads_each_get_their_own_results():
    g, J, grads, (W1, W2), feeds = mlp(batch=None)
    p = gc.compile([J, grads[W1], grads[W2]], backend="c")
    rng = np.random.default_rng(5)
    cases = [{"x": rng.standard_normal((6, 4)), "y": feeds["y"]} for _ in range(8)]
    refs = [gc.compile([J, grads[W1], grads[W2]], backend="numpy").run(f) for f in cases]
    errors = []

    def work(k):
        for _ in range(30):
            got = p.run(cases[k])
            for a, b in zip(got, refs[k]):
                if not np.allclose(a, b, rtol=1e-10):
                    errors.append(k)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors and native(p)


@needs_cc
def test_a_second_process_loads_the_cached_object(tmp_path):
    code = ("import sys, numpy as np, graphcompiler as gc\n"
            "sys.path.insert(0, %r)\n"
            "from test_backend_c import mlp\n"
            "g, J, grads, (W1, W2), feeds = mlp()\n"
            "p = gc.compile([J, grads[W1]], backend='c')\n"
            "print(float(p.run(feeds)[0]), p._last.evaluator.path)\n") % os.path.dirname(__file__)
    env = dict(os.environ, GRAPHCOMPILER_CACHE_DIR=str(tmp_path), PYTHONPATH=os.path.dirname(os.path.dirname(
        os.path.abspath(gc.__file__))))
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    objects = sorted(os.listdir(tmp_path))
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert sorted(os.listdir(tmp_path)) == objects         # nothing compiled the second time
    assert first.stdout == second.stdout and str(tmp_path) in first.stdout


@needs_cc
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-13), ("float32", 1e-5)])
def test_vectorised_loops_with_a_scalar_tail_and_broadcast_operands(dtype, rtol):
    g = gc.Graph("vec")
    x = g.input("x", shape=(37,), dtype=dtype)
    s = g.input("s", shape=(1,), dtype=dtype)
    z = gc.sin(x) * 2.0 + gc.exp(-x) / (1.0 + gc.square(x)) - s * gc.tanh(gc.cos(x)) + gc.log1p(gc.log(gc.exp(x) + 1.0))
    rng = np.random.default_rng(3)
    p, _ = both([z], {"x": rng.standard_normal(37).astype(dtype), "s": np.array([0.5], dtype)}, rtol=rtol, atol=1e-6)
    assert native(p)
    if cbackend._vector_isa() is not None:
        assert "_ZGV" in p.source("c")


@needs_cc
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 1e-5)])
def test_special_elementwise_functions(dtype, rtol):
    g = gc.Graph("special")
    x = g.input("x", shape=(5, 7), dtype=dtype)
    t = g.input("t", shape=(7,), dtype=dtype)
    fns = [gc.expm1, gc.tan, gc.arctan, gc.sinh, gc.cosh, gc.floor, gc.ceil, gc.round, gc.erf, gc.reciprocal,
           gc.softplus, gc.log_sigmoid, lambda v: gc.logaddexp(v, t)]
    outs = [f(x * 3.0) for f in fns]
    vals = np.random.default_rng(4).standard_normal((5, 7)).astype(dtype)
    vals[0, :4] = [0.5, -0.5, 1.5, 2.5]                  # round half to even, as np.rint
    p, _ = both(outs, {"x": vals / 3, "t": np.linspace(-2, 2, 7).astype(dtype)}, rtol=rtol, atol=1e-6)
    assert native(p), p._last.evaluator.fallback_reason


@needs_cc
@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_min_and_prod_reductions(dtype):
    g = gc.Graph("red")
    x = g.input("x", shape=(3, 4, 5), dtype=dtype)
    outs = [gc.min(x, axis=1), gc.min(x, axis=(0, 2), keepdims=True), gc.prod(x, axis=0), gc.prod(x, axis=(1, 2)),
            gc.max(x, axis=2), gc.sum(x, axis=1)]
    vals = (np.random.default_rng(6).standard_normal((3, 4, 5)) * 3).astype(dtype)
    vals[0, 0, 0] = 0
    p, _ = both(outs, {"x": vals}, rtol=1e-5 if dtype == "float32" else 1e-12)
    assert native(p), p._last.evaluator.fallback_reason
    if dtype == "float64":
        vals[1, 2, 3] = np.nan                  # min, max and prod propagate NaN as NumPy does
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            both(outs, {"x": vals})


@needs_cc
def test_views_of_constants_are_constants_in_c():
    g = gc.Graph("cv")
    x = g.input("x", shape=(3, 4))
    c = g.constant(np.arange(4.0), name="c")
    z = x * gc.broadcast_to(c, (3, 4)) + gc.expand_dims(c, 0) + gc.transpose(gc.broadcast_to(c, (2, 4)))[1:2, 0:1]
    p, _ = both([z], {"x": np.ones((3, 4))}, optimize=False)
    assert native(p) and "gc_run_1" not in p.source("c")


def test_memory_budget_is_kept_on_c():
    """Under memory_budget the C arena never exceeds the compiler's budgeted plan (else it runs on NumPy), and
    the results equal the NumPy evaluator's under the same budget."""
    rng = np.random.default_rng(5)
    g = gc.Graph("narrow")
    x = g.input("x", (64, 32))
    h = x
    params = []
    for k in range(8):
        W = g.parameter(f"W{k}", rng.normal(size=(32, 32)) * 0.2)
        params.append(W)
        h = gc.tanh(h @ W)
    J = gc.sum(h * h)
    grads = gc.build_grad(J, params)
    outs = [J] + [grads[p] for p in params]
    feed = {"x": rng.normal(size=(64, 32))}
    free = gc.compile(outs)
    free.run(feed)
    budget = int(free.stats["peak_bytes"] * 0.8)
    ref = gc.compile(outs, memory_budget=budget).run(feed)
    p = gc.compile(outs, memory_budget=budget, backend="c")
    got = p.run(feed)
    ev = p._last.evaluator
    assert p.lowered.memory_budget == budget
    assert ev.fallback_reason is not None or ev._arena_bytes <= p.lowered.arena_bytes
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
