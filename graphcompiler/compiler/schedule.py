"""schedule: a topological order of the steps that frees values early (greedy list scheduling).

At each point every step whose inputs exist is a candidate; the one that frees the most bytes net (the inputs
it is the last reader of, minus what it allocates) runs next, ties going to the declared order. So gradient
sums run as soon as their terms exist and large values die early, which lowers the peak (issue 4). A heap
holds the candidates; a candidate's score changes only when one of its inputs is left with it as the last
reader, and then it is pushed again with the new score (the old entry is skipped when popped).
"""

from __future__ import annotations

import heapq

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


def memory_order(nodes, keep, after=None) -> list:
    """The steps of `nodes` (topological) in an order that keeps few bytes live; `keep` lives to the end.

    A view (a transpose, a reshape) holds its input's memory, so memory is counted on roots: a step frees
    a root when it is the last step reading it directly or through views. Among steps that free equally,
    the one with the longest path still ahead of it goes first (the forward pass before the backward
    terms that can wait), then the declared order. `after` adds ordering constraints only (step -> steps
    it must follow), as for recomputed steps that should run late.
    """
    steps = [n for n in nodes if not is_leaf(n)]
    pos = {n: k for k, n in enumerate(steps)}
    deps = {n: {x for x in value_inputs(n) if x in pos} for n in steps}
    consumers: dict = {n: [] for n in steps}
    for n in steps:
        for x in deps[n]:
            consumers[x].append(n)
    height = {}
    for n in reversed(steps):
        height[n] = 1 + max((height[c] for c in consumers[n]), default=0)
    roots_of: dict = {}                                   # the memory a step's inputs occupy
    for n in steps:
        rs = set()
        for x in deps[n]:
            rs |= roots_of[x] if x.op.name in VIEW_OPS else {x}
        roots_of[n] = rs
    readers: dict = {n: set() for n in steps}            # non-view steps reading a root, not yet run
    for n in steps:
        if n.op.name not in VIEW_OPS:
            for r in roots_of[n]:
                readers[r].add(n)
    size = {n: size_of_value(n) for n in steps}
    keep = set(keep)
    for n in list(keep):
        if n in roots_of and n.op.name in VIEW_OPS:
            keep |= roots_of[n]
    waiting = {n: len(deps[n]) for n in steps}
    followers: dict = {}
    for n, prior in (after or {}).items():
        if n in pos:
            for p in prior:
                if p in pos:
                    followers.setdefault(p, []).append(n)
                    waiting[n] += 1

    def net(n, also=None) -> int:
        """Bytes n allocates minus the bytes it frees (`also`: a step taken as run just before it)."""
        freed = 0
        if n.op.name not in VIEW_OPS:
            for r in roots_of[n]:
                left = readers[r]
                if r not in keep and (len(left) == 1 or also is not None and len(left) == 2 and also in left):
                    freed += size[r]
        return size[n] - freed

    def key(n):
        # one step of look-ahead: an allocation that lets a consumer free more right after is worth it
        own = net(n)
        best = own
        if own > 0:
            for c in consumers[n]:
                if waiting[c] == 1:
                    best = min(best, own + net(c, also=n))
        return (best, -height[n], pos[n])

    version = dict.fromkeys(steps, 0)
    heap = [(key(n), 0, n) for n in steps if waiting[n] == 0]
    heapq.heapify(heap)
    order = []
    done = set()
    while heap:
        _, ver, best = heapq.heappop(heap)
        if best in done or ver != version[best]:
            continue
        done.add(best)
        order.append(best)
        if best.op.name not in VIEW_OPS:
            for r in roots_of[best]:
                left = readers[r]
                left.discard(best)
                if len(left) == 1:                   # its last reader now frees it: a better score
                    (other,) = left
                    if waiting[other] == 0 and other not in done:
                        version[other] += 1
                        heapq.heappush(heap, (key(other), version[other], other))
        for c in followers.get(best, ()):
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(heap, (key(c), version[c], c))
        for c in consumers[best]:
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(heap, (key(c), version[c], c))
            elif waiting[c] == 1:                    # its last missing input now looks ahead to it
                for d in deps[c]:
                    if d not in done and waiting[d] == 0:
                        version[d] += 1
                        heapq.heappush(heap, (key(d), version[d], d))
    if len(order) != len(steps):
        raise AssertionError("schedule: the graph has a cycle")
    return order
