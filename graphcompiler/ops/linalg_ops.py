"""gc.linalg's ops: solve, inv, det, slogdet, cholesky, triangular_solve, eigh, svdvals (and norm, built on them).

One block per op, batched over leading axes as numpy.linalg is (a stack of matrices is (..., n, n)). Each
derivative is the textbook matrix-calculus result written with graph ops (solves, products, transposes,
masks), so a gradient can be differentiated again:

    x = A^{-1} b          b_bar = A^{-T} g,                  A_bar = -b_bar x^T
    Y = A^{-1}            A_bar = -Y^T G Y^T
    d = det A             A_bar = g d A^{-T}                 (log|det A|: g A^{-T}; its sign: no gradient)
    L = chol(A)           A_bar = sym(L^{-T} Phi(L^T L_bar) L^{-1})         (Murray 2016)
    x = L^{-1} b          b_bar = L^{-T} g,                  A_bar = tril(-b_bar x^T)
    (w, V) = eigh(A)      A_bar = sym(V (diag(w_bar) + F o (V^T V_bar)) V^T),  F_ij = 1 / (w_j - w_i)
    s = svdvals(A)        A_bar = U diag(s_bar) V^T

Phi takes the lower triangle with the diagonal halved; sym(X) = (X + X^T)/2. cholesky and eigh read only the
lower triangle of their input, as numpy.linalg does: their derivatives are for symmetric perturbations (the
convention of JAX and PyTorch), so differentiate through a symmetric parametrisation such as (B + B^T)/2.
eigh's eigenvector derivative needs distinct eigenvalues (a repeated one raises NumericsError when run).

A matrix that LAPACK cannot factor at run time (a singular one for solve, inv and triangular_solve; one that
is not positive definite for cholesky) raises NumericsError naming the step; det of a singular matrix is 0.
"""

from __future__ import annotations

import math
from collections import namedtuple
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import DTypeError, GraphCompilerError, ShapeError, fmt_shape
from .base import Op, apply, broadcast_shapes, normalize_axes
from .linalg import matmul
from . import elementwise as E
from . import reduce as R
from . import shape as S

SlogdetResult = namedtuple("SlogdetResult", "sign logabsdet")  # as numpy.linalg.slogdet returns
EighResult = namedtuple("EighResult", "eigenvalues eigenvectors")  # as numpy.linalg.eigh returns


# -- shared shape rules and run-time checks ---------------------------------------------------------


def _float(x, what: str) -> np.dtype:
    if x.dtype.kind != "f":
        raise DTypeError(
            f"{what} needs floating matrices, got {x.dtype} from {x.name!r}; "
            f"cast it with gc.astype({x.name}, 'float64')"
        )
    return x.dtype


def _square(a, what: str) -> tuple[tuple, Any]:
    """The batch dims and the size n of a stack of square matrices (..., n, n)."""
    _float(a, what)
    if a.ndim < 2:
        raise ShapeError(
            f"{what} needs a matrix or a stack of matrices (..., n, n); {a.name!r} has shape {fmt_shape(a.shape)}"
        )
    m, n = a.shape[-2:]
    if m is not None and n is not None and m != n:
        raise ShapeError(
            f"{what} needs square matrices; {a.name!r} has shape {fmt_shape(a.shape)} ({m} x {n} matrices)"
        )
    return tuple(a.shape[:-2]), n if n is not None else m


def _rhs_shape(a, b, what: str) -> tuple:
    """The result shape of solving A x = b, by NumPy 2's rule (the installed NumPy's; the kernels keep it on
    NumPy 1.26 too): a 1-D b is one vector (broadcast against every
    matrix of A); otherwise b is a stack of matrices (..., n, k) whose batch dims broadcast with A's."""
    batch, n = _square(a, what)
    _float(b, what)
    if b.ndim == 0:
        raise ShapeError(f"the right-hand side {b.name!r} is a scalar; give a vector (n,) or a matrix (..., n, k)")
    nb = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if n is not None and nb is not None and n != nb:
        where = "its length" if b.ndim == 1 else "its second-to-last dim"
        raise ShapeError(
            f"{a.name!r} holds {n} x {n} matrices but the right-hand side {b.name!r} "
            f"(shape {fmt_shape(b.shape)}) has {nb} rows ({where}); they must be equal"
        )
    n = n if n is not None else nb
    if b.ndim == 1:
        return batch + (n,)
    return broadcast_shapes(batch, tuple(b.shape[:-2])) + (n, b.shape[-1])


