"""The jax, dask and cupy backends (API section 12) give the NumPy evaluator's results, with the same errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_compiler import PASS_SETS, d2l_mlp, random_graph
from test_lowered import mlp

import graphcompiler as gc
from graphcompiler.backends.functional import KERNELS, coverage

jax = pytest.importorskip("jax")
da = pytest.importorskip("dask.array")

BACKENDS = ["jax", "dask"]


def close(a, b, dtype="float64"):
    tol = 2e-5 if np.dtype(dtype) == np.float32 else 1e-10
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def computed(results):
    return [r.compute() if hasattr(r, "compute") else r for r in results]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("optimize", [True, False])
def test_mlp_step_agrees(backend, optimize):
    g, J, grads, (W1, W2), feeds = mlp()
    outs = [J, grads[W1], grads[W2]]
    ref = gc.compile(outs, optimize=optimize).run(feeds)
    got = computed(gc.compile(outs, optimize=optimize, backend=backend).run(feeds))
    for a, b in zip(got, ref):
        assert np.asarray(a).shape == b.shape and np.asarray(a).dtype == b.dtype
        close(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_d2l_mlp_keeps_its_dtype(backend, dtype):
    g, J, grads, (W1, W2), feeds = d2l_mlp(dtype, act=gc.sigmoid)
    outs = [J, grads[W1], grads[W2]]
    ref = gc.compile(outs).run(feeds)
    got = computed(gc.compile(outs, backend=backend).run(feeds))
    for a, b in zip(got, ref):
        assert np.asarray(a).dtype == b.dtype == np.dtype(dtype)
        close(a, b, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_updates_are_applied(backend):
    g, J, grads, (W1, W2), feeds = mlp()
    ref_g = gc.compile([grads[W1], grads[W2]]).run(feeds)
    w1, w2 = g.value(W1).copy(), g.value(W2).copy()
    p = gc.compile([J], updates={W1: W1 - 0.1 * grads[W1], W2: W2 - 0.1 * grads[W2]}, backend=backend)
    p.run(feeds)
    close(g.value(W1), w1 - 0.1 * ref_g[0])
    close(g.value(W2), w2 - 0.1 * ref_g[1])
    ref_g2 = gc.compile([grads[W1]]).run(feeds)     # a second step from the updated values
    p.run(feeds)
    close(g.value(W1), w1 - 0.1 * ref_g[0] - 0.1 * ref_g2[0])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graph(), st.sampled_from(PASS_SETS), st.sampled_from(BACKENDS))
def test_random_graphs_agree(outputs, optimize, backend):
    rng = np.random.default_rng(1)
    feeds = {"a": rng.standard_normal((3, 4)) * 0.5, "b": rng.standard_normal((3, 4)) * 0.5}
    ref = gc.compile(outputs, optimize=optimize).run(feeds)
    got = computed(gc.compile(outputs, optimize=optimize, backend=backend).run(feeds))
    for a, b, o in zip(got, ref, outputs):
        assert np.asarray(a).shape == b.shape
        close(a, b, o.dtype)


# -- jax ------------------------------------------------------------------------------------------

def test_jax_float64_without_touching_the_global_config():
    import jax.numpy as jnp
    before = jax.config.jax_enable_x64
    g, J, grads, (W1, W2), feeds = mlp()
    got = gc.compile([J, grads[W1]], backend="jax").run(feeds)
    assert got[1].dtype == np.float64
    ref = gc.compile([J, grads[W1]]).run(feeds)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-13, atol=1e-15)   # float64 accuracy, not float32
    assert jax.config.jax_enable_x64 == before
    if not before:
        assert jnp.ones(3).dtype == jnp.float32        # the user's JAX code elsewhere keeps float32


def test_jax_keeps_device_arrays_when_asked():
    g, J, grads, (W1, W2), feeds = mlp()
    out = gc.compile([J, grads[W1]], backend="jax").run(feeds, numpy=False)
    assert all(isinstance(r, jax.Array) for r in out)
    out = gc.compile([J, grads[W1]], backend="jax").run(feeds)
    assert all(isinstance(r, np.ndarray) and r.flags.writeable for r in out)


def test_jax_random_ops_give_the_numpy_numbers():
    g = gc.Graph("rand")
    k = g.input("k", shape=(2,), dtype="uint32")
    outs = [gc.random.normal(k, (4, 5)), gc.random.uniform(k, (7,), "float32", low=-2, high=3),
            gc.random.normal(k, (6,), "float32")]
    feeds = {"k": gc.random.key(42)}
    ref = gc.compile(outs).run(feeds)
    got = gc.compile(outs, backend="jax").run(feeds)
    np.testing.assert_allclose(got[1], ref[1], rtol=0, atol=5e-7)   # same bits; XLA may fuse the scaling (1 ulp of 3)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-12)     # erfinv: XLA's and SciPy's differ in the last bits
    np.testing.assert_allclose(got[2], ref[2], rtol=1e-5)


def test_jax_sharding_on_one_device_mesh():
    from jax.sharding import Mesh
    g, J, grads, (W1, W2), feeds = mlp()
    outs = [J, grads[W1], grads[W2]]
    ref = gc.compile(outs).run(feeds)
    mesh = Mesh(np.array(jax.devices()[:1]), ("batch",))
    got = gc.compile(outs, backend="jax").run(feeds, sharding=mesh)
    for a, b in zip(got, ref):
        close(a, b)


# -- dask -----------------------------------------------------------------------------------------

def test_dask_is_lazy_and_takes_chunked_feeds():
    g, J, grads, (W1, W2), feeds = mlp()
    outs = [J, grads[W1], grads[W2]]
    ref = gc.compile(outs).run(feeds)
    p = gc.compile(outs, backend="dask")
    lazy = p.run({"x": da.from_array(feeds["x"], chunks=(2, 4)), "y": da.from_array(feeds["y"], chunks=2)})
    assert all(isinstance(r, da.Array) for r in lazy)
    for a, b in zip(lazy, ref):
        close(a.compute(), b)
    done = p.run(feeds, compute=True, chunks=3)
    assert all(isinstance(r, np.ndarray) for r in done)
    for a, b in zip(done, ref):
        close(a, b)


def test_dask_gradient_over_many_chunks_is_a_tree_reduction():
    rng = np.random.default_rng(3)
    g, J, grads, (W1, W2), _ = mlp()
    x = rng.standard_normal((400, 4))
    y = rng.integers(0, 3, 400)
    ref = gc.compile([J, grads[W1]]).run({"x": x, "y": y})
    lazy = gc.compile([J, grads[W1]], backend="dask").run({"x": da.from_array(x, chunks=(25, 4)),
                                                          "y": da.from_array(y, chunks=25)})
    assert lazy[1].numblocks == (1, 1) and len(lazy[1].dask) > 16 * 3    # per-chunk partials, then reduced
    for a, b in zip(lazy, ref):
        close(a.compute(), b)


# -- errors, options, the list of backends ---------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_feeds_are_feed_errors_before_running(backend):
    g, J, grads, (W1, W2), feeds = mlp()
    p = gc.compile([J], backend=backend)
    with pytest.raises(gc.FeedError, match="feed 'x'.*expects shape"):
        p.run(dict(feeds, x=np.zeros((6, 5))))
    with pytest.raises(gc.FeedError, match="feed 'y'.*dtype"):
        p.run(dict(feeds, y=feeds["y"].astype(float)))
    with pytest.raises(gc.FeedError, match="input 'y'"):
        p.run({"x": feeds["x"]})
    if backend == "dask":
        with pytest.raises(gc.FeedError, match="feed 'x'.*expects shape"):
            p.run(dict(feeds, x=da.zeros((6, 5))))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("optimize", [True, False])
def test_a_bad_label_names_the_users_node(backend, optimize):
    g, J, grads, (W1, W2), feeds = mlp()
    bad = dict(feeds, y=np.array([0, 1, 2, 0, 1, 7]))
    p = gc.compile([J, grads[W1]], optimize=optimize, backend=backend)
    with pytest.raises(gc.ExecutionError, match="while computing L = softmax_cross_entropy.*out of range"):
        p.run(bad, **({"compute": True} if backend == "dask" else {}))
    close(computed(p.run(feeds))[0], gc.compile([J]).run(feeds)[0])    # and the program still runs


def test_ops_without_a_functional_kernel_are_refused_by_name():
    assert "inv" not in KERNELS
    for backend in BACKENDS:
        g = gc.Graph("inv")
        x = g.input("x", shape=(3, 3))
        with pytest.raises(gc.GraphCompilerError, match=f"backend '{backend}' has no kernel for op inv.*xinv = inv"):
            gc.compile([gc.linalg.inv(x, name="xinv")], backend=backend).run({"x": np.eye(3)})


def test_run_options_are_checked_per_backend():
    g, J, grads, (W1, W2), feeds = mlp()
    with pytest.raises(gc.GraphCompilerError, match="backend 'numpy' takes no run option 'sharding'"):
        gc.compile([J]).run(feeds, sharding=None)
    with pytest.raises(gc.GraphCompilerError, match="backend 'jax' takes no run option 'compute'.*sharding"):
        gc.compile([J], backend="jax").run(feeds, compute=True)


def test_backends_lists_each_with_why():
    listed = {b["name"]: b for b in gc.backends()}
    assert {"numpy", "c", "jax", "dask", "cupy"} <= set(listed)
    assert listed["numpy"]["available"] and listed["jax"]["available"] and listed["dask"]["available"]
    assert "cpu" in listed["jax"]["why"] or "gpu" in listed["jax"]["why"]
    try:
        import cupy  # noqa: F401
    except ImportError:
        assert not listed["cupy"]["available"] and "cupy is not installed" in listed["cupy"]["why"]


def test_coverage_includes_the_mlp_ops():
    for op in ("matmul", "relu", "softmax_cross_entropy", "pick_mean", "minus_one_hot", "sum", "mean", "add",
               "transpose", "sum_like", "random_normal", "scatter_add"):
        assert op in coverage()


def test_cupy_on_a_gpu():
    ok = {b["name"]: b for b in gc.backends()}["cupy"]
    if not ok["available"]:
        pytest.skip(f"cupy backend: {ok['why']}")
    g, J, grads, (W1, W2), feeds = mlp()
    outs = [J, grads[W1], grads[W2]]
    ref = gc.compile(outs).run(feeds)
    for a, b in zip(gc.compile(outs, backend="cupy").run(feeds), ref):
        close(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_shape_and_random_ops_agree(backend):
    """pad, tile, repeat and their gradients, dropout and bernoulli draws, eye_like: the NumPy evaluator's
    numbers."""
    g = gc.Graph("t")
    x = g.input("x", shape=(None, 3))
    k = g.input("k", shape=(2,), dtype="uint32")
    W = g.parameter("W", np.linspace(-1, 1, 6).reshape(3, 2))
    h = gc.matmul(x, W)
    outs = [gc.pad(h, ((1, 2), (0, 1)), value=0.5), gc.tile(h, (2, 3)), gc.repeat(h, 3, axis=1), gc.tile(W, (2,))]
    t = gc.sum(gc.tile(h, (2, 1)) * 1.5) + gc.sum(gc.repeat(h, 2, axis=0) ** 2) + gc.sum(gc.pad(h, 1) ** 2)
    t = t + gc.sum(gc.dropout(h, 0.3, k) ** 2)
    gr = gc.build_grad(t, [x, W])
    outs += [t, gr[x], gr[W], gc.random.bernoulli(k, 0.3, (20,)), gc.one_hot(gc.astype(x[:, 0] > 0, "int64"), 2)]
    outs.append(gc.matmul(h, gc.transpose(h)) + gc.eye_like(h, 0, k=1))  # sized by the run-time batch
    feeds = {"x": np.random.default_rng(0).standard_normal((4, 3)), "k": gc.random.key(3)}
    ref = gc.compile(outs).run(feeds)
    got = computed(gc.compile(outs, backend=backend).run(feeds))
    for a, b in zip(got, ref):
        assert np.asarray(a).dtype == b.dtype and np.asarray(a).shape == b.shape
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_check_names_the_step(backend):
    g = gc.Graph("nan")
    x = g.input("x", shape=(None, 2))
    s = gc.sum(gc.log(x, name="logx"), name="s")
    p = gc.compile([s], nan_check=True, backend=backend)
    opts = {"compute": True} if backend == "dask" else {}
    close(p.run({"x": np.ones((3, 2))}, **opts)[0], 0.0)
    with pytest.raises(gc.NumericsError, match="while computing logx = log\\(x\\).*NaN"):
        p.run({"x": -np.ones((3, 2))}, **opts)


def test_jax_takes_jax_arrays_as_feeds():
    import jax.numpy as jnp
    g, J, grads, (W1, W2), feeds = mlp()
    ref = gc.compile([J, grads[W1]]).run(feeds)
    with jax.enable_x64(True):
        jfeeds = {"x": jnp.asarray(feeds["x"]), "y": jnp.asarray(feeds["y"])}
    got = gc.compile([J, grads[W1]], backend="jax").run(jfeeds, numpy=False)
    for a, b in zip(got, ref):
        close(np.asarray(a), b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_special_functions_and_reductions_agree(backend):
    """ops-a's functions and reductions, with their gradients, on the functional kernels."""
    g = gc.Graph("special")
    x = g.input("x", shape=(None, 4))
    W = g.parameter("W", np.linspace(0.3, 2.0, 12).reshape(4, 3))
    z = gc.matmul(x, W)
    p = gc.exp(z * 0.1) + 0.5                                          # positive
    terms = [gc.expm1(z * 0.1), gc.tan(z * 0.1), gc.arctan(z), gc.sinh(z * 0.2), gc.cosh(z * 0.2),
             gc.reciprocal(p), gc.logaddexp(z, -z), gc.softplus(z), gc.log_sigmoid(z), gc.erf(z),
             gc.gammaln(p), gc.digamma(p), gc.clip(z, -0.5, 0.7), gc.mod(z, 0.7) * 0.0 + z]
    t = sum((gc.sum(u) for u in terms[1:]), gc.sum(terms[0]))
    t = t + gc.sum(gc.prod(p, axis=1)) + gc.sum(gc.min(z, axis=0)) + gc.sum(gc.var(z, axis=0, ddof=1))
    t = t + gc.sum(gc.std(z, axis=1)) + gc.sum(gc.cumsum(z, axis=1) ** 2)
    gr = gc.build_grad(t, [x, W])
    outs = [t, gr[x], gr[W], gc.argmax(z, axis=1), gc.argmin(z, axis=0), gc.floor(z), gc.ceil(z), gc.round(z),
            gc.mod(z, 0.7)]
    feeds = {"x": np.random.default_rng(2).standard_normal((5, 4))}
    ref = gc.compile(outs).run(feeds)
    got = computed(gc.compile(outs, backend=backend).run(feeds))
    for a, b in zip(got, ref):
        assert np.asarray(a).dtype == b.dtype and np.asarray(a).shape == b.shape
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_bad_computed_label_names_the_users_node(backend):
    """Labels computed inside the program (jax: a checkify check in the jit function; dask: in the tasks)."""
    g, J, grads, (W1, W2), feeds = mlp()
    y = g["y"]
    o = g["o"]
    L2 = gc.softmax_cross_entropy(o, y + 1, name="shifted")
    p = gc.compile([L2], backend=backend)
    opts = {"compute": True} if backend == "dask" else {}
    ok = dict(feeds, y=np.array([0, 1, 0, 0, 1, 1]))
    close(computed(p.run(ok, **opts))[0], gc.compile([L2]).run(ok)[0])
    with pytest.raises(gc.ExecutionError, match="while computing shifted = softmax_cross_entropy.*out of range"):
        p.run(feeds, **opts)


