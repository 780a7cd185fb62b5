"""An experiment's report: ``experiment-NAME.md`` and its plots, from ``summarize_experiment``.

In order: the pre-registered primary comparison, stated before any number (or that there is
none, so every comparison is exploratory), then its result (the mean per-seed paired difference
with its t-interval and p, the cluster-bootstrap interval, the number of seeds) and its seeds
one by one with McNemar's test; the arms (accuracy as the mean over seeds with a 95%
t-interval, and the budget); accuracy per topic and per difficulty with the paired difference
against the reference; the secondary comparisons with Holm-adjusted p, and their seeds; the
targeting table. Plots: accuracy per arm, the budget curve (accuracy against examples and
against teacher tokens, one line per arm without its ``@budget`` suffix), and per-topic lift
against the share of the arm's training examples on the topic. Everything shown comes from the
summary; nothing here computes statistics."""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

from pydantic import BaseModel

from teachloop.training.comparison import ArmSummary, Comparison, ExperimentSummary
from teachloop.training.report import figure
from teachloop.training.stats import Interval

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


# --- formatting -------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _points(x: float) -> str:
    return f"{100 * x:+.1f}"


def _p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def _range(low: float, high: float) -> str:
    return f"[{_points(low)}, {_points(high)}]"


def _accuracy(i: Interval) -> str:
    text = _pct(i.mean)
    return text if i.n < 2 else f"{text} [{_pct(i.low)}, {_pct(i.high)}]"


def _difference(i: Interval) -> str:
    text = _points(i.mean)
    return text if i.n < 2 else f"{text} [{_points(i.low)}, {_points(i.high)}]"


class TextTable(BaseModel):
    """A table of formatted cells: the report writes it as Markdown, the viewer as HTML. A
    table without rows is its note alone."""

    title: str
    note: str
    header: list[str]
    rows: list[list[str]]


# --- tables -----------------------------------------------------------------------------------


def _statement(summary: ExperimentSummary) -> str:
    if summary.primary is None:
        return (
            "No primary comparison was named in the design (`[experiment] primary`): every "
            "comparison in this report is exploratory."
        )
    arm, reference = summary.primary
    return (
        f"Pre-registered in the design (`[experiment] primary`): **{arm}** against "
        f"**{reference}**. The statistic is the per-seed paired difference (held-out accuracy "
        f"of {arm} minus {reference} on the seed's questions, which both answered), averaged "
        "over seeds: its 95% Student-t interval and two-sided t-test on seeds - 1 degrees of "
        "freedom, and a cluster bootstrap that resamples seeds and, within each, questions "
        "(the same questions for both arms). It is the one confirmatory test: unadjusted."
    )


def _comparison_cells(c: Comparison) -> list[str]:
    t, boot = c.paired.t, c.paired.bootstrap
    return [
        str(c.paired.seeds),
        _points(t.mean),
        _range(t.low, t.high) if t.n > 1 else "-",  # one seed: no interval over seeds
        _p(t.p_value),
        _range(boot.low, boot.high),
        _p(boot.p_value),
    ]


def primary_table(summary: ExperimentSummary) -> TextTable:
    rows = []
    note = _statement(summary)
    result = summary.primary_result
    if result is not None:
        rows.append([f"{result.arm} - {result.against}", *_comparison_cells(result)])
        note += (
            f" Differences in points; bootstrap: {summary.resamples:,} resamples, percentile "
            "interval."
        )
    elif summary.primary is not None:
        note += " Not computed yet: the two arms have no seed with results in common."
    return TextTable(
        title="Primary comparison",
        note=note,
        header=[
            *("comparison", "seeds", "difference", "95% t-interval", "p (t-test)"),
            *("cluster bootstrap 95%", "bootstrap p"),
        ],
        rows=rows,
    )


def primary_seeds_table(summary: ExperimentSummary) -> TextTable | None:
    result = summary.primary_result
    if result is None:
        return None
    rows = [
        [
            str(seed),
            str(m.n),
            _pct(m.accuracy_a),
            _pct(m.accuracy_b),
            _points(m.difference),
            str(m.b01),
            str(m.b10),
            _p(m.p_value),
        ]
        for seed, m in zip(result.seeds, result.paired.mcnemar, strict=True)
    ]
    return TextTable(
        title="Primary comparison per seed",
        note="Each seed's questions, paired: accuracy in %, the difference in points, how many "
        "questions only one of the two got right, and the exact McNemar test of that seed "
        "(secondary: one seed's questions, not a test over seeds).",
        header=[
            *("seed", "questions", f"{result.against} %", f"{result.arm} %", "difference"),
            *(f"only {result.arm} right", f"only {result.against} right", "McNemar p"),
        ],
        rows=rows,
    )


