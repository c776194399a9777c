"""What the control-flow constructs share: tracing a body, the group of nodes one construct makes, its results.

A body is a Python function called once on stand-in nodes of the enclosing graph. The nodes it makes are
copied into a graph of its own (the body); nodes of the enclosing graph it reads (weights) are captured, so
they become explicit inputs of the loop node and the outer graph's edges stay honest, and values that do not
depend on the stand-ins are hoisted out of the loop into the enclosing graph. `alias` stands in for an outer
node inside a trace (build_grad sees it as a leaf), and `inline` applies a traced body's ops again elsewhere.

A node has one value, so a construct with several results (carries, stacked outputs) is one node whose value
is the list of its results (`Results`), and one `result` node per result picks one out. The node's op is a
`BodyOp`: its `body` (a `BodyGroup`) holds the traced sub-graphs, compiles each once (compiler.compile) and
runs them per step; a result's derivative is the construct's `vjp`, built from the bodies' own build_grad.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, cast

import numpy as np

from ..compiler import compile
from ..errors import GraphCompilerError
from ..graph import MAX_STEPS, ZERO, Graph, Node, Undefined, fit_name, name_problem
from ..ops.base import Deferred, Op, apply, undefined_to_sympy

__all__ = [
    "OBJECT",
    "BodyGroup",
    "BodyOp",
    "Result",
    "Results",
    "Traced",
    "alias",
    "body_shapes",
    "inline",
    "result",
    "trace_body",
]

# The most steps of a scan without xs (gc.scan(length=N), and a scan body read from a graph file): its stacked
# results are allocated up front. A bounded while_loop's max_steps may reach MAX_WHILE_STEPS. Both are the
# graph file's limits (graph.py).
MAX_SCAN_LENGTH = MAX_STEPS

OBJECT = np.dtype(object)  # the dtype of a control-flow node's value (its Results) and of a tape


def is_tape(x) -> bool:
    """A stacked result of a bounded while_loop (or of a scan over its tapes): an object value (its number of
    steps is known only when it runs) whose rows a reverse scan reads as its slices."""
    return x.dtype == OBJECT


# -- tracing a body ---------------------------------------------------------------------------------


_FRAMES: list[dict] = []  # open traces (innermost last): alias stand-ins -> the outer node they stand for


@dataclasses.dataclass
class Traced:
    """A traced body: its own graph, its inputs (stand-ins, then captured values) and its outputs."""

    graph: Graph
    inputs: list[Node]  # body input nodes for the stand-ins, in order
    captured_inputs: list[Node]  # body input nodes for the captured outer nodes
    captured: list[Node]  # the outer nodes they read (inputs of the loop node)
    outputs: list[Node]  # body nodes of the results


def trace_body(
    graph: Graph,
    title: str,
    specs: Sequence[tuple[str, tuple, np.dtype]],
    call: Callable[[list[Node]], list[Any]],
    out_like: Sequence[Node | None] | None = None,
) -> Traced:
    """Call `call` on stand-in nodes made from specs (name, shape, dtype); return the body it built."""
    mark = len(graph)
    frame: dict[Node, Node] = {}
    standins, outs = _call_on_standins(graph, title, specs, call, out_like, frame, mark)
    made = graph.nodes_since(mark)
    variant = _depending_on(standins, made)
    # the body: the variant ancestors of the outputs; everything else they read is captured
    traced = _copy_body(
        graph,
        title,
        names=[nm for nm, _, _ in specs],
        standins=standins,
        outs=outs,
        made=made,
        need=_variant_ancestors(outs, variant),
        const_only=_folded_constants(made, variant, frame),
        frame=frame,
        mark=mark,
    )
    traced.captured = _hoist_invariants(graph, mark, made, frame, traced.captured)
    return traced


def _call_on_standins(
    graph: Graph,
    title: str,
    specs: Sequence[tuple[str, tuple, np.dtype]],
    call: Callable[[list[Node]], list[Any]],
    out_like: Sequence[Node | None] | None,
    frame: dict[Node, Node],
    mark: int,
) -> tuple[list[Node], list[Node]]:
    """Run the user's body on new stand-in inputs of `graph` inside the trace `frame`: the stand-ins and the
    body's results as nodes of `graph` (numbers become constants). On failure the nodes it made are removed."""
    _FRAMES.append(frame)
    try:
        standins = [graph.input(graph.unique_name(f"{title}.{nm}"), shape, dt) for nm, shape, dt in specs]
        outs = call(standins)
        outs = [o.node() if isinstance(o, Deferred) else o for o in outs]  # `x == y` returned
        outs = [
            o if isinstance(o, Node) else _as_node(graph, o, out_like[k] if out_like else None, title)
            for k, o in enumerate(outs)
        ]
        for o in outs:
            if o.graph is not graph:
                raise GraphCompilerError(
                    f"{title}: the body returned node {o.name!r} of graph "
                    f"{o.graph.name!r}; it must return nodes of graph {graph.name!r}"
                )
    except BaseException:
        _FRAMES.pop()
        graph.rollback(mark)
        raise
    _FRAMES.pop()
    return standins, outs


