"""Experiments: does selective teaching transfer more than plain distillation, per unit of budget?

Every arm starts from the same student (the base model, or a pre-taught uneven one:
``[experiment.pretrain]``, ``training/pretrain.py``), trains on the same number of distinct
examples for the same number of optimizer steps, and is evaluated on the same questions within
a seed. Each seed draws its own validation and test splits (disjoint by construction and
checked), new training data and a new LoRA initialisation. Arms (``ArmConfig``; built-ins in
``teachloop.config.BUILTIN_ARMS``):

- ``base``: no training (the starting student).
- ``uniform_sft``: standard distillation, questions drawn evenly over topics and difficulties,
  trained on the domain's reference answers; ``oracle``: the same over the topics the starting
  student is weak at on the seed's validation split.
- ``selective_*``: preference pairs from lessons run with the targeting teacher (SFT on the
  chosen answers, DPO, or SFT then DPO with the steps split in half).
- pool arms (``random``, ``failed_only``, ``student_loss``, ``correct_only``): selection per
  example from one shared pool of questions the starting student answered
  (``training/selection.py``).
- ``kd``: token-level distillation on the uniform questions; the teacher is the base weights
  with the reference solution in context (context distillation).

Before any arm of a seed runs, its plan is fixed and stored: the budget (the configured
examples, or fewer if a source has fewer: then every arm gets that many) and the oracle's weak
topics, with the starting student's validation answers. ``budgets`` adds a budget curve: each
trained arm also trains on the first n of its examples (results ``<arm>@<n>``, steps scaled to
keep the epochs). Everything is stored (``experiments``, ``experiment_seeds``,
``experiment_arms``, ``experiment_outcomes`` with the answers, ``experiment_examples``,
``experiment_validation``), and a rerun skips the (seed, arm) results already there: an
experiment killed mid-arm redoes only that arm, with the seed's stored budget. Lessons are
logged like any run (run ids ``<name>-s<seed>-<data>``) and resume by id.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict

from teachloop.agents.student import Student
from teachloop.config import ArmConfig, RunConfig, TrainingConfig
from teachloop.domains import Domain, DomainSet, Problem, heldout_problems, uniform_problems
from teachloop.errors import TeachloopError
from teachloop.store.experiments import (
    ArmResult,
    ExperimentExample,
    ExperimentRecord,
    QuestionOutcome,
    SeedPlan,
    ValidationOutcome,
)
from teachloop.store.store import Store
from teachloop.training.evaluate import Scored, score_model
from teachloop.training.pretrain import pretrain_check, pretrain_problems, pretrain_student
from teachloop.training.selection import PoolItem, completion_losses, select, select_in_rounds
from teachloop.training.trainer import TrainingExample, train_adapter


class Example(BaseModel):
    """A training example with the question it is about (and the problem, for reference
    examples: an arm with its own target renders it again)."""

    model_config = ConfigDict(frozen=True)

    problem: Problem | None = None
    topic: str
    difficulty: int | None
    question: str
    example: TrainingExample


class Source(BaseModel):
    """One seed's examples from one data source, in training order, and what they cost."""

    model_config = ConfigDict(frozen=True)

    examples: list[Example]
    teacher_tokens: int = 0
    wall_s: float = 0.0


class Splits(BaseModel):
    """A seed's validation and test splits: disjoint, and apart from every training source."""

    model_config = ConfigDict(frozen=True)

    validation: list[Problem]
    test: list[Problem]


class SeedData(BaseModel):
    """What a seed's arms train on: its plan, the examples of each data source, the pool as the
    starting student answered it, and that student's answers on the scored split (if made)."""

    model_config = ConfigDict(frozen=True)

    plan: SeedPlan
    sources: dict[str, Source]
    pool: list[PoolItem]
    base_scores: list[Scored] | None


class ArmRun(BaseModel):
    """One result to produce on a seed: ``arm`` trained on ``budget`` examples (None: the
    seed's full budget), stored under ``name``."""

    model_config = ConfigDict(frozen=True)

    name: str
    arm: ArmConfig
    budget: int | None = None


