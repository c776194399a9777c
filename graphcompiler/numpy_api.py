"""NumPy's dispatch protocols on Node: plain NumPy code called on graph nodes builds graph nodes.

NumPy hands a call to the Node when a node is among its arguments: ufuncs through `__array_ufunc__` (NEP 13),
other functions through `__array_function__` (NEP 18). Both look the NumPy callable up in an explicit table
(`numpy_functions()` lists it); each entry names the gc op it maps to and resolves that op *when called*, so an
op another module adds later (gc.einsum, gc.linalg.solve, ...) is picked up without editing this file. An
entry whose op is missing in this build raises `OpNotAvailableError` ("numpy.X needs gc.Y, not available").
What NumPy offers but the table lacks raises `UnsupportedFunctionError` naming the function.

A node has no value until a program runs, so `np.asarray(node)`, `float(node)`, `int(node)` and `bool(node)`
raise. NumPy never dispatches `np.array(list)` / `np.asarray(list)` (they always return an ndarray, asking
each item for `__array__`), so a list holding nodes raises there too, saying to write `np.stack` or
`np.array(list, like=node)`: with `like=` (NEP 35) NumPy hands the call to the node, which builds the stack.
The joining functions (stack, concatenate, hstack, vstack, dstack, column_stack, append, block) take mixed
lists of nodes, arrays, numbers and lists holding nodes, each read as NumPy's asanyarray reads it (a Python
float is float64), so the result has NumPy's dtype. Writing into a node (`out=`, `node[i] = v`) is refused:
graphs only grow.

Compositions of existing ops, for NumPy functions with no op of their own: ravel = reshape(-1); swapaxes,
moveaxis, rollaxis, matrix_transpose = transpose; hstack, vstack, column_stack, dstack, atleast_*d =
concatenate / expand_dims / reshape; rot90 = flip + transpose; triu/tril = where(constant mask, x, 0); diag of a
vector = where(constant eye, v, 0); full_like/zeros_like/ones_like = broadcast_to of a constant (zeros_like(a)
+ v for run-time shapes); diff = x[1:] - x[:-1]; kron = a[:, None, :, None] * b[None, :, None, :] reshaped;
append = concatenate (of both flattened without an axis); array_split, hsplit, vsplit, dsplit = split at cut
indices; block = concatenates, innermost lists along the last axis; reciprocal = 1 / x; dot/inner of N-D
operands = tensordot; multi_dot = matmuls left to right; average with weights = sum(a w) / sum(w); isnan =
x != x; isinf/isfinite = |x| ==/< inf; logical_* = comparisons with 0; diag(v, k)/diagflat = where(eye(n + |k|,
k), padded v, 0); select = a chain of where; cross = the three products of components, stacked; nan_to_num =
where; einsum's interleaved form = its subscripts; real_if_close of a real node = the node; gradient = slices
(NumPy's formulas, uniform spacings); sort = take_along_axis(x, argsort(x)) (stable); partition/argpartition =
sort/argsort (a valid partition; only the order between the kth places can differ from NumPy's).
These compute exactly what NumPy computes (values moved, or the same single arithmetic operation). log2,
log10 (log(x) / log(base)), exp2 (2 ** x), deg2rad/rad2deg, logaddexp2 (logaddexp(a ln 2, b ln 2) / ln 2),
linspace (NumPy's formula on nodes), cumprod (a product per position, exact at zeros) and multi_dot (another
association order) agree with NumPy to rounding.
"""

from __future__ import annotations

import inspect
import math
import operator
import string
import sys
from typing import Any, Callable

import numpy as np

from .errors import DTypeError, GraphCompilerError, ShapeError, fmt_shape
from .graph import Node
from .graph import install as install_on
from .ops.base import Deferred

__all__ = ["numpy_functions", "OpNotAvailableError", "UnsupportedFunctionError"]


class UnsupportedFunctionError(GraphCompilerError, TypeError):
    """A NumPy function (or ufunc, or keyword) that has no graph form here."""


class OpNotAvailableError(UnsupportedFunctionError):
    """A NumPy function whose gc op is not part of this build (it maps to an op added by another module)."""


# -- the gc ops, resolved at call time --------------------------------------------------------


def _gc(path: str, for_what: str) -> Callable:
    """gc.<path> (e.g. "einsum", "linalg.solve"), looked up now so ops added later are found: an op of the op
    library, or for "linalg.<name>" a function of gc.linalg."""
    from . import linalg, ops

    where, _, name = path.rpartition(".")
    obj = getattr({"": ops, "linalg": linalg}.get(where), name, None) if where in ("", "linalg") else None
    if obj is None:
        raise OpNotAvailableError(
            f"{for_what} needs gc.{path}, not available in this build of graphcompiler; "
            "write it with other NumPy functions, or use a build that has that op"
        )
    return obj


def _op(path: str, for_what: str):
    return lambda *a, **k: _gc(path, for_what)(*a, **k)


# -- helpers ------------------------------------------------------------------------------------


def _graph_of(*objs):
    """The graph of the first node found in objs (nested lists and tuples searched)."""
    stack = list(objs)
    while stack:
        o = stack.pop(0)
        if isinstance(o, Node):
            return o.graph
        if isinstance(o, (list, tuple)):
            stack[:0] = list(o)
    return None


def _like_dtype(objs) -> np.dtype:
    floats = [o.dtype for o in objs if isinstance(o, Node) and o.dtype.kind == "f"]
    return np.result_type(*floats) if floats else np.dtype("float64")


def _lift(value, graph, like: np.dtype | None = None) -> Node:
    """A node as is; a Python number or NumPy array becomes a constant of `graph` (numbers take `like`)."""
    if isinstance(value, Node):
        return value
    if isinstance(value, (bool, int, float)) and not isinstance(value, np.generic):
        if isinstance(value, bool) or like is None:
            return graph.constant(np.array(value))
        if like.kind == "f" or (isinstance(value, int) and like.kind in "iu"):
            return graph.constant(np.array(value, dtype=like))
        return graph.constant(np.array(value))
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise DTypeError(
            f"cannot use {type(value).__name__} {value!r} as a graph value; give a node, a number or a numeric array"
        )
    return graph.constant(arr)


def _lift_all(xs) -> list[Node]:
    xs = list(xs)
    graph = _graph_of(xs)
    like = _like_dtype(xs)
    return [_lift(x, graph, like) for x in xs]


def _holds_node(obj) -> bool:
    return isinstance(obj, Node) or (isinstance(obj, (list, tuple)) and any(_holds_node(o) for o in obj))


def _as_array_node(obj, graph, fname: str) -> Node:
    """obj as NumPy's asanyarray reads it, as a node of `graph`: a node as is; a number or array a constant of
    NumPy's dtype for it (a Python float is float64, as np.asarray(2.0)); a (nested) list or tuple holding
    nodes the stack of its items along a new first axis (dtypes promoted as NumPy promotes arrays)."""
    if isinstance(obj, Node):
        return obj
    if isinstance(obj, (list, tuple)) and _holds_node(obj):
        if not obj:
            raise ShapeError(f"{fname}: an empty list among nodes has no shape to stack")
        items = [_as_array_node(o, graph, fname) for o in obj]
        shapes = {x.shape for x in items}
        if len(shapes) > 1:
            raise ShapeError(
                f"{fname}: the items of a list of nodes must have one shape to make an array, got "
                f"{', '.join(f'{x.name!r} {fmt_shape(x.shape)}' for x in items)}; concatenate them instead"
            )
        return _gc("stack", fname)(items, axis=0)
    return _lift(obj, graph)


def _lift_arrays(xs, fname: str) -> list[Node]:
    """The operands of a joining function (stack, concatenate, ...) as nodes of the nodes' graph, each read as
    NumPy's asanyarray reads it, so the result's dtype is NumPy's."""
    xs = list(xs)
    graph = _graph_of(xs)
    return [_as_array_node(x, graph, fname) for x in xs]


def _no_value(node: Node, what: str) -> GraphCompilerError:
    return GraphCompilerError(
        f"{what}: node {node.name!r} ({node.op.name}, shape {fmt_shape(node.shape)}, {node.dtype}) has no value "
        "until a program runs; compile it (gc.compile, gc.function) and run it to get a NumPy array, or keep "
        "computing with graph ops"
    )


def _refuse_out(out, fname: str) -> None:
    if out is not None and not (isinstance(out, tuple) and all(o is None for o in out)):
        raise UnsupportedFunctionError(
            f"{fname}(..., out=...) cannot write into an array or a node: a graph only grows and a node has no "
            f"storage until a program runs; drop out= and use the returned node"
        )


def _refuse(cond: bool, fname: str, what: str) -> None:
    if cond:
        raise UnsupportedFunctionError(f"{fname}: {what} is not supported on graph nodes")


def _static(node: Node, fname: str, dims=None) -> tuple:
    shape = node.shape if dims is None else tuple(node.shape[d] for d in dims)
    if any(d is None for d in shape):
        raise ShapeError(
            f"{fname} needs a static shape, but {node.name!r} ({node.op.name}) has shape "
            f"{fmt_shape(node.shape)}; give the input a fixed size (gc.Spec with ints)"
        )
    return shape


