"""gc.scan: a loop fn(carry, x_t) -> (carry, y_t) over axis 0 of xs, its body traced once (control/body.py).

A scan node's value holds every result (final carries, stacked ys, stacked carries-in, stacked residuals); the
first `result` node to run computes them all in one pass (the inputs are compared by value, so nothing stale
is ever handed out).

The derivative of a scan is a scan (backpropagation through time): the reverse scan's body is the forward
body's own `build_grad`, fed the forward carries h_0..h_{T-1} kept as a stacked output of the forward scan.
Because the reverse scan is an ordinary Scan, its own derivative (second order) follows by the same rule.

A bounded while_loop (control/while_loop.py, max_steps=N) runs as a scan whose last carry is the condition on
the others ("until"): it stops at the first step where that fails, raises ExecutionError when it still holds
after N steps, and keeps the values its gradient reads per step in tapes (object results, grown as it runs),
so a loop that ends early costs the steps it ran and its gradient, a reverse scan over the tapes, as many. A
scan over tapes stacks its own results in tapes, and a tape's gradient is a tape (Result.grad), so the second
derivative follows by the same rule. Every loop iteration checks the run's time budget (budget.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from .. import budget
from ..autodiff import build_grad
from ..errors import DTypeError, ExecutionError, GraphCompilerError, ShapeError, fmt_shape
from ..graph import MAX_WHILE_STEPS, Graph, Node, fit_name
from ..ops import elementwise as E
from ..ops import reduce as R
from ..ops import shape as S
from ..ops.base import apply
from .body import (
    MAX_SCAN_LENGTH,
    OBJECT,
    BodyGroup,
    BodyOp,
    Result,
    Traced,
    alias,
    body_flops,
    body_shapes,
    compatible,
    first_step,
    flat,
    graph_of,
    guarded,
    is_tape,
    param_names,
    record_field,
    result,
    trace_body,
    traced_from,
)

__all__ = ["MAX_SCAN_LENGTH", "Scan", "ScanBody", "Tape", "scan"]


# -- the loop body shared by the nodes of one scan ------------------------------------------------------


class ScanBody(BodyGroup):
    """One scan: its traced body, how many carries/xs/captured inputs, and the run-time cache of results."""

    def __init__(
        self,
        name: str,
        traced: Traced,
        n_carry: int,
        n_x: int,
        n_y: int,
        reverse: bool,
        length: int | None,
        until: bool = False,
    ):
        self.name, self.traced = name, traced
        self.n_carry, self.n_x, self.n_y = n_carry, n_x, n_y
        self.n_w = len(traced.captured)
        self.reverse, self.length = reverse, length
        # a bounded while_loop: its last carry is the condition on the others; the loop steps while it holds,
        # at most `length` (max_steps) times, and its stacked results ("tapes") hold only the steps it ran
        self.until = until
        self.want_stacks = False
        self.residuals: list[Node] = []  # body values the gradient reads, kept per step (stacked results)
        self.carry_names = [f"carry{k}" for k in range(n_carry)]
        self._shape_cache: dict = {}
        self._init_cache()
        self.forward: ScanBody | None = None  # for a reverse scan: the scan it differentiates

    def __repr__(self) -> str:
        return f"<{'reverse ' if self.forward else ''}scan body {self.name!r}: {len(self.traced.graph)} nodes>"

    @property
    def graph(self) -> Graph:
        return self.traced.graph

    def record(self, encode: Callable) -> dict:
        """The file form (io.py): the body as a nested graph, and the counts that say how to run it ("until"
        only for a bounded while_loop)."""
        return {
            **({"until": True} if self.until else {}),
            "name": self.name,
            "traced": encode(self.traced),
            "n_carry": self.n_carry,
            "n_x": self.n_x,
            "n_y": self.n_y,
            "reverse": self.reverse,
            "length": self.length,
            "carry_names": list(self.carry_names),
            "stacks": self.want_stacks,
            "residuals": [r.name for r in self.residuals],
        }

    @classmethod
    def from_record(cls, rec: dict, traced_of: Callable) -> ScanBody:
        what = "scan body"
        name = record_field(rec, "name", str, what)
        nc, nx, ny = (record_field(rec, k, int, what) for k in ("n_carry", "n_x", "n_y"))
        reverse = record_field(rec, "reverse", bool, what)
        until = record_field(rec, "until", bool, what) if "until" in rec else False
        if until and (nx or ny or not nc):
            raise GraphCompilerError("a bounded while_loop's scan body record has carries only (n_x, n_y 0)")
        length = None if nx else record_field(rec, "length", int, what, MAX_WHILE_STEPS if until else MAX_SCAN_LENGTH)
        if nx and rec.get("length") is not None:
            raise GraphCompilerError("a scan body record with xs has length null")
        names = record_field(rec, "carry_names", list, what)
        stacks = record_field(rec, "stacks", bool, what)
        res_names = record_field(rec, "residuals", list, what)
        if set(rec) - {"until"} != {
            "name",
            "traced",
            "n_carry",
            "n_x",
            "n_y",
            "reverse",
            "length",
            "carry_names",
            "stacks",
            "residuals",
        }:
            raise GraphCompilerError(f"unknown or missing fields in the scan body record: {sorted(rec)}")
        traced = traced_from(traced_of(rec["traced"], "traced"))
        if len(traced.inputs) != nc + nx or len(traced.outputs) != nc + ny or len(names) != nc:
            raise GraphCompilerError(
                f"the scan body has {len(traced.inputs)} inputs and {len(traced.outputs)} "
                f"outputs, which do not fit n_carry={nc}, n_x={nx}, n_y={ny}"
            )
        for k in range(nc):
            c_in, c_out = traced.inputs[k], traced.outputs[k]
            if c_in.dtype != c_out.dtype or not compatible(c_in.shape, c_out.shape):
                raise ShapeError(
                    f"the body's carry {k} out has shape {fmt_shape(c_out.shape)}, {c_out.dtype} but "
                    f"the carry in {fmt_shape(c_in.shape)}, {c_in.dtype}"
                )
        if until and (traced.outputs[nc - 1].shape != () or traced.outputs[nc - 1].dtype != np.bool_):
            raise ShapeError("a bounded while_loop's scan body must end its carry with a scalar bool")
        body = cls(name, traced, nc, nx, ny, reverse, length, until)
        body.carry_names, body.want_stacks = names, stacks
        g = traced.graph
        if not all(isinstance(r, str) and r in g and g[r].inputs for r in res_names):
            raise GraphCompilerError(
                f"the scan body's residuals {res_names!r:.80} must name computed nodes of the body"
            )
        body.residuals = [g[r] for r in res_names]
        return body

    def n_outputs(self) -> int:
        return 2 * self.n_carry + self.n_y + len(self.residuals)

    def output_kind(self, index: int) -> tuple[str, int]:
        """carry: a final carry; ys: stacked ys; carries: the stacked carries-in; res: a stacked residual."""
        if index < self.n_carry:
            return "carry", index
        if index < self.n_carry + self.n_y:
            return "ys", index - self.n_carry
        if index < 2 * self.n_carry + self.n_y:
            return "carries", index - self.n_carry - self.n_y
        return "res", index - 2 * self.n_carry - self.n_y

    def stacked_node(self, kind: str, j: int) -> Node:
        """The body node whose value per step a stacked result holds."""
        return {
            "ys": lambda: self.traced.outputs[self.n_carry + j],
            "carries": lambda: self.traced.inputs[j],
            "res": lambda: self.residuals[j],
        }[kind]()

    def residual_index(self, node: Node) -> int:
        """The result index of the stacked values of body node `node` (registered as a residual if new)."""
        nc = self.n_carry
        for j in range(self.n_y):
            if self.traced.outputs[nc + j] is node:
                return nc + j
        for j in range(nc):
            if self.traced.inputs[j] is node:
                return nc + self.n_y + j
        if node not in self.residuals:
            self.residuals.append(node)
        return 2 * nc + self.n_y + self.residuals.index(node)

    # shapes: the carries keep their shapes; ys and carry stacks gain the leading step axis
    def out_shape(self, index: int, in_shapes: Sequence[tuple], steps) -> tuple:
        kind, j = self.output_kind(index)
        if kind == "carry":
            return tuple(in_shapes[j])
        if kind == "carries":
            return (steps,) + tuple(in_shapes[j])
        sliced = in_shapes[self.n_carry : self.n_carry + self.n_x]
        body_in = (
            list(in_shapes[: self.n_carry])
            + [tuple(s[1:]) for s in sliced]
            + list(in_shapes[self.n_carry + self.n_x :])
        )
        shapes = body_shapes(self.traced, body_in, self._shape_cache, self.residuals)
        return (steps,) + tuple(shapes[self.n_carry + j if kind == "ys" else len(self.traced.outputs) + j])

    def _compute(self, arrays) -> list:
        with self._lock:  # the body's compiled program reuses its buffers: one loop at a time
            if self.until:
                return self._loop_until(arrays, stacks=self.want_stacks)
            return self._loop(arrays, stacks=self.want_stacks)

    def _count_steps(self, xs: list[np.ndarray]):
        """The number of steps: the length of the xs along axis 0 (the same for each), else `length`."""
        if not xs:
            return self.length
        steps = xs[0].shape[0]
        for k, x in enumerate(xs[1:], 1):
            if x.shape[0] != steps:
                raise ShapeError(
                    f"scan {self.name!r}: xs 0 has {steps} steps but xs {k} has {x.shape[0]}; "
                    "every xs must have the same length along axis 0"
                )
        return steps

    def _loop(self, arrays, stacks: bool) -> list:
        """Run the body once per step: the results of the node (the stacked carries-in and residuals only
        with `stacks`, else None)."""
        nc, nx = self.n_carry, self.n_x
        carries = [np.asarray(a) for a in arrays[:nc]]
        xs = [_slices(a) for a in arrays[nc : nc + nx]]
        ws = list(arrays[nc + nx :])
        steps = self._count_steps(xs)
        shapes = [np.shape(a) for a in arrays[:nc]] + [x.shape for x in xs] + [np.shape(w) for w in ws]
        res = list(self.residuals) if stacks else []
        prog = self.program_of(self.traced, res)
        nr = len(res)
        rstack: list = [None] * nr
        ins = self.traced.inputs
        c_in, x_in = ins[:nc], ins[nc : nc + nx]
        feeds: dict[Node, Any] = dict(zip(self.traced.captured_inputs, ws))
        ys: list = [None] * self.n_y
        cstack = [np.empty((steps,) + c.shape, c.dtype) for c in carries] if stacks else []
        if steps == 0:
            ys = [
                np.zeros(self.out_shape(nc + j, shapes, 0), self.traced.outputs[nc + j].dtype) for j in range(self.n_y)
            ]
        order = range(steps - 1, -1, -1) if self.reverse else range(steps)
        run = None
        for t in order:
            budget.check(lambda: f"scan {self.name!r}, at step {t} of {steps}")
            for k, c in enumerate(carries):
                feeds[c_in[k]] = c
                if stacks:
                    cstack[k][t] = c
            for k, x in enumerate(xs):
                feeds[x_in[k]] = x[t]
            if run is None:
                out, run = first_step(prog, feeds)
            else:
                out = run(feeds)
            carries = [np.asarray(o) for o in out[:nc]]
            for j in range(self.n_y):
                y = np.asarray(out[nc + j])
                if ys[j] is None:
                    ys[j] = np.empty((steps,) + y.shape, y.dtype)
                ys[j][t] = y
            for j in range(nr):
                r = np.asarray(out[nc + self.n_y + j])
                if rstack[j] is None:
                    rstack[j] = np.empty((steps,) + r.shape, r.dtype)
                rstack[j][t] = r
        if steps == 0:  # the result must not share the init's memory (planned buffers)
            carries = [np.array(c, copy=True) for c in carries]
            rstack = [np.zeros(self.out_shape(2 * nc + self.n_y + j, shapes, 0), res[j].dtype) for j in range(nr)]
        stacked = ys + (cstack if stacks else [None] * nc) + (rstack if stacks else [None] * len(self.residuals))
        if any(_holds_tape(a) for a in arrays[nc : nc + nx]):  # slices of tapes: its stacked results are tapes
            stacked = [None if v is None else Tape(v) for v in stacked]
        return carries + stacked

    def _loop_until(self, arrays, stacks: bool) -> list:
        """A bounded while_loop: step while the last carry (the condition on the others) holds, at most
        `length` times; a condition still holding after that raises. The stacks (with `stacks`) hold the steps
        run, grown as they run."""
        nc = self.n_carry
        carries = [np.asarray(a) for a in arrays[:nc]]
        res = list(self.residuals) if stacks else []
        prog = self.program_of(self.traced, res)
        c_in = self.traced.inputs[:nc]
        feeds: dict[Node, Any] = dict(zip(self.traced.captured_inputs, arrays[nc:]))
        cstack: list[list] = [[] for _ in range(nc)]
        rstack: list[list] = [[] for _ in res]
        run = None
        t = 0
        while bool(carries[-1]):
            if t == self.length:
                raise ExecutionError(
                    f"while_loop {self.name!r}: its condition still holds after max_steps={self.length} steps, "
                    "so its result would be cut short; raise max_steps (gc.while_loop(..., max_steps=N)) or "
                    "check that the loop ends"
                )
            budget.check(lambda: f"while_loop {self.name!r}, at step {t} (max_steps={self.length})")
            feeds.update(zip(c_in, carries))
            if stacks:
                for k, c in enumerate(carries):
                    cstack[k].append(c)
            if run is None:
                out, run = first_step(prog, feeds)
            else:
                out = run(feeds)
            carries = [np.asarray(o) for o in out[:nc]]
            for j in range(len(res)):
                rstack[j].append(np.asarray(out[nc + j]))
            t += 1
        if t == 0:  # the result must not share the init's memory (planned buffers)
            carries = [np.array(c, copy=True) for c in carries]
        if not stacks:
            return carries + [None] * (nc + len(self.residuals))
        inits = [np.asarray(a) for a in arrays[:nc]]
        return (
            carries
            + [_tape(s, c.shape, c.dtype) for s, c in zip(cstack, inits)]
            + [_tape(s, tuple(d or 0 for d in r.shape), r.dtype) for s, r in zip(rstack, res)]
        )


class Tape:
    """The value of a tape: the per-step values of a bounded while_loop, stacked along a new axis 0. An object
    of its own (as Results), so a backend keeps it whole as the one object value of its node."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray):
        self.array = array

    def __repr__(self) -> str:
        return f"<tape of {len(self.array)} steps>"

    def __add__(self, other: Tape) -> Tape:  # two paths' cotangents of one tape (build_grad sums them)
        return Tape(self.array + other.array)