def run_experiment(
    config: RunConfig,
    *,
    seeds: tuple[int, ...] | None = None,
    domains: Sequence[Domain] = (),
    out: Path | None = None,
    progress: bool = True,
    on_arm: Callable[[ArmResult], None] | None = None,
) -> list[ArmResult]:
    """Run (or resume) the experiment ``config.experiment`` describes; returns every arm result
    stored for it, this invocation's and earlier ones'. ``domains``: your own, beside the
    built-in ones and the config's."""
    from teachloop.agents.embedded import resolve_model_path
    from teachloop.domains import build_domains

    config = config.with_domains(domains)
    exp = config.experiment
    seeds = seeds or exp.seeds
    store = Store.of(config)
    store.write_experiment(
        ExperimentRecord(experiment=exp.name, config=_design(config)), seeds=seeds
    )
    out = out or store.home / "experiments" / exp.name
    domains = build_domains(config)
    if exp.max_difficulty is not None:
        domains = domains.capped(exp.max_difficulty)
    start = resolve_model_path(config.student.model)
    pretrained = {p.question for p in pretrain_problems(config, domains)}
    if exp.pretrain is not None:
        start = pretrain_student(config, domains, start, out / "pretrained", progress=progress)
        config = config.with_overrides(student={**config.student.model_dump(), "model": str(start)})
    done = {(r.seed, r.arm) for r in store.arm_results(exp.name)}
    for seed in seeds:
        todo = [run for run in arm_runs(config) if (seed, run.name) not in done]
        if not todo:
            continue
        splits = experiment_splits(config, domains, seed)
        scored = splits.validation if exp.evaluate_on == "validation" else splits.test
        _check_resumed_questions(store, exp.name, seed, splits, scored)
        data = _seed_plan(
            config, store, domains, splits, start, seed, todo, pretrained, progress=progress
        )
        for run in todo:
            result = _run_arm(
                config, store, domains, run, data, scored, start, out, seed, progress=progress
            )
            if on_arm is not None:
                on_arm(result)
    return store.arm_results(exp.name)


def _check_resumed_questions(
    store: Store, experiment: str, seed: int, splits: Splits, scored: list[Problem]
) -> None:
    """A resumed seed's remaining arms must answer the questions its finished arms did (the
    comparisons pair them by position), and its plan must come from this validation split; a
    split drawn differently since (another version's draw) would pair unrelated questions."""
    stored = store.seed_questions(experiment, seed)
    if (stored.scored and stored.scored != [p.question for p in scored]) or (
        stored.validation and stored.validation != [p.question for p in splits.validation]
    ):
        raise TeachloopError(
            f"experiment {experiment!r} seed {seed} was scored on other questions than this "
            "version draws: finish it with the version that started it, or give the "
            "experiment another name"
        )


def arm_runs(config: RunConfig) -> list[ArmRun]:
    """Every result a seed produces: each arm at the full budget, then each arm of the curve
    (every trained arm unless ``curve`` names some) at each smaller budget."""
    exp = config.experiment
    runs = [ArmRun(name=a.name, arm=a) for a in exp.arm_configs()]
    for n in sorted(exp.budgets):
        runs += [ArmRun(name=f"{a.name}@{n}", arm=a, budget=n) for a in exp.curve_arms()]
    return runs


def experiment_splits(config: RunConfig, domains: DomainSet, seed: int) -> Splits:
    """Seed ``seed``'s test split (``eval.per_topic`` a topic, drawn from ``eval.seed`` and the
    seed) and its validation split, drawn apart from the test split; neither holds a few-shot
    example or, with ``[experiment.pretrain]``, a pre-taught question or one of its check split
    (a pre-teaching setting may be chosen on it)."""
    per_topic, base = config.eval.per_topic, config.eval.seed
    exclude = {p.question for p in pretrain_problems(config, domains)}
    exclude |= {p.question for p in pretrain_check(config, domains)}
    test = heldout_problems(
        domains, config.topics, per_topic, base, split=f"test-s{seed}", exclude=exclude
    )
    validation = heldout_problems(
        domains,
        config.topics,
        per_topic,
        base,
        split=f"validation-s{seed}",
        exclude={*exclude, *(p.question for p in test)},
    )
    test_questions, validation_questions = (
        {p.question for p in test},
        {p.question for p in validation},
    )
    overlap = test_questions & validation_questions
    assert not overlap, f"validation and test splits share {len(overlap)} questions"
    assert not (test_questions | validation_questions) & exclude, (
        "a split holds a reserved question"
    )
    return Splits(validation=validation, test=test)


