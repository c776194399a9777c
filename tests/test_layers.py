"""The package's layers: imports go downward only (no circle across folders), and `import graphcompiler`
stays light (no SymPy, networkx, Graphviz, Matplotlib, scikit-learn or tqdm until they are used)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "graphcompiler"

# The rank of each unit (a folder, or a module at the top of the package); a unit imports lower ranks only,
# or units of its own rank that do not import it back. symbolic_terms imports nothing of the package but
# errors: the op blocks' SymPy rules use it (inside the rule, so SymPy loads only when a graph is exported).
# control (scan, cond, while_loop) stands above autodiff and the compiler, which it imports; viz draws its
# bodies and symbolic exports a scan's recurrence, so they stand above it.
# scipy (gc.scipy.special, gc.scipy.stats) composes ops and gc.linalg; SciPy itself loads only in its calls.
RANKS = {"errors": 0, "budget": 1, "symbolic_terms": 1, "graph": 2, "ops": 3,
         "autodiff": 4, "compiler": 4, "backends": 4, "io": 4, "linalg": 4, "random": 4,
         "control": 5, "scipy": 5, "viz": 6, "symbolic": 6,
         "cli": 7, "demo": 7, "__main__": 7, "__init__": 7, "_lazy": 7}
HEAVY = ("sympy", "networkx", "graphviz", "matplotlib", "sklearn", "tqdm")


def _unit(module: str) -> str:
    """graphcompiler.ops.shape -> ops, graphcompiler.viz -> viz, graphcompiler -> __init__."""
    parts = module.split(".")[1:]
    return parts[0] if parts else "__init__"


def _imports() -> list[tuple[str, str, int]]:
    """(importing module, imported module, line) for every relative import run at import or inside a function;
    imports under `if TYPE_CHECKING:` are for type checkers only and never run."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package = module if rel.name == "__init__" else module.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for s in ast.walk(tree) if isinstance(s, ast.If) and "TYPE_CHECKING" in ast.unparse(s.test)
                       for n in ast.walk(s)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level and id(node) not in typing_only:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                if node.module:
                    targets = [".".join(base + [node.module])]
                else:
                    targets = [".".join(base + [a.name]) for a in node.names]
                for t in targets:
                    if (PACKAGE.parent / Path(*t.split("."))).with_suffix(".py").exists() or \
                            (PACKAGE.parent / Path(*t.split(".")) / "__init__.py").exists():
                        out.append((module, t, node.lineno))
    return out


def test_the_lower_layers_import_only_below_them():
    """errors, symbolic_terms, graph and ops never import a module above them (one not in RANKS included)."""
    bad = [f"{m}:{line} imports {t}" for m, t, line in _imports()
           if RANKS.get(_unit(m), 99) <= RANKS["ops"] and _unit(t) != _unit(m)
           and RANKS.get(_unit(t), 99) >= RANKS[_unit(m)]]
    assert not bad, ("the op library and the graph import only the layers below them (an op block's SymPy rule "
                     "imports from ..symbolic_terms, not ..symbolic; Node's operators are installed from ops/):\n"
                     + "\n".join(bad))


def test_imports_go_downward():
    """Among the modules of RANKS, imports go to lower or equal ranks (a new module joins RANKS when it is
    placed in a layer; until then only the circle test and the test above apply to it)."""
    upward = [f"{m}:{line} imports {t} ({_unit(m)}, rank {RANKS[_unit(m)]} -> {_unit(t)}, rank {RANKS[_unit(t)]})"
              for m, t, line in _imports()
              if _unit(m) in RANKS and _unit(t) in RANKS and RANKS[_unit(t)] > RANKS[_unit(m)]]
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_no_import_circle_across_units():
    edges: dict[str, set[str]] = {}
    for m, t, _ in _imports():
        if _unit(m) != _unit(t):
            edges.setdefault(_unit(m), set()).add(_unit(t))
    state: dict[str, int] = {}

    def visit(u: str, path: list[str]) -> None:
        state[u] = 1
        for v in sorted(edges.get(u, ())):
            assert state.get(v) != 1, f"import circle: {' -> '.join(path + [u, v])}"
            if v not in state:
                visit(v, path + [u])
        state[u] = 2

    for u in sorted(edges):
        if u not in state:
            visit(u, [])


