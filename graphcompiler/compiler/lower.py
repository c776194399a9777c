"""lower: the last pass, from a scheduled buffer plan of graph nodes to a LoweredProgram of plain data.

Each node of the schedule becomes a LoweredStep: its slot, its arguments (slots, or constants), the NumPy
call that computes it (the cheapest one: a ufunc directly where the op's kernel is only that ufunc), its
`out=` (a view of a planned buffer, or the array of an input that dies there), the slots freed after it, and
its label with the user's names. See lowered.py for the contract backends implement.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from ..graph import Node
from ..ops import elementwise as E
from ..ops import linalg as L
from ..ops import nn as NN
from ..ops import reduce as R
from ..ops import shape as S
from .ir import Context
from .lowered import BufferView, Const, LoweredProgram, LoweredStep, OutSlot

if TYPE_CHECKING:
    from .memory import BufferPlan


def describe_step(node: Node) -> str:
    """`z = matmul(x, W1)`: how error messages name a step."""
    return f"{node.name} = {node.op.name}({', '.join(i.name for i in node.inputs)})"


def label_of(node: Node, user: Node) -> str:
    """The step as messages name it: the user's node, and the optimised form when it differs."""
    text = describe_step(user)
    if user is not node:
        mine = describe_step(node)
        if mine != text.replace(user.name, node.name, 1):
            text += f" (computed as {mine})"
    return text


def lower(plan: "BufferPlan", nodes: Sequence[Node], roots: Sequence[Node], ctx: Context, n_outputs: int,
          updates: Sequence[str], nan_check: bool = False) -> tuple[LoweredProgram, list[Node]]:
    """The LoweredProgram of a buffer plan, and the graph nodes of its leaves (in the order of `leaves`)."""
    slot: dict[Node, int] = {}
    leaf_nodes, leaf_slots, leaf_kinds = [], [], []
    for n in nodes:
        kind = n.op.name
        if kind == "input" or kind == "parameter":
            slot[n] = len(slot)
            leaf_nodes.append(ctx.origin_of(n))
            leaf_slots.append(slot[n])
            leaf_kinds.append("feed" if kind == "input" else "parameter")
    for n in plan.order:
        slot[n] = len(slot)
    drops: dict[int, list[int]] = {}
    values = plan.values
    end = len(plan.order)
    for n in plan.order:
        v = values[n]
        if v.kind != "buffer" and v.last < end:
            drops.setdefault(max(v.readers, default=v.first), []).append(slot[n])
    steps = []
    for k, n in enumerate(plan.order):
        v = values[n]
        op = n.op
        in_shape = n.inputs[0].shape if n.inputs else ()
        fn, extra, kw = fast_kernel(op, v.kind == "buffer", n.shape, in_shape, n.dtype)
        args: list = []
        for i, x in enumerate(n.inputs):
            if not op.reads_value(i):
                args.append(Const(np.broadcast_to(np.empty((), x.dtype), x.shape)))
            elif x.op.name == "constant":
                args.append(Const(ctx.value(x)))
            else:
                args.append(slot[x])
        out: BufferView | OutSlot | None = None
        if v.kind == "buffer":
            out = BufferView(v.buffer, n.shape, n.dtype)
        elif v.into is not None:                       # an output written over its dying input's array
            fn, extra, kw = fast_kernel(op, True, n.shape, in_shape, n.dtype)
            out = OutSlot(slot[v.into])
        args += [Const(e) for e in extra]
        steps.append(LoweredStep(op, op.name, fn, tuple(args), slot[n], n.shape, n.dtype, out, kw,
                                 tuple(drops.get(k, ())), label_of(n, ctx.origin_of(n)),
                                 tuple(x.name for x in n.inputs)))
    results: list = []
    copy: list[bool] = []
    seen: set[Node] = set()
    for r in roots:
        if r.op.name == "constant":                        # an output the optimiser folded to a constant
            results.append(Const(ctx.value(r)))
            copy.append(True)
            continue
        results.append(slot[r])
        kind = values[r].kind if r in values else "leaf"
        copy.append(kind not in ("fresh", "buffer") or r in seen or (kind == "buffer" and len(results) <= n_outputs))
        seen.add(r)
    lowered = LoweredProgram(tuple(steps), len(slot), tuple(leaf_slots), tuple(n.name for n in leaf_nodes),
                             tuple(leaf_kinds), tuple(results), tuple(copy), n_outputs, tuple(updates),
                             tuple(plan.buffers), None if plan.offsets is None else tuple(plan.offsets),
                             plan.resident_bytes, nan_check)
    return lowered, leaf_nodes


def can_write_out(op, dtype) -> bool:
    """Whether the evaluator can have this op write into a planned buffer (`out=`)."""
    return bool(getattr(op, "writes_out", False)) or isinstance(op, R.Sum) and np.dtype(dtype).kind == "f"


def worth_a_buffer(shape) -> bool:
    """A planned buffer pays for values with elements; NumPy's scalars are cheaper than out= on a 0-d array."""
    return len(shape) > 0


def _log_softmax_last(x):
    """log_softmax over the last axis: (x - max) - log(sum(exp(x - max))), finite for logits of +-1e4.

    A row holding +inf gives NaN in every entry here (the op's own kernel gives -inf beside the NaN);
    nan_check reports either.
    """
    m = np.maximum.reduce(x, axis=-1, keepdims=True)
    d = np.subtract(x, m)
    e = np.exp(d)
    s = np.add.reduce(e, axis=-1, keepdims=True)
    np.log(s, out=s)
    return np.subtract(d, s, out=d)


def fast_kernel(op, writes: bool, shape: tuple | None = None, in_shape: tuple = (), shape_dtype=None) -> tuple[Callable, tuple, dict]:
    """The cheapest call for an op's kernel: (function, extra constant args, keyword args).

    Elementwise ops and matmul call their NumPy ufunc directly (one Python frame less per step); a
    float sum calls np.add.reduce with out=. Anything else calls the op's own kernel.
    """
    cls = type(op)
    if isinstance(op, (E.Unary, E.Binary)) and getattr(cls, "ufunc", None) is not None \
            and cls.kernel in (E.Unary.kernel, E.Binary.kernel):
        return cls.ufunc, (), {}
    if isinstance(op, E.Relu):
        return np.maximum, (np.zeros((), dtype=shape_dtype) if shape_dtype is not None else 0,), {}
    if isinstance(op, L.Matmul):
        return np.matmul, (), {}
    if isinstance(op, R.Sum) and writes:
        return np.add.reduce, (), {"axis": tuple(op.axis), "keepdims": op.keepdims}
    if isinstance(op, NN.LogSoftmax) and shape is not None and op.axis == len(shape) - 1 and len(shape):
        return _log_softmax_last, (), {}
    if isinstance(op, S.Transpose) and len(in_shape):
        return np.ndarray.transpose, (tuple(op.axes),), {}
    if isinstance(op, (S.Reshape, S.ExpandDims, S.Squeeze)) and shape is not None and None not in shape \
            and len(in_shape):
        return np.ndarray.reshape, (tuple(shape),), {}
    return op.kernel, (), {}
