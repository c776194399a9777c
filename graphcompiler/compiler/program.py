"""Program: the compiled outputs of a graph, specialised per signature of feed shapes (API section 3).

compile() prunes and simplifies once. A run with feed shapes not seen before specialises the program: the
shape rules of every op run again on the concrete shapes (so feeds whose sizes conflict are reported before
any kernel runs), the shape-dependent rules fire (counts become constants, identity broadcasts go), the steps
are scheduled, buffers planned, and the evaluator loaded. A second run with the same shapes does no planning.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import FeedError, GraphCompilerError, NumericsError, ShapeError, fmt_shape
from ..graph import Graph, Node, paused_gc
from ..ops.elementwise import Binary, Where
from ..runtime import Const, NumpyEvaluator, OutSlot, Prepared, fast_kernel
from .ir import Context, is_leaf, topo_order, value_inputs
from .memory import ALIGN, BufferPlan, plan_buffers
from .schedule import declared_order, memory_order
from .recompute import choose, flops
from .report import MemoryReport, build_report
from .simplify import simplify

PASSES = ("simplify", "schedule", "buffers")


@dataclass(frozen=True)
class Step:
    """One step of a schedule: the node it computes, its op's name, its buffer, whether it is a recomputation."""

    node: Node
    op: str
    buffer: int | None = None
    recomputed: bool = False
    value: Node | None = None          # the program's own node (a stand-in or a concrete-shape copy)

    def __repr__(self) -> str:
        return f"Step({self.node.name} = {self.op}, buffer={self.buffer}{', recomputed' if self.recomputed else ''})"


@dataclass
class Specialization:
    """Everything a run with one signature of feed shapes needs: computed once, reused by later runs."""

    signature: tuple
    nodes: list[Node]
    roots: list[Node]
    plan: BufferPlan
    steps: list[Step]
    leaf_nodes: list[Node]              # graph nodes whose values a run passes in (inputs, parameters)
    evaluator: NumpyEvaluator
    scalar_out: list[bool]
    shapes: dict[Node, tuple]           # graph input -> fed shape
    recomputed: int = 0                 # steps that recompute a forward value (memory_budget)
    recompute_flops: int = 0
    forward_flops: int = 0
    unbudgeted_peak: int | None = None
    removed: int = 0                    # nodes the specialisation removed (shape rules, shape-only reads)
    copies: set = dataclasses.field(default_factory=set)
    any_scalar: bool = False


def passes_of(optimize) -> frozenset[str]:
    """optimize=True: every pass; False: none (the graph as declared); or a collection of pass names."""
    if optimize is True:
        return frozenset(PASSES)
    if optimize is False or optimize is None:
        return frozenset()
    chosen = frozenset(optimize)
    unknown = chosen - set(PASSES)
    if unknown:
        raise GraphCompilerError(f"unknown optimisation pass {sorted(unknown)[0]!r}; choose among "
                                 f"{', '.join(PASSES)} (or optimize=True for all, False for none)")
    return chosen


