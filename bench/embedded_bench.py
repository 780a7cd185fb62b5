"""Embedded model throughput: lessons per hour on the in-process Gemma-3 270M at 1 and 8 lessons
in flight, same run, same config (teacher and student share the model, as in the demo).
Run: `.venv/bin/python bench/embedded_bench.py [--lessons-one 4] [--lessons-eight 16]`.

Each level gets its own fresh DuckDB file and the same seed; the model is loaded and warmed up
before timing. Reported: lessons/hour, tokens/s (prompt and completion, as logged), and where
the model's time goes per call: prompt tokens processed per completion token generated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from figures import Figure

from teachloop import RunConfig, Store
from teachloop.agents.backends import build_backends
from teachloop.agents.backends.base import GenerationRequest
from teachloop.graphs.runner import arun_lessons

CONFIG = Path(__file__).parent.parent / "examples" / "arithmetic.toml"


async def measure(levels: dict[int, int], questions: int = 2) -> dict[int, dict]:
    base = RunConfig.from_file(CONFIG)
    teacher, student = await asyncio.to_thread(build_backends, base)
    await student.check()
    await student.complete(GenerationRequest(prompt="Question: What is 1 + 1?\nAnswer:"))
    results: dict[int, dict] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for concurrency, lessons in levels.items():
                config = base.model_copy(
                    update={
                        "db": Path(tmp) / f"c{concurrency}.duckdb",
                        "run_id": f"c{concurrency}",
                        "lessons": lessons,
                        "concurrency": concurrency,
                        "lesson": base.lesson.model_copy(update={"questions": questions}),
                    }
                )
                started = time.perf_counter()
                await arun_lessons(
                    config, teacher_backend=teacher, student_backend=student, progress=False
                )
                wall = time.perf_counter() - started
                row = (
                    Store(config.db)
                    .query(
                        "SELECT count(*) AS calls, sum(prompt_tokens)::BIGINT AS prompt, "
                        "sum(completion_tokens)::BIGINT AS completion FROM messages "
                        "WHERE model IS NOT NULL"
                    )
                    .to_pylist()[0]
                )
                results[concurrency] = {
                    "lessons": lessons,
                    "wall_s": round(wall, 1),
                    "lessons_per_hour": round(lessons / wall * 3600, 1),
                    "model_calls": row["calls"],
                    "prompt_tokens_per_s": round(row["prompt"] / wall, 1),
                    "completion_tokens_per_s": round(row["completion"] / wall, 1),
                    "prompt_per_completion_token": round(row["prompt"] / row["completion"], 1),
                }
    finally:
        await student.aclose()
    return results


def figures() -> list[Figure]:
    results = asyncio.run(measure({1: 4, 8: 16}))
    one, eight = results[1], results[8]
    return [
        Figure(
            bench="embedded",
            name="lessons/hour, 8 in flight",
            measured=eight["lessons_per_hour"],
            unit="lessons/h",
            note=f"{eight['completion_tokens_per_s']} completion tokens/s, "
            f"{eight['prompt_per_completion_token']} prompt tokens per completion token",
        ),
        Figure(
            bench="embedded",
            name="lessons/hour, 1 in flight",
            measured=one["lessons_per_hour"],
            unit="lessons/h",
        ),
        Figure(
            bench="embedded",
            name="8 in flight / 1 in flight",
            measured=round(eight["lessons_per_hour"] / one["lessons_per_hour"], 2),
            unit="x",
            target=">= 4",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lessons-one", type=int, default=4)
    parser.add_argument("--lessons-eight", type=int, default=16)
    args = parser.parse_args()
    results = asyncio.run(measure({1: args.lessons_one, 8: args.lessons_eight}))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
