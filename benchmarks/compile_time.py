"""CPU time of build_grad + compile on the Figure 6.10 chain, pass by pass, at two lengths, and how it grows.

    python benchmarks/compile_time.py                 # chains of 1,000 and 10,000 ops, median of 5 runs
    python benchmarks/compile_time.py --n 1000 10000 100000 --repeats 3

The chain is benchmarks/models.py's gc_chain (sin and tanh alternating on a (1000,) vector), differentiated
with a constant seed and compiled for [z, dz/dw] exactly as benchmarks/run.py's bench_chain does. Times are
CPU seconds (time.process_time: this machine is shared, wall time is noisy), the median of the runs, per
pass of compiler/pipeline.py (each pass function is wrapped with a timer for the measurement) plus
`program`: what Program does around the passes (feed tables, stats). `growth` is t(larger) / t(smaller):
linear work gives about the ratio of the lengths.
"""

from __future__ import annotations

import argparse
import functools
import gc as pygc
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import numpy as np  # noqa: E402

import graphcompiler as gc  # noqa: E402
from graphcompiler.backends import numpy as runtime  # noqa: E402
from graphcompiler.compiler import pipeline  # noqa: E402
from models import gc_chain  # noqa: E402

SIZE = 1000  # elements of the chain's vector (benchmarks/run.py: CHAIN_SIZE)

# pass name -> the functions of compiler/pipeline.py (and the evaluator's load) whose time it is
PASSES = {
    "prune": [(pipeline, "prune")],
    "simplify": [(pipeline, "simplify")],
    "concretize": [(pipeline, "concretize")],
    "schedule": [(pipeline, "memory_order"), (pipeline, "declared_order"), (pipeline, "is_topological")],
    "plan": [(pipeline, "plan_buffers")],
    "lower": [(pipeline, "lower")],
    "load": [(runtime.NumpyEvaluator, "load")],
}

_spent: dict[str, float] = {}


def _timed(name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            _spent[name] = _spent.get(name, 0.0) + time.process_time() - t

    return wrapper


def install_timers() -> None:
    for name, where in PASSES.items():
        for owner, attr in where:
            setattr(owner, attr, _timed(name, getattr(owner, attr)))


def one_run(n: int) -> dict[str, float]:
    """CPU seconds of each part of build_grad + compile for a chain of n ops."""
    pygc.collect()  # the previous run's graph is garbage in cycles: collected here, not during this run
    g, w, z = gc_chain(n, SIZE)
    seed = g.constant(np.ones(SIZE), name="seed")
    _spent.clear()
    t0 = time.process_time()
    grads = gc.build_grad(z, [w], seed=seed)
    t1 = time.process_time()
    gc.compile([z, grads[w]])
    t2 = time.process_time()
    out = {"build_grad": t1 - t0}
    out.update({p: _spent.get(p, 0.0) for p in PASSES})
    out["program"] = (t2 - t1) - sum(_spent.values())
    out["compile"] = t2 - t1
    out["total"] = t2 - t0
    return out


def measure(n: int, repeats: int) -> dict[str, float]:
    one_run(n)  # warm-up: imports, caches
    runs = [one_run(n) for _ in range(repeats)]
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[1000, 10000], help="chain lengths (ops)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    install_timers()
    results = {n: measure(n, args.repeats) for n in args.n}
    parts = list(next(iter(results.values())))
    head = f"{'part':<12}" + "".join(f"{f'n={n:,}':>12}" for n in args.n)
    growth = [(a, b) for a, b in zip(args.n, args.n[1:])]
    head += "".join(f"{f'growth x{b // a}':>14}" for a, b in growth)
    print(f"CPU seconds, median of {args.repeats} runs (chain of sin/tanh on ({SIZE},), build_grad + compile)")
    print(head)
    for p in parts:
        row = f"{p:<12}" + "".join(f"{results[n][p]:12.3f}" for n in args.n)
        for a, b in growth:
            ra, rb = results[a][p], results[b][p]
            row += f"{rb / ra:14.1f}" if ra > 1e-4 else f"{'-':>14}"
        print(row)


if __name__ == "__main__":
    main()
