"""Pictures: to_dot / render draw a graph, its derivative subgraph or a compiled Program with Graphviz.

Every node shows its name, op and shape; colour and shape tell the kinds apart, and a legend in the picture
names them. The four colours follow Torralba et al., Figure 14.17 ("forward-backward is just a bigger
network"); `classify` sorts nodes into those kinds by this rule, which the legend repeats:

- forward nodes (is_gradient False): *data forward* if they depend on an input (the data and the
  activations), *params forward* if they are a parameter or are computed from parameters alone (W, W*W),
  *constant* if they are a constant or computed from constants alone (lambda/2).
- backward nodes (is_gradient True) that a bprop made for the edge (v, i) (`node.origin`): *params backward*
  if that edge's input v.inputs[i] is params forward (or itself params backward): the node is part of dJ/dP
  for a parameter P and of nothing else; *data backward* otherwise (the gradients that flow back through
  the activations, the dJ/dz of the book). A backward node with no origin (a sum of contributions, the
  dJ/dW renamed at the end) is params backward when all the gradients it reads are; the seed dJ/dJ is
  data backward; a constant made inside a bprop (the 0 of relu's z > 0) is a constant.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Literal, Sequence

import numpy as np

from .compiler.program import Program
from .control.body import BodyGroup, BodyOp, Traced
from .control.cond import CondBody
from .control.scan import ScanBody
from .control.unroll import unroll as unrolled
from .control.while_loop import WhileBody
from .errors import GraphCompilerError, fmt_shape
from .graph import Graph, Node, install

if TYPE_CHECKING:
    import graphviz  # imported where a picture is drawn: `import graphcompiler` does not pay for it

Show = Literal["all", "forward", "backward"]

DATA_FORWARD, PARAMS_FORWARD = "data forward", "params forward"
DATA_BACKWARD, PARAMS_BACKWARD = "data backward", "params backward"
CONSTANT = "constant"
KINDS = (PARAMS_FORWARD, PARAMS_BACKWARD, DATA_FORWARD, DATA_BACKWARD, CONSTANT)


@dataclass(frozen=True)
class Style:
    fill: str
    border: str
    legend: str


# Pastel fills with a darker border of the same hue, so black labels stay legible; the five kinds differ in
# hue (orange, pink, blue, green, grey), and the node shapes tell forward from backward without colour.
STYLES: dict[str, Style] = {
    PARAMS_FORWARD: Style("#fde3bd", "#b35c00", "parameters, and values computed from parameters alone"),
    PARAMS_BACKWARD: Style("#f2c6df", "#9c2a6f", "gradient work that feeds only a parameter's dJ/dW"),
    DATA_FORWARD: Style("#d3e4f5", "#1f5b99", "data (inputs) and the activations computed from them"),
    DATA_BACKWARD: Style("#c9e7c4", "#2b7a2f", "gradients flowing back through the data and activations"),
    CONSTANT: Style("#ececec", "#767676", "constants, and values computed from constants alone"),
}
OUTPUT_COLOR = "#111111"  # outputs: a double border in this colour
KEPT_COLOR = "#d62728"  # a Program's values kept from forward for backward: a thick red border
PROVENANCE_COLOR = "#b39ddb"  # faint lilac: backward node -> the forward node whose bprop made it
CONTEXT_FILL, CONTEXT_BORDER = "#ffffff", "#9e9e9e"  # forward values a backward-only picture reads
FORWARD_EDGE, READ_EDGE = "#4d4d4d", "#a8a8a8"

FONT = "Helvetica"


# -- what is drawn ----------------------------------------------------------------------------


@dataclass
class _Subject:
    """What a picture draws: its nodes (topological order), outputs, and a Program's plan if any."""

    title: str
    nodes: list[Node]
    outputs: list[Node]
    plan: "_Plan | None" = None


def _subject(what: Any) -> _Subject:
    if isinstance(what, Graph):
        nodes = what.nodes
        read = {x for n in nodes for x in n.inputs}
        outputs = [n for n in nodes if n not in read and n.inputs]
        return _Subject(what.name, nodes, outputs)
    if isinstance(what, Node):
        return _Subject(what.name, _topological(_ancestors([what])), [what])
    if hasattr(what, "schedule") and hasattr(what, "graph"):  # a compiled Program
        return _program_subject(what)
    if isinstance(what, (list, tuple)) and what and all(isinstance(n, Node) for n in what):
        graph = what[0].graph
        for n in what:
            if n.graph is not graph:
                raise GraphCompilerError(
                    f"to_dot draws nodes of one graph; {what[0].name!r} belongs to {graph.name!r} and "
                    f"{n.name!r} to {n.graph.name!r}"
                )
        return _Subject(graph.name, _topological(_ancestors(list(what))), list(what))
    raise GraphCompilerError(
        f"to_dot draws a Graph, a Node, a non-empty list of Nodes or a compiled Program, not "
        f"{type(what).__name__}; pass e.g. gc.to_dot(graph) or gc.to_dot([J, grads[W1]])"
    )


