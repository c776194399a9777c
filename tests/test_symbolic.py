"""Symbolic export (issue 6): SymPy's diff as an oracle, the seeds' closed forms, LaTeX and the derivation."""

import numpy as np
import pytest
import sympy as sp
from hypothesis import assume, given, settings, strategies as st
from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

import graphcompiler as gc
from graphcompiler.errors import GraphCompilerError
from graphcompiler.ops import LEAF_OPS, OPS
from graphcompiler.symbolic import OpFunction, OpMatrix, Ones, evaluate, symbol_of

# -- random scalar graphs: sympy.diff of the export equals the export of build_grad ------------------

UNARY = {
    "negative": gc.negative, "square": gc.square, "exp": gc.exp, "sin": gc.sin, "cos": gc.cos,
    "tanh": gc.tanh, "sigmoid": gc.sigmoid, "log": gc.log, "sqrt": gc.sqrt, "log1p": gc.log1p,
}
BINARY = {"add": gc.add, "subtract": gc.subtract, "multiply": gc.multiply, "divide": gc.divide}


@st.composite
def scalar_graphs(draw, max_ops: int = 5):
    """A random chain-with-branches DAG over scalar inputs x, y and the named constant c: (graph, f, x).

    Each step applies an op to the newest node (and, for a binary op, to any earlier one), so every op
    drawn lies on a path from x to f."""
    g = gc.Graph("random")
    x, y = g.input("x"), g.input("y")
    c = g.constant(1.5, name="c")
    nodes = [x, y, c]
    head = x
    ops = sorted(UNARY) + sorted(BINARY) + ["power", "scale"]
    for _ in range(draw(st.integers(2, max_ops))):
        op = draw(st.sampled_from(ops))
        if op in UNARY:
            head = UNARY[op](head)
        elif op in BINARY:
            other = draw(st.sampled_from(nodes))
            head = BINARY[op](*((head, other) if draw(st.booleans()) else (other, head)))
        elif op == "power":
            head = head ** draw(st.sampled_from([2, 3, 0.5, -1]))
        else:
            head = head * draw(st.sampled_from([2.0, 0.25, -3.0]))
        nodes.append(head)
    return g, head + x * y, x


def _simplifies_to_zero(d, x) -> bool:
    """d == 0 for every real x != 0: sign(x) and x/|x| (the derivative of sqrt(x^2)) agree only there."""
    if sp.expand(d) == 0 or sp.simplify(d) == 0:           # expand first: most cases need no more
        return True
    return all(sp.simplify(d.subs(x, sp.Symbol("x", **{side: True}))) == 0 for side in ("positive", "negative"))


@given(scalar_graphs())
def test_export_of_gradient_equals_sympy_diff(case):
    g, f, x = case
    grad = gc.build_grad(f, [x])[x]
    F, G, X = gc.to_sympy(f), gc.to_sympy(grad, form="leaves"), gc.to_sympy(x)
    assert X == sp.Symbol("x", real=True)
    assume(not F.has(sp.zoo, sp.nan))           # e.g. 1/(x - x): undefined in the graph as well
    assert _simplifies_to_zero(sp.diff(F, X) - G, X)


@settings(max_examples=15)                        # simplify on second derivatives is the slow part
@given(scalar_graphs(max_ops=3))
def test_second_derivative_export_equals_sympy_diff(case):
    g, f, x = case
    d1 = gc.build_grad(f, [x])[x]
    d2 = gc.build_grad(d1, [x], disconnected="zero")[x]
    F, X, D2 = gc.to_sympy(f), gc.to_sympy(x), gc.to_sympy(d2, form="leaves")
    assume(not (F.has(sp.zoo, sp.nan) or D2.has(sp.zoo, sp.nan)))
    assert _simplifies_to_zero(sp.diff(F, X, 2) - D2, X)


