"""Benchmark: a training step of graphcompiler against handwritten NumPy (and PyTorch, JAX, PyTensor when
installed), the one-time cost of build_grad + compile, runs of the Figure 6.10 chain, and peak memory.

    python benchmarks/run.py            # both threading settings, writes benchmarks/RESULTS.md
    python benchmarks/run.py --quick    # fewer repeats (a smoke test)

Each threading setting runs in its own subprocess, because BLAS reads its thread count from the environment
when NumPy is imported: "pinned" sets OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=MKL_NUM_THREADS=1, "default"
leaves them alone. In each, NumPy and graphcompiler (and the peers) are timed interleaved on the same inputs,
and medians and minimums are reported: at microsecond sizes the machine is noisy, the minimum is stable.
"""

from __future__ import annotations

import argparse
import gc as pygc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")

MLP_SIZES = {"tiny": (8, (16, 16, 4)), "small": (32, (64, 32, 10)), "medium": (128, (784, 256, 10)),
             "large": (512, (784, 2048, 10))}
DEEP = (256, (512,) * 9 + (10,))            # 8 tanh layers of 512, batch 256
NARROW = (2048, (784,) + (128,) * 32 + (10,))   # issue 4: 32 tanh layers of 128, batch 2048
CHAIN_N = (10, 100, 1000, 10000)
CHAIN_SIZE = 1000


# -- timing -------------------------------------------------------------------------------------

def interleaved(fns: dict, repeats: int, inner: int) -> dict:
    """Time each fn `inner` times per sample, samples interleaved; per-call seconds: median and min."""
    for f in fns.values():
        f()
    samples = {k: [] for k in fns}
    pygc.disable()
    try:
        for _ in range(repeats):
            for k, f in fns.items():
                t = time.perf_counter()
                for _ in range(inner):
                    f()
                samples[k].append((time.perf_counter() - t) / inner)
    finally:
        pygc.enable()
    return {k: {"median": statistics.median(v), "min": min(v)} for k, v in samples.items()}


def traced_peak(fn, resident: int = 0) -> int:
    """Bytes allocated at the peak of one call of fn beyond what was live before it (+ resident buffers)."""
    fn()
    pygc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
        del out
    finally:
        tracemalloc.stop()
    return peak + resident


# -- peers (optional) ---------------------------------------------------------------------------

def torch_step(sizes, act, X, Y, Ws):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    Wt = [torch.tensor(w, requires_grad=True) for w in Ws]
    f = torch.relu if act == "relu" else torch.tanh
    from models import LAMBDA

    def step():
        h = Xt
        for k, W in enumerate(Wt):
            h = h @ W
            if k < len(Wt) - 1:
                h = f(h)
        J = torch.nn.functional.cross_entropy(h, Yt) + LAMBDA / 2 * sum((W * W).sum() for W in Wt)
        grads = torch.autograd.grad(J, Wt)
        return J, grads
    return step


def jax_step(sizes, act, X, Y, Ws):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None, None
    from models import LAMBDA
    f = jax.nn.relu if act == "relu" else jnp.tanh

    def loss(Ws, X, Y):
        h = X
        for k, W in enumerate(Ws):
            h = h @ W
            if k < len(Ws) - 1:
                h = f(h)
        logp = jax.nn.log_softmax(h)
        L = -jnp.mean(jnp.take_along_axis(logp, Y[:, None], axis=1))
        return L + LAMBDA / 2 * sum(jnp.sum(W * W) for W in Ws)

    t = time.perf_counter()
    vg = jax.jit(jax.value_and_grad(loss))
    Wj = [jnp.asarray(w) for w in Ws]
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)
    jax.block_until_ready(vg(Wj, Xj, Yj))
    once = time.perf_counter() - t

    def step():
        return jax.block_until_ready(vg(Wj, Xj, Yj))
    return step, once


