"""The compile pipeline in one place: the passes in order, each a function from data to data.

Once per compile (front):
    prune        ir.topo_order: the ancestors of the outputs and the update values
    simplify     simplify.py: rewrite rules to a fixpoint, common subexpressions, constant folding
Once per signature of feed shapes (specialize):
    concretize   the shape rules again on the fed shapes (conflicts reported before any kernel runs),
                 then the shape-dependent rules of simplify; values read only for their shape are pruned
    recompute    recompute.py: under a memory budget, forward values recomputed for the backward pass
    schedule     schedule.py: a topological order that frees memory early (or the declared order)
    plan         memory.py: the BufferPlan (live ranges, reused buffers, in-place steps, the peak)
    lower        lower.py: the LoweredProgram a backend's evaluator loads (lowered.py)

Program (program.py) keeps what is not a pass: the cache of specialisations, feed checking, updates,
the evaluator, and introspection. The passes never mutate the user's graph (ir.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import GraphCompilerError, ShapeError, fmt_shape
from ..graph import Graph, Node
from ..ops.base import Input, Op
from .ir import Context, is_leaf, topo_order, value_inputs
from .lower import lower
from ..backends.lowered import LoweredProgram
from .memory import BufferPlan, plan_buffers
from .recompute import choose, flops
from .schedule import declared_order, memory_order
from .simplify import simplify

PASSES = ("simplify", "schedule", "buffers")  # the passes optimize= can choose


def passes_of(optimize) -> frozenset[str]:
    """optimize=True: every pass; False: none (the graph as declared); or a collection of pass names."""
    if optimize is True:
        return frozenset(PASSES)
    if optimize is False or optimize is None:
        return frozenset()
    chosen = frozenset(optimize)
    unknown = chosen - set(PASSES)
    if unknown:
        raise GraphCompilerError(
            f"unknown optimisation pass {sorted(unknown)[0]!r}; choose among "
            f"{', '.join(PASSES)} (or optimize=True for all, False for none)"
        )
    return chosen


@dataclass
class Front:
    """The program after the passes that run once per compile."""

    ctx: Context
    nodes: list[Node]  # topological
    roots: list[Node]  # outputs, then update values
    static: bool  # every input's shape is known: one specialisation, made at compile
    stats: dict[str, Any]


@dataclass
class Specialized:
    """The program for one signature of feed shapes, down to its lowered form."""

    nodes: list[Node]
    roots: list[Node]
    plan: BufferPlan
    lowered: LoweredProgram
    leaf_nodes: list[Node]  # the graph nodes of lowered.leaves, in order
    copies: dict = field(default_factory=dict)  # recomputed step -> the step it repeats
    removed: int = 0  # nodes the specialisation removed (shape rules, shape-only reads)
    recompute_flops: int = 0
    unbudgeted_peak: int | None = None
    forward_flops: int = 0


def front(graph: Graph, roots: Sequence[Node], passes: frozenset[str]) -> Front:
    """prune, then simplify (with the shape rules too when every input's shape is known)."""
    ctx = Context(graph)
    roots = list(roots)
    nodes = prune(roots)
    stats: dict[str, Any] = {"nodes_in": len(graph), "removed_prune": len(graph) - len(nodes), "removed_simplify": 0}
    static = all(None not in n.shape for n in nodes if isinstance(n.op, Input))
    if "simplify" in passes:
        before = len(nodes)
        nodes, roots = simplify(nodes, roots, ctx, shapes=static)
        stats["removed_simplify"] = before - len(nodes)
    return Front(ctx, nodes, roots, static, stats)


def prune(roots: Sequence[Node]) -> list[Node]:
    """The ancestors of the roots, inputs before consumers."""
    return topo_order(roots)


def specialize(
    fr: Front,
    shapes: dict[Node, tuple],
    passes: frozenset[str],
    *,
    memory_budget: int | None,
    nan_check: bool,
    n_outputs: int,
    updates: Sequence[str],
) -> Specialized:
    """Every per-signature pass in order: concretize, recompute, schedule + plan, lower."""
    ctx = fr.ctx
    nodes, roots = fr.nodes, fr.roots
    if not fr.static:
        nodes, roots = concretize(nodes, roots, shapes, ctx)
        if "simplify" in passes:
            nodes, roots = simplify(nodes, roots, ctx, shapes=True)
    if any(n.op.shape_only or type(n.op).reads_value is not Op.reads_value for n in nodes):
        nodes = topo_order(roots, edges=value_inputs)  # what is read only for its shape is not computed
    elif nodes is fr.nodes:
        nodes = list(nodes)  # (the same walk would give the same list)
    removed = len(fr.nodes) - len(nodes)
    copies: dict[Node, Node] = {}
    unbudgeted = cost = None
    if memory_budget is not None:

        def plan_peak(ns, rs, cps):
            return schedule_and_plan(ns, rs, passes, nan_check, cps).peak_bytes

        unbudgeted = plan_peak(nodes, roots, {})
        nodes, roots, copies, _, cost = choose(nodes, roots, int(memory_budget), ctx, plan_peak)
    plan = schedule_and_plan(nodes, roots, passes, nan_check, copies)
    lowered, leaf_nodes = lower(plan, nodes, roots, ctx, n_outputs, updates, nan_check)
    if memory_budget is not None:
        lowered = dataclasses.replace(lowered, memory_budget=int(memory_budget))
    forward = sum(flops(n) for n in plan.order if not n.is_gradient and n not in copies)
    return Specialized(nodes, roots, plan, lowered, leaf_nodes, copies, removed, cost or 0, unbudgeted, forward)


def schedule_and_plan(
    nodes: list[Node], roots: list[Node], passes: frozenset[str], nan_check: bool, recomputed: dict | None = None
) -> BufferPlan:
    """Schedule the steps of `nodes` and plan their buffers (recomputed steps run late).

    With the schedule pass, the greedy memory order and the declared order are both planned and the one
    with the lower peak kept (the greedy order is a heuristic); without it, the declared order.
    """
    reuse, inplace = "buffers" in passes, not nan_check
    if "schedule" in passes:
        order = memory_order(nodes, roots, recomputed)
        plan = plan_buffers(order, roots, reuse=reuse, inplace=inplace)
        by_index = sorted(nodes, key=lambda n: n.index)
        if not recomputed and len(by_index) <= 20_000:
            declared = declared_order(by_index)
            if declared != order and is_topological(by_index):  # (the same order would give the same plan)
                other = plan_buffers(declared, roots, reuse=reuse, inplace=inplace)
                if other.peak_bytes < plan.peak_bytes:
                    plan = other
        return plan
    by_index = sorted(nodes, key=lambda n: n.index)
    order = declared_order(by_index if is_topological(by_index) and not recomputed else nodes)
    return plan_buffers(order, roots, reuse=reuse, inplace=inplace)


def is_topological(order) -> bool:
    """Every step of `order` comes after the steps whose values it reads."""
    seen: set[Node] = set()
    for n in order:
        for x in value_inputs(n):
            if x not in seen and not is_leaf(x):
                return False
        seen.add(n)
    return True


def concretize(nodes: list[Node], roots: list[Node], shapes: dict[Node, tuple], ctx: Context):
    """Copies of the nodes with the concrete shapes of one run: each op's shape rule runs again on them.

    A conflict between fed sizes is reported here, before any kernel runs. So is a None dimension fed
    with 1 against another None dimension it lines up with in a broadcast whose gradient was built: the
    gradient assumed those two sizes are equal (sum_to in ops/shape.py).
    """
    has_grad = any(n.is_gradient for n in nodes)
    new: dict[Node, Node] = {}
    by_origin = {ctx.origin_of(n): s for n, s in shapes.items()}
    for n in nodes:
        if isinstance(n.op, Input):
            shape = by_origin.get(ctx.origin_of(n), n.shape)
            new[n] = n if shape == n.shape else ctx.rebuild(n, (), shape)
            continue
        if is_leaf(n):
            new[n] = n
            continue
        ins = tuple(new[x] for x in n.inputs)
        if ins == n.inputs:
            new[n] = n
            continue
        try:
            shape, dtype = n.op.infer(*ins)
        except GraphCompilerError as e:
            raise ShapeError(
                f"the fed shapes do not fit {n.name} = {n.op.name}("
                f"{', '.join(x.name for x in n.inputs)}): {e}; inputs "
                f"{', '.join(f'{x.name} {fmt_shape(x.shape)}' for x in ins)} (declared "
                f"{', '.join(f'{x.name} {fmt_shape(x.shape)}' for x in n.inputs)}); "
                f"feed arrays whose sizes agree ({_fed(shapes)})"
            ) from None
        if has_grad and n.op.broadcasting:
            _check_lineup(n, ins, shapes)
        if any(d is not None and d != c for d, c in zip(n.shape, shape)) or len(shape) != len(n.shape):
            raise ShapeError(
                f"{n.name} ({n.op.name}) was declared with shape {fmt_shape(n.shape)} but the feeds "
                f"give it shape {fmt_shape(shape)} ({_fed(shapes)})"
            )
        new[n] = ctx.rebuild(n, ins, shape)
    return topo_order([new[r] for r in roots]), [new[r] for r in roots]


def _check_lineup(n: Node, ins: tuple, shapes) -> None:
    nd = len(n.shape)
    for k in range(1, nd + 1):
        sym = [(x, y) for x, y in zip(n.inputs, ins) if x.ndim >= k]
        pairs = [(x, y) for x, y in sym if x.shape[-k] is None]
        sizes = {y.shape[-k] for _, y in pairs}
        if len(pairs) > 1 and len(sizes) > 1:
            desc = ", ".join(f"{x.name} {fmt_shape(y.shape)}" for x, y in pairs)
            raise ShapeError(
                f"{n.name} = {n.op.name}({', '.join(x.name for x in n.inputs)}) was differentiated "
                f"assuming its inputs' None dimension {-k} has one size, but the feeds give {desc} "
                f"({_fed(shapes)}); feed equal sizes there, or declare the dimension that is "
                "broadcast with size 1"
            )


def _fed(shapes) -> str:
    return "fed " + ", ".join(f"{n.name}: {fmt_shape(s)}" for n, s in shapes.items()) if shapes else "no feeds"