def arms_table(summary: ExperimentSummary) -> TextTable:
    seeds = ", ".join(str(s) for s in summary.seeds)
    rows = [
        [
            arm.arm,
            arm.data,
            arm.method or "-",
            arm.target,
            str(arm.seeds),
            _accuracy(arm.accuracy),
            f"{arm.examples:.0f}",
            f"{arm.steps:.0f}",
            f"{arm.teacher_tokens:.0f}",
            f"{arm.data_wall_s:.0f}",
            f"{arm.train_wall_s:.0f}",
            f"{arm.eval_wall_s:.0f}",
        ]
        for arm in summary.arms
    ]
    return TextTable(
        title="Arms",
        note=f"Seeds: {seeds}. Held-out accuracy in %, mean over seeds with a 95% t-interval "
        "(none with one seed); target: what the arm trained toward and answered in (the bare "
        "answer, or a worked solution with the work shown); the budget and the seconds (making the "
        "data, training, scoring the held-out split) as the mean over seeds.",
        header=[
            *("arm", "data", "method", "target", "seeds", "accuracy % [95% CI]", "examples"),
            "steps",
            *("teacher tokens", "data s", "train s", "eval s"),
        ],
        rows=rows,
    )


def _breakdown(summary: ExperimentSummary, by: str) -> TextTable | None:
    topics = by == "topic"
    cells = sorted(
        {c for a in summary.arms for c in (a.topics if topics else a.difficulties)},
        key=lambda c: (str(type(c)), c),
    )
    if not cells:
        return None
    rows = []
    for arm in summary.arms:
        accuracy = arm.topics if topics else arm.difficulties
        differences = arm.topic_differences if topics else arm.difficulty_differences
        row = [arm.arm]
        for c in cells:
            text = _pct(accuracy[c].mean) if c in accuracy else "-"
            if c in differences:
                text += f" ({_difference(differences[c])})"
            row.append(text)
        rows.append(row)
    against = (
        f"and the difference against {summary.reference} in points: the mean over seeds of the "
        "per-seed paired difference on the same questions, with its 95% t-interval"
        if summary.reference
        else "(no reference arm to take differences against)"
    )
    return TextTable(
        title="Per topic" if topics else "Per difficulty",
        note=f"Accuracy % (mean over seeds) {against}.",
        header=["arm", *(str(c) if topics else f"difficulty {c}" for c in cells)],
        rows=rows,
    )


def topics_table(summary: ExperimentSummary) -> TextTable | None:
    return _breakdown(summary, "topic")


def difficulties_table(summary: ExperimentSummary) -> TextTable | None:
    return _breakdown(summary, "difficulty")


def comparisons_table(summary: ExperimentSummary) -> TextTable | None:
    if not summary.comparisons:
        return None
    rows = [[c.arm, c.against, *_comparison_cells(c), _p(c.p_holm)] for c in summary.comparisons]
    if summary.primary is None:
        title = "Comparisons (exploratory)"
        family = "each arm against base and uniform_sft"
    else:
        title = "Secondary comparisons"
        family = f"each other arm against {summary.primary[1]} and base"
    return TextTable(
        title=title,
        note=f"The family: {family} (against a reference with a budget suffix, arms of that "
        "budget only). The same statistics as the primary: mean per-seed paired difference in "
        "points, t-interval and t-test p, cluster bootstrap; p Holm: the t-test p adjusted "
        "over this family (Holm-Bonferroni).",
        header=[
            *("arm", "reference", "seeds", "difference", "95% t-interval", "p (t-test)"),
            *("cluster bootstrap 95%", "bootstrap p", "p Holm"),
        ],
        rows=rows,
    )


def seeds_table(summary: ExperimentSummary) -> TextTable | None:
    if not summary.comparisons:
        return None
    rows = []
    for c in summary.comparisons:
        by_seed = dict(zip(c.seeds, c.paired.mcnemar, strict=True))
        rows.append(
            [
                c.arm,
                c.against,
                *(
                    f"{_points(by_seed[s].difference)} ({_p(by_seed[s].p_value)})"
                    if s in by_seed
                    else "-"
                    for s in summary.seeds
                ),
            ]
        )
    return TextTable(
        title="Per seed",
        note="The comparisons above seed by seed: the difference in points on the seed's "
        "questions, and in brackets the exact McNemar p of that seed (unadjusted).",
        header=["arm", "reference", *(f"seed {s}" for s in summary.seeds)],
        rows=rows,
    )


def targeting_table(summary: ExperimentSummary) -> TextTable | None:
    if not summary.targeting:
        return None
    arms = [a.arm for a in summary.arms if a.arm != "base"]
    lessons = any(t.share is not None for t in summary.targeting)
    rows = []
    for t in summary.targeting:
        cells = [t.topic]
        if lessons:
            cells.append(_pct(t.share.mean) if t.share is not None else "-")
        for a in arms:
            text = _points(t.lift[a]) if a in t.lift else "-"
            if a in t.trained:
                text += f" ({_pct(t.trained[a])}%)"
            cells.append(text)
        rows.append(cells)
    return TextTable(
        title="Targeting",
        note="Per topic, each arm's lift over base in points and, in brackets, the share of the "
        "examples it trained on that were about the topic (where the experiment stored its "
        "training examples)"
        + (", and the share of the selective lessons' questions on it" if lessons else "")
        + "; means over seeds.",
        header=["topic", *(["lessons' share %"] if lessons else []), *arms],
        rows=rows,
    )


