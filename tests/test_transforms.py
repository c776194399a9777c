"""make_graph / function / grad / value_and_grad on plain NumPy functions; jvp, jacobian and hessian as graph
nodes, against handwritten derivatives and central differences."""

from __future__ import annotations

import numpy as np
import pytest

import graphcompiler as gc

RNG = np.random.default_rng(3)


def mlp_loss(x, W1, W2):
    """Plain NumPy: nothing but `np` in here."""
    h = np.tanh(x @ W1)
    o = h @ W2
    return np.mean(np.log(1.0 + np.exp(o))) + 0.01 * np.sum(W1 ** 2)


def num_grad(f, args, k, eps=1e-6):
    """Central differences of a scalar f with respect to args[k]."""
    a = [np.array(v, dtype=float) for v in args]
    out = np.zeros_like(a[k])
    for idx in np.ndindex(a[k].shape):
        plus = [v.copy() for v in a]
        minus = [v.copy() for v in a]
        plus[k][idx] += eps
        minus[k][idx] -= eps
        out[idx] = (f(*plus) - f(*minus)) / (2 * eps)
    return out


X, W1, W2 = RNG.standard_normal((5, 4)), RNG.standard_normal((4, 3)), RNG.standard_normal((3, 2))


def test_make_graph_plain_numpy():
    g, inputs, outputs = gc.make_graph(mlp_loss, gc.Spec((None, 4)), W1, W2, name="mlp")
    assert g.name == "mlp" and [i.name for i in inputs] == ["x", "W1", "W2"]
    assert inputs[0].shape == (None, 4) and len(outputs) == 1 and outputs[0].shape == ()
    prog = gc.compile(outputs)
    np.testing.assert_allclose(prog.run({"x": X, "W1": W1, "W2": W2})[0], mlp_loss(X, W1, W2), rtol=1e-13)
    np.testing.assert_allclose(prog.run({"x": X[:2], "W1": W1, "W2": W2})[0], mlp_loss(X[:2], W1, W2),
                               rtol=1e-13)
    dW1 = gc.build_grad(outputs[0], [inputs[1]])[inputs[1]]     # differentiates as any graph
    np.testing.assert_allclose(gc.compile(dW1).run({"x": X, "W1": W1, "W2": W2})[0],
                               num_grad(mlp_loss, (X, W1, W2), 1), rtol=1e-6, atol=1e-9)


def test_function_caches_per_signature():
    calls = []

    @gc.function
    def f(x, y):
        calls.append(1)
        return np.sum(x * y, axis=0), np.exp(x)

    a, b = RNG.standard_normal((3, 2)), RNG.standard_normal((3, 2))
    s, e = f(a, b)
    np.testing.assert_allclose(s, (a * b).sum(0), rtol=1e-14)
    np.testing.assert_allclose(e, np.exp(a), rtol=1e-14)
    f(b, a)  # a signature's first call traces twice (the second trace checks for host randomness)
    assert len(calls) == 2 and len(f.signatures) == 1
    f(a[:2], b[:2])
    assert len(calls) == 4 and len(f.signatures) == 2
    f(a.astype(np.float32), b.astype(np.float32))
    assert len(calls) == 6
    assert isinstance(f.graph, gc.Graph) and isinstance(f.program, gc.Program)
    assert f.graph.inputs()[0].dtype == np.float32
    single = gc.function(lambda x: np.tanh(x))
    out = single(a)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, np.tanh(a), rtol=1e-14)


