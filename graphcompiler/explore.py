"""The explorer: one self-contained HTML page to click through a graph, its gradients or a compiled program.

`explore(what, path, values=None)` writes a page with everything inline (Graphviz's SVG, a small script and
its styles; no network): clicking a node shows its name, op, shape, dtype, inputs and consumers, for a
gradient node the forward edge whose bprop made it, its formula as MathML and, when feeds are given, its
value. A stepper replays the forward pass and then build_grad's sweep (Algorithm 6.6 of Goodfellow et al.):
each backward step highlights the node v whose grad_table entry is made, the consumers of v in G' whose
bprops contributed, and the entry dJ/dv. For a compiled Program it steps through the schedule instead, with
buffers, recomputed steps and the live bytes of the memory plan.
"""

from __future__ import annotations

import functools
import html
import json
import math
import os
import re
import time
from typing import Any, Literal, Mapping

import numpy as np

from .errors import GraphCompilerError, fmt_shape
from .graph import Graph, Node

QUICK_LAYOUT_FROM = 120  # nodes: larger pictures get Graphviz's bounded (quicker, rougher) ranking
LAYERED_LAYOUT_FROM = 250  # nodes: larger pictures are placed by _layered_positions, in linear time (dot: minutes)
FORMULA_TERMS = 80  # a formula whose expansion would have more terms than this is not exported
FORMULA_BUDGET = 4_000  # terms exported on one page in all (a 500-node chain: the first formulas only)
FORMULA_SECONDS = 2.0  # on a page of LAYERED_LAYOUT_FROM nodes or more: SymPy's time for formulas in all
NUMBERS_UP_TO = 36  # elements: printed as numbers
HEATMAP_UP_TO = 64 * 64  # elements of a matrix: drawn as a heat map


def explore(
    what: Any, path: str | os.PathLike, *, values: Mapping[Any, Any] | None = None, title: str | None = None
) -> str:
    """Write the interactive page of `what` (a Graph, a Node or list of Nodes, or a compiled Program) to path.

    values: feeds ({input name or node: array}); every node the feeds determine is then computed once by an
    unoptimised program and shown (numbers, a heat map for matrices, summary statistics for large arrays).
    Returns the path written.
    """
    path = os.fspath(path)
    page = page_html(what, values=values, title=title)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path


def page_html(what: Any, *, values: Mapping[Any, Any] | None = None, title: str | None = None) -> str:
    """The page's HTML text (what `explore` writes; notebooks show it in an iframe)."""
    from . import viz

    subject = viz._subject(what)
    layered = len(subject.nodes) >= LAYERED_LAYOUT_FROM
    try:
        svg_text = _draw(what, subject, layered)
    except _graphviz_missing() as e:
        raise GraphCompilerError(
            f"the explorer draws the graph with Graphviz, which is not installed ({e}); "
            "install Graphviz (apt-get install graphviz)"
        ) from None
    except Exception as e:  # Graphviz itself failed (dot crashes on some very deep graphs)
        engine = "neato -n2 (positions given)" if layered else "dot"
        raise GraphCompilerError(
            f"Graphviz's {engine} failed to lay out the {len(subject.nodes)} nodes of {subject.title!r} ({e}); "
            "explore a part of it (gc.explore([node, ...]) draws those nodes and their ancestors)"
        ) from None
    svg_text = svg_text[svg_text.find("<svg") :]  # drop the XML prologue and DOCTYPE (the graph's name is a word)
    program = what if hasattr(what, "schedule") and hasattr(what, "graph") else None
    data = _page_data(subject, program, values)
    data["title"] = title or (subject.title if program is not None else f"graph {subject.title!r}")
    return _page(data["title"], svg_text, data)


def _graphviz_missing() -> type[Exception]:
    import graphviz

    return graphviz.ExecutableNotFound


