"""The op record: the facts compiler/ and runtime.py need are declared on the op class, not found by name; and its
declarative SymPy rule: an op that takes the elementwise default `to_sympy` declares its `sympy_fn`, so no
elementwise op silently exports as an undefined function."""

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

import graphcompiler as gc
from graphcompiler.ops import elementwise as E
from graphcompiler.ops import nn as NN
from graphcompiler.ops import shape as S
from graphcompiler.ops import LEAF_OPS, OPS
from graphcompiler.ops.base import Op, apply, elementwise_to_sympy

ROOT = Path(gc.__file__).parent
RULE_TABLE = {"simplify.py"}      # its rewrite rules match op patterns by name (a table keyed by op name)


def _op_name(node) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "name" and isinstance(node.value, ast.Attribute) \
        and node.value.attr == "op"


def test_no_module_of_the_compiler_or_runtime_tests_op_names():
    files = [p for p in (ROOT / "compiler").glob("*.py") if p.name not in RULE_TABLE] + [ROOT / "backends" / "numpy.py"]
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(_op_name(x) for x in [node.left, *node.comparators]):
                found.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.Subscript) and _op_name(node.slice):
                found.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                    and any(_op_name(a) for a in node.args):                # a table looked up by op name
                found.append(f"{path.name}:{node.lineno}")
    assert found == []


def test_facts_on_the_classes():
    assert S.Transpose(axes=(1, 0)).is_view and S.Reshape(shape=(2,)).is_view and E.Identity().is_view
    assert not E.Tanh().is_view and E.Tanh().elementwise and E.Tanh().writes_out
    assert not E.Greater().elementwise and E.Add().broadcasting and E.Where().broadcasting
    assert NN.SoftmaxCrossEntropy().scratch == 2
    fn, extra, kw = E.Tanh().fast_kernel(True, (2, 3), (2, 3), np.dtype("float64"))
    assert fn is np.tanh and extra == () and kw == {}


@dataclass(frozen=True)
class Twice(Op):
    """A user's op declaring nothing but its shape rule and kernel: the defaults apply (fresh result)."""

    arity: ClassVar[int] = 1

    def infer(self, x):
        return x.shape, x.dtype

    def kernel(self, x):
        return 2 * x


@dataclass(frozen=True)
class Flat(Op):
    """A user's view op: declares is_view, so its result shares its input's memory in the plan."""

    arity: ClassVar[int] = 1
    is_view: ClassVar[bool] = True

    def infer(self, x):
        return (int(np.prod(x.shape)),), x.dtype

    def kernel(self, x):
        return x.reshape(-1)


Twice.name, Flat.name = "twice", "flat"      # not added to the op table graph files may name


def test_a_users_op_gets_the_defaults_and_its_declared_facts():
    g = gc.Graph("custom")
    x = g.input("x", shape=(3, 4))
    t = apply(Twice(), (gc.tanh(x),), name="t")
    f = apply(Flat(), (gc.exp(t),), name="f")
    out = gc.sum(gc.sin(f) * 3.0, name="out")
    p = gc.compile([out])
    X = np.linspace(-1, 1, 12).reshape(3, 4)
    np.testing.assert_allclose(p.run({"x": X})[0], np.sum(np.sin(np.exp(2 * np.tanh(X)).reshape(-1)) * 3.0))
    kinds = {s.node.name: p._last.plan.values[s.value].kind for s in p.schedule}
    assert kinds["t"] == "fresh" and kinds["f"] == "view"
    assert t.op.flops(t) == 12


# -- the declarative SymPy rule -----------------------------------------------------------------------------------

def test_elementwise_ops_declare_their_sympy_rule():
    missing = [name for name, cls in OPS.items()
               if name not in LEAF_OPS and cls.to_sympy is elementwise_to_sympy and cls.sympy_fn is None]
    assert not missing, f"ops with the elementwise SymPy default but no sympy_fn: {missing}"


def test_some_ops_use_the_declarative_rule():
    declarative = {name for name, cls in OPS.items() if getattr(cls, "to_sympy", None) is elementwise_to_sympy}
    assert {"add", "tanh", "greater", "where"} <= declarative