def _keep(y, x: Node, axis, keepdims: bool):
    """Put reduced axes back as size 1 (for reductions whose op has no keepdims)."""
    if not keepdims:
        return y
    from .ops import shape as S

    axes = tuple(range(x.ndim)) if axis is None else (axis,) if isinstance(axis, (int, np.integer)) else axis
    axes = tuple(int(a) % x.ndim for a in axes)
    return S.expand_dims(y, axes) if axes else y


def _flat(x):
    from .ops import shape as S

    return S.reshape(x, (-1,))


# -- ufuncs (NEP 13) --------------------------------------------------------------------------


def _ufunc_table() -> dict:
    """ufunc -> a function of its inputs building the node; each resolves its gc op at call time."""
    from .ops import elementwise as E

    t: dict = {
        np.add: _op("add", "numpy.add"),
        np.subtract: _op("subtract", "numpy.subtract"),
        np.multiply: _op("multiply", "numpy.multiply"),
        np.true_divide: _op("divide", "numpy.divide"),
        np.negative: _op("negative", "numpy.negative"),
        np.power: _op("power", "numpy.power"),
        np.square: _op("square", "numpy.square"),
        np.sqrt: _op("sqrt", "numpy.sqrt"),
        np.exp: _op("exp", "numpy.exp"),
        np.log: _op("log", "numpy.log"),
        np.log1p: _op("log1p", "numpy.log1p"),
        np.expm1: _op("expm1", "numpy.expm1"),
        np.sin: _op("sin", "numpy.sin"),
        np.cos: _op("cos", "numpy.cos"),
        np.tan: _op("tan", "numpy.tan"),
        np.arctan: _op("arctan", "numpy.arctan"),
        np.arcsin: _op("arcsin", "numpy.arcsin"),
        np.arccos: _op("arccos", "numpy.arccos"),
        np.arcsinh: _op("arcsinh", "numpy.arcsinh"),
        np.arccosh: _op("arccosh", "numpy.arccosh"),
        np.arctanh: _op("arctanh", "numpy.arctanh"),
        np.sinh: _op("sinh", "numpy.sinh"),
        np.cosh: _op("cosh", "numpy.cosh"),
        np.tanh: _op("tanh", "numpy.tanh"),
        np.absolute: _op("abs", "numpy.absolute"),
        np.fabs: _op("abs", "numpy.fabs"),
        np.sign: _op("sign", "numpy.sign"),
        np.maximum: _op("maximum", "numpy.maximum"),
        np.minimum: _op("minimum", "numpy.minimum"),
        np.greater: _op("greater", "numpy.greater"),
        np.less: _op("less", "numpy.less"),
        np.greater_equal: _op("greater_equal", "numpy.greater_equal"),
        np.less_equal: _op("less_equal", "numpy.less_equal"),
        np.equal: _op("equal", "numpy.equal"),
        np.not_equal: _op("not_equal", "numpy.not_equal"),
        np.logaddexp: _op("logaddexp", "numpy.logaddexp"),
        np.logaddexp2: _op("logaddexp2", "numpy.logaddexp2"),
        np.fmax: _op("fmax", "numpy.fmax"),
        np.fmin: _op("fmin", "numpy.fmin"),
        np.floor: _op("floor", "numpy.floor"),
        np.ceil: _op("ceil", "numpy.ceil"),
        np.rint: _op("round", "numpy.rint"),  # both round half to even
        np.remainder: _op("mod", "numpy.remainder"),
        np.floor_divide: _op("floor_divide", "numpy.floor_divide"),
        np.divmod: lambda a, b: (_gc("floor_divide", "numpy.divmod")(a, b), _gc("mod", "numpy.divmod")(a, b)),
        np.bitwise_and: _op("bitwise_and", "numpy.bitwise_and"),
        np.bitwise_or: _op("bitwise_or", "numpy.bitwise_or"),
        np.bitwise_xor: _op("bitwise_xor", "numpy.bitwise_xor"),
        np.invert: _op("invert", "numpy.invert"),
        np.matmul: _op("matmul", "numpy.matmul"),
        np.positive: lambda x: x if isinstance(x, Node) else E.identity(x),
        np.reciprocal: lambda x: E.divide(1, x),  # 1/x, exactly what np.reciprocal computes
        np.exp2: lambda x: E.power(2, x),
        np.log2: lambda x: E.multiply(E.log(x), 1 / math.log(2)),
        np.log10: lambda x: E.multiply(E.log(x), 1 / math.log(10)),
        np.deg2rad: lambda x: E.multiply(x, math.pi / 180.0),  # NumPy's own formula: x * (pi / 180)
        np.radians: lambda x: E.multiply(x, math.pi / 180.0),
        np.rad2deg: lambda x: E.multiply(x, 180.0 / math.pi),
        np.degrees: lambda x: E.multiply(x, 180.0 / math.pi),
        np.isnan: lambda x: E.not_equal(x, x),  # only NaN differs from itself
        np.isinf: lambda x: E.equal(E.abs(x), np.inf),
        np.isfinite: lambda x: E.less(E.abs(x), np.inf),  # NaN < inf is False
        np.logical_not: lambda x: E.equal(x, 0),
        np.logical_and: lambda a, b: E.minimum(E.not_equal(a, 0), E.not_equal(b, 0)),
        np.logical_or: lambda a, b: E.maximum(E.not_equal(a, 0), E.not_equal(b, 0)),
        np.logical_xor: lambda a, b: E.not_equal(E.not_equal(a, 0), E.not_equal(b, 0)),
    }
    return t


_UFUNCS: dict = {}
# scipy.special's functions are ufuncs too: name -> gc op. Looked up only when scipy is already imported (a
# caller passing scipy.special.erf has imported it), so `import graphcompiler` does not load SciPy.
_SCIPY = {
    "expit": "sigmoid",
    "erf": "erf",
    "gammaln": "gammaln",
    "psi": "digamma",
    "log_expit": "log_sigmoid",
    "softplus": "softplus",
}


def _scipy_entry(ufunc):
    special = sys.modules.get("scipy.special")
    name = ufunc.__name__
    if special is None or name not in _SCIPY or getattr(special, name, None) is not ufunc:
        return None
    return _op(_SCIPY[name], f"scipy.special.{name}")


_REDUCE = {"add": "sum", "multiply": "prod", "maximum": "max", "minimum": "min"}


def _ufunc_name(ufunc) -> str:
    name = ufunc.__name__
    return f"numpy.{name}" if getattr(np, name, None) is ufunc else f"scipy.special.{name}"


def _convertible(x) -> bool:
    return isinstance(x, (Node, np.ndarray, np.generic, bool, int, float)) or isinstance(x, (list, tuple))


def array_ufunc(self: Node, ufunc, method: str, *inputs, **kwargs):
    """Node.__array_ufunc__: a ufunc call on nodes (and arrays, numbers) builds the op's node."""
    fname = _ufunc_name(ufunc) + ("" if method == "__call__" else f".{method}")
    _refuse_out(kwargs.pop("out", None), fname)
    if not all(_convertible(x) for x in inputs):
        return NotImplemented
    inputs = tuple(np.asarray(x) if isinstance(x, (list, tuple)) else x for x in inputs)
    where = kwargs.pop("where", True)
    _refuse(where is not True, fname, "where=")
    for k, default in (("casting", "same_kind"), ("order", "K"), ("subok", True), ("signature", None), ("axes", None)):
        if k in kwargs and kwargs.pop(k) != default:
            raise UnsupportedFunctionError(f"{fname}: {k}= is not supported on graph nodes")
    dtype = kwargs.pop("dtype", None)
    if method == "__call__":
        _refuse(bool(kwargs), fname, f"keyword(s) {', '.join(kwargs)}")
        fn = _UFUNCS.get(ufunc) or _scipy_entry(ufunc)
        if fn is None:
            raise UnsupportedFunctionError(
                f"{fname} is not supported on graph nodes (no op computes it); gc.numpy_functions() lists what is"
            )
        out = fn(*inputs)
        return out if dtype is None else _gc("astype", fname)(out, dtype)
    if method in ("reduce", "accumulate") and ufunc.__name__ in _REDUCE:
        x = inputs[0]
        axis = kwargs.pop("axis", 0)
        keepdims = kwargs.pop("keepdims", False)
        _refuse("initial" in kwargs, fname, "initial=")
        _refuse(bool(kwargs), fname, f"keyword(s) {', '.join(kwargs)}")
        dtype = _reduce_dtype(dtype, fname)
        if dtype is not None:
            x = _gc("astype", fname)(x, dtype)
        if method == "reduce":
            return _as_dtype(_gc(_REDUCE[ufunc.__name__], fname)(x, axis=axis, keepdims=keepdims), dtype, fname)
        if ufunc.__name__ == "add":
            return _as_dtype(_gc("cumsum", fname)(x, axis=axis), dtype, fname)
    raise UnsupportedFunctionError(f"{fname} is not supported on graph nodes; gc.numpy_functions() lists what is")


# -- functions (NEP 18) ---------------------------------------------------------------------

_FUNCTIONS: dict[Callable, Callable] = {}


def _fname(func) -> str:
    mod = func.__module__ or "numpy"
    if mod.startswith("numpy.") and mod.split(".")[1].startswith("_"):
        mod = "numpy"  # numpy._core.fromnumeric -> numpy
    return f"{mod}.{func.__name__}"


