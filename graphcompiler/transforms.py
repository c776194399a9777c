"""Function transforms: trace a Python (or plain NumPy) function into a graph, compile it per signature, and
build forward-mode and whole-derivative graphs (jvp, jacobian, hessian) from the reverse-mode build_grad."""

from __future__ import annotations

import functools
import inspect
import random
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence, overload

import numpy as np

from .errors import FrozenRandomnessWarning, GraphCompilerError, ShapeError, fmt_shape
from .graph import Graph, Node, fit_name
from .ops.base import Deferred
from .pytree import LEAF, NONE, PyTreeDef, leaf_paths, tree_flatten, tree_unflatten

__all__ = ["Spec", "make_graph", "function", "grad", "value_and_grad", "jvp", "jacobian", "hessian"]


@dataclass(frozen=True)
class Spec:
    """The shape and dtype of one argument of a traced function; None dims are fixed only when it runs."""

    shape: tuple
    dtype: Any = "float64"

    def __post_init__(self):
        shape = (self.shape,) if isinstance(self.shape, (int, np.integer)) or self.shape is None else self.shape
        object.__setattr__(self, "shape", tuple(None if d is None else int(d) for d in shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))


def _spec(a: Any, where: str = "an argument") -> Spec:
    if isinstance(a, Spec):
        return a
    if isinstance(a, Node):
        raise GraphCompilerError(f"make_graph takes specs or example arrays, not the node {a.name!r} ({where})")
    arr = _leaf_array(a, where, "make_graph")
    return Spec(arr.shape, arr.dtype)


def _leaf_array(a: Any, where: str, who: str) -> np.ndarray:
    """A numeric array for the leaf `a` at path `where`, or a GraphCompilerError naming the path."""
    arr = _numeric(a)
    if arr is None:
        raise _leaf_error(a, where, who)
    return arr


def _numeric(a: Any) -> np.ndarray | None:
    """`a` as a numeric array (bool, integer, float), or None when it is not one (a node, a string, an object)."""
    if isinstance(a, Node):
        return None
    try:
        arr = np.asarray(a)
    except (TypeError, ValueError):
        return None
    return arr if arr.dtype.kind in "biuf" else None


def _leaf_error(a: Any, where: str, who: str) -> GraphCompilerError:
    try:
        what = f" (dtype {np.asarray(a).dtype})"
    except (TypeError, ValueError) as e:
        what = f" ({e})"
    return GraphCompilerError(
        f"{who}: the argument {where} is {type(a).__name__}{what}; an argument is a numeric array, a number, "
        "a gc.Spec(shape, dtype), or nested lists, tuples and dicts of them (None: no value)"
    )


def _arg_names(fn: Callable, n: int) -> list[str]:
    try:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params[:n]]
    names += [f"arg{k}" for k in range(len(names), n)]
    return names


def _flatten_args(args: Sequence) -> tuple[list, tuple[PyTreeDef, ...]]:
    """The leaves of all arguments in order, and each argument's structure."""
    leaves: list = []
    trees = []
    for a in args:
        arg_leaves, tree = tree_flatten(a)
        leaves += arg_leaves
        trees.append(tree)
    return leaves, tuple(trees)


def _arg_paths(trees: Sequence[PyTreeDef], names: list[str]) -> list[str]:
    """Each argument leaf's path, as Python indexes it (`params['layer1'][0]`)."""
    return [path for tree, name in zip(trees, names) for path in leaf_paths(tree, name)]


def _output_nodes(graph: Graph, leaves: list, paths: list[str]) -> list[Node]:
    """The leaves fn returned as nodes of graph: a number or array becomes a constant."""
    outs = []
    for r, path in zip(leaves, paths):
        if isinstance(r, Deferred):  # `x == y` returned: its elementwise node
            r = r.node()
        if isinstance(r, Node):
            if r.graph is not graph:
                raise GraphCompilerError(
                    f"output {path} ({r.name!r}) belongs to graph {r.graph.name!r}, not to the traced function's graph"
                )
            outs.append(r)
        else:
            try:
                outs.append(graph.constant(np.asarray(r)))  # an output that does not depend on the inputs
            except (GraphCompilerError, TypeError, ValueError):
                raise GraphCompilerError(
                    f"output {path} of the traced function is {type(r).__name__}; return nodes, "
                    "arrays or numbers (or nested tuples, lists and dicts of them)"
                ) from None
    return outs


