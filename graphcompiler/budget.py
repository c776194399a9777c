"""The time budget of a run: `Program.run(feeds, max_seconds=S)` (and `graphcompiler run --max-seconds S`).

A bottom layer (it imports errors.py only), so that the control-flow kernels of control/, the NumPy
evaluator and Program all read the same budget. The budget is a context variable: each thread (and each
nested run inside a kernel) sees the deadline of the run it belongs to, and a nested run never extends the
deadline of the run around it. Nothing is checked, and nothing costs, while no budget is set.

`check(what)` raises ExecutionError, naming `what` (the node being executed) and the budget, once the
deadline has passed: loops call it every iteration, the evaluator between steps.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar

from .errors import ExecutionError, GraphCompilerError

__all__ = ["check", "time_budget"]

# (the monotonic time the run must end by, the budget in seconds as given)
_DEADLINE: ContextVar[tuple[float, float] | None] = ContextVar("graphcompiler_deadline", default=None)


def seconds_of(max_seconds) -> float | None:
    """max_seconds checked: None (no limit) or a positive finite number of seconds."""
    if max_seconds is None:
        return None
    ok = isinstance(max_seconds, (int, float)) and not isinstance(max_seconds, bool)
    if not ok or not (math.isfinite(max_seconds) and max_seconds > 0):
        raise GraphCompilerError(
            f"max_seconds must be a positive number of seconds or None (no limit), not {max_seconds!r}"
        )
    return float(max_seconds)


@contextlib.contextmanager
def time_budget(max_seconds) -> Iterator[None]:
    """Within the block, `check` raises once max_seconds have passed (None: no limit of its own; an
    enclosing budget that ends sooner stays in force)."""
    seconds = seconds_of(max_seconds)
    if seconds is None:
        yield
        return
    end = time.monotonic() + seconds
    outer = _DEADLINE.get()
    if outer is not None and outer[0] <= end:
        yield
        return
    token = _DEADLINE.set((end, seconds))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def check(what: str | Callable[[], str]) -> None:
    """Raise ExecutionError naming `what` (a string, or a function giving it) when the run's budget is spent."""
    d = _DEADLINE.get()
    if d is not None and time.monotonic() > d[0]:
        where = what() if callable(what) else what
        raise ExecutionError(
            f"{where}: the run's time budget of {d[1]:g} s is spent (max_seconds={d[1]:g}); "
            "give it more time (Program.run(..., max_seconds=S), `graphcompiler run --max-seconds S`, "
            "or none for no limit), or check that the loop ends"
        )


def active() -> bool:
    """Whether a time budget is set in this context."""
    return _DEADLINE.get() is not None
