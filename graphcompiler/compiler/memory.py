"""The buffer plan: live ranges of values, buffers reused across values, in-place elementwise steps, the peak.

A step's value is one of three kinds. "buffer": the kernel writes into a planned buffer (`out=`) that lives
in the program between runs; a buffer whose values have all been read for the last time is reused by a later
value of the same size and dtype, and an elementwise step writes in place into an input that dies there.
"view": the kernel returns a view of its first input (a reshape, a transpose), which keeps that input's
memory alive as long as the view is read. "fresh": the kernel allocates its result (ops without `out=`, and
the outputs, which are handed to the caller without a copy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..graph import Node
from .ir import nbytes, value_inputs
from ..backends.lowered import ALIGN


def can_write_out(op, dtype) -> bool:
    """Whether the evaluator can have this op write into a planned buffer (`out=`): the op record says."""
    return op.can_write_out(dtype)


def worth_a_buffer(shape) -> bool:
    """A planned buffer pays for values with elements; NumPy's scalars are cheaper than out= on a 0-d array."""
    return len(shape) > 0


@dataclass(slots=True)
class Value:
    """One step's value in the plan: where it lives and for how long (steps numbered from 0)."""

    node: Node
    kind: str  # "buffer", "view" or "fresh"
    first: int  # the step that computes it
    last: int = -1  # the last step that reads it (len(schedule) for outputs and updates)
    root: Node | None = None  # whose memory it occupies (itself unless a view; None: a leaf's)
    buffer: int | None = None  # planned buffer id (buffer kind, and views of one)
    inplace: bool = False  # written into the buffer of an input that dies at this step
    readers: list = field(default_factory=list)
    into: Node | None = None  # an output written over a freshly allocated input that dies here

    @property
    def nbytes(self) -> int:
        return 0 if self.kind == "view" or self.into is not None else nbytes(self.node)


@dataclass
class BufferPlan:
    order: list[Node]
    values: dict[Node, Value]
    buffers: list[tuple[int, np.dtype]]  # buffer id -> (elements, dtype)
    live: list[int]  # bytes live after each step (buffers' values + fresh)
    peak_bytes: int
    peak_step: int
    resident_bytes: int  # the planned buffers, kept between runs
    offsets: list[int] | None = None  # each buffer's byte offset in one arena (None: separate arrays)


def is_elementwise(node: Node) -> bool:
    """A step that may write its result over an input of its own shape (elementwise, reading each once)."""
    op = node.op
    return op.elementwise and op.writes_out


def plan_buffers(order: list[Node], keep: list[Node], *, reuse: bool = True, inplace: bool = True) -> BufferPlan:
    """Assign buffers to the values of a schedule; `keep` (outputs, updates) live to the end.

    inplace=False keeps every input intact through its last step (nan_check reads the inputs after it).
    """
    outputs = set(keep)
    values, vs = _live_ranges(order, outputs, reuse)
    if reuse and inplace:
        _outputs_over_dying_inputs(order, values, outputs)
    for v in reversed(vs):  # a root lives as long as its views
        if v.kind == "view" and v.root is not None:
            r = values[v.root]
            if v.last > r.last:
                r.last = v.last
    groups = _inplace_groups(vs, values, outputs, reuse and inplace)
    offsets = None
    if reuse and len(groups) <= ARENA_LIMIT:
        buffers, offsets, resident = _pack(groups)
    else:
        buffers = _pools(groups, outputs, reuse)
        resident = sum(size * dt.itemsize for size, dt in buffers)
    for v in vs:
        if v.kind == "view" and v.root is not None:
            v.buffer = values[v.root].buffer
    live = _live_bytes(order, vs, resident)
    peak = max(live, default=resident)
    peak_step = live.index(peak) if live else 0
    return BufferPlan(order, values, buffers, live, peak, peak_step, resident, offsets)


