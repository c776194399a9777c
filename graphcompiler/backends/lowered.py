"""The lowered program: the backend-neutral result of compilation, and the Evaluator protocol that runs it.

compile() turns graph nodes into a LoweredProgram, one per signature of feed shapes; an evaluator (a backend)
`load`s it once and then `run`s it per call. The lowered program holds no graph Node: only plain data, the op
records (frozen dataclasses, for backends that translate ops themselves) and NumPy kernels (for those that
call them). This module imports nothing but NumPy, so a backend depends on it and on nothing else.

Slots. Every value of a run has an integer slot, numbered from 0: first the leaves (the values a run is
given), then one per step. A step reads slots and constants and writes its own slot.

LoweredProgram fields:
- steps: the ordered LoweredSteps (below); a step's slot is written once, after every slot it reads.
- n_slots: number of slots (leaves + steps).
- leaves: the slots a run's `leaves` argument fills, in order; leaf_names/leaf_kinds say, for each, the graph
  node's name and whether it is a "feed" (an input) or a "parameter" (a stored value, fed or not).
- results: what a run returns, in order: the outputs, then the new values of the updated parameters. Each is
  a slot (int) or a Const (an output the optimiser folded to a constant). copy[k]: whether the evaluator must
  hand result k out as a fresh copy (it lives in a planned buffer or is a view or a leaf); results that are not
  copied are arrays the kernels allocated, which the caller may own.
- n_outputs: how many results are outputs; updates: for each later result, the name of the parameter it
  replaces (the caller, Program, writes it; an evaluator only computes it).
- buffers: the planned buffers, (elements, dtype) per buffer id; offsets: each buffer's byte offset in one
  arena of arena_bytes (aligned to ALIGN), or None when each buffer is a separate array. Buffers are memory
  an evaluator owns: it allocates them once per concurrent run (not per call) and may reuse them across runs.
- leaf_specs: per leaf, its concrete (shape, dtype): what a backend that compiles for static shapes needs.
- memory_budget: compile's memory_budget (bytes) or None; the buffer plan above fits it, and a backend that
  plans memory of its own (the C arena) must not exceed that plan under a budget.
- nan_check: the evaluator checks every floating step's result for NaN/inf and raises NumericsError naming
  the step (its label) and its inputs' ranges.

LoweredStep fields:
- op: the op record (an Op instance: its class and attributes say what it computes); op_name: its name.
- kernel: a NumPy callable computing the step: kernel(*args, **kw[, out=...]); the NumPy evaluator calls it.
- args: per argument a slot (int) or a Const (a constant value, or a stand-in of the right shape for an input
  read only for its shape); arg_names: the graph names of the arguments (for messages); kw: keyword constants.
- slot: the slot the result is written to; shape, dtype: the result's (concrete) shape and dtype.
- out: where the kernel writes: None (the kernel allocates), a BufferView (a view of planned buffer `buffer`
  with the step's shape and dtype, passed as `out=`), or an OutSlot (write over the array of slot `slot`,
  an input that dies at this step).
- frees: slots whose last reader is this step; after it they may be released.
- label (a property, made from name, op_name, arg_names and user): how errors name the step, with the user's
  names: "L = softmax_cross_entropy(o, y)", with " (computed as ...)" when the optimiser computes it
  differently. name: the step's value's name; user: (name, op_name, arg_names) of the user's node whose value
  the step computes, when that is not the step itself.

Invariants: args name only leaves or slots of earlier steps, never a freed slot; a slot is freed once; a
BufferView's buffer holds at least prod(shape) elements of its dtype; two values live at once never share
a buffer unless one is written in place over the other (an elementwise step over an input dying there).

An Evaluator (any object with these two methods) runs it:
    load(lowered) -> self      prepare once (allocate buffers, generate code, compile natively, ...)
    run(leaves) -> list        compute one call: `leaves` in the order of lowered.leaves, results in the
                               order of lowered.results (NumPy arrays or the backend's own arrays)
`run` must be safe to call from several threads at once and from inside one of its own kernels.
Errors in a step are raised as ExecutionError (NumericsError with nan_check) naming step.label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

ALIGN = 64  # bytes: every buffer in an arena starts on a cache line


class Const:
    """A constant argument (a constant's value, or a stand-in carrying only a shape)."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __repr__(self) -> str:
        return f"Const(shape={np.shape(self.value)})"


class OutSlot:
    """An `out=` that is the array of another slot (an output written over an input that dies there)."""

    __slots__ = ("slot",)

    def __init__(self, slot: int):
        self.slot = slot

    def __repr__(self) -> str:
        return f"OutSlot({self.slot})"


@dataclass(frozen=True)
class BufferView:
    """An `out=` that is a view of a planned buffer, with the step's shape and dtype."""

    buffer: int
    shape: tuple
    dtype: np.dtype


@dataclass(eq=False, slots=True)
class LoweredStep:
    """One step of a lowered program: slot = kernel(*args, **kw, out=out); see the module docstring.

    Treat it as read-only. `label` is made from the names when asked for (an error message), not per compile:
    `name` is the step's own value, `user` the (name, op name, argument names) of the user's node whose value
    it computes when that differs from the step itself.
    """

    op: Any
    op_name: str
    kernel: Callable
    args: tuple
    slot: int
    shape: tuple
    dtype: np.dtype
    out: BufferView | OutSlot | None = None
    kw: dict = field(default_factory=dict)
    frees: tuple = ()
    name: str = ""
    arg_names: tuple = ()
    user: tuple | None = None

    @property
    def label(self) -> str:
        """How errors name the step: "L = softmax_cross_entropy(o, y)", the user's names first."""
        mine = f"{self.name} = {self.op_name}({', '.join(self.arg_names)})"
        if self.user is None:
            return mine
        name, op_name, arg_names = self.user
        text = f"{name} = {op_name}({', '.join(arg_names)})"
        if mine != text.replace(name, self.name, 1):
            text += f" (computed as {mine})"
        return text

    def __repr__(self) -> str:
        return f"LoweredStep(v{self.slot} = {self.label}, out={self.out!r}, frees={self.frees})"


@dataclass(frozen=True, eq=False)
class LoweredProgram:
    """A specialised program as plain data: see the module docstring for the fields and invariants."""

    steps: tuple
    n_slots: int
    leaves: tuple
    leaf_names: tuple
    leaf_kinds: tuple
    results: tuple
    copy: tuple
    n_outputs: int
    updates: tuple
    buffers: tuple
    offsets: tuple | None
    arena_bytes: int
    nan_check: bool = False
    leaf_specs: tuple = ()  # per leaf: (concrete shape, dtype), in the order of `leaves` (native backends)
    memory_budget: int | None = None  # compile's budget in bytes: a backend planning its own memory stays within it

    @property
    def feeds(self) -> tuple:
        """The slots of the inputs a run is fed."""
        return tuple(s for s, k in zip(self.leaves, self.leaf_kinds) if k == "feed")

    @property
    def parameters(self) -> tuple:
        """The slots of the parameters (their stored values, or fed ones)."""
        return tuple(s for s, k in zip(self.leaves, self.leaf_kinds) if k == "parameter")

    def allocate(self) -> list[np.ndarray]:
        """A fresh set of the planned buffers (one arena, aligned, when offsets are planned)."""
        if self.offsets is None:
            return [np.empty(size, dtype) for size, dtype in self.buffers]
        raw = np.empty(self.arena_bytes + ALIGN, np.uint8)
        shift = (-raw.ctypes.data) % ALIGN
        return [
            raw[shift + off : shift + off + size * np.dtype(dt).itemsize].view(dt)
            for off, (size, dt) in zip(self.offsets, self.buffers)
        ]

    def views(self, buffers: Sequence[np.ndarray]) -> list:
        """Each step's `out=` resolved against one set of buffers: an array, an OutSlot or None."""
        cache: dict[tuple, np.ndarray] = {}
        outs: list = []
        for st in self.steps:
            o = st.out
            if isinstance(o, BufferView):
                key = (o.buffer, o.shape, o.dtype)
                v = cache.get(key)
                if v is None:  # values of one buffer and shape share a view
                    size = self.buffers[o.buffer][0]
                    v = cache[key] = buffers[o.buffer][:size].reshape(o.shape)
                outs.append(v)
            else:
                outs.append(o)
        return outs

    def __str__(self) -> str:
        lines = [f"LoweredProgram: {len(self.steps)} steps, {self.n_slots} slots, {len(self.buffers)} buffers"]
        lines += [f"  leaf v{s}: {n} ({k})" for s, n, k in zip(self.leaves, self.leaf_names, self.leaf_kinds)]
        lines += [f"  {st!r}" for st in self.steps]
        lines.append(f"  results: {', '.join(f'v{r}' if isinstance(r, int) else 'const' for r in self.results)}")
        return "\n".join(lines)


@runtime_checkable
class Evaluator(Protocol):
    """A backend: `load` a LoweredProgram once, then `run` it on leaf values (see the module docstring)."""

    def load(self, lowered: LoweredProgram) -> "Evaluator": ...

    def run(self, leaves: Sequence[Any]) -> list: ...
