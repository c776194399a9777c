"""The NumPy evaluator: executes a Program's prepared steps on NumPy buffers, apart from the graph.

The compiler hands over a flat list of prepared steps (kernel, argument slots or constants, the planned
output buffer, the slots to release afterwards). The evaluator turns it into straight-line Python once
(one line per step, values in local variables), so a run does no graph walking, no look-up and no
dictionary building; very long programs run in a tight loop instead, since compiling 40,000 lines of
Python would cost more than it saves. Any exception in a step is re-raised naming the node and op.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .errors import ExecutionError, GraphCompilerError, NumericsError, fmt_shape
from .ops import elementwise as E
from .ops import linalg as L
from .ops import nn as NN
from .ops import reduce as R
from .ops import shape as S

CODEGEN_LIMIT = 3000        # steps; longer programs run in the loop (Python's compiler is slow on huge functions)


def describe_step(node) -> str:
    """`z = matmul(x, W1)`: how error messages name the step being executed."""
    return f"{node.name} = {node.op.name}({', '.join(i.name for i in node.inputs)})"


@dataclass
class Prepared:
    """One step, ready to run: slot = fn(*args, **kw, out=out). An arg is a slot (int) or a Const."""

    node: Any
    fn: Callable
    args: tuple
    slot: int
    out: np.ndarray | None = None
    kw: dict = field(default_factory=dict)
    drop: tuple = ()                  # slots whose last reader this step is (their memory is released)
    arg_nodes: tuple = ()             # the nodes behind args, for error messages
    user_node: Any = None             # the user's node whose value this step computes, if not `node` itself

    def describe(self) -> str:
        """The step as messages name it: the user's node, and the optimised form when it differs."""
        text = describe_step(self.user_node if self.user_node is not None else self.node)
        if self.user_node is not None and self.user_node is not self.node and \
                describe_step(self.node) != text.replace(self.user_node.name, self.node.name, 1):
            text += f" (computed as {describe_step(self.node)})"
        return text


class Const:
    """A constant argument (a constant's value, or a stand-in carrying only a shape)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


class OutSlot:
    """An `out=` that is the array of another slot (an output written over an input that dies there)."""

    __slots__ = ("slot",)

    def __init__(self, slot: int):
        self.slot = slot


class NumpyEvaluator:
    """Runs prepared steps on NumPy arrays: `load` once per specialised program, then `run` per call."""

    def __init__(self, nan_check: bool = False):
        self.nan_check = nan_check
        self._run: Callable | None = None
        self.steps: list[Prepared] = []

    # -- loading ---------------------------------------------------------------------------
    def load(self, steps: Sequence[Prepared], leaf_slots: Sequence[int], n_slots: int,
             results: Sequence[int], copy: Sequence[bool]) -> "NumpyEvaluator":
        """Prepare to run `steps`; a run takes the leaves' values (in leaf_slots order), returns `results`."""
        self.steps = list(steps)
        if len(self.steps) <= CODEGEN_LIMIT:
            self._run = self._codegen(leaf_slots, results, copy)
        else:
            self._run = self._loop(leaf_slots, n_slots, results, copy)
        return self

    def run(self, leaves: Sequence[Any]) -> list:
        """Execute every step once on the given leaf values; return the result values."""
        return self._run(leaves)

    def _codegen(self, leaf_slots, results, copy) -> Callable:
        env: dict[str, Any] = {"_fail": self._fail, "_chk": self._check, "_GCE": GraphCompilerError,
                               "_copy": _copy}
        lines = ["def _run(_L):"]
        if leaf_slots:
            lines.append("    " + ", ".join(f"v{s}" for s in leaf_slots) + ", = _L")
        lines += ["    _s = -1", "    try:"]
        for k, st in enumerate(self.steps):
            env[f"f{k}"] = st.fn
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
                env[f"o{k}"] = st.out
                # a ufunc takes out= positionally after its inputs (cheaper than a keyword)
                args.append(f"o{k}" if isinstance(st.fn, np.ufunc) and not st.kw
                            and len(st.args) == st.fn.nin and st.fn not in _KEYWORD_OUT else f"out=o{k}")
            lines.append(f"        _s = {k}; v{st.slot} = f{k}({', '.join(args)})")
            if self.nan_check:
                ins = ", ".join(args[:len(st.args)])
                lines.append(f"        _chk({k}, v{st.slot}, ({ins}{',' if ins else ''}))")
            if st.drop:
                lines.append("        del " + ", ".join(f"v{d}" for d in st.drop))
        if not self.steps:
            lines.append("        pass")
        lines += ["    except _GCE:", "        raise", "    except Exception as _e:",
                  "        _fail(_s, _e, locals())"]
        outs = [f"_copy(v{r})" if c else f"v{r}" for r, c in zip(results, copy)]
        lines.append(f"    return [{', '.join(outs)}]")
        exec(compile("\n".join(lines), "<graphcompiler program>", "exec"), env)
        return env["_run"]

    def _loop(self, leaf_slots, n_slots, results, copy) -> Callable:
        template: list = [None] * n_slots
        plan = []
        for st in self.steps:
            slots = []
            for a in st.args:
                if isinstance(a, Const):
                    template.append(a.value)
                    slots.append(len(template) - 1)
                else:
                    slots.append(a)
            kw = dict(st.kw)
            if isinstance(st.out, OutSlot):
                code, a, b = 6, tuple(slots), st.out.slot
                plan.append((code, st.fn, a, b, None, st.slot, kw, st.drop))
                continue
            if len(slots) == 1 and not kw:
                code, a, b = (1 if st.out is not None else 3), slots[0], 0
            elif len(slots) == 2 and not kw:
                code, a, b = (2 if st.out is not None else 4), slots[0], slots[1]
            else:
                code, a, b = 5, tuple(slots), 0
                if st.out is not None:
                    kw["out"] = st.out
            plan.append((code, st.fn, a, b, st.out, st.slot, kw, st.drop))
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
                        evaluator._check(k, values[o], tuple(values[x] for x in (a if code >= 5 else
                                                                                 (a,) if code in (1, 3) else (a, b))))
                    if drop:
                        for d in drop:
                            values[d] = None
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
        for x, a in zip(st.arg_nodes or st.node.inputs, st.args):
            val = a.value if isinstance(a, Const) else env.get(f"v{a}")
            shapes.append(f"{x.name}: {fmt_shape(np.shape(val))}")
        raise _error_class(e)(f"while computing {st.describe()}: {type(e).__name__}: {e} "
                              f"(input shapes {', '.join(shapes)})") from e

    def _check(self, k: int, result, args) -> None:
        st = self.steps[k]
        check_finite(st.node, result, args, st.arg_nodes or st.node.inputs, st.describe())

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
                raise _error_class(e)(f"while computing {describe_step(node)}: {type(e).__name__}: {e} "
                                     f"(input shapes {shapes})") from e
            if self.nan_check:
                check_finite(node, result, [values[a] for a in args])
            values[out] = result


