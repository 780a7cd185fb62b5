"""Lesson throughput through a real vLLM server vs the embedded in-process backend, in one run.

Both serve the embedded Gemma 270M (bfloat16) to teacher and student; for each concurrency
(lessons in flight) the same number of lessons runs on each backend, and the tokens the models
generated (as logged: the servers' own usage counts, the in-process tokenizer's) are divided by
the wall time of the run. Models are loaded and servers started before timing. Usage:

    .venv/bin/python bench/vllm_bench.py --concurrency 1 8 32 --out runs/vllm-bench
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from teachloop import RunConfig, Store
from teachloop.agents.backends import Backend, build_backends
from teachloop.agents.serving import ServerSet
from teachloop.graphs.runner import arun_lessons


def config_for(backend: str, db: Path, port: int) -> RunConfig:
    agent = {"backend": backend, "dtype": "bfloat16", "max_batch_size": 32}
    servers = [{"roles": ["teacher", "student"], "port": port, "max_concurrency": 64}]
    return RunConfig.validated(
        {
            "db": str(db),
            "topics": ["arithmetic.addition", "arithmetic.multiplication", "units.length"],
            "lesson": {"questions": 3, "max_reteaches": 1},
            "teacher": {**agent, "max_tokens": 40, "follow_promoted": False},
            "student": {**agent, "max_tokens": 10, "follow_promoted": False},
            "servers": servers if backend == "vllm" else [],
        }
    )


async def measure(config: RunConfig, backend: Backend, concurrency: int, lessons: int) -> dict:
    run_id = f"{config.teacher.backend}-c{concurrency}"
    run = config.with_overrides(run_id=run_id, concurrency=concurrency, lessons=lessons)
    started = time.perf_counter()
    await arun_lessons(run, teacher_backend=backend, student_backend=backend, progress=False)
    seconds = time.perf_counter() - started
    row = (
        Store(config.db)
        .query(
            "SELECT sum(completion_tokens)::BIGINT AS tokens, "
            "count(*) FILTER (WHERE completion_tokens > 0) AS calls "
            "FROM messages WHERE run_id = ?",
            [run_id],
        )
        .to_pylist()[0]
    )
    return {
        "backend": "vllm" if config.teacher.backend == "vllm" else "embedded",
        "concurrency": concurrency,
        "lessons": lessons,
        "calls": row["calls"],
        "tokens": row["tokens"],
        "seconds": round(seconds, 2),
        "tokens_per_s": round(row["tokens"] / seconds, 1),
    }


async def bench_backend(config: RunConfig, levels: list[int], min_lessons: int) -> list[dict]:
    backend, _ = build_backends(config)
    try:
        await backend.check()  # load the model / reach the server before timing
        await measure(
            config.with_overrides(db=config.db.with_suffix(".warm.duckdb")), backend, 2, 2
        )
        results = []
        for c in levels:
            results.append(await measure(config, backend, c, max(c, min_lessons)))
            print(json.dumps(results[-1]), flush=True)
        return results
    finally:
        await backend.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--min-lessons", type=int, default=4)
    parser.add_argument("--port", type=int, default=8190)
    parser.add_argument("--out", type=Path, default=Path("runs/vllm-bench"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    embedded = config_for("transformers", args.out / "embedded.duckdb", args.port)
    results += asyncio.run(bench_backend(embedded, args.concurrency, args.min_lessons))
    served = config_for("vllm", args.out / "vllm.duckdb", args.port)
    with ServerSet(served, log_dir=args.out / "logs", on_status=print):
        results += asyncio.run(bench_backend(served, args.concurrency, args.min_lessons))

    by = {(r["backend"], r["concurrency"]): r for r in results}
    print("\n| concurrency | embedded tokens/s | vLLM tokens/s | vLLM / embedded |")
    print("|---:|---:|---:|---:|")
    for c in args.concurrency:
        e, v = by[("embedded", c)], by[("vllm", c)]
        ratio = v["tokens_per_s"] / e["tokens_per_s"]
        print(f"| {c} | {e['tokens_per_s']} | {v['tokens_per_s']} | {ratio:.2f}x |")
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nraw numbers: {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
