"""Benchmark: an RNN written with gc.scan against the same RNN unrolled in Python (issue 13, item 4).

For each sequence length T it measures the time to build the graph, differentiate it (build_grad) and
compile it, and the median time of one run of loss + gradients (BPTT). Unrolled graphs are built only up to
--max-unrolled steps (their build and compile time grows with T). Figures are noisy on a shared machine.

    python benchmarks/scan.py [--lengths 10,100,1000,10000] [--max-unrolled 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import graphcompiler as gc

B, D, H = 16, 32, 64


def build(T: int, unrolled: bool):
    g = gc.Graph("rnn")
    xs = g.input("xs", (T, B, D))
    h0 = g.parameter("h0", np.zeros((B, H)))
    rng = np.random.default_rng(0)
    W = g.parameter("W", rng.normal(size=(H, H)) / np.sqrt(H))
    U = g.parameter("U", rng.normal(size=(D, H)) / np.sqrt(D))
    b = g.parameter("b", np.zeros(H))

    def step(h, x_t):
        h = gc.tanh(gc.matmul(h, W) + gc.matmul(x_t, U) + b)
        return h, h

    if unrolled:
        h, hs = h0, []
        for t in range(T):
            h, y = step(h, xs[t])
            hs.append(y)
        L = gc.sum(gc.stack(hs) * gc.stack(hs)) / T
    else:
        _, hs = gc.scan(step, h0, xs)
        L = gc.sum(hs * hs) / T
    grads = gc.build_grad(L, [W, U, b, h0])
    return gc.compile([L, grads[W], grads[U], grads[b], grads[h0]])


def measure(T: int, unrolled: bool, repeat: int) -> dict:
    t0 = time.perf_counter()
    prog = build(T, unrolled)
    t1 = time.perf_counter()
    X = np.random.default_rng(1).normal(size=(T, B, D))
    first = prog.run({"xs": X})
    t2 = time.perf_counter()
    runs = []
    for _ in range(repeat):
        s = time.perf_counter()
        out = prog.run({"xs": X})
        runs.append(time.perf_counter() - s)
    return {"build_grad_compile_s": t1 - t0, "first_run_s": t2 - t1, "run_s": statistics.median(runs),
            "values": [first, out]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="10,100,1000,10000")
    ap.add_argument("--max-unrolled", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"RNN h_t = tanh(h W + x_t U + b), batch {B}, input {D}, hidden {H}; loss + BPTT gradients "
          "for W, U, b, h0 (noisy figures)")
    print(f"{'T':>6}  {'form':<9} {'grad+compile s':>14} {'first run s':>12} {'run s':>10}  {'run ratio':>9}")
    for T in [int(t) for t in args.lengths.split(",")]:
        res = {"scan": measure(T, False, args.repeat)}
        if T <= args.max_unrolled:
            res["unrolled"] = measure(T, True, args.repeat)
            for a, b in zip(res["scan"]["values"][1], res["unrolled"]["values"][1]):
                np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)     # the two forms agree
        for form, r in res.items():
            ratio = ""
            if form == "scan" and "unrolled" in res:
                ratio = f"{r['run_s'] / res['unrolled']['run_s']:.2f}x"
            print(f"{T:>6}  {form:<9} {r['build_grad_compile_s']:>14.3f} {r['first_run_s']:>12.4f} "
                  f"{r['run_s']:>10.4f}  {ratio:>9}")


if __name__ == "__main__":
    main()
