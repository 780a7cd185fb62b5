from datetime import UTC, datetime

import pytest
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
    message_id,
    parse_message,
)

WHEN = datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC)
COMMON = {"run_id": "r", "lesson_id": "r-L00000", "created_at": WHEN}


def all_kinds() -> list:
    gen = Generation(
        model="m",
        endpoint="http://127.0.0.1:1/v1",
        prompt_tokens=9,
        completion_tokens=3,
        latency_s=0.25,
    )
    return [
        Question(
            message_id="q",
            turn=0,
            text="What is 2 + 2?",
            question_index=0,
            topic="arithmetic.addition",
            difficulty=1,
            reference_answer="4",
            solution="2 + 2 = 4",
            **COMMON,
        ),
        Answer(
            message_id="a",
            turn=1,
            text=" 5",
            prompt="Question: ...",
            question_id="q",
            attempt=0,
            final_answer="5",
            generation=gen,
            **COMMON,
        ),
        Critique(
            message_id="c",
            turn=2,
            text="No.",
            question_id="q",
            answer_id="a",
            attempt=0,
            correct=False,
            score=0.0,
            error_category=ErrorCategory.wrong,
            feedback="Count again.",
            generation=gen,
            **COMMON,
        ),
        Reteach(
            message_id="t",
            turn=3,
            text="Hint",
            question_id="q",
            attempt=1,
            strategy=Strategy.worked_example,
            explanation="Add ones.",
            worked_example="1 + 1 = 2",
            **COMMON,
        ),
    ]


@pytest.mark.parametrize("message", all_kinds(), ids=lambda m: m.kind)
def test_json_round_trip_is_exact(message) -> None:
    text = message.model_dump_json()
    back = parse_message(text)
    assert back == message
    assert type(back) is type(message)
    assert back.model_dump_json() == text


def test_kind_selects_type_and_sender_defaults() -> None:
    kinds = {m.kind: (type(m), m.sender) for m in all_kinds()}
    assert kinds == {
        "question": (Question, Role.teacher),
        "answer": (Answer, Role.student),
        "critique": (Critique, Role.teacher),
        "reteach": (Reteach, Role.teacher),
    }


def test_rejects_unknown_kind_extra_fields_and_bad_values() -> None:
    good = all_kinds()[0].model_dump(mode="json")
    with pytest.raises(ValidationError):
        parse_message('{"kind": "lecture"}')
    with pytest.raises(ValidationError):
        Question.model_validate({**good, "surprise": 1})
    with pytest.raises(ValidationError):
        Question.model_validate({**good, "difficulty": 9})
    critique = all_kinds()[2].model_dump(mode="json")
    with pytest.raises(ValidationError):
        Critique.model_validate({**critique, "score": 1.5})


def test_message_ids_are_stable_and_ordered() -> None:
    assert message_id("run-L00003", 7) == "run-L00003-m007"
    assert message_id("x", 2) < message_id("x", 10)


def test_a_versioned_model_name_parses_back_to_its_model() -> None:
    """``model@version`` is built and read in one place (``teachloop.records``)."""
    from teachloop.records import model_of, versioned_model

    for model in ("gemma-3-270m", "/models/a@b/gemma", "org/model_1"):
        name = versioned_model(model, "v0003")
        assert (name, model_of(name)) == (f"{model}@v0003", model)
    assert model_of("no-version") == "no-version"
