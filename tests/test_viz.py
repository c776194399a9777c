"""Tests of graphcompiler.viz: the SVG is parsed (names, legend, colours per kind, escaping, show= filters)."""

from __future__ import annotations

import importlib.util
import pathlib
import re
import shutil
import types
import xml.etree.ElementTree as ET

import networkx as nx
import numpy as np
import pytest

import graphcompiler as gc
from graphcompiler import viz
from graphcompiler.errors import GraphCompilerError

SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
ROOT = pathlib.Path(__file__).resolve().parents[1]


# -- graphs -------------------------------------------------------------------------------------

def scoped_mlp():
    """Two layers in name scopes, so gradient names (dJ/dlayer1/z) contain "/" too."""
    rng = np.random.default_rng(1)
    g = gc.Graph("scoped")
    x = g.input("x", shape=(None, 4))
    W1 = g.parameter("layer1/W", rng.normal(size=(4, 3)))
    W2 = g.parameter("layer2/W", rng.normal(size=(3, 1)))
    h = gc.relu(gc.matmul(x, W1, name="layer1/z"), name="layer1/h")
    out = gc.matmul(h, W2, name="layer2/out")
    J = gc.sum(gc.square(out, name="loss/sq"), name="loss/J")
    grads = gc.build_grad(J, [W1, W2])
    return g, J, grads


# -- reading SVG --------------------------------------------------------------------------------

def parse(svg_text: str) -> ET.Element:
    return ET.fromstring(svg_text.encode("utf-8"))


def svg_of(what, **options) -> ET.Element:
    return parse(viz.svg(what, **options))


def texts(root: ET.Element) -> list[str]:
    return [(t.text or "").strip() for t in root.iter(SVG + "text")]


def drawn_nodes(root: ET.Element) -> dict[str, ET.Element]:
    """The <g class="node"> groups by the node name written in bold on their first line."""
    out = {}
    for g in root.iter(SVG + "g"):
        if g.get("class") != "node":
            continue
        bold = [t.text for t in g.iter(SVG + "text") if t.get("font-weight") == "bold"]
        if bold:
            out[bold[0]] = g
    return out


def fill_of(g: ET.Element) -> str:
    for el in g.iter():
        if el.tag in (SVG + "ellipse", SVG + "polygon", SVG + "path") and el.get("fill") not in (None, "none"):
            return el.get("fill")
    raise AssertionError("node has no filled shape")


def strokes(g: ET.Element) -> set[str]:
    return {el.get("stroke") for el in g.iter() if el.get("stroke")}


def edges(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(SVG + "g") if g.get("class") == "edge"]


def edge_color(e: ET.Element) -> str:
    return next(el.get("stroke") for el in e.iter(SVG + "path"))


# -- contents -----------------------------------------------------------------------------------

@needs_dot
def test_every_node_is_drawn_with_name_op_and_shape_and_a_legend(make_mlp):
    g, n = make_mlp(grads=True)
    root = svg_of(g)
    drawn = drawn_nodes(root)
    assert set(drawn) == {node.name for node in g.nodes}
    for node in g.nodes:
        words = " ".join(texts(drawn[node.name]))
        if node.op.name != "constant" or node.shape != ():     # scalar constants show their value instead
            assert node.op.name in words and str(node.shape) in words, (node.name, words)
    all_text = texts(root)
    assert "Legend" in all_text
    for kind in viz.KINDS:
        assert kind in all_text, kind


@needs_dot
def test_the_kinds_get_distinct_colours_and_the_legend_uses_the_same_ones(make_mlp):
    g, n = make_mlp(grads=True)
    root = svg_of(g)
    drawn = drawn_nodes(root)
    by_kind = {viz.DATA_FORWARD: n["h"], viz.PARAMS_FORWARD: n["W1"], viz.DATA_BACKWARD: g["dJ/dz"],
               viz.PARAMS_BACKWARD: g["dJ/dW1"], viz.CONSTANT: n["lam"]}
    kinds = viz.classify(g.nodes)
    fills = {}
    for kind, node in by_kind.items():
        assert kinds[node] == kind, (node.name, kinds[node])
        fills[kind] = fill_of(drawn[node.name])
    assert len(set(fills.values())) == len(fills), fills
    legend_fills = {p.get("fill") for p in root.iter(SVG + "polygon")
                    if not any(p in list(g_.iter()) for g_ in drawn.values())}
    assert set(fills.values()) <= legend_fills
    # every node of a kind has that kind's colour
    for node in g.nodes:
        if node not in n.values() or node.inputs:
            assert fill_of(drawn[node.name]) == fills[kinds[node]], node.name


