"""Domains: generators give correct, graded, reproducible problems; verifiers and bank loading."""

from __future__ import annotations

import importlib
import json
import math
import random
import re
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import ValidationError

from teachloop.answers import extract_final_answer
from teachloop.domains import (
    ArithmeticDomain,
    Domain,
    DomainSet,
    Problem,
    QuestionBank,
    UnitsDomain,
    Verdict,
    builtin_domains,
    exact_verdict,
    heldout_problems,
    load_bank,
)
from teachloop.errors import ConfigError, InputFileError
from teachloop.messages import ErrorCategory

DIFFICULTIES = range(1, 6)
SEEDS = range(25)

# --- arithmetic --------------------------------------------------------------------------------

ARITH_QUESTION = re.compile(r"What is (\d+) ([-+×]) (\d+)\?")


def _arith(problem: Problem) -> tuple[int, str, int]:
    m = ARITH_QUESTION.fullmatch(problem.question)
    assert m is not None, problem.question
    return int(m[1]), m[2], int(m[3])


@pytest.mark.parametrize("topic", ArithmeticDomain.topics)
@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_arithmetic_answers_are_correct(topic: str, difficulty: int) -> None:
    domain = ArithmeticDomain()
    for seed in SEEDS:
        p = domain.generate(topic, difficulty, random.Random(seed))
        a, op, b = _arith(p)
        expected = {"+": a + b, "-": a - b, "×": a * b}[op]
        assert op == {"addition": "+", "subtraction": "-", "multiplication": "×"}[topic[11:]]
        assert p.answer == str(expected)
        assert (p.topic, p.difficulty) == (topic, difficulty)
        # the reference solution ends with the answer, in a form the extractor reads back
        assert p.solution.rstrip().endswith(p.answer)
        assert extract_final_answer(p.solution) == p.answer
        assert domain.verify(p, p.answer) == Verdict(
            correct=True, score=1.0, error_category=ErrorCategory.none
        )


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_arithmetic_difficulty_sets_operand_digits(difficulty: int) -> None:
    domain = ArithmeticDomain()
    for seed in SEEDS:
        rng = random.Random(seed)
        for topic in ("arithmetic.addition", "arithmetic.subtraction"):
            a, _, b = _arith(domain.generate(topic, difficulty, rng))
            assert len(str(max(a, b))) == difficulty
            assert len(str(min(a, b))) >= max(1, difficulty - 1)
        a, _, b = _arith(domain.generate("arithmetic.multiplication", difficulty, rng))
        assert sorted([len(str(a)), len(str(b))]) == sorted([difficulty, math.ceil(difficulty / 2)])
        assert min(a, b) >= 2  # x0 and x1 teach nothing


def test_subtraction_goes_negative_only_at_higher_difficulty() -> None:
    domain = ArithmeticDomain()
    for d in DIFFICULTIES:
        answers = [
            int(domain.generate("arithmetic.subtraction", d, random.Random(s)).answer)
            for s in range(60)
        ]
        if d <= 3:
            assert min(answers) >= 0
        else:
            assert min(answers) < 0 < max(answers)


def test_arithmetic_hints_give_the_method_not_the_answer() -> None:
    domain = ArithmeticDomain()
    for topic in domain.topics:
        for d in DIFFICULTIES:
            p = domain.generate(topic, d, random.Random(d))
            assert p.hint.endswith(".") and p.hint.count(".") == 1  # one sentence
            assert not re.search(r"\d", p.hint)


# --- units -------------------------------------------------------------------------------------

# Independent table of unit sizes (in the smallest unit of each quantity).
UNIT_SIZE = {
    "kilometres": 10**6,
    "metres": 10**3,
    "centimetres": 10,
    "millimetres": 1,
    "kilograms": 10**6,
    "grams": 10**3,
    "milligrams": 1,
    "hours": 3600,
    "minutes": 60,
    "seconds": 1,
}
UNITS_QUESTION = re.compile(r"How many (\w+) are in ([\d.]+) (\w+)\?")


