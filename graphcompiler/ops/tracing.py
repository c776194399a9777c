"""Tracing a control-flow body: a Python function called once on stand-in nodes of the enclosing graph.

The nodes it makes are copied into a graph of its own (the body); nodes of the enclosing graph it reads
(weights) are captured, so they become explicit inputs of the loop node, and values that do not depend on
the stand-ins are hoisted out of the loop into the enclosing graph. `alias` stands in for an outer node
inside a trace (build_grad sees it as a leaf), and `inline` applies a traced body's ops again elsewhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import GraphCompilerError
from ..graph import Graph, Node, fit_name
from .base import Deferred, apply

__all__ = ["Traced", "alias", "inline", "trace_body"]


_FRAMES: list[dict] = []  # open traces (innermost last): alias stand-ins -> the outer node they stand for


@dataclasses.dataclass
class Traced:
    """A traced body: its own graph, its inputs (stand-ins, then captured values) and its outputs."""

    graph: Graph
    inputs: list[Node]  # body input nodes for the stand-ins, in order
    captured_inputs: list[Node]  # body input nodes for the captured outer nodes
    captured: list[Node]  # the outer nodes they read (inputs of the loop node)
    outputs: list[Node]  # body nodes of the results


def trace_body(
    graph: Graph,
    title: str,
    specs: Sequence[tuple[str, tuple, np.dtype]],
    call: Callable[[list[Node]], list[Any]],
    out_like: Sequence[Node | None] | None = None,
) -> Traced:
    """Call `call` on stand-in nodes made from specs (name, shape, dtype); return the body it built."""
    mark = len(graph)
    frame: dict[Node, Node] = {}
    standins, outs = _call_on_standins(graph, title, specs, call, out_like, frame, mark)
    made = graph._nodes[mark:]
    variant = _depending_on(standins, made)
    # the body: the variant ancestors of the outputs; everything else they read is captured
    traced = _copy_body(
        graph,
        title,
        names=[nm for nm, _, _ in specs],
        standins=standins,
        outs=outs,
        made=made,
        need=_variant_ancestors(outs, variant),
        const_only=_folded_constants(made, variant, frame),
        frame=frame,
        mark=mark,
    )
    traced.captured = _hoist_invariants(graph, mark, made, frame, traced.captured)
    return traced


def _call_on_standins(
    graph: Graph,
    title: str,
    specs: Sequence[tuple[str, tuple, np.dtype]],
    call: Callable[[list[Node]], list[Any]],
    out_like: Sequence[Node | None] | None,
    frame: dict[Node, Node],
    mark: int,
) -> tuple[list[Node], list[Node]]:
    """Run the user's body on new stand-in inputs of `graph` inside the trace `frame`: the stand-ins and the
    body's results as nodes of `graph` (numbers become constants). On failure the nodes it made are removed."""
    _FRAMES.append(frame)
    try:
        standins = [graph.input(graph._unique_name(f"{title}.{nm}"), shape, dt) for nm, shape, dt in specs]
        outs = call(standins)
        outs = [o.node() if isinstance(o, Deferred) else o for o in outs]  # `x == y` returned
        outs = [
            o if isinstance(o, Node) else _as_node(graph, o, out_like[k] if out_like else None, title)
            for k, o in enumerate(outs)
        ]
        for o in outs:
            if o.graph is not graph:
                raise GraphCompilerError(
                    f"{title}: the body returned node {o.name!r} of graph "
                    f"{o.graph.name!r}; it must return nodes of graph {graph.name!r}"
                )
    except BaseException:
        _FRAMES.pop()
        graph._truncate(mark)
        raise
    _FRAMES.pop()
    return standins, outs


def _depending_on(standins: list[Node], made: list[Node]) -> set[Node]:
    """The stand-ins and the nodes made while tracing that depend on one (they vary from step to step)."""
    variant = set(standins)
    for n in made:
        if n not in variant and any(x in variant for x in n.inputs):
            variant.add(n)
    return variant


def _walk_back(start: Iterable[Node], inputs_of: Callable[[Node], Iterable[Node]]) -> set[Node]:
    """The nodes reached from `start` by following `inputs_of` (start included)."""
    seen: set[Node] = set()
    stack = list(start)
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(inputs_of(n))
    return seen


def _variant_ancestors(outs: list[Node], variant: set[Node]) -> set[Node]:
    """The variant nodes the outputs are computed from: the nodes the body graph computes."""
    return _walk_back((o for o in outs if o in variant), lambda n: (x for x in n.inputs if x in variant))


def _folded_constants(made: list[Node], variant: set[Node], frame: dict[Node, Node]) -> set[Node]:
    """The nodes made while tracing from constants alone: copied into the body (folded there), not captured."""
    const_only: set[Node] = set()
    for n in made:
        if (
            n.inputs
            and n not in variant
            and n not in frame
            and all(x in const_only or x.op.name == "constant" for x in n.inputs)
        ):
            const_only.add(n)
    return const_only


