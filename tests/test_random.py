"""gc.random: the Threefry-2x32 generator against its published known answers (and JAX), keys as pure
inputs (same key, same numbers; different keys never merged), the distributions' statistics, dropout,
gradients through reparameterised draws, a key advanced by updates, and files, pictures and export."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import graphcompiler as gc
from graphcompiler.ops.random import random_bits, split_keys, threefry2x32
from gradcheck import check_gradients
from test_io import assert_same_graph

# Random123's known-answer vectors for threefry2x32_20 (kat_vectors): (key, counter) -> output
KAT = [((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
       ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
       ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0))]


@pytest.mark.parametrize("key, ctr, expected", KAT)
def test_threefry_known_answers(key, ctr, expected):
    a, b = threefry2x32(np.array(key, np.uint32), np.array([ctr[0]]), np.array([ctr[1]]))
    assert (int(a[0]), int(b[0])) == expected


def test_threefry_is_vectorised_elementwise():
    key = gc.random.key(7)
    x0, x1 = np.arange(5, dtype=np.uint32) * 977, np.arange(5, dtype=np.uint32) + 2**31
    a, b = threefry2x32(key, x0, x1)
    for k in range(5):
        a1, b1 = threefry2x32(key, x0[k:k + 1], x1[k:k + 1])
        assert (a1[0], b1[0]) == (a[k], b[k])


def test_keys_from_seeds():
    np.testing.assert_array_equal(gc.random.key(0), [0, 0])
    np.testing.assert_array_equal(gc.random.key(42), [0, 42])
    np.testing.assert_array_equal(gc.random.key(2**32 + 5), [1, 5])
    np.testing.assert_array_equal(gc.random.key(-1), [2**32 - 1, 2**32 - 1])
    assert gc.random.key(3).dtype == np.uint32 and gc.random.key(3).shape == (2,)
    with pytest.raises(gc.DTypeError):
        gc.random.key(1.5)


def _draw(build, seed=0, feeds=None, optimize=True):
    g = gc.Graph()
    key = g.input("key", shape=(2,), dtype="uint32")
    outs = build(g, key)
    outs = outs if isinstance(outs, list) else [outs]
    return gc.compile(outs, optimize=optimize).run({"key": gc.random.key(seed), **(feeds or {})})


def test_same_key_same_numbers_across_programs_and_optimisation():
    def build(g, k):
        return [gc.random.normal(k, (3, 4)), gc.random.uniform(k, (5,), low=-1, high=2),
                gc.random.bernoulli(k, 0.3, (6,))]
    a, b = _draw(build, 1), _draw(build, 1, optimize=False)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    c = _draw(build, 2)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])


def test_different_keys_in_one_program_never_merge():
    def build(g, key):
        k1, k2 = gc.random.split(key, 2)
        return [gc.random.normal(k1, (4,)), gc.random.normal(k2, (4,)), gc.random.normal(k1, (4,)),
                gc.random.normal(key, (4,))]
    g = gc.Graph()
    key = g.input("key", shape=(2,), dtype="uint32")
    outs = build(g, key)
    prog = gc.compile(outs)
    a, b, a2, c = prog.run({"key": gc.random.key(0)})
    assert not np.allclose(a, b) and not np.allclose(a, c) and not np.allclose(b, c)
    np.testing.assert_array_equal(a, a2)                   # the same key node and shape: the same value
    assert sum(1 for s in prog.schedule if s.op == "random_normal") == 3   # CSE merged only the equal pair


def test_split_gives_n_distinct_keys_as_nodes():
    g = gc.Graph()
    key = g.input("key", shape=(2,), dtype="uint32")
    ks = gc.random.split(key, 4)
    assert len(ks) == 4 and all(k.shape == (2,) and k.dtype == np.uint32 for k in ks)
    vals = gc.compile(ks).run({"key": gc.random.key(9)})
    np.testing.assert_array_equal(np.stack(vals), split_keys(gc.random.key(9), 4))
    assert len({tuple(v) for v in vals}) == 4


@pytest.fixture
def jax64():
    """JAX with float64 and its partitionable Threefry layout, restored afterwards."""
    jax = pytest.importorskip("jax")
    old = jax.config.jax_enable_x64, jax.config.jax_threefry_partitionable
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_threefry_partitionable", True)
    yield jax
    jax.config.update("jax_enable_x64", old[0])
    jax.config.update("jax_threefry_partitionable", old[1])


def test_matches_jax_bit_for_bit(jax64):
    jax = jax64
    import jax.numpy as jnp
    for seed in [42, 2**40 + 7]:
        jk = jax.random.PRNGKey(seed)
        key = gc.random.key(seed)
        np.testing.assert_array_equal(np.asarray(jax.random.key_data(jk)), key)
        np.testing.assert_array_equal(np.asarray(jax.random.split(jk, 5)), split_keys(key, 5))
        np.testing.assert_array_equal(np.asarray(jax.random.bits(jk, (9,), dtype=jnp.uint32)),
                                      random_bits(key, (9,), 32))
        np.testing.assert_array_equal(np.asarray(jax.random.bits(jk, (2, 3), dtype=jnp.uint64)),
                                      random_bits(key, (2, 3), 64))
        out = _draw(lambda g, k: [gc.random.uniform(k, (3, 7)), gc.random.uniform(k, (11,), "float32"),
                                  gc.random.uniform(k, (6,), low=-2, high=3),
                                  gc.random.normal(k, (4, 5)), gc.random.normal(k, (50,), "float32"),
                                  gc.random.bernoulli(k, 0.3, (50,))], seed)
        np.testing.assert_array_equal(out[0], jax.random.uniform(jk, (3, 7), dtype=jnp.float64))
        np.testing.assert_array_equal(out[1], jax.random.uniform(jk, (11,), dtype=jnp.float32))
        np.testing.assert_allclose(out[2], jax.random.uniform(jk, (6,), jnp.float64, -2, 3), rtol=0, atol=1e-15)
        np.testing.assert_allclose(out[3], jax.random.normal(jk, (4, 5), dtype=jnp.float64), rtol=0, atol=1e-13)
        np.testing.assert_allclose(out[4], jax.random.normal(jk, (50,), dtype=jnp.float32), rtol=0, atol=1e-5)
        np.testing.assert_array_equal(out[5], jax.random.bernoulli(jk, jnp.float64(0.3), (50,)))


# -- statistics (fixed keys: deterministic, so a pass is a pass every time) -----------------------

N = 200_000


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_uniform_statistics(seed):
    u, u32 = _draw(lambda g, k: [gc.random.uniform(k, (N,), low=-2.0, high=3.0),
                                 gc.random.uniform(k, (N,), "float32")], seed)
    assert u.dtype == np.float64 and u32.dtype == np.float32
    assert u.min() >= -2.0 and u.max() < 3.0 and u32.min() >= 0 and u32.max() < 1
    assert abs(u.mean() - 0.5) < 4 * 5 / np.sqrt(12 * N)
    assert abs(u.var() - 25 / 12) < 0.02
    assert stats.kstest(u, stats.uniform(-2, 5).cdf).pvalue > 1e-3
    hist = np.bincount((u32 * 10).astype(int), minlength=10)
    assert stats.chisquare(hist).pvalue > 1e-3


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_normal_statistics(seed):
    (z,) = _draw(lambda g, k: gc.random.normal(k, (N,)), seed)
    assert abs(z.mean()) < 4 / np.sqrt(N)
    assert abs(z.var() - 1) < 4 * np.sqrt(2 / N)
    assert abs(stats.skew(z)) < 0.03 and abs(stats.kurtosis(z)) < 0.06
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert np.all(np.isfinite(z))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.93])
def test_bernoulli_frequency(p):
    (b,) = _draw(lambda g, k: gc.random.bernoulli(k, p, (N,)), 3)
    assert b.dtype == bool
    assert abs(b.mean() - p) < 4 * np.sqrt(p * (1 - p) / N)


def test_bernoulli_with_a_node_probability_broadcasts_and_has_no_gradient_to_it():
    g = gc.Graph()
    key = g.input("key", shape=(2,), dtype="uint32")
    p = g.input("p", shape=(3,))
    b = gc.random.bernoulli(key, p, (N // 10, 3))
    (v,) = gc.compile([b]).run({"key": gc.random.key(4), "p": [0.2, 0.5, 0.9]})
    np.testing.assert_allclose(v.mean(axis=0), [0.2, 0.5, 0.9], atol=0.015)
    cost = gc.sum(gc.astype(b, "float64") * p)
    (dp,) = gc.compile([gc.build_grad(cost, [p])[p]]).run({"key": gc.random.key(4), "p": [0.2, 0.5, 0.9]})
    np.testing.assert_array_equal(dp, v.sum(axis=0))        # only the direct path; the draw is flat in p
    bp = gc.random.bernoulli(key, p)                       # shape None: p's shape
    assert bp.shape == (3,)


def test_draws_of_a_run_time_shape():
    g = gc.Graph()
    key = g.input("key", shape=(2,), dtype="uint32")
    x = g.input("x", shape=(None, 3))
    z = gc.random.normal(key, x)
    u = gc.random.uniform(key, x, low=1, high=2)
    assert z.shape == (None, 3)
    a, b = gc.compile([z, u]).run({"key": gc.random.key(0), "x": np.zeros((5, 3))})
    assert a.shape == b.shape == (5, 3)
    (c,) = _draw(lambda g, k: gc.random.normal(k, (5, 3)), 0)
    np.testing.assert_array_equal(a, c)                    # the shape's source does not change the numbers
    x32 = g.input("x32", shape=(None, 2), dtype="float32")
    assert gc.random.normal(key, x32).dtype == np.float32 and gc.random.uniform(key, (2,)).dtype == np.float64
    y = g.input("y", shape=(None,), dtype="int64")
    assert gc.random.normal(key, y).dtype == np.float64
    gy = gc.build_grad(gc.sum(gc.random.normal(key, x) * x), [x])[x]  # x's shape path adds nothing
    X = np.ones((5, 3))
    np.testing.assert_array_equal(gc.compile([gy]).run({"key": gc.random.key(0), "x": X})[0], a)


# -- keys: errors and gradients -----------------------------------------------------------------

def test_a_bad_key_is_named():
    g = gc.Graph()
    fk = g.input("fkey", shape=(2,))
    with pytest.raises(gc.DTypeError, match="fkey"):
        gc.random.normal(fk, (3,))
    sk = g.input("skey", shape=(3,), dtype="uint32")
    with pytest.raises(gc.ShapeError, match="skey"):
        gc.random.uniform(sk, (3,))
    with pytest.raises(gc.ShapeError, match="skey"):
        gc.random.split(sk, 2)
    with pytest.raises(gc.DTypeError, match="ikey"):
        gc.dropout(g.input("x", shape=(3,)), 0.5, g.input("ikey", shape=(2,), dtype="int32"))
    key = g.input("key", shape=(2,), dtype="uint32")
    with pytest.raises(gc.DTypeError, match="float32 or float64"):
        gc.random.normal(key, (2,), "int32")
    with pytest.raises(gc.ShapeError):
        gc.dropout(g.input("x2", shape=(3,)), 1.5, key)


def test_reparameterised_draw_differentiates_in_mu_and_sigma_not_the_key():
    rng = np.random.default_rng(0)
    g = gc.Graph()
    key = g.parameter("key", gc.random.key(11))
    mu = g.input("mu", shape=(3, 2))
    sigma = g.input("sigma", shape=(2,))
    z = mu + sigma * gc.random.normal(key, (3, 2))
    J = gc.sum(gc.tanh(z) * z, name="J")
    check_gradients(g, J, [mu, sigma], {"mu": rng.standard_normal((3, 2)), "sigma": rng.uniform(0.5, 1.5, 2)})
    with pytest.raises(gc.UndefinedGradientError, match="key"):
        gc.build_grad(J, [key])


def test_dropout_mask_gradient_and_rates():
    rng = np.random.default_rng(1)
    g = gc.Graph()
    key = g.parameter("key", gc.random.key(5))
    x = g.input("x", shape=(None, 50))
    y = gc.dropout(x, 0.3, key, name="y")
    X = rng.uniform(1, 2, size=(40, 50))
    (v,) = gc.compile([y]).run({"x": X})
    kept = v != 0
    np.testing.assert_allclose(v[kept], X[kept] / 0.7)
    assert abs(kept.mean() - 0.7) < 4 * np.sqrt(0.21 / 2000)
    gx = gc.build_grad(gc.sum(y * g.constant(np.arange(50.0))), [x])[x]
    (d,) = gc.compile([gx]).run({"x": X})
    np.testing.assert_allclose(d, kept / 0.7 * np.arange(50.0))      # the same mask times g
    g2 = gc.Graph()
    key2 = g2.parameter("key", gc.random.key(5))
    x2 = g2.input("x", shape=(4, 3))
    check_gradients(g2, gc.sum(gc.tanh(gc.dropout(x2, 0.5, key2)) * x2), [x2], {"x": rng.standard_normal((4, 3))})
    assert gc.dropout(x, 0.0, key).op.name == "identity"
    (zero,) = gc.compile([gc.dropout(x, 1.0, key)]).run({"x": X})
    np.testing.assert_array_equal(zero, 0)
    with pytest.raises(gc.UndefinedGradientError):
        gc.build_grad(gc.sum(y), [key])


def test_a_key_parameter_advanced_by_updates_draws_fresh_masks_reproducibly():
    g = gc.Graph()
    key = g.parameter("key", gc.random.key(2024))
    x = g.input("x", shape=(None, 8))
    W = g.parameter("W", np.ones((8, 1)))
    draw_key = gc.random.split(key, 2)[1]
    h = gc.dropout(x, 0.5, draw_key)
    J = gc.mean(h @ W)
    gW = gc.build_grad(J, [W])[W]
    step = gc.compile([h], updates={key: gc.random.next_key(key), W: W - 0.1 * gW})
    X = np.ones((3, 8))
    first = [step.run({"x": X})[0] for _ in range(4)]
    assert len({m.tobytes() for m in first}) == 4           # a fresh mask every step, nothing fed
    expected = gc.random.key(2024)
    for _ in range(4):
        expected = split_keys(expected, 2)[0]
    np.testing.assert_array_equal(g.value(key), expected)   # the key after four steps, computed by hand
    g.set_value(key, gc.random.key(2024))
    again = [step.run({"x": X})[0] for _ in range(4)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)                 # the sequence is reproducible from the seed


def test_saved_graph_draws_the_same_numbers(tmp_path):
    g = gc.Graph("rand")
    key = g.parameter("key", gc.random.key(3))
    x = g.input("x", shape=(4, 3))
    k1, k2 = gc.random.split(key, 2)
    outs = [gc.random.normal(k1, (4, 3)) * x, gc.random.uniform(k2, (3,), "float32", low=-1, high=1),
            gc.random.bernoulli(k1, 0.25, (5,)), gc.dropout(x, 0.4, k2), gc.random.normal(key, x)]
    g.save(tmp_path / "r.json")
    g2 = gc.load(tmp_path / "r.json")
    assert_same_graph(g, g2)
    feeds = {"x": np.ones((4, 3))}
    a = gc.compile(outs).run(feeds)
    b = gc.compile([g2[o.name] for o in outs]).run(feeds)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


RANDOM_OPS = ["random_split", "random_normal", "random_uniform", "random_bernoulli", "dropout_mask"]


@pytest.mark.parametrize("op_name", RANDOM_OPS)
def test_random_ops_draw_and_export(op_name):
    g = gc.Graph()
    key = g.parameter("key", gc.random.key(0))
    x = g.input("x", shape=(3, 2))
    k1, _ = gc.random.split(key, 2)
    y = {"random_split": lambda: gc.astype(gc.random.split(key, 3)[0], "float64"),
         "random_normal": lambda: gc.random.normal(k1, (3, 2)) * x,
         "random_uniform": lambda: gc.random.uniform(key, x) + x,
         "random_bernoulli": lambda: gc.astype(gc.random.bernoulli(key, 0.5, (3, 2)), "float64") * x,
         "dropout_mask": lambda: gc.dropout(x, 0.5, key)}[op_name]()
    assert op_name in {n.op.name for n in g.nodes}
    assert op_name in gc.to_dot(g).source
    for n in g.nodes:
        if n.op.name == op_name:
            assert gc.to_sympy(n) is not None
    gc.to_latex(y)


def test_random_namespace_is_public():
    for name in ["key", "split", "next_key", "normal", "uniform", "bernoulli"]:
        assert callable(getattr(gc.random, name))
    assert callable(gc.dropout)
