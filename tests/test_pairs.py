"""Preference pairs from hand-made logs: each rule, dedupe, the normalisation filter, the
watermark; the core's definitions the pair SQL uses (answer equality, the completion's form) and
the answer-to-verdict link."""

from collections.abc import Callable

import pytest
from conftest import current_question
from helpers import lesson

from teachloop import Store
from teachloop.agents.backends.base import GenerationRequest
from teachloop.agents.backends.scripted import ScriptedBackend
from teachloop.agents.prompts import student_prompt
from teachloop.agents.student import Student
from teachloop.answers import answers_match
from teachloop.domains import Problem
from teachloop.graphs.runner import run_lessons
from teachloop.messages import Answer, Critique, Question, as_completion
from teachloop.records import AnyMessage, LessonLog
from teachloop.training.pairs import RULES, build_pairs, unused_pairs
from teachloop.training.trainer import TrainingExample


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "pairs.duckdb")


def test_each_rule_with_provenance(store: Store) -> None:
    store.write_lessons(
        [
            lesson("L1", [("7", False), ("5", True)]),  # fixed by the reteach
            lesson("L2", [("8", False), ("9", False)], question="What is 4 + 4?", reference="8.0"),
            lesson("L3", [("3", False), ("1", False)], question="What is 1 + 3?", reference="4"),
            lesson("L4", [("5", True)]),  # right first time: no pair
        ]
    )
    built = build_pairs(store)
    assert built.lessons == 4
    pairs = {p.lesson_id: p for p in unused_pairs(store)}
    assert set(pairs) == {"L1", "L3"}
    own = pairs["L1"]
    assert (own.rule, own.chosen, own.rejected) == ("self_corrected", " 5", " 7")
    assert own.prompt == student_prompt("What is 2 + 3?") and "Teacher" not in own.prompt
    assert own.source_ids == ["L1-m000", "L1-m001", "L1-m004"]
    ref = pairs["L3"]
    assert (ref.rule, ref.chosen, ref.rejected) == ("reference", " 4", " 3")
    # L2: the rejected "8" and the reference "8.0" normalise to the same number: dropped
    assert built.added == {"self_corrected": 1, "reference": 1, "self_corrected_leaked": 0}


def test_duplicates_and_same_answers_are_dropped(store: Store) -> None:
    store.write_lessons(
        [
            lesson("L1", [("7", False), ("5", True)]),
            lesson("L2", [("7", False), ("5", True)]),  # same prompt/chosen/rejected
            lesson("L3", [("5", False), ("5", True)], question="What is 0 + 5?"),  # judge flip
        ]
    )
    built = build_pairs(store)
    assert built.added == {"self_corrected": 1, "reference": 0, "self_corrected_leaked": 0}
    assert [p.lesson_id for p in unused_pairs(store)] == ["L1"]


def test_watermark_makes_builds_incremental(store: Store) -> None:
    store.write_lessons([lesson("L1", [("7", False), ("5", True)])])
    assert build_pairs(store).added["self_corrected"] == 1
    again = build_pairs(store)
    assert again.lessons == 0 and again.added == dict.fromkeys(RULES, 0)
    store.write_lessons(
        [lesson("L2", [("6", False), ("1", False)], question="What is 3 + 3?", reference="6")]
    )
    third = build_pairs(store)
    # "6" vs reference "6": the wrong verdict contradicts the answers, so no pair is made
    assert third.lessons == 1 and third.added == dict.fromkeys(RULES, 0)
    assert third.unused == 1


def test_pairs_from_a_real_scripted_run(make_config) -> None:
    def fixed_by_reteach(request: GenerationRequest) -> str:
        q = current_question(request.prompt)
        a, b = q.removeprefix("What is ").removesuffix("?").split(" + ")
        return f" {int(a) + int(b)}" if "Teacher:" in request.prompt else " 0"

    config = make_config(lessons=3, topics=("arithmetic.addition",))
    run_lessons(
        config,
        teacher_backend=ScriptedBackend(lambda r: " Add."),
        student_backend=ScriptedBackend(fixed_by_reteach),
        progress=False,
    )
    store = Store(config.db)
    built = build_pairs(store)
    pairs = unused_pairs(store)
    assert built.lessons == 3
    assert len(pairs) == sum(built.added.values()) == built.unused
    assert {p.rule for p in pairs} == {"self_corrected"}
    assert all(p.rejected == " 0" and p.prompt.endswith("\nAnswer:") for p in pairs)


