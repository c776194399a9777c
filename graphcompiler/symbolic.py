"""Symbolic export: a node (a derivative included) as a SymPy expression, LaTeX, and a derivation.

Each op's SymPy rule lives in its block (`Op.sympy_fn`, or `Op.to_sympy(node, *terms)`); what those rules
share, the term algebra (a value as a `Term`: a scalar SymPy body over placeholders that stand for matrices;
matrix expressions only where an op needs one; undefined functions named after the op for ops with no
matrix-calculus form), is symbolic_terms.py. This module walks a graph with it.

Two forms: form="leaves" writes a node in terms of the graph's inputs, parameters and named constants;
form="textbook" keeps the nodes a user named (h, o) and the gradients of named nodes (dJ/do, dJ/dh) as
symbols, which gives the seeds' closed forms (dJ/dW2 = dJ/do h^T + lambda W2). to_sympy exports a gradient
node in the textbook form and any other node in its leaves unless form= says otherwise. `recurrence` exports
a scan (control/scan.py) as the equations its body runs, h_t = f(h_{t-1}, x_t).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Literal, Mapping

import numpy as np
import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

from .errors import GraphCompilerError, fmt_shape
from .graph import GraphMismatchError, Node
from .ops.base import elementwise_to_sympy
from .control.scan import Scan  # gc.recurrence reads a scan's body

# The term algebra the op rules use, re-exported: op blocks written `from ..symbolic import elementwise, sp`
# keep working (new blocks import from ..symbolic_terms, which does not load the export).
from .symbolic_terms import (
    _COMPOSE,
    _N,
    _PLACEHOLDERS,
    ElementwiseFunction,
    ElementwiseMap,
    OpFunction,  # noqa: F401
    OpMatrix,
    NoMatrixForm,
    Ones,
    TensorSymbol,
    Term,
    _as_scalar,
    _bound,
    _dim,
    _Latex,
    _mshape,
    apply_undefined,
    broadcast,
    count,
    elementwise,
    indicator,
    matmul,
    of_matrix,
    reduce_sum,
    reshape,
    sum_to,
    to_matrix,
    transpose,
    zeros,
)

__all__ = ["to_sympy", "to_latex", "derivation", "Derivation", "evaluate"]  # the rest serves the op rules

Form = Literal["leaves", "textbook"]


# -- leaves, kept nodes and the export walk -----------------------------------------------------


def is_auto_named(node: Node) -> bool:
    """True for a name the graph made up (f"{op}_{k}"), False for one a user gave (kept across save/load)."""
    return re.fullmatch(rf"{re.escape(node.op.name)}_\d+", node.name) is not None


def _gradient_parts(node: Node) -> tuple[str, Node] | None:
    """(cost name, node) for a gradient named d<cost>/d<node> by build_grad, else None."""
    if not node.is_gradient or not node.name.startswith("d"):
        return None
    graph = node.graph
    for m in re.finditer("/d", node.name):
        cost, rest = node.name[1 : m.start()], node.name[m.end() :]
        if cost not in graph:
            continue
        for cand in (rest, re.sub(r"_\d+$", "", rest)):
            if cand in graph and not graph[cand].is_gradient:
                return cost, graph[cand]
    return None


def _kept(node: Node) -> bool:
    """In textbook form: the nodes that stay symbols (named forward values, gradients of named values)."""
    if node.op.name in ("input", "parameter", "constant"):
        return False
    if not node.is_gradient:
        return not is_auto_named(node)
    parts = _gradient_parts(node)
    return parts is not None and (parts[1].op.name in ("input", "parameter") or not is_auto_named(parts[1]))


def symbol_of(node: Node):
    """The Symbol (scalar) or MatrixSymbol (array, 1-D as a column, None dims as n) that names node."""
    ms = _mshape(node.shape)
    if ms is None:
        return sp.Symbol(node.name, real=True)
    if node.ndim > 2:  # n x chw, knowing its shape (n, c, h, w)
        return TensorSymbol(node.name, *ms, tuple(_dim(d) for d in node.shape))  # type: ignore[call-arg]  # SymPy types MatrixSymbol(name, n, m)
    return sp.MatrixSymbol(node.name, *ms)


def _number(v):
    v = v.item() if isinstance(v, np.generic) else v
    if isinstance(v, (bool, np.bool_)):
        return sp.true if v else sp.false
    if float(v).is_integer():
        return sp.Integer(int(v))
    r = sp.Rational(float(v)).limit_denominator(1000)
    return r if float(r) == float(v) else sp.Float(float(v))


def _leaf_term(node: Node) -> Term:
    """A leaf's Term: unnamed constants as numbers (or a matrix of numbers), anything else as its symbol. A
    compiled program's folded constants live outside the graph: they stay symbols named after their node."""
    stored = node.graph.stored_value(node) if node.op.name == "constant" else None
    if stored is not None and (node.is_gradient or is_auto_named(node)):
        value = np.asarray(stored)
        if value.ndim == 0 or value.size and np.all(value == value.flat[0]):
            return Term(node.shape, _number(value.flat[0] if value.size else 0), {})
        mat = sp.ImmutableMatrix(value.reshape(value.shape[0], -1).tolist())  # (k,) k x 1; (n, c, h, w) n x chw
        return of_matrix(node.shape, mat)
    return of_matrix(node.shape, symbol_of(node))