def _program_subject(program: Any) -> _Subject:
    """A Program draws its steps' own nodes (`step.value` where the program has one: a stand-in or a
    concrete-shape copy whose inputs are what the step really reads) and the leaves they read."""
    plan = _Plan(program)
    nodes = _topological(_ancestors(plan.values))
    outputs = [plan.value_of.get(o, o) for o in getattr(program, "outputs", []) or []]
    graph = getattr(program, "graph", None)
    return _Subject(f"program of {getattr(graph, 'name', 'a graph')}", nodes, outputs, plan)


def _ancestors(roots: list[Node]) -> set[Node]:
    seen = set(roots)
    stack = list(roots)
    while stack:
        for x in stack.pop().inputs:
            if x not in seen:
                seen.add(x)
                stack.append(x)
    return seen


def _topological(nodes: Iterable[Node], extra=lambda n: ()) -> list[Node]:
    """Nodes in an order where inputs (and `extra` dependencies) come first; iterative, any depth."""
    nodes = set(nodes)
    order: list[Node] = []
    done: set[Node] = set()
    for root in sorted(nodes, key=lambda n: getattr(n, "index", 0)):
        if root in done:
            continue
        stack = [(root, False)]
        while stack:
            n, expanded = stack.pop()
            if n in done:
                continue
            if expanded:
                done.add(n)
                order.append(n)
                continue
            stack.append((n, True))
            for d in (*n.inputs, *extra(n)):
                if d in nodes and d not in done:
                    stack.append((d, False))
    return order


# -- kinds ------------------------------------------------------------------------------------


def classify(nodes: Iterable[Node]) -> dict[Node, str]:
    """The kind of each node (and of the forward nodes their origins name), by the rule of the module doc."""
    nodes = list(nodes)
    closure = _ancestors(nodes + [n.origin[0] for n in nodes if n.origin is not None])
    more = [n.origin[0] for n in closure if n.origin is not None and n.origin[0] not in closure]
    while more:  # origins of origins (second derivatives)
        closure |= _ancestors(more)
        more = [n.origin[0] for n in closure if n.origin is not None and n.origin[0] not in closure]
    kinds: dict[Node, str] = {}
    for n in _topological(closure, extra=lambda n: (n.origin[0],) if n.origin is not None else ()):
        kinds[n] = _kind(n, kinds)
    return kinds


def _kind(n: Node, kinds: dict[Node, str]) -> str:
    op = n.op.name
    if not n.is_gradient:
        if op == "input":
            return DATA_FORWARD
        if op == "parameter":
            return PARAMS_FORWARD
        if op == "constant":
            return CONSTANT
        ins = [kinds[x] for x in n.inputs]
        if any(k in (DATA_FORWARD, DATA_BACKWARD) for k in ins):
            return DATA_FORWARD
        if any(k in (PARAMS_FORWARD, PARAMS_BACKWARD) for k in ins):
            return PARAMS_FORWARD
        return CONSTANT
    if n.origin is not None:
        if op == "constant":
            return CONSTANT  # the 0 in relu's z > 0: a literal of the rule
        v, i = n.origin
        target = kinds.get(v.inputs[i]) if i < len(v.inputs) else None
        return PARAMS_BACKWARD if target in (PARAMS_FORWARD, PARAMS_BACKWARD) else DATA_BACKWARD
    grads = [kinds[x] for x in n.inputs if x.is_gradient and kinds[x] != CONSTANT]
    if grads and all(k == PARAMS_BACKWARD for k in grads):
        return PARAMS_BACKWARD
    return DATA_BACKWARD


# -- scopes -----------------------------------------------------------------------------------


def scope_of(node: Node) -> str | None:
    """A forward node's scope is its name up to the last "/" (`layer1/z` -> `layer1`); a backward node
    takes the scope of the forward node whose bprop made it. Gradient names (dJ/dW1) are never scopes."""
    seen = 0
    while node.is_gradient:
        if node.origin is None or seen > 64:
            return None
        node, seen = node.origin[0], seen + 1
    head, sep, _ = node.name.rpartition("/")
    return head if sep and head else None


def _scope_chain(scope: str | None) -> list[str]:
    if not scope:
        return []
    parts = scope.split("/")
    return ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]


# -- labels -----------------------------------------------------------------------------------


def _esc(text: Any) -> str:
    """Text made safe inside a Graphviz HTML label (and so in the SVG it writes): markup characters become
    entities, a newline a line break, and other control characters (not allowed in XML) a visible \\xNN."""
    text = "".join(c if c == "\n" or (ord(c) >= 32 and ord(c) != 127) else f"\\x{ord(c):02x}" for c in str(text))
    # dot expands \N, \G, ... even inside HTML labels; a doubled backslash is a literal one
    return html.escape(text, quote=True).replace("\\", "\\\\").replace("\n", "<BR/>")


def _tip(text: Any) -> str:
    """A tooltip: escaped like a label, backslashes doubled once more (a quoted string is unescaped twice)."""
    return _esc(text).replace("\\", "\\\\")


def _short(v: Any, limit: int = 28) -> str:
    if isinstance(v, np.ndarray):
        t = f"array{fmt_shape(v.shape)}"
    else:
        t = repr(v)
    return t if len(t) <= limit else t[: limit - 1] + "…"


