"""Random numbers as pure functions of an explicit key: Threefry-2x32 (20 rounds) in NumPy uint32 arithmetic.

A key is a uint32 array of shape (2,). Every draw is a counter-based hash of (key, position), so the same key
gives the same numbers on every backend and in every run, and two ops with the same key and attributes are
the same value (CSE may merge them; different keys never merge). The layout follows JAX's partitionable
Threefry scheme (`jax_threefry_partitionable`): element i of a draw hashes the 64-bit counter i, split keys
hash (0, i), 64-bit floats take both output words, 32-bit floats their xor, and a normal is
sqrt(2) erfinv(u) of a uniform u in (-1, 1). So a key gives the numbers JAX gives for it.

Keys are integers: a gradient asked of a key raises UndefinedGradientError; the float results carry no
gradient back to the key, so mu + sigma * normal(key, ...) differentiates in mu and sigma only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import DTypeError, ShapeError, fmt_shape
from .base import Op, UNDEFINED, apply, broadcast_shapes, undefined_to_sympy

_U32 = np.uint32
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


# -- the generator ------------------------------------------------------------------------------


def threefry2x32(key: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Threefry-2x32 with 20 rounds (Salmon et al., SC'11) of the counters (x0, x1) under a (2,) key.

    Vectorised uint32 arithmetic: additions wrap mod 2^32, as the cipher needs.
    """
    k0 = np.full(1, key[0], _U32)
    k1 = np.full(1, key[1], _U32)
    ks = (k0, k1, k0 ^ k1 ^ _U32(0x1BD11BDA))
    x0 = np.asarray(x0, _U32).reshape(-1) + ks[0]
    x1 = np.asarray(x1, _U32).reshape(-1) + ks[1]
    for block in range(5):
        for r in _ROTATIONS[block % 2]:
            x0 += x1  # mix: x0 += x1; x1 = rotl(x1, r) ^ x0
            x1 = (x1 << _U32(r)) | (x1 >> _U32(32 - r))
            x1 ^= x0
        x0 += ks[(block + 1) % 3]  # key injection after every 4 rounds
        x1 += ks[(block + 2) % 3] + _U32(block + 1)
    return x0, x1


