"""A restart of a lake's catalog (the PostgreSQL server stopped and started again, as a failover
or an upgrade does) during a run: writes go through a writer process that is replaced and sent
the same write again, the checkpointer reconnects and resends its group, reads are retried
(``store/lake_writer.py``, ``graphs/postgres_saver.py``). Each test leaves the server running."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import assert_exact, lesson, scripted_cli, scripted_env
from lake_support import Postgres

from teachloop.records import RunRecord
from teachloop.store.base import KEYS
from teachloop.store.lake_writer import RESENT
from teachloop.store.store import RUN_TABLES, Store


@pytest.fixture
def lake(postgres: Postgres, tmp_path: Path) -> tuple[str, Path]:
    return postgres.lake(tmp_path / "lake")


@pytest.fixture
def restartable(postgres: Postgres) -> Iterator[Postgres]:
    """The session's server, running again after the test whatever it did."""
    yield postgres
    with contextlib.suppress(subprocess.CalledProcessError):  # it was running
        postgres.start()


def _run(tmp_path: Path, target: str, data: Path, run_id: str, *extra: str) -> list[str]:
    config = tmp_path / "run.toml"
    config.write_text(
        'topics = ["arithmetic.addition", "arithmetic.multiplication"]\n'
        f'[lesson]\nquestions = 2\n[store]\ndata_path = "{data}"\n{"".join(extra)}'
    )
    return scripted_cli(
        "run", "--config", str(config), "--db", target, "--lessons", "12",
        "--concurrency", "2", "--run-id", run_id, "--quiet",
    )  # fmt: skip


def _start_and_wait_for(cmd: list[str], store: Store, run_id: str, lessons: int) -> tuple:
    """The run started in a child process, once ``lessons`` of its lessons are logged."""
    child = subprocess.Popen(
        cmd, env=scripted_env(0.15), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 90
    while len(done := store.finished_lessons(run_id)) < lessons and time.monotonic() < deadline:
        assert child.poll() is None, child.communicate()
        time.sleep(0.1)
    assert child.poll() is None and len(done) < 12, "the run ended before the restart"
    return child, done


def test_a_run_survives_a_catalog_restart(
    lake: tuple[str, Path], restartable: Postgres, tmp_path: Path
) -> None:
    """PostgreSQL stopped for 5 s and started again while `teachloop run` writes 12 lessons to
    the lake: the run finishes every lesson, exit 0, every message once."""
    target, data = lake
    store = Store(target, data_path=data)
    child, done = _start_and_wait_for(_run(tmp_path, target, data, "restart"), store, "restart", 3)
    restartable.stop()
    time.sleep(5)
    restartable.start()
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert "error:" not in err and "Traceback" not in err, err
    assert "lessons: 12 (0 failed" in out
    assert_exact(store, "restart", 12)
    assert done <= store.finished_lessons("restart")


def test_a_catalog_that_stays_down_ends_the_run_with_one_error_line(
    lake: tuple[str, Path], restartable: Postgres, tmp_path: Path
) -> None:
    """Past `[store] reconnect_timeout_s` the run stops with one `error:` line naming the catalog
    and the resume command; what was logged stays, and the resumed run is exact."""
    target, data = lake
    store = Store(target, data_path=data)
    cmd = _run(tmp_path, target, data, "down", "reconnect_timeout_s = 2\n")
    child, _ = _start_and_wait_for(cmd, store, "down", 3)
    restartable.stop()
    try:
        _, err = child.communicate(timeout=90)
    finally:
        restartable.start()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert child.returncode == 2, err
    assert len(errors) == 1 and "Traceback" not in err, err
    assert f"catalog of lake {target}" in errors[0] or f"checkpoints in {target}" in errors[0]
    assert "reconnect_timeout_s" in errors[0] and errors[0].endswith("--run-id down"), errors[0]
    logged = store.finished_lessons("down")
    assert 3 <= len(logged) < 12
    again = subprocess.run(cmd, env=scripted_env(), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert_exact(store, "down", 12)


def test_a_dead_writer_is_replaced_and_its_write_sent_again(lake: tuple[str, Path]) -> None:
    target, data = lake
    store = Store(target, data_path=data)
    store.write_lessons([lesson("w-L0", [(" 5", True)])])
    writer = store.lake_writer
    assert writer is not None and writer._child is not None
    os.kill(writer._child.proc.pid, signal.SIGKILL)
    store.write_lessons([lesson("w-L1", [(" 5", True)])])
    assert writer.restarts == 1
    assert sorted(lesson.lesson_id for lesson in store.lessons()) == ["w-L0", "w-L1"]


def test_a_read_waits_for_the_catalog(lake: tuple[str, Path], restartable: Postgres) -> None:
    """A read that meets a stopped catalog fails catchably in DuckDB; the store asks again once
    the catalog answers (here after 3 s)."""
    target, data = lake
    store = Store(target, data_path=data)
    store.write_lessons([lesson("r-L0", [(" 5", True)])])
    restartable.stop()
    threading.Timer(3, restartable.start).start()
    started = time.monotonic()
    assert store.finished_lessons("r") == {"r-L0"}
    assert time.monotonic() - started >= 2


def _rows(store: Store) -> dict[str, list[dict]]:
    """Every table's rows without the times a write stamps (``logged_at``, ``finished_at``)."""
    rows = {}
    for table in RUN_TABLES:  # what the resent writes touch
        data = store.query(f"SELECT * FROM {table} ORDER BY ALL").to_pylist()
        rows[table] = [
            {k: v for k, v in r.items() if k not in ("logged_at", "finished_at")} for r in data
        ]
    return rows


def test_every_resent_write_leaves_the_same_rows_when_run_twice(lake: tuple[str, Path]) -> None:
    """The writer sends a write again when its process died, maybe after it committed: each
    method marked `@resent` must be idempotent (insert_new / upsert on base.KEYS, or columns set
    to given values). A method marked without a case here fails the test."""
    target, data = lake
    store = Store(target, data_path=data)
    store.lake_writer = None  # in this process: the SQL itself is what is checked
    run = RunRecord(
        run_id="r", lessons_planned=1, teacher_model="t", student_model="s@base", config="{}"
    )
    cases = {
        "write_run": (run,),
        "write_lessons": ([lesson("r-L0", [(" 4", False), (" 5", True)])],),
        "finish_run": ("r", "complete"),
    }
    assert set(cases) == RESENT
    for method, args in cases.items():
        getattr(store, method)(*args)
        once = _rows(store)
        getattr(store, method)(*args)
        assert _rows(store) == once, method
    for table, rows in _rows(store).items():
        keys = {tuple(r[c] for c in KEYS[table]) for r in rows}
        assert len(keys) == len(rows), table
