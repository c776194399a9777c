"""Program: the compiled outputs of a graph, specialised per signature of feed shapes (API section 3).

compile() runs the front of the pipeline once (pipeline.py: prune, simplify). A run with feed shapes not seen
before runs the rest (concretize, recompute, schedule, plan, lower) and loads the backend's evaluator with
the lowered program; a second run with the same shapes does no planning. Program keeps what is not a pass:
the cache of specialisations, feed checking, updates, threads, and introspection.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..backends import evaluator_class, new_evaluator
from ..backends.lowered import LoweredProgram
from ..budget import time_budget
from ..errors import FeedError, GraphCompilerError, NumericsError, ShapeError, fmt_shape
from ..graph import Graph, Node, paused_gc
from ..ops.base import Input, Parameter
from . import pipeline
from .ir import is_leaf, value_inputs
from .memory import BufferPlan, plan_buffers
from .pipeline import PASSES, concretize, is_topological, passes_of  # noqa: F401  (PASSES, concretize: API)
from .report import MemoryReport, build_report
from .schedule import declared_order, memory_order

CACHE_SIZE = 32  # specialisations (feed-shape signatures) a Program keeps; the least recently used go

_UPDATE_LOCKS: "weakref.WeakKeyDictionary[Graph, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


def update_lock(graph: Graph) -> threading.RLock:
    """The lock every run with updates holds while it reads the graph's parameters and writes their new values."""
    lock = _UPDATE_LOCKS.get(graph)
    if lock is None:
        with _LOCKS_LOCK:
            lock = _UPDATE_LOCKS.setdefault(graph, threading.RLock())
    return lock


@dataclass(frozen=True)
class Step:
    """One step of a schedule: the node it computes, its op's name, its buffer, whether it is a recomputation."""

    node: Node
    op: str
    buffer: int | None = None
    recomputed: bool = False
    value: Node | None = None  # the program's own node (a stand-in or a concrete-shape copy)

    def __repr__(self) -> str:
        return f"Step({self.node.name} = {self.op}, buffer={self.buffer}{', recomputed' if self.recomputed else ''})"


@dataclass
class Specialization:
    """Everything a run with one signature of feed shapes needs: computed once, reused by later runs."""

    signature: tuple
    nodes: list[Node]
    roots: list[Node]
    plan: BufferPlan
    origin: Any  # program node -> the graph node it computes (Context.origin_of)
    leaf_nodes: list[Node]  # graph nodes whose values a run passes in (inputs, parameters)
    evaluator: Any  # the backend's Evaluator, loaded with `lowered`
    lowered: LoweredProgram
    scalar_out: list[bool]
    shapes: dict[Node, tuple]  # graph input -> fed shape
    recomputed: int = 0  # steps that recompute a forward value (memory_budget)
    recompute_flops: int = 0
    forward_flops: int = 0
    unbudgeted_peak: int | None = None
    removed: int = 0  # nodes the specialisation removed (shape rules, shape-only reads)
    copies: set = dataclasses.field(default_factory=set)
    any_scalar: bool = False
    _steps: list | None = None

    @property
    def steps(self) -> list[Step]:
        """The schedule for introspection (made when first asked for: a run does not need it)."""
        if self._steps is None:
            values, copies, origin = self.plan.values, self.copies, self.origin
            self._steps = [
                Step(origin(n) if n not in copies else n, n.op.name, values[n].buffer, n in copies, n)
                for n in self.plan.order
            ]
        return self._steps


