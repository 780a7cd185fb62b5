"""Held-out evaluation: a fixed, seeded question set per topic, asked the way the student sees a
first question in a lesson, checked by the domain's exact verifier.

The same (topics, per_topic, seed) always gives the same problems, so two model versions are
compared on identical questions, and lesson generation can steer clear of them
(``heldout_questions``). Evaluation sends every question at once so a batching backend runs
them in a few ``generate`` calls.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from teachloop.agents.backends.base import Backend, GenerationRequest
from teachloop.agents.prompts import student_prompt
from teachloop.answers import extract_final_answer
from teachloop.domains import MAX_DIFFICULTY, MIN_DIFFICULTY, DomainSet, Problem

# Fresh draws tried at one difficulty before moving on (a question bank may run out).
_DRAWS_PER_DIFFICULTY = 50
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


def _difficulties(i: int) -> list[int]:
    """The difficulty for the i-th problem of a topic (cycling 1..5), then the others in turn."""
    span = MAX_DIFFICULTY - MIN_DIFFICULTY + 1
    return [MIN_DIFFICULTY + (i + k) % span for k in range(span)]


def heldout_problems(
    domains: DomainSet, topics: Sequence[str], per_topic: int, seed: int
) -> list[Problem]:
    """``per_topic`` problems for each topic, difficulties cycling 1..5, no question text twice.

    Deterministic in (topics, per_topic, seed); each topic has its own generator
    (``random.Random(f"heldout/{seed}/{topic}")``), so adding a topic leaves the others' problems
    unchanged. A domain that cannot produce enough distinct questions (a small question bank)
    gives fewer for that topic rather than repeating one.
    """
    if per_topic < 0:
        raise ValueError("per_topic must be >= 0")
    seen: set[str] = set()
    problems: list[Problem] = []
    for topic in dict.fromkeys(topics):  # a topic named twice is evaluated once
        domain = domains.domain_for(topic)
        rng = random.Random(f"heldout/{seed}/{topic}")
        for i in range(per_topic):
            problem = None
            for difficulty in _difficulties(i):
                for _ in range(_DRAWS_PER_DIFFICULTY):
                    candidate = domain.generate(topic, difficulty, rng)
                    if candidate.question not in seen:
                        problem = candidate
                        break
                if problem is not None:
                    break
            if problem is None:
                break  # this topic has no fresh questions left
            seen.add(problem.question)
            problems.append(problem)
    return problems


def heldout_questions(
    domains: DomainSet, topics: Sequence[str], per_topic: int, seed: int
) -> frozenset[str]:
    """The held-out question texts, so that lesson generation can avoid asking them."""
    return frozenset(p.question for p in heldout_problems(domains, topics, per_topic, seed))


async def _is_correct(
    backend: Backend, problem: Problem, domains: DomainSet, max_tokens: int
) -> bool:
    # Exactly what the Student agent sends for a first attempt (no reteach).
    completion = await backend.complete(
        GenerationRequest(
            prompt=student_prompt(problem.question),
            max_tokens=max_tokens,
            temperature=0.0,
            stop=("\n",),
        )
    )
    final = extract_final_answer(completion.text)
    verdict = domains.domain_for(problem.topic).verify(problem, final)
    return verdict is not None and verdict.correct


async def evaluate(
    backend: Backend,
    problems: list[Problem],
    domains: DomainSet,
    *,
    version: str,
    seed: int,
    max_tokens: int = 12,
) -> EvalResult:
    """Ask every problem (concurrently), verify the answers, score per topic and overall.

    A verifier that cannot decide (``None``: a judge would be needed) counts as incorrect. A
    backend error propagates: a broken backend must not look like a model that knows nothing.
    """
    started = time.monotonic()
    verdicts = await asyncio.gather(
        *(_is_correct(backend, p, domains, max_tokens) for p in problems)
    )
    asked: dict[str, int] = {}
    right: dict[str, int] = {}
    for problem, correct in zip(problems, verdicts, strict=True):
        asked[problem.topic] = asked.get(problem.topic, 0) + 1
        right[problem.topic] = right.get(problem.topic, 0) + int(correct)
    scores = [
        TopicScore(topic=t, questions=n, correct=right[t], accuracy=right[t] / n)
        for t, n in asked.items()
    ]
    total = sum(asked.values())
    return EvalResult(
        version=version,
        seed=seed,
        topics=scores,
        accuracy=sum(right.values()) / total if total else 0.0,
        wall_time_s=time.monotonic() - started,
    )


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
    "TopicScore",
    "evaluate",
    "heldout_problems",
    "heldout_questions",
    "regressed",
]
