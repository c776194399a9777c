"""The term algebra of symbolic export: the values op rules read and return (SymPy imported here only).

A value is carried as a `Term`: a scalar SymPy body over placeholder symbols, each standing for a matrix.
Elementwise ops only combine bodies, so `c*W2 + c*W2` collects to `2c W2` and `g (1 - tanh(z)^2)` stays one
Hadamard product with phi'(z); a Term becomes a matrix expression (MatAdd, MatMul, Hadamard products,
elementwise maps, ones matrices, traces) only where an op needs a matrix. Arrays are matrices in column form:
(m, n) is m x n, a 1-D (k,) is a k x 1 column, a None dim is the Symbol n. An array of rank 3 or more (a batch
of images) is the matrix of its first axis by the rest, as im2col writes it: (n, c, h, w) is n x chw, a
`TensorSymbol` that keeps its full shape, so flattening it for a dense layer is the same matrix. Ops with no
matrix-calculus form (softmax, the cross-entropy, one_hot, slicing) are undefined functions named after the op,
and so is any op on a rank > 2 value whose rule does not declare `sympy_any_rank` (see NoMatrixForm).

Each op's SymPy rule lives in its block (`Op.sympy_fn`, or `Op.to_sympy(node, *terms)` calling the helpers
below); the export that walks a graph (to_sympy, to_latex, derivation, evaluate) is symbolic.py. This module
imports nothing of the package but errors, so the op layer may import it (inside a rule: SymPy loads only
when a graph is exported).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import sympy as sp
from sympy.core.symbol import Str
from sympy.logic.boolalg import Boolean
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction
from sympy.printing.latex import LatexPrinter
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

from .errors import GraphCompilerError, fmt_shape

if TYPE_CHECKING:  # for type hints only: this module sits below graph.py
    from .graph import Node

__all__ = [
    "Term",
    "TensorSymbol",
    "NoMatrixForm",
    "Ones",
    "ElementwiseFunction",
    "ElementwiseMap",
    "OpMatrix",
    "OpFunction",
    "of_matrix",
    "to_matrix",
    "apply_undefined",
    "elementwise",
    "indicator",
    "matmul",
    "transpose",
    "reshape",
    "broadcast",
    "zeros",
    "count",
    "reduce_sum",
    "sum_to",
    "sp",
]

_COMPOSE: dict = {}  # textbook form: kept symbol h -> (body, placeholder, matrix) of h = f(z) elementwise


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


_N = sp.Symbol("n", integer=True, positive=True)  # every None (run-time) dim: the batch size
_PLACEHOLDERS: dict[Any, sp.Dummy] = {}  # matrix expression -> its placeholder (one per matrix)


def _placeholder(m) -> sp.Dummy:
    d = _PLACEHOLDERS.get(m)
    if d is None:
        d = _PLACEHOLDERS[m] = sp.Dummy("m", real=True)
    return d


def _matrix_shape(shape: tuple) -> tuple:
    """_mshape of a value of rank 1 or 2 (never a scalar)."""
    ms = _mshape(shape)
    assert ms is not None, f"a scalar has no matrix shape: {shape}"
    return ms


def _dim(d):
    return _N if d is None else sp.Integer(d)


def _mshape(shape: tuple) -> tuple | None:
    """The matrix shape of a NumPy shape: () -> None (a scalar), (k,) -> (k, 1), (m, n) -> (m, n), and a
    rank > 2 array its first axis by the rest: (n, c, h, w) -> (n, c h w)."""
    if len(shape) == 0:
        return None
    if len(shape) == 1:
        return (_dim(shape[0]), sp.Integer(1))
    return (_dim(shape[0]), sp.Mul(*[_dim(d) for d in shape[1:]]))


class NoMatrixForm(GraphCompilerError):
    """A helper met a rank > 2 value it has no matrix form for; the export writes that node as an undefined
    function of its inputs instead (never a wrong matrix)."""


def _no_form(what: str, shape: tuple) -> NoMatrixForm:
    return NoMatrixForm(f"{what} of a value of shape {fmt_shape(shape)} has no matrix form")


class TensorSymbol(sp.MatrixSymbol):
    """A named array of rank 3 or more: the matrix of its first axis by the rest (n x chw for (n, c, h, w)),
    printed by its name; `tensor_shape` is its NumPy shape (None dims as n)."""

    def __new__(cls, name: Any, rows: Any, cols: Any, tensor_shape: tuple) -> TensorSymbol:
        name = name if isinstance(name, Str) else Str(name)
        return sp.Basic.__new__(cls, name, sp.sympify(rows), sp.sympify(cols), sp.Tuple(*tensor_shape))

    @property
    def tensor_shape(self) -> tuple:
        return tuple(self.args[3])


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
    if len(dst) > 2:
        return _bcast_tensor(m, tuple(src), tuple(dst))
    if len(src) == 1 and len(dst) == 2:  # a 1-D value lines up with the last axis: it is a row
        m, src = m.T, (1, src[0])
    if len(dst) == 1:  # (1,) -> (k,)
        return sp.MatMul(Ones(_dim(dst[0]), 1), m) if src[0] == 1 and dst[0] != 1 else m
    if src[0] == 1 and dst[0] != 1:
        m = sp.MatMul(Ones(_dim(dst[0]), 1), m)
    if src[1] == 1 and dst[1] != 1:
        m = sp.MatMul(m, Ones(1, _dim(dst[1])))
    return m


def _prod(dims) -> Any:
    return sp.Mul(*[_dim(d) for d in dims])


def _bcast_tensor(m, src: tuple, dst: tuple):
    """m of shape src broadcast to a rank > 2 dst, in the first-axis-by-the-rest form: along the first axis
    1_n r; along leading or trailing axes of the rest, Kronecker products with ones rows (a bias (1, c, 1, 1)
    over (n, c, h, w) is 1_n (b^T kron 1_{hw}^T)). A broadcast in the middle of the rest has no such form."""
    full = (1,) * (len(dst) - len(src)) + src
    if len(src) < len(dst):  # the value is one row of the aligned shape: its matrix as that row
        rows, cols = _mshape(src) or (sp.Integer(1), sp.Integer(1))
        if len(src) > 1 and rows != 1 and cols != 1:
            raise _no_form(f"broadcasting to {fmt_shape(dst)}", src)
        m = m.T if len(src) and cols == 1 and rows != 1 else m
    rest, drest = full[1:], dst[1:]
    moved = [k for k, (a, b) in enumerate(zip(rest, drest)) if a == 1 and b != 1]
    lead = 0
    while lead < len(rest) and rest[lead] == 1:
        lead += 1
    trail = len(rest)
    while trail > lead and rest[trail - 1] == 1:
        trail -= 1
    if any(lead <= k < trail for k in moved):
        raise _no_form(f"broadcasting to {fmt_shape(dst)}", src)
    pre, post = _prod(drest[:lead]), _prod(drest[trail:])
    if pre != 1:
        m = sp.KroneckerProduct(Ones(1, pre), m)
    if post != 1:
        m = sp.KroneckerProduct(m, Ones(1, post))
    if full[0] == 1 and dst[0] != 1:
        m = sp.MatMul(Ones(_dim(dst[0]), 1), m)
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
    return _body_to_matrix(t.body, t.env, _matrix_shape(t.shape))


def _is_bool(e) -> bool:
    """A comparison or a truth value (a Symbol is a Boolean to SymPy too, but it is a number here)."""
    return isinstance(e, Boolean) and not isinstance(e, sp.Expr)


def _body_to_matrix(body, env: dict, mshape: tuple):
    free = [d for d in env if d in body.free_symbols]
    if not free and _is_bool(body):
        body = indicator(body)
    if not free:  # a broadcast scalar: c 1 1^T
        return sp.MatMul(body, Ones(*mshape)) if body != 1 else Ones(*mshape)
    if body in env:
        return env[body]
    if _is_bool(body):  # a bool matrix is written as its 0/1 indicator
        return _body_to_matrix(indicator(body), env, mshape)
    if isinstance(body, sp.Pow) and body.base in env and body.exp.is_Integer:
        return sp.HadamardPower(env[body.base], body.exp)  # a∘k
    nonlinear = len(free) == 1 and sp.diff(body, free[0]).has(free[0])
    if isinstance(body, sp.Add) and not nonlinear:  # sums of matrices
        return sp.MatAdd(*[_body_to_matrix(a, env, mshape) for a in body.args], evaluate=True)
    if isinstance(body, sp.Mul):  # scalar coefficient times a Hadamard product
        coeff = [a for a in body.args if not (a.free_symbols & set(free))]
        rest = [a for a in body.args if a.free_symbols & set(free)]
        if len(rest) == 1 and not nonlinear or len(rest) > 1:
            parts = [_body_to_matrix(a, env, mshape) for a in rest]  # dJ/dh before phi'(z), as the book
            parts.sort(key=lambda m: isinstance(m, (ElementwiseFunction, ElementwiseMap)))
            core = parts[0] if len(parts) == 1 else sp.HadamardProduct(*parts)
            c = sp.Mul(*coeff)
            return core if c == 1 else sp.MatMul(c, core)
    if len(free) == 1:  # f applied elementwise: (t -> f(t))∘(M)
        d, m = free[0], env[free[0]]
        if m in _COMPOSE:  # h = tanh(z) kept: 1 - h∘h reads as phi'(z)
            inner, d, m = _COMPOSE[m]
            body = body.xreplace({free[0]: inner})
        t = _bound(0)
        return ElementwiseFunction(sp.Lambda(t, body.xreplace({d: t})), m)
    ts = [_bound(k + 1) for k in range(len(free))]
    return ElementwiseMap(sp.Lambda(tuple(ts), body.xreplace(dict(zip(free, ts)))), *[env[d] for d in free])


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
        return sp.Basic.__new__(cls, function, expr)  # no shortcut for 1 x 1 matrices: keep the form

    def _latex(self, printer):
        return _print_applied(printer, self.function, [self.expr], latex=True)

    def _sympystr(self, printer):
        return _print_applied(printer, self.function, [self.expr], latex=False)

    def _mathml_presentation(self, printer):
        return _mathml_applied(printer, self.function, [self.expr])


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

    def _mathml_presentation(self, printer):
        return _mathml_applied(printer, self.function, self.args[1:])


class _Latex(LatexPrinter):
    """SymPy's LaTeX with the book's Hadamard product: A odot B (the Hadamard product of the seeds)."""

    def _print_HadamardProduct(self, expr):
        return r" \odot ".join(self.parenthesize(a, PRECEDENCE["Pow"], strict=True) for a in expr.args)

    def _print_Inverse(self, expr):  # (A^T)^{-1} as the books write it: A^{-T}
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

    def _print_Heaviside(self, expr, exp=None):  # theta(u, 0) = [u > 0], Iverson's bracket
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
    if isinstance(fn.expr, (sp.Add, sp.Mul, sp.Piecewise)):  # (1 - tanh^2(z)) ∘ g needs its brackets
        out = rf"\left({out}\right)" if latex else f"({out})"
    return out


def _mathml_applied(printer, fn, mats):
    """Presentation MathML of f(M): the body's MathML with each variable's <mi> replaced by its matrix."""
    marks = {"gcarg" + "abcdefghijklmnopqrstuvwxyz"[k % 26] * (1 + k // 26): m for k, m in enumerate(mats)}
    body = printer._print(fn.expr.xreplace({v: sp.Symbol(k) for v, k in zip(fn.variables, marks)}))
    for mi in list(body.getElementsByTagName("mi")) if body.tagName != "mi" else [body]:
        text = mi.firstChild.nodeValue if mi.firstChild is not None else None
        if text in marks:
            m = marks[text]
            arg = printer._print(m)
            if not isinstance(m, sp.MatrixSymbol):
                arg = _mathml_fenced(printer, [arg])
            if mi is body:
                return arg
            mi.parentNode.replaceChild(arg, mi)
    return body


def _mathml_fenced(printer, parts, name: str | None = None):
    """<mrow>name ( a , b ) </mrow> in presentation MathML."""
    dom = printer.dom
    row = dom.createElement("mrow")
    if name is not None:
        mi = dom.createElement("mi")
        mi.appendChild(dom.createTextNode(html.escape(name, quote=False)))  # SymPy's text nodes are raw
        row.appendChild(mi)
    for k, text in enumerate(["("] + [","] * (len(parts) - 1) + [")"]):
        mo = dom.createElement("mo")
        mo.appendChild(dom.createTextNode(text))
        row.appendChild(mo)
        if k < len(parts):
            row.appendChild(parts[k])
    return row


def _mathml_call(self, printer):
    """An undefined function of an op in presentation MathML: name(args), or its operator between its
    operands where the op has one (a convolution: a ∗ b)."""
    args = [printer._print(a) for a in _value_args(self.op, self.operands)]
    if self.infix is None:
        return _mathml_fenced(printer, args, self.op.name)
    row = printer.dom.createElement("mrow")
    for k, part in enumerate(args):
        if k:
            mo = printer.dom.createElement("mo")
            mo.appendChild(printer.dom.createTextNode(self.infix[1]))
            row.appendChild(mo)
        row.appendChild(part)
    return row


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
    in_meta: tuple = ()  # (shape, dtype) of each operand, to call the op's kernel
    out_ndim: int = 2
    infix: tuple[str, str] | None = None  # the book's operator (LaTeX, MathML) between operands: X * W

    def __new__(cls, rows, cols, *operands):
        return sp.Basic.__new__(cls, sp.sympify(rows), sp.sympify(cols), *operands)

    @property
    def shape(self):
        return self.args[0], self.args[1]

    @property
    def operands(self):
        return self.args[2:]

    def _latex(self, printer):
        if self.infix is not None:
            operands = _value_args(self.op, self.operands)
            return f" {self.infix[0]} ".join(printer.parenthesize(a, PRECEDENCE["Mul"], strict=True) for a in operands)
        return _latex_call(self.op, self.operands, printer)

    def _sympystr(self, printer):
        return _str_call(self.op, self.operands, printer)

    _mathml_presentation = _mathml_call


class OpFunction(sp.Function):
    """A scalar-valued op with no matrix form (softmax_cross_entropy): an undefined function of its args."""

    op: Any = None
    in_meta: tuple = ()
    out_ndim: int = 0
    infix: tuple[str, str] | None = None  # never set for a scalar op today; _mathml_call reads it
    is_commutative = True  # a number, though its arguments are matrices: it may scale a matrix

    @property
    def operands(self):
        return self.args

    def _latex(self, printer, exp=None):
        s = _latex_call(self.op, self.args, printer)
        return s if exp is None else rf"{s}^{{{exp}}}"

    def _sympystr(self, printer):
        return _str_call(self.op, self.args, printer)

    _mathml_presentation = _mathml_call


def _value_args(op, args) -> list:
    """The operands an op reads the value of (one_hot's second operand gives only its shape)."""
    return [a for i, a in enumerate(args) if op.reads_value(i)]


def _latex_call(op, args, printer) -> str:
    inner = ", ".join(printer._print(a) for a in _value_args(op, args))
    return rf"\operatorname{{{op.name.replace('_', chr(92) + '_')}}}\left({inner}\right)"


def _str_call(op, args, printer) -> str:
    return f"{op.name}({', '.join(printer._print(a) for a in _value_args(op, args))})"


_OP_CLASSES: dict[tuple, type] = {}


def apply_undefined(node: Node, *terms: Term, infix: tuple[str, str] | None = None) -> Term:
    """node's op applied as an undefined function of its inputs' matrix forms (the rule for ops without one);
    `infix` is the book's operator for it, as (LaTeX, MathML): (r"\\ast", "∗") writes a convolution X * W."""
    meta = tuple((tuple(x.shape), x.dtype.str) for x in node.inputs)
    key = (node.op, meta, node.ndim, infix)
    cls = _OP_CLASSES.get(key)
    if cls is None:
        base = OpFunction if node.ndim == 0 else OpMatrix
        attrs = {"op": node.op, "in_meta": meta, "out_ndim": node.ndim, "infix": infix}
        if infix is not None:  # SymPy's printers read it: X * W is bracketed inside a product
            attrs["precedence"] = PRECEDENCE["Mul"]
        cls = _OP_CLASSES[key] = type(node.op.name, (base,), attrs)
    args = [to_matrix(t) for t in terms]
    if node.ndim == 0:
        return Term((), cls(*args), {})
    return of_matrix(node.shape, cls(*_matrix_shape(node.shape), *args))


# -- helpers the op rules call ------------------------------------------------------------------


def elementwise(node_or_shape, fn: Callable, *terms: Term) -> Term:
    """fn applied entry by entry to terms broadcast to the node's shape (fn takes and returns scalars)."""
    shape = tuple(node_or_shape.shape if hasattr(node_or_shape, "shape") else node_or_shape)
    ts = [_broadcast_term(t, shape) for t in terms]
    env = {}
    for t in ts:
        env.update(t.env)
    bodies = [t.body for t in ts]
    try:
        return Term(shape, fn(*bodies), env)
    except TypeError:  # arithmetic on a bool (x * [z > 0], as NumPy allows): the bool as its 0/1 indicator
        if not any(_is_bool(b) for b in bodies):
            raise
        return Term(shape, fn(*[indicator(b) if _is_bool(b) else b for b in bodies]), env)


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
        return of_matrix(node.shape, sp.MatMul(A, B))  # A B, A v
    if a.ndim == 1 and b.ndim == 2:
        return of_matrix(node.shape, sp.MatMul(B.T, A))  # (v^T B)^T = B^T v
    return of_matrix((), _as_scalar(sp.MatMul(A.T, B)))  # u . v = u^T v


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
    if src is None or dst is None:  # scalar <-> 1 x 1 matrix
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


def reduce_sum(node: Node | _Shape, x: Term, axis: tuple, keepdims: bool) -> Term:
    """sum(X) = 1^T X 1, or tr(A^T B) for the sum of a Hadamard product A∘B; axis sums are X^T 1 and X 1."""
    axis = tuple(sorted(axis))
    if not axis or x.ndim == 0:
        return Term(node.shape, x.body, x.env)
    if _is_scalar_body(x):  # c summed over k entries: k c
        k = sp.Mul(*[_dim(x.shape[a]) for a in axis])
        return Term(node.shape, k * x.body, {})
    if len(axis) == x.ndim:  # a full sum: a scalar
        return Term(node.shape, _full_sum(x), {})
    if x.ndim > 2 and not (axis == (0,) and keepdims or axis == tuple(range(1, x.ndim))):
        raise _no_form(f"sum over axes {axis}", x.shape)  # only 1^T X and X 1 keep the n x chw form
    m = to_matrix(x)
    rows, cols = _matrix_shape(x.shape)
    if axis == (0,):  # column sums
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
    mshape = _matrix_shape(x.shape)
    if len(factors) == 1 and isinstance(factors[0], sp.Pow) and factors[0].exp == 2:
        a = _body_to_matrix(factors[0].base, x.env, mshape)
        return coeff * sp.Trace(sp.MatMul(a.T, a))  # sum(A∘A) = tr(A^T A) = ||A||_F^2
    if len(factors) == 2:
        a, b = (_body_to_matrix(f, x.env, mshape) for f in factors)
        return coeff * sp.Trace(sp.MatMul(a.T, b))  # sum(A∘B) = tr(A^T B)
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
    axes = tuple(range(lead)) + tuple(lead + k for k, d in enumerate(node.shape) if d == 1 and g.shape[lead + k] != 1)
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
