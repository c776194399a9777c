"""Benchmark: one LeNet training step on the 8x8 digits, graphcompiler against handwritten NumPy and PyTorch.

    python benchmarks/lenet.py              # batches 32 and 128; appends/replaces the LeNet section of RESULTS.md
    python benchmarks/lenet.py --quick      # fewer repeats, prints only

The network is graphcompiler.demo_lenet's (8x8 images as they are; both 5x5 convolutions padded by 2):
conv 1->6 5x5 pad 2, relu, max pool 2, conv 6->16 5x5 pad 2, relu, max pool 2, dense 64-120-84-10, softmax
cross-entropy plus weight decay, one SGD update, all in float64. The handwritten NumPy step does the same
forward and backward by hand (im2col with sliding_window_view, one matmul per convolution, col2im over the
25 taps) and shares max pooling's gradient among tied maxima as graphcompiler does; it is checked to give
the same parameters as graphcompiler after a step before anything is timed. BLAS (and PyTorch) run on one
thread: the thread variables are set before NumPy is imported, and threadpoolctl limits what is loaded.
Medians (and minimums) of interleaved samples; the machine is shared, so quote the figures as noisy.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import platform
import re
import sys
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import graphcompiler as gc
from graphcompiler.demo_lenet import build_lenet, init_params, load_digit_images
from graphcompiler.ops import conv as C
from run import interleaved  # benchmarks/run.py: interleaved samples, median and min

LR, LAM = 0.05, 1e-4
BEGIN, END = "<!-- lenet-benchmark:begin -->", "<!-- lenet-benchmark:end -->"


# -- the step written by hand in NumPy ----------------------------------------------------------------

def conv_forward(x, w, b, pad):
    """im2col: cols (N*H*W, C*k*k) from a window view of the padded input, one matmul with the kernel."""
    n, c = x.shape[:2]
    o, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = sliding_window_view(xp, (k, k), axis=(2, 3))                   # (N, C, H, W, k, k)
    ho, wo = win.shape[2:4]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * k * k)
    out = (cols @ w.reshape(o, -1).T).reshape(n, ho, wo, o).transpose(0, 3, 1, 2) + b
    return out, cols


def conv_backward(dout, x_shape, cols, w, pad, need_dx):
    n, c, h, wd = x_shape
    o, _, k, _ = w.shape
    dmat = dout.transpose(0, 2, 3, 1).reshape(-1, o)                      # (N*Ho*Wo, O)
    dw = (dmat.T @ cols).reshape(w.shape)
    db = dout.sum(axis=(0, 2, 3)).reshape(o, 1, 1)
    if not need_dx:
        return None, dw, db
    ho, wo = dout.shape[2:]
    dcols = (dmat @ w.reshape(o, -1)).reshape(n, ho, wo, c, k, k)
    dxp = np.zeros((n, c, h + 2 * pad, wd + 2 * pad))
    for a in range(k):                                                     # col2im: one add per tap
        for bb in range(k):
            dxp[:, :, a:a + ho, bb:bb + wo] += dcols[:, :, :, :, a, bb].transpose(0, 3, 1, 2)
    return dxp[:, :, pad:pad + h, pad:pad + wd], dw, db


def pool_forward(x):
    n, c, h, w = x.shape
    x6 = x.reshape(n, c, h // 2, 2, w // 2, 2)
    out = x6.max(axis=(3, 5))
    return out, x6


def pool_backward(dout, x6, out):
    hit = x6 == out[:, :, :, None, :, None]
    share = hit / hit.sum(axis=(3, 5), keepdims=True)                     # ties share, as graphcompiler's max
    return (share * dout[:, :, :, None, :, None]).reshape(x6.shape[0], x6.shape[1], x6.shape[2] * 2, -1)


class Textbook:
    """The layer functions as a textbook writes them: NCHW im2col, pooling by reshape."""

    conv_forward = staticmethod(conv_forward)
    conv_backward = staticmethod(conv_backward)
    pool_forward = staticmethod(pool_forward)
    pool_backward = staticmethod(pool_backward)


class SameKernels:
    """The same layers calling graphcompiler's own NumPy kernels (ops/conv.py): what is left between this
    and graphcompiler is the cost of the compiled program itself (its steps, buffers and elementwise ops)."""

    one, pool, pool_grad = (1, 1), C.MaxPool2d((2, 2), (2, 2), (0, 0)), C.MaxPool2dGrad((2, 2), (2, 2), (0, 0))

    @staticmethod
    def conv_forward(x, w, b, pad):
        return C._correlate(x, w, SameKernels.one, (pad, pad), SameKernels.one, 1) + b, x

    @staticmethod
    def conv_backward(dout, x_shape, x, w, pad, need_dx):
        one = SameKernels.one
        dw = C._weight_grad(x, dout, w.shape[2:], one, (pad, pad), one, 1)
        db = dout.sum(axis=(0, 2, 3)).reshape(-1, 1, 1)
        dx = C._input_grad(dout, w, x_shape[2:], one, (pad, pad), one, 1) if need_dx else None
        return dx, dw, db

    @staticmethod
    def pool_forward(x):
        return SameKernels.pool.kernel(x), x

    @staticmethod
    def pool_backward(dout, x, out):
        return SameKernels.pool_grad.kernel(dout, x)


def numpy_step(P, X, Y, K=Textbook):
    """Forward, backward and the SGD update, by hand (layer functions from K); returns J."""
    n = X.shape[0]
    z1, cols1 = K.conv_forward(X, P["c1"], P["b1"], 2)
    a1 = np.maximum(z1, 0)
    p1, x61 = K.pool_forward(a1)
    z2, cols2 = K.conv_forward(p1, P["c2"], P["b2"], 2)
    a2 = np.maximum(z2, 0)
    p2, x62 = K.pool_forward(a2)
    f = p2.reshape(n, -1)
    z3 = f @ P["W3"] + P["b3"]
    h3 = np.maximum(z3, 0)
    z4 = h3 @ P["W4"] + P["b4"]
    h4 = np.maximum(z4, 0)
    o = h4 @ P["W5"] + P["b5"]
    m = o.max(axis=1, keepdims=True)
    lse = np.log(np.exp(o - m).sum(axis=1, keepdims=True)) + m
    L = np.mean(lse[:, 0] - o[np.arange(n), Y])
    J = L + LAM / 2 * sum(np.sum(P[k] * P[k]) for k in ("c1", "c2", "W3", "W4", "W5"))
    do = np.exp(o - lse)
    do[np.arange(n), Y] -= 1
    do /= n
    G = {"W5": h4.T @ do, "b5": do.sum(0)}
    dz4 = (do @ P["W5"].T) * (z4 > 0)
    G["W4"], G["b4"] = h3.T @ dz4, dz4.sum(0)
    dz3 = (dz4 @ P["W4"].T) * (z3 > 0)
    G["W3"], G["b3"] = f.T @ dz3, dz3.sum(0)
    dp2 = (dz3 @ P["W3"].T).reshape(p2.shape)
    dz2 = K.pool_backward(dp2, x62, p2) * (z2 > 0)
    dp1, G["c2"], G["b2"] = K.conv_backward(dz2, p1.shape, cols2, P["c2"], 2, True)
    dz1 = K.pool_backward(dp1, x61, p1) * (z1 > 0)
    _, G["c1"], G["b1"] = K.conv_backward(dz1, X.shape, cols1, P["c1"], 2, False)
    for k in ("c1", "c2", "W3", "W4", "W5"):
        G[k] += LAM * P[k]
    for k, g in G.items():
        P[k] -= LR * g
    return J


# -- PyTorch ------------------------------------------------------------------------------------------

def torch_setup(X, Y):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(1)
    P = {k: torch.tensor(v, requires_grad=True) for k, v in init_params(0).items()}
    tx, ty = torch.from_numpy(X), torch.from_numpy(Y)

    def step():
        h = F.max_pool2d(F.relu(F.conv2d(tx, P["c1"], P["b1"].reshape(-1), padding=2)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, P["c2"], P["b2"].reshape(-1), padding=2)), 2)
        h = F.relu(h.reshape(h.shape[0], -1) @ P["W3"] + P["b3"])
        h = F.relu(h @ P["W4"] + P["b4"])
        o = h @ P["W5"] + P["b5"]
        J = F.cross_entropy(o, ty) + LAM / 2 * sum((P[k] * P[k]).sum() for k in ("c1", "c2", "W3", "W4", "W5"))
        for p in P.values():
            p.grad = None
        J.backward()
        with torch.no_grad():
            for p in P.values():
                p -= LR * p.grad
        return J
    return step, torch.__version__


# -- timing -------------------------------------------------------------------------------------------

def check_same_step(batch: int, X, Y) -> float:
    """graphcompiler's SGD step and the handwritten one from the same start give the same parameters."""
    net = build_lenet(lam=LAM)
    train = gc.compile([net.J], updates={p: p - LR * net.grads[p] for p in net.params})
    Ps = [{k: v.copy() for k, v in init_params(0).items()} for _ in range(2)]
    worst = 0.0
    for _ in range(3):
        (J_gc,) = train.run({"x": X, "y": Y})
        for P, K in zip(Ps, (Textbook, SameKernels)):
            J_np = numpy_step(P, X, Y, K)
            worst = max(worst, abs(float(J_gc) - J_np))
            for p in net.params:
                worst = max(worst, float(np.max(np.abs(net.graph.value(p) - P[p.name]))))
    if worst > 1e-9:
        raise SystemExit(f"the handwritten step and graphcompiler disagree by {worst:.2e}: fix before timing")
    return worst


