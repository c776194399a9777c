"""backend="jax": the whole specialised program as one jax.jit function (API section 12).

The functional evaluator (backends/functional.py) traces the lowered program on jax.numpy once per
specialisation. float64 graphs keep float64: tracing and every call run inside `jax.enable_x64(True)`, a
context manager (thread-local), so the user's global JAX configuration is untouched. Parameters whose new
values the program computes are donated (`donate_argnums`) when they come from NumPy (a fresh device copy
is made per call anyway, so XLA may write the update into it); an array the user fed is never donated.

With nan_check=True the program runs op by op without jit (slow), so a NaN or infinity is reported as
NumericsError naming the step that made it, as on NumPy.

Label-range checks (cross-entropies, one_hot, take) cannot raise inside jit: labels the run is fed are
checked in NumPy before the call; labels computed inside the program are `checkify` checks, and a failed
check raises ExecutionError naming the step after the call, before any result is returned (or written).

`run(leaves, sharding=mesh)`: a `jax.sharding.Mesh` (its first axis) or a `NamedSharding` splits axis 0 of
every feed whose leading dim is None (Program passes which) over the devices; everything else is
replicated; XLA inserts the reductions (gradients summed over the batch). `numpy=False` keeps the results
as JAX arrays.
"""

from __future__ import annotations

import importlib.util
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from .functional import Env, check_coverage, check_range, evaluate
from .lowered import LoweredProgram
from ..errors import ExecutionError, FeedError, GraphCompilerError


def availability() -> tuple[bool, str]:
    if importlib.util.find_spec("jax") is None:
        return False, "jax is not installed (pip install 'graphcompiler[jax]')"
    import jax

    kinds = sorted({d.platform for d in jax.devices()})
    return True, f"devices: {len(jax.devices())} ({', '.join(kinds)})"


class JaxEnv(Env):
    name = "jax"

    def __init__(self):
        import jax.numpy as jnp

        super().__init__(jnp)
        self.checked = False
        self.prechecks: list = []
        self._local = threading.local()

    @property
    def leaf_ids(self) -> dict:  # per thread: two threads may trace at once
        return getattr(self._local, "leaf_ids", {})

    @leaf_ids.setter
    def leaf_ids(self, value: dict) -> None:
        self._local.leaf_ids = value

    def check_labels(self, labels, n, label, low=0):
        k = getattr(self, "leaf_ids", {}).get(id(labels))
        if k is not None:  # labels fed to the run: checked in NumPy before the call (cheap, exact)
            self.prechecks.append((k, n, label, low))
            return labels
        from jax.experimental import checkify

        self.checked = True  # computed labels: a checkify check inside the jit function
        jnp = self.xp
        what = (
            f"a label is out of range for {n} classes"
            if low == 0
            else f"an index is out of range for an axis of size {n}"
        )
        checkify.check(
            jnp.all((labels >= low) & (labels < n)), f"while computing {label}: {what} (it must be in [{low}, {n}))"
        )
        return labels

    def check_finite(self, st, r, args):
        """nan_check: a program with nan_check runs eagerly (op by op), so the check names the step."""
        return super().check_finite(st, r, args)

    def bitcast(self, x, dtype):
        import jax

        return jax.lax.bitcast_convert_type(x, np.dtype(dtype))

    def erfinv(self, x):
        import jax

        return jax.scipy.special.erfinv(x)

    def special(self, name, x, *n):
        import jax

        return getattr(jax.scipy.special, name)(*n, x)

    def set_index(self, z, index, g):
        return z.at[index].set(g)


