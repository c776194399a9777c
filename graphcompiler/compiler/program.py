"""Program: a compiled list of steps over buffers, run by an evaluator (API section 3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import DTypeError, FeedError, GraphCompilerError, ShapeError, fmt_shape
from ..graph import Graph, Node, format_nodes
from ..ops.base import LEAF_OPS
from ..runtime import NumpyEvaluator


@dataclass(frozen=True)
class Step:
    node: Node

    @property
    def op(self) -> str:
        return self.node.op.name


def ancestors(roots) -> list[Node]:
    """Every node the roots depend on, themselves included, in creation (topological) order."""
    seen = set(roots)
    stack = list(roots)
    while stack:
        for x in stack.pop().inputs:
            if x not in seen:
                seen.add(x)
                stack.append(x)
    return sorted(seen, key=lambda n: n.index)


class Program:
    """Runs the outputs of a graph on feeds; returned arrays belong to the caller."""

    def __init__(self, graph: Graph, outputs: list[Node], updates: dict[Node, Node], *, optimize: bool,
                 memory_budget, nan_check: bool):
        self.graph = graph
        self.outputs = outputs
        self.updates = updates
        for p, v in updates.items():
            if p.op.name != "parameter":
                raise GraphCompilerError(f"updates can only replace parameters; {p.name!r} is a {p.op.name}")
            if v.shape != p.shape:
                raise ShapeError(f"the update of {p.name!r} (shape {fmt_shape(p.shape)}) has shape "
                                 f"{fmt_shape(v.shape)} ({v.name!r}, {v.op.name})")
        self.nodes = ancestors(outputs + list(updates.values()))
        self.evaluator = NumpyEvaluator(nan_check=nan_check)
        self.inputs = [n for n in self.nodes if n.op.name == "input"]
        self.schedule = [Step(n) for n in self.nodes if n.op.name not in LEAF_OPS]
        slot = {n: k for k, n in enumerate(self.nodes)}
        self._slot = slot
        self._steps = [(s.node, s.node.op.kernel, [slot[x] for x in s.node.inputs], slot[s.node])
                       for s in self.schedule]
        self.stats = {"nodes_in": len(graph), "nodes_out": len(self.schedule), "buffers": len(self.nodes),
                      "peak_bytes": 0}

    def run(self, feeds: Mapping[Any, Any] | None = None) -> list[np.ndarray]:
        values: list = [None] * len(self.nodes)
        fed = self._check_feeds(feeds or {})
        for n in self.nodes:
            k = self._slot[n]
            if n.op.name == "input":
                values[k] = fed[n]
            elif n in fed:
                values[k] = fed[n]
            elif n.op.name in ("parameter", "constant"):
                v = self.graph._values.get(n)
                if v is None:
                    raise FeedError(f"parameter {n.name!r} (shape {fmt_shape(n.shape)}) has no stored value; "
                                    "feed it or set it with graph.set_value")
                values[k] = v
        self.evaluator.execute(self._steps, values)
        result = [np.array(values[self._slot[o]], copy=True) for o in self.outputs]
        new = {p: np.array(values[self._slot[v]], dtype=p.dtype) for p, v in self.updates.items()}
        for p, v in new.items():
            stored = self.graph._values.get(p)
            if stored is None:
                self.graph._values[p] = v
            else:
                stored[...] = v
        return result

    def __call__(self, **feeds) -> list[np.ndarray]:
        return self.run(feeds)

    def _check_feeds(self, feeds: Mapping) -> dict[Node, np.ndarray]:
        fed: dict[Node, np.ndarray] = {}
        for key, value in feeds.items():
            if isinstance(key, Node):
                if key.graph is not self.graph:
                    raise FeedError(f"feed {key.name!r} is a node of graph {key.graph.name!r}, not "
                                    f"{self.graph.name!r}")
                node = key
            else:
                if key not in self.graph:
                    from ..graph import _unknown_name
                    raise FeedError(f"feed {key!r}: {_unknown_name(self.graph, key)}")
                node = self.graph[key]
            if node not in self._slot:
                continue                                     # not read by this program: ignored
            fed[node] = check_feed(node, value)
        for n in self.inputs:
            if n not in fed:
                raise FeedError(f"input {n.name!r} (shape {fmt_shape(n.shape)}, {n.dtype}) is not fed; pass "
                                f"it to run, e.g. program.run({{{n.name!r}: array}})")
        return fed

    def __str__(self) -> str:
        return format_nodes([s.node for s in self.schedule],
                            title=f"Program of graph {self.graph.name!r}: {len(self.schedule)} steps")


def check_feed(node: Node, value: Any) -> np.ndarray:
    """A fed array, checked against the node's shape (None dims match any size) and dtype."""
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise FeedError(f"feed {node.name!r}: got {type(value).__name__} of dtype {arr.dtype}; feed a numeric array")
    if len(arr.shape) != len(node.shape) or any(d is not None and d != a for d, a in zip(node.shape, arr.shape)):
        raise FeedError(f"feed {node.name!r} ({node.op.name}) expects shape {fmt_shape(node.shape)}, got "
                        f"{fmt_shape(arr.shape)}")
    if arr.dtype != node.dtype:
        if not np.can_cast(arr.dtype, node.dtype, casting="same_kind"):
            raise FeedError(f"feed {node.name!r} ({node.op.name}) expects dtype {node.dtype}, got {arr.dtype}, "
                            "which does not convert without changing kind (e.g. float to int)")
        arr = arr.astype(node.dtype)
    return arr