def test_grad_and_value_and_grad():
    g1 = gc.grad(mlp_loss, argnums=1)
    np.testing.assert_allclose(g1(X, W1, W2), num_grad(mlp_loss, (X, W1, W2), 1), rtol=1e-6, atol=1e-9)
    vg = gc.value_and_grad(mlp_loss, argnums=(1, 2))
    v, (d1, d2) = vg(X, W1, W2)
    np.testing.assert_allclose(v, mlp_loss(X, W1, W2), rtol=1e-13)
    np.testing.assert_allclose(d2, num_grad(mlp_loss, (X, W1, W2), 2), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(d1, g1(X, W1, W2), rtol=1e-13)
    # handwritten: d/dx sum(x^3) = 3 x^2; an argument not used gets zeros (as in JAX)
    gx = gc.grad(lambda x, unused: np.sum(x ** 3), argnums=(0, 1))
    a = RNG.standard_normal(4)
    d, z = gx(a, a)
    np.testing.assert_allclose(d, 3 * a ** 2, rtol=1e-13)
    np.testing.assert_array_equal(z, 0)
    assert gx.program.graph is gx.graph


def test_grad_needs_a_scalar():
    with pytest.raises(gc.ShapeError, match="one scalar"):
        gc.grad(lambda x: np.tanh(x))(np.ones(3))
    with pytest.raises(gc.GraphCompilerError, match="out of range"):
        gc.grad(lambda x: np.sum(x), argnums=2)(np.ones(3))


def test_jvp_against_handwritten_and_central_differences():
    g = gc.Graph()
    x, W = g.input("x", (None, 4)), g.input("W", (4, 3))
    vx, vW = g.input("vx", (None, 4)), g.input("vW", (4, 3))
    y = np.tanh(x @ W)
    s = np.sum(y * y)
    jy, js = gc.jvp([y, s], [x, W], [vx, vW])
    assert jy.shape == y.shape and js.shape == ()
    VX, VW = RNG.standard_normal((5, 4)), RNG.standard_normal((4, 3))
    feeds = {x: X, W: W1, vx: VX, vW: VW}
    got_y, got_s = gc.compile([jy, js]).run(feeds)
    Y = np.tanh(X @ W1)
    hand = (1 - Y ** 2) * (VX @ W1 + X @ VW)                     # handwritten JVP of tanh(x W)
    np.testing.assert_allclose(got_y, hand, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got_s, np.sum(2 * Y * hand), rtol=1e-12)
    eps = 1e-6                                                    # central differences along (vx, vW)
    fd = (np.tanh((X + eps * VX) @ (W1 + eps * VW)) - np.tanh((X - eps * VX) @ (W1 - eps * VW))) / (2 * eps)
    np.testing.assert_allclose(got_y, fd, rtol=1e-6, atol=1e-8)
    # the cotangent stand-in needs no feed; unoptimised agrees
    np.testing.assert_allclose(gc.compile([jy], optimize=False).run(feeds)[0], hand, rtol=1e-12, atol=1e-14)


def test_jvp_through_numpy_reductions_and_shapes():
    def f(a):
        return np.concatenate([np.max(a, axis=1), np.mean(np.sin(a) ** 2, axis=1)]) * np.sum(np.sqrt(a))
    A = RNG.uniform(0.5, 2.0, (3, 4))
    V = RNG.standard_normal((3, 4))
    g, (a,), (y,) = gc.make_graph(f, A)
    v = g.constant(V, name="v")
    (jy,) = gc.jvp(y, a, v)
    got = gc.compile(jy).run({a: A})[0]
    eps = 1e-6
    np.testing.assert_allclose(got, (f(A + eps * V) - f(A - eps * V)) / (2 * eps), rtol=1e-6, atol=1e-8)


def test_jvp_checks_tangents():
    g = gc.Graph()
    x = g.input("x", (3,))
    with pytest.raises(gc.ShapeError, match="tangent"):
        gc.jvp([gc.sum(x)], [x], [g.input("v", (4,))])


def test_jacobian_against_handwritten_and_numerical():
    g = gc.Graph()
    x = g.input("x", (3,))
    W = g.parameter("W", W1.T.copy())                           # (3, 4)
    y = np.tanh(x @ W)                                           # (4,)
    Jx, JW = gc.jacobian(y, [x, W])
    assert Jx.shape == (4, 3) and JW.shape == (4, 3, 4)
    x0 = RNG.standard_normal(3)
    jx, jw = gc.compile([Jx, JW]).run({x: x0})
    Y = np.tanh(x0 @ W1.T)
    np.testing.assert_allclose(jx, (1 - Y ** 2)[:, None] * W1, rtol=1e-12)   # diag(1 - y^2) W^T
    num = np.stack([num_grad(lambda W_: np.tanh(x0 @ W_)[k], (W1.T,), 0) for k in range(4)])
    np.testing.assert_allclose(jw, num, rtol=1e-6, atol=1e-9)


def test_jacobian_of_matrix_output():
    g = gc.Graph()
    A = g.input("A", (2, 3))
    y = np.exp(A).T                                              # (3, 2)
    J = gc.jacobian(y, A)
    assert J.shape == (3, 2, 2, 3)
    A0 = RNG.standard_normal((2, 3))
    got = gc.compile(J).run({A: A0})[0]
    ref = np.zeros((3, 2, 2, 3))
    for i in range(3):
        for j in range(2):
            ref[i, j, j, i] = np.exp(A0[j, i])
    np.testing.assert_allclose(got, ref, rtol=1e-13)


def test_hessian():
    g = gc.Graph()
    x = g.input("x", (4,))
    L = np.log(np.sum(np.exp(x)))                                # logsumexp: H = diag(p) - p p^T
    H = gc.hessian(L, x)
    assert H.shape == (4, 4)
    x0 = RNG.standard_normal(4)
    p = np.exp(x0) / np.exp(x0).sum()
    np.testing.assert_allclose(gc.compile(H).run({x: x0})[0], np.diag(p) - np.outer(p, p), rtol=1e-10,
                               atol=1e-13)
    # a matrix argument: shape x.shape + x.shape, against central differences of the gradient
    h = gc.Graph()
    W = h.input("W", (2, 3))
    xs = h.constant(RNG.standard_normal((5, 2)))
    J = np.sum(np.tanh(xs @ W) ** 2)
    HW = gc.hessian(J, W)
    assert HW.shape == (2, 3, 2, 3)
    W0 = RNG.standard_normal((2, 3))
    dW = gc.compile(gc.build_grad(J, [W])[W])
    num = np.zeros((2, 3, 2, 3))
    eps = 1e-6
    for idx in np.ndindex(2, 3):
        E = np.zeros((2, 3))
        E[idx] = eps
        num[:, :, idx[0], idx[1]] = (dW.run({W: W0 + E})[0] - dW.run({W: W0 - E})[0]) / (2 * eps)
    got = gc.compile(HW).run({W: W0})[0]
    np.testing.assert_allclose(got, num, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(got.reshape(6, 6), got.reshape(6, 6).T, rtol=1e-12, atol=1e-14)


def test_jacobian_needs_static_shapes():
    g = gc.Graph()
    x = g.input("x", (None, 3))
    with pytest.raises(gc.ShapeError, match="static shapes"):
        gc.jacobian(np.tanh(x), x)


def test_hvp_forward_over_reverse_equals_reverse_over_reverse():
    g = gc.Graph()
    x = g.input("x", (None, 4))
    W = g.parameter("W", W1.copy())
    v = g.input("v", (4, 3))
    J = np.mean(np.tanh(x @ W) ** 2)
    gW = gc.build_grad(J, [W])[W]
    (fwd,) = gc.jvp([gW], [W], [v])
    rev = gc.build_grad(np.sum(gW * v), [W])[W]
    V = RNG.standard_normal((4, 3))
    a, b = gc.compile([fwd, rev]).run({x: X, v: V})
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def _jvp_cases():
    from test_numpy_api import CASES
    return sorted(CASES)


@pytest.mark.parametrize("name", _jvp_cases())
def test_jvp_of_every_numpy_function(name):
    """gc.jvp through every entry of the NumPy table, against central differences of NumPy itself."""
    from test_numpy_api import CASES
    from graphcompiler.numpy_api import OpNotAvailableError
    fn, arrays = CASES[name]
    g = gc.Graph(name)
    nodes = [g.input(f"a{k}", a.shape, a.dtype) for k, a in enumerate(arrays)]
    try:
        result = fn(*nodes)
    except OpNotAvailableError as e:
        pytest.skip(str(e))
    outs = list(result) if isinstance(result, (tuple, list)) else [result]
    keep = [k for k, o in enumerate(outs) if isinstance(o, gc.Node) and o.dtype.kind == "f"]
    floats = [n for n in nodes if n.dtype.kind == "f"]
    if not keep or not floats:
        pytest.skip(f"{name}: no floating input and output")
    rng = np.random.default_rng(1)
    tangents = {n: rng.standard_normal(n.shape) for n in floats}
    jv = gc.jvp([outs[k] for k in keep], floats, [g.constant(tangents[n]) for n in floats])
    got = gc.compile(jv).run(dict(zip(nodes, arrays)))
    eps = 1e-6
    plus = [a + eps * tangents[n] if n in tangents else a for n, a in zip(nodes, arrays)]
    minus = [a - eps * tangents[n] if n in tangents else a for n, a in zip(nodes, arrays)]
    rp, rm = fn(*plus), fn(*minus)
    rp = list(rp) if isinstance(rp, (tuple, list)) else [rp]
    rm = list(rm) if isinstance(rm, (tuple, list)) else [rm]
    for j, k in enumerate(keep):
        np.testing.assert_allclose(got[j], (np.asarray(rp[k]) - np.asarray(rm[k])) / (2 * eps), rtol=1e-5,
                                   atol=1e-6, err_msg=name)


def test_readme_numpy_example_runs(capsys):
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (example,) = [p.split("```")[0] for p in text.split("```py\n")[1:]]
    namespace: dict = {"__name__": "readme_numpy"}
    exec(compile(example, "README.md", "exec"), namespace)
    assert namespace["dW"].shape == (4, 3)
    assert namespace["h"].value("adam/step") == 1
    assert "Graph 'loss'" in capsys.readouterr().out


def test_function_returns_what_fn_returns():
    f = gc.function(lambda x, s: [x * s, np.sum(x)])
    out = f(np.arange(3.0), 2.0)                                 # a Python number is a 0-d float64 argument
    assert isinstance(out, list) and len(out) == 2
    np.testing.assert_array_equal(out[0], [0.0, 2.0, 4.0])
    assert out[1] == 3.0
    with pytest.raises(gc.GraphCompilerError, match="by position"):
        f(x=np.ones(2), s=1.0)
    with pytest.raises(gc.GraphCompilerError, match="not been called"):
        gc.function(np.tanh).graph