@pytest.mark.parametrize("backend", BACKENDS)
def test_diagonal_and_trace_agree(backend):
    g = gc.Graph("diag")
    x = g.input("x", shape=(None, 3, 4))
    outs = [gc.diagonal(x, 1, 1, 2), gc.diagonal(x, -1, 2, 1), gc.trace(x, 0, 1, 2), gc.diagonal(x, 0, 0, 2)]
    t = gc.sum(gc.diagonal(x, 1, 1, 2) ** 2) + gc.sum(gc.trace(x, -1, 2, 1) * 3.0) + gc.sum(gc.diagonal(x, 0, 0, 1))
    outs += [t, gc.build_grad(t, [x])[x]]
    feeds = {"x": np.random.default_rng(4).standard_normal((2, 3, 4))}
    feeds["x"][0, 0, 3] = np.inf                          # off the diagonals read: must not spread
    ref = gc.compile(outs).run(feeds)
    got = computed(gc.compile(outs, backend=backend).run(feeds))
    for a, b in zip(got, ref):
        assert np.asarray(a).shape == b.shape
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gathers_and_scatter_adds_agree(backend):
    """take (negative indices too), take_along_axis and their scatter-add gradients; a bad index is named."""
    g = gc.Graph("gather")
    x = g.input("x", shape=(None, 5))
    i = g.input("i", shape=(4,), dtype="int64")
    j = g.input("j", shape=(None, 2), dtype="int64")
    t1 = gc.take(x, i, axis=1, name="picked")
    t2 = gc.take_along_axis(x, j, axis=1, name="along")
    t = gc.sum(t1 ** 2) + gc.sum(t2 * 3.0) + gc.sum(gc.take(x, i, axis=0) ** 2)
    outs = [t1, t2, t, gc.build_grad(t, [x])[x]]
    feeds = {"x": np.random.default_rng(5).standard_normal((4, 5)), "i": np.array([0, -1, 3, 3]),
             "j": np.array([[0, 4], [-2, 1], [2, 2], [4, -5]])}
    feeds["x"][1, 2] = np.inf * 0 + 1e300                    # large values must not spread to other entries
    ref = gc.compile(outs).run(feeds)
    p = gc.compile(outs, backend=backend)
    got = computed(p.run(feeds))
    for a, b in zip(got, ref):
        assert np.asarray(a).shape == b.shape
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-12, atol=1e-12)
    opts = {"compute": True} if backend == "dask" else {}
    with pytest.raises(gc.ExecutionError, match="while computing picked = take.*index 5 is out of range"):
        p.run(dict(feeds, i=np.array([0, 5, 1, 1])), **opts)