@st.composite
def matrix_graphs(draw):
    """A random graph on a (2, 3) value: elementwise ops broadcasting columns, rows and scalars, matmuls,
    transposes and axis sums; the cost weights every entry differently."""
    g = gc.Graph("random matrices")
    A, B = g.input("A", shape=(2, 3)), g.input("B", shape=(2, 3))
    c, r, s = g.input("c", shape=(2, 1)), g.input("r", shape=(3,)), g.input("s")
    W, M = g.parameter("W", shape=(3, 2)), g.parameter("M", shape=(2, 3))
    head = A
    for _ in range(draw(st.integers(1, 5))):
        op = draw(st.sampled_from(["tanh", "sin", "sigmoid", "square", "add", "subtract", "multiply",
                                   "matmul", "transpose", "sum0", "mean1"]))
        if op in ("tanh", "sin", "sigmoid", "square"):
            head = getattr(gc, op)(head)
        elif op in ("add", "subtract", "multiply"):
            other = draw(st.sampled_from([B, c, r, s]))
            head = getattr(gc, op)(*((head, other) if draw(st.booleans()) else (other, head)))
        elif op == "matmul":
            head = (head @ W) @ M                                   # (2, 3) (3, 2) (2, 3)
        elif op == "transpose":
            head = gc.transpose(gc.transpose(head) * 1.5)
        elif op == "sum0":
            head = head + gc.sum(head, axis=0, keepdims=True)      # a row broadcast back down the columns
        else:
            head = head * gc.mean(head, axis=1, keepdims=True)     # a column broadcast across the rows
    J = gc.sum(head * g.constant(np.arange(1.0, 7.0).reshape(2, 3) / 4), name="J")
    return g, J, [A, B, c, r, s, W, M]


@given(matrix_graphs())
def test_random_matrix_graphs_export_gradients_that_evaluate_to_the_program(case):
    g, J, leaves = case
    grads = gc.build_grad(J, leaves, disconnected="zero")
    rng = np.random.default_rng(3)
    values = {x.name: rng.normal(size=x.shape) for x in leaves}
    outs = gc.compile([J] + [grads[x] for x in leaves]).run(values)
    for node, out in zip([J] + [grads[x] for x in leaves], outs):
        got = evaluate(gc.to_sympy(node, form="leaves"), values)
        np.testing.assert_allclose(got.reshape(np.shape(out)), out, rtol=1e-9, atol=1e-12, err_msg=node.name)


# -- leaves, shapes and names -------------------------------------------------------------------

def test_leaves_become_symbols_with_shapes():
    g = gc.Graph()
    x = g.input("x", shape=(4, None))
    v = g.input("v", shape=(3,))
    s = g.input("s")
    W = g.parameter("W", np.ones((3, 4)))
    lam = g.constant(0.01, name="lambda")
    two = g.constant(2.0)                                   # unnamed: a number
    n = sp.Symbol("n", integer=True, positive=True)
    assert gc.to_sympy(x) == sp.MatrixSymbol("x", 4, n)
    assert gc.to_sympy(v) == sp.MatrixSymbol("v", 3, 1)    # a 1-D array is a column
    assert gc.to_sympy(W) == sp.MatrixSymbol("W", 3, 4)
    assert gc.to_sympy(s) == sp.Symbol("s", real=True)
    assert gc.to_sympy(lam) == sp.Symbol("lambda", real=True)
    assert gc.to_sympy(two) == 2
    assert gc.to_sympy(gc.multiply(s, 0.5)) == s_sym() / 2  # Python scalars become exact numbers


def s_sym():
    return sp.Symbol("s", real=True)


def test_every_op_has_a_sympy_rule():
    missing = [name for name, cls in OPS.items() if name not in LEAF_OPS and not hasattr(cls, "to_sympy")]
    assert not missing, f"ops without a to_sympy rule: {missing}"


def test_matrix_calculus_forms():
    g = gc.Graph()
    W = g.parameter("W", np.ones((2, 3)))
    A = g.input("A", shape=(2, 3))
    x = g.input("x", shape=(3,))
    assert gc.to_sympy(gc.sum(W * W)) == sp.Trace(sp.MatrixSymbol("W", 2, 3).T * sp.MatrixSymbol("W", 2, 3))
    e = gc.to_sympy(gc.transpose(A) @ W)
    assert e == sp.MatrixSymbol("A", 2, 3).T * sp.MatrixSymbol("W", 2, 3)
    assert isinstance(gc.to_sympy(A * W), sp.HadamardProduct)
    assert gc.to_sympy(gc.matmul(A, x)) == sp.MatrixSymbol("A", 2, 3) * sp.MatrixSymbol("x", 3, 1)
    row_sums = gc.to_sympy(gc.sum(A, axis=1))
    assert row_sums == sp.MatrixSymbol("A", 2, 3) * Ones(3, 1)           # A 1
    assert gc.to_latex(gc.sum(A, axis=1)) == r"A \mathbf{1}_{3}"
    assert isinstance(gc.to_sympy(gc.tanh(A)), ElementwiseApplyFunction)