MAX_SIZE = 100_000  # default max_size of to_sympy: expression-tree nodes of any one value
SHARE_SIZE = 200  # a value read more than once whose expression is bigger becomes a named intermediate
EXPAND_SIZE = 20_000  # ... and is written out again at the end if the whole expression stays this small


def _tree_size(e, memo: dict, weights: dict | None = None) -> int:
    """Nodes of e as a tree (what printing or a tree walk visits), computed over the DAG in linear time.

    memo holds the objects it measured, so an id is never reused while the export runs; `weights` gives
    the size a symbol stands for (an intermediate counts as its definition).
    """
    if weights:
        for sym, w in weights.items():
            memo.setdefault(id(sym), (sym, w))
    stack = [e]
    while stack:
        x = stack[-1]
        if id(x) in memo:
            stack.pop()
            continue
        args = getattr(x, "args", ())
        if not isinstance(args, tuple):
            args = ()
        todo = [a for a in args if id(a) not in memo]
        if todo:
            stack.extend(todo)
            continue
        memo[id(x)] = (x, 1 + sum(memo[id(a)][1] for a in args))
        stack.pop()
    return memo[id(e)][1]


def _term_size(t: Term, memo: dict) -> int:
    return _tree_size(t.body, memo) + sum(_tree_size(m, memo) for m in t.env.values())


def _expand_shared(out, shared: dict, intermediates: dict | None):
    """Write intermediates back into `out` when the whole stays under EXPAND_SIZE nodes (the promised
    form, in the leaves); else keep them as symbols and hand their definitions to `intermediates`."""
    memo: dict = {}
    weights: dict = {}
    for sym, d in shared.items():  # a definition reads only earlier ones
        weights[sym] = _tree_size(d, {}, weights)
    total = _tree_size(out, memo, weights) if isinstance(out, sp.Basic) else 0
    if total <= EXPAND_SIZE:
        for sym, d in reversed(list(shared.items())):
            out = out.xreplace({sym: d})
        return out
    if intermediates is not None:
        intermediates.update(shared)
    return out


def _export(root: Node, form: Form, max_size: int | None = None, intermediates: dict | None = None):
    if form not in ("leaves", "textbook"):
        raise GraphCompilerError(f"form must be 'leaves' or 'textbook', not {form!r}")
    if max_size is not None and (not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 1):
        raise GraphCompilerError(f"max_size must be a positive int (expression nodes), not {max_size!r}")
    _PLACEHOLDERS.clear()
    _COMPOSE.clear()
    size = MAX_SIZE if max_size is None else max_size
    shared: dict = {}  # intermediate symbol -> definition, in the order they were made
    try:
        if form == "textbook":
            for k in _kept_inputs(root):
                t = _terms(k, form, size, shared)
                free = [d for d in t.env if d in t.body.free_symbols] if t.ndim else []
                if len(free) == 1 and t.body != free[0]:
                    _COMPOSE[symbol_of(k)] = (t.body, free[0], t.env[free[0]])
        out = to_matrix(_terms(root, form, size, shared))
        if shared:
            out = _expand_shared(out, shared, intermediates)
        # SymPy folds 1_m 1_n^T into a plain OneMatrix; give it back the book's printing
        return (
            out.replace(lambda e: type(e) is sp.OneMatrix, lambda e: Ones(*e.shape))
            if isinstance(out, sp.Basic) and out.has(sp.OneMatrix)
            else out
        )
    finally:
        _COMPOSE.clear()


