"""The explorer page (explore.py): its data, the command, and the page itself in a real headless browser."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

import graphcompiler as gc
from graphcompiler.demo import build_mlp
from graphcompiler.explore import page_html

import browser

SHOTS = os.environ.get("GC_SCREENSHOT_DIR")          # where a person can look at the screenshots


def _page_data(text: str) -> dict:
    m = re.search(r'<script type="application/json" id="gc-data">(.*?)</script>', text, re.S)
    assert m, "the page carries its data"
    return json.loads(m.group(1).replace("<\\/", "</"))


@pytest.fixture
def mlp():
    return build_mlp(4, 3, 2, lam=0.01, seed=0)


@pytest.fixture
def feeds():
    rng = np.random.default_rng(1)
    return {"x": rng.normal(size=(5, 4)), "y": np.array([0, 1, 1, 0, 1])}


# -- the page's data (no browser) -------------------------------------------------------------------------

def test_page_is_self_contained(mlp, tmp_path):
    path = gc.explore(mlp.graph, tmp_path / "mlp.html")
    text = Path(path).read_text()
    assert text.startswith("<!DOCTYPE html>") and "<svg" in text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), "nothing is loaded from the network"
    data = _page_data(text)
    assert [n["name"] for n in data["nodes"]] == [n.name for n in mlp.graph.nodes]


def test_nodes_carry_edges_origins_and_formulas(mlp):
    data = _page_data(page_html(mlp.graph))
    by_name = {n["name"]: n for n in data["nodes"]}
    ids = {n["id"]: n["name"] for n in data["nodes"]}
    for node in mlp.graph.nodes:
        rec = by_name[node.name]
        assert [ids[i] for i in rec["inputs"]] == [x.name for x in node.inputs]
        assert sorted(ids[c] for c in rec["consumers"]) == sorted(c.name for c in mlp.graph.consumers(node))
        assert rec["op"] == node.op.name and rec["gradient"] == node.is_gradient
        if node.origin is not None:
            v, i = node.origin
            assert ids[rec["origin"]["node"]] == v.name and rec["origin"]["index"] == i
            assert ids[rec["origin"]["input"]] == v.inputs[i].name
        else:
            assert "origin" not in rec
    dW2 = by_name["dJ/dW2"]
    assert dW2["formula"].startswith("<math") and "W" in dW2["formula"] and "formula_leaves" in dW2
    assert ids[dW2["entry_of"]] == "W2"


def test_stepper_replays_algorithm_6_6(mlp):
    """Forward steps in creation order, then one step per grad_table entry in the order build_grad made them:
    the seed first, every consumer named in a step has its own entry earlier (reverse topological order)."""
    data = _page_data(page_html(mlp.graph))
    ids = {n["id"]: n["name"] for n in data["nodes"]}
    forward = [s for s in data["steps"] if s["phase"] == "forward"]
    backward = [s for s in data["steps"] if s["phase"] == "backward"]
    assert [ids[s["node"]] for s in forward] == [n.name for n in mlp.graph.nodes if n.inputs and not n.is_gradient]
    entries = [ids[s["node"]] for s in backward if s["node"]]
    assert entries[0] == "dJ/dJ" and {"dJ/dW1", "dJ/dW2"} <= set(entries)
    pruned = {n for n in mlp.graph.nodes if not n.is_gradient and n.name not in ("x", "y", "lambda")
              and "constant" not in n.name and "divide" not in n.name}
    assert {ids[s["forward"]] for s in backward} == {n.name for n in pruned}, "one step per node of G'"
    done = set()
    for s in backward:
        v = ids[s["forward"]]
        for c in s["consumers"]:
            assert ids[c] in done, f"grad_table[{v}] read dJ/d{ids[c]} before it was made"
        done.add(v)
    step_h = next(s for s in backward if ids[s["forward"]] == "h")
    assert [ids[c] for c in step_h["consumers"]] == ["o"] and "dJ/do" in step_h["text"]


def test_values_match_the_program(mlp, feeds):
    data = _page_data(page_html(mlp.graph, values=feeds))
    by_name = {n["name"]: n for n in data["nodes"]}
    J, dW2 = gc.compile([mlp.J, mlp.grads[mlp.W2]], optimize=False).run(feeds)
    assert by_name["J"]["value"]["stats"]["mean"] == pytest.approx(float(J), rel=1e-5)
    v = by_name["dJ/dW2"]["value"]
    assert v["shape"] == "(3, 2)" and 'src="data:image/png;base64,' in v["heatmap"]
    shown = np.array([float(t) for t in re.findall(r"-?\d+\.\d+(?:e[-+]\d+)?", v["numbers"])]).reshape(3, 2)
    assert np.allclose(shown, dW2, atol=1e-4)
    assert v["stats"]["max"] == pytest.approx(float(dW2.max()), rel=1e-5)


def test_program_page_steps_through_the_schedule(mlp, feeds):
    program = gc.compile([mlp.J, mlp.grads[mlp.W1], mlp.grads[mlp.W2]])
    program.run(feeds)
    data = _page_data(page_html(program))
    assert data["kind"] == "program" and len(data["steps"]) == len(program.schedule)
    report = program.memory_report()
    assert [s["live"] for s in data["steps"]] == list(report.live)
    assert data["steps"][0]["peak"] == report.peak_bytes
    assert any(n.get("program", {}).get("kept") for n in data["nodes"])


def test_explore_command(tmp_path, mlp, feeds):
    from graphcompiler.cli import main
    mlp.graph.save(tmp_path / "g.json")
    np.save(tmp_path / "x.npy", feeds["x"])
    np.save(tmp_path / "y.npy", feeds["y"])
    out = tmp_path / "page.html"
    assert main(["explore", str(tmp_path / "g.json"), "-o", str(out), "--feed", f"x={tmp_path / 'x.npy'}",
                 "--feed", f"y={tmp_path / 'y.npy'}"]) == 0
    data = _page_data(out.read_text())
    assert next(n for n in data["nodes"] if n["name"] == "L")["value"]["shape"] == "()"


def test_explore_refuses_what_it_cannot_draw(tmp_path):
    with pytest.raises(gc.GraphCompilerError, match="to_dot draws"):
        gc.explore(42, tmp_path / "x.html")


# -- in a real browser ----------------------------------------------------------------------------------------

@pytest.fixture
def driver():
    browser.require_browser()
    d = browser.start()
    yield d
    d.quit()


def _shot(driver, tmp_path: Path, name: str) -> None:
    driver.save_screenshot(str(tmp_path / name))
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        driver.save_screenshot(os.path.join(SHOTS, name))
    assert (tmp_path / name).stat().st_size > 10_000           # a picture, not an empty page


def test_browser_click_shows_the_node(driver, mlp, feeds, tmp_path):
    from selenium.webdriver.common.by import By
    path = gc.explore(mlp.graph, tmp_path / "mlp.html", values=feeds)
    driver.get(Path(path).resolve().as_uri())
    assert driver.execute_script("return document.body.dataset.ready") == "1"
    assert len(driver.find_elements(By.CSS_SELECTOR, "g.node")) == len(mlp.graph.nodes)
    browser.click_node(driver, "dJ/dW2")
    assert driver.find_element(By.ID, "info-name").text == "dJ/dW2"
    assert driver.find_element(By.ID, "info-shape").text == "(3, 2)"
    assert driver.find_element(By.CSS_SELECTOR, "#info-formula math").is_displayed()
    assert driver.find_elements(By.CSS_SELECTOR, "#info-value img.heatmap")
    # a node made by a bprop: its forward edge is highlighted
    made = next(n for n in mlp.graph.nodes if n.origin is not None and n.name.startswith("dJ/dz"))
    browser.click_node(driver, made.name)
    assert driver.find_elements(By.CSS_SELECTOR, "g.edge.gc-origin")
    assert made.origin[0].name in driver.find_element(By.ID, "info").text
    # inputs and consumers are links
    driver.find_element(By.CSS_SELECTOR, "#info .link").click()
    assert driver.find_element(By.ID, "info-name").text == made.inputs[0].name
    _shot(driver, tmp_path, "explorer_click.png")


def test_browser_stepper_and_keys(driver, mlp, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    path = gc.explore(mlp.graph, tmp_path / "mlp.html")
    driver.get(Path(path).resolve().as_uri())
    data = driver.execute_script("return window.gcExplorer.data")
    n_forward = sum(s["phase"] == "forward" for s in data["steps"])
    body = driver.find_element(By.TAG_NAME, "body")
    for _ in range(n_forward + 1):                  # through the forward pass to the seed dJ/dJ
        body.send_keys(Keys.ARROW_RIGHT)
    assert driver.find_element(By.ID, "step-title").text.startswith("backward: grad_table[J]")
    body.send_keys(Keys.ARROW_RIGHT)
    step = data["steps"][n_forward + 1]
    current = driver.find_elements(By.CSS_SELECTOR, "g.node.gc-current title")
    assert [t.get_attribute("textContent") for t in current] == [step["node"]]
    related = {t.get_attribute("textContent") for t in driver.find_elements(By.CSS_SELECTOR, "g.node.gc-related title")}
    assert set(step["consumers"]) <= related
    body.send_keys(Keys.ARROW_LEFT)
    assert driver.execute_script("return window.gcExplorer.current()") == n_forward
    body.send_keys(Keys.END)
    assert driver.find_element(By.ID, "stepno").text == f"{len(data['steps'])} / {len(data['steps'])}"
    _shot(driver, tmp_path, "explorer_step.png")


def test_browser_program_page_shows_live_bytes(driver, mlp, feeds, tmp_path):
    from selenium.webdriver.common.by import By
    program = gc.compile([mlp.J, mlp.grads[mlp.W1], mlp.grads[mlp.W2]])
    program.run(feeds)
    path = gc.explore(program, tmp_path / "program.html")
    driver.get(Path(path).resolve().as_uri())
    driver.find_element(By.ID, "next").click()
    driver.find_element(By.ID, "next").click()
    live = program.memory_report().live[1]
    assert f"{live:,}" in driver.find_element(By.ID, "live").text.replace("\u202f", ",")
    assert driver.find_element(By.ID, "step-title").text.startswith("step 2:")
    _shot(driver, tmp_path, "explorer_program.png")


def test_browser_500_nodes(driver, tmp_path):
    """A page of 500 nodes loads and answers a click (its times are measured by benchmarks/explorer.py)."""
    from selenium.webdriver.common.by import By
    g = gc.Graph("chain")
    w = g.parameter("w", np.array(0.5))
    x = w
    while len(g) < 250:
        x = gc.sin(x) * 1.01
    gc.build_grad(gc.sum(x), [w])
    assert len(g) >= 500
    path = gc.explore(g, tmp_path / "chain.html")
    driver.get(Path(path).resolve().as_uri())
    assert len(driver.find_elements(By.CSS_SELECTOR, "g.node")) == len(g)
    browser.click_node(driver, "dsum_1/dw")
    assert driver.find_element(By.ID, "info-name").text == "dsum_1/dw"


def test_heatmap_is_a_png_of_the_matrix():
    """Red for positive, blue for negative, white for zero, black where not finite, scaled by the largest |x|."""
    import base64
    import zlib

    from graphcompiler.explore import _heatmap
    tag = _heatmap(np.array([[1.0, -1.0], [0.5, np.nan], [0.0, 2.0]]))
    png = base64.b64decode(re.search(r'base64,([^"]+)', tag).group(1))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    start = png.index(b"IDAT") + 4
    raw = zlib.decompress(png[start:start + int.from_bytes(png[start - 8:start - 4], "big")])
    rows = [raw[k * 7 + 1:(k + 1) * 7] for k in range(3)]          # a filter byte, then 2 RGB pixels a row
    pixels = [[tuple(r[3 * j:3 * j + 3]) for j in range(2)] for r in rows]
    assert pixels == [[(255, 127, 127), (127, 127, 255)], [(255, 191, 191), (0, 0, 0)],
                      [(255, 255, 255), (255, 0, 0)]]


# -- hostile names: a page's data never runs as script ----------------------------------------------------

# each sets window.__pwned or calls alert where it runs; the placeholders are the template's own words
HOSTILE = [
    "<script>window.__pwned=1</script>",
    '<img src=x onerror="window.__pwned=1">',
    "<img src=x onerror=alert(1)>",
    "<img src=x onerror=window.__pwned=1>",
    '"><svg onload=alert(2)>',
    "'><svg/onload=alert(3)>",
    "</svg><img src=x onerror=alert(4)>",
    "</script><script>alert(5)</script>",
    "</math><img src=x onerror=alert(6)>",
    "<!--<script>alert(7)</script>-->",
    "%TITLE%", "%STYLE%", "%SCRIPT%", "%SVG%", "%DATA%", "%CSP%",
    "&lt;img src=x onerror=alert(8)&gt;",
    "it's \"quoted\"",
    "back\\slash\\u003c\\",
    "zero\u200bwidth \u00e9 \u2603 \U0001f600",  # (control characters and U+2028/9 are refused by Graph)
    "\\x1b[2J \\u2028 as text",
]
HOSTILE_TITLE = "<script>window.__pwned=1</script>%DATA%<img src=x onerror=alert(9)>%SVG%%SCRIPT%"

# before the page loads: alerts are counted, not shown, and the policy's refusals recorded
HOOKS = """
window.__alerts = [];
window.alert = window.confirm = window.prompt = m => { window.__alerts.push(String(m)); };
window.__csp = [];
document.addEventListener("securitypolicyviolation", e => window.__csp.push(e.violatedDirective + " " + e.blockedURI));
"""


def _hostile_graph() -> gc.Graph:
    """Parameters and ops named with HOSTILE (each name once), a cost and its gradients: the names reach the
    picture, the panel, the formulas (leaves and textbook form), the stepper's text and the values."""
    g = gc.Graph(HOSTILE_TITLE)
    params = [g.parameter(name, np.full((2, 2), 0.1 * (k + 1))) for k, name in enumerate(HOSTILE)]
    acc = params[0]
    for k, p in enumerate(params[1:]):
        acc = gc.multiply(gc.tanh(acc, name=f"tanh {HOSTILE[k]}"), p, name=f"times {HOSTILE[k + 1]}")
    J = gc.sum(acc, name="J <img src=x onerror=alert(10)>")
    gc.build_grad(J, params)
    return g