def _copy_body(
    graph: Graph,
    title: str,
    names: list[str],
    standins: list[Node],
    outs: list[Node],
    made: list[Node],
    need: set[Node],
    const_only: set[Node],
    frame: dict[Node, Node],
    mark: int,
) -> Traced:
    """Copy the nodes `need` into a graph of their own (inputs for the stand-ins, named `names`); every other
    node they read is a constant of the body, a folded constant, or captured: an input of the body read from
    `graph` (through `frame`, an alias reads the outer node it stands for)."""
    body = Graph(fit_name(f"{title}/body"))
    m: dict[Node, Node] = {}
    inputs = []
    for s, nm in zip(standins, names):
        m[s] = body.input(body._unique_name(nm), s.shape, s.dtype)
        inputs.append(m[s])
    captured: list[Node] = []  # nodes of `made` or of the outer graph (hoisted by the caller)
    captured_inputs: list[Node] = []
    by_target: dict[Node, Node] = {}

    def read(x: Node) -> Node:
        if x in m:
            return m[x]
        target = frame.get(x, x)
        if target in by_target:
            m[x] = by_target[target]
        elif target in const_only:
            m[x] = by_target[target] = body._add(
                target.op,
                tuple(read(i) for i in target.inputs),
                target.dtype,
                target.shape,
                body._unique_name(target.name),
            )
        elif target.op.name == "constant" and target.index < mark:
            m[x] = by_target[target] = body.constant(graph._values[target], name=body._unique_name(target.name))
        elif target.op.name == "constant":  # made while tracing (a Python number): kept in the body
            m[x] = by_target[target] = body.constant(graph._values[target])
        else:
            m[x] = by_target[target] = body.input(body._unique_name(target.name), target.shape, target.dtype)
            captured.append(target)
            captured_inputs.append(m[x])
        return m[x]

    for n in made:
        if n in need and n not in m:
            ins = tuple(read(x) for x in n.inputs)
            with body._gradient_scope(None) if n.is_gradient else contextlib.nullcontext():
                m[n] = body._add(n.op, ins, n.dtype, n.shape, body._unique_name(n.name))
    body_outs = [read(o) for o in outs]
    return Traced(body, inputs, captured_inputs, captured, body_outs)


def _hoist_invariants(
    graph: Graph, mark: int, made: list[Node], frame: dict[Node, Node], captured: list[Node]
) -> list[Node]:
    """Hoist the loop-invariant values (made while tracing, not depending on a stand-in) out of the loop: the
    traced nodes are removed from `graph` and those the body captured are made again there, in order.
    Returns `captured` with each of them replaced by its new node."""
    made_set = set(made)
    hoist = _walk_back(
        (c for c in captured if c in made_set),
        lambda n: (t for t in (frame.get(x, x) for x in n.inputs) if t in made_set),
    )
    keep = [(n, n.op, n.inputs, n.dtype, n.shape, n.name, graph._values.get(n)) for n in made if n in hoist]
    graph._truncate(mark)
    remade: dict[Node, Node] = {}
    for n, op, ins, dt, shape, name, value in keep:
        if op.name == "constant":
            remade[n] = graph.constant(value)
        else:
            new_ins = tuple(remade.get(t, t) for t in (frame.get(x, x) for x in ins))
            remade[n] = graph._add(op, new_ins, dt, shape, graph._unique_name(name))
    return [remade.get(c, c) for c in captured]


def _as_node(graph: Graph, value: Any, like: Node | None, title: str) -> Node:
    try:
        arr = np.asarray(value, dtype=like.dtype if like is not None else None)
    except (TypeError, ValueError):
        raise GraphCompilerError(
            f"{title}: the body returned {type(value).__name__} {value!r}; return graph nodes (or numbers)"
        ) from None
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise GraphCompilerError(
            f"{title}: the body returned {type(value).__name__} {value!r}; return graph nodes (or numbers)"
        )
    return graph.constant(arr)


def alias(node: Node) -> Node:
    """A stand-in for an outer node inside the current trace: build_grad sees it as a leaf of its own."""
    frame = _FRAMES[-1]
    g = node.graph
    s = g.input(g._unique_name(f"{node.name}.alias"), node.shape, node.dtype)
    frame[s] = node
    return s


def inline(traced: Traced, values: Sequence[Node]) -> list[Node]:
    """Re-apply the body's ops in the current graph on `values` (for its inputs, then its captured inputs)."""
    body = traced.graph
    m: dict[Node, Node] = dict(zip(traced.inputs + traced.captured_inputs, values))
    g = values[0].graph if values else None
    for n in body.nodes:
        if n in m:
            continue
        if n.op.name == "constant":
            if g is None:
                raise GraphCompilerError(
                    f"internal error: body constant {n.name!r} inlined with no values to give the graph to put it in"
                )
            m[n] = g.constant(body._values[n])
        elif n.op.name in ("input", "parameter"):
            raise GraphCompilerError(f"internal error: body input {n.name!r} has no value to inline")
        else:
            m[n] = apply(n.op, tuple(m[x] for x in n.inputs))
    return [m[o] for o in traced.outputs]