def _units(problem: Problem) -> tuple[str, Decimal, str]:
    m = UNITS_QUESTION.fullmatch(problem.question)
    assert m is not None, problem.question
    given_unit = m[3] if m[3].endswith("s") else m[3] + "s"
    assert m[3].endswith("s") == (Decimal(m[2]) != 1)  # "1 metre", "2 metres", "1.5 metres"
    return m[1], Decimal(m[2]), given_unit


@pytest.mark.parametrize("topic", UnitsDomain.topics)
@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_units_answers_are_exact(topic: str, difficulty: int) -> None:
    domain = UnitsDomain()
    family = {
        "units.length": {"kilometres", "metres", "centimetres", "millimetres"},
        "units.mass": {"kilograms", "grams", "milligrams"},
        "units.time": {"hours", "minutes", "seconds"},
    }[topic]
    for seed in SEEDS:
        p = domain.generate(topic, difficulty, random.Random(seed))
        asked, qty, given_unit = _units(p)
        assert {asked, given_unit} <= family and asked != given_unit
        expected = Fraction(qty) * UNIT_SIZE[given_unit] / UNIT_SIZE[asked]
        assert Fraction(Decimal(p.answer)) == expected  # exact, no float rounding
        assert p.solution.rstrip().endswith(p.answer)
        assert extract_final_answer(p.solution) == p.answer
        assert not re.search(r"\d", p.hint)
        assert domain.verify(p, p.answer).correct  # type: ignore[union-attr]


def _decimals(value: Decimal) -> int:
    return max(0, -value.normalize().as_tuple().exponent)  # type: ignore[operator]


def test_units_difficulty_grades_factors_and_decimals() -> None:
    domain = UnitsDomain()
    stats = {}
    for d in DIFFICULTIES:
        factors, decimals, divides = [], [], 0
        for seed in range(40):
            for topic in domain.topics:
                p = domain.generate(topic, d, random.Random(seed))
                asked, qty, given_unit = _units(p)
                ratio = Fraction(UNIT_SIZE[given_unit], UNIT_SIZE[asked])
                divides += ratio < 1
                factors.append(max(ratio, 1 / ratio))
                decimals.append(max(_decimals(qty), _decimals(Decimal(p.answer))))
        stats[d] = (max(factors), sum(decimals) / len(decimals), divides)
    # easy levels: whole numbers, multiply only, small factors
    assert stats[1] == (1000, 0, 0)  # 1000 only for mass, whose smallest step is 1000
    assert stats[2][1:] == (0, 0)
    # harder levels: decimals, division, and conversions that skip units (km -> mm)
    assert stats[3][1] > 0 and stats[3][2] > 0
    assert stats[4][0] == stats[5][0] == 10**6
    assert stats[1][1] <= stats[3][1] < stats[4][1] < stats[5][1]


def test_units_mass_at_difficulty_one_uses_the_smallest_step() -> None:
    p = UnitsDomain().generate("units.mass", 1, random.Random(3))
    asked, _, given_unit = _units(p)
    assert UNIT_SIZE[given_unit] // UNIT_SIZE[asked] == 1000


# --- all generators ----------------------------------------------------------------------------


@pytest.mark.parametrize("domain", list(builtin_domains().values()), ids=lambda d: d.name)
def test_generation_is_deterministic(domain) -> None:  # type: ignore[no-untyped-def]
    def batch(seed: int) -> list[Problem]:
        rng = random.Random(seed)
        return [domain.generate(t, d, rng) for t in domain.topics for d in DIFFICULTIES]

    assert batch(7) == batch(7)
    assert batch(7) != batch(8)


@pytest.mark.parametrize("domain", list(builtin_domains().values()), ids=lambda d: d.name)
def test_generate_rejects_bad_requests(domain) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="no topic 'nope'"):
        domain.generate("nope", 1, random.Random(0))
    for bad in (0, 6, True, 2.0):
        with pytest.raises(ConfigError, match="difficulty"):
            domain.generate(domain.topics[0], bad, random.Random(0))


# --- verification ------------------------------------------------------------------------------


def _problem(answer: str, topic: str = "units.length") -> Problem:
    return Problem(
        topic=topic, difficulty=1, question="?", answer=answer, solution="", hint="Think."
    )


