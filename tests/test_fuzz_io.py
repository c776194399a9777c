"""Fuzzing the graph file loader: every mutated file loads to a valid graph or raises GraphFileError, in under
a second, without large allocations, and without running anything (an audit hook watches for it).

Byte-level mutations (truncation, flips, spliced spans) come from a seeded generator; structural ones
(unknown ops, huge and negative shapes, wrong types, self loops, dangling inputs, duplicate names, deep
nesting) are drawn by hypothesis. Together they are well over a thousand files per run.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphcompiler as gc
from graphcompiler import io

MAX_SECONDS = 1.0                  # per mutated file
MAX_ALLOC = 16 * 2**20             # bytes a load may allocate at its peak (the files are ~15 KB)
N_BYTE_MUTATIONS = 600
N_STRUCTURAL_MIN = 1000

# -- the audit hook -------------------------------------------------------------------------
# Audit hooks cannot be removed, so one hook is installed per process and is active only while a flag is
# set: exactly around each load of a mutated file.

FORBIDDEN_PREFIXES = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                      "os.startfile", "subprocess.", "pickle.", "marshal.", "ctypes.", "socket.", "urllib.",
                      "shutil.", "os.remove", "os.rename", "os.unlink", "os.rmdir", "os.mkdir", "webbrowser.")
FORBIDDEN_EVENTS = {"import", "exec", "compile", "builtins.input", "code.__new__", "function.__new__"}


class AuditState:
    def __init__(self):
        self.active = False
        self.allowed_open: str | None = None
        self.violations: list[tuple[str, str]] = []

    def hook(self, event: str, args: tuple) -> None:
        if not self.active:
            return
        bad = event in FORBIDDEN_EVENTS or event.startswith(FORBIDDEN_PREFIXES)
        if event == "open":
            bad = self.allowed_open is None or os.fspath(args[0]) != self.allowed_open
        if bad:
            self.violations.append((event, repr(args)[:200]))
            raise RuntimeError(f"audit hook: {event} while loading a graph file")


def _install() -> AuditState:
    state = getattr(sys, "_graphcompiler_fuzz_audit", None)
    if state is None:
        state = AuditState()
        sys.addaudithook(state.hook)
        sys._graphcompiler_fuzz_audit = state
    return state


AUDIT = _install()


# -- the files ------------------------------------------------------------------------------

def base_graph() -> gc.Graph:
    rng = np.random.default_rng(1)
    g = gc.Graph("mlp")
    x = g.input("x", shape=(None, 4))
    y = g.input("y", shape=(None,), dtype="int64")
    W1 = g.parameter("W1", rng.standard_normal((4, 3)))
    W2 = g.parameter("W2", shape=(3, 2))
    b = g.parameter("b", np.zeros(2, "float32"))
    h = gc.relu(gc.matmul(x, W1, name="z"), name="h")
    o = gc.add(h @ W2, gc.astype(b, "float64"), name="o")
    L = gc.softmax_cross_entropy(o, y, name="L")
    J = gc.add(L, gc.sum(gc.mean(o[1:, ::2], axis=0)) * 0.01, name="J")
    gc.build_grad(J, [W1, W2, b])
    return g


BASE_TEXT = io.dumps(base_graph())
BASE_DOC = json.loads(BASE_TEXT)
NODE_NAMES = [r["name"] for r in BASE_DOC["nodes"]]


def check_valid(g: gc.Graph) -> None:
    """A loaded graph obeys every invariant a graph built through the API does."""
    seen: dict[str, int] = {}
    for k, n in enumerate(g.nodes):
        assert n.index == k and n.name not in seen and g[n.name] is n
        assert n.op.name in gc.OPS
        assert n.dtype.name in io.DTYPES or n.op.name in io.CONTROL_OPS   # a loop's node holds its results
        assert all(x.graph is g and x.index < k for x in n.inputs)
        assert all(d is None or isinstance(d, int) and d >= 0 for d in n.shape)
        if n.inputs:
            shape, dtype = n.op.infer(*n.inputs)
            assert tuple(shape) == n.shape and np.dtype(dtype) == n.dtype
        v = g.stored_value(n)
        if v is not None:
            assert v.shape == n.shape and v.dtype == n.dtype
        if n.origin is not None:
            assert n.is_gradient and n.origin[0].index < k
        seen[n.name] = k
    text = io.dumps(g)
    assert io.dumps(io.loads(text)) == text


class Outcomes:
    def __init__(self):
        self.loaded = self.refused = 0
        self.slowest = 0.0
        self.peak = 0

    @property
    def total(self) -> int:
        return self.loaded + self.refused

    def attempt(self, data, what: str, path: str | None = None) -> None:
        """Load one mutated file with the audit hook on; it must load validly or raise GraphFileError."""
        graph = None
        tracemalloc.start()                                  # traced only while the loader runs
        t0 = time.perf_counter()
        AUDIT.allowed_open = path
        AUDIT.active = True
        try:
            graph = gc.load(path) if path else io.loads(data)
        except gc.GraphFileError as e:
            assert str(e), what
        except Exception as e:                               # anything else is a loader bug
            raise AssertionError(f"{what}: {type(e).__name__}: {e}") from e
        finally:
            AUDIT.active = False
            AUDIT.allowed_open = None
            elapsed = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert not AUDIT.violations, f"{what}: {AUDIT.violations}"
        assert elapsed < MAX_SECONDS, f"{what}: took {elapsed:.2f} s"
        assert peak < MAX_ALLOC, f"{what}: allocated {peak} bytes"
        self.slowest, self.peak = max(self.slowest, elapsed), max(self.peak, peak)
        if graph is None:
            self.refused += 1
        else:
            check_valid(graph)
            self.loaded += 1


# -- the hook itself works ------------------------------------------------------------------

def test_audit_hook_catches_pickle_and_process_creation():
    import pickle
    AUDIT.active = True
    try:
        with pytest.raises(RuntimeError, match="audit hook: pickle.find_class"):
            pickle.loads(b"cos\nsystem\n.")                  # a pickle that would call os.system
        with pytest.raises(RuntimeError, match="audit hook: subprocess.Popen"):
            import subprocess
            subprocess.Popen(["true"])
    finally:
        AUDIT.active = False
        caught = [e for e, _ in AUDIT.violations]
        AUDIT.violations.clear()
    assert caught == ["pickle.find_class", "subprocess.Popen"]


def test_unmutated_file_loads():
    out = Outcomes()
    out.attempt(BASE_TEXT, "the unmutated file")
    assert out.loaded == 1


# -- byte-level mutations -------------------------------------------------------------------

JSON_BYTES = b'{}[]",:-+.0123456789eEnulltruefalse\\ \n'


def byte_mutation(rng: np.random.Generator, data: bytes) -> tuple[bytes, str]:
    n = len(data)
    kind = int(rng.integers(7))
    if kind == 0:
        k = int(rng.integers(n))
        return data[:k], f"truncated to {k} bytes"
    if kind == 1:
        buf = bytearray(data)
        spots = rng.integers(n, size=int(rng.integers(1, 9)))
        for s in spots:
            buf[s] ^= int(rng.integers(1, 256))
        return bytes(buf), f"bytes flipped at {sorted(spots.tolist())}"
    if kind == 2:
        buf = bytearray(data)
        spots = rng.integers(n, size=int(rng.integers(1, 5)))
        for s in spots:
            buf[s] = JSON_BYTES[int(rng.integers(len(JSON_BYTES)))]
        return bytes(buf), f"JSON characters written at {sorted(spots.tolist())}"
    a, b = sorted(rng.integers(n, size=2).tolist())
    if kind == 3:
        return data[:a] + data[b:], f"bytes {a}:{b} deleted"
    if kind == 4:
        c = int(rng.integers(n))
        return data[:c] + data[a:b] + data[c:], f"bytes {a}:{b} copied to {c}"
    if kind == 5:
        lines = data.split(b"\n")
        i, j = rng.integers(1, len(lines) - 2, size=2).tolist()
        lines[i], lines[j] = lines[j], lines[i]
        return b"\n".join(lines), f"lines {i} and {j} swapped"
    digits = b"9" * int(rng.choice([5, 20, 400, 5000]))
    spot = data.find(b"[", a)
    spot = a if spot < 0 else spot + 1
    return data[:spot] + digits + b"," + data[spot:], f"{len(digits)} digits inserted at {spot}"


def test_byte_mutations(tmp_path):
    rng = np.random.default_rng(2026)
    data = BASE_TEXT.encode()
    out = Outcomes()
    for k in range(N_BYTE_MUTATIONS):
        mutated, what = byte_mutation(rng, data)
        if k % 20 == 0:                                      # some through gc.load(path), opening the file
            path = tmp_path / f"m{k}.json"
            path.write_bytes(mutated)
            out.attempt(None, what, path=str(path))
        else:
            out.attempt(mutated, what)
    assert out.total == N_BYTE_MUTATIONS
    assert out.refused > N_BYTE_MUTATIONS // 2                # most byte damage must be caught
    print(f"\nbyte mutations: {out.total} ({out.loaded} loaded, {out.refused} refused), slowest "
          f"{out.slowest * 1e3:.1f} ms, peak {out.peak / 2**20:.2f} MiB")


# -- structural mutations drawn by hypothesis -----------------------------------------------

UNKNOWN_OPS = ["os.system", "__import__", "eval", "exec", "pickle.loads", "builtins.open", "", "Matmul",
               "subprocess.Popen", "numpy.load", "graphcompiler.io.load", "op"]
BAD_DTYPES = ["object", "O", "<f8", ">f8", "complex128", "float128", "V1000000000", "S10", "U", "datetime64",
              "int", "float", ""]
FIELDS = ["name", "op", "inputs", "shape", "dtype", "attrs", "is_gradient", "origin", "value", "extra"]
HUGE = [2**31, 2**32, 2**62, 2**63, 2**64, 10**30, -1, -2**63, 0]

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.sampled_from(HUGE),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=4), inner,
                                                                            max_size=3)), max_leaves=6)
dims = st.lists(st.one_of(st.none(), st.integers(-3, 5), st.sampled_from(HUGE), st.floats(-1, 1e20),
                          st.text(max_size=2), st.booleans()), max_size=40)
pick = st.integers(0, len(NODE_NAMES) - 1)

mutation = st.one_of(
    st.tuples(st.just("op"), pick, st.one_of(st.sampled_from(UNKNOWN_OPS + sorted(gc.OPS)), st.text(max_size=8))),
    st.tuples(st.just("shape"), pick, dims),
    st.tuples(st.just("dtype"), pick, st.one_of(st.sampled_from(BAD_DTYPES + list(io.DTYPES)), json_leaf)),
    st.tuples(st.just("field"), pick, st.tuples(st.sampled_from(FIELDS), json_value)),
    st.tuples(st.just("drop_field"), pick, st.sampled_from(FIELDS)),
    st.tuples(st.just("attr"), pick, st.tuples(st.sampled_from(["axis", "axes", "shape", "keepdims", "dtype",
                                                                 "index", "part", "x"]), json_value)),
    st.tuples(st.just("self_loop"), pick, st.integers(0, 3)),
    st.tuples(st.just("dangling"), pick, st.text(max_size=6)),
    st.tuples(st.just("forward"), pick, pick),
    st.tuples(st.just("duplicate_name"), pick, pick),
    st.tuples(st.just("drop_node"), pick, st.none()),
    st.tuples(st.just("copy_node"), pick, pick),
    st.tuples(st.just("swap_nodes"), pick, pick),
    st.tuples(st.just("huge_value"), pick, st.lists(st.sampled_from(HUGE + [3, 4, 1000]), min_size=1, max_size=4)),
    st.tuples(st.just("value_data"), pick, st.one_of(st.text(max_size=20), json_leaf, st.integers(-8, 8))),
    st.tuples(st.just("origin"), pick, st.tuples(pick, st.integers(-2, 4))),
    st.tuples(st.just("deep"), pick, st.tuples(st.sampled_from(FIELDS), st.sampled_from([50, 900, 5000, 200000]))),
    st.tuples(st.just("top"), st.sampled_from(["format", "version", "name", "nodes", "extra"]), json_value),
)


def mutate(doc: dict, m) -> int | None:
    """Apply one mutation to a parsed file in place; returns a nesting depth to splice in, if any."""
    kind, i, arg = m
    if kind == "top":
        doc[i] = arg
        return None
    nodes = doc["nodes"]
    i = i % len(nodes)
    rec = nodes[i]
    deep = None
    if kind == "op":
        rec["op"] = arg
    elif kind == "shape":
        rec["shape"] = arg
    elif kind == "dtype":
        rec["dtype"] = arg
    elif kind == "field":
        rec[arg[0]] = arg[1]
    elif kind == "drop_field":
        rec.pop(arg, None)
    elif kind == "attr":
        rec["attrs"][arg[0]] = arg[1]
    elif kind == "self_loop":
        rec["inputs"] = (rec["inputs"] + [rec["name"]] * (arg + 1))[-max(1, len(rec["inputs"])):]
    elif kind == "dangling":
        rec["inputs"] = rec["inputs"][:-1] + ["missing" + arg]
    elif kind == "forward":
        rec["inputs"] = (rec["inputs"] or ["x"])[:-1] + [NODE_NAMES[max(arg, i)]]
    elif kind == "duplicate_name":
        rec["name"] = NODE_NAMES[arg]
    elif kind == "drop_node":
        del nodes[i]
    elif kind == "copy_node":
        nodes.insert(arg, json.loads(json.dumps(rec)))
    elif kind == "swap_nodes":
        nodes[i], nodes[arg] = nodes[arg], nodes[i]
    elif kind == "huge_value":
        rec["shape"] = list(arg)
        if isinstance(rec.get("value"), dict):
            rec["value"]["shape"] = list(arg)
    elif kind == "value_data":
        val = rec.get("value")
        if isinstance(val, dict):
            val["data"] = val["data"][:arg] if isinstance(arg, int) else arg
        else:
            rec["value"] = {"dtype": rec["dtype"], "shape": rec["shape"], "data": arg}
    elif kind == "origin":
        rec["origin"] = [NODE_NAMES[arg[0]], arg[1]]
    elif kind == "deep":
        deep = arg[1]
        rec[arg[0]] = "\u0001DEEP"
    return deep


def render(doc: dict, deep: int | None) -> str:
    text = json.dumps(doc)
    return text.replace('"\\u0001DEEP"', "[" * deep + "]" * deep) if deep else text


def apply_mutation(m) -> tuple[str, str]:
    """A mutated copy of the base file: (text, description)."""
    doc = json.loads(BASE_TEXT)                               # a fresh copy (faster than deepcopy)
    deep = mutate(doc, m)
    kind, i, arg = m
    return render(doc, deep), f"{kind} {NODE_NAMES[i] if isinstance(i, int) else i!r} {arg!r}"[:300]


def stacked(mutations) -> str:
    """Several mutations in one file (each skipped where an earlier one removed what it edits)."""
    doc, deep = json.loads(BASE_TEXT), None
    for m in mutations:
        if not isinstance(doc.get("nodes"), list) or not doc["nodes"]:
            break
        try:
            deep = mutate(doc, m) or deep
        except (TypeError, KeyError, AttributeError, IndexError):
            continue
    return render(doc, deep)


def test_structural_mutations():
    examples = settings().max_examples
    batch = math.ceil(N_STRUCTURAL_MIN / examples)            # at least N_STRUCTURAL_MIN files in all
    out = Outcomes()
    kinds: set[str] = set()

    @settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much], max_examples=examples)
    @given(st.lists(mutation, min_size=batch, max_size=batch))
    def run(mutations):
        for m in mutations:
            text, what = apply_mutation(m)
            kinds.add(m[0])
            out.attempt(text, what)
        out.attempt(stacked(mutations[:4]), f"stacked {mutations[:4]!r}"[:300])

    run()
    assert out.total >= N_STRUCTURAL_MIN, out.total
    assert out.refused > out.total // 2
    assert {"op", "shape", "self_loop", "dangling", "duplicate_name", "deep"} <= kinds
    print(f"\nstructural mutations: {out.total} ({out.loaded} loaded, {out.refused} refused), slowest "
          f"{out.slowest * 1e3:.1f} ms, peak {out.peak / 2**20:.2f} MiB")


# -- the newer format: control-flow bodies and the ops of API section 9 ----------------------

def new_ops_graph() -> gc.Graph:
    """A scan (an RNN) with its reverse scan, a convnet layer, Cholesky, a gather, random draws, einsum."""
    rng = np.random.default_rng(3)
    g = gc.Graph("new_ops")
    xs = g.input("xs", shape=(None, 2, 3))
    h0 = g.parameter("h0", np.zeros((2, 4)))
    W = g.parameter("W", rng.standard_normal((4, 4)) * 0.3)
    U = g.parameter("U", rng.standard_normal((3, 4)) * 0.3)
    hT, _ = gc.scan(lambda h, x: (gc.tanh(h @ W + x @ U), h), h0, xs)
    img = g.input("img", shape=(None, 1, 6, 6))
    k = g.parameter("k", rng.standard_normal((2, 1, 3, 3)))
    c = gc.max_pool2d(gc.relu(gc.conv2d(img, k, padding=1)), 2)
    A = g.parameter("A", np.eye(3) * 2.0)
    key = g.parameter("key", gc.random.key(0))
    idx = g.constant(np.array([0, 2, 2]), name="idx")
    J = (gc.sum(hT * gc.random.normal(key, (2, 4))) + gc.sum(c)
         + gc.sum(gc.take(gc.linalg.cholesky(A), idx, axis=0)) + gc.einsum("ij,ij->", hT, hT))
    gc.build_grad(gc.add(J, 0.0, name="J"), [W, U, h0, k, A])
    return g


NEW_TEXT = io.dumps(new_ops_graph())


def _bodies(doc: dict) -> list[dict]:
    """The body graphs of a parsed file (nested ones too)."""
    out, stack = [], [doc]
    while stack:
        for rec in stack.pop()["nodes"]:
            body = rec.get("attrs", {}).get("body")
            if isinstance(body, dict):
                for part in body.values():
                    if isinstance(part, dict) and isinstance(part.get("graph"), dict):
                        out.append(part["graph"])
                        stack.append(part["graph"])
    return out


BODY_MUTATIONS = [
    ("op", "os.system"), ("op", "scan"), ("op", "matmul"), ("shape", [10**12, 10**12]), ("shape", [-1]),
    ("shape", "big"), ("dtype", "object"), ("inputs", ["nowhere"]), ("inputs", []), ("name", "h"),
    ("attrs", {"body": {}}), ("attrs", {"axes": [0, 0]}), ("drop", "inputs"), ("drop", "shape"),
]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10**6), st.integers(0, 10**6), st.sampled_from(BODY_MUTATIONS),
       st.sampled_from(["graph", "field"]))
def test_body_mutations(b, i, mutation, where):
    """A mutated body of a scan (or of its reverse scan) loads validly or is refused with GraphFileError."""
    doc = json.loads(NEW_TEXT)
    bodies = _bodies(doc)
    assert bodies, "the base file has scan bodies"
    body = bodies[b % len(bodies)]
    if where == "field":                                      # the body record's own fields, not its nodes
        scan = next(r for r in doc["nodes"] if r["op"] == "scan")
        rec = scan["attrs"]["body"]
        key = sorted(rec)[i % len(rec)]
        rec[key] = mutation[1] if mutation[0] != "drop" else None
    else:
        rec = body["nodes"][i % len(body["nodes"])]
        kind, arg = mutation
        if kind == "drop":
            rec.pop(arg, None)
        else:
            rec[kind] = arg
    Outcomes().attempt(json.dumps(doc), f"body {where} {mutation!r}")


def test_new_format_byte_mutations():
    data = NEW_TEXT.encode()
    assert io.loads(NEW_TEXT) is not None and b'"scan"' in data and b'"conv2d"' in data
    rng = np.random.default_rng(2027)
    out = Outcomes()
    for _ in range(300):
        mutated, what = byte_mutation(rng, data)
        out.attempt(mutated, what)
    assert out.refused > 150


@pytest.mark.parametrize("kind, arg, message", [("op", "os.system", "os.system"), ("shape", [10**12, 10**12], ""),
                                                ("inputs", ["nowhere"], "nowhere"), ("dtype", "object", "object")])
def test_body_checked_like_the_file(kind, arg, message):
    """The loader's checks reach inside a scan's body: an unknown op, a huge shape, a dangling input, a bad dtype."""
    doc = json.loads(NEW_TEXT)
    body = _bodies(doc)[0]
    rec = next(r for r in body["nodes"] if r["op"] == "matmul")
    rec[kind] = arg
    with pytest.raises(gc.GraphFileError) as info:
        io.loads(json.dumps(doc))
    msg = str(info.value)
    assert message in msg and "body" in msg, msg
