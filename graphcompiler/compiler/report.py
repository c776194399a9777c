"""memory_report: the buffer plan of a program's last run, as a table a user can read and a plot.

For each value: its buffer, its bytes, its live range (first and last step), whether it is a forward value
kept for the backward pass and which gradient steps read it, or a recomputation. Then the buffers, the peak
and the step where it happens, and the peak of the declared order for comparison with the schedule's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..graph import Node
from .ir import value_inputs
from .memory import BufferPlan, live_value_bytes


@dataclass
class MemoryRow:
    """One value of the plan."""

    name: str
    op: str
    phase: str  # "forward", "backward" or "recomputed"
    kind: str  # "buffer", "view", "fresh" (allocated by its kernel) or "output"
    buffer: int | None
    nbytes: int
    first: int
    last: int
    kept_for: list[str] = field(default_factory=list)  # gradient steps that read this forward value


@dataclass
class MemoryReport:
    """What `program.memory_report()` returns: str() is the table, .plot(path) draws live bytes per step."""

    program_name: str
    rows: list[MemoryRow]
    buffers: list[tuple[int, int, list[str]]]  # (id, bytes, values using it)
    live: list[int]  # bytes held after each step (buffers + allocated)
    phases: list[str]  # phase of each step
    step_names: list[str]
    peak_bytes: int
    peak_step: int
    resident_bytes: int
    declared_peak_bytes: int | None = None  # the same steps in declared order
    budget: int | None = None
    unbudgeted_peak_bytes: int | None = None
    recomputed: int = 0
    values_live: list[int] = field(default_factory=list)  # bytes of the values live at each step

    @property
    def values_peak_bytes(self) -> int:
        return max(self.values_live, default=0)

    @property
    def values_peak_step(self) -> int:
        return self.values_live.index(self.values_peak_bytes) if self.values_live else 0

    @property
    def peak_node(self) -> str:
        return self.step_names[self.peak_step] if self.step_names else ""

    @property
    def kept_for_backward(self) -> list[MemoryRow]:
        return [r for r in self.rows if r.kept_for]

    def __str__(self) -> str:
        mib = _fmt
        lines = [
            f"Memory plan of {self.program_name}: peak {mib(self.peak_bytes)} after step {self.peak_step} "
            f"({self.peak_node}); buffers kept between runs {mib(self.resident_bytes)} in "
            f"{len(self.buffers)} buffers"
        ]
        if self.values_live:
            lines.append(
                f"  values live at once: at most {mib(self.values_peak_bytes)}, "
                f"at step {self.values_peak_step} ({self.step_names[self.values_peak_step]})"
            )
        if self.declared_peak_bytes is not None:
            lines.append(
                f"  peak in declared order {mib(self.declared_peak_bytes)}, after scheduling {mib(self.peak_bytes)}"
            )
        if self.budget is not None:
            lines.append(
                f"  memory_budget {mib(self.budget)}: unbudgeted peak {mib(self.unbudgeted_peak_bytes or 0)}, "
                f"{self.recomputed} steps recomputed"
            )
        heads = ("value", "op", "phase", "memory", "bytes", "first", "last", "kept for backward: read by")
        table = []
        for r in self.rows:
            where = (
                f"buf {r.buffer}"
                if r.kind == "buffer"
                else f"view of buf {r.buffer}"
                if r.kind == "view" and r.buffer is not None
                else r.kind
            )
            table.append(
                (r.name, r.op, r.phase, where, _fmt(r.nbytes), str(r.first), str(r.last), ", ".join(r.kept_for))
            )
        widths = [max(len(h), *(len(t[c]) for t in table)) if table else len(h) for c, h in enumerate(heads)]
        lines.append("  " + "  ".join(h.ljust(w) for h, w in zip(heads, widths)).rstrip())
        for t in table:
            lines.append("  " + "  ".join(x.ljust(w) for x, w in zip(t, widths)).rstrip())
        lines.append("  buffers:")
        for b, size, names in self.buffers:
            lines.append(f"    buf {b}: {_fmt(size)}, holds {', '.join(names)}")
        return "\n".join(lines)

    def plot(self, path) -> str:
        """Draw live bytes over the schedule, forward and backward steps in two colours; save to path."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        colours = {"forward": "#1f77b4", "backward": "#d62728", "recomputed": "#2ca02c"}
        fig, ax = plt.subplots(figsize=(8, 3.5))
        xs = list(range(len(self.live)))
        scale, unit = _unit(max(self.live + [self.budget or 0], default=1))
        vals = self.values_live or self.live
        for phase, c in colours.items():
            sel = [k for k in xs if self.phases[k] == phase]
            if sel:
                ax.bar(
                    sel,
                    [vals[k] / scale for k in sel],
                    width=1.0,
                    color=c,
                    alpha=0.6,
                    label=f"values live, {phase} step",
                )
        ax.step(
            xs,
            [v / scale for v in self.live],
            where="mid",
            color="0.2",
            lw=1.2,
            label="held by the program (buffers + allocated)",
        )
        ax.axhline(self.resident_bytes / scale, color="0.5", ls=":", lw=1, label="buffers kept between runs")
        if self.budget is not None:
            ax.axhline(self.budget / scale, color="k", ls="--", lw=1, label="memory budget")
        if self.live:
            ax.annotate(
                f"peak {_fmt(self.peak_bytes)}\n{self.peak_node}",
                (self.peak_step, self.peak_bytes / scale),
                textcoords="offset points",
                xytext=(5, -25),
                fontsize=8,
            )
        ax.set_xlabel("step of the schedule")
        ax.set_ylabel(f"live {unit}")
        ax.set_title(f"Memory of {self.program_name}")
        ax.set_ylim(0, max(self.live + [self.budget or 0], default=1) / scale * 1.35)
        ax.legend(fontsize=7, loc="upper left", ncol=2)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return str(path)

    def _repr_pretty_(self, p, cycle):
        p.text(str(self))


