"""The op record's declarative SymPy rule: an op that takes the elementwise default `to_sympy` declares its
`sympy_fn`, so no elementwise op silently exports as an undefined function."""

from __future__ import annotations

from graphcompiler.ops import LEAF_OPS, OPS
from graphcompiler.ops.base import elementwise_to_sympy


def test_elementwise_ops_declare_their_sympy_rule():
    missing = [name for name, cls in OPS.items()
               if name not in LEAF_OPS and cls.to_sympy is elementwise_to_sympy and cls.sympy_fn is None]
    assert not missing, f"ops with the elementwise SymPy default but no sympy_fn: {missing}"


def test_some_ops_use_the_declarative_rule():
    declarative = {name for name, cls in OPS.items() if getattr(cls, "to_sympy", None) is elementwise_to_sympy}
    assert {"add", "tanh", "greater", "where"} <= declarative