def _lapack(fn, what: str, hint: str, a: np.ndarray, *args, **kw) -> np.ndarray:
    """Call a LAPACK routine; on failure say which matrix of a stack failed and what to do (the evaluator
    reports a LinAlgError as a NumericsError naming the step)."""
    try:
        return fn(a, *args, **kw)
    except np.linalg.LinAlgError as e:
        where = ""
        if a.ndim > 2:  # the error path only: find the first matrix that fails
            for k in np.ndindex(a.shape[:-2]):
                try:
                    fn(a[k], *[x[k] if np.ndim(x) == a.ndim else x for x in args], **kw)
                except np.linalg.LinAlgError:
                    where = f" (matrix {k} of the stack of shape {fmt_shape(a.shape)})"
                    break
                except Exception:
                    break
        raise np.linalg.LinAlgError(f"{what}: {e}{where}; {hint}") from None


def _np2_solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """numpy.linalg.solve with NumPy 2's rule for b on any NumPy (1.26 read a b of rank a.ndim - 1 as vectors)."""
    if b.ndim == 1:
        return np.linalg.solve(a, b[..., None])[..., 0]
    if b.ndim == a.ndim - 1:
        b = b[None]
    return np.linalg.solve(a, b)


SMALL_TRIANGULAR = 64  # stacks of matrices up to this size are solved by LU in one call, larger ones by trsm


def _solve_triangular(a: np.ndarray, b: np.ndarray, lower: bool, trans: int) -> np.ndarray:
    """scipy.linalg.solve_triangular over broadcast stacks, with solve's rule for b (any SciPy version)."""
    from scipy.linalg import solve_triangular  # SciPy loads on first use, not with graphcompiler

    dtype = np.result_type(a.dtype, b.dtype)
    if a.ndim == 2 and b.ndim <= 2:
        return solve_triangular(a, b, lower=lower, trans=trans, check_finite=False).astype(dtype, copy=False)
    n = a.shape[-1]
    if n <= SMALL_TRIANGULAR:  # a stack of small matrices: NumPy's solve loops in C (400x faster at n=3)
        t = np.tril(a) if lower else np.triu(a)
        if np.any(np.diagonal(t, axis1=-2, axis2=-1) == 0):
            raise np.linalg.LinAlgError("singular matrix: a zero on the diagonal")
        return _np2_solve(np.swapaxes(t, -1, -2) if trans else t, b).astype(dtype, copy=False)
    bm = b[:, None] if b.ndim == 1 else b
    batch = np.broadcast_shapes(a.shape[:-2], bm.shape[:-2])
    a_all = np.broadcast_to(a, batch + a.shape[-2:])
    b_all = np.broadcast_to(bm, batch + bm.shape[-2:])
    out = np.empty(batch + bm.shape[-2:], dtype)
    for k in np.ndindex(batch):
        out[k] = solve_triangular(a_all[k], b_all[k], lower=lower, trans=trans, check_finite=False)
    return out[..., 0] if b.ndim == 1 else out


_SINGULAR = "a singular matrix has no inverse: check that it has full rank, or add a small multiple of the identity"


def _solve_like(fn, g, b):
    """fn(g) for the gradient g of a solve whose right-hand side b was one vector: a stack of vectors
    (..., n) is solved as the columns (..., n, 1), so A's batch dims never read g's last axis as rows."""
    if b.ndim == 1 and g.ndim > 1:
        return S.squeeze(fn(S.expand_dims(g, -1)), -1)
    return fn(g)