def _tape(rows: list, shape: tuple, dtype) -> Tape:
    """The tape of these rows (shape (0, *shape) for none)."""
    return Tape(np.stack(rows) if rows else np.empty((0, *shape), dtype))


def _holds_tape(a) -> bool:
    """Whether the value a is a tape (as it is, or in a 0-d object array)."""
    return isinstance(a, Tape) or isinstance(a, np.ndarray) and a.dtype == OBJECT and a.ndim == 0


def _slices(a) -> np.ndarray:
    """The array a scan slices along axis 0: an array, or a tape (as it is, or in a 0-d object array)."""
    if isinstance(a, np.ndarray) and a.dtype == OBJECT and a.ndim == 0:
        a = a.item()
    return a.array if isinstance(a, Tape) else np.asarray(a)


@dataclasses.dataclass(frozen=True)
class Scan(BodyOp):
    """A scan: its value holds every result (final carries, stacked ys, stacked carries-in); `result` nodes
    pick them out."""

    name: ClassVar[str] = "scan"
    body: ScanBody
    body_type: ClassVar[type[ScanBody]] = ScanBody

    def attrs(self) -> dict[str, Any]:
        b = self.body
        return {"reverse": b.reverse, "body": f"{len(b.graph)} nodes"}

    def n_results(self) -> int:
        return self.body.n_outputs()

    def flops(self, node: Node) -> int:
        """The body's cost times the number of steps (recomputation weighs a loop as the loop it is)."""
        b = self.body
        steps = (None if is_tape(node.inputs[b.n_carry]) else node.inputs[b.n_carry].shape[0]) if b.n_x else b.length
        if b.until or steps is None:  # a while_loop's steps are known when it runs
            steps = 1000 if steps is None else min(steps, 1000)
        return body_flops(b.traced) * steps

    def result_name(self, index: int) -> str:
        kind, j = self.body.output_kind(index)
        return f"{kind}[{j}]"

    def result_shape(self, index: int, xs):
        b = self.body
        nc, nx = b.n_carry, b.n_x
        if len(xs) != nc + nx + b.n_w:
            raise GraphCompilerError(f"scan {b.name!r} takes {nc + nx + b.n_w} inputs, got {len(xs)}")
        steps = b.length if nx == 0 else None
        body_ins = b.traced.inputs + b.traced.captured_inputs
        for k, x in enumerate(xs[nc : nc + nx]):
            if is_tape(x):  # its steps are known when it runs
                continue
            if not x.shape:
                raise ShapeError(f"scan {b.name!r}: xs {k} ({x.name!r}) is a scalar; xs are sliced along axis 0")
            d = x.shape[0]
            if d is not None:
                if steps is not None and d != steps:
                    raise ShapeError(
                        f"scan {b.name!r}: xs have different lengths along axis 0 ({steps} and "
                        f"{d}, at {x.name!r} of shape {fmt_shape(x.shape)})"
                    )
                steps = d
        in_shapes = [(None, *n.shape) if is_tape(x) else x.shape for x, n in zip(xs, body_ins)]
        for k, (x, n) in enumerate(zip(xs, body_ins)):
            if nc <= k < nc + nx and is_tape(x):
                continue
            s = x.shape[1:] if nc <= k < nc + nx else x.shape
            if not compatible(tuple(s), n.shape) or x.dtype != n.dtype:
                raise ShapeError(
                    f"scan {b.name!r}: input {k} ({x.name!r}) has shape {fmt_shape(x.shape)}, "
                    f"{x.dtype}; the body was traced for {fmt_shape(n.shape)}, {n.dtype}"
                )
        if not b.n_outputs():
            return (), OBJECT
        kind, j = b.output_kind(index)
        if kind != "carry" and (b.until or any(is_tape(x) for x in xs[nc : nc + nx])):
            return (), OBJECT  # a tape: the steps a bounded while_loop runs (or a scan over its tapes)
        shape = b.out_shape(index, in_shapes, steps)
        dtype = xs[j].dtype if kind in ("carry", "carries") else b.stacked_node(kind, j).dtype
        return shape, dtype

    def row_dtype(self, index: int) -> np.dtype | None:
        """A tape's rows are the values of one body node per step: that node's dtype."""
        return self.body.stacked_node(*self.body.output_kind(index)).dtype

    def vjp(self, node, x, y, g):
        return scan_vjp(self.body, node, x, y, g)


