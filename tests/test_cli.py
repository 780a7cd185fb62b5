"""`teachloop run` as a user calls it: a subprocess, against local servers on 127.0.0.1."""

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fake_openai import FakeOpenAIServer, free_port_url
from helpers import openai_config, solver, teachloop

from teachloop import Store, cli


def test_run_through_openai_endpoints_logs_and_prints_summary(tmp_path: Path) -> None:
    db = tmp_path / "cli.duckdb"
    with FakeOpenAIServer(solver) as server:
        config = openai_config(tmp_path, server.url)
        done = teachloop(
            "run",
            "--config",
            str(config),
            "--db",
            str(db),
            "--lessons",
            "3",
            "--concurrency",
            "3",
            "--run-id",
            "cli-run",
            "--quiet",
        )
    assert done.returncode == 0, done.stderr
    assert "run cli-run: complete" in done.stdout
    assert str(db) in done.stdout.replace("\n", "")
    rows = (
        Store(db)
        .query("""
        SELECT count(*) FILTER (WHERE kind = 'question') AS questions,
               count(*) FILTER (WHERE kind = 'critique' AND correct) AS correct,
               count(DISTINCT endpoint) FILTER (WHERE kind = 'answer') AS endpoints
        FROM messages""")
        .to_pylist()[0]
    )
    assert rows == {"questions": 6, "correct": 6, "endpoints": 1}


def test_unreachable_endpoint_is_one_line_error(tmp_path: Path) -> None:
    url = free_port_url()
    done = teachloop(
        "run", "--config", str(openai_config(tmp_path, url)), "--db", str(tmp_path / "x.duckdb")
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: cannot reach teacher endpoint {url}")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_bad_config_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("lessons = 2\n[student]\nmodle = 'x'\n")
    done = teachloop("run", "--config", str(path))
    assert done.returncode == 2
    assert done.stderr == f"error: {path}: student.modle: unknown key (check the spelling)\n"


def test_unknown_topic_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text("topics = ['arithmetic.division']\n")
    done = teachloop("run", "--config", str(path), "--db", str(tmp_path / "t.duckdb"))
    assert done.returncode == 2
    assert "arithmetic.division" in done.stderr and done.stderr.count("\n") == 1


def test_sql_replay_and_lessons_commands(tmp_path: Path) -> None:
    db = tmp_path / "q.duckdb"
    with FakeOpenAIServer(solver) as server:
        config = openai_config(tmp_path, server.url)
        assert (
            teachloop(
                "run",
                "--config",
                str(config),
                "--db",
                str(db),
                "--lessons",
                "2",
                "--run-id",
                "q",
                "--quiet",
            ).returncode
            == 0
        )
    csv = teachloop(
        "sql", "--db", str(db), "--format", "csv", "SELECT topic, questions FROM topic_accuracy"
    )
    # Quoted only where needed, so a shell can take a value as it is.
    assert csv.stdout.splitlines() == ["topic,questions", "arithmetic.addition,4"]
    needs_quotes = teachloop(
        "sql", "--db", str(db), "--format", "csv", """SELECT 'a,b' AS "x,y", 'say "hi"' AS s"""
    )
    assert needs_quotes.stdout.splitlines() == ['"x,y",s', '"a,b","say ""hi"""']
    as_json = teachloop(
        "sql",
        "--db",
        str(db),
        "--format",
        "json",
        "SELECT kind, count(*) AS n FROM messages GROUP BY kind ORDER BY kind",
    )
    assert json.loads(as_json.stdout) == [
        {"kind": "answer", "n": 4},
        {"kind": "critique", "n": 4},
        {"kind": "question", "n": 4},
    ]
    out = tmp_path / "m.parquet"
    assert (
        teachloop("sql", "--db", str(db), "SELECT * FROM messages", "--out", str(out)).returncode
        == 0
    )
    assert pq.read_table(out).num_rows == 12
    refused = teachloop("sql", "--db", str(db), "DELETE FROM messages")
    assert refused.returncode == 2 and "read-only" in refused.stderr
    assert "Traceback" not in refused.stderr
    replay = teachloop("replay", "--db", str(db), "q-L00001", "--format", "markdown")
    assert replay.returncode == 0 and replay.stdout.startswith("## Lesson `q-L00001`")
    missing = teachloop("replay", "--db", str(db), "nope")
    assert missing.returncode == 2 and "lesson 'nope' is not in" in missing.stderr
    listed = teachloop(
        "lessons", "--db", str(db), "--topic", "arithmetic.addition", "--format", "csv"
    )
    assert [line.split(",")[0] for line in listed.stdout.splitlines()[1:]] == [
        "q-L00000",
        "q-L00001",
    ]
    nodb = teachloop("sql", "--db", str(tmp_path / "none.duckdb"), "SELECT 1")
    assert nodb.returncode == 2 and "does not exist" in nodb.stderr


def test_missing_model_files_are_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(f"[student]\nmodel = '{tmp_path / 'no-such-model'}'\n")
    done = teachloop("run", "--config", str(path), "--db", str(tmp_path / "m.duckdb"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: model '{tmp_path / 'no-such-model'}' is neither")


def _commands(
    parser: argparse.ArgumentParser, name: str = "teachloop"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(command name, its parser) for every command and subcommand."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                yield from _commands(subparser, f"{name} {sub}")


def test_every_command_that_takes_db_takes_the_lake_options() -> None:
    """Flags copied from one command work in the next: `run --db LAKE --data-path DIR` and
    `sql --db LAKE --data-path DIR` alike."""
    options = {
        name: {o for a in parser._actions for o in a.option_strings}
        for name, parser in _commands(cli.build_parser())
    }
    with_db = {name for name, opts in options.items() if "--db" in opts}
    assert {"teachloop run", "teachloop sql", "teachloop lake maintain"} <= with_db
    assert len(with_db) >= 15
    assert not [name for name in with_db if "--data-path" not in options[name]]


def test_a_data_path_with_a_duckdb_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "log.duckdb"
    Store(db)
    for argv in (
        ["sql", "--db", str(db), "--data-path", str(tmp_path), "SELECT 1"],
        ["run", "--db", str(db), "--data-path", str(tmp_path)],
    ):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err == (
            f"error: --data-path is a lake's option (--db ducklake:postgres:...), and {db} is a "
            "DuckDB file: leave it out"
        )
