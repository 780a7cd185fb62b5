"""`teachloop experiment` end to end on a tiny random-weight model: arms get equal budgets, every
answer is stored, the comparison and report come from the stored rows, and a rerun after a
crash redoes only what was not finished."""

from pathlib import Path

import pytest

from teachloop import RunConfig, Store, cli
from teachloop.domains import uniform_problems
from teachloop.errors import StoreError, TeachloopError
from teachloop.training.comparison import summarize_experiment
from teachloop.training.experiment import run_experiment
from teachloop.training.experiment_report import write_experiment_report

ARMS = ["base", "uniform_sft", "selective_sft", "kd"]


def experiment_config(tmp_path: Path, tiny: Path, **experiment: object) -> RunConfig:
    agent = {"model": str(tiny), "dtype": "float32"}
    return RunConfig.validated(
        {
            "db": tmp_path / "exp.duckdb",
            "topics": ["arithmetic.addition", "arithmetic.multiplication"],
            "eval": {"per_topic": 5},
            "lesson": {"questions": 2},
            "teacher": {**agent, "max_tokens": 6},
            "student": {**agent, "max_tokens": 6},
            "training": {"steps": 2, "batch_size": 2},
            "experiment": {
                "name": "tiny",
                "seeds": [0, 1],
                "arms": ARMS,
                "examples": 3,
                "lessons": 3,
                **experiment,
            },
        }
    )


def test_arms_get_equal_budgets_and_a_crash_redoes_only_the_unfinished_arm(
    tmp_path, tiny, monkeypatch
) -> None:
    import teachloop.training.experiment as experiment

    trained: list[str] = []
    real_train = experiment.train_adapter

    def counting_train(base, examples, out, config, **kw):
        trained.append(f"{out.parent.name}/{out.name}:{config.method}:{len(examples)}")
        return real_train(base, examples, out, config, **kw)

    monkeypatch.setattr(experiment, "train_adapter", counting_train)
    config = experiment_config(tmp_path, tiny)

    class Crash(Exception):
        pass

    def crash_after_selective(result) -> None:
        if (result.seed, result.arm) == (0, "selective_sft"):
            raise Crash  # as if killed right after this arm was stored

    with pytest.raises(Crash):
        run_experiment(config, progress=False, on_arm=crash_after_selective)
    assert [t.split(":")[0] for t in trained] == ["s0/uniform_sft", "s0/selective_sft"]
    trained.clear()
    results = run_experiment(config, progress=False)
    # Only what was not stored is redone: seed 0's kd, then all of seed 1.
    assert [t.split(":")[0] for t in trained] == [
        "s0/kd",
        "s1/uniform_sft",
        "s1/selective_sft",
        "s1/kd",
    ]
    assert {(r.seed, r.arm) for r in results} == {(s, a) for s in (0, 1) for a in ARMS}

    # Equal budgets, read back from the stored rows.
    store = Store(config.db)
    for seed in (0, 1):
        rows = {r.arm: r for r in store.arm_results("tiny") if r.seed == seed}
        budgets = {(r.examples, r.steps) for a, r in rows.items() if a != "base"}
        assert len(budgets) == 1, rows
        examples, steps = budgets.pop()
        assert 1 <= examples <= 3 and steps == 2
        assert (rows["base"].examples, rows["base"].steps) == (0, 0)
        # the selective data cost teacher tokens; uniform data and KD cost none
        assert rows["selective_sft"].teacher_tokens > 0
        assert rows["uniform_sft"].teacher_tokens == rows["kd"].teacher_tokens == 0
    kd_jobs = [t for t in trained if ":kd:" in t]
    assert kd_jobs and all(t.endswith(f":{examples}") for t in kd_jobs)

    # Every held-out answer is stored, paired by question across arms and seeds.
    counts = store.query(
        "SELECT seed, arm, count(*) AS n, count(DISTINCT question) AS q "
        "FROM experiment_outcomes GROUP BY ALL"
    ).to_pylist()
    assert len(counts) == 8 and all(r["n"] == r["q"] == 10 for r in counts)
    tests = store.query(
        "SELECT seed, list(question ORDER BY question_index) AS q FROM experiment_outcomes "
        "WHERE arm = 'base' GROUP BY seed ORDER BY seed"
    ).to_pylist()
    assert tests[0]["q"] != tests[1]["q"]  # each seed draws its own test split

    summary = summarize_experiment(store, "tiny", resamples=200)
    assert [a.arm for a in summary.arms] == ARMS
    assert all(a.seeds == 2 and 0 <= a.accuracy.low <= a.accuracy.high <= 1 for a in summary.arms)
    versus_base = summary.comparison("uniform_sft", "base")
    assert versus_base is not None and versus_base.seeds == [0, 1]  # paired within each seed
    assert [m.n for m in versus_base.paired.mcnemar] == [10, 10]  # 10 questions a seed
    assert summary.comparison("kd", "uniform_sft") is not None
    assert {t.topic for t in summary.targeting} <= set(config.topics)
    report = write_experiment_report(summary, tmp_path / "report")
    text = report.read_text()
    assert all(f"| {arm} |" in text for arm in ARMS)
    assert (tmp_path / "report" / "experiment_arms.png").stat().st_size > 0

    # `teachloop report` writes the experiment's report too, from the stored rows.
    assert cli.main(["report", "--db", str(config.db), "--out", str(tmp_path / "all")]) == 0
    again = (tmp_path / "all" / "tiny" / "experiment-tiny.md").read_text()
    assert again.splitlines()[:8] == text.splitlines()[:8]
    # Nothing left to do: the command only prints the comparison and writes the report.
    trained.clear()
    path = tmp_path / "exp.toml"
    path.write_text(
        f'db = "{config.db}"\ntopics = {list(config.topics)}\n[eval]\nper_topic = 5\n'
        f'[lesson]\nquestions = 2\n[teacher]\nmodel = "{tiny}"\ndtype = "float32"\n'
        f'max_tokens = 6\n[student]\nmodel = "{tiny}"\ndtype = "float32"\nmax_tokens = 6\n'
        f'[training]\nsteps = 2\nbatch_size = 2\n[experiment]\nname = "tiny"\n'
        f"seeds = [0, 1]\narms = {ARMS}\nexamples = 3\nlessons = 3\n"
    )
    assert cli.main(["experiment", "--config", str(path), "--quiet", "--out", str(tmp_path)]) == 0
    assert trained == []