def _draw(what: Any, subject: Any, layered: bool) -> str:
    """The picture as SVG. Up to LAYERED_LAYOUT_FROM nodes, dot lays it out (its network simplex passes bounded
    above QUICK_LAYOUT_FROM); above, dot's x-coordinate pass alone takes minutes (it grows with the nodes times
    the ranks every long edge crosses) and crashes on some deep graphs, so the nodes are placed here, in
    linear time, and Graphviz only draws them (neato -n2: the given positions, straight edges). The picture
    is then rougher: edges may cross nodes, and the bodies of scans are left out."""
    from . import viz

    dot = viz.to_dot(what, show="all", bodies=not layered)
    if not layered:
        if len(subject.nodes) > QUICK_LAYOUT_FROM:  # bound the network simplex passes: seconds, not minutes
            dot.attr("graph", nslimit="2", nslimit1="2")
        return dot.pipe(format="svg").decode("utf-8")
    nodes = list(subject.nodes)
    for k, (x, y) in enumerate(_layered_positions(nodes, [_node_size(n, subject.plan) for n in nodes])):
        dot.body.append(f'\tn{k} [pos="{x:.1f},{y:.1f}!"]\n')  # the ids viz.to_dot gives (show="all")
    dot.attr("graph", splines="false", outputorder="edgesfirst")
    return dot.pipe(format="svg", engine="neato", neato_no_op=2).decode("utf-8")


def _node_size(n: Node, plan: Any) -> tuple[float, float]:
    """(width, height) in points that a node's label will need, estimated from its lines of text (generously:
    an estimate too small makes neighbours overlap, one too large only spreads the picture)."""
    from . import viz

    lines = [
        html.unescape(re.sub(r"<[^>]*>", "", t)) for t in viz._label(n, plan.notes(n) if plan else []).split("<BR/>")
    ]
    width = max([7.2 * len(lines[0])] + [5.6 * len(t) for t in lines[1:]]) + 16
    height = 15.0 + 12.0 * (len(lines) - 1) + 10
    if n.op.name == "input":  # an ellipse around the text
        width, height = 1.45 * width, 1.3 * height
    elif n.op.name == "parameter":  # a cylinder's rims
        height += 10
    return width, height


