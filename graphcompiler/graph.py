"""Node, Graph and the Op protocol: the static, define-then-run graph a user declares and build_grad grows.

The lowest layer above errors: it imports no other module of the package. The op library (ops/) builds on it
and installs Node's operators (+ - * / ** @, indexing, .T) from above, as JAX's numpy layer installs Tracer's;
io and viz install Graph.save and the notebook picture the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator

import numpy as np

from .errors import DTypeError, GraphCompilerError, ShapeError, fmt_shape

if TYPE_CHECKING:
    import networkx as nx

Shape = tuple  # a tuple of ints and None (a dimension fixed only when the program runs)


# -- the Op protocol ------------------------------------------------------------------------

OPS: dict[str, type["Op"]] = {}  # op name -> op class: the allowlist the file loader checks against
_PACKAGE = __name__.split(".")[0]  # ops defined in this package join OPS by themselves; others by register_op


class Zero:
    """The mark of a gradient known to be zero: a path through a comparison, a bool or stop_gradient."""

    _instance: ClassVar["Zero | None"] = None

    def __new__(cls) -> "Zero":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ZERO"


ZERO = Zero()


@dataclass(frozen=True, slots=True)
class Undefined:
    """The mark of a gradient that needs an edge with no derivative (an integer path): the edge
    (consumer node, input index), or None in a bprop's answer, where build_grad fills it in."""

    edge: "tuple[Node, int] | None" = None

    def __repr__(self) -> str:
        return "UNDEFINED" if self.edge is None else f"Undefined({self.edge[0].name}:{self.edge[1]})"


UNDEFINED = Undefined()  # a bprop's answer for an input with no derivative


def carries_gradient(dtype: np.dtype) -> bool:
    """The one rule for which values carry a gradient: floating-point ones. Through a bool nothing flows (a
    path through it adds zero); a derivative of or with respect to an integer is undefined."""
    return dtype.kind == "f"


def edge_mark(op: "Op", x: "Node", y: "Node", i: int) -> "Zero | Undefined | None":
    """What the edge from input i (x) to y = op(...) carries whatever y's gradient is: ZERO where the path
    adds nothing (a piecewise-constant op such as a comparison, a bool at either end), Undefined((y, i))
    where there is no derivative (an integer at either end), None where the op's bprop decides."""
    if op.piecewise_constant or x.dtype.kind == "b" or y.dtype.kind == "b":
        return ZERO
    if not (carries_gradient(x.dtype) and carries_gradient(y.dtype)):
        return Undefined((y, i))
    return None


