"""A progress report from the store: PNG plots and a ``report.md`` that embeds them.

The store reads everything (``store/progress.py``: one query each, aggregation included, one row
per plotted series), and this module only draws. Plots use matplotlib's Agg canvas
directly (no pyplot, no global backend state). A plot with nothing to show is not written; the
report says so instead, so an empty store gives a valid report.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa

from teachloop.errors import TeachloopError
from teachloop.store.store import Store

REPORT_NAME = "report.md"
ACCURACY_PNG = "accuracy_by_version.png"
LEARNING_PNG = "learning_curves.png"
TRAINING_PNG = "training_curves.png"
PAIRS_PNG = "pairs_by_rule.png"
# Learning curves of at most this many runs (the latest), so the lines stay readable.
MAX_CURVE_RUNS = 6

# -- drawing ---------------------------------------------------------------------------------


def figure(width: float, height: float) -> Any:
    """A figure on an Agg canvas (nothing global touched, safe in any thread)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - matplotlib is a dependency
        raise TeachloopError("the report needs matplotlib: pip install matplotlib") from err
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _integer_axis(axis: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _plot_accuracy(rows: list[dict[str, Any]], out: BinaryIO) -> None:
    topics = [*rows[0]["topics"], "overall"]
    n = len(rows)
    fig = figure(max(6.0, 1.2 * len(topics) * max(1, n) / 2 + 2), 4.0)
    ax = fig.add_subplot()
    width = 0.8 / n
    for i, row in enumerate(rows):
        values = [math.nan if a is None else a for a in row["accuracies"]]
        values.append(math.nan if row["overall"] is None else row["overall"])
        xs = [t + (i - (n - 1) / 2) * width for t in range(len(topics))]
        bars = ax.bar(xs, values, width=width, label=row["version"])
        ax.bar_label(bars, fmt="%.2f", fontsize="x-small", padding=1)
    ax.set_xticks(range(len(topics)), topics, rotation=20, ha="right")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("held-out accuracy")
    ax.set_title("Held-out accuracy per topic (latest evaluation of each version)")
    ax.legend(title="version", fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(out, format="png")


def _plot_curves(rows: list[dict[str, Any]], out: BinaryIO) -> None:
    topics = list(dict.fromkeys(r["topic"] for r in rows))
    cols = min(3, len(topics))
    nrows = math.ceil(len(topics) / cols)
    fig = figure(4.5 * cols, 3.2 * nrows)
    axes = {t: fig.add_subplot(nrows, cols, i + 1) for i, t in enumerate(topics)}
    colors: dict[str, str] = {}
    for row in rows:
        ax = axes[row["topic"]]
        color = colors.setdefault(row["run_id"], f"C{len(colors) % 10}")
        marker = "." if len(row["x"]) < 30 else None
        ax.plot(row["x"], row["cumulative"], color=color, marker=marker, label=row["run_id"])
        ax.plot(row["x"], row["rolling"], color=color, linestyle="--", alpha=0.6)
    for topic, ax in axes.items():
        ax.set_title(topic)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("question on this topic")
        ax.set_ylabel("first-try accuracy")
        ax.grid(alpha=0.3)
        _integer_axis(ax.xaxis)
    first = axes[topics[0]]
    first.legend(fontsize="x-small", title="run (dashed: last 10)", title_fontsize="x-small")
    fig.suptitle("Learning curves")
    fig.savefig(out, format="png")


def _plot_training(rows: list[dict[str, Any]], out: BinaryIO) -> None:
    fig = figure(11.0, 4.0)
    loss_ax, margin_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for row in rows:
        label = f"{row['job_id']} ({row['method']})"
        if row["losses"]:
            loss_ax.plot(row["loss_steps"], row["losses"], marker=".", label=label)
        if row["margins"]:
            margin_ax.plot(row["margin_steps"], row["margins"], marker=".", label=label)
    for ax, title in ((loss_ax, "loss"), (margin_ax, "reward margin (chosen - rejected)")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        _integer_axis(ax.xaxis)
        if ax.lines:
            ax.legend(fontsize="x-small")
        else:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle("Training jobs")
    fig.savefig(out, format="png")


def _plot_pairs(rows: list[dict[str, Any]], out: BinaryIO) -> None:
    fig = figure(max(5.0, 1.2 * len(rows) + 2), 3.6)
    ax = fig.add_subplot()
    bars = ax.bar([r["rule"] for r in rows], [r["pairs"] for r in rows], color="C2")
    ax.bar_label(bars)
    ax.set_ylabel("preference pairs")
    ax.set_title("Preference pairs by rule")
    ax.tick_params(axis="x", labelrotation=20)
    ax.margins(y=0.15)
    _integer_axis(ax.yaxis)
    fig.savefig(out, format="png")


# The report's plots: file name -> (the store's read, the drawing). `write_report` writes them,
# `teachloop view` serves them (`plot_png`): one set of plots for both.
Read = Callable[[Store], pa.Table]
Draw = Callable[[list[dict[str, Any]], BinaryIO], None]
PLOTS: dict[str, tuple[Read, Draw]] = {
    ACCURACY_PNG: (lambda store: store.accuracy_by_version(), _plot_accuracy),
    LEARNING_PNG: (lambda store: store.learning_curves(MAX_CURVE_RUNS), _plot_curves),
    TRAINING_PNG: (lambda store: store.training_curves(), _plot_training),
    PAIRS_PNG: (lambda store: store.pairs_by_rule(), _plot_pairs),
}


def plot_png(store: Store, name: str) -> bytes | None:
    """One of the report's plots (a name in ``PLOTS``) as PNG bytes; None when it has nothing
    to show."""
    read, draw = PLOTS[name]
    rows = read(store).to_pylist()
    if not rows:
        return None
    buffer = BytesIO()
    draw(rows, buffer)
    return buffer.getvalue()


# -- markdown --------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.3f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(table: pa.Table) -> str:
    header = "| " + " | ".join(table.column_names) + " |"
    rule = "|" + "|".join("---" for _ in table.column_names) + "|"
    lines = [header, rule]
    lines += ["| " + " | ".join(_cell(v) for v in row.values()) + " |" for row in table.to_pylist()]
    return "\n".join(lines)


def _section(title: str, table: pa.Table, empty: str, level: int = 3) -> list[str]:
    body = _md_table(table) if table.num_rows else f"_{empty}_"
    return [f"{'#' * level} {title}", "", body, ""]


def _image(png: Path | None, alt: str, empty: str) -> list[str]:
    return [f"![{alt}]({png.name})" if png is not None else f"_{empty}_", ""]


def write_report(store: Store, out_dir: Path) -> Path:
    """Write the plots and ``report.md`` into ``out_dir``; return the report's path.

    Plots with no data are not written (a stale one from an earlier report is removed) and the
    report says why; image links are relative, so the folder can be moved or published whole.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def plot(name: str) -> Path | None:
        path = out_dir / name
        png = plot_png(store, name)
        if png is None:
            path.unlink(missing_ok=True)
            return None
        path.write_bytes(png)
        return path

    accuracy_png = plot(ACCURACY_PNG)
    curves_png = plot(LEARNING_PNG)
    training_png = plot(TRAINING_PNG)
    pairs_png = plot(PAIRS_PNG)

    lines = [
        "# teachloop report",
        "",
        f"Database: `{store.path.name if store.path else store.location}`",
        "",
        *_section("Runs", store.run_overview(), "No runs yet.", level=2),
        "## Learning curves",
        "",
        *_image(curves_png, "learning curves", "No learning-curve data yet (no lessons logged)."),
        f"First-try accuracy per topic over the questions asked, for the latest "
        f"{MAX_CURVE_RUNS} runs at most: solid is cumulative, dashed the last 10 questions.",
        "",
        "## Held-out evaluation",
        "",
        *_image(accuracy_png, "held-out accuracy by version", "No evaluations yet."),
        *_section(
            "Latest evaluation per version",
            store.latest_evaluations(),
            "No evaluations yet.",
        ),
        *_section(
            "Latest evaluation per version and topic",
            store.latest_evaluations(by_topic=True),
            "No evaluations yet.",
        ),
        *_section("Model versions", store.version_table(), "No model versions yet."),
        "## Training",
        "",
        *_image(training_png, "training loss and reward margin", "No training steps logged yet."),
        *_section("Training jobs", store.training_job_summary(), "No training jobs yet."),
        "## Preference pairs",
        "",
        *_image(pairs_png, "preference pairs by rule", "No preference pairs yet."),
        *_section("Pairs by rule", store.pairs_by_rule(), "No preference pairs yet."),
    ]
    report = out_dir / REPORT_NAME
    report.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return report


__all__ = [
    "ACCURACY_PNG",
    "LEARNING_PNG",
    "PAIRS_PNG",
    "PLOTS",
    "REPORT_NAME",
    "TRAINING_PNG",
    "plot_png",
    "write_report",
]