def _browser_with_hooks():
    browser.require_browser()
    d = browser.start()
    d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": HOOKS})
    return d


def test_page_data_survives_hostile_names():
    """Every name comes back out of the page's JSON exactly; nothing in the HTML outside the data block is the
    JSON (the template is filled once) and no name's markup appears unescaped anywhere in the page."""
    g = _hostile_graph()
    text = page_html(g, values={})
    data = _page_data(text)
    assert [n["name"] for n in data["nodes"]] == [n.name for n in g.nodes]
    assert data["title"] == f"graph {HOSTILE_TITLE!r}"
    markup = text[: text.rindex("<script>")]                       # the page without its own script
    assert markup.count('id="gc-data"') == 1 and markup.count("<script") == 1 and markup.count("<svg") == 1
    assert "<img" not in markup and "<math" not in markup, "markup of the data is escaped in the page's text"
    mathml = {"math", "mrow", "mi", "mo", "mn", "msub", "msup", "msubsup", "mfrac", "msqrt", "mtext", "mfenced",
              "mover", "munder", "mtable", "mtr", "mtd", "mstyle", "mspace"}
    formulas = [n[k] for n in data["nodes"] for k in ("formula", "formula_leaves") if k in n]
    assert len(formulas) >= len(HOSTILE)
    for f in formulas:
        assert set(re.findall(r"<([a-zA-Z][^\s/>]*)", f)) <= mathml, f"markup of a name in a formula: {f}"