def _outer(u, v):
    """u v^T for stacks of vectors (..., n), (..., m) -> (..., n, m)."""
    return E.multiply(S.expand_dims(u, -1), S.expand_dims(v, -2))


def _sym(x):
    """(X + X^T) / 2: the part of a gradient that a symmetric perturbation sees."""
    return E.multiply(E.add(x, S.swapaxes_last(x)), 0.5)


# -- solve ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Solve(Op):
    """x = A^{-1} b for a square A (numpy.linalg.solve)."""

    name: ClassVar[str] = "solve"
    arity: ClassVar[int] = 2

    def infer(self, a, b):
        return _rhs_shape(a, b, "solve"), np.result_type(a.dtype, b.dtype)

    def kernel(self, a, b):
        return _lapack(_np2_solve, "solve", _SINGULAR, a, b)

    def bprop(self, i, x, y, g):
        a, b = x
        gb = _solve_like(lambda r: solve(S.swapaxes_last(a), r), g, b)  # b_bar = A^{-T} g
        if i == 1:
            return S.sum_to(gb, b)
        ga = _outer(gb, y) if b.ndim == 1 else matmul(gb, S.swapaxes_last(y))
        return S.sum_to(E.negative(ga), a)  # A_bar = -b_bar x^T

    def to_sympy(self, node, a, b):
        from ..symbolic_terms import of_matrix, sp, to_matrix

        return of_matrix(node.shape, sp.MatMul(sp.Inverse(to_matrix(a)), to_matrix(b)))  # A^{-1} b


# -- inv -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inv(Op):
    """A^{-1} (numpy.linalg.inv)."""

    name: ClassVar[str] = "inv"
    arity: ClassVar[int] = 1

    def infer(self, a):
        _square(a, "inv")
        return a.shape, a.dtype

    def kernel(self, a):
        return _lapack(np.linalg.inv, "inv", _SINGULAR, a)

    def bprop(self, i, x, y, g):
        yt = S.swapaxes_last(y)
        return E.negative(matmul(matmul(yt, g), yt))  # A_bar = -A^{-T} G A^{-T}

    def to_sympy(self, node, a):
        from ..symbolic_terms import of_matrix, sp, to_matrix

        return of_matrix(node.shape, sp.Inverse(to_matrix(a)))  # A^{-1}


# -- det, slogdet --------------------------------------------------------------------------------------


def _inv_t(a):
    return S.swapaxes_last(inv(a))


def _scale_matrices(s, m):
    """s[..., None, None] * M: one scalar per matrix of a stack."""
    return E.multiply(S.expand_dims(s, (-2, -1)), m)


@dataclass(frozen=True)
class Det(Op):
    """det A (numpy.linalg.det); 0 for a singular matrix, whose derivative (needing A^{-1}) then raises."""

    name: ClassVar[str] = "det"
    arity: ClassVar[int] = 1

    def infer(self, a):
        batch, _ = _square(a, "det")
        return batch, a.dtype

    def kernel(self, a):
        return np.asarray(np.linalg.det(a))

    def bprop(self, i, x, y, g):
        return _scale_matrices(E.multiply(g, y), _inv_t(x[0]))  # A_bar = g det(A) A^{-T}

    def to_sympy(self, node, a):
        from ..symbolic_terms import Term, sp, to_matrix

        return Term((), sp.Determinant(to_matrix(a)), {})  # |A|


@dataclass(frozen=True)
class SlogdetSign(Op):
    """The sign of det A (-1, 0 or 1, numpy.linalg.slogdet's first result): piecewise constant."""

    name: ClassVar[str] = "slogdet_sign"
    arity: ClassVar[int] = 1
    piecewise_constant: ClassVar[bool] = True

    def infer(self, a):
        batch, _ = _square(a, "slogdet")
        return batch, a.dtype

    def kernel(self, a):
        return np.asarray(np.linalg.slogdet(a)[0])

    def to_sympy(self, node, a):
        from ..symbolic_terms import Term, sp, to_matrix

        return Term((), sp.sign(sp.Determinant(to_matrix(a))), {})  # sign |A|


