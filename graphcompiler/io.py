"""Graph files (API section 7): save a graph as JSON data, and load one back only after validating all of it.

The format is documented in docs/FORMAT.md. A file is data, never a program: the loader reads JSON, looks op
names up in the op allowlist `OPS`, and builds nodes the way the graph API does, re-running each op's shape
rule. Nothing named by the file is imported, unpickled or evaluated, and no array is allocated before its
size has been checked against the caller's limits (TensorFlow's CVE-2022-23580 sized a vector by a value
read from the file; here a size is checked before it is used).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import difflib
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, cast

import numpy as np

from .errors import GraphCompilerError, GraphFileError, fmt_shape
from .graph import (
    DTYPES,
    MAX_ATTR_ITEMS,
    MAX_DEPTH,
    MAX_INPUTS,
    MAX_INT,
    MAX_NAME,
    MAX_RANK,
    record_limit,
    Graph,
    Node,
    install,
    name_problem,
)
from .ops import OPS  # the allowlist of op names: the only classes a file can name
from .ops.base import Op

FORMAT = "graphcompiler-graph"
VERSION = 2  # written; 2 added the bodies of scan, cond and while_loop
READS = (1, 2)  # versions this loader reads: every file an earlier graphcompiler wrote

LIMITS = {  # the defaults of load's size limits (callers may raise or lower them)
    "max_file_bytes": 256 * 2**20,  # the file itself, checked before it is read
    "max_nodes": 1_000_000,
    "max_array_elements": 2**26,  # one parameter or constant value
    "max_array_bytes": 256 * 2**20,  # one value, shape times item size
    "max_total_bytes": 1024 * 2**20,  # all values together
    "max_json_containers": 2**22,  # JSON lists and objects, counted before parsing (each costs ~64 bytes)
    "max_json_values": 2**23,  # JSON values in lists and objects (commas), counted before parsing
}
# The fixed limits (DTYPES, MAX_NAME, MAX_RANK, MAX_INPUTS, MAX_ATTR_ITEMS, MAX_INT, MAX_DEPTH, MAX_STEPS) are
# graph.py's: a graph refuses a node over them as it is built, so what save writes, load reads.

NODE_KEYS = ("name", "op", "inputs", "shape", "dtype", "attrs", "is_gradient", "origin")
_NODE_FIELDS = frozenset(NODE_KEYS) | {"value"}  # the fields a node record may have
VALUE_KEYS = ("dtype", "shape", "data")
TOP_KEYS = ("format", "version", "name", "nodes")


# -- saving ---------------------------------------------------------------------------------


def save(graph: Graph, path: str | os.PathLike) -> None:
    """Write `graph` to `path` as one JSON file of data, atomically: a crash or a full disk while saving
    leaves the old file as it was (the text goes to a fresh temporary file in the same directory, is
    flushed to disk, and only then renamed over `path`; a failed attempt removes its temporary file)."""
    text = dumps(graph)
    _warn_over_limits(text, graph, str(path))
    data = text.encode("utf-8")
    path = Path(path)
    folder = path.parent
    for _ in range(100):
        tmp = folder / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        try:  # O_EXCL: never reuse (or follow a link planted at) a name
            fd = os.open(tmp, _WRITE_FLAGS, 0o666)
            break
        except FileExistsError:
            continue
    else:
        raise GraphCompilerError(f"cannot make a temporary file next to {str(path)!r} to save the graph")
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _sync_folder(folder)


def _sync_folder(folder: Path) -> None:
    """Flush the rename itself to disk where the platform allows it (POSIX: fsync the directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def dumps(graph: Graph) -> str:
    """The JSON text of `graph`: one node per line, in creation order."""
    if not isinstance(graph, Graph):
        raise GraphCompilerError(f"save takes a gc.Graph, got {type(graph).__name__}")
    rows = [json.dumps(_node_record(graph, n, 0), separators=(",", ":"), allow_nan=False) for n in graph.nodes]
    head = json.dumps({"format": FORMAT, "version": VERSION, "name": graph.name})[:-1]
    return head + ', "nodes": [\n' + ",\n".join(rows) + "\n]}\n"


def _node_record(graph: Graph, n: Node, depth: int) -> dict:
    """A node as the file holds it; `depth`: how many bodies the graph is nested in."""
    rec = {
        "name": n.name,
        "op": n.op.name,
        "inputs": [x.name for x in n.inputs],
        "shape": list(n.shape),
        "dtype": n.dtype.name,
        "attrs": (
            {"body": _body_record(n, depth + 1)}
            if n.op.has_body
            else {k: _encode_attr(n, k, v) for k, v in n.attrs.items()}
        ),
        "is_gradient": bool(n.is_gradient),
        "origin": None if n.origin is None else [n.origin[0].name, int(n.origin[1])],
    }
    if n.op.name in ("parameter", "constant"):
        arr = graph.stored_value(n)
        rec["value"] = None if arr is None else _encode_array(arr)
    return rec


def _encode_attr(n: Node, key: str, v: Any):
    if isinstance(v, (bool, int, str)) or v is None:
        return v
    if isinstance(v, float):  # JSON has no inf or nan: they are written as strings (pad's value=-inf)
        return v if math.isfinite(v) else str(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, tuple):
        return [_encode_attr(n, key, item) for item in v]
    raise GraphCompilerError(
        f"node {n.name!r} ({n.op.name}): attribute {key}={v!r} of type "
        f"{type(v).__name__} cannot be written to a graph file (ints, bools, strings, "
        "floats and tuples of them only)"
    )


def _encode_array(arr: np.ndarray) -> dict:
    little = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    return {
        "dtype": arr.dtype.name,
        "shape": list(arr.shape),
        "data": base64.b64encode(little.tobytes()).decode("ascii"),
    }


class GraphFileWarning(UserWarning):
    """A graph file that save wrote but that gc.load reads only with some of its limits raised."""


def _warn_over_limits(text: str, graph: Graph, where: str) -> None:
    """Warn when the file is over a default limit of load (its size, nodes, values): the fixed limits the
    graph enforces as it is built, but these are the reader's to raise, so the warning says how."""
    need = _needs(graph)
    need["max_file_bytes"] = len(text.encode("utf-8")) if not text.isascii() else len(text)
    containers, values = _quick_counts(text, "[", "{", ",")
    if containers > LIMITS["max_json_containers"] or values > LIMITS["max_json_values"]:
        containers, values = _counts_outside_strings(text.encode("utf-8"))
    need["max_json_containers"], need["max_json_values"] = containers, values
    over = {k: v for k, v in need.items() if v > LIMITS[k]}
    if over:
        args = ", ".join(f"{k}={v}" for k, v in over.items())
        warnings.warn(
            f"graph {graph.name!r} saved to {where!r} is over the default limits of gc.load "
            f"({', '.join(f'{k}={LIMITS[k]}' for k in over)}); load it with gc.load(path, {args})",
            GraphFileWarning,
            stacklevel=3,
        )


def _needs(graph: Graph) -> dict[str, int]:
    """The largest node count, value and total of values of the graph and of each body (each is one
    document of the file, checked against the limits on its own)."""
    need = dict.fromkeys(("max_nodes", "max_array_elements", "max_array_bytes", "max_total_bytes"), 0)
    stack, seen = [graph], set()
    while stack:
        g = stack.pop()
        if id(g) in seen:
            continue
        seen.add(id(g))
        need["max_nodes"] = max(need["max_nodes"], len(g))
        total = 0
        for arr in g.stored_values().values():
            need["max_array_elements"] = max(need["max_array_elements"], arr.size)
            need["max_array_bytes"] = max(need["max_array_bytes"], arr.nbytes)
            total += arr.nbytes
        need["max_total_bytes"] = max(need["max_total_bytes"], total)
        for n in g.nodes:
            if n.op.has_body:
                _body(n.op).record(lambda traced: _push(stack, traced.graph))
    return need


def _push(stack: list, graph: Graph) -> dict:
    """An `encode` for a body's record that only collects its graphs (the record itself is dropped)."""
    stack.append(graph)
    return {}


# -- loading --------------------------------------------------------------------------------


def load(path: str | os.PathLike, **limits: int) -> Graph:
    """Read a graph file written by `save`, validating all of it first (see docs/FORMAT.md).

    Keyword limits (defaults in `LIMITS`): max_file_bytes, max_nodes, max_array_elements, max_array_bytes,
    max_total_bytes. Anything malformed, unknown or over a limit raises GraphFileError naming where.
    """
    lim = _limits(limits)
    where = str(path)
    try:
        info = os.stat(path)
        if not _is_regular(info.st_mode):
            raise GraphFileError(
                f"{where}: not a regular file ({_file_kind(info.st_mode)}); a graph file is "
                "a file written by graph.save"
            )
        size = info.st_size
        if size > lim["max_file_bytes"]:
            raise GraphFileError(
                f"{where}: the file has {size} bytes, over the limit max_file_bytes="
                f"{lim['max_file_bytes']}; pass a larger max_file_bytes to gc.load if you "
                "trust it"
            )
        # O_NONBLOCK: if the path was swapped for a FIFO after the stat, open returns instead of waiting
        fd = os.open(path, _OPEN_FLAGS)
        try:
            if not _is_regular(os.fstat(fd).st_mode):
                raise GraphFileError(f"{where}: not a regular file; a graph file is a file written by graph.save")
            parts, left = [], size + 1  # read what stat announced (and one byte to see it grew)
            while left > 0:
                part = os.read(fd, left)  # one read for a regular file, as a rule
                if not part:
                    break
                parts.append(part)
                left -= len(part)
            data = b"".join(parts) if len(parts) != 1 else parts[0]
            del parts
        finally:
            os.close(fd)
    except OSError as e:
        raise GraphFileError(f"{where}: cannot read the graph file: {e.strerror or e}") from None
    except MemoryError:
        raise GraphFileError(
            f"{where}: out of memory while reading the file ({size} bytes); lower max_file_bytes or free memory"
        ) from None
    return _load(data, where, lim)


def loads(data: str | bytes, **limits: int) -> Graph:
    """`load` from the text (or UTF-8 bytes) of a graph file instead of a path."""
    return _load(data, "<graph file>", _limits(limits))


def _limits(overrides: dict) -> dict:
    lim = dict(LIMITS)
    for k, v in overrides.items():
        if k not in LIMITS:
            raise GraphCompilerError(f"unknown load limit {k!r}; the limits are {', '.join(LIMITS)}")
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise GraphCompilerError(f"load limit {k}={v!r} must be a non-negative int")
        lim[k] = v
    return lim


def _load(data: str | bytes, where: str, lim: dict) -> Graph:
    if len(data) > lim["max_file_bytes"]:
        raise GraphFileError(
            f"{where}: the file has more than max_file_bytes={lim['max_file_bytes']} bytes; "
            "pass a larger max_file_bytes if you trust it"
        )
    _count_json(data, where, lim)
    try:
        doc = _parse_json(data, where)
        specs, name = _check_document(doc, where, lim)
        return _build(specs, name, where)
    except MemoryError:  # never a raw MemoryError: the file is refused, the process goes on
        doc = specs = None
        raise GraphFileError(
            f"{where}: out of memory while loading the graph file ({len(data)} bytes); it is "
            "bigger than this machine can load: lower the limits of gc.load "
            "(max_json_containers, max_json_values, max_file_bytes) or free memory"
        ) from None


def _count_json(data: str | bytes, where: str, lim: dict) -> None:
    """Count before materialising: JSON containers and values, bounded before json.loads builds them.

    json.loads turns each `[]` of a file into a Python list (~64 bytes for 2 bytes of file), so 50 MB of
    them take a gigabyte before any check of ours runs. The counts here run at memchr speed: brackets
    and commas in the whole text are an upper bound; only when that bound is over a limit are the
    characters inside strings (where names may hold brackets) told apart, in chunks, for the exact count.
    """
    if isinstance(data, str):
        if len(data) <= 4 * 2**20 and _quick_counts(data, "[", "{", ",") <= (
            lim["max_json_containers"],
            lim["max_json_values"],
        ):
            return
        data = data.encode("utf-8", "surrogatepass")
    elif not isinstance(data, (bytes, bytearray)):
        return  # _parse_json reports the type
    containers, values = _quick_counts(data, b"[", b"{", b",")
    if containers <= lim["max_json_containers"] and values <= lim["max_json_values"]:
        return
    containers, values = _counts_outside_strings(data)
    if containers > lim["max_json_containers"]:
        raise GraphFileError(
            f"{where}: {containers} JSON lists and objects, over the limit max_json_containers="
            f"{lim['max_json_containers']} (a graph file holds a few per node); pass a larger "
            "max_json_containers to gc.load if you trust the file"
        )
    if values > lim["max_json_values"]:
        raise GraphFileError(
            f"{where}: about {values} JSON values, over the limit max_json_values="
            f"{lim['max_json_values']} (a graph file holds a few dozen per node); pass a "
            "larger max_json_values to gc.load if you trust the file"
        )


def _quick_counts(text, lb, lc, comma) -> tuple[int, int]:
    return text.count(lb) + text.count(lc), text.count(comma)


_CHUNK = 1 << 18
# os.O_BINARY exists on Windows only, and mypy checks for the platform it runs on (no getattr: the loader
# calls none, see tests/test_io.py), hence the two ignores
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | (0 if os.name == "posix" else os.O_BINARY)  # type: ignore[attr-defined]
_OPEN_FLAGS = os.O_RDONLY | (os.O_NONBLOCK if os.name == "posix" else os.O_BINARY)  # type: ignore[attr-defined]


def _counts_outside_strings(data: bytes) -> tuple[int, int]:
    """Brackets `[{` and commas outside JSON strings, in 256 KiB chunks (a quote preceded by an odd run of
    backslashes is escaped; the state of being inside a string carries from chunk to chunk)."""
    inside, run = False, 0  # run: backslashes ending the previous chunk
    containers = values = 0
    view = memoryview(data)
    for start in range(0, len(data), _CHUNK):
        chunk = view[start : start + _CHUNK]
        probe = bytes(chunk)
        if b'"' not in probe and b"\\" not in probe:  # no string starts or ends here: plain counts
            if not inside:
                containers += probe.count(b"[") + probe.count(b"{")
                values += probe.count(b",")
            run = 0
            continue
        a = np.frombuffer(chunk, dtype=np.uint8)
        n = a.size
        pos = np.arange(n, dtype=np.int32)
        slash = a == 92
        last_other = np.maximum.accumulate(np.where(slash, np.int32(-1), pos))  # last non-backslash at or before k
        quotes = np.flatnonzero(a == 34)
        before = quotes - 1
        runs = np.where(before >= 0, before - last_other[np.maximum(before, 0)], 0)
        runs = np.where(before - runs < 0, runs + run, runs) if quotes.size else runs  # run from the last chunk
        real = quotes[runs % 2 == 0]
        toggles = np.zeros(n + 1, np.int8)
        toggles[real + 1] = 1
        # 1 inside a string (or on its opening quote's right)
        parity = (np.cumsum(toggles[:n], dtype=np.int32) + int(inside)) % 2
        outside = parity == 0
        containers += int(np.count_nonzero(outside & ((a == 91) | (a == 123))))
        values += int(np.count_nonzero(outside & (a == 44)))
        inside = bool((real.size + int(inside)) % 2)
        tail = n - 1 - int(last_other[-1]) if n else 0
        run = tail + run if tail == n else tail
    return containers, values


def _is_regular(mode: int) -> bool:
    return mode & 0o170000 == 0o100000  # S_ISREG


def _file_kind(mode: int) -> str:
    kind = mode & 0o170000  # the S_IF* bits of stat's st_mode
    return {
        0o040000: "a directory",
        0o010000: "a FIFO (named pipe)",
        0o140000: "a socket",
        0o020000: "a character device",
        0o060000: "a block device",
    }.get(kind, "not a regular file")


class _Problem(Exception):
    """A defect found while parsing; turned into a GraphFileError that says where."""


def _reject_constant(token: str):
    raise _Problem(f"{token} is not allowed in a graph file (numbers must be finite)")


def _no_duplicate_keys(pairs: list) -> dict:
    out = {}
    for k, v in pairs:
        if k in out:
            raise _Problem(f"the key {k!r} appears twice in one object")
        out[k] = v
    return out


def _parse_json(data: str | bytes, where: str) -> Any:
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise GraphFileError(f"{where}: not UTF-8 text at byte {e.start}; a graph file is JSON") from None
    elif not isinstance(data, str):
        raise GraphFileError(f"{where}: expected the text of a graph file, got {type(data).__name__}")
    try:
        return json.loads(data, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys)
    except _Problem as e:
        raise GraphFileError(f"{where}: {e}") from None
    except RecursionError:
        raise GraphFileError(f"{where}: the JSON is nested too deeply to be a graph file") from None
    except json.JSONDecodeError as e:
        raise GraphFileError(f"{where}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except ValueError as e:  # an integer too long to convert, and the like
        raise GraphFileError(f"{where}: not a valid graph file ({e})") from None


@dataclasses.dataclass
class _Spec:
    """One node record of the file, checked field by field (no graph object exists yet)."""

    index: int
    name: str
    op: str
    inputs: list
    shape: tuple
    dtype: np.dtype
    attrs: dict
    is_gradient: bool
    origin: tuple | None
    value: np.ndarray | None


def _check_document(doc: Any, where: str, lim: dict) -> tuple[list[_Spec], str]:
    if not isinstance(doc, dict):
        raise GraphFileError(
            f"{where}: the top level must be a JSON object with {', '.join(TOP_KEYS)}; got a {_json_type(doc)}"
        )
    fmt = doc.get("format")
    if fmt != FORMAT:
        raise GraphFileError(
            f'{where}: field "format" is {_short(fmt)}, not {FORMAT!r}; this is not a graphcompiler graph file'
        )
    version: Any = doc.get("version")
    if not _is_int(version):
        raise GraphFileError(f'{where}: field "version" must be an integer, got {_short(version)}')
    if version not in READS:
        hint = "; it was written by a newer graphcompiler: upgrade to read it" if version > VERSION else ""
        raise GraphFileError(
            f"{where}: format version {version} is not supported (this graphcompiler reads "
            f"versions {', '.join(map(str, READS))}){hint}"
        )
    extra = sorted(set(doc) - set(TOP_KEYS))
    if extra:
        raise GraphFileError(
            f"{where}: unknown top-level field(s) {', '.join(map(repr, extra))}; version "
            f"{VERSION} has {', '.join(TOP_KEYS)}"
        )
    name = doc.get("name", "graph")
    problem = name_problem(name)
    if problem is not None:
        raise GraphFileError(f'{where}: field "name": the graph name {problem}')
    nodes = doc.get("nodes")
    if not isinstance(nodes, list):
        raise GraphFileError(f'{where}: field "nodes" must be a list of node objects, got {_short(nodes)}')
    if len(nodes) > lim["max_nodes"]:
        raise GraphFileError(f"{where}: {len(nodes)} nodes, over the limit max_nodes={lim['max_nodes']}")
    specs: list[_Spec] = []
    by_name: dict[str, _Spec] = {}
    total = [0]
    for i, rec in enumerate(nodes):
        spec = _check_node(i, rec, by_name, where, lim, total)
        specs.append(spec)
        by_name[spec.name] = spec
    return specs, name


def _check_inputs(inputs: Any, at: str, name: str, opname: str, arity: int | None, by_name: dict) -> list:
    """A node's "inputs": names of earlier nodes, as many as its op takes."""
    if not isinstance(inputs, list) or len(inputs) > MAX_INPUTS:
        raise GraphFileError(
            f'{at}, field "inputs": must be a list of at most {MAX_INPUTS} node names, got {_short(inputs)}'
        )
    for k, src in enumerate(inputs):
        if not isinstance(src, str):
            raise GraphFileError(f'{at}, field "inputs"[{k}]: must be a node name, got {_short(src)}')
        if src not in by_name:
            why = (
                "is the node itself (a cycle)"
                if src == name
                else "does not name an earlier node; inputs must come before the nodes that read them"
            )
            raise GraphFileError(f'{at}, field "inputs"[{k}]: {_short(src, quote=True)} {why}')
    if arity is not None and len(inputs) != arity:
        raise GraphFileError(f'{at}, field "inputs": {opname} takes {arity} input(s), got {len(inputs)}')
    if arity is None and not inputs:
        raise GraphFileError(f'{at}, field "inputs": {opname} needs at least one input')
    return inputs


def _check_origin(origin: Any, at: str, is_gradient: bool, by_name: dict) -> tuple | None:
    """A node's "origin": null, or [forward node name, input index] on a gradient node."""
    if origin is not None:
        if not (isinstance(origin, list) and len(origin) == 2 and isinstance(origin[0], str) and _is_int(origin[1])):
            raise GraphFileError(
                f'{at}, field "origin": must be null or [forward node name, input index], got {_short(origin)}'
            )
        fwd = by_name.get(origin[0])
        if fwd is None:
            raise GraphFileError(f'{at}, field "origin": {_short(origin[0], quote=True)} does not name an earlier node')
        if not 0 <= origin[1] < len(fwd.inputs):
            raise GraphFileError(
                f'{at}, field "origin": input index {origin[1]} is out of range for '
                f"{origin[0]!r} ({fwd.op}), which has {len(fwd.inputs)} input(s)"
            )
        if not is_gradient:
            raise GraphFileError(f'{at}, field "origin": only gradient nodes (is_gradient true) have an origin')
        origin = (origin[0], origin[1])
    return origin


def _check_node(i: int, rec: Any, by_name: dict, where: str, lim: dict, total: list) -> _Spec:
    at = f"{where}: node {i}"
    if not isinstance(rec, dict):
        raise GraphFileError(f"{at}: a node must be a JSON object, got a {_json_type(rec)}")
    name = _check_name(rec.get("name"), at, by_name)
    at = f"{where}: node {i} {name!r}"
    _check_fields(rec, at)
    opname = _check_op(rec["op"], at)
    at = f"{where}: node {i} {name!r} ({opname})"
    cls = OPS[opname]

    inputs = _check_inputs(rec["inputs"], at, name, opname, cls.arity, by_name)

    shape = _check_dims(rec["shape"], f'{at}, field "shape"', allow_none=opname != "parameter" and opname != "constant")
    if opname in CONTROL_OPS:  # a traced body: nested graphs, checked like the file itself
        if rec["dtype"] != "object" or shape != ():
            raise GraphFileError(
                f'{at}: a {opname} node has shape [] and dtype "object" (its value holds '
                f"its results), got {_short(rec['shape'])} and {_short(rec['dtype'])}"
            )
        dtype = np.dtype(object)
        attrs = _check_control_attrs(cls, rec["attrs"], at, lim)
    else:
        # a tape (the steps of a bounded while_loop, read by its gradient) is a result of dtype "object" (or a
        # sum of two, in a second derivative); the op's own shape rule checks it when the node is built
        tape = opname in ("result", "add") and rec["dtype"] == "object" and shape == ()
        dtype = np.dtype(object) if tape else _check_dtype(rec["dtype"], f'{at}, field "dtype"')
        attrs = _check_attrs(cls, rec["attrs"], at)

    is_gradient = rec["is_gradient"]
    if not isinstance(is_gradient, bool):
        raise GraphFileError(f'{at}, field "is_gradient": must be true or false, got {_short(is_gradient)}')
    origin = _check_origin(rec["origin"], at, is_gradient, by_name)
    value = _check_value(rec, opname, at, shape, dtype, lim, total)
    return _Spec(i, name, opname, inputs, shape, dtype, attrs, is_gradient, origin, value)


def _check_name(name: Any, at: str, by_name: dict) -> str:
    """A node's "name": a non-empty string of at most MAX_NAME characters, no control character in it
    (graph.name_problem, the rule the graph itself applies), that no earlier node has."""
    problem = name_problem(name)
    if problem is not None:
        raise GraphFileError(f'{at}, field "name": the node name {problem}')
    if name in by_name:
        raise GraphFileError(
            f'{at}, field "name": the name {name!r} is already used by node {by_name[name].index}; names must be unique'
        )
    return name


def _check_fields(rec: dict, at: str) -> None:
    """A node record has every field of NODE_KEYS and no other but "value"."""
    missing = [k for k in NODE_KEYS if k not in rec]
    if missing:
        raise GraphFileError(f"{at}: missing field(s) {', '.join(map(repr, missing))}")
    extra = sorted(rec.keys() - _NODE_FIELDS)
    if extra:
        raise GraphFileError(f"{at}: unknown field(s) {', '.join(map(repr, extra))}")


def _check_op(opname: Any, at: str) -> str:
    """A node's "op": the name of an op in gc.OPS (the error suggests the closest name)."""
    if not isinstance(opname, str) or opname not in OPS:
        close = (
            difflib.get_close_matches(opname, list(OPS), n=1) if isinstance(opname, str) and len(opname) <= 100 else []
        )  # difflib is quadratic
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise GraphFileError(
            f'{at}, field "op": {_short(opname)} is not an op of this graphcompiler'
            f"{hint}; only the ops of gc.OPS can be loaded (an op of your own: "
            "gc.register_op(cls) before loading)"
        )
    return opname


def _check_value(
    rec: dict, opname: str, at: str, shape: tuple, dtype: np.dtype, lim: dict, total: list
) -> np.ndarray | None:
    """A node's optional "value": a parameter's (optional) or a constant's (required) array; no other op has one."""
    if opname in ("parameter", "constant"):
        raw = rec.get("value")
        if raw is None:
            if opname == "constant":
                raise GraphFileError(f'{at}, field "value": a constant needs its value')
            return None
        return _check_array(raw, f'{at}, field "value"', shape, dtype, lim, total)
    if "value" in rec:
        raise GraphFileError(f'{at}, field "value": only parameters and constants hold a value')
    return None


def _check_dims(dims: Any, at: str, *, allow_none: bool) -> tuple:
    if not isinstance(dims, list) or len(dims) > MAX_RANK:
        raise GraphFileError(f"{at}: must be a list of at most {MAX_RANK} dimensions, got {_short(dims)}")
    size = 1
    for d in dims:
        if d is None and allow_none:
            continue
        if not _is_int(d) or not 0 <= d <= MAX_INT:
            raise GraphFileError(
                f"{at}: dimension {_short(d)} in {_short(dims)} must be a non-negative "
                f"integer{' or null' if allow_none else ''}"
            )
        size *= d
        if size > MAX_INT:
            raise GraphFileError(f"{at}: the shape {fmt_shape(dims)} has more than 2**62 elements")
    return tuple(dims)


def _check_dtype(name: Any, at: str) -> np.dtype:
    if not isinstance(name, str) or name not in DTYPES:
        raise GraphFileError(f"{at}: {_short(name)} is not an allowed dtype; allowed: {', '.join(DTYPES)}")
    return np.dtype(name)


def _check_array(raw: Any, at: str, shape: tuple, dtype: np.dtype, lim: dict, total: list) -> np.ndarray:
    """Check an array record against the node and the limits, then (and only then) decode it."""
    if not isinstance(raw, dict) or set(raw) != set(VALUE_KEYS):
        raise GraphFileError(
            f"{at}: an array must be an object with exactly {', '.join(VALUE_KEYS)}, got {_short(raw)}"
        )
    adt = _check_dtype(raw["dtype"], f"{at}.dtype")
    ashape = _check_dims(raw["shape"], f"{at}.shape", allow_none=False)
    if adt != dtype or ashape != shape:
        raise GraphFileError(
            f"{at}: the value is {adt} of shape {fmt_shape(ashape)} but the node is {dtype} of shape {fmt_shape(shape)}"
        )
    count = math.prod(ashape)
    nbytes = count * adt.itemsize
    if count > lim["max_array_elements"]:
        raise GraphFileError(
            f"{at}: {count} elements, over the limit max_array_elements="
            f"{lim['max_array_elements']}; pass a larger limit to gc.load if you trust the file"
        )
    if nbytes > lim["max_array_bytes"]:
        raise GraphFileError(
            f"{at}: {nbytes} bytes, over the limit max_array_bytes={lim['max_array_bytes']}; "
            "pass a larger limit to gc.load if you trust the file"
        )
    total[0] += nbytes
    if total[0] > lim["max_total_bytes"]:
        raise GraphFileError(
            f"{at}: the values reach {total[0]} bytes in all, over the limit max_total_bytes={lim['max_total_bytes']}"
        )
    data = raw["data"]
    expect = 4 * ((nbytes + 2) // 3)  # base64 length of nbytes bytes
    if not isinstance(data, str) or len(data) != expect:
        got = f"{len(data)} characters" if isinstance(data, str) else _short(data)
        raise GraphFileError(
            f"{at}.data: must be base64 of {nbytes} bytes ({fmt_shape(ashape)} x "
            f"{adt.itemsize} bytes), i.e. {expect} characters; got {got}"
        )
    try:
        buf = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise GraphFileError(f"{at}.data: not valid base64 ({e})") from None
    if len(buf) != nbytes:
        raise GraphFileError(f"{at}.data: decodes to {len(buf)} bytes, expected {nbytes}")
    return np.frombuffer(buf, dtype=adt.newbyteorder("<"), count=count).astype(adt).reshape(ashape)


_FIELDS: dict[type, dict] = {}  # op class -> its dataclass fields (dataclasses.fields is slow per call)


def _check_attrs(cls: type[Op], attrs: Any, at: str) -> dict:
    """Attributes by the type of the op's dataclass fields: ints, bools, strings, floats, tuples of ints."""
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _FIELDS[cls] = {f.name: f for f in dataclasses.fields(cls)}
    if not isinstance(attrs, dict):
        raise GraphFileError(f'{at}, field "attrs": must be an object, got {_short(attrs)}')
    unknown = sorted(set(attrs) - set(fields))
    missing = sorted(set(fields) - set(attrs))
    if unknown or missing:
        raise GraphFileError(
            f'{at}, field "attrs": {cls.name} has attributes '
            f"{', '.join(fields) or 'none'}"
            + (f"; unknown: {', '.join(map(repr, unknown))}" if unknown else "")
            + (f"; missing: {', '.join(map(repr, missing))}" if missing else "")
        )
    out = {}
    for key, f in fields.items():
        out[key] = _check_attr(key, f.default, attrs[key], f"{at}, attribute {key!r}")
    return out


_NON_FINITE = ("inf", "-inf", "nan")  # a float attribute's values JSON has no number for (str(float) of them)


def _check_attr(key: str, default: Any, v: Any, at: str):
    if isinstance(default, bool):
        if not isinstance(v, bool):
            raise GraphFileError(f"{at}: must be true or false, got {_short(v)}")
        return v
    if isinstance(default, int):
        if not _is_int(v) or abs(v) > MAX_INT:
            raise GraphFileError(f"{at}: must be an integer, got {_short(v)}")
        return v
    if isinstance(default, float):
        if isinstance(v, str) and v in _NON_FINITE:
            return float(v)
        if not (_is_int(v) and abs(v) <= MAX_INT or isinstance(v, float)):
            raise GraphFileError(f'{at}: must be a number (or "inf", "-inf", "nan"), got {_short(v)}')
        return float(v)
    if isinstance(default, str):
        if key == "dtype":
            return _check_dtype(v, at).name
        if not isinstance(v, str) or len(v) > MAX_NAME:
            raise GraphFileError(f"{at}: must be a string of at most {MAX_NAME} characters, got {_short(v)}")
        problem = name_problem(v) if v else None
        if problem is not None:
            raise GraphFileError(f"{at}: the string {problem}")
        return v
    if isinstance(default, tuple):
        if not isinstance(v, list) or len(v) > MAX_ATTR_ITEMS:
            raise GraphFileError(f"{at}: must be a list of at most {MAX_ATTR_ITEMS} entries, got {_short(v)}")
        if key == "index":
            return _check_index(v, at)
        for item in v:
            if not _is_int(item) or abs(item) > MAX_INT:
                raise GraphFileError(f"{at}: entry {_short(item)} of {_short(v)} must be an integer")
        if key == "axis" and (sorted(set(v)) != v or any(a < 0 for a in v)):
            raise GraphFileError(f"{at}: axes {_short(v)} must be non-negative, sorted and distinct")
        return tuple(v)
    raise GraphFileError(f"{at}: this attribute's type ({type(default).__name__}) cannot be read from a file")


def _check_index(v: list, at: str) -> tuple:
    """A static basic index: ["s", start, stop, step], ["i", k], ["new"], ["..."]."""
    out = []
    for item in v:
        ok = isinstance(item, list) and item and isinstance(item[0], str)
        kind = item[0] if ok else None
        if (
            kind == "s"
            and len(item) == 4
            and all(b is None or _is_int(b) and abs(b) <= MAX_INT for b in item[1:])
            and item[3] != 0
        ):
            out.append(tuple(item))
        elif kind == "i" and len(item) == 2 and _is_int(item[1]) and abs(item[1]) <= MAX_INT:
            out.append(tuple(item))
        elif kind in ("new", "...") and len(item) == 1:
            out.append((kind,))
        else:
            raise GraphFileError(
                f'{at}: entry {_short(item)} is not an index item; use ["s", start, stop, '
                'step] (a non-zero step), ["i", k], ["new"] or ["..."]'
            )
    if out.count(("...",)) > 1:
        raise GraphFileError(f'{at}: an index can have only one ["..."]')
    return tuple(out)


# -- control flow: bodies as nested graphs (control/) -------------------------------------------------

# The control-flow ops (control/, a layer above this one, whose classes join OPS when graphcompiler is
# imported): a file names them, and an op record with has_body writes and reads its body's own record.
CONTROL_OPS = ("scan", "cond", "while_loop")


def _body(op: Op) -> Any:
    """The traced body of a control-flow op (op.has_body): body.record(encode) writes its record, and the op
    class's body_type.from_record(record, traced_of) reads one."""
    return cast(Any, op).body


def _body_record(n: Node, depth: int) -> dict:
    """A control-flow node's body record, refused (as the loader would refuse it) when it is nested deeper
    than MAX_DEPTH or counts more than MAX_STEPS (a scan's length): save never writes a file load refuses."""
    if depth > MAX_DEPTH:
        raise GraphCompilerError(
            f"node {n.name!r} ({n.op.name}): its body is nested {depth} deep, but a graph file holds bodies "
            f"nested at most {MAX_DEPTH} deep; save the inner loop's graph on its own or nest fewer loops"
        )
    rec = _body(n.op).record(lambda traced: _traced_record(traced, depth))
    for key, v in rec.items():
        if _is_int(v) and not 0 <= v <= record_limit(rec, key):
            raise GraphCompilerError(
                f"node {n.name!r} ({n.op.name}): its body's {key} is {v}, but a graph file holds counts of "
                f"at most {record_limit(rec, key)}; a loop of more steps cannot be saved"
            )
    return rec


def _traced_record(traced, depth: int) -> dict:
    """A traced body: its graph (nodes as in the file itself), and the names of its inputs and outputs."""
    g = traced.graph
    return {
        "graph": {"name": g.name, "nodes": [_node_record(g, m, depth) for m in g.nodes]},
        "inputs": [x.name for x in traced.inputs],
        "captured": [x.name for x in traced.captured_inputs],
        "outputs": [o.name for o in traced.outputs],
    }


def _check_control_attrs(cls: type[Op], attrs: Any, at: str, lim: dict) -> dict:
    assert cls.has_body  # the classes CONTROL_OPS names in OPS
    if not isinstance(attrs, dict) or set(attrs) != {"body"} or not isinstance(attrs["body"], dict):
        raise GraphFileError(
            f'{at}, field "attrs": a {cls.name} node has one attribute, "body" (an object), got {_short(attrs)}'
        )
    depth = lim.get("depth", 0) + 1
    if depth > MAX_DEPTH:
        raise GraphFileError(f"{at}: bodies nested more than {MAX_DEPTH} deep")
    sub = {**lim, "depth": depth}

    def traced_of(doc: Any, what: str):
        where = f"{at}, body {what}"
        if not isinstance(doc, dict) or set(doc) != {"graph", "inputs", "captured", "outputs"}:
            raise GraphFileError(
                f"{where}: must be an object with graph, inputs, captured and outputs, got {_short(doc)}"
            )
        gdoc = doc["graph"]
        if not isinstance(gdoc, dict) or set(gdoc) != {"name", "nodes"}:
            raise GraphFileError(f'{where}, field "graph": must be an object with name and nodes')
        specs, name = _check_document({"format": FORMAT, "version": VERSION, **gdoc}, where, sub)
        graph = _build(specs, name, where)
        lists = []
        for key in ("inputs", "captured", "outputs"):
            names = doc[key]
            if not isinstance(names, list) or not all(isinstance(x, str) and x in graph for x in names):
                raise GraphFileError(
                    f"{where}, field {key!r}: must be a list of names of the body's nodes, got {_short(names)}"
                )
            nodes = [graph[x] for x in names]
            if key != "outputs" and any(x.op.name != "input" for x in nodes):
                raise GraphFileError(f"{where}, field {key!r}: every entry must name an input of the body")
            lists.append(nodes)
        if len(set(lists[0] + lists[1])) != len(lists[0]) + len(lists[1]) or len(lists[0]) + len(lists[1]) != len(
            graph.inputs()
        ):
            raise GraphFileError(f"{where}: inputs and captured must name each input of the body once")
        return lists

    try:
        body = cast(Any, cls).body_type.from_record(attrs["body"], traced_of)
    except GraphFileError:
        raise
    except Exception as e:  # the body's own consistency checks
        raise GraphFileError(f"{at}, attribute 'body': {type(e).__name__}: {e}") from None
    return {"body": body}


# -- building -------------------------------------------------------------------------------


def _build(specs: list[_Spec], name: str, where: str) -> Graph:
    """Make the graph node by node from checked records, re-running every op's shape rule."""
    graph = Graph(name)
    for s in specs:
        at = f"{where}: node {s.index} {s.name!r} ({s.op})"
        try:
            op = OPS[s.op](**s.attrs)
        except Exception as e:  # an op's own check of its attributes
            raise GraphFileError(f'{at}, field "attrs": rejected by {s.op}: {e}') from None
        inputs = tuple(graph[x] for x in s.inputs)
        if inputs:
            _check_axes(s, op, inputs, at)
            try:
                shape, dtype = op.infer(*inputs)
            except Exception as e:  # ShapeError, DTypeError, or an attribute the rule cannot use
                shapes = ", ".join(f"{x.name} {fmt_shape(x.shape)} {x.dtype}" for x in inputs)
                raise GraphFileError(
                    f"{at}: shape inference fails on inputs {shapes}: {type(e).__name__}: {e}"
                ) from None
            if tuple(shape) != s.shape or np.dtype(dtype) != s.dtype:
                raise GraphFileError(
                    f"{at}: the file says shape {fmt_shape(s.shape)} and dtype {s.dtype}, but "
                    f"shape inference gives {fmt_shape(shape)} and {np.dtype(dtype)}"
                )
        origin = None if s.origin is None else (graph[s.origin[0]], s.origin[1])
        if s.value is not None and s.op == "constant":
            s.value.setflags(write=False)
        try:
            if s.is_gradient:
                with graph.marking_gradient(origin):
                    graph.add_node(op, inputs, s.dtype, s.shape, s.name, s.value)
            else:
                graph.add_node(op, inputs, s.dtype, s.shape, s.name, s.value)
        except GraphCompilerError as e:  # a limit of the graph (graph.add_node's checks) the checks above let by
            raise GraphFileError(f"{at}: {e}") from None
    return graph


def _check_axes(s: _Spec, op, inputs: tuple[Node, ...], at: str) -> None:
    """Axis attributes must lie inside the rank they index (the output's for expand_dims)."""
    rank = len(s.shape) if s.op in ("expand_dims", "stack") else inputs[0].ndim
    for key in ("axis", "axes"):
        v = s.attrs.get(key)
        if v is None or isinstance(v, bool):
            continue
        for a in v if isinstance(v, tuple) else (v,):
            if isinstance(a, int) and not 0 <= a < rank:
                raise GraphFileError(
                    f"{at}, attribute {key!r}: axis {a} is out of range for rank {rank} (axes are written non-negative)"
                )
    part = s.attrs.get("part")
    if isinstance(part, int) and not 0 <= part < len(inputs) - 1:
        raise GraphFileError(f"{at}, attribute 'part': {part} is out of range for {len(inputs) - 1} parts")
    index = s.attrs.get("index")
    if isinstance(index, tuple):
        indexed = inputs[-1]  # getitem indexes its input; scatter_like writes into `like`
        used = sum(1 for it in index if it[0] in ("i", "s"))
        if used > indexed.ndim:
            raise GraphFileError(f"{at}, attribute 'index': {used} indices for {indexed.name!r} of rank {indexed.ndim}")


# -- small helpers --------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _json_type(v: Any) -> str:
    return {
        dict: "object",
        list: "list",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
        type(None): "null",
    }.get(type(v), type(v).__name__)


def _short(v: Any, limit: int = 60, quote: bool = False) -> str:
    """A value from the file for a message, cut short (the file may hold anything); quote: a str as repr."""
    if quote and isinstance(v, str):
        return repr(v) if len(v) <= limit else repr(v[:limit]) + "..."
    try:
        text = json.dumps(v)
    except (TypeError, ValueError, RecursionError):
        text = repr(type(v).__name__)
    return text if len(text) <= limit else text[:limit] + "..."


install(Graph, save=save)  # g.save(path): installed from this layer, so graph.py imports no file code
