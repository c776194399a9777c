"""The `graphcompiler` command line (API section 8): demo, and render/grad/export/run/show on saved graph files.

Every failure the user can cause (a bad file, an unknown node, a bad argument) is one line on stderr and a
non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import stat
import sys
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from .budget import time_budget
from .errors import FeedError, GraphCompilerError, fmt_shape
from .graph import escape  # the one escaping of names for a terminal, shared with print(graph)

PROG = "graphcompiler"
MAX_SECONDS = 60.0  # the default time budget of `graphcompiler run` (a graph file may hold a loop that never ends)
PICTURE_SUFFIXES = (".svg", ".png", ".pdf", ".dot")


class CommandError(GraphCompilerError):
    """A command that cannot do what it was asked; main() prints it as one line."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line that points at --help instead of the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 on success, 1 on an error, 2 on bad arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (GraphCompilerError, OSError, ValueError, KeyError) as e:
        print(f"{PROG} {args.command}: error: {escape(_one_line(e))}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="graphcompiler: symbol-to-symbol differentiation of static graphs on "
        "NumPy. Run the demo, or work on graph files written by graph.save(path).",
    )
    from . import __version__

    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in (_add_demo, _add_render, _add_grad, _add_export, _add_run, _add_explore, _add_show):
        add(sub)
    return p


def _add_demo(sub) -> None:
    """The `demo` command."""
    c = sub.add_parser(
        "demo",
        help="train the D2L MLP on scikit-learn's digits and write its pictures",
        description="Declare the D2L one-hidden-layer MLP (relu, softmax cross-entropy, weight "
        "decay), check its gradients against central differences, compile an SGD training "
        "step, train it on scikit-learn's bundled handwritten digits (no download), and write "
        "the forward and backward pictures, the derivation of the gradients, the memory report "
        "and the loss curve into the output folder.",
    )
    c.add_argument("--out", default="demo-output", metavar="DIR", help="output folder (default: ./demo-output)")
    c.add_argument(
        "--model",
        choices=("mlp", "lenet"),
        default="mlp",
        help="mlp: the D2L MLP (default); lenet: a LeNet-style convnet on the 8x8 images",
    )
    c.add_argument(
        "--epochs", type=_positive_int, default=None, help="training epochs (default: 30 for the MLP, 15 for LeNet)"
    )
    c.add_argument("--hidden", type=_positive_int, default=128, help="hidden units of the MLP (default: 128)")
    c.add_argument("--seed", type=int, default=0, help="random seed of the split, the weights and the batches")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=_cmd_demo)


def _add_render(sub) -> None:
    """The `render` command."""
    c = sub.add_parser(
        "render",
        help="draw a graph file (SVG, PNG, PDF or DOT)",
        description="Draw a saved graph with Graphviz; the format follows the suffix of OUT.",
    )
    c.add_argument("file", metavar="FILE", help="a graph file written by graph.save")
    c.add_argument("-o", "--output", required=True, metavar="OUT", help="the picture: OUT.svg, .png, .pdf or .dot")
    c.add_argument(
        "--show", choices=("forward", "backward", "all"), default="all", help="which nodes to draw (default: all)"
    )
    c.set_defaults(func=_cmd_render)


def _add_grad(sub) -> None:
    """The `grad` command."""
    c = sub.add_parser(
        "grad",
        help="add the gradients of a node to a graph file (build_grad) and save",
        description="Load a graph, add d<OF>/d<W> for each W of --wrt as graph nodes "
        "(Algorithms 6.5/6.6), and save the grown graph to OUT.",
    )
    c.add_argument("file", metavar="FILE", help="a graph file written by graph.save")
    c.add_argument("--of", required=True, metavar="J", help="the scalar node to differentiate")
    c.add_argument(
        "--wrt",
        required=True,
        metavar="W1,W2",
        type=_names,
        help="comma-separated names of the nodes to differentiate with respect to",
    )
    c.add_argument("-o", "--output", required=True, metavar="OUT", help="where to save the graph with gradients")
    c.add_argument(
        "--disconnected",
        choices=("raise", "zero"),
        default="raise",
        help="a target J does not depend on: an error (default) or a zeros gradient",
    )
    c.set_defaults(func=_cmd_grad)


