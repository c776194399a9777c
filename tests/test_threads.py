"""Programs under threads and re-entrancy (issue 17 item 1), and the bounded cache of specialisations (item 5)."""

import sys
import threading
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

import graphcompiler as gc
from graphcompiler.ops.base import Op, apply

THREADS, RUNS = 4, 50


def net(batch=None, d=64, h=128, c=10):
    rng = np.random.default_rng(0)
    g = gc.Graph("net")
    x = g.input("x", shape=(batch, d))
    y = g.input("y", shape=(batch,), dtype="int64")
    W1 = g.parameter("W1", rng.standard_normal((d, h)) * 0.1)
    W2 = g.parameter("W2", rng.standard_normal((h, c)) * 0.1)
    o = gc.matmul(gc.tanh(gc.matmul(x, W1)), W2, name="o")
    J = gc.softmax_cross_entropy(o, y, name="J")
    grads = gc.build_grad(J, [W1, W2])
    return g, x, y, J, grads, (W1, W2)


def batches(n, batch=64, d=64, c=10):
    rng = np.random.default_rng(1)
    return [(rng.standard_normal((batch, d)), rng.integers(0, c, batch)) for _ in range(n)]


def hammer(work, threads=THREADS):
    """Run work(k) in `threads` threads started together, with thread switches as frequent as Python allows."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    errors = []
    start = threading.Barrier(threads)

    def body(k):
        try:
            start.wait()
            work(k)
        except BaseException as e:               # noqa: BLE001  reported below
            errors.append(e)
    try:
        ts = [threading.Thread(target=body, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:
        sys.setswitchinterval(old)
    if errors:
        raise errors[0]


def test_concurrent_runs_each_get_their_own_results():
    g, x, y, J, grads, (W1, W2) = net()
    p = gc.compile([J, grads[W1], grads[W2]])
    data = batches(RUNS)
    ref = [p.run({"x": a, "y": b}) for a, b in data]       # serial reference
    wrong = []

    def work(k):
        for i in range(RUNS):
            j = (i * 7 + k * 13) % RUNS
            got = p.run({"x": data[j][0], "y": data[j][1]})
            if any(not np.array_equal(a, b) for a, b in zip(got, ref[j])):
                wrong.append(j)
    hammer(work)
    assert wrong == [], f"{len(wrong)} of {THREADS * RUNS} concurrent runs returned wrong results"
    assert p._last.evaluator.arenas >= 1


def test_concurrent_runs_with_updates_take_turns():
    g = gc.Graph("counter")
    x = g.input("x", shape=(None, 64))
    eps = g.input("eps", shape=())                          # fed 0.0: exact, and not folded away
    count = g.parameter("count", np.zeros(()))
    W = g.parameter("W", np.random.default_rng(0).standard_normal((64, 128)))
    seen = gc.add(count, eps, name="seen")                  # the counter read first
    big = gc.sum(gc.tanh(gc.matmul(x * (1.0 + seen * eps), W)))   # then work (BLAS releases the GIL)
    p = gc.compile([seen], updates={count: seen + 1.0 + eps * big})
    X = np.ones((64, 64)) * 1e-3
    got = []

    def work(k):
        for _ in range(RUNS):
            got.append(float(p.run({"x": X, "eps": 0.0})[0]))
    hammer(work)
    assert float(g.value(count)) == THREADS * RUNS          # every update applied exactly once
    assert sorted(got) == [float(k) for k in range(THREADS * RUNS)]   # each run saw the one before it


@dataclass(frozen=True)
class Reenter(Op):
    """A test op whose kernel runs a program again (once per thread), then passes its input through."""

    arity: ClassVar[int] = 1
    program: ClassVar[list] = []
    feeds: ClassVar[list] = []
    inner: ClassVar[list] = []

    def infer(self, x):
        return x.shape, x.dtype

    def kernel(self, x):
        if Reenter.program and not Reenter.inner:
            Reenter.inner.append(None)                     # the inner run does not run it again
            Reenter.inner[0] = Reenter.program[0].run(Reenter.feeds[0])
        return x.copy()


Reenter.name = "reenter"            # set after the class body: not added to the op table graph files may name


def test_a_kernel_may_run_the_program_again():
    g, x, y, J, grads, (W1, W2) = net()
    h = gc.tanh(gc.matmul(x, W1))
    out = gc.matmul(apply(Reenter(), (h,)), W2, name="out")
    total = gc.sum(gc.tanh(out) * 2.0, name="total")
    p = gc.compile([total, out])
    (a, _), (b, _) = batches(2)
    ref_a, ref_b = p.run({"x": a}), p.run({"x": b})
    Reenter.program[:] = [p]
    Reenter.feeds[:] = [{"x": b}]
    Reenter.inner.clear()
    try:
        got = p.run({"x": a})
    finally:
        Reenter.program.clear()
    assert len(Reenter.inner) == 1
    for r, e in zip(got, ref_a):
        np.testing.assert_array_equal(r, e)
    for r, e in zip(Reenter.inner[0], ref_b):
        np.testing.assert_array_equal(r, e)


def test_the_cache_of_specialisations_is_bounded():
    g, x, y, J, grads, (W1, W2) = net(d=4, h=3, c=2)
    p = gc.compile([J, grads[W1]])
    rng = np.random.default_rng(0)
    kept = []
    for batch in range(1, 601):
        X, Y = rng.standard_normal((batch, 4)), rng.integers(0, 2, batch)
        p.run({"x": X, "y": Y})
        kept.append(len(p._cache))
    assert max(kept) == 32 and len(p._cache) == 32            # the documented default
    assert list(p._cache)[-1] == ((600, 4), (600,))           # the most recent signatures stay
    small = gc.compile([J], cache_size=2)
    feeds = [{"x": np.ones((b, 4)), "y": np.zeros(b, np.int64)} for b in (1, 2, 3)]
    first = [small.run(f)[0] for f in feeds]
    assert len(small._cache) == 2
    small.run(feeds[1])                                        # used: moved to the recent end
    small.run(feeds[0])                                        # evicts the signature of feeds[2]
    assert ((2, 4), (2,)) in small._cache and ((3, 4), (3,)) not in small._cache
    for f, e in zip(feeds, first):                             # an evicted signature is made again, correctly
        np.testing.assert_array_equal(small.run(f)[0], e)
    with pytest.raises(gc.GraphCompilerError, match="cache_size"):
        gc.compile([J], cache_size=0)


def test_concurrent_runs_of_a_program_run_in_the_loop():
    """A program longer than CODEGEN_LIMIT runs in the loop evaluator: each runner has its own buffers too."""
    from graphcompiler.backends.numpy import CODEGEN_LIMIT
    g = gc.Graph("long")
    x = g.input("x", shape=(None, 32))
    z = x
    for k in range(CODEGEN_LIMIT // 2 + 10):
        z = gc.sin(z) * 1.5 if k % 2 else gc.tanh(z) + 0.5
    p = gc.compile([z, gc.sum(z)])
    data = [np.random.default_rng(k).standard_normal((16, 32)) for k in range(8)]
    ref = [p.run({"x": a}) for a in data]
    assert len(p._last.steps) > CODEGEN_LIMIT
    wrong = []

    def work(k):
        for i in range(6):
            j = (i + 3 * k) % len(data)
            got = p.run({"x": data[j]})
            if any(not np.array_equal(a, b) for a, b in zip(got, ref[j])):
                wrong.append(j)
    hammer(work)
    assert wrong == []


def test_concurrent_fast_path_runs_alternating_shapes():
    """Runs fed NumPy arrays like the run before take the fast path: from several threads, with each
    thread alternating batch sizes (so the last specialisation changes under the others), every run still
    gets its own right results, and every update is applied exactly once."""
    g = gc.Graph("fast")
    x = g.input("x", shape=(None, 64))
    eps = g.input("eps", shape=())
    count = g.parameter("count", np.zeros(()))
    W = g.parameter("W", np.random.default_rng(0).standard_normal((64, 32)))
    seen = gc.add(count, eps, name="seen")
    out = gc.tanh(gc.matmul(x, W), name="out")
    p = gc.compile([seen, out], updates={count: seen + 1.0})
    infer = gc.compile([out])
    rng = np.random.default_rng(3)
    data = [rng.standard_normal((n, 64)) for n in (8, 8, 16, 16, 16, 8, 32, 32)]
    ref = [np.tanh(a @ g.value(W)) for a in data]
    zero = np.zeros(())
    got, wrong = [], []

    def work(k):
        for i in range(RUNS):
            j = (i + k) % len(data)
            s, o = p.run({"x": data[j], "eps": zero})
            got.append(float(s))
            (o2,) = infer.run({"x": data[j]})
            if not (np.allclose(o, ref[j], rtol=1e-12) and np.allclose(o2, ref[j], rtol=1e-12)):
                wrong.append(j)
    hammer(work)
    assert wrong == []
    assert float(g.value(count)) == THREADS * RUNS
    assert sorted(got) == [float(k) for k in range(THREADS * RUNS)]
