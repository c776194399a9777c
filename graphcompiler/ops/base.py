"""The Op record and the machinery every op block uses: the registry, shape rules, and `apply`.

An op is a small frozen dataclass whose fields are its static attributes (axis, shape, dtype). One block per
op gives its shape/dtype rule (`infer`), its NumPy kernel (`kernel`) and its derivative rule (`bprop`,
equation 6.54 of Goodfellow et al.): bprop builds graph nodes from other ops and never computes numbers.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, ClassVar

import numpy as np

from ..errors import DTypeError, GraphCompilerError, ShapeError, fmt_shape
from ..graph import GraphMismatchError, Node

OPS: dict[str, type["Op"]] = {}   # op name -> op class: the allowlist the file loader checks against


class _Undefined:
    """bprop's answer for an edge with no derivative (an integer path); build_grad reports it if needed."""

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED = _Undefined()


@dataclasses.dataclass(frozen=True)
class Op:
    """Base of every op. Subclasses are frozen dataclasses: equal attributes make equal (mergeable) ops."""

    name: ClassVar[str] = "op"
    arity: ClassVar[int | None] = None          # number of inputs; None: any
    piecewise_constant: ClassVar[bool] = False  # comparisons and the like: a path through them adds zero
    shape_only: ClassVar[tuple[int, ...]] = ()  # inputs read only for their run-time shape
    # facts the compiler and the runtime read off the class (compiler/memory.py, schedule.py, lower.py):
    is_view: ClassVar[bool] = False             # the kernel returns a view of its first input (no memory of its own)
    writes_out: ClassVar[bool] = False          # the kernel takes out=: it can write into a planned buffer
    elementwise: ClassVar[bool] = False         # each output element from the same element of inputs of its
                                                # shape: with writes_out, it may write over an input dying there
    broadcasting: ClassVar[bool] = False        # its inputs broadcast against each other (shape line-up checks)
    scratch: ClassVar[int] = 0                  # temporaries its kernel allocates, in multiples of its largest input

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "name" in cls.__dict__:
            OPS[cls.name] = cls

    # -- the op's record -------------------------------------------------------------------
    def infer(self, *xs: Node) -> tuple[tuple, np.dtype]:
        """Output (shape, dtype) from the inputs' shapes and dtypes; raise ShapeError/DTypeError."""
        raise NotImplementedError

    def kernel(self, *xs: np.ndarray) -> np.ndarray:
        """The NumPy computation of one step."""
        raise NotImplementedError

    def bprop(self, i: int, x: tuple[Node, ...], y: Node, g: Node) -> Node | None:
        """dz/dx[i] as new graph nodes, given the node y = op(*x) and g = dz/dy (equation 6.54)."""
        raise NotImplementedError(f"{self.name} has no derivative rule")

    # -- derived ---------------------------------------------------------------------------
    def grad(self, i: int, x: tuple[Node, ...], y: Node, g: Node):
        """bprop with the rules shared by every op: paths through bools add zero, integer paths are undefined."""
        if self.piecewise_constant or x[i].dtype == bool or y.dtype == bool:
            return None
        if x[i].dtype.kind != "f" or y.dtype.kind != "f":
            return UNDEFINED
        return self.bprop(i, x, y, g)

    def flops(self, node: Node) -> int:
        """A rough cost of one step (recomputation's budget): one per element of the largest of inputs and output."""
        return max([_prod(x.shape) for x in node.inputs] + [_prod(node.shape)])

    def can_write_out(self, dtype: np.dtype) -> bool:
        """Whether a step of this op, with result dtype `dtype`, can write into a planned buffer (`out=`)."""
        return self.writes_out

    def fast_kernel(self, writes: bool, shape: tuple, in_shape: tuple, dtype: np.dtype
                    ) -> tuple[Callable, tuple, dict]:
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


# -- building nodes -------------------------------------------------------------------------

class _Pending:
    """A constant not yet in the graph: ops see its shape and dtype, and it is added only if the op is."""

    def __init__(self, value: np.ndarray):
        self.value = value
        self.shape = value.shape
        self.dtype = value.dtype
        self.name = repr(value.item()) if value.ndim == 0 else f"array{fmt_shape(value.shape)}"
        self.op = Constant()
        self.ndim = value.ndim