def _add_export(sub) -> None:
    """The `export` command."""
    c = sub.add_parser(
        "export",
        help="print a node as a SymPy expression or LaTeX",
        description="Print a node of a graph file as a formula in the graph's leaves; "
        "gradients come out in the textbook's closed form.",
    )
    c.add_argument("file", metavar="FILE", help="a graph file written by graph.save")
    c.add_argument("--node", required=True, metavar="NAME", help="the node to export, e.g. dJ/dW2")
    c.add_argument("--latex", action="store_true", help="print LaTeX instead of the SymPy expression")
    c.add_argument(
        "--expand",
        action="store_true",
        help="write everything in the graph's leaves instead of keeping named intermediates (dJ/do, h) as symbols",
    )
    c.add_argument(
        "--derivation",
        action="store_true",
        help="print the backward pass that computes the gradient node(s) of --node (comma-separated), "
        "one equation per step, in the order backprop computes them",
    )
    c.set_defaults(func=_cmd_export)


def _add_run(sub) -> None:
    """The `run` command."""
    c = sub.add_parser(
        "run",
        help="compile a graph file and run it on .npy feeds",
        description="Compile the graph's outputs and run them once. Inputs are fed from .npy "
        "files; parameters use the values stored in the file unless fed.",
    )
    c.add_argument("file", metavar="FILE", help="a graph file written by graph.save")
    c.add_argument(
        "--feed",
        action="append",
        default=[],
        metavar="NAME=FILE.npy",
        type=_feed,
        help="feed a node from a .npy file (repeat for each input)",
    )
    c.add_argument(
        "--fetch",
        type=_names,
        metavar="A,B",
        help="comma-separated nodes to compute (default: every node that no other node reads)",
    )
    c.add_argument("-o", "--output", metavar="OUT.npz", help="also save the results, by node name, to OUT.npz")
    c.add_argument("--nan-check", action="store_true", help="stop at the first step producing NaN or infinity")
    _add_max_seconds(c)
    c.set_defaults(func=_cmd_run)


def _add_max_seconds(c) -> None:
    c.add_argument(
        "--max-seconds",
        type=_seconds,
        default=MAX_SECONDS,
        metavar="S",
        help=f"stop the run with an error after S seconds (default {MAX_SECONDS:g}: a graph file may hold a loop "
        "that never ends); 0 or none: no limit",
    )


def _add_explore(sub) -> None:
    """The `explore` command."""
    c = sub.add_parser(
        "explore",
        help="write an interactive HTML page of a graph file (click nodes, step through build_grad)",
        description="Write one self-contained HTML page (no network needed): "
        "the forward and backward graph, each node's op, shape, origin edge, formula and (with "
        "--feed) value, and a stepper through build_grad's sweep (Algorithm 6.6).",
    )
    c.add_argument("file", metavar="FILE", help="a graph file written by graph.save")
    c.add_argument("-o", "--output", required=True, metavar="OUT.html", help="the page to write")
    c.add_argument(
        "--feed",
        action="append",
        default=[],
        metavar="NAME=FILE.npy",
        type=_feed,
        help="feed an input from a .npy file to show every node's value (repeat for each input)",
    )
    _add_max_seconds(c)
    c.set_defaults(func=_cmd_explore)


def _add_show(sub) -> None:
    """The `show` command."""
    c = sub.add_parser(
        "show",
        help="print a graph file as a listing, one node per line",
        description="Print the text form of a saved graph (what print(graph) shows).",
    )
    c.add_argument("file", metavar="FILE", help="a graph file written by graph.save")
    c.set_defaults(func=_cmd_show)


# -- the commands ---------------------------------------------------------------------------------------