def implements(*funcs: Callable):
    """Register `impl` as the graph form of each NumPy function in funcs (the dispatch table)."""

    def deco(impl):
        for f in funcs:
            _FUNCTIONS[f] = impl
        return impl

    return deco


def array_function(self: Node, func, types, args, kwargs):
    """Node.__array_function__: a NumPy function on nodes, looked up in the dispatch table."""
    impl = _FUNCTIONS.get(func)
    if impl is None:
        raise UnsupportedFunctionError(
            f"{_fname(func)} is not supported on graph nodes; gc.numpy_functions() lists the NumPy functions "
            "that build graph nodes (write this step with those, or with gc ops)"
        )
    if not all(issubclass(t, (Node, np.ndarray)) for t in types):
        return NotImplemented
    if func in _LIKE_FUNCS:  # np.array(obj, like=self): NumPy passes obj and leaves `like` out
        kwargs = {**kwargs, "_like": self}
    return impl(*args, **kwargs)


def numpy_functions() -> list[str]:
    """The names of the NumPy (and scipy.special) callables that build graph nodes when given nodes.

    Ufuncs appear as `numpy.add`; ufunc reductions as `numpy.add.reduce`. An entry whose op comes from a
    module not in this build raises OpNotAvailableError when called.
    """
    names = {_fname(f) for f in _FUNCTIONS} | {_ufunc_name(u) for u in _UFUNCS}
    special = sys.modules.get("scipy.special")  # not imported here: listed by name unless loaded
    names |= {f"scipy.special.{n}" for n in _SCIPY if special is None or hasattr(special, n)}
    names |= {f"numpy.{u}.reduce" for u in _REDUCE} | {"numpy.add.accumulate"}
    return sorted(names)


# reductions -----------------------------------------------------------------------------------


def _reduction(func, op: str):
    """The graph form of a NumPy reduction; arguments bound by NumPy's own signature (positional or not)."""
    sig = inspect.signature(func)
    fname = _fname(func)

    def impl(*args, **kwargs):
        a = sig.bind(*args, **kwargs).arguments
        _refuse_out(a.pop("out", None), fname)
        for k in ("initial", "mean", "correction"):
            _refuse(a.get(k, np._NoValue) is not np._NoValue, fname, f"{k}=")
        where = a.get("where", np._NoValue)
        _refuse(where is not np._NoValue and where is not True, fname, "where=")
        x, axis, dtype = a["a"], a.get("axis"), a.get("dtype")
        keepdims = a.get("keepdims", np._NoValue)
        keepdims = False if keepdims is np._NoValue else bool(keepdims)
        dtype = _reduce_dtype(dtype, fname, floats_only=op in ("var", "std"))
        if dtype is not None:
            x = _gc("astype", fname)(x, dtype)
        if isinstance(axis, list):
            axis = tuple(axis)
        if "ddof" in sig.parameters:
            y = _gc(op, fname)(x, axis=axis, keepdims=keepdims, ddof=a.get("ddof", 0))
        else:
            y = _gc(op, fname)(x, axis=axis, keepdims=keepdims)
        return _as_dtype(y, dtype, fname)

    return impl


def _reduce_dtype(dtype, fname: str, floats_only: bool = False) -> np.dtype | None:
    """NumPy's dtype= of a reduction: the accumulator and the result's dtype. The input is cast to it and
    the result too (np.mean(x, dtype=int) truncates the mean toward zero, as NumPy's unsafe cast does)."""
    if dtype is None:
        return None
    if isinstance(dtype, Node):
        raise DTypeError(f"{fname}: dtype= is the node {dtype.name!r}; a dtype is a NumPy dtype (e.g. 'float32')")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise DTypeError(f"{fname}: dtype={dtype!r} is not a dtype; use e.g. 'float32' or 'int64'") from None
    if dt.kind not in ("f" if floats_only else "iuf"):
        raise UnsupportedFunctionError(
            f"{fname}(..., dtype={dt}) is not supported on graph nodes: give "
            f"{'a floating' if floats_only else 'an integer or floating'} dtype, or cast the input "
            "(x.astype(...)) and reduce without dtype="
        )
    return dt


def _as_dtype(y, dtype: np.dtype | None, fname: str):
    return y if dtype is None or y.dtype == dtype else _gc("astype", fname)(y, dtype)


def _reg_reduction(funcs, op):
    implements(*funcs)(_reduction(funcs[0], op))


_reg_reduction([np.sum], "sum")
_reg_reduction([np.mean], "mean")
_reg_reduction([np.prod], "prod")
_reg_reduction([np.max, np.amax], "max")
_reg_reduction([np.min, np.amin], "min")
_reg_reduction([np.var], "var")
_reg_reduction([np.std], "std")


def _arg_reduction(op):
    fname = f"numpy.{op}"

    def impl(a, axis=None, out=None, *, keepdims=False):
        _refuse_out(out, fname)
        if axis is None:  # NumPy: the index into the flattened array
            y = _gc(op, fname)(_flat(a), axis=0)
            return _keep(y, a, None, keepdims)
        return _keep(_gc(op, fname)(a, axis=axis), a, axis, keepdims)

    return impl


implements(np.argmax)(_arg_reduction("argmax"))
implements(np.argmin)(_arg_reduction("argmin"))


@implements(np.cumsum)
def _cumsum(a, axis=None, dtype=None, out=None):
    _refuse_out(out, "numpy.cumsum")
    dtype = _reduce_dtype(dtype, "numpy.cumsum")
    x = a if dtype is None else _gc("astype", "numpy.cumsum")(a, dtype)
    if axis is None:  # NumPy: the running sum of the flattened array
        return _as_dtype(_gc("cumsum", "numpy.cumsum")(_flat(x), axis=0), dtype, "numpy.cumsum")
    return _as_dtype(_gc("cumsum", "numpy.cumsum")(x, axis=axis), dtype, "numpy.cumsum")


@implements(np.cumprod)
def _cumprod(a, axis=None, dtype=None, out=None):
    _refuse_out(out, "numpy.cumprod")
    dtype = _reduce_dtype(dtype, "numpy.cumprod")
    x = a if dtype is None else _gc("astype", "numpy.cumprod")(a, dtype)
    return _as_dtype(_gc("cumprod", "numpy.cumprod")(x, axis=axis), dtype, "numpy.cumprod")


def _sort_args(fname, kind, order, stable):
    _refuse(order is not None, fname, "order= (structured arrays)")
    if kind not in (None, "quicksort", "mergesort", "heapsort", "stable") or stable not in (None, True, False):
        raise UnsupportedFunctionError(f"{fname}: kind={kind!r}, stable={stable!r} are not sorting options")


@implements(np.sort)
def _sort(a, axis=-1, kind=None, order=None, *, stable=None):
    """Always the stable order (a valid answer for every kind: the sorted values are the same)."""
    _sort_args("numpy.sort", kind, order, stable)
    return _gc("sort", "numpy.sort")(a, axis)


@implements(np.argsort)
def _argsort(a, axis=-1, kind=None, order=None, *, stable=None):
    """Always the stable order: ties keep their order (NumPy's default kind may order ties otherwise)."""
    _sort_args("numpy.argsort", kind, order, stable)
    return _gc("argsort", "numpy.argsort")(a, axis)


def _check_kth(a, kth, axis, fname):
    n = a.size if axis is None else a.shape[axis]
    ks = np.atleast_1d(np.asarray(kth))
    if ks.dtype.kind not in "iu" or ks.ndim != 1:
        raise UnsupportedFunctionError(f"{fname}: kth is an integer or a sequence of integers, got {kth!r}")
    if isinstance(n, (int, np.integer)) and ((ks >= n) | (ks < -n)).any():
        raise ShapeError(f"{fname} of {a.name!r} (shape {fmt_shape(a.shape)}): kth {kth!r} out of range for {n}")


@implements(np.partition)
def _partition(a, kth, axis=-1, kind="introselect", order=None):
    """The sorted array: a valid partition for every kth (each kth element in its sorted place, the smaller
    before it, the larger after it); only the order among those may differ from NumPy's introselect."""
    _refuse(order is not None, "numpy.partition", "order= (structured arrays)")
    _check_kth(a, kth, axis, "numpy.partition")
    return _gc("sort", "numpy.partition")(a, axis)


@implements(np.argpartition)
def _argpartition(a, kth, axis=-1, kind="introselect", order=None):
    """The stable sorting permutation: a valid argpartition for every kth (see numpy.partition here)."""
    _refuse(order is not None, "numpy.argpartition", "order= (structured arrays)")
    _check_kth(a, kth, axis, "numpy.argpartition")
    return _gc("argsort", "numpy.argpartition")(a, axis)


@implements(np.trace)
def _trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    _refuse_out(out, "numpy.trace")
    if a.ndim < 2:
        raise ShapeError(f"numpy.trace needs at least 2 dimensions, {a.name!r} has shape {fmt_shape(a.shape)}")
    dtype = _reduce_dtype(dtype, "numpy.trace")
    x = a if dtype is None else _gc("astype", "numpy.trace")(a, dtype)
    return _as_dtype(_gc("trace", "numpy.trace")(x, int(offset), axis1, axis2), dtype, "numpy.trace")


# contractions ---------------------------------------------------------------------------------


