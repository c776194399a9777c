"""schedule: a topological order of the steps that frees values early (greedy list scheduling).

At each point every step whose inputs exist is a candidate; the one that frees the most bytes net (the inputs
it is the last reader of, minus what it allocates) runs next, ties going to the declared order. So gradient
sums run as soon as their terms exist and large values die early, which lowers the peak (issue 4). A heap
holds the candidates; a candidate's score changes only when one of its inputs is left with it as the last
reader, and then it is pushed again with the new score (the old entry is skipped when popped).
"""

from __future__ import annotations

import heapq
from typing import Iterable

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
    g = StepGraph(nodes, keep)
    order = _ListScheduler(g, _Lazy(g, lazy) if lazy else None).run()
    if len(order) != len(g.steps):
        raise AssertionError("schedule: the graph has a cycle")
    steps = g.steps
    return [steps[k] for k in order]


class StepGraph:
    """The steps of a program numbered in their topological order, with what the scheduler reads of them
    as lists indexed by that number (a few lists instead of dictionaries keyed by node: big graphs stay fast).
    """

    def __init__(self, nodes: Iterable[Node], keep: Iterable[Node]) -> None:
        steps = [n for n in nodes if not is_leaf(n)]
        pos = {n: k for k, n in enumerate(steps)}
        self.steps, self.pos = steps, pos
        deps: list[tuple] = []  # per step: the steps it reads, each once, in the order read
        consumers: list[list[int]] = [[] for _ in steps]  # per step: the steps reading it, in topological order
        self.deps, self.consumers = deps, consumers
        for k, n in enumerate(steps):
            ds = _step_inputs(n, pos)
            deps.append(ds)
            for x in ds:
                consumers[x].append(k)
        self.view = [n.op.is_view for n in steps]
        self.height = _heights(consumers)
        self.roots_of, self.readers, self.reader_sum, self.size = self._memory(steps)
        self.keep = self._kept(keep)

    def _memory(self, steps: list[Node]) -> tuple[list, list[int], list[int], list[int]]:
        """Per step: the roots whose memory its inputs occupy, and its own bytes; per root: how many non-view
        steps read it and the sum of their numbers (when one is left, the sum names it)."""
        deps, view = self.deps, self.view
        roots_of: list = [()] * len(steps)
        readers = [0] * len(steps)  # non-view steps reading a root, not yet run
        reader_sum = [0] * len(steps)
        size = [0] * len(steps)
        for k, n in enumerate(steps):
            rs = deps[k]
            if rs and (view[rs[0]] or len(rs) > 1 and any([view[x] for x in rs])):
                merged: dict = {}
                for y in rs:
                    merged.update(dict.fromkeys(roots_of[y]) if view[y] else {y: None})
                rs = tuple(merged)
            roots_of[k] = rs
            if not view[k]:
                for r in rs:
                    readers[r] += 1
                    reader_sum[r] += k
                size[k] = 0 if None in n.shape else nbytes(n)
        return roots_of, readers, reader_sum, size

    def reads(self, n: int, r: int) -> bool:
        """Whether step n (not yet run) is one of root r's readers left."""
        return not self.view[n] and r in self.roots_of[n]

    def _kept(self, keep: Iterable[Node]) -> list[bool]:
        """Per step: whether its memory lives to the end (a kept value, or the root of a kept view)."""
        kept = [False] * len(self.steps)
        for n in keep:
            k = self.pos.get(n)
            if k is not None:
                kept[k] = True
                if self.view[k]:
                    for r in self.roots_of[k]:
                        kept[r] = True
        return kept


def _step_inputs(n: Node, pos: dict[Node, int]) -> tuple:
    """The positions of the steps whose values n reads, each once, in the order n reads them."""
    ins = value_inputs(n)
    if len(ins) == 2:  # the common cases first (this runs once per step)
        a, b = pos.get(ins[0]), pos.get(ins[1])
        if a is None:
            return () if b is None else (b,)
        return (a,) if b is None or b == a else (a, b)
    if len(ins) == 1:
        k = pos.get(ins[0])
        return () if k is None else (k,)
    return tuple(dict.fromkeys(k for k in map(pos.get, ins) if k is not None))


def _heights(consumers: list[list[int]]) -> list[int]:
    """Per step: the length of the longest path of steps from it to the end."""
    height = [1] * len(consumers)
    for k in range(len(consumers) - 1, -1, -1):
        cs = consumers[k]
        if len(cs) == 1:
            height[k] = 1 + height[cs[0]]
        elif cs:
            height[k] = 1 + max([height[c] for c in cs])
    return height


class _Lazy:
    """The recomputed steps (and the steps reading only them) and what holds them back."""

    def __init__(self, g: StepGraph, lazy: Iterable[Node]) -> None:
        pos, deps = g.pos, g.deps
        self.extra = [0] * len(g.steps)  # inputs a step waits for beyond its own: the step it repeats
        self.followers: dict[int, list[int]] = {}  # a step -> the copies that must run after it
        if isinstance(lazy, dict):
            for c, original in lazy.items():
                if c in pos and original in pos:
                    self.followers.setdefault(pos[original], []).append(pos[c])
                    self.extra[pos[c]] += 1
        self.steps = steps = {pos[n] for n in lazy if n in pos}
        for k, ds in enumerate(deps):  # reading only recomputed values: wait as well
            if k not in steps and ds and all(x in steps for x in ds):
                steps.add(k)
        self.hard = [sum(1 for x in ds if x not in steps) for ds in deps]  # inputs that are not lazy