def _cmd_demo(args) -> int:
    if args.model == "lenet":
        from .demo_lenet import run_lenet_demo

        run_lenet_demo(args.out, epochs=args.epochs or 15, seed=args.seed, progress=not args.no_progress)
        return 0
    from .demo import run_demo

    run_demo(args.out, epochs=args.epochs or 30, hidden=args.hidden, seed=args.seed, progress=not args.no_progress)
    return 0


def _cmd_render(args) -> int:
    out = Path(args.output)
    if out.suffix.lower() not in PICTURE_SUFFIXES:
        raise CommandError(
            f"cannot tell the picture format from {str(out)!r}; end the name in {', '.join(PICTURE_SUFFIXES)}"
        )
    graph = _load(args.file)
    from .viz import render
    import graphviz

    try:
        render(graph, out, show=args.show)
    except graphviz.ExecutableNotFound:
        raise CommandError(
            "Graphviz's `dot` program is not installed; install it (apt-get install graphviz, "
            "brew install graphviz) or write OUT.dot, which needs no Graphviz"
        ) from None
    print(f"wrote {out}")
    return 0


def _cmd_grad(args) -> int:
    from .autodiff import build_grad

    graph = _load(args.file)
    z = _node(graph, args.of, args.file)
    targets = [_node(graph, name, args.file) for name in args.wrt]
    grads = build_grad(z, targets, disconnected=args.disconnected)
    graph.save(args.output)
    for t in targets:
        d = grads[t]
        print(f"{escape(d.name)}  {d.op.name}  {fmt_shape(d.shape)}  {d.dtype}")
    print(f"wrote {args.output} ({len(graph)} nodes)")
    return 0


def _cmd_export(args) -> int:
    from . import symbolic

    graph = _load(args.file)
    if args.derivation:
        try:
            names = _names(args.node)
        except argparse.ArgumentTypeError as e:
            raise CommandError(f"--node: {e}") from None
        nodes = [_node(graph, name, args.file) for name in names]
        not_grads = [n.name for n in nodes if not n.is_gradient]
        if not_grads:
            raise CommandError(
                f"--derivation takes gradient nodes (made by build_grad or `{PROG} grad`); "
                f"{', '.join(repr(n) for n in not_grads)} is not one"
            )
        d = symbolic.derivation(nodes)
        print(escape(d.latex if args.latex else str(d), keep="\n"))
        return 0
    node = _node(graph, args.node, args.file)
    form: Literal["leaves", "textbook"] = "leaves" if args.expand else "textbook"
    print(
        escape(symbolic.to_latex(node, form=form) if args.latex else str(symbolic.to_sympy(node, form=form)), keep="\n")
    )
    return 0


def _cmd_run(args) -> int:
    from .compiler import compile

    graph = _load(args.file)
    feeds = {}
    for name, path in args.feed:
        node = _node(graph, name, args.file)
        feeds[node] = _load_npy(path, name)
    if args.fetch:
        outputs = [_node(graph, name, args.file) for name in args.fetch]
    else:
        outputs = [n for n in graph.nodes if not graph.consumers(n) and n.inputs]
        if not outputs:
            raise CommandError(f"{args.file} has no computed node to run; name one with --fetch")
    program = compile(outputs, nan_check=args.nan_check)
    fed = set(feeds)
    missing = [n for n in program.nodes if n.op.name == "input" and n not in fed]
    if missing:
        raise CommandError(
            "; ".join(
                f"input {n.name!r} (shape {fmt_shape(n.shape)}, {n.dtype}) is not fed: add --feed {n.name}=FILE.npy"
                for n in missing
            )
        )
    values = program.run(feeds, max_seconds=args.max_seconds)
    with np.printoptions(precision=6, suppress=True, threshold=50, edgeitems=3, linewidth=100):
        for node, value in zip(outputs, values):
            body = np.array2string(np.asarray(value), prefix="  ")
            sep = "\n  " if "\n" in body or value.ndim > 1 else " "
            print(f"{escape(node.name)} {fmt_shape(np.shape(value))} {value.dtype}:{sep}{body}")
    if args.output:
        arrays: dict[str, Any] = {n.name: v for n, v in zip(outputs, values)}
        np.savez(args.output, **arrays)
        print(f"wrote {args.output}")
    return 0