def _scalar_value(n: Node) -> str | None:
    """A scalar constant's value as text ("0.01"), or None."""
    try:
        value = n.graph.value(n)
    except Exception:  # a stand-in node of a program: no stored value
        return None
    if value is None or value.ndim != 0:
        return None
    return f"{value.item():g}" if value.dtype.kind == "f" else str(value.item())


def _op_text(n: Node) -> str:
    op = n.op.name
    try:
        attrs = n.attrs
    except Exception:
        attrs = {}
    # False/None attributes are the usual defaults (keepdims=False); leaving them out keeps labels short
    attrs = {k: v for k, v in attrs.items() if v is not None and v is not False}
    if attrs:
        op += "[" + ", ".join(f"{k}={_short(v)}" for k, v in attrs.items()) + "]"
    return op


def _label(n: Node, extra: list[str]) -> str:
    shape = fmt_shape(n.shape)
    if n.dtype != np.float64:
        shape += f" {n.dtype}"
    value = _scalar_value(n) if n.op.name == "constant" else None
    if value is not None:  # a scalar constant: one short line, name = value
        lines = [f"<B>{_esc(n.name)}</B> = {_esc(value)}"]
    else:
        lines = [f"<B>{_esc(n.name)}</B>", f'<FONT POINT-SIZE="9">{_esc(_op_text(n))} · {_esc(shape)}</FONT>']
    lines += [f'<FONT POINT-SIZE="9" COLOR="#555555">{_esc(e)}</FONT>' for e in extra]
    return "<" + "<BR/>".join(lines) + ">"


# -- the picture ------------------------------------------------------------------------------


def to_dot(
    what: Any,
    *,
    show: Show = "all",
    rankdir: str = "LR",
    align: bool = False,
    provenance: bool = False,
    edge_shapes: bool = False,
    group: bool = False,
    collapse: bool | Iterable[str] | None = None,
    context: bool = True,
    legend: bool = True,
    title: str | None = None,
    bodies: bool = True,
    unroll: bool | int = False,
) -> graphviz.Digraph:
    """A graphviz.Digraph of a Graph, a Node or a list of Nodes (with their ancestors) or a Program.

    show: "all", "forward" (no gradient nodes) or "backward" (gradient nodes, with the forward values they
    read drawn pale when `context` is true). rankdir: "LR", "BT", "TB" or "RL". align: draw each backward
    node level with the forward node whose bprop made it, so B runs back underneath the forward graph
    (Torralba's Figure 14.17). provenance: a faint edge from each backward node to the forward node whose
    bprop made it (`node.origin`). edge_shapes: label edges with the shape they carry. group: a box per
    name scope (`layer1/`; a backward node goes in the box of its origin); collapse: True or scope names,
    drawn as one node each. A Program's picture numbers the steps, shows each value's buffer and marks the
    values kept from forward for backward. bodies: draw the body of each scan, cond and while_loop in a box
    of its own next to its node (the reverse scans of gradients in a backward box). unroll: draw a Graph's
    scans of up to 16 steps (or the number given) written out step by step instead.
    """
    if unroll and isinstance(what, Graph):
        what = unrolled(what, 16 if unroll is True else int(unroll))
    _check_options(show, rankdir)
    subject = _subject(what)
    kinds = classify(subject.nodes)
    outputs = set(subject.outputs)
    visible, ctx = _visible(subject.nodes, show, context)
    layout = _Layout(visible, collapse)
    ctx_set, plan = set(ctx), subject.plan

    dot = _digraph(subject.title, rankdir)
    members = _emit_nodes(dot, layout, kinds, outputs, ctx_set, plan, group)
    anchors = layout.anchored if align and not layout.collapsed else {}
    _emit_edges(dot, layout, kinds, ctx_set, anchors, align, edge_shapes)
    _emit_ranks(dot, layout, members, anchors, align)
    if provenance:
        _emit_provenance(dot, layout)
    if bodies:  # control flow (control/): each body in a box
        _draw_bodies(dot, [n for n in visible if layout.rep(n) == layout.ids[n]], layout.ids)

    heading = f"<B>{_esc(title if title is not None else subject.title)}</B>"
    if legend:
        drawn_outputs = bool(outputs & layout.visible_set)
        heading = _legend_of(heading, layout, kinds, ctx_set, drawn_outputs, provenance, plan)
    dot.attr("graph", label=f"<{heading}>", labelloc="t", labeljust="l")
    return dot


def _check_options(show: Show, rankdir: str) -> None:
    if show not in ("all", "forward", "backward"):
        raise GraphCompilerError(f"show must be 'all', 'forward' or 'backward', not {show!r}")
    if rankdir not in ("LR", "RL", "TB", "BT"):
        raise GraphCompilerError(f"rankdir must be 'LR', 'RL', 'TB' or 'BT', not {rankdir!r}")