def test_ops_without_matrix_form_are_undefined_functions():
    g = gc.Graph()
    o = g.input("o", shape=(None, 3))
    y = g.input("y", shape=(None,), dtype="int64")
    L = gc.softmax_cross_entropy(o, y, name="L")
    e = gc.to_sympy(L)
    assert isinstance(e, OpFunction) and type(e).__name__ == "softmax_cross_entropy"
    assert e.args == (symbol_of(o), symbol_of(y))
    assert r"\operatorname{softmax\_cross\_entropy}" in gc.to_latex(L)
    assert isinstance(gc.to_sympy(gc.softmax(o)), OpMatrix)


def test_rank_three_exports_and_bad_arguments_are_reported():
    g = gc.Graph()
    t = g.input("t", shape=(2, 3, 4))  # the 2 x 12 matrix of its first axis by the rest, knowing its shape
    e = gc.to_sympy(gc.tanh(t))
    assert str(e) == "tanh(t)" and e.args[1].shape == (2, 12) and e.args[1].tensor_shape == (2, 3, 4)
    tv = np.random.default_rng(0).standard_normal((2, 3, 4))
    np.testing.assert_allclose(evaluate(e, {"t": tv}), np.tanh(tv).reshape(2, 12))
    u = gc.transpose(t, (1, 0, 2))  # no matrix form: an undefined function that evaluates by its kernel
    assert str(gc.to_sympy(u)) == "transpose(t)"
    np.testing.assert_array_equal(evaluate(gc.to_sympy(u), {"t": tv}), tv.transpose(1, 0, 2).reshape(3, 8))
    with pytest.raises(GraphCompilerError, match="Node"):
        gc.to_sympy("t")
    with pytest.raises(GraphCompilerError, match="form"):
        gc.to_sympy(t, form="book")
    x = g.input("x", shape=(2, 2))
    with pytest.raises(GraphCompilerError, match="'x'"):
        evaluate(gc.to_sympy(x), {})


# -- exported expressions evaluate to the program's numbers ---------------------------------------

def _broadcast_zoo(g):
    A = g.input("A", shape=(3, None))
    r = g.input("r", shape=(None,))
    c = g.input("c", shape=(3, 1))
    k = g.constant(2.5, name="k")
    return {
        "column + row": A + r, "hadamard with a column": A * c, "column sums": gc.sum(A, axis=0),
        "row sums keepdims": gc.sum(A * A, axis=1, keepdims=True), "sum of a product": gc.sum(A * c),
        "mean": gc.mean(gc.tanh(A)), "maximum relu abs": gc.maximum(A, 0.3) + gc.relu(A) + abs(A),
        "where": gc.where(A > 0, A, -A * k), "sigmoid squared": gc.sigmoid(A) ** 2,
        "transpose matmul": gc.transpose(A) @ c, "reshape to a vector": gc.reshape(c, (3,)),
        "expand_dims": gc.expand_dims(r, 0) * 2, "softmax": gc.softmax(A, axis=0),
        "vector matmul": gc.matmul(gc.reshape(c, (3,)), A), "dot": gc.matmul(r, r),
        "logsumexp": gc.logsumexp(A, axis=0), "slice": A[1:], "mean axis": gc.mean(A, axis=1),
        "max": gc.max(A, axis=0), "minimum": gc.minimum(A, c), "mse": gc.mse(A, c),
        "cast": gc.astype(A > c, "float64") * A,
    }


def test_exports_evaluate_to_program_outputs(rng):
    g = gc.Graph("zoo")
    zoo = _broadcast_zoo(g)
    values = {"A": rng.normal(size=(3, 5)), "r": rng.normal(size=5), "c": rng.normal(size=(3, 1))}
    outs = gc.compile(list(zoo.values())).run(values)
    for (what, node), out in zip(zoo.items(), outs):
        got = evaluate(gc.to_sympy(node, form="leaves"), {**values, "k": 2.5})
        np.testing.assert_allclose(got.reshape(np.shape(out)), out, rtol=1e-10, atol=1e-12, err_msg=what)


