"""Optimizers as graph updates: each returns {parameter: new value node} for gc.compile(..., updates=...).

An optimizer's state (velocities, moments, the step count) are parameters of the graph, named
`<optimizer>/<slot>/<parameter>` (`adam/m/W1`) and `<optimizer>/step`, so they are saved and loaded with
the graph and drawn with it. Every new value is computed from the old values: a Program computes all the
updates first and only then writes them (Theano's semantics), so the step count and the moments of one step
all read the state as it was before that step.

Learning rates are numbers, scalar nodes, or callables of the step-count node (a schedule such as
`lambda step: gc.optim.exponential_decay(step, 0.1, 0.5, decay_steps=100)`), evaluated at the step count
before the increment (0 on the first step).

Parameters are one node or a pytree of them (nested lists, tuples and dicts, as gc.tree_flatten reads them:
`{"layer1": (W1, b1), ...}`); gradients are the loss node, a {parameter: gradient} dict, or a pytree of
gradient nodes in the parameters' structure. The updates are always the flat {node: new value} dict.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .errors import GraphCompilerError
from .graph import Graph, Node
from .pytree import leaf_paths, tree_flatten, tree_leaves, tree_map, tree_structure

__all__ = [
    "sgd",
    "adam",
    "adamw",
    "rmsprop",
    "clip_by_global_norm",
    "global_norm",
    "exponential_decay",
    "cosine_decay",
    "step_count",
]

LR = float | Node | Callable[[Node], Any]


def _E():
    from .ops import elementwise as E

    return E


def _params(params: Any, who: str) -> list[Node]:
    """The parameter nodes of params: one node, or a pytree of them (nested lists, tuples, dicts; None skipped)."""
    leaves, tree = tree_flatten(params)
    if not leaves:
        raise GraphCompilerError(f"{who}: give at least one parameter to optimize")
    for p, path in zip(leaves, leaf_paths(tree, "params")):
        if not isinstance(p, Node) or p.op.name != "parameter":
            raise GraphCompilerError(
                f"{who}: {path} ({getattr(p, 'name', type(p).__name__)!r}) is not a parameter node; only "
                "parameters (g.parameter) can be updated"
            )
        if p.dtype.kind != "f":
            raise GraphCompilerError(
                f"{who}: parameter {p.name!r} has dtype {p.dtype}; only floating parameters can be optimized"
            )
    return leaves


def _is_table(grads: Any) -> bool:
    """A {parameter node: gradient node} dict (build_grad's table), not a pytree of gradients."""
    return isinstance(grads, Mapping) and bool(grads) and all(isinstance(k, Node) for k in grads)


def _grads(loss_or_grads: Any, params: Any, who: str) -> dict[Node, Node]:
    """{parameter: gradient} from the loss node, a {parameter: gradient} dict, or gradients in params' structure."""
    nodes = _params(params, who)
    if isinstance(loss_or_grads, Node):
        from .autodiff import build_grad

        return build_grad(loss_or_grads, list(dict.fromkeys(nodes)))
    if _is_table(loss_or_grads):
        grads = dict(loss_or_grads)
        missing = [p.name for p in nodes if p not in grads]
        if missing:
            raise GraphCompilerError(
                f"{who}: no gradient given for {', '.join(missing)}; pass the loss node, or a "
                "dict {parameter: gradient node} covering every parameter"
            )
        return {p: grads[p] for p in nodes}
    g_leaves, g_tree = tree_flatten(loss_or_grads)
    p_tree = tree_structure(params)
    if g_tree != p_tree:
        raise GraphCompilerError(
            f"{who}: the gradients have the structure {g_tree!r} but the parameters {p_tree!r}; pass the loss "
            "node, a dict {parameter: gradient node}, or gradients in the parameters' structure"
        )
    for g, path in zip(g_leaves, leaf_paths(g_tree, "grads")):
        if not isinstance(g, Node):
            raise GraphCompilerError(f"{who}: the gradient {path} is a {type(g).__name__}, not a graph node")
    return dict(zip(nodes, g_leaves))


def _slot(graph: Graph, who: str, slot: str, p: Node) -> Node:
    """A zero-initialised state parameter of p's shape and dtype, named who/slot/p."""
    return graph.parameter(graph.unique_name(f"{who}/{slot}/{p.name}"), np.zeros(p.shape, p.dtype))


def step_count(graph: Graph, name: str = "step") -> Node:
    """A new int64 scalar parameter starting at 0: the step count schedules read and optimizers increment."""
    return graph.parameter(graph.unique_name(name), np.zeros((), np.int64))


def _lr(lr: LR, step: Node, dtype) -> Any:
    value: Any = lr(step) if callable(lr) and not isinstance(lr, Node) else lr  # a schedule gives any of these
    if isinstance(value, Node):
        if value.shape != ():
            raise GraphCompilerError(f"the learning rate {value.name!r} must be a scalar node")
        return value if value.dtype == dtype else _E().astype(value, dtype)
    return float(value)


def _increment(step: Node) -> Node:
    return _E().add(step, np.array(1, np.int64))


def _graph(params) -> Graph:
    return tree_leaves(params)[0].graph


def sgd(
    loss_or_grads: Node | Mapping[Node, Node] | Any,
    params: Node | Sequence[Node] | Any,
    lr: LR,
    momentum: float = 0.0,
    nesterov: bool = False,
) -> dict[Node, Node]:
    """Stochastic gradient descent, with momentum as PyTorch writes it:
    v <- momentum v + g;  p <- p - lr v   (Nesterov: p <- p - lr (g + momentum v)); without momentum,
    p <- p - lr g and there is no velocity state."""
    grads = _grads(loss_or_grads, params, "optim.sgd")
    E = _E()
    graph = _graph(params)
    step = step_count(graph, "sgd/step")
    updates: dict[Node, Node] = {step: _increment(step)}
    for p, g in grads.items():
        rate = _lr(lr, step, p.dtype)
        if momentum == 0.0:
            updates[p] = E.subtract(p, E.multiply(rate, g))
            continue
        v = _slot(graph, "sgd", "velocity", p)
        v_new = E.add(E.multiply(momentum, v), g)
        direction = E.add(g, E.multiply(momentum, v_new)) if nesterov else v_new
        updates[v] = v_new
        updates[p] = E.subtract(p, E.multiply(rate, direction))
    return updates


def _adam(who, loss_or_grads, params, lr, b1, b2, eps, weight_decay) -> dict[Node, Node]:
    grads = _grads(loss_or_grads, params, f"optim.{who}")
    E = _E()
    graph = _graph(params)
    step = step_count(graph, f"{who}/step")
    t_next = _increment(step)
    updates: dict[Node, Node] = {step: t_next}
    for p, g in grads.items():
        rate = _lr(lr, step, p.dtype)
        m, v = _slot(graph, who, "m", p), _slot(graph, who, "v", p)
        m_new = E.add(E.multiply(b1, m), E.multiply(1 - b1, g))  # m <- b1 m + (1 - b1) g
        v_new = E.add(E.multiply(b2, v), E.multiply(1 - b2, E.square(g)))  # v <- b2 v + (1 - b2) g^2
        t = E.astype(t_next, p.dtype)
        m_hat = E.divide(m_new, E.subtract(1, E.power(np.array(b1, p.dtype), t)))  # m / (1 - b1^t)
        v_hat = E.divide(v_new, E.subtract(1, E.power(np.array(b2, p.dtype), t)))  # v / (1 - b2^t)
        step_dir = E.divide(m_hat, E.add(E.sqrt(v_hat), eps))
        if not weight_decay:
            base = p
        elif isinstance(rate, Node):  # p (1 - lr wd)
            base = E.multiply(p, E.subtract(1, E.multiply(rate, weight_decay)))
        else:
            base = E.multiply(p, 1 - rate * weight_decay)
        updates[m], updates[v] = m_new, v_new
        updates[p] = E.subtract(base, E.multiply(rate, step_dir))
    return updates


def adam(
    loss_or_grads: Node | Mapping[Node, Node] | Any,
    params: Node | Sequence[Node] | Any,
    lr: LR = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> dict[Node, Node]:
    """Adam (Kingma and Ba): t <- t + 1; m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2;
    p <- p - lr m/(1-b1^t) / (sqrt(v/(1-b2^t)) + eps)."""
    return _adam("adam", loss_or_grads, params, lr, b1, b2, eps, 0.0)


def adamw(
    loss_or_grads: Node | Mapping[Node, Node] | Any,
    params: Node | Sequence[Node] | Any,
    lr: LR = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.01,
) -> dict[Node, Node]:
    """AdamW (Loshchilov and Hutter), as PyTorch orders it: p <- p (1 - lr wd) - lr (Adam's step)."""
    return _adam("adamw", loss_or_grads, params, lr, b1, b2, eps, weight_decay)


def rmsprop(
    loss_or_grads: Node | Mapping[Node, Node] | Any,
    params: Node | Sequence[Node] | Any,
    lr: LR = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    momentum: float = 0.0,
) -> dict[Node, Node]:
    """RMSprop as PyTorch writes it: s <- alpha s + (1-alpha) g^2; d = g / (sqrt(s) + eps);
    with momentum, b <- momentum b + d and p <- p - lr b; else p <- p - lr d."""
    grads = _grads(loss_or_grads, params, "optim.rmsprop")
    E = _E()
    graph = _graph(params)
    step = step_count(graph, "rmsprop/step")
    updates: dict[Node, Node] = {step: _increment(step)}
    for p, g in grads.items():
        rate = _lr(lr, step, p.dtype)
        s = _slot(graph, "rmsprop", "square_avg", p)
        s_new = E.add(E.multiply(alpha, s), E.multiply(1 - alpha, E.square(g)))
        d = E.divide(g, E.add(E.sqrt(s_new), eps))
        updates[s] = s_new
        if momentum:
            b = _slot(graph, "rmsprop", "momentum", p)
            d = E.add(E.multiply(momentum, b), d)
            updates[b] = d
        updates[p] = E.subtract(p, E.multiply(rate, d))
    return updates


# -- gradient clipping and schedules -----------------------------------------------------------------


def global_norm(grads: Mapping[Node, Node] | Sequence[Node] | Any) -> Node:
    """sqrt(sum of squares of every gradient's entries), one scalar node; grads is a {parameter: gradient}
    dict or a pytree of gradient nodes."""
    from .ops import reduce as R

    E = _E()
    gs = list(grads.values()) if isinstance(grads, Mapping) and _is_table(grads) else tree_leaves(grads)
    total = None
    for g in gs:
        s = R.sum(E.square(g))
        total = s if total is None else E.add(total, s)
    return E.sqrt(total)


def clip_by_global_norm(grads: Mapping[Node, Node] | Any, max_norm: float | Node) -> Any:
    """Scale every gradient by max_norm / max(global_norm, max_norm) (TensorFlow's clip_by_global_norm):
    unchanged when the global norm is within max_norm, else all scaled together onto the sphere. Returns the
    gradients as given: a {parameter: gradient} dict, or a pytree of gradient nodes in its structure."""
    E = _E()
    norm = global_norm(grads)
    scale = E.divide(max_norm, E.maximum(norm, max_norm))

    def clip(g: Node) -> Node:
        return E.multiply(g, E.astype(scale, g.dtype) if scale.dtype != g.dtype else scale)

    if isinstance(grads, Mapping) and _is_table(grads):
        return {p: clip(g) for p, g in grads.items()}
    return tree_map(clip, grads)


def exponential_decay(step: Node, lr0: float, rate: float, decay_steps: int = 1, staircase: bool = False) -> Node:
    """lr0 * rate ** (step / decay_steps) (floor of the exponent with staircase=True), a node of step."""
    E = _E()
    t = E.divide(E.astype(step, "float64"), float(decay_steps))
    if staircase:
        t = E.astype(E.astype(t, "int64"), "float64")  # step >= 0: truncation is the floor
    return E.multiply(lr0, E.power(np.array(rate, np.float64), t))


def cosine_decay(step: Node, lr0: float, decay_steps: int, alpha: float = 0.0) -> Node:
    """lr0 * ((1 - alpha) * (1 + cos(pi * min(step, decay_steps) / decay_steps)) / 2 + alpha)."""
    E = _E()
    t = E.divide(E.minimum(E.astype(step, "float64"), float(decay_steps)), float(decay_steps))
    cos = E.multiply(0.5, E.add(1.0, E.cos(E.multiply(math.pi, t))))
    return E.multiply(lr0, E.add(E.multiply(1 - alpha, cos), alpha))
