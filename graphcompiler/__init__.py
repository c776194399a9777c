"""graphcompiler: a symbol-to-symbol differentiation compiler on NumPy (the public API of API.md)."""

from .errors import (
    DisconnectedInputError,
    DTypeError,
    ExecutionError,
    FeedError,
    FrozenRandomnessWarning,
    GraphCompilerError,
    GraphCompilerWarning,
    GraphFileError,
    NumericsError,
    ShapeError,
    UndefinedGradientError,
)
from .graph import DuplicateNameError, Graph, GraphMismatchError, Node
from .ops import *  # noqa: F401,F403  the op functions: add, matmul, softmax_cross_entropy, ...
from .ops import OPS, Op, register_op
from importlib import import_module as _import_module

random = _import_module(".random", __name__)  # gc.random (keys, split, normal, ...), not ops.random
linalg = _import_module(".linalg", __name__)  # gc.linalg (solve, cholesky, ...), not ops.linalg (matmul)
scipy = _import_module(".scipy", __name__)  # gc.scipy.special/stats: gc ops only; SciPy loads on a call without nodes
from .autodiff import build_grad
from .compiler import compile
from .control import cond, scan, while_loop  # control flow: above autodiff and the compiler
from .compiler.program import Program
from . import backends  # the package, callable: gc.backends() lists them
from .backends.numpy import NumpyEvaluator
from ._lazy import __dir__, __getattr__  # to_sympy, to_latex, derivation: SymPy loads on first use
from .io import load
from .viz import render, to_dot
from .explore import explore, explore_inline

__version__ = "0.1.0"
from . import numpy_api as _numpy_api  # installs NumPy's protocols on Node (np.tanh(node) builds a node)
from .numpy_api import numpy_functions
from .transforms import Spec, function, grad, hessian, jacobian, jvp, make_graph, value_and_grad
from . import optim
from .pytree import PyTreeDef, tree_flatten, tree_leaves, tree_map, tree_structure, tree_unflatten