@dataclass(frozen=True)
class Logabsdet(Op):
    """log |det A| (numpy.linalg.slogdet's second result): -inf for a singular matrix."""

    name: ClassVar[str] = "logabsdet"
    arity: ClassVar[int] = 1

    def infer(self, a):
        batch, _ = _square(a, "slogdet")
        return batch, a.dtype

    def kernel(self, a):
        return np.asarray(np.linalg.slogdet(a)[1])

    def bprop(self, i, x, y, g):
        return _scale_matrices(g, _inv_t(x[0]))  # A_bar = g A^{-T}

    def to_sympy(self, node, a):
        from ..symbolic_terms import Term, sp, to_matrix

        return Term((), sp.log(sp.Abs(sp.Determinant(to_matrix(a)))), {})  # log ||A||


# -- triangles, cholesky, triangular_solve -----------------------------------------------------------


@dataclass(frozen=True)
class Triangle(Op):
    """The lower (or upper) triangle of each matrix with its diagonal times `diag`: tril, triu, and the
    Phi of the Cholesky derivative (diag=0.5). A linear mask, its own adjoint."""

    name: ClassVar[str] = "triangle"
    arity: ClassVar[int] = 1
    lower: bool = True
    diag: float = 1.0

    def infer(self, x):
        if x.ndim < 2:
            raise ShapeError(f"triangle needs matrices (..., m, n); {x.name!r} has shape {fmt_shape(x.shape)}")
        return x.shape, x.dtype

    def kernel(self, x):
        out = np.tril(x) if self.lower else np.triu(x)
        if self.diag != 1.0:
            k = np.arange(min(x.shape[-2:]))
            out[..., k, k] *= self.diag
        return out

    def bprop(self, i, x, y, g):
        return triangle(g, self.lower, self.diag)  # a mask is self-adjoint

    def to_sympy(self, node, x):
        from ..symbolic_terms import apply_undefined

        return apply_undefined(node, x)  # no matrix-calculus form: an undefined function


def triangle(x, lower: bool = True, diag: float = 1.0, name: str | None = None):
    return apply(Triangle(bool(lower), float(diag)), (x,), name)


def tril(x, name: str | None = None):
    """The lower triangle of each matrix (numpy.tril with k=0)."""
    return triangle(x, True, 1.0, name)


def triu(x, name: str | None = None):
    """The upper triangle of each matrix (numpy.triu with k=0)."""
    return triangle(x, False, 1.0, name)


_NOT_PD = (
    "cholesky needs a symmetric positive definite matrix: check the matrix, and add a small multiple of "
    "the identity (jitter, e.g. 1e-6 I) to its diagonal if rounding makes it indefinite"
)


@dataclass(frozen=True)
class Cholesky(Op):
    """L with A = L L^T, L lower triangular (numpy.linalg.cholesky; reads A's lower triangle)."""

    name: ClassVar[str] = "cholesky"
    arity: ClassVar[int] = 1

    def infer(self, a):
        _square(a, "cholesky")
        return a.shape, a.dtype

    def kernel(self, a):
        return _lapack(np.linalg.cholesky, "cholesky", _NOT_PD, a)

    def bprop(self, i, x, y, g):
        # A_bar = sym(L^{-T} P L^{-1}) with P = Phi(L^T L_bar): two triangular solves, no inverse
        p = triangle(matmul(S.swapaxes_last(y), g), lower=True, diag=0.5)
        s = triangular_solve(y, p, lower=True, transpose_a=True)  # L^{-T} P
        a_bar = S.swapaxes_last(triangular_solve(y, S.swapaxes_last(s), lower=True, transpose_a=True))
        return _sym(a_bar)  # (L^{-T} S^T)^T = S L^{-1}

    def to_sympy(self, node, a):
        from ..symbolic_terms import apply_undefined

        return apply_undefined(node, a)  # no closed form: an undefined function chol(A)


