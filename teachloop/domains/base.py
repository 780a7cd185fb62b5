"""What every domain shares: the problem and verdict types, the ``Domain`` base class that a
domain implements, and ``DomainSet``, which routes each topic to the one domain that owns it.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, model_validator

from teachloop.answers import error_category, extract_final_answer
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
    solution: str = Field(
        default="",
        description="step-by-step reference solution ending with a line 'Answer: <answer>'; "
        "empty: none (the student is shown no worked example, the teacher's LLM works alone)",
    )
    hint: str = Field(
        default="",
        description="one sentence: the method, without the final answer; empty: none (the "
        "teacher's LLM writes the hint)",
    )
    origin: str = Field(
        default="",
        description="what the domain needs to regenerate the problem's source record when it "
        "verifies an answer (reasoning-gym: task, level and index); empty for most domains",
    )

    @property
    def worked_solution(self) -> str:
        """The solution in the student's shown-work form: the domain's, or just the answer."""
        return self.solution.strip() or f"Answer: {self.answer}"


# A lesson's checkpoint stores its Problem under (module, name), and LangGraph's deserializer
# revives only allow-listed pairs (graphs/lesson.py's CHECKPOINT_TYPES, built from __module__).
# Keep the name checkpoints have always used, so a run interrupted before teachloop.domains
# became a package still resumes.
Problem.__module__ = "teachloop.domains"


class Verdict(BaseModel):
    """An answer's verdict. ``Verdict(correct=...)`` alone is valid: the score is then 1 or 0
    and the category ``none`` or ``wrong``; a verifier with partial credit gives ``score``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    correct: bool
    score: float = Field(default=None, ge=0.0, le=1.0)  # type: ignore[assignment]
    error_category: ErrorCategory = None  # type: ignore[assignment]

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_correctness(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("correct"), bool):
            correct = data["correct"]
            data = dict(data)
            if data.get("score") is None:
                data["score"] = 1.0 if correct else 0.0
            if data.get("error_category") is None:
                data["error_category"] = ErrorCategory.none if correct else ErrorCategory.wrong
        return data

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


