"""Training jobs, the promotion gate and crash safety, on a tiny random-weight model."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_pairs import lesson
from tiny_model import build_tiny_model

from teachloop import RunConfig, Store, cli
from teachloop.training.jobs import (
    _eval_id,
    current_student,
    ensure_base,
    evaluate_and_promote,
    train,
)
from teachloop.training.pairs import build_pairs, unused_pairs

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def setup(tmp_path: Path, tiny: Path, steps: int = 2, method: str = "dpo") -> RunConfig:
    config = RunConfig.validated(
        {
            "db": tmp_path / "jobs.duckdb",
            "topics": ["arithmetic.addition"],
            "student": {"model": str(tiny), "dtype": "float32"},
            "eval": {"per_topic": 4},
            "training": {"steps": steps, "batch_size": 2, "method": method},
        }
    )
    store = Store(config.db)
    store.write_lessons(
        [
            lesson("L1", [("7", False), ("5", True)]),
            lesson("L2", [("6", False), ("2", False)], question="What is 1 + 3?", reference="4"),
        ]
    )
    assert build_pairs(store).unused == 2
    return config


@pytest.mark.parametrize("method", ["dpo", "sft"])
def test_job_trains_a_version_and_consumes_the_pairs(tmp_path, tiny, method) -> None:
    config = setup(tmp_path, tiny, method=method)
    job = train(config, progress=False)
    assert job.status == "complete" and job.steps == 2 and job.pairs == 2
    store = Store(config.db)
    v = job.version
    assert v is not None and (v.version, v.parent_version, v.method) == ("v0001", "base", method)
    assert (Path(v.adapter_path) / "adapter_config.json").is_file()
    assert unused_pairs(store) == []
    row = store.query("SELECT status, log FROM training_jobs").to_pylist()[0]
    log = json.loads(row["log"])
    assert row["status"] == "complete" and [s["step"] for s in log] == [1, 2]
    if method == "dpo":
        assert all(s["reward_margin"] is not None for s in log)
    # nothing new: a second job (as cron would start it) does nothing
    again = train(config, progress=False)
    assert again.status == "nothing_to_do" and again.version is None
    assert current_student(store, str(tiny)).version == "base"  # not promoted by training


def seed_eval(store: Store, config: RunConfig, version: str, correct: int) -> None:
    with store.connect() as con:
        con.execute(
            "INSERT INTO evaluations VALUES (?, ?, 'arithmetic.addition', 4, ?, ?, 0, now())",
            [_eval_id(version, config), version, correct, correct / 4],
        )


def test_gate_promotes_improvements_and_refuses_regressions(tmp_path, tiny) -> None:
    config = setup(tmp_path, tiny)
    store = Store(config.db)
    v1 = train(config, progress=False).version
    seed_eval(store, config, "base", 2)
    seed_eval(store, config, "v0001", 1)  # 25% vs 50%: beyond the 5% tolerance
    refused = evaluate_and_promote(config, "v0001")
    assert not refused.promoted and refused.regressed == ["arithmetic.addition", "overall"]
    assert current_student(store, str(tiny)).version == "base"
    store.write_lessons([lesson("L3", [("9", False), ("5", True)])])
    build_pairs(store)
    v2 = train(config, progress=False).version
    assert v2.version == "v0002" and v2.parent_version == "base" and v1 is not None
    seed_eval(store, config, "v0002", 3)
    accepted = evaluate_and_promote(config, "v0002")
    assert accepted.promoted and accepted.incumbent == "base"
    assert accepted.incumbent_result.accuracy == 0.5 and accepted.result.accuracy == 0.75
    assert current_student(store, str(tiny)).version == "v0002"

    # `teachloop promote` by hand: back to base (a rollback), then forward to v0001
    assert cli.main(["promote", "--db", str(config.db), "base"]) == 0
    assert current_student(store, str(tiny)).version == "base"
    promoted = {v.version for v in store.model_versions() if v.promoted}
    assert promoted == {"base"}  # later versions lost their promotion, and stay on disk
    assert Path(v2.adapter_path or "").is_dir()
    assert cli.main(["promote", "--db", str(config.db), "v0001"]) == 0
    assert current_student(store, str(tiny)).version == "v0001"
    assert cli.main(["promote", "--db", str(config.db), "v0009"]) == 2  # unknown: one line


def test_real_evaluation_is_stored_and_reused(tmp_path, tiny) -> None:
    config = setup(tmp_path, tiny)
    train(config, progress=False)
    gate = evaluate_and_promote(config, "v0001", promote=False)
    assert gate.result.questions == 4 and gate.incumbent_result.questions == 4
    store = Store(config.db)
    rows = store.query("SELECT version, questions FROM evaluations ORDER BY version").to_pylist()
    assert rows == [{"version": "base", "questions": 4}, {"version": "v0001", "questions": 4}]
    started = time.perf_counter()
    evaluate_and_promote(config, "v0001", promote=False)
    assert time.perf_counter() - started < 2.0  # read from the store, not re-generated
    assert not gate.promoted


def test_killed_job_leaves_state_consistent_and_a_rerun_succeeds(tmp_path, tiny) -> None:
    config = setup(tmp_path, tiny, steps=400)
    cfg_file = tmp_path / "job.toml"
    cfg_file.write_text(
        f'topics = ["arithmetic.addition"]\n[student]\nmodel = "{tiny}"\ndtype = "float32"\n'
        "[training]\nsteps = 400\nbatch_size = 2\n"
    )
    store = Store(config.db)
    ensure_base(store, str(tiny))
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "teachloop.cli",
            "train",
            "--db",
            str(config.db),
            "--config",
            str(cfg_file),
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.5)
        rows = store.query("SELECT status FROM training_jobs").to_pylist()
        if rows and rows[0]["status"] == "running":
            time.sleep(3)  # well into training
            break
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert store.query("SELECT status FROM training_jobs").to_pylist() == [{"status": "running"}]
    assert [v.version for v in store.model_versions()] == ["base"]
    assert len(unused_pairs(store)) == 2  # the watermark of consumed pairs did not move
    assert current_student(store, str(tiny)).version == "base"
    rerun = train(config.with_overrides(training={"steps": 2, "batch_size": 2}), progress=False)
    assert rerun.status == "complete" and rerun.version.version == "v0001"
    jobs = store.query("SELECT status, error FROM training_jobs ORDER BY started_at").to_pylist()
    assert jobs == [
        {"status": "failed", "error": "interrupted"},
        {"status": "complete", "error": None},
    ]


def test_a_served_student_is_evaluated_on_its_server_with_the_adapter_hot_loaded(
    tmp_path, tiny
) -> None:
    """With the student on teachloop's vLLM servers, the gate asks the server: the candidate
    through its adapter (loaded by name for the evaluation), the incumbent through the base.
    Served scores are kept apart from in-process ones (different numerics)."""
    from fake_openai import FakeOpenAIServer, free_port

    in_process = setup(tmp_path, tiny)
    train(in_process, progress=False)
    store = Store(in_process.db)
    seed_eval(store, in_process, "base", 4)  # in-process: 100%; must not be reused below

    def adapter_knows_addition(body: dict) -> str:
        m = re.search(r"What is (\d+) \+ (\d+)\?\nAnswer:$", body["prompt"])
        return f" {int(m[1]) + int(m[2])}" if m and body["model"] == "v0001" else " 0"

    port = free_port()
    served = RunConfig.validated(
        {
            **in_process.model_dump(exclude={"student", "servers"}),
            "student": {"model": str(tiny), "backend": "vllm"},
            "servers": [{"roles": ["student"], "port": port}],
        }
    )
    with FakeOpenAIServer(adapter_knows_addition, model=str(tiny), port=port) as server:
        gate = evaluate_and_promote(served, "v0001")
    v1 = store.model_versions()[-1]
    assert v1.version == "v0001" and server.adapters == {"v0001": v1.adapter_path}
    models = [r["model"] for r in server.requests]
    assert sorted(set(models)) == sorted({str(tiny), "v0001"}) and len(models) == 8
    assert gate.result.accuracy == 1.0 and gate.incumbent_result.accuracy == 0.0
    assert gate.promoted and current_student(store, str(tiny)).version == "v0001"


def test_the_gate_promoting_an_older_version_makes_it_the_student(tmp_path, tiny) -> None:
    """The gate says 'promoted: later lessons use it'; that must hold when the candidate is
    older than the incumbent (a version evaluated again later), as with `teachloop promote`."""
    config = setup(tmp_path, tiny)
    store = Store(config.db)
    train(config, progress=False)
    store.write_lessons([lesson("L3", [("9", False), ("5", True)])])
    build_pairs(store)
    train(config, progress=False)
    seed_eval(store, config, "base", 1)
    seed_eval(store, config, "v0002", 2)
    seed_eval(store, config, "v0001", 3)
    assert evaluate_and_promote(config, "v0002").promoted
    assert current_student(store, str(tiny)).version == "v0002"
    gate = evaluate_and_promote(config, "v0001")
    assert gate.promoted and gate.incumbent == "v0002"
    assert current_student(store, str(tiny)).version == "v0001"
