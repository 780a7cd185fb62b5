"""training.comparison and training.experiment_report on hand-made experiment rows in a real
store: the primary comparison from the stored design, per-seed paired statistics, the secondary
family with Holm, per-topic and per-difficulty differences, and the report's order and plots."""

from __future__ import annotations

import json
import math
import re

import pytest

from teachloop import Store
from teachloop.store.experiments import (
    ArmResult,
    ExperimentExample,
    ExperimentRecord,
    QuestionOutcome,
)
from teachloop.training.comparison import (
    arm_family,
    family,
    primary_of,
    summarize_experiment,
    targets_of,
)
from teachloop.training.experiment_report import (
    BUDGET_PNG,
    TARGETING_PNG,
    budget_curves,
    plot_png,
    render_markdown,
    tables,
    write_experiment_report,
)
from teachloop.training.stats import holm

T, F = True, False
# Four questions a seed: (topic, difficulty) of q0..q3.
QUESTIONS = [("t1", 1), ("t1", 2), ("t2", 1), ("t2", 2)]
# Per seed, each arm's correctness on q0..q3. The primary, selective_sft@4 - uniform_sft@4:
#   seed 0: 2/4 - 2/4 = 0;  seed 1: 2/4 - 1/4 = 0.25;  seed 2: 3/4 - 1/4 = 0.5
OUTCOMES = {
    0: {
        "base": [F, F, F, F],
        "uniform_sft@2": [T, F, F, F],
        "uniform_sft@4": [T, F, T, F],
        "selective_sft@2": [T, F, F, F],
        "selective_sft@4": [T, F, T, F],
        "kd@4": [T, F, F, F],
    },
    1: {
        "base": [F, F, F, F],
        "uniform_sft@2": [F, F, T, F],
        "uniform_sft@4": [F, F, T, F],
        "selective_sft@2": [T, F, F, F],
        "selective_sft@4": [T, F, T, F],
        "kd@4": [F, F, T, F],
    },
    2: {
        "base": [F, F, F, T],
        "uniform_sft@2": [F, F, F, T],
        "uniform_sft@4": [F, F, F, T],
        "selective_sft@2": [T, F, F, F],
        "selective_sft@4": [T, T, T, F],
        "kd@4": [F, F, F, F],
    },
}
PRIMARY = ("selective_sft@4", "uniform_sft@4")


def fill(store: Store, name: str, design: dict) -> None:
    store.write_experiment(ExperimentRecord(experiment=name, config=json.dumps(design)), [0, 1, 2])
    for seed, arms in OUTCOMES.items():
        for arm, correct in arms.items():
            outcomes = [
                QuestionOutcome(
                    experiment=name,
                    seed=seed,
                    arm=arm,
                    question_index=i,
                    topic=topic,
                    difficulty=difficulty,
                    question=f"s{seed}q{i}",  # each seed its own questions
                    correct=c,
                )
                for i, ((topic, difficulty), c) in enumerate(zip(QUESTIONS, correct, strict=True))
            ]
            family_, budget = arm_family(arm)
            store.write_arm_result(
                ArmResult(
                    experiment=name,
                    seed=seed,
                    arm=arm,
                    data="none" if arm == "base" else family_.split("_")[0],
                    method=None if arm == "base" else "sft",
                    examples=budget or 0,
                    steps=0 if arm == "base" else 4,
                    teacher_tokens=25 * (budget or 0) if family_ == "selective_sft" else 0,
                    data_wall_s=1.0,
                    train_wall_s=2.0,
                    eval_wall_s=3.0,
                    questions=4,
                    correct=sum(correct),
                    adapter_path=None,
                ),
                outcomes,
                trained_on(name, seed, arm, budget or 0),
            )


def trained_on(name: str, seed: int, arm: str, examples: int) -> list[ExperimentExample]:
    """The arm's training examples: selective arms all on t1 but one in four, uniform ones
    half and half."""
    selective = arm.startswith("selective")
    return [
        ExperimentExample(
            experiment=name,
            seed=seed,
            arm=arm,
            position=i,
            topic="t2" if (i % 4 == 3 if selective else i % 2) else "t1",
            difficulty=1,
            question=f"e{i}",
            completion="1",
        )
        for i in range(examples)
    ]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    store = Store(tmp_path_factory.mktemp("comparison") / "log.duckdb")
    fill(store, "pre", {"experiment": {"name": "pre", "primary": list(PRIMARY)}})
    fill(store, "explore", {"experiment": {"name": "explore", "primary": None}})
    return store


