"""The full-batch loss and gradient of an MLP over data on disk larger than the workers' memory, on dask.

Writes a memory-mapped float32 .npy of ROWS x D (default 6M x 128: 3.1 GB; --quick: 400k rows) and its labels,
then, on a distributed LocalCluster of 2 worker processes with a memory limit each smaller than the data
(600 MB by default), computes J = mean cross-entropy + lambda/2 |W|^2 and dJ/dW1, dJ/dW2 with backend="dask":
each chunk is loaded by its own task (np.load with mmap_mode), so nothing holds the whole data set.

Reports: peak resident memory per worker (psutil's rss sampled every 10 ms in each worker during the run),
wall time and rows/s
against the NumPy evaluator on a slice that fits (in memory), the NumPy evaluator streamed chunk by chunk
over the same file as the reference, and the agreement of the results. The data files are deleted at the end.
On a shared 2-core machine the times are noisy; the memory figures and the agreement are the point.

    python benchmarks/out_of_core.py [--quick] [--rows N] [--chunk N] [--memory-limit 600MB]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import graphcompiler as gc

LAMBDA = 1e-3


def model(d: int, hidden: int, classes: int):
    rng = np.random.default_rng(0)
    g = gc.Graph("out_of_core")
    x = g.input("x", shape=(None, d), dtype="float32")
    y = g.input("y", shape=(None,), dtype="int64")
    W1 = g.parameter("W1", (rng.standard_normal((d, hidden)) / np.sqrt(d)).astype("float32"))
    W2 = g.parameter("W2", (rng.standard_normal((hidden, classes)) / np.sqrt(hidden)).astype("float32"))
    h = gc.relu(gc.matmul(x, W1, name="z"), name="h")
    L = gc.softmax_cross_entropy(gc.matmul(h, W2, name="o"), y, name="L")
    J = gc.add(L, np.float32(LAMBDA / 2) * (gc.sum(W1 * W1) + gc.sum(W2 * W2)), name="J")
    gJ = gc.build_grad(J, [W1, W2])
    gL = gc.build_grad(L, [W1, W2])
    return g, (W1, W2), [J, gJ[W1], gJ[W2]], [L, gL[W1], gL[W2]]


def write_data(folder: Path, rows: int, d: int, classes: int, chunk: int) -> tuple[Path, Path]:
    xp, yp = folder / "x.npy", folder / "y.npy"
    X = np.lib.format.open_memmap(xp, mode="w+", dtype=np.float32, shape=(rows, d))
    Y = np.lib.format.open_memmap(yp, mode="w+", dtype=np.int64, shape=(rows,))
    rng = np.random.default_rng(1)
    teacher = rng.standard_normal((d, classes)).astype(np.float32)
    for a in range(0, rows, chunk):
        b = min(rows, a + chunk)
        block = rng.standard_normal((b - a, d), dtype=np.float32)
        X[a:b] = block
        Y[a:b] = np.argmax(block @ teacher, axis=1)
    X.flush()
    Y.flush()
    del X, Y
    return xp, yp


def load_rows(path: str, a: int, b: int) -> np.ndarray:
    return np.array(np.load(path, mmap_mode="r")[a:b])


def dask_feeds(xp: Path, yp: Path, rows: int, d: int, chunk: int):
    import dask
    import dask.array as da
    xs, ys = [], []
    for a in range(0, rows, chunk):
        b = min(rows, a + chunk)
        xs.append(da.from_delayed(dask.delayed(load_rows)(str(xp), a, b), (b - a, d), np.float32))
        ys.append(da.from_delayed(dask.delayed(load_rows)(str(yp), a, b), (b - a,), np.int64))
    return {"x": da.concatenate(xs), "y": da.concatenate(ys)}


def start_sampler(dask_worker, period: float = 0.01) -> bool:
    """On a worker: sample this process's resident memory every `period` s in a thread, keeping the peak.

    (ru_maxrss would not do: a forked worker inherits its parent's peak.)"""
    import threading

    import psutil
    proc = psutil.Process()
    _PEAK = dask_worker._gc_peak = {"peak": proc.memory_info().rss, "stop": False}   # kept on the worker

    def loop():
        while not _PEAK["stop"]:
            _PEAK["peak"] = max(_PEAK["peak"], proc.memory_info().rss)
            time.sleep(period)
    threading.Thread(target=loop, daemon=True).start()
    return True


def stop_sampler(dask_worker) -> dict:
    import psutil
    _PEAK = dask_worker._gc_peak
    _PEAK["stop"] = True
    return {"peak_rss_mb": _PEAK["peak"] / 2**20, "rss_mb": psutil.Process().memory_info().rss / 2**20}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="400k rows (200 MB) instead of 6M (3.1 GB)")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--chunk", type=int, default=100_000, help="rows per chunk (51 MB of x at d=128)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--memory-limit", default="600MB", help="per worker")
    ap.add_argument("--slice", type=int, default=400_000, help="rows of the in-memory NumPy comparison")
    ap.add_argument("--dir", default=None, help="where to write the data (default: a temporary folder)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    rows = args.rows or (400_000 if args.quick else 6_000_000)
    from dask.distributed import Client, LocalCluster

    folder = Path(tempfile.mkdtemp(prefix="gc_ooc_", dir=args.dir))
    out: dict = {"rows": rows, "d": args.d, "hidden": args.hidden, "classes": args.classes, "chunk": args.chunk,
                 "workers": args.workers, "memory_limit": args.memory_limit}
    try:
        t = time.perf_counter()
        xp, yp = write_data(folder, rows, args.d, args.classes, args.chunk)
        out["data_bytes"] = xp.stat().st_size + yp.stat().st_size
        out["write_s"] = time.perf_counter() - t
        print(f"wrote {out['data_bytes'] / 2**30:.2f} GiB in {out['write_s']:.1f} s to {folder}", flush=True)

        g, params, J_outs, L_outs = model(args.d, args.hidden, args.classes)
        W = [g.value(p).copy() for p in params]

        # the NumPy evaluator on a slice that fits in memory
        n = min(args.slice, rows)
        Xs, Ys = load_rows(str(xp), 0, n), load_rows(str(yp), 0, n)
        p_np = gc.compile(J_outs)
        p_np.run({"x": Xs[:1000], "y": Ys[:1000]})
        t = time.perf_counter()
        ref_slice = p_np.run({"x": Xs, "y": Ys})
        out["numpy_slice_s"] = time.perf_counter() - t
        out["numpy_rows_per_s"] = n / out["numpy_slice_s"]

        # the reference over the whole file: the NumPy evaluator streamed chunk by chunk (a weighted mean)
        p_L = gc.compile(L_outs)
        t = time.perf_counter()
        acc = [0.0, 0.0, 0.0]
        for a in range(0, rows, args.chunk):
            b = min(rows, a + args.chunk)
            r = p_L.run({"x": load_rows(str(xp), a, b), "y": load_rows(str(yp), a, b)})
            acc = [s + np.asarray(v, np.float64) * (b - a) / rows for s, v in zip(acc, r)]
        reg = LAMBDA / 2 * sum(float(np.sum(w.astype(np.float64) ** 2)) for w in W)
        ref_full = [acc[0] + reg, acc[1] + LAMBDA * W[0], acc[2] + LAMBDA * W[1]]
        out["numpy_streamed_s"] = time.perf_counter() - t

        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                          memory_limit=args.memory_limit, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            p_dask = gc.compile(J_outs, backend="dask")
            # the slice on dask: agreement with the in-memory NumPy run
            got = p_dask.run(dask_feeds(xp, yp, n, args.d, args.chunk) if n == rows else
                             {k: v[:n] for k, v in dask_feeds(xp, yp, rows, args.d, args.chunk).items()},
                             compute=True)
            out["slice_max_rel_diff"] = max(float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))
                                            for a, b in zip(got, ref_slice))
            client.run(start_sampler)
            t = time.perf_counter()
            full = p_dask.run(dask_feeds(xp, yp, rows, args.d, args.chunk), compute=True)
            out["dask_full_s"] = time.perf_counter() - t
            out["dask_rows_per_s"] = rows / out["dask_full_s"]
            mem = client.run(stop_sampler)
            out["workers"] = list(mem.values())
            out["worker_peak_rss_mb"] = max(m["peak_rss_mb"] for m in mem.values())
        out["full_max_rel_diff"] = max(float(np.max(np.abs(np.asarray(a, np.float64) - b)) /
                                             max(float(np.max(np.abs(b))), 1e-30)) for a, b in zip(full, ref_full))
        out["loss"] = float(full[0])
        out["client_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # the driver
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        out["deleted"] = not folder.exists()
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
