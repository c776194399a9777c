"""The pipeline as functions from data to data (compiler/pipeline.py), and what Program caches of it."""

import gc as pygc
import weakref

import numpy as np

import graphcompiler as gc
from graphcompiler.compiler import pipeline
from test_lowered import Interpreter, mlp


def test_front_then_specialize_gives_a_runnable_lowered_program():
    g, J, grads, (W1, W2), feeds = mlp()
    roots = [J, grads[W1], grads[W2]]
    fr = pipeline.front(g, roots, frozenset(pipeline.PASSES))
    assert not fr.static and fr.stats["removed_simplify"] >= 0
    x, y = g["x"], g["y"]
    sp = pipeline.specialize(fr, {x: feeds["x"].shape, y: feeds["y"].shape}, frozenset(pipeline.PASSES),
                             memory_budget=None, nan_check=False, n_outputs=3, updates=[])
    assert [n.name for n in sp.leaf_nodes] == list(sp.lowered.leaf_names)
    leaves = [feeds[n.name] if n.name in feeds else g.value(n) for n in sp.leaf_nodes]
    got = Interpreter().load(sp.lowered).run(leaves)
    ref = gc.compile(roots).run(feeds)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert len(sp.lowered.steps) == len(sp.plan.order)


def test_a_seen_signature_runs_no_pass(monkeypatch):
    g, J, grads, (W1, W2), feeds = mlp()
    p = gc.compile([J, grads[W1]])
    first = p.run(feeds)

    def no_pass(*a, **k):
        raise AssertionError("a pass ran again for shapes already seen")
    monkeypatch.setattr(pipeline, "specialize", no_pass)
    monkeypatch.setattr(pipeline, "plan_buffers", no_pass)
    for a, b in zip(first, p.run(feeds)):
        np.testing.assert_array_equal(a, b)


def test_an_evicted_specialisation_frees_its_buffers():
    g, J, grads, (W1, W2), feeds = mlp()
    p = gc.compile([J, grads[W1]], cache_size=1)
    p.run(feeds)
    ev = weakref.ref(p._last.evaluator)
    p.run({"x": np.ones((2, 4)), "y": np.array([0, 1])})
    pygc.collect()
    assert ev() is None and len(p._cache) == 1
