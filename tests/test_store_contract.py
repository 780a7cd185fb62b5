"""The store's interface (``LogStore``), method by method, on hand-made logs: what any store
implementation must do. Each test takes its store from the ``store`` fixture, parametrized over
``STORE_KINDS``; a new implementation adds its kind to ``open_store``."""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import T, lesson

from teachloop.errors import StoreError
from teachloop.records import LessonLog, MasterySnapshot, ModelVersion, RunRecord
from teachloop.store.interface import LogStore
from teachloop.store.records import (
    EvaluationRow,
    MasteryCounts,
    RunSummary,
    StrategyCounts,
    TopicCounts,
    TrainingJob,
)
from teachloop.store.store import Store

STORE_KINDS = ["duckdb", "ducklake"]


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def open_store(store_kind: str, request: pytest.FixtureRequest) -> Callable[..., LogStore]:
    """Opens a store of this test's kind named by a path: created (and migrated), or an
    existing one opened for reading only. A lake's catalog is a database on the session's
    PostgreSQL server, its data a directory beside the path."""

    def open_(path: Path, *, read_only: bool = False) -> LogStore:
        if store_kind == "duckdb":
            return Store.open(path, read_only=True) if read_only else Store(path)
        postgres = request.getfixturevalue("postgres")
        target, data = postgres.lake(path, create=not read_only)
        return Store.open(target, read_only=True) if read_only else Store(target, data_path=data)

    return open_


@pytest.fixture
def store(open_store: Callable[..., LogStore], tmp_path: Path) -> LogStore:
    return open_store(tmp_path / "log.duckdb")


def _run(run_id: str = "r") -> RunRecord:
    return RunRecord(
        run_id=run_id,
        started_at=T,
        lessons_planned=3,
        teacher_model="teacher",
        student_model="student@base",
        config="{}",
    )


def _logs() -> list[LessonLog]:
    """L1 fixed by a reteach, L2 wrong twice, L3 right first time; L1 with mastery snapshots."""
    first = lesson("L1", [("7", False), ("5", True)])
    snapshots = [
        MasterySnapshot(
            run_id="r",
            lesson_id="L1",
            question_index=0,
            topic="arithmetic.addition",
            alpha=1.0,
            beta=2.0,
            mean=1 / 3,
            difficulty=2,
            created_at=T,
        )
    ]
    return [
        first.model_copy(update={"mastery": snapshots}),
        lesson("L2", [("6", False), ("2", False)], question="What is 1 + 3?", reference="4"),
        lesson("L3", [("5", True)]),
    ]


def test_implements_the_interface(store: LogStore) -> None:
    assert isinstance(store, LogStore)
    wanted = {
        name
        for name, member in inspect.getmembers(LogStore)
        if inspect.isfunction(member) and not name.startswith("_")
    }
    assert wanted <= {name for name in dir(store) if callable(getattr(store, name))}
    assert not store.read_only


def test_the_lesson_log_round_trips_with_typed_reads(store: LogStore) -> None:
    store.write_run(_run())
    logs = _logs()
    store.write_lessons(logs)
    store.write_lessons(logs)  # idempotent
    assert store.finished_lessons("r") == {"L1", "L2", "L3"}
    assert [x.lesson_id for x in store.lessons(run_id="r")] == ["L1", "L2", "L3"]
    assert store.transcript("L1") == logs[0].messages
    assert [lesson.lesson_id for lesson, _ in store.transcripts("r")] == ["L1", "L2", "L3"]
    store.finish_run("r", "complete")

    summary = store.run_summary("r")
    assert isinstance(summary, RunSummary)
    assert (summary.status, summary.lessons, summary.lessons_failed) == ("complete", 3, 0)
    assert (summary.questions, summary.first_try_accuracy) == (3, pytest.approx(1 / 3))
    assert summary.after_reteach_accuracy == pytest.approx(2 / 3)
    assert summary.reteach_fix_rate == pytest.approx(1 / 2)
    assert summary.messages == sum(len(log.messages) for log in logs)
    assert store.run_summary("no-such-run") is None

    (topic,) = store.topic_accuracy("r")
    assert (topic.topic, topic.questions) == ("arithmetic.addition", 3)
    assert topic.first_try_accuracy == pytest.approx(1 / 3)
    assert store.topic_accuracy("no-such-run") == []
    assert store.messages_by_kind("r") == {"answer": 5, "critique": 5, "question": 3, "reteach": 2}


