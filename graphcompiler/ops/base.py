"""The machinery every op block uses: `apply` (make a node), shape rules, and the Op record re-exported.

An op is a small frozen dataclass whose fields are its static attributes (axis, shape, dtype). One block per
op gives its shape/dtype rule (`infer`), its NumPy kernel (`kernel`), its derivative rule (`bprop`,
equation 6.54 of Goodfellow et al.: bprop builds graph nodes from other ops and never computes numbers) and
its SymPy rule (`sympy_fn`, or a `to_sympy` method importing from ..symbolic_terms). The Op base class, the
leaf ops and the registry OPS live in graph.py, the layer below, so that Graph can make leaves without
importing the op library.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DTypeError, GraphCompilerError, ShapeError, fmt_shape
from ..graph import (
    LEAF_OPS,
    OPS,
    UNDEFINED,
    ZERO,
    Constant,
    GraphMismatchError,
    Input,
    Node,
    Op,
    Parameter,
    Undefined,
    Zero,
    install,
    register_op,
)

__all__ = [
    "LEAF_OPS",
    "OPS",
    "UNDEFINED",
    "ZERO",
    "Constant",
    "Deferred",
    "Input",
    "Op",
    "Parameter",
    "Undefined",
    "Zero",
    "install",
    "register_op",
    "apply",
    "broadcast_shapes",
    "normalize_axes",
    "normalize_axis",
    "float_dtype",
    "is_static",
    "size_of",
    "sp",
    "elementwise_to_sympy",
    "undefined_to_sympy",
]


class _LazySympy:
    """The sympy module, imported on its first use: an op block names SymPy functions in its rule
    (`sympy_fn = lambda t: sp.tanh(t)`) without `import graphcompiler` paying for SymPy."""

    def __getattr__(self, name: str) -> Any:
        import sympy

        return getattr(sympy, name)


sp: Any = _LazySympy()


def elementwise_to_sympy(self: Op, node: Node, *terms: Any) -> Any:
    """The SymPy rule of an elementwise op from its declarative `sympy_fn`, applied entry by entry to the
    inputs' Terms broadcast to the node's shape; an undefined function of the op where it declares none.
    Elementwise base classes take it as their `to_sympy`; an op block may still override `to_sympy`."""
    from ..symbolic_terms import apply_undefined, elementwise  # SymPy loads only when a graph is exported

    fn = type(self).sympy_fn
    return apply_undefined(node, *terms) if fn is None else elementwise(node, fn, *terms)


def undefined_to_sympy(self: Op, node: Node, *terms: Any) -> Any:
    """The SymPy rule of an op with no matrix-calculus form: an undefined function of its inputs named after
    the op (its kernel evaluates it). An op block says so with `to_sympy = undefined_to_sympy`."""
    from ..symbolic_terms import apply_undefined

    return apply_undefined(node, *terms)


# -- building nodes -------------------------------------------------------------------------


class Deferred:
    """A value that becomes a node only where an op reads it (`x == 0`: ops/elementwise.py); `node()` makes
    it, once. `apply` turns every Deferred argument into its node, so each gc op takes one."""

    __slots__ = ()

    def node(self) -> Node:
        raise NotImplementedError


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
    pending = False
    if all([type(a) is Node for a in args]):  # the common case: no constants to make
        graph = args[0].graph
        for n in args:
            if n.graph is not graph:
                _mixed_graphs(op, name, args)
        xs = list(args)
    else:
        args = tuple(a.node() if isinstance(a, Deferred) else a for a in args)
        nodes = [a for a in args if isinstance(a, Node)]
        if not nodes:
            raise GraphCompilerError(
                f"{op.name}: at least one input must be a graph node; got {', '.join(type(a).__name__ for a in args)}"
            )
        graph = nodes[0].graph
        for n in nodes:
            if n.graph is not graph:
                _mixed_graphs(op, name, nodes)
        floats = [n.dtype for n in nodes if n.dtype.kind == "f"]
        like = np.result_type(*floats) if floats else nodes[0].dtype
        xs = [a if isinstance(a, Node) else _Pending(_as_constant(a, like, op, name)) for a in args]
        pending = True
    if op.arity is not None and len(xs) != op.arity:
        raise GraphCompilerError(f"{op.name} takes {op.arity} inputs, got {len(xs)}")
    try:
        shape, dtype = op.infer(*xs)
    except (ShapeError, DTypeError) as e:
        raise type(e)(f"{op.name}{' ' + repr(name) if name else ''}: {e}; inputs: {_describe(xs)}") from None
    except GraphCompilerError:
        raise
    if pending:  # the node must fit a graph file before its constants are added (a refused op adds nothing)
        graph.check_node(op, tuple(xs), tuple(shape), np.dtype(dtype), name)
        xs = [graph.constant(x.value) if type(x) is _Pending else x for x in xs]
    return graph.add_node(op, tuple(xs), dtype, shape, name)


def _mixed_graphs(op: Op, name: str | None, nodes) -> None:
    first = nodes[0]
    other = next(n for n in nodes if n.graph is not first.graph)
    raise GraphMismatchError(
        f"{op.name}{' ' + repr(name) if name else ''}: node {first.name!r} ({first.op.name}, shape "
        f"{fmt_shape(first.shape)}) belongs to graph {first.graph.name!r} but {other.name!r} ({other.op.name}, "
        f"shape {fmt_shape(other.shape)}) belongs to graph {other.graph.name!r}; an op's inputs must come from "
        "one graph: declare both in the same gc.Graph"
    )


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
        raise DTypeError(
            f"{op.name}{' ' + repr(name) if name else ''}: cannot use {type(value).__name__} "
            f"{value!r} as a graph value; give a node, a number or a numeric array"
        )
    return arr


def _describe(xs) -> str:
    return ", ".join(f"{x.name} ({x.op.name}, shape {fmt_shape(x.shape)}, {x.dtype})" for x in xs)


# -- shape rules ----------------------------------------------------------------------------


def broadcast_shapes(*shapes: tuple) -> tuple:
    """NumPy broadcasting with None dims: None broadcasts with 1 and matches any fixed size."""
    first = shapes[0]
    if all([s == first for s in shapes]):
        return tuple(first)
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for k in range(ndim):
        dims = [s[len(s) - ndim + k] for s in shapes if len(s) - ndim + k >= 0]
        fixed = {d for d in dims if d is not None and d != 1}
        if len(fixed) > 1:
            raise ShapeError(
                f"shapes {', '.join(fmt_shape(s) for s in shapes)} do not broadcast: "
                f"dimension {k - ndim} is {' vs '.join(str(d) for d in sorted(fixed))}; sizes "
                "must be equal or 1 (reshape, transpose or gc.expand_dims an operand to line them up)"
            )
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
            raise ShapeError(
                f"{what}{who}: axis {a!r} is out of range for a value of rank {ndim}"
                + (f"; use an axis from {-ndim} to {ndim - 1}" if ndim else "; it has no axes")
            )
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ShapeError(f"{what}: repeated axis in {axis!r}")
    return tuple(sorted(out))


def normalize_axis(axis: int, ndim: int, what: str, of=None) -> int:
    return normalize_axes(axis, ndim, what, of)[0]


def float_dtype(x, what: str) -> np.dtype:
    if x.dtype.kind != "f":
        raise DTypeError(
            f"{what} needs a floating input, got {x.dtype} from {x.name!r}; cast it with gc.astype(x, 'float64')"
        )
    return x.dtype


def is_static(shape: tuple) -> bool:
    return all(d is not None for d in shape)


def size_of(shape: tuple) -> int:
    return int(np.prod(shape, dtype=np.int64))