@needs_dot
def test_forward_and_backward_ops_and_leaves_differ_in_shape_too(make_mlp):
    g, n = make_mlp(grads=True)
    drawn = drawn_nodes(svg_of(g))
    tags = {name: [el.tag for el in grp.iter() if el.tag in (SVG + "ellipse", SVG + "polygon", SVG + "path")][0]
            for name, grp in drawn.items()}
    assert tags["x"].endswith("ellipse")               # data: an ellipse
    assert tags["W1"].endswith("path")                 # parameter: a cylinder
    assert tags["z"].endswith("path")                  # forward op: a rounded box (a path)
    assert tags["dJ/dz"].endswith("polygon")           # backward op: a square box


@needs_dot
def test_outputs_have_a_double_border(make_mlp):
    g, n = make_mlp(grads=True)
    drawn = drawn_nodes(svg_of(g))
    def borders(name):
        return [el for el in drawn[name].iter() if el.tag in (SVG + "polygon", SVG + "path")]
    assert len(borders("J")) == 2 and len(borders("dJ/dW1")) == 2
    assert len(borders("z")) == 1


@needs_dot
def test_labels_are_escaped_so_any_name_is_valid_svg():
    g = gc.Graph('odd <graph> & "name"')
    a = g.input('a<b>&"c', shape=(2,))
    b = gc.sin(a, name="x:1 port")
    c = gc.multiply(b, g.constant(2.0, name="{braces}|bar"), name="back\\slash\\N")
    d = gc.sum(c, name="it's <b>bold</b>")
    gc.exp(d, name="tab bell ünï €")       # control characters are refused in names (tests/test_names.py)
    gc.build_grad(d, [a])
    svg_text = viz.svg(g, provenance=True, edge_shapes=True)
    root = parse(svg_text)                     # a label that was not escaped would break the XML
    names = set(drawn_nodes(root))
    assert {'a<b>&"c', "x:1 port", "{braces}|bar", "back\\slash\\N", "it's <b>bold</b>"} <= names
    assert g.name in texts(root)
    assert "tab bell ünï €" in names
    assert "<b>bold</b>" not in svg_text       # the markup in a name is text, never markup
    tips = {a.get(XLINK + "title") for a in root.iter(SVG + "a")}
    assert any(t and t.startswith("back\\slash\\N: multiply") for t in tips)   # \N is not dot's node id


@needs_dot
def test_show_forward_and_backward_filter_the_nodes(make_mlp):
    g, n = make_mlp(grads=True)
    forward = {x.name for x in g.nodes if not x.is_gradient}
    backward = {x.name for x in g.nodes if x.is_gradient}
    assert set(drawn_nodes(svg_of(g, show="forward"))) == forward
    assert set(drawn_nodes(svg_of(g, show="backward", context=False))) == backward
    with_context = set(drawn_nodes(svg_of(g, show="backward")))
    read = {x.name for b in g.nodes if b.is_gradient for x in b.inputs if not x.is_gradient}
    assert with_context == backward | read
    assert "J" not in with_context and "L" not in with_context      # B never reads the cost itself
    assert {"h", "z", "W2"} <= with_context                          # the values backward needs


def test_show_and_rankdir_are_checked(make_mlp):
    g, n = make_mlp(grads=True)
    with pytest.raises(GraphCompilerError, match="show"):
        gc.to_dot(g, show="sideways")
    with pytest.raises(GraphCompilerError, match="rankdir"):
        gc.to_dot(g, rankdir="diagonal")
    with pytest.raises(GraphCompilerError, match="Graph, a Node"):
        gc.to_dot(42)
    other = gc.Graph("other")
    with pytest.raises(GraphCompilerError, match="one graph"):
        gc.to_dot([n["J"], other.input("q")])


@needs_dot
def test_a_node_or_a_list_of_nodes_draws_their_ancestors(make_mlp):
    g, n = make_mlp(grads=True)
    assert set(drawn_nodes(svg_of(n["h"]))) == {"x", "W1", "z", "h"}
    both = set(drawn_nodes(svg_of([n["o"], n["s"]])))
    assert {"x", "W1", "W2", "z", "h", "o", "s", "lambda"} <= both
    assert "J" not in both and "L" not in both and not any(name.startswith("dJ/") for name in both)