class Program:
    """Runs the outputs of a graph on feeds; returned arrays belong to the caller.

    Threads. `run` may be called from several threads at once, and again from inside a kernel: each call
    computes in its own set of buffers (the evaluator keeps one arena per run in flight), so each gets its own
    correct results. Runs of programs with `updates` hold one lock per graph from reading the parameters to
    writing their new values, so every update is applied exactly once, as if the runs took turns (a run
    without updates reads the parameters unlocked: it sees them before or after a concurrent update, and may
    see a parameter half-written if another thread is updating it at that moment). Building the graph
    (adding nodes, build_grad) from several threads at once is not supported: give each thread its own
    Graph, or build under a lock of your own, then compile and run freely.

    Shapes. A Program keeps the specialisations of the last `cache_size` signatures of feed shapes (32 by
    default); the least recently used is dropped, with its buffers, when another is made.
    """

    def __init__(
        self,
        graph: Graph,
        outputs: list[Node],
        updates: dict[Node, Node],
        *,
        optimize=True,
        memory_budget: int | None = None,
        nan_check: bool = False,
        backend: str = "numpy",
        cache_size: int = CACHE_SIZE,
    ):
        self.graph = graph
        if not isinstance(cache_size, (int, np.integer)) or isinstance(cache_size, bool) or cache_size < 1:
            raise GraphCompilerError(f"cache_size must be a positive number of specialisations, not {cache_size!r}")
        self.cache_size = int(cache_size)
        self._lock = threading.RLock()  # specialising (the shared Context) and the cache
        self._update_lock = update_lock(graph)  # shared by the programs of one graph that update parameters
        self.backend = backend
        # an unknown name fails at compile time; a backend that takes its engine's arrays (dask, jax) as feeds
        # says so (`accepts_arrays`): they are checked by shape and dtype without converting them to NumPy
        self._duck = bool(getattr(evaluator_class(backend), "accepts_arrays", False))
        self.outputs = list(outputs)
        self.updates = dict(updates)
        self.passes = passes_of(optimize)
        self.memory_budget = memory_budget
        self.nan_check = nan_check
        for p, v in self.updates.items():
            if not isinstance(p.op, Parameter):
                raise GraphCompilerError(
                    f"updates can only replace parameters; {p.name!r} is a {p.op.name} "
                    f"node (shape {fmt_shape(p.shape)})"
                )
            if v.shape != p.shape:
                raise ShapeError(
                    f"the update of {p.name!r} (shape {fmt_shape(p.shape)}) has shape "
                    f"{fmt_shape(v.shape)} ({v.name!r}, {v.op.name})"
                )
        if memory_budget is not None and (not isinstance(memory_budget, (int, np.integer)) or memory_budget < 0):
            raise GraphCompilerError(
                f"memory_budget must be a number of bytes (a non-negative int), not {memory_budget!r}"
            )
        with paused_gc():
            self._build(graph)

    def _build(self, graph: Graph) -> None:
        fr = self._front = pipeline.front(graph, self.outputs + list(self.updates.values()), self.passes)
        self._ctx, nodes, self._static = fr.ctx, fr.nodes, fr.static
        self.stats: dict[str, Any] = dict(fr.stats)
        self._nodes, self._roots = nodes, fr.roots
        self.nodes = _graph_nodes(graph, {self._ctx.origin_of(n) for n in nodes})
        leaves = [n for n in nodes if not n.inputs]  # (every input and parameter, and a few other nodes)
        self.inputs = [self._ctx.origin_of(n) for n in leaves if isinstance(n.op, Input)]
        self._feedable = {n.name: n for n in leaves if isinstance(n.op, (Input, Parameter))}
        self._origin = {n: self._ctx.origin_of(n) for n in self._feedable.values()}
        self._static_dims = {
            n: [(k, d) for k, d in enumerate(n.shape) if d is not None] for n in self._feedable.values()
        }
        self._fast: dict[Node | str, tuple] = {}
        for n in self._feedable.values():
            entry = (self._origin[n], n, n.ndim, n.dtype, tuple(self._static_dims[n]))
            self._fast[n.name] = self._fast[self._origin[n]] = entry
        self._checks = [(self._ctx.origin_of(n), n.name, n.shape, n.dtype) for n in leaves if isinstance(n.op, Input)]
        self._cache: OrderedDict[tuple, Specialization] = OrderedDict()
        self._last: Specialization | None = None
        # the fast path of a run fed like the last one (see _hot_path): (checks, sources, spec, scalar indices)
        self._hot: tuple | None = None
        self._stored = graph.stored_values()  # a live view: parameters read per run
        self._symbolic_steps: list[Step] | None = None  # made when asked for before a run
        self.stats.update(
            {
                "nodes_out": len(nodes),
                "steps": len(nodes) - sum(1 for n in leaves if is_leaf(n)),
                "buffers": 0,
                "peak_bytes": 0,
                "removed_specialize": 0,
                "inplace": 0,
                "recomputed": 0,
                "recompute_flops": 0,
                "rewrites": dict(self._ctx.counts),
            }
        )
        if self._static:
            self._specialize({n: n.shape for n in self.inputs})

    # -- running ---------------------------------------------------------------------------
    def run(
        self, feeds: Mapping[Any, Any] | None = None, *, max_seconds: float | None = None, **options: Any
    ) -> list[np.ndarray]:
        """Compute the outputs on `feeds` (by name or node); then apply the updates in place.

        `max_seconds`: a time budget; once spent, the run stops with ExecutionError naming the step or loop it
        was executing (checked in every iteration of scan and while_loop, and between steps), and no update is
        applied. None (the default): no limit of its own (a run inside another run keeps that run's budget).
        `options` go to the backend's evaluator (API section 12): `sharding=` and `numpy=` on "jax",
        `compute=` and `chunks=` on "dask"; a backend refuses the options it does not know.
        """
        if max_seconds is not None:
            with time_budget(max_seconds):
                return self._run(feeds, options)
        return self._run(feeds, options)

    def _run(self, feeds: Mapping[Any, Any] | None, options: dict) -> list[np.ndarray]:
        hot = self._hot
        if hot is not None and not options and hot[2] is self._last and self._fed_as_last(hot, feeds):
            return self._run_hot(hot, feeds)
        if options:
            self._check_options(options)
        fed = self._check_feeds(feeds) if feeds else self._check_feeds({})
        sig = tuple([tuple(fed[n].shape) for n in self.inputs])
        spec = self._cache.get(sig)
        if spec is None:
            spec = self._specialize({n: tuple(fed[n].shape) for n in self.inputs})
        if spec is not self._last:
            self._use(spec)
        if not options and not self.nan_check:
            self._hot = self._hot_path(spec, feeds, fed)
        if options:
            options = dict(
                options,
                batch_axes=tuple(
                    0 if len(n.shape) and n.shape[0] is None and isinstance(n.op, Input) else None
                    for n in spec.leaf_nodes
                ),
            )
        if not self.updates:
            return self._scalars_as_arrays(spec, self._evaluate(spec, fed, options))
        graph = self.graph
        with self._update_lock:  # read the parameters, compute, write: as if runs took turns
            results = self._evaluate(spec, fed, options)
            k = len(self.outputs)
            for p, v in zip(self.updates, results[k:]):
                graph.update_value(p, v)
        return self._scalars_as_arrays(spec, results[:k])

    # -- the fast path: a run fed like the last run -----------------------------------------
    # The slow path checks each feed (a key of the program, a numeric array of the node's dtype and shape),
    # computes the signature and looks it up. When a run's feeds have the same keys as the last run's, every
    # value a NumPy array of the same dtype and shape as then, all of that holds again: the run goes straight
    # to the last specialisation. Nothing else differs: the same evaluator (with its arena pool), the same
    # update lock, the same results. Any other run (new shapes, a cast, a list, a missing or extra key, run
    # options, nan_check) takes the slow path, which raises the errors and makes the next fast path.

    def _hot_path(self, spec: Specialization, feeds: Mapping | None, fed: dict) -> tuple | None:
        """The fast path for runs fed as `feeds` was (checked as `fed`), or None when it has none."""
        checks: list[tuple] = []
        by_origin: dict[Node, Any] = {}
        fed_items: Any = feeds.items() if feeds else ()
        for key, value in fed_items:
            entry = self._fast.get(key)
            if entry is None or type(value) is not np.ndarray:
                return None  # an ignored key, or not a NumPy array (a subclass, an engine's array)
            if fed.get(entry[0]) is not value or entry[0] in by_origin:
                return None  # a converted value, or a node fed twice
            by_origin[entry[0]] = key
            checks.append((key, fed[entry[0]].dtype, fed[entry[0]].shape))
        sources = tuple((by_origin.get(n), n) for n in spec.leaf_nodes)
        scalars = tuple(k for k, s in enumerate(spec.scalar_out) if s)
        return tuple(checks), sources, spec, scalars

    @staticmethod
    def _fed_as_last(hot: tuple, feeds: Any) -> bool:
        """Whether feeds has the keys of the fast path's run, each an array of the same dtype and shape."""
        checks = hot[0]
        if (len(feeds) if feeds else 0) != len(checks):
            return False
        for key, dtype, shape in checks:
            v = feeds.get(key)
            if type(v) is not np.ndarray or v.shape != shape or v.dtype != dtype:
                return False
        return True

    def _run_hot(self, hot: tuple, feeds: Any) -> list:
        """A run on the fast path (feeds checked by _fed_as_last): the slow path's run, minus its checks."""
        _, sources, spec, scalars = hot
        if not self.updates:
            outs = spec.evaluator.run(self._hot_leaves(sources, spec, feeds))
        else:
            with self._update_lock:  # read the parameters, compute, write: as if runs took turns
                results = spec.evaluator.run(self._hot_leaves(sources, spec, feeds))
                k = len(self.outputs)
                update = self.graph.update_value
                for p, v in zip(self.updates, results[k:]):
                    update(p, v)
            outs = results[:k]
        for i in scalars:  # 0-d outputs as NumPy arrays (an evaluator may give NumPy scalars)
            r = outs[i]
            if isinstance(r, _NUMPY_LIKE):
                outs[i] = np.asarray(r)
        return outs

    def _hot_leaves(self, sources: tuple, spec: Specialization, feeds: Any) -> list:
        """The leaf values of a fast-path run: its feeds, and the stored values of the parameters not fed."""
        stored = self._stored
        try:
            return [stored[n] if k is None else feeds[k] for k, n in sources]
        except KeyError:  # a parameter without a stored value: the FeedError of the slow path
            return self._leaves(spec, {n: feeds[k] for k, n in sources if k is not None})

    def _evaluate(self, spec: Any, fed: dict, options: dict) -> list:
        """One run of the specialised program's evaluator on the feeds and the stored parameter values."""
        values = self.graph.stored_values()
        try:
            leaves = [fed[n] if n in fed else values[n] for n in spec.leaf_nodes]
        except KeyError:
            self._leaves(spec, fed)  # raises the FeedError
        if self.nan_check:
            check_leaves_finite(spec.leaf_nodes, leaves, fed)
        return spec.evaluator.run(leaves, **options) if options else spec.evaluator.run(leaves)

    @staticmethod
    def _scalars_as_arrays(spec: Any, outs: list) -> list:
        """0-d outputs as NumPy arrays (an evaluator may give NumPy scalars), other results as they are."""
        if spec.any_scalar:
            return [np.asarray(r) if s and isinstance(r, _NUMPY_LIKE) else r for r, s in zip(outs, spec.scalar_out)]
        return outs

    def _check_options(self, options: Mapping[str, Any]) -> None:
        known: frozenset = getattr(evaluator_class(self.backend), "run_options", frozenset())
        bad = sorted(set(options) - set(known) | ({"batch_axes"} & set(options)))
        if bad:
            raise GraphCompilerError(
                f"backend {self.backend!r} takes no run option {', '.join(map(repr, bad))}"
                f"{'; it takes ' + ', '.join(sorted(known - {'batch_axes'})) if known else ''}"
            )

    def _leaves(self, spec: Specialization, fed: dict) -> list:
        values = self.graph.stored_values()
        try:
            return [fed[n] if n in fed else values[n] for n in spec.leaf_nodes]
        except KeyError:
            missing = next(n for n in spec.leaf_nodes if n not in fed and n not in values)
            raise FeedError(
                f"parameter {missing.name!r} (shape {fmt_shape(missing.shape)}, {missing.dtype}) has no "
                f"stored value; feed it or set it with graph.set_value({missing.name!r}, array)"
            ) from None

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
                        raise FeedError(
                            f"feed {key.name!r} is a node of graph {key.graph.name!r}, not {self.graph.name!r}"
                        )
                elif not isinstance(key, str) or key not in self.graph:
                    from ..graph import _unknown_name

                    raise FeedError(f"feed {key!r}: {_unknown_name(self.graph, key)}")
                continue  # not read by this program: ignored
            origin, node, ndim, dtype, dims = entry
            if type(value) is np.ndarray and value.dtype == dtype and value.ndim == ndim:
                shape = value.shape
                for k, d in dims:
                    if shape[k] != d:
                        value = check_feed(node, value)  # raises, naming both shapes
                fed[origin] = value  # the common case, checked cheaply
            else:
                fed[origin] = check_feed(node, value, self._duck)
        for n in self.inputs:
            if n not in fed:
                self._missing(fed)
        return fed

    def _missing(self, fed) -> None:
        for n, name, shape, dtype in self._checks:
            if n not in fed:
                raise FeedError(
                    f"input {name!r} (shape {fmt_shape(shape)}, {dtype}) is not fed; pass it "
                    f"to run, e.g. program.run({{{name!r}: array}})"
                )

    # -- specialising ----------------------------------------------------------------------
    def _specialize(self, shapes: dict[Node, tuple]) -> Specialization:
        sig = tuple(shapes[n] for n in self.inputs)
        with self._lock:  # one thread specialises at a time (the passes share self._ctx)
            spec = self._cache.get(sig)
            if spec is not None:  # another thread made it meanwhile
                return spec
            with paused_gc():  # planning makes many small objects; the cyclic collector would rescan them all
                return self._specialize_now(shapes)

    def _specialize_now(self, shapes: dict[Node, tuple]) -> Specialization:
        sp = pipeline.specialize(
            self._front,
            shapes,
            self.passes,
            memory_budget=self.memory_budget,
            nan_check=self.nan_check,
            n_outputs=len(self.outputs),
            updates=[p.name for p in self.updates],
        )
        ctx, plan, copies = self._ctx, sp.plan, sp.copies
        evaluator = new_evaluator(self.backend).load(sp.lowered)
        scalar_out = [o.shape == () for o in self.outputs] + [False] * len(self.updates)
        spec = Specialization(
            tuple(shapes[n] for n in self.inputs),
            sp.nodes,
            sp.roots,
            plan,
            ctx.origin_of,
            sp.leaf_nodes,
            evaluator,
            sp.lowered,
            scalar_out,
            dict(shapes),
            len(copies),
            sp.recompute_flops,
            sp.forward_flops,
            sp.unbudgeted_peak,
            sp.removed,
            set(copies),
            any(scalar_out),
        )
        self._cache[spec.signature] = spec
        while len(self._cache) > self.cache_size:  # the least recently used go, with their buffers
            evicted = self._cache.popitem(last=False)[1]
            if self._hot is not None and self._hot[2] is evicted:
                self._hot = None
            close = getattr(evicted.evaluator, "close", None)  # e.g. "c": its compiled library (when unused)
            if close is not None:
                close()
        self._use(spec)
        return spec

    def _use(self, spec: Specialization) -> None:
        """Make spec the last-run specialisation: the one schedule, stats and reports describe."""
        self._hot = None  # the fast path ran the last specialisation
        self._last = spec
        try:
            self._cache.move_to_end(spec.signature)  # the most recently used (kept longest)
        except KeyError:  # evicted meanwhile by another thread
            pass
        plan = spec.plan
        self.stats.update(
            {
                "nodes_out": len(spec.nodes),
                "steps": len(plan.order),
                "buffers": len(plan.buffers),
                "peak_bytes": plan.peak_bytes,
                "resident_bytes": plan.resident_bytes,
                "removed_specialize": getattr(spec, "removed", 0),
                "inplace": sum(1 for v in plan.values.values() if v.inplace),
                "recomputed": spec.recomputed,
                "recompute_flops": spec.recompute_flops,
                "forward_flops": getattr(spec, "forward_flops", 0),
                "unbudgeted_peak_bytes": spec.unbudgeted_peak,
                "rewrites": dict(self._ctx.counts),
            }
        )

    # -- introspection ---------------------------------------------------------------------
    @property
    def lowered(self) -> LoweredProgram | None:
        """The lowered program (backends/lowered.py) of the last run's shapes; None before shapes are known."""
        return self._last.lowered if self._last is not None else None

    @property
    def schedule(self) -> list[Step]:
        """The ordered steps of the last run's shapes (before any run: the symbolic order, no buffers)."""
        if self._last:
            return list(self._last.steps)
        if self._symbolic_steps is None:
            order = memory_order(self._nodes, self._roots) if "schedule" in self.passes else declared_order(self._nodes)
            self._symbolic_steps = [Step(self._ctx.origin_of(n), n.op.name, None, False, n) for n in order]
        return list(self._symbolic_steps)

    def source(self, backend: str = "c") -> str:
        """The generated source the last specialisation runs (backend "c": its C function).

        Raises GraphCompilerError for a program of another backend, before the first run of a program with
        None dims, and when the specialisation runs on the NumPy evaluator instead (saying why).
        """
        if backend != "c" or self.backend != "c":
            raise GraphCompilerError(
                f"source({backend!r}): only programs compiled with backend='c' have generated "
                f"source; this one runs on {self.backend!r} (gc.compile(..., backend='c'))"
            )
        spec = self._last
        if spec is None:
            raise GraphCompilerError(
                f"the program of graph {self.graph.name!r} has None dims in its inputs "
                f"({', '.join(f'{n.name} {fmt_shape(n.shape)}' for n in self.inputs)}), so its C is generated at "
                "the first run; run it once, then ask for the source"
            )
        src = getattr(spec.evaluator, "source", None)
        reason = getattr(spec.evaluator, "fallback_reason", None)
        if src is None or reason is not None:
            raise GraphCompilerError(f"this specialisation runs on the NumPy evaluator, not C: {reason}")
        return src

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
        steps = [_value(s) for s in self.schedule]
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
                "planned at the first run; run it once, then ask for the report"
            )
        declared = None
        if "schedule" in self.passes and len(spec.plan.order) <= 50_000:
            by_index = sorted(spec.nodes, key=lambda n: n.index)
            if is_topological(by_index) and not spec.copies:
                declared = plan_buffers(declared_order(by_index), spec.roots, reuse="buffers" in self.passes).peak_bytes
        return build_report(
            f"graph {self.graph.name!r}",
            spec.plan,
            self._ctx.origin_of,
            spec.copies,
            declared_peak=declared,
            budget=self.memory_budget,
            unbudgeted=spec.unbudgeted_peak,
        )

    def __str__(self) -> str:
        spec = self._last
        head = f"Program of graph {self.graph.name!r}: {len(self.schedule)} steps"
        if spec is not None:
            feeds = ", ".join(f"{n.name}: {fmt_shape(s)}" for n, s in spec.shapes.items())
            head += (
                f", {len(spec.plan.buffers)} buffers, peak {_fmt_bytes(spec.plan.peak_bytes)}"
                f"{' (shapes ' + feeds + ')' if feeds else ''}"
            )
        else:
            head += " (buffers are planned at the first run, when the None dims are known)"
        rows = []
        for k, s in enumerate(self.schedule):
            n = _value(s)
            rhs = f"{s.op}({', '.join(x.name for x in n.inputs)})"
            if spec is None:
                where = "-"
            else:
                v = spec.plan.values[n]
                where = (
                    f"buf {v.buffer}{' (in place)' if v.inplace else ''}"
                    if v.kind == "buffer"
                    else f"view of buf {v.buffer}"
                    if v.kind == "view" and v.buffer is not None
                    else "view"
                    if v.kind == "view"
                    else "output"
                    if n in spec.roots
                    else "allocated"
                )
            mark = " recomputed" if s.recomputed else (" grad" if n.is_gradient else "")
            rows.append((f"[{k}]", n.name, rhs, fmt_shape(n.shape), str(n.dtype), where + mark))
        widths = [max((len(r[c]) for r in rows), default=0) for c in range(5)]
        lines = [head]
        for r in rows:
            lines.append(
                f"  {r[0]:>{widths[0]}} {r[1]:<{widths[1]}} = {r[2]:<{widths[2]}}  "
                f"{r[3]:<{widths[3]}} {r[4]:<{widths[4]}}  {r[5]}"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"<Program of graph {self.graph.name!r}: {len(self.outputs)} outputs, {len(self.schedule)} steps, "
            f"peak {_fmt_bytes(self.stats.get('peak_bytes', 0))}>"
        )

    # _repr_mimebundle_ (its picture in a notebook) is installed by viz.py, the layer above


