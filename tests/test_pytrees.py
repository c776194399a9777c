"""Pytrees (nested lists, tuples, dicts and None) as arguments and results of gc.function, gc.grad,
gc.value_and_grad and gc.make_graph, and as the parameters of gc.optim; gc.tree_flatten and friends."""

from __future__ import annotations

from collections import OrderedDict, defaultdict, namedtuple

import numpy as np
import pytest

import graphcompiler as gc

RNG = np.random.default_rng(11)
X = RNG.standard_normal((6, 4))
Y = RNG.standard_normal((6, 2))
PARAMS = {
    "layer1": (RNG.standard_normal((4, 3)), RNG.standard_normal(3)),
    "layer2": (RNG.standard_normal((3, 2)), RNG.standard_normal(2)),
}


def mlp(params, x, y):
    """A two-layer MLP's squared error, its parameters a dict of (W, b) layers."""
    W1, b1 = params["layer1"]
    W2, b2 = params["layer2"]
    h = np.tanh(x @ W1 + b1)
    return np.mean((h @ W2 + b2 - y) ** 2)


def mlp_flat(W1, b1, W2, b2, x, y):
    return mlp({"layer1": (W1, b1), "layer2": (W2, b2)}, x, y)


# -- tree_util ------------------------------------------------------------------------------------------


def test_tree_flatten_order_structure_and_round_trip():
    Point = namedtuple("Point", "x y")
    tree = {"b": [1, (2, None)], "a": Point(3, {"z": 4, "c": 5})}
    leaves, tree_def = gc.tree_flatten(tree)
    assert leaves == [3, 5, 4, 1, 2]  # dict keys sorted (as JAX), None is structure
    assert tree_def.num_leaves == 5
    assert repr(tree_def) == "PyTreeDef({'a': Point(*, {'c': *, 'z': *}), 'b': [*, (*, None)]})"
    back = gc.tree_unflatten(tree_def, leaves)
    assert back == tree and type(back["a"]) is Point and type(back["b"]) is list
    assert gc.tree_structure({"z": 4, "c": 5}) == gc.tree_structure({"c": 0, "z": 0})  # insertion order aside
    assert gc.tree_structure([1, 2]) != gc.tree_structure((1, 2))
    assert gc.tree_leaves([None, (None,)]) == []
    assert gc.tree_map(lambda a, b: a * 10 + b, {"p": (1, 2)}, {"p": (3, 4)}) == {"p": (13, 24)}
    ordered = OrderedDict([("z", 1), ("a", 2)])  # its own order, as JAX; a defaultdict is sorted as a dict
    assert gc.tree_leaves([ordered, defaultdict(list, {"z": 1, "a": 2})]) == [1, 2, 2, 1]
    back = gc.tree_map(lambda v: v + 1, [ordered, defaultdict(list, {"z": 1, "a": 2})])
    assert type(back[0]) is OrderedDict and list(back[0]) == ["z", "a"] and back[1].default_factory is list
    assert repr(gc.tree_structure(ordered)) == "PyTreeDef(OrderedDict({'z': *, 'a': *}))"
    with pytest.raises(gc.GraphCompilerError, match="structure"):
        gc.tree_map(lambda a, b: a, {"p": (1, 2)}, {"p": [3, 4]})
    with pytest.raises(gc.GraphCompilerError, match="cannot be sorted"):
        gc.tree_flatten({1: 0, "a": 0})
    with pytest.raises(gc.GraphCompilerError, match="holds 2 leaves, got 1"):
        gc.tree_unflatten(gc.tree_structure((1, 2)), [1])


# -- gradients in the arguments' structure --------------------------------------------------------------


def central(f, params, path, idx, eps=1e-6):
    """Central difference of f(params) in the entry idx of the leaf params[key][k] (path = (key, k))."""
    key, k = path

    def bumped(d):
        new = {n: tuple(a.copy() for a in layer) for n, layer in params.items()}
        new[key][k][idx] += d
        return new

    return (f(bumped(eps)) - f(bumped(-eps))) / (2 * eps)