@implements(np.dot)
def _dot(a, b, out=None):
    _refuse_out(out, "numpy.dot")
    from .ops import elementwise as E

    na, nb = np.ndim(a) if not isinstance(a, Node) else a.ndim, b.ndim if isinstance(b, Node) else np.ndim(b)
    if na == 0 or nb == 0:
        return E.multiply(a, b)
    if nb == 1 or (na <= 2 and nb <= 2):  # where dot and matmul agree
        return _gc("matmul", "numpy.dot")(a, b)
    return _gc("tensordot", "numpy.dot")(a, b, axes=([na - 1], [nb - 2]))


@implements(np.vdot)
def _vdot(a, b):
    from .ops import elementwise as E, reduce as R

    a, b = _lift_all([a, b])
    return R.sum(E.multiply(_flat(a), _flat(b)))


@implements(np.inner)
def _inner(a, b):
    from .ops import elementwise as E

    a, b = _lift_all([a, b])
    if a.ndim == 0 or b.ndim == 0:
        return E.multiply(a, b)
    if a.ndim == 1 and b.ndim == 1:
        return _gc("matmul", "numpy.inner")(a, b)
    return _gc("tensordot", "numpy.inner")(a, b, axes=([a.ndim - 1], [b.ndim - 1]))


@implements(np.kron)
def _kron(a, b):
    """kron(a, b) = (a[i] * b[j]) with the index pairs merged: one multiply per entry, exact as NumPy's."""
    a, b = _lift_all([a, b])
    nd = max(a.ndim, b.ndim)
    sa = (1,) * (nd - a.ndim) + _static(a, "numpy.kron")
    sb = (1,) * (nd - b.ndim) + _static(b, "numpy.kron")
    reshape = _gc("reshape", "numpy.kron")
    ai = reshape(a, tuple(d for k in sa for d in (k, 1)))  # (a0, 1, a1, 1, ...)
    bi = reshape(b, tuple(d for k in sb for d in (1, k)))  # (1, b0, 1, b1, ...)
    return reshape(_gc("multiply", "numpy.kron")(ai, bi), tuple(x * y for x, y in zip(sa, sb)))


@implements(np.linalg.multi_dot)
def _multi_dot(arrays, *, out=None):
    _refuse_out(out, "numpy.linalg.multi_dot")
    xs = _lift_all(arrays)
    y = xs[0]
    for x in xs[1:]:  # left to right (NumPy may pick another order: equal up to rounding)
        y = _gc("matmul", "numpy.linalg.multi_dot")(y, x)
    return y


def _sublist_letters(sub) -> str:
    """An einsum sublist ([0, 1, Ellipsis]) as subscripts ("AB..."): NumPy's letters, 0-25 -> A-Z, 26-51 -> a-z."""
    letters = string.ascii_uppercase + string.ascii_lowercase
    try:
        items = list(sub)
    except TypeError:
        items = None
    if items is None or isinstance(sub, (str, Node)):
        raise UnsupportedFunctionError(
            f"numpy.einsum: in the interleaved form each operand is followed by a list of axis labels, got {sub!r}"
        )
    out = []
    for s in items:
        if s is Ellipsis:
            out.append("...")
        elif isinstance(s, (int, np.integer)) and not isinstance(s, bool) and 0 <= int(s) < len(letters):
            out.append(letters[int(s)])
        else:
            raise UnsupportedFunctionError(
                f"numpy.einsum: an axis label is an integer in [0, 52) or Ellipsis, got {s!r} in sublist {sub!r}"
            )
    return "".join(out)


