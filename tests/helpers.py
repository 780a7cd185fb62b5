"""Helpers that several test modules share (test modules import from here, ``conftest`` and the
other support modules, never from each other: ``tests/test_layers.py`` checks)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from teachloop import Store
from teachloop.agents.prompts import student_prompt
from teachloop.messages import Answer, Critique, ErrorCategory, Question, Reteach, Strategy
from teachloop.records import EndReason, LessonLog, LessonRecord, LessonStatus

TESTS = Path(__file__).parent
# A child process imports the tests' modules (scripted backends), and whatever the caller's
# PYTHONPATH already held.
CHILD_PYTHONPATH = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)


# -- the command line in a child process ----------------------------------------------------


def teachloop(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "teachloop.cli", *args], capture_output=True, text=True, timeout=120
    )


def scripted_cli(*args: str) -> list[str]:
    return [sys.executable, str(TESTS / "scripted_cli.py"), *args]


def scripted_env(delay_s: float = 0.0) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH, "SCRIPTED_DELAY_S": str(delay_s)}


def openai_config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(f"""
topics = ["arithmetic.addition"]
[lesson]
questions = 2
[teacher]
backend = "openai"
[[teacher.endpoints]]
url = "{url}"
model = "fake-model"
[student]
backend = "openai"
model = "embedded:gemma-3-270m"
[[student.endpoints]]
url = "{url}"
model = "fake-model"
max_retries = 0
""")
    return path


def solver(body: dict) -> str:
    """Student replies solve the question; teacher replies are a fixed sentence."""
    prompt = body["prompt"]
    if prompt.startswith("Each question"):
        m = re.search(r"What is (\d+) \+ (\d+)\?\nAnswer:$", prompt)
        return f" {int(m[1]) + int(m[2])}" if m else " ?"
    return " Carry the ten."


# -- hand-made lesson logs ------------------------------------------------------------------

T = datetime(2026, 11, 27, tzinfo=UTC)


def lesson(
    lesson_id: str,
    turns: list[tuple[str, bool | None]],
    question: str = "What is 2 + 3?",
    reference: str = "5",
    leaked: bool = False,
) -> LessonLog:
    """A one-question lesson: turns are (student reply, verdict) per attempt."""
    common = {"run_id": "r", "lesson_id": lesson_id, "created_at": T}
    q = Question(
        message_id=f"{lesson_id}-m000",
        turn=0,
        text=question,
        question_index=0,
        topic="arithmetic.addition",
        difficulty=1,
        reference_answer=reference,
        **common,
    )
    messages: list = [q]
    for attempt, (reply, correct) in enumerate(turns):
        if attempt:
            messages.append(
                Reteach(
                    message_id=f"{lesson_id}-m{len(messages):03d}",
                    turn=len(messages),
                    text="Add.",
                    question_id=q.message_id,
                    attempt=attempt,
                    strategy=Strategy.hint,
                    explanation="Add.",
                    leaked=leaked,
                    **common,
                )
            )
        answer = Answer(
            message_id=f"{lesson_id}-m{len(messages):03d}",
            turn=len(messages),
            text=reply,
            prompt=student_prompt(question) if attempt == 0 else "x",
            question_id=q.message_id,
            attempt=attempt,
            final_answer=reply.strip() or None,
            **common,
        )
        messages.append(answer)
        messages.append(
            Critique(
                message_id=f"{lesson_id}-m{len(messages):03d}",
                turn=len(messages),
                text="ok" if correct else "no",
                question_id=q.message_id,
                answer_id=answer.message_id,
                attempt=attempt,
                correct=bool(correct),
                score=float(correct),
                error_category=ErrorCategory.none if correct else ErrorCategory.wrong,
                feedback="f",
                **common,
            )
        )
    record = LessonRecord(
        lesson_id=lesson_id,
        run_id="r",
        lesson_index=int(lesson_id[-1]),
        status=LessonStatus.complete,
        end_reason=EndReason.budget,
        questions=1,
        correct_first=int(bool(turns[0][1])),
        correct_after_reteach=0,
        started_at=T,
    )
    return LessonLog(lesson=record, messages=messages, mastery=[])


# -- SIGKILL and resume ---------------------------------------------------------------------


def kill_three_times_then_finish(
    cmd: list[str], finished: Callable[[], set[str]], lessons: int
) -> tuple[str, set[str]]:
    """Run ``cmd`` (``scripted_run.py``) and SIGKILL it three times with lessons in flight, then
    run it to the end. Returns its output and the lessons finished before that last run."""
    env = {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH}
    for wanted in (2, 6, 10):
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while len(finished()) < wanted and time.monotonic() < deadline:
            time.sleep(0.1)
        child.send_signal(signal.SIGKILL)
        child.wait()
    done_before = finished()
    assert 10 <= len(done_before) < lessons, "the kills should land mid-run"
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    assert f"lessons={lessons}" in out
    assert int(out.split("resumed=")[1].split()[0]) == len(done_before)
    return out, done_before


def assert_exact(store: Store, run_id: str, lessons: int) -> None:
    """Every lesson complete and whole, every message and snapshot once."""
    rows = store.query(
        """
        SELECT (SELECT count(*) FROM lessons WHERE run_id = $r AND status = 'complete') AS done,
               (SELECT count(*) FROM lessons WHERE run_id = $r) AS lessons,
               (SELECT count(*) - count(DISTINCT message_id) FROM messages) AS dup_messages,
               (SELECT count(*) - count(DISTINCT (lesson_id, question_index)) FROM mastery)
                   AS dup_snapshots,
               (SELECT count(*) FROM lessons l WHERE run_id = $r AND questions <> (
                    SELECT count(*) FROM messages m
                    WHERE m.lesson_id = l.lesson_id AND m.kind = 'question')) AS miscounted,
               (SELECT count(*) FROM messages q WHERE q.run_id = $r AND q.kind = 'question'
                  AND NOT EXISTS (SELECT 1 FROM messages c WHERE c.question_id = q.message_id
                                  AND c.kind = 'critique')) AS unjudged
        """,
        {"r": run_id},
    ).to_pylist()[0]
    assert rows == {
        "done": lessons,
        "lessons": lessons,
        "dup_messages": 0,
        "dup_snapshots": 0,
        "miscounted": 0,
        "unjudged": 0,
    }


def assert_resumed_exactly(store: Store, out: str, done_before: set[str], lessons: int) -> None:
    rows = store.query("""
        SELECT count(*) AS messages, count(DISTINCT message_id) AS ids,
               count(DISTINCT lesson_id) AS lessons
        FROM messages""").to_pylist()[0]
    assert rows["messages"] == rows["ids"]
    assert rows["lessons"] == lessons
    # every lesson is complete, with its turns contiguous from 0 and every question judged
    per_lesson = store.query("""
        SELECT l.lesson_id, l.status, count(*) AS n, max(m.turn) AS last,
               count(*) FILTER (WHERE kind = 'question') AS questions,
               count(*) FILTER (WHERE kind = 'critique' AND attempt = 0) AS judged
        FROM lessons l JOIN messages m USING (lesson_id) GROUP BY ALL""").to_pylist()
    assert len(per_lesson) == lessons
    for lesson in per_lesson:
        assert lesson["status"] == "complete"
        assert lesson["n"] == lesson["last"] + 1
        assert lesson["questions"] == lesson["judged"] == 4
    # Lessons in flight at the last kill continued from their checkpoints: the last run asked
    # the student fewer questions than the lessons it finished hold answers.
    answers = sum(
        r["n"]
        for r in store.query(
            "SELECT lesson_id, count(*) AS n FROM messages WHERE kind = 'answer' GROUP BY ALL"
        ).to_pylist()
        if r["lesson_id"] not in done_before
    )
    assert int(out.split("calls=")[1].split()[0]) < answers


# -- models ---------------------------------------------------------------------------------


def random_lora_adapter(model_dir: Path, adapter_dir: Path) -> Path:
    """A LoRA adapter for the model in ``model_dir``, saved to ``adapter_dir``, whose B weights
    are random (not zero, as PEFT starts them), so the adapter changes what the model says."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], lora_dropout=0.0
    )
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    peft_model.save_pretrained(adapter_dir)
    return adapter_dir