def test_browser_hostile_names_run_nothing(tmp_path):
    """The real browser: names that are markup and script show as text, and nothing of them runs, whatever
    is clicked (each node's panel with its formulas and value, every step of the stepper)."""
    from selenium.webdriver.common.by import By
    g = _hostile_graph()
    feeds = {}                                         # the parameters hold values: every node is computed
    d = _browser_with_hooks()
    try:
        path = gc.explore(g, tmp_path / "hostile.html", values=feeds)
        d.get(Path(path).resolve().as_uri())
        assert d.execute_script("return document.body.dataset.ready") == "1", "the page's own script ran"
        assert d.find_element(By.TAG_NAME, "h1").get_attribute("textContent") == f"graph {HOSTILE_TITLE!r}"
        assert d.title == f"graph {HOSTILE_TITLE!r}"
        nodes = d.execute_script("return window.gcExplorer.data.nodes")
        assert len(d.find_elements(By.CSS_SELECTOR, "#graph g.node")) == len(g.nodes) == len(nodes)
        browser.click_node(d, HOSTILE[2])              # a real click on a node of the picture
        shown_formulas = 0
        for n in nodes:
            d.execute_script("window.gcExplorer.show(arguments[0])", n["id"])
            assert d.find_element(By.ID, "info-name").get_attribute("textContent") == n["name"]
            if n.get("formula"):
                shown_formulas += 1
                assert d.find_element(By.CSS_SELECTOR, "#info-formula math").is_displayed()
        assert shown_formulas >= len(HOSTILE), "the formulas (with the names as leaves) were shown"
        leaves = d.execute_script("return document.getElementById('info-formula').textContent")
        assert "<img src=x onerror=" in leaves or "</script>" in leaves, "a name shows as text in a formula"
        steps = d.execute_script("return window.gcExplorer.data.steps")
        for k in range(len(steps)):
            d.execute_script("window.gcExplorer.go(arguments[0])", k)
            assert d.find_element(By.ID, "step-title").get_attribute("textContent") == steps[k]["title"]
        d.find_element(By.ID, "first").click()
        d.find_element(By.ID, "next").click()
        pwned, alerts = d.execute_script("return [window.__pwned, window.__alerts]")
        assert pwned is None and alerts == [], f"a name ran as script: __pwned={pwned}, alerts={alerts}"
        handlers = d.execute_script(
            "return Array.from(document.querySelectorAll('*')).filter(e => Array.from(e.attributes)"
            ".some(a => a.name.startsWith('on'))).map(e => e.outerHTML.slice(0, 80))")
        assert handlers == [], "an element carries an event handler attribute"
        assert d.execute_script("return document.scripts.length") == 2
        assert d.execute_script("return window.__csp") == [], "the names were escaped: the policy had nothing to stop"
    finally:
        d.quit()


