"""gc.optim: each optimizer against its handwritten NumPy update, step by step, in float64; state as graph
parameters (saved, loaded, drawn); schedules and global-norm clipping."""

from __future__ import annotations

import numpy as np
import pytest

import graphcompiler as gc

STEPS = 6
RNG = np.random.default_rng(7)
X = RNG.standard_normal((8, 3))
Y = RNG.standard_normal((8, 2))
W0 = RNG.standard_normal((3, 2))
B0 = RNG.standard_normal(2)


def model():
    """A least-squares layer: J = mean((X W + b - Y)^2), with its handwritten gradients."""
    g = gc.Graph("ls")
    x, y = g.input("x", (None, 3)), g.input("y", (None, 2))
    W, b = g.parameter("W", W0.copy()), g.parameter("b", B0.copy())
    r = x @ W + b - y
    J = gc.mean(r * r, name="J")
    return g, x, y, W, b, J


def np_grads(W, b):
    r = X @ W + b - Y
    return 2 * X.T @ r / r.size, 2 * r.sum(0) / r.size


def run_steps(updates, g, x, y, J, steps=STEPS):
    train = gc.compile([J], updates=updates)
    for _ in range(steps):
        train.run({x: X, y: Y})
    return train


def check(ref, g, W, b):
    np.testing.assert_allclose(g.value(W), ref[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g.value(b), ref[1], rtol=1e-12, atol=1e-14)


def reference(step_fn, steps=STEPS):
    params = [W0.copy(), B0.copy()]
    state = [dict(), dict()]
    for t in range(1, steps + 1):
        grads = np_grads(*params)
        params = [step_fn(p, gr, st, t) for p, gr, st in zip(params, grads, state)]
    return params


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd(momentum, nesterov):
    g, x, y, W, b, J = model()
    run_steps(gc.optim.sgd(J, [W, b], lr=0.05, momentum=momentum, nesterov=nesterov), g, x, y, J)

    def step(p, gr, st, t):
        if momentum == 0:
            return p - 0.05 * gr
        st["v"] = momentum * st.get("v", 0) + gr
        return p - 0.05 * (gr + momentum * st["v"] if nesterov else st["v"])
    check(reference(step), g, W, b)
    assert g.value("sgd/step") == STEPS
    assert ("sgd/velocity/W" in g) == (momentum != 0)


def _adam_step(lr, b1, b2, eps, wd):
    def step(p, gr, st, t):
        st["m"] = b1 * st.get("m", 0) + (1 - b1) * gr
        st["v"] = b2 * st.get("v", 0) + (1 - b2) * gr ** 2
        m_hat, v_hat = st["m"] / (1 - b1 ** t), st["v"] / (1 - b2 ** t)
        return p * (1 - lr * wd) - lr * m_hat / (np.sqrt(v_hat) + eps)
    return step


def test_adam():
    g, x, y, W, b, J = model()
    run_steps(gc.optim.adam(J, [W, b], lr=0.1, b1=0.8, b2=0.95, eps=1e-6), g, x, y, J)
    check(reference(_adam_step(0.1, 0.8, 0.95, 1e-6, 0.0)), g, W, b)
    np.testing.assert_allclose(g.value("adam/m/W"), reference_moments()[0], rtol=1e-12)
    assert g.value("adam/step") == STEPS


def reference_moments():
    params, m = [W0.copy(), B0.copy()], [0, 0]
    step = _adam_step(0.1, 0.8, 0.95, 1e-6, 0.0)
    states = [dict(), dict()]
    for t in range(1, STEPS + 1):
        grads = np_grads(*params)
        params = [step(p, gr, st, t) for p, gr, st in zip(params, grads, states)]
    m = [st["m"] for st in states]
    return m


def test_adamw():
    g, x, y, W, b, J = model()
    run_steps(gc.optim.adamw(J, [W, b], lr=0.05, weight_decay=0.1), g, x, y, J)
    check(reference(_adam_step(0.05, 0.9, 0.999, 1e-8, 0.1)), g, W, b)


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_rmsprop(momentum):
    g, x, y, W, b, J = model()
    run_steps(gc.optim.rmsprop(J, [W, b], lr=0.01, alpha=0.9, eps=1e-8, momentum=momentum), g, x, y, J)

    def step(p, gr, st, t):
        st["s"] = 0.9 * st.get("s", 0) + 0.1 * gr ** 2
        d = gr / (np.sqrt(st["s"]) + 1e-8)
        if momentum:
            st["b"] = momentum * st.get("b", 0) + d
            d = st["b"]
        return p - 0.01 * d
    check(reference(step), g, W, b)


def test_grads_dict_and_clipping():
    g, x, y, W, b, J = model()
    grads = gc.build_grad(J, [W, b])
    clipped = gc.optim.clip_by_global_norm(grads, 0.5)
    run_steps(gc.optim.sgd(clipped, [W, b], lr=0.1), g, x, y, J)

    def step_all(params):
        gw, gb = np_grads(*params)
        norm = np.sqrt((gw ** 2).sum() + (gb ** 2).sum())
        s = 0.5 / max(norm, 0.5)
        return [params[0] - 0.1 * gw * s, params[1] - 0.1 * gb * s]
    params = [W0.copy(), B0.copy()]
    for _ in range(STEPS):
        params = step_all(params)
    check(params, g, W, b)
    # within the norm nothing changes
    norm = gc.compile(gc.optim.global_norm(grads)).run({x: X, y: Y})[0]
    gw, gb = np_grads(g.value(W), g.value(b))
    np.testing.assert_allclose(norm, np.sqrt((gw ** 2).sum() + (gb ** 2).sum()), rtol=1e-12)


def test_schedule_as_graph_expression():
    g, x, y, W, b, J = model()
    upd = gc.optim.sgd(J, [W, b], lr=lambda step: gc.optim.exponential_decay(step, 0.1, 0.5, decay_steps=2))
    run_steps(upd, g, x, y, J)

    def step(p, gr, st, t):
        return p - 0.1 * 0.5 ** ((t - 1) / 2) * gr      # the schedule reads the step count before the increment
    check(reference(step), g, W, b)


def test_cosine_and_staircase_schedules():
    g = gc.Graph()
    step = gc.optim.step_count(g)
    lrs = gc.compile([gc.optim.cosine_decay(step, 0.2, 10, alpha=0.1),
                      gc.optim.exponential_decay(step, 1.0, 0.5, decay_steps=3, staircase=True)])
    for t in [0, 4, 10, 15]:
        g.set_value(step, t)
        cos, stair = lrs.run()
        ref = 0.2 * ((1 - 0.1) * 0.5 * (1 + np.cos(np.pi * min(t, 10) / 10)) + 0.1)
        np.testing.assert_allclose(cos, ref, rtol=1e-12)
        assert stair == 0.5 ** (t // 3)


def test_lr_node():
    g, x, y, W, b, J = model()
    lr = g.parameter("lr", np.array(0.05))
    run_steps(gc.optim.sgd(J, [W, b], lr=lr), g, x, y, J)
    check(reference(lambda p, gr, st, t: p - 0.05 * gr), g, W, b)


def test_updates_read_old_values():
    """The Program computes every update before writing any (Theano's semantics): a swap swaps."""
    g = gc.Graph()
    a, c = g.parameter("a", np.array([1.0, 2.0])), g.parameter("c", np.array([3.0, 4.0]))
    gc.compile([gc.sum(a)], updates={a: c * 1.0, c: a * 1.0}).run()
    np.testing.assert_array_equal(g.value(a), [3.0, 4.0])
    np.testing.assert_array_equal(g.value(c), [1.0, 2.0])


def test_state_saved_loaded_and_drawn(tmp_path):
    g, x, y, W, b, J = model()
    upd = gc.optim.adam(J, [W, b], lr=0.1)
    run_steps(upd, g, x, y, J, steps=3)
    path = tmp_path / "adam.json"
    g.save(path)
    h = gc.load(path)
    for name in ["adam/step", "adam/m/W", "adam/v/W", "adam/m/b", "adam/v/b", "W", "b"]:
        np.testing.assert_array_equal(h.value(name), g.value(name))
    # training goes on identically from the loaded state
    train_h = gc.compile([h["J"]], updates={h[p.name]: h[v.name] for p, v in upd.items()})
    run_steps(upd, g, x, y, J, steps=2)
    for _ in range(2):
        train_h.run({"x": X, "y": Y})
    for name in ["W", "b", "adam/m/W", "adam/step"]:
        np.testing.assert_allclose(h.value(name), g.value(name), rtol=1e-13)
    src = gc.to_dot(g).source
    assert "adam/m/W" in src and "adam/step" in src and "dotted cylinder: optimizer state" in src
    line = next(ln for ln in src.splitlines() if 'tooltip="adam/m/W: parameter' in ln)
    assert "filled,dotted" in line                     # optimizer state is drawn apart from the weights
    plain = next(ln for ln in src.splitlines() if 'tooltip="W: parameter' in ln)
    assert "dotted" not in plain


def test_bad_arguments():
    g, x, y, W, b, J = model()
    with pytest.raises(gc.GraphCompilerError, match="not a parameter"):
        gc.optim.sgd(J, [x], lr=0.1)
    with pytest.raises(gc.GraphCompilerError, match="no gradient given for b"):
        gc.optim.adam({W: gc.build_grad(J, [W])[W]}, [W, b])