def test_grad_of_a_dict_of_layers_equals_the_flat_version_and_central_differences():
    g = gc.grad(mlp)(PARAMS, X, Y)
    assert isinstance(g, dict) and sorted(g) == ["layer1", "layer2"]
    assert all(isinstance(g[k], tuple) and len(g[k]) == 2 for k in g)
    flat = gc.grad(mlp_flat, argnums=(0, 1, 2, 3))(*PARAMS["layer1"], *PARAMS["layer2"], X, Y)
    ours = [*g["layer1"], *g["layer2"]]
    for a, b, p in zip(ours, flat, [*PARAMS["layer1"], *PARAMS["layer2"]]):
        assert a.shape == p.shape
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    loss = gc.function(mlp)
    for path, idx in [(("layer1", 0), (2, 1)), (("layer1", 1), (0,)), (("layer2", 0), (1, 1)), (("layer2", 1), (1,))]:
        num = central(lambda p: float(loss(p, X, Y)), PARAMS, path, idx)
        np.testing.assert_allclose(g[path[0]][path[1]][idx], num, rtol=1e-6, atol=1e-9)
    v, g2 = gc.value_and_grad(mlp)(PARAMS, X, Y)
    np.testing.assert_allclose(v, mlp_flat(*PARAMS["layer1"], *PARAMS["layer2"], X, Y), rtol=1e-13)
    np.testing.assert_array_equal(g2["layer2"][0], g["layer2"][0])


def test_grad_of_a_list_of_tuples_and_tuple_argnums():
    layers = [PARAMS["layer1"], PARAMS["layer2"]]

    def loss(layers, x, y):
        (W1, b1), (W2, b2) = layers
        return mlp_flat(W1, b1, W2, b2, x, y)

    g = gc.grad(loss)(layers, X, Y)
    assert isinstance(g, list) and all(isinstance(t, tuple) for t in g)
    flat = gc.grad(mlp_flat, argnums=(0, 1, 2, 3, 4))(*layers[0], *layers[1], X, Y)
    for a, b in zip([*g[0], *g[1]], flat):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    gl, gx = gc.grad(loss, argnums=(0, 1))(layers, X, Y)  # a tuple of structures, as JAX
    assert isinstance(gl, list) and isinstance(gx, np.ndarray)
    np.testing.assert_allclose(gx, flat[4], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gl[1][0], flat[2], rtol=1e-12, atol=1e-12)


def test_nested_dicts_with_none_leaves():
    def f(p):
        s = np.sum(p["a"]["w"] ** 2) + np.sum(np.sin(p["b"][0]))
        return s if p["a"]["skip"] is None else s + 1

    p = {"a": {"w": RNG.standard_normal(3), "skip": None}, "b": [RNG.standard_normal((2, 2)), None]}
    g = gc.grad(f)(p)
    assert g["a"]["skip"] is None and g["b"][1] is None and isinstance(g["b"], list)
    np.testing.assert_allclose(g["a"]["w"], 2 * p["a"]["w"], rtol=1e-14)
    np.testing.assert_allclose(g["b"][0], np.cos(p["b"][0]), rtol=1e-14)
    assert gc.grad(lambda n, x: np.sum(x), argnums=0)(None, np.ones(2)) is None  # no leaves, no gradient


def test_function_returns_a_pytree():
    @gc.function
    def f(p, x):
        return {"sum": np.sum(x), "pair": (x * p["s"], [np.exp(x), None]), "const": 3.0}

    x = RNG.standard_normal(4)
    out = f({"s": 2.0}, x)
    assert sorted(out) == ["const", "pair", "sum"] and isinstance(out["pair"], tuple)
    assert isinstance(out["pair"][1], list) and out["pair"][1][1] is None
    np.testing.assert_allclose(out["sum"], x.sum(), rtol=1e-14)
    np.testing.assert_array_equal(out["pair"][0], 2 * x)
    np.testing.assert_allclose(out["pair"][1][0], np.exp(x), rtol=1e-14)
    assert out["const"] == 3.0
    assert gc.function(lambda x: None)(x) is None
    names = [n.name for n in f.graph.inputs()]
    assert names == ["p['s']", "x"]