@pytest.mark.parametrize("title, leaf", [
    ("%DATA%", "<img src=x onerror=alert(1)>"),        # the title pulled the page's JSON into the heading
    ("plain", "<img src=x onerror=alert(1)>"),         # a leaf's name went raw into the formula's MathML
    ("%SVG%", "</svg><img src=x onerror=alert(1)>"),
])
def test_browser_one_hostile_name_runs_nothing(tmp_path, title, leaf):
    g = gc.Graph(title)
    a = g.parameter(leaf, np.ones((2, 2)))
    t = gc.tanh(a, name="t")
    gc.build_grad(gc.sum(t, name="J"), [a])
    d = _browser_with_hooks()
    try:
        d.get(Path(gc.explore(g, tmp_path / "one.html")).resolve().as_uri())
        browser.click_node(d, "t")                     # its formula is tanh(<leaf>)
        assert leaf in d.execute_script("return document.getElementById('info-formula').textContent")
        assert d.execute_script("return [window.__pwned, window.__alerts]") == [None, []]
    finally:
        d.quit()


def test_browser_policy_stops_markup_that_gets_through(tmp_path, mlp, feeds):
    """The second line of defence: markup put into a page (as a name that escaped its escaping would be) does
    not run, since the page's policy allows only its own script (by hash) and no inline handlers; while the
    page's own features, formulas, heat maps, the stepper and the memory plot, raise no complaint of it."""
    from selenium.webdriver.common.by import By
    program = gc.compile([mlp.J, mlp.grads[mlp.W1], mlp.grads[mlp.W2]])
    program.run(feeds)
    d = _browser_with_hooks()
    try:
        path = Path(gc.explore(mlp.graph, tmp_path / "mlp.html", values=feeds))
        d.get(path.resolve().as_uri())
        browser.click_node(d, "dJ/dW2")
        assert d.find_element(By.CSS_SELECTOR, "#info-formula math").is_displayed()
        assert d.find_element(By.CSS_SELECTOR, "#info-value img.heatmap").is_displayed()
        d.find_element(By.ID, "next").click()
        d.get(Path(gc.explore(program, tmp_path / "program.html")).resolve().as_uri())
        d.find_element(By.ID, "next").click()
        assert d.find_element(By.CSS_SELECTOR, "svg.memplot").is_displayed()
        assert d.execute_script("return [window.__alerts, window.__csp]") == [[], []]
        text = path.read_text()
        injected = ('<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
                    '<svg onload="window.__pwned=3"></svg><img src="https://example.invalid/x.png">')
        bad = tmp_path / "injected.html"
        bad.write_text(text.replace("<main>", injected + "<main>", 1))
        d.get(bad.resolve().as_uri())
        assert d.execute_script("return document.body.dataset.ready") == "1"
        d.execute_script("document.getElementById('info').innerHTML = arguments[0]", injected)
        d.execute_script("return 0")
        assert d.execute_script("return window.__pwned") is None
        refused = " ".join(d.execute_script("return window.__csp"))
        assert "script-src" in refused and "img-src" in refused
    finally:
        d.quit()