def test_mastery_counts_are_typed(store: LogStore) -> None:
    store.write_run(_run())
    store.write_lessons(_logs())
    counts = store.mastery_counts("student@base")
    assert counts == MasteryCounts(
        topics=[TopicCounts(topic="arithmetic.addition", successes=1, failures=2, difficulty=2)],
        strategies=[
            StrategyCounts(topic="arithmetic.addition", strategy="hint", successes=1, failures=1)
        ],
    )
    assert store.mastery_counts("nobody@base") == MasteryCounts(topics=[], strategies=[])
    # What the other lessons showed (a Ray worker leaves out its own): L1 and its snapshot go.
    assert store.mastery_counts("student@base", run_id="r", exclude=["L1"]) == MasteryCounts(
        topics=[TopicCounts(topic="arithmetic.addition", successes=1, failures=1, difficulty=None)],
        strategies=[
            StrategyCounts(topic="arithmetic.addition", strategy="hint", successes=0, failures=1)
        ],
    )


def test_mastery_counts_carry_across_runs_and_discount_other_versions(store: LogStore) -> None:
    """A later round of the same student starts from what earlier rounds showed; a newly
    promoted version of the same model starts from it at a discount."""
    store.write_run(_run())
    store.write_lessons(_logs())
    same = store.mastery_counts("student@base")
    (topic,) = store.mastery_counts("student@v0001", decay=0.5).topics
    assert (topic.successes, topic.failures) == (0.5 * same.topics[0].successes, 0.5 * 2)
    assert store.mastery_counts("student@v0001", decay=0.0).topics == []
    assert store.mastery_counts("other@base").topics == []  # another model: nothing carries
    # A model whose name matches as a LIKE pattern is still another model ("_" is no wildcard).
    assert store.mastery_counts("stud_nt@v0001").topics == []


def test_current_student_promotion_and_rollback(store: LogStore) -> None:
    # no base row yet: the base model itself, and reading wrote nothing
    assert store.current_student("m").version == "base"
    assert store.model_versions() == []
    store.ensure_base("m")
    store.ensure_base("m")
    assert [v.version for v in store.model_versions()] == ["base"]
    assert store.current_student("m").version == "base"
    assert store.next_version_name() == "v0001"

    made = datetime.now(UTC)
    for i, name in enumerate(("v0001", "v0002"), start=1):
        version = ModelVersion(
            version=name,
            parent_version="base",
            method="dpo",
            adapter_path=f"/adapters/{name}",
            base_model="m",
            job_id=f"job-{i}",
            created_at=made + timedelta(seconds=i),
        )
        store.start_job(_job(f"job-{i}"))
        store.complete_job(f"job-{i}", version, [], log="[]")
    assert store.next_version_name() == "v0003"
    assert store.current_student("m").version == "base"  # training does not promote

    assert store.promote("v0002").promoted
    assert store.current_student("m").version == "v0002"
    store.promote("v0001")  # an older one: the newer loses its promotion
    assert store.current_student("m").version == "v0001"
    assert {v.version for v in store.model_versions() if v.promoted} == {"base", "v0001"}
    store.promote("base")  # a rollback
    assert store.current_student("m").version == "base"
    assert store.current_student("other-model").base_model == "other-model"
    assert store.model_version("v0002").adapter_path == "/adapters/v0002"
    with pytest.raises(StoreError, match=r"'v0009' is not in .*known: base, v0001, v0002"):
        store.model_version("v0009")


def _job(job_id: str, started_at: datetime | None = None) -> TrainingJob:
    return TrainingJob(
        job_id=job_id,
        method="dpo",
        from_version="base",
        status="running",
        pairs=2,
        config=json.dumps({"steps": 2}),
        started_at=started_at or datetime.now(UTC),
    )


