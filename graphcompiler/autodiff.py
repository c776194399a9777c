"""build_grad: Algorithms 6.5 and 6.6 of Goodfellow et al. (section 6.5.6), symbol to symbol.

The derivative subgraph B is inserted into the user's graph G: every gradient is a new node, no number is
computed. The recursion of Algorithm 6.6 is unrolled into one sweep over the pruned graph G' in reverse
topological order, so a chain of 10,000 ops needs no deep Python stack.
"""

from __future__ import annotations

from collections import deque
from typing import Iterable, Literal

import numpy as np

from .errors import (DisconnectedInputError, GraphCompilerError, ShapeError, UndefinedGradientError,
                     fmt_shape)
from .graph import Graph, GraphMismatchError, Node, paused_gc
from .ops import elementwise as E
from .ops import shape as S
from .ops.base import LEAF_OPS, UNDEFINED, is_static


class _Undefined:
    """grad_table's mark for a gradient that needs an edge with no derivative: the edge (consumer, index)."""

    __slots__ = ("node", "index")

    def __init__(self, node: Node, index: int):
        self.node, self.index = node, index


def build_grad(z: Node, targets: Node | Iterable[Node], *, seed: Node | None = None,
               disconnected: Literal["raise", "zero"] = "raise") -> dict[Node, Node]:
    """Add the nodes of dz/dt for every t in targets to z's graph (Algorithm 6.5) and return {t: dz/dt}.

    z must be a scalar unless `seed` (dz's upstream gradient, of z's shape) is given: then the result is the
    vector-Jacobian product seed^T dz/dt. A target z does not depend on raises DisconnectedInputError, or gets
    zeros with disconnected="zero". Gradients are named d<z>/d<t>; each node of B records in `origin` the
    forward edge (node, input index) whose bprop made it.
    """
    targets = [targets] if isinstance(targets, Node) else list(targets)
    graph = _check_arguments(z, targets, seed, disconnected)
    mark = len(graph)
    try:
        with paused_gc():
            return _build(graph, z, targets, seed, disconnected)
    except BaseException:
        graph._truncate(mark)            # a failed build_grad leaves the graph as it was
        raise


def _build(graph: Graph, z: Node, targets: list[Node], seed, disconnected) -> dict[Node, Node]:
    pruned = pruned_graph(z, targets)                                   # G'
    fresh_from = len(graph)
    owner: dict[Node, Node] = {}       # gradient node -> the node v whose grad_table entry it is

    def name_for(v: Node) -> str:
        return graph._unique_name(f"d{z.name}/d{v.name}")

    # grad_table[z] <- 1 (or the seed)
    with graph._gradient_scope(None):
        if seed is None:
            g_z = graph.constant(np.ones((), z.dtype), name=name_for(z))
        elif isinstance(seed, Node):
            g_z = seed
        else:
            g_z = graph.constant(np.asarray(seed, dtype=z.dtype), name=name_for(z))
    grad_table: dict[Node, object] = {z: g_z}
    owner[g_z] = z
    contributions: dict[Node, list] = {}

    for v in sorted(pruned, key=lambda n: n.index, reverse=True):
        if v is not z:
            grad_table[v] = _accumulate(graph, contributions.pop(v, []), v, name_for, owner, fresh_from)
        g_v = grad_table[v]
        if g_v is None or v.op.name in LEAF_OPS:
            continue
        for i, x in enumerate(v.inputs):
            if x not in pruned or not v.op.reads_value(i):
                continue
            if isinstance(g_v, _Undefined):       # an undefined gradient passes on unless a zero stops it
                zero = v.op.piecewise_constant or x.dtype == bool or v.dtype == bool
                contributions.setdefault(x, []).append(None if zero else g_v)
                continue
            with graph._gradient_scope((v, i)):
                part = v.op.grad(i, v.inputs, v, g_v)     # op.bprop(inputs, X, G), equation 6.54
            if part is UNDEFINED:
                part = _Undefined(v, i)
            elif part is not None:
                _check_part(part, x, v, i)
            contributions.setdefault(x, []).append(part)

    result = {}
    for t in targets:
        if t not in pruned:
            if disconnected == "raise":
                raise DisconnectedInputError(
                    f"{z.name} ({z.op.name}, shape {fmt_shape(z.shape)}) does not depend on {t.name} "
                    f"({t.op.name}, shape {fmt_shape(t.shape)}): no path leads from {t.name} to {z.name}. "
                    "Pass disconnected='zero' to get zeros for it, or drop it from the targets")
            result[t] = _zeros_named(graph, t, name_for(t))
            continue
        g_t = grad_table[t]
        if isinstance(g_t, _Undefined):
            raise UndefinedGradientError(_undefined_message(z, t, g_t, pruned))
        if g_t is None:                      # reached only through comparisons: the derivative is zero
            result[t] = _zeros_named(graph, t, name_for(t))
        elif owner.get(g_t) is t:
            result[t] = g_t
        else:                                # a gradient passed through unchanged: give it t's name
            with graph._gradient_scope(None):
                result[t] = E.identity(g_t, name=name_for(t))
    return result


def pruned_graph(z: Node, targets: list[Node]) -> set[Node]:
    """G': the ancestors of z that descend from a target (z and the reachable targets included)."""
    ancestors = {z}
    stack = [z]
    while stack:
        for x in stack.pop().inputs:
            if x not in ancestors:
                ancestors.add(x)
                stack.append(x)
    descend = set(t for t in targets if t in ancestors)
    for n in sorted(ancestors, key=lambda n: n.index):     # creation order is topological
        if n not in descend and any(x in descend for x in n.inputs):
            descend.add(n)
    return descend


