"""Control flow (API section 10): scan, cond and while_loop, their derivatives to second order, errors."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import check_gradients

import graphcompiler as gc

T, B, D, H = 4, 2, 3, 3


def rnn_graph(length=T, reverse=False, unrolled=False, with_bias=True):
    """h_t = tanh(h_{t-1} W + x_t U + b), loss = sum(hs^2)/2 + sum(h_T): scan or unrolled in Python."""
    g = gc.Graph("rnn")
    xs = g.input("xs", (length, B, D))
    h0 = g.input("h0", (B, H))
    W = g.input("W", (H, H))
    U = g.input("U", (D, H))
    b = g.input("b", (H,))

    def step(h, x_t):
        z = gc.matmul(h, W) + gc.matmul(x_t, U)
        h = gc.tanh(z + b if with_bias else z)
        return h, h

    if unrolled:
        h, hs = h0, []
        order = range(length - 1, -1, -1) if reverse else range(length)
        got = {}
        for t in order:
            h, y = step(h, xs[t])
            got[t] = y
        hs = gc.stack([got[t] for t in range(length)])
        h_T = h
    else:
        h_T, hs = gc.scan(step, h0, xs, reverse=reverse)
    L = gc.add(0.5 * gc.sum(hs * hs), gc.sum(h_T), name="L")
    return g, L, (xs, h0, W, U, b), h_T, hs


def rnn_feeds(rng, length=T):
    return {"xs": rng.normal(size=(length, B, D)), "h0": 0.3 * rng.normal(size=(B, H)),
            "W": 0.5 * rng.normal(size=(H, H)), "U": 0.5 * rng.normal(size=(D, H)), "b": 0.1 * rng.normal(size=(H,))}


def numpy_rnn(f, reverse=False):
    h, hs = f["h0"], [None] * len(f["xs"])
    order = range(len(f["xs"]) - 1, -1, -1) if reverse else range(len(f["xs"]))
    for t in order:
        h = np.tanh(h @ f["W"] + f["xs"][t] @ f["U"] + f["b"])
        hs[t] = h
    return h, np.array(hs)


@pytest.mark.parametrize("reverse", [False, True])
def test_rnn_values_match_numpy(rng, reverse):
    g, L, ins, h_T, hs = rnn_graph(reverse=reverse)
    f = rnn_feeds(rng)
    got_hT, got_hs = gc.compile([h_T, hs]).run(f)
    want_hT, want_hs = numpy_rnn(f, reverse)
    np.testing.assert_allclose(got_hT, want_hT, rtol=1e-12)
    np.testing.assert_allclose(got_hs, want_hs, rtol=1e-12)


@pytest.mark.parametrize("reverse", [False, True])
def test_rnn_gradients_match_unrolled(rng, reverse):
    f = rnn_feeds(rng)
    results = []
    for unrolled in (False, True):
        g, L, ins, _, _ = rnn_graph(reverse=reverse, unrolled=unrolled)
        grads = gc.build_grad(L, list(ins))
        results.append(gc.compile([L] + [grads[n] for n in ins]).run(f))
    for a, b_ in zip(*results):
        np.testing.assert_allclose(a, b_, rtol=1e-10, atol=1e-12)


def test_rnn_gradients_and_hessian_vector_products_against_central_differences(rng):
    g, L, ins, _, _ = rnn_graph()
    check_gradients(g, L, list(ins), rnn_feeds(rng))


def test_rnn_reverse_second_order_against_central_differences(rng):
    g, L, ins, _, _ = rnn_graph(reverse=True)
    check_gradients(g, L, list(ins), rnn_feeds(rng))


def test_second_order_matches_unrolled_hvp(rng):
    f = rnn_feeds(rng)
    v = {k: rng.normal(size=np.shape(a)) for k, a in f.items()}
    results = []
    for unrolled in (False, True):
        g, L, ins, _, _ = rnn_graph(unrolled=unrolled)
        grads = gc.build_grad(L, list(ins))
        inner = gc.sum(grads[ins[0]] * g.constant(v["xs"]))
        for n in ins[1:]:
            inner = inner + gc.sum(grads[n] * g.constant(v[n.name]))
        hv = gc.build_grad(inner, list(ins))
        results.append(gc.compile([hv[n] for n in ins]).run(f))
    for a, b_ in zip(*results):
        np.testing.assert_allclose(a, b_, rtol=1e-9, atol=1e-11)


def test_derivative_of_a_scan_is_a_reverse_scan(rng):
    g, L, ins, _, _ = rnn_graph()
    n_before = len(g)
    grads = gc.build_grad(L, list(ins))
    new = g.nodes[n_before:]
    scans = [n for n in new if n.op.name == "scan"]
    assert scans and all(n.is_gradient for n in scans)
    reverse = [n for n in scans if n.op.body.forward is not None]
    assert reverse and all(n.op.body.reverse for n in reverse)     # the forward ran forwards
    # dL/dW: the reverse scans' summed carries (one reverse scan per forward result the loss reads: h_T, hs)
    assert grads[ins[2]].op.name == "add"
    assert {x.op.name for x in grads[ins[2]].inputs} == {"result"}
    assert {x.inputs[0].op.name for x in grads[ins[2]].inputs} == {"scan"}
    # the graph does not grow with the number of steps: compare a 4-step and a 50-step scan
    g50, L50, ins50, _, _ = rnn_graph(length=50)
    k = len(g50)
    gc.build_grad(L50, list(ins50))
    assert len(g50) - k == len(g) - n_before


def test_run_time_sequence_length(rng):
    g, L, ins, h_T, hs = rnn_graph(length=None)
    grads = gc.build_grad(L, [ins[2], ins[0]])
    prog = gc.compile([hs, grads[ins[2]], grads[ins[0]]])
    for length in (1, 3, 7):
        f = rnn_feeds(rng, length)
        got_hs, dW, dxs = prog.run(f)
        np.testing.assert_allclose(got_hs, numpy_rnn(f)[1], rtol=1e-12)
        assert dxs.shape == (length, B, D)
        g2, L2, ins2, _, _ = rnn_graph(length=length)
        want = gc.compile([gc.build_grad(L2, [ins2[2]])[ins2[2]]]).run(f)[0]
        np.testing.assert_allclose(dW, want, rtol=1e-10)
    # zero steps: the carry is the init, ys is empty
    f = rnn_feeds(rng, 0)
    hT, hs0 = gc.compile([h_T, hs]).run(f)
    np.testing.assert_allclose(hT, f["h0"])
    assert hs0.shape == (0, B, H)


def test_run_time_length_second_order(rng):
    g, L, ins, _, _ = rnn_graph(length=None)
    check_gradients(g, L, [ins[2], ins[1], ins[3]], rnn_feeds(rng, 3))


def lstm_graph(unrolled=False, length=T):
    g = gc.Graph("lstm")
    xs = g.input("xs", (length, B, D))
    h0 = g.input("h0", (B, H))
    c0 = g.input("c0", (B, H))
    Wx = g.input("Wx", (D, 4 * H))
    Wh = g.input("Wh", (H, 4 * H))
    bias = g.input("bias", (4 * H,))

    def step(carry, x_t):
        h, c = carry
        z = gc.matmul(x_t, Wx) + gc.matmul(h, Wh) + bias
        i, f, o, u = z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:]
        c = gc.sigmoid(f) * c + gc.sigmoid(i) * gc.tanh(u)
        h = gc.sigmoid(o) * gc.tanh(c)
        return (h, c), h

    if unrolled:
        carry, hs = (h0, c0), []
        for t in range(length):
            carry, y = step(carry, xs[t])
            hs.append(y)
        hs = gc.stack(hs)
        (h_T, c_T) = carry
    else:
        (h_T, c_T), hs = gc.scan(step, (h0, c0), xs)
    L = gc.add(gc.sum(gc.tanh(hs)), gc.sum(c_T * c_T), name="L")
    return g, L, (xs, h0, c0, Wx, Wh, bias)


def lstm_feeds(rng, length=T):
    return {"xs": rng.normal(size=(length, B, D)), "h0": 0.3 * rng.normal(size=(B, H)),
            "c0": 0.3 * rng.normal(size=(B, H)), "Wx": 0.4 * rng.normal(size=(D, 4 * H)),
            "Wh": 0.4 * rng.normal(size=(H, 4 * H)), "bias": 0.1 * rng.normal(size=(4 * H,))}


def test_lstm_tuple_carries_match_unrolled(rng):
    f = lstm_feeds(rng)
    results = []
    for unrolled in (False, True):
        g, L, ins = lstm_graph(unrolled)
        grads = gc.build_grad(L, list(ins))
        results.append(gc.compile([L] + [grads[n] for n in ins]).run(f))
    for a, b_ in zip(*results):
        np.testing.assert_allclose(a, b_, rtol=1e-10, atol=1e-12)


def test_lstm_second_order_against_central_differences(rng):
    g, L, ins = lstm_graph(length=3)
    check_gradients(g, L, list(ins), lstm_feeds(rng, 3))


def test_tuple_xs_and_tuple_ys_and_length_without_xs(rng):
    g = gc.Graph("t")
    a = g.input("a", (5, 2))
    b = g.input("b", (5,))
    s0 = g.input("s0", (2,))

    def step(s, x):
        xa, xb = x
        s = s * 0.5 + xa * xb
        return s, (s, gc.sum(s))

    s_T, (ss, tot) = gc.scan(step, s0, (a, b))
    fa, fb, fs = rng.normal(size=(5, 2)), rng.normal(size=(5,)), rng.normal(size=(2,))
    got = gc.compile([s_T, ss, tot]).run({"a": fa, "b": fb, "s0": fs})
    s, want = fs, []
    for t in range(5):
        s = s * 0.5 + fa[t] * fb[t]
        want.append(s)
    np.testing.assert_allclose(got[0], s)
    np.testing.assert_allclose(got[1], np.array(want))
    np.testing.assert_allclose(got[2], np.array(want).sum(axis=1))
    check_gradients(g, gc.sum(ss * ss) + gc.sum(tot), [a, b, s0], {"a": fa, "b": fb, "s0": fs})
    # length= without xs: powers of a matrix
    g2 = gc.Graph("pow")
    M = g2.input("M", (2, 2))
    v0 = g2.input("v0", (2,))
    v_T, vs = gc.scan(lambda v, _: (gc.matmul(M, v), v), v0, length=3)
    fM, fv = rng.normal(size=(2, 2)), rng.normal(size=(2,))
    got = gc.compile([v_T, vs]).run({"M": fM, "v0": fv})
    np.testing.assert_allclose(got[0], fM @ fM @ fM @ fv)
    np.testing.assert_allclose(got[1], [fv, fM @ fv, fM @ fM @ fv])
    check_gradients(g2, gc.sum(v_T * v_T), [M, v0], {"M": fM, "v0": fv})


def test_captured_weights_are_inputs_and_invariants_are_hoisted(rng):
    g = gc.Graph("h")
    xs = g.input("xs", (4, 3))
    W = g.input("W", (3, 3))
    h0 = g.input("h0", (3,))
    h_T, _ = gc.scan(lambda h, x: (gc.tanh(gc.matmul(gc.exp(W) * 0.5, h) + x), None), h0, xs)
    scan_node = h_T.inputs[0]
    body = scan_node.op.body
    assert [n.op.name for n in body.graph.nodes].count("exp") == 0      # exp(W)*0.5 hoisted out of the loop
    hoisted = scan_node.inputs[2]
    assert hoisted.op.name == "multiply" and hoisted.graph is g
    assert scan_node in g.consumers(xs) and W not in scan_node.inputs
    f = {"xs": rng.normal(size=(4, 3)), "W": 0.3 * rng.normal(size=(3, 3)), "h0": rng.normal(size=(3,))}
    h = f["h0"]
    for t in range(4):
        h = np.tanh(0.5 * np.exp(f["W"]) @ h + f["xs"][t])
    np.testing.assert_allclose(gc.compile(h_T).run(f)[0], h)
    check_gradients(g, gc.sum(h_T), [W, h0, xs], f)


def test_updates_are_not_served_stale_values(rng):
    """The loop's results are shared by its nodes; a parameter changed in place must be seen next run."""
    g = gc.Graph("train")
    xs = g.input("xs", (3, 2))
    W = g.parameter("W", 0.5 * np.eye(2))
    h0 = g.constant(np.ones(2))
    h_T, hs = gc.scan(lambda h, x: (gc.tanh(gc.matmul(W, h) + x), h), h0, xs)
    L = gc.sum(h_T * h_T) + gc.sum(hs)
    dW = gc.build_grad(L, [W])[W]
    train = gc.compile([L, dW], updates={W: W - 0.1 * dW})
    check = gc.compile([L, dW], optimize=False)
    X = rng.normal(size=(3, 2))
    for _ in range(3):
        want = check.run({"xs": X})
        got = train.run({"xs": X})
        np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-12)


