"""Node, Graph and the Op protocol: the static, define-then-run graph a user declares and build_grad grows.

The lowest layer above errors: it imports no other module of the package. The op library (ops/) builds on it
and installs Node's operators (+ - * / ** @, indexing, .T) from above, as JAX's numpy layer installs Tracer's;
io and viz install Graph.save and the notebook picture the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import itertools
import math
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Mapping

import numpy as np

from .errors import DTypeError, GraphCompilerError, ShapeError, fmt_shape

if TYPE_CHECKING:
    import networkx as nx

Shape = tuple  # a tuple of ints and None (a dimension fixed only when the program runs)


# -- what a graph may hold: the limits of a graph file ----------------------------------------
# io.py's loader refuses a file over any of these; the graph refuses a node over them as it is built (and
# derived names are shortened to fit), so every graph that can be made can be saved and loaded back.

MAX_NAME = 1000  # characters in a node or graph name, and in a string attribute
MAX_RANK = 32  # dimensions of a shape (NumPy allows 64; no op here needs more than a handful)
MAX_INPUTS = 4096  # inputs of one node (concatenate takes any number)
MAX_ATTR_ITEMS = 64  # entries of a tuple attribute (axes, a reshape target, an index)
MAX_INT = 2**62  # |int| in attributes and dims, and the number of elements of a shape: stays in int64
MAX_STEPS = 2**31  # the counts of a control-flow body record: a scan's length, its numbers of carries and xs
# a bounded while_loop's max_steps: nothing is allocated for the bound (a run stops at the first step whose
# condition fails; Program.run(max_seconds=) bounds the rest), so it may be far larger than a scan's length
MAX_WHILE_STEPS = 2**62
MAX_DEPTH = 8  # control-flow bodies inside bodies


def record_limit(record: dict, key: str) -> int:
    """The largest value a count of a control-flow body record may hold: MAX_STEPS, or MAX_WHILE_STEPS for the
    length (the bound) of a bounded while_loop's scan (its record says "until")."""
    return MAX_WHILE_STEPS if key == "length" and record.get("until") is True else MAX_STEPS


DTYPES = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
)  # the dtypes a value may have (no float128: its size and meaning differ between machines)

# Characters no name may hold: C0 controls (newline, escape), DEL, C1 controls, the line and paragraph
# separators, the bidirectional overrides and isolates (they reorder what a terminal shows), lone
# surrogates (not text: printing one fails) and the noncharacters U+FFFE, U+FFFF (not allowed in XML, the SVG).
_REFUSED = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff\ufffe\uffff]")


class InvalidNameError(GraphCompilerError, ValueError):
    """A name that is not a non-empty string of at most MAX_NAME characters, or holds a control character."""


def name_problem(name: Any) -> str | None:
    """Why `name` cannot name a node or a graph (None if it can): the one rule of graph.py and the loader."""
    if not isinstance(name, str) or not name:
        return f"must be a non-empty string, not {_cut(name)}"
    if len(name) > MAX_NAME:
        return f"{_cut(name)} has {len(name)} characters; a name has at most {MAX_NAME}"
    bad = _REFUSED.search(name)
    if bad is not None:
        ch = bad.group()
        return (
            f"{_cut(name)} holds {ch!r} (U+{ord(ch):04X}, {_kind(ch)}) at position {bad.start()}; names are "
            "printed and written to files, so they may not hold control characters: use printable text"
        )
    return None


def _kind(ch: str) -> str:
    code = ord(ch)
    if code < 0x20 or 0x7F <= code <= 0x9F:
        return "a control character"
    if code in (0x2028, 0x2029):
        return "a line or paragraph separator"
    if 0xD800 <= code <= 0xDFFF:
        return "a lone surrogate, not text"
    if code >= 0xFFFE:
        return "a noncharacter"
    return "a bidirectional override, which reorders the text a terminal shows"


def check_name(name: Any, what: str) -> str:
    """`name` if it can name a node or graph; InvalidNameError saying why not (`what`: what it would name)."""
    problem = name_problem(name)
    if problem is not None:
        raise InvalidNameError(f"{what} name {problem}")
    return name