@dataclass(frozen=True)
class TriangularSolve(Op):
    """x = A^{-1} b (or A^{-T} b) reading only A's lower (or upper) triangle (scipy.linalg.solve_triangular),
    with numpy.linalg.solve's rule for b."""

    name: ClassVar[str] = "triangular_solve"
    arity: ClassVar[int] = 2
    lower: bool = True
    transpose_a: bool = False

    def infer(self, a, b):
        return _rhs_shape(a, b, "triangular_solve"), np.result_type(a.dtype, b.dtype)

    def kernel(self, a, b):
        return _lapack(
            _solve_triangular,
            "triangular_solve",
            "a zero on the diagonal makes a triangular matrix singular",
            a,
            b,
            lower=self.lower,
            trans=1 if self.transpose_a else 0,
        )

    def bprop(self, i, x, y, g):
        a, b = x
        gb = _solve_like(lambda r: triangular_solve(a, r, self.lower, not self.transpose_a), g, b)  # op(A)^{-T} g
        if i == 1:
            return S.sum_to(gb, b)
        if b.ndim == 1:  # -b_bar x^T, or -x b_bar^T for A^T
            ga = _outer(y, gb) if self.transpose_a else _outer(gb, y)
        else:
            ga = matmul(y, S.swapaxes_last(gb)) if self.transpose_a else matmul(gb, S.swapaxes_last(y))
        return S.sum_to(triangle(E.negative(ga), self.lower), a)  # only the triangle read has a gradient

    def to_sympy(self, node, a, b):
        from ..symbolic_terms import of_matrix, sp, to_matrix

        A = to_matrix(a)
        inv_a = sp.Inverse(sp.Transpose(A) if self.transpose_a else A)
        return of_matrix(node.shape, sp.MatMul(inv_a, to_matrix(b)))  # A^{-1} b, A^{-T} b


# -- eigh ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EighValues(Op):
    """The eigenvalues of a symmetric matrix, ascending (numpy.linalg.eigh's first result)."""

    name: ClassVar[str] = "eigh_values"
    arity: ClassVar[int] = 1

    def infer(self, a):
        batch, n = _square(a, "eigh")
        return batch + (n,), a.dtype

    def kernel(self, a):  # eigvalsh: LAPACK skips the eigenvectors when only values are wanted
        return _lapack(np.linalg.eigvalsh, "eigh", "the eigenvalue iteration did not converge", a)

    def bprop(self, i, x, y, g):
        v = eigh_vectors(x[0])
        return matmul(E.multiply(v, S.expand_dims(g, -2)), S.swapaxes_last(v))  # A_bar = V diag(g) V^T

    def to_sympy(self, node, a):
        from ..symbolic_terms import apply_undefined

        return apply_undefined(node, a)  # no closed form: an undefined function


@dataclass(frozen=True)
class EighVectors(Op):
    """The orthonormal eigenvectors (columns) of a symmetric matrix (numpy.linalg.eigh's second result)."""

    name: ClassVar[str] = "eigh_vectors"
    arity: ClassVar[int] = 1

    def infer(self, a):
        _square(a, "eigh")
        return a.shape, a.dtype

    def kernel(self, a):
        return _lapack(np.linalg.eigh, "eigh", "the eigenvalue iteration did not converge", a)[1]

    def bprop(self, i, x, y, g):
        f = apply(EighGap(), (eigh_values(x[0]),))
        inner = E.multiply(f, matmul(S.swapaxes_last(y), g))  # F o (V^T V_bar)
        return _sym(matmul(matmul(y, inner), S.swapaxes_last(y)))  # sym(V (F o V^T V_bar) V^T)

    def to_sympy(self, node, a):
        from ..symbolic_terms import apply_undefined

        return apply_undefined(node, a)  # no closed form: an undefined function


