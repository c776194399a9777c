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
