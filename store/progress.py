"""The store's progress reads: what ``teachloop report`` plots and tabulates. Each is one query,
aggregation included: a plot's query returns one row per plotted series (DuckDB ``list()``
aggregates), so the report only draws."""

from __future__ import annotations

import pyarrow as pa

from teachloop.store.base import Connected

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

_CURVES_SQL = """
WITH recent AS (
    SELECT run_id, started_at FROM runs ORDER BY started_at DESC, run_id LIMIT $runs)
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


class ProgressReader(Connected):
    def run_overview(self) -> pa.Table:
        """Every run's summary, oldest first."""
        return self.query(_RUNS_SQL)

    def latest_evaluations(self, *, by_topic: bool = False) -> pa.Table:
        """Each version's latest held-out evaluation (overall, or per topic), in the order the
        versions were made."""
        return self.query(_EVAL_BY_TOPIC_SQL if by_topic else _EVAL_BY_VERSION_SQL)

    def accuracy_by_version(self) -> pa.Table:
        """One row per evaluated version: its latest accuracies aligned with the sorted list of
        every evaluated topic (NULL where it was not evaluated on one), and overall."""
        return self.query(_ACCURACY_PLOT_SQL)

    def learning_curves(self, runs: int) -> pa.Table:
        """One row per (run, topic) of the latest ``runs`` runs: question numbers with the
        cumulative and rolling first-try accuracy."""
        return self.query(_CURVES_SQL, {"runs": runs})

    def training_curves(self) -> pa.Table:
        """One row per training job that logged steps: loss and reward margin per step."""
        return self.query(_TRAINING_PLOT_SQL)

    def training_job_summary(self) -> pa.Table:
        """Every training job with its step count and final loss and reward figures."""
        return self.query(_JOBS_SQL)

    def pairs_by_rule(self) -> pa.Table:
        """Preference pairs per building rule: count, topics, how many were trained on."""
        return self.query(_PAIRS_SQL)

    def version_table(self) -> pa.Table:
        """Every model version with its lineage, oldest first."""
        return self.query(_VERSIONS_SQL)
