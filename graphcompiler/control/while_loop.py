"""gc.while_loop: repeat carry = body_fn(carry) while cond_fn(carry) holds, both traced once (control/body.py).

Without a bound the loop runs until its condition fails (or the run's time budget is spent) and has no
derivative. With max_steps=N it is a scan of at most N steps whose last carry is the condition (scan.py,
"until"): it has a derivative, a reverse scan over the steps it ran.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from .. import budget
from ..errors import GraphCompilerError, ShapeError, UndefinedGradientError, fmt_shape
from ..graph import MAX_WHILE_STEPS, Graph, Node
from ..ops.base import Deferred, apply
from .body import (
    BodyGroup,
    BodyOp,
    Traced,
    compatible,
    first_step,
    flat,
    graph_of,
    guarded,
    no_outer_nodes,
    param_names,
    picks_from,
    record_field,
    result,
    same_values,
    trace_body,
    traced_from,
    union_captured,
)
from .scan import scan_impl

__all__ = ["MAX_WHILE_STEPS", "While", "WhileBody", "while_loop"]


class WhileBody(BodyGroup):
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
        name = record_field(rec, "name", str, what)
        nc, n_cap = record_field(rec, "n_carry", int, what), record_field(rec, "n_captured", int, what)
        if set(rec) != {"name", "test", "step", "n_carry", "n_captured", "picks"}:
            raise GraphCompilerError(f"unknown or missing fields in the while_loop body record: {sorted(rec)}")
        test, step = traced_from(traced_of(rec["test"], "test")), traced_from(traced_of(rec["step"], "step"))
        picks = picks_from(rec, n_cap, (test, step), what)
        if (
            len(test.inputs) != nc
            or len(step.inputs) != nc
            or len(step.outputs) != nc
            or not all(same_values(a, b) for a, b in zip(step.inputs, step.outputs))
            or not all(same_values(a, b) for a, b in zip(test.inputs, step.inputs))
            or len(test.outputs) != 1
            or test.outputs[0].shape != ()
            or test.outputs[0].dtype != np.bool_
        ):
            raise ShapeError("the while_loop's condition and body do not fit its carry")
        return cls(name, test, step, nc, no_outer_nodes(n_cap), picks)

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
                    out, t_run = first_step(tp, t_feeds)
                else:
                    out = t_run(t_feeds)
                if not bool(np.asarray(out[0])):
                    return [np.array(c, copy=True) for c in carries] if s_run is None else carries
                s_feeds.update(zip(self.step.inputs, carries))
                if s_run is None:
                    out, s_run = first_step(sp, s_feeds)
                else:
                    out = s_run(s_feeds)
                carries = [np.asarray(c) for c in out]


@dataclasses.dataclass(frozen=True)
class While(BodyOp):
    """One final carry of an unbounded while_loop (no derivative: pass max_steps for one)."""

    name: ClassVar[str] = "while_loop"
    body: WhileBody
    body_type: ClassVar[type[WhileBody]] = WhileBody

    def attrs(self) -> dict[str, Any]:
        return {"body": f"{len(self.body.step.graph)} nodes"}

    def n_results(self) -> int:
        return self.body.n_carry

    def result_shape(self, index: int, xs):
        b = self.body
        for k, (x, n) in enumerate(zip(xs[: b.n_carry], b.step.inputs)):
            if not compatible(x.shape, n.shape) or x.dtype != n.dtype:
                raise ShapeError(
                    f"while_loop {b.name!r}: carry {k} ({x.name!r}) has shape {fmt_shape(x.shape)}, "
                    f"{x.dtype}; the body was traced for {fmt_shape(n.shape)}, {n.dtype}"
                )
        return xs[index].shape, xs[index].dtype

    def vjp(self, node, x, y, g):
        raise UndefinedGradientError(
            f"the derivative of while_loop {self.body.name!r} (node {y.name!r}, shape {fmt_shape(y.shape)}) is "
            "undefined: its number of steps is not bounded. Pass max_steps=N to gc.while_loop (it then runs as "
            "a scan of at most N steps, which has a derivative)"
        )


# -- the public while_loop ----------------------------------------------------------------------------


def while_loop(cond_fn: Callable, body_fn: Callable, init, *, max_steps: int | None = None, name: str | None = None):
    """Repeat carry = body_fn(carry) while cond_fn(carry) (a scalar bool node) holds; return the final carry.

    With max_steps, at most that many steps run, and the result has a derivative (a reverse scan over the
    steps run); a condition still holding after max_steps steps raises ExecutionError when the program runs.
    Without it, the loop runs until cond_fn fails (or the run's time budget, max_seconds, is spent) and has no
    derivative.
    """
    return guarded(_while_loop_impl, lambda *a: graph_of(a[2]))(cond_fn, body_fn, init, max_steps=max_steps, name=name)


def _while_loop_impl(
    cond_fn: Callable, body_fn: Callable, init, *, max_steps: int | None = None, name: str | None = None
):
    """Repeat carry = body_fn(carry) while cond_fn(carry) (a scalar bool node) holds; return the carry.

    With max_steps, at most that many steps run, and the result has a derivative (a reverse scan over the
    steps run); a condition still holding after max_steps steps raises ExecutionError when the program runs.
    Without it, the loop runs until cond_fn fails (or the run's time budget, max_seconds, is spent) and has no
    derivative.
    """
    inits, tup = flat(init, "init")
    nodes = [n for n in inits if isinstance(n, Node)]
    if not nodes:
        raise GraphCompilerError("while_loop needs a graph node in init (to know its graph)")
    graph = nodes[0].graph
    inits = [n if isinstance(n, Node) else graph.constant(np.asarray(n)) for n in inits]

    def pack(cs):
        return tuple(cs) if tup else cs[0]

    if max_steps is not None:
        return _bounded_while(cond_fn, body_fn, inits, tup, pack, max_steps, name, graph)
    title = name or graph.auto_name("while_loop")
    names = param_names(cond_fn, 1, ["carry"])
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
    captured, picks = union_captured((test, stp))
    body = WhileBody(title, test, stp, len(inits), captured, picks)
    ins = (*inits, *captured)
    group = apply(While(body), ins, graph.unique_name(title))
    outs = [result(group, k, graph.unique_name(f"{title}.{cnames[k]}")) for k in range(len(inits))]
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
    title = name or graph.auto_name("while_loop")
    test = _while_test_caller(cond_fn, pack, title)
    step_of = _while_step_caller(body_fn, pack, title, len(inits))

    def step(c, _):
        new = step_of(list(c[:-1]))
        return (*new, test(new)[0]), None

    names = param_names(cond_fn, 1, ["carry"])
    cnames = [names[0]] if not tup else [f"{names[0]}{k}" for k in range(len(inits))]
    carry, _ = scan_impl(
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
        outs, _ = flat(body_fn(pack(s)), "carry")
        if len(outs) != n_carry:
            raise GraphCompilerError(
                f"while_loop {title!r}: body_fn returned {len(outs)} carries for an init of {n_carry}"
            )
        return outs

    return step_call
