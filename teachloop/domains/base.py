"""Domains: where questions come from and how answers are checked.

Built-in generators (arithmetic, unit conversion) make problems at graded difficulty with exact
reference answers, reference solutions and hints; a user's question bank (JSONL or Parquet)
supplies fixed questions. ``verify`` is exact where it can be; it returns None where only a
judge (the teacher LLM) can decide, e.g. a long free-text answer.
"""

from __future__ import annotations

import json
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from teachloop.answers import (
    answers_match,
    canonical_answer,
    canonical_number,
    error_category,
    parse_number,
)
from teachloop.errors import ConfigError, InputFileError
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


# --- arithmetic --------------------------------------------------------------------------------

_PLACE_OP = {"addition": "+", "subtraction": "-", "multiplication": "×"}


def _with_digits(rng: random.Random, digits: int, low: int = 1) -> int:
    return rng.randint(max(low, 10 ** (digits - 1)), 10**digits - 1)


def _place_parts(n: int) -> list[int]:
    """385 -> [300, 80, 5]: the place-value split a pupil writes down (zeros left out)."""
    text = str(n)
    parts = [int(d) * 10 ** (len(text) - i - 1) for i, d in enumerate(text) if d != "0"]
    return parts or [0]


class ArithmeticDomain(Domain):
    """Integer +, -, × with operands of about ``difficulty`` digits."""

    name = "arithmetic"
    topics: ClassVar[tuple[str, ...]] = (
        "arithmetic.addition",
        "arithmetic.subtraction",
        "arithmetic.multiplication",
    )

    def generate(self, topic: str, difficulty: int, rng: random.Random) -> Problem:
        self._check_request(topic, difficulty)
        op = topic.split(".", 1)[1]
        d = difficulty
        if op == "multiplication":
            # d digits by ceil(d/2) digits: 5x3 digits is already hard long multiplication.
            # Factors 0 and 1 teach nothing, so one-digit factors start at 2.
            a = _with_digits(rng, d, low=2)
            b = _with_digits(rng, math.ceil(d / 2), low=2)
            if rng.random() < 0.5:
                a, b = b, a
            return self._multiplication(topic, d, a, b)
        # One operand has d digits, the other d or d-1, in either order.
        a = _with_digits(rng, d)
        b = _with_digits(rng, rng.choice([d, max(1, d - 1)]))
        if rng.random() < 0.5:
            a, b = b, a
        if op == "addition":
            return self._addition(topic, d, a, b)
        if d <= 3 and a < b:
            a, b = b, a  # negative results only from difficulty 4: a sign is one more thing
        return self._subtraction(topic, d, a, b)

    @staticmethod
    def _question(a: int, op: str, b: int) -> str:
        return f"What is {a} {op} {b}?"

    def _addition(self, topic: str, d: int, a: int, b: int) -> Problem:
        big, small = max(a, b), min(a, b)  # splitting the smaller number takes fewer steps
        steps, total = [], big
        for part in _place_parts(small):
            steps.append(f"{total} + {part} = {total + part}")
            total += part
        solution = (
            f"Add {small} to {big} one place value at a time: "
            + "; ".join(steps)
            + f".\nSo {a} + {b} = {a + b}.\nAnswer: {a + b}"
        )
        return Problem(
            topic=topic,
            difficulty=d,
            question=self._question(a, "+", b),
            answer=str(a + b),
            solution=solution,
            hint="Split one number into its place values and add them to the other one at a time.",
        )

    def _subtraction(self, topic: str, d: int, a: int, b: int) -> Problem:
        big, small = (a, b) if a >= b else (b, a)
        steps, total = [], big
        for part in _place_parts(small):
            steps.append(f"{total} - {part} = {total - part}")
            total -= part
        lines = []
        if a < b:
            lines.append(
                f"{b} is larger than {a}, so work out {b} - {a} and make the result negative."
            )
        lines.append(
            f"Take {small} away from {big} one place value at a time: " + "; ".join(steps) + "."
        )
        lines.append(f"So {a} - {b} = {a - b}.\nAnswer: {a - b}")
        hint = (
            "The second number is larger, so subtract the smaller from the larger "
            "and make the result negative."
            if a < b
            else "Split the number being taken away into its place values "
            "and subtract them one at a time."
        )
        return Problem(
            topic=topic,
            difficulty=d,
            question=self._question(a, "-", b),
            answer=str(a - b),
            solution="\n".join(lines),
            hint=hint,
        )

    def _multiplication(self, topic: str, d: int, a: int, b: int) -> Problem:
        # Split the shorter factor (fewer partial products); a one-digit one is split only if
        # the other factor is longer.
        longer, shorter = (a, b) if len(str(a)) >= len(str(b)) else (b, a)
        split, keep = (shorter, longer) if len(str(shorter)) > 1 else (longer, shorter)
        parts = _place_parts(split)
        hint = (
            "Split one factor into its place values, multiply each part by the other factor, "
            "then add the partial products."
        )
        if len(parts) == 1:
            solution = f"{a} × {b} = {a * b}.\nAnswer: {a * b}"
            hint = "Recall the times table, or add one factor to itself as often as the other says."
        else:
            products = [part * keep for part in parts]
            solution = (
                f"Split {split} into {' + '.join(map(str, parts))} and multiply each part "
                f"by {keep}: "
                + "; ".join(
                    f"{part} × {keep} = {p}" for part, p in zip(parts, products, strict=True)
                )
                + f".\nAdd the partial products: {' + '.join(map(str, products))} = {a * b}."
                + f"\nAnswer: {a * b}"
            )
        return Problem(
            topic=topic,
            difficulty=d,
            question=self._question(a, "×", b),
            answer=str(a * b),
            solution=solution,
            hint=hint,
        )

    def verify(self, problem: Problem, final_answer: str | None) -> Verdict:
        return exact_verdict(problem.answer, final_answer)