class Program:
    """Runs the outputs of a graph on feeds; returned arrays belong to the caller."""

    def __init__(self, graph: Graph, outputs: list[Node], updates: dict[Node, Node], *, optimize=True,
                 memory_budget: int | None = None, nan_check: bool = False):
        self.graph = graph
        self.outputs = list(outputs)
        self.updates = dict(updates)
        self.passes = passes_of(optimize)
        self.memory_budget = memory_budget
        self.nan_check = nan_check
        for p, v in self.updates.items():
            if p.op.name != "parameter":
                raise GraphCompilerError(f"updates can only replace parameters; {p.name!r} is a {p.op.name} "
                                         f"node (shape {fmt_shape(p.shape)})")
            if v.shape != p.shape:
                raise ShapeError(f"the update of {p.name!r} (shape {fmt_shape(p.shape)}) has shape "
                                 f"{fmt_shape(v.shape)} ({v.name!r}, {v.op.name})")
        if memory_budget is not None and (not isinstance(memory_budget, (int, np.integer)) or memory_budget < 0):
            raise GraphCompilerError(f"memory_budget must be a number of bytes (a non-negative int), not "
                                     f"{memory_budget!r}")
        with paused_gc():
            self._build(graph)

    def _build(self, graph: Graph) -> None:
        self._ctx = Context(graph)
        roots = self.outputs + list(self.updates.values())
        nodes = topo_order(roots)                                   # prune: the ancestors of the roots
        self.stats: dict[str, Any] = {"nodes_in": len(graph), "removed_prune": len(graph) - len(nodes)}
        self._static = all(None not in n.shape for n in nodes if n.op.name == "input")
        if "simplify" in self.passes:
            before = len(nodes)
            nodes, roots = simplify(nodes, roots, self._ctx, shapes=self._static)
            self.stats["removed_simplify"] = before - len(nodes)
        else:
            self.stats["removed_simplify"] = 0
        self._nodes, self._roots = nodes, roots
        origins = {self._ctx.origin_of(n) for n in nodes}
        self.nodes = sorted((o for o in origins if graph._by_name.get(o.name) is o), key=lambda n: n.index)
        self.inputs = [self._ctx.origin_of(n) for n in nodes if n.op.name == "input"]
        self._feedable = {n.name: n for n in nodes if n.op.name in ("input", "parameter")}
        self._feedable_nodes = {self._ctx.origin_of(n): n for n in nodes if n.op.name in ("input", "parameter")}
        self._origin = {n: self._ctx.origin_of(n) for n in self._feedable.values()}
        self._static_dims = {n: [(k, d) for k, d in enumerate(n.shape) if d is not None]
                             for n in self._feedable.values()}
        self._fast = {}
        for n in self._feedable.values():
            entry = (self._origin[n], n, n.ndim, n.dtype, tuple(self._static_dims[n]))
            self._fast[n.name] = self._fast[self._origin[n]] = entry
        self._checks = [(self._ctx.origin_of(n), n.name, n.shape, n.dtype) for n in nodes if n.op.name == "input"]
        self._cache: dict[tuple, Specialization] = {}
        self._last: Specialization | None = None
        self._symbolic_steps: list[Step] | None = None          # made when asked for before a run
        self.stats.update({"nodes_out": len(nodes), "steps": sum(1 for n in nodes if not is_leaf(n)), "buffers": 0,
                           "peak_bytes": 0, "removed_specialize": 0, "inplace": 0, "recomputed": 0,
                           "recompute_flops": 0, "rewrites": dict(self._ctx.counts)})
        if self._static:
            self._specialize({n: n.shape for n in self.inputs})

    # -- running ---------------------------------------------------------------------------
    def run(self, feeds: Mapping[Any, Any] | None = None) -> list[np.ndarray]:
        """Compute the outputs on `feeds` (by name or node); then apply the updates in place."""
        fed = self._check_feeds(feeds) if feeds else self._check_feeds({})
        sig = tuple([fed[n].shape for n in self.inputs])
        spec = self._cache.get(sig)
        if spec is None:
            spec = self._specialize({n: fed[n].shape for n in self.inputs})
        if spec is not self._last:
            self._use(spec)
        values = self.graph._values
        try:
            leaves = [fed[n] if n in fed else values[n] for n in spec.leaf_nodes]
        except KeyError:
            missing = next(n for n in spec.leaf_nodes if n not in fed and n not in values)
            raise FeedError(f"parameter {missing.name!r} (shape {fmt_shape(missing.shape)}, {missing.dtype}) has no "
                            f"stored value; feed it or set it with graph.set_value({missing.name!r}, array)") from None
        if self.nan_check:
            check_leaves_finite(spec.leaf_nodes, leaves, fed)
        results = spec.evaluator.run(leaves)
        if spec.any_scalar:
            results = [np.asarray(r) if s else r for r, s in zip(results, spec.scalar_out)]
        if not self.updates:
            return results
        k = len(self.outputs)
        outs = results[:k]
        if self.updates:
            for p, v in zip(self.updates, results[k:]):
                stored = values.get(p)
                if stored is None or not stored.flags.writeable:
                    values[p] = np.array(v, dtype=p.dtype)
                else:
                    stored[...] = v
        return outs

    def __call__(self, **feeds) -> list[np.ndarray]:
        return self.run(feeds)

    def _check_feeds(self, feeds: Mapping) -> dict[Node, np.ndarray]:
        fed: dict[Node, np.ndarray] = {}
        fast = self._fast
        for key, value in feeds.items():
            entry = fast.get(key)
            if entry is None:
                if isinstance(key, Node):
                    if key.graph is not self.graph:
                        raise FeedError(f"feed {key.name!r} is a node of graph {key.graph.name!r}, not "
                                        f"{self.graph.name!r}")
                elif not isinstance(key, str) or key not in self.graph:
                    from ..graph import _unknown_name
                    raise FeedError(f"feed {key!r}: {_unknown_name(self.graph, key)}")
                continue                                     # not read by this program: ignored
            origin, node, ndim, dtype, dims = entry
            if type(value) is np.ndarray and value.dtype == dtype and value.ndim == ndim:
                shape = value.shape
                for k, d in dims:
                    if shape[k] != d:
                        value = check_feed(node, value)      # raises, naming both shapes
                fed[origin] = value                          # the common case, checked cheaply
            else:
                fed[origin] = check_feed(node, value)
        for n in self.inputs:
            if n not in fed:
                self._missing(fed)
        return fed

    def _missing(self, fed) -> None:
        for n, name, shape, dtype in self._checks:
            if n not in fed:
                raise FeedError(f"input {name!r} (shape {fmt_shape(shape)}, {dtype}) is not fed; pass it "
                                    f"to run, e.g. program.run({{{name!r}: array}})")

    # -- specialising ----------------------------------------------------------------------
    def _specialize(self, shapes: dict[Node, tuple]) -> Specialization:
        with paused_gc():              # planning makes many small objects; the cyclic collector would rescan them all
            return self._specialize_now(shapes)

    def _specialize_now(self, shapes: dict[Node, tuple]) -> Specialization:
        ctx = self._ctx
        nodes, roots = self._nodes, self._roots
        count_before = len(nodes)
        if not self._static:
            nodes, roots = concretize(nodes, roots, shapes, ctx)
            if "simplify" in self.passes:
                nodes, roots = simplify(nodes, roots, ctx, shapes=True)
        nodes = topo_order(roots, edges=value_inputs)     # what is read only for its shape is not computed
        removed = count_before - len(nodes)
        copies: dict[Node, Node] = {}
        unbudgeted = cost = None
        if self.memory_budget is not None:
            def plan_peak(ns, rs, cps):
                return self._plan(ns, rs, cps).peak_bytes
            unbudgeted = plan_peak(nodes, roots, {})
            nodes, roots, copies, _, cost = choose(nodes, roots, int(self.memory_budget), ctx, plan_peak)
        plan = self._plan(nodes, roots, copies)
        spec = self._load(tuple(shapes[n] for n in self.inputs), nodes, roots, plan, shapes, copies)
        spec.removed = removed
        spec.recomputed, spec.recompute_flops, spec.unbudgeted_peak = len(copies), cost or 0, unbudgeted
        spec.forward_flops = sum(flops(n) for n in plan.order if not n.is_gradient and n not in copies)
        self._cache[spec.signature] = spec
        self._use(spec)
        return spec

    def _plan(self, nodes, roots, recomputed=None) -> BufferPlan:
        """Schedule the steps of `nodes` and plan their buffers (recomputed steps run late)."""
        if "schedule" in self.passes:
            plan = plan_buffers(memory_order(nodes, roots, recomputed), roots, reuse="buffers" in self.passes,
                                inplace=not self.nan_check)
            by_index = sorted(nodes, key=lambda n: n.index)
            if not recomputed and len(by_index) <= 20_000 and _is_topological(by_index):
                other = plan_buffers(declared_order(by_index), roots, reuse="buffers" in self.passes,
                                     inplace=not self.nan_check)
                if other.peak_bytes < plan.peak_bytes:       # the greedy order is a heuristic: keep the better
                    plan = other
            return plan
        else:
            by_index = sorted(nodes, key=lambda n: n.index)
            order = declared_order(by_index if _is_topological(by_index) and not recomputed else nodes)
        return plan_buffers(order, roots, reuse="buffers" in self.passes, inplace=not self.nan_check)

    def _load(self, sig, nodes, roots, plan: BufferPlan, shapes, recomputed=frozenset()) -> Specialization:
        ctx = self._ctx
        arrays = allocate(plan)
        slot: dict[Node, int] = {}
        leaf_nodes, leaf_slots = [], []
        for n in nodes:
            if n.op.name in ("input", "parameter"):
                slot[n] = len(slot)
                leaf_nodes.append(ctx.origin_of(n))
                leaf_slots.append(slot[n])
        for n in plan.order:
            slot[n] = len(slot)
        prepared, steps = [], []
        views: dict[tuple, np.ndarray] = {}
        drops: dict[int, list[int]] = {}
        for n in plan.order:
            v = plan.values[n]
            if v.kind != "buffer" and v.last < len(plan.order):
                drops.setdefault(max(v.readers, default=v.first), []).append(slot[n])
        for k, n in enumerate(plan.order):
            v = plan.values[n]
            fn, extra, kw = fast_kernel(n.op, v.kind == "buffer", n.shape,
                                        n.inputs[0].shape if n.inputs else (), n.dtype)
            args = []
            for i, x in enumerate(n.inputs):
                if not n.op.reads_value(i):
                    args.append(Const(np.broadcast_to(np.empty((), x.dtype), x.shape)))
                elif x.op.name == "constant":
                    args.append(Const(ctx.value(x)))
                else:
                    args.append(slot[x])
            args += [Const(e) for e in extra]
            out = None
            if v.kind == "buffer":
                out = views.get((v.buffer, n.shape))
                if out is None:                            # values of one buffer and shape share a view
                    size, _ = plan.buffers[v.buffer]
                    out = views[v.buffer, n.shape] = arrays[v.buffer][:size].reshape(n.shape)
            elif v.into is not None:                       # an output written over its dying input's array
                fn, extra, kw = fast_kernel(n.op, True, n.shape, n.inputs[0].shape if n.inputs else (), n.dtype)
                args = args[:len(n.inputs)] + [Const(e) for e in extra]
                out = OutSlot(slot[v.into])
            prepared.append(Prepared(n, fn, tuple(args), slot[n], out, kw, tuple(drops.get(k, ())), n.inputs,
                                     ctx.origin_of(n)))
            steps.append(Step(ctx.origin_of(n) if n not in recomputed else n, n.op.name, v.buffer,
                              n in recomputed, n))
        results, seen = list(roots), set()
        res_slots, copies = [], []
        const_results = {}
        for r in results:
            if r.op.name == "constant":                        # an output the optimiser folded to a constant
                const_results[len(res_slots)] = ctx.value(r)
                res_slots.append(None)
                copies.append(True)
                continue
            res_slots.append(slot[r])
            kind = plan.values[r].kind if r in plan.values else "leaf"
            copies.append(kind not in ("fresh", "buffer") or r in seen or
                          (kind == "buffer" and len(res_slots) <= len(self.outputs)))
            seen.add(r)
        evaluator = NumpyEvaluator(self.nan_check)
        if const_results:
            evaluator = _WithConstants(evaluator, const_results)
            res_slots = [s if s is not None else -1 for s in res_slots]
        evaluator.load(prepared, leaf_slots, len(slot), [s for s in res_slots], copies)
        scalar_out = [o.shape == () for o in self.outputs] + [False] * len(self.updates)
        spec = Specialization(sig, nodes, roots, plan, steps, leaf_nodes, evaluator, scalar_out, dict(shapes))
        spec.copies = set(recomputed)
        spec.any_scalar = any(scalar_out)
        return spec

    def _use(self, spec: Specialization) -> None:
        """Make spec the last-run specialisation: the one schedule, stats and reports describe."""
        self._last = spec
        plan = spec.plan
        self.stats.update({"nodes_out": len(spec.nodes), "steps": len(spec.steps), "buffers": len(plan.buffers),
                           "peak_bytes": plan.peak_bytes, "resident_bytes": plan.resident_bytes,
                           "removed_specialize": getattr(spec, "removed", 0),
                           "inplace": sum(1 for v in plan.values.values() if v.inplace),
                           "recomputed": spec.recomputed, "recompute_flops": spec.recompute_flops,
                           "forward_flops": getattr(spec, "forward_flops", 0),
                           "unbudgeted_peak_bytes": spec.unbudgeted_peak,
                           "rewrites": dict(self._ctx.counts)})

    # -- introspection ---------------------------------------------------------------------
    @property
    def schedule(self) -> list[Step]:
        """The ordered steps of the last run's shapes (before any run: the symbolic order, no buffers)."""
        if self._last:
            return list(self._last.steps)
        if self._symbolic_steps is None:
            order = memory_order(self._nodes, self._roots) if "schedule" in self.passes else \
                declared_order(self._nodes)
            self._symbolic_steps = [Step(self._ctx.origin_of(n), n.op.name, None, False, n) for n in order]
        return list(self._symbolic_steps)

    def buffer_of(self, node: Node) -> int | None:
        """The planned buffer holding node's value in the last specialisation (None: allocated by its kernel)."""
        if self._last is None:
            return None
        for s in self._last.steps:
            if s.node is node or s.value is node:
                return s.buffer
        return None

    def kept_for_backward(self) -> set[Node]:
        """The forward values that gradient steps read: what training keeps alive beyond inference."""
        steps = [s.value for s in self.schedule]
        kept = set()
        for n in steps:
            if n.is_gradient:
                for x in value_inputs(n):
                    if not x.is_gradient and not is_leaf(x):
                        kept.add(self._ctx.origin_of(x))
        return kept

    def memory_report(self) -> MemoryReport:
        """The buffer plan of the last run's shapes: values, buffers, live ranges, what backward keeps, the peak.

        str() of the result is a table; .plot(path) draws live bytes over the schedule.
        """
        spec = self._last
        if spec is None:
            raise GraphCompilerError(
                f"the program of graph {self.graph.name!r} has None dims in its inputs "
                f"({', '.join(f'{n.name} {fmt_shape(n.shape)}' for n in self.inputs)}), so its memory is "
                "planned at the first run; run it once, then ask for the report")
        declared = None
        if "schedule" in self.passes and len(spec.plan.order) <= 50_000:
            by_index = sorted(spec.nodes, key=lambda n: n.index)
            if _is_topological(by_index) and not spec.copies:
                declared = plan_buffers(declared_order(by_index), spec.roots,
                                        reuse="buffers" in self.passes).peak_bytes
        return build_report(f"graph {self.graph.name!r}", spec.plan, self._ctx.origin_of, spec.copies,
                            declared_peak=declared, budget=self.memory_budget, unbudgeted=spec.unbudgeted_peak)

    def __str__(self) -> str:
        spec = self._last
        head = f"Program of graph {self.graph.name!r}: {len(self.schedule)} steps"
        if spec is not None:
            feeds = ", ".join(f"{n.name}: {fmt_shape(s)}" for n, s in spec.shapes.items())
            head += (f", {len(spec.plan.buffers)} buffers, peak {_fmt_bytes(spec.plan.peak_bytes)}"
                     f"{' (shapes ' + feeds + ')' if feeds else ''}")
        else:
            head += " (buffers are planned at the first run, when the None dims are known)"
        rows = []
        for k, s in enumerate(self.schedule):
            n = s.value
            rhs = f"{s.op}({', '.join(x.name for x in n.inputs)})"
            if spec is None:
                where = "-"
            else:
                v = spec.plan.values[n]
                where = (f"buf {v.buffer}{' (in place)' if v.inplace else ''}" if v.kind == "buffer" else
                         f"view of buf {v.buffer}" if v.kind == "view" and v.buffer is not None else
                         "view" if v.kind == "view" else "output" if n in spec.roots else "allocated")
            mark = " recomputed" if s.recomputed else (" grad" if n.is_gradient else "")
            rows.append((f"[{k}]", n.name, rhs, fmt_shape(n.shape), str(n.dtype), where + mark))
        widths = [max((len(r[c]) for r in rows), default=0) for c in range(5)]
        lines = [head]
        for r in rows:
            lines.append(f"  {r[0]:>{widths[0]}} {r[1]:<{widths[1]}} = {r[2]:<{widths[2]}}  "
                         f"{r[3]:<{widths[3]}} {r[4]:<{widths[4]}}  {r[5]}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"<Program of graph {self.graph.name!r}: {len(self.outputs)} outputs, {len(self.schedule)} steps, "
                f"peak {_fmt_bytes(self.stats.get('peak_bytes', 0))}>")

    def _repr_mimebundle_(self, include=None, exclude=None):
        try:
            from ..viz import to_dot
            return {"image/svg+xml": to_dot(self)._repr_image_svg_xml(), "text/plain": str(self)}
        except Exception:   # no viz module or no dot binary: the listing
            return {"text/plain": str(self)}


