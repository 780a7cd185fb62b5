"""An uneven starting student for an experiment (``[experiment.pretrain]``): SFT of the base
model on reference examples of some topics, merged into a model directory every arm starts
from, so the student knows some topics and not others, as a deployed model does.

The directory is kept with the experiment (``<out>/pretrained``) beside
``teachloop-pretrain.json``: the settings, the examples' questions, the training result, and
the base and pre-taught students' accuracy per topic on a check split (never trained on, never
reported). A rerun with the same settings reuses it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from teachloop.agents.student import Student
from teachloop.config import RunConfig, TrainingConfig
from teachloop.domains import DomainSet, Problem, heldout_problems, uniform_problems
from teachloop.errors import TeachloopError
from teachloop.training.evaluate import Scored, score_model
from teachloop.training.trainer import TrainingExample, merge_adapter, train_adapter

INFO = "teachloop-pretrain.json"


def pretrain_problems(config: RunConfig, domains: DomainSet) -> list[Problem]:
    """The reference examples the starting student is pre-taught (deterministic in the
    settings): every split an experiment evaluates on excludes their questions."""
    pre = config.experiment.pretrain
    if pre is None:
        return []
    reserved = domains.example_questions(config.topics)
    n = pre.examples * len(pre.topics)
    return uniform_problems(domains, pre.topics, n, 0, reserved, draw="pretrain")


def pretrain_check(config: RunConfig, domains: DomainSet) -> list[Problem]:
    """The check split: drawn apart from the pre-teaching examples, answered by the base and the
    pre-taught student so the stored profile shows what pre-teaching did. A pre-teaching setting
    may be chosen on it, so an experiment's validation and test splits exclude it too."""
    if config.experiment.pretrain is None:
        return []
    return heldout_problems(
        domains,
        config.topics,
        config.eval.per_topic,
        config.eval.seed,
        split="pretrain-check",
        exclude={p.question for p in pretrain_problems(config, domains)},
    )


def pretrain_student(
    config: RunConfig, domains: DomainSet, base_dir: Path, out: Path, *, progress: bool = True
) -> Path:
    """The pre-taught student's model directory (``out``), trained now or reused."""
    pre = config.experiment.pretrain
    if pre is None:
        raise ValueError("the config has no [experiment.pretrain]")
    training = TrainingConfig.model_validate(
        {**config.training.model_dump(), **pre.training, "method": "sft"}
    )
    # What the merged model depends on (and nothing else: the arms' [training] may change).
    settings = {
        "base": str(base_dir),
        "topics": list(pre.topics),
        "examples": pre.examples,
        "training": training.model_dump(mode="json"),
        "student": config.student.model_dump(mode="json"),
        "check": config.eval.model_dump(mode="json"),
    }
    if config.experiment.max_difficulty is not None:  # (absent: as stored before it existed)
        settings["max_difficulty"] = config.experiment.max_difficulty
    info_path = out / INFO
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        if info["settings"] != settings:
            raise TeachloopError(
                f"{out} holds a student pre-taught with other settings: remove it, or give "
                "this experiment another name"
            )
        return out
    if out.exists():  # a merge killed before its info was written: not a result
        shutil.rmtree(out)
    problems = pretrain_problems(config, domains)
    student = Student.for_config(None, domains, config)
    examples = [
        TrainingExample(
            prompt=student.prompt(p.question, p.topic),
            chosen=student.reference_completion(p),
            rejected="",
        )
        for p in problems
    ]
    adapter = out.with_name(out.name + ".adapter")
    if adapter.exists():
        shutil.rmtree(adapter)
    result = train_adapter(base_dir, examples, adapter, training, progress=progress)
    merge_adapter(base_dir, adapter, out)
    shutil.rmtree(adapter)
    check = pretrain_check(config, domains)

    def label(model: str) -> str | None:
        return f"check split: {model}" if progress else None

    before = score_model(config, domains, [check], progress=label("base"))
    after = score_model(config, domains, [check], model=out, progress=label("pre-taught"))
    profile = {"base": _accuracy(check, before[0]), "pretrained": _accuracy(check, after[0])}
    info = {
        "settings": settings,
        "examples": len(examples),
        "questions": [p.question for p in problems],
        "train": result.model_dump(mode="json"),
        "check": profile,
    }
    info_path.write_text(json.dumps(info, indent=1))
    return out


def pretrain_profile(out: Path) -> dict[str, dict[str, float]]:
    """Accuracy per topic on the check split, of ``base`` and ``pretrained``."""
    return json.loads((out / INFO).read_text())["check"]


def _accuracy(problems: list[Problem], scored: list[Scored]) -> dict[str, float]:
    topics: dict[str, list[bool]] = {}
    for p, s in zip(problems, scored, strict=True):
        topics.setdefault(p.topic, []).append(s.correct)
    return {t: sum(c) / len(c) for t, c in topics.items()}


__all__ = ["pretrain_check", "pretrain_problems", "pretrain_profile", "pretrain_student"]
