"""Control flow: scan, cond and while_loop, each a body traced once into a sub-graph of its own.

A body is a Python function called once on stand-in nodes (ops/tracing.py). Nodes of the enclosing graph it
reads (weights) are captured and become explicit inputs of the loop node, so the outer graph's edges stay
honest; values of the body that do not depend on the stand-ins are hoisted out of the loop into the enclosing
graph.

A node has one value, so a loop with several results (carries, stacked outputs) is one node per result, all
sharing one `ScanBody`: the first of them to run computes every result in one pass and the others take theirs
(the inputs are compared by value, so nothing stale is ever handed out).

The derivative of a scan is a scan (backpropagation through time): the reverse scan's body is the forward
body's own `build_grad`, fed the forward carries h_0..h_{T-1} kept as a stacked output of the forward scan.
Because the reverse scan is an ordinary Scan, its own derivative (second order) follows by the same rule.

A bounded while_loop (max_steps=N) is a scan whose last carry is the condition on the others: it stops at the
first step where that fails, raises ExecutionError when it still holds after N steps, and keeps the values its
gradient reads per step in tapes (object results, grown as it runs), so a loop that ends early costs the steps
it ran and its gradient, a reverse scan over the tapes, as many. A scan over tapes stacks its own results
in tapes, and a tape's gradient is a tape (Result.grad), so the second derivative follows by the same rule.
Every loop iteration checks the run's time budget (budget.py, Program.run(max_seconds=)).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, cast

import numpy as np

from .. import budget
from ..errors import (
    DTypeError,
    ExecutionError,
    GraphCompilerError,
    ShapeError,
    UndefinedGradientError,
    fmt_shape,
)
from ..graph import MAX_STEPS, MAX_WHILE_STEPS, ZERO, Graph, Node, Undefined, fit_name, name_problem, service
from .base import Deferred, Op, apply, undefined_to_sympy
from .tracing import Traced, alias, inline, trace_body

__all__ = ["MAX_SCAN_LENGTH", "MAX_WHILE_STEPS", "cond", "scan", "while_loop"]

# The most steps of a scan without xs (gc.scan(length=N), and a scan body read from a graph file): its stacked
# results are allocated up front. io.py's loader reads scan bodies through ScanBody.from_record, which checks it.
# A bounded while_loop's max_steps may reach MAX_WHILE_STEPS. Both are the graph file's limits (graph.py).
MAX_SCAN_LENGTH = MAX_STEPS


# -- shapes of a body on other input shapes -------------------------------------------------------


class _Shim:
    """Just enough of a Node for a shape rule: name, op, shape, dtype, inputs."""

    __slots__ = ("dtype", "graph", "inputs", "name", "op", "shape")

    def __init__(self, n: Node, shape: tuple, inputs=()):
        self.name, self.op, self.shape, self.dtype, self.inputs, self.graph = (
            n.name,
            n.op,
            tuple(shape),
            n.dtype,
            inputs,
            n.graph,
        )

    @property
    def ndim(self) -> int:
        return len(self.shape)


def _body_flops(traced: Traced) -> int:
    total = 0
    for m in traced.graph.nodes:
        if m.inputs:
            try:
                total += int(m.op.flops(m))
            except Exception:  # a None dim in the body: count its elements as one
                total += 1
    return max(total, 1)


def _first_step(prog, feeds: dict) -> tuple[list, Callable]:
    """Run the body's program once on the first step's feeds (checked, specialised to their shapes), and
    return a runner for the later steps, whose feeds have the same shapes and dtypes: it calls the loaded
    evaluator directly, with no feed checks or signature look-up per step (prog.run where that is not
    available)."""
    out = prog.run(feeds)
    spec = getattr(prog, "_last", None)
    evaluator, leaves = getattr(spec, "evaluator", None), getattr(spec, "leaf_nodes", None)
    if evaluator is None or leaves is None or any(n not in feeds for n in leaves):
        return out, prog.run
    leaves = list(leaves)
    ev_run = evaluator.run

    def run(f: dict) -> list:
        return ev_run([f[n] for n in leaves])

    return out, run


def _compatible(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b))


def body_shapes(traced: Traced, in_shapes: Sequence[tuple], cache: dict, extra: Sequence[Node] = ()) -> list[tuple]:
    """The shapes of the body's outputs (and of the `extra` body nodes) when its inputs have in_shapes (its
    shape rules run again)."""
    key = (tuple(in_shapes), tuple(extra))
    got = cache.get(key)
    if got is not None:
        return got
    ins = traced.inputs + traced.captured_inputs
    wanted = list(traced.outputs) + list(extra)
    if all(n.shape == s for n, s in zip(ins, in_shapes)):
        got = [o.shape for o in wanted]
    else:
        env: dict[Node, Any] = {n: (_Shim(n, s) if n.shape != s else n) for n, s in zip(ins, in_shapes)}
        for n in traced.graph.nodes:
            if n in env:
                continue
            if not n.inputs:
                env[n] = n
                continue
            xs = [env[x] for x in n.inputs]
            if all(a is b for a, b in zip(xs, n.inputs)):
                env[n] = n
                continue
            shape, _ = n.op.infer(*xs)
            env[n] = _Shim(n, shape, tuple(xs)) if tuple(shape) != n.shape else n
        got = [env[o].shape for o in wanted]
    cache[key] = got
    return got


# -- the loop body shared by the nodes of one scan ----------------------------------------------


def _get(rec: dict, key: str, kind, what: str, limit: int = MAX_SCAN_LENGTH):
    """A field of a body record read from a file, of the given type (ints are not bools, and in [0, limit])."""
    v: Any = rec.get(key) if isinstance(rec, dict) else None
    ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
    if kind is list and ok and key.endswith("names"):
        ok = all(isinstance(x, str) and name_problem(x) is None for x in v)
    if kind is str and ok and key == "name" and name_problem(v) is not None:
        raise GraphCompilerError(f"the {what} record's name {name_problem(v)}")
    if not ok or kind is int and not 0 <= v <= limit:
        raise GraphCompilerError(
            f"the {what} record's field {key!r} must be a {kind.__name__}"
            f"{f' in [0, {limit}]' if kind is int else ''}, got {v!r:.60}"
        )
    return v


def _traced_from(lists, n_captured: int | None = None) -> Traced:
    inputs, captured_inputs, outputs = lists
    return Traced(
        inputs[0].graph if inputs else (outputs[0].graph if outputs else Graph()),
        inputs,
        captured_inputs,
        _no_outer_nodes(len(captured_inputs)),
        outputs,
    )


def _no_outer_nodes(n: int) -> list[Node]:
    """The `captured` list of a body read from a file: it has no outer nodes (the values it captured are
    the inputs of the node read with it), so n placeholders that are only counted, never read."""
    return cast(list[Node], [None] * n)


def _same_values(a: Node, b: Node) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape


def _picks_from(rec: dict, n_captured: int, traced: tuple, what: str) -> tuple[list[int], list[int]]:
    picks = _get(rec, "picks", list, what)
    if len(picks) != 2 or not all(isinstance(p, list) for p in picks):
        raise GraphCompilerError(f"the {what} record's picks must be two lists")
    for p, t in zip(picks, traced):
        if len(p) != len(t.captured_inputs) or not all(
            isinstance(k, int) and not isinstance(k, bool) and 0 <= k < n_captured for k in p
        ):
            raise GraphCompilerError(f"the {what} record's picks {p!r:.60} do not fit {n_captured} captured values")
    return picks[0], picks[1]


class _Group:
    """What the nodes of one control-flow construct share: the traced bodies, compiled once, and gradients."""

    def _init_cache(self) -> None:
        self._lock = threading.RLock()
        self.grad_cache: dict = {}
        self.vjp_cache: dict = {}
        self._programs: dict = {}

    def program_of(self, traced: Traced, extra: Sequence[Node] = ()):
        """The body compiled once (its own simplification, schedule and buffers); run per step. `extra`: more
        body values to return each step (the residuals a scan's gradient reads)."""
        key = (id(traced), len(extra))
        prog = self._programs.get(key)
        if prog is None:
            prog = self._programs[key] = service("compile")(list(traced.outputs) + list(extra))
        return prog

    def _compute(self, arrays) -> list:
        raise NotImplementedError


class Results:
    """The value of a control-flow node: the list of its results (a `result` node picks one out)."""

    __slots__ = ("values",)

    def __init__(self, values: list):
        self.values = values

    def __repr__(self) -> str:
        return f"<{len(self.values)} results>"


OBJECT = np.dtype(object)


class ScanBody(_Group):
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
        name = _get(rec, "name", str, what)
        nc, nx, ny = (_get(rec, k, int, what) for k in ("n_carry", "n_x", "n_y"))
        reverse = _get(rec, "reverse", bool, what)
        until = _get(rec, "until", bool, what) if "until" in rec else False
        if until and (nx or ny or not nc):
            raise GraphCompilerError("a bounded while_loop's scan body record has carries only (n_x, n_y 0)")
        length = None if nx else _get(rec, "length", int, what, MAX_WHILE_STEPS if until else MAX_SCAN_LENGTH)
        if nx and rec.get("length") is not None:
            raise GraphCompilerError("a scan body record with xs has length null")
        names = _get(rec, "carry_names", list, what)
        stacks = _get(rec, "stacks", bool, what)
        res_names = _get(rec, "residuals", list, what)
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
        traced = _traced_from(traced_of(rec["traced"], "traced"))
        if len(traced.inputs) != nc + nx or len(traced.outputs) != nc + ny or len(names) != nc:
            raise GraphCompilerError(
                f"the scan body has {len(traced.inputs)} inputs and {len(traced.outputs)} "
                f"outputs, which do not fit n_carry={nc}, n_x={nx}, n_y={ny}"
            )
        for k in range(nc):
            c_in, c_out = traced.inputs[k], traced.outputs[k]
            if c_in.dtype != c_out.dtype or not _compatible(c_in.shape, c_out.shape):
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
                out, run = _first_step(prog, feeds)
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
                out, run = _first_step(prog, feeds)
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


def _is_tape(x) -> bool:
    """A stacked result of a bounded while_loop: an object value (its number of steps is known only when it
    runs) whose rows a reverse scan reads as its slices."""
    return x.dtype == OBJECT


@dataclasses.dataclass(frozen=True)
class Scan(Op):
    """A scan: its value holds every result (final carries, stacked ys, stacked carries-in); `result` nodes
    pick them out."""

    name: ClassVar[str] = "scan"
    body: ScanBody
    has_body: ClassVar[bool] = True
    body_type: ClassVar[type[ScanBody]] = ScanBody

    def __post_init__(self):
        if not isinstance(self.body, ScanBody):
            raise GraphCompilerError(
                f"a {self.name} op needs a traced body (gc.{self.name} makes one); "
                "control-flow nodes cannot be read from graph files yet"
            )

    def attrs(self) -> dict[str, Any]:
        b = self.body
        return {"reverse": b.reverse, "body": f"{len(b.graph)} nodes"}

    def n_results(self) -> int:
        return self.body.n_outputs()

    def flops(self, node: Node) -> int:
        """The body's cost times the number of steps (recomputation weighs a loop as the loop it is)."""
        b = self.body
        steps = (None if _is_tape(node.inputs[b.n_carry]) else node.inputs[b.n_carry].shape[0]) if b.n_x else b.length
        if b.until or steps is None:  # a while_loop's steps are known when it runs
            steps = 1000 if steps is None else min(steps, 1000)
        return _body_flops(b.traced) * steps

    def result_name(self, index: int) -> str:
        kind, j = self.body.output_kind(index)
        return f"{kind}[{j}]"

    def infer(self, *xs):
        self.result_shape(0, xs)
        return (), OBJECT

    def result_shape(self, index: int, xs):
        b = self.body
        nc, nx = b.n_carry, b.n_x
        if len(xs) != nc + nx + b.n_w:
            raise GraphCompilerError(f"scan {b.name!r} takes {nc + nx + b.n_w} inputs, got {len(xs)}")
        steps = b.length if nx == 0 else None
        body_ins = b.traced.inputs + b.traced.captured_inputs
        for k, x in enumerate(xs[nc : nc + nx]):
            if _is_tape(x):  # its steps are known when it runs
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
        in_shapes = [(None, *n.shape) if _is_tape(x) else x.shape for x, n in zip(xs, body_ins)]
        for k, (x, n) in enumerate(zip(xs, body_ins)):
            if nc <= k < nc + nx and _is_tape(x):
                continue
            s = x.shape[1:] if nc <= k < nc + nx else x.shape
            if not _compatible(tuple(s), n.shape) or x.dtype != n.dtype:
                raise ShapeError(
                    f"scan {b.name!r}: input {k} ({x.name!r}) has shape {fmt_shape(x.shape)}, "
                    f"{x.dtype}; the body was traced for {fmt_shape(n.shape)}, {n.dtype}"
                )
        if not b.n_outputs():
            return (), OBJECT
        kind, j = b.output_kind(index)
        if kind != "carry" and (b.until or any(_is_tape(x) for x in xs[nc : nc + nx])):
            return (), OBJECT  # a tape: the steps a bounded while_loop runs (or a scan over its tapes)
        shape = b.out_shape(index, in_shapes, steps)
        dtype = xs[j].dtype if kind in ("carry", "carries") else b.stacked_node(kind, j).dtype
        return shape, dtype

    def kernel(self, *xs):
        return Results(self.body._compute(xs))

    def vjp(self, node, x, y, g):
        return scan_vjp(self.body, node, x, y, g)

    to_sympy = undefined_to_sympy


@dataclasses.dataclass(frozen=True)
class Result(Op):
    """One result of a control-flow node (its input 0); its other inputs are that node's own inputs, so the
    derivative of the result reaches them directly (the control-flow node's value carries no gradient)."""

    name: ClassVar[str] = "result"
    index: int = 0
    integer: bool = False  # an integer or bool result: piecewise constant, it passes back no gradient

    @property
    def piecewise_constant(self) -> bool:  # type: ignore[override]
        return self.integer

    def attrs(self) -> dict[str, Any]:
        return {"index": self.index, "integer": self.integer}

    def infer(self, group, *xs):
        if not hasattr(group.op, "result_shape") or group.dtype != OBJECT:
            raise GraphCompilerError(
                f"result: input 0 ({group.name!r}, {group.op.name}) must be a scan, cond or while_loop node"
            )
        if not 0 <= self.index < group.op.n_results() or len(xs) != len(group.inputs):
            raise GraphCompilerError(
                f"result {self.index} of {group.name!r} ({group.op.name}): it has "
                f"{group.op.n_results()} results, and a result reads that node's inputs after it"
            )
        shape, dtype = group.op.result_shape(self.index, xs)
        if self.integer != _no_gradient(group.op, self.index, dtype):
            raise GraphCompilerError(
                f"result {self.index} of {group.name!r}: integer={self.integer} but the result has dtype {dtype}"
            )
        return shape, dtype

    def kernel(self, group, *xs):
        if isinstance(group, np.ndarray):  # a control-flow node folded to a constant
            group = group.item()
        value = group.values[self.index]
        if value is None:
            raise GraphCompilerError(f"internal error: result {self.index} of this {group!r} was not computed")
        return value

    def grad(self, i, x, y, g):
        if i == 0:
            return None
        if not (_is_tape(y) or _is_tape(x[i])):
            return super().grad(i, x, y, g)
        # a tape (dtype object) carries the gradient of its rows
        if self.integer or x[i].dtype.kind == "b":
            return ZERO
        if not _is_tape(x[i]) and x[i].dtype.kind != "f":
            return Undefined((y, i))
        part = self.bprop(i, x, y, g)
        return ZERO if part is None else part

    def bprop(self, i, x, y, g):
        return x[0].op.vjp(x[0], x[1:], y, g)[i - 1]

    def to_sympy(self, node, *args):
        from ..symbolic_terms import apply_undefined

        return apply_undefined(node, *args[:1])


def result(group: Node, index: int, name: str | None = None) -> Node:
    """The index-th result of a scan, cond or while_loop node."""
    op = group.op
    if not isinstance(op, (Scan, Cond, While)):
        raise GraphCompilerError(f"result takes a scan, cond or while_loop node, not {group.name!r} ({op.name})")
    _, dtype = op.result_shape(index, group.inputs)
    return apply(Result(index, _no_gradient(op, index, dtype)), (group, *group.inputs), name)


def _no_gradient(op: Op, index: int, dtype) -> bool:
    """Whether result `index` of a control-flow op carries no gradient: not float (for a tape: its rows)."""
    if np.dtype(dtype) == OBJECT and isinstance(op, Scan):
        dtype = op.body.stacked_node(*op.body.output_kind(index)).dtype
    return np.dtype(dtype).kind != "f"


# -- the public scan --------------------------------------------------------------------------------


def _param_names(fn: Callable, count: int, default: list[str]) -> list[str]:
    try:
        params = [
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        params = []
    return params[:count] + default[len(params[:count]) :]


def _flat(v, what: str) -> tuple[list, bool]:
    """(nodes, is_tuple) of a node or a tuple/list of nodes."""
    if isinstance(v, (tuple, list)):
        return list(v), True
    return [v], False


def _scan_impl(
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
    title = name or graph._auto_name("scan")
    nc, nx = len(inits), len(xss)
    pn = _param_names(fn, 2, ["carry", "x"])
    cnames = [pn[0]] if nc == 1 and not init_tuple else [f"{pn[0]}{k}" for k in range(nc)]
    xnames = [pn[1]] if nx == 1 and not xs_tuple else [f"{pn[1]}{k}" for k in range(nx)]
    if _names is not None:  # the reverse scan of a gradient names its stand-ins
        cnames, xnames = list(_names[0]), list(_names[1])
    specs = [(nm, n.shape, n.dtype) for nm, n in zip(cnames, inits)] + [
        (nm, *(_tape_row(x) if _is_tape(x) else (x.shape[1:], x.dtype))) for nm, x in zip(xnames, xss)
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
    inits, init_tuple = _flat(init, "init")
    xss: list
    if xs is None:
        xss, xs_tuple = [], False
    else:
        xss, xs_tuple = _flat(xs, "xs")
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
        if _is_tape(x):
            continue
        if not x.shape:
            raise ShapeError(
                f"scan: xs {k} ({x.name!r}, {x.op.name}) is a scalar of shape (); xs are sliced "
                "along axis 0, so each needs at least one axis"
            )
    if xss and length is not None:
        lens = {x.shape[0] for x in xss if not _is_tape(x)} - {None}
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
        new_cs, c_tuple = _flat(new_c, "carry")
        if len(new_cs) != nc or c_tuple != init_tuple and nc != 1:
            raise GraphCompilerError(
                f"scan {title!r}: the body returned {len(new_cs)} carries for an init of "
                f"{nc}; return the carry in the structure of init"
            )
        ys, y_tuple = ([], False) if y is None else _flat(y, "y")
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
            or _compatible(c_out.shape, c_in.shape)
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
    group = apply(Scan(body), ins, graph._unique_name(title))
    outs = []
    for k in range(nc + ny):
        label = body.carry_names[k] if k < nc else ("ys" if ny == 1 else f"ys{k - nc}")
        outs.append(result(group, k, graph._unique_name(f"{title}.{label}")))
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
    build_grad = service("build_grad")
    from . import elementwise as E
    from . import reduce as R

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
                vg.constant(tr.graph._values[n])
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
    from . import shape as S

    nc, nx, nw = body.n_carry, body.n_x, body.n_w
    assert isinstance(y.op, Result)  # the bprop of a scan is asked for one of its results
    kind, kk = body.output_kind(y.op.index)
    inits, xss, ws = list(x[:nc]), list(x[nc : nc + nx]), list(x[nc + nx :])
    fc = [j for j in range(nc) if inits[j].dtype.kind == "f"]
    fx = [j for j in range(nx) if (_tape_row(xss[j])[1] if _is_tape(xss[j]) else xss[j].dtype).kind == "f"]
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
            else [result(group, nc + body.n_y, graph._unique_name(f"{body.name}.{body.carry_names[0]}_stack"))]
        )
        pad = ["steps"]
    rc, rys = _scan_impl(
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
    stacked = [result(group, nc + body.n_y + j, graph._unique_name(f"{body.name}.{cn[j]}_stack")) for j in used_c]
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
    from . import elementwise as E

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
            m[n] = out_graph.constant(vjp.graph._values[n])
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
    return result(group, index, graph._unique_name(label) if label else None)


# -- cond: one of two traced branches, chosen at run time ------------------------------------------


class CondBody(_Group):
    """One cond: both branches traced on the same operands; captured nodes are the union of both."""

    def __init__(
        self,
        name: str,
        branches: tuple[Traced, Traced],
        n_ops: int,
        captured: list[Node],
        picks: tuple[list[int], list[int]],
    ):
        self.name, self.branches, self.n_ops = name, branches, n_ops
        self.captured = captured
        self.picks = picks  # for each branch: positions in `captured` of its captured inputs
        self._shape_cache: dict = {}
        self._init_cache()

    def __repr__(self) -> str:
        return f"<cond {self.name!r}: {len(self.branches[0].graph)} and {len(self.branches[1].graph)} nodes>"

    def record(self, encode: Callable) -> dict:
        return {
            "name": self.name,
            "true": encode(self.branches[0]),
            "false": encode(self.branches[1]),
            "n_ops": self.n_ops,
            "n_captured": len(self.captured),
            "picks": [list(p) for p in self.picks],
        }

    @classmethod
    def from_record(cls, rec: dict, traced_of: Callable) -> CondBody:
        what = "cond body"
        name = _get(rec, "name", str, what)
        n_ops, n_cap = _get(rec, "n_ops", int, what), _get(rec, "n_captured", int, what)
        if set(rec) != {"name", "true", "false", "n_ops", "n_captured", "picks"}:
            raise GraphCompilerError(f"unknown or missing fields in the cond body record: {sorted(rec)}")
        t, f = _traced_from(traced_of(rec["true"], "true")), _traced_from(traced_of(rec["false"], "false"))
        picks = _picks_from(rec, n_cap, (t, f), what)
        if (
            len(t.inputs) != n_ops
            or len(f.inputs) != n_ops
            or len(t.outputs) != len(f.outputs)
            or not all(_same_values(a, b) for a, b in zip(t.inputs + t.outputs, f.inputs + f.outputs))
        ):
            raise ShapeError("the two branches of the cond do not take and return values of the same shapes")
        return cls(name, (t, f), n_ops, _no_outer_nodes(n_cap), picks)

    def branch_inputs(self, b: int, values: Sequence) -> list:
        ops, ws = list(values[1 : 1 + self.n_ops]), list(values[1 + self.n_ops :])
        return ops + [ws[p] for p in self.picks[b]]

    def _compute(self, arrays) -> list:
        b = 0 if bool(np.asarray(arrays[0])) else 1
        traced = self.branches[b]
        prog = self.program_of(traced)
        feeds = dict(zip(traced.inputs + traced.captured_inputs, self.branch_inputs(b, arrays)))
        return [np.asarray(o) for o in prog.run(feeds)]


@dataclasses.dataclass(frozen=True)
class Cond(Op):
    """One result of a cond: branch `true` if the scalar bool pred holds, else branch `false`."""

    name: ClassVar[str] = "cond"
    body: CondBody
    has_body: ClassVar[bool] = True
    body_type: ClassVar[type[CondBody]] = CondBody

    def __post_init__(self):
        if not isinstance(self.body, CondBody):
            raise GraphCompilerError(
                f"a {self.name} op needs a traced body (gc.{self.name} makes one); "
                "control-flow nodes cannot be read from graph files yet"
            )

    def attrs(self) -> dict[str, Any]:
        t, f = self.body.branches
        return {"branches": f"{len(t.graph)} and {len(f.graph)} nodes"}

    def n_results(self) -> int:
        return len(self.body.branches[0].outputs)

    def infer(self, *xs):
        self.result_shape(0, xs)
        return (), OBJECT

    def result_shape(self, index: int, xs):
        b = self.body
        pred = xs[0]
        if tuple(pred.shape) != () or pred.dtype != np.bool_:
            raise ShapeError(
                f"cond {b.name!r}: the predicate {pred.name!r} ({pred.op.name}) has shape "
                f"{fmt_shape(pred.shape)} and dtype {pred.dtype}; it must be a scalar bool "
                "(e.g. gc.greater(gc.sum(x), 0))"
            )
        if len(xs) != 1 + b.n_ops + len(b.captured):
            raise GraphCompilerError(f"cond {b.name!r} takes {1 + b.n_ops + len(b.captured)} inputs, got {len(xs)}")
        t = b.branches[0]
        shapes = [x.shape for x in b.branch_inputs(0, xs)]
        if not t.outputs:
            return (), OBJECT
        out = body_shapes(t, shapes, b._shape_cache)[index]
        return out, t.outputs[index].dtype

    def kernel(self, *xs):
        return Results(self.body._compute(xs))

    def vjp(self, node, x, y, g):
        return cond_vjp(self.body, x, y, g)

    to_sympy = undefined_to_sympy


def _cond_impl(pred: Node, true_fn: Callable, false_fn: Callable, *operands, name: str | None = None):
    """true_fn(*operands) if the scalar bool node `pred` holds when the program runs, else false_fn(*operands).

    Both branches are traced once and must return values of the same shapes and dtypes; only the branch
    taken runs, and the gradient is the gradient of the branch taken.
    """
    graph, ops = _cond_operands(pred, operands)
    title = name or graph._auto_name("cond")
    names = _param_names(true_fn, len(ops), [f"a{k}" for k in range(len(ops))])
    specs = [(nm, o.shape, o.dtype) for nm, o in zip(names, ops)]
    structure: dict = {}
    t = trace_body(graph, f"{title}.true", specs, _branch_caller(true_fn, "true", structure))
    f = trace_body(
        graph, f"{title}.false", specs, _branch_caller(false_fn, "false", structure), out_like=list(t.outputs)
    )
    _check_branches_agree(title, t, f, structure)
    captured, picks = _union_captured((t, f))
    body = CondBody(title, (t, f), len(ops), captured, picks)
    ins = (pred, *ops, *captured)
    group = apply(Cond(body), ins, graph._unique_name(title))
    outs = [result(group, k, graph._unique_name(f"{title}.out{k}")) for k in range(len(t.outputs))]
    return tuple(outs) if structure["true"][0] else outs[0]


def _cond_operands(pred, operands: tuple) -> tuple[Graph, list[Node]]:
    """The graph of a cond and its operands as nodes of it (numbers become constants), checked: `pred` must
    be a scalar bool node."""
    if not isinstance(pred, Node):
        raise GraphCompilerError(
            f"cond: pred must be a scalar bool graph node, got {type(pred).__name__} "
            f"{pred!r}; for a Python bool, call the branch directly"
        )
    graph = pred.graph
    if tuple(pred.shape) != () or pred.dtype != np.bool_:
        raise ShapeError(
            f"cond: the predicate {pred.name!r} ({pred.op.name}) has shape {fmt_shape(pred.shape)} "
            f"and dtype {pred.dtype}; it must be a scalar bool (e.g. gc.greater(gc.sum(x), 0))"
        )
    floats = [o.dtype for o in operands if isinstance(o, Node) and o.dtype.kind == "f"]
    ops = [
        o
        if isinstance(o, Node)
        else graph.constant(np.asarray(o, dtype=np.result_type(*floats) if floats and isinstance(o, float) else None))
        for o in operands
    ]
    for o in ops:
        if o.graph is not graph:
            raise GraphCompilerError(f"cond: operand {o.name!r} belongs to graph {o.graph.name!r}, not {graph.name!r}")
    return graph, ops


def _branch_caller(fn: Callable, which: str, structure: dict) -> Callable[[list[Node]], list[Node]]:
    """The function trace_body calls on a branch's stand-ins: fn(*operands), its results flattened; it records
    in structure[which] (whether they are a tuple, how many)."""

    def call(standins):
        res = fn(*standins)
        outs, tup = _flat(res, "result")
        structure.setdefault(which, (tup, len(outs)))
        return outs

    return call


def _check_branches_agree(title: str, t: Traced, f: Traced, structure: dict) -> None:
    """The two branches return as many values, of the same shapes and dtypes."""
    if structure["true"][1] != structure["false"][1]:
        raise GraphCompilerError(
            f"cond {title!r}: the true branch returns {structure['true'][1]} values and the "
            f"false branch {structure['false'][1]}; both must return the same structure"
        )
    for k, (a, b) in enumerate(zip(t.outputs, f.outputs)):
        if a.dtype != b.dtype or not (
            _compatible(a.shape, b.shape) and [d is None for d in a.shape] == [d is None for d in b.shape]
        ):
            raise ShapeError(
                f"cond {title!r}: result {k} of the true branch ({a.name!r}, {a.op.name}) has shape "
                f"{fmt_shape(a.shape)}, {a.dtype} but the false branch's ({b.name!r}, {b.op.name}) "
                f"has {fmt_shape(b.shape)}, {b.dtype}; both branches must agree"
            )


def _union_captured(parts: tuple[Traced, Traced]) -> tuple[list[Node], tuple[list[int], list[int]]]:
    """The outer nodes two traced bodies capture, each once (inputs of the node), and for each body the
    positions in that list of its captured inputs."""
    captured: list[Node] = []
    picks: tuple[list[int], list[int]] = ([], [])
    for side, tr in enumerate(parts):
        for c in tr.captured:
            if c not in captured:
                captured.append(c)
            picks[side].append(captured.index(c))
    return captured, picks


def cond_vjp(body: CondBody, x: tuple[Node, ...], y: Node, g: Node) -> list:
    """The cotangents of the inputs of cond node y: a cond of the two branches' own gradients (cached)."""
    key = (y, g)
    got = body.grad_cache.get(key)
    if got is not None:
        return got
    build_grad = service("build_grad")
    from . import elementwise as E
    from . import reduce as R

    n = body.n_ops
    pred, ops, ws = x[0], list(x[1 : 1 + n]), list(x[1 + n :])
    assert isinstance(y.op, Result)  # the bprop of a cond is asked for one of its results
    k = y.op.index
    fo = [j for j in range(n) if ops[j].dtype.kind == "f"]
    fw = [j for j in range(len(ws)) if ws[j].dtype.kind == "f"]

    def vjp_of(b: int):
        traced = body.branches[b]

        def f(*a):
            o, gk = list(a[:n]), a[n]
            aw = [alias(w) for w in ws]
            outs = inline(traced, o + [aw[p] for p in body.picks[b]])
            z = R.sum(E.multiply(outs[k], gk))
            d = build_grad(z, [o[j] for j in fo] + [aw[j] for j in fw], disconnected="zero")
            return tuple([d[o[j]] for j in fo] + [d[aw[j]] for j in fw])

        return f

    res = cond(pred, vjp_of(0), vjp_of(1), *ops, g, name=fit_name(f"{body.name}.grad"))
    res = res if isinstance(res, tuple) else (res,)
    grads: list = [None] * len(x)
    for p, j in enumerate(fo):
        grads[1 + j] = res[p]
    for p, j in enumerate(fw):
        grads[1 + n + j] = res[len(fo) + p]
    body.grad_cache[key] = grads
    return grads


# -- while_loop ------------------------------------------------------------------------------------


class WhileBody(_Group):
    """One while_loop without a bound: the condition and the body traced on the carry."""

    def __init__(
        self,
        name: str,
        test: Traced,
        step: Traced,
        n_carry: int,
        captured: list[Node],
        picks: tuple[list[int], list[int]],
    ):
        self.name, self.test, self.step, self.n_carry = name, test, step, n_carry
        self.captured, self.picks = captured, picks
        self._init_cache()

    def __repr__(self) -> str:
        return f"<while_loop {self.name!r}>"

    def record(self, encode: Callable) -> dict:
        return {
            "name": self.name,
            "test": encode(self.test),
            "step": encode(self.step),
            "n_carry": self.n_carry,
            "n_captured": len(self.captured),
            "picks": [list(p) for p in self.picks],
        }

    @classmethod
    def from_record(cls, rec: dict, traced_of: Callable) -> WhileBody:
        what = "while_loop body"
        name = _get(rec, "name", str, what)
        nc, n_cap = _get(rec, "n_carry", int, what), _get(rec, "n_captured", int, what)
        if set(rec) != {"name", "test", "step", "n_carry", "n_captured", "picks"}:
            raise GraphCompilerError(f"unknown or missing fields in the while_loop body record: {sorted(rec)}")
        test, step = _traced_from(traced_of(rec["test"], "test")), _traced_from(traced_of(rec["step"], "step"))
        picks = _picks_from(rec, n_cap, (test, step), what)
        if (
            len(test.inputs) != nc
            or len(step.inputs) != nc
            or len(step.outputs) != nc
            or not all(_same_values(a, b) for a, b in zip(step.inputs, step.outputs))
            or not all(_same_values(a, b) for a, b in zip(test.inputs, step.inputs))
            or len(test.outputs) != 1
            or test.outputs[0].shape != ()
            or test.outputs[0].dtype != np.bool_
        ):
            raise ShapeError("the while_loop's condition and body do not fit its carry")
        return cls(name, test, step, nc, _no_outer_nodes(n_cap), picks)

    def _compute(self, arrays) -> list:
        nc = self.n_carry
        carries, ws = [np.asarray(a) for a in arrays[:nc]], list(arrays[nc:])
        tp, sp = self.program_of(self.test), self.program_of(self.step)
        t_feeds = dict(zip(self.test.captured_inputs, [ws[p] for p in self.picks[0]]))
        s_feeds = dict(zip(self.step.captured_inputs, [ws[p] for p in self.picks[1]]))
        t_run = s_run = None  # after a first checked run, the loaded evaluators directly
        t = 0
        with self._lock:
            while True:
                budget.check(lambda: f"while_loop {self.name!r}, at step {t}")
                t += 1
                t_feeds.update(zip(self.test.inputs, carries))
                if t_run is None:
                    out, t_run = _first_step(tp, t_feeds)
                else:
                    out = t_run(t_feeds)
                if not bool(np.asarray(out[0])):
                    return [np.array(c, copy=True) for c in carries] if s_run is None else carries
                s_feeds.update(zip(self.step.inputs, carries))
                if s_run is None:
                    out, s_run = _first_step(sp, s_feeds)
                else:
                    out = s_run(s_feeds)
                carries = [np.asarray(c) for c in out]


@dataclasses.dataclass(frozen=True)
class While(Op):
    """One final carry of an unbounded while_loop (no derivative: pass max_steps for one)."""

    name: ClassVar[str] = "while_loop"
    body: WhileBody
    has_body: ClassVar[bool] = True
    body_type: ClassVar[type[WhileBody]] = WhileBody

    def __post_init__(self):
        if not isinstance(self.body, WhileBody):
            raise GraphCompilerError(
                f"a {self.name} op needs a traced body (gc.{self.name} makes one); "
                "control-flow nodes cannot be read from graph files yet"
            )

    def attrs(self) -> dict[str, Any]:
        return {"body": f"{len(self.body.step.graph)} nodes"}

    def n_results(self) -> int:
        return self.body.n_carry

    def infer(self, *xs):
        self.result_shape(0, xs)
        return (), OBJECT

    def result_shape(self, index: int, xs):
        b = self.body
        for k, (x, n) in enumerate(zip(xs[: b.n_carry], b.step.inputs)):
            if not _compatible(x.shape, n.shape) or x.dtype != n.dtype:
                raise ShapeError(
                    f"while_loop {b.name!r}: carry {k} ({x.name!r}) has shape {fmt_shape(x.shape)}, "
                    f"{x.dtype}; the body was traced for {fmt_shape(n.shape)}, {n.dtype}"
                )
        return xs[index].shape, xs[index].dtype

    def kernel(self, *xs):
        return Results(self.body._compute(xs))

    def vjp(self, node, x, y, g):
        raise UndefinedGradientError(
            f"the derivative of while_loop {self.body.name!r} (node {y.name!r}, shape {fmt_shape(y.shape)}) is "
            "undefined: its number of steps is not bounded. Pass max_steps=N to gc.while_loop (it then runs as "
            "a scan of at most N steps, which has a derivative)"
        )

    to_sympy = undefined_to_sympy


def _while_loop_impl(
    cond_fn: Callable, body_fn: Callable, init, *, max_steps: int | None = None, name: str | None = None
):
    """Repeat carry = body_fn(carry) while cond_fn(carry) (a scalar bool node) holds; return the carry.

    With max_steps, at most that many steps run, and the result has a derivative (a reverse scan over the
    steps run); a condition still holding after max_steps steps raises ExecutionError when the program runs.
    Without it, the loop runs until cond_fn fails (or the run's time budget, max_seconds, is spent) and has no
    derivative.
    """
    inits, tup = _flat(init, "init")
    nodes = [n for n in inits if isinstance(n, Node)]
    if not nodes:
        raise GraphCompilerError("while_loop needs a graph node in init (to know its graph)")
    graph = nodes[0].graph
    inits = [n if isinstance(n, Node) else graph.constant(np.asarray(n)) for n in inits]

    def pack(cs):
        return tuple(cs) if tup else cs[0]

    if max_steps is not None:
        return _bounded_while(cond_fn, body_fn, inits, tup, pack, max_steps, name, graph)
    title = name or graph._auto_name("while_loop")
    names = _param_names(cond_fn, 1, ["carry"])
    cnames = [names[0]] if not tup else [f"{names[0]}{k}" for k in range(len(inits))]
    specs = [(nm, n.shape, n.dtype) for nm, n in zip(cnames, inits)]
    test = trace_body(graph, f"{title}.cond", specs, _while_test_caller(cond_fn, pack, title))
    stp = trace_body(
        graph, f"{title}.body", specs, _while_step_caller(body_fn, pack, title, len(inits)), out_like=inits
    )
    for k, (c_in, c_out) in enumerate(zip(stp.inputs, stp.outputs)):
        if c_out.dtype != c_in.dtype or c_out.shape != c_in.shape:
            raise ShapeError(
                f"while_loop {title!r}: body_fn's carry {k} out ({c_out.name!r}, {c_out.op.name}) has "
                f"shape {fmt_shape(c_out.shape)}, {c_out.dtype} but the carry in ({inits[k].name!r}) has "
                f"{fmt_shape(c_in.shape)}, {c_in.dtype}; the carry must keep its shape and dtype"
            )
    captured, picks = _union_captured((test, stp))
    body = WhileBody(title, test, stp, len(inits), captured, picks)
    ins = (*inits, *captured)
    group = apply(While(body), ins, graph._unique_name(title))
    outs = [result(group, k, graph._unique_name(f"{title}.{cnames[k]}")) for k in range(len(inits))]
    return pack(outs)


def _bounded_while(
    cond_fn: Callable,
    body_fn: Callable,
    inits: list[Node],
    tup: bool,
    pack: Callable,
    max_steps,
    name: str | None,
    graph: Graph,
):
    """A while_loop of at most max_steps steps, with a derivative: a scan whose last carry is the condition
    (cond_fn of init, then of each new carry). It steps while that holds, and raises when it still holds after
    max_steps steps; its gradient is a reverse scan over the steps it ran."""
    if not isinstance(max_steps, (int, np.integer)) or isinstance(max_steps, bool) or max_steps < 0:
        raise GraphCompilerError(f"while_loop: max_steps must be a non-negative int, not {max_steps!r}")
    title = name or graph._auto_name("while_loop")
    test = _while_test_caller(cond_fn, pack, title)
    step_of = _while_step_caller(body_fn, pack, title, len(inits))

    def step(c, _):
        new = step_of(list(c[:-1]))
        return (*new, test(new)[0]), None

    names = _param_names(cond_fn, 1, ["carry"])
    cnames = [names[0]] if not tup else [f"{names[0]}{k}" for k in range(len(inits))]
    carry, _ = _scan_impl(
        step,
        (*inits, test(inits)[0]),
        length=int(max_steps),
        name=title,
        _names=([*cnames, "running"], []),
        _until=True,
    )
    return pack(list(carry[:-1]))


def _while_test_caller(cond_fn: Callable, pack: Callable, title: str) -> Callable[[list[Node]], list[Node]]:
    """The function trace_body calls on the condition's stand-ins: [cond_fn(carry)], checked to be a scalar bool."""

    def test_call(s):
        p = cond_fn(pack(s))
        p = p.node() if isinstance(p, Deferred) else p  # `carry != 0`: its elementwise node
        if not isinstance(p, Node) or tuple(p.shape) != () or p.dtype != np.bool_:
            raise ShapeError(
                f"while_loop {title!r}: cond_fn must return a scalar bool node, got "
                f"{p!r}" + (f" of shape {fmt_shape(p.shape)}, {p.dtype}" if isinstance(p, Node) else "")
            )
        return [p]

    return test_call


def _while_step_caller(
    body_fn: Callable, pack: Callable, title: str, n_carry: int
) -> Callable[[list[Node]], list[Node]]:
    """The function trace_body calls on the body's stand-ins: body_fn(carry) flattened, one value per carry."""

    def step_call(s):
        outs, _ = _flat(body_fn(pack(s)), "carry")
        if len(outs) != n_carry:
            raise GraphCompilerError(
                f"while_loop {title!r}: body_fn returned {len(outs)} carries for an init of {n_carry}"
            )
        return outs

    return step_call


def _guarded(impl: Callable, graph_of: Callable) -> Callable:
    """A rejected control-flow op adds nothing to the graph (nodes hoisted before the failure are removed)."""

    def run(*args, **kw):
        graph = graph_of(*args)
        mark = len(graph) if graph is not None else None
        try:
            return impl(*args, **kw)
        except BaseException:
            if mark is not None and len(graph) > mark:
                graph._truncate(mark)
            raise

    return run


def _graph_of(*args):
    for a in args:
        for n in a if isinstance(a, (tuple, list)) else (a,):
            if isinstance(n, Node):
                return n.graph
    return None


def scan(fn: Callable, init, xs=None, *, length: int | None = None, reverse: bool = False, name: str | None = None):
    """Loop fn(carry, x_t) -> (carry, y_t) over axis 0 of xs; return (final carry, ys stacked on axis 0).

    `init` is a node or a tuple of nodes; `xs` a node, a tuple of nodes or None (then `length` steps). The
    body is traced once; outer nodes it reads are captured as inputs of the scan, and values that do not
    depend on the carry or the slice are hoisted out of the loop.
    """
    return _guarded(_scan_impl, lambda *a: _graph_of(a[1], a[2]))(
        fn, init, xs, length=length, reverse=reverse, name=name
    )


def cond(pred: Node, true_fn: Callable, false_fn: Callable, *operands, name: str | None = None):
    """true_fn(*operands) if the scalar bool node `pred` holds when the program runs, else false_fn(*operands).

    Both branches are traced once and must return values of the same shapes and dtypes; only the branch
    taken runs, and the gradient is the gradient of the branch taken.
    """
    pred = pred.node() if isinstance(pred, Deferred) else pred  # `x == 0`: its elementwise node
    return _guarded(_cond_impl, lambda *a: _graph_of(a[0], a[3:]))(pred, true_fn, false_fn, *operands, name=name)


def while_loop(cond_fn: Callable, body_fn: Callable, init, *, max_steps: int | None = None, name: str | None = None):
    """Repeat carry = body_fn(carry) while cond_fn(carry) (a scalar bool node) holds; return the final carry.

    With max_steps, at most that many steps run, and the result has a derivative (a reverse scan over the
    steps run); a condition still holding after max_steps steps raises ExecutionError when the program runs.
    Without it, the loop runs until cond_fn fails (or the run's time budget, max_seconds, is spent) and has no
    derivative.
    """
    return _guarded(_while_loop_impl, lambda *a: _graph_of(a[2]))(
        cond_fn, body_fn, init, max_steps=max_steps, name=name
    )


# -- pictures: each body drawn in a box next to its node (viz.to_dot) ------------------------------


def draw_bodies(dot, nodes: Sequence[Node], ids: dict, esc: Callable, depth: int = 0) -> None:
    """Add to the graphviz picture `dot` a box per control-flow node among `nodes` holding its body's nodes;
    a dashed edge runs from each body output to its node, and from a reverse scan's box to the forward scan."""
    for n in nodes:
        op = n.op
        if not isinstance(op, (Scan, Cond, While)) or n not in ids:  # the ops with has_body
            continue
        body = op.body
        parts, rev, title = _body_parts(n, body)
        for k, (label, traced) in enumerate(parts):
            prefix = f"{ids[n]}_b{depth}{k}_"
            sub_ids = {m: f"{prefix}{i}" for i, m in enumerate(traced.graph.nodes)}
            _draw_body_box(dot, prefix, traced, sub_ids, f"<<B>{esc(title)}</B>: {esc(label)}>", rev, esc, depth)
            for o in dict.fromkeys(traced.outputs):
                dot.edge(sub_ids[o], ids[n], style="dashed", color="#8a6d3b", arrowhead="empty", constraint="false")
        if isinstance(body, ScanBody) and body.forward is not None:
            fwd = next((m for m in ids if getattr(m.op, "body", None) is body.forward), None)
            if fwd is not None:
                dot.edge(
                    ids[n],
                    ids[fwd],
                    style="dotted",
                    color="#3b6d8a",
                    constraint="false",
                    tooltip=f"{n.name} runs the gradient of {fwd.name}'s body backwards",
                )


def _body_parts(n: Node, body: _Group) -> tuple[list[tuple[str, Traced]], bool, str]:
    """(the labelled traced bodies to draw, drawn as a gradient's, the boxes' title) of control-flow node n."""
    if isinstance(body, ScanBody):
        title = (
            f"reverse scan {n.name} (gradient of {body.forward.name})"
            if body.forward is not None
            else f"scan {n.name}{' (reverse)' if body.reverse else ''}"
        )
        return [("body", body.traced)], body.forward is not None, title
    if isinstance(body, CondBody):
        return [("true", body.branches[0]), ("false", body.branches[1])], n.is_gradient, f"cond {n.name}"
    assert isinstance(body, WhileBody)  # the third op with a body
    return [("cond", body.test), ("body", body.step)], n.is_gradient, f"while_loop {n.name}"


def _draw_body_box(
    dot, prefix: str, traced: Traced, sub_ids: dict, label: str, rev: bool, esc: Callable, depth: int
) -> None:
    """One body's nodes and edges in a box (a graphviz cluster) of `dot`; the bodies of its own control-flow
    nodes in boxes inside it, three levels deep at most."""
    with dot.subgraph(name=f"cluster_{prefix}") as box:
        box.attr(
            label=label,
            style="rounded,dashed" if not rev else "dashed",
            color="#8a6d3b" if not rev else "#3b6d8a",
            fontsize="10",
            labeljust="l",
        )
        for m in traced.graph.nodes:
            shape = "ellipse" if m.op.name == "input" else "box"
            text = f"{m.name}\n{m.op.name} {fmt_shape(m.shape)}"
            box.node(
                sub_ids[m],
                label=text,
                shape=shape,
                fontsize="9",
                style="filled" + (",rounded" if shape == "box" and not m.is_gradient else ""),
                fillcolor="#f3f0e8" if not m.is_gradient else "#e8eef3",
            )
        for m in traced.graph.nodes:
            for x in m.inputs:
                box.edge(sub_ids[x], sub_ids[m])
        inner = [m for m in traced.graph.nodes if getattr(m.op, "has_body", False)]
        if inner and depth < 3:
            draw_bodies(box, inner, sub_ids, esc, depth + 1)


# -- symbolic export: a scan as its recurrence ------------------------------------------------------


def recurrence(node: Node) -> list:
    """The recurrence a scan runs, as SymPy equations: for a carry h and a slice x, `h_t = f(h_{t-1}, x_t)`
    and `y_t = ...` (for a reverse scan, from h_{t+1}); the reverse scan of a gradient gives the backward
    recurrence of backpropagation through time. `node` is a scan node or one of its results."""
    import sympy as sp

    to_sympy = service("to_sympy")
    group = node.inputs[0] if node.op.name == "result" else node
    if not isinstance(group.op, Scan):  # the one op whose body is a ScanBody
        raise GraphCompilerError(
            f"recurrence takes a scan node or one of its results, not {node.name!r} ({node.op.name})"
        )
    body = group.op.body
    tr, nc = body.traced, body.n_carry
    prev = "t+1" if body.reverse else "t-1"

    def named(name: str) -> str:
        return name if name.endswith(("_t", "}")) else f"{name}_{{{prev}}}"

    rename = {c.name: named(c.name) for c in tr.inputs[:nc]}
    rename.update({x.name: x.name if x.name.endswith(("_t", "}")) else f"{x.name}_t" for x in tr.inputs[nc:]})

    def fix(e):
        subs = {}
        for a in e.atoms(sp.MatrixSymbol):
            if a.name in rename:
                subs[a] = sp.MatrixSymbol(rename[a.name], *a.shape)
        for a in e.atoms(sp.Symbol):
            if a.name in rename:
                subs[a] = sp.Symbol(rename[a.name])
        return e.xreplace(subs)

    def lhs_like(e, name):
        return sp.MatrixSymbol(name, *e.shape) if getattr(e, "is_Matrix", False) else sp.Symbol(name)

    eqs = []
    for k, out in enumerate(tr.outputs):
        rhs = fix(to_sympy(out))
        if k < nc:
            base = body.carry_names[k]
            base = base[: -len("_{t+1}")] if base.endswith(("_{t+1}", "_{t-1}")) else base
            lhs = lhs_like(rhs, f"{base}_t")
        else:
            names = getattr(body, "y_names", None)
            lhs = lhs_like(rhs, f"{names[k - nc]}_t" if names else f"y{k - nc if body.n_y > 1 else ''}_t")
        eqs.append(sp.Eq(lhs, rhs, evaluate=False))
    return eqs


# -- pictures: a graph with its scans unrolled (viz.to_dot(..., unroll=True)) ------------------------


def unroll(graph: Graph, max_steps: int = 16) -> Graph:
    """A copy of `graph` in which every scan of at most max_steps (static) steps is written out step by step
    (its body inlined once per step, the ys stacked): the unrolled picture of a loop. Nothing is computed."""
    from . import indexing as I
    from . import shape as S

    out = Graph(fit_name(f"{graph.name} (unrolled)"))
    m: dict[Node, Node] = {}
    unrolled: dict[Node, list[Node]] = {}

    def scope(n: Node):
        origin = None if n.origin is None or m.get(n.origin[0]) is None else (m[n.origin[0]], n.origin[1])
        return out._gradient_scope(origin) if n.is_gradient else contextlib.nullcontext()

    for n in graph.nodes:
        with scope(n):
            if n.op.name == "input":
                m[n] = out.input(n.name, n.shape, n.dtype)
            elif n.op.name == "parameter":
                v = graph._values.get(n)
                m[n] = (
                    out.parameter(n.name, v) if v is not None else out.parameter(n.name, shape=n.shape, dtype=n.dtype)
                )
            elif n.op.name == "constant":
                m[n] = out.constant(graph._values[n], name=n.name)
            elif isinstance(n.op, Result) and n.inputs[0] in unrolled:
                from . import elementwise as E

                m[n] = E.identity(unrolled[n.inputs[0]][n.op.index], name=n.name)  # the loop's result, named
            elif (
                isinstance(n.op, Scan)
                and _static_steps(n) is not None
                and _static_steps(n) <= max_steps
                and _static_steps(n) > 0
            ):
                unrolled[n] = _unroll_scan(n, [m[x] for x in n.inputs], I, S)
            else:
                m[n] = out._add(n.op, tuple(m[x] for x in n.inputs), n.dtype, n.shape, n.name)
    return out


def _scan_body(n: Node) -> ScanBody:
    assert isinstance(n.op, Scan)  # the caller unrolls scan nodes only
    return n.op.body


def _static_steps(n: Node):
    b = _scan_body(n)
    if b.until or b.n_x and _is_tape(n.inputs[b.n_carry]):  # a while_loop's steps are known when it runs
        return None
    return n.inputs[b.n_carry].shape[0] if b.n_x else b.length


def _unroll_scan(n: Node, ins: list[Node], I, S) -> list[Node]:
    b = _scan_body(n)
    nc, nx, ny = b.n_carry, b.n_x, b.n_y
    steps = _static_steps(n)
    carries, xs, ws = ins[:nc], ins[nc : nc + nx], ins[nc + nx :]
    tr = b.traced
    ys: list[list] = [[None] * steps for _ in range(ny)]
    cin: list[list] = [[None] * steps for _ in range(nc)]
    res: list[list] = [[None] * steps for _ in b.residuals]
    g = ins[0].graph

    def fresh(label: str) -> str:  # names no node of the copied graph can take
        return g._unique_name(f"{n.name}{label}")

    for t in range(steps - 1, -1, -1) if b.reverse else range(steps):
        values = carries + [S.getitem(x, t, name=fresh(f"[{t}]/{x.name}[{t}]")) for x in xs] + ws
        mm: dict[Node, Node] = dict(zip(tr.inputs + tr.captured_inputs, values))
        for node in tr.graph.nodes:
            if node not in mm:
                mm[node] = (
                    g.constant(tr.graph._values[node], name=fresh(f"[{t}]/{node.name}"))
                    if node.op.name == "constant"
                    else apply(node.op, tuple(mm[i] for i in node.inputs), fresh(f"[{t}]/{node.name}"))
                )
        for j in range(nc):
            cin[j][t] = carries[j]
        for j, r in enumerate(b.residuals):
            res[j][t] = mm[r]
        carries = [mm[o] for o in tr.outputs[:nc]]
        for j in range(ny):
            ys[j][t] = mm[tr.outputs[nc + j]]
    return (
        carries
        + [I.stack(y, name=fresh(f".ys{j}")) for j, y in enumerate(ys)]
        + [I.stack(c, name=fresh(f".carries{j}")) for j, c in enumerate(cin)]
        + [I.stack(r, name=fresh(f".res{j}")) for j, r in enumerate(res)]
    )