class JaxEvaluator:
    """Runs a LoweredProgram as one jit-compiled JAX function; results as NumPy arrays unless numpy=False."""

    name = "jax"
    accepts_arrays = True
    run_options = frozenset({"sharding", "numpy", "batch_axes"})

    def load(self, lowered: LoweredProgram) -> JaxEvaluator:
        check_coverage(lowered, self.name)
        from jax.experimental import checkify

        self.lowered = lowered
        self.env = env = JaxEnv()

        def program(*leaves):
            return evaluate(env, lowered, leaves)  # an error while tracing names the step

        # which leaves may be donated: parameters whose updated value the program returns
        updated = set(lowered.updates)
        self.donate = tuple(
            i
            for i, (n, k) in enumerate(zip(lowered.leaf_names, lowered.leaf_kinds))
            if k == "parameter" and n in updated
        )
        self._fn = program
        self._checked: bool | None = None  # whether a step checks labels (known after one trace)
        self._jit: dict[bool, Any] = {}
        self._checkify = checkify
        self._lock = threading.Lock()
        return self

    def _compiled(self, donate: bool, leaves) -> Any:
        fn = self._jit.get(donate)
        if fn is not None:
            return fn
        with self._lock:  # one thread traces (the Env records checks while tracing)
            return self._compile(donate, leaves)

    def _compile(self, donate: bool, leaves) -> Any:
        import jax

        fn = self._jit.get(donate)
        if fn is None:
            program = self._fn
            if self._checked is None:  # trace once to see whether any step checks labels
                self.env.prechecks.clear()
                jax.eval_shape(program, *leaves)
                self._checked = self.env.checked
                self._prechecks = tuple(dict.fromkeys(self.env.prechecks))
            if self._checked:
                program = self._checkify.checkify(program, errors=self._checkify.user_checks)
            fn = self._jit[donate] = jax.jit(program, donate_argnums=self.donate if donate else ())
        return fn

    def run(
        self,
        leaves: Sequence[Any],
        sharding: Any = None,
        numpy: bool = True,
        batch_axes: Sequence[int | None] | None = None,
    ) -> list:
        import jax

        with jax.enable_x64(True):
            leaves = list(leaves)
            donate = bool(self.donate) and all(type(leaves[i]) is np.ndarray for i in self.donate)
            if sharding is not None:
                leaves = self._shard(leaves, sharding, batch_axes)
            if self.lowered.nan_check:  # op by op, unjitted: each step's result is checked and named
                out = evaluate(self.env, self.lowered, [jax.numpy.asarray(v) for v in leaves])
                return [np.array(r) for r in out] if numpy else list(out)
            fn = self._compiled(donate, leaves)
            for k, n, label, low in self._prechecks:
                check_range(np.asarray(leaves[k]), n, label, low)
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
                    out = fn(*leaves)
            except GraphCompilerError:
                raise
            except Exception as e:
                raise ExecutionError(
                    f"while running the jax program ({len(self.lowered.steps)} steps): {type(e).__name__}: {e}"
                ) from e
            if self._checked:
                err, out = out
                msg = err.get()
                if msg is not None:
                    raise ExecutionError(msg.split(" (check failed at")[0].strip())
            if numpy:
                return [np.array(r) for r in out]
            return list(out)

    def _shard(self, leaves: list, sharding: Any, batch_axes) -> list:
        import jax
        from jax.sharding import Mesh, NamedSharding
        from jax.sharding import PartitionSpec as P

        mesh: Any
        if isinstance(sharding, Mesh):
            mesh = sharding
            batch = NamedSharding(mesh, P(mesh.axis_names[0]))
        elif isinstance(sharding, NamedSharding):
            mesh, batch = sharding.mesh, sharding
        else:
            raise GraphCompilerError(
                f"sharding= takes a jax.sharding.Mesh or NamedSharding, not {type(sharding).__name__}"
            )
        replicated = NamedSharding(mesh, P())
        n_dev = mesh.devices.size
        axes = batch_axes or (None,) * len(leaves)
        out = []
        for leaf, ax, name in zip(leaves, axes, self.lowered.leaf_names):
            if ax == 0:
                if np.shape(leaf)[0] % n_dev:
                    raise FeedError(
                        f"feed {name!r}: its batch of {np.shape(leaf)[0]} rows does not split "
                        f"evenly over the {n_dev} devices of the mesh"
                    )
                out.append(jax.device_put(leaf, batch))
            else:
                out.append(jax.device_put(leaf, replicated))
        return out