@implements(np.einsum)
def _einsum(subscripts, *operands, out=None, optimize=False, **kw):
    _refuse_out(out, "numpy.einsum")
    _refuse(bool(kw), "numpy.einsum", f"keyword(s) {', '.join(kw)}")
    if not isinstance(subscripts, str):  # interleaved: op0, sublist0, op1, sublist1, ..., [sublist_out]
        args = (subscripts, *operands)
        pairs, rest = args[: len(args) // 2 * 2], args[len(args) // 2 * 2 :]
        operands = pairs[0::2]
        subscripts = ",".join(_sublist_letters(s) for s in pairs[1::2])
        if rest:
            subscripts += "->" + _sublist_letters(rest[0])
    return _gc("einsum", "numpy.einsum")(subscripts, *_lift_all(operands))


@implements(np.tensordot)
def _tensordot(a, b, axes=2):
    return _gc("tensordot", "numpy.tensordot")(*_lift_all([a, b]), axes=axes)


@implements(np.outer)
def _outer(a, b, out=None):
    _refuse_out(out, "numpy.outer")
    a, b = _lift_all([a, b])  # NumPy flattens both operands
    return _gc("outer", "numpy.outer")(_flat(a) if a.ndim != 1 else a, _flat(b) if b.ndim != 1 else b)


# shapes ---------------------------------------------------------------------------------------


@implements(np.shape)
def _shape(a):
    return tuple(a.shape)


@implements(np.ndim)
def _ndim(a):
    return a.ndim


@implements(np.size)
def _size(a, axis=None):
    if axis is not None:
        d = a.shape[axis]
        if d is None:
            raise ShapeError(f"numpy.size: axis {axis} of {a.name!r} has a run-time size (shape {fmt_shape(a.shape)})")
        return d
    return node_size(a)


@implements(np.reshape)
def _reshape(a, /, shape=None, order="C", *, newshape=None, copy=None):
    _refuse(order != "C", "numpy.reshape", f"order={order!r}")
    return _gc("reshape", "numpy.reshape")(a, shape if shape is not None else newshape)


@implements(np.ravel)
def _ravel(a, order="C"):
    _refuse(order not in ("C", "K", "A"), "numpy.ravel", f"order={order!r}")
    return _flat(a)


@implements(np.transpose)
def _transpose(a, axes=None):
    return _gc("transpose", "numpy.transpose")(a, axes)


@implements(np.swapaxes)
def _swapaxes(a, axis1, axis2):
    perm = list(range(a.ndim))
    i, j = int(axis1) % a.ndim, int(axis2) % a.ndim
    perm[i], perm[j] = perm[j], perm[i]
    return _gc("transpose", "numpy.swapaxes")(a, tuple(perm))


@implements(np.moveaxis)
def _moveaxis(a, source, destination):
    src = [source] if isinstance(source, (int, np.integer)) else list(source)
    dst = [destination] if isinstance(destination, (int, np.integer)) else list(destination)
    src = [int(s) % a.ndim for s in src]
    dst = [int(d) % a.ndim for d in dst]
    order = [k for k in range(a.ndim) if k not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return _gc("transpose", "numpy.moveaxis")(a, tuple(order))


@implements(np.squeeze)
def _squeeze(a, axis=None):
    return _gc("squeeze", "numpy.squeeze")(a, axis)


@implements(np.expand_dims)
def _expand_dims(a, axis):
    return _gc("expand_dims", "numpy.expand_dims")(a, axis)


@implements(np.broadcast_to)
def _broadcast_to(array, shape, subok=False):
    return _gc("broadcast_to", "numpy.broadcast_to")(array, shape)


@implements(np.atleast_1d)
def _atleast_1d(*arys):
    out = [x if x.ndim >= 1 else _gc("reshape", "numpy.atleast_1d")(x, (1,)) for x in _lift_all(arys)]
    return out[0] if len(out) == 1 else tuple(out)


@implements(np.atleast_2d)
def _atleast_2d(*arys):
    def f(x):
        if x.ndim >= 2:
            return x
        return (
            _gc("reshape", "numpy.atleast_2d")(x, (1, 1))
            if x.ndim == 0
            else _gc("expand_dims", "numpy.atleast_2d")(x, 0)
        )

    out = [f(x) for x in _lift_all(arys)]
    return out[0] if len(out) == 1 else tuple(out)


@implements(np.atleast_3d)
def _atleast_3d(*arys):
    def f(x):
        if x.ndim >= 3:
            return x
        if x.ndim == 0:
            return _gc("reshape", "numpy.atleast_3d")(x, (1, 1, 1))
        if x.ndim == 1:  # (n,) -> (1, n, 1), as NumPy does
            return _gc("expand_dims", "numpy.atleast_3d")(x, (0, 2))
        return _gc("expand_dims", "numpy.atleast_3d")(x, 2)

    out = [f(x) for x in _lift_all(arys)]
    return out[0] if len(out) == 1 else tuple(out)


@implements(np.column_stack)
def _column_stack(tup):
    xs = [
        x if x.ndim >= 2 else _gc("expand_dims", "numpy.column_stack")(_atleast_1d(x), 1)
        for x in _lift_arrays(tup, "numpy.column_stack")
    ]
    return _concatenate(xs, axis=1)


@implements(np.dstack)
def _dstack(tup):
    xs = _atleast_3d(*_lift_arrays(tup, "numpy.dstack"))
    return _concatenate([xs] if isinstance(xs, Node) else list(xs), axis=2)


@implements(np.rollaxis)
def _rollaxis(a, axis, start=0):
    n = a.ndim
    axis = int(axis) % n
    start = int(start) + n if start < 0 else int(start)
    if axis < start:
        start -= 1
    if axis == start:
        return a
    order = [k for k in range(n) if k != axis]
    order.insert(start, axis)
    return _gc("transpose", "numpy.rollaxis")(a, tuple(order))


@implements(np.matrix_transpose, np.linalg.matrix_transpose)
def _matrix_transpose(x, /):
    if x.ndim < 2:
        raise ShapeError(f"numpy.matrix_transpose needs rank 2 or more, {x.name!r} has shape {fmt_shape(x.shape)}")
    return _swapaxes(x, -1, -2)


@implements(np.rot90)
def _rot90(m, k=1, axes=(0, 1)):
    k = int(k) % 4
    a0, a1 = (int(a) % m.ndim for a in axes)
    if k == 0:
        return m
    if k == 2:
        return _flip(_flip(m, a0), a1)
    perm = list(range(m.ndim))
    perm[a0], perm[a1] = perm[a1], perm[a0]
    if k == 1:  # NumPy: transpose(flip(m, axes[1]))
        return _gc("transpose", "numpy.rot90")(_flip(m, a1), tuple(perm))
    return _flip(_gc("transpose", "numpy.rot90")(m, tuple(perm)), a1)


@implements(np.average)
def _average(a, axis=None, weights=None, returned=False, *, keepdims=np._NoValue):
    _refuse(returned, "numpy.average", "returned=True")
    kd = False if keepdims is np._NoValue else bool(keepdims)
    if weights is None:
        return _gc("mean", "numpy.average")(a, axis=axis, keepdims=kd)
    from .ops import elementwise as E, reduce as R

    _refuse(
        np.ndim(weights) != a.ndim if not isinstance(weights, Node) else weights.ndim != a.ndim,
        "numpy.average",
        "weights of another rank than a (give them a's shape)",
    )
    # NumPy: sum(a * w, axis) / sum(w, axis), with w broadcast to a's shape
    w = weights if isinstance(weights, Node) else a.graph.constant(np.asarray(weights, dtype=a.dtype))
    num = R.sum(E.multiply(a, w), axis=axis, keepdims=kd)
    den = R.sum(_gc("broadcast_to", "numpy.average")(w, a) if w.shape != a.shape else w, axis=axis, keepdims=kd)
    return E.divide(num, den)


@implements(np.real)
def _real(val):
    return val if isinstance(val, Node) else _lift(val, _graph_of(val))


@implements(np.real_if_close)
def _real_if_close(a, tol=100):
    if a.dtype.kind == "c":
        raise DTypeError(f"numpy.real_if_close of complex node {a.name!r}: complex graph values are not supported")
    return a  # a real array comes back as it is


@implements(np.select)
def _select(condlist, choicelist, default=0):
    """where(c0, x0, where(c1, x1, ... default)): the first true condition picks, as NumPy's select."""
    conds, choices = list(condlist), list(choicelist)
    if len(conds) != len(choices):
        raise ShapeError(f"numpy.select: {len(conds)} conditions for {len(choices)} choices; give one per choice")
    if not conds:
        raise ShapeError("numpy.select needs at least one condition and choice")
    graph = _graph_of([conds, choices, default])
    for c in conds:
        dt = c.dtype if isinstance(c, Node) else np.asarray(c).dtype
        if dt != np.bool_:
            name = repr(c.name) if isinstance(c, Node) else "an array"
            raise DTypeError(f"numpy.select: condition {name} is {dt}, not bool; compare it (x > 0) first")
    items = _lift_all([*choices, default])
    out = items[-1]
    for c, x in zip(reversed(conds), reversed(items[:-1])):
        out = _gc("where", "numpy.select")(_lift(c, graph), x, out)
    return out


@implements(np.cross)
def _cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    """The cross product of 3-vectors: (a1 b2 - a2 b1, a2 b0 - a0 b2, a0 b1 - a1 b0), batches broadcast."""
    from .ops import elementwise as E
    from .ops.shape import normalize_axis

    if axis is not None:
        axisa = axisb = axisc = axis
    a, b = _lift_all([a, b])
    parts = []
    for x, ax, which in ((a, axisa, "a"), (b, axisb, "b")):
        ax = normalize_axis(ax, x.ndim, "numpy.cross", x)
        if x.shape[ax] != 3:
            raise ShapeError(
                f"numpy.cross on graph nodes takes 3-vectors: {which} ({x.name!r}, shape {fmt_shape(x.shape)}) "
                f"has {x.shape[ax]} along axis {ax} (2-vectors are deprecated in NumPy 2)"
            )
        index = [slice(None)] * x.ndim
        comps = []
        for k in range(3):
            index[ax] = k
            comps.append(_gc("getitem", "numpy.cross")(x, tuple(index)))
        parts.append(comps)
    (a0, a1, a2), (b0, b1, b2) = parts
    mul, sub = E.multiply, E.subtract
    c = [sub(mul(a1, b2), mul(a2, b1)), sub(mul(a2, b0), mul(a0, b2)), sub(mul(a0, b1), mul(a1, b0))]
    return _gc("stack", "numpy.cross")(c, axis=normalize_axis(axisc, c[0].ndim + 1, "numpy.cross", c[0]))


@implements(np.linspace)
def _linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0):
    """start + k (stop - start) / div for k < num, as NumPy (the last one exactly stop when endpoint);
    start and stop may be nodes (then so are the values, differentiable in both)."""
    from .ops import elementwise as E
    from .ops.shape import normalize_axis

    try:
        num = operator.index(num)
    except TypeError:
        raise UnsupportedFunctionError(
            f"numpy.linspace: num is {num!r}; give an integer (known when building)"
        ) from None
    if num < 0:
        raise ShapeError(f"numpy.linspace: num is {num}, it must be >= 0")
    if dtype is not None and np.dtype(dtype).kind != "f":
        raise UnsupportedFunctionError(f"numpy.linspace on graph nodes: dtype={np.dtype(dtype)} (floats only)")
    start, stop = _lift_all([start, stop])
    fl = np.result_type(start.dtype, stop.dtype, np.float64 if dtype is None else dtype)
    if fl.kind != "f":
        fl = np.dtype("float64")
    start, stop = (x if x.dtype == fl else E.astype(x, fl) for x in (start, stop))
    delta = E.subtract(stop, start)
    nd = max(start.ndim, stop.ndim)
    div = (num - 1) if endpoint else num
    k = start.graph.constant(np.arange(num, dtype=fl).reshape((num,) + (1,) * nd))
    step = E.divide(delta, float(div)) if div > 0 else E.multiply(delta, np.nan)
    y = E.add(E.multiply(k, step), start) if div > 0 else E.add(E.multiply(k, delta), start)
    if endpoint and num > 1:
        last = start.graph.constant((np.arange(num) == num - 1).reshape((num,) + (1,) * nd))
        y = E.where(last, stop, y)
    axis = normalize_axis(axis, nd + 1, "numpy.linspace", y)
    if axis != 0:
        order = list(range(1, nd + 1))
        order.insert(axis, 0)
        y = _gc("transpose", "numpy.linspace")(y, order)
    if dtype is not None and y.dtype != np.dtype(dtype):
        y = E.astype(y, dtype)
    return (y, step) if retstep else y


@implements(np.gradient)
def _gradient(f, *varargs, axis=None, edge_order=1):
    """NumPy's second-order central differences inside and one-sided ones of edge_order at the ends, with a
    uniform spacing per axis (numbers; coordinate arrays are refused): a composition of slices."""
    from .ops import elementwise as E
    from .ops.shape import normalize_axes

    fname = "numpy.gradient"
    axes = tuple(range(f.ndim)) if axis is None else normalize_axes(axis, f.ndim, fname, f)
    if len(varargs) == 0:
        spacing = [1.0] * len(axes)
    elif len(varargs) == 1 and np.ndim(varargs[0]) == 0:
        spacing = [varargs[0]] * len(axes)
    elif len(varargs) == len(axes) and all(np.ndim(v) == 0 for v in varargs):
        spacing = list(varargs)
    else:
        raise UnsupportedFunctionError(
            f"{fname} on graph nodes: give no spacing, one number, or one number per axis ({len(axes)}); "
            "coordinate arrays are not supported"
        )
    if any(isinstance(h, Node) for h in spacing):
        raise UnsupportedFunctionError(f"{fname}: a spacing that is a node (give numbers)")
    _refuse(edge_order not in (1, 2), fname, f"edge_order={edge_order!r} (1 or 2)")
    x = f if f.dtype.kind == "f" else E.astype(f, "float64")
    out = []
    for ax, h in zip(axes, spacing):
        n = x.shape[ax]
        if not isinstance(n, (int, np.integer)) or n < edge_order + 1:
            raise ShapeError(
                f"{fname} of {f.name!r} (shape {fmt_shape(f.shape)}) along axis {ax}: it needs at least "
                f"edge_order + 1 = {edge_order + 1} known elements there"
            )
        h = float(h)

        def at(sl, ax=ax):
            index = [slice(None)] * x.ndim
            index[ax] = sl
            return _gc("getitem", fname)(x, tuple(index))

        inner = E.divide(E.subtract(at(slice(2, None)), at(slice(None, -2))), 2.0 * h)
        if edge_order == 1:
            first = E.divide(E.subtract(at(slice(1, 2)), at(slice(0, 1))), h)
            last = E.divide(E.subtract(at(slice(-1, None)), at(slice(-2, -1))), h)
        else:  # the formulas and the order of terms NumPy uses for a uniform spacing
            a, b, c = -1.5 / h, 2.0 / h, -0.5 / h
            first = E.add(
                E.add(E.multiply(at(slice(0, 1)), a), E.multiply(at(slice(1, 2)), b)), E.multiply(at(slice(2, 3)), c)
            )
            a, b, c = 0.5 / h, -2.0 / h, 1.5 / h
            last = E.add(
                E.add(E.multiply(at(slice(-3, -2)), a), E.multiply(at(slice(-2, -1)), b)),
                E.multiply(at(slice(-1, None)), c),
            )
        out.append(_gc("concatenate", fname)([first, inner, last], axis=ax))
    return out[0] if len(out) == 1 else tuple(out)


@implements(np.concatenate)
def _concatenate(arrays, axis=0, out=None, *, dtype=None, casting="same_kind"):
    _refuse_out(out, "numpy.concatenate")
    xs = _lift_arrays(arrays, "numpy.concatenate")
    if axis is None:
        xs, axis = [_flat(x) for x in xs], 0
    if dtype is not None:
        xs = [_gc("astype", "numpy.concatenate")(x, dtype) for x in xs]
    return _gc("concatenate", "numpy.concatenate")(xs, axis=axis)


@implements(np.stack)
def _stack(arrays, axis=0, out=None, *, dtype=None, casting="same_kind"):
    _refuse_out(out, "numpy.stack")
    xs = _lift_arrays(arrays, "numpy.stack")
    if dtype is not None:
        xs = [_gc("astype", "numpy.stack")(x, dtype) for x in xs]
    return _gc("stack", "numpy.stack")(xs, axis=axis)


@implements(np.hstack)
def _hstack(tup, *, dtype=None, casting="same_kind"):
    xs = _atleast_1d(*_lift_arrays(tup, "numpy.hstack"))
    xs = [xs] if isinstance(xs, Node) else list(xs)
    return _concatenate(xs, axis=0 if xs[0].ndim == 1 else 1, dtype=dtype)


@implements(np.vstack)
def _vstack(tup, *, dtype=None, casting="same_kind"):
    xs = _atleast_2d(*_lift_arrays(tup, "numpy.vstack"))
    xs = [xs] if isinstance(xs, Node) else list(xs)
    return _concatenate(xs, axis=0, dtype=dtype)


@implements(np.append)
def _append(arr, values, axis=None):
    arr, values = _lift_arrays([arr, values], "numpy.append")
    if axis is None:  # NumPy: both flattened
        return _concatenate([_flat(arr), _flat(values)], axis=0)
    return _concatenate([arr, values], axis=axis)


def _cuts(ary, indices_or_sections, fname: str):
    """indices_or_sections as Python ints (a node there would make the number of pieces a run-time fact)."""
    if isinstance(indices_or_sections, Node):
        raise UnsupportedFunctionError(
            f"{fname}: the cut indices or number of sections must be Python ints or a NumPy array, not node "
            f"{indices_or_sections.name!r}: the number and shapes of the pieces are fixed when the graph is built"
        )
    if isinstance(indices_or_sections, (int, np.integer)):
        return int(indices_or_sections)
    return [int(c) for c in indices_or_sections]


def _split_node(ary, indices_or_sections, axis, fname: str):
    x = _lift_arrays([ary], fname)[0]
    return _gc("split", fname)(x, _cuts(x, indices_or_sections, fname), axis=axis)


@implements(np.split)
def _split(ary, indices_or_sections, axis=0):
    return _split_node(ary, indices_or_sections, axis, "numpy.split")


@implements(np.array_split)
def _array_split(ary, indices_or_sections, axis=0):
    fname = "numpy.array_split"
    x = _lift_arrays([ary], fname)[0]
    cuts = _cuts(x, indices_or_sections, fname)
    if isinstance(cuts, int):  # NumPy: the first n % k pieces one longer
        if cuts <= 0:
            raise ShapeError(f"{fname}: the number of sections must be positive, got {cuts}")
        from .ops.shape import normalize_axis

        ax = normalize_axis(axis, x.ndim, fname, x)
        n = _static(x, fname, dims=(ax,))[0]
        each, extra = divmod(n, cuts)
        sizes = [each + 1] * extra + [each] * (cuts - extra)
        cuts = [int(c) for c in np.cumsum(sizes)[:-1]]
        axis = ax
    return _gc("split", fname)(x, cuts, axis=axis)


def _split_at(axis_of, least: int, fname: str):
    def impl(ary, indices_or_sections):
        x = _lift_arrays([ary], fname)[0]
        if x.ndim < least:
            raise ShapeError(
                f"{fname} needs rank {least} or more, {x.name!r} has shape {fmt_shape(x.shape)}; use numpy.split "
                "with an axis"
            )
        return _split_node(x, indices_or_sections, axis_of(x), fname)

    return impl


implements(np.hsplit)(_split_at(lambda x: 1 if x.ndim > 1 else 0, 1, "numpy.hsplit"))
implements(np.vsplit)(_split_at(lambda x: 0, 2, "numpy.vsplit"))
implements(np.dsplit)(_split_at(lambda x: 2, 3, "numpy.dsplit"))


@implements(np.block)
def _block(arrays):
    fname = "numpy.block"
    graph = _graph_of(arrays)

    def depths(obj, path):  # the depth of every leaf, with the nesting checked as NumPy checks it
        if isinstance(obj, tuple):
            raise ShapeError(f"{fname}: arrays{path} is a tuple; numpy.block takes nested lists only")
        if not isinstance(obj, list):
            return [path.count("[")]
        if not obj:
            raise ShapeError(f"{fname}: arrays{path} is an empty list")
        return [d for k, o in enumerate(obj) for d in depths(o, f"{path}[{k}]")]

    ds = set(depths(arrays, ""))
    if len(ds) > 1:
        raise ShapeError(f"{fname}: the lists are nested to different depths {sorted(ds)}; nest them evenly")
    depth = ds.pop()
    leaves = []

    def lift(obj):
        if isinstance(obj, list):
            return [lift(o) for o in obj]
        leaves.append(_as_array_node(obj, graph, fname))
        return leaves[-1]

    tree = lift(arrays)
    ndim = max([depth] + [x.ndim for x in leaves])

    def build(obj, level):  # the innermost lists join along the last axis, the outermost along -depth
        if not isinstance(obj, list):
            if obj.ndim == ndim:
                return obj
            return _gc("expand_dims", fname)(obj, tuple(range(ndim - obj.ndim)))  # leading 1s, as NumPy
        parts = [build(o, level + 1) for o in obj]
        return parts[0] if len(parts) == 1 else _gc("concatenate", fname)(parts, axis=level - depth + ndim)

    return build(tree, 0)


_LIKE_FUNCS = (np.array, np.asarray, np.asanyarray)


@implements(*_LIKE_FUNCS)
def _array_like(obj, dtype=None, order=None, *, _like: Node, ndmin=0, **kw):
    """np.array(obj, like=node) (NEP 35: the one way np.array reaches a node): obj holding nodes as the node
    numpy.stack builds, a plain list or array as a constant of the graph of `like`."""
    fname = "numpy.array(..., like=node)"
    _refuse(bool(ndmin), fname, "ndmin=")
    x = _as_array_node(obj, _graph_of(obj) or _like.graph, fname)
    return x if dtype is None or np.dtype(dtype) == x.dtype else _gc("astype", fname)(x, dtype)


@implements(np.where)
def _where(condition, x=None, y=None):
    if x is None and y is None:
        raise UnsupportedFunctionError(
            "numpy.where(condition) with one argument returns indices whose number depends on the values "
            "(a run-time shape); give x and y (numpy.where(condition, x, y)) to choose elementwise"
        )
    return _gc("where", "numpy.where")(condition, x, y)


@implements(np.clip)
def _clip(a, a_min=np._NoValue, a_max=np._NoValue, out=None, *, min=np._NoValue, max=np._NoValue, **kw):
    _refuse_out(out, "numpy.clip")
    lo = a_min if a_min is not np._NoValue else min
    hi = a_max if a_max is not np._NoValue else max
    lo = None if lo is np._NoValue else lo
    hi = None if hi is np._NoValue else hi
    if lo is None and hi is None:
        raise UnsupportedFunctionError("numpy.clip: give a lower or an upper bound")
    if lo is None:
        return _gc("minimum", "numpy.clip")(a, hi)
    if hi is None:
        return _gc("maximum", "numpy.clip")(a, lo)
    return _gc("clip", "numpy.clip")(a, lo, hi)


@implements(np.nan_to_num)
def _nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None):
    _refuse(copy is not True, "numpy.nan_to_num", "copy=False (graph nodes are never changed in place)")
    return _gc("nan_to_num", "numpy.nan_to_num")(x, nan=nan, posinf=posinf, neginf=neginf)