# -- the rule for the four kinds ------------------------------------------------------------------

def test_params_backward_nodes_only_lead_to_parameter_gradients(make_mlp):
    """The rule of the legend: a params-backward node never feeds data backward, and reaches some dJ/dW."""
    g, n = make_mlp(grads=True)
    kinds = viz.classify(g.nodes)
    dx = nx.DiGraph((a.name, b.name) for b in g.nodes for a in b.inputs)
    param_grads = {n["dW1"].name, n["dW2"].name}
    params_bwd = [v for v in g.nodes if kinds[v] == viz.PARAMS_BACKWARD]
    assert params_bwd and param_grads <= {v.name for v in params_bwd}
    for v in params_bwd:
        assert ({v.name} | nx.descendants(dx, v.name)) & param_grads, v.name
        for c in g.consumers(v):
            assert kinds[c] != viz.DATA_BACKWARD, (v.name, c.name)
    data_bwd = {v.name for v in g.nodes if kinds[v] == viz.DATA_BACKWARD}
    assert {"dJ/dh", "dJ/dz", "dJ/do", "dJ/dJ"} <= data_bwd
    assert kinds[n["x"]] == kinds[n["h"]] == viz.DATA_FORWARD
    assert kinds[g["dJ/dJ"]] == viz.DATA_BACKWARD


def test_forward_values_computed_from_parameters_alone_are_params_forward(make_mlp):
    g, n = make_mlp(grads=True)
    kinds = viz.classify(g.nodes)
    reg = [v for v in g.nodes if not v.is_gradient and v.op.name == "multiply" and v.inputs[0] is v.inputs[1]]
    assert reg and all(kinds[v] == viz.PARAMS_FORWARD for v in reg)     # W1 * W1, W2 * W2
    assert kinds[n["lam"]] == viz.CONSTANT
    assert kinds[n["s"].inputs[0]] == viz.CONSTANT                      # lambda / 2


def test_kinds_of_a_second_derivative_and_a_long_chain():
    g = gc.Graph("chain")
    w = g.parameter("w", np.array(0.3))
    x = w
    for _ in range(1200):                       # deeper than Python's recursion limit
        x = gc.sin(x)
    dw = gc.build_grad(x, [w])[w]
    kinds = viz.classify(g.nodes)
    assert kinds[dw] == viz.PARAMS_BACKWARD
    dot = gc.to_dot(g, align=True, provenance=True)
    assert dot.source.count("->") >= 3 * 1200
    h = gc.Graph("second")
    v = h.parameter("v", np.array(0.5))
    y = gc.multiply(gc.exp(v), v, name="y")
    d1 = gc.build_grad(y, [v])[v]
    d2 = gc.build_grad(d1, [v])[v]
    assert viz.classify(h.nodes)[d2] == viz.PARAMS_BACKWARD


# -- provenance, scopes, layout -------------------------------------------------------------------

@needs_dot
def test_provenance_draws_one_faint_edge_per_backward_node_to_its_origin(make_mlp):
    g, n = make_mlp(grads=True)
    plain = [e for e in edges(svg_of(g)) if edge_color(e) == viz.PROVENANCE_COLOR]
    assert plain == []
    root = svg_of(g, provenance=True)
    faint = [e for e in edges(root) if edge_color(e) == viz.PROVENANCE_COLOR]
    expected = [v for v in g.nodes if v.is_gradient and v.origin is not None]
    assert len(faint) == len(expected)
    # the tooltip names the forward node and the input index, i.e. the forward edge
    tips = {a.get(XLINK + "title") for e in faint for a in e.iter(SVG + "a")}
    relu_part = g["dJ/dz"]
    v, i = relu_part.origin
    assert any(f"bprop of {v.name} ({v.op.name}) for its input {i}" in (t or "") for t in tips)
    assert "provenance" in " ".join(texts(root))


def _cluster_boxes(root):
    boxes = {}
    for g in root.iter(SVG + "g"):
        if g.get("class") == "cluster":
            label = [t.text for t in g.iter(SVG + "text")]
            d = next(el for el in g if el.tag in (SVG + "path", SVG + "polygon"))
            nums = [float(v) for v in d.get("d", d.get("points", "")).replace("M", " ").replace("C", " ")
                    .replace(",", " ").split()]
            xs, ys = nums[0::2], nums[1::2]
            boxes[label[0] if label else ""] = (min(xs), max(xs), min(ys), max(ys))
    return boxes