def fit_name(text: str) -> str:
    """A derived name (d<z>/d<x>, <scan>.<carry>, <title>/body) cut to MAX_NAME characters: an over-long text
    keeps its start and ends in "~" and 16 hex digits of the SHA-256 of the whole text, so the short name is
    the same on every run and different texts stay apart."""
    if len(text) <= MAX_NAME:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{text[: MAX_NAME - 17]}~{digest}"


def escape(text: str, keep: str = "") -> str:
    """Text made safe for a terminal: control and format characters (escape sequences, a carriage return,
    right-to-left overrides, zero-width marks) written as Python escapes, e.g. \\x1b. `keep` lists characters
    left as they are (a listing's own newlines). Names from the graph and from files print through it."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep or c == " " else repr(c)[1:-1] for c in text)


def _cut(v: Any, limit: int = 60) -> str:
    """repr of a value for a message, cut short (a name may be a thousand characters)."""
    text = repr(v)
    return text if len(text) <= limit else text[:limit] + "..."


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
        return "UNDEFINED" if self.edge is None else f"Undefined({escape(self.edge[0].name)}:{self.edge[1]})"


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
    has_body: ClassVar[bool] = False  # a control-flow op (control/): its `body` holds traced sub-graphs (io.py
    # writes and reads their record, viz.py draws them)

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
    if not isinstance(name, str) or name_problem(name) is not None or name in LEAF_OPS:
        raise GraphCompilerError(
            f"register_op: {cls.__name__} needs its own class attribute `name` (a string of at most "
            f"{MAX_NAME} characters, none a control character, naming the op, not one of "
            f"{', '.join(LEAF_OPS)}); got {_cut(name)}"
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


def _last_index(readers: list, node: Node) -> int:
    """Where `node` last stands in a list of readers, found by identity from the end: the node being renamed or
    rolled back is among the latest readers, so this is O(1) where list.index (which compares every earlier
    reader with ==) made build_grad quadratic in the readers of a parameter read 10,000 times."""
    k = len(readers) - 1
    while readers[k] is not node:
        k -= 1
    return k


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
        return f"<Node {escape(self.name)}: {self.op.name} {fmt_shape(self.shape)} {self.dtype}>"

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


def install(cls: type, **methods: Any) -> None:
    """Set methods on a class of this layer from a layer above (Node's operators from ops/, Graph.save from
    io.py): the way JAX's numpy layer gives Tracer its operators, with no import from here upward."""
    for name, fn in methods.items():
        setattr(cls, name, fn)