def _kept_inputs(root: Node) -> list[Node]:
    """The named forward values a textbook export of root reads (h, o, ...)."""
    out, seen, stack = [], {root}, [root]
    while stack:
        for x in stack.pop().inputs:
            if x in seen:
                continue
            seen.add(x)
            if _kept(x):
                if not x.is_gradient:
                    out.append(x)
            else:
                stack.append(x)
    return out


def _rule_fits(n: Node) -> bool:
    """An op's SymPy rule reads values of rank 2 or less, unless its op declares `sympy_any_rank` (its rule
    knows the n x chw form of rank > 2 values); an elementwise rule from `sympy_fn` always does."""
    if n.ndim <= 2 and all(x.ndim <= 2 for x in n.inputs):
        return True
    return bool(getattr(n.op, "sympy_any_rank", False)) or getattr(type(n.op), "to_sympy", None) is elementwise_to_sympy


def _inputs_first(root: Node, keep: Callable[[Node], bool]) -> list[Node]:
    """The nodes root reads (not past kept ones), each after its inputs: a depth-first post-order. Not the
    nodes' index order: a compiled program's stand-in nodes share the index of the graph node they replace."""
    order: list[Node] = []
    seen: set[Node] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        n, inputs_done = stack.pop()
        if inputs_done:
            order.append(n)
            continue
        if n in seen:
            continue
        seen.add(n)
        stack.append((n, True))
        if not keep(n):
            stack.extend((x, False) for x in reversed(n.inputs) if x not in seen)
    return order


def _terms(root: Node, form: Form, max_size: int = MAX_SIZE, intermediates: dict | None = None) -> Term:
    """The Term of root, built once per node, inputs first (a DAG walk, never a tree walk).

    A value read more than once whose expression has grown past SHARE_SIZE nodes is kept as a symbol
    named after its node (an intermediate; its definition goes into `intermediates` when given), so a
    residual net of L layers exports in O(L) instead of 2^L. An expression over `max_size` nodes raises.
    """
    keep = (lambda n: n is not root and _kept(n)) if form == "textbook" else (lambda n: False)
    need, stack = {root}, [root]
    readers: dict[Node, int] = {}
    while stack:
        n = stack.pop()
        if keep(n):
            continue
        for x in n.inputs:
            readers[x] = readers.get(x, 0) + 1
            if x not in need:
                need.add(x)
                stack.append(x)
    terms: dict[Node, Term] = {}
    memo: dict = {}
    for n in _inputs_first(root, keep):
        if keep(n):
            terms[n] = of_matrix(n.shape, symbol_of(n))
        elif n.is_leaf:
            terms[n] = _leaf_term(n)
        else:
            rule = getattr(n.op, "to_sympy", None)
            if rule is not None and not _rule_fits(n):
                rule = None  # a rank > 2 value its rule does not declare: an undefined function
            args = [terms[x] for x in n.inputs]
            try:
                try:
                    terms[n] = rule(n, *args) if rule is not None else apply_undefined(n, *args)
                except NoMatrixForm:  # the rule met a rank > 2 case it has no matrix for
                    terms[n] = apply_undefined(n, *args)
            except GraphCompilerError:
                raise
            except Exception as e:  # a SymPy failure: name the node and op being exported
                raise GraphCompilerError(
                    f"symbolic export of {n.name!r} ({n.op.name}, shape "
                    f"{fmt_shape(n.shape)}) failed: {type(e).__name__}: {e}"
                ) from e
            size = _term_size(terms[n], memo)
            if size > max_size:
                raise GraphCompilerError(
                    f"symbolic export of {root.name!r}: the expression of {n.name!r} ({n.op.name}, shape "
                    f"{fmt_shape(n.shape)}) has {size} nodes, over max_size={max_size}; export a node nearer "
                    "the leaves, use form='textbook' with named intermediates, or pass a larger max_size"
                )
            if n is not root and readers.get(n, 0) > 1 and size > SHARE_SIZE:
                sym = symbol_of(n)  # read twice: a named intermediate, not a copy
                if intermediates is not None:
                    intermediates[sym] = to_matrix(terms[n])
                terms[n] = of_matrix(n.shape, sym)
    return terms[root]


