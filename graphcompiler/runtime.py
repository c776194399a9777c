"""The NumPy evaluator: executes a Program's schedule of prepared steps, apart from the graph."""

from __future__ import annotations

import numpy as np

from .errors import ExecutionError, GraphCompilerError, NumericsError, fmt_shape


def describe_step(node) -> str:
    """`z = matmul(x, W1)`: how error messages name the step being executed."""
    return f"{node.name} = {node.op.name}({', '.join(i.name for i in node.inputs)})"


class NumpyEvaluator:
    """Runs steps on NumPy arrays. A step is (node, kernel, argument slots, output slot)."""

    def __init__(self, nan_check: bool = False):
        self.nan_check = nan_check

    def execute(self, steps, values: list) -> None:
        """Run every step in order; `values` holds one slot per value, leaves already filled in."""
        for node, kernel, args, out in steps:
            try:
                result = kernel(*[values[a] for a in args])
            except GraphCompilerError:
                raise
            except Exception as e:
                shapes = ", ".join(f"{i.name}: {fmt_shape(np.shape(values[a]))}" for i, a in zip(node.inputs, args))
                raise ExecutionError(f"while computing {describe_step(node)}: {type(e).__name__}: {e} "
                                     f"(input shapes {shapes})") from e
            if self.nan_check:
                check_finite(node, result, [values[a] for a in args])
            values[out] = result


def check_finite(node, result, args) -> None:
    r = np.asarray(result)
    if r.dtype.kind in "fc" and not np.all(np.isfinite(r)):
        bad = "NaN" if np.isnan(r).any() else "infinity"
        ranges = []
        for i, a in zip(node.inputs, args):
            a = np.asarray(a)
            if a.size and a.dtype.kind in "biuf":
                ranges.append(f"{i.name} in [{np.min(a):.4g}, {np.max(a):.4g}]")
            else:
                ranges.append(f"{i.name} (empty)")
        raise NumericsError(f"while computing {describe_step(node)}: the {node.op.name} step produced {bad} "
                            f"(inputs: {'; '.join(ranges) or 'none'})")
