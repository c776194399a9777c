"""The seeds' worked examples (shared/seeds): D2L's closed forms, Goodfellow's Figure 6.10 and MLP of 6.5.7,
Torralba's layers, branch and merge, parameter sharing and backpropagation to the data."""

from __future__ import annotations

import numpy as np
import pytest

import graphcompiler as gc
from gradcheck import check_gradients


# -- D2L 5.3: z = W1 x, h = phi(z), o = W2 h, L = l(o, y), s = lambda/2 (|W1|^2 + |W2|^2), J = L + s -----------

def d2l_mlp(phi, loss, d=4, hid=5, q=3):
    g = gc.Graph("d2l")
    x = g.input("x", shape=(d, None))                 # column form: one example per column
    W1 = g.parameter("W1", shape=(hid, d))
    W2 = g.parameter("W2", shape=(q, hid))
    lam = g.constant(0.1, name="lambda")
    z = gc.matmul(W1, x, name="z")
    h = phi(z, name="h")
    o = gc.matmul(W2, h, name="o")
    if loss == "mse":
        y = g.input("y", shape=(q, None))
        L = gc.mse(o, y, name="L")
    else:
        y = g.input("y", shape=(None,), dtype="int64")
        L = gc.softmax_cross_entropy(gc.transpose(o), y, name="L")
    s = gc.multiply(lam / 2, gc.sum(W1 ** 2) + gc.sum(W2 ** 2), name="s")
    J = gc.add(L, s, name="J")
    return g, x, y, W1, W2, z, h, o, J