def test_gradients_of_broadcasts_evaluate(rng):
    g = gc.Graph("zoo")
    zoo = _broadcast_zoo(g)
    A, r, c = g["A"], g["r"], g["c"]
    J = gc.add(gc.sum(gc.add(zoo["column + row"], zoo["hadamard with a column"])),
               gc.add(zoo["mean"], zoo["mse"]), name="J")
    grads = gc.build_grad(J, [A, r, c])
    values = {"A": rng.normal(size=(3, 4)), "r": rng.normal(size=4), "c": rng.normal(size=(3, 1))}
    outs = gc.compile(list(grads.values())).run(values)
    for (t, node), out in zip(grads.items(), outs):
        got = evaluate(gc.to_sympy(node, form="leaves"), {**values, "k": 2.5, "n": 4})
        np.testing.assert_allclose(got.reshape(np.shape(out)), out, rtol=1e-10, err_msg=t.name)


def test_every_node_of_first_and_second_derivatives_exports_and_evaluates(rng):
    """All nodes build_grad makes (sum_like, broadcasts, one_hot, concat_part, scatter_like, count, ...)."""
    g = gc.Graph("every")
    A = g.input("A", shape=(3, None))
    r = g.input("r", shape=(None,))
    c = g.input("c", shape=(3, 1))
    lab = g.input("lab", shape=(None,), dtype="int64")
    parts = [gc.sum(gc.concatenate([A, A * c], axis=0)), gc.sum(gc.split(A, [1], axis=0)[1] ** 2),
             gc.sum(gc.log_softmax(A, axis=0) * A), gc.sum(gc.squeeze(gc.expand_dims(r, 1), 1) * r),
             gc.sum(gc.broadcast_to(c, (3, 4)) * gc.tanh(A)), gc.mean(gc.power(abs(A) + 1, c)),
             gc.softmax_cross_entropy(gc.transpose(A * c), lab), gc.sum(gc.maximum(A, c) + gc.sigmoid(A + r)),
             gc.mse(A, c), gc.sum(gc.max(A, axis=0))]
    J = parts[0]
    for p in parts[1:]:
        J = J + p
    grads = gc.build_grad(J, [A, r, c])
    gc.build_grad(gc.sum(grads[c] * grads[c]), [A, r], disconnected="zero")      # second derivatives
    nodes, seen = [], {}
    for n in g.nodes:                     # two nodes of each op (exporting all ~300 takes seconds)
        if n.op.name != "input" and n.dtype.kind == "f" and seen.get(n.op.name, 0) < 2:
            seen[n.op.name] = seen.get(n.op.name, 0) + 1
            nodes.append(n)
    nodes += [n for n in g.nodes if n.name.startswith("dsum") and n.name[-3:] in ("/dA", "/dr")]  # 2nd derivatives
    values = {"A": rng.normal(size=(3, 4)), "r": rng.normal(size=4), "c": rng.normal(size=(3, 1)),
              "lab": rng.integers(0, 3, size=4)}
    outs = gc.compile(nodes, optimize=False).run(values)
    assert {n.op.name for n in nodes} >= {"sum_like", "one_hot", "concat_part", "scatter_like", "count", "where"}
    for node, out in zip(nodes, outs):
        got = evaluate(gc.to_sympy(node, form="leaves"), {**values, "n": 4})
        np.testing.assert_allclose(got.reshape(np.shape(out)), out, rtol=1e-9, atol=1e-12,
                                   err_msg=f"{node.name} ({node.op.name})")


def _table_cases():
    """The op tables (every op on broadcasting and batched shapes, rank > 2 included: such values export as
    the matrix of their first axis by the rest)."""
    from test_ops import CASES
    from test_ops_indexing import CASES as INDEXING
    from test_ops_special import CASES as SPECIAL
    return [*CASES, *SPECIAL, *INDEXING]


