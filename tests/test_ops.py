"""The op table: every op's forward against NumPy, its first and second derivatives against central
differences in float64 on broadcasting shapes, and its stability at extreme logits."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest

import graphcompiler as gc
from gradcheck import check_gradients

PAIRS = [((), ()), ((2,), ()), ((), (2,)), ((3, 2), (2,)), ((2,), (3, 2)), ((3, 2), (1, 2)), ((1, 2), (3, 2)),
         ((3, 2), (3, 2)), ((1, 2), (2,)), ((3, 2), ())]
SHAPES = [(), (2,), (3, 2)]


def pos(rng, shape):            # a domain away from zero: log, sqrt, power bases, divisors
    return rng.uniform(0.5, 2.0, size=shape)


def away(rng, shape):           # values away from kinks and ties: relu, abs, max, maximum
    x = rng.uniform(0.2, 1.5, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    return x + np.arange(int(np.prod(shape))).reshape(shape) * 0.01 if shape else x


def normal(rng, shape):
    return rng.uniform(-1.5, 1.5, size=shape)


@dataclass
class Case:
    id: str
    build: Callable               # (*input nodes) -> node
    ref: Callable                 # (*arrays) -> array
    shapes: list
    domains: list = field(default_factory=list)
    second: bool = True

    def arrays(self, rng):
        doms = self.domains or [normal] * len(self.shapes)
        return [dom(rng, s) for dom, s in zip(doms, self.shapes)]


CASES: list[Case] = []

UNARY = [
    ("negative", gc.negative, np.negative, normal), ("square", gc.square, np.square, normal),
    ("sqrt", gc.sqrt, np.sqrt, pos), ("exp", gc.exp, np.exp, normal), ("log", gc.log, np.log, pos),
    ("log1p", gc.log1p, np.log1p, pos), ("sin", gc.sin, np.sin, normal), ("cos", gc.cos, np.cos, normal),
    ("tanh", gc.tanh, np.tanh, normal), ("sigmoid", gc.sigmoid, lambda x: 1 / (1 + np.exp(-x)), normal),
    ("relu", gc.relu, lambda x: np.maximum(x, 0), away), ("abs", gc.abs, np.abs, away),
    ("identity", gc.identity, lambda x: x, normal),
]
for (name, f, ref, dom), shape in itertools.product(UNARY, SHAPES):
    CASES.append(Case(f"{name}{shape}", f, ref, [shape], [dom]))

BINARY = [
    ("add", gc.add, np.add, normal, normal), ("subtract", gc.subtract, np.subtract, normal, normal),
    ("multiply", gc.multiply, np.multiply, normal, normal), ("divide", gc.divide, np.divide, normal, pos),
    ("power", gc.power, np.power, pos, normal), ("maximum", gc.maximum, np.maximum, away, away),
    ("minimum", gc.minimum, np.minimum, away, away),
    ("operators", lambda a, b: (a + b) * a - b / (a * a + 1) + (-a) ** 2, None, normal, normal),
]
for (name, f, ref, da, db), (sa, sb) in itertools.product(BINARY, PAIRS):
    if ref is None:
        ref = lambda a, b: (a + b) * a - b / (a * a + 1) + (-a) ** 2
    CASES.append(Case(f"{name}{sa}{sb}", f, ref, [sa, sb], [da, db]))

for sc, sa, sb in [((3, 2), (3, 2), (3, 2)), ((2,), (3, 2), ()), ((3, 1), (2,), (3, 2))]:
    CASES.append(Case(f"where{sc}{sa}{sb}", lambda c, a, b: gc.where(c > 0, a, b),
                      lambda c, a, b: np.where(c > 0, a, b), [sc, sa, sb], [away, normal, normal]))

# floor_divide: locally constant (zero derivative), here times a so the a-path is seen; logic ops on bools
# choose between branches (a path through a bool adds zero)
LOGIC = [
    ("floor_divide", lambda a, b: gc.floor_divide(a, b) * a, lambda a, b: np.floor_divide(a, b) * a),
    ("floordiv_op", lambda a, b: (a // b) * a + 3.0 // b, lambda a, b: (a // b) * a + 3.0 // b),
    ("divmod", lambda a, b: divmod(a, b)[0] * a + divmod(a, b)[1] + divmod(2.5, b)[1],
     lambda a, b: divmod(a, b)[0] * a + divmod(a, b)[1] + divmod(2.5, b)[1]),
    ("bitwise_and", lambda a, b: gc.where(gc.bitwise_and(a > 0, b > 1), a, b),
     lambda a, b: np.where((a > 0) & (b > 1), a, b)),
    ("bitwise_or", lambda a, b: gc.where(gc.bitwise_or(a > 0, b > 1), a, b),
     lambda a, b: np.where((a > 0) | (b > 1), a, b)),
    ("bitwise_xor", lambda a, b: gc.where(gc.bitwise_xor(a > 0, b > 1), a, b),
     lambda a, b: np.where((a > 0) ^ (b > 1), a, b)),
    ("invert", lambda a, b: gc.where(gc.invert(a > 0), a, b), lambda a, b: np.where(~(a > 0), a, b)),
    ("logic_ops", lambda a, b: gc.where(~((a > 0) & (b > 1) | (a < -1) ^ (b < 0.7)), a, b),
     lambda a, b: np.where(~((a > 0) & (b > 1) | (a < -1) ^ (b < 0.7)), a, b)),
]
for (name, f, ref), (sa, sb) in itertools.product(LOGIC, [((3, 2), (3, 2)), ((2,), (3, 2)), ((3, 1), (2,))]):
    CASES.append(Case(f"{name}{sa}{sb}", f, ref, [sa, sb], [away, pos]))

MATMUL = [((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)), ((2, 3), (3, 4)), ((2, 2, 3), (3, 4)),
          ((2, 3), (2, 3, 4)), ((2, 2, 3), (2, 3, 4)), ((2, 1, 2, 3), (3, 3, 2)), ((2, 2, 3), (3,)),
          ((3,), (2, 3, 2))]
for sa, sb in MATMUL:
    CASES.append(Case(f"matmul{sa}{sb}", gc.matmul, np.matmul, [sa, sb]))
    CASES.append(Case(f"matmul_op{sa}{sb}", lambda a, b: a @ b, np.matmul, [sa, sb]))

for shape in [(3, 2), (2, 3, 2)]:
    nd = len(shape)
    axes = [None] + list(range(nd)) + [-1, (0, nd - 1)]
    for axis, keep in itertools.product(axes, [False, True]):
        for name, f, ref, dom in [("sum", gc.sum, np.sum, normal), ("mean", gc.mean, np.mean, normal),
                                  ("max", gc.max, np.max, away),
                                  ("logsumexp", gc.logsumexp, None, normal)]:
            if ref is None:
                def ref(x, axis=None, keepdims=False):
                    m = np.max(x, axis=axis, keepdims=True)
                    s = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
                    return s if keepdims else np.squeeze(s, axis=axis)
            CASES.append(Case(f"{name}{shape}axis={axis},keepdims={keep}",
                              lambda x, f=f, axis=axis, keep=keep: f(x, axis=axis, keepdims=keep),
                              lambda x, ref=ref, axis=axis, keep=keep: ref(x, axis=axis, keepdims=keep),
                              [shape], [dom]))


def np_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


for shape, axis in [((4,), -1), ((3, 4), -1), ((3, 4), 0), ((2, 3, 4), 1)]:
    CASES.append(Case(f"softmax{shape}axis={axis}", lambda x, a=axis: gc.softmax(x, axis=a),
                      lambda x, a=axis: np_softmax(x, a), [shape]))
    CASES.append(Case(f"log_softmax{shape}axis={axis}", lambda x, a=axis: gc.log_softmax(x, axis=a),
                      lambda x, a=axis: np.log(np_softmax(x, a)), [shape]))

CASES += [
    Case("transpose(2,3)", gc.transpose, np.transpose, [(2, 3)]),
    Case("transpose(2,3,4)axes", lambda x: gc.transpose(x, (1, 2, 0)), lambda x: np.transpose(x, (1, 2, 0)),
         [(2, 3, 4)]),
    Case("T", lambda x: x.T, lambda x: x.T, [(2, 3)]),
    Case("reshape", lambda x: gc.reshape(x, (3, -1)), lambda x: x.reshape(3, -1), [(2, 3, 2)]),
    Case("reshape_scalar", lambda x: gc.reshape(x, (1, 1)), lambda x: x.reshape(1, 1), [()]),
    Case("broadcast_to", lambda x: gc.broadcast_to(x, (3, 2)), lambda x: np.broadcast_to(x, (3, 2)), [(2,)]),
    Case("broadcast_to_keep", lambda x: gc.broadcast_to(x, (2, 3, 2)), lambda x: np.broadcast_to(x, (2, 3, 2)),
         [(3, 1)]),
    Case("expand_dims", lambda x: gc.expand_dims(x, (0, 2)), lambda x: np.expand_dims(x, (0, 2)), [(3, 2)]),
    Case("squeeze", lambda x: gc.squeeze(x, 1), lambda x: np.squeeze(x, 1), [(3, 1, 2)]),
    Case("slice", lambda x: x[1:3], lambda x: x[1:3], [(4, 2)]),
    Case("slice_step", lambda x: x[::-2, 1], lambda x: x[::-2, 1], [(5, 2)]),
    Case("index_newaxis", lambda x: x[..., None, 0], lambda x: x[..., None, 0], [(3, 2)]),
    Case("concatenate0", lambda a, b: gc.concatenate([a, b], axis=0), lambda a, b: np.concatenate([a, b], 0),
         [(2, 3), (1, 3)]),
    Case("concatenate1", lambda a, b, c: gc.concatenate([a, b, c], axis=1),
         lambda a, b, c: np.concatenate([a, b, c], 1), [(2, 1), (2, 3), (2, 2)]),
    Case("split", lambda x: gc.split(x, [1, 3], axis=1)[1] * 2 + gc.split(x, [1, 3], axis=1)[2][:, :1],
         lambda x: np.split(x, [1, 3], axis=1)[1] * 2 + np.split(x, [1, 3], axis=1)[2][:, :1], [(2, 4)]),
    Case("mse", gc.mse, lambda p, t: np.mean((p - t) ** 2), [(3, 2), (3, 2)]),
    Case("mse_broadcast", gc.mse, lambda p, t: np.mean((p - t) ** 2), [(3, 2), (2,)]),
    Case("astype_float", lambda x: gc.astype(x, "float64") * 2, lambda x: x * 2, [(3,)]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_forward_and_derivatives(case: Case):
    rng = np.random.default_rng(abs(hash(case.id)) % 2**32)
    arrays = case.arrays(rng)
    g = gc.Graph(case.id)
    xs = [g.input(f"x{k}", shape=a.shape) for k, a in enumerate(arrays)]
    y = case.build(*xs)
    feeds = {x.name: a for x, a in zip(xs, arrays)}
    (out,) = gc.compile([y]).run(feeds)
    expected = case.ref(*arrays)
    assert out.shape == np.shape(expected) == y.shape
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    # a scalar cost that weights every output entry differently, so each partial derivative is seen
    weights = g.constant(rng.uniform(0.5, 1.5, size=y.shape))
    cost = gc.sum(y * weights, name="J")
    check_gradients(g, cost, xs, feeds, second=case.second)


def test_softmax_cross_entropy_values_and_derivatives():
    rng = np.random.default_rng(3)
    logits, labels = rng.standard_normal((5, 4)), rng.integers(0, 4, size=5)
    g = gc.Graph()
    o = g.input("o", shape=(None, 4))
    y = g.input("y", shape=(None,), dtype="int64")
    L = gc.softmax_cross_entropy(o, y, name="L")
    (val,) = gc.compile([L]).run({"o": logits, "y": labels})
    ref = -np.mean(np.log(np_softmax(logits, -1))[np.arange(5), labels])
    np.testing.assert_allclose(val, ref, rtol=1e-12)
    cost = L * 3.0
    g2 = gc.Graph()
    o2 = g2.input("o", shape=(5, 4))
    y2 = g2.input("y", shape=(5,), dtype="int64")
    check_gradients(g2, gc.softmax_cross_entropy(o2, y2) * 3.0, [o2], {"o": logits, "y": labels})
    assert cost.shape == ()


def test_comparisons_forward_and_zero_derivative():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((3, 2)), rng.standard_normal((2,))
    for f, ref in [(gc.greater, np.greater), (gc.less, np.less), (gc.equal, np.equal),
                   (gc.greater_equal, np.greater_equal), (gc.less_equal, np.less_equal),
                   (gc.not_equal, np.not_equal)]:
        g = gc.Graph()
        x, y = g.input("x", shape=(3, 2)), g.input("y", shape=(2,))
        c = f(x, y)
        assert c.dtype == np.bool_
        (out,) = gc.compile([c]).run({"x": a, "y": b})
        np.testing.assert_array_equal(out, ref(a, b))
        # a path only through a comparison adds zero and is not "disconnected"
        cost = gc.sum(gc.astype(c, "float64") * x)
        gx = gc.build_grad(cost, [x, y])
        dx, dy = gc.compile([gx[x], gx[y]]).run({"x": a, "y": b})
        np.testing.assert_array_equal(dx, ref(a, b).astype(float))
        np.testing.assert_array_equal(dy, np.zeros(2))


def test_integer_floor_divide_and_bits_as_numpy():
    a, b = np.array([7, -7, 5, 0, 12]), np.array([2, 3, -2, 5, 7])
    g = gc.Graph()
    x, y = g.input("x", (5,), "int64"), g.input("y", (5,), "int64")
    outs = [x // y, x & y, x | 6, 5 ^ y, ~x, gc.invert(x > 0), 20 // y, x & True]
    refs = [a // b, a & b, a | 6, 5 ^ b, ~a, ~(a > 0), 20 // b, a & True]
    for out, ref, node in zip(gc.compile(outs).run({"x": a, "y": b}), refs, outs):
        assert node.dtype == np.asarray(ref).dtype, node
        np.testing.assert_array_equal(out, ref)


def test_floats_in_bit_ops_are_refused_clearly():
    g = gc.Graph()
    x = g.input("x", (2,))
    for make in (lambda: ~x, lambda: x & x, lambda: True | x, lambda: x ^ 1):
        with pytest.raises(gc.DTypeError, match="bool or|bools or integers"):
            make()
    assert len(g) == 1


def test_max_shares_gradient_among_ties():
    g = gc.Graph()
    x = g.input("x", shape=(2, 3))
    m = gc.max(x, axis=1)
    (dx,) = gc.compile([gc.build_grad(gc.sum(m), [x])[x]]).run({"x": np.array([[1., 3, 3], [2, 0, 1]])})
    np.testing.assert_array_equal(dx, [[0, 0.5, 0.5], [1, 0, 0]])


def test_maximum_ties_share_half():
    g = gc.Graph()
    a, b = g.input("a", shape=(2,)), g.input("b", shape=(2,))
    gr = gc.build_grad(gc.sum(gc.maximum(a, b)), [a, b])
    da, db = gc.compile([gr[a], gr[b]]).run({"a": [1.0, 2.0], "b": [1.0, 0.0]})
    np.testing.assert_array_equal(da, [0.5, 1.0])
    np.testing.assert_array_equal(db, [0.5, 0.0])


@pytest.mark.parametrize("big", [1e4, -1e4])
def test_stable_at_extreme_logits(big):
    logits = np.array([[big, 0.0, -big], [big, big, 0.0]])
    g = gc.Graph()
    o = g.input("o", shape=(2, 3))
    y = g.input("y", shape=(2,), dtype="int64")
    L = gc.softmax_cross_entropy(o, y)
    outs = [gc.softmax(o), gc.log_softmax(o), gc.logsumexp(o, axis=1), gc.sigmoid(o), L]
    grads = gc.build_grad(L + gc.sum(gc.logsumexp(o, axis=1)) + gc.sum(gc.sigmoid(o)), [o])
    vals = gc.compile(outs + [grads[o]]).run({"o": logits, "y": [0, 2]})
    for v in vals:
        assert np.all(np.isfinite(v)), v
    sm, lsm, lse, sig, loss, _ = vals
    np.testing.assert_allclose(sm.sum(axis=1), 1.0)
    np.testing.assert_allclose(lse, [abs(big), big + np.log(2) if big > 0 else 0.0])
    np.testing.assert_allclose(np.exp(lsm), sm, atol=1e-300)
    assert np.all((sig >= 0) & (sig <= 1))


def test_sigmoid_tails_are_accurate():
    g = gc.Graph()
    x = g.input("x", shape=(3,))
    (s,) = gc.compile([gc.sigmoid(x)]).run({"x": [-40.0, 0.0, 40.0]})
    np.testing.assert_allclose(s, [np.exp(-40.0) / (1 + np.exp(-40.0)), 0.5, 1 / (1 + np.exp(-40.0))],
                               rtol=1e-12)
    assert s[0] > 0


def test_float32_graph_stays_float32():
    g = gc.Graph()
    x = g.input("x", shape=(None, 3), dtype="float32")
    W = g.parameter("W", np.ones((3, 2), np.float32))
    y = gc.tanh(x @ W) * 2 + 1.5 - 0.5 / (x @ W + 3)
    assert y.dtype == np.float32
    J = gc.mean(y)
    gW = gc.build_grad(J, [W])[W]
    assert gW.dtype == np.float32
    out, dW = gc.compile([J, gW]).run({"x": np.ones((4, 3), np.float32)})
    assert out.dtype == np.float32 and dW.dtype == np.float32


def test_every_op_in_the_contract_exists_and_is_exercised():
    contract = ("add subtract multiply divide negative power square sqrt exp log log1p sin cos tanh sigmoid relu "
                "abs maximum minimum where greater less equal astype matmul transpose reshape broadcast_to sum "
                "mean max concatenate split softmax log_softmax logsumexp softmax_cross_entropy mse").split()
    for name in contract:
        assert callable(getattr(gc, name)), name
    tested = " ".join(c.id for c in CASES)
    untested = [n for n in contract if n not in tested and n not in
                ("greater", "less", "equal", "softmax_cross_entropy", "astype")]
    assert not untested
