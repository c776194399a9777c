"""The op library: one block per op (shape rule, kernel, derivative rule) in the modules below."""

from .base import OPS, LEAF_OPS, UNDEFINED, Op, apply, broadcast_shapes, register_op
from .elementwise import (
    abs,
    add,
    astype,
    cos,
    divide,
    equal,
    exp,
    greater,
    greater_equal,
    identity,
    less,
    less_equal,
    log,
    log1p,
    logsumexp,
    maximum,
    minimum,
    multiply,
    negative,
    not_equal,
    power,
    relu,
    sigmoid,
    sign,
    sin,
    sqrt,
    square,
    stop_gradient,
    subtract,
    tanh,
    where,
)
from .shape import broadcast_to, concatenate, expand_dims, getitem, reshape, split, squeeze, transpose, zeros_like
from .reduce import max, mean, sum
from .linalg import matmul
from . import linalg_ops  # noqa: F401  registers gc.linalg's ops; public as graphcompiler.linalg
from .nn import log_softmax, mse, softmax, softmax_cross_entropy
from .indexing import (
    diagonal,
    eye,
    eye_like,
    flip,
    one_hot,
    pad,
    repeat,
    roll,
    scatter_add,
    stack,
    take,
    take_along_axis,
    tile,
    trace,
)
from .random import dropout
from .special import (
    arccos,
    arccosh,
    arcsin,
    arcsinh,
    arctan,
    arctanh,
    bitwise_and,
    bitwise_or,
    bitwise_xor,
    ceil,
    clip,
    cosh,
    digamma,
    erf,
    expm1,
    floor,
    floor_divide,
    fmax,
    fmin,
    gammaln,
    invert,
    log_sigmoid,
    logaddexp,
    logaddexp2,
    mod,
    nan_to_num,
    reciprocal,
    round,
    sinh,
    softplus,
    tan,
)
from .reductions import argmax, argmin, cumprod, cumsum, min, prod, std, var
from .contract import einsum, outer, tensordot
from .conv import avg_pool2d, conv1d, conv2d, max_pool2d