def bench(batch: int, repeats: int, inner: int) -> dict:
    X_train, _, y_train, _ = load_digit_images(0)
    X, Y = np.ascontiguousarray(X_train[:batch]), y_train[:batch]
    agree = check_same_step(batch, X, Y)
    net = build_lenet(lam=LAM)
    train = gc.compile([net.J], updates={p: p - LR * net.grads[p] for p in net.params})
    feeds = {"x": X, "y": Y}
    P = {k: v.copy() for k, v in init_params(0).items()}
    P2 = {k: v.copy() for k, v in init_params(0).items()}
    fns = {"numpy": lambda: numpy_step(P, X, Y), "numpy_same": lambda: numpy_step(P2, X, Y, SameKernels),
           "graphcompiler": lambda: train.run(feeds)}
    peer = None
    try:
        fns["pytorch"], peer = torch_setup(X, Y)
    except ImportError:
        pass
    times = interleaved(fns, repeats, inner)
    return {"batch": batch, "times": times, "agree": agree, "torch": peer, "steps": len(train.schedule)}


def report(results: list[dict]) -> str:
    torch_v = next((r["torch"] for r in results if r["torch"]), None)
    lines = [BEGIN, "## LeNet training step (benchmarks/lenet.py)", "",
             "One SGD step of the LeNet-style convnet of `graphcompiler demo --model lenet` on the 8x8 digits "
             "(conv 1->6 5x5 pad 2, relu, max pool 2, conv 6->16 5x5 pad 2, relu, max pool 2, dense "
             "64-120-84-10, softmax cross-entropy + weight decay; float64), against the same step written by "
             "hand in NumPy (the textbook NCHW im2col + one matmul per convolution, col2im over the taps, "
             "pooling by reshape; and "
             "the same step calling graphcompiler's own kernels from ops/conv.py; both checked "
             f"to give graphcompiler's parameters to {max(r['agree'] for r in results):.0e} before timing)"
             + (f" and PyTorch {torch_v} (autograd, CPU)" if torch_v else "") + ". One thread for BLAS and "
             f"PyTorch; median (min) of interleaved samples, microseconds per step. {machine()}. The machine "
             "was shared with other jobs: the figures are noisy.", "",
             ("| batch | NumPy by hand | NumPy by hand, graphcompiler's kernels | graphcompiler | PyTorch | "
              "graphcompiler / NumPy | graphcompiler / NumPy with its kernels | PyTorch / NumPy |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        t = r["times"]
        np_, gc_ = t["numpy"], t["graphcompiler"]
        pt = t.get("pytorch")
        fmt = lambda v: f"{v['median'] * 1e6:,.0f} ({v['min'] * 1e6:,.0f})"
        pt_ratio = f"{pt['median'] / np_['median']:.2f}x" if pt else "-"
        same = t["numpy_same"]
        lines.append(f"| {r['batch']} | {fmt(np_)} | {fmt(same)} | {fmt(gc_)} | "
                     f"{fmt(pt) if pt else 'not installed'} | {gc_['median'] / np_['median']:.2f}x | "
                     f"{gc_['median'] / same['median']:.2f}x | {pt_ratio} |")
    lines += ["", (f"The compiled step has {results[0]['steps']} steps. graphcompiler's convolution kernels build "
                   "their im2col columns in a batch-last layout (C, H, W, N), so the copy moves runs of N numbers "
                   "instead of runs of 4 or 8 (a row of a small image), and its pooling works on strided taps "
                   "rather than a 6-D reshape: that, not the graph, is why it can beat the textbook step by hand. "
                   "The column with graphcompiler's kernels called by hand isolates the cost of the compiled "
                   "program itself. Run `make bench` (or `python benchmarks/lenet.py`) to reproduce."), END]
    return "\n".join(lines) + "\n"


def machine() -> str:
    return (f"Python {platform.python_version()}, NumPy {np.__version__}, {platform.machine()}, "
            f"{os.cpu_count()} CPUs")


def write_section(text: str, path: Path) -> None:
    """Put the section into RESULTS.md, replacing an earlier one (run.py rewrites the rest of the file)."""
    old = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", re.DOTALL)
    new = pattern.sub(lambda m: text, old) if pattern.search(old) else old.rstrip() + "\n\n" + text
    path.write_text(new)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats; print only")
    ap.add_argument("--batches", default="32,128", help="comma-separated batch sizes (default: 32,128)")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = ap.parse_args()
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    except ImportError:
        pass
    repeats, inner = (5, 3) if args.quick else (31, 5)
    results = [bench(int(b), repeats, inner) for b in args.batches.split(",")]
    text = report(results)
    print(text)
    if not args.quick:
        write_section(text, Path(args.out))
        print(f"wrote the LeNet section of {args.out}")


if __name__ == "__main__":
    main()