def apply(op: Op, args: tuple, name: str | None = None) -> Node:
    """Make the node op(*args): Python numbers become constants, the shape rule runs, then the node is added.

    A rejected op adds nothing to the graph: constants are added only after the shape rule accepts.
    """
    if all(type(a) is Node for a in args):          # the common case: no constants to make
        graph = args[0].graph
        for n in args:
            if n.graph is not graph:
                _mixed_graphs(op, name, args)
        xs = list(args)
    else:
        nodes = [a for a in args if isinstance(a, Node)]
        if not nodes:
            raise GraphCompilerError(f"{op.name}: at least one input must be a graph node; got "
                                     f"{', '.join(type(a).__name__ for a in args)}")
        graph = nodes[0].graph
        for n in nodes:
            if n.graph is not graph:
                _mixed_graphs(op, name, nodes)
        floats = [n.dtype for n in nodes if n.dtype.kind == "f"]
        like = np.result_type(*floats) if floats else nodes[0].dtype
        xs = [a if isinstance(a, Node) else _Pending(_as_constant(a, like, op, name)) for a in args]
    if op.arity is not None and len(xs) != op.arity:
        raise GraphCompilerError(f"{op.name} takes {op.arity} inputs, got {len(xs)}")
    try:
        shape, dtype = op.infer(*xs)
    except (ShapeError, DTypeError) as e:
        raise type(e)(f"{op.name}{' ' + repr(name) if name else ''}: {e}; inputs: {_describe(xs)}") from None
    except GraphCompilerError:
        raise
    if name is not None:
        graph._check_new_name(name, op.name)
    if any(type(x) is _Pending for x in xs):
        xs = [graph.constant(x.value) if type(x) is _Pending else x for x in xs]
    return graph._add(op, tuple(xs), dtype, shape, name)


def _mixed_graphs(op: Op, name: str | None, nodes) -> None:
    first = nodes[0]
    other = next(n for n in nodes if n.graph is not first.graph)
    raise GraphMismatchError(
        f"{op.name}{' ' + repr(name) if name else ''}: node {first.name!r} ({first.op.name}, shape "
        f"{fmt_shape(first.shape)}) belongs to graph {first.graph.name!r} but {other.name!r} ({other.op.name}, "
        f"shape {fmt_shape(other.shape)}) belongs to graph {other.graph.name!r}; an op's inputs must come from "
        "one graph: declare both in the same gc.Graph")


def _as_constant(value: Any, like: np.dtype, op: Op, name: str | None) -> np.ndarray:
    """A Python scalar takes the dtype of the floating operands; NumPy values keep their own dtype."""
    if isinstance(value, (bool, int, float)) and not isinstance(value, np.generic):
        if isinstance(value, bool):
            return np.array(value)
        if like.kind == "f" or isinstance(value, int) and like.kind in "iu":
            return np.array(value, dtype=like)
        return np.array(value)
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise DTypeError(f"{op.name}{' ' + repr(name) if name else ''}: cannot use {type(value).__name__} "
                         f"{value!r} as a graph value; give a node, a number or a numeric array")
    return arr


def _describe(xs) -> str:
    return ", ".join(f"{x.name} ({x.op.name}, shape {fmt_shape(x.shape)}, {x.dtype})" for x in xs)


# -- shape rules ----------------------------------------------------------------------------

def broadcast_shapes(*shapes: tuple) -> tuple:
    """NumPy broadcasting with None dims: None broadcasts with 1 and matches any fixed size."""
    first = shapes[0]
    if all(s == first for s in shapes):
        return tuple(first)
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for k in range(ndim):
        dims = [s[len(s) - ndim + k] for s in shapes if len(s) - ndim + k >= 0]
        fixed = {d for d in dims if d is not None and d != 1}
        if len(fixed) > 1:
            raise ShapeError(f"shapes {', '.join(fmt_shape(s) for s in shapes)} do not broadcast: "
                             f"dimension {k - ndim} is {' vs '.join(str(d) for d in sorted(fixed))}; sizes "
                             "must be equal or 1 (reshape, transpose or gc.expand_dims an operand to line them up)")
        if fixed:
            out.append(fixed.pop())
        elif None in dims:
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def normalize_axes(axis, ndim: int, what: str, of=None) -> tuple[int, ...]:
    """axis=None, an int or a tuple -> a sorted tuple of non-negative axes (None means all); `of` is the node."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        if not isinstance(a, (int, np.integer)) or isinstance(a, bool) or not -ndim <= a < ndim:
            who = f" of {of.name!r} (shape {fmt_shape(of.shape)})" if hasattr(of, "shape") else ""
            raise ShapeError(f"{what}{who}: axis {a!r} is out of range for a value of rank {ndim}"
                             + (f"; use an axis from {-ndim} to {ndim - 1}" if ndim else "; it has no axes"))
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ShapeError(f"{what}: repeated axis in {axis!r}")
    return tuple(sorted(out))


def normalize_axis(axis: int, ndim: int, what: str, of=None) -> int:
    return normalize_axes(axis, ndim, what, of)[0]


def float_dtype(x, what: str) -> np.dtype:
    if x.dtype.kind != "f":
        raise DTypeError(f"{what} needs a floating input, got {x.dtype} from {x.name!r}; "
                         "cast it with gc.astype(x, 'float64')")
    return x.dtype


def is_static(shape: tuple) -> bool:
    return all(d is not None for d in shape)


def _prod(shape: tuple) -> int:
    return math.prod(shape)


def size_of(shape: tuple) -> int:
    return int(np.prod(shape, dtype=np.int64))