@pytest.mark.parametrize("case", _table_cases(), ids=lambda c: c.id)
def test_op_table_exports_evaluate_with_their_first_derivatives(case):
    rng = np.random.default_rng(7)
    arrays = case.arrays(rng)
    g = gc.Graph(case.id)
    xs = [g.input(f"x{k}", shape=a.shape) for k, a in enumerate(arrays)]
    y = case.build(*xs)
    weights = g.constant(rng.uniform(0.5, 1.5, size=y.shape), name="w")
    grads = gc.build_grad(gc.sum(y * weights, name="J"), xs)
    nodes = [y] + [grads[x] for x in xs]
    feeds = {x.name: a for x, a in zip(xs, arrays)}
    outs = gc.compile(nodes).run(feeds)
    for node, out in zip(nodes, outs):
        got = evaluate(gc.to_sympy(node, form="leaves"), feeds, graph=g)
        np.testing.assert_allclose(got.reshape(np.shape(out)), out, rtol=1e-10, atol=1e-12, err_msg=node.name)


# -- the D2L MLP in column form (seeds 000 and 001) -------------------------------------------

D, HID, Q, N, LAM = 4, 3, 2, 5, 0.01


def d2l_mlp(phi: str, loss: str):
    """z = W1 x, h = phi(z), o = W2 h, L = l(o, y), s = lambda/2 (||W1||^2 + ||W2||^2), J = L + s."""
    rng = np.random.default_rng(1)
    g = gc.Graph("d2l")
    x = g.input("x", shape=(D, None))
    y = g.input("y", shape=(Q, None)) if loss == "mse" else g.input("y", shape=(None,), dtype="int64")
    W1 = g.parameter("W1", rng.normal(size=(HID, D)))
    W2 = g.parameter("W2", rng.normal(size=(Q, HID)))
    lam = g.constant(LAM, name="lambda")
    z = gc.matmul(W1, x, name="z")
    h = (gc.tanh if phi == "tanh" else gc.relu)(z, name="h")
    o = gc.matmul(W2, h, name="o")
    L = gc.mse(o, y, name="L") if loss == "mse" else gc.softmax_cross_entropy(gc.transpose(o), y, name="L")
    s = gc.multiply(lam / 2, gc.sum(W1 * W1) + gc.sum(W2 * W2), name="s")
    J = gc.add(L, s, name="J")
    grads = gc.build_grad(J, [W1, W2])
    X = rng.normal(size=(D, N))
    Y = rng.normal(size=(Q, N)) if loss == "mse" else rng.integers(0, Q, size=N)
    return g, grads, {"x": X, "y": Y}


def d2l_closed_forms(phi, loss, X, Y, W1, W2):
    """The seed's derivation, in NumPy: dJ/do, dJ/dW2 = dJ/do h^T + lambda W2, dJ/dh, dJ/dz, dJ/dW1."""
    z = W1 @ X
    h = np.tanh(z) if phi == "tanh" else np.maximum(z, 0)
    o = W2 @ h
    if loss == "mse":
        dJ_do = 2 * (o - Y) / o.size
    else:
        p = np.exp(o - o.max(axis=0)) / np.exp(o - o.max(axis=0)).sum(axis=0)
        dJ_do = (p - np.eye(Q)[:, Y]) / N
    dJ_dh = W2.T @ dJ_do
    dphi = 1 - np.tanh(z) ** 2 if phi == "tanh" else (z > 0).astype(float)
    dJ_dz = dJ_dh * dphi
    return {"dJ/do": dJ_do, "dJ/dW2": dJ_do @ h.T + LAM * W2, "dJ/dh": dJ_dh, "dJ/dz": dJ_dz,
            "dJ/dW1": dJ_dz @ X.T + LAM * W1, "h": h, "z": z, "o": o}


CASES = [("tanh", "mse"), ("relu", "mse"), ("tanh", "cross-entropy"), ("relu", "cross-entropy")]


