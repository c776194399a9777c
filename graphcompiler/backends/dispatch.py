"""How a backend finds its kernel for a step: from the op record (its class, its `ufunc`), never from its name.

Each backend holds one `Dispatch`: `@table.register(OpClass, ...)` attaches a kernel to op classes (as
functools.singledispatch does on a type; PyTensor's `jax_funcify.register(Op)`), and `table.derive` turns a
class's declared `ufunc` into a kernel when nothing is registered for the class itself, so the trivial
elementwise kernels of every backend come from the one fact the op block declares. Lookup order for an op of
class C: a kernel registered for C; the kernel derived from C's ufunc; a kernel registered for a base class of
C (its MRO). Results are cached per class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..graph import OPS

Kernel = Callable[..., Any]


def ufunc_of(cls: type) -> np.ufunc | None:
    """The NumPy ufunc an op class declares as its whole computation (`ufunc`), or None."""
    u = getattr(cls, "ufunc", None)
    return u if isinstance(u, np.ufunc) and getattr(cls, "arity", u.nin) == u.nin and u.nout == 1 else None


class Dispatch:
    """Kernels of one backend, keyed by op class (subclasses inherit), with ufunc-derived defaults."""

    def __init__(self, backend: str, derive: Callable[[np.ufunc], Kernel | None] | None = None):
        self.backend = backend
        self.derive = derive
        self._registered: dict[type, Kernel] = {}
        self._cache: dict[type, Kernel | None] = {}

    def register(self, *classes: type) -> Callable[[Kernel], Kernel]:
        """Decorator: `fn` is the kernel of each op class given (and of their subclasses, unless overridden)."""

        def add(fn: Kernel) -> Kernel:
            for c in classes:
                if not isinstance(c, type):
                    raise TypeError(f"{self.backend} kernels are registered for op classes, got {c!r}")
                self._registered[c] = fn
            self._cache.clear()
            return fn

        return add

    def lookup(self, cls: type) -> Kernel | None:
        """The kernel of op class `cls`, or None when this backend has none."""
        try:
            return self._cache[cls]
        except KeyError:
            pass
        found = self._registered.get(cls)
        if found is None and self.derive is not None:
            u = ufunc_of(cls)
            found = self.derive(u) if u is not None else None
        if found is None:
            found = next((self._registered[b] for b in cls.__mro__[1:] if b in self._registered), None)
        self._cache[cls] = found
        return found

    def __call__(self, op: Any) -> Kernel | None:
        """The kernel of op record `op` (an Op instance), or None."""
        return self.lookup(type(op))

    def __contains__(self, op: Any) -> bool:
        """Whether op record `op` has a kernel here; an op's name (a string) is read as the class of that name
        in the op table or among the registered classes (for listings and tests, never for dispatch)."""
        if isinstance(op, str):
            cls = OPS.get(op) or next((c for c in self._registered if getattr(c, "name", None) == op), None)
            return cls is not None and self.lookup(cls) is not None
        return self.lookup(type(op)) is not None

    def classes(self) -> list[type]:
        """The op classes registered explicitly (derived ones are found on demand)."""
        return list(self._registered)


# NumPy's name of a ufunc -> the array API standard's name where they differ (the rest are equal).
ARRAY_API_NAMES = {
    "absolute": "abs",
    "rint": "round",
    "arctan": "atan",
    "arcsin": "asin",
    "arccos": "acos",
    "arcsinh": "asinh",
    "arccosh": "acosh",
    "arctanh": "atanh",
    "arctan2": "atan2",
    "power": "pow",
    "true_divide": "divide",
    "left_shift": "bitwise_left_shift",
    "right_shift": "bitwise_right_shift",
}


def array_api_name(u: np.ufunc) -> str:
    """The name of ufunc `u`'s function in an array API namespace (NumPy's own name where the standard has none)."""
    return ARRAY_API_NAMES.get(u.__name__, u.__name__)
