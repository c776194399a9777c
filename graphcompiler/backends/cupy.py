"""backend="cupy": the program on CuPy arrays, on a GPU.

It runs the functional evaluator (backends/functional.py) on CuPy's array API namespace (array-api-compat):
every step one CuPy call, results copied back to NumPy (or kept on the device with numpy=False). Not the
NumPy evaluator's out= plan: its kernels include NumPy-only calls (np.ndarray.transpose, np.add.at) that
CuPy arrays do not take. Where CuPy or a GPU is absent, `availability()` says which.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import numpy as np

from .functional import Env, check_coverage, evaluate
from .lowered import LoweredProgram
from ..errors import GraphCompilerError


def availability() -> tuple[bool, str]:
    if importlib.util.find_spec("cupy") is None:
        return False, "cupy is not installed (pip install 'graphcompiler[cupy]', with a CUDA GPU)"
    try:
        import cupy

        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # noqa: BLE001  (any failure means: not usable here, and why)
        return False, f"no CUDA device ({type(e).__name__}: {e})"
    if n == 0:
        return False, "no CUDA device"
    return True, f"{n} CUDA device(s)"


class CupyEnv(Env):
    name = "cupy"

    def __init__(self):
        import array_api_compat.cupy as xp

        super().__init__(xp)

    def erfinv(self, x):
        import cupyx.scipy.special

        return cupyx.scipy.special.erfinv(x)

    def special(self, name, x, *n):
        import cupyx.scipy.special

        return getattr(cupyx.scipy.special, name)(*n, x)


class CupyEvaluator:
    """Runs a LoweredProgram on CuPy arrays (one GPU)."""

    name = "cupy"
    accepts_arrays = True
    run_options = frozenset({"numpy", "batch_axes"})

    def load(self, lowered: LoweredProgram) -> CupyEvaluator:
        ok, why = availability()
        if not ok:
            raise GraphCompilerError(f"backend 'cupy' cannot run here: {why}")
        check_coverage(lowered, self.name)
        self.lowered = lowered
        self.env = CupyEnv()
        return self

    def run(self, leaves: Sequence[Any], numpy: bool = True, batch_axes=None) -> list:
        xp = self.env.xp
        res = evaluate(self.env, self.lowered, [xp.asarray(v) for v in leaves])
        if numpy:
            return [r.get() if hasattr(r, "get") else np.array(r) for r in res]
        return res
