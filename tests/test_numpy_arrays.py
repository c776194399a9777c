"""Arrays built from nodes in plain NumPy code (API.md section 14, issue 27 item 2): np.stack, np.concatenate and
the other joining functions on mixed lists of nodes, NumPy arrays and Python numbers, np.append, np.block, the
split family, and np.array / np.asarray of a list of nodes (a clear error, or `like=node`, which NumPy hands to
the node). Values are checked against NumPy on the same data (dtypes included), gradients against central
differences of the same NumPy code.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphcompiler as gc
from graphcompiler.numpy_api import UnsupportedFunctionError

R = np.random.default_rng(27)


def N(*shape):
    return R.standard_normal(shape)


def _loss(fn):
    """A scalar of fn's result(s), so one gradient checks every piece (a list of pieces: each weighted)."""

    def loss(*xs):
        out = fn(*xs)
        pieces = list(out) if isinstance(out, (list, tuple)) else [out]
        return sum(np.sum(np.sin(p) * (k + 1.0)) for k, p in enumerate(pieces))

    return loss


def _central(f, arrays, k, eps=1e-6):
    num = np.zeros_like(arrays[k])
    for idx in np.ndindex(arrays[k].shape):
        plus = [a.copy() for a in arrays]
        minus = [a.copy() for a in arrays]
        plus[k][idx] += eps
        minus[k][idx] -= eps
        num[idx] = (f(*plus) - f(*minus)) / (2 * eps)
    return num


def check(fn, *arrays):
    """fn traced on nodes: its value (shape, dtype, numbers) as NumPy's, and d loss / d each argument as
    central differences of the NumPy code."""
    expected = fn(*arrays)
    got = gc.function(fn)(*arrays)
    for e, v in zip(*(list(o) if isinstance(o, (list, tuple)) else [o] for o in (expected, got))):
        e, v = np.asarray(e), np.asarray(v)
        assert v.shape == e.shape and v.dtype == e.dtype, f"{v.shape} {v.dtype} vs NumPy {e.shape} {e.dtype}"
        np.testing.assert_allclose(v, e, rtol=1e-13, atol=1e-14)
    loss = _loss(fn)
    for k in range(len(arrays)):
        g = gc.grad(loss, argnums=k)(*arrays)
        np.testing.assert_allclose(g, _central(loss, list(arrays), k), rtol=1e-6, atol=1e-8, err_msg=f"d/darg{k}")


# -- joining mixed lists -------------------------------------------------------------------------------------

JOINS = {
    "stack_brief": (lambda a, b: np.stack([a, 2.0 * b, np.ones(3)]), [N(3), N(3)]),
    "stack_numbers": (lambda a: np.stack([a[0], 1.5, a[2], np.float64(-2.0)]), [N(3)]),
    "stack_list_of_nodes_inside": (lambda a, b: np.stack([a[:2], [b[1], 2.0]], axis=1), [N(3), N(3)]),
    "stack_int_array": (lambda a: np.stack([a, np.arange(3)], axis=-1), [N(3)]),
    "concatenate_mixed": (lambda a, b: np.concatenate([a, [1.0, 2.0], np.zeros(2), b]), [N(3), N(2)]),
    "concatenate_axis_none": (lambda a: np.concatenate([a, np.ones((2, 2))], axis=None), [N(2, 3)]),
    "concatenate_list_of_scalars": (lambda a: np.concatenate([a, [a[0], 3.0]]), [N(3)]),
    "hstack_numbers": (lambda a, b: np.hstack([a, 3.0, b, [4.0, a[1]]]), [N(3), N(2)]),
    "vstack_mixed": (lambda a, b: np.vstack([a, np.ones(3), b, [a[0], 1.0, b[2]]]), [N(3), N(3)]),
    "dstack_mixed": (lambda a: np.dstack([a, np.ones((2, 3)), 2.0 * a]), [N(2, 3)]),
    "column_stack_mixed": (lambda a, b: np.column_stack([a, np.arange(3.0), b]), [N(3), N(3, 2)]),
    "append_flat": (lambda a, b: np.append(a, b), [N(2, 3), N(4)]),
    "append_axis": (lambda a: np.append(a, np.ones((1, 3)), axis=0), [N(2, 3)]),
    "append_number": (lambda a: np.append(a, 3.0), [N(3)]),
    "append_to_list": (lambda a: np.append([1.0, 2.0], a), [N(2, 2)]),
    "append_list_of_nodes": (lambda a: np.append(a, [a[0] * a[1], 1.0]), [N(3)]),
    "block_2d": (lambda a, b: np.block([[a, np.zeros((2, 2))], [np.ones((3, 3)), b]]), [N(2, 3), N(3, 2)]),
    "block_1d": (lambda a: np.block([a, 1.0, np.arange(2.0)]), [N(3)]),
    "block_raises_rank": (lambda a: np.block([[a], [a]]), [N(3)]),
    "block_3d_leaves": (lambda a: np.block([[a, a]]), [N(2, 2, 2)]),
}


@pytest.mark.parametrize("name", sorted(JOINS))
def test_joining_mixed_lists_matches_numpy(name):
    fn, arrays = JOINS[name]
    check(fn, *arrays)


def test_python_numbers_promote_as_numpy_does():
    # NumPy reads a Python float in a joined list as a float64 array (np.asarray(2.0)): float32 nodes join to
    # float64, as np.stack([np.float32 array, 2.0]) does
    x = np.ones(2, np.float32)
    for fn in (lambda a: np.stack([a[0], 2.0]), lambda a: np.concatenate([a, [2.0]]), lambda a: np.append(a, 2.0),
               lambda a: np.hstack([a, 2.0]), lambda a: np.stack([a, a]), lambda a: np.stack([a, np.arange(2)])):
        assert gc.function(fn)(x).dtype == fn(x).dtype