class Graph:
    """A static graph of named nodes. It only grows: build_grad inserts the derivative subgraph into it."""

    def __init__(self, name: str | None = None):
        self.name = "graph" if name is None or name == "" else check_name(name, "a graph")
        self._nodes: list[Node] = []
        self._by_name: dict[str, Node] = {}
        self._consumers: dict[Node, list[Node]] = {}
        self._values: dict[Node, np.ndarray] = {}  # parameters' stored values and constants
        self._counters: dict[str, itertools.count] = {}
        self._origin: tuple[Node, int] | None = None  # set while build_grad asks an op's bprop
        self._in_gradient = False
        self._depth = 0  # how deep control-flow bodies nest inside this graph (a graph file holds MAX_DEPTH)

    # -- leaves ----------------------------------------------------------------------------
    def input(self, name: str, shape: Shape = (), dtype: Any = "float64") -> Node:
        """A value fed when the program runs; None dims are fixed only then."""
        shape = _check_shape(shape, allow_none=True, what=f"input {name!r}")
        return self.add_node(Input(), (), _dtype(dtype, f"input {name!r}"), shape, name)

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
            return self.add_node(Parameter(), (), arr.dtype, arr.shape, name, arr)
        if shape is None:
            raise ShapeError(f"{what}: give a value or a shape (and dtype, default float64)")
        shape = _check_shape(shape, allow_none=False, what=what)
        return self.add_node(Parameter(), (), _dtype(dtype or "float64", what), shape, name)

    def constant(self, value: Any, name: str | None = None, dtype: Any = None) -> Node:
        """A fixed value; unnamed constants get an automatic name."""
        arr = _native(np.array(value, dtype=_dtype(dtype, "constant") if dtype is not None else None))
        if arr.dtype == object or arr.dtype.kind in "USV":
            raise DTypeError(
                f"constant {name or ''!r}: values of dtype {arr.dtype} are not supported; "
                "give numbers (bool, int or float)"
            )
        arr.setflags(write=False)
        return self.add_node(Constant(), (), arr.dtype, arr.shape, name, arr)

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

    def stored_value(self, node: Node) -> np.ndarray | None:
        """The stored array of a parameter or constant itself (no copy, no check: do not write it); else None."""
        return self._values.get(node)

    def stored_values(self) -> Mapping[Node, np.ndarray]:
        """Every stored value by node, as a read-only live view of the graph's table (nothing is copied)."""
        return MappingProxyType(self._values)

    def update_value(self, node: Node, value: Any) -> None:
        """Store a compiled run's new value of a parameter, unchecked: in place if the stored array is writable."""
        stored = self._values.get(node)
        if stored is None or not stored.flags.writeable:
            self._values[node] = np.array(value, dtype=node.dtype)
        else:
            stored[...] = value

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

    def get(self, name: str) -> Node | None:
        """The node named `name`, or None if the graph has none (no error, no suggestions)."""
        return self._by_name.get(name)

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

    def is_read(self, node: Node) -> bool:
        """Whether some node of this graph reads `node` (a node of this graph)."""
        return bool(self._consumers[node])

    def nodes_since(self, mark: int) -> list[Node]:
        """The nodes made after the first `mark` (a len(graph) taken earlier), in creation order."""
        return self._nodes[mark:]

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

    def unique_name(self, base: str) -> str:
        """A name no node has yet, made from others (d<z>/d<x>): `base`, else base_2, ..., each cut by fit_name."""
        cand = fit_name(base)
        if cand not in self._by_name:
            return cand
        for k in itertools.count(2):
            cand = fit_name(f"{base}_{k}")
            if cand not in self._by_name:
                return cand
        raise AssertionError("unreachable")

    def auto_name(self, opname: str) -> str:
        """The next free automatic name of an op kind, opname_1, opname_2, ... (what an unnamed node gets)."""
        counter = self._counters.get(opname)
        if counter is None:
            counter = self._counters[opname] = itertools.count(1)
        while True:
            cand = fit_name(f"{opname}_{next(counter)}")
            if cand not in self._by_name:
                return cand

    def add_node(
        self,
        op: "Op",
        inputs: tuple[Node, ...],
        dtype: np.dtype,
        shape: Shape,
        name: str | None = None,
        value: np.ndarray | None = None,
    ) -> Node:
        """Append op(*inputs), its shape and dtype already inferred, and a leaf's `value` (stored as given); a node
        refused (a bad or taken name, a file limit passed) adds nothing. The only place nodes are made."""
        if value is not None and op.name not in ("parameter", "constant"):
            raise GraphCompilerError(f"a {op.name} node holds no stored value; only parameters and constants do")
        if name is None:
            name = self.auto_name(op.name)
        else:
            self._check_new_name(name, op.name)
        inputs, shape, dtype = tuple(inputs), tuple(shape), np.dtype(dtype)
        self._check_fits(op, inputs, shape, dtype, name)
        node = new_node(
            name,
            op,
            inputs,
            shape,
            dtype,
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
        if value is not None:
            self._values[node] = value
        return node

    def check_node(self, op: "Op", inputs: tuple, shape: tuple, dtype: np.dtype, name: str | None) -> None:
        """Raise the error add_node would for this node (a bad or taken name, a file limit passed); adds nothing."""
        if name is not None:
            self._check_new_name(name, op.name)
        self._check_fits(op, inputs, shape, dtype, name)

    def _check_new_name(self, name: str, opname: str) -> None:
        problem = name_problem(name)
        if problem is not None:
            raise InvalidNameError(f"the {opname} node's name {problem}")
        if name in self._by_name:
            old = self._by_name[name]
            raise DuplicateNameError(
                f"graph {self.name!r} already has a node named {name!r} ({old.op.name}, shape "
                f"{fmt_shape(old.shape)}); give the new {opname} node another name or none"
            )

    def _check_fits(self, op: "Op", inputs: tuple, shape: tuple, dtype: np.dtype, name: str | None) -> None:
        """The node op(*inputs) -> shape, dtype fits a graph file (the limits above), or an error that says which
        limit it passes; checked before anything is added, so a refused op adds nothing."""
        size = 1
        for d in shape:
            if d is not None:
                size *= d
        if (
            len(inputs) > MAX_INPUTS
            or len(shape) > MAX_RANK
            or size > MAX_INT
            or dtype not in _FILE_DTYPES
            or (size == 0 and any(d is not None and d > MAX_INT for d in shape))
        ):
            _refuse_fit(op, inputs, shape, dtype, name)
        checks = _ATTR_FIELDS.get(type(op))
        if checks is None:
            fields = [f.name for f in dataclasses.fields(op)]
            if "body" in fields:  # a control-flow op: its body's record, as io.py writes it
                _BODY_OPS.add(type(op))
            checks = _ATTR_FIELDS[type(op)] = tuple(k for k in fields if k != "body")
        if type(op) in _BODY_OPS:
            self._check_body(op, name)
        for key in checks:
            v = getattr(op, key)
            t = type(v)
            if t is bool or t is int and -MAX_INT <= v <= MAX_INT:
                continue  # the common attributes, at the cost of a type test
            if t is tuple and len(v) <= MAX_ATTR_ITEMS:
                for item in v:
                    if type(item) is not int or not -MAX_INT <= item <= MAX_INT:
                        break
                else:
                    continue  # a tuple of ints (axes, a shape)
            problem = _attr_problem(v)
            if problem is not None:
                what = f"{op.name} node {_cut(name) if name else ''}".rstrip()
                raise GraphCompilerError(f"{what}: attribute {key}={_cut(v)} {problem}")

    def _check_body(self, op: "Op", name: str | None) -> None:
        """A control-flow op's body fits a graph file: nested at most MAX_DEPTH deep, and every count of its
        record (a scan's length, its numbers of carries and inputs) at most MAX_STEPS."""
        graphs: list[Graph] = []
        record = getattr(op, "body").record(lambda traced: _collect(graphs, traced.graph))
        what = f"{op.name} node {_cut(name) if name else ''}".rstrip()
        for key, v in record.items():
            if type(v) is int and not 0 <= v <= record_limit(record, key):
                raise GraphCompilerError(
                    f"{what}: its {key} is {v}, over the limit of {record_limit(record, key)} a graph file "
                    "holds; split the loop into loops of fewer steps"
                )
        depth = 1 + max((g._depth for g in graphs), default=0)
        if depth > MAX_DEPTH:
            raise GraphCompilerError(
                f"{what}: its body nests control flow {depth} deep, over the limit of {MAX_DEPTH} a graph file "
                "holds; move an inner loop out, or unroll one"
            )
        self._depth = max(self._depth, depth)

    def rename(self, node: Node, name: str) -> Node:
        """A node nothing reads yet, renamed (build_grad's dz/dx): the returned node replaces `node` in the graph."""
        if node.graph is not self or self._nodes[node.index] is not node or self._consumers[node]:
            raise GraphCompilerError(
                f"node {node.name!r} cannot be renamed: only a node of graph {self.name!r} that nothing reads can"
            )
        self._check_new_name(name, node.op.name)
        new = new_node(
            name, node.op, node.inputs, node.shape, node.dtype, self, node.index, node.is_gradient, node.origin
        )
        self._nodes[node.index] = new
        del self._by_name[node.name]
        self._by_name[name] = new
        self._consumers[new] = self._consumers.pop(node)
        for src in new.inputs:  # an edge read twice (x * x) is listed twice: each turn replaces one
            lst = self._consumers[src]
            lst[_last_index(lst, node)] = new
        if node in self._values:
            self._values[new] = self._values.pop(node)
        return new

    def rollback(self, mark: int) -> None:
        """Remove the nodes made after the first `mark` (a len(graph) taken earlier): the graph as it was then."""
        for node in reversed(self._nodes[mark:]):
            del self._by_name[node.name]
            del self._consumers[node]
            self._values.pop(node, None)
            for src in node.inputs:
                lst = self._consumers[src]
                del lst[_last_index(lst, node)]
        del self._nodes[mark:]

    def marking_gradient(self, origin: tuple[Node, int] | None) -> "_GradientScope":
        """A context whose new nodes are is_gradient, with origin `origin` (the forward edge (node, i), or None)."""
        return _GradientScope(self, origin)


_ATTR_FIELDS: dict[type, tuple[str, ...]] = {}  # op class -> the attributes _check_fits reads
_BODY_OPS: set[type] = set()  # op classes with a control-flow body (control/): scan, cond, while_loop


def _collect(graphs: list, graph: Graph) -> dict:
    """The `encode` of a body's record that only collects the body's graphs (_check_body)."""
    graphs.append(graph)
    return {}


# the dtypes of DTYPES in this machine's byte order, and object: a control-flow node's list of results
_FILE_DTYPES = frozenset([np.dtype(n) for n in DTYPES] + [np.dtype(object)])


def _refuse_fit(op: "Op", inputs: tuple, shape: tuple, dtype: np.dtype, name: str | None) -> None:
    """The error for a node over a limit of the graph file (Graph._check_fits found one)."""
    what = f"{op.name} node {_cut(name) if name else ''}".rstrip()
    if len(inputs) > MAX_INPUTS:
        raise GraphCompilerError(
            f"{what}: {len(inputs)} inputs, over the limit of {MAX_INPUTS} a node may have (a graph file "
            "holds no more); combine them in steps, e.g. concatenate groups of them, then the groups"
        )
    if len(shape) > MAX_RANK:
        raise ShapeError(f"{what}: shape {fmt_shape(shape)} has {len(shape)} dimensions; at most {MAX_RANK}")
    if dtype not in _FILE_DTYPES:
        raise DTypeError(f"{what}: dtype {dtype} is not supported; use one of {', '.join(DTYPES)}")
    raise ShapeError(f"{what}: shape {fmt_shape(shape)} has more than 2**62 elements (or a dimension over 2**62)")


def _attr_problem(v: Any, depth: int = 0) -> str | None:
    """Why attribute value `v` cannot be written to a graph file and read back (None: it can)."""
    if isinstance(v, (bool, type(None))):
        return None
    if isinstance(v, (int, np.integer)):
        return None if abs(int(v)) <= MAX_INT else "is over 2**62 in size (a graph file's limit)"
    if isinstance(v, str):
        return name_problem(v) if v else None
    if isinstance(v, tuple) and depth < 2:
        if len(v) > MAX_ATTR_ITEMS:
            return f"has {len(v)} entries; a graph file holds at most {MAX_ATTR_ITEMS}"
        for item in v:
            problem = _attr_problem(item, depth + 1)
            if problem is not None:
                return problem
        return None
    return None  # floats (io.py writes inf and nan too), and a user's op's own kinds, which save judges


class _GradientScope:
    """Graph.marking_gradient's context (a class: build_grad enters one per edge, a generator costs more)."""

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
    """One line per node: name = op[attrs](inputs)  shape dtype, with gradient marks. Every character a
    terminal would act on (an escape sequence, a newline inside a name) is written as a Python escape."""
    rows = []
    for n in nodes:
        attrs = n.op.attrs()
        attr_txt = ", ".join(f"{k}={_short(v)}" for k, v in attrs.items())
        rhs = f"{n.op.name}{'[' + attr_txt + ']' if attr_txt else ''}({', '.join(i.name for i in n.inputs)})"
        mark = ""
        if n.is_gradient:
            mark = f"  # grad of {n.origin[0].name}:{n.origin[1]}" if n.origin else "  # grad"
        rows.append((escape(n.name), escape(rhs), fmt_shape(n.shape), str(n.dtype), escape(mark)))
    w0 = max((len(r[0]) for r in rows), default=0)
    w1 = max((len(r[1]) for r in rows), default=0)
    w2 = max((len(r[2]) for r in rows), default=0)
    lines = [escape(title)] if title else []
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
    if dt.name not in DTYPES:
        raise DTypeError(f"{what}: dtype {dt} is not supported; use one of {', '.join(DTYPES)}")
    return dt if dt.isnative else dt.newbyteorder("=")  # '>f8' is float64, as a file would read it back


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
