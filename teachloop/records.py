"""Log records besides messages: what a run, a lesson and a mastery update leave in the store."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from teachloop.messages import Answer, Critique, Question, Reteach, Strategy, utcnow

AnyMessage = Question | Answer | Critique | Reteach


class Outcome(BaseModel):
    """How a judged question went: what the teacher's estimate learns from it, and one row of
    the store's ``question_outcomes`` view."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    correct_first: bool  # the verdict on attempt 0
    correct_final: bool  # the verdict on the last attempt (after the last reteach)
    reteaches: int
    leaked: bool  # a reteach stated the reference answer
    strategy: Strategy | None  # the last reteach's, if there was one


def outcome(messages: Sequence[AnyMessage], question_id: str) -> Outcome | None:
    """The one definition of first try and final, over a question's messages; None until its
    first answer is judged. The lesson graph decides with it while the lesson runs (the live
    estimate is updated before anything is logged); store/views.sql's ``question_outcomes_of``
    states it again in SQL for the log, and ``tests/test_lesson_graph.py`` checks the two agree
    on every question of generated lessons."""
    critiques = [m for m in messages if isinstance(m, Critique) and m.question_id == question_id]
    reteaches = [m for m in messages if isinstance(m, Reteach) and m.question_id == question_id]
    first = [c.correct for c in critiques if c.attempt == 0]
    if not first:
        return None
    return Outcome(
        correct_first=any(first),
        correct_final=max(critiques, key=lambda c: c.attempt).correct,
        reteaches=len({r.message_id for r in reteaches}),
        leaked=any(r.leaked for r in reteaches),
        strategy=max(reteaches, key=lambda r: r.attempt).strategy if reteaches else None,
    )


class LessonStatus(StrEnum):
    complete = "complete"
    failed = "failed"  # an error ended it; the reason is in `error`
    interrupted = "interrupted"  # stopped by the user; a rerun with the same run id resumes it


class EndReason(StrEnum):
    budget = "budget"  # the question budget is spent
    mastered = "mastered"  # every topic reached the mastery target
    error = "error"
    interrupted = "interrupted"


class MasterySnapshot(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    lesson_id: str
    question_index: int
    topic: str
    alpha: float
    beta: float
    mean: float
    difficulty: int
    created_at: datetime = Field(default_factory=utcnow)


class LessonRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    lesson_id: str
    run_id: str
    lesson_index: int
    status: LessonStatus
    end_reason: EndReason
    # Judged questions, right first time, and fixed by a reteach: the store counts these from
    # the lesson's messages (its question_outcomes view) when it writes the lesson.
    questions: int = 0
    correct_first: int = 0
    correct_after_reteach: int = 0
    error: str | None = None
    started_at: datetime
    finished_at: datetime = Field(default_factory=utcnow)


class LessonLog(BaseModel):
    """Everything one lesson leaves in the store, written in one transaction."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lesson: LessonRecord
    messages: list[AnyMessage]
    mastery: list[MasterySnapshot]


class RunRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    started_at: datetime = Field(default_factory=utcnow)
    lessons_planned: int
    teacher_model: str
    student_model: str
    config: str = Field(description="the run's config as JSON")


def versioned_model(model: str, version: str) -> str:
    """The one name of a student at a version, ``"<model>@<version>"``: what a run records as its
    student (``runs.student_model``, which the estimate carried across runs matches on) and what
    an in-process backend with an adapter calls itself."""
    return f"{model}@{version}"


def model_of(name: str) -> str:
    """The model of a ``versioned_model`` name (a path may hold "@": the version follows the
    last); a name without a version is the model itself."""
    return name.rpartition("@")[0] or name


class ModelVersion(BaseModel):
    """A student model: the base model, or the base plus a LoRA adapter trained from the log."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    parent_version: str | None = None
    method: str  # base | dpo | sft
    adapter_path: str | None = None
    base_model: str
    job_id: str | None = None
    watermark: datetime | None = None
    promoted: bool = False
    metrics: str | None = Field(default=None, description="JSON")
    created_at: datetime = Field(default_factory=utcnow)
