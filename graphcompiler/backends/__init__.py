"""The backends and their registry: `compile(..., backend=NAME)` picks the evaluator class that runs a program.

One module per evaluator: numpy.py (NumpyEvaluator, the reference), c.py (generated C), functional.py (pure
array-API calls, shared by jax.py, dask.py and cupy.py); lowered.py is the contract they all read (the compiler
writes it, the backends import nothing of the compiler). Kernels are found from the op record (its class, its
`ufunc`), never from tables keyed by op-name strings: dispatch.py.

The package is callable: `gc.backends()` lists the registered backends (the function `backends` below).

A backend is an Evaluator (lowered.py): `load(lowered)` once per specialisation, `run(leaves)` per
call. Register one by adding its name here, as the class itself or as "module:Class" (imported only when a
program asks for it, so `import graphcompiler` does not load JAX or dask).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any, Callable

from ..errors import GraphCompilerError

BACKENDS: dict[str, Any] = {
    "numpy": "graphcompiler.backends.numpy:NumpyEvaluator",
    "c": "graphcompiler.backends.c:CEvaluator",
    "jax": "graphcompiler.backends.jax:JaxEvaluator",
    "dask": "graphcompiler.backends.dask:DaskEvaluator",
    "cupy": "graphcompiler.backends.cupy:CupyEvaluator",
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


def backends() -> list[dict]:
    """Each registered backend: {"name", "available", "why"}; `why` says what is missing (package, device).

    A backend module may define `availability() -> (bool, reason)`; it is asked without loading the engine
    where it can (a package's presence), and the engine's devices are listed where it is installed.
    """
    out = []
    for name, entry in BACKENDS.items():
        ok, why = True, ""
        if isinstance(entry, str):
            module = entry.partition(":")[0]
            try:
                mod = importlib.import_module(module)
            except Exception as e:  # a missing optional package, or a broken module
                ok, why = False, f"{type(e).__name__}: {e}"
            else:
                check = getattr(mod, "availability", None)
                find_cc = getattr(mod, "find_compiler", None)
                if check is None and find_cc is not None:  # backend "c": a C compiler is what it needs
                    cc = find_cc()
                    ok, why = (
                        (True, f"C compiler {cc}")
                        if cc
                        else (False, "no C compiler found ($CC, cc, gcc, clang); programs run on 'numpy' instead")
                    )
                elif check is not None:
                    try:
                        ok, why = check()
                    except Exception as e:
                        ok, why = False, f"{type(e).__name__}: {e}"
        out.append({"name": name, "available": bool(ok), "why": why})
    return out


class _Package(types.ModuleType):
    """`graphcompiler.backends` is both this package and the listing `gc.backends()` (API section 12)."""

    def __call__(self) -> list[dict]:
        return backends()


sys.modules[__name__].__class__ = _Package