def _digraph(title: str, rankdir: str) -> graphviz.Digraph:
    """An empty picture with the house style: fonts, spacing, a white background, forward-colored edges."""
    import graphviz

    dot = graphviz.Digraph(name=_safe_name(title), strict=False)
    dot.attr(
        "graph",
        rankdir=rankdir,
        fontname=FONT,
        fontsize="12",
        nodesep="0.2",
        ranksep="0.3",
        bgcolor="white",
        pad="0.2",
        newrank="true",
    )
    dot.attr("node", fontname=FONT, fontsize="11", margin="0.08,0.03", height="0.3", penwidth="1.2")
    dot.attr("edge", fontname=FONT, fontsize="8", arrowsize="0.6", color=FORWARD_EDGE)
    return dot


def _legend_of(
    heading: str,
    layout: _Layout,
    kinds: dict[Node, str],
    ctx_set: set[Node],
    outputs: bool,
    provenance: bool,
    plan: "_Plan | None",
) -> str:
    """The heading with the legend of what this picture draws: the kinds and ops of its nodes, the marks."""
    visible, visible_set = layout.visible, layout.visible_set
    used = {kinds[n] for n in visible if n not in ctx_set}
    ops = {
        n.op.name if n.op.name in ("input", "parameter", "constant") else ("backward" if n.is_gradient else "forward")
        for n in visible
    }
    if any(is_optimizer_state(n) for n in visible):
        ops.add("optimizer state")
    dashed = any(kinds[n] == PARAMS_BACKWARD and any(x in visible_set for x in n.inputs) for n in visible)
    return _legend(heading, used, ops, outputs, bool(ctx_set), provenance, dashed, plan)


def _visible(nodes: list[Node], show: Show, context: bool) -> tuple[list[Node], list[Node]]:
    """(the nodes drawn, the forward values a backward picture reads, drawn pale as context)."""
    if show == "forward":
        drawn = [n for n in nodes if not n.is_gradient]
    elif show == "backward":
        drawn = [n for n in nodes if n.is_gradient]
    else:
        drawn = list(nodes)
    drawn_set = set(drawn)
    ctx: list[Node] = []
    if show == "backward" and context:
        ctx = [n for n in nodes if not n.is_gradient and n not in drawn_set and any(n in d.inputs for d in drawn)]
    return drawn + ctx, ctx


class _Layout:
    """Where each visible node is drawn: its scope box, and its id (its own, or its collapsed scope's)."""

    def __init__(self, visible: list[Node], collapse: bool | Iterable[str] | None):
        self.visible = visible
        self.visible_set = set(visible)
        self.anchored = _anchors(visible, self.visible_set)
        self.collapsed: set[str] = set()
        if collapse:
            scopes = {c for n in visible for c in _scope_chain(self.scope(n))}
            self.collapsed = scopes if collapse is True else {s.rstrip("/") for s in collapse} & scopes
        self.ids = {n: f"n{k}" for k, n in enumerate(visible)}
        # a collapsed scope is two nodes, its forward part and its backward part; ids free of ":" (a port)
        self.scope_ids = {
            (s, b): f"s{k}{'b' if b else 'f'}" for k, s in enumerate(sorted(self.collapsed)) for b in (False, True)
        }

    def scope(self, n: Node) -> str | None:
        """A sum or the seed dJ/dJ goes where its anchor is."""
        return scope_of(self.anchored[n]) if n in self.anchored else scope_of(n)

    def rep(self, n: Node) -> str:
        """The drawn id of n: its own, or its collapsed scope's."""
        for s in _scope_chain(self.scope(n)):
            if s in self.collapsed:
                return self.scope_ids[s, n.is_gradient]
        return self.ids[n]


def _emit_nodes(
    dot: graphviz.Digraph,
    layout: _Layout,
    kinds: dict[Node, str],
    outputs: set[Node],
    ctx_set: set[Node],
    plan: "_Plan | None",
    group: bool,
) -> dict[tuple[str, bool], list[Node]]:
    """The nodes, inside their scope boxes when grouping; returns the members of each collapsed scope."""
    ids, collapsed = layout.ids, layout.collapsed
    boxes: dict[str | None, list[tuple[str, dict]]] = {}
    for n in layout.visible:
        if layout.rep(n) != ids[n]:
            continue
        attrs = _node_attrs(n, kinds[n], n in outputs, n in ctx_set, plan)
        where = layout.scope(n) if group or collapsed else None
        boxes.setdefault(where, []).append((ids[n], attrs))
    members: dict[tuple[str, bool], list[Node]] = {}
    for n in layout.visible:
        if layout.rep(n) != ids[n]:
            s = next(s for s in _scope_chain(layout.scope(n)) if s in collapsed)
            members.setdefault((s, n.is_gradient), []).append(n)
    for (s, backward), ms in members.items():
        outer = [c for c in _scope_chain(s)[:-1] if c not in collapsed]
        boxes.setdefault(outer[-1] if outer and group else None, []).append(
            (layout.scope_ids[s, backward], _collapsed_attrs(s, backward, ms, kinds))
        )
    _emit_boxes(dot, boxes, collapsed)
    return members