# -- the public scan ----------------------------------------------------------------------------------


def scan(fn: Callable, init, xs=None, *, length: int | None = None, reverse: bool = False, name: str | None = None):
    """Loop fn(carry, x_t) -> (carry, y_t) over axis 0 of xs; return (final carry, ys stacked on axis 0).

    `init` is a node or a tuple of nodes; `xs` a node, a tuple of nodes or None (then `length` steps). The
    body is traced once; outer nodes it reads are captured as inputs of the scan, and values that do not
    depend on the carry or the slice are hoisted out of the loop.
    """
    return guarded(scan_impl, lambda *a: graph_of(a[1], a[2]))(fn, init, xs, length=length, reverse=reverse, name=name)


def scan_impl(
    fn: Callable,
    init,
    xs=None,
    *,
    length: int | None = None,
    reverse: bool = False,
    name: str | None = None,
    _names: tuple[list[str], list[str]] | None = None,
    _until: bool = False,
):
    """Loop fn(carry, x_t) -> (carry, y_t) over axis 0 of xs; return (final carry, ys stacked on axis 0).

    `init` is a node or a tuple of nodes; `xs` a node, a tuple of nodes or None (then `length` steps). The
    body is traced once; outer nodes it reads are captured as inputs of the scan.
    """
    graph, inits, init_tuple, xss, xs_tuple = _scan_operands(init, xs, length, _until)
    title = name or graph.auto_name("scan")
    nc, nx = len(inits), len(xss)
    pn = param_names(fn, 2, ["carry", "x"])
    cnames = [pn[0]] if nc == 1 and not init_tuple else [f"{pn[0]}{k}" for k in range(nc)]
    xnames = [pn[1]] if nx == 1 and not xs_tuple else [f"{pn[1]}{k}" for k in range(nx)]
    if _names is not None:  # the reverse scan of a gradient names its stand-ins
        cnames, xnames = list(_names[0]), list(_names[1])
    specs = [(nm, n.shape, n.dtype) for nm, n in zip(cnames, inits)] + [
        (nm, *(_tape_row(x) if is_tape(x) else (x.shape[1:], x.dtype))) for nm, x in zip(xnames, xss)
    ]
    shape_y: dict = {}
    call = _scan_step_caller(fn, title, nc, init_tuple, xs_tuple, bool(xss), shape_y)
    traced = trace_body(graph, title, specs, call, out_like=inits)
    _check_carries_keep_shape(title, traced, inits)
    ny = shape_y["n"]
    body = ScanBody(
        title, traced, nc, nx, ny, bool(reverse), None if xss or length is None else int(length), until=_until
    )
    ins = tuple(inits + xss + traced.captured)
    body.carry_names = cnames
    return _scan_results(graph, title, body, ins, init_tuple, shape_y["tuple"])