@pytest.mark.parametrize("folder, a_module", [("ops", "elementwise"), ("compiler", "memory"),
                                               ("backends", "c"), ("control", "scan")])
def test_the_modules_of_a_folder_import_one_another_without_a_circle(folder, a_module):
    """Inside a folder the modules stand in layers too (ops: base -> shape -> elementwise -> reduce -> indexing,
    nn, linalg, ...): no circle among them, counting imports inside functions (a circle dodged at import time by
    a function-local import is still a circle)."""
    prefix = f"graphcompiler.{folder}."
    edges: dict[str, dict[str, int]] = {}
    for m, t, line in _imports():
        if m.startswith(prefix) and t.startswith(prefix) and m != t:
            edges.setdefault(m, {}).setdefault(t, line)
    state: dict[str, int] = {}

    def visit(u: str, path: list[str]) -> None:
        state[u] = 1
        for v in sorted(edges.get(u, ())):
            if state.get(v) == 1:
                ring = path[path.index(v):] + [u, v] if v in path else [u, v]
                steps = [f"{a}:{edges[a][b]} imports {b}" for a, b in zip(ring, ring[1:])]
                raise AssertionError(f"import circle among the modules of {folder}/:\n" + "\n".join(steps))
            if v not in state:
                visit(v, path + [u])
        state[u] = 2

    assert any(a_module in (u, *vs) for u, vs in ((u.rpartition(".")[2], [v.rpartition(".")[2] for v in vs])
                                                   for u, vs in edges.items())), "the edges were read"
    for u in sorted(edges):
        if u not in state:
            visit(u, [])


def test_control_flow_imports_what_it_uses():
    """Control flow (control/) stands above autodiff and the compiler and imports build_grad and compile
    directly; nothing at or below its layer imports it back (autodiff, the compiler and io reach its nodes
    through the op record: has_body, vjp), and no string-keyed registry in graph.py stands in for an import."""
    imports = _imports()
    uses = {_unit(t) for m, t, _ in imports if _unit(m) == "control"}
    assert {"autodiff", "compiler"} <= uses, f"control imports {sorted(uses)}"
    back = [f"{m}:{line} imports {t}" for m, t, line in imports
            if _unit(t) == "control" and _unit(m) != "control" and RANKS.get(_unit(m), 99) <= RANKS["control"]]
    assert not back, "\n".join(back)
    import graphcompiler.graph as G
    assert not [n for n in ("SERVICES", "provide", "service") if hasattr(G, n)]


@pytest.mark.parametrize("module", ["graphcompiler"])
def test_import_loads_no_heavy_dependency(module):
    code = f"import {module}, sys; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=PACKAGE.parent).stdout.split()
    assert loaded == [], f"`import {module}` loads {loaded}; import them inside the functions that use them"


def test_lazy_names_resolve():
    code = ("import graphcompiler as gc, sys; assert 'sympy' not in sys.modules; "
            "from graphcompiler import to_sympy; assert to_sympy is gc.to_sympy and 'to_latex' in dir(gc); "
            "g = gc.Graph(); x = g.input('x', (2,)); assert (x + 1).op.name == 'add' and x.T.op.name == 'transpose'; "
            "assert callable(g.save) and hasattr(g, '_repr_mimebundle_'); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert out.stdout.strip() == "ok", out.stderr


def test_the_demo_says_which_extra_it_needs(monkeypatch):
    import graphcompiler as gc
    from graphcompiler.demo import load_digits_split
    monkeypatch.setitem(sys.modules, "sklearn", None)          # as if scikit-learn were not installed
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(gc.GraphCompilerError, match=r"graphcompiler\[demo\]"):
        load_digits_split()