def _graph_nodes(graph: Graph, origins: set[Node]) -> list[Node]:
    """The nodes of the user's graph among `origins`, in the graph's order (stand-ins left out)."""
    if len(graph) <= 4 * len(origins):  # a walk of the graph costs less than a sort
        return [n for n in graph if n in origins]
    return sorted((o for o in origins if graph.get(o.name) is o), key=lambda n: n.index)


def _value(s: Step) -> Node:
    """The program's own node of one of its steps (a Program's schedule always sets it)."""
    assert s.value is not None
    return s.value


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


_NUMPY_LIKE = (np.ndarray, np.generic, float, int, bool)


def check_feed(node: Node, value: Any, duck: bool = False) -> np.ndarray:
    """A fed array, checked against the node's shape (None dims match any size) and dtype.

    duck: an array of another engine (anything with shape, dtype and astype that is not NumPy's, e.g. a dask
    or JAX array) is checked as it is, without converting it to NumPy (which would compute a dask array).
    """
    if (
        duck
        and type(value) is not np.ndarray
        and hasattr(value, "shape")
        and hasattr(value, "dtype")
        and hasattr(value, "astype")
    ):
        arr = value
        try:
            dt = np.dtype(arr.dtype)
        except TypeError:
            raise FeedError(
                f"feed {node.name!r}: got {type(value).__name__} of dtype {arr.dtype}; feed a numeric array"
            ) from None
        shape = tuple(arr.shape)
        if dt.kind not in "biuf":
            raise FeedError(f"feed {node.name!r}: got {type(value).__name__} of dtype {dt}; feed a numeric array")
        if len(shape) != len(node.shape) or any(d is not None and d != a for d, a in zip(node.shape, shape)):
            raise FeedError(
                f"feed {node.name!r} ({node.op.name}) expects shape {fmt_shape(node.shape)}, got {fmt_shape(shape)}"
            )
        if any(not isinstance(a, (int, np.integer)) for a in shape):  # dask: nan for unknown sizes
            raise FeedError(
                f"feed {node.name!r}: its shape {shape} has unknown sizes; compute the chunk sizes "
                "first (dask: x.compute_chunk_sizes())"
            )
        if dt != node.dtype:
            if not np.can_cast(dt, node.dtype, casting="same_kind"):
                raise FeedError(
                    f"feed {node.name!r} ({node.op.name}) expects dtype {node.dtype}, got {dt}, "
                    "which does not convert without changing kind (e.g. float to int)"
                )
            # dask: a lazy cast; others (JAX, whose astype would drop float64 without x64) through NumPy
            arr = arr.astype(node.dtype) if hasattr(arr, "dask") else np.asarray(arr).astype(node.dtype)
        return arr
    arr = value if type(value) is np.ndarray else np.asarray(value)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise FeedError(f"feed {node.name!r}: got {type(value).__name__} of dtype {arr.dtype}; feed a numeric array")
    shape = arr.shape
    if len(shape) != len(node.shape) or any(d is not None and d != a for d, a in zip(node.shape, shape)):
        raise FeedError(
            f"feed {node.name!r} ({node.op.name}) expects shape {fmt_shape(node.shape)}, got {fmt_shape(shape)}"
        )
    if arr.dtype != node.dtype:
        if not np.can_cast(arr.dtype, node.dtype, casting="same_kind"):
            raise FeedError(
                f"feed {node.name!r} ({node.op.name}) expects dtype {node.dtype}, got {arr.dtype}, "
                "which does not convert without changing kind (e.g. float to int)"
            )
        if arr.size and not np.can_cast(arr.dtype, node.dtype, casting="safe"):
            _check_fits(node, arr)
        arr = arr.astype(node.dtype)
    return arr