@dataclass(frozen=True)
class EighGap(Op):
    """F_ij = 1 / (w_j - w_i) off the diagonal, 0 on it: the eigenvector derivative's weights. Raises for a
    repeated eigenvalue, where the eigenvectors (and so their derivative) are not unique."""

    name: ClassVar[str] = "eigh_gap"
    arity: ClassVar[int] = 1

    def infer(self, w):
        _float(w, "eigh_gap")
        if w.ndim < 1:
            raise ShapeError(f"eigh_gap needs eigenvalues (..., n); {w.name!r} is a scalar")
        return w.shape + (w.shape[-1],), w.dtype

    def kernel(self, w):
        d = w[..., None, :] - w[..., :, None]  # d_ij = w_j - w_i
        off = ~np.eye(w.shape[-1], dtype=bool)
        if np.any((d == 0) & off):
            raise np.linalg.LinAlgError(
                "eigh: a repeated eigenvalue makes the eigenvectors, and so their derivative, not unique; "
                "differentiate only the eigenvalues, or a function of the eigenvectors that does not depend on "
                "the basis chosen within an eigenspace"
            )
        return np.divide(1.0, d, out=np.zeros_like(d), where=off)

    def bprop(self, i, x, y, g):
        h = E.multiply(g, E.square(y))  # dF_ij = F_ij^2 (dw_i - dw_j)
        return E.subtract(R.sum(h, axis=-1), R.sum(h, axis=-2))

    def to_sympy(self, node, w):
        from ..symbolic_terms import apply_undefined

        return apply_undefined(node, w)  # no matrix-calculus form: an undefined function


# -- singular values -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Svdvals(Op):
    """The singular values, descending (numpy.linalg.svdvals). Its derivative U diag(g) V^T is written
    through eigh of the smaller Gram matrix (U = A V diag(1/s)), so it needs distinct, non-zero singular
    values and static matrix dims."""

    name: ClassVar[str] = "svdvals"
    arity: ClassVar[int] = 1

    def infer(self, a):
        _float(a, "svdvals")
        if a.ndim < 2:
            raise ShapeError(f"svdvals needs matrices (..., m, n); {a.name!r} has shape {fmt_shape(a.shape)}")
        m, n = a.shape[-2:]
        k = None if m is None or n is None else min(m, n)
        return tuple(a.shape[:-2]) + (k,), a.dtype

    def kernel(self, a):
        return _lapack(np.linalg.svd, "svdvals", "the SVD iteration did not converge", a, compute_uv=False)

    def bprop(self, i, x, y, g):
        a = x[0]
        m, n = a.shape[-2:]
        if m is None or n is None:
            raise GraphCompilerError(
                f"the derivative of svdvals of {a.name!r} (shape {fmt_shape(a.shape)}) "
                "needs the matrix dims fixed when the graph is built"
            )
        at = S.swapaxes_last(a)
        ratio = E.divide(g, y)  # g / s
        if m >= n:  # V from A^T A: A_bar = A V diag(g/s) V^T
            v = S.getitem(eigh_vectors(matmul(at, a)), (Ellipsis, slice(None, None, -1)))
            return matmul(a, matmul(E.multiply(v, S.expand_dims(ratio, -2)), S.swapaxes_last(v)))
        u = S.getitem(eigh_vectors(matmul(a, at)), (Ellipsis, slice(None, None, -1)))
        return matmul(matmul(E.multiply(u, S.expand_dims(ratio, -2)), S.swapaxes_last(u)), a)  # U diag U^T A

    def to_sympy(self, node, a):
        from ..symbolic_terms import apply_undefined

        return apply_undefined(node, a)  # no closed form: an undefined function


# -- the public functions (gc.linalg) --------------------------------------------------------------------


def solve(a, b, name: str | None = None):
    """x with A x = b (numpy.linalg.solve): b a vector (n,) or a stack of matrices (..., n, k), NumPy 2's
    rule. A singular matrix raises NumericsError when the program runs."""
    return apply(Solve(), (a, b), name)


def inv(a, name: str | None = None):
    """The inverse of each matrix (numpy.linalg.inv)."""
    return apply(Inv(), (a,), name)


