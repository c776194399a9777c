"""A graph with its scans written out step by step: the unrolled picture of a loop (viz.to_dot(..., unroll=True)).

Each scan of a few static steps becomes its body inlined once per step, its ys stacked; nothing is computed.
"""

from __future__ import annotations

import contextlib

from ..graph import Graph, Node, fit_name
from ..ops import elementwise as E
from ..ops import indexing as I
from ..ops import shape as S
from ..ops.base import apply
from .body import Result, is_tape
from .scan import Scan, ScanBody

__all__ = ["unroll"]


def unroll(graph: Graph, max_steps: int = 16) -> Graph:
    """A copy of `graph` in which every scan of at most max_steps (static) steps is written out step by step
    (its body inlined once per step, the ys stacked): the unrolled picture of a loop. Nothing is computed."""
    out = Graph(fit_name(f"{graph.name} (unrolled)"))
    m: dict[Node, Node] = {}
    unrolled: dict[Node, list[Node]] = {}

    def scope(n: Node):
        origin = None if n.origin is None or m.get(n.origin[0]) is None else (m[n.origin[0]], n.origin[1])
        return out.marking_gradient(origin) if n.is_gradient else contextlib.nullcontext()

    for n in graph.nodes:
        with scope(n):
            if n.op.name == "input":
                m[n] = out.input(n.name, n.shape, n.dtype)
            elif n.op.name == "parameter":
                v = graph.stored_value(n)
                m[n] = (
                    out.parameter(n.name, v) if v is not None else out.parameter(n.name, shape=n.shape, dtype=n.dtype)
                )
            elif n.op.name == "constant":
                m[n] = out.constant(graph.stored_value(n), name=n.name)
            elif isinstance(n.op, Result) and n.inputs[0] in unrolled:
                m[n] = E.identity(unrolled[n.inputs[0]][n.op.index], name=n.name)  # the loop's result, named
            elif (
                isinstance(n.op, Scan)
                and _static_steps(n) is not None
                and _static_steps(n) <= max_steps
                and _static_steps(n) > 0
            ):
                unrolled[n] = _unroll_scan(n, [m[x] for x in n.inputs], I, S)
            else:
                m[n] = out.add_node(n.op, tuple(m[x] for x in n.inputs), n.dtype, n.shape, n.name)
    return out


def _scan_body(n: Node) -> ScanBody:
    assert isinstance(n.op, Scan)  # the caller unrolls scan nodes only
    return n.op.body


def _static_steps(n: Node):
    b = _scan_body(n)
    if b.until or b.n_x and is_tape(n.inputs[b.n_carry]):  # a while_loop's steps are known when it runs
        return None
    return n.inputs[b.n_carry].shape[0] if b.n_x else b.length


def _unroll_scan(n: Node, ins: list[Node], I, S) -> list[Node]:
    b = _scan_body(n)
    nc, nx, ny = b.n_carry, b.n_x, b.n_y
    steps = _static_steps(n)
    carries, xs, ws = ins[:nc], ins[nc : nc + nx], ins[nc + nx :]
    tr = b.traced
    ys: list[list] = [[None] * steps for _ in range(ny)]
    cin: list[list] = [[None] * steps for _ in range(nc)]
    res: list[list] = [[None] * steps for _ in b.residuals]
    g = ins[0].graph

    def fresh(label: str) -> str:  # names no node of the copied graph can take
        return g.unique_name(f"{n.name}{label}")

    for t in range(steps - 1, -1, -1) if b.reverse else range(steps):
        values = carries + [S.getitem(x, t, name=fresh(f"[{t}]/{x.name}[{t}]")) for x in xs] + ws
        mm: dict[Node, Node] = dict(zip(tr.inputs + tr.captured_inputs, values))
        for node in tr.graph.nodes:
            if node not in mm:
                mm[node] = (
                    g.constant(tr.graph.stored_value(node), name=fresh(f"[{t}]/{node.name}"))
                    if node.op.name == "constant"
                    else apply(node.op, tuple(mm[i] for i in node.inputs), fresh(f"[{t}]/{node.name}"))
                )
        for j in range(nc):
            cin[j][t] = carries[j]
        for j, r in enumerate(b.residuals):
            res[j][t] = mm[r]
        carries = [mm[o] for o in tr.outputs[:nc]]
        for j in range(ny):
            ys[j][t] = mm[tr.outputs[nc + j]]
    return (
        carries
        + [I.stack(y, name=fresh(f".ys{j}")) for j, y in enumerate(ys)]
        + [I.stack(c, name=fresh(f".carries{j}")) for j, c in enumerate(cin)]
        + [I.stack(r, name=fresh(f".res{j}")) for j, r in enumerate(res)]
    )
