"""The store's experiment log: each experiment's design, each (seed, arm) result with the
budget it spent, and every held-out answer, so arms can be compared question by question."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import duckdb
import pyarrow as pa
from pydantic import Field

from teachloop.errors import StoreError
from teachloop.store.base import Connected, insert_new, upsert, utcnow
from teachloop.store.records import Row


class ExperimentRecord(Row):
    experiment: str
    config: str = Field(description="the design as JSON: the run config without the seeds")


class ArmResult(Row):
    """One arm on one seed: its budget and its held-out score."""

    experiment: str
    seed: int
    arm: str
    data: str
    method: str | None
    examples: int
    steps: int
    teacher_tokens: int
    data_wall_s: float
    train_wall_s: float
    eval_wall_s: float
    questions: int
    correct: int
    adapter_path: str | None
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def accuracy(self) -> float:
        return self.correct / self.questions if self.questions else 0.0


class QuestionOutcome(Row):
    experiment: str
    seed: int
    arm: str
    question_index: int
    topic: str
    difficulty: int
    question: str
    correct: bool
    answer: str | None = None  # the final answer read from the reply (None: none found)


class SeedPlan(Row):
    """What a seed fixes before any arm runs: the budget, and the oracle's topics."""

    experiment: str
    seed: int
    examples: int
    weak_topics: list[str]
    created_at: datetime = Field(default_factory=utcnow)


class SeedQuestions(Row):
    """The questions a seed was scored on (its arms' split, in order) and its starting
    student's validation questions (in order); empty before they were stored."""

    scored: list[str]
    validation: list[str]


class ExperimentExample(Row):
    """One example an arm trained on, in training order (a budget n takes the first n)."""

    experiment: str
    seed: int
    arm: str
    position: int
    topic: str
    difficulty: int | None
    question: str
    completion: str


class ValidationOutcome(Row):
    """The starting student's answer to one question of a seed's validation split."""

    experiment: str
    seed: int
    question_index: int
    topic: str
    difficulty: int
    question: str
    answer: str | None
    correct: bool


class TrainedShare(Row):
    """How much of what an arm trained on (on one seed) was about a topic."""

    seed: int
    arm: str
    topic: str
    examples: int
    share: float


class ArmAccuracy(Row):
    """An arm's held-out accuracy on one seed, overall (topic 'overall') or on one topic."""

    arm: str
    seed: int
    topic: str
    questions: int
    accuracy: float


class DifficultyAccuracy(Row):
    """An arm's held-out accuracy on one seed at one difficulty."""

    arm: str
    seed: int
    difficulty: int
    questions: int
    accuracy: float


class Discordance(Row):
    """Two arms' answers to the same held-out questions on one seed: how often only the first
    (``a_only``) or only the second (``b_only``) was right. McNemar's test reads these."""

    arm: str
    against: str
    seed: int
    topic: str
    questions: int
    a_only: int
    b_only: int
    both: int


class TopicShare(Row):
    """How much of a seed's selective lessons the teacher spent on a topic."""

    seed: int
    topic: str
    questions: int
    share: float


def design_changes(stored: object, now: object, path: str = "") -> list[str]:
    """Where two designs (JSON values) differ, as ``key.path: stored then, now``."""
    if isinstance(stored, dict) and isinstance(now, dict):
        keys = [*stored, *(k for k in now if k not in stored)]
        return [
            change
            for k in keys
            for change in design_changes(stored.get(k), now.get(k), f"{path}.{k}" if path else k)
        ]
    if stored == now:
        return []
    return [f"{path or 'design'}: {json.dumps(stored)} then, {json.dumps(now)} now"]