def test_optimize_true_and_false_agree(rng):
    g, L, ins, h_T, hs = rnn_graph()
    grads = gc.build_grad(L, list(ins))
    outs = [L, hs] + [grads[n] for n in ins]
    f = rnn_feeds(rng)
    for a, b_ in zip(gc.compile(outs).run(f), gc.compile(outs, optimize=False).run(f)):
        np.testing.assert_allclose(a, b_, rtol=1e-12, atol=1e-14)
    prog = gc.compile(outs, memory_budget=10**9)
    for a, b_ in zip(prog.run(f), gc.compile(outs, optimize=False).run(f)):
        np.testing.assert_allclose(a, b_, rtol=1e-12, atol=1e-14)


def test_nested_scan(rng):
    g = gc.Graph("nest")
    xs = g.input("xs", (3, 4))
    w = g.input("w", ())

    def outer(s, row):
        inner, _ = gc.scan(lambda a, v: (a * w + v, None), s, row)
        return inner, inner

    s_T, ss = gc.scan(outer, g.constant(0.0), xs)
    fx, fw = rng.normal(size=(3, 4)), 0.7
    s, want = 0.0, []
    for r in fx:
        for v in r:
            s = s * fw + v
        want.append(s)
    got = gc.compile([s_T, ss]).run({"xs": fx, "w": fw})
    np.testing.assert_allclose(got[0], s)
    np.testing.assert_allclose(got[1], want)
    check_gradients(g, s_T * s_T, [xs, w], {"xs": fx, "w": np.array(fw)})


