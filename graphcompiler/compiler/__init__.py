"""compile: turn the outputs of a graph into a Program.

The pipeline (pipeline.py lists the passes in order), one module per job: prune (ir.topo_order: the
ancestors of the outputs and updates), simplify (simplify.py: a table of rewrite rules to a fixpoint, common
subexpressions, constant folding), then per signature of feed shapes: the shape rules again on concrete shapes,
the shape-dependent rules, recomputation for a memory budget (recompute.py), schedule (schedule.py), buffer
plan (memory.py), lowering to a LoweredProgram (lower.py; the data is defined in lowered.py), and the
backend's evaluator (backends.py: NumPy's is runtime.py) loaded with it. memory_report is in report.py.
See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping

from ..errors import GraphCompilerError
from ..graph import Graph, GraphMismatchError, Node
from .program import CACHE_SIZE, Program

DEFAULT_BACKEND = os.environ.get("GRAPHCOMPILER_BACKEND", "numpy")  # compile's backend when none is named


def compile(
    outputs: Node | Iterable[Node],
    *,
    updates: Mapping[Node, Node] | None = None,
    optimize: bool = True,
    memory_budget: int | None = None,
    nan_check: bool = False,
    backend: str | None = None,
    cache_size: int = CACHE_SIZE,
) -> Program:
    """Compile outputs (and parameter updates) into a Program; nothing is computed until it runs.

    backend names the evaluator that runs the lowered program (compiler/backends.py: BACKENDS; None: the
    module's DEFAULT_BACKEND, "numpy" unless the environment sets GRAPHCOMPILER_BACKEND); an unknown name
    raises GraphCompilerError listing the known ones. cache_size: how many signatures of feed shapes keep
    their specialisation (schedule, buffers, loaded evaluator); the least recently used is dropped beyond it.
    """
    if backend is None:
        backend = DEFAULT_BACKEND
    outputs = [outputs] if isinstance(outputs, Node) else list(outputs)
    updates = dict(updates or {})
    nodes = outputs + list(updates) + list(updates.values())
    if not nodes:
        raise GraphCompilerError("compile needs at least one output or update")
    for n in nodes:
        if not isinstance(n, Node):
            raise GraphCompilerError(f"compile takes graph nodes, got {type(n).__name__} {n!r}")
    graph: Graph = nodes[0].graph
    for n in nodes:
        if n.graph is not graph:
            raise GraphMismatchError(
                f"{n.name!r} belongs to graph {n.graph.name!r}, not {graph.name!r}; a program runs nodes of one graph"
            )
    return Program(
        graph,
        outputs,
        updates,
        optimize=optimize,
        memory_budget=memory_budget,
        nan_check=nan_check,
        backend=backend,
        cache_size=cache_size,
    )
