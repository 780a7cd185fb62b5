"""The DuckDB store: one file, short write transactions, idempotent batched writes.

DuckDB lets one process hold a file open for writing, and while it does no other process can
open it at all. So nothing holds a connection open: every write batch and every query opens,
works and closes, retrying while another process holds the lock. A run's writer flushes whole
lessons in batches, so a reader in another process gets in between flushes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path

import duckdb
import pyarrow as pa

from teachloop.errors import StoreError
from teachloop.messages import Message, parse_message
from teachloop.records import AnyMessage, LessonLog, RunRecord

SCHEMA_VERSION = 1
_LOCK_WAIT_S = 60.0


class Store:
    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise StoreError(f"database {self.path} does not exist")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._migrate()

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection; waits (with backoff) while another process holds the file."""
        deadline = time.monotonic() + _LOCK_WAIT_S
        delay = 0.01
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.IOException as e:
                if "lock" not in str(e).lower() or time.monotonic() > deadline:
                    raise StoreError(f"cannot open database {self.path}: {e}") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        try:
            yield con
        finally:
            con.close()

    def _migrate(self) -> None:
        with self.connect() as con:
            has_meta = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name='teachloop_meta'"
            ).fetchone()
            version = 0
            if has_meta and has_meta[0]:
                row = con.execute(
                    "SELECT value FROM teachloop_meta WHERE key='schema_version'"
                ).fetchone()
                version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"database {self.path} has schema version {version}, newer than this "
                    f"teachloop understands ({SCHEMA_VERSION}): upgrade teachloop"
                )
            if version < SCHEMA_VERSION:
                con.execute("BEGIN")
                con.execute(files("teachloop.store").joinpath("schema.sql").read_text())
                con.execute(
                    "INSERT OR REPLACE INTO teachloop_meta VALUES ('schema_version', ?)",
                    [str(SCHEMA_VERSION)],
                )
                con.execute("COMMIT")

    # -- writes ---------------------------------------------------------------------------

    def write_run(self, run: RunRecord) -> None:
        """Record a run's start; a resumed run keeps its first start time."""
        with self.connect() as con:
            con.execute(
                "INSERT INTO runs BY NAME SELECT ?::VARCHAR AS run_id,"
                " ?::TIMESTAMPTZ AS started_at, 'running' AS status,"
                " ? AS lessons_planned, ? AS teacher_model,"
                " ? AS student_model, ?::JSON AS config"
                " ON CONFLICT (run_id) DO UPDATE SET status = 'running', finished_at = NULL,"
                " lessons_planned = excluded.lessons_planned",
                [
                    run.run_id,
                    run.started_at,
                    run.lessons_planned,
                    run.teacher_model,
                    run.student_model,
                    run.config,
                ],
            )

    def finish_run(self, run_id: str, status: str) -> None:
        with self.connect() as con:
            con.execute(
                "UPDATE runs SET status = ?, finished_at = now() WHERE run_id = ?",
                [status, run_id],
            )

    def write_lessons(self, logs: list[LessonLog]) -> None:
        """Write lessons with their messages and mastery snapshots in one transaction.
        Idempotent: messages and snapshots already present (same stable ids) are skipped, and a
        lesson's row is replaced, so a resumed lesson's final state wins."""
        if not logs:
            return
        lessons = pa.Table.from_pylist([log.lesson.model_dump(mode="python") for log in logs])
        messages = pa.Table.from_pylist([row for log in logs for row in _message_rows(log)])
        mastery = pa.Table.from_pylist(
            [s.model_dump(mode="python") for log in logs for s in log.mastery]
        )
        with self.connect() as con:
            con.execute("BEGIN")
            con.register("batch_lessons", lessons)
            con.execute("INSERT OR REPLACE INTO lessons BY NAME SELECT * FROM batch_lessons")
            if messages.num_rows:
                con.register("batch_messages", messages)
                con.execute("INSERT OR IGNORE INTO messages BY NAME SELECT * FROM batch_messages")
            if mastery.num_rows:
                con.register("batch_mastery", mastery)
                con.execute("INSERT OR IGNORE INTO mastery BY NAME SELECT * FROM batch_mastery")
            con.execute("COMMIT")

    # -- reads ----------------------------------------------------------------------------

    def query(self, sql: str, params: list | dict | None = None) -> pa.Table:
        with self.connect(read_only=True) as con:
            return con.execute(sql, params or []).to_arrow_table()

    def finished_lessons(self, run_id: str) -> set[str]:
        rows = self.query(
            "SELECT lesson_id FROM lessons WHERE run_id = ? AND status = 'complete'", [run_id]
        )
        return set(rows.column("lesson_id").to_pylist())

    def transcript(self, lesson_id: str) -> list[Message]:
        """The lesson's typed messages in turn order (an exact round trip of what was logged)."""
        rows = self.query(
            "SELECT payload FROM messages WHERE lesson_id = ? ORDER BY turn", [lesson_id]
        )
        return [parse_message(p) for p in rows.column("payload").to_pylist()]

    def mastery_counts(self, run_id: str) -> tuple[list[dict], list[dict]]:
        """What the run's complete lessons showed, aggregated: per topic the first-try successes
        and failures and the latest difficulty; per (topic, strategy) the reteach outcomes.
        A resumed run rebuilds the teacher's estimate from this."""
        topics = self.query(
            """
            WITH done AS (SELECT lesson_id FROM lessons WHERE run_id = $run AND status = 'complete')
            SELECT c.topic,
                   count(*) FILTER (WHERE c.correct) AS successes,
                   count(*) FILTER (WHERE NOT c.correct) AS failures,
                   (SELECT arg_max(m.difficulty, m.created_at) FROM mastery m
                     WHERE m.topic = c.topic AND m.lesson_id IN (SELECT lesson_id FROM done))
                     AS difficulty
            FROM messages c
            WHERE c.lesson_id IN (SELECT lesson_id FROM done) AND c.kind = 'critique'
              AND c.attempt = 0
            GROUP BY c.topic ORDER BY c.topic
            """,
            {"run": run_id},
        ).to_pylist()
        strategies = self.query(
            """
            WITH done AS (
                SELECT lesson_id FROM lessons WHERE run_id = $run AND status = 'complete'),
            per_question AS (
                SELECT question_id, any_value(topic) AS topic,
                       arg_max(strategy, attempt) FILTER (WHERE kind = 'reteach') AS strategy,
                       arg_max(correct, attempt) FILTER (WHERE kind = 'critique') AS success
                FROM messages WHERE lesson_id IN (SELECT lesson_id FROM done)
                GROUP BY question_id)
            SELECT topic, strategy,
                   count(*) FILTER (WHERE success) AS successes,
                   count(*) FILTER (WHERE NOT success) AS failures
            FROM per_question WHERE strategy IS NOT NULL
            GROUP BY topic, strategy ORDER BY topic, strategy
            """,
            {"run": run_id},
        ).to_pylist()
        return topics, strategies


