"""Node and Graph: the static, define-then-run graph a user declares and build_grad grows."""

from __future__ import annotations

import contextlib
import gc
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

import networkx as nx
import numpy as np

from .errors import DTypeError, GraphCompilerError, ShapeError, fmt_shape

if TYPE_CHECKING:
    from .ops.base import Op

Shape = tuple  # a tuple of ints and None (a dimension fixed only when the program runs)


class DuplicateNameError(GraphCompilerError, ValueError):
    """A second node of the same name in one graph."""


class GraphMismatchError(GraphCompilerError, ValueError):
    """Nodes of two different graphs mixed in one op."""


@dataclass(frozen=True, slots=True, eq=False)
class Node:
    """One value of a graph: an input, a parameter, a constant or the output of an op.

    Nodes are immutable records; identity is equality, so a node can key a dict.
    """

    name: str
    op: "Op"
    inputs: tuple["Node", ...]
    shape: Shape
    dtype: np.dtype
    graph: "Graph" = field(repr=False)
    index: int = field(repr=False)               # creation order: a topological order of the graph
    is_gradient: bool = False
    origin: tuple["Node", int] | None = field(default=None, repr=False)

    # -- convenience -----------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def attrs(self) -> dict[str, Any]:
        """The op's attributes (axis, shape, dtype, ...), as the file format and pictures show them."""
        return self.op.attrs()

    @property
    def is_leaf(self) -> bool:
        return not self.inputs

    @property
    def T(self) -> "Node":
        from .ops import shape as S
        return S.transpose(self)

    def __repr__(self) -> str:
        return f"<Node {self.name}: {self.op.name} {fmt_shape(self.shape)} {self.dtype}>"

    def __str__(self) -> str:
        return self.name

    # -- operators: + - * / ** @ and unary -, comparisons < > ------------------------------
    def __add__(self, other): return _ew().add(self, other)
    def __radd__(self, other): return _ew().add(other, self)
    def __sub__(self, other): return _ew().subtract(self, other)
    def __rsub__(self, other): return _ew().subtract(other, self)
    def __mul__(self, other): return _ew().multiply(self, other)
    def __rmul__(self, other): return _ew().multiply(other, self)
    def __truediv__(self, other): return _ew().divide(self, other)
    def __rtruediv__(self, other): return _ew().divide(other, self)
    def __pow__(self, other): return _ew().power(self, other)
    def __rpow__(self, other): return _ew().power(other, self)
    def __neg__(self): return _ew().negative(self)
    def __abs__(self): return _ew().abs(self)
    def __gt__(self, other): return _ew().greater(self, other)
    def __lt__(self, other): return _ew().less(self, other)
    def __ge__(self, other): return _ew().greater_equal(self, other)
    def __le__(self, other): return _ew().less_equal(self, other)

    def __matmul__(self, other):
        from .ops import linalg
        return linalg.matmul(self, other)

    def __rmatmul__(self, other):
        from .ops import linalg
        return linalg.matmul(other, self)

    def __getitem__(self, index):
        from .ops import shape as S
        return S.getitem(self, index)

    def __bool__(self):
        raise GraphCompilerError(
            f"node {self.name!r} ({self.op.name}, shape {fmt_shape(self.shape)}) has no value until a "
            "program runs, so it cannot be used as a Python bool; use gc.where for a choice inside the graph")

    __array_priority__ = 1000  # NumPy arrays on the left defer to Node's reflected operators


def _ew():
    from .ops import elementwise
    return elementwise


