"""The compiler's working data: stand-in nodes the passes create, constant values, and topological walks.

Passes never mutate the user's Graph: a node whose inputs change is rebuilt as a new Node record of the
same name (the same value, computed differently), and a value the optimiser introduces gets a stand-in Node
with a fresh unique name. Neither is added to the graph.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Iterable

import numpy as np

from ..graph import Graph, Node, new_node
from ..ops.base import Constant, Input, Op, Parameter


class Context:
    """What the passes share: the graph, the values of stand-in constants, fresh names and pass counters."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.consts: dict[Node, np.ndarray] = {}  # values of constants the optimiser made
        self.source: dict[Node, Node] = {}  # rebuilt node -> the graph node it stands for
        self.counts: dict[str, int] = {}  # rewrites per rule
        self._fresh = itertools.count(1)
        self._names: set[str] = set()

    # -- values ----------------------------------------------------------------------------
    def value(self, node: Node) -> np.ndarray:
        """The value of a constant node (a graph constant or one the optimiser made)."""
        v = self.consts.get(node)
        if v is None:
            v = self.graph.stored_value(node)
            assert v is not None  # a graph constant always holds its value
        return v

    def is_const(self, node: Node) -> bool:
        return type(node.op) is Constant

    # -- making nodes ----------------------------------------------------------------------
    def fresh_name(self, base: str) -> str:
        while True:
            name = f"{base.split('~')[0]}~{next(self._fresh)}"
            if name not in self.graph and name not in self._names:
                self._names.add(name)
                return name

    def node(self, op: Op, inputs: Iterable[Node], like: Node, name: str | None = None) -> Node:
        """A stand-in node op(*inputs) that takes the place of `like` (its gradient marks, a fresh name)."""
        inputs = tuple(inputs)
        shape, dtype = op.infer(*inputs)
        return new_node(
            name or self.fresh_name(like.name),
            op,
            inputs,
            tuple(shape),
            np.dtype(dtype),
            like.graph,
            like.index,
            like.is_gradient,
            like.origin,
        )

    def constant(self, value, like: Node) -> Node:
        """A stand-in constant holding `value` (kept out of the graph)."""
        arr = np.asarray(value)
        if arr.flags.writeable and arr.base is None:
            arr.setflags(write=False)
        n = new_node(
            self.fresh_name(like.name),
            Constant(),
            (),
            arr.shape,
            arr.dtype,
            like.graph,
            like.index,
            like.is_gradient,
            like.origin,
        )
        self.consts[n] = arr
        return n

    def rebuild(self, node: Node, inputs: tuple[Node, ...], shape: tuple | None = None) -> Node:
        """The same value as `node`, reading new inputs (and, when specialised, with concrete shapes)."""
        new = new_node(  # what dataclasses.replace(node, ...) makes, faster
            node.name,
            node.op,
            inputs,
            node.shape if shape is None else tuple(shape),
            node.dtype,
            node.graph,
            node.index,
            node.is_gradient,
            node.origin,
        )
        self.source[new] = self.source.get(node, node)
        if node in self.consts:
            self.consts[new] = self.consts[node]
        return new

    def origin_of(self, node: Node) -> Node:
        """The graph node a program node computes (itself when the optimiser introduced it)."""
        return self.source.get(node, node)

    def count(self, what: str, k: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + k


# -- walks ----------------------------------------------------------------------------------


def value_inputs(node: Node) -> tuple[Node, ...]:
    """The inputs whose values a step reads (not those read only for their shape)."""
    op = node.op
    if not op.shape_only and type(op).reads_value is Op.reads_value:
        return node.inputs  # the common case: every input is read
    return tuple(x for i, x in enumerate(node.inputs) if op.reads_value(i))


def topo_order(roots: Iterable[Node], edges: Callable[[Node], Iterable[Node]] | None = None) -> list[Node]:
    """Every node the roots reach through `edges` (default: the inputs), inputs before consumers (iterative
    depth-first)."""
    order: list[Node] = []
    seen: set[Node] = set()
    for root in roots:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(root.inputs if edges is None else edges(root)))]
        while stack:
            node, it = stack[-1]
            for x in it:
                if x not in seen:
                    seen.add(x)
                    stack.append((x, iter(x.inputs if edges is None else edges(x))))
                    break
            else:
                stack.pop()
                order.append(node)
    return order


LEAF_TYPES = frozenset({Input, Parameter, Constant})  # the op types of leaves (exactly: not subclasses)


def is_leaf(node: Node) -> bool:
    """An input, a parameter or a constant: a value a run is given, not a step."""
    return type(node.op) in LEAF_TYPES


def nbytes(node: Node) -> int:
    """Bytes of a value of the node's (concrete) shape."""
    return math.prod(node.shape) * node.dtype.itemsize