def test_ragged_list_of_nodes_is_a_shape_error():
    g = gc.Graph()
    a, b = g.input("a", (3,)), g.input("b", (2,))
    with pytest.raises(gc.ShapeError, match=r"one shape.*'a' \(3,\).*'b' \(2,\)"):
        np.stack([a, [a, b]])
    with pytest.raises(gc.ShapeError, match=r"one shape.*'a' \(3,\).*'b' \(2,\)"):
        np.array([a, b], like=a)
    with pytest.raises(gc.ShapeError, match="different depths"):
        np.block([[a], b])
    with pytest.raises(gc.ShapeError, match=r"arrays\[1\] is a tuple"):
        np.block([a, (b,)])
    with pytest.raises(gc.ShapeError, match=r"arrays\[0\]\[1\] is an empty list"):
        np.block([[a, []]])


# -- the split family ----------------------------------------------------------------------------------------

SPLITS = {
    "split_sections": (lambda a: np.split(a, 3, axis=1), [N(2, 6)]),
    "split_indices": (lambda a: np.split(a, [1, -2]), [N(6, 2)]),
    "split_numpy_indices": (lambda a: np.split(a, np.array([2, 3]), axis=-1), [N(2, 5)]),
    "array_split_uneven": (lambda a: np.array_split(a, 3, axis=1), [N(2, 7)]),
    "array_split_more_pieces_than_items": (lambda a: np.array_split(a, 4)[:3], [N(3)]),
    "array_split_indices": (lambda a: np.array_split(a, [2, 4]), [N(5, 2)]),
    "hsplit_2d": (lambda a: np.hsplit(a, 2), [N(3, 4)]),
    "hsplit_1d": (lambda a: np.hsplit(a, [1, 3]), [N(5)]),
    "vsplit": (lambda a: np.vsplit(a, 3), [N(3, 4)]),
    "dsplit": (lambda a: np.dsplit(a, [1]), [N(2, 3, 4)]),
    "split_then_stack": (lambda a: np.stack(np.array_split(a, 2)[::-1]), [N(4, 3)]),
}


@pytest.mark.parametrize("name", sorted(SPLITS))
def test_split_family_matches_numpy(name):
    fn, arrays = SPLITS[name]
    check(fn, *arrays)


def test_split_family_refusals():
    g = gc.Graph()
    v, m = g.input("v", (4,)), g.input("m", (3, 4))
    with pytest.raises(gc.ShapeError, match=r"numpy\.vsplit needs rank 2.*'v' has shape \(4,\)"):
        np.vsplit(v, 2)
    with pytest.raises(gc.ShapeError, match=r"numpy\.dsplit needs rank 3"):
        np.dsplit(m, 2)
    with pytest.raises(gc.ShapeError, match="equal parts"):
        np.split(m, 3, axis=1)
    with pytest.raises(gc.ShapeError, match="must be positive"):
        np.array_split(m, 0)
    with pytest.raises(UnsupportedFunctionError, match="not node 'i'"):
        np.split(m, g.input("i", (), "int64"))
    r = g.input("r", (None, 4))
    with pytest.raises(gc.ShapeError, match="static shape"):
        np.array_split(r, 3)


# -- np.array / np.asarray of nodes ----------------------------------------------------------------------------


@pytest.mark.parametrize("make", [np.array, np.asarray, np.asanyarray], ids=["array", "asarray", "asanyarray"])
def test_array_of_a_list_of_nodes_says_what_to_write(make):
    # NumPy never dispatches np.array(list) to the items: it asks each for __array__, which has no value to give
    g = gc.Graph()
    a, b = g.input("a", (3,)), g.input("b", (3,))
    with pytest.raises(gc.GraphCompilerError, match=r"node 'a'.*numpy\.stack\(\[a, b\]\).*like=a"):
        make([a, b])


def test_array_like_node_builds_the_node():
    for make in (np.array, np.asarray, np.asanyarray):
        check(lambda a, b: make([[a, 2.0 * b], [b, np.ones(3)]], like=a), N(3), N(3))
        check(lambda a: make([a[0], 1.0, a[2] * a[1]], like=a), N(3))
        f32 = gc.function(lambda a: make([a[1], a[0]], dtype=np.float32, like=a))(np.array([1.5, 2.5]))
        assert f32.dtype == np.float32 and f32.tolist() == [2.5, 1.5]
    g = gc.Graph()
    x = g.input("x", (2,))
    c = np.array([1.0, 2.0], like=x)  # no node inside: a constant of x's graph
    assert isinstance(c, gc.Node) and c.graph is x.graph
    assert np.array(x, like=x) is x
    with pytest.raises(UnsupportedFunctionError, match="ndmin="):
        np.array([x, x], ndmin=3, like=x)


def test_run_time_dims_join_and_block():
    g = gc.Graph()
    a, b = g.input("a", (None, 3)), g.input("b", (None, 3))
    outs = [np.block([[[a]], [[b]]]), np.append(a, b, axis=0), np.vstack([a, np.ones(3), b]),
            np.stack([a, 2.0 * b])]
    A, B = N(2, 3), N(2, 3)
    expected = [np.block([[[A]], [[B]]]), np.append(A, B, axis=0), np.vstack([A, np.ones(3), B]),
                np.stack([A, 2.0 * B])]
    for v, e in zip(gc.compile(outs).run({a: A, b: B}), expected):
        assert v.shape == e.shape
        np.testing.assert_array_equal(v, e)