def _scan_operands(init, xs, length, until: bool = False) -> tuple[Graph, list[Node], bool, list[Node], bool]:
    """(graph, inits, init is a tuple, xs, xs is a tuple) of a scan, checked: numbers in init become constants
    (of the operands' float dtype), the xs are arrays of one length along axis 0 (or the tapes of a bounded
    while_loop), and a length is at most MAX_SCAN_LENGTH (MAX_WHILE_STEPS for a bounded while_loop)."""
    inits, init_tuple = flat(init, "init")
    xss: list
    if xs is None:
        xss, xs_tuple = [], False
    else:
        xss, xs_tuple = flat(xs, "xs")
    nodes = [n for n in inits + xss if isinstance(n, Node)]
    if not nodes:
        raise GraphCompilerError("scan needs a graph node in init or xs (to know its graph)")
    graph = nodes[0].graph
    inits = [
        n
        if isinstance(n, Node)
        else graph.constant(
            np.asarray(
                n, dtype=np.result_type(*[m.dtype for m in nodes if m.dtype.kind == "f"] or [np.dtype(np.float64)])
            )
        )
        for n in inits
    ]
    for n in inits + xss:
        if not isinstance(n, Node) or n.graph is not graph:
            raise GraphCompilerError(f"scan: init and xs must be nodes of one graph, got {n!r}")
    if not xss and (length is None or not isinstance(length, (int, np.integer)) or length < 0):
        raise GraphCompilerError("scan without xs needs length= (a non-negative int number of steps)")
    limit = MAX_WHILE_STEPS if until else MAX_SCAN_LENGTH
    if length is not None and isinstance(length, (int, np.integer)) and length > limit:
        what = f"while_loop: max_steps={length}" if until else f"scan: length={length}"
        raise GraphCompilerError(
            f"{what} is more than the {limit} steps a graph allows (and a graph file loads); "
            + (
                "pass a smaller max_steps"
                if until
                else "scan fewer steps at a time (its stacked results are allocated for every step)"
            )
        )
    for k, x in enumerate(xss):
        if is_tape(x):
            continue
        if not x.shape:
            raise ShapeError(
                f"scan: xs {k} ({x.name!r}, {x.op.name}) is a scalar of shape (); xs are sliced "
                "along axis 0, so each needs at least one axis"
            )
    if xss and length is not None:
        lens = {x.shape[0] for x in xss if not is_tape(x)} - {None}
        if lens and lens != {length}:
            raise ShapeError(f"scan: length={length} but xs have {sorted(lens)} steps along axis 0")
    return graph, inits, init_tuple, xss, xs_tuple


