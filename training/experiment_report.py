"""An experiment's report: ``experiment.md`` with the table of arms (mean and 95% interval over
seeds, paired tests against ``base`` and ``uniform_sft``) and three plots: accuracy per arm,
accuracy against the budget spent, and per-topic lift against how often the teacher targeted
the topic. Everything shown comes from ``summarize_experiment``; nothing here computes."""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

from pydantic import BaseModel

from teachloop.training.comparison import ExperimentSummary
from teachloop.training.report import figure

ARMS_PNG = "experiment_arms.png"
BUDGET_PNG = "experiment_budget.png"
TARGETING_PNG = "experiment_targeting.png"


def write_experiment_report(summary: ExperimentSummary, out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    targeted = False
    for name in PLOTS:
        png = plot_png(summary, name)
        if png is not None:
            (out_dir / name).write_bytes(png)
            targeted |= name == TARGETING_PNG
    path = out_dir / f"experiment-{summary.experiment}.md"
    path.write_text(render_markdown(summary, images=True, targeting_plot=targeted))
    return path


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _p(p: float) -> str:
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


class TextTable(BaseModel):
    """A table of formatted cells: the report writes it as Markdown, the viewer as HTML."""

    title: str
    note: str
    header: list[str]
    rows: list[list[str]]


def arms_table(summary: ExperimentSummary) -> TextTable:
    seeds = ", ".join(str(s) for s in summary.seeds)
    rows = []
    for arm in summary.arms:
        cells = [
            arm.arm,
            arm.data,
            arm.method or "-",
            _pct(arm.accuracy.mean)
            if arm.seeds < 2  # one seed: no interval over seeds (the paired tests still hold)
            else f"{_pct(arm.accuracy.mean)} [{_pct(arm.accuracy.low)}, {_pct(arm.accuracy.high)}]",
        ]
        for reference in ("base", "uniform_sft"):
            c = summary.comparison(arm.arm, reference)
            cells.append(
                "-"
                if c is None
                else f"{100 * c.mcnemar.difference:+.1f} ({_p(c.mcnemar.p_value)}, {_p(c.p_holm)})"
            )
        cells += [
            f"{arm.examples:.0f}",
            f"{arm.steps:.0f}",
            f"{arm.teacher_tokens:.0f}",
            f"{arm.data_wall_s:.0f}",
            f"{arm.train_wall_s:.0f}",
        ]
        rows.append(cells)
    return TextTable(
        title=f"Experiment `{summary.experiment}`",
        note=f"Seeds: {seeds}. Held-out accuracy in %, mean over seeds with a 95% t-interval; "
        "differences are pooled over seeds on identical questions (arm minus reference), "
        "p from an exact McNemar test, Holm-adjusted over the comparisons of one topic.",
        header=[
            *("arm", "data", "method", "accuracy % [95% CI]", "vs base: diff (p, p Holm)"),
            *("vs uniform_sft: diff (p, p Holm)", "examples", "steps", "teacher tokens"),
            *("data s", "train s"),
        ],
        rows=rows,
    )


def topics_table(summary: ExperimentSummary) -> TextTable | None:
    topics = sorted({t for a in summary.arms for t in a.topics})
    if not topics:
        return None
    rows = []
    for arm in summary.arms:
        cells = [arm.arm]
        for t in topics:
            text = _pct(arm.topics[t].mean) if t in arm.topics else "-"
            c = summary.comparison(arm.arm, "base", t)
            if c is not None:
                text += f" ({100 * c.mcnemar.difference:+.1f}, p {_p(c.p_holm)})"
            cells.append(text)
        rows.append(cells)
    return TextTable(
        title="Per topic",
        note="Accuracy % (mean over seeds), and the difference against base pooled over seeds "
        "with its Holm-adjusted p.",
        header=["arm", *topics],
        rows=rows,
    )


def targeting_table(summary: ExperimentSummary) -> TextTable | None:
    if not summary.targeting:
        return None
    arms = [a.arm for a in summary.arms if a.arm != "base"]
    rows = []
    for t in summary.targeting:
        lifts = [f"{100 * t.lift[a]:+.1f}" if a in t.lift else "-" for a in arms]
        rows.append([t.topic, _pct(t.share.mean), *lifts])
    return TextTable(
        title="Targeting",
        note="Share of the selective lessons' questions per topic (mean over seeds) and each "
        "arm's lift over base on that topic (points).",
        header=["topic", "share %", *arms],
        rows=rows,
    )


def _markdown_rows(table: TextTable) -> list[str]:
    lines = ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in table.rows]


