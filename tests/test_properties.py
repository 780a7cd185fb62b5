"""Property tests of the message protocol: any valid message round-trips exactly through JSON,
and anything else is refused with a pydantic ValidationError (never another exception).

(Answer normalisation has its own property tests in tests/test_answers.py.)
"""

from __future__ import annotations

import json
from datetime import UTC, timedelta, timezone

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from teachloop.messages import (
    Answer,
    Critique,
    ErrorCategory,
    Generation,
    Question,
    Reteach,
    Role,
    Strategy,
    parse_message,
)

text = st.text(max_size=60)
counts = st.integers(min_value=0, max_value=2**40)
# Aware times in any whole-minute offset, and naive ones: all must come back as they went.
offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda m: timezone(timedelta(minutes=m))
)
times = st.one_of(
    st.datetimes(timezones=st.one_of(st.just(UTC), offsets)),
    st.datetimes(),
)
floats = st.floats(allow_nan=False, allow_infinity=False)
generations = st.none() | st.builds(
    Generation,
    model=text,
    endpoint=text,
    prompt_tokens=counts,
    completion_tokens=counts,
    latency_s=st.floats(min_value=0.0, allow_nan=False, allow_infinity=False),
)


def common() -> dict:
    return {
        "message_id": text,
        "run_id": text,
        "lesson_id": text,
        "turn": counts,
        "created_at": times,
        "text": text,
        "generation": generations,
    }


questions = st.builds(
    Question,
    **common(),
    sender=st.sampled_from(Role),
    question_index=counts,
    topic=text,
    difficulty=st.integers(1, 5),
    reference_answer=text,
    solution=text,
)
answers = st.builds(
    Answer,
    **common(),
    sender=st.sampled_from(Role),
    question_id=text,
    attempt=counts,
    prompt=text,
    final_answer=st.none() | text,
)
critiques = st.builds(
    Critique,
    **common(),
    sender=st.sampled_from(Role),
    question_id=text,
    answer_id=text,
    attempt=counts,
    correct=st.booleans(),
    score=st.floats(0.0, 1.0),
    error_category=st.sampled_from(ErrorCategory),
    feedback=text,
)
reteaches = st.builds(
    Reteach,
    **common(),
    sender=st.sampled_from(Role),
    question_id=text,
    attempt=st.integers(min_value=1, max_value=2**40),
    strategy=st.sampled_from(Strategy),
    explanation=text,
    worked_example=text,
)
messages = st.one_of(questions, answers, critiques, reteaches)


@settings(max_examples=400)
@given(messages)
def test_any_valid_message_round_trips_exactly(message) -> None:
    dumped = message.model_dump_json()
    back = parse_message(dumped)
    assert type(back) is type(message)
    assert back == message
    assert back.model_dump_json() == dumped
    # the time, offset included, comes back as it went (== alone ignores the offset)
    assert back.created_at.utcoffset() == message.created_at.utcoffset()
    # bytes in, the same message out
    assert parse_message(dumped.encode()) == message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | floats | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


def _refused(data: str | bytes) -> None:
    try:
        parse_message(data)
    except ValidationError:
        return
    pytest.fail(f"accepted junk: {data!r}")


@given(json_values)
def test_random_json_is_refused_with_a_validation_error(value) -> None:
    _refused(json.dumps(value))


@given(st.binary(max_size=200))
def test_random_bytes_are_refused_with_a_validation_error(data: bytes) -> None:
    _refused(data)


@given(st.text(max_size=200))
def test_random_text_is_refused_with_a_validation_error(data: str) -> None:
    _refused(data)


_REQUIRED = {
    "question": ["message_id", "run_id", "lesson_id", "turn", "text", "question_index", "topic"],
    "answer": ["message_id", "turn", "text", "question_id", "attempt", "final_answer"],
    "critique": ["question_id", "answer_id", "attempt", "correct", "score", "error_category"],
    "reteach": ["question_id", "attempt", "strategy", "explanation"],
}
# values no field of that name accepts
_BAD_VALUES = {
    "turn": [-1, "seven", 1.5, None, []],
    "attempt": [-1, "x", 2.5, None],
    "difficulty": [0, 6, "3x", None],
    "score": [-0.1, 1.01, "high", None],
    "correct": ["maybe", 2, None],
    "error_category": ["typo", 3, None],
    "strategy": ["lecture", None],
    "sender": ["robot", None, 1],
    "created_at": ["yesterday", [], None],
    "text": [None, 5, ["a"]],
    "generation": ["gpt", 5, {"model": "m", "unknown": 1}, {"prompt_tokens": "many"}],
}


@st.composite
def broken_messages(draw) -> str:
    """A valid message's JSON with one thing broken: a required field gone, an unknown field
    added, the kind changed or gone, or a field given a value of the wrong type or range."""
    message = draw(messages)
    data = json.loads(message.model_dump_json())
    kind = data["kind"]
    how = draw(st.sampled_from(["drop", "extra", "kind", "no_kind", "value", "not_object"]))
    if how == "drop":
        del data[draw(st.sampled_from(_REQUIRED[kind]))]
    elif how == "extra":
        name = draw(st.text(min_size=1, max_size=12))
        assume(name not in data)
        data[name] = draw(json_values)
    elif how == "kind":
        data["kind"] = draw(
            st.text(max_size=10).filter(lambda k: k not in _REQUIRED) | st.integers() | st.none()
        )
    elif how == "no_kind":
        del data["kind"]
    elif how == "value":
        field = draw(st.sampled_from([f for f in _BAD_VALUES if f in data]))
        data[field] = draw(st.sampled_from(_BAD_VALUES[field]))
    else:
        data = draw(st.sampled_from([[data], json.dumps(data), None, 1]))
    return json.dumps(data)


@settings(max_examples=400, suppress_health_check=[HealthCheck.filter_too_much])
@given(broken_messages())
def test_a_broken_message_is_refused_with_a_validation_error(data: str) -> None:
    _refused(data)


@given(messages, st.integers(min_value=1, max_value=40))
def test_a_cut_message_is_refused_with_a_validation_error(message, cut: int) -> None:
    dumped = message.model_dump_json()
    _refused(dumped[: max(0, len(dumped) - cut)])


@pytest.mark.parametrize("latency", [float("inf"), float("-inf"), float("nan")])
def test_a_non_finite_latency_is_refused_built_or_parsed(latency: float) -> None:
    """JSON has no inf/nan, so a log holding one would not parse back: refused both ways in."""
    with pytest.raises(ValidationError, match="latency_s"):
        Generation(latency_s=latency)
    answer = Answer(
        message_id="a",
        run_id="r",
        lesson_id="l",
        turn=0,
        text="",
        question_id="q",
        attempt=0,
        final_answer=None,
        generation=Generation(latency_s=0.5),
    )
    data = json.loads(answer.model_dump_json())
    assert parse_message(json.dumps(data)) == answer  # the finite original parses back
    data["generation"]["latency_s"] = latency
    _refused(json.dumps(data))  # Python's json writes Infinity / NaN