def _tape_row(tape: Node) -> tuple[tuple, np.dtype]:
    """(shape, dtype) of one step's value of a tape: a stacked result of a bounded while_loop or of a scan over
    its tapes, or a sum of tapes (two paths' cotangents of one, as build_grad adds them)."""
    while not isinstance(tape.op, Result) and tape.inputs:
        tape = tape.inputs[0]
    op = tape.inputs[0].op if tape.inputs else None
    if not (isinstance(tape.op, Result) and isinstance(op, Scan)):
        raise GraphCompilerError(f"internal error: {tape.name!r} ({tape.op.name}) is not a loop's tape")
    node = op.body.stacked_node(*op.body.output_kind(tape.op.index))
    return node.shape, node.dtype


def _scan_step_caller(
    fn: Callable, title: str, nc: int, init_tuple: bool, xs_tuple: bool, has_xs: bool, shape_y: dict
) -> Callable[[list[Node]], list[Node]]:
    """The function trace_body calls on the stand-ins: fn(carry, x_t) in the structure of init and xs (x_t None
    for a scan without xs), its pair checked and flattened to the carries then the ys.
    It records in shape_y whether y is a tuple ("tuple") and how many ys there are ("n")."""

    def call(standins):
        c = standins[:nc]
        xv = standins[nc:]
        res = fn(tuple(c) if init_tuple else c[0], (tuple(xv) if xs_tuple else xv[0]) if has_xs else None)
        if not isinstance(res, (tuple, list)) or len(res) != 2:
            raise GraphCompilerError(
                f"scan {title!r}: the body must return a pair (new carry, y), got {type(res).__name__}"
            )
        new_c, y = res
        new_cs, c_tuple = flat(new_c, "carry")
        if len(new_cs) != nc or c_tuple != init_tuple and nc != 1:
            raise GraphCompilerError(
                f"scan {title!r}: the body returned {len(new_cs)} carries for an init of "
                f"{nc}; return the carry in the structure of init"
            )
        ys, y_tuple = ([], False) if y is None else flat(y, "y")
        shape_y["tuple"], shape_y["n"] = y_tuple, len(ys)
        return new_cs + ys

    return call


