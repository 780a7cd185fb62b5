"""The store as users meet it: schema, views, read-only SQL, replay, export/merge, and reading
while another process writes."""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from conftest import adds_only_student, teacher_reply

from teachloop import Store, run_lessons
from teachloop.agents.backends.scripted import ScriptedBackend
from teachloop.errors import StoreError
from teachloop.messages import Critique, Reteach
from teachloop.records import LessonLog, MasterySnapshot
from teachloop.store.replay import render_transcript
from teachloop.store.store import ALL_TABLES, SCHEMA_VERSION

TESTS = Path(__file__).parent
VIEWS = {
    "transcript",
    "question_outcomes",
    "topic_accuracy",
    "learning_curve",
    "strategy_effectiveness",
    "run_summary",
}


@pytest.fixture
def logged(make_config) -> tuple[Store, object]:
    config = make_config(lessons=5)
    result = run_lessons(
        config,
        teacher_backend=ScriptedBackend(teacher_reply),
        student_backend=ScriptedBackend(adds_only_student),
        progress=False,
    )
    return Store(config.db), result


def counts(store: Store) -> dict[str, int]:
    return {
        t: store.query(f"SELECT count(*) AS n FROM {t}").to_pylist()[0]["n"] for t in ALL_TABLES
    }


def test_plain_duckdb_sees_tables_views_and_version(logged) -> None:
    store, _ = logged
    con = duckdb.connect(str(store.path), read_only=True)
    names = {
        r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    }
    assert set(ALL_TABLES) | VIEWS <= names
    version = con.execute("SELECT value FROM teachloop_meta WHERE key = 'schema_version'")
    assert version.fetchone() == (str(SCHEMA_VERSION),)
    con.close()


def test_views_agree_with_the_run_and_with_each_other(logged) -> None:
    store, result = logged
    topics = {r["topic"]: r for r in store.query("SELECT * FROM topic_accuracy").to_pylist()}
    for t in result.topics:
        assert topics[t.topic]["questions"] == t.questions
        assert topics[t.topic]["first_try_accuracy"] == t.first_try_accuracy
    summary = store.query("SELECT * FROM run_summary").to_pylist()
    assert len(summary) == 1 and summary[0]["questions"] == result.questions
    assert summary[0]["messages"] == sum(result.messages_by_kind.values())
    # learning curve: numbered 1..n per topic, running accuracy of a student who never
    # multiplies right stays 0, of one who always adds right stays 1
    curve = store.query("""
        SELECT topic, max(question_number) AS n, count(*) AS rows,
               min(cumulative_accuracy) AS lo, max(cumulative_accuracy) AS hi
        FROM learning_curve GROUP BY topic""").to_pylist()
    by_topic = {r["topic"]: r for r in curve}
    assert by_topic["arithmetic.multiplication"]["hi"] == 0.0
    assert by_topic["arithmetic.addition"]["lo"] == 1.0
    assert all(r["n"] == r["rows"] == topics[r["topic"]]["questions"] for r in curve)
    # strategies: one row per strategy used; reteaches add up to the reteach messages
    strategies = store.query("SELECT * FROM strategy_effectiveness").to_pylist()
    assert sum(r["reteaches"] for r in strategies) == result.messages_by_kind["reteach"]
    assert all(r["success_rate"] == 0.0 for r in strategies)  # reteaching never helps this one


def test_transcript_view_is_the_dialogue_in_order(logged) -> None:
    store, _ = logged
    lesson = store.lessons()[0].lesson_id
    rows = store.query("SELECT turn, kind FROM transcript WHERE lesson_id = ?", [lesson])
    typed = store.transcript(lesson)
    assert rows.column("kind").to_pylist() == [m.kind for m in typed]
    assert rows.column("turn").to_pylist() == list(range(len(typed)))


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO runs SELECT * FROM runs",
        "UPDATE messages SET text = 'x'",
        "DELETE FROM messages",
        "DROP TABLE messages",
        "CREATE TABLE evil (a INT)",
        "ALTER TABLE messages ADD COLUMN x INT",
        "ATTACH ':memory:' AS other",
        "COPY messages TO '{tmp}/stolen.csv'",
        "SELECT 1; DELETE FROM messages",
        "INSTALL httpfs",
        "CHECKPOINT",
        "SET threads = 1",
    ],
)
def test_sql_that_writes_is_refused_and_changes_nothing(logged, tmp_path, sql) -> None:
    store, _ = logged
    before = counts(store)
    with pytest.raises(StoreError, match="refused: teachloop sql is read-only"):
        store.read_only_query(sql.format(tmp=tmp_path))
    assert counts(store) == before
    assert not (tmp_path / "stolen.csv").exists()


