"""Held-out evaluation: a fixed, seeded question set per topic, asked through the `Student` agent
exactly as a lesson asks its first attempt, checked by the domain's exact verifier.

The same (topics, per_topic, seed) always gives the same problems, so two model versions are
compared on identical questions, and lesson generation can steer clear of them
(``heldout_questions``). Evaluation sends every question at once so a batching backend runs
them in a few ``generate`` calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from teachloop.agents.student import Student
from teachloop.config import RunConfig
from teachloop.domains import DomainSet, Problem, heldout_problems, heldout_questions
from teachloop.progress import progress_bar

# Float slack in the regression gate: a drop of exactly `tolerance` is within it.
_EPSILON = 1e-9
OVERALL = "overall"


class TopicScore(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: str
    questions: int = Field(ge=0)
    correct: int = Field(ge=0)
    accuracy: float = Field(ge=0.0, le=1.0)


class EvalResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    seed: int
    topics: list[TopicScore]
    accuracy: float = Field(ge=0.0, le=1.0, description="micro average over all questions")
    wall_time_s: float = Field(ge=0.0)

    @property
    def questions(self) -> int:
        return sum(t.questions for t in self.topics)

    @property
    def correct(self) -> int:
        return sum(t.correct for t in self.topics)

    def topic(self, topic: str) -> TopicScore | None:
        return next((t for t in self.topics if t.topic == topic), None)

    @classmethod
    def from_scores(
        cls, version: str, seed: int, scores: list[TopicScore], wall_time_s: float = 0.0
    ) -> EvalResult:
        """The overall accuracy is derived here, once: micro average over all questions."""
        total = sum(t.questions for t in scores)
        correct = sum(t.correct for t in scores)
        return cls(
            version=version,
            seed=seed,
            topics=scores,
            accuracy=correct / total if total else 0.0,
            wall_time_s=wall_time_s,
        )


class Scored(BaseModel):
    """A first attempt at a problem: the final answer read from the reply, and its verdict."""

    model_config = ConfigDict(frozen=True)

    answer: str | None
    correct: bool


async def _score(
    student: Student, problem: Problem, done: Callable[[], None] | None = None
) -> Scored:
    _, final = await student.attempt(problem)
    verdict = student.domains.verify(problem, final)
    if done is not None:
        done()
    return Scored(answer=final, correct=verdict is not None and verdict.correct)


async def score_all(
    student: Student, problems: list[Problem], *, done: Callable[[], None] | None = None
) -> list[Scored]:
    """Each problem's first attempt (in order), all asked at once through ``student``, so a
    batching backend batches them; ``done`` is called as each is scored."""
    return list(await asyncio.gather(*(_score(student, p, done) for p in problems)))


def score_model(
    config: RunConfig,
    domains: DomainSet,
    problem_sets: Sequence[list[Problem]],
    *,
    model: Path | None = None,
    adapter: Path | None = None,
    progress: str | None = None,
) -> list[list[Scored]]:
    """The config's student (or the model directory ``model``), plus ``adapter`` if given, on
    each set of problems: one backend, every question asked at once so it batches them.
    ``progress``: a label to show a progress bar under."""
    from teachloop.agents.backends import LoraAdapter, build_backend

    if model is not None:
        config = config.with_overrides(student={**config.student.model_dump(), "model": str(model)})
    lora = LoraAdapter(name=adapter.name, path=adapter) if adapter else None
    backend = build_backend(config, "student", lora)
    flat = [p for problems in problem_sets for p in problems]

    async def run(done: Callable[[], None]) -> list[Scored]:
        try:
            await backend.check()
            return await score_all(Student.for_config(backend, domains, config), flat, done=done)
        finally:
            await backend.aclose()

    with progress_bar(progress, len(flat)) as bar:
        scored = asyncio.run(run(bar.advance))
    out, start = [], 0
    for problems in problem_sets:
        out.append(scored[start : start + len(problems)])
        start += len(problems)
    return out


async def answer_all(student: Student, problems: list[Problem]) -> list[bool]:
    """Whether each problem (in order) was answered correctly on the first try."""
    return [s.correct for s in await score_all(student, problems)]


async def evaluate(
    student: Student,
    problems: list[Problem],
    *,
    version: str,
    seed: int,
) -> EvalResult:
    """Ask every problem (concurrently), verify the answers, score per topic and overall.

    Questions go through ``student`` (``Student.for_config(backend, domains, config)``: the
    lesson's settings), so each request is the one a lesson's first attempt at the question
    sends.

    A verifier that cannot decide (``None``: a judge would be needed) counts as incorrect. A
    backend error propagates: a broken backend must not look like a model that knows nothing.
    """
    started = time.monotonic()
    verdicts = await answer_all(student, problems)
    asked: dict[str, int] = {}
    right: dict[str, int] = {}
    for problem, correct in zip(problems, verdicts, strict=True):
        asked[problem.topic] = asked.get(problem.topic, 0) + 1
        right[problem.topic] = right.get(problem.topic, 0) + int(correct)
    scores = [
        TopicScore(topic=t, questions=n, correct=right[t], accuracy=right[t] / n)
        for t, n in asked.items()
    ]
    return EvalResult.from_scores(version, seed, scores, time.monotonic() - started)


def regressed(candidate: EvalResult, incumbent: EvalResult, tolerance: float) -> list[str]:
    """Topics (in the incumbent's order, then ``"overall"``) where the candidate's accuracy is
    below the incumbent's by more than ``tolerance``; an empty list means it may be promoted.

    A topic the incumbent was scored on but the candidate was not counts as regressed: no
    evidence is not evidence of no regression.
    """
    if tolerance < 0:
        raise ValueError("tolerance must be >= 0")
    worse = []
    for old in incumbent.topics:
        new = candidate.topic(old.topic)
        if new is None or new.accuracy < old.accuracy - tolerance - _EPSILON:
            worse.append(old.topic)
    if candidate.accuracy < incumbent.accuracy - tolerance - _EPSILON:
        worse.append(OVERALL)
    return worse


__all__ = [
    "OVERALL",
    "EvalResult",
    "Scored",
    "TopicScore",
    "answer_all",
    "evaluate",
    "heldout_problems",
    "heldout_questions",
    "regressed",
    "score_all",
    "score_model",
]
