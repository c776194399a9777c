"""The backend registry: `compile(..., backend=NAME)` picks the evaluator class that runs the lowered program.

A backend is an Evaluator (compiler/lowered.py): `load(lowered)` once per specialisation, `run(leaves)` per
call. Register one by adding its name here, as the class itself or as "module:Class" (imported only when a
program asks for it, so `import graphcompiler` does not load JAX or dask).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from ..errors import GraphCompilerError

BACKENDS: dict[str, Any] = {
    "numpy": "graphcompiler.runtime:NumpyEvaluator",
    "c": "graphcompiler.cbackend:CEvaluator",
}


def evaluator_class(name: str) -> Callable[..., Any]:
    """The evaluator class registered as `name`; an unknown name raises GraphCompilerError listing the known."""
    if not isinstance(name, str) or name not in BACKENDS:
        raise GraphCompilerError(f"unknown backend {name!r}; choose among {', '.join(sorted(BACKENDS))}")
    entry = BACKENDS[name]
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
    return entry


def new_evaluator(name: str) -> Any:
    """A fresh, unloaded evaluator of backend `name` (it reads nan_check and the rest from the lowered program)."""
    return evaluator_class(name)()