@pytest.mark.parametrize("backend", BACKENDS)
def test_einsum_agrees(backend):
    g = gc.Graph("ein")
    x = g.input("x", shape=(None, 3))
    W = g.parameter("W", np.linspace(-1, 1, 12).reshape(3, 4))
    z = gc.einsum("bi,ij->bj", x, W)
    t = gc.sum(gc.einsum("bj,bj->b", z, z)) + gc.sum(gc.tensordot(x, W, 1)) + gc.sum(gc.outer(W[0], W[1]))
    outs = [z, t] + [gc.build_grad(t, [x, W])[v] for v in (x, W)]
    feeds = {"x": np.random.default_rng(6).standard_normal((5, 3))}
    ref = gc.compile(outs).run(feeds)
    for a, b in zip(computed(gc.compile(outs, backend=backend).run(feeds)), ref):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_triangle_agrees(backend):
    g = gc.Graph("tri")
    x = g.input("x", shape=(None, 3, 4))
    from graphcompiler.ops.linalg_ops import triangle
    outs = [triangle(x, True, 0.5), triangle(x, False, 1.0), gc.linalg.tril(x)]
    feeds = {"x": np.random.default_rng(7).standard_normal((2, 3, 4))}
    ref = gc.compile(outs).run(feeds)
    for a, b in zip(computed(gc.compile(outs, backend=backend).run(feeds)), ref):
        np.testing.assert_array_equal(np.asarray(a), b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_runs_from_several_threads_agree(backend):
    from concurrent.futures import ThreadPoolExecutor
    g, J, grads, (W1, W2), feeds = mlp()
    outs = [J, grads[W1], grads[W2]]
    ref = gc.compile(outs).run(feeds)
    p = gc.compile(outs, backend=backend)
    rng = np.random.default_rng(9)
    batches = [{"x": rng.standard_normal((6, 4)), "y": rng.integers(0, 3, 6)} for _ in range(8)]
    refs = [gc.compile(outs).run(b) for b in batches]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda b: computed(p.run(b)), batches))
    for gres, rres in zip(got, refs):
        for a, b in zip(gres, rres):
            close(a, b)
    del ref


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graph(), st.sampled_from(PASS_SETS))
def test_functional_kernels_on_numpy_agree_with_the_numpy_evaluator(outputs, optimize):
    """The functional evaluator on NumPy's array API namespace (cheap: many graphs) against the out= evaluator."""
    from graphcompiler.backends.functional import ArrayApiEvaluator
    import graphcompiler.backends as backends
    rng = np.random.default_rng(1)
    feeds = {"a": rng.standard_normal((3, 4)) * 0.5, "b": rng.standard_normal((3, 4)) * 0.5}
    ref = gc.compile(outputs, optimize=optimize).run(feeds)
    backends.BACKENDS["array_api"] = ArrayApiEvaluator
    try:
        got = gc.compile(outputs, optimize=optimize, backend="array_api").run(feeds)
    finally:
        del backends.BACKENDS["array_api"]
    for a, b, o in zip(got, ref, outputs):
        assert a.shape == b.shape and a.dtype == b.dtype
        close(a, b, o.dtype)


def test_a_float32_jax_feed_of_a_float64_graph_is_computed_in_float64():
    import jax.numpy as jnp
    g, J, grads, (W1, W2), feeds = mlp()
    x32 = feeds["x"].astype(np.float32)
    ref = gc.compile([J, grads[W1]]).run(dict(feeds, x=x32))        # NumPy: x32 cast to float64
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = gc.compile([J, grads[W1]], backend="jax").run(dict(feeds, x=jnp.asarray(x32)))
    assert not [w for w in caught if "float64" in str(w.message)]      # no cast silently kept at float32
    assert got[1].dtype == np.float64
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-13, atol=1e-15)
