"""The lowered program and the Evaluator protocol: plain data a backend runs, chosen by compile(backend=)."""

import ast
from pathlib import Path

import numpy as np
import pytest

import graphcompiler as gc
import graphcompiler.backends as backends
from graphcompiler.backends.lowered import BufferView, Const, Evaluator, LoweredProgram, OutSlot


def mlp(batch=None):
    rng = np.random.default_rng(0)
    g = gc.Graph("mlp")
    x = g.input("x", shape=(batch, 4))
    y = g.input("y", shape=(batch,), dtype="int64")
    W1 = g.parameter("W1", rng.standard_normal((4, 5)))
    W2 = g.parameter("W2", rng.standard_normal((5, 3)))
    h = gc.relu(gc.matmul(x, W1, name="z"), name="h")
    o = gc.matmul(h, W2, name="o")
    L = gc.softmax_cross_entropy(o, y, name="L")
    J = gc.add(L, 0.01 * (gc.sum(W1 * W1) + gc.sum(W2 * W2)), name="J")
    grads = gc.build_grad(J, [W1, W2])
    feeds = {"x": rng.standard_normal((6, 4)), "y": np.array([0, 1, 2, 0, 1, 2])}
    return g, J, grads, (W1, W2), feeds


class Interpreter:
    """A second evaluator written only against lowered.py: every step allocates, nothing is reused."""

    def load(self, lowered: LoweredProgram) -> "Interpreter":
        self.lowered = lowered
        return self

    def run(self, leaves):
        lw = self.lowered
        values: list = [None] * lw.n_slots
        freed: set = set()
        for s, v in zip(lw.leaves, leaves):
            values[s] = v
        for st in lw.steps:
            args = []
            for a in st.args:
                if isinstance(a, Const):
                    args.append(a.value)
                else:
                    assert a not in freed, f"{st.label} reads freed slot {a}"
                    assert values[a] is not None, f"{st.label} reads slot {a} before it is written"
                    args.append(values[a])
            if st.out is None:
                values[st.slot] = np.asarray(st.kernel(*args, **st.kw))
            else:                                # a kernel that can write out= can also allocate
                out = np.empty(st.shape, st.dtype)
                values[st.slot] = st.kernel(*args, **st.kw, out=out)
            assert values[st.slot].shape == st.shape, st.label
            for f in st.frees:
                freed.add(f)
                values[f] = None
        return [np.array(r.value) if isinstance(r, Const) else np.array(values[r]) for r in lw.results]


def test_lowered_program_is_plain_data_with_labels():
    g, J, grads, (W1, W2), feeds = mlp()
    p = gc.compile([J, grads[W1], grads[W2]], updates={W1: W1 - 0.1 * grads[W1]})
    assert p.lowered is None                      # None dims: lowered at the first run
    p.run(feeds)
    lw = p.lowered
    assert isinstance(lw, LoweredProgram)
    assert dict(zip(lw.leaf_names, lw.leaf_kinds)) == {"x": "feed", "y": "feed", "W1": "parameter",
                                                       "W2": "parameter"}
    assert set(lw.feeds) | set(lw.parameters) == set(lw.leaves)
    assert lw.n_outputs == 3 and lw.updates == ("W1",) and len(lw.results) == 4
    labels = [st.label for st in lw.steps]
    assert any(lab.startswith("L = softmax_cross_entropy(o, y)") or "L = " in lab for lab in labels)
    written = set(lw.leaves)
    freed = set()
    for st in lw.steps:
        for a in st.args:
            if not isinstance(a, Const):
                assert a in written and a not in freed, st
        assert st.slot not in written
        written.add(st.slot)
        assert not (set(st.frees) & freed)
        freed |= set(st.frees)
        if isinstance(st.out, BufferView):
            size, dtype = lw.buffers[st.out.buffer]
            assert size >= int(np.prod(st.shape)) and np.dtype(dtype) == st.dtype
        elif isinstance(st.out, OutSlot):
            assert st.out.slot in written
        assert len(st.arg_names) <= len(st.args)
    assert all(isinstance(r, Const) or r in written for r in lw.results)
    assert "LoweredProgram" in str(lw)


def test_a_second_evaluator_written_against_the_contract_agrees(monkeypatch):
    monkeypatch.setitem(backends.BACKENDS, "interpreter", Interpreter)
    assert isinstance(Interpreter(), Evaluator)
    g, J, grads, (W1, W2), feeds = mlp()
    outs = [J, grads[W1], grads[W2]]
    ref = gc.compile(outs).run(feeds)
    for optimize in (True, False):
        got = gc.compile(outs, optimize=optimize, backend="interpreter").run(feeds)
        for a, b in zip(got, ref):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    W = g.value(W1).copy()
    dW = ref[1]
    gc.compile([J], updates={W1: W1 - 0.1 * grads[W1]}, backend="interpreter").run(feeds)
    np.testing.assert_allclose(g.value(W1), W - 0.1 * dW, rtol=1e-12)


def test_unknown_backend_lists_the_known_ones():
    g, J, grads, _, feeds = mlp()
    with pytest.raises(gc.GraphCompilerError, match="unknown backend 'fortran'.*numpy"):
        gc.compile([J], backend="fortran")
    p = gc.compile([J], backend="numpy")
    p.run(feeds)
    assert isinstance(p._last.evaluator, gc.NumpyEvaluator) and isinstance(p._last.evaluator, Evaluator)


def test_errors_name_the_users_node():
    g, J, grads, _, feeds = mlp()
    bad = dict(feeds, y=np.array([0, 1, 2, 0, 1, 7]))
    for optimize in (False, True):
        with pytest.raises(gc.ExecutionError, match="while computing L = softmax_cross_entropy"):
            gc.compile([J], optimize=optimize).run(bad)


def test_the_evaluator_imports_nothing_from_graph_ops_or_autodiff():
    root = Path(gc.__file__).parent
    for module in ("backends/numpy.py", "backends/lowered.py"):
        tree = ast.parse((root / module).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                name = node.module or ""
                assert not any(part in name.split(".") for part in ("graph", "ops", "autodiff")), (module, name)
            if isinstance(node, ast.Import):
                assert all(not a.name.startswith("graphcompiler") for a in node.names), module