@pytest.mark.parametrize(
    ("got", "correct", "score", "category"),
    [
        ("350", True, 1.0, ErrorCategory.none),
        ("350.0", True, 1.0, ErrorCategory.none),
        ("351", False, 0.75, ErrorCategory.close),
        ("-350", False, 0.5, ErrorCategory.sign),
        ("3.5", False, 0.5, ErrorCategory.magnitude),
        ("35000", False, 0.5, ErrorCategory.magnitude),
        ("17", False, 0.0, ErrorCategory.wrong),
        ("metres", False, 0.0, ErrorCategory.wrong),
        (None, False, 0.0, ErrorCategory.no_answer),
    ],
)
@pytest.mark.parametrize("domain", [ArithmeticDomain(), UnitsDomain()], ids=["arith", "units"])
def test_verify_categories(
    domain: ArithmeticDomain | UnitsDomain,
    got: str | None,
    correct: bool,
    score: float,
    category: ErrorCategory,
) -> None:
    verdict = domain.verify(_problem("350"), got)
    assert verdict == Verdict(correct=correct, score=score, error_category=category)


def test_verify_on_extracted_student_text() -> None:
    domain = UnitsDomain()
    p = _problem("350")
    assert domain.verify(p, extract_final_answer("3.5 m is 350 cm.\nAnswer: 350 cm")).correct
    assert (
        domain.verify(p, extract_final_answer("Answer: 3.5")).error_category
        is ErrorCategory.magnitude
    )


def test_models_validate() -> None:
    with pytest.raises(ValidationError):
        Problem(topic="t", difficulty=0, question="q", answer="1", solution="", hint="")
    with pytest.raises(ValidationError):
        Problem(topic="t", difficulty=6, question="q", answer="1", solution="", hint="")
    with pytest.raises(ValidationError):
        Verdict(correct=True, score=0.5, error_category=ErrorCategory.wrong)
    with pytest.raises(ValidationError):
        Verdict(correct=False, score=0.0, error_category=ErrorCategory.none)
    with pytest.raises(ValidationError):
        Verdict(correct=False, score=1.5, error_category=ErrorCategory.wrong)
    judged = Verdict(correct=True, score=0.8, error_category=ErrorCategory.judged)
    with pytest.raises(ValidationError):
        judged.score = 0.1  # type: ignore[misc]
    p = _problem("1")
    assert Problem.model_validate_json(p.model_dump_json()) == p


# --- question banks ----------------------------------------------------------------------------


def _write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


BANK = [
    {"topic": "geo.capitals", "question": "Capital of France?", "answer": "Paris"},
    {
        "topic": "geo.capitals",
        "question": "Capital of Australia?",
        "answer": "Canberra",
        "difficulty": 3,
        "hint": "It is not the largest city.",
    },
    {"topic": "math.big", "question": "What is 1000 + 234?", "answer": "1,234", "difficulty": 2},
    {"topic": "math.big", "question": "Half of 3?", "answer": 1.5, "solution": "3 / 2 = 1.5"},
    {
        "topic": "bio.explain",
        "question": "Why do leaves change colour in autumn?",
        "answer": "Chlorophyll breaks down, revealing other pigments such as carotenoids.",
        "difficulty": 5,
    },
]


def test_load_bank_happy_path(tmp_path: Path) -> None:
    path = tmp_path / "quiz.jsonl"
    path.write_text(
        "\ufeff" + json.dumps(BANK[0]) + "\n\n" + "\n".join(json.dumps(r) for r in BANK[1:]),
        encoding="utf-8",
    )
    bank = load_bank(path)
    assert isinstance(bank, QuestionBank)
    assert bank.name == "quiz"
    assert bank.topics == ("geo.capitals", "math.big", "bio.explain")
    assert len(bank.problems) == 5
    by_q = {p.question: p for p in bank.problems}
    assert by_q["What is 1000 + 234?"].answer == "1234"  # canonicalised
    assert by_q["Half of 3?"].answer == "1.5"  # a JSON number, read exactly
    assert by_q["Half of 3?"].solution == "3 / 2 = 1.5"
    assert by_q["Capital of France?"].difficulty == 1  # default
    assert by_q["Capital of France?"].solution.endswith("Paris")  # default solution
    assert by_q["Capital of Australia?"].hint == "It is not the largest city."