def test_mathml_keeps_only_mathml():
    """What a printer might let through of a name is rewritten as text; MathML and its attributes stay."""
    from graphcompiler.explore import _clean_mathml
    dirty = ('<mrow><mi mathvariant="bold" onclick="alert(1)">W</mi><mo>&#x2218;</mo><img src=x onerror=alert(1)>'
             '<script>alert(2)</script><mi href="javascript:alert(3)">a&lt;b</mi><mspace width="1em"/></mrow>')
    clean = _clean_mathml(dirty)
    assert clean == ('<mrow><mi mathvariant="bold">W</mi><mo>\u2218</mo>&lt;img src=x onerror=alert(1)&gt;'
                     '&lt;script&gt;alert(2)&lt;/script&gt;<mi>a&lt;b</mi><mspace width="1em"/></mrow>')


# -- large pages: a layout in linear time ---------------------------------------------------------------------

def _chain(n: int) -> gc.Graph:
    g = gc.Graph("chain")
    w = g.parameter("w", np.array(0.5))
    x = w
    while 2 * len(g) < n:
        x = gc.sin(x) * 1.01
    gc.build_grad(gc.sum(x), [w])
    return g


def test_large_page_is_placed_by_the_layered_layout(monkeypatch):
    """From LAYERED_LAYOUT_FROM nodes the positions are computed here (dot takes minutes): every node is drawn,
    each at its own place; below the threshold dot lays the picture out."""
    explore_module = __import__("graphcompiler.explore", fromlist=["_layered_positions"])
    calls = []
    real = explore_module._layered_positions

    def spy(nodes, sizes):
        calls.append(len(nodes))
        return real(nodes, sizes)

    monkeypatch.setattr(explore_module, "_layered_positions", spy)
    small = _chain(explore_module.LAYERED_LAYOUT_FROM - 20)
    page_html(small)
    assert calls == []
    big = _chain(explore_module.LAYERED_LAYOUT_FROM + 20)
    text = page_html(big)
    assert calls == [len(big)]
    groups = re.findall(r'<g id="node\d+" class="node">\s*<title>(n\d+)</title>(.*?)</g>', text, re.S)
    assert sorted(int(t[1:]) for t, _ in groups) == list(range(len(big))), "every node drawn once"
    centres = {re.search(r'<text[^>]* x="([-\d.]+)" y="([-\d.]+)"', body).groups() for _, body in groups}
    assert len(centres) == len(big), "each node at a place of its own"