def _centre(node_group):
    t = next(node_group.iter(SVG + "text"))
    return float(t.get("x")), float(t.get("y"))


@needs_dot
def test_group_boxes_scopes_and_gradient_names_are_not_scopes():
    g, J, grads = scoped_mlp()
    root = svg_of(g, group=True)
    boxes = _cluster_boxes(root)
    assert set(boxes) == {"layer1/", "layer2/", "loss/"}     # no "dJ/" or "dloss/" box
    drawn = drawn_nodes(root)
    def inside(name, scope):
        x, y = _centre(drawn[name])
        x0, x1, y0, y1 = boxes[scope]
        return x0 <= x <= x1 and y0 <= y <= y1
    assert inside("layer1/z", "layer1/") and inside("layer2/out", "layer2/")
    assert not inside("x", "layer1/")
    for v in g.nodes:                                        # backward nodes go with their origin's scope
        if v.is_gradient and v.origin is not None and v.op.name != "constant":
            scope = viz.scope_of(v)
            assert scope == viz.scope_of(v.origin[0])
            assert inside(v.name, scope + "/"), v.name
    assert viz.scope_of(grads[g["layer1/W"]]) == "layer1"
    assert _cluster_boxes(svg_of(g)) == {}                  # no boxes unless asked


@needs_dot
def test_collapse_draws_each_scope_as_a_forward_and_a_backward_box():
    g, J, grads = scoped_mlp()
    root = svg_of(g, collapse=True)
    names = set(drawn_nodes(root))
    assert {"layer1/", "layer2/", "loss/"} <= names and "x" in names
    assert not any(name.startswith("layer1/") and name != "layer1/" for name in names)
    words = " ".join(texts(root))
    assert "forward" in words and "backward" in words
    only = set(drawn_nodes(svg_of(g, collapse=["layer1"])))
    assert "layer1/" in only and "layer2/out" in only and "layer1/z" not in only
    assert len(edges(root)) < len(edges(svg_of(g)))


@needs_dot
def test_align_puts_backward_nodes_level_with_their_origin(make_mlp):
    g, n = make_mlp(grads=True)
    drawn = drawn_nodes(svg_of(g, align=True, rankdir="LR"))
    for v in g.nodes:
        if v.is_gradient and v.origin is not None and not v.origin[0].is_gradient and v.op.name != "constant":
            xv = _centre(drawn[v.name])[0]
            xo = _centre(drawn[v.origin[0].name])[0]
            w = max(len(v.name), len(v.origin[0].name), 20) * 8.0
            assert abs(xv - xo) < w, (v.name, v.origin[0].name)  # one column (LR: a rank is a column)


def test_rankdir_and_edge_shapes_reach_the_dot_source(make_mlp):
    g, n = make_mlp(grads=True)
    src = gc.to_dot(g, rankdir="BT", edge_shapes=True).source
    assert "rankdir=BT" in src
    assert "(None, 3)" in src                   # z's shape on its edges


# -- programs -------------------------------------------------------------------------------------

@needs_dot
def test_a_program_shows_schedule_order_and_marks_values_kept_for_backward(make_mlp):
    g, n = make_mlp(grads=True)
    prog = gc.compile([n["J"], n["dW1"], n["dW2"]])
    root = svg_of(prog)
    drawn = drawn_nodes(root)
    for k, step in enumerate(prog.schedule, start=1):
        value = getattr(step, "value", None)          # the program's own node for the step, where it has one
        name = (step.node if value is None else value).name
        assert name in drawn
        assert any(re.search(rf"\bstep {k}\b", t) for t in texts(drawn[name])), name
    kept_fn = getattr(prog, "kept_for_backward", None)
    kept = set(kept_fn()) if callable(kept_fn) else {n["h"], n["z"]}
    assert kept
    for v in kept:
        assert viz.KEPT_COLOR in strokes(drawn[v.name]), v.name
    assert viz.KEPT_COLOR not in strokes(drawn["J"])
    assert "kept from forward for backward" in " ".join(texts(root))


@needs_dot
def test_a_program_after_a_run_shows_the_buffer_of_each_step(make_mlp):
    g, n = make_mlp(grads=True)
    prog = gc.compile([n["J"], n["dW1"], n["dW2"]])
    prog.run({"x": np.ones((5, 4)), "y": np.zeros(5, dtype="int64")})
    drawn = drawn_nodes(svg_of(prog))
    for k, step in enumerate(prog.schedule, start=1):
        value = getattr(step, "value", None)
        node = step.node if value is None else value
        words = " ".join(texts(drawn[node.name]))
        assert re.search(rf"\bstep {k}\b", words), (node.name, words)
        if getattr(step, "buffer", None) is not None:
            assert re.search(rf"\bbuffer {step.buffer}\b", words), (node.name, words)


