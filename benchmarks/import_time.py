"""How long `import graphcompiler` takes against `import numpy`, and which package modules import which."""

from __future__ import annotations

import ast
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("sympy", "networkx", "graphviz", "matplotlib", "sklearn", "tqdm", "scipy")


# Byte-code is cached as for an installed package (PYTHONDONTWRITEBYTECODE would make every run compile the
# package's sources, about 0.35 s of it), in a folder of its own so the working tree stays clean.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ENV["PYTHONPYCACHEPREFIX"] = os.path.join(tempfile.gettempdir(), "graphcompiler-import-time-pyc")


def import_seconds(module: str, repeats: int = 9) -> tuple[float, float]:
    """The medians of wall time and CPU time (user + system) of `python -c 'import module'` in fresh processes,
    interpreter start included. CPU time is the steadier figure on a shared machine."""
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, env=ENV)     # writes the byte-code
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True, env=ENV)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def imports_of(package: Path) -> dict[str, dict[str, str]]:
    """module -> {imported package module: "" at import, "lazy" inside a function, "types" for type checkers}."""
    out: dict[str, dict[str, str]] = {}
    for path in sorted(package.rglob("*.py")):
        mod = ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        deps: dict[str, str] = {}
        top = {id(n) for n in tree.body}
        typing_only = {id(n) for s in tree.body if isinstance(s, ast.If) and "TYPE_CHECKING" in ast.unparse(s.test)
                       for n in s.body}
        rank = {"": 0, "lazy": 1, "types": 2}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = pkg.split(".")
                base = base[: len(base) - node.level + 1]
                targets = [".".join(base + [node.module])] if node.module else [
                    ".".join(base + [a.name]) for a in node.names]
                how = "" if id(node) in top else "types" if id(node) in typing_only else "lazy"
                for target in targets:
                    if target not in deps or rank[how] < rank[deps[target]]:
                        deps[target] = how
        out[mod] = deps
    return out


def main() -> None:
    (numpy_s, numpy_cpu), (gc_s, gc_cpu) = import_seconds("numpy"), import_seconds("graphcompiler")
    loaded = subprocess.run([sys.executable, "-c", "import graphcompiler, sys; print(' '.join(m for m in "
                             f"{HEAVY!r} if m in sys.modules))"], capture_output=True, text=True).stdout.split()
    print(f"import numpy: {numpy_s:.3f} s wall, {numpy_cpu:.3f} s CPU   import graphcompiler: {gc_s:.3f} s wall, "
          f"{gc_cpu:.3f} s CPU (+{gc_cpu - numpy_cpu:.3f} s CPU; medians of 9 fresh processes, start included)")
    print(f"heavy modules loaded by `import graphcompiler`: {loaded or 'none'}")
    for mod, deps in imports_of(Path(__file__).resolve().parents[1] / "graphcompiler").items():
        names = [d.removeprefix("graphcompiler.") + (f" ({how})" if how else "") for d, how in sorted(deps.items())]
        print(f"  {mod.removeprefix('graphcompiler.') or 'graphcompiler'}: {', '.join(names)}")


if __name__ == "__main__":
    main()
