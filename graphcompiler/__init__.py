"""graphcompiler: a symbol-to-symbol differentiation compiler on NumPy (the public API of API.md).

The layers, each importing only those before it: errors -> graph (Node, Graph, the Op protocol, leaf ops)
-> ops (the op library; installs Node's operators) -> autodiff, compiler, runtime, io, viz, symbolic ->
cli, demo. `import graphcompiler` loads NumPy and this package only: SymPy (symbolic export), networkx
(Graph.to_networkx), Graphviz (pictures), SciPy, Matplotlib, scikit-learn and tqdm load where they are used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (DisconnectedInputError, DTypeError, ExecutionError, FeedError, GraphCompilerError,
                     GraphFileError, NumericsError, ShapeError, UndefinedGradientError)
from .graph import DuplicateNameError, Graph, GraphMismatchError, Node
from .ops import *  # noqa: F401,F403  the op functions: add, matmul, softmax_cross_entropy, ...
from .ops import OPS
from .autodiff import build_grad
from .compiler import compile
from .compiler.program import Program
from .runtime import NumpyEvaluator
from .io import load
from .viz import render, to_dot

if TYPE_CHECKING:
    from .symbolic import derivation, to_latex, to_sympy

__version__ = "0.1.0"

# Names whose module imports SymPy: resolved on first use (PEP 562), so a user who only compiles and runs
# does not pay for SymPy's import.
_LAZY = {"to_sympy": "symbolic", "to_latex": "symbolic", "derivation": "symbolic"}
_LAZY_MODULES = ("symbolic", "symbolic_terms", "demo", "cli")


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