def test_a_fix_after_a_leaked_reteach_is_tagged_and_not_trained_on(store: Store) -> None:
    store.write_lessons(
        [
            lesson("L1", [("7", False), ("5", True)], leaked=True),  # copied, maybe
            lesson("L2", [("6", False), ("5", True)]),  # fixed by a reteach that did not tell
        ]
    )
    built = build_pairs(store)
    assert built.added == {"self_corrected": 1, "reference": 0, "self_corrected_leaked": 1}
    assert [p.lesson_id for p in unused_pairs(store)] == ["L2"]
    tagged = {p.lesson_id: p.rule for p in unused_pairs(store, RULES)}
    assert tagged == {"L1": "self_corrected_leaked", "L2": "self_corrected"}
    # the same pairs for one run, without moving the watermark or consuming anything
    assert [p.lesson_id for p in store.run_pairs("r")] == ["L2"]
    assert [p.rule for p in store.run_pairs("r", RULES)] == [
        "self_corrected_leaked",
        "self_corrected",
    ]
    # and the views credit the leaked fix only in after_reteach_accuracy
    (row,) = store.query(
        "SELECT after_reteach_accuracy, after_reteach_accuracy_no_leaks, leaked_reteaches "
        "FROM topic_accuracy"
    ).to_pylist()
    assert row == {
        "after_reteach_accuracy": 1.0,
        "after_reteach_accuracy_no_leaks": 0.5,
        "leaked_reteaches": 1,
    }


def _edited(log: LessonLog, edit: Callable[[AnyMessage], dict]) -> LessonLog:
    """``log`` with each message updated by ``edit(message)`` (a dict of new field values)."""
    return log.model_copy(update={"messages": [m.model_copy(update=edit(m)) for m in log.messages]})


def test_same_answers_are_the_cores_answers_match(store: Store) -> None:
    """One definition of answer equality (``answers_match``): "0.75" is "3/4" and "12.5" is
    "12.5 km" (a cast to DOUBLE saw neither), "0.7" is not "3/4"."""
    cases = [("3/4", "0.75"), ("12.5 km", "12.5"), ("3/4", "0.7")]
    store.write_lessons(
        [
            lesson(f"L{i}", [(got, False), ("1", False)], question=f"What is {i}?", reference=ref)
            for i, (ref, got) in enumerate(cases)
        ]
    )
    build_pairs(store)
    kept = [p.lesson_id for p in unused_pairs(store)]
    assert kept == [f"L{i}" for i, (ref, got) in enumerate(cases) if not answers_match(ref, got)]
    assert kept == ["L2"]


def test_an_answer_meets_its_verdict_by_answer_id(store: Store) -> None:
    """The critique names the answer it judged (``Critique.answer_id``); the pair SQL follows
    that link, not the attempt numbers: here the critiques' attempts are swapped, and the wrong
    first answer still pairs with the right second one."""
    swapped = {0: 1, 1: 0}
    log = _edited(
        lesson("L1", [("7", False), ("5", True)]),
        lambda m: {"attempt": swapped[m.attempt]} if isinstance(m, Critique) else {},
    )
    store.write_lessons([log])
    build_pairs(store)
    (pair,) = unused_pairs(store)
    assert (pair.rule, pair.chosen, pair.rejected) == ("self_corrected", " 5", " 7")


@pytest.mark.parametrize("shown_work", [False, True])
def test_a_pair_and_a_uniform_example_follow_the_prompt_alike(
    store: Store, shown_work: bool
) -> None:
    """How a completion follows its prompt is ``as_completion``'s: a lesson's pair (built in
    SQL) and an experiment's uniform example (``Student.reference_completion``) agree."""
    solution = "1 + 3 = 4\nAnswer: 4"
    problem = Problem(
        topic="arithmetic.addition",
        difficulty=1,
        question="What is 1 + 3?",
        answer="4",
        solution=solution,
    )

    def shown(m: AnyMessage) -> dict:
        if isinstance(m, Question):
            return {"solution": problem.worked_solution}
        return {"shown_work": shown_work} if isinstance(m, Answer) else {}

    log = lesson("L1", [("3", False), ("1", False)], question=problem.question, reference="4")
    store.write_lessons([_edited(log, shown)])
    build_pairs(store)
    (pair,) = store.unused_pairs(targets=("solution" if shown_work else "answer",))
    student = Student(None, shown_work=shown_work)
    assert pair.chosen == student.reference_completion(problem)
    assert pair.chosen == (solution if shown_work else " 4")
    assert pair.rejected == as_completion("3", shown_work)
    assert TrainingExample.of_pair(pair).chosen == pair.chosen