def _check_fits(node: Node, arr: np.ndarray) -> None:
    """A narrowing cast must not change values: int64 2**32 + 1 fed as int32 would become the label 1."""
    to = node.dtype
    if to.kind in "iu" and arr.dtype.kind in "iu":
        info = np.iinfo(to)
        lo, hi = arr.min(), arr.max()
        if lo < info.min or hi > info.max:
            bad = lo if lo < info.min else hi
            raise FeedError(
                f"feed {node.name!r} ({node.op.name}) expects dtype {to}, got {arr.dtype} holding "
                f"{bad}, which {to} cannot hold ([{info.min}, {info.max}]); feed values in range or "
                f"declare the input with dtype {arr.dtype}"
            )
    elif to.kind == "f" and arr.dtype.kind == "f":
        finite = arr[np.isfinite(arr)]
        big = np.abs(finite).max() if finite.size else 0
        if big > np.finfo(to).max:
            raise FeedError(
                f"feed {node.name!r} ({node.op.name}) expects dtype {to}, got {arr.dtype} holding "
                f"magnitude {big:.4g}, beyond {to}'s largest finite value ({np.finfo(to).max:.4g}); "
                "it would become infinity"
            )


def check_leaves_finite(nodes: list[Node], values: list, fed) -> None:
    """nan_check at the start of a run: a NaN or infinity that comes in through a feed (or a stored
    parameter) is reported as that feed's, not as the first internal step that reads it."""
    for node, v in zip(nodes, values):
        if hasattr(v, "dask"):  # a lazy dask array is not loaded here: the backend checks each step's chunks
            continue
        a = np.asarray(v)
        if a.dtype.kind in "fc" and a.size and not np.isfinite(a).all():
            bad = np.isnan(a)
            what = "NaN" if bad.any() else "infinity"
            where = np.argwhere(bad if bad.any() else ~np.isfinite(a))
            at = f" at index {tuple(int(i) for i in where[0])}" if a.ndim else ""
            source = f"feed {node.name!r}" if node in fed else f"the stored value of parameter {node.name!r}"
            raise NumericsError(
                f"{source} ({node.op.name}, shape {fmt_shape(a.shape)}, {a.dtype}) holds {what}"
                f"{at} ({int((~np.isfinite(a)).sum())} of {a.size} entries not finite); "
                "nan_check stopped before any step ran: clean the data or drop nan_check"
            )