def _emit_edges(
    dot: graphviz.Digraph,
    layout: _Layout,
    kinds: dict[Node, str],
    ctx_set: set[Node],
    anchors: dict[Node, Node],
    align: bool,
    edge_shapes: bool,
) -> None:
    """Edges input -> consumer; from forward into backward they are pale (B reads a forward value)."""
    seen_collapsed: set[tuple[str, str]] = set()
    for n in layout.visible:
        if n in ctx_set:
            continue
        for x in n.inputs[:1] if n.op.name == "result" else n.inputs:  # a result: drawn from its loop only
            if x not in layout.visible_set:
                continue
            a, b = layout.rep(x), layout.rep(n)
            if a == b:
                continue
            if a[0] == "s" or b[0] == "s":  # a collapsed scope: one edge per pair of boxes
                if (a, b) in seen_collapsed:
                    continue
                seen_collapsed.add((a, b))
            attrs = _edge_attrs(x, n, kinds, edge_shapes)
            free_leaf = x.op.name == "constant" and x not in anchors  # placed by this edge alone
            # its place is fixed by its forward origin's rank
            if (n in anchors or align and layout.collapsed and n.is_gradient) and not free_leaf:
                attrs["constraint"] = "false"
            dot.edge(a, b, **attrs)


def _emit_ranks(
    dot: graphviz.Digraph,
    layout: _Layout,
    members: dict[tuple[str, bool], list[Node]],
    anchors: dict[Node, Node],
    align: bool,
) -> None:
    """align: each backward node (or collapsed backward box) level with the forward node it came from."""
    if align and layout.collapsed:
        for s in sorted(layout.collapsed):
            if (s, False) in members and (s, True) in members:
                with dot.subgraph() as same:
                    same.attr(rank="same")
                    same.node(layout.scope_ids[s, False])
                    same.node(layout.scope_ids[s, True])
    rows: dict[Node, list[str]] = {}
    for n, v in anchors.items():
        rows.setdefault(v, []).append(layout.ids[n])
    for v in layout.visible:
        if v in rows:  # ids are plain words: no quoting needed
            dot.body.append(f"\t{{rank=same; {layout.ids[v]}; {'; '.join(rows[v])};}}\n")


def _emit_provenance(dot: graphviz.Digraph, layout: _Layout) -> None:
    """A faint edge from each backward node to the forward node whose bprop made it."""
    for n in layout.visible:
        if n.is_gradient and n.origin is not None and n.origin[0] in layout.visible_set:
            v, i = n.origin
            a, b = layout.rep(n), layout.rep(v)
            if a == b:
                continue
            src = v.inputs[i].name if i < len(v.inputs) else "?"
            dot.edge(
                a,
                b,
                color=PROVENANCE_COLOR,
                style="dashed",
                arrowhead="empty",
                penwidth="0.8",
                constraint="false",
                tooltip=_tip(f"{n.name} was made by the bprop of {v.name} ({v.op.name}) for its input {i} ({src})"),
            )


def _anchors(visible: list[Node], visible_set: set[Node]) -> dict[Node, Node]:
    """For each backward node, the forward node it is drawn level with: its origin's forward node; a sum
    goes with the gradient it reads, the seed dJ/dJ with the cost its readers' bprops came from."""
    anchors: dict[Node, Node] = {}
    for n in visible:  # topological order: inputs first
        if not n.is_gradient:
            continue
        if n.origin is not None:
            v = n.origin[0]
            a = v if not v.is_gradient else anchors.get(v)
        else:
            a = next((anchors[x] for x in n.inputs if x in anchors), None)
        if a is not None and a in visible_set and (n.op.name != "constant" or n.origin is None):
            anchors[n] = a  # a literal of a bprop (the 0 of z > 0) sits by its reader
    for n in visible:  # seeds: with what their first reader is anchored to
        if n.is_gradient and n not in anchors and n.origin is None:
            readers = [(m, m.origin[0]) for m in visible if n in m.inputs and m.origin is not None and m in anchors]
            if readers:
                first, origin = readers[0]
                anchors[n] = origin if not origin.is_gradient else anchors[first]
    return anchors


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in text) or "graph"


def _node_attrs(n: Node, kind: str, is_output: bool, is_context: bool, plan: "_Plan | None") -> dict:
    st = STYLES[kind]
    op = n.op.name
    extra: list[str] = []
    if plan is not None:
        extra = plan.notes(n)
    attrs = {
        "label": _label(n, extra),
        "tooltip": _tip(f"{n.name}: {op} {fmt_shape(n.shape)} {n.dtype}"),
        "fillcolor": st.fill,
        "color": st.border,
        "style": "filled",
    }
    if op == "input":
        attrs["shape"] = "ellipse"
    elif op == "parameter":
        attrs["shape"] = "cylinder"
        if is_optimizer_state(n):  # gc.optim's velocities, moments, step counts
            attrs["style"] = "filled,dotted"
    elif op == "constant":
        attrs.update(shape="box", style="filled", fontsize="10")
    elif n.is_gradient:
        attrs.update(shape="box", style="filled")  # backward ops: square corners
    else:
        attrs.update(shape="box", style="filled,rounded")  # forward ops: rounded corners
    if is_output:
        attrs.update(peripheries="2", color=OUTPUT_COLOR, penwidth="1.4")
    if plan is not None and n in plan.kept:
        attrs.update(color=KEPT_COLOR, penwidth="2.6")
    if plan is not None and plan.recomputed(n):
        attrs["style"] += ",dashed"
    if is_context:
        attrs.update(
            fillcolor=CONTEXT_FILL,
            color=CONTEXT_BORDER,
            fontcolor="#707070",
            style=attrs["style"].replace("filled", "filled,dashed"),
        )
    return attrs