class ExperimentLog(Connected):
    def write_experiment(self, record: ExperimentRecord, seeds: Sequence[int]) -> None:
        """Record an experiment, or add seeds to it. Its design must not change: results of
        two designs under one name would be compared as if they were one."""
        with self.connect() as con:
            con.execute("BEGIN")
            row = con.execute(
                "SELECT config::VARCHAR FROM experiments WHERE experiment = ?", [record.experiment]
            ).fetchone()
            if row is not None and row[0] != record.config:
                con.execute("ROLLBACK")
                changed = design_changes(json.loads(row[0]), json.loads(record.config))
                more = f"; {len(changed) - 1} more" if len(changed) > 1 else ""
                raise StoreError(
                    f"experiment {record.experiment!r} is already in {self.location} with another "
                    f"design ({changed[0] if changed else 'the design text'}{more}): give this "
                    "one another experiment.name, or set those as they were"
                )
            con.execute(
                "UPDATE experiments SET seeds = list_sort(list_distinct(list_concat(seeds, ?))) "
                "WHERE experiment = ?",
                [list(seeds), record.experiment],
            )
            insert_new(
                con,
                "experiments",
                "(SELECT ?::VARCHAR AS experiment, ?::JSON AS config, "
                "?::INTEGER[] AS seeds, ?::TIMESTAMPTZ AS created_at)",
                [record.experiment, record.config, list(seeds), utcnow()],
            )
            con.execute("COMMIT")

    def experiments(self) -> list[str]:
        return (
            self.query("SELECT experiment FROM experiments ORDER BY created_at")
            .column("experiment")
            .to_pylist()
        )

    def write_arm_result(
        self,
        result: ArmResult,
        outcomes: Sequence[QuestionOutcome],
        examples: Sequence[ExperimentExample] = (),
    ) -> None:
        """An arm's result, its answers and what it trained on, together (a killed write
        leaves none of them)."""
        with self.connect() as con:
            con.execute("BEGIN")
            for table, rows in (
                ("experiment_outcomes", outcomes),
                ("experiment_examples", examples),
                ("experiment_arms", [result]),
            ):
                if rows:
                    _upsert_rows(con, table, rows)
            con.execute("COMMIT")

    def fix_seed_plan(self, plan: SeedPlan, validation: Sequence[ValidationOutcome]) -> SeedPlan:
        """Store a seed's plan and its validation answers unless the seed has one already;
        return the stored plan (the first one wins: a resumed seed keeps its budget)."""
        with self.connect() as con:
            con.execute("BEGIN")
            _insert_new_rows(con, "experiment_seeds", [plan])
            if validation:
                _insert_new_rows(con, "experiment_validation", validation)
            con.execute("COMMIT")
        stored = self.seed_plan(plan.experiment, plan.seed)
        assert stored is not None
        return stored

    def seed_plan(self, experiment: str, seed: int) -> SeedPlan | None:
        rows = self.query(
            "SELECT * FROM experiment_seeds WHERE experiment = ? AND seed = ?", [experiment, seed]
        ).to_pylist()
        return SeedPlan.model_validate(rows[0]) if rows else None

    def seed_questions(self, experiment: str, seed: int) -> SeedQuestions:
        """What a resumed seed's remaining arms must be scored on, and its plan drawn from."""
        rows = self.query(
            """
            SELECT
              coalesce((SELECT list(question ORDER BY question_index) FROM (
                  SELECT DISTINCT question_index, question FROM experiment_outcomes
                  WHERE experiment = $experiment AND seed = $seed)), []) AS scored,
              coalesce((SELECT list(question ORDER BY question_index)
                  FROM experiment_validation
                  WHERE experiment = $experiment AND seed = $seed), []) AS validation
            """,
            {"experiment": experiment, "seed": seed},
        ).to_pylist()
        return SeedQuestions.model_validate(rows[0])

    def experiment_examples(self, experiment: str) -> list[ExperimentExample]:
        rows = self.query(
            "SELECT * FROM experiment_examples WHERE experiment = ? ORDER BY seed, arm, position",
            [experiment],
        ).to_pylist()
        return [ExperimentExample.model_validate(r) for r in rows]

    def run_questions(self, run_id: str) -> dict[str, tuple[str, int]]:
        """A run's questions by message id: (text, difficulty)."""
        table = self.query(
            "SELECT message_id, text, difficulty FROM messages "
            "WHERE run_id = ? AND kind = 'question'",
            [run_id],
        ).to_pylist()
        return {r["message_id"]: (r["text"], r["difficulty"]) for r in table}

    def trained_shares(self, experiment: str) -> list[TrainedShare]:
        """Per seed, arm and topic: the share of the examples the arm trained on, the
        targeting each arm's data actually had."""
        rows = self.query(
            """
            SELECT seed, arm, topic, count(*) AS examples,
                   count(*) / sum(count(*)) OVER (PARTITION BY seed, arm) AS share
            FROM experiment_examples WHERE experiment = ?
            GROUP BY seed, arm, topic ORDER BY seed, arm, topic
            """,
            [experiment],
        ).to_pylist()
        return [TrainedShare.model_validate(r) for r in rows]

    def validation_outcomes(self, experiment: str) -> list[ValidationOutcome]:
        rows = self.query(
            "SELECT * FROM experiment_validation WHERE experiment = ? "
            "ORDER BY seed, question_index",
            [experiment],
        ).to_pylist()
        return [ValidationOutcome.model_validate(r) for r in rows]

    def arm_results(self, experiment: str) -> list[ArmResult]:
        rows = self.query(
            "SELECT * FROM experiment_arms WHERE experiment = ? ORDER BY seed, created_at",
            [experiment],
        ).to_pylist()
        return [ArmResult.model_validate(r) for r in rows]

    def experiment_accuracy(self, experiment: str) -> list[ArmAccuracy]:
        """Per arm and seed: overall accuracy (topic 'overall') and per topic."""
        rows = self.query(
            """
            SELECT arm, seed, coalesce(topic, 'overall') AS topic, count(*) AS questions,
                   avg(correct::INT) AS accuracy
            FROM experiment_outcomes WHERE experiment = ?
            GROUP BY GROUPING SETS ((arm, seed), (arm, seed, topic))
            ORDER BY arm, seed, topic
            """,
            [experiment],
        ).to_pylist()
        return [ArmAccuracy.model_validate(r) for r in rows]

    def difficulty_accuracy(self, experiment: str) -> list[DifficultyAccuracy]:
        """Per arm, seed and difficulty: held-out accuracy."""
        rows = self.query(
            """
            SELECT arm, seed, difficulty, count(*) AS questions, avg(correct::INT) AS accuracy
            FROM experiment_outcomes WHERE experiment = ?
            GROUP BY arm, seed, difficulty
            ORDER BY arm, seed, difficulty
            """,
            [experiment],
        ).to_pylist()
        return [DifficultyAccuracy.model_validate(r) for r in rows]

    def experiment_design(self, experiment: str) -> str | None:
        """The experiment's design as stored (JSON text: the run config without the seeds);
        None for an experiment not in the log."""
        row = self.query(
            "SELECT config::VARCHAR AS config FROM experiments WHERE experiment = ?", [experiment]
        ).to_pylist()
        return row[0]["config"] if row else None

    def discordance(self, experiment: str, against: Sequence[str]) -> list[Discordance]:
        """Every arm against each of ``against`` on the same questions and seeds, overall and
        per topic."""
        rows = self.query(
            """
            SELECT a.arm, b.arm AS against, a.seed, coalesce(a.topic, 'overall') AS topic,
                   count(*) AS questions,
                   count(*) FILTER (WHERE a.correct AND NOT b.correct) AS a_only,
                   count(*) FILTER (WHERE b.correct AND NOT a.correct) AS b_only,
                   count(*) FILTER (WHERE a.correct AND b.correct) AS both
            FROM experiment_outcomes a
            JOIN experiment_outcomes b USING (experiment, seed, question_index)
            WHERE a.experiment = $exp AND b.arm IN (SELECT unnest($against)) AND a.arm <> b.arm
            GROUP BY GROUPING SETS ((a.arm, b.arm, a.seed), (a.arm, b.arm, a.seed, a.topic))
            ORDER BY a.arm, against, a.seed, topic
            """,
            {"exp": experiment, "against": list(against)},
        ).to_pylist()
        return [Discordance.model_validate(r) for r in rows]

    def targeting(self, experiment: str) -> list[TopicShare]:
        """Per seed and topic, the share of questions the targeting teacher asked in the
        experiment's default selective lessons (run ids ``<experiment>-s<seed>-selective``)."""
        rows = self.query(
            """
            SELECT seed, topic, questions, questions / sum(questions) OVER (PARTITION BY seed)
                   AS share
            FROM (
                SELECT regexp_extract(run_id, '-s(\\d+)-selective$', 1)::INT AS seed, topic,
                       count(DISTINCT message_id) AS questions
                FROM messages
                WHERE kind = 'question'
                  AND regexp_matches(run_id, '^' || $prefix || '-s\\d+-selective$')
                GROUP BY ALL)
            ORDER BY seed, topic
            """,
            {"prefix": _regex_literal(experiment)},
        ).to_pylist()
        return [TopicShare.model_validate(r) for r in rows]


def _batch(con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[Row]) -> str:
    name = f"batch_{table}"
    con.register(name, pa.Table.from_pylist([r.model_dump() for r in rows]))
    return name


def _upsert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[Row]) -> None:
    upsert(con, table, _batch(con, table, rows))


def _insert_new_rows(con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[Row]) -> None:
    insert_new(con, table, _batch(con, table, rows))


def _regex_literal(text: str) -> str:
    # Experiment names are [A-Za-z0-9_.-]: only the dot needs escaping.
    return text.replace(".", "\\.")