def render_markdown(
    summary: ExperimentSummary, *, images: bool = False, targeting_plot: bool = False
) -> str:
    arms = arms_table(summary)
    lines = [f"# {arms.title}", "", arms.note, "", *_markdown_rows(arms)]
    for table in (topics_table(summary), targeting_table(summary)):
        if table is not None:
            lines += ["", f"## {table.title}", "", table.note, "", *_markdown_rows(table)]
    if images:
        lines += ["", f"![accuracy per arm]({ARMS_PNG})", "", f"![budget]({BUDGET_PNG})"]
        if targeting_plot:
            lines += ["", f"![targeting]({TARGETING_PNG})"]
    return "\n".join(lines) + "\n"


def _plot_arms(summary: ExperimentSummary, out: BinaryIO) -> None:
    fig = figure(max(6.0, 1.1 * len(summary.arms) + 2), 4.0)
    ax = fig.add_subplot()
    xs = range(len(summary.arms))
    means = [a.accuracy.mean for a in summary.arms]
    errors = [
        [a.accuracy.mean - a.accuracy.low for a in summary.arms],
        [a.accuracy.high - a.accuracy.mean for a in summary.arms],
    ]
    ax.bar(xs, means, yerr=errors, capsize=4, color="C0", alpha=0.8)
    ax.set_xticks(list(xs), [a.arm for a in summary.arms], rotation=20, ha="right")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, min(1.0, max(a.accuracy.high for a in summary.arms) * 1.2 + 0.05))
    ax.set_title(f"{summary.experiment}: accuracy per arm (95% interval over seeds)")
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(out, format="png")


def _plot_budget(summary: ExperimentSummary, out: BinaryIO) -> None:
    fig = figure(10.0, 4.0)
    for i, (attr, label) in enumerate(
        (("teacher_tokens", "teacher tokens spent on the data"), ("train_wall_s", "training s"))
    ):
        ax = fig.add_subplot(1, 2, i + 1)
        for j, arm in enumerate(summary.arms):
            ax.errorbar(
                getattr(arm, attr),
                arm.accuracy.mean,
                yerr=[
                    [arm.accuracy.mean - arm.accuracy.low],
                    [arm.accuracy.high - arm.accuracy.mean],
                ],
                fmt="o",
                color=f"C{j % 10}",
                label=arm.arm,
                capsize=3,
            )
        ax.set_xlabel(label)
        ax.set_ylabel("held-out accuracy")
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize="small")
    fig.suptitle(f"{summary.experiment}: accuracy against budget")
    fig.savefig(out, format="png")


def _plot_targeting(summary: ExperimentSummary, out: BinaryIO) -> None:
    fig = figure(8.0, 4.0)
    ax = fig.add_subplot()
    arms = [a.arm for a in summary.arms if a.arm != "base"]
    for j, arm in enumerate(arms):
        points = [(t.share.mean, t.lift[arm]) for t in summary.targeting if arm in t.lift]
        if points:
            ax.scatter(*zip(*points, strict=True), label=arm, color=f"C{j % 10}")
    for t in summary.targeting:
        ax.annotate(t.topic, (t.share.mean, 0), fontsize="x-small", rotation=30, alpha=0.6)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("share of selective lessons' questions on the topic")
    ax.set_ylabel("lift over base on the topic (accuracy)")
    ax.set_title("Per-topic lift against targeting")
    # Outside the axes: inside, it hides the points and the topic labels.
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    fig.savefig(out, format="png")


# The experiment's plots by file name: `write_experiment_report` writes them, `teachloop view`
# serves them (`plot_png`).
PLOTS: dict[str, Callable[[ExperimentSummary, BinaryIO], None]] = {
    ARMS_PNG: _plot_arms,
    BUDGET_PNG: _plot_budget,
    TARGETING_PNG: _plot_targeting,
}


def plot_png(summary: ExperimentSummary, name: str) -> bytes | None:
    """One of ``PLOTS`` as PNG bytes; None for the targeting plot of an experiment without
    selective lessons to read it from."""
    if name == TARGETING_PNG and not summary.targeting:
        return None
    buffer = BytesIO()
    PLOTS[name](summary, buffer)
    return buffer.getvalue()
