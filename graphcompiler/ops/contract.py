"""Contractions: einsum (with tensordot and outer written as einsums), and einsum's derivative rule.

The op holds its subscripts in one explicit form, letters only: the ellipsis is spelled out with letters for
the ranks of the operands at hand, and the implicit output (no '->') is made explicit, so a file, a picture
and the derivative rule all read the same string. The derivative with respect to operand k is an einsum of g
with the other operands; letters only operand k has are broadcast back, and a repeated letter (a diagonal)
is put back on the diagonal with an identity matrix.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import DTypeError, ShapeError, fmt_shape
from ..graph import Node
from . import shape as S
from .base import Op, apply, broadcast_shapes, is_static

LETTERS = string.ascii_letters


def _split(subscripts: str) -> tuple[list[str], str]:
    ins, out = subscripts.split("->")
    return ins.split(","), out


def _check_canonical(subscripts: str) -> None:
    """The stored form: 'ab,bc->ac', letters only, an explicit output of distinct letters that occur in inputs."""
    if not isinstance(subscripts, str) or subscripts.count("->") != 1:
        raise ValueError(f"einsum subscripts {subscripts!r} must have the form 'ij,jk->ik'")
    ins, out = _split(subscripts)
    for term in ins + [out]:
        bad = [c for c in term if c not in LETTERS]
        if bad:
            raise ValueError(f"einsum subscripts {subscripts!r}: {bad[0]!r} is not a letter")
    if len(set(out)) != len(out):
        raise ValueError(f"einsum subscripts {subscripts!r}: the output repeats a letter")
    missing = set(out) - set("".join(ins))
    if missing:
        raise ValueError(f"einsum subscripts {subscripts!r}: output letter {min(missing)!r} is in no input")


def canonical(subscripts: str, ranks: Sequence[int]) -> str:
    """NumPy's einsum subscripts (implicit or explicit output, '...') -> the explicit, letters-only form."""
    if not isinstance(subscripts, str):
        raise ShapeError(f"einsum: subscripts must be a string such as 'ij,jk->ik', got {subscripts!r}")
    s = subscripts.replace(" ", "")
    if s.count("->") > 1:
        raise ShapeError(f"einsum: {subscripts!r} has more than one '->'")
    ins_s, out_s = s.split("->") if "->" in s else (s, None)
    ins = ins_s.split(",")
    if len(ins) != len(ranks):
        raise ShapeError(f"einsum: {subscripts!r} names {len(ins)} operands but {len(ranks)} were given")
    used = {c for c in s if c in LETTERS}
    for c in s:
        if c not in LETTERS and c not in ".,->":
            raise ShapeError(f"einsum: {subscripts!r}: {c!r} is not a letter; name axes with a-z, A-Z")
    # the ellipsis: the broadcast dims of every operand, right-aligned, named by unused letters
    ell_ranks = []
    for term, r in zip(ins, ranks):
        if term.count("...") > 1 or term.replace("...", "").count("."):
            raise ShapeError(f"einsum: {subscripts!r}: operand {term!r} has a stray '.' or two ellipses")
        n_letters = len(term.replace("...", ""))
        if "..." in term:
            if n_letters > r:
                raise ShapeError(f"einsum: operand {term!r} names {n_letters} axes of a rank-{r} operand")
            ell_ranks.append(r - n_letters)
        else:
            if n_letters != r:
                raise ShapeError(
                    f"einsum: {subscripts!r}: operand {term!r} names {n_letters} axes but the "
                    f"operand has rank {r}; give one letter per axis (or '...')"
                )
            ell_ranks.append(0)
    n_ell = max(ell_ranks, default=0)
    free = [c for c in LETTERS if c not in used]
    if n_ell > len(free):
        raise ShapeError(f"einsum: {subscripts!r}: too many axes to name with letters")
    ell = "".join(free[:n_ell])
    ins = [t.replace("...", ell[n_ell - k :] if k else "") for t, k in zip(ins, ell_ranks)]
    if out_s is None:  # implicit: the ellipsis, then letters seen once, sorted
        counts = {c: "".join(ins).count(c) for c in used}
        out = ell + "".join(sorted(c for c in used if counts[c] == 1))  # NumPy's order: A-Z, then a-z
    else:
        if out_s.count("...") > 1 or out_s.replace("...", "").count("."):
            raise ShapeError(f"einsum: {subscripts!r}: the output has a stray '.' or two ellipses")
        if "..." not in out_s and n_ell:
            raise ShapeError(
                f"einsum: {subscripts!r}: the operands have {n_ell} axes under '...' but the "
                "output has no '...' to put them; add '...' to the output"
            )
        out = out_s.replace("...", ell)
    result = ",".join(ins) + "->" + out
    try:
        _check_canonical(result)
    except ValueError as e:
        raise ShapeError(f"einsum: {subscripts!r}: {e}") from None
    return result