def pytensor_step(sizes, act, X, Y, Ws):
    try:
        import pytensor
        import pytensor.tensor as pt
    except ImportError:
        return None, None
    from models import LAMBDA
    t = time.perf_counter()
    x = pt.matrix("x", dtype=X.dtype)
    y = pt.lvector("y")
    Wv = [pytensor.shared(w) for w in Ws]
    h = x
    for k, W in enumerate(Wv):
        h = h @ W
        if k < len(Wv) - 1:
            h = pt.maximum(h, 0) if act == "relu" else pt.tanh(h)
    logp = pt.special.log_softmax(h, axis=1)
    J = -logp[pt.arange(y.shape[0]), y].mean() + LAMBDA / 2 * sum((W * W).sum() for W in Wv)
    fn = pytensor.function([x, y], [J, *pytensor.grad(J, Wv)])
    fn(X, Y)
    once = time.perf_counter() - t
    return (lambda: fn(X, Y)), once


# -- the measurements ---------------------------------------------------------------------------

def bench_net(name, batch, sizes, act, repeats, inner, peers=True):
    import numpy as np
    import graphcompiler as gc
    from models import data, gc_net, numpy_net
    X, Y = data(batch, sizes[0], sizes[-1], "float32")
    np_step, Ws = numpy_net(sizes, act)
    t = time.perf_counter()
    g, J, params = gc_net(sizes, act, batch=None)
    t_graph = time.perf_counter() - t
    t = time.perf_counter()
    grads = gc.build_grad(J, params)
    prog = gc.compile([J, *[grads[p] for p in params]])
    t_compile = time.perf_counter() - t
    t = time.perf_counter()
    prog.run({"x": X, "y": Y})
    t_first = time.perf_counter() - t
    feeds = {"x": X, "y": Y}
    # the same math: check before timing
    ref = np_step(X, Y)
    got = prog.run(feeds)
    err = max(float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-30)) for a, b in zip(got[1:], ref[1]))
    fns = {"numpy": lambda: np_step(X, Y), "graphcompiler": lambda: prog.run(feeds)}
    once = {}
    c = c_backend([J, *[grads[p] for p in params]], feeds, got)
    if c:
        fns["c"] = c.pop("step")
    if peers:
        s = torch_step(sizes, act, X, Y, Ws)
        if s:
            fns["pytorch"] = s
        s, o = jax_step(sizes, act, X, Y, Ws)
        if s:
            fns["jax"], once["jax"] = s, o
        s, o = pytensor_step(sizes, act, X, Y, Ws)
        if s:
            fns["pytensor"], once["pytensor"] = s, o
    times = interleaved(fns, repeats, inner)
    resident = prog.stats["resident_bytes"]
    mem = {"numpy": traced_peak(lambda: np_step(X, Y)),
           "graphcompiler": traced_peak(lambda: prog.run(feeds), resident),
           "planned": prog.stats["peak_bytes"]}
    infer = gc.compile([J])
    infer.run(feeds)
    mem["inference_planned"] = infer.stats["peak_bytes"]
    mem["inference_measured"] = traced_peak(lambda: infer.run(feeds), infer.stats["resident_bytes"])
    mem["declared_order"] = prog.memory_report().declared_peak_bytes
    return {"name": name, "times": times, "compile_s": t_compile, "first_run_s": t_first, "graph_s": t_graph,
            "rel_err": err, "memory": mem, "peer_once": once, "steps": prog.stats["steps"], "c": c}


def c_backend(outputs, feeds, ref) -> dict | None:
    """The program on backend "c": its step, the cold compile (an empty cache) and a second load from the
    cache in a fresh Program (the first run of each: specialise, generate C, compile or load)."""
    import tempfile
    import numpy as np
    import graphcompiler as gc
    from graphcompiler.backends import c as cbackend
    try:
        cbackend.toolchain()
    except gc.GraphCompilerError:
        return None
    old = os.environ.get("GRAPHCOMPILER_CACHE_DIR")
    with tempfile.TemporaryDirectory() as d:
        os.environ["GRAPHCOMPILER_CACHE_DIR"] = d
        try:
            t = time.perf_counter()
            prog = gc.compile(outputs, backend="c")
            got = prog.run(feeds)
            cold = time.perf_counter() - t
            t = time.perf_counter()
            again = gc.compile(outputs, backend="c")
            again.run(feeds)
            cached = time.perf_counter() - t
            t = time.perf_counter()
            again.run(feeds)                       # a second run: the step itself, taken off both
            step = time.perf_counter() - t
            cold, cached = max(cold - step, 0.0), max(cached - step, 0.0)
        finally:
            if old is None:
                os.environ.pop("GRAPHCOMPILER_CACHE_DIR", None)
            else:
                os.environ["GRAPHCOMPILER_CACHE_DIR"] = old
    err = max(float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-30)) for a, b in zip(got, ref))
    ev = prog._last.evaluator
    return {"step": lambda: prog.run(feeds), "cold_s": cold, "cached_s": cached, "rel_err_vs_numpy_ev": err,
            "native": getattr(ev, "fallback_reason", "") is None, "flags": " ".join(getattr(ev, "flags", ()))}