# -- the public functions -----------------------------------------------------------------------


def to_sympy(node: Node, *, form: Form | None = None, max_size: int | None = None, intermediates: dict | None = None):
    """node as a SymPy expression: in the graph's leaves (form="leaves"), or with named values and the
    gradients of named values kept as symbols (form="textbook": dJ/dW2 -> dJ/do h^T + lambda W2).

    By default a gradient node exports in the textbook form (API section 5) and any other node in its leaves.
    The export stays polynomial: a value read more than once whose expression exceeds SHARE_SIZE nodes
    becomes a symbol named after its node (pass a dict as `intermediates` to receive symbol -> definition),
    and any expression over `max_size` nodes (default MAX_SIZE) raises GraphCompilerError at once.
    """
    if not isinstance(node, Node):
        raise GraphCompilerError(f"to_sympy exports a graph Node, got {type(node).__name__} {node!r}")
    if form is None:
        form = "textbook" if node.is_gradient else "leaves"
    return _export(node, form, max_size, intermediates)


def latex_names(expr) -> dict:
    r"""LaTeX for the symbols that name gradients: dJ/do -> \frac{\partial J}{\partial o}."""
    names = {}
    for s in expr.atoms(sp.Symbol, sp.MatrixSymbol):
        name: str = getattr(s, "name", None) or ""
        m = re.fullmatch(r"d(.+?)/d(.+?)(_\d+)?", name)
        if m and not name.startswith("_"):
            num, den = (sp.latex(sp.Symbol(p)) for p in m.group(1, 2))
            names[s] = rf"\frac{{\partial {num}}}{{\partial {den}}}"
    return names


def to_latex(node_or_expr, *, form: Form = "textbook") -> str:
    """The LaTeX of a node (textbook form by default: named intermediates stay symbols) or of an expression."""
    expr = to_sympy(node_or_expr, form=form) if isinstance(node_or_expr, Node) else node_or_expr
    return _Latex({"symbol_names": latex_names(expr)}).doprint(expr)


class Derivation:
    """The backward pass as equations in the order backprop computes them (`equations`: sympy.Eq list)."""

    def __init__(self, equations: list, nodes: list[Node]):
        self.equations = equations
        self.nodes = nodes

    def __iter__(self):
        return iter(self.equations)

    def __len__(self) -> int:
        return len(self.equations)

    def __getitem__(self, k):
        return self.equations[k]

    @property
    def latex(self) -> str:
        r"""A LaTeX align block, one equation per line: \frac{\partial J}{\partial o} &= ..."""
        names = {}
        for eq in self.equations:
            names.update(latex_names(eq.lhs))
            names.update(latex_names(eq.rhs))
        printer = _Latex({"symbol_names": names})
        rows = [f"{printer.doprint(eq.lhs)} &= {printer.doprint(eq.rhs)}" for eq in self.equations]
        return "\\begin{align}\n" + " \\\\\n".join(rows) + "\n\\end{align}"

    def _repr_latex_(self) -> str:
        return "$$" + self.latex.replace("{align}", "{aligned}") + "$$"

    def __str__(self) -> str:
        return "\n".join(f"{eq.lhs} = {eq.rhs}" for eq in self.equations)

    def __repr__(self) -> str:
        return f"<Derivation: {len(self.equations)} equations>"


