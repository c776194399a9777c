"""graphcompiler: a symbol-to-symbol differentiation compiler on NumPy (the public API of API.md)."""

from .errors import (DisconnectedInputError, DTypeError, ExecutionError, FeedError, GraphCompilerError,
                     GraphFileError, NumericsError, ShapeError, UndefinedGradientError)
from .graph import DuplicateNameError, Graph, GraphMismatchError, Node
from .ops import *  # noqa: F401,F403  the op functions: add, matmul, softmax_cross_entropy, ...
from .ops import OPS
from importlib import import_module as _import_module
random = _import_module(".random", __name__)  # gc.random (keys, split, normal, ...), not ops.random
linalg = _import_module(".linalg", __name__)  # gc.linalg (solve, cholesky, ...), not ops.linalg (matmul)
from .autodiff import build_grad
from .compiler import compile
from .compiler.program import Program
from .runtime import NumpyEvaluator
from .symbolic import derivation, to_latex, to_sympy
from .io import load
from .viz import render, to_dot

__version__ = "0.1.0"