# -- cond and while_loop --------------------------------------------------------------------------

def test_cond_values_and_gradient_of_the_branch_taken(rng):
    g = gc.Graph("c")
    x = g.input("x", (3,))
    a = g.input("a", ())
    r = gc.cond(gc.greater(gc.sum(x), 0.0), lambda v: gc.sin(v) * a, lambda v: gc.log(v * v), x)
    L = gc.sum(r)
    grads = gc.build_grad(L, [x, a])
    prog = gc.compile([L, grads[x], grads[a]])
    xp = np.array([1.0, 2.0, -0.5])
    got = prog.run({"x": xp, "a": 1.5})
    np.testing.assert_allclose(got[0], np.sum(np.sin(xp) * 1.5))
    np.testing.assert_allclose(got[1], np.cos(xp) * 1.5)
    np.testing.assert_allclose(got[2], np.sum(np.sin(xp)))
    xn = np.array([-1.0, -2.0, 0.5])
    got = prog.run({"x": xn, "a": 1.5})
    np.testing.assert_allclose(got[0], np.sum(np.log(xn * xn)))
    np.testing.assert_allclose(got[1], 2 / xn)
    assert got[2] == 0.0
    # at x = 0 the untaken branch log(0) would give inf/NaN: the branch taken is all that runs
    got = prog.run({"x": np.array([0.0, 1.0, 0.0]), "a": 2.0})
    assert np.all(np.isfinite(got[1])) and np.all(np.isfinite(got[0]))
    for xv in (xp, xn):
        check_gradients(g, L, [x, a], {"x": xv, "a": np.array(1.5)})


