"""Answer extraction and comparison, on the kind of text a small base model writes."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from teachloop.answers import (
    answers_match,
    canonical_answer,
    canonical_number,
    error_category,
    extract_final_answer,
    parse_number,
)
from teachloop.messages import ErrorCategory

EXTRACTION_CASES = [
    # bare numbers, as a base model often replies
    (" 19\n", "19"),
    ("19", "19"),
    ("−5", "-5"),
    ("–5", "-5"),
    ("+7", "7"),
    ("0.50", "0.5"),
    (".5", "0.5"),
    ("3.000", "3"),
    ("-0", "0"),
    ("x = -0.0", "0"),
    # separators, currency, units, notation
    ("The answer is 1,234.", "1234"),
    ("1 234", "1234"),
    ("1\u202f234\u202f567", "1234567"),
    ("I think it is 1,234,567.890 meters", "1234567.89"),
    ("12.50 km", "12.5"),
    ("$3", "3"),
    ("-$3.50", "-3.5"),
    ("$-3", "-3"),
    ("3/4", "3/4"),
    ("−3/4", "-3/4"),
    ("1e3", "1000"),
    ("2.5E-2", "0.025"),
    ("1.5 × 10^3", "1500"),
    ("50%", "50"),
    # markers
    ("Answer: -5", "-5"),
    ("answer:-5", "-5"),
    ("The answer is: 42", "42"),
    ("**Answer:** 17", "17"),
    ("The final answer is \\boxed{12}", "12"),
    ("Final answer = 99", "99"),
    ("The result is 432.", "432"),
    ("Answer:\n\n 88", "88"),
    ("= 42", "42"),
    ("47 + 385 = 432", "432"),
    ("47 + 385 equals 432", "432"),
    ("Answer: 47 + 385 = 432", "432"),
    ("Answer: 432. Check: 432 - 47 = 385", "432"),
    ("Step 1: 40 + 380 = 420\nStep 2: 420 + 12 = 432", "432"),
    ("First 3 + 4 = 7. Answer: 7", "7"),
    ("3.5 m = 3.5 × 100 cm = 350 cm", "350"),
    # leading junk, and a base model running on into its next few-shot question
    ("Hmm, let me think. 7 apples", "7"),
    ("`42`", "42"),
    ("_7_", "7"),
    ("x2 is 14", "14"),  # "x2" is a name, not a number
    ("What is 47 + 385?\n\n432", "432"),  # an echoed question is skipped
    ("Is it 5?", "5"),  # ... unless it is all there is
    ("5?\nI think so.", "5"),  # an unsure answer is not a question
    ("What is 47 + 385? 432", "432"),
    ("What is 47 + 385? The answer is 432.", "432"),
    ("Q: What is 3 + 4? A: 7", "7"),
    ("Question: What is 47 + 385?\n432", "432"),
    ("Question: What is 47 + 385?\nAnswer: 432\nQuestion: What is 3 + 4?\nAnswer: 7", "432"),
    ("432\nQuestion: What is 5 + 6?\n5 + 6 = 11", "432"),
    ("Q: What is 3+4?\nA: 7", "7"),
    ("A: 7\nQ: What is 8 + 1?\nA: 9", "7"),
    # non-numeric replies
    ("Paris.", "paris"),
    ("  Mitochondria!  \nIt makes energy.", "mitochondria"),
    ("Answer: Paris!", "paris"),
    ('Answer: "Blue whale".', "blue whale"),
    ("I don't know", "i don't know"),
    # nothing at all
    ("", None),
    ("   \n\t ", None),
]


@pytest.mark.parametrize(("text", "expected"), EXTRACTION_CASES)
def test_extract_final_answer(text: str, expected: str | None) -> None:
    assert extract_final_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,234", Decimal(1234)),
        ("1 234", Decimal(1234)),
        ("-5", Decimal(-5)),
        ("−5", Decimal(-5)),
        ("3/4", Decimal("0.75")),
        ("-3/4", Decimal("-0.75")),
        ("6 / 8", Decimal("0.75")),
        ("1e3", Decimal(1000)),
        ("12.5 km", Decimal("12.5")),
        ("3 apples", Decimal(3)),
        ("$3", Decimal(3)),
        ("50%", Decimal(50)),
        ("  0.1 ", Decimal("0.1")),
        (
            "123456789012345678901234567890.123456789",
            Decimal("123456789012345678901234567890.123456789"),
        ),
    ],
)
def test_parse_number(text: str, expected: Decimal) -> None:
    value = parse_number(text)
    assert value == expected
    assert value is not None and value.as_tuple() == value.as_tuple()  # a real Decimal


def test_parse_number_exact_beyond_float() -> None:
    # float would turn this into 0.30000000000000004-style noise or round the digits.
    assert parse_number("0.1") + parse_number("0.2") == Decimal("0.3")  # type: ignore[operator]
    assert canonical_number(parse_number("12345678901234567890.5")) == "12345678901234567890.5"  # type: ignore[arg-type]


def test_parse_number_fraction_is_precise() -> None:
    third = parse_number("1/3")
    assert third is not None
    assert abs(third * 3 - 1) < Decimal("1e-70")


@pytest.mark.parametrize(
    "text", ["", "   ", "abc", "five", "1/0", "5 red apples", "1 2 3 4", "1e99999", "3 - 4"]
)
def test_parse_number_rejects(text: str) -> None:
    assert parse_number(text) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("1.500"), "1.5"),
        (Decimal("100"), "100"),
        (Decimal("1E+3"), "1000"),
        (Decimal("1E-7"), "0.0000001"),
        (Decimal("-0"), "0"),
        (Decimal("-0.00"), "0"),
        (Decimal("-12.340"), "-12.34"),
        (Decimal("0.000"), "0"),
    ],
)
def test_canonical_number(value: Decimal, expected: str) -> None:
    assert canonical_number(value) == expected


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_canonical_number_rejects_non_finite(value: Decimal) -> None:
    with pytest.raises(ValueError, match="finite"):
        canonical_number(value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,234.50", "1234.5"),
        ("−7", "-7"),
        ("  42 ", "42"),
        ("3/4", "3/4"),  # 1/3 has no finite decimal form, so fractions stay fractions
        ("12 km", "12 km"),
        (" Paris ", "Paris"),
    ],
)
def test_canonical_answer(text: str, expected: str) -> None:
    assert canonical_answer(text) == expected


@pytest.mark.parametrize(
    ("expected", "got", "match"),
    [
        ("432", "432", True),
        ("432", "432.0", True),
        ("432", "432.00001", False),
        ("0.75", "3/4", True),
        ("1/3", "0.3333333333333333", True),
        ("1/3", "0.333", False),
        ("12.5 km", "12.5", True),
        ("-5", "5", False),
        ("0", "-0", True),
        ("Paris", "paris", True),
        ("New York", " new   york. ", True),
        ("Paris", "London", False),
        ("7", "seven", False),
        ("5", None, False),
    ],
)
def test_answers_match(expected: str, got: str | None, match: bool) -> None:
    assert answers_match(expected, got) is match


def test_answers_match_tolerance_is_relative() -> None:
    assert answers_match("1000000", "1000000.0001", rel_tol=Decimal("1e-9"))
    assert not answers_match("0.001", "0.0010001", rel_tol=Decimal("1e-9"))
    assert answers_match("0.001", "0.0010001", rel_tol=Decimal("1e-3"))


@pytest.mark.parametrize(
    ("expected", "got", "category"),
    [
        ("350", None, ErrorCategory.no_answer),
        ("350", "350", ErrorCategory.none),
        ("350", "-350", ErrorCategory.sign),
        ("-7508", "7508", ErrorCategory.sign),
        ("350", "3.5", ErrorCategory.magnitude),
        ("350", "35000", ErrorCategory.magnitude),
        ("0.035", "3.5", ErrorCategory.magnitude),
        ("350", "3500", ErrorCategory.magnitude),
        ("350", "-3.5", ErrorCategory.wrong),  # sign and magnitude both off
        ("350", "351", ErrorCategory.close),
        ("350", "333", ErrorCategory.close),  # 4.9% off
        ("350", "332", ErrorCategory.wrong),  # 5.1% off
        ("350", "530", ErrorCategory.wrong),
        ("0", "1", ErrorCategory.wrong),
        ("0", "0", ErrorCategory.none),
        ("paris", "Paris", ErrorCategory.none),
        ("paris", "london", ErrorCategory.wrong),
        ("350", "three hundred", ErrorCategory.wrong),
    ],
)
def test_error_category(expected: str, got: str | None, category: ErrorCategory) -> None:
    assert error_category(expected, got) is category


# --- properties --------------------------------------------------------------------------------

finite_decimals = st.builds(
    lambda mantissa, exponent: Decimal(f"{mantissa}e{exponent}"),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=-30, max_value=30),
)


@given(finite_decimals)
def test_canonical_round_trip(x: Decimal) -> None:
    text = canonical_number(x)
    value = parse_number(text)
    assert value == x
    assert canonical_number(value) == text  # type: ignore[arg-type]
    assert "e" not in text.lower() and "," not in text
    assert text == "0" or not text.startswith("-0") or "." in text


def _format_variants(n: Decimal) -> list[str]:
    """How a model might write n: plain, grouped with commas or thin spaces, unicode minus."""
    plain = format(n, "f")
    grouped = format(n, ",f")
    return [
        plain,
        grouped,
        grouped.replace(",", "\u2009"),
        plain.replace("-", "\u2212"),
        grouped.replace("-", "\u2212"),
    ]


@settings(max_examples=150)
@given(
    st.one_of(
        st.integers(min_value=-(10**12), max_value=10**12).map(Decimal),
        st.decimals(
            min_value=-(10**9), max_value=10**9, places=3, allow_nan=False, allow_infinity=False
        ),
    ),
    st.integers(min_value=0, max_value=4),
    st.sampled_from(["Answer: {}", "The answer is {}.", "So the result is {}\n", "{}", "= {} "]),
)
def test_extract_recovers_formatted_number(n: Decimal, variant: int, template: str) -> None:
    text = template.format(_format_variants(n)[variant])
    got = extract_final_answer(text)
    assert got == canonical_number(n)
    assert parse_number(got) == n


@given(st.text(max_size=200))
def test_extract_never_fails_and_never_returns_empty(text: str) -> None:
    got = extract_final_answer(text)
    assert got is None or got.strip() == got != ""
    if got is not None and parse_number(got) is not None:
        # a numeric answer is a fixed point: extracting it again changes nothing
        assert extract_final_answer(got) == got


@given(st.text(max_size=80))
def test_answers_match_is_reflexive(text: str) -> None:
    assert answers_match(text, text)


@given(finite_decimals, finite_decimals)
def test_answers_match_is_symmetric_on_numbers(a: Decimal, b: Decimal) -> None:
    x, y = canonical_number(a), canonical_number(b)
    assert answers_match(x, y) == answers_match(y, x)
