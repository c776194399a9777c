"""The memory plan: memory_report, the schedule's lower peak, and memory_budget met by recomputation
(equation 6.53) with results identical to the unbudgeted program."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

import graphcompiler as gc


def tanh_net(layers=6, width=16, batch=64, dtype="float64", seed=0):
    rng = np.random.default_rng(seed)
    g = gc.Graph("tanh_net")
    x = g.input("x", shape=(None, width), dtype=dtype)
    y = g.input("y", shape=(None,), dtype="int64")
    Ws = [g.parameter(f"W{k}", (rng.standard_normal((width, width)) / np.sqrt(width)).astype(dtype))
          for k in range(layers)]
    h = x
    for k, W in enumerate(Ws):
        h = gc.matmul(h, W, name=f"z{k}")
        if k < layers - 1:
            h = gc.tanh(h, name=f"h{k}")
    J = gc.add(gc.softmax_cross_entropy(h, y), 1e-3 * sum(gc.sum(W * W) for W in Ws), name="J")
    grads = gc.build_grad(J, Ws)
    feeds = {"x": rng.standard_normal((batch, width)).astype(dtype), "y": rng.integers(0, width, batch)}
    return g, [J, *[grads[W] for W in Ws]], feeds


def run(outputs, feeds, **kw):
    p = gc.compile(outputs, **kw)
    return p, p.run(feeds)


def test_report_table_and_plot(tmp_path):
    g, outs, feeds = tanh_net()
    p, _ = run(outs, feeds)
    rep = p.memory_report()
    text = str(rep)
    assert rep.peak_bytes == p.stats["peak_bytes"]
    assert rep.rows and rep.peak_node in text
    assert "buf 0" in text and "kept for backward" in text
    kept = {r.name: r.kept_for for r in rep.kept_for_backward}
    assert "h0" in kept and kept["h0"]                       # a hidden layer is read by its gradient steps
    assert {r.phase for r in rep.rows} == {"forward", "backward"}
    for r in rep.rows:
        assert r.first <= r.last
    assert rep.declared_peak_bytes is not None and rep.peak_bytes <= rep.declared_peak_bytes
    path = rep.plot(tmp_path / "memory.png")
    assert (tmp_path / "memory.png").stat().st_size > 1000 and path.endswith(".png")


def test_report_needs_a_run_when_shapes_are_unknown():
    g, outs, feeds = tanh_net()
    p = gc.compile(outs)
    with pytest.raises(gc.GraphCompilerError, match="run it once"):
        p.memory_report()


def test_planned_peak_matches_tracemalloc():
    import tracemalloc
    g, outs, feeds = tanh_net(layers=8, width=64, batch=512)
    p, _ = run(outs, feeds)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        res = p.run(feeds)
        measured = tracemalloc.get_traced_memory()[1] - base + p.stats["resident_bytes"]
        del res
    finally:
        tracemalloc.stop()
    assert abs(measured - p.stats["peak_bytes"]) <= 0.1 * measured


def test_training_needs_more_memory_than_inference():
    g, outs, feeds = tanh_net()
    train, _ = run(outs, feeds)
    infer, _ = run(outs[:1], feeds)
    assert infer.stats["peak_bytes"] < train.stats["peak_bytes"]
    assert not infer.kept_for_backward() and train.kept_for_backward()


@pytest.mark.parametrize("fraction", [0.7, 0.85])
def test_budget_is_met_with_identical_results(fraction):
    g, outs, feeds = tanh_net(layers=10, width=32, batch=256)
    free, ref = run(outs, feeds)
    out_bytes = sum(a.nbytes for a in ref)
    budget = out_bytes + int(fraction * (free.stats["peak_bytes"] - out_bytes))
    tight, got = run(outs, feeds, memory_budget=budget)
    assert tight.stats["peak_bytes"] <= budget < free.stats["peak_bytes"]
    assert tight.stats["recomputed"] > 0 and tight.stats["recompute_flops"] > 0
    assert tight.stats["unbudgeted_peak_bytes"] == free.stats["peak_bytes"]
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)                  # the same kernels on the same inputs
    steps = tight.schedule
    assert any(s.recomputed for s in steps)
    # recomputed steps run late: in the backward pass (after the forward pass's last matmul, z9), and
    # after the step they repeat
    at = {s.node.name: k for k, s in enumerate(steps) if not s.recomputed}
    for k, s in enumerate(steps):
        if s.recomputed:
            assert k > at["z9"]
            original = s.node.name.split("'")[0]
            assert original not in at or at[original] < k
    rep = tight.memory_report()
    assert rep.recomputed == tight.stats["recomputed"] and "recomputed" in {r.phase for r in rep.rows}


def test_budget_that_cannot_be_met_names_the_smallest():
    g, outs, feeds = tanh_net()
    p = gc.compile(outs, memory_budget=10)
    with pytest.raises(gc.GraphCompilerError, match=r"memory_budget=(\d+) or more") as info:
        p.run(feeds)
    import re
    smallest = int(re.search(r"memory_budget=(\d+) or more", str(info.value)).group(1))
    ok, _ = run(outs, feeds, memory_budget=smallest)
    assert ok.stats["peak_bytes"] <= smallest


def test_chain_budget_recomputes_about_one_forward_pass():
    """Figure 6.10's chain with a budget near the square root: Chen et al.'s checkpointing."""
    n, size = 400, 32
    g = gc.Graph("chain")
    w = g.input("w", shape=(size,))
    z = w
    for k in range(n):
        z = (gc.sin if k % 2 == 0 else gc.tanh)(z)
    total = gc.sum(z)
    grads = gc.build_grad(total, [w])
    feeds = {"w": np.linspace(-1, 1, size)}
    free, ref = run([total, grads[w]], feeds)
    budget = (2 + 3 * int(np.sqrt(n))) * size * 8          # about 3 sqrt(n) values of the chain
    assert budget < free.stats["peak_bytes"] / 2
    tight, got = run([total, grads[w]], feeds, memory_budget=budget)
    assert tight.stats["peak_bytes"] <= budget
    assert tight.stats["recompute_flops"] <= 1.3 * tight.stats["forward_flops"]
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)


def test_budget_must_be_bytes():
    g, outs, feeds = tanh_net()
    with pytest.raises(gc.GraphCompilerError, match="memory_budget"):
        gc.compile(outs, memory_budget=-5)


@given(st.integers(2, 6), st.integers(0, 3), st.sampled_from([0.5, 0.7, 0.9]))
def test_random_nets_identical_under_budgets(layers, seed, fraction):
    g, outs, feeds = tanh_net(layers=layers, width=8, batch=32, seed=seed)
    free, ref = run(outs, feeds)
    budget = int(fraction * free.stats["peak_bytes"])
    p = gc.compile(outs, memory_budget=budget)
    try:
        got = p.run(feeds)
    except gc.GraphCompilerError as e:
        assert "cannot be met" in str(e)
        return
    assert p.stats["peak_bytes"] <= budget
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)
