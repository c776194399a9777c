"""memory_budget: recompute forward values in the backward pass instead of keeping them (equation 6.53).

A forward value that a gradient step reads is normally kept alive from the forward pass to the backward
pass. Choosing it for recomputation gives the backward readers a copy of its step (a stand-in node computing
the same op on the same inputs, hence bit-identical), scheduled just before they need it (the scheduler holds
a copy back until a step that reads it has everything else it needs). Copies of consecutive dropped values
chain back to the nearest kept value (a checkpoint), as in Chen et al. (2016).

Two ways of choosing, the one that meets the budget with the fewer extra FLOPs wins:
- checkpoints every k-th candidate along the forward pass (k = 2, 3, 4, 6, ...), the square-root scheme for
  chains: about one extra forward pass, peak about n/k + k values;
- greedy by bytes saved per FLOP of recomputation, adding candidates in growing batches.
If neither meets the budget, the error names the smallest peak seen, the smallest budget that can be met.
"""

from __future__ import annotations

import math
from typing import Callable

from ..errors import GraphCompilerError
from ..graph import Node
from .ir import Context, is_leaf, nbytes, topo_order, value_inputs


def flops(node: Node) -> int:
    """A rough cost of one step, from the op record (2mkn for a matmul, one per element by default)."""
    return node.op.flops(node)


def candidates(nodes: list[Node], keep: set[Node]) -> list[Node]:
    """Forward values a recomputation may drop: those gradient steps read and their forward ancestors
    (a copy reads its inputs, so dropping a value alone would only keep its inputs alive instead)."""
    needed: set[Node] = set()
    for n in reversed(nodes):
        if n.is_gradient or n in needed:
            for x in value_inputs(n):
                if not x.is_gradient and not is_leaf(x):
                    needed.add(x)
    return [n for n in nodes if n in needed and n not in keep]


def with_recomputation(
    nodes: list[Node], roots: list[Node], drop: set[Node], ctx: Context
) -> tuple[list[Node], list[Node], dict[Node, Node]]:
    """The program with `drop` recomputed for its gradient readers: new nodes, roots and the copies
    (each mapped to the value it repeats).

    The scheduler runs the copies late (schedule.memory_order's `lazy`): just before a step needs them.
    """
    copy: dict[Node, Node] = {}
    replaced: dict[Node, Node] = {}

    def backward_version(x: Node) -> Node:
        return copy.get(x, replaced.get(x, x))

    for n in nodes:  # topological
        if is_leaf(n):
            continue
        if n.is_gradient:
            ins = tuple(backward_version(x) for x in n.inputs)
        else:
            ins = tuple(replaced.get(x, x) for x in n.inputs)
        m = n if ins == n.inputs else ctx.rebuild(n, ins)
        if m is not n:
            replaced[n] = m
        if n in drop:  # the copy reads kept values or other copies
            cins = tuple(copy.get(x, replaced.get(x, x)) for x in n.inputs)
            c = ctx.node(n.op, cins, like=n, name=ctx.fresh_name(n.name.split("~")[0] + "'"))
            ctx.source[c] = ctx.origin_of(n)
            copy[n] = c
    new_roots = [replaced.get(r, r) for r in roots]
    new_nodes = topo_order(new_roots, edges=value_inputs)
    made = set(new_nodes)
    copies = {c: replaced.get(n, n) for n, c in copy.items() if c in made}  # copy -> the value it repeats
    return new_nodes, new_roots, copies


def choose(
    nodes: list[Node],
    roots: list[Node],
    budget: int,
    ctx: Context,
    plan_peak: Callable[[list[Node], list[Node], dict], int],
) -> tuple:
    """The cheapest recomputation found whose planned peak is at most `budget`; raise if there is none.

    plan_peak(nodes, roots, copies) schedules and plans a candidate program and returns its peak.
    Returns (nodes, roots, copies, peak, extra FLOPs).
    """
    keep = set(roots)
    cands = candidates(nodes, keep)
    best = None
    smallest = None
    tried: dict[frozenset, tuple] = {}

    def trial(drop: set[Node]):
        nonlocal best, smallest
        key = frozenset(drop)
        if key in tried:
            return tried[key]
        res = with_recomputation(nodes, roots, drop, ctx) if drop else (nodes, roots, {})
        peak = plan_peak(*res)
        cost = sum(flops(c) for c in res[2])
        tried[key] = (res, peak, cost)
        if smallest is None or peak < smallest:
            smallest = peak
        if peak <= budget and (best is None or cost < best[2] or cost == best[2] and peak < best[1]):
            best = (res, peak, cost)
        return tried[key]

    trial(set())
    if best is not None or not cands:
        return _result(best, smallest, budget, nodes, roots)
    # checkpoints every k-th candidate (Chen et al.'s square-root scheme for a chain)
    n = len(cands)
    k = 2
    while k <= max(2, n):
        drop = {c for i, c in enumerate(cands) if (i + 1) % k}
        trial(drop)
        if best is not None and k > 2 * math.isqrt(n) + 2:
            break
        k = k + 1 if k < 4 else int(k * 1.5)
    # greedy by bytes saved per FLOP of recomputation: the first prefix that meets the budget, then the
    # shortest such prefix by bisection
    ranked = sorted(cands, key=lambda c: -nbytes(c) / max(flops(c), 1))
    m, prev = 1, 0
    while not (best is not None and n > 300):  # long chains: the checkpoints are good enough
        _, peak, _ = trial(set(ranked[:m]))
        if peak <= budget:
            lo, hi = prev, m
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if trial(set(ranked[:mid]))[1] <= budget:
                    hi = mid
                else:
                    lo = mid
            break
        if m == n:
            break
        prev, m = m, min(n, 2 * m)
    trial(set(cands))
    return _result(best, smallest, budget, nodes, roots)


def _result(best, smallest, budget, nodes, roots):
    if best is None:
        out_bytes = sum(nbytes(r) for r in set(roots) if not is_leaf(r))
        raise GraphCompilerError(
            f"memory_budget={budget} cannot be met: the smallest budget that can is {smallest:,} bytes (the "
            f"lowest planned peak found when recomputing forward values in the backward pass; the outputs "
            f"alone take {out_bytes:,} bytes); pass memory_budget={smallest} or more"
        )
    res, peak, cost = best
    return (*res, peak, cost)