def make_graph(fn: Callable, *specs, name: str | None = None) -> tuple[Graph, list[Node], list[Node]]:
    """Call fn with one input node per spec and return (graph, inputs, outputs).

    A spec is an example array (its shape and dtype are used) or a `gc.Spec(shape, dtype)` (None dims
    allowed), or nested lists, tuples and dicts of them (a pytree: fn gets the same structure of nodes).
    fn may be plain NumPy code: NumPy functions called on nodes build graph nodes (numpy_api).
    `inputs` and `outputs` are flat lists, one node per leaf (in tree_flatten's order) of the arguments and
    of what fn returned (a tuple or list gives several).
    """
    names = _arg_names(fn, len(specs))
    leaves, trees = _flatten_args(specs)
    paths = _arg_paths(trees, names)
    graph, inputs, outputs, _ = _trace(fn, [_spec(s, p) for s, p in zip(leaves, paths)], trees, names)
    if name is not None:
        graph.name = name
    return graph, inputs, outputs


# -- compiled functions, cached per signature ----------------------------------------------------------


class _Traced:
    """One signature's graph, program, and the structure its outputs are returned in."""

    def __init__(self, graph: Graph, inputs: list[Node], outputs: list[Node], program, out_tree: PyTreeDef):
        self.graph, self.inputs, self.outputs, self.program = graph, inputs, outputs, program
        self.out_tree = out_tree


class Function:
    """A Python function traced and compiled once per signature (the arguments' pytree structures and their
    leaves' shapes and dtypes), then run."""

    def __init__(self, fn: Callable, build: Callable, what: str):
        self.fn = fn
        self._build = build
        self._what = what
        self._cache: dict[tuple, _Traced] = {}
        self._last: _Traced | None = None
        functools.update_wrapper(self, fn)

    def _traced(self, args) -> tuple[_Traced, list[np.ndarray]]:
        leaves, trees = _flatten_args(args)
        arrays = []
        for k, a in enumerate(leaves):
            arr = a if type(a) is np.ndarray and a.dtype.kind in "biuf" else _numeric(a)  # ndarrays checked fast
            if arr is None:
                raise self._bad_leaf(a, _arg_paths(trees, _arg_names(self.fn, len(args)))[k])
            arrays.append(arr)
        sig = (trees, tuple((arr.shape, arr.dtype) for arr in arrays))
        traced = self._cache.get(sig)
        if traced is None:
            names = _arg_names(self.fn, len(args))
            specs = [Spec(arr.shape, arr.dtype) for arr in arrays]
            traced = self._build(self.fn, specs, trees, names)
            _warn_if_frozen_randomness(self, traced.graph, specs, trees, names)
            self._cache[sig] = traced
        self._last = traced
        return traced, arrays

    def _bad_leaf(self, a: Any, path: str) -> GraphCompilerError:
        who = f"{self._what}({self.fn.__name__})"
        if isinstance(a, Node):
            return GraphCompilerError(
                f"{who}: argument {path} is the node {a.name!r}; a compiled function takes NumPy arrays (call fn "
                "itself on nodes)"
            )
        return _leaf_error(a, path, who)

    def __call__(self, *args, **kwargs):
        if kwargs:
            raise GraphCompilerError(
                f"{self._what}({self.fn.__name__}): pass arguments by position (got {', '.join(kwargs)} by keyword)"
            )
        traced, arrays = self._traced(args)
        values = traced.program.run(dict(zip(traced.inputs, arrays))) if traced.program is not None else []
        return tree_unflatten(traced.out_tree, values)

    @property
    def graph(self) -> Graph:
        """The graph of the last signature called."""
        return self._require().graph

    @property
    def program(self):
        """The compiled program of the last signature called."""
        return self._require().program

    @property
    def signatures(self) -> list[tuple]:
        """The signatures compiled so far: (the arguments' pytree structures, the leaves' (shape, dtype))."""
        return list(self._cache)

    def _require(self) -> _Traced:
        if self._last is None:
            raise GraphCompilerError(
                f"{self._what}({self.fn.__name__}) has not been called yet: call it once so "
                "it is traced for a signature"
            )
        return self._last


