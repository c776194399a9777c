"""The NumPy evaluator: runs a LoweredProgram (backends/lowered.py) on NumPy arrays, apart from the graph.

`load` turns the lowered steps into straight-line Python once (one line per step, values in local variables),
so a run does no graph walking, no look-up and no dictionary building; very long programs run in a tight loop
instead, since compiling 40,000 lines of Python would cost more than it saves. Any exception in a step is
re-raised naming the step's label. This module imports nothing from graph, ops or autodiff: each step carries
its kernel, arguments, `out=` and label.

Threads and re-entrancy: the planned buffers (one arena) belong to one run at a time. The evaluator keeps a
pool of runners, each bound to its own arena; a run takes one from the pool (or makes one, allocating a fresh
arena, when every runner is busy: another thread, or a kernel that runs the program again) and gives it back
afterwards. One thread alone always finds the same runner: no extra cost beyond a list pop and append.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .. import budget
from .lowered import Const, LoweredProgram, OutSlot
from ..errors import ExecutionError, GraphCompilerError, NumericsError, fmt_shape

CODEGEN_LIMIT = 3000  # steps; longer programs run in the loop (Python's compiler is slow on huge functions)
CHECK_EVERY = 256  # steps between two checks of the run's time budget (budget.py; loops check every iteration)


def describe_step(node) -> str:
    """`z = matmul(x, W1)`: how error messages name the step being executed."""
    return f"{node.name} = {node.op.name}({', '.join(i.name for i in node.inputs)})"


class NumpyEvaluator:
    """Runs a LoweredProgram on NumPy arrays: `load` once per specialised program, then `run` per call."""

    name = "numpy"

    def __init__(self, nan_check: bool = False):
        self.nan_check = nan_check
        self.lowered: LoweredProgram | None = None
        self.steps: tuple = ()
        self._pool: list[Callable] = []
        self._make: Callable[[], Callable] | None = None

    # -- loading ---------------------------------------------------------------------------
    def load(self, lowered: LoweredProgram) -> "NumpyEvaluator":
        """Prepare to run `lowered`: generate its code and allocate one arena of its buffers."""
        self.lowered = lowered
        self.nan_check = self.nan_check or lowered.nan_check
        self.steps = lowered.steps
        if len(self.steps) <= CODEGEN_LIMIT:
            code, env = self._codegen(lowered)

            def make() -> Callable:
                local = dict(env)
                for k, o in enumerate(lowered.views(lowered.allocate())):
                    if o is not None and not isinstance(o, OutSlot):
                        local[f"o{k}"] = o
                exec(code, local)
                return local["_run"]
        else:

            def make() -> Callable:
                return self._loop(lowered, lowered.views(lowered.allocate()))

        self._make = make
        self._pool = [make()]
        return self

    def run(self, leaves: Sequence[Any]) -> list:
        """Execute every step once on the given leaf values; return the result values."""
        pool = self._pool
        try:
            fn = pool.pop()
        except IndexError:  # every arena is in use (other threads, or a re-entrant call)
            if self._make is None:
                raise GraphCompilerError("NumpyEvaluator.run before load: load a lowered program first") from None
            fn = self._make()
        try:
            return fn(leaves)
        finally:
            pool.append(fn)

    @property
    def arenas(self) -> int:
        """How many sets of buffers the evaluator holds (one per run that was in flight at once)."""
        return len(self._pool)

    def _codegen(self, lowered: LoweredProgram):
        env: dict[str, Any] = {
            "_fail": self._fail,
            "_chk": self._check,
            "_GCE": GraphCompilerError,
            "_copy": _copy,
            "_due": self._due,
        }
        lines = ["def _run(_L):"]
        if lowered.leaves:
            lines.append("    " + ", ".join(f"v{s}" for s in lowered.leaves) + ", = _L")
        lines += ["    _s = -1", "    try:"]
        for k, st in enumerate(lowered.steps):
            env[f"f{k}"] = st.kernel
            args = []
            for j, a in enumerate(st.args):
                if isinstance(a, Const):
                    env[f"c{k}_{j}"] = a.value
                    args.append(f"c{k}_{j}")
                else:
                    args.append(f"v{a}")
            for key, val in st.kw.items():
                env[f"k{k}_{key}"] = val
                args.append(f"{key}=k{k}_{key}")
            if isinstance(st.out, OutSlot):
                args.append(f"out=v{st.out.slot}")
            elif st.out is not None:
                # a ufunc takes out= positionally after its inputs (cheaper than a keyword)
                fn = st.kernel
                args.append(
                    f"o{k}"
                    if isinstance(fn, np.ufunc) and not st.kw and len(st.args) == fn.nin and fn not in _KEYWORD_OUT
                    else f"out=o{k}"
                )
            lines.append(f"        _s = {k}; v{st.slot} = f{k}({', '.join(args)})")
            if self.nan_check:
                ins = ", ".join(args[: len(st.args)])
                lines.append(f"        _chk({k}, v{st.slot}, ({ins}{',' if ins else ''}))")
            if st.frees:
                lines.append("        del " + ", ".join(f"v{d}" for d in st.frees))
            if k % CHECK_EVERY == CHECK_EVERY - 1:
                lines.append(f"        _due({k})")
        if not lowered.steps:
            lines.append("        pass")
        lines += ["    except _GCE:", "        raise", "    except Exception as _e:", "        _fail(_s, _e, locals())"]
        outs = []
        for k, (r, c) in enumerate(zip(lowered.results, lowered.copy)):
            if isinstance(r, Const):
                env[f"r{k}"] = r.value
                outs.append(f"_copy(r{k})")
            else:
                outs.append(f"_copy(v{r})" if c else f"v{r}")
        lines.append(f"    return [{', '.join(outs)}]")
        return compile("\n".join(lines), "<graphcompiler program>", "exec"), env

    def _loop(self, lowered: LoweredProgram, outs: list) -> Callable:
        template: list = [None] * lowered.n_slots  # the values of a run's start: constants appended
        plan = _loop_plan(lowered, outs, template)
        results = [_slot_of(template, r) for r in lowered.results]
        copy = [c or isinstance(r, Const) for r, c in zip(lowered.results, lowered.copy)]
        leaf_slots = lowered.leaves
        evaluator = self

        def _run(leaves):
            values = list(template)
            for s, v in zip(leaf_slots, leaves):
                values[s] = v
            k = -1
            try:
                for k, (code, fn, a, b, out, o, kw, drop) in enumerate(plan):
                    if code == 1:
                        values[o] = fn(values[a], out=out)
                    elif code == 2:
                        values[o] = fn(values[a], values[b], out=out)
                    elif code == 3:
                        values[o] = fn(values[a])
                    elif code == 4:
                        values[o] = fn(values[a], values[b])
                    elif code == 5:
                        values[o] = fn(*[values[x] for x in a], **kw)
                    else:
                        values[o] = fn(*[values[x] for x in a], out=values[b], **kw)
                    if evaluator.nan_check:
                        evaluator._check(
                            k,
                            values[o],
                            tuple(values[x] for x in (a if code >= 5 else (a,) if code in (1, 3) else (a, b))),
                        )
                    if drop:
                        for d in drop:
                            values[d] = None
                    if k % CHECK_EVERY == CHECK_EVERY - 1:
                        evaluator._due(k)
            except GraphCompilerError:
                raise
            except Exception as e:
                st = evaluator.steps[k]
                evaluator._fail(k, e, {f"v{a}": values[a] for a in st.args if not isinstance(a, Const)})
            return [_copy(values[r]) if c else values[r] for r, c in zip(results, copy)]

        return _run

    # -- errors ----------------------------------------------------------------------------
    def _fail(self, k: int, e: Exception, env: dict) -> None:
        st = self.steps[k]
        shapes = []
        for name, a in zip(st.arg_names, st.args):
            val: Any = a.value if isinstance(a, Const) else env.get(f"v{a}")  # None: not computed yet
            shapes.append(f"{name}: {fmt_shape(np.shape(val))}")
        raise _error_class(e)(
            f"while computing {st.label}: {type(e).__name__}: {e} (input shapes {', '.join(shapes)})"
        ) from e

    def _due(self, k: int) -> None:
        """Stop the run (ExecutionError) when its time budget is spent: called after every CHECK_EVERY steps."""
        budget.check(lambda: f"after computing {self.steps[k].label}")

    def _check(self, k: int, result, args) -> None:
        st = self.steps[k]
        check_finite(st.label, st.op_name, result, args, st.arg_names)

    # -- the first evaluator's interface, kept for callers that run (node, kernel, slots, slot) steps --
    def execute(self, steps, values: list) -> None:
        """Run (node, kernel, argument slots, output slot) steps in order over `values`."""
        for node, kernel, args, out in steps:
            try:
                result = kernel(*[values[a] for a in args])
            except GraphCompilerError:
                raise
            except Exception as e:
                shapes = ", ".join(f"{i.name}: {fmt_shape(np.shape(values[a]))}" for i, a in zip(node.inputs, args))
                raise _error_class(e)(
                    f"while computing {describe_step(node)}: {type(e).__name__}: {e} (input shapes {shapes})"
                ) from e
            if self.nan_check:
                check_finite(
                    describe_step(node), node.op.name, result, [values[a] for a in args], [i.name for i in node.inputs]
                )
            values[out] = result


def _slot_of(template: list, a: Any) -> int:
    """The slot a run reads `a` from: a constant is appended to `template` (the values a run starts from)."""
    if isinstance(a, Const):
        template.append(a.value)
        return len(template) - 1
    return a


def _loop_plan(lowered: LoweredProgram, outs: list, template: list) -> list[tuple]:
    """One tuple per step for NumpyEvaluator's loop: (code, kernel, a, b, out, slot, kw, frees).

    code 1, 2: a kernel of one or two slots a, b writing into `out`; 3, 4: the same allocating its result;
    5: any other call, arguments in the slots a (with out= in kw); 6: out= is the array of slot b. Constant
    arguments are appended to `template` (the values list a run starts from) and read from their slots.
    """
    plan: list[tuple] = []
    for st, out in zip(lowered.steps, outs):
        slots: list[Any] = [_slot_of(template, a) for a in st.args]
        a: Any
        kw = dict(st.kw)
        if isinstance(out, OutSlot):
            plan.append((6, st.kernel, tuple(slots), out.slot, None, st.slot, kw, st.frees))
            continue
        if len(slots) == 1 and not kw:
            code, a, b = (1 if out is not None else 3), slots[0], 0
        elif len(slots) == 2 and not kw:
            code, a, b = (2 if out is not None else 4), slots[0], slots[1]
        else:
            code, a, b = 5, tuple(slots), 0
            if out is not None:
                kw["out"] = out
        plan.append((code, st.kernel, a, b, out, st.slot, kw, st.frees))
    return plan


def _error_class(e: Exception) -> type:
    """A matrix LAPACK cannot factor (singular, not positive definite) is a NumericsError; else ExecutionError."""
    return NumericsError if isinstance(e, np.linalg.LinAlgError) else ExecutionError


_KEYWORD_OUT = (np.maximum, np.minimum)  # NumPy deprecates their positional out


def _copy(value) -> np.ndarray:
    return np.array(value, copy=True)


def check_finite(label: str, op_name: str, result, args, arg_names) -> None:
    """Raise NumericsError when a floating result holds NaN or infinity, with the inputs' ranges."""
    r = np.asarray(result)
    if r.dtype.kind in "fc" and not np.all(np.isfinite(r)):
        bad = "NaN" if np.isnan(r).any() else "infinity"
        ranges = []
        for name, a in zip(arg_names, args):
            a = np.asarray(a)
            if a.size and a.dtype.kind in "biuf":
                ranges.append(f"{name} in [{np.min(a):.4g}, {np.max(a):.4g}]")
            else:
                ranges.append(f"{name} (empty)")
        raise NumericsError(
            f"while computing {label}: the {op_name} step produced {bad} (inputs: {'; '.join(ranges) or 'none'})"
        )
