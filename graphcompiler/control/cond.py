"""gc.cond: one of two branches, each traced once into a body of its own (control/body.py), chosen at run time.

Both branches take the same operands and return values of the same shapes and dtypes; the outer nodes either
reads are captured once, as inputs of the cond node. Only the branch taken runs, and the derivative is a cond
of the two branches' own gradients (build_grad on each branch), so it is the gradient of the branch taken.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from ..autodiff import build_grad
from ..errors import GraphCompilerError, ShapeError, fmt_shape
from ..graph import Graph, Node, fit_name
from ..ops import elementwise as E
from ..ops import reduce as R
from ..ops.base import Deferred, apply
from .body import (
    OBJECT,
    BodyGroup,
    BodyOp,
    Result,
    Traced,
    alias,
    body_shapes,
    compatible,
    flat,
    graph_of,
    guarded,
    inline,
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

__all__ = ["Cond", "CondBody", "cond"]


class CondBody(BodyGroup):
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
        name = record_field(rec, "name", str, what)
        n_ops, n_cap = record_field(rec, "n_ops", int, what), record_field(rec, "n_captured", int, what)
        if set(rec) != {"name", "true", "false", "n_ops", "n_captured", "picks"}:
            raise GraphCompilerError(f"unknown or missing fields in the cond body record: {sorted(rec)}")
        t, f = traced_from(traced_of(rec["true"], "true")), traced_from(traced_of(rec["false"], "false"))
        picks = picks_from(rec, n_cap, (t, f), what)
        if (
            len(t.inputs) != n_ops
            or len(f.inputs) != n_ops
            or len(t.outputs) != len(f.outputs)
            or not all(same_values(a, b) for a, b in zip(t.inputs + t.outputs, f.inputs + f.outputs))
        ):
            raise ShapeError("the two branches of the cond do not take and return values of the same shapes")
        return cls(name, (t, f), n_ops, no_outer_nodes(n_cap), picks)

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
class Cond(BodyOp):
    """One result of a cond: branch `true` if the scalar bool pred holds, else branch `false`."""

    name: ClassVar[str] = "cond"
    body: CondBody
    body_type: ClassVar[type[CondBody]] = CondBody

    def attrs(self) -> dict[str, Any]:
        t, f = self.body.branches
        return {"branches": f"{len(t.graph)} and {len(f.graph)} nodes"}

    def n_results(self) -> int:
        return len(self.body.branches[0].outputs)

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

    def vjp(self, node, x, y, g):
        return cond_vjp(self.body, x, y, g)


# -- the public cond ----------------------------------------------------------------------------------


def cond(pred: Node, true_fn: Callable, false_fn: Callable, *operands, name: str | None = None):
    """true_fn(*operands) if the scalar bool node `pred` holds when the program runs, else false_fn(*operands).

    Both branches are traced once and must return values of the same shapes and dtypes; only the branch
    taken runs, and the gradient is the gradient of the branch taken.
    """
    pred = pred.node() if isinstance(pred, Deferred) else pred  # `x == 0`: its elementwise node
    return guarded(_cond_impl, lambda *a: graph_of(a[0], a[3:]))(pred, true_fn, false_fn, *operands, name=name)


def _cond_impl(pred: Node, true_fn: Callable, false_fn: Callable, *operands, name: str | None = None):
    """true_fn(*operands) if the scalar bool node `pred` holds when the program runs, else false_fn(*operands).

    Both branches are traced once and must return values of the same shapes and dtypes; only the branch
    taken runs, and the gradient is the gradient of the branch taken.
    """
    graph, ops = _cond_operands(pred, operands)
    title = name or graph.auto_name("cond")
    names = param_names(true_fn, len(ops), [f"a{k}" for k in range(len(ops))])
    specs = [(nm, o.shape, o.dtype) for nm, o in zip(names, ops)]
    structure: dict = {}
    t = trace_body(graph, f"{title}.true", specs, _branch_caller(true_fn, "true", structure))
    f = trace_body(
        graph, f"{title}.false", specs, _branch_caller(false_fn, "false", structure), out_like=list(t.outputs)
    )
    _check_branches_agree(title, t, f, structure)
    captured, picks = union_captured((t, f))
    body = CondBody(title, (t, f), len(ops), captured, picks)
    ins = (pred, *ops, *captured)
    group = apply(Cond(body), ins, graph.unique_name(title))
    outs = [result(group, k, graph.unique_name(f"{title}.out{k}")) for k in range(len(t.outputs))]
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
        outs, tup = flat(res, "result")
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
            compatible(a.shape, b.shape) and [d is None for d in a.shape] == [d is None for d in b.shape]
        ):
            raise ShapeError(
                f"cond {title!r}: result {k} of the true branch ({a.name!r}, {a.op.name}) has shape "
                f"{fmt_shape(a.shape)}, {a.dtype} but the false branch's ({b.name!r}, {b.op.name}) "
                f"has {fmt_shape(b.shape)}, {b.dtype}; both branches must agree"
            )


def cond_vjp(body: CondBody, x: tuple[Node, ...], y: Node, g: Node) -> list:
    """The cotangents of the inputs of cond node y: a cond of the two branches' own gradients (cached)."""
    key = (y, g)
    got = body.grad_cache.get(key)
    if got is not None:
        return got
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
