"""`teachloop loop` (the demo's command) on a tiny random-weight model: each round runs its own
lessons, trains on the pairs no job used yet, gates the new version, and a rerun resumes."""

from pathlib import Path

import pytest

from teachloop import RunConfig, Store, cli
from teachloop.errors import ConfigError
from teachloop.training.loop import RoundResult, run_loop


def loop_config(db: str | Path, tiny: Path, **more: object) -> RunConfig:
    agent = {"model": str(tiny), "dtype": "float32", "max_tokens": 6}
    return RunConfig.validated(
        {
            "db": db,
            "topics": ["arithmetic.addition", "arithmetic.multiplication"],
            "lessons": 3,
            "eval": {"per_topic": 3},
            "lesson": {"questions": 2},
            "teacher": agent,
            "student": agent,
            "training": {"steps": 2, "batch_size": 2, "method": "sft"},
            **more,
        }
    )


def test_rounds_run_train_and_gate_and_a_rerun_resumes(tmp_path: Path, tiny: Path) -> None:
    config = loop_config(tmp_path / "loop.duckdb", tiny, run_id="nightly")
    seen: list[RoundResult] = []
    results = run_loop(config, rounds=2, progress=False, on_round=seen.append)
    assert seen == results and [r.round for r in results] == [0, 1]
    store = Store(config.db)
    runs = store.query(
        "SELECT run_id, r.status, count(l.lesson_id) AS lessons FROM runs r "
        "LEFT JOIN lessons l USING (run_id) GROUP BY ALL ORDER BY run_id"
    ).to_pylist()
    assert runs == [
        {"run_id": "nightly-r0", "status": "complete", "lessons": 3},
        {"run_id": "nightly-r1", "status": "complete", "lessons": 3},
    ]
    # The tiny model answers almost nothing right, so every round has pairs to train on; each
    # job trains on that round's new pairs only, and each new version goes through the gate.
    for r in results:
        assert (r.run.status, r.run.lessons, r.run.lessons_failed) == ("complete", 3, 0)
        assert sum(r.pairs.added.values()) > 0
        assert r.job.status == "complete" and r.job.pairs == sum(r.pairs.added.values())
        assert r.gate is not None and r.gate.version == r.job.version.version
        assert list(r.seconds) == ["lessons", "pairs", "train", "eval"]
    assert [v.version for v in store.model_versions()] == ["base", "v0001", "v0002"]
    messages = store.query("SELECT count(*) AS n FROM messages").column("n")[0].as_py()

    # A rerun under the same prefix finds round 0's lessons logged and its pairs used.
    again = run_loop(config, rounds=1, progress=False)[0]
    assert again.run.lessons_resumed == 3 and again.job.status == "nothing_to_do"
    assert again.gate is None and "eval" not in again.seconds
    assert store.query("SELECT count(*) AS n FROM messages").column("n")[0].as_py() == messages


def test_maintain_is_for_lakes(tmp_path: Path, tiny: Path, capsys) -> None:
    config = loop_config(tmp_path / "loop.duckdb", tiny)
    with pytest.raises(ConfigError, match=r"loop\.duckdb is a DuckDB file: --maintain is for"):
        run_loop(config, rounds=1, maintain=True, progress=False)
    assert not Store(config.db).query("SELECT * FROM runs").num_rows  # nothing ran
    path = tmp_path / "loop.toml"
    path.write_text(f'topics = ["arithmetic.addition"]\n[student]\nmodel = "{tiny}"\n')
    argv = ["loop", "--config", str(path), "--db", str(tmp_path / "x.duckdb"), "--ray", "local"]
    assert cli.main(argv) == 2
    assert "--ray needs a lake" in capsys.readouterr().err