# --- unit conversion ---------------------------------------------------------------------------

# (singular, plural, size in the topic's smallest unit), largest first.
_UNITS: dict[str, tuple[tuple[str, str, int], ...]] = {
    "units.length": (
        ("kilometre", "kilometres", 1_000_000),
        ("metre", "metres", 1_000),
        ("centimetre", "centimetres", 10),
        ("millimetre", "millimetres", 1),
    ),
    "units.mass": (
        ("kilogram", "kilograms", 1_000_000),
        ("gram", "grams", 1_000),
        ("milligram", "milligrams", 1),
    ),
    "units.time": (
        ("hour", "hours", 3_600),
        ("minute", "minutes", 60),
        ("second", "seconds", 1),
    ),
}

# Per difficulty: (largest conversion factor, neighbouring units only, decimals in the
# big-unit quantity, largest whole part, whether small -> big (division) questions appear).
_UNIT_LEVELS: dict[int, tuple[int, bool, int, int, bool]] = {
    1: (100, True, 0, 9, False),
    2: (1_000, True, 0, 99, False),
    3: (1_000, True, 1, 99, True),
    4: (1_000_000, False, 2, 99, True),
    5: (1_000_000, False, 3, 999, True),
}


def _unit_name(unit: tuple[str, str, int], quantity: Decimal) -> str:
    return unit[0] if quantity == 1 else unit[1]