def test_arm_family_and_primary_of():
    assert arm_family("kd@32") == ("kd", 32)
    assert arm_family("kd") == ("kd", None)
    assert arm_family("odd@name") == ("odd@name", None)
    assert primary_of('{"experiment": {"primary": ["a@8", "b@8"]}}') == ("a@8", "b@8")
    assert primary_of('{"experiment": {"primary": null}}') is None
    assert primary_of("{}") is None
    assert primary_of(None) is None


def test_targets_of_a_stored_design():
    arms = ["random_solution", "random", {"name": "mine", "data": "pool", "target": "solution"}]
    design = {"experiment": {"arms": arms}, "student": {"shown_work": False}}
    assert targets_of(json.dumps(design)) == (
        {"random_solution": "solution", "mine": "solution"},
        "answer",
    )
    # A shown-work student answers every arm without a target in worked form.
    design["student"]["shown_work"] = True
    assert targets_of(json.dumps(design))[1] == "solution"
    assert targets_of(None) == ({}, "answer")  # stored before targets existed: bare answers


def test_primary_is_paired_per_seed_and_unadjusted(store):
    summary = summarize_experiment(store, "pre", resamples=2000)
    assert summary.primary == PRIMARY and summary.reference == "uniform_sft@4"
    result = summary.primary_result
    assert result is not None and result.primary and result.p_holm is None
    assert (result.arm, result.against, result.seeds) == (*PRIMARY, [0, 1, 2])
    paired = result.paired
    assert paired.differences == [0.0, 0.25, 0.5]
    # mean 0.25, sd 0.25, t = sqrt(3) on 2 df: p = 1 - sqrt(3/5); half-width t_.975,2 * sd/sqrt(3)
    assert paired.t.mean == 0.25
    assert paired.t.p_value == pytest.approx(1 - math.sqrt(3 / 5))
    half = 0.95 * math.sqrt(2 / (1 - 0.95**2)) * 0.25 / math.sqrt(3)
    assert (paired.t.low, paired.t.high) == (pytest.approx(0.25 - half), pytest.approx(0.25 + half))
    assert [(m.b01, m.b10, m.p_value) for m in paired.mcnemar] == [
        (0, 0, 1.0),
        (1, 0, 1.0),
        (3, 1, 0.625),
    ]
    assert paired.bootstrap.seeds == 3 and paired.bootstrap.questions == 12
    assert summary.comparison(*PRIMARY) is result


def test_secondary_family_and_holm(store):
    summary = summarize_experiment(store, "pre", resamples=2000)
    # Against the primary's reference only arms of its budget (not the primary itself), then
    # every arm but base against base.
    pairs = [(c.arm, c.against) for c in summary.comparisons]
    assert pairs == [
        ("kd@4", "uniform_sft@4"),
        ("uniform_sft@2", "base"),
        ("uniform_sft@4", "base"),
        ("selective_sft@2", "base"),
        ("selective_sft@4", "base"),
        ("kd@4", "base"),
    ]
    assert pairs == family(list(OUTCOMES[0]), PRIMARY)
    expected = holm({f"{c.arm}|{c.against}": c.p_value for c in summary.comparisons})
    assert [c.p_holm for c in summary.comparisons] == pytest.approx(list(expected.values()))
    kd = summary.comparison("kd@4", "uniform_sft@4")
    assert kd is not None and kd.paired.differences == [-0.25, 0.0, -0.25]
    assert not any(c.primary for c in summary.comparisons)


def test_breakdowns_are_paired_differences_against_the_reference(store):
    summary = summarize_experiment(store, "pre", resamples=200)
    selective = summary.arm("selective_sft@4")
    assert selective is not None
    # per-seed accuracy on t1 (q0, q1): 1/2, 1/2, 1; against uniform_sft@4: 1/2, 0, 0
    assert selective.topics["t1"].mean == pytest.approx(2 / 3)
    assert selective.topic_differences["t1"].mean == pytest.approx(0.5)
    assert selective.topic_differences["t2"].mean == 0.0
    assert selective.topic_differences["t2"].low == selective.topic_differences["t2"].high == 0
    # difficulty 1 (q0, q2): differences 0, 0.5, 1; difficulty 2 (q1, q3): 0, 0, 0
    assert selective.difficulties[1].mean == 1.0
    assert selective.difficulty_differences[1].mean == pytest.approx(0.5)
    assert selective.difficulty_differences[2].mean == 0.0
    reference = summary.arm("uniform_sft@4")
    assert reference is not None and reference.topic_differences == {}
    assert selective.accuracy.mean == pytest.approx((0.5 + 0.5 + 0.75) / 3)
    assert (selective.examples, selective.teacher_tokens, selective.family) == (
        4,
        100,
        "selective_sft",
    )


