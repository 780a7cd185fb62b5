"""Lesson throughput through a real vLLM server vs the embedded in-process backend, in one run.

Both serve the embedded Gemma 270M (bfloat16) to teacher and student; for each concurrency
(lessons in flight) the same number of lessons runs on each backend, and the tokens the models
generated (as logged: the servers' own usage counts, the in-process tokenizer's) are divided by
the wall time of the run. Models are loaded and servers started before timing. The vLLM
server runs twice, with prefix caching on (the default) and off; its /metrics give the share of
prompt tokens served from the prefix cache. Usage:

    .venv/bin/python bench/vllm_bench.py --concurrency 1 8 32 --out runs/vllm-bench
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import urllib.request
from pathlib import Path

from teachloop import RunConfig, Store
from teachloop.agents.backends import Backend, build_backends
from teachloop.agents.serving import ServerSet
from teachloop.graphs.runner import arun_lessons


def config_for(
    backend: str, db: Path, port: int, prefix_caching: bool = True, block_size: int | None = None
) -> RunConfig:
    agent = {"backend": backend, "dtype": "bfloat16", "max_batch_size": 32}
    servers = [
        {
            "roles": ["teacher", "student"],
            "port": port,
            "max_concurrency": 64,
            "prefix_caching": prefix_caching,
            "block_size": block_size,
        }
    ]
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


def prefix_cache_counts(config: RunConfig) -> tuple[float, float]:
    """(queried, hit) prompt tokens of the prefix cache so far, from the vLLM server's /metrics;
    (0, 0) for the in-process backend."""
    if not config.servers:
        return 0.0, 0.0
    url = config.servers[0].urls()[0].removesuffix("/v1") + "/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()

    def total(name: str) -> float:
        return sum(float(v) for v in re.findall(rf"^vllm:{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))

    return total("prefix_cache_queries_total"), total("prefix_cache_hits_total")


async def measure(config: RunConfig, backend: Backend, concurrency: int, lessons: int) -> dict:
    run_id = f"{config.teacher.backend}-c{concurrency}"
    queried, hit = prefix_cache_counts(config)
    run = config.with_overrides(run_id=run_id, concurrency=concurrency, lessons=lessons)
    started = time.perf_counter()
    await arun_lessons(run, teacher_backend=backend, student_backend=backend, progress=False)
    seconds = time.perf_counter() - started
    queried_after, hit_after = prefix_cache_counts(config)
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
    label = "embedded"
    if config.servers:
        label = "vllm" if config.servers[0].prefix_caching else "vllm-no-prefix-cache"
    queries = queried_after - queried
    return {
        "backend": label,
        "concurrency": concurrency,
        "lessons": lessons,
        "calls": row["calls"],
        "tokens": row["tokens"],
        "seconds": round(seconds, 2),
        "tokens_per_s": round(row["tokens"] / seconds, 1),
        "lessons_per_hour": round(lessons / seconds * 3600, 1),
        "prefix_cache_hit_rate": round((hit_after - hit) / queries, 3) if queries else None,
    }


async def bench_backend(config: RunConfig, levels: list[int], min_lessons: int) -> list[dict]:
    # Fresh logs: a run id already in an earlier run's file would resume, not run.
    for db in (config.db, config.db.with_suffix(".warm.duckdb")):
        for path in db.parent.glob(db.name + "*"):
            path.unlink()
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
    parser.add_argument("--block-size", type=int, help="vLLM KV block size (CPU default 128)")
    parser.add_argument(
        "--embedded-results", type=Path, help="reuse the in-process numbers of an earlier run"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    if args.embedded_results:
        earlier = json.loads(args.embedded_results.read_text())
        results += [r for r in earlier if r["backend"] == "embedded"]
    else:
        embedded = config_for("transformers", args.out / "embedded.duckdb", args.port)
        results += asyncio.run(bench_backend(embedded, args.concurrency, args.min_lessons))
    for prefix_caching in (True, False):
        name = "vllm" if prefix_caching else "vllm-no-prefix-cache"
        served = config_for(
            "vllm", args.out / f"{name}.duckdb", args.port, prefix_caching, args.block_size
        )
        with ServerSet(served, log_dir=args.out / f"logs-{name}", on_status=print):
            results += asyncio.run(bench_backend(served, args.concurrency, args.min_lessons))

    by = {(r["backend"], r["concurrency"]): r for r in results}
    print(
        "\n| in flight | embedded lessons/h | vLLM lessons/h (prefix cache hit rate) "
        "| vLLM without prefix cache | vLLM / embedded | prefix cache on / off |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for c in args.concurrency:
        e, v = by[("embedded", c)], by[("vllm", c)]
        off = by[("vllm-no-prefix-cache", c)]
        print(
            f"| {c} | {e['lessons_per_hour']} | {v['lessons_per_hour']} "
            f"({v['prefix_cache_hit_rate']}) | {off['lessons_per_hour']} "
            f"| {v['lessons_per_hour'] / e['lessons_per_hour']:.2f}x "
            f"| {v['lessons_per_hour'] / off['lessons_per_hour']:.2f}x |"
        )
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nraw numbers: {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
