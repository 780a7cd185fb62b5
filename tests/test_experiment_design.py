"""The second experiment design (issue 29): per-seed disjoint splits, an uneven pre-taught
student, selection per example from a shared pool, budgets fixed per seed before any arm runs
(and kept across a resume), budget curves, and what each arm trained on stored."""

import asyncio
from pathlib import Path

import duckdb
import pytest

from teachloop import RunConfig, Store
from teachloop.agents.backends.scripted import ScriptedBackend
from teachloop.agents.student import Student
from teachloop.domains import DomainSet, heldout_problems, uniform_problems
from teachloop.domains.arithmetic import ArithmeticDomain
from teachloop.domains.units import UnitsDomain
from teachloop.errors import ConfigError, TeachloopError
from teachloop.training.comparison import summarize_experiment
from teachloop.training.evaluate import score_all
from teachloop.training.experiment import _weak, experiment_splits, run_experiment
from teachloop.training.experiment_report import render_markdown
from teachloop.training.pretrain import (
    pretrain_check,
    pretrain_problems,
    pretrain_profile,
    pretrain_student,
)
from teachloop.training.selection import PoolItem, completion_losses, select, select_in_rounds

TOPICS = ["arithmetic.addition", "arithmetic.multiplication"]


def config(tmp_path: Path, tiny: Path, **experiment: object) -> RunConfig:
    agent = {"model": str(tiny), "dtype": "float32"}
    return RunConfig.validated(
        {
            "db": tmp_path / "exp.duckdb",
            "topics": TOPICS,
            "eval": {"per_topic": 4},
            "lesson": {"questions": 2},
            "teacher": {**agent, "max_tokens": 6},
            "student": {**agent, "max_tokens": 6},
            "training": {"steps": 2, "batch_size": 2},
            "experiment": {"name": "design", "seeds": [0, 1], "examples": 4, **experiment},
        }
    )


def domains() -> DomainSet:
    return DomainSet([ArithmeticDomain(), UnitsDomain()])


# -- splits --------------------------------------------------------------------------------------


def test_each_seed_has_its_own_disjoint_validation_and_test_splits(tmp_path, tiny) -> None:
    cfg = config(tmp_path, tiny)
    ds = domains()
    s0, s1 = experiment_splits(cfg, ds, 0), experiment_splits(cfg, ds, 1)
    for split in (s0, s1):
        test, validation = {p.question for p in split.test}, {p.question for p in split.validation}
        assert len(test) == len(validation) == 8
        assert not test & validation
        assert not (test | validation) & ds.example_questions(cfg.topics)
    assert {p.question for p in s0.test} != {p.question for p in s1.test}
    assert experiment_splits(cfg, ds, 0) == s0  # deterministic
    # With a pre-taught student, neither what it was taught nor the check split its
    # pre-teaching may be chosen on is in a split.
    pre = config(tmp_path, tiny, pretrain={"topics": ["arithmetic.addition"], "examples": 40})
    pre = pre.with_overrides(eval={**pre.eval.model_dump(), "per_topic": 30})
    reserved = {p.question for p in pretrain_problems(pre, ds) + pretrain_check(pre, ds)}
    assert len(reserved) == 40 + 60
    for seed in (0, 1):
        # Drawn alone, the seed's test split would share questions with them.
        alone = heldout_problems(ds, TOPICS, 30, pre.eval.seed, split=f"test-s{seed}")
        assert reserved & {p.question for p in alone}
        split = experiment_splits(pre, ds, seed)
        assert len(split.test) == len(split.validation) == 60
        assert not reserved & {p.question for p in split.test + split.validation}