def _live_ranges(order: list[Node], outputs: set, reuse: bool) -> tuple[dict[Node, Value], list[Value]]:
    """Each step's Value (by node, and in the order of the steps): its kind, the steps reading it, and its own
    last read (outputs: the end)."""
    values: dict[Node, Value] = {}
    vs: list[Value] = []
    get = values.get
    for k, n in enumerate(order):
        ins = n.inputs
        if n.op.is_view and ins:
            x0 = get(ins[0])
            v = Value(n, "view", k, root=None if x0 is None else x0.root)
        elif reuse and n not in outputs and worth_a_buffer(n.shape) and can_write_out(n.op, n.dtype):
            v = Value(n, "buffer", k, root=n)
        else:
            v = Value(n, "fresh", k, root=n)
        values[n] = v
        vs.append(v)
        ins = value_inputs(n)
        if len(ins) == 2 and ins[0] is not ins[1]:  # (the common cases first: this runs once per step)
            for x in ins:
                xv = get(x)
                if xv is not None:
                    xv.readers.append(k)
        else:
            for x in ins if len(ins) == 1 else set(ins):
                xv = get(x)
                if xv is not None:
                    xv.readers.append(k)
    for v in vs:  # readers were added in step order
        v.last = v.readers[-1] if v.readers else v.first
    for n in outputs:
        out = get(n)
        if out is not None:
            out.last = len(order)
    return values, vs


def _outputs_over_dying_inputs(order: list[Node], values: dict[Node, Value], outputs: set) -> None:
    """An elementwise output may take over the memory of an input whose last reader it is."""
    end = len(order)
    for n in sorted((n for n in outputs if n in values), key=lambda n: values[n].first):  # in step order
        v = values[n]
        k = v.first
        if v.kind == "fresh" and is_elementwise(n):
            for x in value_inputs(n):
                xv = values.get(x)
                if (
                    xv is not None
                    and xv.kind in ("buffer", "fresh")
                    and xv.into is None
                    and x not in outputs
                    and xv.readers == [k]
                    and x.shape == n.shape
                    and x.dtype == n.dtype
                    and x.ndim
                    and not any(values[y].root is x for y in value_inputs(n) if y in values and y is not x)
                    and not _viewed(x, values)
                ):
                    xv.kind, v.into, v.inplace = "fresh", x, True
                    xv.last = end
                    break


def _live_bytes(order: list[Node], vs: list[Value], resident: int) -> list[int]:
    """Bytes live after each step: the planned buffers, the fresh values and the kernels' temporaries."""
    end = len(order)
    fresh_delta = [0] * (end + 2)
    for n, v in zip(order, vs):
        if v.kind == "fresh":
            fresh_delta[v.first] += v.nbytes
            fresh_delta[min(v.last, end) + 1] -= v.nbytes
        if n.op.scratch:
            extra = scratch_bytes(n)  # a kernel's own temporaries, during its step
            fresh_delta[v.first] += extra
            fresh_delta[v.first + 1] -= extra
    live, acc = [], resident
    for k in range(end):
        acc += fresh_delta[k]
        live.append(acc)
    return live


ARENA_LIMIT = 800  # groups; beyond it, buffers are pooled by size (packing is quadratic)


def _inplace_groups(vs: list[Value], values, outputs, inplace: bool) -> list[list[Value]]:
    """Buffer values in chains that share memory: an elementwise step written over an input dying there.

    While grouping, a value's `buffer` holds its group's number (the buffers are assigned afterwards).
    """
    groups: list[list[Value]] = []
    for k, v in enumerate(vs):
        if v.kind != "buffer":
            continue
        n = v.node
        g = _dying_group(k, n, values, outputs, groups) if inplace and is_elementwise(n) else None
        if g is None:
            v.buffer = len(groups)
            groups.append([v])
        else:
            v.inplace = True
            v.buffer = g
            groups[g].append(v)
    return groups


def _dying_group(k: int, n: Node, values, outputs, groups) -> int | None:
    """The group of an input of step k (n) that dies there and whose memory n can be written into."""
    ins = value_inputs(n)
    for x in ins:
        xv = values.get(x)
        if (
            xv is not None
            and xv.kind == "buffer"
            and xv.last == k
            and x not in outputs
            and x.shape == n.shape
            and x.dtype == n.dtype
            and groups[xv.buffer][-1] is xv
            and not _viewed_by(x, ins, values)
        ):
            return xv.buffer
    return None


def _viewed_by(x: Node, ins, values) -> bool:
    """Another of the inputs `ins` is a view of x's memory."""
    for y in ins:
        if y is not x:
            yv = values.get(y)
            if yv is not None and yv.root is x:
                return True
    return False