def _design(config: RunConfig) -> str:
    """What makes results comparable: everything but the seeds (more seeds may be added)."""
    data = json.loads(config.model_dump_json(exclude={"db", "run_id"}))
    data["experiment"].pop("seeds")
    if data["experiment"]["max_difficulty"] is None:  # as designs stored before it existed
        del data["experiment"]["max_difficulty"]
    return json.dumps(data, sort_keys=True)


def _data_key(arm: ArmConfig) -> str:
    """Arms with the same data key train on the same examples (selective arms with the same
    lesson policy share one seed's lessons)."""
    if arm.data == "selective":
        return "selective" + "".join(f"-{k}-{v}" for k, v in sorted(arm.lesson.items()))
    if arm.data == "pool":
        return f"pool-{arm.select}"
    if arm.data == "uniform" and arm.topics == "weak":
        return "oracle"
    return arm.data


def _seed_plan(
    config: RunConfig,
    store: Store,
    domains: DomainSet,
    splits: Splits,
    start: Path,
    seed: int,
    todo: list[ArmRun],
    pretrained: set[str],
    *,
    progress: bool,
) -> SeedData:
    """The seed's plan (stored before its first arm; a resumed seed reads it back), the data
    sources its remaining arms need, the scored pool, and the starting student's answers on the
    scored split when they were computed on the way (the base arm's)."""
    exp = config.experiment
    plan = store.seed_plan(exp.name, seed)
    # A fresh seed makes every source (the budget is the smallest); a resumed one only those of
    # the arms still to run, at the budget it stored.
    arms = [r.arm for r in todo] if plan is not None else exp.arm_configs()
    keys = {_data_key(a) for a in arms if a.method is not None}
    scored = splits.validation if exp.evaluate_on == "validation" else splits.test
    reserved = (
        domains.example_questions(config.topics)
        | {p.question for p in splits.validation + splits.test}
        | pretrained
    )
    pool: list[Problem] = []
    if any(k.startswith("pool-") for k in keys):
        pool = uniform_problems(domains, config.topics, exp.pool, seed, reserved, draw="pool")
    # The starting student, once: validation (the plan), the base arm's split, the pool.
    needs_base = any(r.arm.method is None and arm_config(config, r.arm) is config for r in todo)
    # Scoring on validation (a tuning run), the base arm's answers are the plan's.
    reuse = plan is None and exp.evaluate_on == "validation"
    sets = [
        splits.validation if plan is None else [],
        scored if needs_base and not reuse else [],
        pool,
    ]
    validation, base, pool_scores = score_model(
        config, domains, sets, progress=f"seed {seed}: the starting student" if progress else None
    )
    if reuse:
        base = validation
    student = Student.for_config(None, domains, config)
    sources: dict[str, Source] = {}
    for key in sorted(keys):
        if key.startswith("selective"):
            arm = next(a for a in arms if _data_key(a) == key)
            sources[key] = _selective(config, store, arm, key, seed, progress=progress)
        elif key.startswith("pool-"):
            continue
        else:
            topics = config.topics
            if key == "oracle":
                topics = tuple(plan.weak_topics) if plan else _weak(splits.validation, validation)
            problems = uniform_problems(domains, topics, exp.examples, seed, reserved)
            sources[key] = Source(examples=[_reference(student, p) for p in problems])
    items: list[PoolItem] = []
    if pool:
        items = [PoolItem.answered(student, p, s) for p, s in zip(pool, pool_scores, strict=True)]
        if "pool-loss" in keys:
            losses = completion_losses(start, [(i.prompt, i.completion) for i in items])
            items = [i.model_copy(update={"loss": x}) for i, x in zip(items, losses, strict=True)]
        for key in (k for k in keys if k.startswith("pool-")):
            rule = key.removeprefix("pool-")
            chosen = select(items, rule, seed)  # type: ignore[arg-type]
            sources[key] = Source(examples=[_reference(student, i.problem) for i in chosen])
    if plan is None:
        budget = min([exp.examples, *(len(s.examples) for s in sources.values())])
        if budget == 0 and keys:
            empty = sorted(k for k, s in sources.items() if not s.examples)
            raise TeachloopError(
                f"experiment {exp.name}, seed {seed}: no training examples from "
                f"{', '.join(empty)} (the lessons gave no preference pairs, the pool no such "
                "answers, or the topics no fresh questions): raise experiment.lessons or "
                "experiment.pool"
            )
        plan = store.fix_seed_plan(
            SeedPlan(
                experiment=exp.name,
                seed=seed,
                examples=budget,
                weak_topics=list(_weak(splits.validation, validation)),
            ),
            _outcomes(
                ValidationOutcome, splits.validation, validation, experiment=exp.name, seed=seed
            ),
        )
    short = {k: len(s.examples) for k, s in sources.items() if len(s.examples) < plan.examples}
    if short:
        raise TeachloopError(
            f"experiment {exp.name}, seed {seed}: stored budget {plan.examples} but "
            f"{short} examples now: the seed's data changed since it was planned; give the "
            "experiment another name"
        )
    return SeedData(
        plan=plan, sources=sources, pool=items, base_scores=base if needs_base else None
    )


