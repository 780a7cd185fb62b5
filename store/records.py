"""What the store's methods return: typed rows of its tables and views.

The lesson log's own records (runs, lessons, mastery snapshots, model versions) are shared with
the code that writes them and live in ``teachloop.records``; these are the store's answers to
questions about the log (summaries, counts) and the rows of the training tables.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from teachloop.records import ModelVersion


class Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# -- lesson log aggregates ----------------------------------------------------------------------


class RunSummary(Row):
    """One row of the ``run_summary`` view."""

    run_id: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    student_model: str
    teacher_model: str
    lessons_planned: int
    lessons: int
    lessons_failed: int
    questions: int
    first_try_accuracy: float | None
    after_reteach_accuracy: float | None
    reteach_fix_rate: float | None  # of first-try misses, the share fixed by reteaching
    after_reteach_accuracy_no_leaks: float | None  # no credit after a reteach that leaked
    leaked_reteaches: int  # questions whose reteach stated the reference answer
    messages: int
    prompt_tokens: int
    completion_tokens: int


class TopicAccuracy(Row):
    """One row of the ``topic_accuracy`` view."""

    run_id: str
    topic: str
    questions: int
    first_try_accuracy: float | None
    after_reteach_accuracy: float | None
    reteach_fix_rate: float | None
    after_reteach_accuracy_no_leaks: float | None
    leaked_reteaches: int


class TopicCounts(Row):
    """First-try outcomes on one topic (weighted: lessons of an earlier student version count
    less), and the difficulty the staircase last reached."""

    topic: str
    successes: float
    failures: float
    difficulty: int | None


class StrategyCounts(Row):
    """Outcomes of the last reteach of each question, per topic and strategy (weighted)."""

    topic: str
    strategy: str
    successes: float
    failures: float


class MasteryCounts(Row):
    """What a run's complete lessons showed (a resumed run rebuilds the teacher's estimate)."""

    topics: list[TopicCounts]
    strategies: list[StrategyCounts]


# -- training tables ----------------------------------------------------------------------------


class PreferencePair(Row):
    pair_id: str
    run_id: str
    lesson_id: str
    question_id: str
    topic: str
    prompt: str
    chosen: str
    rejected: str
    rule: str
    source_ids: list[str]
    job_id: str | None
    created_at: datetime
    # 'answer': chosen is the bare answer; 'solution': a worked solution (shown-work student).
    target: str = "answer"


class PairBuild(Row):
    lessons: int  # lessons consumed by this build
    added: dict[str, int]  # new pairs per rule
    unused: int  # pairs not yet consumed by a training job, after this build


class TrainingJob(Row):
    job_id: str
    method: str
    from_version: str | None = None
    status: str  # running | complete | failed
    pairs: int | None = None
    config: str | None = None  # JSON
    log: str | None = None  # JSON: per-step records
    error: str | None = None
    started_at: datetime
    finished_at: datetime | None = None


class EvaluationRow(Row):
    """One topic's score in one held-out evaluation (``eval_id`` names what was measured)."""

    eval_id: str
    version: str
    topic: str
    questions: int
    correct: int
    accuracy: float
    seed: int
    created_at: datetime


__all__ = [
    "EvaluationRow",
    "MasteryCounts",
    "ModelVersion",
    "PairBuild",
    "PreferencePair",
    "RunSummary",
    "StrategyCounts",
    "TopicAccuracy",
    "TopicCounts",
    "TrainingJob",
]