def _check_carries_keep_shape(title: str, traced: Traced, inits: list[Node]) -> None:
    """Each carry the body returns has the dtype and shape of the carry it was given."""
    for k, (c_in, c_out) in enumerate(zip(traced.inputs[: len(inits)], traced.outputs[: len(inits)])):
        if c_out.dtype != c_in.dtype:
            raise DTypeError(
                f"scan {title!r}: the body's carry {k} out ({c_out.name!r}, {c_out.op.name}) has "
                f"dtype {c_out.dtype} but the carry in ({inits[k].name!r}) has dtype {c_in.dtype}; "
                "the carry must keep its dtype (cast it with gc.astype)"
            )
        if not (
            c_out.shape == c_in.shape
            or compatible(c_out.shape, c_in.shape)
            and [d is None for d in c_out.shape] == [d is None for d in c_in.shape]
        ):
            raise ShapeError(
                f"scan {title!r}: the body's carry {k} out ({c_out.name!r}, {c_out.op.name}) has "
                f"shape {fmt_shape(c_out.shape)} but the carry in ({inits[k].name!r}) has shape "
                f"{fmt_shape(c_in.shape)}; the carry must keep its shape from step to step"
            )


def _scan_results(graph: Graph, title: str, body: ScanBody, ins: tuple, init_tuple: bool, y_tuple: bool):
    """The scan node on `ins`, and its named results: (final carry, ys) in the structure of init and y."""
    nc, ny = body.n_carry, body.n_y
    group = apply(Scan(body), ins, graph.unique_name(title))
    outs = []
    for k in range(nc + ny):
        label = body.carry_names[k] if k < nc else ("ys" if ny == 1 else f"ys{k - nc}")
        outs.append(result(group, k, graph.unique_name(f"{title}.{label}")))
    carry = tuple(outs[:nc]) if init_tuple else outs[0]
    ys = tuple(outs[nc:]) if y_tuple else (outs[nc] if ny else None)
    return carry, ys


# -- the derivative of a scan: a reverse scan --------------------------------------------------------


@dataclasses.dataclass
class _Vjp:
    """The body's vector-Jacobian product as a graph of its own, and what its gradient part reads."""

    graph: Graph
    c: list[Node]  # stand-ins of the carries in, the slices, the captured values
    x: list[Node]
    w: list[Node]
    seeds: list[Node]  # cotangents of the float carries out
    gin: Node | None  # cotangent of the stacked result differentiated (ys, carries-in, residual)
    outs: list[Node]  # d carries in (float), d captured (float), d slices (float)
    residuals: dict[Node, Node]  # forward node of this graph -> the body node whose stacked value replaces it
    needed: set[Node]  # the nodes of this graph a reverse step computes or reads


def _vjp_graph(body: ScanBody, kind: str, kk: int, fc: list[int], fx: list[int], fw: list[int]) -> _Vjp:
    """Differentiate one step of the body (build_grad in a graph of its own); the forward values its gradient
    reads become residuals, stacked by the forward scan instead of recomputed by the reverse one."""
    key = (kind, kk, tuple(fc), tuple(fx), tuple(fw))
    got = body.vjp_cache.get(key)
    if got is not None:
        return got
    tr, nc, nx = body.traced, body.n_carry, body.n_x
    vg = Graph(fit_name(f"{body.name}/vjp"))
    c = [vg.input(f"c{j}", n.shape, n.dtype) for j, n in enumerate(tr.inputs[:nc])]
    x = [vg.input(f"x{j}", n.shape, n.dtype) for j, n in enumerate(tr.inputs[nc : nc + nx])]
    w = [vg.input(f"w{j}", n.shape, n.dtype) for j, n in enumerate(tr.captured_inputs)]
    m: dict[Node, Node] = dict(zip(tr.inputs + tr.captured_inputs, c + x + w))
    for n in tr.graph.nodes:
        if n not in m:
            m[n] = (
                vg.constant(tr.graph.stored_value(n))
                if n.op.name == "constant"
                else apply(n.op, tuple(m[i] for i in n.inputs))
            )
    seeds = [vg.input(f"g{j}", c[j].shape, c[j].dtype) for j in fc]
    terms = [R.sum(E.multiply(m[tr.outputs[j]], gj)) for gj, j in zip(seeds, fc)]
    gin = None
    if kind != "carry":
        node = body.stacked_node(kind, kk)
        gin = vg.input("gin", node.shape, node.dtype)
        terms.append(R.sum(E.multiply(m[node], gin)))
    targets = [c[j] for j in fc] + [x[j] for j in fx] + [w[j] for j in fw]
    z = terms[0]
    for t in terms[1:]:
        z = E.add(z, t)
    d = build_grad(z, targets, disconnected="zero")
    outs = [d[c[j]] for j in fc] + [d[w[j]] for j in fw] + [d[x[j]] for j in fx]
    residuals, needed = _step_residuals(tr, m, outs)
    got = body.vjp_cache[key] = _Vjp(vg, c, x, w, seeds, gin, outs, residuals, needed)
    return got