def _pack(groups: list[list[Value]]) -> tuple[list, list[int], int]:
    """Place each group at an offset of one arena so that groups live at once never overlap.

    Greedy by size: the largest first, each at the lowest offset free over its whole live range. Unlike
    pools of equal sizes, a dead activation's memory can hold a later value of any size.
    """
    info = []
    for g, members in enumerate(groups):
        n = members[0].node
        elements = math.prod(n.shape)
        nb = -(-elements * n.dtype.itemsize // ALIGN) * ALIGN
        first = members[0].first
        last = max(max(m.last for m in members), first)
        info.append((nb, first, last, g, elements, n.dtype))
    placed: list[tuple[int, int, int, int]] = []  # (first, last, offset, end)
    offsets = [0] * len(groups)
    arena = 0
    for nb, first, last, g, _, _ in sorted(info, key=lambda t: (-t[0], t[1])):
        busy = sorted((o, e) for f, l, o, e in placed if f <= last and first <= l)
        off = 0
        for o, e in busy:
            if off + nb <= o:
                break
            off = max(off, e)
        offsets[g] = off
        placed.append((first, last, off, off + nb))
        arena = max(arena, off + nb)
    for g, members in enumerate(groups):
        for m in members:
            m.buffer = g
    buffers = [(elements, dtype) for _, _, _, _, elements, dtype in sorted(info, key=lambda t: t[3])]
    return buffers, offsets, arena


def _pools(groups: list[list[Value]], outputs, reuse) -> list[tuple[int, np.dtype]]:
    """Buffers pooled by (size, dtype): a group takes a buffer freed by a group that died before it."""
    buffers: list[tuple[int, np.dtype]] = []
    free: dict[tuple[int, str], list[int]] = {}
    dying: dict[int, list[int]] = {}
    start: dict[int, list[int]] = {}
    for g, members in enumerate(groups):
        start.setdefault(members[0].first, []).append(g)
        last = members[0].last if len(members) == 1 else max([m.last for m in members])
        dying.setdefault(last, []).append(g)
    key_of = _PoolKeys()
    for k in sorted(start.keys() | dying.keys()):  # the steps where a group starts or dies, in order
        for g in start.get(k, ()):
            members = groups[g]
            n = members[0].node
            key = key_of(n)
            pool = free.get(key) if reuse else None
            b = pool.pop() if pool else None
            if b is None:
                b = len(buffers)
                buffers.append((key[0], n.dtype))
            for m in members:
                m.buffer = b
        for g in dying.get(k, ()):  # memory whose last reader was this step
            head = groups[g][0]
            if reuse and head.node not in outputs:
                assert head.buffer is not None  # given above, when the group started
                free.setdefault(key_of(head.node), []).append(head.buffer)
    return buffers


class _PoolKeys:
    """(elements, dtype string) of a value: which buffers it may share (dtype strings made once per dtype)."""

    def __init__(self) -> None:
        self.strs: dict[np.dtype, str] = {}

    def __call__(self, n: Node) -> tuple[int, str]:
        dt = n.dtype
        s = self.strs.get(dt)
        if s is None:
            s = self.strs[dt] = dt.str
        return math.prod(n.shape), s


def scratch_bytes(node: Node) -> int:
    """Temporaries a kernel allocates besides its result (in multiples of its largest input)."""
    k = node.op.scratch
    if not k or not node.inputs:
        return 0
    return k * max(nbytes(x) for x in node.inputs if None not in x.shape)


def _viewed(x: Node, values: dict) -> bool:
    return any(v.kind == "view" and v.root is x for v in values.values())


def live_value_bytes(plan: BufferPlan) -> list[int]:
    """Bytes of the values live after each step (ignoring buffer sharing): what a perfect allocator needs."""
    end = len(plan.order)
    delta = [0] * (end + 2)
    for v in plan.values.values():
        if v.kind != "view":
            start = v.first + 1 if v.inplace else v.first  # written over an input that dies here
            delta[min(start, end)] += v.nbytes
            if start > v.last:
                delta[min(start, end)] -= v.nbytes
                continue
            delta[min(v.last, end) + 1] -= v.nbytes
    out, acc = [], 0
    for k in range(end):
        acc += delta[k]
        out.append(acc)
    return out
