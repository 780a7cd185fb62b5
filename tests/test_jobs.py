"""Training jobs, the promotion gate and crash safety, on a tiny random-weight model."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import lesson

from teachloop import RunConfig, Store, cli
from teachloop.agents.backends import LoraAdapter
from teachloop.errors import TeachloopError
from teachloop.records import ModelVersion
from teachloop.store.records import EvaluationRow
from teachloop.training import jobs
from teachloop.training.jobs import _eval_id, evaluate_and_promote, train
from teachloop.training.pairs import build_pairs, unused_pairs

TESTS = Path(__file__).parent


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
    (job_row,) = store.training_jobs()
    log = json.loads(job_row.log or "")
    assert job_row.status == "complete" and [s["step"] for s in log] == [1, 2]
    if method == "dpo":
        assert all(s["reward_margin"] is not None for s in log)
    # nothing new: a second job (as cron would start it) does nothing
    again = train(config, progress=False)
    assert again.status == "nothing_to_do" and again.version is None
    assert store.current_student(str(tiny)).version == "base"  # not promoted by training


def seed_eval(store: Store, config: RunConfig, version: str, correct: int) -> None:
    store.write_evaluation(
        [
            EvaluationRow(
                eval_id=_eval_id(version, config),
                version=version,
                topic="arithmetic.addition",
                questions=4,
                correct=correct,
                accuracy=correct / 4,
                seed=0,
                created_at=datetime.now(UTC),
            )
        ]
    )


def test_gate_promotes_improvements_and_refuses_regressions(tmp_path, tiny) -> None:
    config = setup(tmp_path, tiny)
    store = Store(config.db)
    v1 = train(config, progress=False).version
    seed_eval(store, config, "base", 2)
    seed_eval(store, config, "v0001", 1)  # 25% vs 50%: beyond the 5% tolerance
    refused = evaluate_and_promote(config, "v0001")
    assert not refused.promoted and refused.regressed == ["arithmetic.addition", "overall"]
    assert store.current_student(str(tiny)).version == "base"
    store.write_lessons([lesson("L3", [("9", False), ("5", True)])])
    build_pairs(store)
    v2 = train(config, progress=False).version
    assert v2.version == "v0002" and v2.parent_version == "base" and v1 is not None
    seed_eval(store, config, "v0002", 3)
    accepted = evaluate_and_promote(config, "v0002")
    assert accepted.promoted and accepted.incumbent == "base"
    assert accepted.incumbent_result.accuracy == 0.5 and accepted.result.accuracy == 0.75
    assert store.current_student(str(tiny)).version == "v0002"

    # `teachloop promote` by hand: back to base (a rollback), then forward to v0001
    assert cli.main(["promote", "--db", str(config.db), "base"]) == 0
    assert store.current_student(str(tiny)).version == "base"
    promoted = {v.version for v in store.model_versions() if v.promoted}
    assert promoted == {"base"}  # later versions lost their promotion, and stay on disk
    assert Path(v2.adapter_path or "").is_dir()
    assert cli.main(["promote", "--db", str(config.db), "v0001"]) == 0
    assert store.current_student(str(tiny)).version == "v0001"
    assert cli.main(["promote", "--db", str(config.db), "v0009"]) == 2  # unknown: one line


def test_real_evaluation_is_stored_and_reused(tmp_path, tiny) -> None:
    config = setup(tmp_path, tiny)
    train(config, progress=False)
    gate = evaluate_and_promote(config, "v0001", promote=False)
    assert gate.result.questions == 4 and gate.incumbent_result.questions == 4
    store = Store(config.db)
    for version in ("base", "v0001"):
        (row,) = store.evaluation(_eval_id(version, config))
        assert (row.version, row.questions) == (version, 4)
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
    store.ensure_base(str(tiny))
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
        started = store.training_jobs()
        if started and started[0].status == "running":
            time.sleep(3)  # well into training
            break
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert [j.status for j in store.training_jobs()] == ["running"]
    assert [v.version for v in store.model_versions()] == ["base"]
    assert len(unused_pairs(store)) == 2  # the watermark of consumed pairs did not move
    assert store.current_student(str(tiny)).version == "base"
    rerun = train(config.with_overrides(training={"steps": 2, "batch_size": 2}), progress=False)
    assert rerun.status == "complete" and rerun.version.version == "v0001"
    assert [(j.status, j.error) for j in store.training_jobs()] == [
        ("failed", "interrupted"),
        ("complete", None),
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
    assert gate.promoted and store.current_student(str(tiny)).version == "v0001"


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
    assert store.current_student(str(tiny)).version == "v0002"
    gate = evaluate_and_promote(config, "v0001")
    assert gate.promoted and gate.incumbent == "v0002"
    assert store.current_student(str(tiny)).version == "v0001"


def test_the_eval_backend_is_built_as_lessons_build_it(tmp_path, tiny, monkeypatch) -> None:
    """`build_backend(config, "student", adapter)`, as for lessons; endpoints teachloop does not
    manage cannot load adapters, so there the version is evaluated in-process; a version of
    another base model is refused in one line."""
    built: list[tuple[str, str, LoraAdapter | None]] = []

    def fake_build(config: RunConfig, role: str, adapter: LoraAdapter | None = None) -> str:
        built.append((config.student.backend, role, adapter))
        return "backend"

    monkeypatch.setattr(jobs, "build_backend", fake_build)
    v1 = ModelVersion(
        version="v0001", method="dpo", base_model=str(tiny), adapter_path=str(tmp_path / "a")
    )
    base = ModelVersion(version="base", method="base", base_model=str(tiny))
    in_process = RunConfig.validated({"db": tmp_path / "x.duckdb", "student": {"model": str(tiny)}})
    assert jobs._eval_backend(in_process, v1) == "backend"
    assert jobs._eval_backend(in_process, base) == "backend"
    adapter = LoraAdapter(name="v0001", path=tmp_path / "a")
    assert built == [("transformers", "student", adapter), ("transformers", "student", None)]

    endpoint = {"url": "http://127.0.0.1:9/v1", "model": str(tiny)}
    remote = in_process.with_overrides(
        student={"model": str(tiny), "backend": "openai", "endpoints": [endpoint]}
    )
    jobs._eval_backend(remote, v1)
    assert built[-1] == ("transformers", "student", adapter)

    other = v1.model_copy(update={"base_model": "other-model"})
    with pytest.raises(TeachloopError, match=r"^version v0001 is of other-model, but the config"):
        jobs._eval_backend(in_process, other)
