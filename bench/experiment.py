"""The experiment of the training issue: no training vs SFT vs DPO on the embedded model.

Same lessons, same preference pairs, same held-out set for all three; reports held-out accuracy
per topic and the wall time of each step, in one run. Usage:

    .venv/bin/python bench/experiment.py --lessons 24 --steps 16 --out runs/experiment
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from teachloop import RunConfig, Store, run_lessons
from teachloop.agents.backends.transformers_backend import TransformersBackend
from teachloop.agents.embedded import prepare_embedded_model
from teachloop.config import TrainingConfig
from teachloop.domains import build_domains, heldout_problems
from teachloop.training.evaluate import EvalResult, evaluate
from teachloop.training.pairs import build_pairs, unused_pairs
from teachloop.training.trainer import TrainingExample, train_adapter


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, default=Path("examples/arithmetic.toml"))
    parser.add_argument("--lessons", type=int, default=24)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--per-topic", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("runs/experiment"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    config = RunConfig.from_file(args.config).with_overrides(
        db=args.out / "experiment.duckdb",
        run_id="experiment",
        lessons=args.lessons,
        eval={"per_topic": args.per_topic, "seed": 1234, "tolerance": 0.05},
    )
    seconds: dict[str, float] = {}

    def lap(name: str, started: float) -> None:
        seconds[name] = round(time.perf_counter() - started, 1)

    t = time.perf_counter()
    run = run_lessons(config, progress=False)
    lap("lessons", t)
    store = Store(config.db)
    t = time.perf_counter()
    build_pairs(store)
    pairs = unused_pairs(store)
    lap("pairs", t)
    examples = [
        TrainingExample(prompt=p.prompt, chosen=p.chosen, rejected=p.rejected) for p in pairs
    ]
    base = prepare_embedded_model()
    adapters: dict[str, Path | None] = {"base": None}
    step_times: dict[str, float] = {}
    for method in ("sft", "dpo"):
        t = time.perf_counter()
        result = train_adapter(
            base,
            examples,
            args.out / method,
            TrainingConfig(method=method, steps=args.steps, batch_size=4),
            progress=False,
        )
        lap(f"train {method}", t)
        adapters[method] = result.adapter_dir
        step_times[method] = round(result.mean_step_time_s, 2)
    domains = build_domains(config)
    problems = heldout_problems(domains, config.topics, args.per_topic, 1234)
    results: dict[str, EvalResult] = {}
    for name, adapter in adapters.items():
        t = time.perf_counter()
        backend = TransformersBackend(base, adapter_dir=adapter, name=name)
        results[name] = asyncio.run(evaluate(backend, problems, domains, version=name, seed=1234))
        asyncio.run(backend.aclose())
        lap(f"eval {name}", t)
    report = {
        "lessons": run.lessons,
        "questions": run.questions,
        "lesson_first_try_accuracy": run.first_try_accuracy,
        "lesson_after_reteach_accuracy": run.after_reteach_accuracy,
        "pairs": len(pairs),
        "pairs_by_rule": {
            r: sum(p.rule == r for p in pairs) for r in ("self_corrected", "reference")
        },
        "steps": args.steps,
        "mean_step_time_s": step_times,
        "seconds": seconds,
        "heldout": {
            name: {"overall": r.accuracy, **{s.topic: s.accuracy for s in r.topics}}
            for name, r in results.items()
        },
        "heldout_questions": len(problems),
    }
    (args.out / "experiment.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
