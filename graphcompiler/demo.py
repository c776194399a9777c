"""`graphcompiler demo`: the D2L MLP trained on scikit-learn's bundled digits, end to end, with its pictures.

The job of the whole package in one run: declare the one-hidden-layer MLP of D2L (relu, softmax cross-entropy,
l2 weight decay), check build_grad's gradients against central differences, compile a training step whose
`updates` apply SGD, train on the 8x8 handwritten digits that ship with scikit-learn (no download), and write
the forward and backward pictures, the derivation of the gradients, the memory report and the loss curve.
The pieces both demos use (Model, the gradient check, train_sgd, the files) live here; demo_lenet imports them.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from .autodiff import build_grad
from .compiler import compile
from .errors import GraphCompilerError
from .graph import Graph, Node
from .ops import add, matmul, multiply, relu, softmax_cross_entropy, sum

if TYPE_CHECKING:
    from .compiler.program import Program
    from .compiler.report import MemoryReport


@dataclass
class Model:
    """A demo's network: its graph, the inputs x (the images) and y (their labels), the logits o, the cost J, the
    parameters and build_grad's dJ/dp of each."""

    graph: Graph
    x: Node
    y: Node
    params: list[Node]
    o: Node
    J: Node
    grads: dict[Node, Node]


@dataclass
class MLP(Model):
    """The demo's model: z = x W1, h = relu(z), o = h W2, L = l(o, y), s = lambda/2 (|W1|^2 + |W2|^2), J = L + s."""

    @property
    def W1(self) -> Node:
        return self.params[0]

    @property
    def W2(self) -> Node:
        return self.params[1]


def build_mlp(n_in: int, n_hidden: int, n_out: int, *, lam: float = 1e-4, seed: int = 0) -> MLP:
    """Declare the D2L MLP in design-matrix form (Goodfellow 6.5.7: H = max(0, X W1)) and add its gradients."""
    rng = np.random.default_rng(seed)
    g = Graph("d2l_mlp")
    x = g.input("x", shape=(None, n_in))
    y = g.input("y", shape=(None,), dtype="int64")
    # He initialisation for the relu layer; 1/sqrt(fan-in) for the output layer
    W1 = g.parameter("W1", rng.normal(0.0, np.sqrt(2.0 / n_in), (n_in, n_hidden)))
    W2 = g.parameter("W2", rng.normal(0.0, np.sqrt(1.0 / n_hidden), (n_hidden, n_out)))
    lam_node = g.constant(lam, name="lambda")
    z = matmul(x, W1, name="z")
    h = relu(z, name="h")
    o = matmul(h, W2, name="o")
    L = softmax_cross_entropy(o, y, name="L")
    s = multiply(lam_node / 2, sum(W1 * W1) + sum(W2 * W2), name="s")
    J = add(L, s, name="J")
    grads = build_grad(J, [W1, W2])  # Algorithms 6.5/6.6: dJ/dW1, dJ/dW2 added to g
    return MLP(g, x, y, [W1, W2], o, J, grads)


def load_digits_split(seed: int = 0, test_fraction: float = 0.2):
    """scikit-learn's bundled 8x8 digits (1,797 images, no download), scaled to [0, 1], stratified split."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise GraphCompilerError(
            "the demo needs scikit-learn, Matplotlib and tqdm, the `demo` extra: "
            "pip install 'graphcompiler[demo]' (make demo installs it)"
        ) from None
    data = load_digits()
    X = (data.data / 16.0).astype(np.float64)
    y = data.target.astype(np.int64)
    return train_test_split(X, y, test_size=test_fraction, random_state=seed, stratify=y)


# -- the gradient check ---------------------------------------------------------------------------------


@dataclass
class GradCheck:
    """build_grad's gradients against central differences on a few entries of each parameter."""

    entries: list[tuple[str, tuple[int, ...], float, float]]  # (parameter, index, symbolic, numeric)

    @property
    def max_rel_error(self) -> float:
        return max(abs(a - b) / max(1e-8, abs(a) + abs(b)) for _, _, a, b in self.entries)

    def __str__(self) -> str:
        names = sorted({p for p, *_ in self.entries})
        return (
            f"gradient check: {len(self.entries)} entries of "
            f"{', '.join('dJ/d' + n for n in names)} agree with central differences "
            f"(max relative error {self.max_rel_error:.1e})"
        )


def gradient_check(
    mlp: MLP, X: np.ndarray, y: np.ndarray, *, per_param: int = 3, eps: float = 1e-4, seed: int = 0
) -> GradCheck:
    """Compare a few entries of dJ/dW (the compiled gradient nodes) with (J(W + eps) - J(W - eps)) / 2 eps."""
    return central_differences(mlp, {"x": X, "y": y}, per_param, eps, seed)


