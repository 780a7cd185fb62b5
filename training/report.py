"""A progress report from the store: PNG plots and a ``report.md`` that embeds them.

Everything is read with SQL, aggregation included: each plot's query returns one row per plotted
series (DuckDB ``list()`` aggregates), and Python only draws. Plots use matplotlib's Agg canvas
directly (no pyplot, no global backend state). A plot with nothing to show is not written; the
report says so instead, so an empty store gives a valid report.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any

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

# -- queries ---------------------------------------------------------------------------------

# The latest evaluation (by time) of each version; versions in the order they were made.
_LATEST_EVALS = """
WITH latest AS (
    SELECT version, arg_max(eval_id, created_at) AS eval_id
    FROM evaluations GROUP BY version),
chosen AS (
    SELECT e.* FROM evaluations e JOIN latest USING (version, eval_id)),
version_order AS (
    SELECT c.version, coalesce(any_value(mv.created_at), min(c.created_at)) AS made_at
    FROM chosen c LEFT JOIN model_versions mv USING (version) GROUP BY c.version)
"""

_EVAL_BY_VERSION_SQL = (
    _LATEST_EVALS
    + """
SELECT c.version, any_value(c.eval_id) AS eval_id, any_value(c.seed) AS seed,
       count(*) AS topics, sum(c.questions) AS questions, sum(c.correct) AS correct,
       sum(c.correct) / nullif(sum(c.questions), 0) AS accuracy, max(c.created_at) AS created_at
FROM chosen c JOIN version_order o USING (version)
GROUP BY c.version, o.made_at
ORDER BY o.made_at, c.version
"""
)

_EVAL_BY_TOPIC_SQL = (
    _LATEST_EVALS
    + """
SELECT c.version, c.topic, c.questions, c.correct, c.accuracy
FROM chosen c JOIN version_order o USING (version)
ORDER BY o.made_at, c.version, c.topic
"""
)

# One row per version: its accuracies aligned with the sorted list of all evaluated topics
# (NULL where the version was not evaluated on a topic), plus the micro-average overall.
_ACCURACY_PLOT_SQL = (
    _LATEST_EVALS
    + """,
all_topics AS (SELECT DISTINCT topic FROM chosen),
grid AS (
    SELECT v.version, v.made_at, t.topic, c.accuracy
    FROM version_order v CROSS JOIN all_topics t
    LEFT JOIN chosen c ON c.version = v.version AND c.topic = t.topic)
SELECT g.version, list(g.topic ORDER BY g.topic) AS topics,
       list(g.accuracy ORDER BY g.topic) AS accuracies,
       (SELECT sum(correct) / nullif(sum(questions), 0) FROM chosen c
        WHERE c.version = g.version) AS overall
FROM grid g
GROUP BY g.version, g.made_at
ORDER BY g.made_at, g.version
"""
)

_CURVES_SQL = f"""
WITH recent AS (
    SELECT run_id, started_at FROM runs ORDER BY started_at DESC, run_id LIMIT {MAX_CURVE_RUNS})
SELECT lc.run_id, lc.topic,
       list(lc.question_number ORDER BY lc.question_number) AS x,
       list(lc.cumulative_accuracy ORDER BY lc.question_number) AS cumulative,
       list(lc.rolling_accuracy_10 ORDER BY lc.question_number) AS rolling
FROM learning_curve lc JOIN recent r USING (run_id)
GROUP BY lc.run_id, lc.topic, r.started_at
ORDER BY lc.topic, r.started_at, lc.run_id
"""

# Each training job's log is a JSON array of per-step records; unnest it in SQL.
_STEPS = """
WITH steps AS (
    SELECT j.job_id, j.method, j.started_at,
           (e ->> 'step')::INTEGER AS step,
           (e ->> 'loss')::DOUBLE AS loss,
           (e ->> 'reward_margin')::DOUBLE AS reward_margin,
           (e ->> 'reward_accuracy')::DOUBLE AS reward_accuracy
    FROM training_jobs j, unnest(CAST(j.log AS JSON[])) AS t(e)
    WHERE j.log IS NOT NULL AND json_type(j.log) = 'ARRAY')
"""

_TRAINING_PLOT_SQL = (
    _STEPS
    + """
SELECT job_id, any_value(method) AS method,
       list(step ORDER BY step) FILTER (WHERE loss IS NOT NULL) AS loss_steps,
       list(loss ORDER BY step) FILTER (WHERE loss IS NOT NULL) AS losses,
       list(step ORDER BY step) FILTER (WHERE reward_margin IS NOT NULL) AS margin_steps,
       list(reward_margin ORDER BY step) FILTER (WHERE reward_margin IS NOT NULL) AS margins