def _step_residuals(tr: Traced, m: dict[Node, Node], outs: list[Node]) -> tuple[dict[Node, Node], set[Node]]:
    """(residuals, needed) of a step's gradient `outs`, whose forward part is the body copied by `m`: the
    forward values it reads that depend on the carry or the slice (kept per step: each maps to its body
    node), and the nodes a reverse step computes or reads (it stops at a residual)."""
    varying = set(tr.inputs)
    for n in tr.graph.nodes:
        if n.inputs and any(i in varying for i in n.inputs):
            varying.add(n)
    forward = {m[n]: n for n in tr.graph.nodes if n.inputs and n in varying and n.dtype != OBJECT}
    residuals: dict[Node, Node] = {}
    needed: set[Node] = set()
    stack = list(outs)
    while stack:
        n = stack.pop()
        if n in needed:
            continue
        needed.add(n)
        if n in forward:
            residuals[n] = forward[n]
            continue
        stack.extend(n.inputs)
    return residuals, needed


def scan_vjp(body: ScanBody, group: Node, x: tuple[Node, ...], y: Node, g: Node) -> list:
    """The cotangents of every input of the scan node y, given g = dz/dy: one reverse scan (cached)."""
    key = (y, g)
    got = body.grad_cache.get(key)
    if got is not None:
        return got
    nc, nx, nw = body.n_carry, body.n_x, body.n_w
    assert isinstance(y.op, Result)  # the bprop of a scan is asked for one of its results
    kind, kk = body.output_kind(y.op.index)
    inits, xss, ws = list(x[:nc]), list(x[nc : nc + nx]), list(x[nc + nx :])
    fc = [j for j in range(nc) if inits[j].dtype.kind == "f"]
    fx = [j for j in range(nx) if (_tape_row(xss[j])[1] if is_tape(xss[j]) else xss[j].dtype).kind == "f"]
    fw = [j for j in range(nw) if ws[j].dtype.kind == "f"]
    vjp = _vjp_graph(body, kind, kk, fc, fx, fw)
    body.want_stacks = True
    graph = y.graph
    # the reverse scan's slices: the carries-in, slices and residuals its steps read, and the cotangent
    used_c = [j for j in range(nc) if vjp.c[j] in vjp.needed]
    used_x = [j for j in range(nx) if vjp.x[j] in vjp.needed]
    used_w = [j for j in range(nw) if vjp.w[j] in vjp.needed]
    res = list(vjp.residuals.items())
    stacked = _checkpoints(body, group, graph, used_c, [b for _, b in res])
    rc_init = [g if (kind == "carry" and kk == j) else S.zeros_like(inits[j]) for j in fc] + [
        S.zeros_like(ws[j]) for j in fw
    ]
    r_xs = stacked[: len(used_c)] + [xss[j] for j in used_x] + stacked[len(used_c) :] + ([g] if kind != "carry" else [])
    pad: list[str] = []
    if not r_xs and (nx or nc):  # a step that reads nothing per step still runs once per step
        r_xs = (
            [xss[0]]
            if nx
            else [result(group, nc + body.n_y, graph.unique_name(f"{body.name}.{body.carry_names[0]}_stack"))]
        )
        pad = ["steps"]
    rc, rys = scan_impl(
        _reverse_step(vjp, ws, len(fc), len(fw), used_c, used_x, used_w, [v for v, _ in res]),
        tuple(rc_init),
        tuple(r_xs) if r_xs else None,
        reverse=not body.reverse,
        length=None if r_xs else body.length,
        name=fit_name(f"{body.name}.grad"),
        _names=_reverse_names(body, kind, kk, fc, fw, used_c, used_x, [b for _, b in res], pad),
    )
    xn = [n.name for n in body.traced.inputs[nc : nc + nx]]
    for n in list(rc) + list(rys):  # the reverse scan knows the scan it differentiates
        n.inputs[0].op.body.forward = body
        n.inputs[0].op.body.y_names = [f"d{xn[j]}".removesuffix("_t") for j in fx]
        break
    grads = body.grad_cache[key] = _cotangents_by_input(len(x), nc, nx, fc, fx, fw, rc, rys)
    return grads