class _WithConstants:
    """An evaluator whose results include outputs the optimiser folded to constants."""

    def __init__(self, inner: NumpyEvaluator, consts: dict[int, np.ndarray]):
        self.inner, self.consts = inner, consts

    def load(self, steps, leaf_slots, n_slots, results, copy):
        self._pick = [k for k, s in enumerate(results) if k not in self.consts]
        self._n = len(results)
        self.inner.load(steps, leaf_slots, n_slots, [results[k] for k in self._pick],
                        [copy[k] for k in self._pick])
        self.steps = self.inner.steps
        return self

    def run(self, leaves):
        got = self.inner.run(leaves)
        out = [None] * self._n
        for k, v in zip(self._pick, got):
            out[k] = v
        for k, c in self.consts.items():
            out[k] = np.array(c, copy=True)
        return out


def allocate(plan: BufferPlan) -> list[np.ndarray]:
    """The planned buffers: views into one aligned arena when the plan packed them, else one array each."""
    if plan.offsets is None:
        return [np.empty(size, dtype) for size, dtype in plan.buffers]
    raw = np.empty(plan.resident_bytes + ALIGN, np.uint8)
    shift = (-raw.ctypes.data) % ALIGN
    return [raw[shift + off: shift + off + size * np.dtype(dt).itemsize].view(dt)
            for off, (size, dt) in zip(plan.offsets, plan.buffers)]