def _warn_if_frozen_randomness(f: Function, graph: Graph, specs: list[Spec], trees, names) -> None:
    """Trace fn a second time (once per signature, on its first call) and compare the two traces' constants:
    a constant that differs was drawn from host randomness (np.random.*, a RandomState, default_rng()) or
    other changing state, and is frozen into every later call. Warn (FrozenRandomnessWarning) naming it.

    NumPy's global RNG and Python's `random` are restored after the second trace, so the first call advances
    them as one trace does; a RandomState or Generator object the function closes over is drawn from twice.
    A function with side effects (printing, appending to a list) has them twice on a signature's first call.
    """
    states = np.random.get_state(), random.getstate()
    try:
        again, _, _, _ = _trace(f.fn, specs, trees, names)
    except Exception as e:  # it traced once, so it depends on changing state: say so, keep the first trace
        warnings.warn(
            f"{f._what}({f.fn.__name__}): tracing it a second time (to check for host randomness) raised "
            f"{type(e).__name__}: {e}; the graph of its first trace is used for every call with these "
            "shapes. A function traced by gc should compute the same graph each time it is called",
            FrozenRandomnessWarning,
            stacklevel=4,
        )
        return
    finally:
        np.random.set_state(states[0])
        random.setstate(states[1])
    first = graph.nodes[: len(again)]
    if len(first) < len(again) or any(a.op.name != b.op.name or a.shape != b.shape for a, b in zip(first, again.nodes)):
        warnings.warn(
            f"{f._what}({f.fn.__name__}): traced twice, it built two different graphs; it depends on state that "
            "changes between calls (host randomness, a counter), and the first trace is frozen into every call "
            "with these shapes. Pass what changes as an argument (random numbers: gc.random with a key argument)",
            FrozenRandomnessWarning,
            stacklevel=4,
        )
        return
    for a, b in zip(first, again.nodes):
        if a.op.name == "constant" and not _same_value(graph.stored_value(a), again.stored_value(b)):
            readers = [c for c in graph.consumers(a) if c.index < len(again)]
            read = f", read by {readers[0].name!r} ({readers[0].op.name})" if readers else ""
            warnings.warn(
                f"{f._what}({f.fn.__name__}): the constant {a.name!r} (shape {fmt_shape(a.shape)}, {a.dtype}"
                f"{read}) took different values in two traces: it was drawn from host randomness (np.random, "
                "a RandomState, np.random.default_rng()) or other changing state while tracing, so the values "
                "of the first trace are frozen into every call with these shapes. For random numbers that "
                "change per call, pass a key as an argument and draw with gc.random (gc.random.normal(key, "
                "shape), gc.random.split)",
                FrozenRandomnessWarning,
                stacklevel=4,
            )
            return


