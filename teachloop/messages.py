"""The message protocol: the four typed messages a teacher and a student exchange.

One discriminated union on ``kind``. Every message carries its ids, sender, time, the text
exchanged and how it was produced (model, endpoint, tokens); each kind adds the typed fields that
make the log useful later. JSON round trips are exact (``Message`` <-> ``message_json``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class Role(StrEnum):
    teacher = "teacher"
    student = "student"


class Strategy(StrEnum):
    """How the teacher re-teaches (after MathDial's moves: focusing, probing, telling)."""

    hint = "hint"
    worked_example = "worked_example"
    step_by_step = "step_by_step"


class ErrorCategory(StrEnum):
    none = "none"  # the answer was correct
    no_answer = "no_answer"  # nothing parseable as an answer
    magnitude = "magnitude"  # right digits, wrong power of ten (a unit-conversion classic)
    sign = "sign"  # right magnitude, wrong sign
    close = "close"  # within a few percent
    wrong = "wrong"  # anything else
    judged = "judged"  # an LLM judge decided; no finer category


def utcnow() -> datetime:
    return datetime.now(UTC)


class Generation(BaseModel):
    """How a text was produced: which model and endpoint, how many tokens, how long."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = ""
    endpoint: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Finite only: JSON has no inf/nan, and the log must parse back exactly.
    latency_s: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)


class _MessageBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    message_id: str
    run_id: str
    lesson_id: str
    turn: int = Field(ge=0, description="position of the message in its lesson, from 0")
    sender: Role
    created_at: datetime = Field(default_factory=utcnow)
    text: str = Field(description="the text exchanged, as the other side saw it")
    generation: Generation | None = Field(
        default=None, description="set when an LLM wrote the text; None for templated text"
    )


class Question(_MessageBase):
    kind: Literal["question"] = "question"
    sender: Role = Role.teacher
    question_index: int = Field(ge=0, description="0-based index of the question in its lesson")
    topic: str
    difficulty: int = Field(ge=1, le=5)
    reference_answer: str = Field(description="never shown to the student")
    solution: str = Field(default="", description="reference solution steps, never shown")
    chosen_from: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="the teacher's estimate, (alpha, beta) of first-try success per topic, "
        "when it chose this question's topic: the run's live estimate, so a choice can be "
        "audited and replayed",
    )


class Answer(_MessageBase):
    kind: Literal["answer"] = "answer"
    sender: Role = Role.student
    question_id: str
    attempt: int = Field(ge=0, description="0 = first try, n = after the n-th reteach")
    prompt: str = Field(default="", description="the full prompt the student model saw")
    final_answer: str | None = Field(description="the parsed final answer; None if none found")
    shown_work: bool = Field(
        default=False,
        description="the student was asked to show its work and end with an 'Answer:' line "
        "(a correct reply to train on is then the worked solution, not the bare answer)",
    )


class Critique(_MessageBase):
    kind: Literal["critique"] = "critique"
    sender: Role = Role.teacher
    question_id: str
    answer_id: str
    attempt: int = Field(ge=0)
    correct: bool
    score: float = Field(ge=0.0, le=1.0)
    error_category: ErrorCategory
    feedback: str
    parse_error: str | None = Field(
        default=None, description="why the teacher's structured reply did not parse, if it did not"
    )


class Reteach(_MessageBase):
    kind: Literal["reteach"] = "reteach"
    sender: Role = Role.teacher
    question_id: str
    attempt: int = Field(ge=1, description="the student attempt this reteach prepares")
    strategy: Strategy
    explanation: str
    worked_example: str = ""
    leaked: bool = Field(
        default=False,
        description="the explanation states the reference answer, so a right answer after it "
        "may be copied rather than learned (pairs from it are excluded by default)",
    )
    written: str = Field(
        default="",
        description="what the teacher's LLM wrote, where the answer was masked out of it "
        "before the student saw it (``explanation``); empty when nothing was masked",
    )


Message = Annotated[Question | Answer | Critique | Reteach, Field(discriminator="kind")]
MESSAGE_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)


def parse_message(data: str | bytes) -> Question | Answer | Critique | Reteach:
    """Parse one message from its JSON form (the inverse of ``message.model_dump_json()``)."""
    return MESSAGE_ADAPTER.validate_json(data)


def as_completion(reply: str, shown_work: bool) -> str:
    """A student's reply as it follows its prompt: the one form every training target and pair
    takes (``Answer.text`` is logged stripped). A direct answer follows the prompt's "Answer:"
    after a space; shown work starts the line the prompt's final newline opened."""
    return reply if shown_work else f" {reply}"


def message_id(lesson_id: str, turn: int) -> str:
    """Stable id: a resumed lesson regenerates the same ids, so store writes stay idempotent."""
    return f"{lesson_id}-m{turn:03d}"
