"""Fuzzing names across every surface a name reaches: Graph, save and load, the generated C and the explorer
page. Names are drawn from every control character, the C generator's own markers, comment and splice
breakers, the page template's placeholders and markup. A name Graph refuses is refused by the loader too (a
file written by hand); a name Graph accepts saves and loads unchanged, compiles on "c" with the same values
as "numpy" (and stays out of the C source), and comes back out of the page's data exactly, with no markup of
it in the page."""

from __future__ import annotations

import json
import re
import unicodedata

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphcompiler as gc
from graphcompiler import io
from graphcompiler.backends import c as cbackend
from graphcompiler.explore import page_html
from graphcompiler.graph import name_problem

CONTROL = [chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))] + [
    "\u2028",
    "\u2029",
    "\u202e",
    "\u2066",
]
PIECES = [
    "y@99999@",
    "@@SPLIT 0@@",
    "@0@",
    "*/",
    "/*",
    "//",
    "??/",
    "??=",
    "\\",
    '"',
    "'",
    "%DATA%",
    "%SVG%",
    "%SCRIPT%",
    "%CSP%",
    "</script>",
    "<script>window.__pwned=1</script>",
    "<img src=x onerror=alert(1)>",
    "</svg>",
    "</math>",
    "&lt;",
    "&amp;",
    "é",
    "\u200b",
    "\U0001f600",
    "x",
    " ",
]
names = st.lists(st.sampled_from(PIECES + CONTROL), min_size=1, max_size=6).map("".join)


def _graph(name: str) -> tuple[gc.Graph, list[gc.Node], dict]:
    """A graph whose input, parameter and ops carry `name` (with a suffix each: names are unique)."""
    g = gc.Graph(name)
    x = g.input(name + "QZx", shape=(2, 3))
    W = g.parameter(name + "QZW", np.linspace(-1, 1, 9).reshape(3, 3))
    h = gc.tanh(gc.matmul(x, W, name=name + "QZxW"), name=name)
    J = gc.sum(gc.exp(h, name=name + "QZe"), name=name + "QZJ")
    grads = gc.build_grad(J, [W])
    return g, [J, grads[W], h], {name + "QZx": np.arange(6.0).reshape(2, 3) / 7}


def _file_with_name(name: str) -> str:
    """A graph file, written by hand (as an attacker would), whose node is called `name`."""
    g = gc.Graph("file")
    gc.exp(g.input("x", shape=(3,)), name="PLACEHOLDER")
    return io.dumps(g).replace('"PLACEHOLDER"', json.dumps(name))


def _is_refused(name: str) -> bool:
    return any(c in name for c in CONTROL) or any(unicodedata.category(c) == "Cs" for c in name)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=names)
def test_refused_names_are_refused_by_graph_and_by_the_loader(name):
    if not _is_refused(name):
        assert name_problem(name) is None
        return
    assert name_problem(name) is not None
    g = gc.Graph("g")
    x = g.input("x", shape=(3,))
    for make in (lambda: gc.Graph(name), lambda: g.input(name, shape=(3,)), lambda: gc.exp(x, name=name)):
        with pytest.raises(gc.GraphCompilerError, match=r"U\+[0-9A-F]{4}"):  # names the character
            make()
    assert [n.name for n in g.nodes] == ["x"]  # a refused node adds nothing
    with pytest.raises(gc.GraphFileError):
        io.loads(_file_with_name(name))


allowed = names.filter(lambda n: name_problem(n) is None)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=allowed)
def test_allowed_names_save_load_compile_and_draw_unchanged(name):
    g, outs, feeds = _graph(name)
    back = io.loads(io.dumps(g))
    assert [n.name for n in back.nodes] == [n.name for n in g.nodes] and back.name == g.name
    ref = gc.compile(outs, backend="numpy").run(feeds)
    if cbackend.find_compiler() is not None:
        outs_back = [back[o.name] for o in outs]
        p = gc.compile(outs_back, backend="c")
        got = p.run(feeds)
        assert p._last.evaluator.fallback_reason is None
        for a, b in zip(got, ref):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
        src = p.source("c")
        assert all(ch == "\n" or 32 <= ord(ch) < 127 for ch in src) and "??" not in src
        assert "QZ" not in src, "a user's name reached the C source"
    text = page_html(back, values={})
    m = re.search(r'<script type="application/json" id="gc-data">(.*?)</script>', text, re.S)
    assert m is not None, "the page's data block is intact"
    data = json.loads(m.group(1))
    assert [n["name"] for n in data["nodes"]] == [n.name for n in back.nodes]
    assert text.count('id="gc-data"') == 1
    markup = text[: text.rindex("<script>")]
    assert "<img" not in markup and "<script>window" not in markup and "</math><" not in m.group(1)
