"""Reliability (issue 17): nothing silently wrong under bad labels, huge constants, hostile files, large
logits and large graphs; each test here failed on the code before its fix.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import graphcompiler as gc


# -- 1. labels: the optimised program checks what the declared one checks ---------------------------------

def _loss_graph(classes: int = 4):
    g = gc.Graph("labels")
    x = g.input("x", shape=(None, 3))
    y = g.input("y", shape=(None,), dtype="int64")
    W = g.parameter("W", np.random.default_rng(0).standard_normal((3, classes)))
    L = gc.softmax_cross_entropy(x @ W, y, name="L")
    grads = gc.build_grad(L, [W])
    return g, L, grads[W], W


def _outcome(program, feeds):
    """('ok', values) or ('error', error class): what a run gives."""
    try:
        return "ok", program.run(feeds)
    except gc.GraphCompilerError as e:
        return "error", type(e)
    except Exception as e:            # noqa: BLE001  anything else is a defect the caller reports
        return "foreign", type(e)


@pytest.mark.parametrize("bad", [-1, -3, 4, 7])
@pytest.mark.parametrize("which", ["loss", "grad", "both"])
def test_out_of_range_label_raises_in_optimised_program(bad, which):
    g, L, dW, W = _loss_graph(4)
    outs = {"loss": [L], "grad": [dW], "both": [L, dW]}[which]
    feeds = {"x": np.ones((5, 3)), "y": np.array([0, 1, 2, 3, bad])}
    for optimize in (True, False):
        with pytest.raises(gc.ExecutionError, match=f"label {bad} is out of range for 4 classes"):
            gc.compile(outs, optimize=optimize).run(feeds)


def test_label_batch_size_must_match_logits_in_optimised_program():
    g, L, dW, W = _loss_graph(4)
    feeds = {"x": np.ones((4, 3)), "y": np.array([1])}        # one label broadcast over four rows
    for optimize in (True, False):
        for outs in ([L], [dW], [L, dW]):
            with pytest.raises(gc.ShapeError, match=r"need labels of shape \(4,\), got \(1,\)"):
                gc.compile(outs, optimize=optimize).run(feeds)


def test_fused_label_kernels_check_batch_size_themselves():
    from graphcompiler.compiler.fused import MinusOneHot, PickMean
    logp = np.log(np.full((4, 3), 1 / 3))
    with pytest.raises(ValueError, match="labels of shape"):
        PickMean().kernel(logp, np.array([0]))
    with pytest.raises(ValueError, match="labels of shape"):
        MinusOneHot().kernel(np.exp(logp), np.array([0]))
    with pytest.raises(ValueError, match="label -1 is out of range"):
        MinusOneHot().kernel(np.exp(logp), np.array([0, 1, 2, -1]))


@st.composite
def _labels(draw):
    """A class count and labels mostly near the valid range [0, classes): -1, -classes and classes are the
    cases NumPy's negative indexing or a missing check would let through."""
    classes = draw(st.integers(1, 5))
    labels = draw(st.lists(st.integers(-classes - 1, classes), min_size=0, max_size=6))
    return labels, classes


@given(case=_labels(), dtype=st.sampled_from(["int64", "int32", "int8", "uint8"]))
def test_property_labels_optimised_equals_unoptimised(case, dtype):
    labels, classes = case
    g = gc.Graph("p")
    x = g.input("x", shape=(None, 3))
    y = g.input("y", shape=(None,), dtype=dtype)
    W = g.parameter("W", np.linspace(-1, 1, 3 * classes).reshape(3, classes))
    L = gc.softmax_cross_entropy(x @ W, y, name="L")
    dW = gc.build_grad(L, [W])[W]
    lab = np.array(labels, dtype=np.int64)
    if dtype == "uint8":
        lab = lab[lab >= 0]
    lab = lab.astype(dtype)
    feeds = {"x": np.linspace(-2, 2, 3 * len(lab)).reshape(len(lab), 3), "y": lab}
    for outs in ([L], [dW], [L, dW]):
        a = _outcome(gc.compile(outs, optimize=True), feeds)
        b = _outcome(gc.compile(outs, optimize=False), feeds)
        assert a[0] != "foreign" and b[0] != "foreign", (a, b)
        assert a[0] == b[0], (labels, classes, a, b)
        if a[0] == "error":
            assert a[1] is b[1]
        else:
            for u, v in zip(a[1], b[1]):
                np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-12, equal_nan=True)
