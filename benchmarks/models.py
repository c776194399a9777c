"""The benchmark's models, each as a graphcompiler graph and as handwritten NumPy doing the same math.

The D2L MLP (relu, softmax cross-entropy, weight decay lambda/2 (|W1|^2 + |W2|^2)), a deeper tanh net, and
the chain z = f(f(...f(w))) of Goodfellow's Figure 6.10 with f alternating sin and tanh.
"""

from __future__ import annotations

import numpy as np

import graphcompiler as gc

LAMBDA = 1e-3


def init(sizes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype) for a, b in zip(sizes[:-1], sizes[1:])]


def data(batch, d, c, dtype, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, d)).astype(dtype), rng.integers(0, c, batch).astype(np.int64)


def gc_net(sizes, act, dtype="float32", batch=None):
    """A net of matmuls and `act` ("relu" or "tanh") between them, cross-entropy and weight decay."""
    g = gc.Graph("net")
    x = g.input("x", shape=(batch, sizes[0]), dtype=dtype)
    y = g.input("y", shape=(batch,), dtype="int64")
    Ws = [g.parameter(f"W{k + 1}", w) for k, w in enumerate(init(sizes, dtype))]
    lam = g.constant(np.array(LAMBDA, dtype), name="lambda")
    h = x
    for k, W in enumerate(Ws):
        h = gc.matmul(h, W, name=f"z{k + 1}")
        if k < len(Ws) - 1:
            h = (gc.relu if act == "relu" else gc.tanh)(h, name=f"h{k + 1}")
    L = gc.softmax_cross_entropy(h, y, name="L")
    reg = gc.sum(Ws[0] * Ws[0])
    for W in Ws[1:]:
        reg = reg + gc.sum(W * W)
    J = gc.add(L, lam / 2 * reg, name="J")
    return g, J, Ws


def numpy_net(sizes, act, dtype="float32"):
    """The same training step by hand: returns step(X, Y) -> (J, [dW...]) and the weights it reads."""
    Ws = init(sizes, dtype)
    lam = np.asarray(LAMBDA, dtype)
    half = np.asarray(LAMBDA / 2, dtype)

    def step(X, Y):
        hs = [X]
        h = X
        for k, W in enumerate(Ws):
            z = h @ W
            if k < len(Ws) - 1:
                h = np.maximum(z, 0) if act == "relu" else np.tanh(z)
                hs.append(h)
            else:
                h = z
        n = X.shape[0]
        m = h.max(axis=1, keepdims=True)
        e = np.exp(h - m)
        s = e.sum(axis=1, keepdims=True)
        p = e / s
        logp = np.log(s) + m
        L = (logp[:, 0] - h[np.arange(n), Y]).mean()
        J = L + half * sum(np.vdot(W, W) for W in Ws)
        g = p
        g[np.arange(n), Y] -= 1
        g /= n
        grads = [None] * len(Ws)
        for k in range(len(Ws) - 1, -1, -1):
            grads[k] = hs[k].T @ g + lam * Ws[k]
            if k:
                g = g @ Ws[k].T
                if act == "relu":
                    g *= hs[k] > 0
                else:
                    g *= 1 - hs[k] * hs[k]
        return J, grads

    return step, Ws


def gc_chain(n, size, dtype="float64"):
    g = gc.Graph("chain")
    w = g.input("w", shape=(size,), dtype=dtype)
    z = w
    for k in range(n):
        z = (gc.sin if k % 2 == 0 else gc.tanh)(z)
    return g, w, z


def numpy_chain(n):
    """Forward then backward through the chain by hand: returns step(w) -> (z, dz/dw . ones)."""
    def step(w):
        xs = []
        z = w
        for k in range(n):
            xs.append(z)
            z = np.sin(z) if k % 2 == 0 else np.tanh(z)
            if k % 2:
                xs[-1] = z                       # tanh's derivative reads its output
        g = np.ones_like(z)
        for k in range(n - 1, -1, -1):
            if k % 2 == 0:
                g = g * np.cos(xs[k])
            else:
                g = g * (1 - xs[k] * xs[k])
        return z, g
    return step