@implements(np.pad)
def _pad(array, pad_width, mode="constant", **kwargs):
    _refuse(mode != "constant", "numpy.pad", f"mode={mode!r} (only 'constant')")
    value = kwargs.pop("constant_values", 0)
    _refuse(bool(kwargs), "numpy.pad", f"keyword(s) {', '.join(kwargs)}")
    _refuse(np.ndim(value) != 0, "numpy.pad", "per-axis constant_values")
    return _gc("pad", "numpy.pad")(array, pad_width, value=value)


@implements(np.flip)
def _flip(m, axis=None):
    axes = range(m.ndim) if axis is None else [axis] if isinstance(axis, (int, np.integer)) else axis
    for ax in axes:  # one axis at a time: gc.flip(x, axis) takes an int
        m = _gc("flip", "numpy.flip")(m, int(ax))
    return m


@implements(np.fliplr)
def _fliplr(m):
    return _gc("flip", "numpy.fliplr")(m, 1)


@implements(np.flipud)
def _flipud(m):
    return _gc("flip", "numpy.flipud")(m, 0)


@implements(np.roll)
def _roll(a, shift, axis=None):
    if axis is None:  # NumPy: roll the flattened array, then restore the shape
        shape = _static(a, "numpy.roll")
        return _gc("reshape", "numpy.roll")(_gc("roll", "numpy.roll")(_flat(a), shift, 0), shape)
    if isinstance(axis, (int, np.integer)):
        return _gc("roll", "numpy.roll")(a, shift, int(axis))
    shifts = np.broadcast_to(shift, (len(axis),))
    for s, ax in zip(shifts, axis):  # one axis at a time
        a = _gc("roll", "numpy.roll")(a, int(s), int(ax))
    return a