def test_layered_positions_run_left_to_right_without_overlaps():
    """On a random DAG: every edge goes from left to right, and no two nodes' boxes overlap."""
    from graphcompiler.explore import _layered_positions
    rng = np.random.default_rng(0)
    g = gc.Graph("random")
    nodes = [g.parameter(f"p{k}", np.ones(3)) for k in range(5)]
    for k in range(300):
        a, b = rng.choice(len(nodes), 2)
        nodes.append(gc.add(nodes[a], nodes[b]) if k % 3 else gc.tanh(nodes[a]))
    order = list(g.nodes)
    sizes = [(20.0 + 3 * (k % 7), 20.0 + 2 * (k % 5)) for k in range(len(order))]
    pos = _layered_positions(order, sizes)
    at = {n: k for k, n in enumerate(order)}
    for n in order:
        for x in n.inputs:
            assert pos[at[x]][0] < pos[at[n]][0], f"{x.name} -> {n.name} does not run to the right"
    boxes = sorted((pos[k][0] - w / 2, pos[k][0] + w / 2, pos[k][1] - h / 2, pos[k][1] + h / 2)
                   for k, (w, h) in enumerate(sizes))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if b[0] >= a[1]:
                break
            assert a[3] <= b[2] or b[3] <= a[2], f"boxes {a} and {b} overlap"


