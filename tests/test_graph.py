"""The graph (API section 1): leaves, names, shapes and dtypes inferred at creation, look-ups, text form,
and the errors raised while building a graph (API section 6)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

import graphcompiler as gc


def test_api_example_shapes_dtypes_and_ops(make_mlp):
    g, n = make_mlp(W2_value=False, name_o=False)
    assert n["z"].shape == (None, 3) and n["o"].shape == (None, 2) and n["J"].shape == ()
    assert n["y"].dtype == np.int64 and n["J"].dtype == np.float64
    assert n["z"].op.name == "matmul" and n["x"].op.name == "input"
    assert n["W1"].op.name == "parameter" and n["lam"].op.name == "constant"
    assert n["z"].inputs == (n["x"], n["W1"]) and n["z"].graph is g
    assert not n["J"].is_gradient and n["J"].origin is None
    assert g["z"] is n["z"] and len(g) == len(g.nodes)
    assert g.nodes[0] is n["x"]
    assert g.consumers(n["W1"])[0] is n["z"] and len(g.consumers(n["W1"])) == 2   # z and W1 * W1
    assert n["z"] in g.consumers("x") and all(n["W1"] in c.inputs for c in g.consumers(n["W1"]))


def test_nodes_are_immutable_records(make_mlp):
    g, n = make_mlp(W2_value=False, name_o=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        n["z"].name = "other"
    assert hash(n["z"]) != hash(n["h"]) and {n["z"]: 1}[n["z"]] == 1


def test_automatic_names_are_unique_and_readable():
    g = gc.Graph()
    x = g.input("x", shape=(2,))
    a, b = x * 2, x * 3
    assert a.name != b.name and a.name.startswith("multiply")
    assert len({node.name for node in g.nodes}) == len(g)


def test_parameter_values(make_mlp):
    g, n = make_mlp(W2_value=False, name_o=False)
    W1 = n["W1"]
    v = g.value(W1)
    assert v.shape == (4, 3) and not v.flags.writeable
    assert g.value(n["W2"]) is None
    g.set_value("W2", np.ones((3, 2)))
    np.testing.assert_array_equal(g.value("W2"), np.ones((3, 2)))
    with pytest.raises(gc.ShapeError, match=r"W2.*\(3, 2\).*\(2, 3\)"):
        g.set_value(n["W2"], np.ones((2, 3)))
    with pytest.raises(gc.DTypeError):
        g.set_value(n["W2"], np.ones((3, 2), dtype=complex))
    with pytest.raises(gc.GraphCompilerError, match="input"):
        g.set_value(n["x"], np.ones((2, 4)))


def test_python_scalars_take_the_floating_dtype():
    g = gc.Graph()
    x = g.input("x", shape=(3,), dtype="float32")
    i = g.input("i", shape=(3,), dtype="int32")
    assert (x * 2.5).dtype == np.float32 and (2 - x).dtype == np.float32 and (x ** 2).dtype == np.float32
    assert (i + 1).dtype == np.int32 and (i * 1.5).dtype == np.float64
    assert (x + np.float64(1.0)).dtype == np.float64                 # a NumPy value keeps its dtype


def test_none_dims_and_broadcasting_inference():
    g = gc.Graph()
    a = g.input("a", shape=(None, 1, 3))
    b = g.input("b", shape=(4, 1))
    assert (a + b).shape == (None, 4, 3)
    c = g.input("c", shape=(None,))
    assert (c + 1).shape == (None,) and gc.sum(a, axis=0).shape == (1, 3)
    assert gc.reshape(a, (-1, 3)).shape == (None, 3)
    assert gc.concatenate([a, a], axis=0).shape == (None, 1, 3)
    assert a[:, 0, 1:].shape == (None, 2)


def test_networkx_view(make_mlp):
    g, n = make_mlp(W2_value=False, name_o=False)
    d = g.to_networkx()
    assert isinstance(d, nx.DiGraph) and set(d.nodes) == {node.name for node in g.nodes}
    assert d.has_edge("x", "z") and d.has_edge("W1", "z") and nx.is_directed_acyclic_graph(d)
    assert d.nodes["z"]["op"] == "matmul"
    sq = [c for c in g.consumers("W1") if c.op.name == "multiply"][0]
    assert d.edges["W1", sq.name]["index"] == (0, 1)           # W1 * W1 reads W1 twice


def test_text_form_one_line_per_node(make_mlp):
    g, n = make_mlp(W2_value=False, name_o=False)
    text = str(g)
    lines = text.splitlines()
    assert len(lines) == len(g) + 1
    z_line = next(l for l in lines if l.strip().startswith("z "))
    assert "matmul(x, W1)" in z_line and "(None, 3)" in z_line and "float64" in z_line
    gc.build_grad(n["J"], [n["W1"]])
    assert "dJ/dW1" in str(g) and "# grad of" in str(g)


# -- errors while building (API section 6) ------------------------------------------------------

def test_matmul_mismatch_names_nodes_ops_and_shapes():
    g = gc.Graph()
    x = g.input("x", shape=(None, 4))
    W = g.parameter("W", shape=(3, 2))
    n_before = len(g)
    with pytest.raises(gc.ShapeError) as e:
        gc.matmul(x, W, name="layer")
    msg = str(e.value)
    for part in ("matmul", "'layer'", "4 and 3", "x (input, shape (None, 4)", "W (parameter, shape (3, 2)"):
        assert part in msg, msg
    assert isinstance(e.value, ValueError) and len(g) == n_before


def test_broadcast_mismatch_and_rejected_op_adds_nothing():
    g = gc.Graph()
    a = g.input("a", shape=(3, 2))
    n_before = len(g)
    with pytest.raises(gc.ShapeError, match=r"\(3, 2\).*\(3,\)"):
        a + np.ones(3)                  # the constant is not added either
    assert len(g) == n_before and all(node.op.name != "constant" for node in g.nodes)


def test_dtype_errors():
    g = gc.Graph()
    o = g.input("o", shape=(None, 3))
    yf = g.input("yf", shape=(None,))
    with pytest.raises(gc.DTypeError, match="integer class labels.*yf"):
        gc.softmax_cross_entropy(o, yf)
    i = g.input("i", shape=(3,), dtype="int64")
    with pytest.raises(gc.DTypeError, match="floating"):
        gc.exp(i)
    with pytest.raises(gc.DTypeError):
        g.input("s", shape=(2,), dtype="complex128")
    assert isinstance(gc.DTypeError("x"), TypeError)


def test_duplicate_names_and_mixed_graphs():
    g1, g2 = gc.Graph("one"), gc.Graph("two")
    a = g1.input("a", shape=(2,))
    b = g2.input("b", shape=(2,))
    with pytest.raises(gc.GraphCompilerError, match="already has a node named 'a'"):
        g1.input("a", shape=(3,))
    with pytest.raises(gc.GraphCompilerError, match="already has a node named 'a'"):
        gc.exp(a, name="a")
    n1, n2 = len(g1), len(g2)
    with pytest.raises(gc.GraphCompilerError, match="graph 'one'.*graph 'two'"):
        a + b
    assert (len(g1), len(g2)) == (n1, n2)


def test_unknown_name_suggests(make_mlp):
    g, n = make_mlp(W2_value=False, name_o=False)
    with pytest.raises(KeyError, match="did you mean 'W1'"):
        g["w1"]


def test_node_has_no_truth_value():
    g = gc.Graph()
    x = g.input("x", shape=())
    with pytest.raises(gc.GraphCompilerError, match="gc.where"):
        if x > 0:
            pass


def test_bad_shapes_and_indices():
    g = gc.Graph()
    x = g.input("x", shape=(3, 2))
    with pytest.raises(gc.ShapeError, match="axis 2"):
        gc.sum(x, axis=2)
    with pytest.raises(gc.ShapeError, match="reshape"):
        gc.reshape(x, (4, 2))
    with pytest.raises(gc.ShapeError, match="out of bounds"):
        x[5]
    with pytest.raises(gc.ShapeError, match="static"):
        x[x > 0]          # a boolean node: run-time size (a constant NumPy mask is static: issue 14 takes it)
    with pytest.raises(gc.ShapeError):
        g.input("bad", shape=(-1, 2))


# -- the seam: other layers use Graph only through its public methods (issue 23, item 4) --------------------

PACKAGE = Path(gc.__file__).parent


def _graph_private_members(graph_py: Path) -> set[str]:
    """Graph's private members: its _methods and the self._attributes it sets or reads."""
    tree = ast.parse(graph_py.read_text())
    cls = next(c for c in tree.body if isinstance(c, ast.ClassDef) and c.name == "Graph")
    names = set()
    for n in ast.walk(cls):
        if isinstance(n, ast.FunctionDef):
            names.add(n.name)
        elif isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self":
            names.add(n.attr)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def private_graph_uses(package: Path) -> list[str]:
    """Every read of one of Graph's private members outside graph.py: `<expr>._x` where _x is one and <expr> is
    not a class's own `self` (Program's self._nodes is its own), or getattr(<expr>, "_x")."""
    private = _graph_private_members(package / "graph.py")
    found = []
    for path in sorted(package.rglob("*.py")):
        if path == package / "graph.py":
            continue
        for n in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(n, ast.Attribute)
                and n.attr in private
                and not (isinstance(n.value, ast.Name) and n.value.id in ("self", "cls"))
            ):
                found.append((str(path.relative_to(package)), n.lineno, n.col_offset, ast.unparse(n)))
            elif (
                isinstance(n, ast.Call)
                and isinstance(n.func, ast.Name)
                and n.func.id in ("getattr", "setattr")
                and len(n.args) >= 2
                and isinstance(n.args[1], ast.Constant)
                and n.args[1].value in private
            ):
                found.append((str(path.relative_to(package)), n.lineno, n.col_offset, ast.unparse(n)))
    return [f"{p}:{line}: {text}" for p, line, _, text in sorted(found)]


