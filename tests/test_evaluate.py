"""Held-out evaluation (problem sets, scoring, the promotion gate) and LoRA adapters in the
in-process backend (on the tiny random model)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import adds_only_student
from helpers import random_lora_adapter
from tiny_model import build_tiny_model, greedy_text, load_reference

from teachloop.agents.backends.base import GenerationRequest
from teachloop.agents.backends.scripted import ScriptedBackend
from teachloop.agents.backends.transformers_backend import TransformersBackend
from teachloop.agents.prompts import student_prompt
from teachloop.agents.student import Student
from teachloop.domains import DomainSet, QuestionBank, builtin_domains
from teachloop.domains import Problem as DomainProblem
from teachloop.errors import BackendUnavailable
from teachloop.training.evaluate import (
    EvalResult,
    TopicScore,
    evaluate,
    heldout_problems,
    heldout_questions,
    regressed,
)

TOPICS = ("arithmetic.addition", "arithmetic.subtraction", "units.length")


@pytest.fixture
def domains() -> DomainSet:
    return DomainSet(builtin_domains().values())


# -- held-out problem sets -------------------------------------------------------------------


def test_heldout_problems_are_deterministic_and_distinct(domains: DomainSet) -> None:
    a = heldout_problems(domains, TOPICS, 20, seed=7)
    b = heldout_problems(domains, TOPICS, 20, seed=7)
    assert a == b
    assert len(a) == 60
    assert [p.topic for p in a] == [t for t in TOPICS for _ in range(20)]
    questions = [p.question for p in a]
    assert len(set(questions)) == len(questions)  # no duplicates, within or across topics
    by_topic = {t: {p.question for p in a if p.topic == t} for t in TOPICS}
    assert not by_topic[TOPICS[0]] & by_topic[TOPICS[1]]
    assert not by_topic[TOPICS[1]] & by_topic[TOPICS[2]]
    # difficulties cycle 1..5 within each topic
    assert [p.difficulty for p in a[:10]] == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]


def test_heldout_problems_depend_on_seed_and_not_on_other_topics(domains: DomainSet) -> None:
    base = heldout_problems(domains, TOPICS, 10, seed=1)
    assert base != heldout_problems(domains, TOPICS, 10, seed=2)
    # Each topic has its own generator: dropping a topic leaves the others' problems alone.
    alone = heldout_problems(domains, ["arithmetic.subtraction"], 10, seed=1)
    assert alone == [p for p in base if p.topic == "arithmetic.subtraction"]
    # A longer set starts with the shorter one.
    assert heldout_problems(domains, TOPICS[:1], 15, seed=1)[:10] == base[:10]


def test_heldout_questions_matches_problems(domains: DomainSet) -> None:
    """What lessons must not ask: the held-out questions and the few-shot examples' (whose
    answers the student's prompt shows), which are never held out themselves."""
    questions = heldout_questions(domains, TOPICS, 5, seed=3)
    assert isinstance(questions, frozenset)
    heldout = {p.question for p in heldout_problems(domains, TOPICS, 5, seed=3)}
    examples = {"What is 12 + 7?", "How many grams are in 2 kilograms?"}
    assert questions == heldout | examples and not heldout & examples


def test_small_question_bank_gives_fewer_rather_than_repeats() -> None:
    bank = QuestionBank(
        [
            DomainProblem(
                topic="capitals", difficulty=1, question=q, answer=a, solution=a, hint="-"
            )
            for q, a in [("Capital of France?", "Paris"), ("Capital of Peru?", "Lima")]
        ]
    )
    problems = heldout_problems(DomainSet([bank]), ["capitals"], 5, seed=0)
    assert sorted(p.question for p in problems) == ["Capital of France?", "Capital of Peru?"]


# -- evaluation ------------------------------------------------------------------------------


async def test_evaluate_scores_per_topic_and_overall(domains: DomainSet) -> None:
    topics = ["arithmetic.addition", "arithmetic.multiplication", "arithmetic.subtraction"]
    problems = heldout_problems(domains, topics, 4, seed=11)
    backend = ScriptedBackend(adds_only_student, delay_s=0.01)
    result = await evaluate(Student(backend, domains), problems, version="base", seed=11)

    assert result.version == "base" and result.seed == 11
    assert result.topics == [
        TopicScore(topic="arithmetic.addition", questions=4, correct=4, accuracy=1.0),
        TopicScore(topic="arithmetic.multiplication", questions=4, correct=0, accuracy=0.0),
        TopicScore(topic="arithmetic.subtraction", questions=4, correct=0, accuracy=0.0),
    ]
    assert result.accuracy == pytest.approx(4 / 12)
    assert result.questions == 12 and result.correct == 4
    assert result.wall_time_s >= 0
    # Asked the way the student sees a first question.
    assert len(backend.requests) == 12
    request = backend.requests[0]
    assert request.prompt == student_prompt(problems[0].question)
    assert request.temperature == 0.0 and request.stop == ("\n",) and request.max_tokens == 12