def test_a_changed_design_under_the_same_name_is_refused(tmp_path, tiny) -> None:
    store = Store(tmp_path / "exp.duckdb")
    from teachloop.store.experiments import ExperimentRecord
    from teachloop.training.experiment import _design

    config = experiment_config(tmp_path, tiny)
    store.write_experiment(ExperimentRecord(experiment="tiny", config=_design(config)), [0])
    # more seeds of the same design: fine
    more = config.with_overrides(experiment={**config.experiment.model_dump(), "seeds": (5,)})
    store.write_experiment(ExperimentRecord(experiment="tiny", config=_design(more)), [5])
    assert store.query("SELECT seeds FROM experiments").to_pylist() == [{"seeds": [0, 5]}]
    bigger = config.with_overrides(experiment={**config.experiment.model_dump(), "examples": 9})
    with pytest.raises(
        StoreError, match=r"another design \(experiment.examples: \d+ then, 9 now\)"
    ):
        store.write_experiment(ExperimentRecord(experiment="tiny", config=_design(bigger)), [0])


def test_a_changed_design_is_named_key_by_key() -> None:
    from teachloop.store.experiments import design_changes

    stored = {"teacher": {"dtype": "bfloat16", "model": "m"}, "topics": ["a"], "seed": 1}
    now = {"teacher": {"dtype": "auto", "model": "m"}, "topics": ["a", "b"], "new": True}
    assert design_changes(stored, now) == [
        'teacher.dtype: "bfloat16" then, "auto" now',
        'topics: ["a"] then, ["a", "b"] now',
        "seed: 1 then, null now",
        "new: null then, true now",
    ]
    assert design_changes(stored, stored) == []


def test_uniform_problems_cover_topics_and_difficulties_evenly_and_skip_held_out() -> None:
    from teachloop.domains import DomainSet, builtin_domains, heldout_questions

    domains = DomainSet(builtin_domains().values())
    topics = ("arithmetic.addition", "units.mass")
    reserved = heldout_questions(domains, topics, 20, 1234)
    problems = uniform_problems(domains, topics, 20, seed=0, reserved=reserved)
    assert len(problems) == 20 and not {p.question for p in problems} & reserved
    assert [p.topic for p in problems] == list(topics) * 10
    assert sorted(p.difficulty for p in problems) == sorted([1, 2, 3, 4, 5] * 4)
    assert uniform_problems(domains, topics, 20, seed=0, reserved=reserved) == problems
    assert uniform_problems(domains, topics, 20, seed=1, reserved=reserved) != problems


def test_failed_lessons_stop_the_experiment_before_any_arm_trains(tmp_path, tiny) -> None:
    """A seed whose lessons failed would train the selective arms on what survived (in the
    first 3-seed run, every lesson that picked units.length failed, so no arm was taught it):
    the experiment stops with the reason instead."""
    bank = tmp_path / "facts.jsonl"
    bank.write_text(
        "".join(
            f'{{"topic": "facts.small", "question": "Name {n}?", "answer": "{n}"}}\n'
            for n in range(3)
        )
    )
    config = experiment_config(tmp_path, tiny, arms=["base", "selective_sft"]).with_overrides(
        banks=(bank,), topics=("facts.small",), eval={"per_topic": 3}
    )
    with pytest.raises(TeachloopError, match=r"seed 0: 3 of 3 lessons of run tiny-s0-.* failed"):
        run_experiment(config, progress=False)
    assert Store(config.db).arm_results("tiny") == []
