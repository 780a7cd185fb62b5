"""Store benchmark: bulk insert rate through `Store.write_lessons` and query time of each view,
on a synthetic log of ~1M messages. Run: `.venv/bin/python bench/store_bench.py [--messages N]
[--batch 1000 5000]`.

Synthetic lessons have the shape real ones have (4 questions, a reteach and a second answer after
each wrong first answer, mastery snapshots), with the message protocol's real types.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
from figures import Figure

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
from teachloop.records import (
    EndReason,
    LessonLog,
    LessonRecord,
    LessonStatus,
    MasterySnapshot,
    RunRecord,
)
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


QUERIES = {
    "transcript (one lesson)": "SELECT * FROM transcript WHERE lesson_id = $lesson",
    "transcript (all, count)": "SELECT count(*) FROM transcript",
    "question_outcomes": "SELECT * FROM question_outcomes",
    "topic_accuracy": "SELECT * FROM topic_accuracy",
    "learning_curve": "SELECT * FROM learning_curve",
    "strategy_effectiveness": "SELECT * FROM strategy_effectiveness",
    "run_summary": "SELECT * FROM run_summary",
}


def synthetic_logs(messages: int, runs: int = 4) -> list[LessonLog]:
    rng = random.Random(0)
    logs: list[LessonLog] = []
    total = 0
    while total < messages:
        log = lesson(f"bench{len(logs) % runs}", len(logs), rng)
        logs.append(log)
        total += len(log.messages)
    return logs


def measure(logs: list[LessonLog], batches: list[int], runs: int = 4) -> dict:
    """Insert rate per batch size (a fresh file each), then on the last file: the re-insert of
    a written batch and the view query times (best of 3, full result fetched as Arrow)."""
    total = sum(len(log.messages) for log in logs)
    result: dict = {"messages": total, "lessons": len(logs), "insert": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for batch in batches:
            store = Store(Path(tmp) / f"bench-{batch}.duckdb")
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
            started = time.perf_counter()
            for i in range(0, len(logs), batch):
                store.write_lessons(logs[i : i + batch])
            result["insert"][batch] = total / (time.perf_counter() - started)
        before = store.query("SELECT count(*) AS n FROM messages").to_pylist()[0]["n"]
        started = time.perf_counter()
        store.write_lessons(logs[: batches[-1]])
        result["reinsert_s"] = time.perf_counter() - started
        after = store.query("SELECT count(*) AS n FROM messages").to_pylist()[0]["n"]
        result["reinsert_added"] = after - before
        result["stored"] = after
        lesson_id = logs[len(logs) // 2].lesson.lesson_id
        result["duckdb_alone"] = duckdb_alone(store, logs, batches[-1], Path(tmp) / "alone.duckdb")
        result["views"] = {}
        with store.connect(read_only=True) as con:
            for name, sql in QUERIES.items():
                times = []
                for _ in range(3):
                    started = time.perf_counter()
                    params = {"lesson": lesson_id} if "$lesson" in sql else {}
                    con.execute(sql, params).to_arrow_table()
                    times.append(time.perf_counter() - started)
                result["views"][name] = min(times)
    return result


def duckdb_alone(store: Store, logs: list[LessonLog], batch: int, path: Path) -> float:
    """The ceiling for ``write_lessons`` at ``batch`` lessons per transaction: the same
    messages, already flattened (read back from ``store`` as Arrow), inserted into the same
    table of a fresh store by DuckDB alone, with the store's pattern of access: one connection
    per transaction (the store opens the file per operation, so that other processes can read
    between writes; closing it checkpoints). No JSON, no flattening, no duplicate check, no
    lessons or snapshots. Messages per second."""
    # In the order they were written: lesson ids end in the lesson's zero-padded index.
    flat = store.query("SELECT * FROM messages ORDER BY split_part(lesson_id, '-L', 2), turn")
    batches = [logs[i : i + batch] for i in range(0, len(logs), batch)]
    sizes = [sum(len(log.messages) for log in lessons) for lessons in batches]
    Store(path)  # the schema, and nothing in it
    started = time.perf_counter()
    offset = 0
    for size in sizes:
        part = flat.slice(offset, size)  # noqa: F841 (DuckDB reads it by name)
        con = duckdb.connect(str(path))
        try:
            con.execute("BEGIN")
            con.execute("INSERT INTO messages SELECT * FROM part")
            con.execute("COMMIT")
        finally:
            con.close()
        offset += size
    return flat.num_rows / (time.perf_counter() - started)


def figures() -> list[Figure]:
    result = measure(synthetic_logs(1_000_000), [1000, 5000])
    slowest = max(result["views"], key=result["views"].get)
    return [
        Figure(
            bench="store",
            name="bulk insert, 5,000-lesson transactions",
            measured=round(result["insert"][5000]),
            unit="msg/s",
            target=">= 100000",
            note=f"{result['messages']:,} messages through Store.write_lessons",
        ),
        Figure(
            bench="store",
            name="the same messages by DuckDB alone, 5,000-lesson transactions (pre-flattened "
            "Arrow, a connection per transaction as the store opens one: the ceiling)",
            measured=round(result["duckdb_alone"]),
            unit="msg/s",
        ),
        Figure(
            bench="store",
            name="bulk insert / DuckDB alone",
            measured=round(result["insert"][5000] / result["duckdb_alone"], 2),
            unit="x",
        ),
        Figure(
            bench="store",
            name="insert, 1,000-lesson transactions",
            measured=round(result["insert"][1000]),
            unit="msg/s",
            note="each closes the file: DuckDB checkpoints then",
        ),
        Figure(
            bench="store",
            name="messages added by re-inserting 5,000 written lessons",
            measured=result["reinsert_added"],
            unit="rows",
            target="<= 0",
            note=f"{result['reinsert_s']:.2f} s",
        ),
        Figure(
            bench="store",
            name=f"slowest view at 1M messages ({slowest})",
            measured=round(result["views"][slowest], 3),
            unit="s",
            target="<= 1.0",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument(
        "--batch", type=int, nargs="+", default=[1000, 5000], help="lessons per transaction"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    logs = synthetic_logs(args.messages)
    print(
        f"generated {args.messages:,}+ messages in {len(logs):,} lessons "
        f"({time.perf_counter() - started:.1f} s)"
    )
    result = measure(logs, args.batch)
    for batch, rate in result["insert"].items():
        print(f"insert: {rate:,.0f} messages/s ({batch}-lesson transactions)")
    print(
        f"DuckDB alone, same messages pre-flattened, {args.batch[-1]}-lesson transactions: "
        f"{result['duckdb_alone']:,.0f} messages/s"
    )
    print(
        f"re-insert of {args.batch[-1]} written lessons: {result['reinsert_added']} rows added "
        f"in {result['reinsert_s']:.2f} s"
    )
    print(f"view query times at {result['stored']:,} messages (best of 3):")
    for name, seconds in result["views"].items():
        print(f"  {name:<26} {seconds:6.3f} s")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, duckdb {duckdb.__version__}"
    )


if __name__ == "__main__":
    main()
