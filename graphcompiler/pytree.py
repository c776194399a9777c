"""Pytrees, as jax.tree_util: nested tuples, lists, dicts and None flattened to a list of leaves and a
hashable structure (a PyTreeDef), and rebuilt from them.

The order is deterministic: tuples and lists in order, dicts (and defaultdicts) by sorted key (as JAX, so
{"b": 1, "a": 2} and {"a": 2, "b": 1} have one structure), OrderedDicts in their order, namedtuples by
field. None is structure with no leaf (as JAX: it gets no gradient). Anything else is a leaf: an array, a
number, a node, a string (the callers check leaves).
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from typing import Any, Callable, Iterator

from .errors import GraphCompilerError

__all__ = ["PyTreeDef", "tree_flatten", "tree_unflatten", "tree_leaves", "tree_structure", "tree_map", "leaf_paths"]


class PyTreeDef:
    """The structure of a pytree: kind ("leaf", "none", "tuple", "list", "dict", "OrderedDict", "defaultdict",
    "namedtuple"), what rebuilds it (meta: a dict's keys, sorted but an OrderedDict's in order; a defaultdict's
    (default_factory, keys); a namedtuple's class), and the children's structures. Immutable; equal structures
    hash equal (the hash and the leaf count are computed once: a compiled function looks its signature up on
    every call)."""

    __slots__ = ("kind", "children", "meta", "num_leaves", "_hash")

    def __init__(self, kind: str, children: tuple[PyTreeDef, ...] = (), meta: Any = None):
        self.kind, self.children, self.meta = kind, children, meta
        self.num_leaves: int = 1 if kind == "leaf" else sum(c.num_leaves for c in children)
        self._hash = hash((kind, children, meta))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, PyTreeDef) or self._hash != other._hash:
            return False
        return self.kind == other.kind and self.meta == other.meta and self.children == other.children

    def __repr__(self) -> str:
        return f"PyTreeDef({self._text()})"

    def _text(self) -> str:
        inner = [c._text() for c in self.children]
        if self.kind == "leaf":
            return "*"
        if self.kind == "none":
            return "None"
        if self.kind == "list":
            return f"[{', '.join(inner)}]"
        if self.kind in ("dict", "OrderedDict", "defaultdict"):
            text = "{" + ", ".join(f"{k!r}: {t}" for k, t in zip(_keys(self), inner)) + "}"
            return text if self.kind == "dict" else f"{self.kind}({text})"
        if self.kind == "namedtuple":
            return f"{self.meta.__name__}({', '.join(inner)})"
        return f"({inner[0]},)" if len(inner) == 1 else f"({', '.join(inner)})"


def _keys(t: PyTreeDef) -> tuple:
    return t.meta[1] if t.kind == "defaultdict" else t.meta


_NODE_TYPES = frozenset({tuple, list, dict, OrderedDict, defaultdict})
LEAF = PyTreeDef("leaf")
NONE = PyTreeDef("none")


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and type(x) is not tuple and hasattr(type(x), "_fields")


def _sorted_keys(d: dict) -> tuple:
    try:
        return tuple(sorted(d))
    except TypeError:
        types = ", ".join(sorted({type(k).__name__ for k in d}))
        raise GraphCompilerError(
            f"a dict in a pytree has keys that cannot be sorted together ({types}); "
            "pytree dicts are ordered by sorted key (as JAX): use keys of one type (strings)"
        ) from None


def _children(x: Any) -> tuple[str, list, Any] | None:
    """(kind, children, meta) of a pytree node, None for a leaf."""
    if x is None:
        return "none", [], None
    if type(x) is tuple:
        return "tuple", list(x), None
    if _is_namedtuple(x):
        return "namedtuple", list(x), type(x)
    if type(x) is list:
        return "list", list(x), None
    if type(x) is dict:
        keys = _sorted_keys(x)
        return "dict", [x[k] for k in keys], keys
    if type(x) is OrderedDict:  # in its own order, as JAX
        keys = tuple(x)
        return "OrderedDict", [x[k] for k in keys], keys
    if type(x) is defaultdict:
        keys = _sorted_keys(x)
        return "defaultdict", [x[k] for k in keys], (x.default_factory, keys)
    return None


def tree_flatten(tree: Any, is_leaf: Callable[[Any], bool] | None = None) -> tuple[list, PyTreeDef]:
    """(leaves, structure) of a pytree; is_leaf(x) True stops the descent at x."""
    leaves: list = []

    def walk(x: Any) -> PyTreeDef:
        if type(x) not in _NODE_TYPES and not isinstance(x, tuple) and x is not None:  # a leaf, checked fast
            leaves.append(x)
            return LEAF
        node = None if is_leaf is not None and is_leaf(x) else _children(x)
        if node is None:
            leaves.append(x)
            return LEAF
        kind, children, meta = node
        if kind == "none":
            return NONE
        return PyTreeDef(kind, tuple(walk(c) for c in children), meta)

    return leaves, walk(tree)


def tree_unflatten(treedef: PyTreeDef, leaves) -> Any:
    """The pytree of structure treedef holding leaves (in tree_flatten's order)."""
    leaves = list(leaves)
    if len(leaves) != treedef.num_leaves:
        raise GraphCompilerError(f"tree_unflatten: {treedef!r} holds {treedef.num_leaves} leaves, got {len(leaves)}")
    it = iter(leaves)

    def build(t: PyTreeDef) -> Any:
        if t.kind == "leaf":
            return next(it)
        if t.kind == "none":
            return None
        children = [build(c) for c in t.children]
        if t.kind == "list":
            return children
        if t.kind == "dict":
            return dict(zip(t.meta, children))
        if t.kind == "OrderedDict":
            return OrderedDict(zip(t.meta, children))
        if t.kind == "defaultdict":
            return defaultdict(t.meta[0], zip(t.meta[1], children))
        if t.kind == "namedtuple":
            return t.meta(*children)
        return tuple(children)

    return build(treedef)


def tree_leaves(tree: Any, is_leaf: Callable[[Any], bool] | None = None) -> list:
    """The leaves of a pytree, in tree_flatten's order."""
    return tree_flatten(tree, is_leaf)[0]


def tree_structure(tree: Any, is_leaf: Callable[[Any], bool] | None = None) -> PyTreeDef:
    """The structure of a pytree."""
    return tree_flatten(tree, is_leaf)[1]


def tree_map(f: Callable, tree: Any, *rest: Any, is_leaf: Callable[[Any], bool] | None = None) -> Any:
    """f applied leaf by leaf (to the matching leaves of rest, which have tree's structure), in its structure."""
    leaves, treedef = tree_flatten(tree, is_leaf)
    others = []
    for k, r in enumerate(rest):
        r_leaves, r_def = tree_flatten(r, is_leaf)
        if r_def != treedef:
            raise GraphCompilerError(f"tree_map: tree {k + 1} has structure {r_def!r}, but the first has {treedef!r}")
        others.append(r_leaves)
    return tree_unflatten(treedef, [f(*xs) for xs in zip(leaves, *others)])


def leaf_paths(treedef: PyTreeDef, prefix: str = "") -> list[str]:
    """Each leaf's path as Python would index it (`params['layer1'][0]` with prefix "params")."""
    return list(_paths(treedef, prefix))


def _paths(t: PyTreeDef, prefix: str) -> Iterator[str]:
    if t.kind == "leaf":
        yield prefix
    elif t.kind in ("dict", "OrderedDict", "defaultdict"):
        for k, c in zip(_keys(t), t.children):
            yield from _paths(c, f"{prefix}[{k!r}]")
    elif t.kind == "namedtuple":
        for field, c in zip(t.meta._fields, t.children):
            yield from _paths(c, f"{prefix}.{field}")
    else:
        for k, c in enumerate(t.children):
            yield from _paths(c, f"{prefix}[{k}]")