_Outcome = TypeVar("_Outcome", QuestionOutcome, ValidationOutcome)


def _outcomes(
    row: type[_Outcome], problems: list[Problem], answers: list[Scored], **keys: object
) -> list[_Outcome]:
    """Each problem's answer, in order, as a stored row (``keys``: the row's other columns)."""
    return [
        row(
            **keys,
            question_index=i,
            topic=p.topic,
            difficulty=p.difficulty,
            question=p.question,
            answer=a.answer,
            correct=a.correct,
        )
        for i, (p, a) in enumerate(zip(problems, answers, strict=True))
    ]


def _weak(problems: list[Problem], scored: list[Scored]) -> tuple[str, ...]:
    """Topics below the starting student's mean accuracy over topics on the validation split
    (every topic when none is below: an even student has no weak topics to prefer)."""
    by_topic: dict[str, list[bool]] = {}
    for p, s in zip(problems, scored, strict=True):
        by_topic.setdefault(p.topic, []).append(s.correct)
    accuracy = {t: sum(c) / len(c) for t, c in by_topic.items()}
    mean = sum(accuracy.values()) / len(accuracy) if accuracy else 0.0
    weak = tuple(t for t, a in accuracy.items() if a < mean)
    return weak or tuple(accuracy)


def _reference(student: Student, problem: Problem) -> Example:
    return Example(
        problem=problem,
        topic=problem.topic,
        difficulty=problem.difficulty,
        question=problem.question,
        example=TrainingExample(
            prompt=student.prompt(problem.question, problem.topic),
            chosen=student.reference_completion(problem),
            rejected="",
            teacher_prompt=student.prompt(
                problem.question, problem.topic, explanation=problem.worked_solution
            ),
        ),
    )


def _retarget(student: Student, example: Example) -> Example:
    """The reference example again, in ``student``'s form (prompt and target)."""
    assert example.problem is not None, "only reference examples take an arm's target"
    return _reference(student, example.problem)