def _collapsed_attrs(scope: str, backward: bool, members: list[Node], kinds: dict[Node, str]) -> dict:
    counts: dict[str, int] = {}
    for m in members:
        counts[kinds[m]] = counts.get(kinds[m], 0) + 1
    prefer = (DATA_FORWARD, DATA_BACKWARD, PARAMS_FORWARD, PARAMS_BACKWARD, CONSTANT)  # ties: the data
    main = max(counts, key=lambda k: (counts[k], -prefer.index(k)))
    st = STYLES[main]
    detail = ", ".join(f"{c} {k}" for k, c in sorted(counts.items(), key=lambda kv: -kv[1]))
    part = "backward" if backward else "forward"
    label = (
        f'<<B>{_esc(scope)}/</B> {part}<BR/><FONT POINT-SIZE="9">{len(members)} nodes</FONT><BR/>'
        f'<FONT POINT-SIZE="8" COLOR="#555555">{_esc(detail)}</FONT>>'
    )
    return {
        "label": label,
        "shape": "box3d",
        "style": "filled",
        "fillcolor": st.fill,
        "color": st.border,
        "tooltip": _tip(f"scope {scope}/ ({part}) collapsed: " + ", ".join(m.name for m in members[:40])),
    }


def _emit_boxes(dot: graphviz.Digraph, boxes: dict, collapsed: set[str]) -> None:
    """Nodes at top level, and one nested cluster per scope (`a/b` inside `a`)."""
    for node_id, attrs in boxes.get(None, []):
        dot.node(node_id, **attrs)
    scopes = sorted(s for s in boxes if s is not None)
    # every scope with nodes, plus its enclosing scopes, becomes a cluster (unless collapsed)
    tree: dict[str | None, list[str]] = {}
    needed = set()
    for s in scopes:
        for c in _scope_chain(s):
            if c not in collapsed:
                needed.add(c)
    for c in sorted(needed):
        parents = [p for p in _scope_chain(c)[:-1] if p in needed]
        tree.setdefault(parents[-1] if parents else None, []).append(c)
    counter = [0]

    def emit(parent: graphviz.Digraph, scope: str) -> None:
        counter[0] += 1
        with parent.subgraph(name=f"cluster_{counter[0]}") as sub:
            sub.attr(
                label=f"<<I>{_esc(scope)}/</I>>",
                style="rounded,dashed",
                color="#8c8c8c",
                fontcolor="#555555",
                fontsize="11",
                labeljust="l",
                margin="10",
            )
            for node_id, attrs in boxes.get(scope, []):
                sub.node(node_id, **attrs)
            for child in tree.get(scope, []):
                emit(sub, child)

    for top in tree.get(None, []):
        emit(dot, top)
    for s in scopes:  # a scope whose box is collapsed away: nodes at top level
        if s not in needed:
            for node_id, attrs in boxes[s]:
                dot.node(node_id, **attrs)


def _edge_attrs(x: Node, n: Node, kinds: dict[Node, str], edge_shapes: bool) -> dict:
    attrs: dict[str, str] = {}
    if n.is_gradient:
        st = STYLES[kinds[n]]
        attrs["color"] = st.border if x.is_gradient else READ_EDGE
        if kinds[n] == PARAMS_BACKWARD:
            attrs["style"] = "dashed"  # Torralba: dotted lines compute parameter gradients
    if edge_shapes:
        attrs["label"] = _esc(fmt_shape(x.shape))
        attrs["fontcolor"] = "#666666"
    return attrs


_SHAPES = {
    "input": "ellipse: input",
    "parameter": "cylinder: parameter",
    "constant": "small box: constant",
    "forward": "rounded box: forward op",
    "backward": "square box: backward op",
    "optimizer state": "dotted cylinder: optimizer state",
}
OPTIMIZER_PREFIXES = ("sgd", "adam", "adamw", "rmsprop")  # gc.optim names its state <optimizer>/<slot>/<param>


def is_optimizer_state(n: Node) -> bool:
    """A parameter gc.optim made for its state (adam/m/W1, sgd/step), told apart by its name."""
    return n.op.name == "parameter" and "/" in n.name and n.name.split("/", 1)[0] in OPTIMIZER_PREFIXES


