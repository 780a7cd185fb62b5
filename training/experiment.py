"""Experiments: does selective teaching transfer more than plain distillation, per unit of budget?

Every arm starts from the same base student, trains on the same number of distinct examples for
the same number of optimizer steps, and is evaluated on the same held-out questions; each seed
draws new training data (new lessons, new uniform questions) and a new LoRA initialisation.
Arms (``ArmConfig``; built-ins in ``teachloop.config.BUILTIN_ARMS``):

- ``base``: no training.
- ``uniform_sft``: standard distillation, questions drawn evenly over topics and difficulties,
  trained on the domain's reference answers.
- ``selective_*``: preference pairs from lessons run with the targeting teacher (SFT on the
  chosen answers, DPO, or SFT then DPO with the steps split in half).
- ``kd``: token-level distillation on the uniform questions; the teacher is the base weights
  with the reference solution in context (context distillation).

Everything is stored (``experiments``, ``experiment_arms``, ``experiment_outcomes``), and a rerun
skips the (seed, arm) results already there: an experiment killed mid-arm redoes only that arm.
Lessons are logged like any run (run ids ``<name>-s<seed>-<data>``) and resume by id.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from teachloop.agents.backends import LoraAdapter, build_backend
from teachloop.agents.student import Student
from teachloop.config import ArmConfig, RunConfig, TrainingConfig
from teachloop.domains import Domain, DomainSet, Problem, distinct_problems, heldout_problems
from teachloop.errors import TeachloopError
from teachloop.store.experiments import ArmResult, ExperimentRecord, QuestionOutcome
from teachloop.store.store import Store
from teachloop.training.evaluate import answer_all
from teachloop.training.trainer import TrainingExample, train_adapter


class SeedData(BaseModel):
    """One seed's training data: the uniform examples and, per lesson policy, the selective
    ones, each with what it cost to produce."""

    model_config = ConfigDict(frozen=True)

    uniform: list[TrainingExample]
    selective: dict[str, list[TrainingExample]]  # by data key (see _data_key)
    teacher_tokens: dict[str, int]  # tokens the teacher generated for each selective source
    lessons_wall_s: dict[str, float]


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
    heldout = heldout_problems(domains, config.topics, config.eval.per_topic, config.eval.seed)
    # No training example is held out or a few-shot example.
    reserved = domains.example_questions(config.topics) | {p.question for p in heldout}
    base_dir = resolve_model_path(config.student.model)
    done = {(r.seed, r.arm) for r in store.arm_results(exp.name)}
    arms = exp.arm_configs()
    base_outcomes: list[bool] | None = None
    for seed in seeds:
        todo = [a for a in arms if (seed, a.name) not in done]
        if not todo:
            continue
        data = _seed_data(config, store, domains, reserved, seed, todo, progress=progress)
        budget = min([exp.examples, len(data.uniform), *(len(v) for v in data.selective.values())])
        if budget == 0 and any(a.method for a in todo):
            raise TeachloopError(
                f"experiment {exp.name}, seed {seed}: no training examples (the lessons gave "
                "no preference pairs, or the topics no fresh questions): raise experiment.lessons"
            )
        for arm in todo:
            started = time.perf_counter()
            adapter = None
            if arm.method is not None:
                examples = _arm_examples(arm, data)[:budget]
                adapter = out / f"s{seed}" / arm.name
                _train_arm(config, arm, base_dir, examples, adapter, seed, progress=progress)
            trained_s = time.perf_counter() - started
            if arm.method is None and base_outcomes is not None:
                outcomes = base_outcomes  # greedy and untrained: the same on every seed
            else:
                outcomes = _evaluate(
                    config, domains, heldout, adapter, f"{exp.name}-s{seed}-{arm.name}"
                )
                if arm.method is None:
                    base_outcomes = outcomes
            key = _data_key(arm)
            result = ArmResult(
                experiment=exp.name,
                seed=seed,
                arm=arm.name,
                data=arm.data,
                method=arm.method,
                examples=0 if arm.method is None else budget,
                steps=0 if arm.method is None else arm_training(config, arm, seed).steps,
                teacher_tokens=data.teacher_tokens.get(key, 0) if arm.data == "selective" else 0,
                data_wall_s=data.lessons_wall_s.get(key, 0.0) if arm.data == "selective" else 0.0,
                train_wall_s=trained_s,
                eval_wall_s=time.perf_counter() - started - trained_s,
                questions=len(outcomes),
                correct=sum(outcomes),
                adapter_path=str(adapter) if adapter else None,
            )
            store.write_arm_result(
                result,
                [
                    QuestionOutcome(
                        experiment=exp.name,
                        seed=seed,
                        arm=arm.name,
                        question_index=i,
                        topic=p.topic,
                        difficulty=p.difficulty,
                        question=p.question,
                        correct=ok,
                    )
                    for i, (p, ok) in enumerate(zip(heldout, outcomes, strict=True))
                ],
            )
            if on_arm is not None:
                on_arm(result)
    return store.arm_results(exp.name)


def _design(config: RunConfig) -> str:
    """What makes results comparable: everything but the seeds (more seeds may be added)."""
    data = json.loads(config.model_dump_json(exclude={"db", "run_id"}))
    data["experiment"].pop("seeds")
    return json.dumps(data, sort_keys=True)


def _data_key(arm: ArmConfig) -> str:
    """Selective arms with the same lesson policy share one seed's lessons."""
    if arm.data != "selective":
        return arm.data
    return "selective" + "".join(f"-{k}-{v}" for k, v in sorted(arm.lesson.items()))


