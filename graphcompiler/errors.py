"""The package's error classes (API section 6): every error a user can meet derives from GraphCompilerError."""

from __future__ import annotations


class GraphCompilerError(Exception):
    """Base class of every error graphcompiler raises on purpose."""


class ShapeError(GraphCompilerError, ValueError):
    """Shapes that do not fit together: a broadcast, a matmul, a reshape, an axis out of range."""


class DTypeError(GraphCompilerError, TypeError):
    """A dtype an op cannot take: float labels for a cross-entropy, a float index, an unknown dtype."""


class FeedError(GraphCompilerError):
    """A feed that is missing, names no node of the graph, or has the wrong shape or dtype."""


class UndefinedGradientError(GraphCompilerError):
    """A gradient needed a path through an op that has no derivative (an integer cast, integer labels)."""


class DisconnectedInputError(GraphCompilerError):
    """A gradient target that the cost does not depend on (build_grad with disconnected="raise")."""


class NumericsError(GraphCompilerError):
    """A step produced NaN or infinity while the program ran with nan_check=True, or a matrix could not be
    factored (singular for solve/inv, not positive definite for cholesky)."""


class GraphFileError(GraphCompilerError):
    """A graph file that cannot be loaded safely: malformed, unknown ops, sizes over the limits."""


class ExecutionError(GraphCompilerError):
    """A kernel failed while a program ran; the message names the step being executed."""


class GraphCompilerWarning(UserWarning):
    """Base class of graphcompiler's warnings: a result that runs but may not be what the code meant."""


class FrozenRandomnessWarning(GraphCompilerWarning):
    """A traced function drew host random numbers (np.random, a RandomState, a Generator): drawn once while
    tracing, they are constants of the graph, the same in every later call. Use gc.random with a key argument."""


def fmt_shape(shape) -> str:
    """Write a shape as a Python tuple, `(None, 4)`, the way every message in the package does."""
    if shape is None:
        return "unknown"
    return repr(tuple(shape))