def _cotangents_by_input(n_inputs: int, nc: int, nx: int, fc: list[int], fx: list[int], fw: list[int], rc, rys) -> list:
    """The cotangent of each input of the scan (None for one that is not float): its init's from the reverse
    scan's final carries `rc`, its xs' from its ys `rys`, its captured values' from the carries after them."""
    grads: list = [None] * n_inputs
    for p, j in enumerate(fc):
        grads[j] = rc[p]
    for p, j in enumerate(fx):
        grads[nc + j] = rys[p]
    for p, j in enumerate(fw):
        grads[nc + nx + j] = rc[len(fc) + p]
    return grads


def _checkpoints(body: ScanBody, group: Node, graph: Graph, used_c: list[int], residuals: list[Node]) -> list[Node]:
    """The stacked values the reverse scan reads per step, as results of the forward scan node `group`: the
    carries-in h_0..h_{T-1} it reads (indices used_c), then each residual body node's value at every step."""
    nc, cn = body.n_carry, body.carry_names
    stacked = [result(group, nc + body.n_y + j, graph.unique_name(f"{body.name}.{cn[j]}_stack")) for j in used_c]
    for bnode in residuals:
        idx = body.residual_index(bnode)
        if idx >= 2 * nc + body.n_y:
            label = f"{body.name}.{bnode.name}_stack"
        else:
            label = None
        stacked.append(_result_of(group, idx, graph, label))
    return stacked


def _reverse_step(
    vjp: _Vjp,
    ws: list[Node],
    n_fc: int,
    n_fw: int,
    used_c: list[int],
    used_x: list[int],
    used_w: list[int],
    residuals: list[Node],
) -> Callable:
    """The reverse scan's body: carry (d float carries, d float captured values so far), slices (the used
    carries-in, slices and residuals (nodes of vjp.graph), then the cotangent if any) -> (the carry after
    this step, the d float slices). It replays the gradient part of one step; captured values are aliases."""

    def rev(carry, xt):
        carry, xt = list(carry), list(xt) if xt is not None else []
        gcs, gws = carry[:n_fc], carry[n_fc:]
        slots = [vjp.c[j] for j in used_c] + [vjp.x[j] for j in used_x] + residuals
        m: dict[Node, Node] = dict(zip(slots, xt))
        if vjp.gin is not None:
            m[vjp.gin] = xt[len(slots)]
        for gj, seed in zip(gcs, vjp.seeds):
            m[seed] = gj
        for j in used_w:
            m[vjp.w[j]] = alias(ws[j])
        outs = _replay_gradient(vjp, m, carry[0].graph if carry else xt[0].graph)
        new_gc = outs[:n_fc]
        new_gw = [E.add(gw, dw) for gw, dw in zip(gws, outs[n_fc : n_fc + n_fw])]
        return tuple(new_gc + new_gw), tuple(outs[n_fc + n_fw :])

    return rev


def _replay_gradient(vjp: _Vjp, m: dict[Node, Node], out_graph: Graph) -> list[Node]:
    """Apply the gradient part of one step (the nodes of vjp.graph it needs) in the current trace, its leaves
    given by `m`; its results vjp.outs."""
    for n in vjp.graph.nodes:
        if n in m or n not in vjp.needed:
            continue
        if n.op.name == "constant":
            m[n] = out_graph.constant(vjp.graph.stored_value(n))
        elif not n.inputs:
            raise GraphCompilerError(f"internal error: {n.name!r} of the step's gradient has no value")
        else:
            m[n] = apply(n.op, tuple(m[i] for i in n.inputs))
    return [m[o] for o in vjp.outs]


def _reverse_names(
    body: ScanBody,
    kind: str,
    kk: int,
    fc: list[int],
    fw: list[int],
    used_c: list[int],
    used_x: list[int],
    residuals: list[Node],
    pad: list[str],
) -> tuple[list[str], list[str]]:
    """The names of the reverse scan's stand-ins, as BPTT writes them: its carries dh_{t+1} and dW, its
    slices h_{t-1}, x_t, the residuals' r_t and the cotangent dy_t (t+1 and t-1 swap for a reverse scan)."""
    nc, cn, traced = body.n_carry, body.carry_names, body.traced
    xn = [n.name for n in traced.inputs[nc : nc + body.n_x]]
    step = "t+1" if not body.reverse else "t-1"
    here = "t-1" if not body.reverse else "t+1"
    seed = {
        "ys": f"d{'ys' if body.n_y == 1 else f'ys{kk}'}_t",
        "carries": f"d{cn[kk] if nc > kk else ''}_t",
        "res": f"d{body.residuals[kk].name if kind == 'res' else ''}_t",
    }
    return (
        [f"d{cn[j]}_{{{step}}}" for j in fc] + [f"d{traced.captured_inputs[j].name}" for j in fw],
        [f"{cn[j]}_{{{here}}}" for j in used_c]
        + [xn[j] for j in used_x]
        + [f"{b.name}_t" for b in residuals]
        + ([seed[kind]] if kind != "carry" else [])
        + pad,
    )


def _result_of(group: Node, index: int, graph: Graph, label: str | None) -> Node:
    """The result node `index` of `group`, reusing one that exists (a stacked ys read by the gradient)."""
    for n in graph.consumers(group):
        if isinstance(n.op, Result) and n.op.index == index:
            return n
    return result(group, index, graph.unique_name(label) if label else None)