def test_read_only_queries_work(logged) -> None:
    store, result = logged
    assert store.read_only_query("SELECT count(*) AS n FROM lessons").to_pylist() == [{"n": 5}]
    explained = store.read_only_query("EXPLAIN SELECT * FROM topic_accuracy")
    assert explained.num_rows >= 1
    with pytest.raises(StoreError, match=r"query failed: .*no_such_table"):
        store.read_only_query("SELECT * FROM no_such_table")
    df = store.df("SELECT * FROM run_summary")
    assert df.loc[0, "questions"] == result.questions


def test_lessons_filters(logged) -> None:
    store, _ = logged
    assert len(store.lessons()) == 5
    assert len(store.lessons(run_id="test-run", status="complete")) == 5
    assert store.lessons(status="failed") == []
    assert store.lessons(run_id="other") == []
    with_add = store.lessons(topic="arithmetic.addition")
    expected = store.query("""SELECT count(DISTINCT lesson_id) AS n FROM messages
        WHERE kind = 'question' AND topic = 'arithmetic.addition'""").to_pylist()[0]["n"]
    assert len(with_add) == expected
    pairs = list(store.transcripts("test-run"))
    assert [lesson.lesson_id for lesson, _ in pairs] == [x.lesson_id for x in store.lessons()]


def test_replay_formats(logged) -> None:
    store, _ = logged
    messages = store.transcript(store.lessons()[0].lesson_id)
    text = render_transcript(messages, "text")
    assert text.splitlines()[1].startswith("[ 0] teacher question 1 · arithmetic.")
    assert "critique, attempt 0 ·" in text
    if any(isinstance(m, Reteach) for m in messages):
        assert "strategy:" in text
    markdown = render_transcript(messages, "markdown")
    assert markdown.startswith("## Lesson `test-run-L00000`")
    as_json = json.loads(render_transcript(messages, "json"))
    assert [m["message_id"] for m in as_json] == [m.message_id for m in messages]
    assert sum(isinstance(m, Critique) for m in messages) == text.count("critique, attempt")


def test_export_then_merge_gives_identical_counts(logged, tmp_path) -> None:
    store, _ = logged
    exported = store.export_run("test-run", tmp_path / "export")
    assert exported["messages"] == counts(store)["messages"]
    merged = Store(tmp_path / "merged.duckdb")
    merged.merge(tmp_path / "export")
    run_tables = ("runs", "lessons", "messages", "mastery")
    assert {t: counts(merged)[t] for t in run_tables} == {t: counts(store)[t] for t in run_tables}
    # merging again (as an export or as the database itself) adds nothing
    assert set(merged.merge(tmp_path / "export").values()) == {0}
    assert set(merged.merge(store.path).values()) == {0}
    assert merged.transcript("test-run-L00000") == store.transcript("test-run-L00000")


def test_merge_combines_logs_of_two_machines(make_config, tmp_path) -> None:
    stores = []
    for name in ("a", "b"):
        config = make_config(db=tmp_path / f"{name}.duckdb", run_id=f"run-{name}", lessons=2)
        run_lessons(
            config,
            teacher_backend=ScriptedBackend(teacher_reply),
            student_backend=ScriptedBackend(adds_only_student),
            progress=False,
        )
        stores.append(Store(config.db))
    combined = Store(tmp_path / "all.duckdb")
    for s in stores:
        combined.merge(s.path)
    assert counts(combined)["messages"] == sum(counts(s)["messages"] for s in stores)
    runs = combined.query("SELECT run_id FROM run_summary ORDER BY run_id").to_pylist()
    assert runs == [{"run_id": "run-a"}, {"run_id": "run-b"}]