@pytest.mark.parametrize("phi,loss", CASES)
def test_d2l_gradients_in_textbook_form(phi, loss):
    g, grads, feeds = d2l_mlp(phi, loss)
    W2 = g["W2"]
    dW2 = gc.to_sympy(grads[W2])                         # a gradient exports in the textbook form by default
    assert dW2 == gc.to_sympy(grads[W2], form="textbook") != gc.to_sympy(grads[W2], form="leaves")
    assert gc.to_sympy(g["h"]) == gc.to_sympy(g["h"], form="leaves")             # a forward node: its leaves
    G, h, lam = symbol_of(g["dJ/do"]), symbol_of(g["h"]), sp.Symbol("lambda", real=True)
    assert dW2 == G * h.T + lam * symbol_of(W2)                                    # dJ/do h^T + lambda W2
    dz = gc.to_sympy(g["dJ/dz"], form="textbook")
    assert isinstance(dz, sp.HadamardProduct) and symbol_of(g["dJ/dh"]) in dz.args
    (dphi,) = [a for a in dz.args if isinstance(a, ElementwiseApplyFunction)]
    assert dphi.expr == symbol_of(g["z"])                                          # phi'(z), applied to z
    t = sp.Dummy("t", real=True)
    expected = 1 - sp.tanh(t) ** 2 if phi == "tanh" else sp.Heaviside(t, 0)
    assert dphi.function(t) == expected
    tex = gc.to_latex(grads[W2])
    assert r"\frac{\partial J}{\partial o} h^{T}" in tex and r"\lambda W_{2}" in tex
    dz_tex = gc.to_latex(g["dJ/dz"])                     # dJ/dh odot phi'(z), written the book's way
    phi_tex = r"\left(1 - \tanh^{2}{\left(z \right)}\right)" if phi == "tanh" else r"\left[z > 0\right]"
    assert dz_tex == r"\frac{\partial J}{\partial h} \odot " + phi_tex


def test_export_survives_save_and_load(tmp_path):
    g, grads, feeds = d2l_mlp("tanh", "mse")
    g.save(tmp_path / "d2l.json")
    h = gc.load(tmp_path / "d2l.json")
    for name in ("dJ/dW1", "dJ/dW2", "dJ/dz"):
        for form in ("leaves", "textbook"):
            assert gc.to_sympy(h[name], form=form) == gc.to_sympy(g[name], form=form)
    assert str(gc.derivation([h["dJ/dW1"], h["dJ/dW2"]])) == str(gc.derivation(grads))


@pytest.mark.parametrize("phi,loss", CASES)
def test_d2l_exports_evaluate_to_program_and_closed_forms(phi, loss):
    g, grads, feeds = d2l_mlp(phi, loss)
    W1, W2 = g["W1"], g["W2"]
    names = ["dJ/do", "dJ/dh", "dJ/dz", "h", "z", "o"]
    outs = gc.compile([grads[W1], grads[W2]] + [g[k] for k in names]).run(feeds)
    program = dict(zip(["dJ/dW1", "dJ/dW2"] + names, outs))
    closed = d2l_closed_forms(phi, loss, feeds["x"], feeds["y"], g.value(W1), g.value(W2))
    leaves = {**feeds, "W1": g.value(W1), "W2": g.value(W2), "lambda": LAM}
    for key in ("dJ/dW1", "dJ/dW2"):
        np.testing.assert_allclose(program[key], closed[key], rtol=1e-10)
        node = grads[W1] if key == "dJ/dW1" else grads[W2]
        np.testing.assert_allclose(evaluate(gc.to_sympy(node, form="leaves"), leaves), program[key], rtol=1e-10)
        np.testing.assert_allclose(evaluate(gc.to_sympy(node, form="textbook"), {**leaves, **program}),
                                   closed[key], rtol=1e-10)


@pytest.mark.parametrize("phi,loss", CASES)
def test_d2l_derivation_steps(phi, loss):
    g, grads, feeds = d2l_mlp(phi, loss)
    der = gc.derivation(grads)
    assert [str(eq.lhs) for eq in der] == ["dJ/do", "dJ/dW2", "dJ/dh", "dJ/dz", "dJ/dW1"]   # the book's order
    assert all(isinstance(eq, sp.Eq) for eq in der)
    assert der[2].rhs == symbol_of(g["W2"]).T * symbol_of(g["dJ/do"])                    # W2^T dJ/do
    tex = der.latex
    assert tex.startswith(r"\begin{align}") and tex.rstrip().endswith(r"\end{align}")
    assert tex.count(r"\\") == len(der) - 1
    assert r"\frac{\partial J}{\partial W_{1}} &= " in tex
    # each step evaluates to the program's value of its node
    forward = [g["h"], g["z"], g["o"]]
    outs = gc.compile(der.nodes + forward).run(feeds)
    values = {**feeds, "W1": g.value(g["W1"]), "W2": g.value(g["W2"]), "lambda": LAM,
              **{n.name: v for n, v in zip(der.nodes + forward, outs)}}
    for eq, node, out in zip(der, der.nodes, outs):
        np.testing.assert_allclose(evaluate(eq.rhs, values).reshape(out.shape), out, rtol=1e-10,
                                   err_msg=node.name)