def _selective(
    config: RunConfig, store: Store, arm: ArmConfig, key: str, seed: int, *, progress: bool
) -> Source:
    """Pairs from the seed's lessons with the targeting teacher, one per question (the first:
    a question answered wrong twice gives one example, not two)."""
    from teachloop.graphs.runner import run_lessons

    exp = config.experiment
    run_id = f"{exp.name}-s{seed}-{key}"
    lessons = config.with_overrides(
        run_id=run_id,
        lessons=exp.lessons,
        seed=seed,
        # Seeds are independent: each lesson run starts from the prior, not from what the same
        # student showed in other seeds' (or other arms') lessons.
        lesson={**config.lesson.model_dump(), "carry_over": False, **arm.lesson},
        student={**config.student.model_dump(), "follow_promoted": False},
    )
    result = run_lessons(lessons, progress=progress)
    if result.lessons_failed:
        # Training on what the surviving lessons gave would bias the arm silently (a topic whose
        # lessons all failed is never taught).
        error = store.lessons(run_id=run_id, status="failed")[0].error
        raise TeachloopError(
            f"experiment {exp.name}, seed {seed}: {result.lessons_failed} of {result.lessons} "
            f"lessons of run {run_id} failed ({error}); fix that and rerun (finished lessons "
            "and arms are kept)"
        )
    questions = store.run_questions(run_id)
    examples, seen = [], set()
    for pair in store.run_pairs(run_id):
        if pair.question_id in seen:
            continue
        seen.add(pair.question_id)
        text, difficulty = questions[pair.question_id]
        examples.append(
            Example(
                topic=pair.topic,
                difficulty=difficulty,
                question=text,
                example=TrainingExample.of_pair(pair),
            )
        )
    return Source(
        examples=examples, teacher_tokens=store.teacher_tokens(run_id), wall_s=result.wall_time_s
    )


def arm_config(config: RunConfig, arm: ArmConfig) -> RunConfig:
    """The config the arm's student is trained and asked under: ``config``, or with an arm's
    ``target`` the student in that form (worked solutions: shown work, longer replies)."""
    shown = arm.target == "solution"
    if arm.target is None or shown == config.student.shown_work:
        return config
    tokens = {"max_tokens": config.experiment.solution_max_tokens} if shown else {}
    return config.with_overrides(
        student={**config.student.model_dump(), "shown_work": shown, **tokens}
    )


def arm_training(config: RunConfig, arm: ArmConfig, seed: int) -> TrainingConfig:
    """The arm's training settings: ``[training]``, the arm's overrides, and the seed."""
    return TrainingConfig.model_validate(
        {**config.training.model_dump(), **arm.training, "seed": seed}
    )


def _run_arm(
    config: RunConfig,
    store: Store,
    domains: DomainSet,
    run: ArmRun,
    data: SeedData,
    scored: list[Problem],
    start: Path,
    out: Path,
    seed: int,
    *,
    progress: bool,
) -> ArmResult:
    exp, arm, plan = config.experiment, run.arm, data.plan
    asked = arm_config(config, arm)
    started = time.perf_counter()
    adapter, source, examples, steps = None, None, [], 0
    if arm.method is not None:
        source = data.sources[_data_key(arm)]
        budget = plan.examples if run.budget is None else min(run.budget, plan.examples)
        training = arm_training(config, arm, seed)
        # A smaller budget of a curve keeps the full budget's epochs.
        steps = max(1, round(training.steps * budget / plan.examples))
        training = training.model_copy(update={"steps": steps})
        adapter = out / f"s{seed}" / run.name
        if arm.rounds > 1:
            examples = _train_rounds(
                config, domains, arm, data.pool, budget, training, start, adapter, seed,
                progress=progress,
            )  # fmt: skip
        else:
            examples = source.examples[:budget]
            if asked is not config:  # the same questions, toward the arm's own target
                student = Student.for_config(None, domains, asked)
                examples = [_retarget(student, e) for e in examples]
            _train_arm(
                start, arm, [e.example for e in examples], adapter, training, progress=progress
            )
    trained_s = time.perf_counter() - started
    if adapter is None and data.base_scores is not None and asked is config:
        answers = data.base_scores
    else:
        label = f"seed {seed} {run.name}: held-out" if progress else None
        answers = score_model(asked, domains, [scored], adapter=adapter, progress=label)[0]
    result = ArmResult(
        experiment=exp.name,
        seed=seed,
        arm=run.name,
        data=arm.data,
        method=arm.method,
        examples=len(examples),
        steps=steps,
        teacher_tokens=source.teacher_tokens if source else 0,
        data_wall_s=source.wall_s if source else 0.0,
        train_wall_s=trained_s,
        eval_wall_s=time.perf_counter() - started - trained_s,
        questions=len(answers),
        correct=sum(a.correct for a in answers),
        adapter_path=str(adapter) if adapter else None,
    )
    store.write_arm_result(
        result,
        _outcomes(QuestionOutcome, scored, answers, experiment=exp.name, seed=seed, arm=run.name),
        [
            ExperimentExample(
                experiment=exp.name,
                seed=seed,
                arm=run.name,
                position=i,
                topic=e.topic,
                difficulty=e.difficulty,
                question=e.question,
                completion=e.example.chosen,
            )
            for i, e in enumerate(examples)
        ],
    )
    return result