@pytest.mark.parametrize("phi", ["tanh", "relu"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("n", [1, 6])
def test_d2l_closed_forms(phi, loss, n):
    rng = np.random.default_rng(5)
    g, x, y, W1, W2, z, h, o, J = d2l_mlp(getattr(gc, phi), loss)
    g.set_value(W1, rng.standard_normal((5, 4)))
    g.set_value(W2, rng.standard_normal((3, 5)))
    X = rng.standard_normal((4, n))
    Y = rng.standard_normal((3, n)) if loss == "mse" else rng.integers(0, 3, size=n)
    grads = gc.build_grad(J, [W1, W2, o, h, z])
    names = [grads[t].name for t in (W1, W2, o, h, z)]
    assert names == ["dJ/dW1", "dJ/dW2", "dJ/do", "dJ/dh", "dJ/dz"]
    prog = gc.compile([z, h, o] + [grads[t] for t in (W1, W2, o, h, z)])
    Z, H, O, dW1, dW2, dO, dH, dZ = prog.run({"x": X, "y": Y})
    lam, w1, w2 = 0.1, g.value(W1), g.value(W2)
    if loss == "mse":
        np.testing.assert_allclose(dO, 2 * (O - Y) / O.size, rtol=1e-12)
    else:
        e = np.exp(O - O.max(axis=0))
        np.testing.assert_allclose(dO, (e / e.sum(axis=0) - np.eye(3)[Y].T) / n, rtol=1e-10, atol=1e-15)
    dphi = 1 - H ** 2 if phi == "tanh" else (Z > 0).astype(float)  # tanh' = 1 - tanh^2, of the program's own h
    np.testing.assert_allclose(dW2, dO @ H.T + lam * w2, rtol=1e-12)      # dJ/dW2 = dJ/do h^T + lambda W2
    np.testing.assert_allclose(dH, w2.T @ dO, rtol=1e-12)                  # dJ/dh = W2^T dJ/do
    np.testing.assert_allclose(dZ, dH * dphi, rtol=1e-12)                  # dJ/dz = dJ/dh . phi'(z)
    np.testing.assert_allclose(dW1, dZ @ X.T + lam * w1, rtol=1e-12)       # dJ/dW1 = dJ/dz x^T + lambda W1


def test_d2l_gradients_against_central_differences():
    rng = np.random.default_rng(6)
    g = gc.Graph()
    x = g.input("x", shape=(4, 3))
    y = g.input("y", shape=(2, 3))
    W1, W2 = g.input("W1", shape=(5, 4)), g.input("W2", shape=(2, 5))
    J = gc.mse(W2 @ gc.tanh(W1 @ x), y) + 0.05 * (gc.sum(W1 * W1) + gc.sum(W2 * W2))
    feeds = {"x": rng.standard_normal((4, 3)), "y": rng.standard_normal((2, 3)),
             "W1": rng.standard_normal((5, 4)), "W2": rng.standard_normal((2, 5))}
    check_gradients(g, J, [W1, W2, x], feeds)


# -- Goodfellow Figure 6.10: z = f(f(f(w))) ----------------------------------------------------------------

def test_figure_6_10_reuses_x_and_y_and_computes_f_three_times():
    g = gc.Graph("fig6.10")
    w = g.input("w", shape=())
    x = gc.exp(w, name="x")
    y = gc.exp(x, name="y")
    z = gc.exp(y, name="z")
    n_forward = len(g)
    dz_dw = gc.build_grad(z, [w])[w]
    backward = g.nodes[n_forward:]
    assert dz_dw.name == "dz/dw"
    assert not any(n.op.name == "exp" for n in backward)              # f is not applied again
    read = {i for n in backward for i in n.inputs}
    assert {x, y, z} <= read                                           # f'(w) f'(x) f'(y) reuse x, y, z
    prog = gc.compile([z, dz_dw])
    assert sum(step.op == "exp" for step in prog.schedule) == 3
    Z, D = prog.run({"w": 0.3})
    X, Y = np.exp(0.3), np.exp(np.exp(0.3))
    np.testing.assert_allclose(D, Z * Y * X, rtol=1e-12)               # dz/dw = f'(y) f'(x) f'(w)


def test_figure_6_10_with_sin():
    g = gc.Graph()
    w = g.input("w", shape=())
    z = gc.sin(gc.sin(gc.sin(w)))
    d = gc.build_grad(z, [w])[w]
    (D,) = gc.compile([d]).run({"w": 0.4})
    X = np.sin(0.4)
    Y = np.sin(X)
    np.testing.assert_allclose(D, np.cos(Y) * np.cos(X) * np.cos(0.4), rtol=1e-12)


# -- Goodfellow 6.5.7: relu MLP with cross-entropy and weight decay on a minibatch -----------------------------

def test_goodfellow_6_5_7_mlp_against_handwritten_numpy():
    rng = np.random.default_rng(7)
    m, d, hid, c, lam = 8, 5, 6, 3, 0.01
    X, Y = rng.standard_normal((m, d)), rng.integers(0, c, size=m)
    w1, w2 = rng.standard_normal((d, hid)), rng.standard_normal((hid, c))
    g = gc.Graph("6.5.7")
    x = g.input("X", shape=(None, d))
    y = g.input("y", shape=(None,), dtype="int64")
    W1, W2 = g.parameter("W1", w1), g.parameter("W2", w2)
    H = gc.relu(x @ W1, name="H")
    U2 = gc.matmul(H, W2, name="U2")
    J_MLE = gc.softmax_cross_entropy(U2, y, name="J_MLE")
    J = gc.add(J_MLE, lam * (gc.sum(gc.square(W1)) + gc.sum(gc.square(W2))), name="J")
    grads = gc.build_grad(J, [W1, W2])
    J_val, dW1, dW2 = gc.compile([J, grads[W1], grads[W2]]).run({"X": X, "y": Y})
    # the same by hand
    U1 = X @ w1
    Hn = np.maximum(U1, 0)
    U = Hn @ w2
    P = np.exp(U - U.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    J_ref = -np.mean(np.log(P[np.arange(m), Y])) + lam * ((w1 ** 2).sum() + (w2 ** 2).sum())
    G = (P - np.eye(c)[Y]) / m
    dW2_ref = Hn.T @ G + 2 * lam * w2
    G1 = (G @ w2.T) * (U1 > 0)
    dW1_ref = X.T @ G1 + 2 * lam * w1
    np.testing.assert_allclose(J_val, J_ref, rtol=1e-12)
    np.testing.assert_allclose(dW1, dW1_ref, rtol=1e-10)
    np.testing.assert_allclose(dW2, dW2_ref, rtol=1e-10)


# -- Torralba chapter 14 ----------------------------------------------------------------------------------

def test_torralba_linear_pointwise_l2_layers_match_the_per_layer_equations():
    rng = np.random.default_rng(8)
    g = gc.Graph()
    x0 = g.input("x0", shape=(4,))
    t = g.input("y", shape=(2,))
    W1, b1 = g.parameter("W1", rng.standard_normal((3, 4))), g.parameter("b1", rng.standard_normal(3))
    W2, b2 = g.parameter("W2", rng.standard_normal((2, 3))), g.parameter("b2", rng.standard_normal(2))
    x1 = gc.add(W1 @ x0, b1, name="x1")                 # linear: x_out = W x_in + b (14.12)
    x2 = gc.relu(x1, name="x2")                         # pointwise
    x3 = gc.add(W2 @ x2, b2, name="x3")
    J = gc.sum(gc.square(x3 - t), name="J")             # L2 loss |y_hat - y|^2
    grads = gc.build_grad(J, [W1, b1, W2, b2, x0])
    X0, T = rng.standard_normal(4), rng.standard_normal(2)
    got = gc.compile([grads[p] for p in (W1, b1, W2, b2, x0)]).run({"x0": X0, "y": T})
    w1, bb1, w2, bb2 = (g.value(p) for p in (W1, b1, W2, b2))
    a1 = w1 @ X0 + bb1
    a2 = np.maximum(a1, 0)
    a3 = w2 @ a2 + bb2
    g3 = 2 * (a3 - T)                                   # L2 layer backward
    dW2, db2, g2 = np.outer(g3, a2), g3, w2.T @ g3      # linear backward (14.18-14.20, 14.29)
    g1 = g2 * (a1 >= 0)                                 # pointwise backward (14.33)
    dW1, db1, g0 = np.outer(g1, X0), g1, w1.T @ g1
    for a, b in zip(got, (dW1, db1, dW2, db2, g0)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_torralba_branch_and_merge():
    rng = np.random.default_rng(9)
    g = gc.Graph()
    x = g.input("x", shape=(5,))
    a, b = gc.split(x, [2])                             # branch by slicing: x[:2], x[2:]
    merged = gc.concatenate([gc.tanh(a), gc.sin(b), x[1:3] * x[3:]], axis=0)   # merge (14.37)
    J = gc.sum(merged * gc.exp(merged[::-1]))           # branch: merged feeds two paths, gradients sum
    X = rng.standard_normal(5)
    check_gradients(g, J, [x], {"x": X})


def test_torralba_parameter_sharing_sums_gradients():
    rng = np.random.default_rng(10)
    w = rng.standard_normal((3, 3))
    X = rng.standard_normal(3)
    g = gc.Graph()
    x = g.input("x", shape=(3,))
    W = g.parameter("W", w)
    J = gc.sum(gc.tanh(W @ gc.tanh(W @ x)))              # tied weights: W used by two layers
    (dW,) = gc.compile([gc.build_grad(J, [W])[W]]).run({"x": X})
    # untied copies W_a, W_b with the same value: the shared gradient is the sum of theirs (14.8)
    g2 = gc.Graph()
    x2 = g2.input("x", shape=(3,))
    Wa, Wb = g2.parameter("Wa", w), g2.parameter("Wb", w)
    J2 = gc.sum(gc.tanh(Wb @ gc.tanh(Wa @ x2)))
    gr = gc.build_grad(J2, [Wa, Wb])
    dWa, dWb = gc.compile([gr[Wa], gr[Wb]]).run({"x": X})
    np.testing.assert_allclose(dW, dWa + dWb, rtol=1e-12)
    assert not np.allclose(dWa, 0) and not np.allclose(dWb, 0)


def test_torralba_backpropagation_to_the_data():
    rng = np.random.default_rng(11)
    g = gc.Graph()
    x0 = g.input("x0", shape=(6,))
    W1, W2 = g.parameter("W1", rng.standard_normal((8, 6))), g.parameter("W2", rng.standard_normal((4, 8)))
    x2 = gc.matmul(W2, gc.tanh(W1 @ x0), name="x2")
    J = gc.negative(x2[1], name="J")                    # J = -x_l[i]: maximise neuron i of layer l
    dx = gc.build_grad(J, [x0])[x0]
    step = gc.compile([x2, dx])
    X = rng.standard_normal(6) * 0.1
    check_gradients(g, J, [x0], {"x0": X}, second=False)
    first = step.run({"x0": X})[0][1]
    for _ in range(50):
        _, d = step.run({"x0": X})
        X = X - 0.05 * d                                # descend the data gradient
    last = step.run({"x0": X})[0][1]
    assert last > first + 0.5