def _error_class(e: Exception) -> type:
    """A matrix LAPACK cannot factor (singular, not positive definite) is a NumericsError; else ExecutionError."""
    return NumericsError if isinstance(e, np.linalg.LinAlgError) else ExecutionError


_KEYWORD_OUT = (np.maximum, np.minimum)      # NumPy deprecates their positional out


def _copy(value) -> np.ndarray:
    return np.array(value, copy=True)


def check_finite(node, result, args, arg_nodes=None, described: str | None = None) -> None:
    r = np.asarray(result)
    if r.dtype.kind in "fc" and not np.all(np.isfinite(r)):
        bad = "NaN" if np.isnan(r).any() else "infinity"
        ranges = []
        for i, a in zip(arg_nodes if arg_nodes is not None else node.inputs, args):
            a = np.asarray(a)
            if a.size and a.dtype.kind in "biuf":
                ranges.append(f"{i.name} in [{np.min(a):.4g}, {np.max(a):.4g}]")
            else:
                ranges.append(f"{i.name} (empty)")
        raise NumericsError(f"while computing {described or describe_step(node)}: the {node.op.name} step produced {bad} "
                            f"(inputs: {'; '.join(ranges) or 'none'})")


# -- kernels as the evaluator calls them ----------------------------------------------------------

def can_write_out(op, dtype) -> bool:
    """Whether the evaluator can have this op write into a planned buffer (`out=`)."""
    return bool(getattr(op, "writes_out", False)) or isinstance(op, R.Sum) and np.dtype(dtype).kind == "f"


def worth_a_buffer(shape) -> bool:
    """A planned buffer pays for values with elements; NumPy's scalars are cheaper than out= on a 0-d array."""
    return len(shape) > 0


def _log_softmax_last(x):
    """log_softmax over the last axis: (x - max) - log(sum(exp(x - max))), finite for logits of +-1e4.

    A row holding +inf gives NaN in every entry here (the op's own kernel gives -inf beside the NaN);
    nan_check reports either.
    """
    m = np.maximum.reduce(x, axis=-1, keepdims=True)
    d = np.subtract(x, m)
    e = np.exp(d)
    s = np.add.reduce(e, axis=-1, keepdims=True)
    np.log(s, out=s)
    return np.subtract(d, s, out=d)


def fast_kernel(op, writes: bool, shape: tuple | None = None, in_shape: tuple = (), shape_dtype=None) -> tuple[Callable, tuple, dict]:
    """The cheapest call for an op's kernel: (function, extra constant args, keyword args).

    Elementwise ops and matmul call their NumPy ufunc directly (one Python frame less per step); a
    float sum calls np.add.reduce with out=. Anything else calls the op's own kernel.
    """
    cls = type(op)
    if isinstance(op, (E.Unary, E.Binary)) and getattr(cls, "ufunc", None) is not None \
            and cls.kernel in (E.Unary.kernel, E.Binary.kernel):
        return cls.ufunc, (), {}
    if isinstance(op, E.Relu):
        return np.maximum, (np.zeros((), dtype=shape_dtype) if shape_dtype is not None else 0,), {}
    if isinstance(op, L.Matmul):
        return np.matmul, (), {}
    if isinstance(op, R.Sum) and writes:
        return np.add.reduce, (), {"axis": tuple(op.axis), "keepdims": op.keepdims}
    if isinstance(op, NN.LogSoftmax) and shape is not None and op.axis == len(shape) - 1 and len(shape):
        return _log_softmax_last, (), {}
    if isinstance(op, S.Transpose) and len(in_shape):
        return np.ndarray.transpose, (tuple(op.axes),), {}
    if isinstance(op, (S.Reshape, S.ExpandDims, S.Squeeze)) and shape is not None and None not in shape \
            and len(in_shape):
        return np.ndarray.reshape, (tuple(shape),), {}
    return op.kernel, (), {}