def _is_topological(order) -> bool:
    seen = set()
    for n in order:
        if any(x not in seen and not is_leaf(x) for x in value_inputs(n)):
            return False
        seen.add(n)
    return True


def concretize(nodes: list[Node], roots: list[Node], shapes: dict[Node, tuple], ctx: Context):
    """Copies of the nodes with the concrete shapes of one run: each op's shape rule runs again on them.

    A conflict between fed sizes is reported here, before any kernel runs. So is a None dimension fed
    with 1 against another None dimension it lines up with in a broadcast whose gradient was built: the
    gradient assumed those two sizes are equal (sum_to in ops/shape.py).
    """
    has_grad = any(n.is_gradient for n in nodes)
    new: dict[Node, Node] = {}
    by_origin = {ctx.origin_of(n): s for n, s in shapes.items()}
    for n in nodes:
        if n.op.name == "input":
            shape = by_origin.get(ctx.origin_of(n), n.shape)
            new[n] = n if shape == n.shape else ctx.rebuild(n, (), shape)
            continue
        if is_leaf(n):
            new[n] = n
            continue
        ins = tuple(new[x] for x in n.inputs)
        if ins == n.inputs:
            new[n] = n
            continue
        try:
            shape, dtype = n.op.infer(*ins)
        except GraphCompilerError as e:
            raise ShapeError(f"the fed shapes do not fit {n.name} = {n.op.name}("
                             f"{', '.join(x.name for x in n.inputs)}): {e}; inputs "
                             f"{', '.join(f'{x.name} {fmt_shape(x.shape)}' for x in ins)} (declared "
                             f"{', '.join(f'{x.name} {fmt_shape(x.shape)}' for x in n.inputs)}); "
                             f"feed arrays whose sizes agree ({_fed(shapes)})") from None
        if has_grad and isinstance(n.op, (Binary, Where)):
            _check_lineup(n, ins, shapes)
        if any(d is not None and d != c for d, c in zip(n.shape, shape)) or len(shape) != len(n.shape):
            raise ShapeError(f"{n.name} ({n.op.name}) was declared with shape {fmt_shape(n.shape)} but the feeds "
                             f"give it shape {fmt_shape(shape)} ({_fed(shapes)})")
        new[n] = ctx.rebuild(n, ins, shape)
    return topo_order([new[r] for r in roots]), [new[r] for r in roots]