def _layered_positions(nodes: list[Node], sizes: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Positions (points, Graphviz's y upwards) for a layered left-to-right picture, in time linear in the
    nodes and edges. A node's column is the one before its first reader (a W^T of the backward pass stands by
    the product that reads it, not in column 1 with an edge across the picture), an output's one past its
    furthest input; the order within a column follows the barycentre of the inputs, then of the readers,
    then of the inputs again (the sweeps of Sugiyama et al., without their crossing counts); each node sits
    level with its inputs where there is room."""
    index = {n: k for k, n in enumerate(nodes)}
    inputs = [[index[x] for x in n.inputs if x in index] for n in nodes]
    readers: list[list[int]] = [[] for _ in nodes]
    for k, ins in enumerate(inputs):
        for i in ins:
            readers[i].append(k)
    column = [0] * len(nodes)
    order = _topological_order(inputs, readers)
    for k in order:  # as early as its inputs allow: the longest path from the leaves
        column[k] = 1 + max((column[i] for i in inputs[k]), default=-1)
    for k in reversed(order):  # then as late as its readers allow: next to the first of them
        if readers[k]:
            column[k] = min(column[r] for r in readers[k]) - 1
    columns: list[list[int]] = [[] for _ in range(max(column, default=0) + 1)]
    for k in range(len(nodes)):
        columns[column[k]].append(k)
    place = [0.0] * len(nodes)
    for c in columns:
        for j, k in enumerate(c):
            place[k] = j

    def sweep(order: list[list[int]], links: list[list[int]]) -> None:
        for c in order:
            for k in c:
                near = [place[i] for i in links[k] if column[i] != column[k]]
                place[k] = sum(near) / len(near) if near else place[k]
            c.sort(key=lambda k: place[k])
            for j, k in enumerate(c):
                place[k] = j

    sweep(columns, inputs)
    sweep(columns[::-1], readers)
    sweep(columns, inputs)
    x = [0.0] * len(nodes)
    y = [0.0] * len(nodes)
    left = 0.0
    for c in columns:
        width = max((sizes[k][0] for k in c), default=0.0)
        below = 0.0  # the lowest free y in this column (y grows downwards here, flipped at the end)
        for k in c:
            level = [y[i] for i in inputs[k] if column[i] < column[k]]
            top = max(below, sum(level) / len(level) - sizes[k][1] / 2) if level else below
            x[k], y[k] = left + width / 2, top + sizes[k][1] / 2
            below = top + sizes[k][1] + 14
        left += width + 40
    return [(x[k], -y[k]) for k in range(len(nodes))]


def _topological_order(inputs: list[list[int]], readers: list[list[int]]) -> list[int]:
    """Kahn's order (inputs first); nodes on a cycle, which a graph cannot have, come last in list order."""
    waiting = [len(set(ins)) for ins in inputs]
    ready = [k for k, w in enumerate(waiting) if w == 0]
    order: list[int] = []
    while ready:
        k = ready.pop()
        order.append(k)
        for r in set(readers[k]):
            waiting[r] -= 1
            if waiting[r] == 0:
                ready.append(r)
    seen = set(order)
    return order + [k for k in range(len(inputs)) if k not in seen]


def _page(title: str, svg_text: str, data: dict) -> str:
    """The template filled in one pass (what is inserted is never searched for placeholders again), under a
    policy that runs only the page's own script and styles: no inline handlers, nothing loaded from anywhere."""
    script, style = _static("explorer.js"), _static("explorer.css")
    policy = (
        f"default-src 'none'; script-src {_csp_hash(script)}; style-src {_csp_hash(style)}; img-src data:; "
        "base-uri 'none'; form-action 'none'"
    )
    parts = {
        "CSP": html.escape(policy, quote=True),
        "TITLE": html.escape(title),
        "STYLE": style,
        "SCRIPT": script,
        "SVG": svg_text,
        "DATA": _json_in_html(data),
    }
    return _PLACEHOLDER.sub(lambda m: parts[m.group(1)], _TEMPLATE)


_PLACEHOLDER = re.compile(r"%(CSP|TITLE|STYLE|SCRIPT|SVG|DATA)%")


def _csp_hash(text: str) -> str:
    """The Content-Security-Policy source that allows exactly this inline script or style."""
    import base64
    import hashlib

    return f"'sha256-{base64.b64encode(hashlib.sha256(text.encode('utf-8')).digest()).decode()}'"


def _json_in_html(data: Any) -> str:
    """JSON to sit inside a <script> element: no character of it can end the element or open a comment
    (<, >, & as \\u escapes; non-ASCII, U+2028 and U+2029 included, escaped by json.dumps)."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class Inline:
    """The page in an iframe, for Jupyter: `display(gc.explore_inline(graph))` (the page's script runs inside the
    iframe; viewers that strip scripts, like GitHub's, show nothing interactive)."""

    def __init__(self, page: str, height: int = 640):
        self.page, self.height = page, height

    def _repr_html_(self) -> str:
        return (
            f'<iframe srcdoc="{html.escape(self.page, quote=True)}" style="width:100%;height:{self.height}px;'
            'border:1px solid #ddd" sandbox="allow-scripts"></iframe>'
        )


def explore_inline(
    what: Any, *, values: Mapping[Any, Any] | None = None, title: str | None = None, height: int = 640
) -> Inline:
    """The explorer page of `what` to show inside a notebook (the same page `explore` writes to a file)."""
    return Inline(page_html(what, values=values, title=title), height)


# -- the page's data -----------------------------------------------------------------------------------------


def _page_data(subject: Any, program: Any, values: Mapping[Any, Any] | None) -> dict:
    """The page's JSON: one record per node (what it is, its links, its formulas and value, its place in the
    program) and the steps to play through (the program's schedule, or forward then backward)."""
    from . import viz

    nodes: list[Node] = list(subject.nodes)
    ids = {n: f"n{k}" for k, n in enumerate(nodes)}  # the ids viz.to_dot gives (show="all")
    kinds = viz.classify(nodes)
    consumers = _consumers(nodes)
    computed = _values(nodes, values) if values is not None else {}
    entries = _grad_table_entries(nodes)
    sizes = _expansion_sizes(nodes)
    budget = FORMULA_BUDGET
    # SymPy prints some formulas of a deep graph in a tenth of a second each: a large page stops in time
    deadline = time.monotonic() + FORMULA_SECONDS if len(nodes) >= LAYERED_LAYOUT_FROM else math.inf
    plan = subject.plan
    records = []
    for n in nodes:
        rec = _node_record(n, ids, kinds, consumers, entries)
        if time.monotonic() < deadline:
            budget = _add_formulas(rec, n, sizes, budget)
        if n in computed:
            rec["value"] = _describe_value(computed[n])
        if plan is not None:
            rec["program"] = {
                "step": plan.step_of.get(n),
                "buffer": _short(plan.buffer.get(n)),
                "recomputed": plan.recomputed(n),
                "kept": n in plan.kept,
            }
        records.append(rec)
    data: dict[str, Any] = {"nodes": records, "kind": "program" if program is not None else "graph"}
    if program is not None:
        data["steps"] = _program_steps(program, plan, ids)
    else:
        data["steps"] = _forward_steps(nodes, ids) + _backward_steps(nodes, ids, entries, consumers)
    return data


def _consumers(nodes: list[Node]) -> dict[Node, list[Node]]:
    """Each node's readers among `nodes`, each once, in the order of the nodes."""
    consumers: dict[Node, list[Node]] = {n: [] for n in nodes}
    for n in nodes:
        for x in n.inputs:
            if x in consumers and n not in consumers[x]:
                consumers[x].append(n)
    return consumers


def _node_record(n: Node, ids: dict, kinds: dict, consumers: dict, entries: dict) -> dict[str, Any]:
    """What the side panel shows of a node and where it links to: its op, shape, inputs and readers, and on a
    gradient node the forward input its bprop made it for and the gradient table entry it feeds."""
    rec: dict[str, Any] = {
        "id": ids[n],
        "name": n.name,
        "op": n.op.name,
        "shape": fmt_shape(n.shape),
        "dtype": str(n.dtype),
        "attrs": {k: _short(v) for k, v in n.attrs.items()},
        "kind": kinds.get(n, ""),
        "gradient": bool(n.is_gradient),
        "inputs": [ids[x] for x in n.inputs if x in ids],
        "consumers": [ids[c] for c in consumers[n]],
    }
    if n.origin is not None and n.origin[0] in ids:
        v, i = n.origin
        rec["origin"] = {"node": ids[v], "index": i, "input": ids.get(v.inputs[i]) if i < len(v.inputs) else None}
    if n in entries:
        rec["entry_of"] = ids.get(entries[n][1])
    return rec


def _add_formulas(rec: dict[str, Any], n: Node, sizes: tuple[dict, dict], budget: int) -> int:
    """The node's formula as MathML (a gradient in textbook form, also in its leaves), each only where its
    expansion is small and the page's budget of terms allows; returns the budget left."""
    leaves_size, textbook_size = sizes
    form: Literal["leaves", "textbook"] = "textbook" if n.is_gradient else "leaves"
    size = (textbook_size if n.is_gradient else leaves_size)[n]
    if size <= FORMULA_TERMS and size <= budget:
        budget -= size
        rec["formula"] = _mathml(n, form)
    if n.is_gradient and leaves_size[n] <= min(FORMULA_TERMS, budget):
        budget -= leaves_size[n]
        rec["formula_leaves"] = _mathml(n, "leaves")
    return budget


def _short(v: Any, limit: int = 80) -> Any:
    if isinstance(v, float) and not np.isfinite(v):  # JSON has no nan or inf
        return repr(v)
    if v is None or isinstance(v, (bool, int, float, str)):
        return v if not isinstance(v, str) or len(v) <= limit else v[:limit] + "…"
    text = repr(v) if not isinstance(v, np.ndarray) else f"array{fmt_shape(v.shape)} {v.dtype}"
    return text if len(text) <= limit else text[:limit] + "…"


# -- Algorithm 6.6, replayed from the graph -------------------------------------------------------------------

_ENTRY = re.compile(r"^d(?P<z>.+?)/d(?P<v>.+)$")


def _grad_table_entries(nodes: list[Node]) -> dict[Node, tuple[Node, Node]]:
    """gradient node -> (z, v) for the nodes that are grad_table[v] of some build_grad of z (named dz/dv)."""
    by_name = {n.name: n for n in nodes if not n.is_gradient}
    out: dict[Node, tuple[Node, Node]] = {}
    for n in nodes:
        if not n.is_gradient or not n.name.startswith("d") or "/d" not in n.name:
            continue
        name = n.name
        for k in [m.start() for m in re.finditer("/d", name)]:
            z, v = name[1:k], name[k + 2 :]
            if z in by_name:
                v = v if v in by_name else re.sub(r"_\d+$", "", v)  # a second build_grad: dJ/dW1_2
                if v in by_name:
                    out[n] = (by_name[z], by_name[v])
                    break
    return out


def _forward_steps(nodes: list[Node], ids: dict[Node, str]) -> list[dict]:
    steps = []
    for n in nodes:
        if n.is_gradient or not n.inputs:
            continue
        args = ", ".join(x.name for x in n.inputs)
        steps.append(
            {
                "phase": "forward",
                "node": ids[n],
                "highlight": [ids[x] for x in n.inputs if x in ids],
                "title": f"forward: {n.name} = {n.op.name}({args})",
                "text": f"compute {n.name} from {args or 'nothing'} (shape {fmt_shape(n.shape)})",
            }
        )
    return steps


def _backward_steps(
    nodes: list[Node], ids: dict[Node, str], entries: dict[Node, tuple[Node, Node]], consumers: dict[Node, list[Node]]
) -> list[dict]:
    """Algorithm 6.6 replayed: for each cost z that build_grad differentiated (its entries are named dz/dv), the
    sweep over G' in reverse topological order; the step of v shows the consumers c of v in G' whose bprops
    contributed, the nodes those bprops made for the edges (c, v), and grad_table[v]."""
    from .autodiff import pruned_graph

    drawn = set(nodes)
    named: dict[Node, dict[Node, Node]] = {}  # z -> {v: its named entry (the first one made)}
    for n in sorted(entries, key=lambda m: m.index):
        z, v = entries[n]
        named.setdefault(z, {}).setdefault(v, n)
    parts: dict[tuple[Node, Node], list[Node]] = {}  # (c, v) -> nodes made by c's bprop for its input v
    for n in nodes:
        if n.is_gradient and n.origin is not None and n.origin[1] < len(n.origin[0].inputs):
            c, i = n.origin
            parts.setdefault((c, c.inputs[i]), []).append(n)
    steps = []
    for z, table in sorted(named.items(), key=lambda kv: min(n.index for n in kv[1].values())):
        targets = [v for v in table if not v.inputs]
        pruned = pruned_graph(z, targets) if targets else {z}
        grad_table: dict[Node, Node | None] = {}
        for v in sorted(pruned, key=lambda m: m.index, reverse=True):
            cons = [c for c in consumers.get(v, []) if c in pruned and not c.is_gradient]
            made = [p for c in cons for p in parts.get((c, v), [])]
            entry = table.get(v)
            if entry is None and len(cons) == 1:  # a gradient passed on unchanged (add, identity)
                entry = made[-1] if made else grad_table.get(cons[0])
            grad_table[v] = entry
            if v is z:
                text = f"grad_table[{z.name}] ← 1 (the seed{' ' + entry.name if entry is not None else ''})"
            else:
                terms = " + ".join(f"(∂{c.name}/∂{v.name})ᵀ·d{z.name}/d{c.name}" for c in cons)
                text = f"grad_table[{v.name}] = {terms}" if terms else f"grad_table[{v.name}]"
                if entry is not None:
                    text += f"   →  {entry.name}"
            steps.append(
                {
                    "phase": "backward",
                    "node": ids.get(entry) if entry in drawn else None,
                    "forward": ids.get(v),
                    "consumers": [ids[c] for c in cons if c in ids],
                    "highlight": [ids[m] for m in made if m in ids],
                    "title": f"backward: grad_table[{v.name}]" + ("" if entry is None else f" ({entry.name})"),
                    "text": text,
                }
            )
    return steps


def _program_steps(program: Any, plan: Any, ids: dict[Node, str]) -> list[dict]:
    live: list[int] = []
    peak = 0
    try:
        report = program.memory_report()
        live, peak = list(report.live), int(report.peak_bytes)
    except GraphCompilerError:  # not run yet with None dims: no byte figures
        pass
    steps: list[dict[str, Any]] = []
    schedule = program.schedule
    for k, value in enumerate(plan.values):
        s = schedule[k]
        notes = [f"buffer {plan.buffer[value]}" if value in plan.buffer else "allocated by its kernel"]
        if plan.recomputed(value):
            notes.append("recomputed (memory budget)")
        if value in plan.kept:
            notes.append("kept from forward for backward")
        step: dict[str, Any] = {
            "phase": "backward" if value.is_gradient else "forward",
            "node": ids.get(value),
            "highlight": [ids[x] for x in value.inputs if x in ids],
            "title": f"step {k + 1}: {s.node.name} = {s.op}({', '.join(x.name for x in value.inputs)})",
            "text": "; ".join(notes),
        }
        if k < len(live):
            step["live"] = live[k]
        steps.append(step)
    if live and steps:
        steps[0]["peak"] = peak
    return steps


# -- values ---------------------------------------------------------------------------------------------------


def _values(nodes: list[Node], feeds: Mapping[Any, Any]) -> dict[Node, np.ndarray]:
    """Every node the feeds determine, computed once by the unoptimised program."""
    from .compiler import compile

    graph_nodes = [n for n in nodes if n.name in n.graph and n.graph[n.name] is n]
    if not graph_nodes:
        return {}
    graph: Graph = graph_nodes[0].graph
    fed: dict[Node, Any] = {}
    for k, v in feeds.items():
        node = k if isinstance(k, Node) else graph[k]
        fed[node] = v
    known: dict[Node, bool] = {}
    for n in sorted(graph_nodes, key=lambda m: m.index):
        if n.op.name == "input":
            known[n] = n in fed
        elif n.op.name in ("parameter", "constant"):
            known[n] = n in fed or graph.value(n) is not None
        else:
            known[n] = all(known.get(x, False) for x in n.inputs)
    out: dict[Node, np.ndarray] = {n: np.asarray(v) for n, v in fed.items()}
    for n in graph_nodes:
        if known[n] and n.op.name in ("parameter", "constant") and n not in out:
            out[n] = np.asarray(graph.value(n))
    targets = [n for n in graph_nodes if known[n] and n.inputs]
    if targets:
        results = compile(targets, optimize=False).run({n: v for n, v in fed.items()})
        out.update(zip(targets, results))
    return out


def _describe_value(v: np.ndarray) -> dict:
    v = np.asarray(v)
    d: dict[str, Any] = {"shape": fmt_shape(v.shape), "dtype": str(v.dtype)}
    if v.size and v.dtype.kind in "biuf":
        f = v.astype(np.float64)
        finite = f[np.isfinite(f)]
        d["stats"] = {
            "min": _num(finite.min()) if finite.size else None,
            "max": _num(finite.max()) if finite.size else None,
            "mean": _num(finite.mean()) if finite.size else None,
            "std": _num(finite.std()) if finite.size else None,
            "nan": int(np.isnan(f).sum()),
            "inf": int(np.isinf(f).sum()),
        }
    if v.size <= NUMBERS_UP_TO:
        with np.printoptions(precision=4, suppress=True, linewidth=60):
            d["numbers"] = np.array2string(v)
    if v.ndim == 2 and v.size <= HEATMAP_UP_TO and v.dtype.kind in "biuf" and v.size:
        d["heatmap"] = _heatmap(v.astype(np.float64))
    return d


def _num(x: Any) -> float:
    return float(f"{float(x):.6g}")


def _heatmap(m: np.ndarray) -> str:
    """A matrix as a small PNG, one pixel a cell (blue negative, white zero, red positive, black not finite),
    drawn large with square pixels: a few KiB however the values look."""
    import base64
    import struct
    import zlib

    rows, cols = m.shape
    finite = np.isfinite(m)
    scale = float(np.abs(m[finite]).max()) if finite.any() else 1.0
    t = np.clip(np.where(finite, m, 0.0) / (scale or 1.0), -1.0, 1.0)
    fade = (255 * (1 - np.abs(t))).astype(np.uint8)
    rgb = np.empty((rows, cols, 3), np.uint8)
    rgb[..., 0] = np.where(t > 0, 255, fade)
    rgb[..., 1] = fade
    rgb[..., 2] = np.where(t > 0, fade, 255)
    rgb[~finite] = 0
    raw = b"".join(b"\x00" + rgb[i].tobytes() for i in range(rows))  # filter type 0 for every row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", cols, rows, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )
    cell = max(2, min(24, 240 // max(rows, cols)))
    return (
        f'<img class="heatmap" alt="heat map of a {rows}x{cols} matrix (scale {scale:.3g})" '
        f'width="{cols * cell}" height="{rows * cell}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode()}">'
    )


# -- formulas -------------------------------------------------------------------------------------------------


def _expansion_sizes(nodes: list[Node]) -> tuple[dict[Node, int], dict[Node, int]]:
    """How many terms a node's export would have, in its leaves and in the textbook form (where named nodes
    stay symbols), capped just above FORMULA_TERMS: a value read twice is written out twice, so a deep graph's
    expansion grows exponentially and is better not attempted."""
    from .symbolic import _kept

    cap = FORMULA_TERMS + 1
    leaves: dict[Node, int] = {}
    textbook: dict[Node, int] = {}

    def size(x: Node, table: dict[Node, int], stop: bool) -> int:
        if not x.inputs or stop and _kept(x):
            return 1
        return table.get(x, cap)

    for n in nodes:  # a topological order
        leaves[n] = min(cap, 1 + sum(size(x, leaves, False) for x in n.inputs))
        textbook[n] = min(cap, 1 + sum(size(x, textbook, True) for x in n.inputs))
    return leaves, textbook


def _mathml(n: Node, form: Literal["leaves", "textbook"]) -> str | None:
    """The node's SymPy export as presentation MathML; None where it cannot be exported (rank > 2, ...)."""
    try:
        from .symbolic import to_sympy

        expr = to_sympy(n, form=form, max_size=20 * FORMULA_TERMS)
        body = _mathml_printer()().doprint(expr)
        if len(body) > 100 * FORMULA_TERMS:  # a long formula helps nobody on a side panel
            return None
    except Exception:  # an export the symbolic layer refuses (rank > 2): no formula shown
        return None
    return f'<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">{_clean_mathml(body)}</math>'


@functools.cache
def _mathml_printer() -> type:
    """SymPy's presentation MathML printer, with two changes. The names of symbols are escaped: SymPy writes
    every text raw (its own texts are entities), so a node named <img onerror=...> would be markup on the
    page. And whether a matrix product is negative is read from its coefficient alone: SymPy's Mul asks
    first whether -e == e, which for a MatMul evaluates -e through the whole expression (seconds for each
    formula of a deep network's gradient); a product of matrices equals its negative only when it is zero."""
    from sympy import Function, MatMul
    from sympy.printing.mathml import MathMLPresentationPrinter
    from sympy.printing.precedence import PRECEDENCE, precedence_traditional

    def negative(e: Any) -> bool:
        if isinstance(e, MatMul):
            return bool(e.args[0].is_Number and e.args[0].is_extended_negative)
        return bool(e.could_extract_minus_sign())

    def precedence(e: Any) -> int:
        if not isinstance(e, MatMul):
            return precedence_traditional(e)
        if any(
            isinstance(a, Function) and getattr(a, "precedence", PRECEDENCE["Mul"]) < PRECEDENCE["Mul"] for a in e.args
        ):
            return PRECEDENCE["Mul"]
        return PRECEDENCE["Add"] if negative(e) else PRECEDENCE["Mul"]

    class Printer(MathMLPresentationPrinter):
        def _split_super_sub(self, name: str) -> tuple[str, list[str], list[str]]:
            base, supers, subs = super()._split_super_sub(name)  # W_1 is W with a subscript 1
            return _text(base), [_text(t) for t in supers], [_text(t) for t in subs]

        def _mo(self, text: str) -> Any:
            mo = self.dom.createElement("mo")
            mo.appendChild(self.dom.createTextNode(text))
            return mo

        def parenthesize(self, item: Any, level: int, strict: bool = False) -> Any:
            p = precedence(item)
            if p < level or (not strict and p <= level):
                row = self.dom.createElement("mrow")
                for part in (self._l_paren(), self._print(item), self._r_paren()):
                    row.appendChild(part)
                return row
            return self._print(item)

        def _print_Add(self, expr: Any, order: Any = None) -> Any:
            row = self.dom.createElement("mrow")
            terms = self._as_ordered_terms(expr, order=order)
            row.appendChild(self._print(terms[0]))
            for t in terms[1:]:
                minus = negative(t)
                row.appendChild(self._mo("-" if minus else "+"))
                row.appendChild(self._print(-t if minus else t))
            return row

        def _print_MatMul(self, expr: Any) -> Any:
            from sympy import Mul

            row = self.dom.createElement("mrow")
            args = list(expr.args)
            if isinstance(args[0], Mul):
                args = list(args[0].as_ordered_factors()) + args[1:]
            if negative(expr):
                args = args[1:] if args[0] == -1 else [-args[0]] + args[1:]
                row.appendChild(self._mo("-"))
            level = precedence(expr)
            for k, a in enumerate(args):
                if k:
                    row.appendChild(self._mo("&InvisibleTimes;"))
                row.appendChild(self.parenthesize(a, level, False))
            return row

    return Printer


def _text(s: str) -> str:
    """Text for an element's content: markup characters as entities, control characters (not allowed in XML)
    as a visible \\xNN, like the picture's labels."""
    s = "".join(c if ord(c) >= 32 and ord(c) != 127 else f"\\x{ord(c):02x}" for c in s)
    return html.escape(s, quote=False)


# the presentation MathML a formula may use, and the attributes SymPy's printer writes on it; any other
# element (markup some printer path let through from a name) is written as text, any other attribute dropped
_MATHML_TAGS = frozenset(
    "math mi mn mo ms mtext mspace mrow mfrac msqrt mroot mstyle merror mpadded mphantom mfenced menclose "
    "msub msup msubsup munder mover munderover mmultiscripts mprescripts none mtable mtr mtd".split()
)
_MATHML_ATTRS = frozenset(
    "xmlns display mathvariant mathsize stretchy fence separator separators open close form lspace rspace "
    "largeop movablelimits accent accentunder linethickness bevelled notation columnalign rowalign "
    "columnspacing rowspacing columnlines rowlines frame width height depth scriptlevel displaystyle "
    "minsize maxsize symmetric".split()
)


_TOKEN = re.compile(r'<(/?)([a-z]+)((?:\s+[a-z]+="[^"<>]*")*)\s*(/?)>|[^<]+|<')
_ATTR = re.compile(r'([a-z]+)="([^"]*)"')


def _clean_mathml(text: str) -> str:
    """The MathML written again keeping only MathML elements (a tag of exactly the form SymPy writes) and
    their presentation attributes; every other piece, whatever a printer let through, becomes escaped text."""
    out: list[str] = []
    for m in _TOKEN.finditer(text):
        close, tag, attrs, empty = m.groups()
        if tag is None or tag not in _MATHML_TAGS:
            out.append(_text(html.unescape(m.group(0))))
        elif close:
            out.append(f"</{tag}>" if not attrs and not empty else "")
        else:
            kept = "".join(
                f' {k}="{html.escape(html.unescape(v), quote=True)}"'
                for k, v in _ATTR.findall(attrs)
                if k in _MATHML_ATTRS and (k != "xmlns" or v == "http://www.w3.org/1998/Math/MathML")
            )
            out.append(f"<{tag}{kept}{empty}>")
    return "".join(out)


def _static(name: str) -> str:
    """A file of graphcompiler/static/ (the page's script and styles, inlined so the page needs no network)."""
    from importlib.resources import files

    return files("graphcompiler").joinpath("static").joinpath(name).read_text(encoding="utf-8")


# -- the page ---------------------------------------------------------------------------------------------------

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="%CSP%">
<title>%TITLE%</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>%STYLE%</style></head>
<body>
<header><h1>%TITLE%</h1>
<div id="stepper"><button id="first" title="first step (Home)">|&#x25C0;</button>
<button id="prev" title="previous step (left arrow)">&#x25C0;</button>
<span id="stepno">-</span>
<button id="next" title="next step (right arrow)">&#x25B6;</button>
<button id="last" title="last step (End)">&#x25B6;|</button>
<button id="play" title="play / pause">play</button>
<input id="search" placeholder="find a node by name" list="names" size="22"><datalist id="names"></datalist>
<label>zoom <input id="zoom" type="range" min="20" max="200" value="100"></label></div>
</header>
<main><div id="graph">%SVG%</div>
<aside id="panel"><div id="step"><p class="hint">Click a node, or step with the arrow keys: the forward pass
first, then build_grad's sweep (Algorithm 6.6).</p></div><div id="memory"></div><div id="info"></div></aside></main>
<script type="application/json" id="gc-data">%DATA%</script>
<script>%SCRIPT%</script>
</body></html>
"""