def _message_rows(log: LessonLog) -> list[dict]:
    questions = {m.message_id: m for m in log.messages if m.kind == "question"}
    return [_message_row(m, questions) for m in log.messages]


def _message_row(m: AnyMessage, questions: dict[str, AnyMessage]) -> dict:
    question = m if m.kind == "question" else questions[m.question_id]
    data = m.model_dump(mode="json", exclude={"created_at"})
    gen = m.generation
    return {
        "message_id": m.message_id,
        "run_id": m.run_id,
        "lesson_id": m.lesson_id,
        "turn": m.turn,
        "kind": m.kind,
        "sender": data["sender"],
        "created_at": m.created_at,
        "text": m.text,
        "question_id": question.message_id,
        "topic": question.topic,
        "difficulty": question.difficulty,
        "attempt": data.get("attempt"),
        "final_answer": data.get("final_answer"),
        "correct": data.get("correct"),
        "score": data.get("score"),
        "error_category": data.get("error_category"),
        "strategy": data.get("strategy"),
        "model": gen.model if gen else None,
        "endpoint": gen.endpoint if gen else None,
        "prompt_tokens": gen.prompt_tokens if gen else 0,
        "completion_tokens": gen.completion_tokens if gen else 0,
        "latency_s": gen.latency_s if gen else 0.0,
        "payload": m.model_dump_json(),
    }