class UnitsDomain(Domain):
    """Metric length and mass, and time; exact decimal answers at graded difficulty."""

    name = "units"
    topics: ClassVar[tuple[str, ...]] = tuple(_UNITS)

    def generate(self, topic: str, difficulty: int, rng: random.Random) -> Problem:
        self._check_request(topic, difficulty)
        max_factor, adjacent_only, decimals, max_whole, allow_divide = _UNIT_LEVELS[difficulty]
        units = _UNITS[topic]
        candidates = [
            (big, small)
            for i, big in enumerate(units)
            for small in (units[i + 1 : i + 2] if adjacent_only else units[i + 1 :])
        ]
        pairs = [(b, s) for b, s in candidates if b[2] // s[2] <= max_factor]
        if not pairs:  # mass has no factor under 1000: use its smallest one
            smallest = min(b[2] // s[2] for b, s in candidates)
            pairs = [(b, s) for b, s in candidates if b[2] // s[2] == smallest]
        big, small = rng.choice(pairs)
        factor = big[2] // small[2]
        # Choose the quantity in the big unit, so both directions stay exact decimals
        # (division by 60 would otherwise give 1.666...).
        scale = 10**decimals
        units_value = rng.randint(scale, max_whole * scale)  # at least 1 whole big unit
        if decimals and units_value % 10 == 0:
            units_value += rng.randint(1, 9)  # use every decimal place the level asks for
        big_qty = Decimal(units_value).scaleb(-decimals)
        small_qty = big_qty * factor  # exact: few digits, far below the context precision
        divide = allow_divide and rng.random() < 0.5
        factor_line = f"1 {big[0]} = {factor} {small[1]}"
        if divide:
            given, asked, answer = (small_qty, small), big, big_qty
            how = f"{factor_line}, so divide: {canonical_number(small_qty)} ÷ {factor}"
            hint = f"Find how many {small[1]} make one {big[0]}, then divide by that number."
        else:
            given, asked, answer = (big_qty, big), small, small_qty
            how = f"{factor_line}, so multiply: {canonical_number(big_qty)} × {factor}"
            hint = f"Find how many {small[1]} make one {big[0]}, then multiply by that number."
        qty, unit = given
        return Problem(
            topic=topic,
            difficulty=difficulty,
            question=f"How many {asked[1]} are in {canonical_number(qty)} {_unit_name(unit, qty)}?",
            answer=canonical_number(answer),
            solution=f"{how} = {canonical_number(answer)}.\nAnswer: {canonical_number(answer)}",
            hint=hint,
        )

    def verify(self, problem: Problem, final_answer: str | None) -> Verdict:
        return exact_verdict(problem.answer, final_answer)


# --- question banks ----------------------------------------------------------------------------

# Reference answers up to this many words are checked exactly; longer ones go to a judge.
_SHORT_ANSWER_WORDS = 3
_DEFAULT_HINT = "Read the question carefully and work it out step by step."


class QuestionBank(Domain):
    """Fixed questions from a user's file; topics are whatever the file names."""

    def __init__(self, problems: Iterable[Problem], name: str = "bank") -> None:
        self.name = name
        self.problems: tuple[Problem, ...] = tuple(problems)
        if not self.problems:
            raise ConfigError(f"question bank {name!r} has no questions")
        by_topic: dict[str, list[Problem]] = {}
        for p in self.problems:
            by_topic.setdefault(p.topic, []).append(p)
        self._by_topic = {t: tuple(ps) for t, ps in by_topic.items()}
        self.topics = tuple(self._by_topic)  # in file order

    def generate(self, topic: str, difficulty: int, rng: random.Random) -> Problem:
        self._check_request(topic, difficulty)
        candidates = self._by_topic[topic]
        nearest = min(abs(p.difficulty - difficulty) for p in candidates)
        return rng.choice([p for p in candidates if abs(p.difficulty - difficulty) == nearest])

    def verify(self, problem: Problem, final_answer: str | None) -> Verdict | None:
        if final_answer is None:
            return exact_verdict(problem.answer, None)  # nothing for a judge to read either
        if (
            parse_number(problem.answer) is not None
            or len(problem.answer.split()) <= _SHORT_ANSWER_WORDS
        ):
            return exact_verdict(problem.answer, final_answer)
        return None


def _bank_error(path: Path, where: int | None, message: str) -> InputFileError:
    location = f"{path}:{where}" if where is not None else str(path)
    return InputFileError(f"{location}: {message}".replace("\n", " ").replace("\r", " "))


def _short(value: Any) -> str:
    text = str(value) if isinstance(value, Decimal) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _problem_from_record(record: Any, path: Path, where: int) -> Problem:
    if not isinstance(record, dict):
        raise _bank_error(path, where, f"expected a JSON object, got {type(record).__name__}")
    fields: dict[str, str] = {}
    for key in ("topic", "question", "answer"):
        if key not in record or record[key] is None:
            raise _bank_error(path, where, f"missing field {key!r}")
        value = record[key]
        # A numeric answer is natural in JSON ({"answer": 42}); JSON is read with exact
        # Decimals, so 0.1 stays 0.1.
        if key == "answer" and isinstance(value, int | Decimal) and not isinstance(value, bool):
            value = canonical_number(Decimal(value))
        elif key == "answer" and isinstance(value, float) and math.isfinite(value):
            value = canonical_number(Decimal(repr(value)))  # a Parquet float64 column
        if not isinstance(value, str):
            raise _bank_error(
                path, where, f"field {key!r} must be a string, got {type(value).__name__}"
            )
        if not value.strip():
            raise _bank_error(path, where, f"field {key!r} is empty")
        fields[key] = value.strip()
    optional: dict[str, str] = {}
    for key in ("solution", "hint"):
        value = record.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise _bank_error(
                path, where, f"field {key!r} must be a string, got {type(value).__name__}"
            )
        if value.strip():
            optional[key] = value.strip()
    difficulty = record.get("difficulty", MIN_DIFFICULTY)
    if difficulty is None:
        difficulty = MIN_DIFFICULTY
    if isinstance(difficulty, Decimal) and difficulty == difficulty.to_integral_value():
        difficulty = int(difficulty)  # 2.0 from JSON, or a float column in Parquet
    if isinstance(difficulty, float) and difficulty.is_integer():
        difficulty = int(difficulty)
    if isinstance(difficulty, bool) or not isinstance(difficulty, int):
        raise _bank_error(
            path, where, f"field 'difficulty' must be an integer, got {_short(difficulty)}"
        )
    if not MIN_DIFFICULTY <= difficulty <= MAX_DIFFICULTY:
        raise _bank_error(
            path,
            where,
            f"difficulty {difficulty} is out of range {MIN_DIFFICULTY}..{MAX_DIFFICULTY}",
        )
    answer = canonical_answer(fields["answer"])
    return Problem(
        topic=fields["topic"],
        difficulty=difficulty,
        question=fields["question"],
        answer=answer,
        solution=optional.get("solution", f"Answer: {answer}"),
        hint=optional.get("hint", _DEFAULT_HINT),
    )


def _jsonl_records(path: Path) -> Iterator[tuple[int, Any]]:
    data = path.read_bytes()
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a BOM from Windows editors
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = f"byte {raw[exc.start]:#04x} at column {exc.start + 1}"
            raise _bank_error(path, number, f"not valid UTF-8 ({bad})") from None
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_float=Decimal)
        except json.JSONDecodeError as exc:
            raise _bank_error(
                path, number, f"malformed JSON: {exc.msg} (column {exc.colno})"
            ) from None
        yield number, record


def _parquet_records(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq  # only Parquet banks pay for the import

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise _bank_error(path, None, f"not a readable Parquet file ({exc})") from None
    # Rows are numbered from 1, as lines are, so messages read the same.
    yield from enumerate(table.to_pylist(), start=1)


def load_bank(path: str | Path) -> QuestionBank:
    """Load a question bank: JSONL (one object a line) or Parquet (one row a question).

    Each record: topic, question, answer (required), solution, hint, difficulty (1..5, default
    1). Any problem raises ``InputFileError`` with one line naming the file and the line (row).
    """
    path = Path(path)
    if not path.is_file():
        raise _bank_error(path, None, "no such file")
    records = _parquet_records(path) if path.suffix == ".parquet" else _jsonl_records(path)
    problems = [_problem_from_record(record, path, where) for where, record in records]
    if not problems:
        raise _bank_error(path, None, "the question bank is empty (no questions in the file)")
    return QuestionBank(problems, name=path.stem)


# --- routing ----------------------------------------------------------------------------------


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


def builtin_domains() -> dict[str, Domain]:
    return {"arithmetic": ArithmeticDomain(), "units": UnitsDomain()}


__all__ = [
    "PARTIAL_CREDIT",
    "ArithmeticDomain",
    "Domain",
    "DomainSet",
    "Problem",
    "QuestionBank",
    "UnitsDomain",
    "Verdict",
    "answers_match",
    "builtin_domains",
    "error_category",
    "exact_verdict",
    "load_bank",
]


# -- the held-out set ----------------------------------------------------------------------
# Defined here, beside the generators, because two sides use it: evaluation asks these
# questions, and lessons must never ask them.

# Fresh draws tried at one difficulty before moving on (a question bank may run out).
_DRAWS_PER_DIFFICULTY = 50


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