def _legend(
    heading: str,
    used: set[str],
    ops: set[str],
    outputs: bool,
    context: bool,
    provenance: bool,
    dashed: bool,
    plan: "_Plan | None",
) -> str:
    """The graph's label: the title, then the legend (one swatch per kind drawn, then the marks)."""
    cells = []
    for k in KINDS:
        if k in used:
            st = STYLES[k]
            cells.append(_swatch(st.fill, st.border, f"<B>{_esc(k)}</B>"))
    if outputs:
        cells.append(_swatch("#ffffff", OUTPUT_COLOR, "output (double border)", width=2))
    if context:
        cells.append(_swatch(CONTEXT_FILL, CONTEXT_BORDER, "forward value read by backward"))
    if plan is not None:
        cells.append(_swatch("#ffffff", KEPT_COLOR, "kept from forward for backward", width=3))
    notes = [f"{_esc(k)}: {_esc(STYLES[k].legend)}" for k in KINDS if k in used]
    shapes = [
        _SHAPES[o] for o in ("input", "parameter", "optimizer state", "constant", "forward", "backward") if o in ops
    ]
    notes.append("shapes: " + _esc("; ".join(shapes)))
    marks = []
    if dashed:
        marks.append("dashed edges compute parameter gradients")
    if provenance:
        marks.append(
            f'<FONT COLOR="{PROVENANCE_COLOR}">lilac</FONT> dashed edges with hollow heads: provenance, '
            "from a backward node to the forward node whose bprop made it"
        )
    if plan is not None:
        marks.append("step k: the schedule order; buffer b: the buffer that holds the value")
    if marks:
        notes.append("; ".join(marks))
    text = '<BR ALIGN="LEFT"/>'.join(notes) + '<BR ALIGN="LEFT"/>'
    return (
        '<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="2">'
        f'<TR><TD ALIGN="LEFT"><FONT POINT-SIZE="14">{heading}</FONT></TD></TR>'
        '<TR><TD ALIGN="LEFT"><TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2" CELLPADDING="1"><TR>'
        '<TD><FONT POINT-SIZE="10"><B>Legend</B></FONT></TD>' + "".join(cells) + "</TR></TABLE></TD></TR>"
        f'<TR><TD ALIGN="LEFT"><FONT POINT-SIZE="9" COLOR="#444444">{text}</FONT></TD></TR></TABLE>'
    )


def _swatch(fill: str, border: str, text: str, width: int = 1) -> str:
    return (
        f'<TD WIDTH="20" HEIGHT="12" BGCOLOR="{fill}" COLOR="{border}" '
        f'BORDER="{width}"> </TD><TD ALIGN="LEFT"><FONT POINT-SIZE="10">{text}</FONT>   </TD>'
    )


# -- control flow: each body drawn in a box next to its node ---------------------------------------


def _draw_bodies(dot: graphviz.Digraph, nodes: Sequence[Node], ids: dict, depth: int = 0) -> None:
    """Add to the graphviz picture `dot` a box per control-flow node among `nodes` holding its body's nodes;
    a dashed edge runs from each body output to its node, and from a reverse scan's box to the forward scan."""
    for n in nodes:
        op = n.op
        if not isinstance(op, BodyOp) or n not in ids:
            continue
        body = op.body
        parts, rev, title = _body_parts(n, body)
        for k, (label, traced) in enumerate(parts):
            prefix = f"{ids[n]}_b{depth}{k}_"
            sub_ids = {m: f"{prefix}{i}" for i, m in enumerate(traced.graph.nodes)}
            _draw_body_box(dot, prefix, traced, sub_ids, f"<<B>{_esc(title)}</B>: {_esc(label)}>", rev, depth)
            for o in dict.fromkeys(traced.outputs):
                dot.edge(sub_ids[o], ids[n], style="dashed", color="#8a6d3b", arrowhead="empty", constraint="false")
        if isinstance(body, ScanBody) and body.forward is not None:
            fwd = next((m for m in ids if isinstance(m.op, BodyOp) and m.op.body is body.forward), None)
            if fwd is not None:
                dot.edge(
                    ids[n],
                    ids[fwd],
                    style="dotted",
                    color="#3b6d8a",
                    constraint="false",
                    tooltip=f"{n.name} runs the gradient of {fwd.name}'s body backwards",
                )


def _body_parts(n: Node, body: BodyGroup) -> tuple[list[tuple[str, Traced]], bool, str]:
    """(the labelled traced bodies to draw, drawn as a gradient's, the boxes' title) of control-flow node n."""
    if isinstance(body, ScanBody):
        title = (
            f"reverse scan {n.name} (gradient of {body.forward.name})"
            if body.forward is not None
            else f"scan {n.name}{' (reverse)' if body.reverse else ''}"
        )
        return [("body", body.traced)], body.forward is not None, title
    if isinstance(body, CondBody):
        return [("true", body.branches[0]), ("false", body.branches[1])], n.is_gradient, f"cond {n.name}"
    if not isinstance(body, WhileBody):
        raise GraphCompilerError(f"internal error: viz draws no body of {type(body).__name__} ({n.name!r})")
    return [("cond", body.test), ("body", body.step)], n.is_gradient, f"while_loop {n.name}"


def _draw_body_box(
    dot: graphviz.Digraph, prefix: str, traced: Traced, sub_ids: dict, label: str, rev: bool, depth: int
) -> None:
    """One body's nodes and edges in a box (a graphviz cluster) of `dot`; the bodies of its own control-flow
    nodes in boxes inside it, three levels deep at most."""
    with dot.subgraph(name=f"cluster_{prefix}") as box:
        box.attr(
            label=label,
            style="rounded,dashed" if not rev else "dashed",
            color="#8a6d3b" if not rev else "#3b6d8a",
            fontsize="10",
            labeljust="l",
        )
        for m in traced.graph.nodes:
            shape = "ellipse" if m.op.name == "input" else "box"
            text = f"{m.name}\n{m.op.name} {fmt_shape(m.shape)}"
            box.node(
                sub_ids[m],
                label=text,
                shape=shape,
                fontsize="9",
                style="filled" + (",rounded" if shape == "box" and not m.is_gradient else ""),
                fillcolor="#f3f0e8" if not m.is_gradient else "#e8eef3",
            )
        for m in traced.graph.nodes:
            for x in m.inputs:
                box.edge(sub_ids[x], sub_ids[m])
        inner = [m for m in traced.graph.nodes if m.op.has_body]
        if inner and depth < 3:
            _draw_bodies(box, inner, sub_ids, depth + 1)


