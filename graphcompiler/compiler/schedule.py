"""schedule: a topological order of the steps that frees values early (greedy list scheduling).

At each point every step whose inputs exist is a candidate; the one that frees the most bytes net (the inputs
it is the last reader of, minus what it allocates) runs next, ties going to the declared order. So gradient
sums run as soon as their terms exist and large values die early, which lowers the peak (issue 4).
"""

from __future__ import annotations

from .ir import is_leaf, nbytes, value_inputs

VIEW_OPS = frozenset({"reshape", "reshape_like", "transpose", "expand_dims", "squeeze", "broadcast_to",
                      "broadcast_like", "getitem", "concat_part", "identity", "stop_gradient", "sum_like"})


def size_of_value(node) -> int:
    """Bytes a step's result occupies of its own (a view shares its input's memory)."""
    if node.op.name in VIEW_OPS or None in node.shape:
        return 0
    return nbytes(node)


def declared_order(nodes) -> list:
    """The steps in the order they were declared (the unoptimised reference)."""
    return [n for n in nodes if not is_leaf(n)]


def memory_order(nodes, keep) -> list:
    """The steps of `nodes` (topological) in an order that keeps few bytes live; `keep` lives to the end."""
    steps = [n for n in nodes if not is_leaf(n)]
    pos = {n: k for k, n in enumerate(steps)}
    readers: dict = {n: set() for n in steps}
    waiting: dict = {}
    for n in steps:
        deps = {x for x in value_inputs(n) if x in pos}
        waiting[n] = len(deps)
        for x in deps:
            readers[x].add(n)
    remaining = {n: len(r) for n, r in readers.items()}
    size = {n: size_of_value(n) for n in steps}
    keep = set(keep)
    ready = [n for n in steps if waiting[n] == 0]
    order = []
    while ready:
        if len(ready) == 1:
            best = ready.pop()
        else:
            best_k, best_key = 0, None
            for k, n in enumerate(ready[:256]):
                freed = 0
                for x in set(value_inputs(n)):
                    if x in pos and remaining[x] == 1 and x not in keep:
                        freed += size[x]
                key = (freed - size[n], -pos[n])
                if best_key is None or key > best_key:
                    best_k, best_key = k, key
            best = ready.pop(best_k)
        order.append(best)
        for x in set(value_inputs(best)):
            if x in pos:
                remaining[x] -= 1
        for r in readers[best]:
            waiting[r] -= 1
            if waiting[r] == 0:
                ready.append(r)
    if len(order) != len(steps):
        raise AssertionError("schedule: the graph has a cycle")
    return order
