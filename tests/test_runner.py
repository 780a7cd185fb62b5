"""Whole runs on scripted backends against a real DuckDB file."""

import sqlite3
import sys
import time
from pathlib import Path

import pytest
from conftest import adds_only_student
from helpers import assert_resumed_exactly, kill_three_times_then_finish

from teachloop import Store, run_lessons
from teachloop.agents.backends.base import GenerationRequest
from teachloop.agents.backends.scripted import ScriptedBackend
from teachloop.errors import BackendUnavailable
from teachloop.graphs.checkpoints import checkpoint_path

TESTS = Path(__file__).parent


def test_run_logs_every_message_and_summarizes(make_config, scripted) -> None:
    config = make_config(lessons=4)
    result = run_lessons(
        config, teacher_backend=scripted[0], student_backend=scripted[1], progress=False
    )
    store = Store(config.db)
    rows = store.query("SELECT kind, count(*) AS n FROM messages GROUP BY kind").to_pylist()
    counts = {r["kind"]: r["n"] for r in rows}
    assert set(counts) == {"question", "answer", "critique", "reteach"}
    assert result.messages_by_kind == counts
    assert result.lessons == 4 and result.lessons_failed == 0 and result.status == "complete"
    assert result.questions == counts["question"] == 4 * config.lesson.questions
    # The scripted student gets exactly the addition questions right, and reteaching never helps.
    add = next(t for t in result.topics if t.topic == "arithmetic.addition")
    mul = next(t for t in result.topics if t.topic == "arithmetic.multiplication")
    assert add.first_try_accuracy == 1.0 and mul.first_try_accuracy == 0.0
    assert result.reteach_success_rate == 0.0
    assert mul.mastery < 0.3 < 0.6 < add.mastery
    # every answer is judged; every wrong first answer is retaught once
    assert counts["answer"] == counts["critique"] == counts["question"] + counts["reteach"]
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    lessons = store.query("SELECT * FROM lessons ORDER BY lesson_index").to_pylist()
    assert [r["lesson_id"] for r in lessons] == [f"test-run-L{i:05d}" for i in range(4)]
    assert all(r["status"] == "complete" and r["end_reason"] == "budget" for r in lessons)
    assert sum(r["correct_first"] for r in lessons) == add.questions
    snapshots = store.query("SELECT count(*) AS n FROM mastery").to_pylist()[0]["n"]
    assert snapshots == result.questions


def questions_per_topic(store: Store) -> dict[str, int]:
    rows = store.query(
        "SELECT topic, count(*) AS n FROM messages WHERE kind = 'question' GROUP BY topic"
    )
    return {r["topic"]: r["n"] for r in rows.to_pylist()}


def test_lessons_started_together_target_what_earlier_questions_showed(
    make_config, scripted
) -> None:
    """With as many lessons in flight as lessons in the run, every lesson starts before any
    finishes: choices must come from the run's live estimate, not a copy taken at launch (with
    a copy, each lesson learns only from its own few questions and the split stays near even)."""
    config = make_config(lessons=8, concurrency=8)
    run_lessons(config, teacher_backend=scripted[0], student_backend=scripted[1], progress=False)
    store = Store(config.db)
    asked = questions_per_topic(store)
    assert asked["arithmetic.multiplication"] >= 3 * asked["arithmetic.addition"], asked
    # Each question records the estimate it was chosen from: second questions of lessons saw
    # more outcomes than their own lesson's one.
    questions = [m for t in store.transcripts(config.run_id) for m in t[1] if m.kind == "question"]
    seen = [
        sum(a + b - 2 for a, b in q.chosen_from.values())
        for q in questions
        if q.question_index == 1
    ]
    assert max(seen) > 1


def test_a_uniform_topic_policy_does_not_target(make_config, scripted) -> None:
    config = make_config(lessons=8, concurrency=8).with_overrides(
        lesson={"topic_policy": "uniform", "questions": 4}
    )
    run_lessons(config, teacher_backend=scripted[0], student_backend=scripted[1], progress=False)
    asked = questions_per_topic(Store(config.db))
    assert 8 <= asked["arithmetic.addition"] <= 24, asked


def test_teacher_spends_the_budget_on_the_weak_topic(make_config, scripted) -> None:
    config = make_config(lessons=6, concurrency=1)
    result = run_lessons(
        config, teacher_backend=scripted[0], student_backend=scripted[1], progress=False
    )
    per_topic = {t.topic: t.questions for t in result.topics}
    assert per_topic["arithmetic.multiplication"] >= 3 * per_topic["arithmetic.addition"]


def test_transcript_round_trips_what_was_logged(make_config, scripted) -> None:
    config = make_config(lessons=1)
    run_lessons(config, teacher_backend=scripted[0], student_backend=scripted[1], progress=False)
    store = Store(config.db)
    transcript = store.transcript("test-run-L00000")
    payloads = store.query("SELECT payload FROM messages ORDER BY turn").column("payload")
    assert [m.model_dump_json() for m in transcript] == payloads.to_pylist()
    assert [m.turn for m in transcript] == list(range(len(transcript)))


def test_rerun_of_a_finished_run_changes_nothing(make_config, scripted) -> None:
    config = make_config(lessons=3)
    run_lessons(config, teacher_backend=scripted[0], student_backend=scripted[1], progress=False)
    calls = len(scripted[1].requests)
    again = run_lessons(
        config, teacher_backend=scripted[0], student_backend=scripted[1], progress=False
    )
    assert len(scripted[1].requests) == calls  # no work repeated
    assert again.lessons_resumed == 3
    n = Store(config.db).query("SELECT count(*) AS n FROM messages").to_pylist()[0]["n"]
    assert n == sum(again.messages_by_kind.values())