# -- a Program's plan ---------------------------------------------------------------------------


class _Plan:
    """Schedule order, buffers and kept values of a compiled Program, read through its public names.

    `step.node` is the graph node a step computes; `step.value` (where the Program has it) the program's own
    node for it. Pictures draw the values; what the Program answers about graph nodes is mapped onto them.
    """

    def __init__(self, program: Any):
        self.program = program
        self.values: list[Node] = []
        self.value_of: dict[Node, Node] = {}  # graph node -> the drawn value of its step
        self.step_of: dict[Node, int] = {}
        self.buffer: dict[Node, Any] = {}
        self._recomputed: set[Node] = set()
        for k, s in enumerate(program.schedule, start=1):
            value = getattr(s, "value", None)
            value = s.node if value is None else value
            self.values.append(value)
            self.value_of.setdefault(s.node, value)
            self.step_of.setdefault(value, k)
            buf = getattr(s, "buffer", None)
            if buf is None:
                buf = self._buffer_of(s.node)
            if buf is not None:
                self.buffer.setdefault(value, buf)
            if getattr(s, "recomputed", False):
                self._recomputed.add(value)
        self.kept = {self.value_of.get(n, n) for n in self._kept()}

    def _buffer_of(self, node: Node):
        f = getattr(self.program, "buffer_of", None)
        if f is None:
            return None
        try:
            return f(node)
        except Exception:
            return None

    def _kept(self) -> set[Node]:
        f = getattr(self.program, "kept_for_backward", None)
        if callable(f):
            try:
                return set(f())
            except Exception:
                pass
        # Without the program's own answer: computed forward values that some backward step reads
        # (inputs and parameters are held by the caller and the graph anyway).
        return {
            x
            for n in self.step_of
            if n.is_gradient
            for x in n.inputs
            if not x.is_gradient and x.op.name not in ("input", "parameter", "constant")
        }

    def recomputed(self, n: Node) -> bool:
        return n in self._recomputed

    def notes(self, n: Node) -> list[str]:
        parts = []
        if n in self.step_of:
            parts.append(f"step {self.step_of[n]}")
        elif n.op.name in ("input", "parameter"):
            parts.append("fed" if n.op.name == "input" else "stored")
        if n in self.buffer:
            parts.append(f"buffer {self.buffer[n]}")
        if n in self._recomputed:
            parts.append("recomputed")
        if n in self.kept:
            parts.append("kept for backward")
        return [" · ".join(parts)] if parts else []


# -- writing files ------------------------------------------------------------------------------

FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot"}


def render(what: Any, path: str | os.PathLike, *, dpi: int | None = None, **options: Any) -> str:
    """Write the picture of `what` to path; the suffix picks the format (.svg, .png, .pdf, .dot).

    options go to to_dot (show=, rankdir=, provenance=, group=, collapse=, ...); dpi sets a PNG's resolution.
    Returns the path written.
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in FORMATS:
        raise GraphCompilerError(
            f"render writes {', '.join(FORMATS)} files; {path!r} has suffix {suffix or '(none)'!r}: pick one of those"
        )
    import graphviz

    dot = to_dot(what, **options)
    if FORMATS[suffix] == "dot":
        data = dot.source.encode("utf-8")
    else:
        if dpi is not None and FORMATS[suffix] == "png":
            dot.attr("graph", dpi=str(dpi))
        try:
            data = dot.pipe(format=FORMATS[suffix])
        except graphviz.ExecutableNotFound:
            raise GraphCompilerError(
                f"writing {path!r} needs Graphviz's `dot` program, which is not installed: install it "
                "(apt-get install graphviz, brew install graphviz) or write a .dot file instead"
            ) from None
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def svg(what: Any, **options: Any) -> str:
    """The SVG text of the picture (what notebooks show inline)."""
    return to_dot(what, **options).pipe(format="svg").decode("utf-8")


def mimebundle(what: Any, text: str) -> dict[str, str]:
    """A Jupyter mime bundle: the SVG when Graphviz can draw it, the text listing always."""
    try:
        return {"image/svg+xml": svg(what), "text/plain": text}
    except Exception:  # no dot binary: the listing alone
        return {"text/plain": text}


# a Graph and a Program in a notebook show their pictures (graph.py and compiler/, the layers below, do not
# import this module)
install(Graph, _repr_mimebundle_=lambda self, include=None, exclude=None: mimebundle(self, str(self)))
install(Program, _repr_mimebundle_=lambda self, include=None, exclude=None: mimebundle(self, str(self)))
