"""Names of the package that load on first use (PEP 562), so `import graphcompiler` does not import SymPy.

The layers, each importing only those before it: errors -> graph (Node, Graph, the Op protocol, leaf ops) ->
ops (the op library; installs Node's operators) -> autodiff, compiler, runtime, io, viz, symbolic -> cli,
demo. `import graphcompiler` loads NumPy and the package; SymPy (symbolic export), networkx
(Graph.to_networkx), Graphviz (pictures), SciPy, Matplotlib, scikit-learn and tqdm load where they are used.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

PACKAGE = __name__.rpartition(".")[0]
LAZY = {
    "to_sympy": "symbolic",
    "to_latex": "symbolic",
    "derivation": "symbolic",  # name -> its module
    "recurrence": "symbolic",
}
LAZY_MODULES = ("symbolic", "symbolic_terms", "demo", "cli")


def __getattr__(name: str) -> Any:
    """The package's module __getattr__: gc.to_sympy imports graphcompiler.symbolic the first time."""
    if name in LAZY_MODULES:
        return importlib.import_module(f"{PACKAGE}.{name}")
    if name in LAZY:
        value = getattr(importlib.import_module(f"{PACKAGE}.{LAZY[name]}"), name)
        setattr(sys.modules[PACKAGE], name, value)  # found directly from now on
        return value
    raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(vars(sys.modules[PACKAGE])) | set(LAZY))
