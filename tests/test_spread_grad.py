"""std and var where the spread is zero or the divisor n - ddof is not positive: the derivative of a
function that is identically 0 (one element) is 0, to second order; a divisor <= 0 gives NumPy's value and a
gradient that says it is undefined (an error where the size is known, NaN where it is known only at run time)."""

from __future__ import annotations

import numpy as np
import pytest

import graphcompiler as gc
from gradcheck import check_gradients


@pytest.mark.parametrize("op", ["std", "var"])
@pytest.mark.parametrize("shape, axis", [((1,), None), ((), None), ((3, 1), 1), ((1, 4), 0), ((2, 1, 3), (1,)),
                                         ((1, 1), None)])
def test_one_element_spread_has_zero_first_and_second_derivative(op, shape, axis):
    rng = np.random.default_rng(5)
    a = rng.standard_normal(shape)
    g = gc.Graph()
    x = g.input("x", shape)
    y = getattr(gc, op)(x, axis=axis) * 3.0 + gc.sum(x * x)   # the spread is identically 0 here
    J = gc.sum(y)
    d = gc.build_grad(J, [x])[x]
    h = gc.build_grad(gc.sum(d * g.constant(rng.standard_normal(shape))), [x])[x]
    val, dx, hx = gc.compile([J, d, h]).run({"x": a})
    assert np.all(np.isfinite(dx)) and np.all(np.isfinite(hx))
    n_out = np.size(getattr(np, op)(a, axis=axis))
    np.testing.assert_allclose(val, np.sum(a * a) * n_out)
    np.testing.assert_allclose(dx, 2 * a * n_out, rtol=1e-12)
    check_gradients(g, J, [x], {"x": a})


@pytest.mark.parametrize("op", ["std", "var"])
def test_run_time_length_one_axis(op):
    g = gc.Graph()
    x = g.input("x", (None, 3))
    J = gc.sum(getattr(gc, op)(x, axis=0))
    d = gc.build_grad(J, [x])[x]
    (dx,) = gc.compile([d]).run({"x": np.ones((1, 3)) * 2.0})
    np.testing.assert_array_equal(dx, np.zeros((1, 3)))


def test_std_of_equal_entries_takes_the_zero_subgradient():
    g = gc.Graph()
    x = g.input("x", (4,))
    d = gc.build_grad(gc.std(x), [x])[x]
    (dx,) = gc.compile([d]).run({"x": np.full(4, 1.5)})
    np.testing.assert_array_equal(dx, np.zeros(4))


@pytest.mark.parametrize("op", ["std", "var"])
def test_ddof_at_or_over_the_size_keeps_numpys_value_and_no_silent_gradient(op):
    a = np.array([[1.0, 2.0], [3.0, 5.0]])
    g = gc.Graph()
    x = g.input("x", (2, 2))
    y = getattr(gc, op)(x, axis=1, ddof=2)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        ref = getattr(np, op)(a, axis=1, ddof=2)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning, match="Degrees of freedom"):
        (val,) = gc.compile([y]).run({"x": a})  # NumPy's value, with NumPy's warning
    np.testing.assert_array_equal(val, ref)
    with pytest.raises(gc.UndefinedGradientError, match=f"derivative of {op} .*n - ddof = 0"):
        gc.build_grad(gc.sum(y), [x])
    gd = gc.Graph()
    xd = gd.input("x", (None, None))  # the size is known only at run time: NaN, never a finite wrong number
    d = gc.build_grad(gc.sum(getattr(gc, op)(xd, axis=1, ddof=2)), [xd])[xd]
    with np.errstate(all="ignore"):
        (dx,) = gc.compile([d]).run({"x": a})
        (dx3,) = gc.compile([d]).run({"x": np.array([[1.0, 2.0, 4.0]])})
    assert np.all(np.isnan(dx))
    row = np.array([1.0, 2.0, 4.0])  # n = 3 > ddof: the ordinary derivative, against central differences
    f = lambda v: getattr(np, op)(v, ddof=2)  # noqa: E731
    num = [(f(row + e) - f(row - e)) / 2e-6 for e in np.eye(3) * 1e-6]
    np.testing.assert_allclose(dx3[0], num, rtol=1e-6)