@needs_dot
def test_a_program_picture_shows_buffers_and_recomputed_steps(make_mlp):
    """A stand-in for the Program interface (schedule steps with buffers, buffer_of, kept_for_backward)."""
    g, n = make_mlp(grads=True)
    steps, order = [], [v for v in g.nodes if v.op.name not in ("input", "parameter", "constant")]
    for k, v in enumerate(order):
        steps.append(types.SimpleNamespace(node=v, op=v.op.name, buffer=k % 3, recomputed=(v is n["h"])))
    fake = types.SimpleNamespace(graph=g, schedule=steps, nodes=g.nodes, outputs=[n["J"]],
                                 buffer_of=lambda node: None, kept_for_backward=lambda: [n["z"]])
    drawn = drawn_nodes(svg_of(fake))
    assert any("buffer 1" in t for t in texts(drawn[order[1].name]))
    assert any("recomputed" in t for t in texts(drawn["h"]))
    assert viz.KEPT_COLOR in strokes(drawn["z"]) and viz.KEPT_COLOR not in strokes(drawn["h"])


# -- files and notebooks --------------------------------------------------------------------------

@needs_dot
@pytest.mark.parametrize("suffix, magic", [(".svg", b"<?xml"), (".png", b"\x89PNG"), (".pdf", b"%PDF"),
                                           (".dot", b"digraph")])
def test_render_writes_the_format_of_the_suffix(make_mlp, tmp_path, suffix, magic):
    g, n = make_mlp(grads=True)
    path = tmp_path / "sub" / ("mlp" + suffix)
    assert gc.render(g, path, show="forward") == str(path)
    data = path.read_bytes()
    assert data.startswith(magic)
    if suffix == ".svg":
        assert set(drawn_nodes(ET.fromstring(data))) == {v.name for v in g.nodes if not v.is_gradient}


def test_render_rejects_an_unknown_suffix(make_mlp, tmp_path):
    g, n = make_mlp(grads=True)
    with pytest.raises(GraphCompilerError, match=r"\.svg"):
        gc.render(g, tmp_path / "mlp.jpeg")
    assert not (tmp_path / "mlp.jpeg").exists()


def test_render_says_what_to_do_without_dot(make_mlp, tmp_path, monkeypatch):
    g, n = make_mlp(grads=True)
    monkeypatch.setenv("PATH", str(tmp_path))             # no dot on the PATH
    with pytest.raises(GraphCompilerError, match="install"):
        gc.render(g, tmp_path / "mlp.svg")
    gc.render(g, tmp_path / "mlp.dot")                     # a .dot file needs no Graphviz
    assert (tmp_path / "mlp.dot").read_text().startswith("digraph")


@needs_dot
def test_a_graph_shows_itself_inline_in_a_notebook(make_mlp):
    g, n = make_mlp(grads=True)
    bundle = g._repr_mimebundle_()
    assert set(drawn_nodes(parse(bundle["image/svg+xml"]))) == {v.name for v in g.nodes}
    assert bundle["text/plain"] == str(g)


@needs_dot
def test_make_figures_writes_every_seed_figure(tmp_path):
    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "docs" / "make_figures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    written = mod.figures(tmp_path)
    stems = {pathlib.Path(p).stem for p in written}
    assert {"goodfellow_6_10_left", "goodfellow_6_10_right", "d2l_mlp_forward", "d2l_mlp_backward",
            "torralba_14_17", "d2l_mlp_program"} <= stems
    for p in written:
        data = pathlib.Path(p).read_bytes()
        if p.endswith(".svg"):
            root = ET.fromstring(data)
            assert "Legend" in texts(root)
        else:
            assert data.startswith(b"\x89PNG")
    left = drawn_nodes(ET.fromstring((tmp_path / "goodfellow_6_10_left.svg").read_bytes()))
    assert set(left) == {"w", "x", "y", "z"}                       # Figure 6.10, left
    right = drawn_nodes(ET.fromstring((tmp_path / "goodfellow_6_10_right.svg").read_bytes()))
    assert {"w", "x", "y", "z", "dz/dw", "dz/dx", "dz/dy"} <= set(right)
