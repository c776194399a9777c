"""gc.random: random numbers as pure functions of an explicit key (API section 9); Threefry-2x32 in NumPy.

key = g.parameter("key", gc.random.key(0))              # or g.input("key", shape=(2,), dtype="uint32")
k1, k2 = gc.random.split(key, 2)
eps = gc.random.normal(k1, (4, 3))                     # the same key: the same numbers, on every backend
train = gc.compile([J], updates={key: gc.random.next_key(key)})   # fresh draws each step, reproducibly
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .ops.base import apply
from .ops.random import RandomBernoulli, RandomNormal, RandomSplit, RandomUniform, dropout, make_key, threefry2x32
from .ops.shape import getitem

__all__ = ["key", "split", "next_key", "normal", "uniform", "bernoulli", "dropout", "threefry2x32"]


def key(seed: int) -> np.ndarray:
    """A key (uint32, shape (2,)) from an integer seed, to feed or to hold as a parameter."""
    return make_key(seed)


def split(key, n: int = 2, name: str | None = None) -> list:
    """n new key nodes from one key (one random_split op of shape (n, 2), and a row for each key)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"split takes a count n (an int), got {n!r}")
    keys = apply(RandomSplit(int(n)), (key,), name)
    return [getitem(keys, i, name=None if name is None else f"{name}_{i}") for i in range(int(n))]


def next_key(key, name: str | None = None):
    """The key after this one (split(key, 2)[0]): an update that advances a key parameter each step.

    Draw from split(key, 2)[1] (or further splits) in the same step, not from key itself, so the draws
    and the next key stay independent.
    """
    keys = apply(RandomSplit(2), (key,))
    return getitem(keys, 0, name=name)


def _shape(shape) -> tuple[tuple, tuple]:
    """(static shape attribute, extra inputs): a node as `shape` means that node's run-time shape."""
    if hasattr(shape, "op"):
        return (), (shape,)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0:
            raise ValueError(
                f"a draw's shape must hold non-negative ints (or be a node to take the shape of), got {shape!r}"
            )
    return tuple(int(d) for d in shape), ()


def _dtype(dtype, like) -> str:
    """The draw's dtype: as given; by default float64, or the float dtype of the node giving the shape."""
    if dtype is not None:
        return np.dtype(dtype).name
    return like[0].dtype.name if like and like[0].dtype.kind == "f" else "float64"


def normal(key, shape: Any = (), dtype: Any = None, name: str | None = None):
    """Standard normal draws of `shape` (a tuple, or a node whose run-time shape and float dtype to use);
    dtype defaults to float64."""
    static, like = _shape(shape)
    return apply(RandomNormal(static, _dtype(dtype, like), bool(like)), (key, *like), name)


def uniform(key, shape: Any = (), dtype: Any = None, low: float = 0.0, high: float = 1.0, name: str | None = None):
    """Uniform draws in [low, high) of `shape` (a tuple, or a node whose run-time shape and float dtype to
    use); dtype defaults to float64."""
    static, like = _shape(shape)
    return apply(RandomUniform(static, _dtype(dtype, like), bool(like), float(low), float(high)), (key, *like), name)


def bernoulli(key, p: Any = 0.5, shape: Any = None, name: str | None = None):
    """Bool draws, True with probability p (a number or a node, broadcast to shape; shape None: p's shape)."""
    if isinstance(p, (int, float)) and not isinstance(p, bool):
        p = np.array(float(p))
    if shape is None:
        p_shape = getattr(p, "shape", np.shape(p))
        from_p = None in p_shape
        return apply(RandomBernoulli(() if from_p else tuple(p_shape), from_p), (key, p), name)
    static, like = _shape(shape)
    if like:
        raise ValueError(
            "bernoulli takes a tuple shape (or None for p's shape); broadcast p to a node's shape "
            "with gc.broadcast_to(p, node) instead"
        )
    return apply(RandomBernoulli(static, False), (key, p), name)