@dataclasses.dataclass(frozen=True)
class Op:
    """Base of every op. Subclasses are frozen dataclasses: equal attributes make equal (mergeable) ops.

    One block per op (in ops/) gives its shape/dtype rule (`infer`), its NumPy kernel (`kernel`), its
    derivative rule (`bprop`, equation 6.54 of Goodfellow et al.: graph nodes built from other ops, never
    numbers) and its SymPy rule (`sympy_fn` for an elementwise op, else a `to_sympy(node, *terms)` method).
    """

    name: ClassVar[str] = "op"
    arity: ClassVar[int | None] = None  # number of inputs; None: any
    piecewise_constant: ClassVar[bool] = False  # comparisons and the like: a path through them adds zero
    shape_only: ClassVar[tuple[int, ...]] = ()  # inputs read only for their run-time shape
    # The SymPy rule of an elementwise op: scalar bodies in, a scalar body out (`lambda a, b: a + b`), which
    # ops.base.elementwise_to_sympy applies entry by entry. Read from the class, so a lambda is not bound.
    sympy_fn: ClassVar[Any] = None
    # its to_sympy rule knows rank > 2 values (the n x chw matrices of the export); otherwise such a node
    # exports as an undefined function of the op. Elementwise rules from sympy_fn always know them.
    sympy_any_rank: ClassVar[bool] = False
    # facts the compiler and the runtime read off the class (compiler/memory.py, schedule.py, lower.py):
    is_view: ClassVar[bool] = False  # the kernel returns a view of its first input (no memory of its own)
    writes_out: ClassVar[bool] = False  # the kernel takes out=: it can write into a planned buffer
    elementwise: ClassVar[bool] = False  # each output element from the same element of inputs of its
    # shape: with writes_out, it may write over an input dying there
    broadcasting: ClassVar[bool] = False  # its inputs broadcast against each other (shape line-up checks)
    scratch: ClassVar[int] = 0  # temporaries its kernel allocates, in multiples of its largest input

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "name" in cls.__dict__ and cls.__module__.split(".")[0] == _PACKAGE:
            OPS[cls.name] = cls  # a user's subclass is not loadable from files until register_op

    # -- the op's record -------------------------------------------------------------------
    def infer(self, *xs: Node) -> tuple[tuple, np.dtype]:
        """Output (shape, dtype) from the inputs' shapes and dtypes; raise ShapeError/DTypeError."""
        raise NotImplementedError

    def kernel(self, *xs: np.ndarray) -> np.ndarray:
        """The NumPy computation of one step."""
        raise NotImplementedError

    def bprop(self, i: int, x: tuple[Node, ...], y: Node, g: Node) -> Node | Zero | Undefined | None:
        """dz/dx[i] as new graph nodes, given the node y = op(*x) and g = dz/dy (equation 6.54).

        ZERO (or None) for an input that adds nothing, UNDEFINED for one with no derivative."""
        raise NotImplementedError(f"{self.name} has no derivative rule")

    # -- derived ---------------------------------------------------------------------------
    def grad(self, i: int, x: tuple[Node, ...], y: Node, g: Node) -> Node | Zero | Undefined:
        """bprop behind the rules every op shares (edge_mark): ZERO, Undefined((y, i)) or bprop's nodes."""
        mark = edge_mark(self, x[i], y, i)
        if mark is not None:
            return mark
        part = self.bprop(i, x, y, g)
        return ZERO if part is None else Undefined((y, i)) if isinstance(part, Undefined) else part

    def flops(self, node: Node) -> int:
        """A rough cost of one step (recomputation's budget): one per element of the largest of inputs and output."""
        return max([math.prod(x.shape) for x in node.inputs] + [math.prod(node.shape)])

    def can_write_out(self, dtype: np.dtype) -> bool:
        """Whether a step of this op, with result dtype `dtype`, can write into a planned buffer (`out=`)."""
        return self.writes_out

    def fast_kernel(self, writes: bool, shape: tuple, in_shape: tuple, dtype: np.dtype) -> tuple[Callable, tuple, dict]:
        """The cheapest NumPy call for a step: (function, extra constant args, keyword args).

        `writes`: the step writes into a planned buffer (out=); shape, dtype: the step's concrete result;
        in_shape: its first input's shape. By default the op's own kernel.
        """
        return self.kernel, (), {}

    def reads_value(self, i: int) -> bool:
        """False for an input read only for its run-time shape (a compiled program need not keep it)."""
        return i not in self.shape_only

    def attrs(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __str__(self) -> str:
        a = ", ".join(f"{k}={v!r}" for k, v in self.attrs().items())
        return f"{self.name}({a})" if a else self.name


# -- leaves ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Input(Op):
    name: ClassVar[str] = "input"
    arity: ClassVar[int] = 0


@dataclasses.dataclass(frozen=True)
class Parameter(Op):
    name: ClassVar[str] = "parameter"
    arity: ClassVar[int] = 0


@dataclasses.dataclass(frozen=True)
class Constant(Op):
    name: ClassVar[str] = "constant"
    arity: ClassVar[int] = 0


LEAF_OPS = ("input", "parameter", "constant")


def register_op(cls: type) -> type:
    """Let graph files name a user-defined op: add `cls` to the loader's allowlist OPS (also a decorator).

    Ops defined in graphcompiler join OPS by themselves; an Op subclass defined anywhere else does not,
    so importing a module never widens what a graph file may construct. Registering says: files may
    build this op from their attributes (its dataclass fields), so register only ops whose constructor
    and kernel are safe on any attribute values the loader's type checks let through.
    """
    if not (isinstance(cls, type) and issubclass(cls, Op)) or cls is Op:
        raise GraphCompilerError(f"register_op takes a subclass of gc.Op, got {cls!r}")
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name or name in LEAF_OPS:
        raise GraphCompilerError(
            f"register_op: {cls.__name__} needs its own class attribute `name` (a string "
            f"naming the op, not one of {', '.join(LEAF_OPS)}); got {name!r}"
        )
    if not dataclasses.is_dataclass(cls):
        raise GraphCompilerError(
            f"register_op: {cls.__name__} must be a frozen dataclass (the loader reads its "
            "attributes from the dataclass fields); decorate it with @dataclass(frozen=True)"
        )
    other = OPS.get(name)
    if other is not None and other is not cls:
        raise GraphCompilerError(
            f"register_op: the op name {name!r} is taken by {other.__module__}."
            f"{other.__qualname__}; give {cls.__qualname__} another name"
        )
    OPS[name] = cls
    return cls


class DuplicateNameError(GraphCompilerError, ValueError):
    """A second node of the same name in one graph."""


class GraphMismatchError(GraphCompilerError, ValueError):
    """Nodes of two different graphs mixed in one op."""


@dataclass(frozen=True, slots=True, eq=False)
class Node:
    """One value of a graph: an input, a parameter, a constant or the output of an op.

    Nodes are immutable records hashed by identity, so a node can key a dict. `a == b` and `a != b` are
    elementwise (installed by ops/elementwise.py): they give a deferred comparison that becomes an `equal` /
    `not_equal` node where an op reads it, and, used as a Python bool between two nodes, is identity, so
    `node in nodes` and dict probes keep working without adding to the graph.
    """

    name: str
    op: "Op"
    inputs: tuple["Node", ...]
    shape: Shape
    dtype: np.dtype
    graph: "Graph" = field(repr=False)
    index: int = field(repr=False)  # creation order: a topological order of the graph
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

    def __repr__(self) -> str:
        return f"<Node {self.name}: {self.op.name} {fmt_shape(self.shape)} {self.dtype}>"

    def __str__(self) -> str:
        return self.name

    def __bool__(self):
        raise GraphCompilerError(
            f"node {self.name!r} ({self.op.name}, shape {fmt_shape(self.shape)}) has no value until a "
            "program runs, so it cannot be used as a Python bool; use gc.where for a choice inside the graph"
        )

    __array_priority__ = 1000  # NumPy arrays on the left defer to Node's reflected operators
    __hash__ = object.__hash__  # identity; kept when __eq__ is installed (a class body's __eq__ drops it)

    if TYPE_CHECKING:
        # Installed by the op library (ops/elementwise.py, ops/linalg.py, ops/shape.py), which builds on this
        # module: + - * / ** @ and unary -, abs, comparisons < > <= >=, indexing and .T make op nodes.
        def __add__(self, other: Any) -> Node: ...
        def __radd__(self, other: Any) -> Node: ...
        def __sub__(self, other: Any) -> Node: ...
        def __rsub__(self, other: Any) -> Node: ...
        def __mul__(self, other: Any) -> Node: ...
        def __rmul__(self, other: Any) -> Node: ...
        def __truediv__(self, other: Any) -> Node: ...
        def __rtruediv__(self, other: Any) -> Node: ...
        def __pow__(self, other: Any) -> Node: ...
        def __rpow__(self, other: Any) -> Node: ...
        def __neg__(self) -> Node: ...
        def __abs__(self) -> Node: ...
        def __gt__(self, other: Any) -> Node: ...
        def __lt__(self, other: Any) -> Node: ...
        def __ge__(self, other: Any) -> Node: ...
        def __le__(self, other: Any) -> Node: ...
        def __eq__(self, other: Any) -> Any: ...  # a deferred comparison (ops/elementwise.py)
        def __ne__(self, other: Any) -> Any: ...
        def __floordiv__(self, other: Any) -> Node: ...
        def __rfloordiv__(self, other: Any) -> Node: ...
        def __divmod__(self, other: Any) -> tuple[Node, Node]: ...
        def __rdivmod__(self, other: Any) -> tuple[Node, Node]: ...
        def __invert__(self) -> Node: ...
        def __and__(self, other: Any) -> Node: ...
        def __rand__(self, other: Any) -> Node: ...
        def __or__(self, other: Any) -> Node: ...
        def __ror__(self, other: Any) -> Node: ...
        def __xor__(self, other: Any) -> Node: ...
        def __rxor__(self, other: Any) -> Node: ...
        def __matmul__(self, other: Any) -> Node: ...
        def __rmatmul__(self, other: Any) -> Node: ...
        def __getitem__(self, index: Any) -> Node: ...
        @property
        def T(self) -> Node: ...


_NODE_FIELDS = ("name", "op", "inputs", "shape", "dtype", "graph", "index", "is_gradient", "origin")
if tuple(f.name for f in dataclasses.fields(Node)) != _NODE_FIELDS or hasattr(Node, "__post_init__"):
    raise ImportError("Node's fields changed: update graph.new_node, which sets each of them")
_SET = tuple(Node.__dict__[f].__set__ for f in _NODE_FIELDS)  # the slots' own setters


def new_node(
    name: str,
    op: "Op",
    inputs: tuple[Node, ...],
    shape: Shape,
    dtype: np.dtype,
    graph: "Graph",
    index: int,
    is_gradient: bool = False,
    origin: tuple[Node, int] | None = None,
) -> Node:
    """Node(...) made about three times faster: the frozen dataclass's __init__ sets each field through
    object.__setattr__, and build_grad and the compiler's passes make nodes by the ten thousand. The same
    record with the same fields; the arguments are taken as given (already tuples, an np.dtype)."""
    n = object.__new__(Node)
    s_name, s_op, s_inputs, s_shape, s_dtype, s_graph, s_index, s_grad, s_origin = _SET
    s_name(n, name)
    s_op(n, op)
    s_inputs(n, inputs)
    s_shape(n, shape)
    s_dtype(n, dtype)
    s_graph(n, graph)
    s_index(n, index)
    s_grad(n, is_gradient)
    s_origin(n, origin)
    return n


SERVICES: dict[str, Any] = {}  # functions of the layers above that an op calls when it runs (see `service`)


def provide(**functions: Any) -> None:
    """Called by a higher layer at its import: offer its functions (build_grad, compile, to_sympy) to the ops
    that need them at run time, such as control flow compiling and differentiating its bodies."""
    SERVICES.update(functions)


def service(name: str) -> Any:
    """A function a higher layer provided; importing the package provides build_grad and compile, importing
    graphcompiler.symbolic provides to_sympy (gc.to_sympy and gc.recurrence load it)."""
    fn = SERVICES.get(name)
    if fn is None:
        raise GraphCompilerError(
            f"{name} is not available yet: import graphcompiler (and, for symbolic export, "
            "graphcompiler.symbolic) before using control flow"
        )
    return fn


def install(cls: type, **methods: Any) -> None:
    """Set methods on a class of this layer from a layer above (Node's operators from ops/, Graph.save from
    io.py): the way JAX's numpy layer gives Tracer its operators, with no import from here upward."""
    for name, fn in methods.items():
        setattr(cls, name, fn)


class Graph:
    """A static graph of named nodes. It only grows: build_grad inserts the derivative subgraph into it."""

    def __init__(self, name: str | None = None):
        self.name = name or "graph"
        self._nodes: list[Node] = []
        self._by_name: dict[str, Node] = {}
        self._consumers: dict[Node, list[Node]] = {}
        self._values: dict[Node, np.ndarray] = {}  # parameters' stored values and constants
        self._counters: dict[str, itertools.count] = {}
        self._origin: tuple[Node, int] | None = None  # set while build_grad asks an op's bprop
        self._in_gradient = False

    # -- leaves ----------------------------------------------------------------------------
    def input(self, name: str, shape: Shape = (), dtype: Any = "float64") -> Node:
        """A value fed when the program runs; None dims are fixed only then."""
        shape = _check_shape(shape, allow_none=True, what=f"input {name!r}")
        return self._add(Input(), (), _dtype(dtype, f"input {name!r}"), shape, name)

    def parameter(self, name: str, value: Any = None, *, shape: Shape | None = None, dtype: Any = None) -> Node:
        """A value stored in the graph between runs (weights); declared by value or by shape and dtype."""
        what = f"parameter {name!r}"
        if value is not None:
            arr = _native(np.array(value, dtype=_dtype(dtype, what) if dtype is not None else None))
            if shape is not None and tuple(shape) != arr.shape:
                raise ShapeError(
                    f"{what}: the value has shape {fmt_shape(arr.shape)} but shape="
                    f"{fmt_shape(tuple(shape))} was declared; give one or make them agree"
                )
            node = self._add(Parameter(), (), arr.dtype, arr.shape, name)
            self._values[node] = arr
            return node
        if shape is None:
            raise ShapeError(f"{what}: give a value or a shape (and dtype, default float64)")
        shape = _check_shape(shape, allow_none=False, what=what)
        return self._add(Parameter(), (), _dtype(dtype or "float64", what), shape, name)

    def constant(self, value: Any, name: str | None = None, dtype: Any = None) -> Node:
        """A fixed value; unnamed constants get an automatic name."""
        arr = _native(np.array(value, dtype=_dtype(dtype, "constant") if dtype is not None else None))
        if arr.dtype == object or arr.dtype.kind in "USV":
            raise DTypeError(
                f"constant {name or ''!r}: values of dtype {arr.dtype} are not supported; "
                "give numbers (bool, int or float)"
            )
        arr.setflags(write=False)
        node = self._add(Constant(), (), arr.dtype, arr.shape, name)
        self._values[node] = arr
        return node

    # -- values ----------------------------------------------------------------------------
    def value(self, node: Node | str) -> np.ndarray | None:
        """A parameter's stored value (or a constant's), read-only; None for a parameter not yet set."""
        node = self._lookup(node)
        if node.op.name not in ("parameter", "constant"):
            raise GraphCompilerError(
                f"node {node.name!r} is a {node.op.name} node; only parameters and constants hold a value outside a run"
            )
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
            raise GraphCompilerError(
                f"node {node.name!r} is a {node.op.name} node; only parameters have a value that can be set"
            )
        arr = np.asarray(value)
        if arr.shape != node.shape:
            raise ShapeError(
                f"parameter {node.name!r} has shape {fmt_shape(node.shape)}; the value given "
                f"has shape {fmt_shape(arr.shape)}"
            )
        if not np.can_cast(arr.dtype, node.dtype, casting="same_kind"):
            raise DTypeError(
                f"parameter {node.name!r} has dtype {node.dtype}; a value of dtype {arr.dtype} "
                "cannot be stored in it without losing its kind"
            )
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
        import networkx as nx  # imported where used: `import graphcompiler` does not pay for it

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

    if TYPE_CHECKING:  # installed by io.py (and the notebook picture, _repr_mimebundle_, by viz.py)

        def save(self, path: Any) -> None:
            """Write the graph to a JSON file of data only (API section 7)."""

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
        counter = self._counters.get(opname)
        if counter is None:
            counter = self._counters[opname] = itertools.count(1)
        while True:
            cand = f"{opname}_{next(counter)}"
            if cand not in self._by_name:
                return cand

    def _add(self, op: "Op", inputs: tuple[Node, ...], dtype: np.dtype, shape: Shape, name: str | None) -> Node:
        """Append a node whose shape and dtype are already checked. The only place nodes are made."""
        if name is None:
            name = self._auto_name(op.name)
        else:
            self._check_new_name(name, op.name)
        node = new_node(
            name,
            op,
            tuple(inputs),
            tuple(shape),
            np.dtype(dtype),
            self,
            len(self._nodes),
            self._in_gradient,
            self._origin,
        )
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
                f"{fmt_shape(old.shape)}); give the new {opname} node another name or none"
            )

    def _rename(self, node: Node, name: str) -> Node:
        """Give a fresh node that nothing reads yet a readable name (build_grad's dJ/dx)."""
        assert not self._consumers[node] and self._nodes[node.index] is node
        new = new_node(
            name, node.op, node.inputs, node.shape, node.dtype, self, node.index, node.is_gradient, node.origin
        )
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

    def _gradient_scope(self, origin: tuple[Node, int] | None) -> "_GradientScope":
        """Nodes made inside are marked is_gradient, with origin = the forward edge being differentiated."""
        return _GradientScope(self, origin)