def _check_lineup(n: Node, ins: tuple, shapes) -> None:
    nd = len(n.shape)
    for k in range(1, nd + 1):
        sym = [(x, y) for x, y in zip(n.inputs, ins) if x.ndim >= k]
        pairs = [(x, y) for x, y in sym if x.shape[-k] is None]
        sizes = {y.shape[-k] for _, y in pairs}
        if len(pairs) > 1 and len(sizes) > 1:
            desc = ", ".join(f"{x.name} {fmt_shape(y.shape)}" for x, y in pairs)
            raise ShapeError(f"{n.name} = {n.op.name}({', '.join(x.name for x in n.inputs)}) was differentiated "
                             f"assuming its inputs' None dimension {-k} has one size, but the feeds give {desc} "
                             f"({_fed(shapes)}); feed equal sizes there, or declare the dimension that is "
                             "broadcast with size 1")


def _fed(shapes) -> str:
    return "fed " + ", ".join(f"{n.name}: {fmt_shape(s)}" for n, s in shapes.items()) if shapes else "no feeds"


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def check_feed(node: Node, value: Any) -> np.ndarray:
    """A fed array, checked against the node's shape (None dims match any size) and dtype."""
    arr = value if type(value) is np.ndarray else np.asarray(value)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise FeedError(f"feed {node.name!r}: got {type(value).__name__} of dtype {arr.dtype}; feed a numeric array")
    shape = arr.shape
    if len(shape) != len(node.shape) or any(d is not None and d != a for d, a in zip(node.shape, shape)):
        raise FeedError(f"feed {node.name!r} ({node.op.name}) expects shape {fmt_shape(node.shape)}, got "
                        f"{fmt_shape(shape)}")
    if arr.dtype != node.dtype:
        if not np.can_cast(arr.dtype, node.dtype, casting="same_kind"):
            raise FeedError(f"feed {node.name!r} ({node.op.name}) expects dtype {node.dtype}, got {arr.dtype}, "
                            "which does not convert without changing kind (e.g. float to int)")
        arr = arr.astype(node.dtype)
    return arr


def check_leaves_finite(nodes: list[Node], values: list, fed) -> None:
    """nan_check at the start of a run: a NaN or infinity that comes in through a feed (or a stored
    parameter) is reported as that feed's, not as the first internal step that reads it."""
    for node, v in zip(nodes, values):
        a = np.asarray(v)
        if a.dtype.kind in "fc" and a.size and not np.isfinite(a).all():
            bad = np.isnan(a)
            what = "NaN" if bad.any() else "infinity"
            where = np.argwhere(bad if bad.any() else ~np.isfinite(a))
            at = f" at index {tuple(int(i) for i in where[0])}" if a.ndim else ""
            source = f"feed {node.name!r}" if node in fed else f"the stored value of parameter {node.name!r}"
            raise NumericsError(f"{source} ({node.op.name}, shape {fmt_shape(a.shape)}, {a.dtype}) holds {what}"
                                f"{at} ({int((~np.isfinite(a)).sum())} of {a.size} entries not finite); "
                                "nan_check stopped before any step ran: clean the data or drop nan_check")