def test_weak_topics_are_those_below_the_mean_on_validation() -> None:
    ds = domains()
    problems = uniform_problems(ds, ("arithmetic.addition", "units.length", "units.mass"), 6, 0, ())
    right = {"arithmetic.addition": [True, True], "units.length": [False, True]}

    class S:
        def __init__(self, correct: bool) -> None:
            self.correct, self.answer = correct, None

    scored = [S(right.get(p.topic, [False, False])[i // 3]) for i, p in enumerate(problems)]
    # accuracies: addition 1.0, length 0.5, mass 0.0; mean 0.5 -> mass only
    assert _weak(problems, scored) == ("units.mass",)
    even = [S(True) for _ in problems]
    assert set(_weak(problems, even)) == {"arithmetic.addition", "units.length", "units.mass"}


# -- selection per example -----------------------------------------------------------------------


def test_pool_rules_pick_what_they_say_on_a_scripted_student() -> None:
    """The scripted student knows addition and nothing else: failed_only takes only its wrong
    answers, correct_only only its right ones, student_loss the highest losses first, random
    all of the pool in a seeded order."""
    ds = domains()
    problems = uniform_problems(ds, ("arithmetic.addition", "units.length"), 20, 0, ())
    answers = {p.question: p.answer for p in problems}

    def respond(request) -> str:
        question = request.prompt.rsplit("Question: ", 1)[1].split("\n", 1)[0]
        known = "plus" in question or "+" in question
        return f" {answers[question]}" if known else " 0.123"

    student = Student(ScriptedBackend(respond), ds, max_tokens=8)
    scored = asyncio.run(score_all(student, problems))
    items = [
        PoolItem.answered(student, p, s).model_copy(update={"loss": float(i)})
        for i, (p, s) in enumerate(zip(problems, scored, strict=True))
    ]
    assert {i.problem.topic for i in items if i.correct} == {"arithmetic.addition"}
    failed = select(items, "failed", seed=0)
    assert failed and all(not i.correct for i in failed)
    assert {i.problem.topic for i in failed} == {"units.length"}
    correct = select(items, "correct", seed=0)
    assert len(correct) + len(failed) == len(items) and all(i.correct for i in correct)
    by_loss = select(items, "loss", seed=0)
    assert [i.loss for i in by_loss] == sorted((i.loss for i in items), reverse=True)
    shuffled = select(items, "random", seed=0)
    assert sorted(i.loss for i in shuffled) == [i.loss for i in items]
    assert shuffled == select(items, "random", seed=0) != select(items, "random", seed=1)
    with pytest.raises(ValueError, match="loss"):
        select([i.model_copy(update={"loss": None}) for i in items], "loss", seed=0)


def test_completion_losses_batched_equal_one_at_a_time(tiny) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pairs = [("Question: What is 3 + 4?\nAnswer:", " 7"), ("Q: 12 - 5 =", " 7 and more")]
    batched = completion_losses(tiny, pairs, batch_size=2)
    tok = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    for (prompt, completion), loss in zip(pairs, batched, strict=True):
        p = tok(prompt)["input_ids"]
        c = tok(completion, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([p + c])).logits[0]
        logp = torch.log_softmax(logits[len(p) - 1 : -1], dim=-1)
        expected = -logp[range(len(c)), c].mean().item()
        assert loss == pytest.approx(expected, rel=1e-4)


# -- the pre-taught student ----------------------------------------------------------------------


def test_pretraining_makes_the_student_differ_on_the_pretaught_topics(tmp_path, tiny) -> None:
    cfg = config(
        tmp_path,
        tiny,
        pretrain={
            "topics": ["arithmetic.addition"],
            "examples": 8,
            "training": {"steps": 12, "learning_rate": 5e-3},
        },
    )
    ds = domains()
    out = pretrain_student(cfg, ds, tiny, tmp_path / "pretrained", progress=False)
    assert (out / "config.json").is_file()
    profile = pretrain_profile(out)
    assert set(profile) == {"base", "pretrained"} and set(profile["base"]) == set(TOPICS)
    # The pre-taught topic's reference answers became likelier; the other topic's moved less.
    student = Student(None, ds, max_tokens=6)
    taught = pretrain_problems(cfg, ds)
    assert {p.topic for p in taught} == {"arithmetic.addition"} and len(taught) == 8
    other = uniform_problems(ds, ("arithmetic.multiplication",), 8, 0, ())

    def losses(model: Path, problems) -> float:
        pairs = [
            (student.prompt(p.question, p.topic), student.reference_completion(p)) for p in problems
        ]
        return sum(completion_losses(model, pairs)) / len(pairs)

    taught_drop = losses(tiny, taught) - losses(out, taught)
    other_drop = losses(tiny, other) - losses(out, other)
    assert taught_drop > 0.5 and taught_drop > other_drop
    # Reused as it is; other settings are refused, not silently mixed.
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert pretrain_student(cfg, ds, tiny, out, progress=False) == out
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    other_cfg = config(tmp_path, tiny, pretrain={"topics": ["arithmetic.addition"], "examples": 9})
    with pytest.raises(Exception, match="other settings"):
        pretrain_student(other_cfg, ds, tiny, out, progress=False)


# -- the experiment -----------------------------------------------------------------------------


def test_pool_arms_budgets_fixed_per_seed_and_kept_across_a_resume(tmp_path, tiny) -> None:
    arms = ["base", "random", "failed_only", "student_loss", "oracle"]
    cfg = config(tmp_path, tiny, arms=arms, pool=12, budgets=[2], primary=["failed_only", "random"])

    class Crash(Exception):
        pass

    def crash(result) -> None:
        if (result.seed, result.arm) == (0, "failed_only"):
            raise Crash

    with pytest.raises(Crash):
        run_experiment(cfg, progress=False, on_arm=crash)
    store = Store(cfg.db)
    plan = store.seed_plan("design", 0)
    assert plan is not None and 1 <= plan.examples <= 4
    results = run_experiment(cfg, progress=False)
    names = arms + [f"{a}@2" for a in arms if a != "base"]
    assert {(r.seed, r.arm) for r in results} == {(s, a) for s in (0, 1) for a in names}
    for seed in (0, 1):
        plan = store.seed_plan("design", seed)
        assert plan is not None and plan.weak_topics
        rows = {r.arm: r for r in results if r.seed == seed}
        full = {(rows[a].examples, rows[a].steps) for a in arms if a != "base"}
        assert full == {(plan.examples, 2)}  # the stored budget, before and after the crash
        curve = {(rows[f"{a}@2"].examples, rows[f"{a}@2"].steps) for a in arms if a != "base"}
        assert curve == {
            (min(2, plan.examples), max(1, round(2 * min(2, plan.examples) / plan.examples)))
        }
    # Each arm trained on distinct questions, recorded in order; the curve's are a prefix.
    examples = store.experiment_examples("design")
    by_arm: dict[tuple[int, str], list[str]] = {}
    for e in examples:
        by_arm.setdefault((e.seed, e.arm), []).append(e.question)
    assert all(len(set(q)) == len(q) for q in by_arm.values())
    for seed in (0, 1):
        for arm in arms[1:]:
            assert by_arm[(seed, f"{arm}@2")] == by_arm[(seed, arm)][:2]
    # failed_only trained only on questions the starting student got wrong in its pool.
    shares = store.trained_shares("design")
    assert {s.arm for s in shares} == {a for a in names if a != "base"}
    # Answers stored; test questions differ between seeds, identical across arms within one.
    outcomes = store.query(
        "SELECT seed, arm, list(question ORDER BY question_index) AS q, "
        "count(answer) + count(*) FILTER (WHERE answer IS NULL) AS n "
        "FROM experiment_outcomes GROUP BY ALL"
    ).to_pylist()
    per_seed = {}
    for row in outcomes:
        per_seed.setdefault(row["seed"], set()).add(tuple(row["q"]))
        assert row["n"] == 8
    assert all(len(qs) == 1 for qs in per_seed.values()) and per_seed[0] != per_seed[1]
    validation = store.validation_outcomes("design")
    assert {v.seed for v in validation} == {0, 1}
    test_questions = {q for qs in per_seed.values() for t in qs for q in t}
    assert not test_questions & {v.question for v in validation}


def test_max_difficulty_caps_every_draw_where_the_arms_are_scored(tmp_path, tiny) -> None:
    capped = domains().capped(2)
    assert capped.domain_for("arithmetic.addition").max_difficulty("arithmetic.addition") == 2
    problems = uniform_problems(capped, TOPICS, 40, 0, ())
    assert {p.difficulty for p in problems} == {1, 2}
    assert all(capped.verify(p, p.answer).correct for p in problems)  # the domain's own checks
    cfg = config(tmp_path, tiny, arms=["base", "oracle"], seeds=[0], max_difficulty=1)
    run_experiment(cfg, progress=False)
    store = Store(cfg.db)
    scored = store.query("SELECT DISTINCT difficulty FROM experiment_outcomes").to_pylist()
    assert scored == [{"difficulty": 1}]
    assert {e.difficulty for e in store.experiment_examples("design")} == {1}
    assert {v.difficulty for v in store.validation_outcomes("design")} == {1}
    with pytest.raises(ConfigError, match="max_difficulty caps the experiment's own draws"):
        config(tmp_path, tiny, arms=["base", "selective_sft"], max_difficulty=2)


def test_a_reasoning_gym_skill_mix_runs_as_an_experiment(tmp_path, tiny) -> None:
    """Real tasks as topics: the pool and the splits come from the tasks' generators, arms
    train on the tasks' reference answers, and each task's verifier scores its questions."""
    skills = ["reasoning_gym.letter_counting", "reasoning_gym.spell_backward"]
    arms = ["base", "random", "failed_only", "oracle"]
    cfg = config(tmp_path, tiny, arms=arms, pool=8, seeds=[0]).with_overrides(topics=skills)
    results = run_experiment(cfg, progress=False)
    assert {r.arm for r in results} == set(arms)
    assert {r.questions for r in results} == {8}
    store = Store(cfg.db)
    examples = store.experiment_examples("design")
    assert {e.topic for e in examples} <= set(skills) and examples
    for e in examples:  # a count of letters, or the word spelled backward
        answer = e.completion.strip()
        if e.topic.endswith("spell_backward"):
            assert answer == e.question.rsplit(": ", 1)[1][::-1]
        else:
            assert answer.isdigit()
    topics = store.query("SELECT DISTINCT topic FROM experiment_outcomes").to_pylist()
    assert {t["topic"] for t in topics} == set(skills)


@pytest.mark.parametrize("table", ["experiment_outcomes", "experiment_validation"])
def test_a_resumed_seed_refuses_a_split_drawn_differently(tmp_path, tiny, table) -> None:
    """Arms are paired by question position, and a seed's plan comes from its validation split:
    a seed resumed by a version that draws either split differently stops before scoring
    anything, and keeps what was stored."""
    cfg = config(tmp_path, tiny, arms=["base", "random"], pool=6, seeds=[0])

    class Crash(Exception):
        pass

    def crash(result) -> None:
        raise Crash

    with pytest.raises(Crash):
        run_experiment(cfg, progress=False, on_arm=crash)
    with duckdb.connect(str(cfg.db)) as con:  # as if an earlier version had drawn the split
        con.execute(f"UPDATE {table} SET question = question || '?' WHERE question_index = 0")
    with pytest.raises(TeachloopError, match="seed 0 was scored on other questions"):
        run_experiment(cfg, progress=False)
    store = Store(cfg.db)
    assert [(r.seed, r.arm) for r in store.arm_results("design")] == [(0, "base")]
    stored = store.seed_questions("design", 0)
    assert len(stored.scored) == len(stored.validation) == 8
    altered = stored.scored if table == "experiment_outcomes" else stored.validation
    assert altered[0].endswith("?")


def test_failed_only_trains_on_the_pool_answers_the_student_got_wrong(tmp_path, tiny) -> None:
    """The random-weight student gets (almost) everything wrong, so failed_only's examples are
    pool questions it failed: checked against its stored pool answers via a rerun of scoring."""
    cfg = config(tmp_path, tiny, arms=["failed_only"], pool=6, seeds=[3])
    run_experiment(cfg, progress=False)
    store = Store(cfg.db)
    trained = [e.question for e in store.experiment_examples("design")]
    ds = domains()
    from teachloop.training.evaluate import score_model

    problems = {
        p.question: p
        for p in uniform_problems(
            ds,
            cfg.topics,
            6,
            3,
            ds.example_questions(cfg.topics)
            | {p.question for s in (experiment_splits(cfg, ds, 3),) for p in s.validation + s.test},
            draw="pool",
        )
    }
    assert set(trained) <= set(problems)
    scored = score_model(cfg, ds, [[problems[q] for q in trained]])[0]
    assert not any(s.correct for s in scored)


def test_rounds_re_diagnose_the_student_between_rounds() -> None:
    """A scripted student fails topic A; trained on A it knows A but (as a student can) now
    fails topic B: the second round targets B, the first A, and the budget is spent exactly."""
    ds = domains()
    problems = uniform_problems(ds, ("arithmetic.addition", "units.length"), 16, 0, ())
    a, b = "arithmetic.addition", "units.length"
    knows = {a: False, b: True}  # the student before any training

    def item(p, correct: bool) -> PoolItem:
        return PoolItem(
            problem=p, prompt=p.question, completion=p.answer, answer=None, correct=correct
        )

    pool = [item(p, knows[p.topic]) for p in problems]
    trained: list[list[str]] = []

    def train(r: int, chosen: list[PoolItem]) -> None:
        trained.append([i.problem.topic for i in chosen])
        knows.update({a: True, b: False})  # what training on A did to it

    def rescore(r: int, remaining: list[PoolItem]) -> list[PoolItem]:
        return [item(i.problem, knows[i.problem.topic]) for i in remaining]

    picked = select_in_rounds(pool, "failed", 0, 8, 2, rescore=rescore, train=train)
    assert trained == [[a] * 4, [b] * 4]
    assert [len(r) for r in picked] == [4, 4]
    questions = [i.problem.question for r in picked for i in r]
    assert len(set(questions)) == 8  # nothing trained twice
    # Too few failures left: the round tops up at random so the budget is still spent.
    knows.update({a: True, b: True})
    trained.clear()
    picked = select_in_rounds(
        [item(p, p.topic == b) for p in problems], "failed", 0, 12, 2, rescore=rescore, train=train
    )
    assert [len(r) for r in picked] == [6, 6] and set(trained[1]) <= {a, b}


def test_a_rounds_arm_spends_the_same_budget_in_the_same_steps(tmp_path, tiny) -> None:
    arm = {"name": "failed_r2", "data": "pool", "method": "sft", "select": "failed", "rounds": 2}
    cfg = config(tmp_path, tiny, arms=["random", arm], pool=10, seeds=[0])
    results = {r.arm: r for r in run_experiment(cfg, progress=False)}
    assert (results["failed_r2"].examples, results["failed_r2"].steps) == (
        results["random"].examples,
        results["random"].steps,
    )
    trained = [e for e in Store(cfg.db).experiment_examples("design") if e.arm == "failed_r2"]
    assert len({e.question for e in trained}) == len(trained) == results["random"].examples
    adapter = Path(results["failed_r2"].adapter_path)
    assert (adapter / "adapter_config.json").is_file()
    assert not adapter.with_name(adapter.name + ".rounds").exists()


# -- targets -------------------------------------------------------------------------------------


def test_solution_arms_train_the_same_questions_toward_worked_solutions(
    tmp_path, tiny, monkeypatch
) -> None:
    """random and random_solution differ only in the target: the same pool questions in the same
    order, bare answers against worked solutions, and each asked in its own form."""
    from teachloop.training import experiment

    arms = ["base", "base_solution", "random", "random_solution"]
    cfg = config(tmp_path, tiny, arms=arms, pool=8, seeds=[0], solution_max_tokens=9)
    asked: list[tuple[bool, int, bool]] = []  # (shown work, max_tokens, with an adapter)
    score = experiment.score_model

    def recording(config, *args, **kwargs):
        adapter = kwargs.get("adapter") is not None
        asked.append((config.student.shown_work, config.student.max_tokens, adapter))
        return score(config, *args, **kwargs)

    monkeypatch.setattr(experiment, "score_model", recording)
    results = run_experiment(cfg, progress=False)
    assert {r.arm for r in results} == set(arms)
    # The starting student once (bare), then base_solution, random and random_solution.
    assert sorted(asked) == sorted(
        [(False, 6, False), (True, 9, False), (False, 6, True), (True, 9, True)]
    )
    examples = Store(cfg.db).experiment_examples("design")
    bare = [e for e in examples if e.arm == "random"]
    worked = [e for e in examples if e.arm == "random_solution"]
    assert [e.question for e in bare] == [e.question for e in worked] and bare
    for b, w in zip(bare, worked, strict=True):
        assert "Answer:" not in b.completion and b.completion.strip().lstrip("-").isdigit()
        answer = w.completion.strip().splitlines()[-1]
        assert answer == f"Answer: {b.completion.strip()}" and len(w.completion) > len(answer)
    # The report says which target each arm had.
    summary = summarize_experiment(Store(cfg.db), "design", resamples=100)
    assert {a.arm: a.target for a in summary.arms} == {
        "base": "answer",
        "base_solution": "solution",
        "random": "answer",
        "random_solution": "solution",
    }
    assert "| random_solution | pool | sft | solution | 1 |" in render_markdown(summary)


def test_a_target_applies_to_reference_trained_arms_only(tmp_path, tiny) -> None:

    with pytest.raises(ConfigError, match="arm s: target applies to arms trained on reference"):
        config(
            tmp_path,
            tiny,
            arms=[{"name": "s", "data": "selective", "method": "sft", "target": "solution"}],
        )