def test_cond_tuple_results_and_captured_nodes(rng):
    g = gc.Graph("c2")
    x = g.input("x", (2,))
    W = g.input("W", (2, 2))
    p = g.input("p", (), dtype="bool")
    u, v = gc.cond(p, lambda y: (gc.matmul(W, y), y * 2.0), lambda y: (y, gc.exp(y)), x)
    L = gc.sum(u * v)
    f = {"x": rng.normal(size=2), "W": rng.normal(size=(2, 2))}
    for pv in (True, False):
        got = gc.compile([u, v]).run({**f, "p": pv})
        want = (f["W"] @ f["x"], 2 * f["x"]) if pv else (f["x"], np.exp(f["x"]))
        np.testing.assert_allclose(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1])
        check_gradients(g, L, [x, W], {**f, "p": np.array(pv)})


def test_while_loop_values_and_bounded_gradient(rng):
    g = gc.Graph("w")
    c0 = g.input("c0", ())
    k = g.input("k", ())
    out = gc.while_loop(lambda c: gc.less(c, 100.0), lambda c: c * k, c0)
    np.testing.assert_allclose(gc.compile(out).run({"c0": 1.0, "k": 1.7})[0], 1.7 ** 9)
    with pytest.raises(gc.UndefinedGradientError, match="max_steps"):
        gc.build_grad(out, [k])
    n = len(g)
    bounded = gc.while_loop(lambda c: gc.less(c, 100.0), lambda c: c * k, c0, max_steps=20)
    assert len(g) > n
    d = gc.build_grad(bounded, [k, c0])
    got = gc.compile([bounded, d[k], d[c0]]).run({"c0": 1.0, "k": 1.7})
    np.testing.assert_allclose(got, [1.7 ** 9, 9 * 1.7 ** 8, 1.7 ** 9])
    # a condition still holding after max_steps steps raises (never a value cut short); the program stays usable
    short = gc.while_loop(lambda c: gc.less(c, 100.0), lambda c: c * k, c0, max_steps=5, name="short")
    prog = gc.compile(short)
    with pytest.raises(gc.ExecutionError, match=r"'short'.*max_steps=5"):
        prog.run({"c0": 1.0, "k": 1.7})
    np.testing.assert_allclose(prog.run({"c0": 1.0, "k": 3.0})[0], 3.0 ** 5)
    check_gradients(g, bounded * bounded, [k, c0], {"c0": np.array(1.0), "k": np.array(1.7)})


def test_while_loop_tuple_carry_with_counter():
    g = gc.Graph("w2")
    x0 = g.input("x0", ())
    i, x = gc.while_loop(lambda c: gc.less(c[0], 4), lambda c: (c[0] + 1, gc.cos(c[1])),
                         (g.constant(np.int64(0)), x0))
    got = gc.compile([i, x]).run({"x0": 0.3})
    assert int(got[0]) == 4
    np.testing.assert_allclose(got[1], np.cos(np.cos(np.cos(np.cos(0.3)))))
    i2, x2 = gc.while_loop(lambda c: gc.less(c[0], 4), lambda c: (c[0] + 1, gc.cos(c[1])),
                           (g.constant(np.int64(0)), x0), max_steps=10)
    d = gc.build_grad(x2, [x0])[x0]
    got = gc.compile([i2, x2, d]).run({"x0": 0.3})
    assert int(got[0]) == 4
    v, dv = 0.3, 1.0
    for _ in range(4):
        dv *= -np.sin(v)
        v = np.cos(v)
    np.testing.assert_allclose(got[1:], [v, dv])