def central_differences(model: Model, feeds: dict, per_param: int, eps: float, seed: int) -> GradCheck:
    """`per_param` random entries of each compiled dJ/dp against (J(p + eps) - J(p - eps)) / 2 eps."""
    rng = np.random.default_rng(seed)
    symbolic = compile([model.grads[p] for p in model.params]).run(feeds)
    cost = compile([model.J])
    entries = []
    for p, grad in zip(model.params, symbolic):
        value = np.array(model.graph.value(p))
        for _ in range(per_param):
            idx = tuple(int(rng.integers(n)) for n in p.shape)
            plus, minus = value.copy(), value.copy()
            plus[idx] += eps
            minus[idx] -= eps
            j_plus = float(cost.run({**feeds, p: plus})[0])
            j_minus = float(cost.run({**feeds, p: minus})[0])
            entries.append((p.name, idx, float(grad[idx]), (j_plus - j_minus) / (2 * eps)))
    return GradCheck(entries)


def _accepted(check: GradCheck, log: Callable[[str], None]) -> GradCheck:
    """A demo goes on only when build_grad's gradients agree with central differences; the check is logged."""
    if check.max_rel_error > 1e-4:
        raise GraphCompilerError(f"{check}: that is too large; the derivative rules or the evaluator are wrong")
    log(str(check))
    return check


# -- the demo -------------------------------------------------------------------------------------------


@dataclass
class DemoResult:
    """What a demo run produced: the figures a reader checks and the files it wrote."""

    out: Path
    grad_check: GradCheck
    losses: list[float]  # mean training loss J per epoch
    accuracies: list[float]  # held-out accuracy per epoch
    train_seconds: float
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.accuracies[-1]


