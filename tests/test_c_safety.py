"""The "c" backend writes no user text into the C it compiles: names from a graph file cannot end a comment
(`*/`, a line splice made of a backslash or the `??/` trigraph before a carriage return), cannot forge the
generator's own markers, and never run at load; index arithmetic in the generated C is 64-bit."""

import ctypes
import json
import os
import re

import numpy as np
import pytest

import graphcompiler as gc
from graphcompiler.backends import c as cbackend
from graphcompiler.graph import name_problem

needs_cc = pytest.mark.skipif(cbackend.find_compiler() is None, reason="no C compiler on this machine")

# each name carries a tag ("usrK") so a test can see whether any of it reached the generated source
HOSTILE = [
    "*/",
    "*\\\r/ int gc_oops;",
    "*??/\r/ int gc_oops;",
    "??/",
    "??=??(??)??'??<??>??!??-",
    "a\nb\r\nc\rd",
    "@@SPLIT 0@@",
    "@@SPLIT 99@@",
    "y@99999@",
    "@0@",
    "\\",
    "/* nested /*",
    "//",
    "quote \" and ' and %s {}",
    "tab\tvtab\vff\fnul\x00end",
    "é☃ non-ASCII",
    "\u2028line separator",
]


def hostile_graph(tagged):
    """A chain of steps named by `tagged`, some C translates and a concatenate it does not (a C segment split),
    so that every kind of step comment and the segment markers meet the names."""
    g = gc.Graph("hostile")
    x = g.input(tagged[0], shape=(3, 4))
    W = g.parameter(tagged[1], np.linspace(-1, 1, 16).reshape(4, 4))
    h = x
    names = iter(tagged[2:])
    for k in range(6):
        h = gc.tanh(gc.matmul(h, W, name=next(names)), name=next(names)) if k % 2 == 0 else gc.sin(h, name=next(names))
    c = gc.concatenate([h, h * 2.0], axis=0, name=next(names))  # not translated: the C function splits here
    J = gc.sum(gc.exp(c, name=next(names)), name=next(names))
    grads = gc.build_grad(J, [W, x])
    return g, [J, grads[W], grads[x], c], {tagged[0]: np.arange(12.0).reshape(3, 4) / 10}


# Graph and the loader refuse names with control characters (graph.name_problem); the generator must still
# keep every name out of the C, so the allowed ones are compiled and the refused ones are checked refused.
ALLOWED = [h for h in HOSTILE if name_problem(h) is None]
REFUSED = [h for h in HOSTILE if name_problem(h) is not None]


def tagged_names():
    return [f"usr{k}_{ALLOWED[k % len(ALLOWED)]}" for k in range(2 + 6 + 3 + 3)]


@pytest.mark.parametrize("name", REFUSED)
def test_names_with_control_characters_are_refused_before_any_c(name):
    g = gc.Graph("refused")
    with pytest.raises(gc.GraphCompilerError, match="control character"):
        g.input(name, shape=(3,))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHCOMPILER_CACHE_DIR", str(tmp_path / "cache"))


@needs_cc
@pytest.mark.filterwarnings("ignore:graphcompiler. the C backend runs")
def test_hostile_names_compile_run_and_stay_out_of_the_source():
    tagged = tagged_names()
    g, outs, feeds = hostile_graph(tagged)
    ref = gc.compile(outs, backend="numpy").run(feeds)
    for optimize in (True, False):
        p = gc.compile(outs, backend="c", optimize=optimize)
        got = p.run(feeds)
        ev = p._last.evaluator
        assert ev.fallback_reason is None, ev.fallback_reason
        for a, b in zip(got, ref):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        src = p.source("c")
        assert "gc_run_1" in src  # the split is there, and the names did not add any
        assert not re.search(r"usr\d", src)
        assert "??" not in src and "\r" not in src
        assert all(ch == "\n" or 32 <= ord(ch) < 127 for ch in src)


@needs_cc
def test_a_marker_named_node_compiles_like_any_other():
    for name in ("y@99999@", "@@SPLIT 0@@", "@1@", "@@SPLIT 1@@ @0@"):
        g = gc.Graph("m")
        x = g.input("x", shape=(4,))
        z = gc.sum(gc.exp(x, name=name) * 3.0, name=name + "s")
        p = gc.compile([z], backend="c")
        got = p.run({"x": np.arange(4.0)})
        assert p._last.evaluator.fallback_reason is None
        np.testing.assert_allclose(got[0], 3 * np.exp(np.arange(4.0)).sum(), rtol=1e-13)


