"""lower: the last pass, from a scheduled buffer plan of graph nodes to a LoweredProgram of plain data.

Each node of the schedule becomes a LoweredStep: its slot, its arguments (slots, or constants), the NumPy
call that computes it (the cheapest one: a ufunc directly where the op's kernel is only that ufunc), its
`out=` (a view of a planned buffer, or the array of an input that dies there), the slots freed after it, and
the names its label is made of (the user's names). See lowered.py for the contract backends implement.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..backends.lowered import BufferView, Const, LoweredProgram, LoweredStep, OutSlot
from ..graph import Node
from ..ops.base import Constant, Input, Op, Parameter
from .ir import Context

if TYPE_CHECKING:
    from .memory import BufferPlan


def lower(
    plan: "BufferPlan",
    nodes: Sequence[Node],
    roots: Sequence[Node],
    ctx: Context,
    n_outputs: int,
    updates: Sequence[str],
    nan_check: bool = False,
) -> tuple[LoweredProgram, list[Node]]:
    """The LoweredProgram of a buffer plan, and the graph nodes of its leaves (in the order of `leaves`)."""
    slot, leaf_nodes, leaf_slots, leaf_kinds, leaf_specs = _leaves(nodes, ctx)
    first = len(slot)  # step k of the schedule writes slot first + k
    for k, n in enumerate(plan.order):
        slot[n] = first + k
    steps = _steps(plan, slot, first, ctx)
    results, copy = _results(plan, roots, slot, ctx, n_outputs)
    lowered = LoweredProgram(
        steps,
        len(slot),
        tuple(leaf_slots),
        tuple(n.name for n in leaf_nodes),
        tuple(leaf_kinds),
        tuple(results),
        tuple(copy),
        n_outputs,
        tuple(updates),
        tuple(plan.buffers),
        None if plan.offsets is None else tuple(plan.offsets),
        plan.resident_bytes,
        nan_check,
        tuple(leaf_specs),
    )
    return lowered, leaf_nodes


def _leaves(nodes: Sequence[Node], ctx: Context) -> tuple[dict[Node, int], list, list, list, list]:
    """The slots of the inputs and parameters (first, in the order of `nodes`), and what a run says of each."""
    slot: dict[Node, int] = {}
    leaf_nodes, leaf_slots, leaf_kinds, leaf_specs = [], [], [], []
    for n in nodes:
        op = n.op
        if isinstance(op, (Input, Parameter)):
            slot[n] = len(slot)
            leaf_nodes.append(ctx.origin_of(n))
            leaf_slots.append(slot[n])
            leaf_kinds.append("feed" if isinstance(op, Input) else "parameter")
            leaf_specs.append((tuple(n.shape), n.dtype))
    return slot, leaf_nodes, leaf_slots, leaf_kinds, leaf_specs


def _steps(plan: "BufferPlan", slot: dict[Node, int], first: int, ctx: Context) -> tuple[LoweredStep, ...]:
    """One LoweredStep per step of the schedule: its kernel, arguments, `out=`, frees and names."""
    values = plan.values
    drops = _frees(plan, slot)
    views: dict[tuple, BufferView] = {}  # equal records shared: one per buffer, shape and dtype
    origin = ctx.source.get
    steps = []
    for k, n in enumerate(plan.order):
        v = values[n]
        op = n.op
        in_shape = n.inputs[0].shape if n.inputs else ()
        fn, extra, kw = op.fast_kernel(v.kind == "buffer", n.shape, in_shape, n.dtype)
        args = _arguments(n, slot, ctx)
        out: BufferView | OutSlot | None = None
        if v.kind == "buffer":
            assert v.buffer is not None  # the plan gives every buffer value its buffer
            key = (v.buffer, n.shape, n.dtype)
            out = views.get(key)
            if out is None:
                out = views[key] = BufferView(v.buffer, n.shape, n.dtype)
        elif v.into is not None:  # an output written over its dying input's array
            fn, extra, kw = op.fast_kernel(True, n.shape, in_shape, n.dtype)
            out = OutSlot(slot[v.into])
        if extra:
            args += [Const(e) for e in extra]
        names = tuple([x.name for x in n.inputs])
        user = origin(n, n)
        computes: tuple | None = None  # the user's node this step computes, when it is not the step itself
        if user is not n:
            user_names = tuple([x.name for x in user.inputs])
            computes = (user.name, user.op.name, names if user_names == names else user_names)
        steps.append(
            LoweredStep(
                op,
                op.name,
                fn,
                tuple(args),
                first + k,
                n.shape,
                n.dtype,
                out,
                kw,
                drops.get(k, ()),
                n.name,
                names,
                computes,
            )
        )
    return tuple(steps)


def _frees(plan: "BufferPlan", slot: dict[Node, int]) -> dict[int, tuple[int, ...]]:
    """Step -> the slots of values (not in planned buffers, not kept) whose last reader it is."""
    drops: dict[int, list[int]] = {}
    end = len(plan.order)
    for n, v in plan.values.items():
        if v.kind != "buffer" and v.last < end:
            drops.setdefault(max(v.readers, default=v.first), []).append(slot[n])
    return {k: tuple(d) for k, d in drops.items()}


def _arguments(n: Node, slot: dict[Node, int], ctx: Context) -> list:
    """A step's arguments: slots, constants' values, and stand-ins for inputs read only for their shape."""
    op = n.op
    if not op.shape_only and type(op).reads_value is Op.reads_value:  # the common case: every input is read
        return [Const(ctx.value(x)) if isinstance(x.op, Constant) else slot[x] for x in n.inputs]
    args: list = []
    for i, x in enumerate(n.inputs):
        if not op.reads_value(i):
            args.append(Const(np.broadcast_to(np.empty((), x.dtype), x.shape)))
        elif isinstance(x.op, Constant):
            args.append(Const(ctx.value(x)))
        else:
            args.append(slot[x])
    return args


def _results(plan: "BufferPlan", roots: Sequence[Node], slot: dict[Node, int], ctx: Context, n_outputs: int):
    """What a run returns (slots, or constants the optimiser folded), and which must be handed out as copies."""
    values = plan.values
    results: list = []
    copy: list[bool] = []
    seen: set[Node] = set()
    for r in roots:
        if isinstance(r.op, Constant):  # an output the optimiser folded to a constant
            results.append(Const(ctx.value(r)))
            copy.append(True)
            continue
        results.append(slot[r])
        kind = values[r].kind if r in values else "leaf"
        copy.append(kind not in ("fresh", "buffer") or r in seen or (kind == "buffer" and len(results) <= n_outputs))
        seen.add(r)
    return results, copy