def _depending_on(standins: list[Node], made: list[Node]) -> set[Node]:
    """The stand-ins and the nodes made while tracing that depend on one (they vary from step to step)."""
    variant = set(standins)
    for n in made:
        if n not in variant and any(x in variant for x in n.inputs):
            variant.add(n)
    return variant


def _walk_back(start: Iterable[Node], inputs_of: Callable[[Node], Iterable[Node]]) -> set[Node]:
    """The nodes reached from `start` by following `inputs_of` (start included)."""
    seen: set[Node] = set()
    stack = list(start)
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(inputs_of(n))
    return seen


def _variant_ancestors(outs: list[Node], variant: set[Node]) -> set[Node]:
    """The variant nodes the outputs are computed from: the nodes the body graph computes."""
    return _walk_back((o for o in outs if o in variant), lambda n: (x for x in n.inputs if x in variant))


def _folded_constants(made: list[Node], variant: set[Node], frame: dict[Node, Node]) -> set[Node]:
    """The nodes made while tracing from constants alone: copied into the body (folded there), not captured."""
    const_only: set[Node] = set()
    for n in made:
        if (
            n.inputs
            and n not in variant
            and n not in frame
            and all(x in const_only or x.op.name == "constant" for x in n.inputs)
        ):
            const_only.add(n)
    return const_only


def _copy_body(
    graph: Graph,
    title: str,
    names: list[str],
    standins: list[Node],
    outs: list[Node],
    made: list[Node],
    need: set[Node],
    const_only: set[Node],
    frame: dict[Node, Node],
    mark: int,
) -> Traced:
    """Copy the nodes `need` into a graph of their own (inputs for the stand-ins, named `names`); every other
    node they read is a constant of the body, a folded constant, or captured: an input of the body read from
    `graph` (through `frame`, an alias reads the outer node it stands for)."""
    body = Graph(fit_name(f"{title}/body"))
    m: dict[Node, Node] = {}
    inputs = []
    for s, nm in zip(standins, names):
        m[s] = body.input(body.unique_name(nm), s.shape, s.dtype)
        inputs.append(m[s])
    captured: list[Node] = []  # nodes of `made` or of the outer graph (hoisted by the caller)
    captured_inputs: list[Node] = []
    by_target: dict[Node, Node] = {}

    def read(x: Node) -> Node:
        if x in m:
            return m[x]
        target = frame.get(x, x)
        if target in by_target:
            m[x] = by_target[target]
        elif target in const_only:
            m[x] = by_target[target] = body.add_node(
                target.op,
                tuple(read(i) for i in target.inputs),
                target.dtype,
                target.shape,
                body.unique_name(target.name),
            )
        elif target.op.name == "constant" and target.index < mark:
            m[x] = by_target[target] = body.constant(graph.stored_value(target), name=body.unique_name(target.name))
        elif target.op.name == "constant":  # made while tracing (a Python number): kept in the body
            m[x] = by_target[target] = body.constant(graph.stored_value(target))
        else:
            m[x] = by_target[target] = body.input(body.unique_name(target.name), target.shape, target.dtype)
            captured.append(target)
            captured_inputs.append(m[x])
        return m[x]

    for n in made:
        if n in need and n not in m:
            ins = tuple(read(x) for x in n.inputs)
            with body.marking_gradient(None) if n.is_gradient else contextlib.nullcontext():
                m[n] = body.add_node(n.op, ins, n.dtype, n.shape, body.unique_name(n.name))
    body_outs = [read(o) for o in outs]
    return Traced(body, inputs, captured_inputs, captured, body_outs)