def build_report(
    program_name: str,
    plan: BufferPlan,
    source,
    recomputed: set[Node],
    *,
    declared_peak: int | None = None,
    budget=None,
    unbudgeted=None,
) -> MemoryReport:
    """The report of one plan; `source(node)` names the graph node a program node stands for."""
    order = plan.order

    def phase(n: Node) -> str:
        return "recomputed" if n in recomputed else "backward" if n.is_gradient else "forward"

    rows, by_buffer = _rows(plan, recomputed, phase)
    buffers = [(b, size * dt.itemsize, by_buffer.get(b, [])) for b, (size, dt) in enumerate(plan.buffers)]
    return MemoryReport(
        program_name,
        rows,
        buffers,
        list(plan.live),
        [phase(n) for n in order],
        [n.name for n in order],
        plan.peak_bytes,
        plan.peak_step,
        plan.resident_bytes,
        declared_peak,
        budget,
        unbudgeted,
        len(recomputed),
        live_value_bytes(plan),
    )


def _rows(plan: BufferPlan, recomputed: set[Node], phase) -> tuple[list[MemoryRow], dict[int, list[str]]]:
    """One MemoryRow per step (with the backward steps a forward value is kept for), and the names of the
    values each buffer holds."""
    order = plan.order
    readers: dict[Node, list[Node]] = {}
    for n in order:
        for x in value_inputs(n):
            readers.setdefault(x, []).append(n)
    rows = []
    by_buffer: dict[int, list[str]] = {}
    for n in order:
        v = plan.values[n]
        kept = []
        if not n.is_gradient and n not in recomputed:
            kept = [r.name for r in readers.get(n, ()) if r.is_gradient and r not in recomputed]
        kind = "output" if v.last >= len(order) and v.kind == "fresh" else v.kind
        rows.append(
            MemoryRow(
                n.name,
                n.op.name,
                phase(n),
                kind,
                v.buffer,
                v.nbytes,
                v.first,
                min(v.last, len(order) - 1) if v.last >= len(order) else v.last,
                kept,
            )
        )
        if v.kind == "buffer":
            assert v.buffer is not None  # the plan gives every buffer value its buffer
            by_buffer.setdefault(v.buffer, []).append(n.name)
    return rows, by_buffer


def _unit(x: float) -> tuple[float, str]:
    for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if x >= scale:
            return scale, unit
    return 1, "bytes"


def _fmt(n: int) -> str:
    scale, unit = _unit(n)
    return f"{n} B" if scale == 1 else f"{n / scale:.2f} {unit}"