def future_store(tmp_path) -> Path:
    """A log written by a teachloop with a newer schema (version 99)."""
    db = tmp_path / "future.duckdb"
    Store(db)
    con = duckdb.connect(str(db))
    con.execute("UPDATE teachloop_meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    return db


def test_newer_schema_is_refused(tmp_path) -> None:
    db = future_store(tmp_path)
    with pytest.raises(StoreError, match="schema version 99, newer than this teachloop"):
        Store(db)


def test_old_schema_is_migrated_keeping_data(tmp_path) -> None:
    from importlib.resources import files

    db = tmp_path / "v1.duckdb"
    con = duckdb.connect(str(db))
    con.execute(files("teachloop.store").joinpath("migrations/001_core.sql").read_text())
    con.execute("INSERT INTO teachloop_meta VALUES ('schema_version', '1')")
    con.execute("""INSERT INTO runs VALUES ('old', now(), NULL, 'complete', 1, 't', 's', '{}')""")
    con.close()
    store = Store(db)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.query("SELECT run_id, lessons FROM run_summary").to_pylist() == [
        {"run_id": "old", "lessons": 0}
    ]


def test_reader_in_another_process_works_while_a_run_writes(tmp_path) -> None:
    db = tmp_path / "live.duckdb"
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    writer = subprocess.Popen(
        [sys.executable, str(TESTS / "scripted_run.py"), str(db), "24", "0.01"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    seen: list[int] = []
    try:
        while writer.poll() is None or not seen:
            if db.exists():
                done = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "teachloop.cli",
                        "sql",
                        "--db",
                        str(db),
                        "SELECT count(*) AS n FROM messages",
                        "--format",
                        "csv",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                assert done.returncode == 0, done.stderr
                seen.append(int(done.stdout.split()[-1]))
            time.sleep(0.05)
    finally:
        writer.wait(timeout=120)
    assert writer.returncode == 0
    assert seen == sorted(seen), "readers see the log grow, never shrink"
    assert len(set(seen)) >= 2, "some reads should land while the run was writing"
    assert seen[-1] == counts(Store(db))["messages"]


def test_reader_in_the_same_process_waits_for_a_write_batch(tmp_path) -> None:
    """DuckDB refuses a read-only connection while this process has the file open for writing
    (a run's writer thread, say); the store waits for the write, as for another process's lock."""
    import threading

    store = Store(tmp_path / "log.duckdb")
    opened, release = threading.Event(), threading.Event()

    def write() -> None:
        with store.connect() as con:
            con.execute("INSERT INTO teachloop_meta VALUES ('probe', 'written')")
            opened.set()
            release.wait(5)

    writer = threading.Thread(target=write)
    writer.start()
    opened.wait(5)
    threading.Timer(0.3, release.set).start()
    started = time.monotonic()
    rows = store.query("SELECT value FROM teachloop_meta WHERE key = 'probe'").to_pylist()
    writer.join()
    assert rows == [{"value": "written"}]
    assert time.monotonic() - started >= 0.25, "the read waited for the write to close"


# -- opening a log to read it never writes to it ------------------------------------------------


def _fingerprint(path: Path) -> tuple[str, int, list[str]]:
    """The file's bytes and mtime, and the files beside it (a .wal would be a write)."""
    siblings = sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name))
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns, siblings


def _old_schema_db(path: Path) -> Path:
    """A log written by teachloop at schema version 2 (before lessons.logged_at)."""
    from importlib.resources import files

    con = duckdb.connect(str(path))
    for script in ("001_core.sql", "002_training.sql"):
        con.execute(files("teachloop.store").joinpath(f"migrations/{script}").read_text())
    con.execute("INSERT INTO teachloop_meta VALUES ('schema_version', '2')")
    con.execute("""INSERT INTO runs VALUES ('old', now(), NULL, 'complete', 1, 't', 's', '{}')""")
    con.close()
    return path


def _read_only_commands(db: Path, out: Path) -> dict[str, list[str]]:
    return {
        "sql": ["sql", "--db", str(db), "SELECT count(*) AS n FROM runs"],
        "replay": ["replay", "--db", str(db), "old-L00000"],
        "lessons": ["lessons", "--db", str(db)],
        "report": ["report", "--db", str(db), "--out", str(out / "report")],
        "export": ["export", "--db", str(db), "--run", "old", "--out", str(out / "export")],
    }


@pytest.mark.parametrize("command", ["sql", "replay", "lessons", "report", "export"])
def test_read_only_commands_refuse_an_older_schema_and_leave_the_file_alone(
    tmp_path, capsys, command
) -> None:
    from teachloop import cli

    db = _old_schema_db(tmp_path / "old.duckdb")
    before = _fingerprint(db)
    assert cli.main(_read_only_commands(db, tmp_path)[command]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "has schema version 2, older than this teachloop's" in err
    assert f"upgrade it with `teachloop migrate --db {db}`" in err
    assert _fingerprint(db) == before


def test_read_only_commands_leave_a_current_log_alone(logged, tmp_path, capsys) -> None:
    from teachloop import cli

    store, _ = logged
    lesson = store.lessons()[0].lesson_id
    before = _fingerprint(store.path)
    for name, argv in _read_only_commands(store.path, tmp_path).items():
        if name == "replay":
            argv = [*argv[:-1], lesson]
        if name == "export":
            argv[argv.index("old")] = "test-run"
        assert cli.main(argv) == 0, (name, capsys.readouterr().err)
        assert _fingerprint(store.path) == before, name
    out = capsys.readouterr().out
    assert "exported run test-run" in out and "report:" in out


def test_migrate_command_upgrades_an_older_log(tmp_path, capsys) -> None:
    from teachloop import cli

    db = _old_schema_db(tmp_path / "old.duckdb")
    assert cli.main(["migrate", "--db", str(db)]) == 0
    assert f"upgraded {db} from schema version 2 to {SCHEMA_VERSION}" in capsys.readouterr().out
    assert Store.open(db, read_only=True).schema_version() == SCHEMA_VERSION
    assert cli.main(["migrate", "--db", str(db)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert cli.main(["sql", "--db", str(db), "SELECT run_id FROM run_summary"]) == 0
    assert cli.main(["migrate", "--db", str(tmp_path / "missing.duckdb")]) == 2


def test_read_only_open_refuses_newer_and_foreign_files(tmp_path) -> None:
    db = future_store(tmp_path)
    with pytest.raises(StoreError, match="schema version 99, newer than this teachloop"):
        Store.open(db, read_only=True)
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).close()
    before = _fingerprint(other)
    with pytest.raises(StoreError, match="not a teachloop database"):
        Store.open(other, read_only=True)
    assert _fingerprint(other) == before


def test_the_cli_reads_logs_without_pandas(tmp_path) -> None:
    """`pip install teachloop` brings no pandas (only the `train` extra does): the CLI must start
    and query without it, and Store.df must say what to install."""
    script = """
import sys
sys.modules["pandas"] = None  # `import pandas` now raises ImportError
from teachloop import cli
from teachloop.errors import StoreError
from teachloop.store.store import Store

db = sys.argv[1]
Store(db)
assert cli.main(["sql", "--db", db, "SELECT 41 + 1 AS answer", "--format", "json"]) == 0
try:
    Store(db).df("SELECT 1")
except StoreError as e:
    print("df:", e)
try:
    cli.main(["--help"])
except SystemExit as e:
    assert e.code == 0
"""
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "log.duckdb")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert '"answer": 42' in done.stdout
    assert "df: Store.df needs pandas: pip install pandas" in done.stdout
    assert "usage: teachloop" in done.stdout


def test_messages_columns_come_from_the_typed_messages(logged) -> None:
    """The writer flattens each message's JSON in SQL (`messages_from_payloads`): every column
    equals the typed message's field, topic and difficulty are the question's."""
    store, _ = logged
    rows = store.query("SELECT * EXCLUDE (payload) FROM messages ORDER BY lesson_id, turn")
    by_id = {r["message_id"]: r for r in rows.to_pylist()}
    lessons = store.lessons()
    messages = [m for lesson in lessons for m in store.transcript(lesson.lesson_id)]
    assert len(by_id) == len(messages) > 0
    questions = {m.message_id: m for m in messages if m.kind == "question"}
    for m in messages:
        row = by_id[m.message_id]
        question = questions[getattr(m, "question_id", m.message_id)]
        gen = m.generation
        assert row == {
            "message_id": m.message_id,
            "run_id": m.run_id,
            "lesson_id": m.lesson_id,
            "turn": m.turn,
            "kind": m.kind,
            "sender": m.sender.value,
            "created_at": m.created_at,
            "text": m.text,
            "question_id": question.message_id,
            "topic": question.topic,
            "difficulty": question.difficulty,
            "attempt": getattr(m, "attempt", None),
            "final_answer": getattr(m, "final_answer", None),
            "correct": getattr(m, "correct", None),
            "score": getattr(m, "score", None),
            "error_category": (e.value if (e := getattr(m, "error_category", None)) else None),
            "strategy": s.value if (s := getattr(m, "strategy", None)) else None,
            "model": gen.model if gen else None,
            "endpoint": gen.endpoint if gen else None,
            "prompt_tokens": gen.prompt_tokens if gen else 0,
            "completion_tokens": gen.completion_tokens if gen else 0,
            "latency_s": gen.latency_s if gen else 0.0,
        }


def test_no_message_is_stored_twice_however_often_it_is_written(logged) -> None:
    store, _ = logged
    logs = [
        LessonLog(
            lesson=lesson,
            messages=store.transcript(lesson.lesson_id),
            mastery=[
                MasterySnapshot.model_validate(row)
                for row in store.query(
                    "SELECT * FROM mastery WHERE lesson_id = ?", [lesson.lesson_id]
                ).to_pylist()
            ],
        )
        for lesson in store.lessons()
    ]
    assert any(log.mastery for log in logs)
    before = counts(store)
    store.write_lessons(logs)  # all of it again
    store.write_lessons([logs[0], logs[0], logs[1]])  # and a batch holding a lesson twice
    assert counts(store) == before
    row = store.query(
        "SELECT count(*) AS n, count(DISTINCT message_id) AS ids FROM messages"
    ).to_pylist()[0]
    assert row["n"] == row["ids"] == before["messages"]


def test_migrations_5_and_6_keep_every_row_and_drop_the_keys(tmp_path) -> None:
    from importlib.resources import files

    db = tmp_path / "v4.duckdb"
    con = duckdb.connect(str(db))
    for script in ("001_core", "002_training", "003_logged_at", "004_experiments"):
        con.execute(files("teachloop.store").joinpath(f"migrations/{script}.sql").read_text())
    con.execute("INSERT INTO teachloop_meta VALUES ('schema_version', '4')")
    con.execute("""INSERT INTO messages VALUES ('m1', 'r', 'L1', 0, 'question', 'teacher',
        now(), 'What is 1 + 1?', 'm1', 'arithmetic.addition', 1, NULL, NULL, NULL, NULL, NULL,
        NULL, NULL, NULL, 0, 0, 0.0, '{"kind": "question"}')""")
    con.execute(
        "INSERT INTO mastery VALUES ('r', 'L1', 0, 'arithmetic.addition', 2, 1, 0.67, 2, now())"
    )
    con.close()
    store = Store(db)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.query("SELECT message_id, text FROM messages").to_pylist() == [
        {"message_id": "m1", "text": "What is 1 + 1?"}
    ]
    assert store.query("SELECT lesson_id, alpha FROM mastery").to_pylist() == [
        {"lesson_id": "L1", "alpha": 2.0}
    ]
    keys = store.query(
        "SELECT count(*) AS n FROM duckdb_constraints() "
        "WHERE table_name IN ('messages', 'mastery') "
        "AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')"
    ).to_pylist()
    assert keys == [{"n": 0}]


def test_a_message_stored_twice_is_counted_once(logged) -> None:
    """`messages` has no key: a row that slips in twice (someone's own INSERT, a lake without
    keys) must not change a view, a summary or the pairs."""
    store, result = logged
    run_id = result.run_id

    def everything() -> dict:
        views = {v: store.query(f"SELECT * FROM {v} ORDER BY ALL").to_pylist() for v in VIEWS}
        return {
            **views,
            "transcripts": [store.transcript(x.lesson_id) for x in store.lessons()],
            "by_kind": store.messages_by_kind(run_id),
            "teacher_tokens": store.teacher_tokens(run_id),
            "summary": store.run_summary(run_id),
            "mastery": store.mastery_counts(store.run_summary(run_id).student_model),
            "pairs": [p.model_dump(exclude={"created_at"}) for p in store.run_pairs(run_id)],
        }

    before = everything()
    with store.writing() as con:
        con.execute("INSERT INTO messages SELECT * FROM messages")
        con.execute("INSERT INTO mastery SELECT * FROM mastery")
    assert store.query("SELECT count(*) AS n FROM messages").to_pylist()[0]["n"] == 2 * (
        before["summary"].messages
    )
    assert before["pairs"] and everything() == before
