"""The report: plots and report.md from a store with a scripted run and hand-made training rows,
and from an empty store."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from teachloop import Store, run_lessons
from teachloop.training.report import (
    ACCURACY_PNG,
    LEARNING_PNG,
    PAIRS_PNG,
    REPORT_NAME,
    TRAINING_PNG,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL_PNGS = (ACCURACY_PNG, LEARNING_PNG, TRAINING_PNG, PAIRS_PNG)


def _dpo_log(losses: list[float], margins: list[float]) -> str:
    return json.dumps(
        [
            {
                "step": i + 1,
                "loss": loss,
                "reward_margin": margin,
                "reward_accuracy": 0.5 + 0.1 * i,
                "learning_rate": 5e-6,
            }
            for i, (loss, margin) in enumerate(zip(losses, margins, strict=True))
        ]
    )


def _fill_training_tables(store: Store) -> None:
    with store.connect() as con:
        con.execute(
            """
            INSERT INTO model_versions
                (version, parent_version, method, adapter_path, base_model, job_id, promoted,
                 created_at)
            VALUES ('base', NULL, 'base', NULL, 'gemma-3-270m', NULL, true,
                    '2025-01-01 00:00:00+00'),
                   ('v0001', 'base', 'dpo', 'adapters/v0001', 'gemma-3-270m', 'job-1', true,
                    '2025-01-02 00:00:00+00'),
                   ('v0002', 'v0001', 'dpo', 'adapters/v0002', 'gemma-3-270m', 'job-2', false,
                    '2025-01-03 00:00:00+00')
            """
        )
        # base: evaluated twice; only the later evaluation counts as its latest.
        con.execute(
            """
            INSERT INTO evaluations VALUES
              ('e-old', 'base', 'arithmetic.addition', 10, 1, 0.1, 0, '2025-01-01 00:00:00+00'),
              ('e-old', 'base', 'arithmetic.multiplication', 10, 1, 0.1, 0,
               '2025-01-01 00:00:00+00'),
              ('e-base', 'base', 'arithmetic.addition', 10, 8, 0.8, 0, '2025-01-01 01:00:00+00'),
              ('e-base', 'base', 'arithmetic.multiplication', 10, 2, 0.2, 0,
               '2025-01-01 01:00:00+00'),
              ('e-v1', 'v0001', 'arithmetic.addition', 10, 9, 0.9, 0, '2025-01-02 01:00:00+00'),
              ('e-v1', 'v0001', 'arithmetic.multiplication', 10, 5, 0.5, 0,
               '2025-01-02 01:00:00+00'),
              ('e-v2', 'v0002', 'arithmetic.addition', 10, 6, 0.6, 0, '2025-01-03 01:00:00+00')
            """
        )
        con.execute(
            """
            INSERT INTO training_jobs (job_id, method, from_version, status, pairs, log, started_at)
            VALUES ('job-1', 'dpo', 'base', 'complete', 12, ?, '2025-01-02 00:00:00+00'),
                   ('job-2', 'dpo', 'v0001', 'complete', 7, ?, '2025-01-03 00:00:00+00'),
                   ('job-3', 'dpo', 'v0002', 'failed', 0, NULL, '2025-01-04 00:00:00+00')
            """,
            [_dpo_log([0.69, 0.5, 0.25], [0.0, 0.4, 1.25]), _dpo_log([0.7, 0.6], [0.1, 0.375])],
        )
        pairs = [("corrected", "arithmetic.multiplication", "job-1")] * 3 + [
            ("reference", "arithmetic.multiplication", None),
            ("reference", "arithmetic.addition", None),
        ]
        for i, (rule, topic, job) in enumerate(pairs):
            con.execute(
                """
                INSERT INTO preference_pairs (pair_id, run_id, lesson_id, question_id, topic,
                    prompt, chosen, rejected, rule, source_ids, job_id, created_at)
                VALUES (?, 'test-run', 'test-run-L00000', ?, ?,
                    'prompt', 'chosen', 'rejected', ?, ['m1'], ?, '2025-01-02 00:00:00+00')
                """,
                [f"pair-{i}", f"q{i}", topic, rule, job],
            )


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000, path


def _table_rows(markdown: str, heading: str) -> list[list[str]]:
    """The body rows of the table under the heading ``heading`` (any level)."""
    match = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#|\Z)", markdown, re.M | re.S)
    assert match, heading
    lines = [ln for ln in match[1].splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


@pytest.fixture
def filled_store(make_config, scripted) -> Store:
    config = make_config(lessons=4)
    run_lessons(config, teacher_backend=scripted[0], student_backend=scripted[1], progress=False)
    store = Store(config.db)
    _fill_training_tables(store)
    return store


def test_report_plots_and_tables(filled_store: Store, tmp_path: Path) -> None:
    out = tmp_path / "report"
    report = write_report(filled_store, out)
    assert report == out / REPORT_NAME
    text = report.read_text()

    for name in ALL_PNGS:
        _assert_png(out / name)
        assert f"]({name})" in text  # embedded with a relative link
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(linked) == sorted(ALL_PNGS)
    assert all((out / link).is_file() for link in linked)

    # runs: the scripted student gets addition right and multiplication wrong
    runs = _table_rows(text, "Runs")
    assert len(runs) == 1 and runs[0][0] == "test-run" and runs[0][1] == "complete"

    # latest evaluation per version, micro-averaged, versions in creation order
    latest = _table_rows(text, "Latest evaluation per version")
    assert [(r[0], r[1], r[4], r[5], r[6]) for r in latest] == [
        ("base", "e-base", "20", "10", "0.500"),
        ("v0001", "e-v1", "20", "14", "0.700"),
        ("v0002", "e-v2", "10", "6", "0.600"),
    ]
    per_topic = _table_rows(text, "Latest evaluation per version and topic")
    assert ["base", "arithmetic.multiplication", "10", "2", "0.200"] in per_topic
    assert not any(r[3] == "1" for r in per_topic)  # the superseded evaluation is not shown

    versions = _table_rows(text, "Model versions")
    assert [(r[0], r[6]) for r in versions] == [("base", "yes"), ("v0001", "yes"), ("v0002", "no")]

    # training jobs: steps and final values come from the unnested JSON log
    jobs = {r[0]: r for r in _table_rows(text, "Training jobs")}
    assert jobs["job-1"][5:9] == ["3", "0.250", "1.250", "0.700"]
    assert jobs["job-2"][5:8] == ["2", "0.600", "0.375"]
    assert jobs["job-3"][3] == "failed" and jobs["job-3"][5] == "0"

    pairs = _table_rows(text, "Pairs by rule")
    assert [r[:4] for r in pairs] == [["corrected", "3", "1", "3"], ["reference", "2", "2", "0"]]


def test_report_on_empty_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "empty.duckdb")
    out = tmp_path / "report"
    text = write_report(store, out).read_text()
    assert not list(out.glob("*.png"))
    assert "![" not in text
    for note in (
        "No runs yet.",
        "No evaluations yet.",
        "No model versions yet.",
        "No training jobs yet.",
        "No preference pairs yet.",
        "No learning-curve data yet",
    ):
        assert note in text


def test_report_removes_stale_plots_and_handles_sparse_data(make_config, scripted) -> None:
    """Only a run logged: the learning curve is drawn; training plots are skipped, and a stale
    PNG from an earlier report is not left behind looking current."""
    config = make_config(lessons=2)
    run_lessons(config, teacher_backend=scripted[0], student_backend=scripted[1], progress=False)
    store = Store(config.db)
    out = config.db.parent / "report"
    out.mkdir()
    (out / PAIRS_PNG).write_bytes(b"stale")
    with store.connect() as con:  # a job whose log has no reward margins (e.g. SFT)
        con.execute(
            "INSERT INTO training_jobs (job_id, method, status, log, started_at) VALUES "
            """('sft-1', 'sft', 'complete', '[{"step": 1, "loss": 2.0}]', now())"""
        )
    text = write_report(store, out).read_text()
    _assert_png(out / LEARNING_PNG)
    _assert_png(out / TRAINING_PNG)
    assert not (out / PAIRS_PNG).exists() and not (out / ACCURACY_PNG).exists()
    assert f"]({LEARNING_PNG})" in text and f"]({TRAINING_PNG})" in text
    assert "No preference pairs yet." in text and "No evaluations yet." in text