class Graph:
    """A static graph of named nodes. It only grows: build_grad inserts the derivative subgraph into it."""

    def __init__(self, name: str | None = None):
        self.name = name or "graph"
        self._nodes: list[Node] = []
        self._by_name: dict[str, Node] = {}
        self._consumers: dict[Node, list[Node]] = {}
        self._values: dict[Node, np.ndarray] = {}       # parameters' stored values and constants
        self._counters: dict[str, itertools.count] = {}
        self._origin: tuple[Node, int] | None = None     # set while build_grad asks an op's bprop
        self._in_gradient = False

    # -- leaves ----------------------------------------------------------------------------
    def input(self, name: str, shape: Shape = (), dtype: Any = "float64") -> Node:
        """A value fed when the program runs; None dims are fixed only then."""
        from .ops.base import Input
        shape = _check_shape(shape, allow_none=True, what=f"input {name!r}")
        return self._add(Input(), (), _dtype(dtype, f"input {name!r}"), shape, name)

    def parameter(self, name: str, value: Any = None, *, shape: Shape | None = None,
                  dtype: Any = None) -> Node:
        """A value stored in the graph between runs (weights); declared by value or by shape and dtype."""
        from .ops.base import Parameter
        what = f"parameter {name!r}"
        if value is not None:
            arr = _native(np.array(value, dtype=_dtype(dtype, what) if dtype is not None else None))
            if shape is not None and tuple(shape) != arr.shape:
                raise ShapeError(f"{what}: the value has shape {fmt_shape(arr.shape)} but shape="
                                 f"{fmt_shape(tuple(shape))} was declared; give one or make them agree")
            node = self._add(Parameter(), (), arr.dtype, arr.shape, name)
            self._values[node] = arr
            return node
        if shape is None:
            raise ShapeError(f"{what}: give a value or a shape (and dtype, default float64)")
        shape = _check_shape(shape, allow_none=False, what=what)
        return self._add(Parameter(), (), _dtype(dtype or "float64", what), shape, name)

    def constant(self, value: Any, name: str | None = None, dtype: Any = None) -> Node:
        """A fixed value; unnamed constants get an automatic name."""
        from .ops.base import Constant
        arr = _native(np.array(value, dtype=_dtype(dtype, "constant") if dtype is not None else None))
        if arr.dtype == object or arr.dtype.kind in "USV":
            raise DTypeError(f"constant {name or ''!r}: values of dtype {arr.dtype} are not supported; "
                             "give numbers (bool, int or float)")
        arr.setflags(write=False)
        node = self._add(Constant(), (), arr.dtype, arr.shape, name)
        self._values[node] = arr
        return node

    # -- values ----------------------------------------------------------------------------
    def value(self, node: Node | str) -> np.ndarray | None:
        """A parameter's stored value (or a constant's), read-only; None for a parameter not yet set."""
        node = self._lookup(node)
        if node.op.name not in ("parameter", "constant"):
            raise GraphCompilerError(f"node {node.name!r} is a {node.op.name} node; only parameters and "
                                     "constants hold a value outside a run")
        arr = self._values.get(node)
        if arr is None:
            return None
        view = arr.view()
        view.setflags(write=False)
        return view

    def set_value(self, node: Node | str, value: Any) -> None:
        """Set a parameter's stored value, checked against its declared shape and dtype."""
        node = self._lookup(node)
        if node.op.name != "parameter":
            raise GraphCompilerError(f"node {node.name!r} is a {node.op.name} node; only parameters "
                                     "have a value that can be set")
        arr = np.asarray(value)
        if arr.shape != node.shape:
            raise ShapeError(f"parameter {node.name!r} has shape {fmt_shape(node.shape)}; the value given "
                             f"has shape {fmt_shape(arr.shape)}")
        if not np.can_cast(arr.dtype, node.dtype, casting="same_kind"):
            raise DTypeError(f"parameter {node.name!r} has dtype {node.dtype}; a value of dtype {arr.dtype} "
                             "cannot be stored in it without losing its kind")
        self._values[node] = np.array(arr, dtype=node.dtype, copy=True)

    # -- look-up ---------------------------------------------------------------------------
    @property
    def nodes(self) -> list[Node]:
        """All nodes, in creation order (a topological order)."""
        return list(self._nodes)

    def __getitem__(self, name: str) -> Node:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(_unknown_name(self, name)) from None

    def __contains__(self, item: Node | str) -> bool:
        if isinstance(item, Node):
            return item.graph is self
        return item in self._by_name

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(list(self._nodes))

    def consumers(self, node: Node | str) -> list[Node]:
        """The nodes that read `node`, in creation order (once each, even a node that reads it twice)."""
        return list(dict.fromkeys(self._consumers[self._lookup(node)]))

    def inputs(self) -> list[Node]:
        return [n for n in self._nodes if n.op.name == "input"]

    def parameters(self) -> list[Node]:
        return [n for n in self._nodes if n.op.name == "parameter"]

    def to_networkx(self) -> nx.DiGraph:
        """A networkx.DiGraph of node names, edges from input to consumer (edge attr `index`)."""
        d = nx.DiGraph(name=self.name)
        for n in self._nodes:
            d.add_node(n.name, op=n.op.name, shape=n.shape, dtype=str(n.dtype), is_gradient=n.is_gradient)
        for n in self._nodes:
            for i, src in enumerate(n.inputs):
                if d.has_edge(src.name, n.name):
                    d.edges[src.name, n.name]["index"] += (i,)
                else:
                    d.add_edge(src.name, n.name, index=(i,))
        return d

    # -- text form -------------------------------------------------------------------------
    def __str__(self) -> str:
        return format_nodes(self._nodes, title=f"Graph {self.name!r}: {len(self._nodes)} nodes")

    def __repr__(self) -> str:
        return f"<Graph {self.name!r}: {len(self._nodes)} nodes>"

    def _repr_mimebundle_(self, include=None, exclude=None):
        try:
            from .viz import to_dot
            return {"image/svg+xml": to_dot(self)._repr_image_svg_xml(), "text/plain": str(self)}
        except Exception:   # no dot binary: fall back to the listing
            return {"text/plain": str(self)}

    def save(self, path) -> None:
        """Write the graph to a JSON file of data only (API section 7)."""
        from .io import save
        save(self, path)

    # -- growing the graph -----------------------------------------------------------------
    def _lookup(self, node: Node | str) -> Node:
        if isinstance(node, str):
            return self[node]
        if not isinstance(node, Node) or node.graph is not self:
            raise GraphMismatchError(f"{node!r} is not a node of graph {self.name!r}")
        return node

    def _unique_name(self, base: str) -> str:
        if base not in self._by_name:
            return base
        for k in itertools.count(2):
            cand = f"{base}_{k}"
            if cand not in self._by_name:
                return cand
        raise AssertionError("unreachable")

    def _auto_name(self, opname: str) -> str:
        counter = self._counters.setdefault(opname, itertools.count(1))
        while True:
            cand = f"{opname}_{next(counter)}"
            if cand not in self._by_name:
                return cand

    def _add(self, op: "Op", inputs: tuple[Node, ...], dtype: np.dtype, shape: Shape,
             name: str | None) -> Node:
        """Append a node whose shape and dtype are already checked. The only place nodes are made."""
        if name is None:
            name = self._auto_name(op.name)
        else:
            self._check_new_name(name, op.name)
        node = Node(name=name, op=op, inputs=tuple(inputs), shape=tuple(shape), dtype=np.dtype(dtype),
                    graph=self, index=len(self._nodes), is_gradient=self._in_gradient, origin=self._origin)
        self._nodes.append(node)
        self._by_name[name] = node
        self._consumers[node] = []
        for src in inputs:
            self._consumers[src].append(node)
        return node

    def _check_new_name(self, name: str, opname: str) -> None:
        if not isinstance(name, str) or not name:
            raise GraphCompilerError(f"a node name must be a non-empty string, not {name!r}")
        if name in self._by_name:
            old = self._by_name[name]
            raise DuplicateNameError(
                f"graph {self.name!r} already has a node named {name!r} ({old.op.name}, shape "
                f"{fmt_shape(old.shape)}); give the new {opname} node another name or none")

    def _rename(self, node: Node, name: str) -> Node:
        """Give a fresh node that nothing reads yet a readable name (build_grad's dJ/dx)."""
        assert not self._consumers[node] and self._nodes[node.index] is node
        new = Node(name, node.op, node.inputs, node.shape, node.dtype, self, node.index, node.is_gradient,
                   node.origin)
        self._nodes[node.index] = new
        del self._by_name[node.name]
        self._by_name[name] = new
        self._consumers[new] = self._consumers.pop(node)
        for src in new.inputs:
            lst = self._consumers[src]
            lst[lst.index(node)] = new
        if node in self._values:
            self._values[new] = self._values.pop(node)
        return new

    def _truncate(self, n: int) -> None:
        """Remove every node made after the first n (undo a failed build_grad)."""
        for node in reversed(self._nodes[n:]):
            del self._by_name[node.name]
            del self._consumers[node]
            self._values.pop(node, None)
            for src in node.inputs:
                self._consumers[src].remove(node)
        del self._nodes[n:]

    @contextlib.contextmanager
    def _gradient_scope(self, origin: tuple[Node, int] | None):
        """Nodes made inside are marked is_gradient, with origin = the forward edge being differentiated."""
        saved = (self._in_gradient, self._origin)
        self._in_gradient, self._origin = True, origin
        try:
            yield
        finally:
            self._in_gradient, self._origin = saved


