"""Benchmark: peak memory and time of gc.load on hostile graph files (issue 17), each in a fresh subprocess.

    python benchmarks/loader_memory.py              # 50 MB files, the shipped loader
    python benchmarks/loader_memory.py --mb 10      # smaller files
    python benchmarks/loader_memory.py --tracemalloc  # also the Python-heap peak (slower)

The files: `empty-lists` (50 MB of `[]` entries in the node list), `nested` (the same inside one node's
attributes), `floats` (a shape list of 50 MB of large numbers) and, for comparison, a `legit` file of a
chain graph of 20,000 nodes. For each: the outcome (loaded, or the error's class), the wall time of the
load, and the process's peak resident memory beyond the high-water mark after importing graphcompiler
(VmHWM, reset after the import through /proc/self/clear_refs where Linux allows; else ru_maxrss, and
then a load below the import's own mark, shown, reads 0). Numbers are from one run on a shared machine: noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

HEAD = '{"format": "graphcompiler-graph", "version": 1, "name": "hostile", "nodes": ['
NODE = ('{"name": "x", "op": "input", "inputs": [], "shape": [2], "dtype": "float64", "attrs": {}, '
        '"is_gradient": false, "origin": null}')


def make_files(folder: Path, mb: float) -> dict[str, Path]:
    n = int(mb * 2**20)
    files = {}
    body = "[]," * (n // 3)
    files["empty-lists"] = HEAD + body + "[]]}"
    files["nested"] = (HEAD + NODE + ', {"name": "s", "op": "sum", "inputs": ["x"], "shape": [], '
                       '"dtype": "float64", "attrs": {"axis": [' + body + '[]], "keepdims": false}, '
                       '"is_gradient": false, "origin": null}]}')
    files["floats"] = HEAD + ('{"name": "x", "op": "input", "inputs": [], "shape": ['
                              + "1e300," * (n // 6) + '1], "dtype": "float64", "attrs": {}, '
                              '"is_gradient": false, "origin": null}]}')
    paths = {}
    for name, text in files.items():
        p = folder / f"{name}.json"
        p.write_text(text)
        paths[name] = p
    sys.path.insert(0, str(ROOT))
    import graphcompiler as gc
    g = gc.Graph("chain")
    x = g.input("x", shape=(None, 4))
    for _ in range(20_000):
        x = gc.tanh(x)
    paths["legit"] = folder / "legit.json"
    g.save(paths["legit"])
    return paths


CHILD = r"""
import json, resource, sys, time, tracemalloc
sys.path.insert(0, sys.argv[2])
import graphcompiler as gc
import gc as pygc
pygc.collect()
def hwm():
    try:                                   # Linux: VmHWM, the peak resident set, in KiB
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:                                       # reset the high-water mark to the current RSS (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
base = hwm()
if sys.argv[3] == "1":
    tracemalloc.start()
t = time.perf_counter()
try:
    gc.load(sys.argv[1])
    outcome = "loaded"
except BaseException as e:
    outcome = type(e).__name__ + ": " + str(e)[:90]
dt = time.perf_counter() - t
heap = tracemalloc.get_traced_memory()[1] if sys.argv[3] == "1" else None
peak = hwm()
print(json.dumps({"outcome": outcome, "seconds": dt, "rss_mib": (peak - base) / 1024, "base_mib": base / 1024,
                  "heap_mib": heap / 2**20 if heap is not None else None}))
"""


def measure(path: Path, trace: bool) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), str(ROOT), "1" if trace else "0"],
                          capture_output=True, text=True, timeout=600, check=False)
    if done.returncode:
        return {"outcome": f"crashed ({done.returncode}): {done.stderr.strip()[-200:]}", "seconds": None,
                "rss_mib": None, "heap_mib": None}
    return json.loads(done.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=50.0, help="size of each hostile file in MB (default 50)")
    ap.add_argument("--tracemalloc", action="store_true", help="also measure the Python heap peak")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_files(Path(tmp), args.mb)
        print(f"{'file':<12} {'MB':>6} {'seconds':>8} {'peak RSS MiB':>13} {'(import)':>9} {'heap MiB':>9}  outcome")
        for name, p in paths.items():
            r = measure(p, args.tracemalloc)
            size = os.path.getsize(p) / 2**20
            sec = f"{r['seconds']:.2f}" if r["seconds"] is not None else "-"
            rss = f"{r['rss_mib']:.0f}" if r["rss_mib"] is not None else "-"
            heap = f"{r['heap_mib']:.0f}" if r.get("heap_mib") is not None else "-"
            base = f"{r['base_mib']:.0f}" if r.get("base_mib") is not None else "-"
            print(f"{name:<12} {size:>6.1f} {sec:>8} {rss:>13} {base:>9} {heap:>9}  {r['outcome'][:70]}")


if __name__ == "__main__":
    main()
