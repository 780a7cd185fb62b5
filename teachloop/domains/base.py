"""What every domain shares: the problem and verdict types, the ``Domain`` base class that a
domain implements, and ``DomainSet``, which routes each topic to the one domain that owns it.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field, model_validator

from teachloop.answers import error_category
from teachloop.errors import ConfigError
from teachloop.messages import ErrorCategory

MIN_DIFFICULTY, MAX_DIFFICULTY = 1, 5

# Partial credit: a sign slip or a power-of-ten slip shows the method was mostly right.
PARTIAL_CREDIT: Mapping[ErrorCategory, float] = {
    ErrorCategory.none: 1.0,
    ErrorCategory.close: 0.75,
    ErrorCategory.sign: 0.5,
    ErrorCategory.magnitude: 0.5,
    ErrorCategory.wrong: 0.0,
    ErrorCategory.no_answer: 0.0,
}


class Problem(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: str = Field(min_length=1)
    difficulty: int = Field(ge=MIN_DIFFICULTY, le=MAX_DIFFICULTY)
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1, description="canonical reference answer")
    solution: str = Field(description="short step-by-step reference solution ending with it")
    hint: str = Field(description="one sentence: the method, without the final answer")


# A lesson's checkpoint stores its Problem under (module, name), and LangGraph's deserializer
# revives only allow-listed pairs (graphs/lesson.py's CHECKPOINT_TYPES, built from __module__).
# Keep the name checkpoints have always used, so a run interrupted before teachloop.domains
# became a package still resumes.
Problem.__module__ = "teachloop.domains"


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    correct: bool
    score: float = Field(ge=0.0, le=1.0)
    error_category: ErrorCategory

    @model_validator(mode="after")
    def _consistent(self) -> Verdict:
        # A judge may mark an answer correct with category "judged"; nothing else may disagree.
        if self.correct and self.error_category not in (ErrorCategory.none, ErrorCategory.judged):
            raise ValueError(f"a correct verdict cannot have category {self.error_category}")
        if not self.correct and self.error_category is ErrorCategory.none:
            raise ValueError("an incorrect verdict needs an error category other than none")
        return self


def exact_verdict(expected: str, final_answer: str | None) -> Verdict:
    """The verdict of an exact check of ``final_answer`` against the reference."""
    category = error_category(expected, final_answer)
    return Verdict(
        correct=category is ErrorCategory.none,
        score=PARTIAL_CREDIT[category],
        error_category=category,
    )


class Domain(ABC):
    """A subject to teach: where its questions come from and how answers to them are checked.

    Subclass it to teach a subject of your own, and put an instance in a ``DomainSet`` beside
    the built-in ones (``builtin_domains()``). ``ArithmeticDomain``, ``UnitsDomain`` (generators)
    and ``QuestionBank`` (fixed questions from a file) are the examples to follow.

    Attributes:
        name: a short identifier, shown in error messages (``"arithmetic"``).
        topics: the topics this domain owns (``("arithmetic.addition", ...)``). In a
            ``DomainSet`` each topic belongs to exactly one domain; a second claim is a
            ``ConfigError``. A class attribute, or set in ``__init__`` (as ``QuestionBank`` does).

    The contract:

    ``generate(topic, difficulty, rng) -> Problem`` (required)
        ``topic`` is one of ``topics`` and ``difficulty`` an int from ``MIN_DIFFICULTY`` to
        ``MAX_DIFFICULTY`` (1..5, higher is harder); anything else is a ``ConfigError``, which
        ``self._check_request(topic, difficulty)`` raises: call it first. All randomness comes
        from ``rng``, so the same rng state gives the same problem (lessons resume, and the
        held-out set is rebuilt from its seed). The problem has that topic and difficulty; its
        ``answer`` is the canonical reference answer (``teachloop.answers.canonical_answer``),
        which ``exact_verdict`` compares with, and its ``hint`` gives the method without the
        answer. Vary the question text: problems are told apart by it. The held-out evaluation
        set is kept out of lessons by question text, so a domain with few distinct questions
        leaves few for lessons (the teacher stops with a ``ConfigError`` after 200 draws that are
        all held out; ``heldout_problems`` takes fewer for the topic rather than repeat one).
        It is called synchronously inside the lesson loop: keep it cheap and load any data in
        ``__init__`` (as ``load_bank`` does).

    ``verify(problem, final_answer) -> Verdict | None`` (required)
        ``final_answer`` is the answer extracted from the student's reply
        (``teachloop.answers.extract_final_answer``), or None when it gave none. Return a
        ``Verdict`` where an exact check is possible (``exact_verdict(problem.answer,
        final_answer)`` gives correctness, partial credit and the error category), or None
        where only a judge can decide: the teacher's LLM then judges (a question bank's
        free-text answers). It must not raise on any student text: a lesson does not catch it.

    A worked example (optional, through ``Problem.solution``)
        There is no method to implement. When the teacher re-teaches with a worked example, it
        draws another problem of the same topic and difficulty from ``generate`` and shows its
        question and ``solution``; the teacher's LLM also reads the solution (privileged) when
        it writes feedback and explanations. Give a short step-by-step solution that ends with a
        line ``Answer: <answer>``, the student's own format. A domain without solutions gives
        just ``Answer: <answer>``, as a question bank does for a record with no solution.
    """

    name: str
    topics: tuple[str, ...]

    @abstractmethod
    def generate(self, topic: str, difficulty: int, rng: random.Random) -> Problem:
        """A problem of ``topic`` at ``difficulty``; the same rng state gives the same problem."""

    @abstractmethod
    def verify(self, problem: Problem, final_answer: str | None) -> Verdict | None:
        """Check an extracted final answer; None means no exact check: ask a judge."""

    def _check_request(self, topic: str, difficulty: int) -> None:
        if topic not in self.topics:
            raise ConfigError(
                f"domain {self.name!r} has no topic {topic!r}; its topics: {', '.join(self.topics)}"
            )
        if (
            isinstance(difficulty, bool)
            or not isinstance(difficulty, int)
            or not MIN_DIFFICULTY <= difficulty <= MAX_DIFFICULTY
        ):
            raise ConfigError(
                f"difficulty must be an integer {MIN_DIFFICULTY}..{MAX_DIFFICULTY}, "
                f"got {difficulty!r}"
            )


class DomainSet:
    """Routes each topic to the one domain that owns it."""

    def __init__(self, domains: Iterable[Domain]) -> None:
        self._by_topic: dict[str, Domain] = {}
        self.domains: tuple[Domain, ...] = tuple(domains)
        for domain in self.domains:
            for topic in domain.topics:
                other = self._by_topic.get(topic)
                if other is not None:
                    raise ConfigError(
                        f"topic {topic!r} is claimed by both domain {other.name!r} "
                        f"and domain {domain.name!r}"
                    )
                self._by_topic[topic] = domain

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(self._by_topic)

    def __contains__(self, topic: object) -> bool:
        return topic in self._by_topic

    def domain_for(self, topic: str) -> Domain:
        try:
            return self._by_topic[topic]
        except KeyError:
            raise ConfigError(
                f"unknown topic {topic!r}; known topics: {', '.join(self.topics) or '(none)'}"
            ) from None

    def generate(self, topic: str, difficulty: int, rng: random.Random) -> Problem:
        return self.domain_for(topic).generate(topic, difficulty, rng)

    def verify(self, problem: Problem, final_answer: str | None) -> Verdict | None:
        return self.domain_for(problem.topic).verify(problem, final_answer)