FROM steps
WHERE step IS NOT NULL
GROUP BY job_id, started_at
ORDER BY started_at, job_id
"""
)

_JOBS_SQL = (
    _STEPS
    + """,
per_job AS (
    SELECT job_id, count(*) AS steps,
           arg_max(loss, step) FILTER (WHERE loss IS NOT NULL) AS final_loss,
           arg_max(reward_margin, step) FILTER (WHERE reward_margin IS NOT NULL)
               AS final_reward_margin,
           arg_max(reward_accuracy, step) FILTER (WHERE reward_accuracy IS NOT NULL)
               AS final_reward_accuracy
    FROM steps GROUP BY job_id)
SELECT j.job_id, j.method, j.from_version, j.status, j.pairs, coalesce(p.steps, 0) AS steps,
       p.final_loss, p.final_reward_margin, p.final_reward_accuracy, j.started_at
FROM training_jobs j LEFT JOIN per_job p USING (job_id)
ORDER BY j.started_at, j.job_id
"""
)

_PAIRS_SQL = """
SELECT rule, count(*) AS pairs, count(DISTINCT topic) AS topics,
       count(*) FILTER (WHERE job_id IS NOT NULL) AS used_in_training
FROM preference_pairs
GROUP BY rule
ORDER BY pairs DESC, rule
"""

_RUNS_SQL = """
SELECT run_id, status, student_model, lessons, questions, first_try_accuracy,
       after_reteach_accuracy, reteach_fix_rate, started_at
FROM run_summary
ORDER BY started_at, run_id
"""

_VERSIONS_SQL = """
SELECT version, parent_version, method, base_model, adapter_path, job_id, promoted, created_at
FROM model_versions
ORDER BY created_at, version
"""

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


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, format="png")
    return path


def _plot_accuracy(rows: list[dict[str, Any]], path: Path) -> Path:
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
    return _save(fig, path)


def _plot_curves(rows: list[dict[str, Any]], path: Path) -> Path:
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
    return _save(fig, path)


def _plot_training(rows: list[dict[str, Any]], path: Path) -> Path:
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
    return _save(fig, path)


def _plot_pairs(rows: list[dict[str, Any]], path: Path) -> Path:
    fig = figure(max(5.0, 1.2 * len(rows) + 2), 3.6)
    ax = fig.add_subplot()
    bars = ax.bar([r["rule"] for r in rows], [r["pairs"] for r in rows], color="C2")
    ax.bar_label(bars)
    ax.set_ylabel("preference pairs")
    ax.set_title("Preference pairs by rule")
    ax.tick_params(axis="x", labelrotation=20)
    ax.margins(y=0.15)
    _integer_axis(ax.yaxis)
    return _save(fig, path)


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

    def plot(name: str, sql: str, draw: Any) -> Path | None:
        path = out_dir / name
        rows = store.query(sql).to_pylist()
        if not rows:
            path.unlink(missing_ok=True)
            return None
        return draw(rows, path)

    accuracy_png = plot(ACCURACY_PNG, _ACCURACY_PLOT_SQL, _plot_accuracy)
    curves_png = plot(LEARNING_PNG, _CURVES_SQL, _plot_curves)
    training_png = plot(TRAINING_PNG, _TRAINING_PLOT_SQL, _plot_training)
    pairs_png = plot(PAIRS_PNG, _PAIRS_SQL, _plot_pairs)

    lines = [
        "# teachloop report",
        "",
        f"Database: `{store.path.name if store.path else store.location}`",
        "",
        *_section("Runs", store.query(_RUNS_SQL), "No runs yet.", level=2),
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
            store.query(_EVAL_BY_VERSION_SQL),
            "No evaluations yet.",
        ),
        *_section(
            "Latest evaluation per version and topic",
            store.query(_EVAL_BY_TOPIC_SQL),
            "No evaluations yet.",
        ),
        *_section("Model versions", store.query(_VERSIONS_SQL), "No model versions yet."),
        "## Training",
        "",
        *_image(training_png, "training loss and reward margin", "No training steps logged yet."),
        *_section("Training jobs", store.query(_JOBS_SQL), "No training jobs yet."),
        "## Preference pairs",
        "",
        *_image(pairs_png, "preference pairs by rule", "No preference pairs yet."),
        *_section("Pairs by rule", store.query(_PAIRS_SQL), "No preference pairs yet."),
    ]
    report = out_dir / REPORT_NAME
    report.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return report


__all__ = [
    "ACCURACY_PNG",
    "LEARNING_PNG",
    "PAIRS_PNG",
    "REPORT_NAME",
    "TRAINING_PNG",
    "write_report",
]