def derivation(grads: Mapping[Node, Node] | Iterable[Node] | Node, *, forward: bool = False) -> Derivation:
    """The backward pass behind `grads` (build_grad's dict, or gradient nodes) step by step: each named
    intermediate (dJ/do, dJ/dh, dJ/dz) and each gradient asked for, as Eq(symbol, textbook form), ordered
    as backprop computes them. forward=True puts the named forward values (z = W1 x, ...) first."""
    roots = [grads] if isinstance(grads, Node) else list(grads.values() if isinstance(grads, Mapping) else grads)
    if not roots:
        raise GraphCompilerError("derivation needs at least one gradient node (build_grad's result)")
    for n in roots:
        if not isinstance(n, Node):
            raise GraphCompilerError(f"derivation takes graph nodes, got {type(n).__name__} {n!r}")
        if n.graph is not roots[0].graph:
            raise GraphMismatchError(
                f"derivation: {roots[0].name!r} belongs to graph {roots[0].graph.name!r} "
                f"but {n.name!r} to graph {n.graph.name!r}; derive one graph at a time"
            )
    eqs: dict[Node, tuple] = {}
    todo = list(roots)
    while todo:
        n = todo.pop()
        if n in eqs:
            continue
        rhs, refs, first = _equation(n)
        eqs[n] = (rhs, refs, first)
        todo += [r for r in refs if r.is_gradient or forward]
    if not forward:
        eqs = {n: v for n, v in eqs.items() if n.is_gradient}
    order = _schedule(eqs)
    equations = [sp.Eq(symbol_of(n), eqs[n][0], evaluate=False) for n in order]
    return Derivation(equations, order)


def _equation(node: Node):
    """(textbook rhs of node, the kept nodes it reads, the first node of its region reading the latest one)."""
    rhs = to_sympy(node, form="textbook")
    region, stack, refs = {node}, [node], set()
    readers: dict[Node, int] = {}
    while stack:
        n = stack.pop()
        for x in n.inputs:
            if x is not node and _kept(x):
                refs.add(x)
                readers[x] = min(readers.get(x, n.index), n.index)
            elif x not in region and not x.is_leaf:
                region.add(x)
                stack.append(x)
    return rhs, refs, readers


def _schedule(eqs: dict) -> list[Node]:
    """Dependencies first; among ready equations, the one whose computation started first in backprop."""
    done: list[Node] = []
    left = set(eqs)
    while left:
        ready = [n for n in left if not (eqs[n][1] & left)]
        if not ready:  # cannot happen in a DAG; keep creation order as a fallback
            ready = list(left)

        def key(n):
            refs = [r for r in eqs[n][1] if r in eqs]
            if not refs:
                return (-1, n.index)
            last = max(refs, key=lambda r: r.index)
            return (last.index, eqs[n][2].get(last, n.index))

        nxt = min(ready, key=key)
        done.append(nxt)
        left.discard(nxt)
    return done


# -- a scan as its recurrence ------------------------------------------------------------------


def recurrence(node: Node) -> list:
    """The recurrence a scan runs, as SymPy equations: for a carry h and a slice x, `h_t = f(h_{t-1}, x_t)`
    and `y_t = ...` (for a reverse scan, from h_{t+1}); the reverse scan of a gradient gives the backward
    recurrence of backpropagation through time. `node` is a scan node or one of its results."""
    group = node.inputs[0] if node.op.name == "result" else node
    if not isinstance(group.op, Scan):
        raise GraphCompilerError(
            f"recurrence takes a scan node or one of its results, not {node.name!r} ({node.op.name})"
        )
    body = group.op.body
    tr, nc = body.traced, body.n_carry
    prev = "t+1" if body.reverse else "t-1"

    def named(name: str) -> str:
        return name if name.endswith(("_t", "}")) else f"{name}_{{{prev}}}"

    rename = {c.name: named(c.name) for c in tr.inputs[:nc]}
    rename.update({x.name: x.name if x.name.endswith(("_t", "}")) else f"{x.name}_t" for x in tr.inputs[nc:]})

    def fix(e):
        subs = {}
        for a in e.atoms(sp.MatrixSymbol):
            if a.name in rename:
                subs[a] = sp.MatrixSymbol(rename[a.name], *a.shape)
        for a in e.atoms(sp.Symbol):
            if a.name in rename:
                subs[a] = sp.Symbol(rename[a.name])
        return e.xreplace(subs)

    def lhs_like(e, name):
        return sp.MatrixSymbol(name, *e.shape) if getattr(e, "is_Matrix", False) else sp.Symbol(name)

    eqs = []
    for k, out in enumerate(tr.outputs):
        rhs = fix(to_sympy(out))
        if k < nc:
            base = body.carry_names[k]
            base = base[: -len("_{t+1}")] if base.endswith(("_{t+1}", "_{t-1}")) else base
            lhs = lhs_like(rhs, f"{base}_t")
        else:
            names = getattr(body, "y_names", None)
            lhs = lhs_like(rhs, f"{names[k - nc]}_t" if names else f"y{k - nc if body.n_y > 1 else ''}_t")
        eqs.append(sp.Eq(lhs, rhs, evaluate=False))
    return eqs