def test_no_module_but_graph_py_uses_graph_private_members():
    assert {"_values", "_by_name", "_consumers", "_nodes"} <= _graph_private_members(PACKAGE / "graph.py")
    assert private_graph_uses(PACKAGE) == []


def test_the_seam_scan_finds_private_uses(tmp_path):
    (tmp_path / "graph.py").write_text((PACKAGE / "graph.py").read_text())
    (tmp_path / "user.py").write_text(
        "def f(graph, node, self):\n"
        "    a = node.graph._values[node]\n"
        "    b = graph._check_fits\n"
        "    c = self.graph._by_name\n"
        "    d = getattr(graph, '_nodes')\n"
        "    return self._values, node.graph.stored_value(node)\n"  # a class's own self._values is its own
    )
    assert [u.split(": ")[1] for u in private_graph_uses(tmp_path)] == [
        "node.graph._values",
        "graph._check_fits",
        "self.graph._by_name",
        "getattr(graph, '_nodes')",
    ]


def test_public_graph_methods_for_the_layers_above():
    g = gc.Graph("seam")
    w = g.parameter("w", np.array([1.0, 2.0]))
    c = g.constant(3.0, name="c")
    x = g.input("x", shape=(2,))
    assert g.stored_value(w) is g.stored_values()[w] and g.stored_value(x) is None
    assert set(g.stored_values()) == {w, c}
    with pytest.raises(TypeError):
        g.stored_values()[x] = np.zeros(2)  # a read-only view
    assert g.unique_name("w") == "w_2" and g.unique_name("fresh") == "fresh"
    assert g.auto_name("add") == "add_1" and g.auto_name("add") == "add_2"
    assert g.get("w") is w and g.get("nope") is None
    mark = len(g)
    y = gc.add(x, w, name="y")
    assert g.nodes_since(mark) == [y] and g.is_read(x) and not g.is_read(y)
    z = g.rename(y, "z")
    assert g.get("y") is None and g["z"] is z and g.consumers(x) == [z]
    with pytest.raises(gc.GraphCompilerError, match="renamed"):
        g.rename(x, "x2")  # z reads x
    with g.marking_gradient((z, 0)):
        d = gc.multiply(z, c, name="d")
    e = g.add_node(d.op, (z, c), d.dtype, d.shape, "e")
    assert d.is_gradient and d.origin == (z, 0) and not e.is_gradient and e.origin is None
    with pytest.raises(gc.GraphCompilerError, match="name"):
        g.check_node(d.op, (z, c), d.shape, d.dtype, "e")  # taken: add_node would refuse it too
    stored = g.stored_value(w)
    g.update_value(w, np.array([5.0, 6.0]))
    assert g.stored_value(w) is stored and list(g.value(w)) == [5.0, 6.0]  # in place
    g.rollback(mark)
    assert len(g) == mark and g.get("z") is None and not g.is_read(x) and g.get("e") is None