def bench_chain(n, repeats):
    import numpy as np
    import graphcompiler as gc
    from models import gc_chain, numpy_chain
    g, w, z = gc_chain(n, CHAIN_SIZE)
    seed = g.constant(np.ones(CHAIN_SIZE), name="seed")
    t = time.perf_counter()
    grads = gc.build_grad(z, [w], seed=seed)
    t_grad = time.perf_counter() - t
    t = time.perf_counter()
    prog = gc.compile([z, grads[w]])
    t_compile = time.perf_counter() - t
    W = np.random.default_rng(0).standard_normal(CHAIN_SIZE)
    step = numpy_chain(n)
    got, ref = prog.run({"w": W}), step(W)
    err = max(float(np.max(np.abs(a - b))) for a, b in zip(got, ref))
    inner = max(1, 2000 // n)
    fns = {"numpy": lambda: step(W), "graphcompiler": lambda: prog.run({"w": W})}
    c = c_backend([z, grads[w]], {"w": W}, got) if n <= 1000 else None
    if c:
        fns["c"] = c.pop("step")
    times = interleaved(fns, repeats, inner)
    return {"n": n, "grad_s": t_grad, "compile_s": t_compile, "times": times, "abs_err": err,
            "steps": prog.stats["steps"], "c": c}


def bench_budget_net(batch, sizes, fraction=0.6, repeats=5):
    """Issue 4: the narrow net with memory_budget = outputs + 60% of the rest of the unbudgeted peak."""
    import numpy as np
    import graphcompiler as gc
    from models import data, gc_net
    X, Y = data(batch, sizes[0], sizes[-1], "float32")
    g, J, params = gc_net(sizes, "tanh")
    grads = gc.build_grad(J, params)
    outs = [J, *[grads[p] for p in params]]
    feeds = {"x": X, "y": Y}
    free = gc.compile(outs)
    ref = free.run(feeds)
    out_bytes = sum(np.asarray(a).nbytes for a in ref)
    budget = out_bytes + int(fraction * (free.stats["peak_bytes"] - out_bytes))
    t = time.perf_counter()
    tight = gc.compile(outs, memory_budget=budget)
    got = tight.run(feeds)
    t_plan = time.perf_counter() - t
    times = interleaved({"unbudgeted": lambda: free.run(feeds), "budgeted": lambda: tight.run(feeds)}, repeats, 1)
    return {"name": f"narrow {len(sizes) - 2}x{sizes[1]} tanh, batch {batch}", "budget": budget,
            "unbudgeted_planned": free.stats["peak_bytes"], "planned": tight.stats["peak_bytes"],
            "measured": traced_peak(lambda: tight.run(feeds), tight.stats["resident_bytes"]),
            "identical": all(np.array_equal(a, b) for a, b in zip(got, ref)), "times": times,
            "recomputed": tight.stats["recomputed"],
            "extra_forward": tight.stats["recompute_flops"] / max(tight.stats["forward_flops"], 1),
            "plan_s": t_plan}


def bench_budget_chain(n=1000, repeats=5):
    """Issue 4: the chain with a budget of about 3 sqrt(n) values (Chen et al.'s checkpointing)."""
    import math
    import numpy as np
    import graphcompiler as gc
    from models import gc_chain
    g, w, z = gc_chain(n, CHAIN_SIZE)
    seed = g.constant(np.ones(CHAIN_SIZE), name="seed")
    grads = gc.build_grad(z, [w], seed=seed)
    outs = [z, grads[w]]
    feeds = {"w": np.random.default_rng(0).standard_normal(CHAIN_SIZE)}
    free = gc.compile(outs)
    ref = free.run(feeds)
    value = CHAIN_SIZE * 8
    budget = 2 * value + int(3 * math.sqrt(n)) * value
    t = time.perf_counter()
    tight = gc.compile(outs, memory_budget=budget)
    got = tight.run(feeds)
    t_plan = time.perf_counter() - t
    times = interleaved({"unbudgeted": lambda: free.run(feeds), "budgeted": lambda: tight.run(feeds)}, repeats, 1)
    return {"name": f"chain N={n}", "budget": budget, "unbudgeted_planned": free.stats["peak_bytes"],
            "planned": tight.stats["peak_bytes"],
            "measured": traced_peak(lambda: tight.run(feeds), tight.stats["resident_bytes"]),
            "identical": all(np.array_equal(a, b) for a, b in zip(got, ref)), "times": times,
            "recomputed": tight.stats["recomputed"],
            "extra_forward": tight.stats["recompute_flops"] / max(tight.stats["forward_flops"], 1),
            "plan_s": t_plan}


def worker(setting: str, quick: bool) -> dict:
    sys.path.insert(0, str(HERE))
    out = {"setting": setting, "nets": [], "chain": []}
    import numpy  # noqa: F401  (loads BLAS, so that threadpoolctl sees its pool)
    try:
        import threadpoolctl
        out["threadpools"] = [{k: p.get(k) for k in ("user_api", "internal_api", "num_threads")}
                              for p in threadpoolctl.threadpool_info()]
    except ImportError:
        out["threadpools"] = []
    plan = [("tiny", 60, 200), ("small", 60, 100), ("medium", 30, 10), ("large", 11, 1)]
    peers = setting == "pinned"          # the peers (their one-time compiles are long) in the pinned run only
    for name, reps, inner in plan:
        batch, sizes = MLP_SIZES[name]
        out["nets"].append(bench_net(f"MLP {name}", batch, sizes, "relu", max(3, reps // (4 if quick else 1)),
                                     inner, peers=peers))
    out["nets"].append(bench_net("deep 8x512 tanh", DEEP[0], DEEP[1], "tanh", 5 if quick else 11, 1, peers=peers))
    if not quick:
        out["nets"].append(bench_net("narrow 32x128 tanh", NARROW[0], NARROW[1], "tanh", 5, 1, peers=False))
    for n in CHAIN_N:
        out["chain"].append(bench_chain(n, 3 if quick else 7))
    out["budget"] = []
    if not quick:
        out["budget"].append(bench_budget_net(*NARROW))
        out["budget"].append(bench_budget_chain(1000))
    return out


# -- the report ---------------------------------------------------------------------------------

def machine() -> str:
    import numpy as np
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, NumPy {np.__version__}, "
            f"{platform.system()} {platform.release()}")


def us(t: float) -> str:
    return f"{t * 1e6:,.0f} us" if t < 1e-2 else f"{t * 1e3:,.1f} ms"


def report(results: list[dict]) -> str:
    lines = ["# Benchmark results", "", f"Machine: {machine()}.", "",
             "Written by `make bench` (benchmarks/run.py). Times are per training step (loss and all gradients, "
             "float32), NumPy and the others interleaved in one process; ratio = time / handwritten NumPy's "
             "(below 1 is faster). Medians, with minimums in brackets.", ""]
    for res in results:
        lines += [f"## Threads: {res['setting']}", ""]
        if res.get("threadpools"):
            lines.append("Thread pools: " + ", ".join(f"{p['internal_api']} ({p['num_threads']} threads)"
                                                        for p in res["threadpools"]) + ".")
            lines.append("")
        peers = [p for p in ("pytorch", "jax", "pytensor") if any(p in r["times"] for r in res["nets"])]
        head = "| model | NumPy | graphcompiler | ratio (min) | c ratio (min) |" + "".join(f" {p} ratio |" for p in peers)
        lines += [head, "|" + " --- |" * (5 + len(peers))]
        for r in res["nets"]:
            t = r["times"]
            base = t["numpy"]
            row = (f"| {r['name']} | {us(base['median'])} ({us(base['min'])}) | {us(t['graphcompiler']['median'])} "
                   f"({us(t['graphcompiler']['min'])}) | {t['graphcompiler']['median'] / base['median']:.2f} "
                   f"({t['graphcompiler']['min'] / base['min']:.2f}) |")
            row += (f" {t['c']['median'] / base['median']:.2f} ({t['c']['min'] / base['min']:.2f}) |" if "c" in t
                    else " - |")
            for p in peers:
                row += (f" {t[p]['median'] / base['median']:.2f} |" if p in t else " - |")
            lines.append(row)
        lines += ["", "| model | build_grad + compile | first run | steps | max rel. error vs NumPy | peer one-time |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in res["nets"]:
            once = ", ".join(f"{k} {v:.2f} s" for k, v in r["peer_once"].items()) or "-"
            lines.append(f"| {r['name']} | {r['compile_s'] * 1e3:.1f} ms | {r['first_run_s'] * 1e3:.1f} ms | "
                         f"{r['steps']} | {r['rel_err']:.1e} | {once} |")
        cs = [r for r in res["nets"] + res["chain"] if r.get("c")]
        if cs:
            lines += ["", "Backend \"c\" one-time cost (the first run less a second run's time: specialise, generate C, "
                      "compile with an empty cache; then a fresh Program loading the cached object):", "",
                      "| program | cold compile | cached load | native | flags | max rel. diff vs NumPy evaluator |",
                      "| --- | --- | --- | --- | --- | --- |"]
            for r in cs:
                c = r["c"]
                name = r.get("name") or f"chain {r['n']:,}"
                lines.append(f"| {name} | {c['cold_s'] * 1e3:.0f} ms | {c['cached_s'] * 1e3:.1f} ms | {c['native']} | "
                             f"{c['flags'] or '-O2'} | {c['rel_err_vs_numpy_ev']:.1e} |")
        lines += ["", "Peak memory of a step (tracemalloc; graphcompiler's buffers kept between runs included; "
                  "feeds and parameters not counted):", "",
                  "| model | NumPy | graphcompiler measured | ratio | planned `peak_bytes` | planned/measured | "
                  "planned in declared order | inference only (planned / measured) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in res["nets"]:
            m = r["memory"]
            lines.append(f"| {r['name']} | {m['numpy'] / 2**20:.2f} MiB | {m['graphcompiler'] / 2**20:.2f} MiB | "
                         f"{m['graphcompiler'] / max(m['numpy'], 1):.2f} | {m['planned'] / 2**20:.2f} MiB | "
                         f"{m['planned'] / max(m['graphcompiler'], 1):.2f} | "
                         f"{(m.get('declared_order') or 0) / 2**20:.2f} MiB | {m['inference_planned'] / 2**20:.2f} / "
                         f"{m['inference_measured'] / 2**20:.2f} MiB |")
        lines += ["", f"Chain z = f(f(...f(w))) (Figure 6.10), f alternating sin and tanh on a vector of "
                  f"{CHAIN_SIZE} float64, z and dz/dw (seed of ones):", "",
                  "| N | build_grad | compile | grad + compile | run: NumPy loop | run: graphcompiler | ratio (min) "
                  "| c ratio (min) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for c in res["chain"]:
            t = c["times"]
            lines.append(f"| {c['n']:,} | {c['grad_s'] * 1e3:.1f} ms | {c['compile_s'] * 1e3:.1f} ms | "
                         f"{(c['grad_s'] + c['compile_s']) * 1e3:.1f} ms | {us(t['numpy']['median'])} | "
                         f"{us(t['graphcompiler']['median'])} | {t['graphcompiler']['median'] / t['numpy']['median']:.2f} "
                         f"({t['graphcompiler']['min'] / t['numpy']['min']:.2f}) | " +
                         (f"{t['c']['median'] / t['numpy']['median']:.2f} ({t['c']['min'] / t['numpy']['min']:.2f}) |"
                          if "c" in t else "- |"))
        if res.get("budget"):
            lines += ["", "memory_budget (issue 4): recomputing forward values in the backward pass (equation 6.53):", "",
                      "| program | unbudgeted planned peak | budget | planned | measured (tracemalloc) | results identical "
                      "| steps recomputed | extra FLOPs / forward | time vs unbudgeted (min) | planning |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
            for b in res["budget"]:
                t = b["times"]
                lines.append(f"| {b['name']} | {b['unbudgeted_planned'] / 2**20:.2f} MiB | {b['budget'] / 2**20:.2f} MiB | "
                             f"{b['planned'] / 2**20:.2f} MiB | {b['measured'] / 2**20:.2f} MiB | {b['identical']} | "
                             f"{b['recomputed']} | {b['extra_forward']:.2f} | "
                             f"{t['budgeted']['median'] / t['unbudgeted']['median']:.2f} "
                             f"({t['budgeted']['min'] / t['unbudgeted']['min']:.2f}) | {b['plan_s']:.1f} s |")
        lines.append("")
    lines += targets(results)
    lines += ["What the program does about threads: nothing at run time. It calls NumPy, whose BLAS uses the "
              "thread count it read from the environment at import; set OPENBLAS_NUM_THREADS (or use "
              "threadpoolctl) to pin it. graphcompiler starts no thread pool of its own, so it never competes "
              "with BLAS for the cores.", ""]
    return "\n".join(lines)


def targets(results: list[dict]) -> list[str]:
    """The issues' targets, checked against the pinned run (medians; minimums in brackets)."""
    res = next((r for r in results if r["setting"] == "pinned"), None)
    if res is None:
        return []
    nets = {r["name"]: r for r in res["nets"]}

    def ratio(name, who="graphcompiler"):
        t = nets[name]["times"]
        return t[who]["median"] / t["numpy"]["median"], t[who]["min"] / t["numpy"]["min"]

    out = ["## Targets (pinned run)", "", "| target | measured | holds |", "| --- | --- | --- |"]

    def row(what, measured, ok):
        out.append(f"| {what} | {measured} | {'yes' if ok else 'no'} |")

    for name, limit in (("MLP tiny", 0.8), ("MLP medium", 0.95), ("MLP large", 1.0), ("deep 8x512 tanh", 1.0)):
        if name in nets:
            med, mn = ratio(name)
            row(f"{name}: step at most {limit}x NumPy", f"{med:.2f} ({mn:.2f})", med <= limit)
    for name, limit in (("MLP tiny", 0.2), ("MLP small", 0.35), ("MLP medium", 0.9), ("MLP large", 0.97),
                        ("deep 8x512 tanh", 0.97)):
        if name in nets and "c" in nets[name]["times"]:
            med, mn = ratio(name, "c")
            row(f"{name}: backend c at most {limit}x NumPy", f"{med:.2f} ({mn:.2f})", med <= limit)
    for name in ("MLP tiny", "MLP medium"):
        c = nets.get(name, {}).get("c")
        if c:
            row(f"{name}: backend c cold compile under 0.3 s", f"{c['cold_s'] * 1e3:.0f} ms", c["cold_s"] < 0.3)
            row(f"{name}: backend c cached load under 10 ms", f"{c['cached_s'] * 1e3:.1f} ms", c["cached_s"] < 0.01)
    ch = next((c for c in res["chain"] if c["n"] == 1000 and "c" in c["times"]), None)
    if ch:
        t = ch["times"]
        r = t["c"]["median"] / t["numpy"]["median"]
        row("chain 1,000: backend c at most 0.5x NumPy", f"{r:.2f}", r <= 0.5)
    for name in ("MLP tiny", "MLP small"):
        if name in nets:
            for peer in ("pytorch", "jax"):
                if peer in nets[name]["times"]:
                    ours, theirs = ratio(name)[0], ratio(name, peer)[0]
                    row(f"{name}: ahead of {peer}", f"{ours:.2f} vs {theirs:.2f}", ours < theirs)
    for name in ("MLP tiny", "MLP large"):
        if name in nets:
            c = nets[name]["compile_s"]
            row(f"{name}: build_grad + compile under 30 ms", f"{c * 1e3:.1f} ms", c < 0.03)
    chain = {c["n"]: c for c in res["chain"]}
    if 10000 in chain and 1000 in chain:
        big, small = (chain[n]["grad_s"] + chain[n]["compile_s"] for n in (10000, 1000))
        row("chain 10,000: build_grad + compile under 1 s", f"{big:.2f} s", big < 1)
        row("chain: 10x the ops, at most 12x the time (build_grad + compile)", f"{big / small:.1f}x",
            big / small <= 12)
        grow = chain[10000]["compile_s"] / chain[1000]["compile_s"]
        row("chain: the same for compile alone", f"{grow:.1f}x", grow <= 12)
        grow = chain[10000]["grad_s"] / chain[1000]["grad_s"]
        row("chain: the same for build_grad alone", f"{grow:.1f}x", grow <= 12)
        t = chain[10000]["times"]
        r = t["graphcompiler"]["median"] / t["numpy"]["median"]
        row("chain 10,000: a run at most 1.2x a NumPy loop", f"{r:.2f}", r <= 1.2)
    for name, r in nets.items():
        m = r["memory"]
        row(f"{name}: peak at most NumPy's", f"{m['graphcompiler'] / max(m['numpy'], 1):.2f}x",
            m["graphcompiler"] <= m["numpy"])
    narrow = nets.get("narrow 32x128 tanh")
    if narrow:
        m = narrow["memory"]
        row("narrow net: stats['peak_bytes'] within 10% of tracemalloc",
            f"{m['planned'] / m['graphcompiler']:.3f}", abs(m["planned"] / m["graphcompiler"] - 1) <= 0.1)
    for b in res.get("budget", []):
        t = b["times"]
        slow = t["budgeted"]["median"] / t["unbudgeted"]["median"]
        row(f"{b['name']}: planned and measured peak under the budget",
            f"{b['planned'] / 2**20:.2f} / {b['measured'] / 2**20:.2f} MiB <= {b['budget'] / 2**20:.2f} MiB",
            b["planned"] <= b["budget"] and b["measured"] <= b["budget"])
        row(f"{b['name']}: results identical", str(b["identical"]), b["identical"])
        if b["name"].startswith("narrow"):
            row(f"{b['name']}: run at most 1.4x slower", f"{slow:.2f}", slow <= 1.4)
        else:
            row(f"{b['name']}: about one extra forward pass at most", f"{b['extra_forward']:.2f}",
                b["extra_forward"] <= 1.1)
    out.append("")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--worker", choices=("pinned", "default"), help=argparse.SUPPRESS)
    ap.add_argument("--settings", default="pinned,default", help="comma-separated: pinned, default")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    ap.add_argument("--from-json", help="rewrite the report from a RESULTS.json of an earlier run")
    args = ap.parse_args()
    if args.from_json:
        text = report(json.loads(Path(args.from_json).read_text()))
        Path(args.out).write_text(text)
        print(text)
        return
    if args.worker:
        print("@@RESULT@@" + json.dumps(worker(args.worker, args.quick)))
        return
    results = []
    for setting in args.settings.split(","):
        env = dict(os.environ)
        for v in THREAD_VARS:
            if setting == "pinned":
                env[v] = "1"
            else:
                env.pop(v, None)
        cmd = [sys.executable, __file__, "--worker", setting] + (["--quick"] if args.quick else [])
        print(f"running the {setting} setting ...", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            sys.stderr.write(proc.stdout + proc.stderr)
            raise SystemExit(f"the {setting} worker failed")
        line = [l for l in proc.stdout.splitlines() if l.startswith("@@RESULT@@")][-1]
        results.append(json.loads(line[len("@@RESULT@@"):]))
    text = report(results)
    Path(args.out).write_text(text)
    json_path = Path(args.out).with_suffix(".json")
    json_path.write_text(json.dumps(results, indent=1))
    print(text)


if __name__ == "__main__":
    main()