async def test_the_gate_asks_exactly_what_a_lesson_asks_first(make_config, domains) -> None:
    """The held-out request for a question equals the request a lesson's first attempt at the
    same question sends: same prompt, stop strings, max_tokens and temperature. The lesson's
    comes from a real run; the evaluation is called as training/jobs.py calls it."""
    from conftest import current_question, teacher_reply

    from teachloop.graphs.runner import arun_lessons

    config = make_config(lessons=1, student={"max_tokens": 7})
    in_lesson = ScriptedBackend(adds_only_student)
    await arun_lessons(
        config,
        teacher_backend=ScriptedBackend(teacher_reply),
        student_backend=in_lesson,
        progress=False,
    )
    first = in_lesson.requests[0]  # the lesson's first question, first attempt
    question = current_question(first.prompt)
    problem = DomainProblem(
        topic="arithmetic.addition", difficulty=1, question=question, answer="0", solution="0",
        hint="-",
    )  # fmt: skip
    in_eval = ScriptedBackend(adds_only_student)
    await evaluate(
        Student(in_eval, domains, max_tokens=config.student.max_tokens),
        [problem],
        version="v",
        seed=0,
    )
    assert in_eval.requests == [first]
    assert first.max_tokens == 7 and first.stop == ("\n",)


async def test_evaluate_sends_all_questions_concurrently(domains: DomainSet) -> None:
    problems = heldout_problems(domains, TOPICS, 5, seed=0)
    in_flight = peak = 0

    class Counting(ScriptedBackend):
        async def complete(self, request: GenerationRequest):  # type: ignore[override]
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                return await super().complete(request)
            finally:
                in_flight -= 1

    await evaluate(
        Student(Counting(adds_only_student, delay_s=0.02), domains), problems, version="v", seed=0
    )
    assert peak == len(problems)


async def test_undecidable_verdict_counts_as_incorrect() -> None:
    long_answer = "because the moon pulls on the oceans"  # too long for an exact check
    bank = QuestionBank(
        [
            DomainProblem(
                topic="science",
                difficulty=1,
                question="Why are there tides?",
                answer=long_answer,
                solution=long_answer,
                hint="-",
            )
        ]
    )
    domains = DomainSet([bank])
    problems = heldout_problems(domains, ["science"], 1, seed=0)
    result = await evaluate(
        Student(ScriptedBackend(lambda r: f" {long_answer}\n"), domains),
        problems,
        version="v",
        seed=0,
    )
    assert result.topics[0].correct == 0 and result.accuracy == 0.0


async def test_evaluate_empty_problem_list(domains: DomainSet) -> None:
    result = await evaluate(
        Student(ScriptedBackend(lambda r: " 1"), domains), [], version="v", seed=0
    )
    assert result.topics == [] and result.accuracy == 0.0


async def test_backend_errors_propagate(domains: DomainSet) -> None:
    def broken(request: GenerationRequest) -> str:
        raise BackendUnavailable("down")

    problems = heldout_problems(domains, TOPICS[:1], 2, seed=0)
    with pytest.raises(BackendUnavailable):
        await evaluate(Student(ScriptedBackend(broken), domains), problems, version="v", seed=0)


# -- promotion gate --------------------------------------------------------------------------


def _result(overall: float, **topics: float) -> EvalResult:
    return EvalResult(
        version="x",
        seed=0,
        topics=[
            TopicScore(topic=t, questions=100, correct=round(a * 100), accuracy=a)
            for t, a in topics.items()
        ],
        accuracy=overall,
        wall_time_s=1.0,
    )


def test_regressed_gate() -> None:
    incumbent = _result(0.5, add=0.8, mul=0.2)
    assert regressed(incumbent, incumbent, 0.0) == []  # equal
    assert regressed(_result(0.48, add=0.77, mul=0.19), incumbent, 0.05) == []  # within
    assert regressed(_result(0.45, add=0.75, mul=0.2), incumbent, 0.05) == []  # exactly at it
    assert regressed(_result(0.6, add=0.9, mul=0.3), incumbent, 0.0) == []  # improvement
    # beyond tolerance: the topic, and overall when that drops too
    assert regressed(_result(0.5, add=0.7, mul=0.3), incumbent, 0.05) == ["add"]
    assert regressed(_result(0.3, add=0.5, mul=0.1), incumbent, 0.05) == ["add", "mul", "overall"]
    assert regressed(_result(0.4, add=0.8, mul=0.2), incumbent, 0.05) == ["overall"]
    # a topic the candidate was not evaluated on cannot be shown not to regress
    assert regressed(_result(0.5, add=0.8), incumbent, 0.05) == ["mul"]
    with pytest.raises(ValueError):
        regressed(incumbent, incumbent, -0.1)


# -- LoRA adapters in the transformers backend -----------------------------------------------

PROMPTS = [
    student_prompt("What is 12 + 30?"),
    "Question: What is 2 + 3?\nAnswer:",
    "Hi",
    "Answer: 42",
]