class _GradientScope:
    """Graph._gradient_scope's context (a class: build_grad enters one per edge, a generator costs more)."""

    __slots__ = ("graph", "origin", "saved")

    def __init__(self, graph: Graph, origin: tuple[Node, int] | None):
        self.graph, self.origin = graph, origin

    def __enter__(self) -> None:
        g = self.graph
        self.saved = (g._in_gradient, g._origin)
        g._in_gradient, g._origin = True, self.origin

    def __exit__(self, *exc: object) -> None:
        self.graph._in_gradient, self.graph._origin = self.saved


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
        raise ShapeError(
            f"{what}: shape must be a tuple of ints{' or None' if allow_none else ''}, not {shape!r}"
        ) from None
    out: list[int | None] = []
    for d in shape:
        if d is None and allow_none:
            out.append(None)
        elif isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0:
            out.append(int(d))
        else:
            raise ShapeError(
                f"{what}: dimension {d!r} in shape {shape!r} must be a non-negative int"
                f"{' or None (fixed when the program runs)' if allow_none else ''}"
            )
    return tuple(out)


def _unknown_name(graph: Graph, name: str) -> str:
    import difflib

    lowered = {n.lower(): n for n in graph._by_name}
    close = [lowered[c] for c in difflib.get_close_matches(str(name).lower(), list(lowered), n=3)]
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"graph {graph.name!r} has no node named {name!r}{hint}"