def det(a, name: str | None = None):
    """The determinant of each matrix (numpy.linalg.det)."""
    return apply(Det(), (a,), name)


def slogdet(a, name: str | None = None) -> SlogdetResult:
    """(sign, logabsdet) of each matrix (numpy.linalg.slogdet): two nodes, named name_sign, name_logabsdet."""
    return SlogdetResult(
        apply(SlogdetSign(), (a,), name and f"{name}_sign"), apply(Logabsdet(), (a,), name and f"{name}_logabsdet")
    )


def cholesky(a, upper: bool = False, name: str | None = None):
    """The lower Cholesky factor L of each symmetric positive definite matrix, A = L L^T
    (numpy.linalg.cholesky; upper=True gives L^T). Reads only A's lower triangle; the derivative is the
    symmetric one (for symmetric perturbations of A). A matrix that is not positive definite raises
    NumericsError when the program runs."""
    if upper:
        return S.transpose(apply(Cholesky(), (a,)), _swap_last(a.ndim), name=name)
    return apply(Cholesky(), (a,), name)


def triangular_solve(a, b, lower: bool = True, transpose_a: bool = False, name: str | None = None):
    """x with A x = b (A^T x = b with transpose_a) for triangular A, reading only its lower (or upper)
    triangle (scipy.linalg.solve_triangular); b as in solve."""
    return apply(TriangularSolve(bool(lower), bool(transpose_a)), (a, b), name)


def eigh_values(a, name: str | None = None):
    return apply(EighValues(), (a,), name)


def eigh_vectors(a, name: str | None = None):
    return apply(EighVectors(), (a,), name)


def eigh(a, name: str | None = None) -> EighResult:
    """(eigenvalues ascending, eigenvectors as columns) of each symmetric matrix (numpy.linalg.eigh, reading
    the lower triangle): two nodes, named name_eigenvalues, name_eigenvectors.

    The derivative assumes a symmetric perturbation (the gradient returned is symmetric: differentiate through
    a symmetric parametrisation such as (B + B^T)/2), and the eigenvectors' derivative assumes distinct
    eigenvalues: a repeated one raises NumericsError when that derivative runs. Each eigenvector's sign is
    LAPACK's choice, so a function of the eigenvectors should not depend on it."""
    return EighResult(eigh_values(a, name and f"{name}_eigenvalues"), eigh_vectors(a, name and f"{name}_eigenvectors"))


def svdvals(a, name: str | None = None):
    """The singular values of each matrix, descending (numpy.linalg.svdvals)."""
    return apply(Svdvals(), (a,), name)


def _swap_last(ndim: int) -> tuple:
    axes = list(range(ndim))
    axes[-1], axes[-2] = axes[-2], axes[-1]
    return tuple(axes)


# -- norm: NumPy's definitions, composed of graph ops ----------------------------------------------------

VECTOR_ORDS = "None, 2, 1, inf, -inf, 0 or any other non-zero number p"
MATRIX_ORDS = "None, 'fro', 'nuc', 1, -1, 2, -2, inf, -inf"