def _cmd_explore(args) -> int:
    from .explore import explore

    graph = _load(args.file)
    feeds = {_node(graph, name, args.file): _load_npy(path, name) for name, path in args.feed}
    with time_budget(args.max_seconds):  # computing the values runs the file's loops
        explore(graph, args.output, values=feeds or None)
    print(f"wrote {args.output}")
    return 0


def _cmd_show(args) -> int:
    graph = _load(args.file)
    print(escape(str(graph), keep="\n"))  # str(graph) escapes each name; this keeps only its own newlines
    return 0


# -- helpers --------------------------------------------------------------------------------------------


def _load(path: str):
    if not Path(path).is_file():
        raise CommandError(f"{path}: no such graph file" if not Path(path).exists() else f"{path} is not a file")
    from .io import load

    return load(path)


def _node(graph, name: str, path: str):
    if name not in graph:
        from .graph import _unknown_name

        raise CommandError(f"{_unknown_name(graph, name)} (in {path}); `{PROG} show {path}` lists its nodes")
    return graph[name]


def _load_npy(path: str, name: str) -> np.ndarray:
    """The array of a .npy feed file, checked before anything is allocated: a regular file (a FIFO or a device
    would block or never end), a header of numbers (never unpickled) whose shape and dtype account for exactly
    the bytes that follow it (a header claiming 10**12 rows is refused, not allocated)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise FeedError(
                f"feed {name!r}: {path!r} is not a regular file (a FIFO, a device or a folder); "
                "feed an array saved with np.save"
            )
        # O_NONBLOCK: should the path become a FIFO after the check, opening it does not wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise CommandError(f"feed {name!r}: no such file {path!r}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise FeedError(f"feed {name!r}: {path!r} is not a regular file; feed an array saved with np.save")
        shape, dtype = _npy_header(f, path, name)
        data = st.st_size - f.tell()
        need = math.prod(shape) * dtype.itemsize
        if need != data:
            raise FeedError(
                f"feed {name!r}: {path!r}'s header says shape {fmt_shape(shape)}, {dtype} ({need} bytes of data) "
                f"but {data} bytes follow it (a truncated or corrupted file); save the array again with np.save"
            )
        f.seek(0)
        try:
            return np.lib.format.read_array(f, allow_pickle=False)  # never unpickle: a feed file is data only
        except ValueError as e:
            raise FeedError(f"feed {name!r}: {path!r} is not a .npy array of numbers ({_one_line(e)})") from None


def _npy_header(f, path: str, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of the .npy header at the start of f, checked: a .npy file of numbers (no objects)."""
    head = f.read(6)
    if head.startswith(b"PK"):
        raise FeedError(f"feed {name!r}: {path!r} holds several arrays (an .npz); save one array with np.save")
    if head != b"\x93NUMPY":
        raise FeedError(f"feed {name!r}: {path!r} is not a .npy file (no NumPy header); save the array with np.save")
    f.seek(0)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"format version {version[0]}.{version[1]} is not 1.0 or 2.0")
    except ValueError as e:
        raise FeedError(f"feed {name!r}: {path!r} has a bad .npy header ({_one_line(e)})") from None
    if dtype.hasobject:
        raise FeedError(
            f"feed {name!r}: {path!r} holds Python objects ({dtype}); a feed is an array of numbers "
            "(object arrays are never unpickled)"
        )
    return tuple(shape), dtype


def _names(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of node names (e.g. W1,W2)")
    return names


def _feed(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=FILE.npy (e.g. --feed x=x.npy)")
    return name, path


def _seconds(text: str) -> float | None:
    """--max-seconds: a positive number of seconds; 0 or none: no limit."""
    if text.strip().lower() in ("0", "none", "0.0"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (or 0/none: no limit)") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds (or 0/none: no limit)")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return value


def _one_line(e: BaseException) -> str:
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        msg = f"{e.filename}: {e.strerror}"
    return " ".join(str(msg).split()) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
