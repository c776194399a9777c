"""Step time of the JAX backend against the NumPy evaluator on the medium and large MLPs of benchmarks/run.py.

One training step: J and an SGD update of every weight (updates donated on "jax"), float32, relu. Reports
median and minimum over repeats, after a warm-up (the first call traces and compiles). Noisy on a shared
machine: quote the minimums.

    python benchmarks/jax_vs_numpy.py [--repeats 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import data, gc_net
from run import MLP_SIZES

import graphcompiler as gc


def step_times(backend: str, batch: int, sizes: tuple, repeats: int) -> dict:
    _g, J, Ws = gc_net(sizes, "relu", batch=None)
    grads = gc.build_grad(J, Ws)
    p = gc.compile([J], updates={W: W - 0.01 * grads[W] for W in Ws}, backend=backend)
    X, Y = data(batch, sizes[0], sizes[-1], "float32")
    feeds = {"x": X, "y": Y}
    t = time.perf_counter()
    p.run(feeds)
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        p.run(feeds)
        times.append(time.perf_counter() - t)
    return {"first_s": first, "median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    out = {}
    for name in ("medium", "large"):
        batch, sizes = MLP_SIZES[name]
        row = {"batch": batch, "sizes": sizes}
        for backend in ("numpy", "jax"):
            row[backend] = step_times(backend, batch, sizes, args.repeats)
        row["jax_speedup_min"] = row["numpy"]["min_ms"] / row["jax"]["min_ms"]
        out[name] = row
        print(f"MLP {name} (batch {batch}, {sizes}): numpy min {row['numpy']['min_ms']:.2f} ms "
              f"(median {row['numpy']['median_ms']:.2f}), jax min {row['jax']['min_ms']:.2f} ms "
              f"(median {row['jax']['median_ms']:.2f}; first call {row['jax']['first_s']:.2f} s)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