def test_make_graph_takes_pytrees_of_specs():
    g, inputs, outputs = gc.make_graph(mlp, {"layer1": (gc.Spec((4, 3)), np.zeros(3)), "layer2": PARAMS["layer2"]},
                                       gc.Spec((None, 4)), Y)
    assert [i.name for i in inputs] == ["params['layer1'][0]", "params['layer1'][1]", "params['layer2'][0]",
                                        "params['layer2'][1]", "x", "y"]
    assert inputs[4].shape == (None, 4) and len(outputs) == 1
    feed = dict(zip(inputs, [*PARAMS["layer1"], *PARAMS["layer2"], X, Y]))
    np.testing.assert_allclose(gc.compile(outputs).run(feed)[0], float(gc.function(mlp)(PARAMS, X, Y)), rtol=1e-13)


def test_has_aux():
    def f(p, x):
        h = np.tanh(x @ p["W"])
        return np.sum(h**2), {"h": h, "n": np.sum(np.abs(h))}

    p = {"W": RNG.standard_normal((4, 3))}
    (v, aux), g = gc.value_and_grad(f, has_aux=True)(p, X)
    h = np.tanh(X @ p["W"])
    np.testing.assert_allclose(v, np.sum(h**2), rtol=1e-13)
    np.testing.assert_allclose(aux["h"], h, rtol=1e-13)
    np.testing.assert_allclose(g["W"], X.T @ (2 * h * (1 - h**2)), rtol=1e-12)
    g2, aux2 = gc.grad(f, has_aux=True)(p, X)
    np.testing.assert_array_equal(g2["W"], g["W"])
    np.testing.assert_allclose(aux2["n"], np.sum(np.abs(h)), rtol=1e-13)
    with pytest.raises(gc.GraphCompilerError, match=r"returning a pair \(value, aux\)"):
        gc.grad(lambda x: np.sum(x), has_aux=True)(X)


def test_the_cache_keys_on_structure_and_leaf_signatures():
    traces = []

    def loss(p):
        traces.append(1)
        return sum(np.sum(a) for a in gc.tree_leaves(p))

    g = gc.grad(loss)
    a, b = RNG.standard_normal(3), RNG.standard_normal(2)
    g({"a": a, "b": b})
    g({"b": b + 1, "a": a - 1})  # same structure (keys sorted), same leaves: no new trace
    assert len(g.signatures) == 1 and len(traces) == 2  # a signature's first call traces twice
    out = g([a, b])  # a different structure: traced again
    assert isinstance(out, list) and len(g.signatures) == 2
    g({"a": a, "b": (b,)})
    g({"a": a, "b": b[:1]})  # the same structure with another leaf shape
    assert len(g.signatures) == 4 and len(traces) == 8


def test_bad_leaves_are_errors_naming_the_path():
    params = {"layer1": (PARAMS["layer1"][0], "relu"), "layer2": PARAMS["layer2"]}
    with pytest.raises(gc.GraphCompilerError, match=r"params\['layer1'\]\[1\] is str \(dtype <U4\)"):
        gc.grad(mlp)(params, X, Y)
    with pytest.raises(gc.GraphCompilerError, match=r"argument x\[0\]\.y is object \(dtype object\)"):
        Pair = namedtuple("Pair", "x y")
        gc.function(lambda x: x)([Pair(1.0, object())])
    ragged = [np.ones(2), [np.ones(3), np.ones(2)]]
    out = gc.function(lambda v: v)(ragged)  # what NumPy calls inhomogeneous is a pytree: fine
    assert isinstance(out, list) and out[1][0].shape == (3,)
    with pytest.raises(gc.UndefinedGradientError, match=r"\"p\['n'\]\" \(input, shape \(\)\) has dtype int64"):
        gc.grad(lambda p: np.sum(p["a"] * p["n"]))({"a": np.ones(2), "n": 3})
    g = gc.Graph("g")
    node = g.input("n", (2,))
    with pytest.raises(gc.GraphCompilerError, match=r"argument p\['w'\] is the node 'n'"):
        gc.function(lambda p: p["w"])({"w": node})
    with pytest.raises(gc.GraphCompilerError, match=r"make_graph: the argument a\[1\] is str"):
        gc.make_graph(lambda a: a[0], [np.ones(2), "x"])
    with pytest.raises(gc.GraphCompilerError, match=r"output \['b'\]\[1\] of the traced function is str"):
        gc.function(lambda x: {"a": x, "b": (x, "no")})(np.ones(2))


