"""Times of the explorer page (gc.explore) in a real headless Chromium: writing it, rendering it, a click.

  python benchmarks/explorer.py [--sizes 500,1000,2000,5000] [--screenshots docs/figures]

For the demo's MLP page (with a minibatch's values), then for each size a chain of sin and its gradient and a
deep MLP's gradient (tanh layers) of about that many nodes: the time to write the page (the layout, dot's up to
explore.LAYERED_LAYOUT_FROM nodes and the linear layered one above, and the formulas), to load and render it in
the browser (from navigation to the page's script having run, then one frame), and to answer a click on a node
(the panel filled and laid out), median of 20 clicks. --screenshots writes the pictures the README shows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import browser  # noqa: E402  (tests/browser.py: the headless Chromium the tests use)

import graphcompiler as gc  # noqa: E402
from graphcompiler.demo import build_mlp  # noqa: E402


def demo_page(folder: Path) -> tuple[Path, float, int, str]:
    mlp = build_mlp(64, 32, 10, lam=1e-4, seed=0)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(size=(32, 64)), "y": rng.integers(0, 10, 32)}
    t = time.perf_counter()
    path = gc.explore(mlp.graph, folder / "mlp.html", values=feeds)
    return Path(path), time.perf_counter() - t, len(mlp.graph), "dJ/dW2"


def chain_page(folder: Path, n: int = 500) -> tuple[Path, float, int, str]:
    g = gc.Graph("chain")
    w = g.parameter("w", np.array(0.5))
    x = w
    while 2 * len(g) < n:
        x = gc.sin(x) * 1.01
    gc.build_grad(gc.sum(x), [w])
    t = time.perf_counter()
    path = gc.explore(g, folder / f"chain{n}.html")
    return Path(path), time.perf_counter() - t, len(g), "dsum_1/dw"


def mlp_page(folder: Path, n: int = 500) -> tuple[Path, float, int, str]:
    """A deep MLP (a tanh layer is 15 nodes with its gradient) and the gradient of a squared norm."""
    g = gc.Graph("deep mlp")
    rng = np.random.default_rng(0)
    h = g.input("x", (4, 8))
    params = []
    for k in range(max(1, n // 15)):
        W = g.parameter(f"layer{k}/W", rng.normal(size=(8, 8)) / 8)
        b = g.parameter(f"layer{k}/b", np.zeros(8))
        h = gc.tanh(gc.matmul(h, W, name=f"layer{k}/z0") + b, name=f"layer{k}/h")
        params += [W, b]
    gc.build_grad(gc.sum(h * h, name="J"), params)
    t = time.perf_counter()
    path = gc.explore(g, folder / f"mlp{n}.html")
    return Path(path), time.perf_counter() - t, len(g), "dJ/dlayer0/W"


RENDER = """
const t0 = performance.timeOrigin;
return new Promise(r => requestAnimationFrame(() => r(performance.now())));
"""

CLICK = """
const id = window.gcExplorer.data.nodes.find(n => n.name === arguments[0]).id;
const g = Array.from(document.querySelectorAll('g.node')).find(g => g.querySelector('title').textContent === id);
const t = performance.now();
g.dispatchEvent(new MouseEvent('click', {bubbles: true}));
document.getElementById('info').getBoundingClientRect();     // force the layout of the filled panel
return performance.now() - t;
"""


def measure(driver, path: Path, node: str) -> tuple[float, float]:
    driver.get(path.resolve().as_uri())
    rendered = driver.execute_script(RENDER)            # ms from navigation start to the first frame after load
    clicks = [driver.execute_script(CLICK, node) for _ in range(20)]
    return rendered, statistics.median(clicks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--screenshots", metavar="DIR", help="also write explorer screenshots into DIR")
    ap.add_argument("--sizes", default="500,1000,2000,5000", help="node counts of the large pages (comma-separated)")
    args = ap.parse_args()
    why = browser.missing()
    if why:
        sys.exit(f"cannot run: {why}")
    driver = browser.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            print(f"{'page':<24}{'nodes':>7}{'write (s)':>11}{'KiB':>8}{'render (ms)':>13}{'click (ms)':>12}")
            makers = [(demo_page, 0)] + [(m, int(n)) for n in args.sizes.split(",") for m in (chain_page, mlp_page)]
            for make, size in makers:
                path, write, nodes, node = make(folder, size) if size else make(folder)
                rendered, click = measure(driver, path, node)
                print(f"{path.stem:<24}{nodes:>7}{write:>11.2f}{path.stat().st_size / 1024:>8.0f}"
                      f"{rendered:>13.0f}{click:>12.1f}")
                if args.screenshots and make is demo_page:
                    shots(driver, path, Path(args.screenshots))
    finally:
        driver.quit()


def shots(driver, path: Path, out: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    out.mkdir(parents=True, exist_ok=True)
    driver.get(path.resolve().as_uri())
    browser.click_node(driver, "dJ/dW2")
    driver.save_screenshot(str(out / "explorer_click.png"))
    data = driver.execute_script("return window.gcExplorer.data")
    k = next(i for i, s in enumerate(data["steps"]) if s["title"].startswith("backward: grad_table[h]"))
    body = driver.find_element(By.TAG_NAME, "body")
    for _ in range(k + 1):
        body.send_keys(Keys.ARROW_RIGHT)
    driver.save_screenshot(str(out / "explorer_step.png"))
    print(f"wrote {out / 'explorer_click.png'} and {out / 'explorer_step.png'}")


if __name__ == "__main__":
    main()