def _counters(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The 64-bit counters 0..n-1 as (high words, low words)."""
    c = np.arange(n, dtype=np.uint64)
    return (c >> np.uint64(32)).astype(_U32), (c & np.uint64(0xFFFFFFFF)).astype(_U32)


def random_bits(key: np.ndarray, shape: tuple, width: int) -> np.ndarray:
    """`width` (32 or 64) random bits per element of `shape`."""
    n = int(np.prod(shape, dtype=np.int64))
    hi, lo = threefry2x32(key, *_counters(n))
    if width == 64:
        bits = (hi.astype(np.uint64) << np.uint64(32)) | lo.astype(np.uint64)
    else:
        bits = hi ^ lo
    return bits[:n].reshape(shape)


def uniform_bits(key: np.ndarray, shape: tuple, dtype) -> np.ndarray:
    """Floats in [0, 1): the top mantissa bits of the random bits under the exponent of 1.0, minus 1."""
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        bits = random_bits(key, shape, 64)
        one = np.uint64(0x3FF0000000000000)
        return ((bits >> np.uint64(12)) | one).view(np.float64) - 1.0
    bits = random_bits(key, shape, 32)
    one32 = _U32(0x3F800000)
    return (((bits >> _U32(9)) | one32).view(np.float32) - np.float32(1.0)).astype(dtype)


def uniform_values(key, shape, dtype, low, high) -> np.ndarray:
    dtype = np.dtype(dtype)
    low, high = dtype.type(low), dtype.type(high)
    u = uniform_bits(key, shape, dtype) * (high - low) + low
    # [low, high): rounding of u * (high - low) + low may reach high; keep the bound strict
    return np.minimum(np.maximum(u, low), np.nextafter(high, low)).astype(dtype, copy=False)


def normal_values(key, shape, dtype) -> np.ndarray:
    from scipy.special import erfinv

    dtype = np.dtype(dtype)
    lo = np.nextafter(dtype.type(-1), dtype.type(0))
    u = uniform_bits(key, shape, dtype) * (dtype.type(1) - lo) + lo
    u = np.maximum(u, lo)  # u in (-1, 1): erfinv is finite
    return (dtype.type(np.sqrt(2)) * erfinv(u)).astype(dtype, copy=False)


def split_keys(key: np.ndarray, n: int) -> np.ndarray:
    """n new keys (n, 2): key i is Threefry of the counter (0, i)."""
    hi, lo = threefry2x32(key, *_counters(n))
    return np.stack([hi[:n], lo[:n]], axis=-1)


def make_key(seed: int) -> np.ndarray:
    """The key of an integer seed: (high word, low word) of the seed taken mod 2^64 (as jax.random.PRNGKey)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise DTypeError(f"a random seed must be an int, got {type(seed).__name__} {seed!r}")
    seed = int(seed)
    if not -(2**63) <= seed < 2**64:
        raise ValueError(f"seed {seed} does not fit in 64 bits")
    s = seed % 2**64
    return np.array([s >> 32, s & 0xFFFFFFFF], dtype=_U32)


# -- the ops ------------------------------------------------------------------------------------


def _check_key(key) -> None:
    if key.dtype != np.uint32:
        raise DTypeError(
            f"random key {key.name!r} has dtype {key.dtype}; a key is a uint32 array of shape (2,): "
            "make one with gc.random.key(seed) and feed it or hold it as a parameter"
        )
    if tuple(key.shape) != (2,):
        raise ShapeError(
            f"random key {key.name!r} has shape {fmt_shape(key.shape)}; a key has shape (2,) "
            "(declare it with shape=(2,), dtype='uint32'; for many keys use gc.random.split)"
        )


def _float_dtype(dtype: str, what: str) -> None:
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise DTypeError(f"{what} draws float32 or float64, not {dtype}")


@dataclass(frozen=True)
class RandomOp(Op):
    """A draw of `shape` from a key; with a second input (`like`), of that node's run-time shape instead."""

    shape_only: ClassVar[tuple] = (1,)
    shape: tuple = ()
    dtype: str = "float64"
    like: bool = False

    def __post_init__(self):
        object.__setattr__(self, "dtype", np.dtype(self.dtype).name)

    def infer(self, key, *like):
        _check_key(key)
        _float_dtype(self.dtype, self.name)
        if len(like) != int(self.like):
            raise ShapeError(f"{self.name} takes a key{' and a node giving the shape' if self.like else ''}")
        return (like[0].shape if self.like else tuple(self.shape)), np.dtype(self.dtype)

    def out_shape(self, like) -> tuple:
        return like[0].shape if self.like else tuple(self.shape)

    def grad(self, i, x, y, g):
        return UNDEFINED if i == 0 else None  # a key has no derivative; like gives a shape

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class RandomUniform(RandomOp):
    name: ClassVar[str] = "random_uniform"
    low: float = 0.0
    high: float = 1.0

    def infer(self, key, *like):
        if not self.low < self.high:
            raise ShapeError(f"uniform needs low < high, got [{self.low}, {self.high})")
        return super().infer(key, *like)

    def kernel(self, key, *like):
        return uniform_values(key, self.out_shape(like), self.dtype, self.low, self.high)


@dataclass(frozen=True)
class RandomNormal(RandomOp):
    name: ClassVar[str] = "random_normal"

    def kernel(self, key, *like):
        return normal_values(key, self.out_shape(like), self.dtype)


@dataclass(frozen=True)
class RandomBernoulli(Op):
    """True with probability p (p broadcast to shape): uniform(key, shape, p's dtype) < p, as JAX draws it."""

    name: ClassVar[str] = "random_bernoulli"
    arity: ClassVar[int] = 2
    piecewise_constant: ClassVar[bool] = True  # no gradient to p (nor to the key)
    shape: tuple = ()
    from_p: bool = False  # the shape is p's (known at run time)

    def infer(self, key, p):
        _check_key(key)
        if p.dtype.kind != "f":
            raise DTypeError(f"bernoulli's probability {p.name!r} must be floating, got {p.dtype}")
        if self.from_p:
            return p.shape, np.dtype(bool)
        if broadcast_shapes(p.shape, self.shape) != tuple(self.shape):
            raise ShapeError(
                f"probability of shape {fmt_shape(p.shape)} does not broadcast to the draw's shape "
                f"{fmt_shape(self.shape)}"
            )
        return tuple(self.shape), np.dtype(bool)

    def grad(self, i, x, y, g):
        return UNDEFINED if i == 0 else None  # a key has no derivative; p's path is flat

    def kernel(self, key, p):
        shape = p.shape if self.from_p else self.shape
        dtype = p.dtype if p.dtype in (np.float32, np.float64) else np.float64
        return uniform_bits(key, shape, dtype) < p

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class RandomSplit(Op):
    """n new keys (n, 2) from one key."""

    name: ClassVar[str] = "random_split"
    arity: ClassVar[int] = 1
    n: int = 2

    def infer(self, key):
        _check_key(key)
        if self.n < 1:
            raise ShapeError(f"split needs n >= 1, got {self.n}")
        return (self.n, 2), np.dtype(np.uint32)

    def kernel(self, key):
        return split_keys(key, self.n)

    to_sympy = undefined_to_sympy


@dataclass(frozen=True)
class DropoutMask(Op):
    """like's shape and dtype: 1/(1-rate) where kept (probability 1-rate), 0 where dropped (inverted dropout)."""

    name: ClassVar[str] = "dropout_mask"
    arity: ClassVar[int] = 2
    shape_only: ClassVar[tuple] = (1,)
    rate: float = 0.5

    def infer(self, key, like):
        _check_key(key)
        if like.dtype.kind != "f":
            raise DTypeError(f"dropout needs a floating input, got {like.dtype} from {like.name!r}")
        if not 0.0 <= self.rate <= 1.0:
            raise ShapeError(f"dropout rate {self.rate} must be in [0, 1]")
        return like.shape, like.dtype

    def kernel(self, key, like):
        keep = 1.0 - self.rate
        if keep == 0.0:
            return np.zeros(like.shape, like.dtype)
        kept = uniform_bits(key, like.shape, np.float64) < keep
        return (kept * (1.0 / keep)).astype(like.dtype)

    def grad(self, i, x, y, g):
        return UNDEFINED if i == 0 else None  # the mask does not depend on x's value

    to_sympy = undefined_to_sympy


def dropout(x, rate: float, key, name: str | None = None):
    """Inverted dropout: x * mask / (1 - rate), the mask drawn from key; its derivative is g times the mask.

    rate=0 is the identity. The same key gives the same mask: advance the key between steps
    (gc.random.next_key) to draw a fresh one.
    """
    rate = float(rate)
    if not 0.0 <= rate <= 1.0:
        raise ShapeError(f"dropout{' ' + repr(name) if name else ''}: rate {rate} must be in [0, 1]")
    if rate == 0.0:
        from .elementwise import identity

        return identity(x, name=name)
    from .elementwise import multiply

    mask = apply(DropoutMask(rate), (key, x))
    return multiply(x, mask, name=name)
