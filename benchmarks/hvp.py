"""Hessian-vector products on the benchmark MLP: forward-over-reverse (gc.jvp of the gradient) against
reverse-over-reverse (build_grad of <gradient, v>): graph nodes added, compiled program size, run time.

    python benchmarks/hvp.py            # sizes 64-256-256-10, batch 256, float64
    python benchmarks/hvp.py --quick    # fewer repeats

gc.jvp is derived from the reverse-mode rules by the transpose trick (see its docstring), so
"forward-over-reverse" here is itself built from reverse passes: a VJP of the gradient seeded with a cotangent
stand-in, then the derivative of <VJP, v> with respect to that stand-in. The numbers below show what that
costs next to reverse-over-reverse; a native JVP rule per op would be needed for the textbook advantage.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]
import graphcompiler as gc  # noqa: E402
from models import data, gc_net  # noqa: E402


def build(method: str, sizes, batch):
    g, J, Ws = gc_net(sizes, "tanh", dtype="float64", batch=batch)
    rng = np.random.default_rng(2)
    vs = [g.constant(rng.standard_normal(W.shape), name=f"v{k + 1}") for k, W in enumerate(Ws)]
    n0 = len(g)
    t0 = time.perf_counter()
    grads = gc.build_grad(J, Ws)
    gs = [grads[W] for W in Ws]
    if method == "forward-over-reverse":
        hv = gc.jvp(gs, Ws, vs)
    elif method == "reverse-over-reverse":
        inner = gc.sum(gs[0] * vs[0])
        for gk, vk in zip(gs[1:], vs[1:]):
            inner = inner + gc.sum(gk * vk)
        hvd = gc.build_grad(inner, Ws)
        hv = [hvd[W] for W in Ws]
    else:                                    # the gradient alone, for scale
        hv = gs
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    prog = gc.compile(hv)
    compile_s = time.perf_counter() - t0
    return g, prog, hv, len(g) - n0, build_s, compile_s


def _flops(prog) -> int | None:
    """The program's work by the op records' estimate (2mkn per matmul, one per element otherwise)."""
    try:
        return sum(int(step.node.op.flops(step.node)) for step in prog.schedule)
    except Exception:                        # an op record without a static estimate
        return None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    sizes, batch = [64, 256, 256, 10], 256
    X, Y = data(batch, sizes[0], sizes[-1], np.float64)
    repeats = 5 if args.quick else 30
    results = {}
    for method in ("gradient only", "reverse-over-reverse", "forward-over-reverse"):
        g, prog, hv, added, build_s, compile_s = build(method, sizes, batch)
        feeds = {"x": X, "y": Y}
        out = prog.run(feeds)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            prog.run(feeds)
            times.append(time.perf_counter() - t0)
        results[method] = out
        work = _flops(prog)
        print(f"{method:22s} nodes added {added:4d}  program steps {len(prog.schedule):4d}  "
              f"MFLOP {work / 1e6 if work is not None else float('nan'):6.1f}  "
              f"peak {prog.stats['peak_bytes'] / 1e6:5.2f} MB  "
              f"build {build_s * 1e3:6.1f} ms  compile {compile_s * 1e3:7.1f} ms  "
              f"run median {statistics.median(times) * 1e3:7.2f} ms  min {min(times) * 1e3:7.2f} ms")
    for a, b in zip(results["reverse-over-reverse"], results["forward-over-reverse"]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    print("both methods agree (rtol 1e-9)")


if __name__ == "__main__":
    main()