def test_report_states_the_primary_before_any_number(store, tmp_path):
    summary = summarize_experiment(store, "pre", resamples=2000)
    text = render_markdown(summary)
    statement = text.index("Pre-registered in the design")
    assert text.index("**selective_sft@4** against **uniform_sft@4**") > statement
    before = text[:statement]
    assert re.search(r"\d", before) is None and "|" not in before
    titles = [t.title for t in tables(summary)]
    assert titles == [
        "Primary comparison",
        "Primary comparison per seed",
        "Arms",
        "Per topic",
        "Per difficulty",
        "Secondary comparisons",
        "Per seed",
        "Targeting",
    ]
    primary_row = tables(summary)[0].rows[0]
    assert primary_row[:5] == [
        "selective_sft@4 - uniform_sft@4",
        "3",
        "+25.0",
        "[-37.1, +87.1]",
        "0.2254",
    ]
    assert "exploratory" not in text
    arms = tables(summary)[2]
    assert arms.header[-3:] == ["data s", "train s", "eval s"]
    assert {tuple(row[-3:]) for row in arms.rows} == {("1", "2", "3")}
    # the per-seed table: seed 2's McNemar
    assert tables(summary)[1].rows[2] == ["2", "4", "25.0", "75.0", "+50.0", "3", "1", "0.6250"]
    path = write_experiment_report(summary, tmp_path)
    assert (tmp_path / BUDGET_PNG).read_bytes()[:4] == b"\x89PNG"
    assert path.read_text().startswith(text)


def test_without_a_primary_every_comparison_is_exploratory(store):
    summary = summarize_experiment(store, "explore", resamples=200)
    assert summary.primary is None and summary.primary_result is None
    assert summary.reference == "base"
    text = render_markdown(summary)
    assert "every comparison in this report is exploratory" in text
    assert text.index("exploratory") < text.index("|")
    assert "## Comparisons (exploratory)" in text
    # every arm but base against base (no arm is named uniform_sft exactly)
    assert [c.against for c in summary.comparisons] == ["base"] * 5
    assert all(c.p_holm is not None for c in summary.comparisons)


def test_budget_curves_join_an_arms_budgets(store):
    summary = summarize_experiment(store, "pre", resamples=200)
    curves = budget_curves(summary)
    assert {f: [a.examples for a in arms] for f, arms in curves.items()} == {
        "base": [0],
        "uniform_sft": [2, 4],
        "selective_sft": [2, 4],
        "kd": [4],
    }
    assert plot_png(summary, BUDGET_PNG)[:4] == b"\x89PNG"


def test_targeting_reads_the_trained_examples(store):
    summary = summarize_experiment(store, "pre", resamples=200)
    by_topic = {t.topic: t for t in summary.targeting}
    assert set(by_topic) == {"t1", "t2"}
    assert by_topic["t1"].share is None  # no selective lessons in this log
    # selective_sft@2 trained on t1 only: its t2 share is 0, not missing
    assert by_topic["t1"].trained["selective_sft@2"] == 1.0
    assert by_topic["t2"].trained["selective_sft@2"] == 0.0
    assert by_topic["t1"].trained["selective_sft@4"] == 0.75
    assert by_topic["t1"].trained["uniform_sft@4"] == 0.5
    assert "base" not in by_topic["t1"].trained
    # lift over base on t2: uniform_sft@4 gets 1 of 2 on every seed, base 1 of 2 on seed 2 only
    assert by_topic["t2"].lift["uniform_sft@4"] == pytest.approx(1 / 2 - 1 / 6)
    table = tables(summary)[-1]
    assert table.title == "Targeting" and "lessons' share %" not in table.header
    assert table.rows[0][table.header.index("selective_sft@4")] == "+66.7 (75.0%)"
    assert plot_png(summary, TARGETING_PNG)[:4] == b"\x89PNG"