@functools.lru_cache(maxsize=256)
def _path(subscripts: str, shapes: tuple) -> list | bool:
    """The contraction order NumPy's optimiser picks, found once per (subscripts, shapes)."""
    if len(shapes) < 2 or max(int(np.prod(s)) for s in shapes) < 1024:
        return False  # small operands: C einsum beats a planned path's overhead
    stand_ins = [np.broadcast_to(np.empty(()), s) for s in shapes]  # the shapes, without their memory
    return np.einsum_path(subscripts, *stand_ins, optimize="greedy")[0]


@dataclass(frozen=True)
class Einsum(Op):
    name: ClassVar[str] = "einsum"
    subscripts: str = "->"

    def __post_init__(self):
        _check_canonical(self.subscripts)

    def infer(self, *xs):
        ins, out = _split(self.subscripts)
        if len(ins) != len(xs):
            raise ShapeError(f"einsum {self.subscripts!r} takes {len(ins)} operands, got {len(xs)}")
        for term, x in zip(ins, xs):
            if len(term) != x.ndim:
                raise ShapeError(
                    f"einsum {self.subscripts!r}: operand {term!r} names {len(term)} axes but "
                    f"{x.name!r} has shape {fmt_shape(x.shape)}"
                )
            if x.dtype == bool:
                raise DTypeError(f"einsum of the bool operand {x.name!r}; cast it with gc.astype")
        sizes = letter_sizes(self.subscripts, xs)
        return tuple(sizes[c] for c in out), np.result_type(*[x.dtype for x in xs])

    def kernel(self, *xs):
        out = np.einsum(self.subscripts, *xs, optimize=_path(self.subscripts, tuple(x.shape for x in xs)))
        # one operand gives a view ('ij->ji', 'ii->i'); the planner may reuse the input's buffer, so copy
        return np.array(out) if any(np.may_share_memory(out, x) for x in xs) else out

    def bprop(self, i, x, y, g):
        ins, out = _split(self.subscripts)
        mine = ins[i]
        others = [t for k, t in enumerate(ins) if k != i]
        seen = set(out).union(*others)
        unique = "".join(dict.fromkeys(mine))  # operand i's letters, each once, in order
        kept = "".join(c for c in unique if c in seen)  # letters g and the other operands carry
        rest = [v for k, v in enumerate(x) if k != i]
        gk = einsum(",".join([out, *others]) + "->" + kept, g, *rest)
        sizes = letter_sizes(self.subscripts, x)
        lonely = [k for k, c in enumerate(unique) if c not in seen]  # summed in operand i alone: broadcast
        if lonely:
            gk = S.expand_dims(gk, tuple(lonely))
        if unique == mine:
            # g and the other operands may be size 1 along a letter where operand i is not (they broadcast):
            # spread gk to the shape both share, then sum it back down where operand i was the one broadcast
            both = broadcast_shapes(gk.shape, x[i].shape)
            if gk.shape != both:
                gk = S.broadcast_to(gk, both) if is_static(both) else apply(S.BroadcastLike(), (gk, x[i]))
            return S.sum_to(gk, x[i])
        # a repeated letter (a diagonal, 'ii'): put gk back on the diagonal with identity matrices
        shape = tuple(sizes[c] for c in unique)
        if not is_static(shape) or not is_static(x[i].shape):
            raise ShapeError(
                f"the derivative of einsum {self.subscripts!r} with respect to {x[i].name!r} "
                f"(shape {fmt_shape(x[i].shape)}) takes a diagonal, which needs fixed sizes; "
                "declare the operand with a fixed shape"
            )
        if gk.shape != shape:
            gk = S.broadcast_to(gk, shape)
        fresh = iter(c for c in LETTERS if c not in self.subscripts)
        target, deltas, eyes, first = [], [], [], set()
        for c in mine:
            if c in first:
                d = next(fresh)
                target.append(d)
                deltas.append(c + d)
                eyes.append(np.eye(sizes[c], dtype=g.dtype))
            else:
                first.add(c)
                target.append(c)
        full = einsum(",".join([unique, *deltas]) + "->" + "".join(target), gk, *eyes)
        return S.sum_to(full, x[i])

    def to_sympy(self, node, *args):
        from ..symbolic_terms import apply_undefined, elementwise, of_matrix

        ins, out = _split(self.subscripts)
        if all(t == out for t in ins):  # 'ij,ij->ij': the Hadamard product A∘B
            return elementwise(node, lambda *v: _sp_mul(*v), *args)
        form = _matrix_form(self.subscripts, args)  # A B, A^T v, a b^T, tr(A^T B), tr A, A^T
        if form is None:
            return apply_undefined(node, *args)  # no matrix-calculus form: an undefined function
        return of_matrix(node.shape, form)


