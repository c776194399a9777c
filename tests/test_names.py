"""Names and the limits of a graph file: what the graph refuses as it is built is what the loader refuses, so
every graph that can be made saves and loads back equal; names print escaped wherever a terminal shows them."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphcompiler as gc
from graphcompiler import control
from graphcompiler import graph as G
from graphcompiler import io
from test_io import assert_same_graph

# each kind of refused character: C0 (NUL, newline, tab, escape), DEL, C1, the separators, bidi
# overrides and isolates, a lone surrogate, a noncharacter
REFUSED = ["\x00", "\n", "\t", "\r", "\x1b", "\x7f", "\x85", "\x9b", "\u2028", "\u2029", "\u202a", "\u202e",
           "\u2066", "\u2069", "\ud800", "\uffff"]
ODD_BUT_ALLOWED = ["\u200b", "\u200f", "\u00ad", "\ufeff", "\u00a0", "\U000e0001"]  # not printable, no harm


def round_trip(g: gc.Graph) -> gc.Graph:
    text = io.dumps(g)
    back = io.loads(text)
    if any(n.op.name in io.CONTROL_OPS for n in g.nodes):  # a loop's op is equal only to itself: its record
        assert [n.name for n in back.nodes] == [n.name for n in g.nodes]
    else:
        assert_same_graph(g, back)
    assert io.dumps(back) == text                         # the whole file, bodies included, a fixed point
    return back


# -- 1. control characters are refused wherever a name is accepted -------------------------------

@pytest.mark.parametrize("ch", REFUSED, ids=[f"U+{ord(c):04X}" for c in REFUSED])
def test_every_entry_refuses_control_characters(ch):
    bad = f"a{ch}b"
    code = re.escape(f"U+{ord(ch):04X}")
    with pytest.raises(G.InvalidNameError, match=code) as info:
        gc.Graph(bad)
    assert isinstance(info.value, gc.GraphCompilerError) and not isinstance(info.value, gc.ShapeError)
    assert repr(bad) in str(info.value) and repr(ch) in str(info.value)
    g = gc.Graph("g")
    x = g.input("x", shape=(2,))
    makers = [
        lambda: g.input(bad, shape=(2,)),
        lambda: g.parameter(bad, np.ones(2)),
        lambda: g.parameter(bad, shape=(2,)),
        lambda: g.constant(1.0, name=bad),
        lambda: gc.tanh(x, name=bad),
        lambda: gc.add(x, 1.0, name=bad),             # a Python number: its constant is not added either
        lambda: gc.concatenate([x, x], name=bad),
    ]
    for make in makers:
        with pytest.raises(G.InvalidNameError, match=code):
            make()
    assert [n.name for n in g.nodes] == ["x"]         # a refused name adds nothing
    assert "\x1b" not in str(info.value)


@pytest.mark.parametrize("name", ["", "x" * 1001])
def test_empty_and_over_long_names_are_refused(name):
    g = gc.Graph("g")
    with pytest.raises(G.InvalidNameError, match="at most 1000|non-empty"):
        g.input(name)
    if name:
        with pytest.raises(G.InvalidNameError, match="1001 characters"):
            gc.Graph(name)
    assert len(g) == 0


def test_register_op_refuses_a_control_character_in_the_op_name():
    from dataclasses import dataclass
    from typing import ClassVar

    @dataclass(frozen=True)
    class Bell(gc.Op):
        name: ClassVar[str] = "bell\x07"

    with pytest.raises(gc.GraphCompilerError, match="control character"):
        gc.register_op(Bell)
    assert "bell\x07" not in gc.OPS


@pytest.mark.parametrize("ch", ["\x1b", "\n", "\u202e", "\x9b", "\u2028"])
@pytest.mark.parametrize("where", ["node", "graph", "input", "attr", "body", "body record", "carry name"])
def test_the_loader_refuses_control_characters(ch, where):
    g = gc.Graph("g")
    x = g.input("x", shape=(3,))
    gc.einsum("i->", gc.tanh(x, name="y"), name="e")
    gc.scan(lambda c, xi: (c + xi, c), g.constant(0.0, name="c0"), x, name="loop")
    doc = json.loads(io.dumps(g))
    bad = f"q{ch}q"
    if where == "node":
        doc["nodes"][1]["name"] = bad
    elif where == "graph":
        doc["name"] = bad
    elif where == "input":
        doc["nodes"][1]["inputs"] = [bad]
    elif where == "attr":
        e = next(r for r in doc["nodes"] if r["name"] == "e")
        e["attrs"]["subscripts"] = f"i->{ch}"
        bad = f"i->{ch}"
    else:
        loop = next(r for r in doc["nodes"] if r["op"] == "scan")
        if where == "body":
            loop["attrs"]["body"]["traced"]["graph"]["name"] = bad
        elif where == "body record":
            loop["attrs"]["body"]["name"] = bad
        else:
            loop["attrs"]["body"]["carry_names"] = [bad]
    with pytest.raises(gc.GraphFileError) as info:
        io.loads(json.dumps(doc))
    msg = str(info.value)
    assert ch not in msg                                  # the message itself is safe to print
    if where not in ("input", "carry name"):              # an input that names no node is refused as such
        assert repr(bad) in msg and f"U+{ord(ch):04X}" in msg


# -- 2. save and load agree ---------------------------------------------------------------------

def test_gradient_of_a_999_character_parameter_saves_and_loads():
    def build():
        g = gc.Graph("long")
        w = g.parameter("w" * 999, np.arange(3.0))
        v = g.parameter("w" * 998 + "v", np.ones(3))
        J = gc.sum(w * v, name="J")
        return g, gc.build_grad(J, [w, v]), w, v

    g, grads, w, v = build()
    gw, gv = grads[w].name, grads[v].name
    assert len(gw) <= G.MAX_NAME and len(gv) <= G.MAX_NAME and gw != gv
    assert gw.startswith("dJ/dwww") and gv.startswith("dJ/dwww")
    assert [n.name for n in build()[0].nodes] == [n.name for n in g.nodes]          # the same names on a rerun
    g2 = round_trip(g)
    assert g2[gw].is_gradient and g2[gv].is_gradient
    p1, p2 = gc.compile([grads[w]]), gc.compile([g2[gw]])
    np.testing.assert_array_equal(p1.run({})[0], p2.run({})[0])


def test_derived_names_are_cut_deterministically_and_stay_distinct():
    a, b = "x" * 1200 + "a", "x" * 1200 + "b"
    assert G.fit_name(a) == G.fit_name(a) and G.fit_name(a) != G.fit_name(b)
    assert len(G.fit_name(a)) == G.MAX_NAME and G.fit_name("short") == "short"
    g = gc.Graph("g")
    first = gc.identity(g.input("i"), name=g.unique_name(a))
    second = g.unique_name(a)                            # taken: the _2 variant, also cut to fit
    assert first.name == G.fit_name(a) and second == G.fit_name(a + "_2") != first.name


def test_a_scan_with_a_long_name_saves_and_loads():
    g = gc.Graph("g")
    x = g.input("x", shape=(3,))
    carry, ys = gc.scan(lambda c, xi: (c * xi, c + xi), g.constant(1.0, name="c0"), x, name="s" * 999)
    gc.sum(ys, name="J")
    assert all(len(n.name) <= G.MAX_NAME for n in g.nodes)
    round_trip(g)


def test_the_gradient_of_a_scan_with_a_long_name_saves_and_loads():
    g = gc.Graph("g")
    x = g.input("x", shape=(3,))
    carry, ys = gc.scan(lambda c, xi: (c * xi, c + xi), g.constant(1.0, name="c0"), x, name="s" * 999)
    gc.build_grad(gc.sum(ys) + carry, [x])
    round_trip(g)


@pytest.mark.parametrize("make, error, fragment", [
    (lambda g: g.input("x", shape=(1,) * 33), gc.ShapeError, "33 dimensions"),
    (lambda g: g.input("x", shape=(2**31, 2**31, 4)), gc.ShapeError, "2**62 elements"),
    (lambda g: g.input("x", dtype="float128" if hasattr(np, "float128") else "complex128"), gc.DTypeError,
     "not supported"),
    (lambda g: g.parameter("p", np.ones(2, complex)), gc.DTypeError, "complex128"),
    (lambda g: g.constant(np.longdouble(1) if np.dtype(np.longdouble).itemsize > 8 else 1j), gc.DTypeError,
     "not supported"),
    (lambda g: gc.expand_dims(g.input("x", shape=(1,) * 32), 0), gc.ShapeError, "33 dimensions"),
    (lambda g: gc.broadcast_to(g.input("x", shape=(1,)), (2**40, 2**40)), gc.ShapeError, "2**62"),
    (lambda g: gc.concatenate([g.input("x", shape=(1,))] * 4097), gc.GraphCompilerError, "4097 inputs"),
    (lambda g: gc.diagonal(g.input("x", shape=(3, 3)), offset=2**70), gc.GraphCompilerError, "offset="),
    (lambda g: gc.roll(g.input("x", shape=(3,)), shift=2**63, axis=0), gc.GraphCompilerError, "over 2**62"),
])
def test_the_build_enforces_each_limit_of_the_loader(make, error, fragment):
    """Each of these was built before, then saved to a file the loader refused."""
    g = gc.Graph("g")
    with pytest.raises(error, match=fragment.replace("*", r"\*")):
        make(g)
    assert all(n.op.name == "input" for n in g.nodes)    # the refused node adds nothing (its input stays)


def test_non_finite_float_attributes_round_trip():
    g = gc.Graph("g")
    x = g.input("x", shape=(3,))
    gc.pad(x, [(1, 1)], value=-np.inf, name="p")
    gc.pad(x, [(2, 0)], value=np.inf, name="q")
    back = round_trip(g)
    assert back["p"].op.value == -np.inf and back["q"].op.value == np.inf
    gc.pad(x, [(0, 2)], value=np.nan, name="r")          # nan: equal to no op, not even its own copy
    text = io.dumps(g)
    assert np.isnan(io.loads(text)["r"].op.value) and io.dumps(io.loads(text)) == text


def test_save_warns_when_the_file_needs_raised_load_limits(tmp_path, monkeypatch):
    g = gc.Graph("g")
    g.parameter("w", np.ones(40))
    gc.sum(g.input("x", shape=(3,)), name="s")
    path = tmp_path / "g.json"
    with warnings.catch_warnings():
        warnings.simplefilter("error")                    # under the limits: no warning
        g.save(path)
    monkeypatch.setitem(io.LIMITS, "max_nodes", 2)
    monkeypatch.setitem(io.LIMITS, "max_array_elements", 10)
    with pytest.warns(io.GraphFileWarning, match="max_nodes=3, max_array_elements=40") as record:
        g.save(path)
    with pytest.raises(gc.GraphFileError):
        gc.load(path)                                     # the defaults refuse it, as the warning said
    assert "gc.load(path, max_nodes=3, max_array_elements=40)" in str(record[0].message)
    assert_same_graph(g, gc.load(path, max_nodes=3, max_array_elements=40))


def _nested(levels: int) -> gc.Graph:
    """A graph of `levels` scans, each in the body of the one outside it."""
    def nest(c, level):
        if level == 0:
            return c * 2.0
        out, _ = gc.scan(lambda d, _: (nest(d, level - 1), d), c, length=2)
        return out

    g = gc.Graph("g")
    nest(g.constant(1.0, name="c0"), levels)
    return g


def test_bodies_nested_deeper_than_a_file_holds_are_refused_on_build():
    round_trip(_nested(G.MAX_DEPTH))                     # 8 deep: built, saved and loaded
    with pytest.raises(gc.GraphCompilerError, match="nests control flow 9 deep, over the limit of 8") as info:
        _nested(G.MAX_DEPTH + 1)
    assert not isinstance(info.value, gc.GraphFileError)


def test_save_refuses_bodies_nested_deeper_than_a_file_holds(monkeypatch):
    g = _nested(2)
    monkeypatch.setattr(io, "MAX_DEPTH", 1)              # save's own check, behind the graph's
    with pytest.raises(gc.GraphCompilerError, match="nested 2 deep"):
        io.dumps(g)


def test_a_scan_longer_than_a_file_holds_is_refused_on_build():
    g = gc.Graph("g")
    c0 = g.constant(0.0, name="c0")
    with pytest.raises(gc.GraphCompilerError, match=r"length.*1099511627776.* 2147483648"):
        gc.scan(lambda c, _: (c + 1.0, c), c0, length=2**40)
    assert [n.name for n in g.nodes] == ["c0"]
    gc.scan(lambda c, _: (c + 1.0, c), c0, length=G.MAX_STEPS, name="long")  # the limit itself: saved, loaded
    round_trip(g)


# the property test: random graphs with random names, their gradients, saved and loaded back equal

UNARY = [gc.exp, gc.tanh, gc.sin, gc.relu, gc.negative, gc.square, gc.sigmoid, gc.abs]
BINARY = [gc.add, gc.subtract, gc.multiply, gc.maximum, gc.minimum]

names = st.one_of(
    st.none(),
    st.text(min_size=1, max_size=12),                                              # any characters, controls too
    st.builds(lambda s, n: (s * n)[: G.MAX_NAME], st.text(min_size=1, max_size=8), st.integers(100, 1000)),
    st.sampled_from(["x" * 1000, "d" * 999, "é" * 1000, "\u200b" * 5, "名前", "a/b", "dJ/dw"]),
)
steps = st.lists(st.tuples(st.sampled_from(["unary", "binary", "sum", "transpose", "slice", "softmax", "reshape",
                                            "concat", "expand", "pad"]),
                           st.integers(0, 30), st.integers(0, 30), st.integers(0, 7), names),
                 min_size=1, max_size=10)


def _named(make, name):
    """make(name); a name the graph refuses (a control character, a duplicate) is refused with the right
    error and nothing added, and the node is made without a name."""
    if name is None:
        return make(None)
    try:
        return make(name)
    except (G.InvalidNameError, G.DuplicateNameError) as e:
        if isinstance(e, G.InvalidNameError):
            assert G._REFUSED.search(name) or len(name) > G.MAX_NAME
        return make(None)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.one_of(st.none(), st.text(max_size=20)), names, names, steps, st.booleans(), st.booleans())
def test_random_graphs_with_random_names_save_and_load_equal(gname, pname, cname, plan, grad_all, second):
    try:
        g = gc.Graph(gname)
    except G.InvalidNameError:
        assert G.name_problem(gname) is not None
        g = gc.Graph()
    x = _named(lambda n: g.input(n or "x", shape=(None, 3)), pname if pname and pname != "x" else None)
    w = _named(lambda n: g.parameter(n or g.unique_name("w"), np.arange(3.0) - 1), pname)
    m = _named(lambda n: g.parameter(n or g.unique_name("m"), np.eye(3)), cname)
    pool = [x, w, m]
    for kind, i, j, k, name in plan:
        a, b = pool[i % len(pool)], pool[j % len(pool)]
        n_before = len(g)
        try:
            if kind == "unary":
                node = _named(lambda n: UNARY[k](a, name=n), name)
            elif kind == "binary":
                node = _named(lambda n: BINARY[k % len(BINARY)](a, b, name=n), name)
            elif kind == "sum" and a.ndim:
                node = _named(lambda n: gc.sum(a, axis=k % a.ndim, keepdims=bool(k % 2), name=n), name)
            elif kind == "transpose":
                node = _named(lambda n: gc.transpose(a, name=n), name)
            elif kind == "slice" and a.ndim:
                node = a[k % 2:]
            elif kind == "softmax" and a.ndim:
                node = _named(lambda n: gc.softmax(a, name=n), name)
            elif kind == "reshape":
                node = _named(lambda n: gc.reshape(a, (-1,), name=n), name)
            elif kind == "concat" and a.ndim and b.ndim == a.ndim:
                node = _named(lambda n: gc.concatenate([a, b], axis=0, name=n), name)
            elif kind == "expand":
                node = _named(lambda n: gc.expand_dims(a, 0, name=n), name)
            elif kind == "pad" and a.ndim and None not in a.shape:
                node = _named(lambda n: gc.pad(a, [(0, k % 2)] * a.ndim, value=-np.inf, name=n), name)
            else:
                continue
        except gc.ShapeError:                           # shapes that do not fit: the step adds nothing
            assert len(g) == n_before
            continue
        pool.append(node)
    cost = gc.sum(pool[-1], name=G.fit_name(f"J{cname or ''}") if cname and not G._REFUSED.search(cname)
                  and G.fit_name(f"J{cname}") not in g else None)
    if cost.dtype.kind == "f":
        targets = [t for t in pool[:3] if t.dtype.kind == "f"] if grad_all else [w]
        grads = gc.build_grad(cost, targets, disconnected="zero")
        if second and w in grads:
            gc.build_grad(gc.sum(grads[w] * grads[w]), [w], disconnected="zero")
    for n in g.nodes:
        assert G.name_problem(n.name) is None, n.name
    round_trip(g)


# -- 3. printing escapes what a terminal would act on or not show -------------------------------

@pytest.mark.parametrize("ch", ODD_BUT_ALLOWED, ids=[f"U+{ord(c):04X}" for c in ODD_BUT_ALLOWED])
def test_listing_and_repr_escape_characters_a_terminal_does_not_show(ch):
    g = gc.Graph(f"graph{ch}")
    x = g.input(f"x{ch}", shape=(2,))
    y = gc.tanh(x, name=f"y{ch}")
    gc.build_grad(gc.sum(y), [x])
    for text in (str(g), repr(g), repr(x), repr(y)):
        assert ch not in text, text
    assert repr(ch)[1:-1] in str(g) and repr(ch)[1:-1] in repr(x)
    assert all(line.isprintable() for line in str(g).splitlines())
    with pytest.raises(gc.GraphCompilerError) as info:
        bool(y)
    assert ch not in str(info.value)


def test_escape_is_the_clis():
    from graphcompiler import cli
    assert cli.escape is G.escape
    assert G.escape("a\x1b[2Jb\n", keep="\n") == "a\\x1b[2Jb\n" and G.escape("plain") == "plain"


def test_the_loader_and_the_graph_share_one_set_of_limits():
    for name in ("DTYPES", "MAX_NAME", "MAX_RANK", "MAX_INPUTS", "MAX_ATTR_ITEMS", "MAX_INT", "MAX_DEPTH",
                 "record_limit"):
        assert getattr(io, name) is getattr(G, name), name
    assert control.MAX_SCAN_LENGTH == G.MAX_STEPS and control.MAX_WHILE_STEPS == G.MAX_WHILE_STEPS
    assert io.name_problem is G.name_problem


def test_a_node_over_a_limit_adds_none_of_its_constants():
    g = gc.Graph("g")
    x = g.input("x", shape=(1,))
    with pytest.raises(gc.GraphCompilerError, match="4097 inputs"):
        gc.concatenate([x] * 4096 + [np.ones(1)])         # the array would become a constant node
    assert [n.name for n in g.nodes] == ["x"]