def _train_rounds(
    config: RunConfig,
    domains: DomainSet,
    arm: ArmConfig,
    pool: list[PoolItem],
    budget: int,
    training: TrainingConfig,
    start: Path,
    out: Path,
    seed: int,
    *,
    progress: bool,
) -> list[Example]:
    """A pool arm in ``arm.rounds`` rounds (``select_in_rounds``): each round trains the
    adapter further on its share of the budget and steps (a fresh learning-rate schedule per
    round), the student re-measured on the rest of the pool in between."""
    assert arm.select is not None
    work = out.with_name(out.name + ".rounds")
    for stale in (out, work):
        if stale.exists():  # left by a run killed before its result was stored
            shutil.rmtree(stale)
    student = Student.for_config(None, domains, config)
    steps = [
        training.steps // arm.rounds + (r < training.steps % arm.rounds) for r in range(arm.rounds)
    ]
    current: Path | None = None

    def rescore(r: int, remaining: list[PoolItem]) -> list[PoolItem]:
        label = f"round {r + 1}: the rest of the pool" if progress else None
        problems = [i.problem for i in remaining]
        answers = score_model(config, domains, [problems], adapter=current, progress=label)[0]
        losses: list[float | None] = [None] * len(remaining)
        if arm.select == "loss":
            pairs = [(i.prompt, i.completion) for i in remaining]
            losses = list(completion_losses(start, pairs, adapter=current))
        return [
            i.model_copy(update={"answer": a.answer, "correct": a.correct, "loss": x})
            for i, a, x in zip(remaining, answers, losses, strict=True)
        ]

    def train(r: int, chosen: list[PoolItem]) -> None:
        nonlocal current
        target = work / f"round{r}"
        examples = [_reference(student, i.problem).example for i in chosen]
        train_adapter(
            start, examples, target,
            training.model_copy(update={"method": "sft", "steps": max(1, steps[r])}),
            parent_adapter=current, progress=progress,
        )  # fmt: skip
        current = target

    picked = select_in_rounds(
        pool, arm.select, seed, budget, arm.rounds, rescore=rescore, train=train
    )
    assert current is not None
    current.rename(out)
    shutil.rmtree(work)
    return [_reference(student, i.problem) for chosen in picked for i in chosen]


def _train_arm(
    start: Path,
    arm: ArmConfig,
    examples: list[TrainingExample],
    out: Path,
    training: TrainingConfig,
    *,
    progress: bool,
) -> None:
    if out.exists():  # left by a run killed before its result was stored: not a result
        shutil.rmtree(out)
    if arm.method != "sft_then_dpo":
        train_adapter(
            start, examples, out, training.model_copy(update={"method": arm.method}),
            progress=progress,
        )  # fmt: skip
        return
    # Half the steps each, so the arm's budget equals the others'.
    first = max(1, training.steps // 2)
    sft = out.with_name(out.name + ".sft")
    if sft.exists():
        shutil.rmtree(sft)
    train_adapter(
        start, examples, sft, training.model_copy(update={"method": "sft", "steps": first}),
        progress=progress,
    )  # fmt: skip
    train_adapter(
        start,
        examples,
        out,
        training.model_copy(update={"method": "dpo", "steps": max(1, training.steps - first)}),
        parent_adapter=sft,
        progress=progress,
    )
    shutil.rmtree(sft)