def _sp_mul(*factors):
    from ..symbolic_terms import sp

    return sp.Mul(*factors)


def _matrix_form(subscripts: str, terms):
    """The einsums that are matrix algebra, as a SymPy matrix (or scalar) expression; None for the others.

    Operands and result of rank 1 or 2 (1-D values are columns), each letter either in the output or in both
    operands: one shared letter is a product (A B, with transposes as the letters say), none an outer
    product, two shared letters and a scalar result tr(A^T B). One operand: A^T, or tr A for 'ii->'.
    """
    from ..symbolic_terms import sp, to_matrix

    ins, out = _split(subscripts)
    if len(ins) > 2 or len(out) > 2 or any(not 0 < len(t) <= 2 for t in ins):
        return None
    mats = [to_matrix(t) for t in terms]
    if len(ins) == 1:
        (a,), (m,) = ins, mats
        if len(a) == 2 and a[0] == a[1] and out == "":
            return sp.Trace(m)  # sum_i A_ii = tr A
        if len(a) == 2 and out == a[::-1]:
            return m.T  # A^T
        return None
    (a, b), (ma, mb) = ins, mats
    if len(set(a)) != len(a) or len(set(b)) != len(b):
        return None
    shared = set(a) & set(b)
    if shared & set(out) or (set(a) | set(b)) - shared != set(out):
        return None  # a batch or Hadamard letter, or a lone sum
    if len(shared) == 2:  # sum_ij A_ij B_ij = tr(A^T B)
        return sp.Trace(sp.MatMul(ma.T, mb if a == b else mb.T))
    if len(shared) == 1:
        (c,) = shared
        left = ma if a[-1] == c and len(a) == 2 else ma.T  # c as the column of the left factor
        right = mb if b[0] == c else mb.T  # c as the row of the right factor
        rows, cols = a.replace(c, ""), b.replace(c, "")
    elif len(a) == 1 and len(b) == 1:  # a b^T
        left, right, rows, cols = ma, mb.T, a, b
    else:
        return None
    prod = sp.MatMul(left, right)
    if out == "":
        return sp.Trace(prod)  # a 1 x 1 product: u^T v
    if out == rows + cols:
        return prod if rows or len(out) != 1 else prod.T  # a 1-D result is a column
    if out == cols + rows:
        return prod.T if rows else prod
    return None


