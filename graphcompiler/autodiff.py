"""build_grad: Algorithms 6.5 and 6.6 of Goodfellow et al. (section 6.5.6), symbol to symbol.

The derivative subgraph B is inserted into the user's graph G: every gradient is a new node, no number is
computed. The recursion of Algorithm 6.6 is unrolled into one sweep over the pruned graph G' in reverse
topological order, so a chain of 10,000 ops needs no deep Python stack.
"""

from __future__ import annotations

from collections import deque
from typing import Iterable, Literal, Union

import numpy as np

from .errors import DisconnectedInputError, GraphCompilerError, ShapeError, UndefinedGradientError, fmt_shape
from .graph import (
    LEAF_OPS,
    ZERO,
    Graph,
    GraphMismatchError,
    Node,
    Undefined,
    Zero,
    carries_gradient,
    edge_mark,
    paused_gc,
)
from .ops import elementwise as E
from .ops import shape as S
from .ops.base import is_static

Grad = Union[Node, Zero, Undefined]  # an entry of grad_table: a node, or a mark (known zero, undefined)


def build_grad(
    z: Node,
    targets: Node | Iterable[Node],
    *,
    seed: Node | None = None,
    disconnected: Literal["raise", "zero"] = "raise",
) -> dict[Node, Node]:
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
        graph.rollback(mark)  # a failed build_grad leaves the graph as it was
        raise


def _build(graph: Graph, z: Node, targets: list[Node], seed, disconnected) -> dict[Node, Node]:
    """Algorithm 6.6 (build-grad), its recursion unrolled into one sweep over G' in reverse topological order:
    when v is reached, every consumer of v in G' has already sent its part of dz/dv."""
    pruned = pruned_graph(z, targets)  # G'
    names = _Naming(graph, z)  # d<z>/d<v>, apart from the math
    grad_table: dict[Node, Grad] = {z: names.seed(seed)}  # grad_table[z] <- 1 (or the seed)
    contributions: dict[Node, list[Grad]] = {}  # x -> the parts its consumers sent
    for v in sorted(pruned, key=lambda n: n.index, reverse=True):
        if v is not z:  # dz/dv: the sum over consumers
            grad_table[v] = names.total(v, contributions.pop(v, []))
        g_v = grad_table[v]
        if g_v is ZERO or v.op.name in LEAF_OPS:
            continue
        for i, x in enumerate(v.inputs):
            if x in pruned and v.op.reads_value(i):  # not an input read for its shape only
                contributions.setdefault(x, []).append(_bprop(graph, v, i, g_v))
    return {t: names.result(t, grad_table.get(t), disconnected, pruned) for t in targets}


def _bprop(graph: Graph, v: Node, i: int, g_v: Grad) -> Grad:
    """v's part of the gradient of its input i: op.bprop(inputs, X, G) of equation 6.54, or a mark."""
    if isinstance(g_v, Undefined):  # an undefined gradient passes on, unless the edge adds zero
        return ZERO if edge_mark(v.op, v.inputs[i], v, i) is ZERO else g_v
    assert isinstance(g_v, Node)  # the sweep skips a ZERO gradient
    with graph.marking_gradient((v, i)):
        part = v.op.grad(i, v.inputs, v, g_v)  # bprop behind the rules every op shares (graph.edge_mark)
    if isinstance(part, Node):
        _check_part(part, v.inputs[i], v, i)
    return part


class _Naming:
    """The bookkeeping that gives B readable names: grad_table[v] is named d<z>/d<v> when build_grad made it
    (a sum, or the one fresh node a consumer's bprop returned), so gradients print as the books write them."""

    def __init__(self, graph: Graph, z: Node):
        self.graph, self.z = graph, z
        self.fresh_from = len(graph)  # nodes from here on are B's
        self.owner: dict[Node, Node] = {}  # gradient node -> the node v whose grad_table entry it is

    def name(self, v: Node) -> str:
        return self.graph.unique_name(f"d{self.z.name}/d{v.name}")

    def seed(self, seed) -> Node:
        z, graph = self.z, self.graph
        with graph.marking_gradient(None):
            if seed is None:
                g_z = graph.constant(np.ones((), z.dtype), name=self.name(z))
            elif isinstance(seed, Node):
                g_z = seed
            else:
                g_z = graph.constant(np.asarray(seed, dtype=z.dtype), name=self.name(z))
        self.owner[g_z] = z
        return g_z

    def total(self, v: Node, parts: list[Grad]) -> Grad:
        """grad_table[v]: the sum of its consumers' parts (Undefined if one is; ZERO if all are)."""
        for p in parts:
            if isinstance(p, Undefined):
                return p
        nodes = [p for p in parts if isinstance(p, Node)]
        if not nodes:
            return ZERO
        graph = self.graph
        if len(nodes) == 1:
            p = nodes[0]
            if (
                p.index >= self.fresh_from
                and p not in self.owner
                and not graph.is_read(p)
                and p.op.name not in LEAF_OPS
            ):
                p = graph.rename(p, self.name(v))
                self.owner[p] = v
            return p
        with graph.marking_gradient(None):  # a node read twice gets the sum of both paths
            total = nodes[0]
            for k, p in enumerate(nodes[1:], start=2):
                total = E.add(total, p, name=self.name(v) if k == len(nodes) else None)
        self.owner[total] = v
        return total

    def result(self, t: Node, g_t: Grad | None, disconnected: str, pruned: set[Node]) -> Node:
        """dz/dt as a node named d<z>/d<t>: zeros for a known-zero gradient or (if asked) a disconnected one."""
        z, graph = self.z, self.graph
        if g_t is None:  # t is not in G'
            if disconnected == "raise":
                raise DisconnectedInputError(
                    f"{z.name} ({z.op.name}, shape {fmt_shape(z.shape)}) does not depend on {t.name} "
                    f"({t.op.name}, shape {fmt_shape(t.shape)}): no path leads from {t.name} to {z.name}. "
                    "Pass disconnected='zero' to get zeros for it, or drop it from the targets"
                )
            return _zeros_named(graph, t, self.name(t))
        if isinstance(g_t, Undefined):
            raise UndefinedGradientError(_undefined_message(z, t, g_t, pruned))
        if isinstance(g_t, Zero):  # reached only through comparisons: zero
            return _zeros_named(graph, t, self.name(t))
        if self.owner.get(g_t) is t:
            return g_t
        with graph.marking_gradient(None):  # a gradient passed through unchanged: t's name
            return E.identity(g_t, name=self.name(t))


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
    for n in sorted(ancestors, key=lambda n: n.index):  # creation order is topological
        if n not in descend and any(x in descend for x in n.inputs):
            descend.add(n)
    return descend