def _accumulate(graph, parts, v, name_for, owner, fresh_from):
    """grad_table[v]: the sum of its consumers' contributions (None: zero; _Undefined: no derivative)."""
    for p in parts:
        if isinstance(p, _Undefined):
            return p
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    if len(parts) == 1:
        p = parts[0]
        if p.index >= fresh_from and p not in owner and not graph._consumers[p] and p.op.name not in LEAF_OPS:
            p = graph._rename(p, name_for(v))
            owner[p] = v
        return p
    with graph._gradient_scope(None):                 # a node read twice gets the sum of both paths
        total = parts[0]
        for k, p in enumerate(parts[1:], start=2):
            total = E.add(total, p, name=name_for(v) if k == len(parts) else None)
    owner[total] = v
    return total


def _zeros_named(graph: Graph, t: Node, name: str) -> Node:
    with graph._gradient_scope(None):
        if not t.shape:
            return graph.constant(np.zeros((), t.dtype), name=name)
        if is_static(t.shape):
            return S.broadcast_to(graph.constant(np.zeros((), t.dtype)), t.shape, name=name)
        return S.zeros_like(t, name=name)


def _check_part(part: Node, x: Node, v: Node, i: int) -> None:
    ok = len(part.shape) == len(x.shape) and all(a is None or b is None or a == b
                                                 for a, b in zip(part.shape, x.shape))
    if not ok:   # a bprop rule broke its contract: a bug in the op, reported with everything needed to fix it
        raise GraphCompilerError(
            f"internal error: the bprop of {v.op.name} {v.name!r} for input {i} ({x.name!r}, shape "
            f"{fmt_shape(x.shape)}) made a gradient of shape {fmt_shape(part.shape)}; please report this")


def _check_arguments(z, targets, seed, disconnected) -> Graph:
    if not isinstance(z, Node):
        raise GraphCompilerError(f"build_grad differentiates a Node, got {type(z).__name__}")
    graph = z.graph
    if disconnected not in ("raise", "zero"):
        raise GraphCompilerError(f"disconnected must be 'raise' or 'zero', not {disconnected!r}")
    for t in targets:
        if not isinstance(t, Node):
            raise GraphCompilerError(f"build_grad targets must be Nodes, got {type(t).__name__} {t!r}")
        if t.graph is not graph:
            raise GraphMismatchError(f"target {t.name!r} belongs to graph {t.graph.name!r}, but the cost "
                                     f"{z.name!r} to graph {graph.name!r}")
    if z.dtype.kind != "f":
        raise UndefinedGradientError(f"the cost {z.name!r} ({z.op.name}) has dtype {z.dtype}; only a floating "
                                     "value can be differentiated")
    if seed is None:
        if z.shape != ():
            raise ShapeError(
                f"build_grad needs a scalar cost, but {z.name!r} ({z.op.name}) has shape {fmt_shape(z.shape)}; "
                f"reduce it (gc.sum or gc.mean) or pass seed= (a node of shape {fmt_shape(z.shape)}) for a "
                "vector-Jacobian product")
    else:
        shape = seed.shape if isinstance(seed, Node) else np.shape(seed)
        if isinstance(seed, Node) and seed.graph is not graph:
            raise GraphMismatchError(f"seed {seed.name!r} belongs to another graph than {z.name!r}")
        if len(shape) != len(z.shape) or any(a is not None and b is not None and a != b
                                             for a, b in zip(shape, z.shape)):
            raise ShapeError(f"the seed has shape {fmt_shape(shape)} but {z.name!r} ({z.op.name}) has shape "
                             f"{fmt_shape(z.shape)}; the seed must have the cost's shape")
    for t in targets:
        if t.dtype.kind != "f" and t in pruned_graph(z, [t]):
            raise UndefinedGradientError(
                f"{t.name!r} ({t.op.name}, shape {fmt_shape(t.shape)}) has dtype {t.dtype}: the derivative "
                f"of {z.name!r} with respect to an integer or bool value is undefined")
    return graph


def _undefined_message(z: Node, t: Node, mark: _Undefined, pruned: set[Node]) -> str:
    v, i = mark.node, mark.index
    x = v.inputs[i]
    path = _path(t, x, pruned) + [v] + _path(v, z, pruned)[1:]
    chain = " -> ".join(f"{n.name} ({n.op.name}, {n.dtype})" for n in path)
    return (f"the gradient of {z.name!r} with respect to {t.name!r} needs the derivative of {v.op.name} "
            f"{v.name!r} with respect to its input {i} ({x.name!r}, {x.dtype}), which is undefined: an "
            f"integer value lies on the path {chain}. Keep that path in floating point, or cut it with "
            "gc.stop_gradient if it should not carry a gradient")


def _path(src: Node, dst: Node, pruned: set[Node]) -> list[Node]:
    """A path src -> ... -> dst through G' (breadth first over the inputs, walking back from dst)."""
    prev = {dst: None}
    queue = deque([dst])
    while queue:
        n = queue.popleft()
        if n is src:
            break
        for x in n.inputs:
            if x in pruned and x not in prev:
                prev[x] = n
                queue.append(x)
    if src not in prev:
        return [src, dst] if src is not dst else [src]
    out, n = [], src
    while n is not None:
        out.append(n)
        n = prev[n]
    return out
