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
    cands = candidates(nodes, set(roots))
    trials = _Trials(nodes, roots, budget, ctx, plan_peak)
    trials.run(set())
    if trials.best is None and cands:
        _checkpoints(trials, cands)
        _by_bytes_per_flop(trials, cands)
        trials.run(set(cands))
    return _result(trials.best, trials.smallest, budget, nodes, roots)


class _Trials:
    """The recomputations tried so far: each one's program, planned peak and extra FLOPs; the cheapest that
    meets the budget (`best`) and the smallest peak seen (`smallest`)."""

    def __init__(self, nodes, roots, budget: int, ctx: Context, plan_peak):
        self.nodes, self.roots, self.budget, self.ctx, self.plan_peak = nodes, roots, budget, ctx, plan_peak
        self.best: tuple | None = None  # (program, peak, cost)
        self.smallest: int | None = None
        self.tried: dict[frozenset, tuple] = {}

    def run(self, drop: set[Node]) -> tuple:
        """Plan the program with `drop` recomputed (once per set): (program, peak, extra FLOPs)."""
        key = frozenset(drop)
        if key in self.tried:
            return self.tried[key]
        res = with_recomputation(self.nodes, self.roots, drop, self.ctx) if drop else (self.nodes, self.roots, {})
        peak = self.plan_peak(*res)
        cost = sum(flops(c) for c in res[2])
        self.tried[key] = (res, peak, cost)
        if self.smallest is None or peak < self.smallest:
            self.smallest = peak
        best = self.best
        if peak <= self.budget and (best is None or cost < best[2] or cost == best[2] and peak < best[1]):
            self.best = (res, peak, cost)
        return self.tried[key]


def _checkpoints(trials: _Trials, cands: list[Node]) -> None:
    """Checkpoints every k-th candidate (Chen et al.'s square-root scheme for a chain), for growing k."""
    n = len(cands)
    k = 2
    while k <= max(2, n):
        trials.run({c for i, c in enumerate(cands) if (i + 1) % k})
        if trials.best is not None and k > 2 * math.isqrt(n) + 2:
            break
        k = k + 1 if k < 4 else int(k * 1.5)


def _by_bytes_per_flop(trials: _Trials, cands: list[Node]) -> None:
    """Greedy by bytes saved per FLOP of recomputation: the first prefix of the ranking that meets the
    budget (doubling), then the shortest such prefix by bisection. Long chains keep the checkpoints."""
    n = len(cands)
    ranked = sorted(cands, key=lambda c: -nbytes(c) / max(flops(c), 1))
    m, prev = 1, 0
    while not (trials.best is not None and n > 300):  # long chains: the checkpoints are good enough
        _, peak, _ = trials.run(set(ranked[:m]))
        if peak <= trials.budget:
            lo, hi = prev, m
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if trials.run(set(ranked[:mid]))[1] <= trials.budget:
                    hi = mid
                else:
                    lo = mid
            break
        if m == n:
            break
        prev, m = m, min(n, 2 * m)


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