def _hoist_invariants(
    graph: Graph, mark: int, made: list[Node], frame: dict[Node, Node], captured: list[Node]
) -> list[Node]:
    """Hoist the loop-invariant values (made while tracing, not depending on a stand-in) out of the loop: the
    traced nodes are removed from `graph` and those the body captured are made again there, in order.
    Returns `captured` with each of them replaced by its new node."""
    made_set = set(made)
    hoist = _walk_back(
        (c for c in captured if c in made_set),
        lambda n: (t for t in (frame.get(x, x) for x in n.inputs) if t in made_set),
    )
    keep = [(n, n.op, n.inputs, n.dtype, n.shape, n.name, graph.stored_value(n)) for n in made if n in hoist]
    graph.rollback(mark)
    remade: dict[Node, Node] = {}
    for n, op, ins, dt, shape, name, value in keep:
        if op.name == "constant":
            remade[n] = graph.constant(value)
        else:
            new_ins = tuple(remade.get(t, t) for t in (frame.get(x, x) for x in ins))
            remade[n] = graph.add_node(op, new_ins, dt, shape, graph.unique_name(name))
    return [remade.get(c, c) for c in captured]


def _as_node(graph: Graph, value: Any, like: Node | None, title: str) -> Node:
    try:
        arr = np.asarray(value, dtype=like.dtype if like is not None else None)
    except (TypeError, ValueError):
        raise GraphCompilerError(
            f"{title}: the body returned {type(value).__name__} {value!r}; return graph nodes (or numbers)"
        ) from None
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise GraphCompilerError(
            f"{title}: the body returned {type(value).__name__} {value!r}; return graph nodes (or numbers)"
        )
    return graph.constant(arr)


def alias(node: Node) -> Node:
    """A stand-in for an outer node inside the current trace: build_grad sees it as a leaf of its own."""
    frame = _FRAMES[-1]
    g = node.graph
    s = g.input(g.unique_name(f"{node.name}.alias"), node.shape, node.dtype)
    frame[s] = node
    return s


def inline(traced: Traced, values: Sequence[Node]) -> list[Node]:
    """Re-apply the body's ops in the current graph on `values` (for its inputs, then its captured inputs)."""
    body = traced.graph
    m: dict[Node, Node] = dict(zip(traced.inputs + traced.captured_inputs, values))
    g = values[0].graph if values else None
    for n in body.nodes:
        if n in m:
            continue
        if n.op.name == "constant":
            if g is None:
                raise GraphCompilerError(
                    f"internal error: body constant {n.name!r} inlined with no values to give the graph to put it in"
                )
            m[n] = g.constant(body.stored_value(n))
        elif n.op.name in ("input", "parameter"):
            raise GraphCompilerError(f"internal error: body input {n.name!r} has no value to inline")
        else:
            m[n] = apply(n.op, tuple(m[x] for x in n.inputs))
    return [m[o] for o in traced.outputs]


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


def body_flops(traced: Traced) -> int:
    total = 0
    for m in traced.graph.nodes:
        if m.inputs:
            try:
                total += int(m.op.flops(m))
            except Exception:  # a None dim in the body: count its elements as one
                total += 1
    return max(total, 1)


def first_step(prog, feeds: dict) -> tuple[list, Callable]:
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


def compatible(a: tuple, b: tuple) -> bool:
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


# -- the group of nodes one construct makes: its bodies, compiled once, and its file record ----------


def record_field(rec: dict, key: str, kind, what: str, limit: int = MAX_SCAN_LENGTH):
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


def traced_from(lists, n_captured: int | None = None) -> Traced:
    inputs, captured_inputs, outputs = lists
    return Traced(
        inputs[0].graph if inputs else (outputs[0].graph if outputs else Graph()),
        inputs,
        captured_inputs,
        no_outer_nodes(len(captured_inputs)),
        outputs,
    )


def no_outer_nodes(n: int) -> list[Node]:
    """The `captured` list of a body read from a file: it has no outer nodes (the values it captured are
    the inputs of the node read with it), so n placeholders that are only counted, never read."""
    return cast(list[Node], [None] * n)


def same_values(a: Node, b: Node) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape


def picks_from(rec: dict, n_captured: int, traced: tuple, what: str) -> tuple[list[int], list[int]]:
    picks = record_field(rec, "picks", list, what)
    if len(picks) != 2 or not all(isinstance(p, list) for p in picks):
        raise GraphCompilerError(f"the {what} record's picks must be two lists")
    for p, t in zip(picks, traced):
        if len(p) != len(t.captured_inputs) or not all(
            isinstance(k, int) and not isinstance(k, bool) and 0 <= k < n_captured for k in p
        ):
            raise GraphCompilerError(f"the {what} record's picks {p!r:.60} do not fit {n_captured} captured values")
    return picks[0], picks[1]


class BodyGroup:
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
            prog = self._programs[key] = compile(list(traced.outputs) + list(extra))
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


# -- the op of a control-flow node, and its results ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BodyOp(Op):
    """The op of a control-flow node (scan, cond, while_loop): `body` holds its traced sub-graphs, and its value
    is the list of its results (Results), which `result` nodes pick out. io.py writes `body.record(...)` and
    reads `body_type.from_record(...)`; viz.py draws the bodies; autodiff reaches `vjp` through Result."""

    body: Any
    has_body: ClassVar[bool] = True
    body_type: ClassVar[type[BodyGroup]] = BodyGroup

    def __post_init__(self):
        if not isinstance(self.body, self.body_type):
            raise GraphCompilerError(
                f"a {self.name} op needs a traced body (gc.{self.name} makes one); "
                "control-flow nodes cannot be read from graph files yet"
            )

    def n_results(self) -> int:
        raise NotImplementedError

    def result_shape(self, index: int, xs) -> tuple[tuple, np.dtype]:
        """(shape, dtype) of result `index` when the node's inputs are xs (nodes, or shims with other shapes)."""
        raise NotImplementedError

    def row_dtype(self, index: int) -> np.dtype | None:
        """For a result that is a tape (an object value of per-step rows): the dtype of its rows, else None."""
        return None

    def vjp(self, node: Node, x: tuple[Node, ...], y: Node, g: Node) -> list:
        """The cotangents of every input of the node, given g = dz/dy for its result y."""
        raise NotImplementedError

    def infer(self, *xs):
        self.result_shape(0, xs)
        return (), OBJECT

    def kernel(self, *xs):
        return Results(self.body._compute(xs))

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
        if self.integer != no_gradient(group.op, self.index, dtype):
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
        if not (is_tape(y) or is_tape(x[i])):
            return super().grad(i, x, y, g)
        # a tape (dtype object) carries the gradient of its rows
        if self.integer or x[i].dtype.kind == "b":
            return ZERO
        if not is_tape(x[i]) and x[i].dtype.kind != "f":
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
    if not isinstance(op, BodyOp):
        raise GraphCompilerError(f"result takes a scan, cond or while_loop node, not {group.name!r} ({op.name})")
    _, dtype = op.result_shape(index, group.inputs)
    return apply(Result(index, no_gradient(op, index, dtype)), (group, *group.inputs), name)


def no_gradient(op: Op, index: int, dtype) -> bool:
    """Whether result `index` of a control-flow op carries no gradient: not float (for a tape: its rows)."""
    if np.dtype(dtype) == OBJECT and isinstance(op, BodyOp):
        dtype = op.row_dtype(index) or dtype
    return np.dtype(dtype).kind != "f"


# -- what the public functions share --------------------------------------------------------------


def param_names(fn: Callable, count: int, default: list[str]) -> list[str]:
    try:
        params = [
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        params = []
    return params[:count] + default[len(params[:count]) :]


def flat(v, what: str) -> tuple[list, bool]:
    """(nodes, is_tuple) of a node or a tuple/list of nodes."""
    if isinstance(v, (tuple, list)):
        return list(v), True
    return [v], False


def union_captured(parts: tuple[Traced, Traced]) -> tuple[list[Node], tuple[list[int], list[int]]]:
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


def guarded(impl: Callable, graph_in: Callable) -> Callable:
    """impl, made so that a rejected control-flow op adds nothing to the graph (nodes hoisted before the failure
    are removed); graph_in(*args) finds the graph in impl's arguments."""

    def run(*args, **kw):
        graph = graph_in(*args)
        mark = len(graph) if graph is not None else None
        try:
            return impl(*args, **kw)
        except BaseException:
            if mark is not None and len(graph) > mark:
                graph.rollback(mark)
            raise

    return run


def graph_of(*args) -> Graph | None:
    """The graph of the first node among args (each a node, a number, or a tuple or list of them)."""
    for a in args:
        for n in a if isinstance(a, (tuple, list)) else (a,):
            if isinstance(n, Node):
                return n.graph
    return None