def payload(marker: str, splice: str) -> str:
    """A name that, written into a C comment, ends it (via the splice) and defines a load-time constructor
    that creates `marker`; then opens a function and a comment that swallow the rest of the original line."""
    return (
        "*" + splice + "/ } extern int creat(const char *, unsigned); "
        '__attribute__((constructor)) void gc_pwn(void) { creat("' + marker + '", 0644); } '
        "int gc_pad(void **P, char *A) { /*"
    )


@needs_cc
@pytest.mark.parametrize("splice", ["\\\r", "??/\r", "\\\r\n", "??/\n", "\\\n", ""])
def test_a_payload_in_a_node_name_from_a_graph_file_never_runs(tmp_path, splice):
    marker = str(tmp_path / "pwned")
    name = payload(marker, splice)
    g = gc.Graph("evil")
    x = g.input("x", shape=(3,))
    gc.exp(x, name="PLACEHOLDER")
    path = tmp_path / "evil.json"
    g.save(str(path))
    # the file is written by hand, as an attacker would: the name goes in as JSON text
    path.write_text(path.read_text().replace('"PLACEHOLDER"', json.dumps(name)))
    if name_problem(name) is not None:  # a splice made of control characters: the loader refuses the file
        with pytest.raises(gc.GraphFileError, match="control character"):
            gc.load(str(path))
        assert not os.path.exists(marker)
        return
    g2 = gc.load(str(path))
    node = next(n for n in g2.nodes if n.name.startswith("*"))
    p = gc.compile([node], backend="c")  # static shapes: compiled and loaded here
    assert not os.path.exists(marker), "a node name ran as C code"
    got = p.run({"x": np.zeros(3)})
    assert p._last.evaluator.fallback_reason is None
    np.testing.assert_array_equal(got[0], np.ones(3))
    assert "gc_pwn" not in p.source("c")


@needs_cc
def test_trigraphs_are_not_interpreted():
    cc = cbackend.find_compiler()
    # "??=" is three characters where trigraphs are off; one ('#') where they are on
    path = cbackend._build(cc, 'int gc_len(void) { return (int)sizeof("??=") - 1; }\n', ".so")
    lib = ctypes.CDLL(path)
    assert lib.gc_len() == 3


# -- 64-bit index arithmetic -------------------------------------------------------------------------

_ALLOWED_INT = (
    r"\bint gc_run(_\d+)?\(",  # the entry points return a step number
    r"typedef int gc_int;",  # a 32-bit BLAS's integer (checked against every size before a call)
)


def narrow_index_types(src: str) -> list[str]:
    for pattern in _ALLOWED_INT:
        src = re.sub(pattern, "", src)
    return re.findall(r"\b(?:int|long|short|unsigned)\b(?!\w)[^;\n]{0,30}", src)


@needs_cc
@pytest.mark.parametrize("dtype", ["float64", "int64"])
def test_sizes_strides_and_loop_counters_are_64_bit(dtype):
    rng = np.random.default_rng(0)
    g = gc.Graph("wide")
    x = g.input("x", shape=(300, 70), dtype=dtype)
    m = g.input("m", shape=(70, 40), dtype=dtype)
    v = g.input("v", shape=(70,), dtype=dtype)
    y = g.input("y", shape=(300,), dtype="int64")
    outs = [gc.matmul(x, m), gc.sum(x, axis=0), gc.max(x, axis=1), gc.transpose(x) * 2, x * v, gc.prod(x[:3, :5])]
    if dtype == "float64":
        outs += [
            gc.softmax(x, axis=0),
            gc.logsumexp(x, axis=1),
            gc.softmax_cross_entropy(x, y),
            gc.mse(x, v),
            gc.sum(x * x),
            gc.exp(x) + gc.sin(x),
        ]
    feeds = {
        "x": (rng.standard_normal((300, 70)) * 3).astype(dtype),
        "m": (rng.standard_normal((70, 40)) * 3).astype(dtype),
        "v": (rng.standard_normal(70) * 3).astype(dtype),
        "y": rng.integers(0, 70, 300),
    }
    ref = gc.compile(outs, backend="numpy").run(feeds)
    p = gc.compile(outs, backend="c")
    got = p.run(feeds)
    assert p._last.evaluator.fallback_reason is None
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-10)
    src = p.source("c")
    assert narrow_index_types(src) == []
    assert "int64_t" in src


def test_the_check_of_index_types_sees_narrow_ones():
    assert narrow_index_types("for (long i = 0; i < 3L; i++)") != []
    assert narrow_index_types("static void f(int m, int64_t n)") != []
    assert narrow_index_types("int gc_run(void **P, char *A) { for (int64_t i = 0; i < 3; i++) }") == []