def tables(summary: ExperimentSummary) -> list[TextTable]:
    """The report's tables in order, the primary comparison first."""
    every = [
        primary_table(summary),
        primary_seeds_table(summary),
        arms_table(summary),
        topics_table(summary),
        difficulties_table(summary),
        comparisons_table(summary),
        seeds_table(summary),
        targeting_table(summary),
    ]
    return [t for t in every if t is not None]


def _markdown_rows(table: TextTable) -> list[str]:
    if not table.rows:
        return []
    lines = ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    return ["", *lines, *("| " + " | ".join(cells) + " |" for cells in table.rows)]


def render_markdown(
    summary: ExperimentSummary, *, images: bool = False, targeting_plot: bool = False
) -> str:
    lines = [f"# Experiment `{summary.experiment}`"]
    for table in tables(summary):
        lines += ["", f"## {table.title}", "", table.note, *_markdown_rows(table)]
    if images:
        lines += ["", f"![accuracy per arm]({ARMS_PNG})", "", f"![budget curve]({BUDGET_PNG})"]
        if targeting_plot:
            lines += ["", f"![targeting]({TARGETING_PNG})"]
    return "\n".join(lines) + "\n"


# --- plots ------------------------------------------------------------------------------------


def _errors(intervals: list[Interval]) -> list[list[float]]:
    return [[i.mean - i.low for i in intervals], [i.high - i.mean for i in intervals]]


def _plot_arms(summary: ExperimentSummary, out: BinaryIO) -> None:
    fig = figure(max(6.0, 1.1 * len(summary.arms) + 2), 4.0)
    ax = fig.add_subplot()
    xs = range(len(summary.arms))
    intervals = [a.accuracy for a in summary.arms]
    ax.bar(xs, [i.mean for i in intervals], yerr=_errors(intervals), capsize=4, alpha=0.8)
    ax.set_xticks(list(xs), [a.arm for a in summary.arms], rotation=20, ha="right")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, min(1.0, max(i.high for i in intervals) * 1.2 + 0.05))
    ax.set_title(f"{summary.experiment}: accuracy per arm (95% interval over seeds)")
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(out, format="png")


def budget_curves(summary: ExperimentSummary) -> dict[str, list[ArmSummary]]:
    """The budget plot's lines: per arm name without its budget suffix (first seen first), its
    arms in order of examples."""
    families = dict.fromkeys(a.family for a in summary.arms)
    return {
        f: sorted((a for a in summary.arms if a.family == f), key=lambda a: a.examples)
        for f in families
    }


def _plot_budget(summary: ExperimentSummary, out: BinaryIO) -> None:
    """The budget curve: held-out accuracy (mean over seeds, 95% t-interval bars) against the
    examples trained on and against the teacher tokens the data cost, one line per arm name
    (its budgets, `name@examples`, joined in order of examples)."""
    fig = figure(12.0, 4.5)
    curves = budget_curves(summary)
    axes = []
    for i, (attr, label) in enumerate(
        (
            ("examples", "training examples (mean over seeds)"),
            ("teacher_tokens", "teacher tokens spent on the data (mean over seeds)"),
        )
    ):
        ax = fig.add_subplot(1, 2, i + 1)
        axes.append(ax)
        for j, (family, arms) in enumerate(curves.items()):
            intervals = [a.accuracy for a in arms]
            ax.errorbar(
                [getattr(a, attr) for a in arms],
                [a.mean for a in intervals],
                yerr=_errors(intervals),
                fmt="o-",
                color=f"C{j % 10}",
                label=family,
                capsize=3,
            )
        ax.set_xlabel(label)
        ax.set_ylabel("held-out accuracy")
        ax.grid(alpha=0.3)
    # Outside the axes: inside, it hides the points.
    axes[-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"{summary.experiment}: accuracy against budget (95% interval over seeds)")
    fig.savefig(out, format="png")


def _plot_targeting(summary: ExperimentSummary, out: BinaryIO) -> None:
    """Per-topic lift against the arm's share of training examples on the topic (or, for an
    experiment without stored training examples, the selective lessons' share of questions)."""
    fig = figure(8.0, 4.0)
    ax = fig.add_subplot()
    arms = [a.arm for a in summary.arms if a.arm != "base"]
    trained = any(t.trained for t in summary.targeting)
    for j, arm in enumerate(arms):
        points = [
            (t.trained[arm] if trained else t.share.mean, t.lift[arm])
            for t in summary.targeting
            if arm in t.lift and (arm in t.trained if trained else t.share is not None)
        ]
        if points:
            ax.scatter(*zip(*points, strict=True), label=arm, color=f"C{j % 10}")
    if not trained:
        for t in summary.targeting:
            if t.share is not None:
                ax.annotate(t.topic, (t.share.mean, 0), fontsize="x-small", rotation=30, alpha=0.6)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel(
        "share of the arm's training examples on the topic"
        if trained
        else "share of selective lessons' questions on the topic"
    )
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