def letter_sizes(subscripts: str, xs) -> dict:
    """Each letter's size: operands broadcast (sizes equal or 1, None matching any); a diagonal needs equal sizes."""
    ins, _ = _split(subscripts)
    sizes: dict = {}
    for term, x in zip(ins, xs):
        own: dict = {}
        for c, d in zip(term, x.shape):
            if c in own and d is not None and own[c] is not None and own[c] != d:
                raise ShapeError(
                    f"einsum {subscripts!r}: letter {c!r} appears twice in {term!r} with sizes "
                    f"{own[c]} and {d} ({x.name!r}, shape {fmt_shape(x.shape)}); a diagonal needs "
                    "equal sizes"
                )
            own[c] = d
            cur = sizes.get(c, d)
            if cur == 1 or cur is None and d is not None and d != 1:
                sizes[c] = d  # 1 broadcasts; a fixed size refines None
            elif d not in (cur, 1, None):
                raise ShapeError(
                    f"einsum {subscripts!r}: letter {c!r} has size {cur} in one operand and "
                    f"{d} in {x.name!r} (shape {fmt_shape(x.shape)}); sizes must be equal or 1"
                )
            else:
                sizes[c] = cur
    return sizes


# -- the public functions -------------------------------------------------------------------


def einsum(subscripts: str, *xs, name: str | None = None):
    """np.einsum(subscripts, *xs): explicit ('ij,jk->ik') or implicit ('ij,jk') output, '...' broadcasting."""
    if not xs:
        raise ShapeError("einsum needs at least one operand")
    ranks = [x.ndim if hasattr(x, "ndim") else np.ndim(x) for x in xs]
    return apply(Einsum(canonical(subscripts, ranks)), tuple(xs), name)


def tensordot(a, b, axes=2, name: str | None = None):
    """np.tensordot(a, b, axes): axes=N pairs a's last N axes with b's first N, or (a's axes, b's axes)."""
    na, nb = a.ndim if hasattr(a, "ndim") else np.ndim(a), b.ndim if hasattr(b, "ndim") else np.ndim(b)
    if isinstance(axes, (int, np.integer)) and not isinstance(axes, bool):
        n = int(axes)
        if not 0 <= n <= min(na, nb):
            raise ShapeError(f"tensordot: axes={n} needs both operands of rank >= {n}; they have ranks {na}, {nb}")
        pa, pb = list(range(na - n, na)), list(range(n))
    else:
        try:
            pa, pb = axes
            pa = [int(pa)] if isinstance(pa, (int, np.integer)) else list(pa)
            pb = [int(pb)] if isinstance(pb, (int, np.integer)) else list(pb)
        except (TypeError, ValueError):
            raise ShapeError(f"tensordot: axes must be an int or a pair of axis lists, got {axes!r}") from None
        if len(pa) != len(pb):
            raise ShapeError(f"tensordot: axes {axes!r} pair {len(pa)} axes of a with {len(pb)} of b")
        for p, r, who in ((pa, na, "a"), (pb, nb, "b")):
            for k, ax in enumerate(p):
                if not isinstance(ax, (int, np.integer)) or not -r <= ax < r:
                    raise ShapeError(f"tensordot: axis {ax!r} is out of range for {who} of rank {r}")
                p[k] = int(ax) % r
            if len(set(p)) != len(p):
                raise ShapeError(f"tensordot: repeated axis in {p} for {who}")
    la = LETTERS[:na]
    lb = list(LETTERS[na : na + nb])
    for ia, ib in zip(pa, pb):
        lb[ib] = la[ia]
    out = "".join(c for k, c in enumerate(la) if k not in pa) + "".join(c for k, c in enumerate(lb) if k not in pb)
    return apply(Einsum(f"{la},{''.join(lb)}->{out}"), (a, b), name)


def outer(a, b, name: str | None = None):
    """np.outer(a, b): a and b flattened, result[i, j] = a[i] b[j]."""
    return apply(Einsum("i,j->ij"), (_flat(a), _flat(b)), name)


def _flat(v):
    """v as a vector (np.outer flattens its operands)."""
    nd = v.ndim if hasattr(v, "ndim") else np.ndim(v)
    if nd == 1:
        return v
    return S.reshape(v, (-1,)) if isinstance(v, Node) else np.ravel(v)
