"""backend="dask": the program as dask.array operations, for data bigger than memory or on a cluster.

Every step is a call on the array API namespace of dask.array (array-api-compat), through the functional
evaluator (backends_functional.py): elementwise steps stay blockwise over the chunks, reductions over the
batch (losses, the parameter gradients' contractions) become dask's tree reductions, so a full-batch
gradient runs chunk by chunk in bounded memory. Feeds may be dask arrays (chunked along any axis); NumPy feeds
are chunked along axis 0 (`chunks=` rows per chunk, "auto" by default); parameters are single chunks.

Results come back lazy (dask arrays) unless `compute=True`; a program with `updates` always computes (the
parameters' new values are written into NumPy storage), its outputs and updates in one dask.compute so the
shared graph is computed once. It runs on the local scheduler, or on the active dask.distributed Client.
With nan_check, every floating step's chunks are checked in their tasks (NumericsError naming the step).
Label-range checks run inside the tasks that read the labels (map_blocks): a bad label raises when computed,
as ExecutionError naming the step when the backend computes, as the task's ValueError (with the same
message) when the user computes a lazy result.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import numpy as np

from .functional import Env, check_coverage, evaluate, range_message
from .lowered import LoweredProgram
from ..errors import ExecutionError, GraphCompilerError, NumericsError


def availability() -> tuple[bool, str]:
    for pkg in ("dask", "array_api_compat"):
        if importlib.util.find_spec(pkg) is None:
            return False, f"{pkg} is not installed (pip install 'graphcompiler[dask]')"
    try:
        from dask.distributed import get_client

        client = get_client()
        return True, f"on the active dask.distributed client ({len(client.scheduler_info()['workers'])} workers)"
    except Exception:  # noqa: BLE001  (no client: the local scheduler)
        return True, "local scheduler (no dask.distributed client is active)"


def _check_block(block: np.ndarray, n: int, label: str, low: int) -> np.ndarray:
    if block.size and (block.min() < low or block.max() >= n):
        raise ValueError(range_message(int(block[(block < low) | (block >= n)].ravel()[0]), n, label, low))
    return block


def _finite_block(block: np.ndarray, message: str) -> np.ndarray:
    if block.size and not np.all(np.isfinite(block)):
        bad = "NaN" if np.isnan(block).any() else "infinity"
        raise FloatingPointError(f"{message} produced {bad}")
    return block


def _special(block: np.ndarray, name: str, *n) -> np.ndarray:
    import scipy.special

    return getattr(scipy.special, name)(*n, block)


def _view(block: np.ndarray, dtype) -> np.ndarray:
    return block.view(dtype)


def _erfinv(block: np.ndarray) -> np.ndarray:
    from scipy.special import erfinv

    return erfinv(block)


class DaskEnv(Env):
    name = "dask"

    def __init__(self):
        import array_api_compat.dask.array as xp

        super().__init__(xp)

    def check_labels(self, labels, n, label, low=0):
        if not hasattr(labels, "map_blocks"):
            return super().check_labels(labels, n, label, low)
        return labels.map_blocks(_check_block, n, label, low, dtype=labels.dtype)

    def check_finite(self, st, r, args):
        if not hasattr(r, "map_blocks"):
            return super().check_finite(st, r, args)
        return r.map_blocks(_finite_block, f"while computing {st.label}: the {st.op_name} step", dtype=r.dtype)

    def bitcast(self, x, dtype):
        return x.map_blocks(_view, np.dtype(dtype), dtype=np.dtype(dtype))

    def erfinv(self, x):
        return x.map_blocks(_erfinv, dtype=x.dtype)

    def special(self, name, x, *n):
        return x.map_blocks(_special, name, *n, dtype=x.dtype)

    def set_index(self, z, index, g):
        z = z.copy()
        z[index] = g
        return z


class DaskEvaluator:
    """Runs a LoweredProgram as dask.array operations; lazy results unless compute=True (or updates)."""

    name = "dask"
    accepts_arrays = True
    run_options = frozenset({"compute", "chunks", "batch_axes"})

    def load(self, lowered: LoweredProgram) -> DaskEvaluator:
        check_coverage(lowered, self.name)
        self.lowered = lowered
        self.env = DaskEnv()
        return self

    def run(
        self,
        leaves: Sequence[Any],
        compute: bool = False,
        chunks: Any = "auto",
        batch_axes: Sequence[int | None] | None = None,
    ) -> list:
        import dask
        import dask.array as da

        lw = self.lowered
        batched = [
            kind == "feed"
            and not isinstance(leaf, da.Array)
            and np.ndim(leaf) > 0
            and (batch_axes is None or batch_axes[k] == 0)
            for k, (leaf, kind) in enumerate(zip(leaves, lw.leaf_kinds))
        ]
        rows = chunks
        if chunks == "auto" and any(batched):  # one row count for every batched feed: chunks line up
            big = max((np.asarray(leaf) for leaf, b in zip(leaves, batched) if b), key=lambda a: a.nbytes)
            rows = da.core.normalize_chunks(("auto",) + (-1,) * (big.ndim - 1), big.shape, dtype=big.dtype)[0][0]
        arrays = []
        for leaf, b in zip(leaves, batched):
            if isinstance(leaf, da.Array):
                arrays.append(leaf)
                continue
            leaf = np.asarray(leaf)
            arrays.append(da.from_array(leaf, chunks=(rows,) + (-1,) * (leaf.ndim - 1) if b else -1))
        results = evaluate(self.env, lw, arrays)
        if not (compute or lw.updates):
            return results
        lazy = [k for k, r in enumerate(results) if isinstance(r, da.Array)]
        try:
            done = dask.compute(*[results[k] for k in lazy])
        except GraphCompilerError:
            raise
        except Exception as e:
            msg = str(e)
            if msg.startswith("while computing"):
                raise (NumericsError if isinstance(e, FloatingPointError) else ExecutionError)(msg) from e
            raise ExecutionError(
                f"while computing the dask program ({len(lw.steps)} steps): {type(e).__name__}: {e}"
            ) from e
        out = list(results)
        for k, v in zip(lazy, done):
            out[k] = np.asarray(v)
        return [np.array(r) if not isinstance(r, np.ndarray) else r for r in out]
