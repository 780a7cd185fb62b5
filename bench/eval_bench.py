"""Held-out evaluation of the base student in-process vs on a vLLM server, in one run.

The promotion gate evaluates on the student's vLLM server when it has one; this measures what
that buys. Same problems (seeded held-out set), same dtype (bfloat16), the model loaded and the
server started before timing; reports wall time, the ratio, and both accuracies (they may differ
by a question or two: different kernels). Usage:

    .venv/bin/python bench/eval_bench.py --per-topic 20 --out runs/eval-bench
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from teachloop import RunConfig
from teachloop.agents.backends import Backend, build_backend
from teachloop.agents.serving import ServerSet
from teachloop.agents.student import Student
from teachloop.domains import build_domains, heldout_problems
from teachloop.training.evaluate import EvalResult, evaluate

TOPICS = ["arithmetic.addition", "arithmetic.multiplication", "units.length"]


def config_for(backend: str, out: Path, port: int, per_topic: int) -> RunConfig:
    agent = {"backend": backend, "dtype": "bfloat16", "max_batch_size": 32}
    servers = [{"roles": ["student"], "port": port, "max_concurrency": 64}]
    return RunConfig.validated(
        {
            "db": str(out / f"{backend}.duckdb"),
            "topics": TOPICS,
            "eval": {"per_topic": per_topic},
            "student": agent,
            "servers": servers if backend == "vllm" else [],
        }
    )


async def timed_eval(config: RunConfig) -> EvalResult:
    domains = build_domains(config)
    problems = heldout_problems(domains, config.topics, config.eval.per_topic, config.eval.seed)
    backend: Backend = build_backend(config, "student")
    try:
        await backend.check()  # load the model / reach the server before timing
        return await evaluate(
            Student.for_config(backend, domains, config),
            problems,
            version="base",
            seed=config.eval.seed,
        )
    finally:
        await backend.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-topic", type=int, default=20)
    parser.add_argument("--port", type=int, default=8192)
    parser.add_argument("--out", type=Path, default=Path("runs/eval-bench"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    local = asyncio.run(timed_eval(config_for("transformers", args.out, args.port, args.per_topic)))
    served_config = config_for("vllm", args.out, args.port, args.per_topic)
    with ServerSet(served_config, log_dir=args.out / "logs", on_status=print):
        served = asyncio.run(timed_eval(served_config))
    rows = [
        {"where": name, "questions": r.questions, "accuracy": r.accuracy, "seconds": r.wall_time_s}
        for name, r in (("in-process", local), ("vLLM", served))
    ]
    print("\n| where | questions | accuracy | seconds |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['where']} | {r['questions']} | {r['accuracy']:.3f} | {r['seconds']:.1f} |")
    print(f"\nvLLM is {local.wall_time_s / served.wall_time_s:.2f}x as fast as in-process")
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
