"""Symbolic export: a node (a derivative included) as a SymPy expression, LaTeX, and a derivation.

Each op's SymPy rule lives in its block (`Op.to_sympy(node, *terms)`); this module holds what those rules
share. A value is carried as a `Term`: a scalar SymPy body over placeholder symbols, each standing for a
matrix. Elementwise ops only combine bodies, so `c*W2 + c*W2` collects to `2c W2` and `g (1 - tanh(z)^2)`
stays one Hadamard product with phi'(z); a Term becomes a matrix expression (MatAdd, MatMul, Hadamard
products, elementwise maps, ones matrices, traces) only where an op needs a matrix. Arrays are matrices in
column form: (m, n) is m x n, a 1-D (k,) is a k x 1 column, a None dim is the Symbol n. Ops with no
matrix-calculus form (softmax, the cross-entropy, one_hot, slicing) export as undefined functions named
after the op, so every graph of rank <= 2 exports.

Two forms: form="leaves" writes a node in terms of the graph's inputs, parameters and named constants;
form="textbook" keeps the nodes a user named (h, o) and the gradients of named nodes (dJ/do, dJ/dh) as
symbols, which gives the seeds' closed forms (dJ/dW2 = dJ/do h^T + lambda W2). to_sympy exports a gradient
node in the textbook form and any other node in its leaves unless form= says otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, Mapping

import numpy as np
import sympy as sp
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
from sympy.logic.boolalg import Boolean
from sympy.printing.latex import LatexPrinter
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

from .errors import GraphCompilerError, fmt_shape
from .graph import GraphMismatchError, Node

__all__ = ["to_sympy", "to_latex", "derivation", "Derivation", "evaluate"]   # the rest serves the op rules

Form = Literal["leaves", "textbook"]


# -- the Term every op rule reads and returns --------------------------------------------------

@dataclass(frozen=True)
class Term:
    """A value in export: `body` is a scalar expression over the placeholders of `env` (placeholder ->
    matrix expression of the value's matrix shape); a scalar or a broadcast scalar has an empty env."""

    shape: tuple
    body: Any
    env: dict = field(default_factory=dict, compare=False)

    @property
    def ndim(self) -> int:
        return len(self.shape)


_N = sp.Symbol("n", integer=True, positive=True)        # every None (run-time) dim: the batch size
_PLACEHOLDERS: dict[Any, sp.Dummy] = {}                  # matrix expression -> its placeholder (one per matrix)


def _placeholder(m) -> sp.Dummy:
    d = _PLACEHOLDERS.get(m)
    if d is None:
        d = _PLACEHOLDERS[m] = sp.Dummy("m", real=True)
    return d


def _dim(d):
    return _N if d is None else sp.Integer(d)


def _mshape(shape: tuple) -> tuple | None:
    """The matrix shape of a NumPy shape: () -> None (a scalar), (k,) -> (k, 1), (m, n) -> (m, n)."""
    if len(shape) == 0:
        return None
    if len(shape) == 1:
        return (_dim(shape[0]), sp.Integer(1))
    if len(shape) == 2:
        return (_dim(shape[0]), _dim(shape[1]))
    raise GraphCompilerError(f"symbolic export writes arrays of rank 0, 1 or 2 as scalars and matrices; a value "
                             f"of shape {fmt_shape(shape)} has no matrix form. Reshape it to a matrix first")


class Ones(sp.OneMatrix):
    """The ones matrix of sums and broadcasts, printed as the books write it: 1_n, 1_n^T, 1_{m x n}."""

    def _eval_transpose(self):
        return Ones(self.cols, self.rows)

    def _latex(self, printer):
        r, c = (printer._print(d) for d in self.shape)
        if self.cols == 1:
            return rf"\mathbf{{1}}_{{{r}}}"
        if self.rows == 1:
            return rf"\mathbf{{1}}_{{{c}}}^{{T}}"
        return rf"\mathbf{{1}}_{{{r} \times {c}}}"

    def _sympystr(self, printer):
        r, c = (printer._print(d) for d in self.shape)
        return f"1_{r}" if self.cols == 1 else f"1_{c}.T" if self.rows == 1 else f"1_({r}x{c})"


def of_matrix(shape: tuple, m) -> Term:
    """A Term holding one matrix expression m (or a scalar expression for shape ())."""
    if len(shape) == 0:
        return Term((), m, {})
    d = _placeholder(m)
    return Term(tuple(shape), d, {d: m})


def _is_scalar_body(t: Term) -> bool:
    return not (t.body.free_symbols & set(t.env)) if isinstance(t.body, sp.Basic) else True


# -- broadcasting -------------------------------------------------------------------------------

def _bcast_matrix(m, src: tuple, dst: tuple):
    """Matrix m of NumPy shape src broadcast to dst, with ones vectors: (k, 1) -> v 1^T, (1, k) -> 1 r."""
    if tuple(src) == tuple(dst):
        return m
    if len(src) == 1 and len(dst) == 2:            # a 1-D value lines up with the last axis: it is a row
        m, src = m.T, (1, src[0])
    if len(dst) == 1:                              # (1,) -> (k,)
        return sp.MatMul(Ones(_dim(dst[0]), 1), m) if src[0] == 1 and dst[0] != 1 else m
    if src[0] == 1 and dst[0] != 1:
        m = sp.MatMul(Ones(_dim(dst[0]), 1), m)
    if src[1] == 1 and dst[1] != 1:
        m = sp.MatMul(m, Ones(1, _dim(dst[1])))
    return m


def _broadcast_term(t: Term, shape: tuple) -> Term:
    shape = tuple(shape)
    if t.shape == shape or _is_scalar_body(t):
        return Term(shape, t.body, t.env if t.shape == shape else {})
    sub, env = {}, {}
    for d, m in t.env.items():
        if d in t.body.free_symbols:
            bm = _bcast_matrix(m, t.shape, shape)
            nd = _placeholder(bm)
            sub[d], env[nd] = nd, bm
    return Term(shape, t.body.xreplace(sub), env)


def _map_env(t: Term, shape: tuple, fn: Callable) -> Term:
    """The same body over matrices fn(m) (a transpose or a change of NumPy shape with the same matrix)."""
    sub, env = {}, {}
    for d, m in t.env.items():
        if d in t.body.free_symbols:
            nm = fn(m)
            nd = _placeholder(nm)
            sub[d], env[nd] = nd, nm
    return Term(tuple(shape), t.body.xreplace(sub), env)


# -- from a Term to a matrix expression ---------------------------------------------------------

def to_matrix(t: Term):
    """The matrix expression of a Term (a scalar expression for shape ())."""
    if t.ndim == 0:
        return t.body
    return _body_to_matrix(t.body, t.env, _mshape(t.shape))


def _is_bool(e) -> bool:
    """A comparison or a truth value (a Symbol is a Boolean to SymPy too, but it is a number here)."""
    return isinstance(e, Boolean) and not isinstance(e, sp.Expr)


def _body_to_matrix(body, env: dict, mshape: tuple):
    free = [d for d in env if d in body.free_symbols]
    if not free and _is_bool(body):
        body = indicator(body)
    if not free:                                              # a broadcast scalar: c 1 1^T
        return sp.MatMul(body, Ones(*mshape)) if body != 1 else Ones(*mshape)
    if body in env:
        return env[body]
    if _is_bool(body):                                        # a bool matrix is written as its 0/1 indicator
        return _body_to_matrix(indicator(body), env, mshape)
    if isinstance(body, sp.Pow) and body.base in env and body.exp.is_Integer:
        return sp.HadamardPower(env[body.base], body.exp)     # a∘k
    nonlinear = len(free) == 1 and sp.diff(body, free[0]).has(free[0])
    if isinstance(body, sp.Add) and not nonlinear:            # sums of matrices
        return sp.MatAdd(*[_body_to_matrix(a, env, mshape) for a in body.args], evaluate=True)
    if isinstance(body, sp.Mul):                              # scalar coefficient times a Hadamard product
        coeff = [a for a in body.args if not (a.free_symbols & set(free))]
        rest = [a for a in body.args if a.free_symbols & set(free)]
        if len(rest) == 1 and not nonlinear or len(rest) > 1:
            parts = [_body_to_matrix(a, env, mshape) for a in rest]     # dJ/dh before phi'(z), as the book
            parts.sort(key=lambda m: isinstance(m, (ElementwiseFunction, ElementwiseMap)))
            core = parts[0] if len(parts) == 1 else sp.HadamardProduct(*parts)
            c = sp.Mul(*coeff)
            return core if c == 1 else sp.MatMul(c, core)
    if len(free) == 1:                                        # f applied elementwise: (t -> f(t))∘(M)
        d, m = free[0], env[free[0]]
        if m in _COMPOSE:                                     # h = tanh(z) kept: 1 - h∘h reads as phi'(z)
            inner, d, m = _COMPOSE[m]
            body = body.xreplace({free[0]: inner})
        t = _bound(0)
        return ElementwiseFunction(sp.Lambda(t, body.xreplace({d: t})), m)
    ts = [_bound(k + 1) for k in range(len(free))]
    return ElementwiseMap(sp.Lambda(tuple(ts), body.xreplace(dict(zip(free, ts)))),
                          *[env[d] for d in free])


_BOUND: list = []


def _bound(k: int) -> sp.Dummy:
    """The k-th bound variable of elementwise maps: fixed Dummies, so two exports of a node compare equal."""
    while len(_BOUND) <= k:
        _BOUND.append(sp.Dummy("t" if not _BOUND else f"t{len(_BOUND) - 1}", real=True))
    return _BOUND[k]


def _as_scalar(m):
    """A 1 x 1 matrix as a scalar: its trace (tr(x^T y) is the scalar x^T y)."""
    return sp.Trace(m) if getattr(m, "is_Matrix", False) else m


class ElementwiseFunction(ElementwiseApplyFunction):
    """f applied entry by entry to a matrix, printed as the book writes it: tanh(z), 1 - tanh^2(z), [z > 0]."""

    def __new__(cls, function, expr):
        return sp.Basic.__new__(cls, function, expr)      # no shortcut for 1 x 1 matrices: keep the form

    def _latex(self, printer):
        return _print_applied(printer, self.function, [self.expr], latex=True)

    def _sympystr(self, printer):
        return _print_applied(printer, self.function, [self.expr], latex=False)


class ElementwiseMap(sp.MatrixExpr):
    """A function of several same-shaped matrices applied entry by entry: max(A, B), where(A > B, A, C)."""

    def __new__(cls, fn, *mats):
        return sp.Basic.__new__(cls, fn, *mats)

    @property
    def function(self):
        return self.args[0]

    @property
    def shape(self):
        return self.args[1].shape

    def _entry(self, i, j, **kw):
        return self.function(*[m[i, j] for m in self.args[1:]])

    def _eval_transpose(self):
        return ElementwiseMap(self.function, *[m.T for m in self.args[1:]])

    def _latex(self, printer):
        return _print_applied(printer, self.function, self.args[1:], latex=True)

    def _sympystr(self, printer):
        return _print_applied(printer, self.function, self.args[1:], latex=False)


class _Latex(LatexPrinter):
    """SymPy's LaTeX with the book's Hadamard product: A odot B (the Hadamard product of the seeds)."""

    def _print_HadamardProduct(self, expr):
        return r" \odot ".join(self.parenthesize(a, PRECEDENCE["Pow"], strict=True) for a in expr.args)

    def _print_Inverse(self, expr):                          # (A^T)^{-1} as the books write it: A^{-T}
        if isinstance(expr.arg, sp.Transpose):
            return rf"{self.parenthesize(expr.arg.arg, PRECEDENCE['Pow'], strict=True)}^{{-T}}"
        return self._print_MatPow(expr)


class _BodyLatex(_Latex):
    """LaTeX of an elementwise body with its variables printed as the matrices they stand for."""

    def __init__(self, settings, names):
        super().__init__(settings)
        self.names = names

    def _print_Symbol(self, expr, style="plain"):
        return self.names[expr] if expr in self.names else super()._print_Symbol(expr, style)

    _print_Dummy = _print_Symbol

    def _print_Heaviside(self, expr, exp=None):             # theta(u, 0) = [u > 0], Iverson's bracket
        tex = rf"\left[{self._print(expr.args[0])} > 0\right]"
        return tex if exp is None else rf"{tex}^{{{exp}}}"


class _BodyStr(StrPrinter):
    def __init__(self, settings, names):
        super().__init__(settings)
        self.names = names

    def _print_Symbol(self, expr):
        return self.names[expr] if expr in self.names else super()._print_Symbol(expr)

    _print_Dummy = _print_Symbol

    def _print_Heaviside(self, expr):
        return f"[{self._print(expr.args[0])} > 0]"


def _print_applied(printer, fn, mats, latex: bool) -> str:
    """f(M) for an elementwise map: the body printed with each variable replaced by its matrix."""
    names, sub = {}, {}
    for v, m in zip(fn.variables, mats):
        txt = printer._print(m)
        if not isinstance(m, sp.MatrixSymbol) and not _only_in_calls(fn.expr, v):
            txt = rf"\left({txt}\right)" if latex else f"({txt})"
        sub[v] = sp.Dummy(v.name)
        names[sub[v]] = txt
    cls = _BodyLatex if latex else _BodyStr
    settings = {k: v for k, v in printer._settings.items() if k in cls._default_settings}
    out = cls(settings, names).doprint(fn.expr.xreplace(sub))
    if isinstance(fn.expr, (sp.Add, sp.Mul, sp.Piecewise)):          # (1 - tanh^2(z)) ∘ g needs its brackets
        out = rf"\left({out}\right)" if latex else f"({out})"
    return out


def _only_in_calls(expr, v) -> bool:
    """True when v appears only as a whole argument of function calls (tanh(v), [v > 0]): no brackets needed."""
    if expr == v:
        return False
    if isinstance(expr, sp.Function):
        return all(a == v or _only_in_calls(a, v) for a in expr.args)
    return all(_only_in_calls(a, v) for a in expr.args)


# -- undefined functions: ops with no matrix-calculus form ---------------------------------------

class OpMatrix(sp.MatrixExpr):
    """An op with no matrix form applied to matrices; a subclass per op (its name is the op's name)."""

    op: Any = None
    in_meta: tuple = ()          # (ndim, dtype) of each operand, to call the op's kernel
    out_ndim: int = 2

    def __new__(cls, rows, cols, *operands):
        return sp.Basic.__new__(cls, sp.sympify(rows), sp.sympify(cols), *operands)

    @property
    def shape(self):
        return self.args[0], self.args[1]

    @property
    def operands(self):
        return self.args[2:]

    def _latex(self, printer):
        return _latex_call(self.op, self.operands, printer)

    def _sympystr(self, printer):
        return _str_call(self.op, self.operands, printer)


class OpFunction(sp.Function):
    """A scalar-valued op with no matrix form (softmax_cross_entropy): an undefined function of its args."""

    op: Any = None
    in_meta: tuple = ()
    out_ndim: int = 0

    @property
    def operands(self):
        return self.args

    def _latex(self, printer, exp=None):
        s = _latex_call(self.op, self.args, printer)
        return s if exp is None else rf"{s}^{{{exp}}}"

    def _sympystr(self, printer):
        return _str_call(self.op, self.args, printer)


def _value_args(op, args) -> list:
    """The operands an op reads the value of (one_hot's second operand gives only its shape)."""
    return [a for i, a in enumerate(args) if op.reads_value(i)]


def _latex_call(op, args, printer) -> str:
    inner = ", ".join(printer._print(a) for a in _value_args(op, args))
    return rf"\operatorname{{{op.name.replace('_', chr(92) + '_')}}}\left({inner}\right)"


def _str_call(op, args, printer) -> str:
    return f"{op.name}({', '.join(printer._print(a) for a in _value_args(op, args))})"


_OP_CLASSES: dict[tuple, type] = {}


def apply_undefined(node: Node, *terms: Term) -> Term:
    """node's op applied as an undefined function of its inputs' matrix forms (the rule for ops without one)."""
    meta = tuple((x.ndim, x.dtype.str) for x in node.inputs)
    key = (node.op, meta, node.ndim)
    cls = _OP_CLASSES.get(key)
    if cls is None:
        base = OpFunction if node.ndim == 0 else OpMatrix
        cls = _OP_CLASSES[key] = type(node.op.name, (base,), {"op": node.op, "in_meta": meta,
                                                               "out_ndim": node.ndim})
    args = [to_matrix(t) for t in terms]
    if node.ndim == 0:
        return Term((), cls(*args), {})
    return of_matrix(node.shape, cls(*_mshape(node.shape), *args))


# -- helpers the op rules call ------------------------------------------------------------------

def elementwise(node_or_shape, fn: Callable, *terms: Term) -> Term:
    """fn applied entry by entry to terms broadcast to the node's shape (fn takes and returns scalars)."""
    shape = tuple(node_or_shape.shape if isinstance(node_or_shape, Node) else node_or_shape)
    ts = [_broadcast_term(t, shape) for t in terms]
    env = {}
    for t in ts:
        env.update(t.env)
    return Term(shape, fn(*[t.body for t in ts]), env)


def indicator(cond):
    """A bool as 0/1: [a > b] is the Heaviside step theta(a - b) (0 at a tie, like the comparison)."""
    if isinstance(cond, sp.StrictGreaterThan):
        return sp.Heaviside(cond.lhs - cond.rhs, 0)
    if isinstance(cond, sp.StrictLessThan):
        return sp.Heaviside(cond.rhs - cond.lhs, 0)
    if cond is sp.true or cond is sp.false:
        return sp.Integer(1 if cond is sp.true else 0)
    return sp.Piecewise((1, cond), (0, True))


def matmul(node: Node, a: Term, b: Term) -> Term:
    """The matrix product in column form: (k,) operands are columns, a 1-D result is a column."""
    A, B = to_matrix(a), to_matrix(b)
    if a.ndim == 0 or b.ndim == 0:
        raise GraphCompilerError(f"matmul {node.name!r} of a scalar has no matrix form")
    if a.ndim == 2 and b.ndim == 2 or a.ndim == 2 and b.ndim == 1:
        return of_matrix(node.shape, sp.MatMul(A, B))                     # A B, A v
    if a.ndim == 1 and b.ndim == 2:
        return of_matrix(node.shape, sp.MatMul(B.T, A))                   # (v^T B)^T = B^T v
    return of_matrix((), _as_scalar(sp.MatMul(A.T, B)))                 # u . v = u^T v


def transpose(node: Node, x: Term, axes: tuple) -> Term:
    """A matrix transpose: the same elementwise body over the transposed matrices."""
    if x.ndim < 2 or tuple(axes) == (0, 1):
        return Term(node.shape, x.body, x.env)
    return _map_env(x, node.shape, lambda m: m.T)


def reshape(node: Node, x: Term) -> Term:
    """A reshape that keeps the matrix ((k,) <-> (k, 1), adding or dropping size-one axes), or a transpose."""
    if _is_scalar_body(x):
        return Term(node.shape, x.body, {})
    src, dst = _mshape(x.shape), _mshape(node.shape)
    if src == dst:
        return _map_env(x, node.shape, lambda m: m)
    if src is not None and dst is not None and (src[1], src[0]) == dst and 1 in (src[0], src[1]):
        return _map_env(x, node.shape, lambda m: m.T)
    if src is None or dst is None:                                       # scalar <-> 1 x 1 matrix
        m = to_matrix(x)
        return of_matrix(node.shape, _as_scalar(m) if dst is None else sp.MatMul(m, Ones(1, 1)))
    return apply_undefined(node, x)


def broadcast(node: Node, x: Term) -> Term:
    return _broadcast_term(x, node.shape)


def zeros(node: Node) -> Term:
    return Term(tuple(node.shape), sp.Integer(0), {})


def count(node: Node, x: Node, axis: tuple) -> Term:
    """The number of elements of x over axis, with n for a run-time dim."""
    return Term((), sp.Mul(*[_dim(x.shape[a]) for a in axis]), {})


def reduce_sum(node: Node, x: Term, axis: tuple, keepdims: bool) -> Term:
    """sum(X) = 1^T X 1, or tr(A^T B) for the sum of a Hadamard product A∘B; axis sums are X^T 1 and X 1."""
    axis = tuple(sorted(axis))
    if not axis or x.ndim == 0:
        return Term(node.shape, x.body, x.env)
    if _is_scalar_body(x):                                              # c summed over k entries: k c
        k = sp.Mul(*[_dim(x.shape[a]) for a in axis])
        return Term(node.shape, k * x.body, {})
    if len(axis) == x.ndim:                                             # a full sum: a scalar
        return Term(node.shape, _full_sum(x), {})
    m = to_matrix(x)
    rows, cols = _mshape(x.shape)
    if axis == (0,):                                                    # column sums
        if keepdims:
            return of_matrix(node.shape, sp.MatMul(Ones(1, rows), m))
        return of_matrix(node.shape, sp.MatMul(m.T, Ones(rows, 1)))
    return of_matrix(node.shape, sp.MatMul(m, Ones(cols, 1)))  # row sums: X 1


def _full_sum(x: Term):
    free = set(x.env) & x.body.free_symbols
    coeff, factors = sp.Integer(1), []
    for f in sp.Mul.make_args(x.body):
        if f.free_symbols & free:
            factors.append(f)
        else:
            coeff *= f
    mshape = _mshape(x.shape)
    if len(factors) == 1 and isinstance(factors[0], sp.Pow) and factors[0].exp == 2:
        a = _body_to_matrix(factors[0].base, x.env, mshape)
        return coeff * sp.Trace(sp.MatMul(a.T, a))                          # sum(A∘A) = tr(A^T A) = ||A||_F^2
    if len(factors) == 2:
        a, b = (_body_to_matrix(f, x.env, mshape) for f in factors)
        return coeff * sp.Trace(sp.MatMul(a.T, b))                          # sum(A∘B) = tr(A^T B)
    m = to_matrix(Term(x.shape, sp.Mul(*factors), x.env))
    rows, cols = mshape
    ones_l = Ones(1, rows)
    return coeff * sp.Trace(sp.MatMul(ones_l, m) if cols == 1 else sp.MatMul(ones_l, m, Ones(cols, 1)))


def sum_to(node: Node, g: Term, like: Term) -> Term:
    """g summed over the axes it was broadcast along, back to like's shape (the inverse of broadcasting).

    A run-time dim of like against a fixed dim of g may be 1 (summed) or not: that stays sum_like(g)."""
    lead = g.ndim - node.ndim
    if any(d is None and gd is not None for d, gd in zip(node.shape, g.shape[lead:])):
        return apply_undefined(node, g, like)
    axes = tuple(range(lead)) + tuple(lead + k for k, d in enumerate(node.shape)
                                      if d == 1 and g.shape[lead + k] != 1)
    if not axes:
        return Term(node.shape, g.body, g.env) if g.shape == node.shape else reshape(node, g)
    summed = reduce_sum(_Shape(tuple(d for k, d in enumerate(g.shape) if k not in axes)), g, axes, False)
    return reshape(node, summed) if summed.shape != node.shape else summed


@dataclass(frozen=True)
class _Shape:
    """A stand-in for a node where a helper needs only a shape."""

    shape: tuple

    @property
    def ndim(self) -> int:
        return len(self.shape)


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
        cost, rest = node.name[1:m.start()], node.name[m.end():]
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
    return sp.Symbol(node.name, real=True) if ms is None else sp.MatrixSymbol(node.name, *ms)


def _number(v):
    v = v.item() if isinstance(v, np.generic) else v
    if isinstance(v, (bool, np.bool_)):
        return sp.true if v else sp.false
    if float(v).is_integer():
        return sp.Integer(int(v))
    r = sp.Rational(float(v)).limit_denominator(1000)
    return r if float(r) == float(v) else sp.Float(float(v))


def _leaf_term(node: Node) -> Term:
    if node.op.name == "constant" and (node.is_gradient or is_auto_named(node)):
        value = np.asarray(node.graph._values[node])
        if value.ndim == 0 or value.size and np.all(value == value.flat[0]):
            return Term(node.shape, _number(value.flat[0] if value.size else 0), {})
        _mshape(value.shape)                                  # rank > 2 has no matrix form: raises
        mat = sp.ImmutableMatrix(value.reshape(value.shape[0], -1).tolist())    # (k,) -> a k x 1 column
        return of_matrix(node.shape, mat)
    return of_matrix(node.shape, symbol_of(node))


_COMPOSE: dict = {}     # textbook form: kept symbol h -> (body, placeholder, matrix) of h = f(z) elementwise


def _export(root: Node, form: Form):
    if form not in ("leaves", "textbook"):
        raise GraphCompilerError(f"form must be 'leaves' or 'textbook', not {form!r}")
    _PLACEHOLDERS.clear()
    _COMPOSE.clear()
    try:
        if form == "textbook":
            for k in _kept_inputs(root):
                t = _terms(k, form)
                free = [d for d in t.env if d in t.body.free_symbols] if t.ndim else []
                if len(free) == 1 and t.body != free[0]:
                    _COMPOSE[symbol_of(k)] = (t.body, free[0], t.env[free[0]])
        out = to_matrix(_terms(root, form))
        # SymPy folds 1_m 1_n^T into a plain OneMatrix; give it back the book's printing
        return out.replace(lambda e: type(e) is sp.OneMatrix, lambda e: Ones(*e.shape)) if isinstance(
            out, sp.Basic) and out.has(sp.OneMatrix) else out
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


def _terms(root: Node, form: Form) -> Term:
    keep = (lambda n: n is not root and _kept(n)) if form == "textbook" else (lambda n: False)
    need, stack = {root}, [root]
    while stack:
        n = stack.pop()
        if keep(n):
            continue
        for x in n.inputs:
            if x not in need:
                need.add(x)
                stack.append(x)
    terms: dict[Node, Term] = {}
    for n in sorted(need, key=lambda n: n.index):
        if keep(n):
            terms[n] = of_matrix(n.shape, symbol_of(n))
        elif n.is_leaf:
            terms[n] = _leaf_term(n)
        else:
            rule = getattr(n.op, "to_sympy", None)
            args = [terms[x] for x in n.inputs]
            try:
                terms[n] = rule(n, *args) if rule is not None else apply_undefined(n, *args)
            except GraphCompilerError:
                raise
            except Exception as e:   # a SymPy failure: name the node and op being exported
                raise GraphCompilerError(f"symbolic export of {n.name!r} ({n.op.name}, shape "
                                         f"{fmt_shape(n.shape)}) failed: {type(e).__name__}: {e}") from e
    return terms[root]


# -- the public functions -----------------------------------------------------------------------

def to_sympy(node: Node, *, form: Form | None = None):
    """node as a SymPy expression: in the graph's leaves (form="leaves"), or with named values and the
    gradients of named values kept as symbols (form="textbook": dJ/dW2 -> dJ/do h^T + lambda W2).

    By default a gradient node exports in the textbook form (API section 5) and any other node in its leaves.
    """
    if not isinstance(node, Node):
        raise GraphCompilerError(f"to_sympy exports a graph Node, got {type(node).__name__} {node!r}")
    if form is None:
        form = "textbook" if node.is_gradient else "leaves"
    return _export(node, form)


def latex_names(expr) -> dict:
    r"""LaTeX for the symbols that name gradients: dJ/do -> \frac{\partial J}{\partial o}."""
    names = {}
    for s in expr.atoms(sp.Symbol, sp.MatrixSymbol):
        name = getattr(s, "name", None)
        m = re.fullmatch(r"d(.+?)/d(.+?)(_\d+)?", name or "")
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
            raise GraphMismatchError(f"derivation: {roots[0].name!r} belongs to graph {roots[0].graph.name!r} "
                                     f"but {n.name!r} to graph {n.graph.name!r}; derive one graph at a time")
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
        if not ready:                       # cannot happen in a DAG; keep creation order as a fallback
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


# -- evaluating an exported expression with NumPy ----------------------------------------------

def evaluate(expr, values: Mapping[Any, Any], graph=None) -> np.ndarray:
    """The number an exported expression stands for, given arrays for its symbols (by name or by node).

    1-D arrays are columns; the run-time dim n is read from the arrays' shapes (or given as values["n"] where
    no array tells it, e.g. a gradient that is a ones vector). With graph=, parameters and named constants
    default to the values the graph stores. Undefined functions run
    their op's kernel, so every export evaluates.
    """
    vals = {}
    if graph is not None:                        # parameters' stored values and named constants by default
        vals.update({n.name: np.asarray(v) for n, v in graph._values.items() if v is not None})
    vals.update({(k.name if isinstance(k, Node) else str(k)): np.asarray(v) for k, v in values.items()})
    dims: dict = {_N: int(vals["n"])} if "n" in vals and vals["n"].ndim == 0 else {}
    for k, v in values.items():                 # a node given as a key tells n by its None dims
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


def _lambdified(syms: tuple, e) -> Callable:
    """sp.lambdify, remembered: one body is evaluated many times (every node of a graph reads it)."""
    f = _LAMBDIFIED.get((syms, e))
    if f is None:
        if len(_LAMBDIFIED) > 4096:
            _LAMBDIFIED.clear()
        f = _LAMBDIFIED[(syms, e)] = sp.lambdify(syms, e, modules="numpy")
    return f


def _as2d(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, 1) if a.ndim == 1 else a.reshape(1, 1) if a.ndim == 0 else a


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
            return sum(self.mat(a) for a in e.args)
        if isinstance(e, sp.MatMul):
            scal = [a for a in e.args if not a.is_Matrix]
            out = None
            for a in e.args:
                if a.is_Matrix:
                    m = self.mat(a)
                    out = m if out is None else out @ m
            return out * (self.scalar(sp.Mul(*scal)) if scal else 1.0)
        if isinstance(e, sp.HadamardProduct):
            return np.prod([self.mat(a) for a in e.args], axis=0)
        if isinstance(e, sp.HadamardPower):
            return self.mat(e.base) ** self.scalar(e.exp)
        if isinstance(e, sp.Transpose):
            return self.mat(e.arg).T
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
        for a, (ndim, dtype) in zip(e.operands, e.in_meta):
            v = self.mat(a) if getattr(a, "is_Matrix", False) else np.asarray(self.scalar(a))
            v = v.reshape(-1) if ndim == 1 else v.reshape(()) if ndim == 0 else v
            args.append(v.astype(np.dtype(dtype)))
        return np.asarray(e.op.kernel(*args), dtype=float)

    def scalar(self, e, extra: dict | None = None):
        """A scalar expression (entrywise over arrays for the placeholders in extra), with NumPy."""
        e = sp.sympify(e)
        sub, args = {}, dict(extra or {})
        for k, a in enumerate(sorted(e.atoms(sp.Trace, sp.Determinant, OpFunction), key=sp.default_sort_key)):
            d = _bound(100 + k)           # fixed stand-ins, so the lambdified body can be remembered
            sub[a] = d
            args[d] = np.trace(self.mat(a.arg)) if isinstance(a, sp.Trace) else \
                np.linalg.det(self.mat(a.arg)) if isinstance(a, sp.Determinant) else self.kernel(a).reshape(())
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