def test_bounded_while_loop_raises_when_the_bound_is_reached_forward_and_in_its_gradient():
    """A loop still running after max_steps steps is an error naming the loop and the bound, also when only
    its derivative is asked for (the gradient program runs the forward loop too), on every backend that runs it."""
    g = gc.Graph("ode")
    y0 = g.input("y0", ())
    rate = g.input("rate", ())
    t_y = gc.while_loop(lambda c: gc.less(c[0], 3.0), lambda c: (c[0] + 0.01, c[1] * (1.0 + 0.01 * rate)),
                        (g.constant(0.0), y0), max_steps=62, name="euler")
    d = gc.build_grad(t_y[1], [rate, y0])
    for backend in ("numpy", "c"):
        for outs in ([t_y[1]], [d[rate]], [t_y[1], d[y0]]):
            prog = gc.compile(outs, backend=backend)
            with pytest.raises(gc.ExecutionError, match=r"'euler'.*max_steps=62"):
                prog.run({"y0": 1.0, "rate": 0.5})
    # enough steps: the value and the gradient of the 300 steps it ran
    t_y = gc.while_loop(lambda c: gc.less(c[0], 3.0 - 1e-9), lambda c: (c[0] + 0.01, c[1] * (1.0 + 0.01 * rate)),
                        (g.constant(0.0), y0), max_steps=10**6, name="euler2")
    d = gc.build_grad(t_y[1], [rate])
    got = gc.compile([t_y[0], t_y[1], d[rate]]).run({"y0": 1.0, "rate": 0.5})
    np.testing.assert_allclose(got, [3.0, 1.005 ** 300, 300 * 0.01 * 1.005 ** 299], rtol=1e-9)


def test_bounded_while_loop_costs_the_steps_it_runs():
    """max_steps=2**40 with a loop that stops after one step: the forward run and its gradient return at once
    (they used to run, or allocate, 2**40 steps: the old code never returned). In a subprocess, so a hang fails."""
    import subprocess
    import sys
    from pathlib import Path

    code = """
import numpy as np, graphcompiler as gc
g = gc.Graph("w")
c0 = g.input("c0", ())
k = g.input("k", ())
W = g.input("W", (3, 3))
h0 = g.input("h0", (3,))
out = gc.while_loop(lambda c: gc.less(c, 1.5), lambda c: c * k, c0, max_steps=2**40)
i, h = gc.while_loop(lambda c: gc.less(c[0], 2), lambda c: (c[0] + 1, gc.tanh(gc.matmul(W, c[1]))),
                     (g.constant(np.int64(0)), h0), max_steps=2**40)
d = gc.build_grad(out, [k, c0])
dh = gc.build_grad(gc.sum(h), [W, h0])
r = gc.compile([out, d[k], d[c0], i, h, dh[W], dh[h0]]).run(
    {"c0": 1.0, "k": 1.7, "W": np.eye(3) * 0.5, "h0": np.ones(3)})
print(" ".join(f"{float(np.sum(v)):.12g}" for v in r))
"""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=root, env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    vals = [float(v) for v in done.stdout.split()]
    h1 = np.tanh(0.5 * np.ones(3))
    h2 = np.tanh(0.5 * h1)
    assert vals[:4] == pytest.approx([1.7, 1.0, 1.7, 2])
    assert vals[4] == pytest.approx(np.sum(h2))
    # dsum(h2)/dh0 through two tanh steps of W = I/2
    dh0 = (1 - h2 ** 2) * 0.5 * (1 - h1 ** 2) * 0.5
    assert vals[6] == pytest.approx(np.sum(dh0))


def test_bounded_while_loop_gradient_against_central_differences_when_it_stops_early(rng):
    g = gc.Graph("w3")
    W = g.input("W", (3, 3))
    x = g.input("x", (3,))
    h0 = g.input("h0", (3,))
    _, h = gc.while_loop(lambda c: gc.less(c[0], 4),
                         lambda c: (c[0] + 1, gc.tanh(gc.matmul(W, c[1]) + x)),
                         (g.constant(np.int64(0)), h0), max_steps=10**9)
    L = gc.sum(h * h)
    feeds = {"W": rng.normal(size=(3, 3)) * 0.5, "x": rng.normal(size=3), "h0": rng.normal(size=3)}
    check_gradients(g, L, [W, x, h0], feeds)   # second order too: Hessian-vector products through the tapes


def test_bounded_while_loop_gradient_saves_and_loads(tmp_path):
    """The gradient reads the loop's steps as object results (tapes): the file loads them back, and the
    loaded loop still raises at its bound."""
    g = gc.Graph("w4")
    W = g.input("W", (3, 3))
    h0 = g.input("h0", (3,))
    _, h = gc.while_loop(lambda c: gc.less(c[0], 3), lambda c: (c[0] + 1, gc.tanh(gc.matmul(W, c[1]))),
                         (g.constant(np.int64(0)), h0), max_steps=2**40, name="loop")
    d = gc.build_grad(gc.sum(h), [W, h0])
    dd = gc.build_grad(gc.sum(d[W] * d[W]) + gc.sum(d[h0]), [W])   # second order: sums of tapes
    _, short = gc.while_loop(lambda c: gc.less(c[0], 3), lambda c: (c[0] + 1, c[1] * 2.0),
                             (g.constant(np.int64(0)), h0), max_steps=2, name="short")
    g.save(tmp_path / "w.json")
    g2 = gc.load(tmp_path / "w.json")
    f = {"W": np.eye(3) * 0.5 + 0.1, "h0": np.ones(3)}
    want = gc.compile([h, d[W], d[h0], dd[W]]).run(f)
    got = gc.compile([g2[n.name] for n in (h, d[W], d[h0], dd[W])]).run(f)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    with pytest.raises(gc.ExecutionError, match=r"'short'.*max_steps=2"):
        gc.compile(g2[short.name]).run(f)

