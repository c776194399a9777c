"""simplify: algebraic rewrite rules applied to a fixpoint, with common subexpressions merged.

Each rule is one line of the table RULES: an op name, the rule, and its algebra. A rule looks at one node
(whose inputs are already simplified) and returns the node that replaces it, or None. A replacement has the
node's exact shape and dtype; the driver checks that, so a rule can never change what a program computes.
A rule that can fire only on nodes with certain inputs says which beside it (@looks_for), and the driver
skips the nodes that have none of them.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ..errors import GraphCompilerError
from ..graph import Node
from ..ops import elementwise as E
from ..ops import nn as NN
from ..ops import shape as S
from ..ops.base import OPS, Op
from ..ops import fused as F
from .ir import LEAF_TYPES, Context, is_leaf, topo_order

Rule = Callable[[Node, Context], "Node | None"]

_SMALL = 1 << 16  # constants folded only up to this many elements (a broadcast view is free)
FOLD_ELEMENTS = 1_000_000  # constant folding reads at most this many elements per step (else: left to the run)
FOLD_SECONDS = 1.0  # and spends at most this long per simplify call; the rest is left to the run
_VIEWS = ("broadcast_to", "broadcast_like", "expand_dims")  # ops whose kernel makes a view in O(1)


# -- helpers the rules read with ----------------------------------------------------------------


def _const_all(ctx: Context, x: Node, v: float) -> bool:
    """x is a constant whose every element equals v."""
    if not ctx.is_const(x):
        return False
    a = ctx.value(x)
    if a.size > _SMALL or a.dtype.kind not in "biuf":
        return False
    if a.size == 1:
        return bool(a.item() == v)  # (the common case: a scalar; the same answer without a NumPy reduction)
    return bool(np.all(a == v))


def _scalar_const(ctx: Context, x: Node) -> bool:
    return ctx.is_const(x) and ctx.value(x).size == 1 and x.dtype.kind == "f"


def _uniform(a: np.ndarray) -> bool:
    """Every element equal (a broadcast constant, typically), so one scalar can stand for it."""
    if a.size == 0:
        return False
    if all(st == 0 for st in a.strides):
        return True
    return a.size <= _SMALL and bool(np.all(a == a.flat[0]))


def _same(n: Node, x: Node) -> bool:
    """x can stand for n as it is: same shape (None dims taken from the same source) and dtype."""
    return x.shape == n.shape and x.dtype == n.dtype


def _binary_args(n: Node) -> tuple[Node, Node]:
    return n.inputs[0], n.inputs[1]


def _mk(ctx: Context, op: Op, inputs, n: Node) -> Node:
    return ctx.node(op, inputs, like=n)


# -- a rule's trigger ---------------------------------------------------------------------------

# The inputs a rule can fire on, by their op's name ("constant": a constant input), as each rule declares them
# with @looks_for: such a rule returns None unless one of the node's inputs is such a node. When every rule of an
# op declares them, the driver tries the rules only on the nodes that have such an input (most products and
# differences of a big gradient have none). A rule that declares nothing is tried on every node of its op.
LOOKS_FOR: dict[Rule, frozenset[str]] = {}  # filled by @looks_for only


def looks_for(*names: str) -> Callable[[Rule], Rule]:
    """Declare, beside a rule, the input ops it fires on: `@looks_for("constant")` over `def times_one`."""
    unknown = [x for x in names if x not in OPS]
    if not names or unknown:
        raise GraphCompilerError(
            f"a rule's @looks_for names the ops of the inputs it fires on, at least one, each an op of the op "
            f"table (or 'constant'); got {names!r}{f', not ops: {unknown}' if unknown else ''}. Leave "
            "@looks_for off a rule that may fire on any node of its op"
        )

    def declare(rule: Rule) -> Rule:
        LOOKS_FOR[rule] = frozenset(names)
        return rule

    return declare


# -- the rules ----------------------------------------------------------------------------------


def _drop_unit(n, ctx, unit):
    """a . unit -> a and unit . b -> b, for a commutative op whose unit is `unit`."""
    a, b = _binary_args(n)
    if _const_all(ctx, b, unit) and _same(n, a):
        return a
    if _const_all(ctx, a, unit) and _same(n, b):
        return b
    return None


@looks_for("constant")
def times_one(n, ctx):  # x * 1 -> x,  1 * x -> x (seeds of ones too)
    return _drop_unit(n, ctx, 1)


@looks_for("constant")
def plus_zero(n, ctx):  # x + 0 -> x,  0 + x -> x
    return _drop_unit(n, ctx, 0)


@looks_for("constant")
def minus_zero(n, ctx):  # x - 0 -> x
    a, b = _binary_args(n)
    return a if _const_all(ctx, b, 0) and _same(n, a) else None


@looks_for("constant")
def zero_minus(n, ctx):  # 0 - x -> -x
    a, b = _binary_args(n)
    if _const_all(ctx, a, 0) and _same(n, b) and b.dtype.kind == "f":
        return _mk(ctx, E.Negative(), (b,), n)
    return None


@looks_for("constant")
def over_one(n, ctx):  # x / 1 -> x
    a, b = _binary_args(n)
    return a if _const_all(ctx, b, 1) and _same(n, a) else None


@looks_for("negative")
def neg_neg(n, ctx):  # --x -> x
    x = n.inputs[0]
    return x.inputs[0] if x.op.name == "negative" and _same(n, x.inputs[0]) else None


@looks_for("multiply")
def neg_scaled(n, ctx):  # -(c * x) -> (-c) * x   (c a scalar constant)
    x = n.inputs[0]
    if x.op.name == "multiply":
        a, b = _binary_args(x)
        if _scalar_const(ctx, a):
            return _mk(ctx, E.Multiply(), (ctx.constant(-ctx.value(a), n), b), n)
        if _scalar_const(ctx, b):
            return _mk(ctx, E.Multiply(), (a, ctx.constant(-ctx.value(b), n)), n)
    return None


@looks_for("negative")
def add_neg(n, ctx):  # a + (-b) -> a - b,  (-a) + b -> b - a
    a, b = _binary_args(n)
    if b.op.name == "negative":
        return _mk(ctx, E.Subtract(), (a, b.inputs[0]), n)
    if a.op.name == "negative":
        return _mk(ctx, E.Subtract(), (b, a.inputs[0]), n)
    return None


@looks_for("negative")
def sub_neg(n, ctx):  # a - (-b) -> a + b
    a, b = _binary_args(n)
    return _mk(ctx, E.Add(), (a, b.inputs[0]), n) if b.op.name == "negative" else None


def twice(n, ctx):  # x + x -> 2 * x   (exact in floating point)
    a, b = _binary_args(n)
    if a is b and a.dtype.kind == "f":
        return _mk(ctx, E.Multiply(), (ctx.constant(np.array(2, a.dtype), n), a), n)
    return None


# g * float(mask) -> g * mask   (NumPy multiplies by a bool as 0/1)
@looks_for("astype")
def mask_multiply(n, ctx):
    a, b = _binary_args(n)
    for k, m in ((1, b), (0, a)):
        if m.op.name == "astype" and m.inputs[0].dtype == bool and m.dtype.kind == "f":
            trial = (a, m.inputs[0]) if k == 1 else (m.inputs[0], b)
            if n.op.infer(*trial) == (n.shape, n.dtype):
                return _mk(ctx, E.Multiply(), trial, n)
    return None


@looks_for("constant")
def scale_scale(n, ctx):  # c1 * (c2 * x) -> (c1 c2) * x   (scalar c1, c2)
    a, b = _binary_args(n)
    for c, m in ((a, b), (b, a)):
        if _scalar_const(ctx, c) and m.op.name == "multiply":
            p, q = _binary_args(m)
            for c2, x in ((p, q), (q, p)):
                if _scalar_const(ctx, c2):
                    v = np.asarray(ctx.value(c) * ctx.value(c2), dtype=np.result_type(c.dtype, c2.dtype))
                    if v.ndim > max(c.ndim, c2.ndim):
                        v = v.reshape(v.shape[-max(c.ndim, c2.ndim) :] if max(c.ndim, c2.ndim) else ())
                    return _mk(ctx, E.Multiply(), (ctx.constant(v, n), x), n)
    return None


@looks_for("broadcast_to", "broadcast_like", "constant")
def absorb_broadcast(n, ctx):  # f(broadcast(a), b) -> f(a, b)   (f broadcasts anyway)
    ins = list(n.inputs)
    for k, x in enumerate(ins):
        small = None
        if x.op.name in ("broadcast_to", "broadcast_like") and x.inputs[0].dtype == x.dtype:
            small = x.inputs[0]
        elif ctx.is_const(x) and x.ndim and _uniform(ctx.value(x)):  # a constant array of one value: a scalar
            small = ctx.constant(np.asarray(ctx.value(x).flat[0]).astype(x.dtype), n)
        if small is not None:
            trial = ins[:k] + [small] + ins[k + 1 :]
            try:
                shape, dtype = n.op.infer(*trial)
            except Exception:
                continue
            if tuple(shape) == n.shape and dtype == n.dtype:
                return _mk(ctx, n.op, trial, n)
    return None


def transpose_identity(n, ctx):  # transpose(x, (0, 1, ..)) -> x
    return n.inputs[0] if tuple(n.op.axes) == tuple(range(n.ndim)) else None


def transpose_transpose(n, ctx):  # transpose(transpose(x, p), q) -> transpose(x, p[q])
    x = n.inputs[0]
    if x.op.name != "transpose":
        return None
    axes = tuple(x.op.axes[a] for a in n.op.axes)
    inner = x.inputs[0]
    return inner if axes == tuple(range(n.ndim)) else _mk(ctx, S.Transpose(axes), (inner,), n)


def reshape_same(n, ctx):  # reshape(x, shape(x)) -> x
    x = n.inputs[0]
    return x if _same(n, x) and None not in x.shape else None


def reshape_reshape(n, ctx):  # reshape(reshape(x, s1), s2) -> reshape(x, s2)
    x = n.inputs[0]
    if x.op.name == "reshape":
        return _mk(ctx, S.Reshape(n.op.shape), (x.inputs[0],), n)
    return None


def broadcast_same(n, ctx):  # broadcast_to(x, shape(x)) -> x
    x = n.inputs[0]
    return x if _same(n, x) and None not in x.shape else None


def sum_no_axes(n, ctx):  # sum(x, axis=()) -> x
    x = n.inputs[0]
    return x if not n.op.axis and _same(n, x) else None


def astype_same(n, ctx):  # astype(x, dtype(x)) -> x
    x = n.inputs[0]
    return x if _same(n, x) else None


def identity_drop(n, ctx):  # identity(x) -> x   (stop_gradient too: a run is the same)
    x = n.inputs[0]
    return x if _same(n, x) else None


def squeeze_expand(n, ctx):  # squeeze(expand_dims(x, a), a) -> x, and back
    x = n.inputs[0]
    pair = {"squeeze": "expand_dims", "expand_dims": "squeeze"}[n.op.name]
    if x.op.name == pair and tuple(x.op.axis) == tuple(n.op.axis) and _same(n, x.inputs[0]):
        return x.inputs[0]
    return None


@looks_for("softmax")
def log_of_softmax(n, ctx):  # log(softmax(x)) -> log_softmax(x)
    x = n.inputs[0]
    return _mk(ctx, NN.LogSoftmax(x.op.axis), x.inputs, n) if x.op.name == "softmax" else None


@looks_for("exp")
def log_exp(n, ctx):  # log(exp(x)) -> x
    x = n.inputs[0]
    return x.inputs[0] if x.op.name == "exp" and _same(n, x.inputs[0]) else None


@looks_for("add")
def log_one_plus(n, ctx):  # log(1 + x) -> log1p(x)
    x = n.inputs[0]
    if x.op.name != "add":
        return None
    a, b = _binary_args(x)
    for one, y in ((a, b), (b, a)):
        if _const_all(ctx, one, 1) and _same(n, y):
            return _mk(ctx, E.Log1p(), (y,), n)
    return None


@looks_for("sum")
def log_sum_exp(n, ctx):  # log(sum(exp(x), axis)) -> logsumexp(x, axis)
    s = n.inputs[0]
    if s.op.name == "sum" and s.inputs[0].op.name == "exp" and s.dtype == s.inputs[0].dtype:
        return _mk(ctx, NN.LogSumExp(s.op.axis, s.op.keepdims), s.inputs[0].inputs, n)
    return None


# sce(o, y) -> -mean(log_softmax(o)[y])  (shares log_softmax with the gradient)
def cross_entropy(n, ctx):
    o, y = n.inputs
    if o.ndim < 1 or y.dtype.kind not in "iu":
        return None
    return _mk(ctx, F.PickMean(), (_mk(ctx, NN.LogSoftmax(o.ndim - 1), (o,), n), y), n)


# softmax(x) -> exp(log_softmax(x))  (one log_softmax for loss and gradient)
def softmax_as_exp(n, ctx):
    return _mk(ctx, E.Exp(), (_mk(ctx, NN.LogSoftmax(n.op.axis), n.inputs, n),), n) if n.op.axis == n.ndim - 1 else None


@looks_for("one_hot")
def minus_one_hot(n, ctx):  # p - one_hot(y) -> p with 1 taken off at the labels
    p, h = _binary_args(n)
    if h.op.name == "one_hot" and _same(n, p) and h.shape == p.shape:
        return _mk(ctx, F.MinusOneHot(), (p, h.inputs[0]), n)
    return None


def sum_of_product(n, ctx):  # sum(a * b) over all axes -> dot(a, b)
    m = n.inputs[0]
    if (
        m.op.name == "multiply"
        and not n.op.keepdims
        and len(n.op.axis) == m.ndim
        and m.ndim
        and m.inputs[0].shape == m.inputs[1].shape == m.shape
        and None not in m.shape
        and m.dtype.kind == "f"
        and m.inputs[0].dtype == m.inputs[1].dtype == m.dtype
    ):
        return _mk(ctx, F.DotAll(), m.inputs, n)
    return None


# sum(broadcast_to(x, S), A) -> k * sum(x, A ∩ axes of x), k = |broadcast axes in A|;  mean, max: no k
def sum_of_broadcast(n, ctx):
    b = n.inputs[0]
    if b.op.name != "broadcast_to" or not n.op.axis or None in b.shape:
        return None
    x = b.inputs[0]
    lead = b.ndim - x.ndim
    spread = [k for k in n.op.axis if b.shape[k] != 1 and (k < lead or x.shape[k - lead] == 1)]
    if not spread:
        return None  # nothing broadcast is reduced: no work saved
    real = tuple(k - lead for k in n.op.axis if k not in spread and k >= lead)
    r = _mk(ctx, type(n.op)(real, True), (x,), n) if real else x  # x has b's dtype: so has sum(x)
    if r.dtype != n.dtype:
        return None  # the mean of an integer x without real axes: a cast, not worth a rule
    if n.op.name == "sum":
        times = int(np.prod([b.shape[k] for k in spread], dtype=object))
        r = _mk(ctx, E.Multiply(), (r, ctx.constant(np.array(times, n.dtype), n)), n)
    kept = tuple(1 if k in n.op.axis else d for k, d in enumerate(b.shape))
    if r.shape != kept:
        r = ctx.node(S.BroadcastTo(kept), (r,), like=n)
    if kept != n.shape:
        r = ctx.node(S.Reshape(n.shape), (r,), like=n)
    return r


# -- rules that need the concrete shapes of a run (applied when a program is specialised) ---------


def count_fold(n, ctx):  # count(x, axes) -> the number, once shapes are known
    return ctx.constant(n.op.kernel(n.inputs[0]), n) if None not in n.inputs[0].shape else None


# sum_like/broadcast_like/reshape_like(g, like) -> g if shapes agree
def like_identity(n, ctx):
    g = n.inputs[0]
    return g if _same(n, g) and None not in n.shape else None


# broadcast_like(g, like) -> broadcast_to(g, shape(like)); same for reshape
def like_static(n, ctx):
    if None in n.shape:
        return None
    op = {"broadcast_like": S.BroadcastTo, "reshape_like": S.Reshape}[n.op.name](n.shape)
    return _mk(ctx, op, (n.inputs[0],), n)


def zeros_fold(n, ctx):  # zeros_like(x) -> a broadcast zero constant (no memory)
    if None in n.shape:
        return None
    return ctx.constant(np.broadcast_to(np.zeros((), n.dtype), n.shape), n)


_BINARY = ("add", "subtract", "multiply", "divide", "power", "maximum", "minimum", "where")

RULES: dict[str, list[Rule]] = {
    "multiply": [times_one, scale_scale, mask_multiply],
    "add": [plus_zero, add_neg, twice],
    "subtract": [minus_zero, zero_minus, sub_neg, minus_one_hot],
    "divide": [over_one],
    "negative": [neg_neg, neg_scaled],
    "transpose": [transpose_identity, transpose_transpose],
    "reshape": [reshape_same, reshape_reshape],
    "broadcast_to": [broadcast_same],
    "sum": [sum_no_axes, sum_of_product, sum_of_broadcast],
    "softmax_cross_entropy": [cross_entropy],
    "softmax": [softmax_as_exp],
    "mean": [sum_no_axes, sum_of_broadcast],
    "max": [sum_of_broadcast],
    "astype": [astype_same],
    "identity": [identity_drop],
    "stop_gradient": [identity_drop],
    "squeeze": [squeeze_expand],
    "expand_dims": [squeeze_expand],
    "log": [log_of_softmax, log_exp, log_one_plus, log_sum_exp],
}
for _name in _BINARY:
    RULES.setdefault(_name, []).append(absorb_broadcast)

SHAPE_RULES: dict[str, list[Rule]] = {
    "count": [count_fold],
    "sum_like": [like_identity],
    "broadcast_like": [like_identity, like_static],
    "reshape_like": [like_identity, like_static],
    "zeros_like": [zeros_fold],
}

# -- the driver ---------------------------------------------------------------------------------


class FoldBudget:
    """What constant folding may still spend in one simplify call: elements per step, and seconds of
    kernel time in all (only the time folding itself takes, so a big graph's rewriting does not use it up).

    Folding runs kernels at compile time; a constant broadcast to (10**5,)*3 and summed would otherwise
    take hours in `compile`. Past the budget a step is left to the run (which can be interrupted and
    reports where it is).
    """

    def __init__(self, elements: int = FOLD_ELEMENTS, seconds: float = FOLD_SECONDS):
        self.elements = elements
        self.seconds = seconds
        self.used = 0.0

    def spent(self) -> bool:
        return self.used > self.seconds

    def charge(self, seconds: float) -> None:
        self.used += seconds


def _reduce_broadcast(op, a: np.ndarray) -> np.ndarray | None:
    """sum, mean or max of a constant over axes along which it is broadcast (stride 0), in closed form.

    sum over a broadcast axis of length k is k times one slice; mean and max over it are that slice. Only the
    axes that hold distinct values are reduced element by element. None when no reduced axis is broadcast.
    """
    axes = tuple(op.axis)
    flat = [k for k in axes if a.strides[k] == 0 and a.shape[k] > 1]
    if not flat:
        return None
    core = a[tuple(slice(0, 1) if k in flat else slice(None) for k in range(a.ndim))]
    if core.size > FOLD_ELEMENTS:
        return None
    rest = type(op)(axes, True)  # keepdims: the axes stay put
    value = np.asarray(rest.kernel(core))
    if op.name == "sum":
        times = int(np.prod([a.shape[k] for k in flat], dtype=object))
        value = np.asarray(value * np.asarray(times, dtype=value.dtype), dtype=value.dtype)
    if not op.keepdims:
        value = value.reshape([d for k, d in enumerate(value.shape) if k not in axes])
    return value


def fold_constant(n: Node, ctx: Context, budget: FoldBudget | None = None) -> Node | None:
    """op(constants) -> constant: computed once here instead of at every run (small results only).

    Bounded work: a step that would read more than `budget.elements` elements (a view over a huge
    broadcast counts at its full size, since a kernel visits every element) is left to the run, except
    sums and means over broadcast axes, which have a closed form; so is everything once the budget's time
    is spent.
    """
    ins = n.inputs
    if ins and not ctx.is_const(ins[0]) and n.op.reads_value(0):
        return None  # (the common case, first: an input that is computed)
    if is_leaf(n) or n.op.name in ("one_hot",):
        return None
    if budget is not None and budget.spent():
        return None
    limit = budget.elements if budget is not None else FOLD_ELEMENTS
    args = []
    for i, x in enumerate(n.inputs):
        if n.op.reads_value(i):
            if not ctx.is_const(x):
                return None
            args.append(ctx.value(x))
        else:
            if None in x.shape:
                return None
            args.append(np.broadcast_to(np.empty((), x.dtype), x.shape))
    if None in n.shape:
        return None
    size = int(np.prod(n.shape, dtype=np.int64))
    broadcast = n.op.name in ("broadcast_to", "broadcast_like", "expand_dims", "reshape", "squeeze")
    if size > _SMALL and not broadcast:
        return None
    read = sum(int(np.prod(a.shape, dtype=object)) for i, a in enumerate(args) if n.op.reads_value(i))
    value = None
    if read > limit:
        if n.op.name in ("sum", "mean", "max") and len(args) == 1:
            value = _reduce_broadcast(n.op, args[0])  # sum(broadcast c) = c * count
        if value is None and n.op.name not in _VIEWS:
            return None  # too big to fold: left to the run
    start = time.perf_counter()
    try:
        with np.errstate(all="ignore"):
            if value is None:
                value = np.asarray(n.op.kernel(*args))
    except Exception:
        return None  # leave it to the run, which reports the failure naming the step
    finally:
        if budget is not None:
            budget.charge(time.perf_counter() - start)
    if value.shape != n.shape or value.dtype != n.dtype:
        return None
    if size > _SMALL and any(s != 0 for s in value.strides) and value.nbytes > _SMALL:
        return None
    return ctx.constant(value, n)


def simplify(
    nodes: list[Node], roots: list[Node], ctx: Context, *, shapes: bool = False
) -> tuple[list[Node], list[Node]]:
    """Rewrite to a fixpoint; return the new node list (topological) and the roots' replacements.

    One sweep in topological order simplifies every node after its inputs, so a rule sees simplified
    inputs; a node's replacement is simplified again until no rule applies (the fixpoint). `shapes=True`
    adds the rules that need concrete shapes.
    """
    rewriter = _Rewriter(ctx, rule_table(shapes))
    replaced: dict[Node, Node] = {}
    for n in nodes:
        replaced[n] = rewriter.visit(n, replaced)
    new_roots = [replaced[r] for r in roots]
    return topo_order(new_roots), new_roots


def rule_table(shapes: bool) -> dict[str, list[Rule]]:
    """Op name -> its rules, in the order they are tried (with the shape rules first when `shapes`)."""
    table = dict(RULES)
    if shapes:
        for k, v in SHAPE_RULES.items():
            table[k] = v + table.get(k, [])
    return table


def input_gate(rules: list[Rule]) -> frozenset[str] | None:
    """The input op names one of which a node needs for any of `rules` to fire (their @looks_for), or None
    when a rule may fire on any node of its op (it declares no trigger)."""
    names: set[str] = set()
    for rule in rules:
        looks = LOOKS_FOR.get(rule)
        if looks is None:
            return None
        names |= looks
    return frozenset(names)


class _Rewriter:
    """One simplify call's state: the rules, the folding budget, and the values met so far (for merging)."""

    def __init__(self, ctx: Context, table: dict[str, list[Rule]]):
        self.ctx = ctx
        self.table = table
        self.gates = {name: input_gate(rules) for name, rules in table.items()}  # (@looks_for)
        self.budget = FoldBudget()
        self.seen: dict[tuple, Node] = {}  # (op, inputs) -> node: common subexpressions
        self.consts: dict[tuple, Node] = {}  # small constants by value
        self.settled: set[Node] = set()  # nodes no rule applies to

    def visit(self, n: Node, replaced: dict[Node, Node]) -> Node:
        """The simplified replacement of n, whose inputs have their replacements in `replaced`."""
        ctx = self.ctx
        if is_leaf(n):
            m = self.canonical(n)
        else:
            ins = tuple([replaced[x] for x in n.inputs])
            m = n if ins == n.inputs else ctx.rebuild(n, ins)
            m = self.settle(m)
            if m is not n and not is_leaf(m) and ctx.graph.get(m.name) is not m:
                ctx.source.setdefault(m, ctx.origin_of(n))  # m computes the value of the user's node n
        self.settled.add(m)
        return m

    def canonical(self, m: Node) -> Node:
        """The first node met that computes m's value: the same small constant, or the same op on the same
        inputs."""
        op = m.op
        if type(op) not in LEAF_TYPES and op.name != "constant":  # the common case first: a step
            first = self.seen.setdefault((op, m.inputs), m)
            if first is not m:
                self.ctx.count("cse")  # the same op on the same inputs: one value
            return first
        if op.name == "constant":
            v = self.ctx.value(m)
            if v.size <= 16:
                first = self.consts.setdefault((v.dtype.str, v.shape, v.tobytes()), m)
                if first is not m:
                    self.ctx.count("cse")
                return first
        return m  # an input or a parameter

    def settle(self, m: Node) -> Node:
        """Apply rules to m until none does (each replacement's new inputs are settled first)."""
        ctx, settled = self.ctx, self.settled
        for _ in range(64):
            m = self.canonical(m)
            if type(m.op) in LEAF_TYPES:  # (is_leaf)
                return m
            new, rule_name = fold_constant(m, ctx, self.budget), "fold"
            if new is None:
                rules = self.table.get(m.op.name)
                if not rules or not self.may_fire(m):
                    return m
                new, rule_name = self.rewrite(m, rules)
                if new is None:
                    return m
            ctx.count(rule_name)
            ins = tuple([x if x in settled else self.settle(x) for x in new.inputs])
            if ins != new.inputs:
                new = ctx.rebuild(new, ins)
            m = new
        return m

    def may_fire(self, m: Node) -> bool:
        """Whether some rule of m's op can fire on m: always, unless they all look for inputs m lacks."""
        gate = self.gates[m.op.name]
        if gate is None:
            return True
        for x in m.inputs:
            if x.op.name in gate:
                return True
        return False

    def rewrite(self, m: Node, rules: list[Rule]) -> tuple[Node | None, str]:
        """The first rule's replacement of m (of m's exact shape and dtype) and the rule's name, or None."""
        for rule in rules:
            new = rule(m, self.ctx)
            if new is not None and new.shape == m.shape and new.dtype == m.dtype:
                return new, rule.__name__
            # (a replacement of another shape or dtype would not be the same value: never taken)
        return None, ""