@pytest.fixture(scope="module")
def tiny_with_adapter(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny model and a LoRA adapter for it with random B weights."""
    root = tmp_path_factory.mktemp("adapter")
    model_dir = build_tiny_model(root / "tiny")
    return model_dir, random_lora_adapter(model_dir, root / "v0001")


async def test_adapter_is_merged_and_matches_unmerged_peft(
    tiny_with_adapter: tuple[Path, Path],
) -> None:
    import torch

    model_dir, adapter_dir = tiny_with_adapter
    backend = TransformersBackend(model_dir, dtype="float32", adapter_dir=adapter_dir)
    try:
        await backend.check()
        assert backend.name == f"{model_dir.name}+v0001"
        # merged: plain transformers modules, no LoRA layers left at generation time
        assert not any("lora" in n for n, _ in backend._model.named_parameters())

        tokenizer, peft_model = load_reference(model_dir, adapter_dir)
        _, base_model = load_reference(model_dir)
        # Same next-token distribution (within float tolerance), hence the same argmax.
        for prompt in PROMPTS:
            ids = tokenizer(prompt, return_tensors="pt")
            with torch.inference_mode():
                merged = backend._model(**ids).logits
                unmerged = peft_model(**ids).logits
                base = base_model(**ids).logits
            torch.testing.assert_close(merged, unmerged, atol=1e-4, rtol=1e-4)
            assert torch.equal(merged.argmax(-1), unmerged.argmax(-1))
            assert not torch.allclose(merged, base, atol=1e-2)  # the adapter does something

        # Greedy generation through the backend (batched) equals unmerged PEFT's, one by one.
        requests = [GenerationRequest(prompt=p, max_tokens=10) for p in PROMPTS]
        completions = await asyncio.wait_for(
            asyncio.gather(*(backend.complete(r) for r in requests)), 120
        )
        expected = [greedy_text(tokenizer, peft_model, p, 10) for p in PROMPTS]
        assert [c.text for c in completions] == expected
        base_texts = [greedy_text(tokenizer, base_model, p, 10) for p in PROMPTS]
        assert expected != base_texts
        assert all(c.generation.model == f"{model_dir.name}+v0001" for c in completions)
    finally:
        await backend.aclose()


async def test_adapter_explicit_name_wins(tiny_with_adapter: tuple[Path, Path]) -> None:
    model_dir, adapter_dir = tiny_with_adapter
    backend = TransformersBackend(
        model_dir, dtype="float32", adapter_dir=str(adapter_dir), name="student-v1"
    )
    try:
        completion = await asyncio.wait_for(
            backend.complete(GenerationRequest(prompt="Hi", max_tokens=2)), 60
        )
        assert completion.generation.model == "student-v1"
        assert backend.adapter_dir == adapter_dir
    finally:
        await backend.aclose()


async def test_missing_adapter_is_backend_unavailable(
    tiny_with_adapter: tuple[Path, Path], tmp_path: Path
) -> None:
    model_dir, _ = tiny_with_adapter
    backend = TransformersBackend(model_dir, dtype="float32", adapter_dir=tmp_path / "nope")
    with pytest.raises(BackendUnavailable, match="cannot load adapter"):
        await backend.check()
    await backend.aclose()


async def test_evaluate_on_adapted_tiny_model(
    tiny_with_adapter: tuple[Path, Path], domains: DomainSet
) -> None:
    """End to end on the real backend: every question is answered, in batches."""
    model_dir, adapter_dir = tiny_with_adapter
    backend = TransformersBackend(
        model_dir, dtype="float32", adapter_dir=adapter_dir, batch_window_s=0.05
    )
    try:
        problems = heldout_problems(domains, TOPICS, 2, seed=0)
        result = await asyncio.wait_for(
            evaluate(Student(backend, domains, max_tokens=4), problems, version="v0001", seed=0),
            120,
        )
        assert sum(t.questions for t in result.topics) == 6
        assert backend.prefills < len(problems)  # batched
    finally:
        await backend.aclose()


def test_score_model_shows_progress_and_scores_the_same_without(
    tiny: Path, domains: DomainSet, capsys: pytest.CaptureFixture[str]
) -> None:
    from teachloop.config import RunConfig
    from teachloop.training.evaluate import score_model

    config = RunConfig.validated(
        {"topics": TOPICS, "student": {"model": str(tiny), "dtype": "float32", "max_tokens": 4}}
    )
    sets = [heldout_problems(domains, TOPICS, 1, seed=0), heldout_problems(domains, TOPICS, 1, 1)]
    quiet = score_model(config, domains, sets)
    assert capsys.readouterr().out == ""
    shown = score_model(config, domains, sets, progress="scoring the tiny student")
    out = capsys.readouterr().out
    assert "scoring the tiny student" in out and "6/6" in out
    assert shown == quiet and [len(s) for s in shown] == [3, 3]
