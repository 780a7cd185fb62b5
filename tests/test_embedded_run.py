"""End to end on the real embedded model (slow: converts Gemma on first use, ~1 min)."""

import pytest

from teachloop import RunConfig, Store, run_lessons


@pytest.mark.slow
def test_lessons_on_the_embedded_model_log_all_four_kinds(tmp_path) -> None:
    config = RunConfig(
        db=tmp_path / "real.duckdb",
        run_id="real",
        lessons=2,
        concurrency=2,
        topics=("arithmetic.multiplication", "units.mass"),
        # The hardest level, so the 270M base model misses some and the teacher re-teaches:
        # all four kinds then appear (at level 1 it could answer everything right).
    ).with_overrides(lesson={"questions": 2, "max_reteaches": 1, "start_difficulty": 5})
    result = run_lessons(config, progress=False)
    assert result.status == "complete" and result.lessons == 2 and result.questions == 4
    rows = (
        Store(config.db)
        .query("""
        SELECT kind, count(*) AS n, min(model) AS model, sum(completion_tokens) AS generated
        FROM messages GROUP BY kind ORDER BY kind""")
        .to_pylist()
    )
    kinds = {r["kind"]: r for r in rows}
    assert set(kinds) == {"question", "answer", "critique", "reteach"}
    # every miss is re-taught once, and answered again
    assert kinds["answer"]["n"] == kinds["question"]["n"] + kinds["reteach"]["n"]
    assert kinds["critique"]["n"] == kinds["answer"]["n"]
    for kind in ("answer", "reteach"):  # written by the model, not templated
        assert kinds[kind]["model"] == "embedded:gemma-3-270m"
        assert kinds[kind]["generated"] > 0