def test_scan_length_is_limited_where_the_scan_is_built():
    from graphcompiler.control import MAX_SCAN_LENGTH

    g = gc.Graph("long")
    h0 = g.input("h0", (2,))
    n = len(g)
    with pytest.raises(gc.GraphCompilerError, match=rf"length={2**40}.*{MAX_SCAN_LENGTH}"):
        gc.scan(lambda h, _: (h + 1.0, None), h0, length=2**40)
    assert len(g) == n
    gc.scan(lambda h, _: (h + 1.0, None), h0, length=MAX_SCAN_LENGTH)  # the limit itself is allowed

# -- errors and the other views of a graph --------------------------------------------------------

def test_carry_shape_mismatch_names_both_shapes():
    g = gc.Graph("e")
    xs = g.input("xs", (4, 3))
    h0 = g.input("h0", (2,))
    n = len(g)
    with pytest.raises(gc.ShapeError, match=r"\(3,\).*\(2,\)"):
        gc.scan(lambda h, x: (h + x, None), h0, xs)
    assert len(g) == n                                  # a rejected scan adds nothing
    with pytest.raises(gc.DTypeError, match="float32"):
        gc.scan(lambda h, x: (gc.astype(h, "float32"), None), h0, xs)
    with pytest.raises(gc.ShapeError, match="scalar"):
        gc.scan(lambda h, x: (h, None), h0, g.input("s", ()))
    with pytest.raises(gc.GraphCompilerError, match="pair"):
        gc.scan(lambda h, x: h, h0, xs)
    with pytest.raises(gc.ShapeError, match="scalar bool"):
        gc.cond(h0, lambda v: v, lambda v: v, h0)
    pred = gc.greater(gc.sum(h0), 0.0)
    n = len(g)
    with pytest.raises(gc.ShapeError, match=r"\(2,\).*\(\)"):
        gc.cond(pred, lambda v: v, lambda v: gc.sum(v), h0)
    assert len(g) == n                                  # nothing of the failed cond
    with pytest.raises(gc.ShapeError, match="4"):
        gc.scan(lambda h, x: (h, None), h0, (xs, g.input("ys5", (5, 2))))


def test_text_picture_symbolic_and_files(tmp_path, rng):
    g, L, ins, h_T, hs = rnn_graph()
    gc.build_grad(L, list(ins[1:]))
    text = str(g)
    assert "scan[" in text and "scan_1.h" in text and "reverse=True" in text
    assert "tanh" in str(h_T.inputs[0].op.body.graph)
    assert "scan" in gc.to_dot(g).source
    g2 = gc.Graph("s")
    v0 = g2.input("v0", (2, 1))
    M = g2.input("M", (2, 2))
    v_T, _ = gc.scan(lambda v, _: (gc.matmul(M, v), None), v0, length=3)
    assert "scan" in str(gc.to_sympy(v_T))


def test_files_round_trip_with_bodies(tmp_path, rng):
    """Scans (with their reverse scans), conds and while_loops save and load: the body as a nested graph."""
    g, L, ins, h_T, hs = rnn_graph()
    grads = gc.build_grad(L, list(ins))
    c = gc.cond(gc.greater(gc.sum(h_T), 0.0), lambda v: v * 2.0, lambda v: gc.exp(v), h_T, name="pick")
    w = gc.while_loop(lambda v: gc.less(gc.sum(v), 5.0), lambda v: v + 1.0, gc.abs(h_T), name="grow")
    wb = gc.while_loop(lambda v: gc.less(gc.sum(v), 5.0), lambda v: v + 1.0, gc.abs(h_T), max_steps=9)
    outs = [L, hs, c, w, wb] + [grads[n] for n in ins]
    g.save(tmp_path / "rnn.json")
    g2 = gc.load(tmp_path / "rnn.json")
    assert [n.name for n in g2.nodes] == [n.name for n in g.nodes]
    assert [n.op.name for n in g2.nodes] == [n.op.name for n in g.nodes]
    f = rnn_feeds(rng)
    want = gc.compile(outs).run(f)
    got = gc.compile([g2[n.name] for n in outs]).run(f)
    for a, b_ in zip(got, want):
        np.testing.assert_allclose(a, b_, rtol=1e-12)
    # the loaded scan differentiates again (second order through a loaded reverse scan)
    L2 = g2["L"]
    d2 = gc.build_grad(gc.sum(g2[grads[ins[2]].name] ** 2), [g2["W"]])[g2["W"]]
    d1 = gc.build_grad(gc.sum(grads[ins[2]] ** 2), [ins[2]])[ins[2]]
    np.testing.assert_allclose(gc.compile(d2).run(f)[0], gc.compile(d1).run(f)[0], rtol=1e-10)
    assert L2.op.name == "add"


