"""backend="jax" with sharding= on two simulated CPU devices (a subprocess: XLA_FLAGS must precede jax's import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("jax")

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(r'''
    import json, sys
    import numpy as np
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    sys.path.insert(0, "tests")
    import graphcompiler as gc
    from test_lowered import mlp
    from test_compiler import random_graph
    from hypothesis import given, settings, strategies as st, HealthCheck

    report = {"devices": len(jax.devices())}
    mesh = Mesh(np.array(jax.devices()[:2]), ("batch",))

    def diff(a, b):
        return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)), initial=0.0)) for x, y in zip(a, b))

    # the MLP step: loss and gradients, the batch split over the two devices (Mesh and NamedSharding)
    g, J, grads, (W1, W2), feeds = mlp()
    outs = [J, grads[W1], grads[W2]]
    ref = gc.compile(outs).run(feeds)
    p = gc.compile(outs, backend="jax")
    report["mlp_one_device"] = diff(p.run(feeds), ref)
    report["mlp_mesh"] = diff(p.run(feeds, sharding=mesh), ref)
    report["mlp_named"] = diff(p.run(feeds, sharding=NamedSharding(mesh, P("batch"))), ref)
    kept = p.run(feeds, sharding=mesh, numpy=False)
    report["loss_replicated"] = bool(kept[0].sharding.is_fully_replicated)
    report["grad_replicated"] = bool(kept[1].sharding.is_fully_replicated)

    # a training step with updates on the mesh
    w1 = g.value(W1).copy()
    gc.compile([J], updates={W1: W1 - 0.1 * grads[W1]}, backend="jax").run(feeds, sharding=mesh)
    report["update"] = float(np.max(np.abs(g.value(W1) - (w1 - 0.1 * ref[1]))))

    # an odd batch does not split: a FeedError naming the feed
    try:
        p.run({"x": feeds["x"][:5], "y": feeds["y"][:5]}, sharding=mesh)
        report["odd_batch"] = "no error"
    except gc.FeedError as e:
        report["odd_batch"] = str(e)

    # random graphs (their input b has a None batch dim: it is split)
    worst = []

    @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
    @given(random_graph())
    def check(outputs):
        rng = np.random.default_rng(1)
        fd = {"a": rng.standard_normal((3, 4)) * 0.5, "b": rng.standard_normal((4, 4)) * 0.5}
        try:
            r = gc.compile(outputs).run(fd)
        except gc.GraphCompilerError:
            return
        worst.append(diff(gc.compile(outputs, backend="jax").run(fd, sharding=mesh), r))

    try:
        check()
        report["random_graphs"] = max(worst, default=0.0)
        report["random_graphs_n"] = len(worst)
    except Exception as e:
        report["random_graphs"] = f"{type(e).__name__}: {e}"
    print("REPORT " + json.dumps(report))
''')


@pytest.fixture(scope="module")
def report():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=False,
                          timeout=600)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len("REPORT "):])


def test_two_simulated_devices(report):
    assert report["devices"] == 2


def test_mlp_step_on_two_devices_agrees(report):
    for key in ("mlp_one_device", "mlp_mesh", "mlp_named"):
        assert report[key] < 1e-12, (key, report[key])
    assert report["loss_replicated"] and report["grad_replicated"]      # XLA reduced over the batch


def test_update_on_two_devices(report):
    assert report["update"] < 1e-12


def test_odd_batch_is_a_feed_error(report):
    assert "feed 'x'" in report["odd_batch"] and "2 devices" in report["odd_batch"]


def test_random_graphs_on_two_devices_agree(report):
    assert isinstance(report["random_graphs"], float), report["random_graphs"]
    assert report["random_graphs"] < 1e-10 and report["random_graphs_n"] > 0
