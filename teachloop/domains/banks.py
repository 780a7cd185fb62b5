"""Question banks: fixed questions from a user's JSONL or Parquet file.

Short answers (numbers, a few words) are checked exactly; longer ones go to a judge.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from teachloop.answers import canonical_answer, canonical_number, parse_number
from teachloop.domains.base import (
    MAX_DIFFICULTY,
    MIN_DIFFICULTY,
    Domain,
    Problem,
    Verdict,
    exact_verdict,
)
from teachloop.errors import ConfigError, InputFileError

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