@implements(np.tile)
def _tile(A, reps):
    return _gc("tile", "numpy.tile")(A, reps)


@implements(np.repeat)
def _repeat(a, repeats, axis=None):
    _refuse(not isinstance(repeats, (int, np.integer)), "numpy.repeat", "per-element repeat counts")
    if axis is None:
        return _gc("repeat", "numpy.repeat")(_flat(a), int(repeats), 0)
    return _gc("repeat", "numpy.repeat")(a, int(repeats), axis)


@implements(np.diagonal)
def _diagonal(a, offset=0, axis1=0, axis2=1):
    if a.ndim < 2:
        raise ShapeError(f"numpy.diagonal needs at least 2 dimensions, {a.name!r} has shape {fmt_shape(a.shape)}")
    return _gc("diagonal", "numpy.diagonal")(a, int(offset), axis1, axis2)


def _on_diagonal(v: Node, k: int, fname: str) -> Node:
    """The square matrix of side n + |k| with 1-D v on its k-th diagonal and zeros elsewhere: where(mask, v, 0)
    with v padded to the side and laid along the rows (k >= 0: row i holds v[i]) or the columns (k < 0)."""
    (n,) = _static(v, fname)
    side = n + abs(k)
    mask = v.graph.constant(np.eye(side, k=k, dtype=bool))
    along = _gc("pad", fname)(v, (0, abs(k))) if k else v
    along = _gc("expand_dims", fname)(along, 1 if k > 0 else 0)
    return _gc("where", fname)(mask, along, 0)  # exact: no 0 * v, so inf and NaN stay on the diagonal only


@implements(np.diag)
def _diag(v, k=0):
    k = int(k)
    if v.ndim == 2:
        return _gc("diagonal", "numpy.diag")(v, k)
    if v.ndim != 1:
        raise ShapeError(f"numpy.diag takes a 1-D or 2-D input, {v.name!r} has shape {fmt_shape(v.shape)}")
    return _on_diagonal(v, k, "numpy.diag")


@implements(np.diagflat)
def _diagflat(v, k=0):
    return _on_diagonal(_flat(v) if v.ndim != 1 else v, int(k), "numpy.diagflat")


def _tri(fname, upper):
    def impl(m, k=0):
        rows, cols = _static(m, fname, dims=(-2, -1))
        mask = np.triu(np.ones((rows, cols), bool), k) if upper else np.tril(np.ones((rows, cols), bool), k)
        return _gc("where", fname)(m.graph.constant(mask), m, 0)  # where(mask, m, 0): exact

    return impl


implements(np.triu)(_tri("numpy.triu", True))
implements(np.tril)(_tri("numpy.tril", False))


def _filled(a, value, dtype, fname):
    from .ops import elementwise as E, shape as S

    dt = np.dtype(dtype) if dtype is not None else a.dtype
    if all(d is not None for d in a.shape):
        c = a.graph.constant(np.array(value, dtype=dt))
        return S.broadcast_to(c, a.shape) if a.shape else E.identity(c)
    z = S.zeros_like(a if dt == a.dtype else E.astype(a, dt))
    return z if value == 0 else E.add(z, np.array(value, dtype=dt))


@implements(np.full_like)
def _full_like(a, fill_value, dtype=None, order="K", subok=True, shape=None, **kw):
    _refuse(shape is not None, "numpy.full_like", "shape=")
    return _filled(a, fill_value, dtype, "numpy.full_like")


@implements(np.zeros_like)
def _zeros_like(a, dtype=None, order="K", subok=True, shape=None, **kw):
    _refuse(shape is not None, "numpy.zeros_like", "shape=")
    return _filled(a, 0, dtype, "numpy.zeros_like")


@implements(np.ones_like)
def _ones_like(a, dtype=None, order="K", subok=True, shape=None, **kw):
    _refuse(shape is not None, "numpy.ones_like", "shape=")
    return _filled(a, 1, dtype, "numpy.ones_like")


@implements(np.copy)
def _copy(a, order="K", subok=False):
    from .ops import elementwise as E

    return E.identity(a)


@implements(np.round, np.around)
def _round(a, decimals=0, out=None):
    _refuse_out(out, "numpy.round")
    _refuse(decimals != 0, "numpy.round", "decimals != 0")
    return _gc("round", "numpy.round")(a)


@implements(np.diff)
def _diff(a, n=1, axis=-1, prepend=np._NoValue, append=np._NoValue):
    _refuse(prepend is not np._NoValue or append is not np._NoValue, "numpy.diff", "prepend=/append=")
    from .ops import elementwise as E, shape as S

    ax = int(axis) % a.ndim
    for _ in range(int(n)):  # x[1:] - x[:-1] along the axis
        head = (slice(None),) * ax
        a = E.subtract(S.getitem(a, head + (slice(1, None),)), S.getitem(a, head + (slice(None, -1),)))
    return a


@implements(np.take)
def _take(a, indices, axis=None, out=None, mode="raise"):
    _refuse_out(out, "numpy.take")
    _refuse(mode != "raise", "numpy.take", f"mode={mode!r}")
    if axis is None:
        return _gc("take", "numpy.take")(_flat(a), indices, 0)
    return _gc("take", "numpy.take")(a, indices, axis)


@implements(np.take_along_axis)
def _take_along_axis(arr, indices, axis):
    return _gc("take_along_axis", "numpy.take_along_axis")(arr, indices, axis)


# linear algebra ---------------------------------------------------------------------------------

implements(np.linalg.solve)(lambda a, b: _gc("linalg.solve", "numpy.linalg.solve")(a, b))
implements(np.linalg.inv)(lambda a: _gc("linalg.inv", "numpy.linalg.inv")(a))
implements(np.linalg.det)(lambda a: _gc("linalg.det", "numpy.linalg.det")(a))


@implements(np.linalg.cholesky)
def _cholesky(a, /, *, upper=False):
    f = _gc("linalg.cholesky", "numpy.linalg.cholesky")
    return f(a, upper=True) if upper else f(a)


@implements(np.linalg.slogdet)
def _slogdet(a):
    return _gc("linalg.slogdet", "numpy.linalg.slogdet")(a)  # (sign, logabsdet), as NumPy's result


@implements(np.linalg.eigh)
def _eigh(a, UPLO="L"):
    _refuse(UPLO != "L", "numpy.linalg.eigh", "UPLO='U'")
    return _gc("linalg.eigh", "numpy.linalg.eigh")(a)  # (eigenvalues, eigenvectors)


@implements(np.linalg.eigvalsh)
def _eigvalsh(a, UPLO="L"):
    _refuse(UPLO != "L", "numpy.linalg.eigvalsh", "UPLO='U'")
    return _gc("linalg.eigh", "numpy.linalg.eigvalsh")(a)[0]


@implements(np.linalg.svdvals)
def _svdvals(x, /):
    return _gc("linalg.svdvals", "numpy.linalg.svdvals")(x)


@implements(np.linalg.svd)
def _svd(a, full_matrices=True, compute_uv=True, hermitian=False):
    _refuse(
        compute_uv,
        "numpy.linalg.svd",
        "compute_uv=True (the singular vectors; singular values only: compute_uv=False or numpy.linalg.svdvals)",
    )
    _refuse(hermitian, "numpy.linalg.svd", "hermitian=True")
    return _gc("linalg.svdvals", "numpy.linalg.svd")(a)


@implements(np.linalg.norm)
def _norm(x, ord=None, axis=None, keepdims=False):
    y = _gc("linalg.norm", "numpy.linalg.norm")(x, ord=ord, axis=axis)
    return _keep(y, x, axis, keepdims)


# -- Node methods mirroring ndarray ---------------------------------------------------------------


def node_size(self: Node) -> int:
    """The number of elements (static shapes only)."""
    if any(d is None for d in self.shape):
        raise ShapeError(
            f"node {self.name!r} ({self.op.name}) has shape {fmt_shape(self.shape)}: its size is "
            "known only when the program runs"
        )
    return int(np.prod(self.shape, dtype=np.int64))


def _len(self: Node) -> int:
    if not self.shape:
        raise ShapeError(f"len() of node {self.name!r} ({self.op.name}): it is a scalar (shape ())")
    if self.shape[0] is None:
        raise ShapeError(
            f"len() of node {self.name!r} ({self.op.name}, shape {fmt_shape(self.shape)}): its "
            "first dimension is fixed only when the program runs"
        )
    return self.shape[0]