@contextlib.contextmanager
def paused_gc():
    """Pause Python's cyclic garbage collector while many small, long-lived objects are made (build_grad,
    planning): its full scans would otherwise make the work grow faster than the graph. Restored as it was."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def format_nodes(nodes, title: str | None = None) -> str:
    """One line per node: name = op[attrs](inputs)  shape dtype, with gradient marks."""
    rows = []
    for n in nodes:
        attrs = n.op.attrs()
        attr_txt = ", ".join(f"{k}={_short(v)}" for k, v in attrs.items())
        rhs = f"{n.op.name}{'[' + attr_txt + ']' if attr_txt else ''}({', '.join(i.name for i in n.inputs)})"
        mark = ""
        if n.is_gradient:
            mark = f"  # grad of {n.origin[0].name}:{n.origin[1]}" if n.origin else "  # grad"
        rows.append((n.name, rhs, fmt_shape(n.shape), str(n.dtype), mark))
    w0 = max((len(r[0]) for r in rows), default=0)
    w1 = max((len(r[1]) for r in rows), default=0)
    w2 = max((len(r[2]) for r in rows), default=0)
    lines = [title] if title else []
    lines += [f"  {a:<{w0}} = {b:<{w1}}  {c:<{w2}}  {d}{e}" for a, b, c, d, e in rows]
    return "\n".join(lines)


def _short(v) -> str:
    return repr(v) if not isinstance(v, np.ndarray) else f"array{fmt_shape(v.shape)}"


def _native(arr: np.ndarray) -> np.ndarray:
    """Values are stored in the machine's byte order, so a big-endian array and its copy compare equal."""
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def _dtype(dtype: Any, what: str) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise DTypeError(f"{what}: {dtype!r} is not a dtype ({e}); use e.g. 'float32', 'float64', 'int64'") from None
    if dt.kind not in "biuf":
        raise DTypeError(f"{what}: dtype {dt} is not supported; use bool, an integer or a float dtype")
    return dt


def _check_shape(shape: Any, *, allow_none: bool, what: str) -> Shape:
    if isinstance(shape, (int, np.integer)) or shape is None and not allow_none:
        shape = (shape,)
    try:
        shape = tuple(shape)
    except TypeError:
        raise ShapeError(f"{what}: shape must be a tuple of ints{' or None' if allow_none else ''}, "
                         f"not {shape!r}") from None
    out = []
    for d in shape:
        if d is None and allow_none:
            out.append(None)
        elif isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0:
            out.append(int(d))
        else:
            raise ShapeError(f"{what}: dimension {d!r} in shape {shape!r} must be a non-negative int"
                             f"{' or None (fixed when the program runs)' if allow_none else ''}")
    return tuple(out)


def _unknown_name(graph: Graph, name: str) -> str:
    import difflib
    lowered = {n.lower(): n for n in graph._by_name}
    close = [lowered[c] for c in difflib.get_close_matches(str(name).lower(), list(lowered), n=3)]
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"graph {graph.name!r} has no node named {name!r}{hint}"