class _ListScheduler:
    """Greedy list scheduling over a StepGraph: the candidate that frees the most bytes net runs next.

    Candidates wait in a heap of (net bytes, -height, step, version); a candidate whose score changes is
    pushed again with a new version, and the stale entry is skipped when popped. Lazy steps (recomputations)
    wait in `dormant` until released (a reader of theirs has everything else) or until nothing else can run.
    """

    def __init__(self, g: StepGraph, lz: _Lazy | None):
        self.g = g
        self.waiting = [len(ds) for ds in g.deps]  # inputs not yet computed
        self.lazy: set = set()
        self.followers: dict = {}
        self.hard: list = []
        if lz is not None:
            self.lazy, self.followers, self.hard = lz.steps, lz.followers, lz.hard
            self.waiting = [w + e for w, e in zip(self.waiting, lz.extra)]
        self.released: set = set()
        self.dormant: list = []  # lazy steps whose inputs exist, by urgency
        self.version = [0] * len(g.deps)
        self.done = [False] * len(g.deps)
        self.heap: list = []

    def net(self, n: int, also: int | None = None) -> int:
        """Bytes n allocates minus the bytes it frees (`also`: a step taken as run just before it)."""
        g = self.g
        freed = 0
        if not g.view[n]:
            readers, kept, size = g.readers, g.keep, g.size
            for r in g.roots_of[n]:
                left = readers[r]
                if not kept[r] and (left == 1 or left == 2 and also is not None and g.reads(also, r)):
                    freed += size[r]
        return g.size[n] - freed

    def entry(self, n: int) -> tuple:
        """n's heap entry. One step of look-ahead: an allocation that lets a consumer free more right after
        is worth it."""
        own = self.net(n)
        best = own
        if own > 0:
            waiting = self.waiting
            for c in self.g.consumers[n]:
                if waiting[c] == 1:
                    best = min(best, own + self.net(c, also=n))
        return (best, -self.g.height[n], n, self.version[n])

    def reconsider(self, n: int) -> None:
        """n's score changed: push it again (its older entry is skipped when popped)."""
        self.version[n] += 1
        heapq.heappush(self.heap, self.entry(n))

    def ready(self, n: int) -> None:
        """n's inputs exist: a candidate, or dormant if it is a lazy step not yet released."""
        if n in self.lazy and n not in self.released:
            heapq.heappush(self.dormant, (-self.g.height[n], n))
        else:
            heapq.heappush(self.heap, self.entry(n))

    def release(self, n: int) -> None:
        """Let lazy step n (and the lazy steps it reads) run as soon as their inputs exist."""
        lazy, released, waiting, done = self.lazy, self.released, self.waiting, self.done
        stack = [n]
        while stack:
            m = stack.pop()
            if m in released:
                continue
            released.add(m)
            if waiting[m] == 0 and not done[m]:
                heapq.heappush(self.heap, self.entry(m))
            stack.extend(x for x in self.g.deps[m] if x in lazy and x not in released)

    def start(self) -> None:
        """The first candidates: the steps that read no step; lazy steps whose readers need only them."""
        lazy, waiting, deps, hard = self.lazy, self.waiting, self.g.deps, self.hard
        self.heap = [self.entry(n) for n in range(len(deps)) if waiting[n] == 0 and n not in lazy]
        heapq.heapify(self.heap)
        for n in range(len(deps)) if lazy else ():
            if n not in lazy and hard[n] == 0:
                for x in deps[n]:
                    if x in lazy:
                        self.release(x)
            if n in lazy and waiting[n] == 0:
                self.ready(n)

    def run(self) -> list[int]:
        """The order: candidates by score until none is left (then the most urgent dormant step, released)."""
        self.start()
        heap, dormant, done, version = self.heap, self.dormant, self.done, self.version
        order = []
        while heap or dormant:
            if not heap:  # nothing else can run: the most urgent lazy step
                m = heapq.heappop(dormant)[1]
                if not done[m] and m not in self.released:
                    self.release(m)
                continue
            best = heapq.heappop(heap)
            n = best[2]
            if done[n] or best[3] != version[n]:
                continue
            done[n] = True
            order.append(n)
            self.ran(n)
        return order

    def ran(self, n: int) -> None:
        """Step n has run: its inputs lose a reader, its consumers wait for one input less."""
        g, waiting, done, lazy, released = self.g, self.waiting, self.done, self.lazy, self.released
        if not g.view[n]:
            readers, reader_sum = g.readers, g.reader_sum
            for r in g.roots_of[n]:
                readers[r] -= 1
                reader_sum[r] -= n
                if readers[r] == 1:  # its last reader now frees it: a better score
                    other = reader_sum[r]
                    if waiting[other] == 0 and not done[other] and (other not in lazy or other in released):
                        self.reconsider(other)
        if self.followers:
            for c in self.followers.get(n, ()):
                waiting[c] -= 1
                if waiting[c] == 0:
                    self.ready(c)
        deps = g.deps
        for c in g.consumers[n]:
            waiting[c] -= 1
            if lazy and n not in lazy:
                self.unblock(c)
            if waiting[c] == 0:
                self.ready(c)
            elif waiting[c] == 1:  # its last missing input now looks ahead to it
                for d in deps[c]:
                    if not done[d] and waiting[d] == 0 and (d not in lazy or d in released):
                        self.reconsider(d)

    def unblock(self, c: int) -> None:
        """A step that is not lazy ran and c reads it: once c has all such inputs, its lazy inputs may run."""
        lazy = self.lazy
        self.hard[c] -= 1
        if self.hard[c] == 0 and (c not in lazy or c in self.released):
            for x in self.g.deps[c]:
                if x in lazy:
                    self.release(x)