def _same_value(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:  # a constant always holds its value: never met
        return a is b
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def _trace(fn, specs, trees, names) -> tuple[Graph, list[Node], list[Node], PyTreeDef]:
    """fn called on input nodes (one per spec, arranged in the arguments' structures): (graph, the flat input
    nodes, the flat output nodes, the structure fn returned them in)."""
    graph = Graph(getattr(fn, "__name__", None) or "fn")
    inputs: list[Node] = []
    args = []
    for tree, name in zip(trees, names):
        leaf_specs = specs[len(inputs) : len(inputs) + tree.num_leaves]
        nodes = [
            graph.input(graph.unique_name(fit_name(path)), s.shape, s.dtype)
            for path, s in zip(leaf_paths(tree, name), leaf_specs)
        ]
        inputs += nodes
        args.append(tree_unflatten(tree, nodes))
    leaves, out_tree = tree_flatten(fn(*args))
    outputs = _output_nodes(graph, leaves, leaf_paths(out_tree, ""))
    return graph, inputs, outputs, out_tree


def _build_plain(fn, specs, trees, names) -> _Traced:
    from .compiler import compile

    graph, inputs, outputs, out_tree = _trace(fn, specs, trees, names)
    return _Traced(graph, inputs, outputs, compile(outputs) if outputs else None, out_tree)


def function(fn: Callable) -> Function:
    """Trace fn and compile it once per signature (the arguments' pytree structures, their leaves' shapes and
    dtypes); calls return NumPy arrays in the structure fn returned (a tuple, list or dict of them, nested as
    it was). Arguments may be nested lists, tuples and dicts of arrays (None: no value), as JAX's pytrees.
    `f.graph` and `f.program` show the last signature's."""
    return Function(fn, _build_plain, "gc.function")


def _argnums(argnums, n: int, who: str) -> tuple[tuple[int, ...], bool]:
    single = isinstance(argnums, (int, np.integer))
    nums = (int(argnums),) if single else tuple(int(a) for a in argnums)
    for a in nums:
        if not -n <= a < n:
            raise GraphCompilerError(f"{who}: argnums {argnums!r} is out of range for a function of {n} arguments")
    return tuple(a % n for a in nums), single


def _grad_builder(argnums, with_value: bool, has_aux: bool, who: str):
    def build(fn, specs, trees, names):
        from .autodiff import build_grad
        from .compiler import compile

        graph, inputs, outs, out_tree = _trace(fn, specs, trees, names)
        value_outs, aux_outs, aux_tree = outs, [], NONE
        if has_aux:
            if out_tree.kind not in ("tuple", "list") or len(out_tree.children) != 2:
                raise GraphCompilerError(
                    f"{who}({fn.__name__}, has_aux=True) needs a function returning a pair (value, aux); it "
                    f"returned the structure {out_tree!r}"
                )
            n_value = out_tree.children[0].num_leaves
            value_outs, aux_outs, aux_tree = outs[:n_value], outs[n_value:], out_tree.children[1]
        if len(value_outs) != 1 or value_outs[0].shape != ():
            raise ShapeError(
                f"{who}({fn.__name__}) needs a function returning one scalar; it returned "
                f"{', '.join(fmt_shape(o.shape) for o in value_outs) or 'no value'}; reduce it (np.sum, np.mean)"
            )
        nums, single = _argnums(argnums, len(trees), who)
        starts = np.cumsum([0] + [t.num_leaves for t in trees]).tolist()
        targets = [x for a in nums for x in inputs[starts[a] : starts[a + 1]]]
        table = build_grad(value_outs[0], list(dict.fromkeys(targets)), disconnected="zero") if targets else {}
        grads = [table[t] for t in targets]
        grad_tree = trees[nums[0]] if single else PyTreeDef("tuple", tuple(trees[a] for a in nums))
        if with_value:  # ((value, aux), grads) or (value, grads)
            value_tree = PyTreeDef("tuple", (LEAF, aux_tree)) if has_aux else LEAF
            outputs, tree = [value_outs[0], *aux_outs, *grads], PyTreeDef("tuple", (value_tree, grad_tree))
        elif has_aux:  # (grads, aux)
            outputs, tree = [*grads, *aux_outs], PyTreeDef("tuple", (grad_tree, aux_tree))
        else:
            outputs, tree = grads, grad_tree
        return _Traced(graph, inputs, outputs, compile(outputs) if outputs else None, tree)

    return build


def grad(fn: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False) -> Function:
    """A callable returning d fn / d args[argnums] for a scalar fn, built with build_grad and compiled once per
    signature. An argument may be a pytree (nested lists, tuples and dicts of arrays; None: no value): its
    gradient has its structure; a tuple of argnums gives a tuple of them. Arguments fn does not use get zeros
    (as in JAX). has_aux=True: fn returns (value, aux) and the callable (gradient, aux)."""
    return Function(fn, _grad_builder(argnums, False, has_aux, "gc.grad"), "gc.grad")


def value_and_grad(fn: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False) -> Function:
    """Like grad, returning (fn(*args), gradient) from one program; with has_aux=True, ((value, aux), gradient)."""
    return Function(fn, _grad_builder(argnums, True, has_aux, "gc.value_and_grad"), "gc.value_and_grad")


# -- forward mode and whole derivatives, as graph nodes ----------------------------------------------


def _as_list(x) -> tuple[list, bool]:
    return ([x], True) if isinstance(x, Node) else (list(x), False)


def jvp(outputs: Node | Sequence[Node], inputs: Node | Sequence[Node], tangents: Node | Sequence[Node]) -> list[Node]:
    """Jacobian-vector products as graph nodes: [sum_j dy/dx_j . v_j for each output y].

    Derived from the reverse-mode rules by the transpose trick, exact because every bprop is linear in its
    cotangent: for a cotangent node U of y's shape, u_j = build_grad(y, x_j, seed=U) is the VJP U^T J_j, a
    linear function of U; then d/dU <u, v> = sum_j J_j v_j, the JVP, is build_grad(sum_j <u_j, v_j>, U).
    Because the VJP is linear in U, that derivative does not depend on U's value; U is taken as
    zeros_like(y) (a node, not a placeholder), so where the result still reads U (for its shape, or through a
    term multiplied by zero) nothing has to be fed and the value is right. The graph is about twice the size of
    a reverse pass over y (a VJP, then its derivative), so forward-over-reverse costs reverse-over-reverse
    plus one more sweep (benchmarks/hvp.py measures it). Several outputs share one VJP: with a cotangent U_k
    per output, u = build_grad(sum_k <y_k, U_k>, x) and build_grad(<u, v>, [U_1, ...]) gives every J_k v.
    """
    from .autodiff import build_grad
    from .ops import elementwise as E, shape as S

    ys, _ = _as_list(outputs)
    xs, _ = _as_list(inputs)
    vs, _ = _as_list(tangents)
    _check_jvp_args(ys, xs, vs)
    graph = ys[0].graph
    Us = [S.zeros_like(y, name=graph.unique_name(f"jvp_cotangent/{y.name}")) for y in ys]
    if len(ys) == 1:  # u = U^T J: one VJP seeded with U
        vjp = build_grad(ys[0], xs, seed=Us[0], disconnected="zero")
    else:  # u = sum_k U_k^T J_k: one VJP for all outputs
        vjp = build_grad(_inner(zip(ys, Us)), xs, disconnected="zero")
    inner = _inner((vjp[x], v) for x, v in zip(xs, vs))  # <u, v>, linear in U
    table = build_grad(inner, Us, disconnected="zero")  # d<u, v>/dU_k = J_k v
    out = [E.identity(table[U], name=graph.unique_name(f"jvp({y.name})")) for y, U in zip(ys, Us)]
    _check_linear(out, Us)
    return out


def _check_jvp_args(ys: list, xs: list, vs: list) -> None:
    """One tangent node per input, of its shape; at least one input and one output; floating outputs only."""
    if len(xs) != len(vs):
        raise GraphCompilerError(f"jvp: {len(xs)} inputs but {len(vs)} tangents; give one tangent per input")
    if not xs or not ys:
        raise GraphCompilerError(f"jvp: got {len(ys)} outputs and {len(xs)} inputs; give at least one of each")
    for x, v in zip(xs, vs):
        if not isinstance(v, Node):
            raise GraphCompilerError(
                f"jvp: the tangent for {x.name!r} must be a node of its graph (a constant, "
                f"an input), not {type(v).__name__}"
            )
        if len(v.shape) != len(x.shape) or any(
            a is not None and b is not None and a != b for a, b in zip(v.shape, x.shape)
        ):
            raise ShapeError(
                f"jvp: the tangent {v.name!r} has shape {fmt_shape(v.shape)} but its input "
                f"{x.name!r} ({x.op.name}) has shape {fmt_shape(x.shape)}; they must match"
            )
    for y in ys:
        if y.dtype.kind != "f":
            raise GraphCompilerError(
                f"jvp: output {y.name!r} ({y.op.name}) has dtype {y.dtype}; only floating "
                "outputs have a Jacobian-vector product"
            )


def _inner(pairs: Iterable[tuple[Node, Node]]) -> Node:
    """sum_k <a_k, b_k> over the (a_k, b_k) pairs (at least one), as graph nodes."""
    from .ops import elementwise as E, reduce as R

    total = None
    for a, b in pairs:
        term = R.sum(E.multiply(a, b))
        total = term if total is None else E.add(total, term)
    assert total is not None  # callers pass at least one pair
    return total


def _check_linear(results: list[Node], Us: list[Node]) -> None:
    """The JVP must not read a cotangent stand-in's value (only, at most, its shape): a value read would mean
    some bprop is not linear in its cotangent, and the stand-in's zeros would then give a wrong number."""
    stand_ins = set(Us)
    seen: set[Node] = set()
    stack = list(results)
    while stack:
        n = stack.pop()
        for i, x in enumerate(n.inputs):
            if not n.op.reads_value(i) or x in seen:
                continue
            if x in stand_ins:
                raise GraphCompilerError(
                    f"internal error: the JVP built for {x.name!r} reads the cotangent's value through "
                    f"{n.op.name} {n.name!r}, so a bprop on the way is not linear in its cotangent; please report "
                    "this (build_grad of <gradient, v> gives the same product by reverse over reverse)"
                )
            seen.add(x)
            stack.append(x)


def _require_static(n: Node, who: str) -> None:
    if any(d is None for d in n.shape):
        raise ShapeError(
            f"{who} needs static shapes, but {n.name!r} ({n.op.name}) has shape "
            f"{fmt_shape(n.shape)}; trace with fixed sizes (gc.Spec((8, 4)) instead of (None, 4))"
        )


@overload
def jacobian(y: Node, x: Node) -> Node: ...
@overload
def jacobian(y: Node, x: Sequence[Node]) -> list[Node]: ...
def jacobian(y: Node, x: Node | Sequence[Node]) -> Node | list[Node]:
    """dy/dx as a graph node of shape y.shape + x.shape (a list for a list of x).

    Built row by row: one vector-Jacobian product per element of y, seeded with a one-hot constant, the rows
    concatenated (a Python loop of size(y) VJPs; the graph grows with size(y) times the reverse pass, which
    the compiler's common-subexpression merging shares where the rows repeat work). A batched seed would need
    every op to take an extra leading axis, which the graph's fixed shapes do not allow. Static shapes only.
    """
    from .autodiff import build_grad
    from .ops import shape as S

    xs, single = _as_list(x)
    _require_static(y, "jacobian")
    for t in xs:
        _require_static(t, "jacobian")
    m = int(np.prod(y.shape, dtype=np.int64))
    rows: dict[Node, list[Node]] = {t: [] for t in xs}
    for k in range(m):
        seed = np.zeros(m, y.dtype)
        seed[k] = 1
        g = build_grad(y, xs, seed=y.graph.constant(seed.reshape(y.shape)), disconnected="zero")
        for t in xs:
            rows[t].append(S.reshape(g[t], (1, -1)))
    out = []
    for t in xs:
        stacked = rows[t][0] if m == 1 else S.concatenate(rows[t], axis=0)
        out.append(
            S.reshape(
                stacked, tuple(y.shape) + tuple(t.shape), name=y.graph.unique_name(f"jacobian({y.name}, {t.name})")
            )
        )
    return out[0] if single else out


@overload
def hessian(J: Node, x: Node) -> Node: ...
@overload
def hessian(J: Node, x: Sequence[Node]) -> list[Node]: ...
def hessian(J: Node, x: Node | Sequence[Node]) -> Node | list[Node]:
    """d2J/dx2 as a graph node of shape x.shape + x.shape, for a scalar J: the jacobian of build_grad(J, x)
    (reverse over reverse, row by row; static shapes only). For a list of x, the list of diagonal blocks."""
    from .autodiff import build_grad

    xs, single = _as_list(x)
    if J.shape != ():
        raise ShapeError(f"hessian needs a scalar, but {J.name!r} ({J.op.name}) has shape {fmt_shape(J.shape)}")
    g = build_grad(J, xs, disconnected="zero")
    out = [jacobian(g[t], t) for t in xs]
    return out[0] if single else out