# -- evaluating an exported expression with NumPy ----------------------------------------------


def evaluate(expr, values: Mapping[Any, Any], graph=None) -> np.ndarray:
    """The number an exported expression stands for, given arrays for its symbols (by name or by node).

    1-D arrays are columns; the run-time dim n is read from the arrays' shapes (or given as values["n"] where
    no array tells it, e.g. a gradient that is a ones vector). With graph=, parameters and named constants
    default to the values the graph stores. Undefined functions run
    their op's kernel, so every export evaluates.
    """
    vals = {}
    if graph is not None:  # parameters' stored values and named constants by default
        vals.update({n.name: np.asarray(v) for n, v in graph.stored_values().items() if v is not None})
    vals.update({(k.name if isinstance(k, Node) else str(k)): np.asarray(v) for k, v in values.items()})
    dims: dict = {_N: int(vals["n"])} if "n" in vals and vals["n"].ndim == 0 else {}
    for k, v in values.items():  # a node given as a key tells n by its None dims
        if isinstance(k, Node):
            for d, size in zip(_mshape(k.shape) or (), _as2d(np.asarray(v)).shape):
                if d == _N:
                    dims[_N] = size
    for ms in expr.atoms(sp.MatrixSymbol):
        if ms.name not in vals:
            raise GraphCompilerError(f"evaluate: no value for {ms.name!r} (shape {ms.shape}); give it in values")
        arr = _as2d(vals[ms.name])
        for d, size in zip(ms.shape, arr.shape):
            if isinstance(d, sp.Symbol):
                dims[d] = size
    ev = _Evaluator(vals, dims)
    out = ev.mat(expr) if getattr(expr, "is_Matrix", False) else ev.scalar(expr)
    return np.asarray(out, dtype=float)


_LAMBDIFIED: dict = {}


def _where_printer():
    """SciPy's NumPy printer with a Piecewise as nested where(): SymPy's select() fails when one condition
    is an array and another the literal True (a clip of a scalar between array bounds)."""
    from sympy.printing.numpy import SciPyPrinter

    class WherePrinter(SciPyPrinter):
        def _print_Piecewise(self, expr):
            out = "nan"
            for e, c in reversed(expr.args):
                out = self._print(e) if c == sp.true else f"where({self._print(c)}, {self._print(e)}, {out})"
            return out

    return WherePrinter({"fully_qualified_modules": False, "inline": True, "allow_unknown_functions": True})


def _lambdified(syms: tuple, e) -> Callable:
    """sp.lambdify, remembered: one body is evaluated many times (every node of a graph reads it)."""
    f = _LAMBDIFIED.get((syms, e))
    if f is None:
        if len(_LAMBDIFIED) > 4096:
            _LAMBDIFIED.clear()
        f = _LAMBDIFIED[(syms, e)] = sp.lambdify(syms, e, modules=["scipy", "numpy"], printer=_where_printer())
    return f


def _as2d(a: np.ndarray) -> np.ndarray:
    """An array as the matrix export writes it: (k,) a column, a scalar 1 x 1, (n, c, h, w) n x chw."""
    return a.reshape(-1, 1) if a.ndim == 1 else a.reshape(1, 1) if a.ndim == 0 else a.reshape(len(a), -1)


def _as_shape(v: np.ndarray, shape: tuple) -> np.ndarray:
    """A matrix (or scalar) back to the NumPy shape it stands for; one None dim is read from its size."""
    if len(shape) <= 2:
        return v.reshape(-1) if len(shape) == 1 else v.reshape(()) if not shape else v
    return v.reshape(tuple(-1 if d is None else d for d in shape))