def _zeros_named(graph: Graph, t: Node, name: str) -> Node:
    with graph.marking_gradient(None):
        if not t.shape:
            return graph.constant(np.zeros((), t.dtype), name=name)
        if is_static(t.shape):
            return S.broadcast_to(graph.constant(np.zeros((), t.dtype)), t.shape, name=name)
        return S.zeros_like(t, name=name)


def _check_part(part: Node, x: Node, v: Node, i: int) -> None:
    if part.shape == x.shape:
        return  # (the common case, first)
    ok = len(part.shape) == len(x.shape) and all(a is None or b is None or a == b for a, b in zip(part.shape, x.shape))
    if not ok:  # a bprop rule broke its contract: a bug in the op, reported with everything needed to fix it
        raise GraphCompilerError(
            f"internal error: the bprop of {v.op.name} {v.name!r} for input {i} ({x.name!r}, shape "
            f"{fmt_shape(x.shape)}) made a gradient of shape {fmt_shape(part.shape)}; please report this"
        )


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
            raise GraphMismatchError(
                f"target {t.name!r} belongs to graph {t.graph.name!r}, but the cost {z.name!r} to graph {graph.name!r}"
            )
    if not carries_gradient(z.dtype):
        raise UndefinedGradientError(
            f"the cost {z.name!r} ({z.op.name}) has dtype {z.dtype}; only a floating value can be differentiated"
        )
    if seed is None:
        if z.shape != ():
            raise ShapeError(
                f"build_grad needs a scalar cost, but {z.name!r} ({z.op.name}) has shape {fmt_shape(z.shape)}; "
                f"reduce it (gc.sum or gc.mean) or pass seed= (a node of shape {fmt_shape(z.shape)}) for a "
                "vector-Jacobian product"
            )
    else:
        shape = seed.shape if isinstance(seed, Node) else np.shape(seed)
        if isinstance(seed, Node) and seed.graph is not graph:
            raise GraphMismatchError(f"seed {seed.name!r} belongs to another graph than {z.name!r}")
        if len(shape) != len(z.shape) or any(
            a is not None and b is not None and a != b for a, b in zip(shape, z.shape)
        ):
            raise ShapeError(
                f"the seed has shape {fmt_shape(shape)} but {z.name!r} ({z.op.name}) has shape "
                f"{fmt_shape(z.shape)}; the seed must have the cost's shape"
            )
    for t in targets:
        if not carries_gradient(t.dtype) and t in pruned_graph(z, [t]):
            raise UndefinedGradientError(
                f"{t.name!r} ({t.op.name}, shape {fmt_shape(t.shape)}) has dtype {t.dtype}: the derivative "
                f"of {z.name!r} with respect to an integer or bool value is undefined"
            )
    return graph


def _undefined_message(z: Node, t: Node, mark: Undefined, pruned: set[Node]) -> str:
    assert mark.edge is not None
    v, i = mark.edge
    x = v.inputs[i]
    path = _path(t, x, pruned) + [v] + _path(v, z, pruned)[1:]
    chain = " -> ".join(f"{n.name} ({n.op.name}, {n.dtype})" for n in path)
    return (
        f"the gradient of {z.name!r} with respect to {t.name!r} needs the derivative of {v.op.name} "
        f"{v.name!r} with respect to its input {i} ({x.name!r}, {x.dtype}), which is undefined: an "
        f"integer value lies on the path {chain}. Keep that path in floating point, or cut it with "
        "gc.stop_gradient if it should not carry a gradient"
    )


def _path(src: Node, dst: Node, pruned: set[Node]) -> list[Node]:
    """A path src -> ... -> dst through G' (breadth first over the inputs, walking back from dst)."""
    prev: dict[Node, Node | None] = {dst: None}
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
    out: list[Node] = []
    step: Node | None = src
    while step is not None:
        out.append(step)
        step = prev[step]
    return out
