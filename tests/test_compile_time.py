"""The fast paths behind compile time (issue 11, item 8): they make the same records as the slow ones."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphcompiler as gc
from graphcompiler.compiler import pipeline
from graphcompiler.compiler.ir import Context
from graphcompiler.compiler.schedule import declared_order, memory_order
from graphcompiler.graph import Node, new_node

ROOT = Path(__file__).resolve().parent.parent


def test_new_node_makes_the_record_the_dataclass_makes():
    g = gc.Graph("g")
    x = g.input("x", shape=(None, 3))
    y = gc.tanh(x)
    fields = [f.name for f in dataclasses.fields(Node)]
    args = ("y2", y.op, (x,), (None, 3), np.dtype("float32"), g, 7, True, (y, 0))
    fast, slow = new_node(*args), Node(*args)
    assert type(fast) is Node
    assert [getattr(fast, f) for f in fields] == [getattr(slow, f) for f in fields]
    assert fast != slow and hash(fast) != hash(slow)  # identity is equality, as for any Node
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.name = "other"  # type: ignore[misc]


def test_rebuild_keeps_every_field_but_the_inputs_and_shape():
    g = gc.Graph("g")
    x = g.input("x", shape=(None,))
    w = g.input("w", shape=(None,))
    y = gc.sin(x)
    ctx = Context(g)
    r = ctx.rebuild(y, (w,), (5,))
    for f in dataclasses.fields(Node):
        if f.name == "inputs":
            assert r.inputs == (w,)
        elif f.name == "shape":
            assert r.shape == (5,)
        else:
            assert getattr(r, f.name) == getattr(y, f.name), f.name
    assert ctx.origin_of(r) is y


def _chain(n):
    g = gc.Graph("chain")
    w = g.input("w", shape=(16,), dtype="float64")
    z = w
    for k in range(n):
        z = (gc.sin if k % 2 == 0 else gc.tanh)(z)
    seed = g.constant(np.ones(16), name="seed")
    grads = gc.build_grad(z, [w], seed=seed)
    return g, w, z, grads[w]


def test_the_memory_order_of_a_chain_is_its_declared_order_and_planned_once(monkeypatch):
    g, w, z, dw = _chain(40)
    prog = gc.compile([z, dw])
    nodes = prog._last.nodes
    order = memory_order(nodes, [z, dw])
    assert order == declared_order(sorted(nodes, key=lambda n: n.index))
    plans = []
    real = pipeline.plan_buffers
    monkeypatch.setattr(pipeline, "plan_buffers", lambda *a, **k: plans.append(1) or real(*a, **k))
    again = gc.compile([z, dw])
    assert len(plans) == 1  # the declared order is the same list: not planned a second time
    assert again.stats["peak_bytes"] == prog.stats["peak_bytes"]
    W = np.linspace(-1, 1, 16)
    got = again.run({"w": W})
    ref, g_ = W.copy(), np.ones(16)
    xs = []
    for k in range(40):
        xs.append(ref)
        ref = np.sin(ref) if k % 2 == 0 else np.tanh(ref)
    for k in range(39, -1, -1):
        g_ = g_ * (np.cos(xs[k]) if k % 2 == 0 else 1 - np.tanh(xs[k]) ** 2)
    np.testing.assert_allclose(got[0], ref, rtol=1e-12)
    np.testing.assert_allclose(got[1], g_, rtol=1e-10)


def test_compile_time_script_reports_every_pass():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "compile_time.py"), "--n", "20", "40", "--repeats", "1"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    rows = {line.split()[0] for line in out.splitlines()[2:] if line.strip()}
    assert {"build_grad", "prune", "simplify", "schedule", "plan", "lower", "load", "compile", "total"} <= rows
    assert "growth x2" in out


def _rule_graphs():
    """Graphs on which every rule with a trigger (@looks_for) fires at least once (and some on which none do)."""
    g = gc.Graph("rules")
    x = g.input("x", shape=(4, 3))
    y = g.input("y", shape=(4, 3))
    labels = g.input("labels", shape=(4,), dtype="int64")
    mask = x > y
    outs = [
        x * 1.0,
        x + 0.0,
        x - 0.0,
        0.0 - x,
        x / 1.0,
        2.0 * (3.0 * x),
        x + (-y),
        (-x) + y,
        x - (-y),
        y * gc.astype(mask, "float64"),
        gc.build_grad(gc.softmax_cross_entropy(x, labels), [x])[x],  # softmax(x) - OneHot(labels)
        gc.broadcast_to(gc.sum(x, axis=0), (4, 3)) * y,
        -(-x),
        -(2.0 * x),
        gc.log(gc.softmax(x, axis=0)),
        gc.log(gc.exp(x)),
        gc.log(1.0 + gc.exp(y)),
        gc.log(gc.sum(gc.exp(x), axis=1)),
        gc.tanh(x) * gc.sin(y) - gc.cos(x) / gc.exp(y),
    ]
    feeds = {"x": np.linspace(-1, 1, 12).reshape(4, 3), "y": np.linspace(2, 1, 12).reshape(4, 3)}
    return outs, {**feeds, "labels": np.arange(4) % 3}


def test_rule_gates_change_nothing_simplify_does(monkeypatch):
    from graphcompiler.compiler import simplify as S

    outs, feeds = _rule_graphs()
    gated = gc.compile(outs)
    fired = set(gated.stats["rewrites"])
    assert {r.__name__ for r in S.LOOKS_FOR} <= fired | {"fold"}, sorted({r.__name__ for r in S.LOOKS_FOR} - fired)
    monkeypatch.setattr(S, "LOOKS_FOR", {})  # no trigger declared: every rule tried on every node of its op
    plain = gc.compile(outs)
    assert plain.stats["rewrites"] == gated.stats["rewrites"]
    assert [s.op for s in plain.schedule] == [s.op for s in gated.schedule]
    for a, b in zip(plain.run(feeds), gated.run(feeds)):
        np.testing.assert_array_equal(a, b)


def test_a_rule_fires_only_on_the_inputs_it_looks_for(monkeypatch):
    from graphcompiler.compiler import simplify as S

    seen = []
    for name, rules in S.RULES.items():
        wrapped = []
        for rule in rules:
            looks = S.LOOKS_FOR.get(rule)

            def check(n, ctx, rule=rule, looks=looks):
                new = rule(n, ctx)
                if new is not None and looks is not None:
                    seen.append(rule.__name__)
                    assert any(x.op.name in looks for x in n.inputs), (rule.__name__, n)
                return new

            check.__name__ = rule.__name__
            wrapped.append(check)
        monkeypatch.setitem(S.RULES, name, wrapped)
    monkeypatch.setattr(S, "LOOKS_FOR", {})
    outs, feeds = _rule_graphs()
    gc.compile(outs).run(feeds)
    assert len(set(seen)) >= 12


def test_a_rules_trigger_is_written_once_beside_it():
    """LOOKS_FOR is filled by the @looks_for over each rule's def, and nowhere else in simplify.py."""
    import ast

    from graphcompiler.compiler import simplify as S

    tree = ast.parse(Path(S.__file__).read_text())
    (table,) = [n for n in tree.body if isinstance(n, ast.AnnAssign) and getattr(n.target, "id", "") == "LOOKS_FOR"]
    assert isinstance(table.value, ast.Dict) and not table.value.keys  # declared empty: no second list
    declared = {}
    for fn in tree.body:
        for d in getattr(fn, "decorator_list", []):
            if isinstance(d, ast.Call) and getattr(d.func, "id", "") == "looks_for":
                declared[fn.name] = frozenset(a.value for a in d.args)
    assert {rule.__name__: looks for rule, looks in S.LOOKS_FOR.items()} == declared
    tables = {rule for rules in [*S.RULES.values(), *S.SHAPE_RULES.values()] for rule in rules}
    assert set(S.LOOKS_FOR) <= tables and len(declared) >= 17