def test_bank_generate_picks_the_closest_difficulty(tmp_path: Path) -> None:
    bank = load_bank(_write_jsonl(tmp_path / "b.jsonl", BANK))
    for seed in range(10):
        rng = random.Random(seed)
        assert bank.generate("geo.capitals", 1, rng).answer == "Paris"
        assert bank.generate("geo.capitals", 3, rng).answer == "Canberra"
        assert bank.generate("geo.capitals", 5, rng).answer == "Canberra"
        assert bank.generate("bio.explain", 1, rng).difficulty == 5  # the only one there is
    # difficulty 2 is one away from both 1 and 3: the rng breaks the tie
    picks = {bank.generate("geo.capitals", 2, random.Random(s)).answer for s in range(20)}
    assert picks == {"Paris", "Canberra"}
    with pytest.raises(ConfigError, match="no topic"):
        bank.generate("geo.rivers", 1, random.Random(0))


def test_bank_generate_is_deterministic_and_varied(tmp_path: Path) -> None:
    records = [
        {"topic": "t", "question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(20)
    ]
    bank = load_bank(_write_jsonl(tmp_path / "b.jsonl", records))

    def picks(seed: int) -> list[str]:
        rng = random.Random(seed)
        return [bank.generate("t", 1, rng).question for _ in range(10)]

    assert picks(1) == picks(1)
    assert len(set(picks(1))) > 1


def test_bank_verify(tmp_path: Path) -> None:
    bank = load_bank(_write_jsonl(tmp_path / "b.jsonl", BANK))
    by_q = {p.question: p for p in bank.problems}
    paris, big, explain = (
        by_q["Capital of France?"],
        by_q["What is 1000 + 234?"],
        by_q["Why do leaves change colour in autumn?"],
    )
    assert bank.verify(paris, extract_final_answer("Paris.")).correct  # type: ignore[union-attr]
    assert bank.verify(paris, "london") == Verdict(
        correct=False, score=0.0, error_category=ErrorCategory.wrong
    )
    assert bank.verify(big, extract_final_answer("The answer is 1 234.")).correct  # type: ignore[union-attr]
    assert bank.verify(big, "123.4").error_category is ErrorCategory.magnitude  # type: ignore[union-attr]
    # long free text: no exact verifier, the teacher LLM judges
    assert bank.verify(explain, "chlorophyll breaks down") is None
    # an empty reply needs no judge
    assert bank.verify(explain, None).error_category is ErrorCategory.no_answer  # type: ignore[union-attr]


GOOD = '{"topic": "t", "question": "q?", "answer": "1"}'


@pytest.mark.parametrize(
    ("second_line", "message"),
    [
        ('{"topic": "t", "question": "q?", "answer": "1"', "malformed JSON"),
        ("not json at all", "malformed JSON"),
        ('["t", "q", "1"]', "expected a JSON object, got list"),
        ('{"question": "q?", "answer": "1"}', "missing field 'topic'"),
        ('{"topic": "t", "answer": "1"}', "missing field 'question'"),
        ('{"topic": "t", "question": "q?"}', "missing field 'answer'"),
        ('{"topic": "t", "question": "q?", "answer": null}', "missing field 'answer'"),
        ('{"topic": "", "question": "q?", "answer": "1"}', "field 'topic' is empty"),
        ('{"topic": "t", "question": "   ", "answer": "1"}', "field 'question' is empty"),
        (
            '{"topic": 3, "question": "q?", "answer": "1"}',
            "field 'topic' must be a string, got int",
        ),
        ('{"topic": "t", "question": "q?", "answer": true}', "'answer' must be a string, got bool"),
        ('{"topic": "t", "question": "q?", "answer": ["1"]}', "'answer' must be a string"),
        ('{"topic": "t", "question": "q?", "answer": "1", "hint": 5}', "'hint' must be a string"),
        ('{"topic": "t", "question": "q", "answer": "1", "solution": {}}', "'solution' must be"),
        ('{"topic": "t", "question": "q?", "answer": "1", "difficulty": 0}', "out of range"),
        ('{"topic": "t", "question": "q?", "answer": "1", "difficulty": 6}', "out of range"),
        (
            '{"topic": "t", "question": "q?", "answer": "1", "difficulty": "2"}',
            "must be an integer",
        ),
        (
            '{"topic": "t", "question": "q?", "answer": "1", "difficulty": 2.5}',
            "must be an integer",
        ),
        (
            '{"topic": "t", "question": "q?", "answer": "1", "difficulty": true}',
            "must be an integer",
        ),
    ],
)
def test_load_bank_errors_name_file_and_line(
    tmp_path: Path, second_line: str, message: str
) -> None:
    path = tmp_path / "mybank.jsonl"
    path.write_text(f"{GOOD}\n\n{second_line}\n{GOOD}\n", encoding="utf-8")  # the bad one: line 3
    with pytest.raises(InputFileError) as info:
        load_bank(path)
    text = str(info.value)
    assert text.startswith(f"{path}:3: ")
    assert message in text
    assert "\n" not in text


def test_load_bank_rejects_bad_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(GOOD.encode() + b'\n{"topic": "t", "question": "caf\xe9?", "answer": "1"}\n')
    with pytest.raises(InputFileError) as info:
        load_bank(path)
    assert str(info.value) == f"{path}:2: not valid UTF-8 (byte 0xe9 at column 32)"


def test_load_bank_accepts_integral_float_difficulty(tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl"
    path.write_text('{"topic": "t", "question": "q?", "answer": "1", "difficulty": 2.0}\n')
    assert load_bank(path).problems[0].difficulty == 2


@pytest.mark.parametrize("content", ["", "\n\n   \n"])
def test_load_bank_rejects_an_empty_bank(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(InputFileError, match=r"empty\.jsonl: the question bank is empty"):
        load_bank(path)


def test_load_bank_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match=r"nowhere\.jsonl: no such file"):
        load_bank(tmp_path / "nowhere.jsonl")


def test_question_bank_needs_questions() -> None:
    with pytest.raises(ConfigError, match="no questions"):
        QuestionBank([])


def test_load_bank_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "bank.parquet"
    pq.write_table(
        pa.table(
            {
                "topic": ["t", "t"],
                "question": ["What is 0.1 + 0.2?", "Largest planet?"],
                "answer": ["0.3", "Jupiter"],
                "difficulty": [2, None],
            }
        ),
        path,
    )
    bank = load_bank(path)
    assert [(p.answer, p.difficulty) for p in bank.problems] == [("0.3", 2), ("Jupiter", 1)]

    bad = tmp_path / "bad.parquet"
    pq.write_table(
        pa.table({"topic": ["t", "t"], "question": ["q", "q"], "answer": ["1", ""]}), bad
    )
    with pytest.raises(InputFileError, match=r"bad\.parquet:2: field 'answer' is empty"):
        load_bank(bad)

    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet")
    with pytest.raises(InputFileError, match=r"garbage\.parquet: not a readable Parquet file"):
        load_bank(garbage)


# --- routing -----------------------------------------------------------------------------------


def test_builtin_domains() -> None:
    domains = builtin_domains()
    assert set(domains) == {"arithmetic", "units"}
    assert isinstance(domains["arithmetic"], ArithmeticDomain)
    assert isinstance(domains["units"], UnitsDomain)
    assert all(name == d.name for name, d in domains.items())


def test_domain_set_routes_topics(tmp_path: Path) -> None:
    bank = load_bank(_write_jsonl(tmp_path / "b.jsonl", BANK))
    ds = DomainSet([*builtin_domains().values(), bank])
    assert ds.topics == (
        "arithmetic.addition",
        "arithmetic.subtraction",
        "arithmetic.multiplication",
        "units.length",
        "units.mass",
        "units.time",
        "geo.capitals",
        "math.big",
        "bio.explain",
    )
    assert isinstance(ds.domain_for("units.time"), UnitsDomain)
    assert ds.domain_for("geo.capitals") is bank
    assert "math.big" in ds and "math.small" not in ds
    p = ds.generate("arithmetic.addition", 2, random.Random(0))
    assert ds.verify(p, p.answer).correct  # type: ignore[union-attr]


def test_domain_set_unknown_topic_lists_known_ones() -> None:
    ds = DomainSet([ArithmeticDomain()])
    with pytest.raises(ConfigError) as info:
        ds.domain_for("arithmetic.division")
    assert str(info.value) == (
        "unknown topic 'arithmetic.division'; known topics: arithmetic.addition, "
        "arithmetic.subtraction, arithmetic.multiplication"
    )


def test_domain_set_rejects_a_topic_claimed_twice() -> None:
    with pytest.raises(ConfigError, match=r"topic 'units\.length' is claimed by both"):
        DomainSet([UnitsDomain(), UnitsDomain()])


# --- the package -------------------------------------------------------------------------------

# What teachloop.domains exported as one module, and the module of the package that owns each.
PUBLIC_NAMES = {
    "MIN_DIFFICULTY": "base",
    "MAX_DIFFICULTY": "base",
    "PARTIAL_CREDIT": "base",
    "Problem": "base",
    "Verdict": "base",
    "exact_verdict": "base",
    "Domain": "base",
    "DomainSet": "base",
    "ArithmeticDomain": "arithmetic",
    "UnitsDomain": "units",
    "QuestionBank": "banks",
    "load_bank": "banks",
    "heldout_problems": "heldout",
    "heldout_questions": "heldout",
    "builtin_domains": None,  # the package's own list of built-ins
    "answers_match": None,  # teachloop.answers', re-exported
    "error_category": None,
}


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_public_names_import_from_the_package(name: str) -> None:
    domains = importlib.import_module("teachloop.domains")
    value = getattr(domains, name)
    assert name in domains.__all__
    owner = PUBLIC_NAMES[name]
    if owner is not None:
        assert getattr(importlib.import_module(f"teachloop.domains.{owner}"), name) is value


def test_a_checkpointed_problem_keeps_its_name() -> None:
    # Checkpoints written before the package split name the type teachloop.domains.Problem.
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    problem = ArithmeticDomain().generate("arithmetic.addition", 2, random.Random(0))
    assert (Problem.__module__, Problem.__name__) == ("teachloop.domains", "Problem")
    data = JsonPlusSerializer().dumps_typed({"problem": problem})
    serde = JsonPlusSerializer(allowed_msgpack_modules=[("teachloop.domains", "Problem")])
    assert serde.loads_typed(data) == {"problem": problem}


class _Capitals(Domain):
    """A user's own domain, written to the Domain docstring's contract."""

    name = "capitals"
    topics: ClassVar[tuple[str, ...]] = ("geo.capital",)
    _PAIRS = (("France", "Paris"), ("Peru", "Lima"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"))

    def generate(self, topic: str, difficulty: int, rng: random.Random) -> Problem:
        self._check_request(topic, difficulty)
        country, city = rng.choice(self._PAIRS)
        return Problem(
            topic=topic,
            difficulty=difficulty,
            question=f"What is the capital of {country}?",
            answer=city,
            solution=f"The capital of {country} is {city}.\nAnswer: {city}",
            hint="Think of the city where the country's government sits.",
        )

    def verify(self, problem: Problem, final_answer: str | None) -> Verdict | None:
        return exact_verdict(problem.answer, final_answer)


def test_a_domain_of_ones_own_joins_the_built_ins() -> None:
    ds = DomainSet([*builtin_domains().values(), _Capitals()])
    problem = ds.generate("geo.capital", 3, random.Random(1))
    assert problem == _Capitals().generate("geo.capital", 3, random.Random(1))
    assert ds.verify(problem, problem.answer) == Verdict(
        correct=True, score=1.0, error_category=ErrorCategory.none
    )
    with pytest.raises(ConfigError, match="difficulty must be an integer"):
        ds.generate("geo.capital", 6, random.Random(1))
    # Four distinct questions: the held-out set takes what there is rather than repeat one.
    heldout = heldout_problems(ds, ["geo.capital"], 10, seed=0)
    assert len(heldout) == len({p.question for p in heldout}) == 4