def norm(x, ord=None, axis=None, keepdims: bool = False, name: str | None = None):
    """numpy.linalg.norm: a vector norm over one axis, a matrix norm over two, or the 2-norm of all entries.

    Vector ords: None/2 (sqrt of the sum of squares), 1, inf, -inf, 0 (the count of non-zeros: no gradient),
    any other p ((sum |x|^p)^(1/p)). Matrix ords: None/'fro', 'nuc' (sum of singular values), 1/-1 (max/min
    column sum of |x|), inf/-inf (max/min row sum), 2/-2 (largest/smallest singular value). Built of graph
    ops, so every derivative is the ops' own: max shares among ties, |x| has derivative 0 at 0, the 2-norm of
    a zero vector has no derivative (NaN, as in JAX), and 'nuc', 2, -2 need distinct non-zero singular values.
    """
    if x.dtype.kind != "f":
        x = E.astype(x, "float64")
    nd = x.ndim
    if axis is None:
        if ord is None:  # the 2-norm of every entry
            return E.sqrt(R.sum(E.square(x), axis=None, keepdims=keepdims), name=name)
        if nd not in (1, 2):
            raise ShapeError(
                f"norm: ord={ord!r} needs axis= for {x.name!r} of shape {fmt_shape(x.shape)} "
                "(a vector or matrix norm is of a 1-D or 2-D value; give axis=k or axis=(j, k))"
            )
        axis = tuple(range(nd))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    if len(axes) not in (1, 2):
        raise ShapeError(f"norm: axis={axis!r} names {len(axes)} axes; give one (a vector norm) or two (a matrix norm)")
    normalize_axes(axes, nd, "norm", x)  # range and repeat checks
    axes = tuple(int(a) % nd for a in axes)
    if len(axes) == 1:
        return _vector_norm(x, ord, axes[0], keepdims, name)
    return _matrix_norm(x, ord, axes, keepdims, name)


def _is_number(ord) -> bool:
    return isinstance(ord, (int, float, np.integer, np.floating)) and not isinstance(ord, bool)


def _vector_norm(x, ord, ax: int, keepdims: bool, name):
    if ord is not None and not _is_number(ord):
        raise ShapeError(f"norm: invalid order {ord!r} for vectors; use one of {VECTOR_ORDS}")
    if ord is None or ord == 2:
        return E.sqrt(R.sum(E.square(x), axis=ax, keepdims=keepdims), name=name)
    if ord == math.inf:
        return R.max(E.abs(x), axis=ax, keepdims=keepdims, name=name)
    if ord == -math.inf:  # min |x| = -max(-|x|)
        return E.negative(R.max(E.negative(E.abs(x)), axis=ax, keepdims=keepdims), name=name)
    if ord == 0:  # the count of non-zeros
        return R.sum(E.astype(E.not_equal(x, 0.0), x.dtype), axis=ax, keepdims=keepdims, name=name)
    if ord == 1:
        return R.sum(E.abs(x), axis=ax, keepdims=keepdims, name=name)
    p = float(ord)
    return E.power(R.sum(E.power(E.abs(x), p), axis=ax, keepdims=keepdims), 1.0 / p, name=name)


def _matrix_norm(x, ord, axes: tuple, keepdims: bool, name):
    row, col = axes
    nd = x.ndim
    if ord is None or ord == "fro":
        return E.sqrt(R.sum(E.square(x), axis=axes, keepdims=keepdims), name=name)
    if ord == "nuc" or _is_number(ord) and ord in (2, -2):
        rest = tuple(k for k in range(nd) if k not in axes)  # the matrix axes last, as NumPy does
        s = svdvals(x if (row, col) == (nd - 2, nd - 1) else S.transpose(x, rest + (row, col)))
        if keepdims:
            r = R.sum(s, axis=-1) if ord == "nuc" else S.getitem(s, (Ellipsis, 0 if ord == 2 else -1))
            return S.expand_dims(r, tuple(sorted(axes)), name=name)
        if ord == "nuc":
            return R.sum(s, axis=-1, name=name)
        return S.getitem(s, (Ellipsis, 0 if ord == 2 else -1), name=name)  # largest or smallest (descending)
    if _is_number(ord) and ord in (1, -1, math.inf, -math.inf):
        first, second = (row, col) if ord in (1, -1) else (col, row)  # 1: column sums; inf: row sums
        sums = R.sum(E.abs(x), axis=first, keepdims=True)
        if ord > 0:
            kept = R.max(sums, axis=second, keepdims=True)
        else:  # min = -max(-s)
            kept = E.negative(R.max(E.negative(sums), axis=second, keepdims=True))
        if keepdims:
            return kept if name is None else E.identity(kept, name=name)
        return S.squeeze(kept, axes, name=name)
    raise ShapeError(f"norm: invalid order {ord!r} for matrices; use one of {MATRIX_ORDS}")