class _Evaluator:
    def __init__(self, vals: dict, dims: dict):
        self.vals, self.dims = vals, dims

    def size(self, d) -> int:
        return int(sp.sympify(d).xreplace(self.dims))

    def mat(self, e) -> np.ndarray:
        if isinstance(e, sp.MatrixSymbol):
            return _as2d(self.vals[e.name]).astype(float)
        if isinstance(e, sp.MatrixBase):
            return np.array(e.tolist(), dtype=float)
        if isinstance(e, sp.OneMatrix):
            return np.ones((self.size(e.rows), self.size(e.cols)))
        if isinstance(e, sp.ZeroMatrix):
            return np.zeros((self.size(e.rows), self.size(e.cols)))
        if isinstance(e, sp.Identity):
            return np.eye(self.size(e.rows))
        if isinstance(e, sp.MatAdd):
            total, *rest = (self.mat(a) for a in e.args)  # a MatAdd has two terms or more
            for t in rest:
                total = total + t
            return total
        if isinstance(e, sp.MatMul):
            scal = [a for a in e.args if not a.is_Matrix]
            out = None
            for a in e.args:
                if a.is_Matrix:
                    m = self.mat(a)
                    out = m if out is None else out @ m
            assert out is not None  # a MatMul has a matrix factor
            return out * (self.scalar(sp.Mul(*scal)) if scal else 1.0)
        if isinstance(e, sp.HadamardProduct):
            return np.prod([self.mat(a) for a in e.args], axis=0)
        if isinstance(e, sp.HadamardPower):
            return self.mat(e.base) ** self.scalar(e.exp)
        if isinstance(e, sp.Transpose):
            return self.mat(e.arg).T
        if isinstance(e, sp.KroneckerProduct):
            out = self.mat(e.args[0])
            for a in e.args[1:]:
                out = np.kron(out, self.mat(a))
            return out
        if isinstance(e, sp.Inverse):
            return np.linalg.inv(self.mat(e.arg))
        if isinstance(e, ElementwiseApplyFunction):
            return self.scalar(e.function.expr, {e.function.variables[0]: self.mat(e.expr)})
        if isinstance(e, ElementwiseMap):
            fn = e.function
            return self.scalar(fn.expr, {v: self.mat(m) for v, m in zip(fn.variables, e.args[1:])})
        if isinstance(e, OpMatrix):
            return _as2d(self.kernel(e))
        raise GraphCompilerError(f"evaluate: no NumPy rule for {type(e).__name__} {e}")

    def kernel(self, e) -> np.ndarray:
        args = []
        for a, (shape, dtype) in zip(e.operands, e.in_meta):
            v = self.mat(a) if getattr(a, "is_Matrix", False) else np.asarray(self.scalar(a))
            args.append(_as_shape(v, shape).astype(np.dtype(dtype)))
        return np.asarray(e.op.kernel(*args), dtype=float)

    def scalar(self, e, extra: dict | None = None):
        """A scalar expression (entrywise over arrays for the placeholders in extra), with NumPy."""
        e = sp.sympify(e)
        sub, args = {}, dict(extra or {})
        for k, a in enumerate(sorted(e.atoms(sp.Trace, sp.Determinant, OpFunction), key=sp.default_sort_key)):
            d = _bound(100 + k)  # fixed stand-ins, so the lambdified body can be remembered
            sub[a] = d
            args[d] = (
                np.trace(self.mat(a.arg))
                if isinstance(a, sp.Trace)
                else np.linalg.det(self.mat(a.arg))
                if isinstance(a, sp.Determinant)
                else self.kernel(a).reshape(())
            )
        e = e.xreplace(sub)
        for s in e.free_symbols:
            if s in args:
                continue
            if s in self.dims:
                args[s] = self.dims[s]
            elif isinstance(s, sp.Symbol) and s.name in self.vals:
                args[s] = self.vals[s.name].astype(float)
            else:
                raise GraphCompilerError(f"evaluate: no value for the symbol {s}; give it in values")
        syms = tuple(sorted(args, key=sp.default_sort_key))
        out = _lambdified(syms, e)(*[args[s] for s in syms])
        shape = next((np.shape(v) for v in (extra or {}).values()), ())
        return np.broadcast_to(np.asarray(out, dtype=float), shape) if shape else np.asarray(out, dtype=float)