def test_loader_checks_bodies(tmp_path):
    import json
    g = gc.Graph("s")
    xs = g.input("xs", (3, 2))
    h0 = g.input("h0", (2,))
    gc.scan(lambda h, x: (h * x, h), h0, xs)
    doc = json.loads(gc.io.dumps(g) if hasattr(gc, "io") else __import__("graphcompiler.io").io.dumps(g))
    scan_rec = next(r for r in doc["nodes"] if r["op"] == "scan")
    body_nodes = scan_rec["attrs"]["body"]["traced"]["graph"]["nodes"]
    body_nodes[0]["shape"] = [3]                       # the carry in no longer matches the carry out
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(gc.GraphFileError, match="body"):
        gc.load(p)
    doc = json.loads(__import__("graphcompiler.io").io.dumps(g))
    scan_rec = next(r for r in doc["nodes"] if r["op"] == "scan")
    scan_rec["attrs"]["body"]["traced"]["graph"]["nodes"][2]["op"] = "os.system"
    p.write_text(json.dumps(doc))
    with pytest.raises(gc.GraphFileError, match="not an op"):
        gc.load(p)
    doc = json.loads(__import__("graphcompiler.io").io.dumps(g))
    scan_rec = next(r for r in doc["nodes"] if r["op"] == "scan")
    scan_rec["attrs"] = {"body": 5}
    p.write_text(json.dumps(doc))
    with pytest.raises(gc.GraphFileError, match="body"):
        gc.load(p)


def test_recurrence_export_forward_and_backward():
    import sympy as sp
    g = gc.Graph("rec")
    xs = g.input("xs", (5, 3))
    h0 = g.input("h0", (4,))
    W = g.input("W", (4, 4))
    U = g.input("U", (4, 3))
    h_T, hs = gc.scan(lambda h, x_t: (gc.tanh(W @ h + U @ x_t),) * 2, h0, xs)
    eq_h, eq_y = gc.recurrence(h_T)
    h_prev, x_t = sp.MatrixSymbol("h_{t-1}", 4, 1), sp.MatrixSymbol("x_t", 3, 1)
    Ws, Us = sp.MatrixSymbol("W", 4, 4), sp.MatrixSymbol("U", 4, 3)
    assert str(eq_h.lhs) == "h_t" and str(eq_y.lhs) == "y_t"
    assert sp.simplify(eq_h.rhs.as_explicit() - (Ws * h_prev + Us * x_t).applyfunc(sp.tanh).as_explicit()) \
        == sp.zeros(4, 1)
    dW = gc.build_grad(gc.sum(hs), [W])[W]
    back = {str(e.lhs): e.rhs for e in gc.recurrence(dW)}
    assert set(back) == {"dh_t", "dW_t", "dU_t", "dx_t"}
    assert "dh_{t+1}" in str(back["dh_t"]) and "W.T" in str(back["dh_t"])    # dL/dh_t from dL/dh_{t+1}
    assert "dW_{t+1}" in str(back["dW_t"])                                     # the sum over steps
    with pytest.raises(gc.GraphCompilerError, match="scan"):
        gc.recurrence(W)


def test_float32_int_carry_nan_check_and_scan_inside_cond(rng):
    g = gc.Graph("mix")
    xs = g.input("xs", (4, 3), dtype="float32")
    W = g.input("W", (3, 3), dtype="float32")
    h0 = g.input("h0", (3,), dtype="float32")

    def step(c, x):
        k, h = c
        return (k + 1, gc.tanh(gc.matmul(W, h) + x * gc.astype(k, "float32"))), h

    (k_T, h_T), hs = gc.scan(step, (g.constant(np.int64(0)), h0), xs)
    assert h_T.dtype == np.float32 and hs.dtype == np.float32 and k_T.dtype == np.int64
    dW = gc.build_grad(gc.sum(h_T), [W])[W]
    assert dW.dtype == np.float32
    f = {"xs": rng.normal(size=(4, 3)).astype("float32"), "W": (0.5 * rng.normal(size=(3, 3))).astype("float32"),
         "h0": rng.normal(size=3).astype("float32")}
    got = gc.compile([k_T, h_T, dW], nan_check=True).run(f)
    h = f["h0"].astype(np.float64)
    for t in range(4):
        h = np.tanh(f["W"] @ h + f["xs"][t] * t)
    assert int(got[0]) == 4
    np.testing.assert_allclose(got[1], h, rtol=1e-5)
    g64 = gc.Graph("mix64")
    xs64, W64, h064 = g64.input("xs", (4, 3)), g64.input("W", (3, 3)), g64.input("h0", (3,))
    (_, hT64), _ = gc.scan(lambda c, x: ((c[0] + 1, gc.tanh(gc.matmul(W64, c[1]) + x * gc.astype(c[0], "float64"))),
                                         None), (g64.constant(np.int64(0)), h064), xs64)
    check_gradients(g64, gc.sum(hT64), [W64, h064, xs64], {k: v.astype(np.float64) for k, v in f.items()})
    # a scan inside a branch of a cond, differentiated through both
    g2 = gc.Graph("nest2")
    v = g2.input("v", (3,))
    p = g2.input("p", (), dtype="bool")

    def loop(u):
        u_T, _ = gc.scan(lambda a, _: (gc.sin(a) * 1.5, None), u, length=3)
        return u_T

    r = gc.cond(p, loop, lambda u: u * u, v)
    fv = rng.normal(size=3)
    for pv in (True, False):
        check_gradients(g2, gc.sum(r), [v], {"v": fv, "p": np.array(pv)})


