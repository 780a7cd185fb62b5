"""Store benchmark: bulk insert rate through `Store.write_lessons` and query time of each view,
on a synthetic log of ~1M messages. Run: `.venv/bin/python bench/store_bench.py [--messages N]`.

Synthetic lessons have the shape real ones have (4 questions, a reteach and a second answer after
each wrong first answer, mastery snapshots), with the message protocol's real types.
"""

from __future__ import annotations

import argparse
import platform
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from teachloop.messages import (
    Answer,
    Critique,
    ErrorCategory,
    Generation,
    Question,
    Reteach,
    Strategy,
    message_id,
)
from teachloop.records import EndReason, LessonLog, LessonRecord, LessonStatus, MasterySnapshot
from teachloop.store.store import Store

TOPICS = [
    "arithmetic.addition",
    "arithmetic.subtraction",
    "arithmetic.multiplication",
    "units.length",
    "units.mass",
    "units.time",
]
GEN = Generation(model="bench", endpoint="in-process", prompt_tokens=60, completion_tokens=4)
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def lesson(run_id: str, index: int, rng: random.Random) -> LessonLog:
    lid = f"{run_id}-L{index:07d}"
    msgs: list = []
    snaps: list[MasterySnapshot] = []
    first_ok = after_ok = 0
    t = T0 + timedelta(seconds=index)
    for qi in range(4):
        topic = rng.choice(TOPICS)
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        common = {"run_id": run_id, "lesson_id": lid, "created_at": t}
        q = Question(
            message_id=message_id(lid, len(msgs)),
            turn=len(msgs),
            text=f"What is {a} + {b}?",
            question_index=qi,
            topic=topic,
            difficulty=rng.randint(1, 5),
            reference_answer=str(a + b),
            solution=f"{a} + {b} = {a + b}",
            **common,
        )
        msgs.append(q)
        for attempt in range(2):
            correct = rng.random() < 0.4 + 0.3 * attempt
            ans = Answer(
                message_id=message_id(lid, len(msgs)),
                turn=len(msgs),
                text=f" {a + b + (0 if correct else 1)}",
                prompt="Question: ...",
                question_id=q.message_id,
                attempt=attempt,
                final_answer=str(a + b + (0 if correct else 1)),
                generation=GEN,
                **common,
            )
            msgs.append(ans)
            msgs.append(
                Critique(
                    message_id=message_id(lid, len(msgs)),
                    turn=len(msgs),
                    text="Check the carry.",
                    question_id=q.message_id,
                    answer_id=ans.message_id,
                    attempt=attempt,
                    correct=correct,
                    score=float(correct),
                    feedback="Check the carry.",
                    error_category=ErrorCategory.none if correct else ErrorCategory.close,
                    generation=GEN,
                    **common,
                )
            )
            if correct or attempt == 1:
                first_ok += correct and attempt == 0
                after_ok += correct and attempt == 1
                break
            msgs.append(
                Reteach(
                    message_id=message_id(lid, len(msgs)),
                    turn=len(msgs),
                    text="Add the ones first.",
                    question_id=q.message_id,
                    attempt=1,
                    strategy=rng.choice(list(Strategy)),
                    explanation="Add the ones first.",
                    generation=GEN,
                    **common,
                )
            )
        snaps.append(
            MasterySnapshot(
                run_id=run_id,
                lesson_id=lid,
                question_index=qi,
                topic=topic,
                alpha=2,
                beta=3,
                mean=0.4,
                difficulty=2,
                created_at=t,
            )
        )
    record = LessonRecord(
        lesson_id=lid,
        run_id=run_id,
        lesson_index=index,
        status=LessonStatus.complete,
        end_reason=EndReason.budget,
        questions=4,
        correct_first=first_ok,
        correct_after_reteach=after_ok,
        started_at=t,
        finished_at=t,
    )
    return LessonLog(lesson=record, messages=msgs, mastery=snaps)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=64, help="lessons per write (runner flushes)")
    args = parser.parse_args()
    rng = random.Random(0)
    t = time.perf_counter()
    logs: list[LessonLog] = []
    total = 0
    runs = 4
    while total < args.messages:
        log = lesson(f"bench{len(logs) % runs}", len(logs), rng)
        logs.append(log)
        total += len(log.messages)
    print(
        f"generated {total:,} messages in {len(logs):,} lessons ({time.perf_counter() - t:.1f} s)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.duckdb")
        from teachloop.records import RunRecord

        for r in range(runs):
            store.write_run(
                RunRecord(
                    run_id=f"bench{r}",
                    lessons_planned=len(logs) // runs,
                    teacher_model="bench",
                    student_model="bench",
                    config="{}",
                )
            )
        t = time.perf_counter()
        for i in range(0, len(logs), args.batch):
            store.write_lessons(logs[i : i + args.batch])
        insert_s = time.perf_counter() - t
        print(
            f"insert: {total / insert_s:,.0f} messages/s ({insert_s:.1f} s, batches of "
            f"{args.batch} lessons, one transaction each)"
        )
        t = time.perf_counter()
        store.write_lessons(logs[: args.batch])
        print(
            f"re-insert of a written batch (idempotent, skipped): {time.perf_counter() - t:.3f} s"
        )
        one_lesson = logs[len(logs) // 2].lesson.lesson_id
        queries = {
            "transcript (one lesson)": f"SELECT * FROM transcript WHERE lesson_id = '{one_lesson}'",
            "transcript (all, count)": "SELECT count(*) FROM transcript",
            "question_outcomes": "SELECT * FROM question_outcomes",
            "topic_accuracy": "SELECT * FROM topic_accuracy",
            "learning_curve": "SELECT * FROM learning_curve",
            "strategy_effectiveness": "SELECT * FROM strategy_effectiveness",
            "run_summary": "SELECT * FROM run_summary",
        }
        print(f"view query times at {total:,} messages (full result fetched as Arrow; best of 3):")
        with store.connect(read_only=True) as con:
            for name, sql in queries.items():
                times, rows = [], 0
                for _ in range(3):
                    t = time.perf_counter()
                    rows = con.execute(sql).to_arrow_table().num_rows
                    times.append(time.perf_counter() - t)
                print(f"  {name:<26} {min(times):6.3f} s  ({rows:,} rows)")
    print(
        f"machine: {platform.machine()}, {__import__('os').cpu_count()} cores, "
        f"python {platform.python_version()}, duckdb {__import__('duckdb').__version__}"
    )


if __name__ == "__main__":
    main()