def _iter(self: Node):
    for k in range(_len(self)):
        yield self[k]


def _shape_args(args):
    return (
        tuple(args[0])
        if len(args) == 1 and isinstance(args[0], (tuple, list))
        else args[0]
        if len(args) == 1 and args[0] is None
        else tuple(args)
    )


def _method_reshape(self, *shape, order="C"):
    return _reshape(self, _shape_args(shape), order=order)


def _method_transpose(self, *axes):
    axes = _shape_args(axes) if axes else None
    return _gc("transpose", "ndarray.transpose")(self, axes or None)


def _method_astype(self, dtype, order="K", casting="unsafe", subok=True, copy=True):
    return _gc("astype", "ndarray.astype")(self, dtype)


def _method_dot(self, b, out=None):
    return _dot(self, b, out=out)


def _method_squeeze(self, axis=None):
    return _squeeze(self, axis)


def _method_clip(self, min=None, max=None, out=None, **kw):
    return _clip(self, min, max, out=out)


def _method_round(self, decimals=0, out=None):
    return _round(self, decimals, out)


def _method_repeat(self, repeats, axis=None):
    return _repeat(self, repeats, axis)


def _method_take(self, indices, axis=None, out=None, mode="raise"):
    return _take(self, indices, axis, out, mode)


def _method_cumsum(self, axis=None, dtype=None, out=None):
    return _cumsum(self, axis, dtype, out)


def _method_argmax(self, axis=None, out=None, *, keepdims=False):
    return _FUNCTIONS[np.argmax](self, axis, out, keepdims=keepdims)


def _method_argmin(self, axis=None, out=None, *, keepdims=False):
    return _FUNCTIONS[np.argmin](self, axis, out, keepdims=keepdims)


def _method_reduce(func):
    def method(self, *args, **kwargs):
        return _FUNCTIONS[func](self, *args, **kwargs)

    method.__name__ = func.__name__
    return method


def _not_a_value(what):
    def method(self, *a, **k):
        raise _no_value(self, what)

    return method


def _setitem(self, index, value):
    raise GraphCompilerError(
        f"node {self.name!r} ({self.op.name}, shape {fmt_shape(self.shape)}) cannot be assigned to: a node is "
        "an immutable value of the graph; build the new value instead (numpy.where with a mask, "
        "numpy.concatenate, or gc.scatter_add)"
    )


# -- indexing: basic as before, plus integer arrays and constant boolean masks ---------------------


def _is_array_index(it) -> bool:
    return isinstance(it, (np.ndarray, list, Node)) and not isinstance(it, (str, bytes))


def _basic_getitem(x: Node, index: Any) -> Node:
    """Basic indexing (ints, slices, None, ...) as the ops layer has it (Node.__getitem__ before install)."""
    from .ops.shape import getitem

    return getitem(x, index)


def _getitem(self: Node, index):
    """x[index]: what the ops layer's indexing takes, plus constant NumPy boolean masks (turned into integer
    indices with np.nonzero: the result's shape is static) and several integer arrays over consecutive axes
    (one flat index into those axes). A boolean *node* is refused: its selection's size is a run-time value."""
    items = index if isinstance(index, tuple) else (index,)
    if any(isinstance(it, Deferred) for it in items):  # x[x == 0]: the comparison's node (refused below)
        items = tuple(it.node() if isinstance(it, Deferred) else it for it in items)
        index = items if isinstance(index, tuple) else items[0]
    if not any(_is_array_index(it) for it in items):
        return _basic_getitem(self, index)
    fname = f"indexing {self.name!r}"
    _refuse_boolean_nodes(items, fname)
    expanded = _expand_masks(self, items, fname)
    taken = sum(it is not None and it is not Ellipsis for it in expanded)  # axes the items index
    if taken > self.ndim:
        raise ShapeError(
            f"{fname}: too many indices ({taken}) for a value of rank {self.ndim}, shape {fmt_shape(self.shape)}"
        )
    pos = [k for k, it in enumerate(expanded) if _is_array_index(it)]
    others_full = all(isinstance(it, slice) and it == slice(None) for k, it in enumerate(expanded) if k not in pos)
    if (
        len(pos) > 1
        and others_full
        and pos == list(range(pos[0], pos[-1] + 1))
        and not any(isinstance(expanded[k], Node) for k in pos)
    ):
        return _index_consecutive_arrays(self, expanded, pos, fname)
    return _basic_getitem(self, tuple(expanded) if len(expanded) > 1 else expanded[0])


def _refuse_boolean_nodes(items: tuple, fname: str) -> None:
    """A boolean node as an index selects a number of elements known only at run time: refused."""
    for it in items:
        if isinstance(it, Node) and it.dtype == bool:
            raise ShapeError(
                f"{fname} with the boolean node {it.name!r} ({it.op.name}, shape {fmt_shape(it.shape)}): the "
                "number of selected elements depends on run-time values, so the result has no static shape; "
                "use numpy.where(mask, x, 0) (and a sum), or a constant NumPy boolean mask"
            )


def _expand_masks(x: Node, items: tuple, fname: str) -> list:
    """The index items with each constant boolean mask replaced by its integer indices (np.nonzero, one array
    per masked axis) and lists made arrays."""
    expanded: list = []
    for it in items:
        if isinstance(it, (np.ndarray, list)) and np.asarray(it).dtype == bool:
            mask = np.asarray(it)  # a constant mask: its selection is known now
            dims = x.shape[len(expanded) : len(expanded) + mask.ndim]
            if any(d is not None and d != m for d, m in zip(dims, mask.shape)):
                raise ShapeError(
                    f"{fname}: the boolean mask of shape {fmt_shape(mask.shape)} does not match "
                    f"the indexed dimensions {fmt_shape(dims)} of shape {fmt_shape(x.shape)}"
                )
            expanded.extend(np.nonzero(mask))
        elif isinstance(it, list):
            expanded.append(np.asarray(it))
        else:
            expanded.append(it)
    return expanded


def _index_consecutive_arrays(x: Node, expanded: list, pos: list[int], fname: str) -> Node:
    """Several constant integer arrays over consecutive axes (at positions `pos`, every other item `:`): those
    axes reshaped into one, indexed with one flat index."""
    axis, arrays = pos[0], [np.asarray(expanded[k]) for k in pos]
    dims = _static(x, fname, dims=range(axis, axis + len(arrays)))
    for a, d in zip(arrays, dims):
        if a.dtype.kind not in "iu" or (a.size and (a.max() >= d or a.min() < -d)):
            raise ShapeError(f"{fname}: index array {a!r} does not index an axis of size {d}")
    arrays = [np.where(a < 0, a + d, a) for a, d in zip(arrays, dims)]
    flat = np.ravel_multi_index(tuple(np.broadcast_arrays(*arrays)), dims).astype(np.int64)
    shape = tuple(x.shape[:axis]) + (int(np.prod(dims)),) + tuple(x.shape[axis + len(arrays) :])
    merged = _gc("reshape", fname)(x, tuple(-1 if d is None else d for d in shape))
    rest = expanded[pos[-1] + 1 :]
    return _basic_getitem(merged, tuple(expanded[:axis]) + (flat,) + tuple(rest))


def _array(self, dtype=None, copy=None):
    err = _no_value(self, "numpy.asarray / numpy.array")
    raise type(err)(
        f"{err}. numpy.array and numpy.asarray always return a NumPy array, so given a list that holds nodes "
        "they cannot build a node: write numpy.stack([a, b]) for np.array([a, b]) (numpy.concatenate for "
        "pieces of one axis), or np.array([a, b], like=a), which NumPy hands to the node"
    )


def install() -> None:
    """Install NumPy's protocols and the ndarray-like methods on Node (done once, at import)."""
    _UFUNCS.update(_ufunc_table())
    if getattr(Node, "_numpy_protocols", False):
        return
    methods: dict[str, Any] = dict(
        __array_ufunc__=array_ufunc,
        __array_function__=array_function,
        __array__=_array,
        __array_priority__=1000,
        __float__=_not_a_value("float()"),
        __int__=_not_a_value("int()"),
        __len__=_len,
        __iter__=_iter,
        __getitem__=_getitem,
        __setitem__=_setitem,
        __pos__=lambda self: self,
        __mod__=lambda self, other: _gc("mod", "%")(self, other),
        __rmod__=lambda self, other: _gc("mod", "%")(other, self),
        size=property(node_size),
        reshape=_method_reshape,
        transpose=_method_transpose,
        astype=_method_astype,
        dot=_method_dot,
        ravel=_flat,
        flatten=_flat,
        squeeze=_method_squeeze,
        clip=_method_clip,
        round=_method_round,
        repeat=_method_repeat,
        take=_method_take,
        cumsum=_method_cumsum,
        argmax=_method_argmax,
        argmin=_method_argmin,
        swapaxes=_swapaxes,
        diagonal=lambda self, offset=0, axis1=0, axis2=1: _diagonal(self, offset, axis1, axis2),
        trace=lambda self, offset=0, axis1=0, axis2=1, dtype=None, out=None: _trace(
            self, offset, axis1, axis2, dtype, out
        ),
    )
    for f in (np.sum, np.mean, np.prod, np.max, np.min, np.var, np.std):  # ndarray's argument order
        methods[f.__name__] = _method_reduce(f)
    methods["_numpy_protocols"] = True
    install_on(Node, **methods)


install()