def test_a_job_consumes_its_pairs_with_its_version_in_one_step(store: LogStore) -> None:
    store.write_lessons(_logs())
    built = store.build_pairs()
    assert built.unused == 2 and built.added == {
        "self_corrected": 1,
        "reference": 1,
        "self_corrected_leaked": 0,
    }
    pairs = store.unused_pairs()
    store.ensure_base("m")

    store.start_job(_job("job-killed", T))
    assert store.fail_interrupted_jobs() == 1
    assert store.fail_interrupted_jobs() == 0
    store.start_job(_job("job-broken", T + timedelta(seconds=1)))
    store.fail_job("job-broken", "RuntimeError: boom", log='[{"step": 1}]')
    store.start_job(_job("job-ok", T + timedelta(seconds=2)))
    version = ModelVersion(
        version="v0001", method="dpo", base_model="m", job_id="job-ok", watermark=T
    )
    store.complete_job("job-ok", version, [p.pair_id for p in pairs], log='[{"step": 1}]')

    jobs = {j.job_id: j for j in store.training_jobs()}
    assert [j.job_id for j in store.training_jobs()] == ["job-killed", "job-broken", "job-ok"]
    assert (jobs["job-killed"].status, jobs["job-killed"].error) == ("failed", "interrupted")
    assert (jobs["job-broken"].status, jobs["job-broken"].error) == ("failed", "RuntimeError: boom")
    assert jobs["job-ok"].status == "complete" and jobs["job-ok"].finished_at is not None
    assert json.loads(jobs["job-ok"].log or "") == [{"step": 1}]
    assert json.loads(jobs["job-ok"].config or "") == {"steps": 2}
    assert store.unused_pairs() == []
    assert store.model_version("v0001").job_id == "job-ok"
    assert store.build_pairs().unused == 0  # consumed pairs stay consumed


def test_evaluations_are_stored_once_per_id_and_topic(store: LogStore) -> None:
    def row(topic: str, correct: int) -> EvaluationRow:
        return EvaluationRow(
            eval_id="v0001:abc",
            version="v0001",
            topic=topic,
            questions=4,
            correct=correct,
            accuracy=correct / 4,
            seed=0,
            created_at=T,
        )

    assert store.evaluation("v0001:abc") == []
    store.write_evaluation([row("b", 1), row("a", 3)])
    store.write_evaluation([row("a", 0)])  # already measured: kept as it was
    store.write_evaluation([])
    assert store.evaluation("v0001:abc") == [row("a", 3), row("b", 1)]
    assert store.evaluation("v0001:other") == []


def _fingerprint(store: LogStore, path: Path) -> tuple[object, ...]:
    """What any write would change: the file's bytes, or the lake's last snapshot and files."""
    if store.path is None:
        snapshot = store.query("SELECT max(snapshot_id) AS s FROM ducklake_snapshots('lake')")
        files = sorted(str(p) for p in path.with_suffix(".lake").rglob("*"))
        return snapshot.to_pylist(), files
    siblings = sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name))
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns, siblings


def test_a_read_only_store_reads_and_never_writes(
    open_store: Callable[..., LogStore], tmp_path: Path
) -> None:
    path = tmp_path / "log.duckdb"
    writer = open_store(path)
    writer.write_run(_run())
    writer.write_lessons(_logs())
    writer.ensure_base("m")
    before = _fingerprint(writer, path)

    reader = open_store(path, read_only=True)
    assert reader.read_only
    assert len(reader.lessons()) == 3 and reader.current_student("m").version == "base"
    assert reader.run_summary("r") is not None and reader.unused_pairs() == []
    assert reader.read_only_query("SELECT count(*) AS n FROM lessons").to_pylist() == [{"n": 3}]
    for write in (
        lambda: reader.write_run(_run("r2")),
        lambda: reader.write_lessons(_logs()),
        lambda: reader.finish_run("r", "failed"),
        lambda: reader.ensure_base("m2"),
        lambda: reader.promote("base"),
        lambda: reader.build_pairs(),
        lambda: reader.fail_interrupted_jobs(),
        lambda: reader.start_job(_job("j")),
    ):
        with pytest.raises(StoreError, match="read-only"):
            write()
    assert _fingerprint(writer, path) == before
    assert writer.model_versions() == reader.model_versions()


def test_read_only_needs_an_existing_store(
    open_store: Callable[..., LogStore], tmp_path: Path
) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        open_store(tmp_path / "missing.duckdb", read_only=True)
    assert not (tmp_path / "missing.duckdb").exists()