# -- gc.optim with a pytree of parameters ---------------------------------------------------------------


def _mlp_graph():
    g = gc.Graph("mlp")
    x, y = g.input("x", (None, 4)), g.input("y", (None, 2))
    params = {name: (g.parameter(f"{name}/W", W.copy()), g.parameter(f"{name}/b", b.copy()))
              for name, (W, b) in PARAMS.items()}
    (W1, b1), (W2, b2) = params["layer1"], params["layer2"]
    J = gc.mean(gc.square(gc.tanh(x @ W1 + b1) @ W2 + b2 - y), name="J")
    return g, x, y, params, J


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_optim_with_a_dict_of_parameters_trains_and_equals_the_flat_version(opt):
    kw = {"lr": 0.05, "momentum": 0.9} if opt == "sgd" else {"lr": 0.01}
    runs = {}
    for how in ["tree", "flat", "tree-grads"]:
        g, x, y, params, J = _mlp_graph()
        flat = gc.tree_leaves(params)
        if how == "tree":
            updates = getattr(gc.optim, opt)(J, params, **kw)
        elif how == "flat":
            updates = getattr(gc.optim, opt)(J, flat, **kw)
        else:  # gradients in the parameters' structure
            table = gc.build_grad(J, flat)
            grads = gc.tree_map(lambda p: table[p], params)
            updates = getattr(gc.optim, opt)(grads, params, **kw)
        train = gc.compile([J], updates=updates)
        losses = [float(train.run({x: X, y: Y})[0]) for _ in range(15)]
        runs[how] = losses, [g.value(p) for p in flat]
    losses, values = runs["tree"]
    assert losses[-1] < 0.7 * losses[0]
    for how in ["flat", "tree-grads"]:
        np.testing.assert_allclose(runs[how][0], losses, rtol=1e-12)
        for a, b in zip(runs[how][1], values):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_optim_errors_and_clipping_with_pytrees():
    g, x, y, params, J = _mlp_graph()
    table = gc.build_grad(J, gc.tree_leaves(params))
    grads = gc.tree_map(lambda p: table[p], params)
    clipped = gc.optim.clip_by_global_norm(grads, 0.01)
    assert gc.tree_structure(clipped) == gc.tree_structure(params)
    norm = gc.compile([gc.optim.global_norm(clipped)]).run({x: X, y: Y})[0]
    np.testing.assert_allclose(norm, 0.01, rtol=1e-12)
    with pytest.raises(gc.GraphCompilerError, match="the gradients have the structure"):
        gc.optim.sgd([grads["layer1"], grads["layer2"]], params, lr=0.1)
    with pytest.raises(gc.GraphCompilerError, match=r"params\['layer2'\]\[0\] \('x'\) is not a parameter node"):
        gc.optim.adam(J, {"layer1": params["layer1"], "layer2": (x, params["layer2"][1])})
    with pytest.raises(gc.GraphCompilerError, match="at least one parameter"):
        gc.optim.sgd(J, {"a": None}, lr=0.1)


def test_a_list_argument_is_a_pytree_as_in_jax():
    """A Python list is structure, not an array (as jax.jit): fn gets a list of scalar nodes, and NumPy
    functions that would read it as one array say so rather than freeze it."""
    out = gc.function(lambda v: [v[1], v[0]])([1.0, 2.0])
    assert isinstance(out, list) and [float(o) for o in out] == [2.0, 1.0]
    np.testing.assert_array_equal(gc.function(lambda v: np.stack(v))([1.0, 2.0]), [1.0, 2.0])
    with pytest.raises(gc.GraphCompilerError, match="no value until a program runs"):
        gc.function(lambda v: np.sum(v))([1.0, 2.0])
    np.testing.assert_array_equal(gc.function(lambda v: np.sum(v))(np.array([1.0, 2.0])), 3.0)  # an array is a leaf
