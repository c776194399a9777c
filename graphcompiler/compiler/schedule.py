"""schedule: a topological order of the steps that frees values early (greedy list scheduling).

At each point every step whose inputs exist is a candidate; the one that frees the most bytes net (the inputs
it is the last reader of, minus what it allocates) runs next, ties going to the declared order. So gradient
sums run as soon as their terms exist and large values die early, which lowers the peak (issue 4). A heap
holds the candidates; a candidate's score changes only when one of its inputs is left with it as the last
reader, and then it is pushed again with the new score (the old entry is skipped when popped).
"""

from __future__ import annotations

import heapq

from ..graph import Node
from .ir import is_leaf, nbytes, value_inputs


def size_of_value(node) -> int:
    """Bytes a step's result occupies of its own (a view shares its input's memory)."""
    if node.op.is_view or None in node.shape:
        return 0
    return nbytes(node)


def declared_order(nodes) -> list:
    """The steps in the order they were declared (the unoptimised reference)."""
    return [n for n in nodes if not is_leaf(n)]


def memory_order(nodes, keep, lazy=None) -> list:
    """The steps of `nodes` (topological) in an order that keeps few bytes live; `keep` lives to the end.

    A view (a transpose, a reshape) holds its input's memory, so memory is counted on roots: a step frees
    a root when it is the last step reading it directly or through views. Among steps that free equally,
    the one with the longest path still ahead of it goes first (the forward pass before the backward
    terms that can wait), then the declared order.

    `lazy` steps (recomputations, mapped to the step each repeats) run as late as possible: such a step,
    and any step reading only lazy steps, waits until a step that needs it has everything else it reads,
    or until nothing else can run; and never before the step it repeats.
    """
    steps = [n for n in nodes if not is_leaf(n)]
    pos = {n: k for k, n in enumerate(steps)}
    deps = {}
    consumers: dict = {}
    view = {}
    for n in steps:
        ds = {x for x in value_inputs(n) if x in pos}
        deps[n] = ds
        consumers[n] = []
        view[n] = n.op.is_view
    for n in steps:
        for x in deps[n]:
            consumers[x].append(n)
    height: dict[Node, int] = {}
    for n in reversed(steps):
        cs = consumers[n]
        height[n] = 1 + max([height[c] for c in cs]) if cs else 1
    roots_of: dict = {}  # the memory a step's inputs occupy
    readers: dict = {n: set() for n in steps}  # non-view steps reading a root, not yet run
    size = {}
    for n in steps:
        ds = deps[n]
        rs = ds
        for x in ds:
            if view[x]:
                rs = set()
                for y in ds:
                    rs |= roots_of[y] if view[y] else {y}
                break
        roots_of[n] = rs
        if view[n]:
            size[n] = 0
        else:
            for r in rs:
                readers[r].add(n)
            size[n] = 0 if None in n.shape else nbytes(n)
    keep = set(keep)
    for n in list(keep):
        if n in roots_of and view[n]:
            keep |= roots_of[n]
    waiting = {n: len(deps[n]) for n in steps}
    repeats = dict(lazy) if isinstance(lazy, dict) else {}
    lazy = {n for n in (lazy or ()) if n in pos}
    followers: dict = {}
    for c, original in repeats.items():  # a copy runs after the step it repeats
        if c in pos and original in pos:
            followers.setdefault(original, []).append(c)
            waiting[c] += 1
    if lazy:
        for n in steps:  # reading only recomputed values: wait as well
            if n not in lazy and deps[n] and all(x in lazy for x in deps[n]):
                lazy.add(n)
        hard = {n: sum(1 for x in deps[n] if x not in lazy) for n in steps}
    released: set = set()
    dormant: list = []  # lazy steps whose inputs exist, by urgency

    def net(n, also=None) -> int:
        """Bytes n allocates minus the bytes it frees (`also`: a step taken as run just before it)."""
        freed = 0
        if not view[n]:
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
    heap = [(key(n), 0, n) for n in steps if waiting[n] == 0 and n not in lazy]
    heapq.heapify(heap)
    order = []
    done = set()

    def ready(n):
        if n in lazy and n not in released:
            heapq.heappush(dormant, (-height[n], pos[n], n))
        else:
            heapq.heappush(heap, (key(n), version[n], n))

    def release(n):
        stack = [n]
        while stack:
            m = stack.pop()
            if m in released:
                continue
            released.add(m)
            if waiting[m] == 0 and m not in done:
                heapq.heappush(heap, (key(m), version[m], m))
            stack.extend(x for x in deps[m] if x in lazy and x not in released)

    for n in steps if lazy else ():
        if n not in lazy and hard[n] == 0:
            for x in deps[n]:
                if x in lazy:
                    release(x)
        if n in lazy and waiting[n] == 0:
            ready(n)
    while heap or dormant:
        if not heap:  # nothing else can run: the most urgent lazy step
            _, _, m = heapq.heappop(dormant)
            if m not in done and m not in released:
                release(m)
            continue
        _, ver, best = heapq.heappop(heap)
        if best in done or ver != version[best]:
            continue
        done.add(best)
        order.append(best)
        if not view[best]:
            for r in roots_of[best]:
                left = readers[r]
                left.discard(best)
                if len(left) == 1:  # its last reader now frees it: a better score
                    (other,) = left
                    if waiting[other] == 0 and other not in done and (other not in lazy or other in released):
                        version[other] += 1
                        heapq.heappush(heap, (key(other), version[other], other))
        for c in followers.get(best, ()):
            waiting[c] -= 1
            if waiting[c] == 0:
                ready(c)
        for c in consumers[best]:
            waiting[c] -= 1
            if lazy and best not in lazy:
                hard[c] -= 1
                if hard[c] == 0 and (c not in lazy or c in released):
                    for x in deps[c]:
                        if x in lazy:
                            release(x)
            if waiting[c] == 0:
                ready(c)
            elif waiting[c] == 1:  # its last missing input now looks ahead to it
                for d in deps[c]:
                    if d not in done and waiting[d] == 0 and (d not in lazy or d in released):
                        version[d] += 1
                        heapq.heappush(heap, (key(d), version[d], d))
    if len(order) != len(steps):
        raise AssertionError("schedule: the graph has a cycle")
    return order