# The few-shot examples of numeric answers (the student's prompt since the start), with worked
# solutions for shown work. Generic, so a small question bank keeps all its questions.
GENERIC_EXAMPLES: tuple[Problem, ...] = (
    Problem(
        topic="examples",
        difficulty=1,
        question="What is 12 + 7?",
        answer="19",
        solution="Add the ones: 2 + 7 = 9. Keep the ten: 10 + 9 = 19.\nAnswer: 19",
    ),
    Problem(
        topic="examples",
        difficulty=1,
        question="How many grams are in 2 kilograms?",
        answer="2000",
        solution="1 kilogram is 1000 grams, so 2 kilograms are 2 × 1000 = 2000 grams.\n"
        "Answer: 2000",
    ),
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
        ``max_difficulty(topic)`` (at most ``MAX_DIFFICULTY``; higher is harder); anything else
        is a ``ConfigError``, which ``self._check_request(topic, difficulty)`` raises: call it
        first. All randomness comes from ``rng``, so the same rng state gives the same problem
        (lessons resume, and the held-out set is rebuilt from its seed). The problem has that
        topic and difficulty and a ``question`` and ``answer`` (the reference answer; numbers
        canonical, ``teachloop.answers.canonical_answer``). That is all a problem needs.
        Optional: ``solution`` (step-by-step, ending with a line ``Answer: <answer>``: the
        student's shown-work form; the teacher's LLM reads it, privileged, and the teacher shows
        one of another problem as a worked example), ``hint`` (the method without the answer;
        without one the teacher's LLM writes the hint) and ``origin`` (what ``verify`` needs to
        find the problem's source record again). Vary the question text: problems are told apart
        by it. The held-out evaluation set is kept out of lessons by question text, so a domain
        with few distinct questions leaves few for lessons (the teacher stops with a
        ``ConfigError`` after 200 draws that are all held out; ``heldout_problems`` takes fewer
        for the topic rather than repeat one). It is called synchronously inside the lesson
        loop: keep it cheap and load any data in ``__init__`` (as ``load_bank`` does).

    ``verify(problem, final_answer) -> Verdict | None`` (required)
        ``final_answer`` is the answer ``extract_answer`` found in the student's reply, or None
        when it gave none. Return a ``Verdict`` where a check is possible: ``Verdict(correct=
        ...)`` is enough; give ``score`` for partial credit (``exact_verdict(problem.answer,
        final_answer)`` adds numeric error categories). Return None where only a judge can
        decide: the teacher's LLM then judges (a question bank's free-text answers). It must not
        raise on any student text: a lesson does not catch it.

    Optional, with defaults that suit numeric answers:

    ``instruction``: the student prompt's first line, saying what form an answer takes
        (default ``"Each question is answered with a single number."``).

    ``max_difficulty(topic) -> int``: the hardest difficulty the topic has (default
        ``MAX_DIFFICULTY``; a task without levels has 1). The teacher's staircase, the held-out
        set and the experiments' uniform draws stay within it.
    ``extract_answer(text) -> str | None``: the final answer in a reply's answer text (in
        shown-work mode, the text after its ``Answer:`` line). Default: the number-aware
        ``teachloop.answers.extract_final_answer``; text answers (words, lists) need their own.
    ``examples(topic, shown_work) -> tuple[Problem, ...]``: solved problems that show the
        student the answer's form, put before each question in the student's prompt
        (few-shot; with shown work, their ``worked_solution``). Default: two generic numeric
        examples (``GENERIC_EXAMPLES``). Their questions are never asked in lessons or held
        out.
    """

    name: str
    topics: tuple[str, ...]
    # The first line of the student's prompt: what form an answer takes.
    instruction: str = "Each question is answered with a single number."

    @abstractmethod
    def generate(self, topic: str, difficulty: int, rng: random.Random) -> Problem:
        """A problem of ``topic`` at ``difficulty``; the same rng state gives the same problem."""

    @abstractmethod
    def verify(self, problem: Problem, final_answer: str | None) -> Verdict | None:
        """Check an extracted final answer; None means no exact check: ask a judge."""

    def max_difficulty(self, topic: str) -> int:
        """The hardest difficulty ``topic`` has."""
        return MAX_DIFFICULTY

    def extract_answer(self, text: str) -> str | None:
        """The final answer written in ``text``, normalised; None when there is none."""
        return extract_final_answer(text)

    def examples(self, topic: str, shown_work: bool = False) -> tuple[Problem, ...]:
        """Solved problems that show the student the answer's form (few-shot)."""
        return GENERIC_EXAMPLES

    def _check_request(self, topic: str, difficulty: int) -> None:
        if topic not in self.topics:
            raise ConfigError(
                f"domain {self.name!r} has no topic {topic!r}; its topics: {', '.join(self.topics)}"
            )
        top = self.max_difficulty(topic)
        if (
            isinstance(difficulty, bool)
            or not isinstance(difficulty, int)
            or not MIN_DIFFICULTY <= difficulty <= top
        ):
            raise ConfigError(
                f"{topic}: difficulty must be an integer {MIN_DIFFICULTY}..{top}, "
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

    def capped(self, top: int) -> DomainSet:
        """These domains with every topic's difficulties capped at ``top`` (a topic's own top if
        lower): whatever draws from them (held-out splits, pools, uniform data, the teacher's
        staircase) stays at or below it."""
        return DomainSet(cast(Domain, _Capped(d, top)) for d in self.domains)

    def example_questions(self, topics: Iterable[str]) -> frozenset[str]:
        """The question texts of the topics' few-shot examples (in either answer form): never
        asked in a lesson or held out, since the student's prompt shows their answers."""
        return frozenset(
            p.question
            for topic in topics
            for shown_work in (False, True)
            for p in self.domain_for(topic).examples(topic, shown_work)
        )


class _Capped:
    """A domain whose topics stop at difficulty ``top``; everything else is the domain's own
    (a proxy, not a subclass, so no method falls back to ``Domain``'s defaults)."""

    def __init__(self, domain: Domain, top: int) -> None:
        self._domain, self._top = domain, top

    def __getattr__(self, name: str) -> Any:
        return getattr(self._domain, name)

    def max_difficulty(self, topic: str) -> int:
        return min(self._top, self._domain.max_difficulty(topic))