def test_lstm_residuals_are_kept_and_saved(tmp_path, rng):
    """The LSTM's reverse step reads gate values the forward scan keeps per step (not recomputed); the
    residuals survive a file round trip and the loaded graph differentiates to the same numbers."""
    g, L, ins = lstm_graph()
    grads = gc.build_grad(L, list(ins))
    scan_node = next(n for n in g.nodes if n.op.name == "scan" and n.op.body.forward is None)
    assert scan_node.op.body.residuals                      # gate activations kept per step
    rev = next(n for n in g.nodes if n.op.name == "scan" and n.op.body.forward is not None)
    fwd_ops = {n.op.name for n in scan_node.op.body.graph.nodes}
    assert "sigmoid" in fwd_ops and "sigmoid" not in {n.op.name for n in rev.op.body.graph.nodes}
    f = lstm_feeds(rng)
    outs = [L] + [grads[n] for n in ins]
    want = gc.compile(outs).run(f)
    g.save(tmp_path / "lstm.json")
    g2 = gc.load(tmp_path / "lstm.json")
    got = gc.compile([g2[n.name] for n in outs]).run(f)
    for a, b_ in zip(got, want):
        np.testing.assert_allclose(a, b_, rtol=1e-12)


def test_unrolled_picture_is_the_same_computation(rng):
    g, L, ins, h_T, hs = rnn_graph()
    grads = gc.build_grad(L, list(ins))
    from graphcompiler.control.unroll import unroll
    u = unroll(g, max_steps=8)
    assert not any(n.op.name in ("scan", "result") for n in u.nodes)
    assert sum(n.op.name == "tanh" for n in u.nodes) >= T
    f = rnn_feeds(rng)
    outs = [L, hs] + [grads[n] for n in ins]
    for a, b_ in zip(gc.compile([u[n.name] for n in outs]).run(f), gc.compile(outs).run(f)):
        np.testing.assert_allclose(a, b_, rtol=1e-12)
    src = gc.to_dot(g, unroll=True).source
    assert "scan_1[3]/tanh" in src and "scan[" not in src and "scan_1[0]/xs[0]" in src
    short = unroll(g, max_steps=2)                       # longer scans stay loops
    assert any(n.op.name == "scan" for n in short.nodes)


def test_bptt_notebook_runs(tmp_path, monkeypatch):
    """notebooks/06_backprop_through_time.ipynb runs top to bottom and prints the recurrences and the loss."""
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    import test_notebooks as tn
    path = tn.ROOT / "notebooks" / "06_backprop_through_time.ipynb"
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:                                # run afresh: the committed outputs are not what is checked
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    work = getattr(tn.clean_home, "__wrapped__", tn.clean_home)(tmp_path, monkeypatch)
    out = tn.execute(nb, work)
    text = "".join(o.get("text", "") for c in out.cells if c.cell_type == "code" for o in c.outputs)
    assert "h_t" in text and "dh_{t+1}" in text and "loss" in text and "scan_1.h_stack" in text


def test_map_like_scan_passthrough_carry_and_reverse_lstm(rng):
    g = gc.Graph("map")
    xs = g.input("xs", (5, 2))
    w = g.input("w", (2,))
    c0 = g.input("c0", (2,))
    c_T, ys = gc.scan(lambda c, x: (c, gc.sin(x) * w + c), c0, xs)        # the carry passes through unchanged
    f = {"xs": rng.normal(size=(5, 2)), "w": rng.normal(size=2), "c0": rng.normal(size=2)}
    got = gc.compile([c_T, ys]).run(f)
    np.testing.assert_allclose(got[0], f["c0"])
    np.testing.assert_allclose(got[1], np.sin(f["xs"]) * f["w"] + f["c0"])
    check_gradients(g, gc.sum(ys * ys) + gc.sum(c_T), [xs, w, c0], f)
    # an LSTM run backwards over the sequence, to second order
    g2 = gc.Graph("lstm_rev")
    xs2 = g2.input("xs", (3, 1, 2))
    Wx = g2.input("Wx", (2, 8))
    Wh = g2.input("Wh", (2, 8))

    def step(carry, x_t):
        h, c = carry
        z = gc.matmul(x_t, Wx) + gc.matmul(h, Wh)
        c = gc.sigmoid(z[:, :2]) * c + gc.sigmoid(z[:, 2:4]) * gc.tanh(z[:, 6:])
        h = gc.sigmoid(z[:, 4:6]) * gc.tanh(c)
        return (h, c), h

    zeros = g2.constant(np.zeros((1, 2)))
    (h_T, c_T2), hs = gc.scan(step, (zeros, zeros), xs2, reverse=True)
    f2 = {"xs": rng.normal(size=(3, 1, 2)), "Wx": 0.5 * rng.normal(size=(2, 8)), "Wh": 0.5 * rng.normal(size=(2, 8))}
    check_gradients(g2, gc.sum(hs * hs) + gc.sum(c_T2), [xs2, Wx, Wh], f2)
