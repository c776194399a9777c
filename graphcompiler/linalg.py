"""gc.linalg: linear algebra with numpy.linalg's names, batched over leading axes, differentiable to any order."""

from .ops.linalg import matmul
from .ops.linalg_ops import (
    EighResult,
    SlogdetResult,
    cholesky,
    det,
    eigh,
    inv,
    norm,
    slogdet,
    solve,
    svdvals,
    triangular_solve,
    tril,
    triu,
)

__all__ = [
    "cholesky",
    "det",
    "eigh",
    "inv",
    "matmul",
    "norm",
    "slogdet",
    "solve",
    "svdvals",
    "triangular_solve",
    "tril",
    "triu",
    "EighResult",
    "SlogdetResult",
]