def test_mathml_printer_writes_what_sympy_writes(mlp):
    """The explorer's printer (names escaped, a product's sign read from its coefficient) writes the same
    MathML as SymPy's own for names without markup: the MLP's formulas, and products with a minus sign."""
    from sympy.printing.mathml import mathml

    from graphcompiler.explore import _mathml_printer
    from graphcompiler.symbolic import to_sympy
    g = gc.Graph("signs")
    A, B, C = (g.parameter(n, np.ones((2, 2))) for n in ("A", "B", "C"))
    signed = [gc.matmul(-A, B), A - gc.matmul(B, C), gc.matmul(A, B) - gc.matmul(-C, B) * 2.0]
    exprs = [to_sympy(n, form=form) for n in list(mlp.graph.nodes) + signed for form in ("leaves", "textbook")]
    mine = [_mathml_printer()().doprint(e) for e in exprs]
    assert mine == [mathml(e, printer="presentation") for e in exprs]
    assert sum("<mo>-</mo>" in m for m in mine) >= 3


def test_page_json_has_no_nan_and_no_markup():
    """JSON.parse refuses NaN (a nan attribute left the page dead): non-finite attributes are text; and the
    JSON in the page has no character that ends its <script> element or opens a comment."""
    from graphcompiler.explore import _json_in_html, _short
    data = {"attrs": {"fill": _short(float("nan")), "hi": _short(float("inf"))},
            "name": "</script><!--<script>&\u2028"}
    text = _json_in_html(data)
    assert json.loads(text) == {"attrs": {"fill": "nan", "hi": "inf"}, "name": data["name"]}
    assert not set("<>&\u2028\u2029") & set(text) and "NaN" not in text and "Infinity" not in text
