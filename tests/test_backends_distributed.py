"""backend="dask" on a dask.distributed LocalCluster of two worker processes (slower; still in make test).

A file of its own: the cluster's Client is the default scheduler while it lives, so it lives only here.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import graphcompiler as gc
from test_compiler import PASS_SETS, random_graph
from test_lowered import mlp

pytest.importorskip("dask.array")


def close(a, b, dtype="float64"):
    tol = 2e-5 if np.dtype(dtype) == np.float32 else 1e-10
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                  memory_limit="500MB") as cluster, distributed.Client(cluster) as client:
        yield client


@pytest.mark.slow
def test_dask_on_a_distributed_local_cluster(dask_client):
    g, J, grads, (W1, W2), feeds = mlp()
    outs = [J, grads[W1], grads[W2]]
    ref = gc.compile(outs).run(feeds)
    assert any(b["name"] == "dask" and "client" in b["why"] for b in gc.backends())
    got = gc.compile(outs, backend="dask").run(feeds, compute=True, chunks=2)
    for a, b in zip(got, ref):
        close(a, b)
    assert len(dask_client.scheduler_info()["workers"]) == 2
    processed = dask_client.run(lambda dask_worker: len(dask_worker.state.log))
    assert sum(processed.values()) > 0                       # the cluster's worker processes ran the tasks


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(random_graph(), st.sampled_from(PASS_SETS))
def test_random_graphs_agree_on_a_distributed_local_cluster(dask_client, outputs, optimize):
    rng = np.random.default_rng(1)
    feeds = {"a": rng.standard_normal((3, 4)) * 0.5, "b": rng.standard_normal((3, 4)) * 0.5}
    ref = gc.compile(outputs, optimize=optimize).run(feeds)
    got = gc.compile(outputs, optimize=optimize, backend="dask").run(feeds, compute=True, chunks=1)
    for a, b, o in zip(got, ref, outputs):
        assert a.shape == b.shape
        close(a, b, o.dtype)