def test_build_grad_of_a_parameter_read_many_times_compares_no_nodes(monkeypatch):
    """Renaming a gradient node (dJ/dw) finds it among its inputs' readers by identity, from the end: a
    parameter read n times made list.index compare nodes O(n) times per rename (quadratic in build_grad: 10,000
    reads took about a minute). Every `==` between nodes goes through DeferredComparison; none may be made."""
    from graphcompiler.ops import elementwise as E

    made = []
    original = E.DeferredComparison.__init__
    monkeypatch.setattr(E.DeferredComparison, "__init__", lambda self, *a: (made.append(1), original(self, *a))[1])
    g = gc.Graph("shared")
    x = g.input("x", shape=(4,))
    w = g.parameter("w", np.linspace(0.1, 0.4, 4))
    h = x
    for _ in range(300):
        h = gc.tanh(h * w + w * w)  # w read three times per layer, twice by one node
    grads = gc.build_grad(gc.sum(h, name="J"), [w, x])
    assert not made
    for n in g.nodes:  # every reader is listed once, renamed nodes included (and no stale pre-rename node)
        for src in n.inputs:
            assert sum(r is n for r in g.consumers(src)) == 1
    ids = {id(n) for n in g.nodes}
    assert all(id(r) in ids for n in g.nodes for r in g.consumers(n))
    assert grads[w].name == "dJ/dw" and grads[x].name == "dJ/dx"