def test_derivation_with_forward_equations():
    g, grads, feeds = d2l_mlp("tanh", "mse")
    der = gc.derivation(grads, forward=True)
    lhs = [str(eq.lhs) for eq in der]
    assert lhs.index("z") < lhs.index("h") < lhs.index("o") < lhs.index("dJ/do")
    assert der[lhs.index("z")].rhs == symbol_of(g["W1"]) * symbol_of(g["x"])
    assert "$$" in der._repr_latex_()


# -- Goodfellow 6.5.7: H = relu(X W1), U2 = H W2, cross-entropy and weight decay (row form) -----------

def test_goodfellow_657_mlp(rng):
    m, d, nh, C, lam = 6, 4, 5, 3, 0.1
    g = gc.Graph("6.5.7")
    X = g.input("X", shape=(None, d))
    y = g.input("y", shape=(None,), dtype="int64")
    W1 = g.parameter("W1", rng.normal(size=(d, nh)))
    W2 = g.parameter("W2", rng.normal(size=(nh, C)))
    lamb = g.constant(lam, name="lambda")
    U1 = gc.matmul(X, W1, name="U1")
    H = gc.relu(U1, name="H")
    U2 = gc.matmul(H, W2, name="U2")
    J_MLE = gc.softmax_cross_entropy(U2, y, name="J_MLE")
    J = gc.add(J_MLE, gc.multiply(lamb, gc.sum(gc.square(W1)) + gc.sum(gc.square(W2))), name="J")
    grads = gc.build_grad(J, [W1, W2])
    G, Hs = symbol_of(g["dJ/dU2"]), symbol_of(H)
    expected = Hs.T * G + 2 * sp.Symbol("lambda", real=True) * symbol_of(W2)
    assert gc.to_sympy(grads[W2], form="textbook") == expected                          # H^T G + 2 lambda W2
    assert r"H^{T} \frac{\partial J}{\partial U_{2}}" in gc.to_latex(grads[W2])
    Xv, yv = rng.normal(size=(m, d)), rng.integers(0, C, size=m)
    out_W1, out_W2 = gc.compile([grads[W1], grads[W2]]).run({"X": Xv, "y": yv})
    vals = {"X": Xv, "y": yv, "W1": g.value(W1), "W2": g.value(W2), "lambda": lam}
    for node, out in ((grads[W1], out_W1), (grads[W2], out_W2)):
        np.testing.assert_allclose(evaluate(gc.to_sympy(node, form="leaves"), vals), out, rtol=1e-10)
        np.testing.assert_allclose(evaluate(gc.to_sympy(node, form="leaves"), {"X": Xv, "y": yv}, graph=g), out,
                                   rtol=1e-10)
    # the seed's closed forms: G = (softmax(U2) - onehot)/m, G' = G W2^T masked by U1 > 0
    u1 = Xv @ g.value(W1)
    h = np.maximum(u1, 0)
    u2 = h @ g.value(W2)
    p = np.exp(u2 - u2.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    Gv = (p - np.eye(C)[yv]) / m
    np.testing.assert_allclose(out_W2, h.T @ Gv + 2 * lam * g.value(W2), rtol=1e-10)
    np.testing.assert_allclose(out_W1, Xv.T @ ((Gv @ g.value(W2).T) * (u1 > 0)) + 2 * lam * g.value(W1),
                               rtol=1e-10)
    der = gc.derivation(grads)
    names = [str(eq.lhs) for eq in der]
    assert names[0] == "dJ/dU2" and names.index("dJ/dH") < names.index("dJ/dU1") < names.index("dJ/dW1")


def test_goodfellow_figure_610_chain():
    """z = f(f(f(w))) with f = exp: the derivation reuses the forward values, dz/dx = dz/dy f'(x) (fig. 6.10)."""
    g = gc.Graph("fig 6.10")
    w = g.input("w")
    x = gc.exp(w, name="x")
    y = gc.exp(x, name="y")
    z = gc.exp(y, name="z")
    grads = gc.build_grad(z, [w])
    der = gc.derivation(grads)
    sym = {n: sp.Symbol(n, real=True) for n in ("x", "y", "z", "dz/dy", "dz/dx", "dz/dw")}
    assert [(eq.lhs, eq.rhs) for eq in der] == [(sym["dz/dy"], sym["z"]), (sym["dz/dx"], sym["dz/dy"] * sym["y"]),
                                                (sym["dz/dw"], sym["dz/dx"] * sym["x"])]
    W = gc.to_sympy(w)
    assert gc.to_sympy(grads[w], form="leaves") == sp.diff(sp.exp(sp.exp(sp.exp(W))), W)
    assert der.latex.splitlines()[1] == r"\frac{\partial z}{\partial y} &= z \\"


def test_derivation_refuses_nodes_of_two_graphs():
    g1, grads1, _ = d2l_mlp("tanh", "mse")
    g2, grads2, _ = d2l_mlp("tanh", "mse")
    with pytest.raises(gc.GraphMismatchError, match="two|graph"):
        gc.derivation([grads1[g1["W1"]], grads2[g2["W2"]]])


def test_presentation_mathml_writes_the_matrices_where_the_bodies_read_them():
    """The explorer's formulas (presentation MathML): relu(x W) is max(0, (x W)), not a map over a bound
    variable; undefined functions print their op and value operands only; a convolution reads X ∗ W."""
    from sympy.printing.mathml import mathml

    g = gc.Graph()
    x = g.input("x", shape=(None, 4))
    W = g.parameter("W", np.ones((4, 3)))
    y = g.input("y", shape=(None,), dtype="int64")
    h = gc.relu(gc.matmul(x, W), name="h")
    L = gc.softmax_cross_entropy(gc.maximum(h, gc.tanh(h)), y)
    img = g.input("X", shape=(None, 1, 5, 5))
    c = gc.conv2d(img, g.parameter("K", np.ones((2, 1, 3, 3))))
    for node in (h, L, c):
        text = mathml(gc.to_sympy(node, form="leaves"), printer="presentation")
        assert "elementwise" not in text.lower() and "gcarg" not in text and "&#x21A6;" not in text, text
    assert "<mi>x</mi><mo>&InvisibleTimes;</mo><mi>W</mi>" in mathml(gc.to_sympy(h), printer="presentation")
    assert "<mi>softmax_cross_entropy</mi>" in mathml(gc.to_sympy(L, form="leaves"), printer="presentation")
    conv = mathml(gc.to_sympy(c), printer="presentation")
    assert conv == "<mrow><mi>X</mi><mo>&#8727;</mo><mi>K</mi></mrow>", conv


def test_a_programs_stand_in_nodes_export_inputs_first():
    """A compiled program's nodes (stand-ins such as L~1, L~2 share the index of the graph node they replace)
    export: the walk visits each node after its inputs, whatever their indices."""
    from graphcompiler.symbolic import _inputs_first

    g = gc.Graph()
    x = g.input("x", shape=(None, 4))
    y = g.input("y", shape=(None,), dtype="int64")
    W1 = g.parameter("W1", np.full((4, 5), 0.1))
    W2 = g.parameter("W2", np.full((5, 3), 0.1))
    o = gc.matmul(gc.relu(gc.matmul(x, W1), name="h"), W2, name="o")
    J = gc.add(gc.softmax_cross_entropy(o, y, name="L"), 0.01 * gc.sum(W1 * W1), name="J")
    grads = gc.build_grad(J, [W1, W2])
    prog = gc.compile([J, grads[W1], grads[W2]])
    nodes = gc.viz._subject(prog).nodes  # the program's own nodes, as its picture and the explorer show them
    shared: dict = {}
    for n in nodes:
        shared.setdefault(n.index, []).append(n)
    assert any(len(v) > 1 for v in shared.values())  # stand-ins that share an index exist (L~1, L~2)
    for n in nodes:
        order = _inputs_first(n, lambda m: False)
        where = {m: k for k, m in enumerate(order)}
        assert order[-1] is n and all(where[i] < where[m] for m in order for i in m.inputs)
        gc.to_sympy(n, form="leaves")