def run_demo(
    out: str | Path = "demo-output",
    *,
    epochs: int = 30,
    hidden: int = 128,
    batch: int = 32,
    lr: float = 0.2,
    lam: float = 1e-4,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Train the D2L MLP on the digits and write its pictures, derivation, memory report and loss curve to `out`."""
    t_start, out = time.perf_counter(), _output_folder(out)
    X_train, X_test, y_train, y_test = load_digits_split(seed)
    n_classes = int(y_train.max()) + 1
    mlp = build_mlp(X_train.shape[1], hidden, n_classes, lam=lam, seed=seed)

    check = _accepted(gradient_check(mlp, X_train[:16], y_train[:16], seed=seed), log)
    log(
        f"data: scikit-learn digits, {len(X_train)} training and {len(X_test)} held-out images of "
        f"{X_train.shape[1]} pixels, {n_classes} classes"
    )
    log(
        f"model: {mlp.graph.name}, {X_train.shape[1]}-{hidden}-{n_classes} relu MLP, softmax cross-entropy, "
        f"weight decay lambda={lam:g}; {len(mlp.graph)} nodes after build_grad"
    )
    data = (X_train, y_train, X_test, y_test)
    result, train = train_sgd(
        mlp, check, data, out, epochs=epochs, batch=batch, lr=lr, seed=seed, progress=progress, log=log
    )
    batch_feed = {"x": X_train[:batch], "y": y_train[:batch]}
    _write_graph_file(mlp, hidden, lam, seed, out, result)
    _save_held_out(result, X_test, y_test, "x_test.npy", "held-out images x, to feed with graphcompiler run")
    _write_pictures(mlp.graph, out / "mlp", result, ("forward graph", "backward graph (build_grad's subgraph B)"))
    _write_explorer(mlp, batch_feed, out, result)
    _write_derivation(mlp, out, result)
    _write_memory(mlp, train, batch_feed, out, result)
    _write_loss_curve(result, out / "loss_curve.png")
    _finish(result, t_start, epochs, log, f"graphcompiler export {out / 'd2l_mlp.json'} --node dJ/dW2")
    return result


# -- what both demos do -----------------------------------------------------------------------------------


def _output_folder(out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def train_sgd(
    model: Model,
    check: GradCheck,
    data: tuple,
    out: Path,
    *,
    epochs: int,
    batch: int,
    lr: float,
    seed: int,
    progress: bool,
    log: Callable[[str], None],
    one_blas_thread: bool = False,
) -> tuple[DemoResult, Program]:
    """Compile one SGD step of `model` and its prediction, and train it on `data` (train_epochs): the result
    so far, and the training step (for its memory report). `one_blas_thread`: small matmuls, where BLAS
    threads only contend."""
    result = DemoResult(out, check, [], [], 0.0, 0.0)
    # one SGD step: J is returned, p <- p - lr dJ/dp is applied in place after the run (API section 3)
    train = compile([model.J], updates={p: p - lr * model.grads[p] for p in model.params})
    predict = compile([model.o])
    log(f"training step: {train.stats['nodes_out']} steps compiled from {train.stats['nodes_in']} graph nodes")
    with _one_blas_thread() if one_blas_thread else contextlib.nullcontext():
        train_epochs(result, train, predict, data, epochs, batch, seed, progress, log)
    return result, train


def _one_blas_thread():
    """Limit BLAS to one thread while training (threadpoolctl comes with scikit-learn); a no-op without it."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(1)


def train_epochs(
    result: DemoResult,
    train,
    predict,
    data: tuple,
    epochs: int,
    batch: int,
    seed: int,
    progress: bool,
    log: Callable[[str], None],
) -> None:
    """SGD over shuffled minibatches: `train` runs one step (returning J, applying its updates), `predict`
    gives the held-out logits; each epoch's mean loss and held-out accuracy go into result, one line each."""
    X_train, y_train, X_test, y_test = data
    rng = np.random.default_rng(seed)
    bar = _progress(range(1, epochs + 1), enabled=progress)
    t_train = time.perf_counter()
    for epoch in bar:
        order = rng.permutation(len(X_train))
        total = 0.0
        for k in range(0, len(order), batch):
            idx = order[k : k + batch]
            (J_val,) = train.run({"x": X_train[idx], "y": y_train[idx]})
            total += float(J_val) * len(idx)
        result.losses.append(total / len(order))
        (logits,) = predict.run({"x": X_test})
        result.accuracies.append(float(np.mean(np.argmax(logits, axis=1) == y_test)))
        loss, acc = result.losses[-1], result.accuracies[-1]
        line = f"epoch {epoch:2d}/{epochs}: loss {loss:.4f}, held-out accuracy {acc:.1%}"
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(f"loss {loss:.4f} acc {acc:.1%}")
            bar.write(line)
        else:
            log(line)
    result.train_seconds = time.perf_counter() - t_train


def _finish(result: DemoResult, t_start: float, epochs: int, log, hint: str) -> None:
    """The time the demo took, and its last lines: the training figures, every file written or skipped, a
    command to try next."""
    result.seconds = time.perf_counter() - t_start
    out = result.out
    log(
        f"trained {epochs} epochs in {result.train_seconds:.1f} s: final loss {result.losses[-1]:.4f}, "
        f"held-out accuracy {result.accuracy:.1%}"
    )
    log(f"wrote {len(result.files)} files to {out}/:")
    for what, path in result.files.items():
        log(f"  {path}  ({what})")
    for what, why in result.skipped.items():
        log(f"  skipped {what}: {why}")
    log(f"done in {result.seconds:.1f} s. Try: {hint}")


def _progress(epochs, enabled: bool):
    if not enabled:
        return epochs
    from tqdm import tqdm

    return tqdm(epochs, desc="training", unit="epoch", leave=False, disable=None)  # None: no bar in a log file


# -- the files ------------------------------------------------------------------------------------------


def _save_held_out(result: DemoResult, X_test: np.ndarray, y_test: np.ndarray, x_file: str, x_what: str) -> None:
    """The held-out images and labels, to feed to the saved graph with `graphcompiler run`."""
    np.save(result.out / x_file, X_test)
    np.save(result.out / "y_test.npy", y_test)
    result.files[x_what] = result.out / x_file
    result.files["held-out labels y"] = result.out / "y_test.npy"


def _one_step_memory(model: Model, train: Program, feed: dict) -> MemoryReport:
    """The training step's memory report for one run on `feed` (its shapes); that run's SGD update is undone."""
    saved = {p: np.array(model.graph.value(p)) for p in model.params}
    train.run(feed)
    for p, value in saved.items():
        model.graph.set_value(p, value)
    return train.memory_report()


def _save_memory(result: DemoResult, report: MemoryReport, text: str, prefix: str = "") -> None:
    """The memory report as text (`text`) and its plot of the live bytes over the training step."""
    (result.out / f"{prefix}memory_report.txt").write_text(text)
    report.plot(result.out / f"{prefix}memory.png")
    result.files["memory report"] = result.out / f"{prefix}memory_report.txt"
    result.files["live bytes over the training step"] = result.out / f"{prefix}memory.png"


def _write_graph_file(mlp: MLP, hidden: int, lam: float, seed: int, out: Path, result: DemoResult) -> None:
    """The trained model as a graph file: J and its gradients, without the training step's update nodes."""
    path = out / "d2l_mlp.json"
    clean = build_mlp(mlp.W1.shape[0], hidden, mlp.W2.shape[1], lam=lam, seed=seed)
    for p in ("W1", "W2"):
        clean.graph.set_value(p, mlp.graph.value(p))
    clean.graph.save(path)
    result.files["the graph with its gradients, for the graphcompiler command"] = path


def _write_pictures(graph: Graph, stem: Path, result: DemoResult, titles: tuple[str, str]) -> None:
    """The forward and the backward picture of a demo's graph: stem_forward.svg and stem_backward.svg."""
    import graphviz
    from .viz import render

    for show, what in zip(("forward", "backward"), titles):
        path = stem.parent / f"{stem.name}_{show}.svg"
        try:
            render(graph, path, show=show)
        except graphviz.ExecutableNotFound:
            result.skipped["pictures"] = "Graphviz's `dot` is not installed (apt-get install graphviz)"
            return
        result.files[what] = path


def _write_explorer(mlp: MLP, feed: dict, out: Path, result: DemoResult) -> None:
    """The interactive page of the MLP and its gradients, with the values of one minibatch (gc.explore)."""
    if "pictures" in result.skipped:  # no Graphviz: no picture to click through either
        result.skipped["explorer page"] = result.skipped["pictures"]
        return
    from .explore import explore

    path = out / "explorer.html"
    explore(mlp.graph, path, values=feed, title="D2L MLP: forward graph and build_grad's backward graph")
    result.files["interactive explorer page (open in a browser)"] = path


MODEL_TEXT = "z = x W1, h = relu(z), o = h W2, L = l(o, y), s = lambda/2 (|W1|^2 + |W2|^2), J = L + s"
MODEL_LATEX = (
    r"$z = x W_1$, $h = \operatorname{relu}(z)$, $o = h W_2$, $L = l(o, y)$, "
    r"$s = \frac{\lambda}{2}\left(\|W_1\|_F^2 + \|W_2\|_F^2\right)$, $J = L + s$"
)


def _write_derivation(mlp: MLP, out: Path, result: DemoResult) -> None:
    """The backward pass as equations, in the order backprop computes them (gc.derivation)."""
    from .symbolic import derivation

    d = derivation({p: mlp.grads[p] for p in (mlp.W1, mlp.W2)})
    (out / "derivation.txt").write_text(
        f"The backward pass of {MODEL_TEXT}, in the order backprop computes it (n: the batch size):\n\n{d}\n"
    )
    (out / "derivation.tex").write_text(
        "\\documentclass{article}\n\\usepackage{amsmath}\n\\begin{document}\n"
        f"The backward pass of {MODEL_LATEX}, in the order backprop computes it ($n$: the batch size):\n"
        f"{d.latex}\n\\end{{document}}\n"
    )
    result.files["derivation of the gradients (text)"] = out / "derivation.txt"
    result.files["derivation of the gradients (LaTeX)"] = out / "derivation.tex"


def _write_memory(mlp: MLP, train, feed: dict, out: Path, result: DemoResult) -> None:
    """Training against inference (D2L): the peak of the training step against that of the forward pass,
    then the training step's memory report (each value, its buffer, its live range, what backward keeps)."""
    infer = compile([mlp.J])
    infer.run(feed)
    report = _one_step_memory(mlp, train, feed)  # the report is for one full minibatch
    lines = [
        f"Memory of one step on a minibatch of {len(feed['y'])} (peak_bytes: the program's own buffers, "
        "not the feeds or the parameters)",
        f"  inference (J only):                   {infer.stats['peak_bytes']:>10,d} bytes",
        f"  training (J, dJ/dW1, dJ/dW2, update): {train.stats['peak_bytes']:>10,d} bytes",
        "",
        str(report),
    ]
    _save_memory(result, report, "\n".join(lines) + "\n")


def _write_loss_curve(result: DemoResult, path: Path, title: str = "D2L MLP on scikit-learn digits") -> None:
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg writes the PNG

    epochs = np.arange(1, len(result.losses) + 1)
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    ax.plot(epochs, result.losses, "o-", color="tab:blue", label="training loss J")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss J (cross-entropy + weight decay)")
    ax2 = ax.twinx()
    ax2.plot(epochs, result.accuracies, "s--", color="tab:orange", label="held-out accuracy")
    ax2.set_ylabel("held-out accuracy")
    ax2.set_ylim(0, 1)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [str(ln.get_label()) for ln in lines], loc="center right")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    result.files["loss curve"] = path