def test_a_rule_without_a_trigger_is_tried_on_every_node_of_its_op(monkeypatch):
    from graphcompiler.compiler import simplify as S

    assert S.input_gate(S.RULES["divide"]) is not None  # divide's own rules fire only on some inputs
    tried = []

    def divide_seen(n, ctx):  # declares no trigger
        tried.append(n.inputs)
        return None

    monkeypatch.setitem(S.RULES, "divide", [*S.RULES["divide"], divide_seen])
    assert S.input_gate(S.RULES["divide"]) is None
    g = gc.Graph("g")
    x, y = g.input("x", shape=(3,)), g.input("y", shape=(3,))
    p = gc.compile([gc.tanh(x) / gc.exp(y)])  # no constant or broadcast input: the declared rules are skipped
    assert [tuple(n.op.name for n in ins) for ins in tried] == [("tanh", "exp")]
    np.testing.assert_allclose(p.run({"x": np.ones(3), "y": np.zeros(3)})[0], np.tanh(np.ones(3)))


@pytest.mark.parametrize("names", [(), ("multipy",), ("constant", "")])
def test_looks_for_refuses_a_trigger_that_names_no_op(names):
    from graphcompiler.compiler import simplify as S

    before = dict(S.LOOKS_FOR)
    with pytest.raises(gc.GraphCompilerError, match="@looks_for names the ops"):
        S.looks_for(*names)
    assert S.LOOKS_FOR == before