def _seed_data(
    config: RunConfig,
    store: Store,
    domains: DomainSet,
    reserved: frozenset[str],
    seed: int,
    arms: list[ArmConfig],
    *,
    progress: bool,
) -> SeedData:
    from teachloop.graphs.runner import run_lessons

    exp = config.experiment
    selective: dict[str, list[TrainingExample]] = {}
    tokens: dict[str, int] = {}
    wall: dict[str, float] = {}
    for arm in arms:
        key = _data_key(arm)
        if arm.data != "selective" or key in selective:
            continue
        run_id = f"{exp.name}-s{seed}-{key}"
        lessons = config.with_overrides(
            run_id=run_id,
            lessons=exp.lessons,
            seed=seed,
            # Seeds are independent: each lesson run starts from the prior, not from what
            # the same base student showed in other seeds' (or other arms') lessons.
            lesson={**config.lesson.model_dump(), "carry_over": False, **arm.lesson},
            student={**config.student.model_dump(), "follow_promoted": False},
        )
        result = run_lessons(lessons, progress=progress)
        if result.lessons_failed:
            # Training on what the surviving lessons gave would bias the arm silently (a topic
            # whose lessons all failed is never taught).
            error = store.lessons(run_id=run_id, status="failed")[0].error
            raise TeachloopError(
                f"experiment {exp.name}, seed {seed}: {result.lessons_failed} of "
                f"{result.lessons} lessons of run {run_id} failed ({error}); fix that and rerun "
                "(finished lessons and arms are kept)"
            )
        pairs = store.run_pairs(run_id)
        selective[key] = [TrainingExample.of_pair(p) for p in pairs]
        tokens[key] = store.teacher_tokens(run_id)
        wall[key] = result.wall_time_s
    problems = uniform_problems(domains, config.topics, exp.examples, seed, reserved)
    student = Student.for_config(None, domains, config)
    uniform = [
        TrainingExample(
            prompt=student.prompt(p.question, p.topic),
            chosen=student.reference_completion(p),
            rejected="",
            teacher_prompt=student.prompt(p.question, p.topic, explanation=p.worked_solution),
        )
        for p in problems
    ]
    return SeedData(
        uniform=uniform, selective=selective, teacher_tokens=tokens, lessons_wall_s=wall
    )


def uniform_problems(
    domains: DomainSet, topics: tuple[str, ...], n: int, seed: int, reserved: frozenset[str]
) -> list[Problem]:
    """``n`` problems evenly over topics (in turn) and difficulties (cycling 1..5), none of them
    held out and none twice: what standard distillation trains on."""
    seen = set(reserved)
    per_topic = [
        distinct_problems(
            domains.domain_for(topic),
            topic,
            n // len(topics) + (i < n % len(topics)),
            random.Random(f"uniform/{seed}/{topic}"),
            seen,
        )
        for i, topic in enumerate(topics)
    ]
    # Topics in turn (a topic that ran dry just drops out).
    return [p for turn in itertools.zip_longest(*per_topic) for p in turn if p is not None]


def arm_training(config: RunConfig, arm: ArmConfig, seed: int) -> TrainingConfig:
    """The arm's training settings: ``[training]``, the arm's overrides, and the seed."""
    return TrainingConfig.model_validate(
        {**config.training.model_dump(), **arm.training, "seed": seed}
    )


def _arm_examples(arm: ArmConfig, data: SeedData) -> list[TrainingExample]:
    return data.uniform if arm.data == "uniform" else data.selective[_data_key(arm)]


def _train_arm(
    config: RunConfig,
    arm: ArmConfig,
    base_dir: Path,
    examples: list[TrainingExample],
    out: Path,
    seed: int,
    *,
    progress: bool,
) -> None:
    if out.exists():  # left by a run killed before its result was stored: not a result
        shutil.rmtree(out)
    training = arm_training(config, arm, seed)
    if arm.method != "sft_then_dpo":
        train_adapter(
            base_dir,
            examples,
            out,
            training.model_copy(update={"method": arm.method}),
            progress=progress,
        )
        return
    # Half the steps each, so the arm's budget equals the others'.
    first = max(1, training.steps // 2)
    sft = out.with_name(out.name + ".sft")
    if sft.exists():
        shutil.rmtree(sft)
    train_adapter(
        base_dir,
        examples,
        sft,
        training.model_copy(update={"method": "sft", "steps": first}),
        progress=progress,
    )
    train_adapter(
        base_dir,
        examples,
        out,
        training.model_copy(update={"method": "dpo", "steps": max(1, training.steps - first)}),
        parent_adapter=sft,
        progress=progress,
    )
    shutil.rmtree(sft)


def _evaluate(
    config: RunConfig,
    domains: DomainSet,
    problems: list[Problem],
    adapter: Path | None,
    name: str,
) -> list[bool]:
    """Per-question correctness of the base student, or the base plus ``adapter``."""
    lora = LoraAdapter(name=name, path=adapter) if adapter else None
    backend = build_backend(config, "student", lora)

    async def run() -> list[bool]:
        try:
            await backend.check()
            return await answer_all(Student.for_config(backend, domains, config), problems)
        finally:
            await backend.aclose()

    return asyncio.run(run())