def test_a_failing_lesson_is_logged_and_the_run_goes_on(make_config, scripted) -> None:
    calls = {"n": 0}

    def flaky(request: GenerationRequest) -> str:
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("model exploded")
        return adds_only_student(request)

    config = make_config(lessons=6, topics=("arithmetic.addition",))
    result = run_lessons(
        config, teacher_backend=scripted[0], student_backend=ScriptedBackend(flaky), progress=False
    )
    rows = (
        Store(config.db)
        .query("SELECT status, error, questions FROM lessons ORDER BY lesson_index")
        .to_pylist()
    )
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1
    assert failed[0]["error"] == "RuntimeError: model exploded"
    assert result.lessons == 6 and result.lessons_failed == 1
    assert result.status == "failed"


def test_unavailable_backend_stops_the_run_and_keeps_logged_lessons(make_config, scripted):
    calls = {"n": 0}

    def dies(request: GenerationRequest) -> str:
        calls["n"] += 1
        if calls["n"] > 12:
            raise BackendUnavailable("student endpoint http://127.0.0.1:9/v1 went away")
        return adds_only_student(request)

    config = make_config(lessons=8, concurrency=1)
    with pytest.raises(BackendUnavailable, match="went away"):
        run_lessons(
            config,
            teacher_backend=scripted[0],
            student_backend=ScriptedBackend(dies),
            progress=False,
        )
    store = Store(config.db)
    assert store.query("SELECT status FROM runs").to_pylist() == [{"status": "failed"}]
    assert len(store.finished_lessons("test-run")) >= 1


def test_killed_run_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    db = tmp_path / "killed.duckdb"
    lessons = 16
    cmd = [sys.executable, str(TESTS / "scripted_run.py"), str(db), str(lessons), "0.04"]

    def finished() -> set[str]:
        return Store(db).finished_lessons("killed-run") if db.exists() else set()

    out, done_before = kill_three_times_then_finish(cmd, finished, lessons)
    assert checkpoint_path(db).exists()
    assert_resumed_exactly(Store(db), out, done_before, lessons)


def test_a_run_ending_during_a_periodic_flush_waits_for_it(
    make_config, scripted, monkeypatch
) -> None:
    """The periodic flush writes in a thread. The run's end must wait for that write, not just
    cancel the coroutine awaiting it, before the summary reads the file (else the read meets
    the write's open connection). A flusher that polls on every loop turn picks up the last
    lesson before the run ends, and a slow write of it keeps the thread busy past the end."""
    from teachloop.graphs import runner

    write = Store.write_lessons
    last = 3

    def slow_write(self: Store, logs: list) -> None:
        with self.connect():
            if any(log.lesson.lesson_index == last for log in logs):
                time.sleep(0.3)
            write(self, logs)

    monkeypatch.setattr(runner, "_FLUSH_EVERY_S", 0)
    monkeypatch.setattr(Store, "write_lessons", slow_write)
    for backend in scripted:  # lessons end one by one, each after the last one's write
        backend.delay_s = 0.005
    config = make_config(lessons=last + 1, concurrency=1)
    result = run_lessons(
        config, teacher_backend=scripted[0], student_backend=scripted[1], progress=False
    )
    assert result.status == "complete" and result.lessons == last + 1
    stored = Store(config.db).query("SELECT count(*) AS n FROM lessons").to_pylist()[0]["n"]
    assert stored == last + 1
    # the interrupted flush would also have skipped deleting the last lesson's checkpoint
    with sqlite3.connect(checkpoint_path(config.db)) as con:
        assert con.execute("SELECT count(*) FROM checkpoints").fetchone() == (0,)


def test_a_failed_periodic_write_is_retried_and_nothing_is_lost(
    make_config, scripted, monkeypatch
) -> None:
    from teachloop.errors import StoreError
    from teachloop.graphs import runner

    write = Store.write_lessons
    calls: list[int] = []

    def flaky_write(self: Store, logs: list) -> None:
        calls.append(len(logs))
        if len(calls) == 1:
            raise StoreError("disk hiccup")
        write(self, logs)

    monkeypatch.setattr(runner, "_FLUSH_EVERY_S", 0)
    monkeypatch.setattr(Store, "write_lessons", flaky_write)
    for backend in scripted:
        backend.delay_s = 0.005
    config = make_config(lessons=4, concurrency=1)
    result = run_lessons(
        config, teacher_backend=scripted[0], student_backend=scripted[1], progress=False
    )
    assert len(calls) >= 2 and calls[0] >= 1
    assert result.status == "complete" and result.lessons == 4
    ids = Store(config.db).query("SELECT lesson_id FROM lessons ORDER BY 1").to_pylist()
    assert [r["lesson_id"] for r in ids] == [f"test-run-L{i:05d}" for i in range(4)]


def test_a_run_without_carry_over_starts_from_the_prior(make_config, scripted) -> None:
    """A second run of the same student starts from what the first showed, unless
    ``carry_over`` is off (experiments: independent seeds); then only its own lessons count."""
    first = make_config(lessons=4, run_id="first")
    run_lessons(first, teacher_backend=scripted[0], student_backend=scripted[1], progress=False)

    def outcomes_seen_by_first_question(run_id: str, carry_over: bool) -> int:
        config = make_config(lessons=1, concurrency=1, run_id=run_id).with_overrides(
            lesson={"carry_over": carry_over}
        )
        teacher, student = scripted
        run_lessons(config, teacher_backend=teacher, student_backend=student, progress=False)
        (_, messages), *_ = Store(config.db).transcripts(run_id)
        question = next(m for m in messages if m.kind == "question")
        return sum(a + b - 2 for a, b in question.chosen_from.values())

    assert outcomes_seen_by_first_question("carried", True) >= 12
    assert outcomes_seen_by_first_question("fresh", False) == 0
