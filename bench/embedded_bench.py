"""Embedded model throughput: lessons per hour on the in-process Gemma-3 270M at 1 and 8 lessons
in flight, same run, same config (teacher and student share the model, as in the demo), and
at 8 in flight through the in-process backend as it was before issue 14 (``BASELINE``: static
batching with transformers' ``generate``), loaded from git history into the same run.
Run: `.venv/bin/python bench/embedded_bench.py [--lessons-one 4] [--lessons-eight 32]
[--no-baseline]`.

Each level gets its own fresh DuckDB file and the same seed; the model is loaded and warmed up
before timing. Reported: lessons/hour, tokens/s (prompt and completion, as logged), and where
the model's time goes per call: prompt tokens processed per completion token generated.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from figures import Figure

from teachloop import RunConfig, Store
from teachloop.agents.backends import build_backends
from teachloop.agents.backends.base import Backend, GenerationRequest
from teachloop.agents.backends.transformers_backend import TransformersBackend
from teachloop.graphs.runner import arun_lessons

ROOT = Path(__file__).parent.parent
CONFIG = ROOT / "examples" / "arithmetic.toml"
# The commit before continuous batching (8153e48): its in-process backend is the "old code path"
# issue 14 compares against. Its module imports only what the backend contract still provides.
BASELINE = "8153e48^"
BACKEND_PATH = "agents/backends/transformers_backend.py"
# Lessons per level. At 8 in flight a run ends by draining: its last lessons decode beside ever
# fewer others (16 lessons: the last ~100 of ~370 steps ran 1-6 rows). A long run amortises
# that, so the 8-in-flight level runs 32 lessons (4 rounds of 8); 16 measured 3.81x where 32
# measured 3.95x for 8 vs 1 on the same code (2026-11-29).
LESSONS = {1: 4, 8: 32}


def baseline_backend(current: TransformersBackend, rev: str = BASELINE) -> Backend:
    """The in-process backend's module as of ``rev``, built with ``current``'s arguments."""
    try:
        source = subprocess.run(
            ["git", "show", f"{rev}:{BACKEND_PATH}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        reason = (getattr(e, "stderr", "") or str(e)).strip().splitlines()[0]
        raise SystemExit(
            f"embedded bench: the baseline backend comes from git history ({rev}): {reason}; "
            "run from a full clone, or embedded_bench.py --no-baseline"
        ) from None
    path = Path(tempfile.mkdtemp()) / "baseline_transformers_backend.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.TransformersBackend(
        current.model_dir,
        dtype=current.dtype,
        max_batch_size=current.max_batch_size,
        name=current.name,
    )


async def measure(
    levels: dict[int, int],
    questions: int = 2,
    backend: Callable[[TransformersBackend], Backend] | None = None,
) -> dict[int, dict]:
    """Lessons at each level of ``levels`` (in flight: lessons), on the config's in-process
    backend or on ``backend(it)`` when given (the baseline)."""
    base = RunConfig.from_file(CONFIG)
    teacher, student = await asyncio.to_thread(build_backends, base)
    if backend is not None:
        assert isinstance(student, TransformersBackend)
        teacher = student = backend(student)
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


def best_of(fn: Callable[[], object], times: int) -> float:
    """The shortest of ``times`` timed calls of ``fn`` (after one untimed), in seconds."""
    fn()
    best = float("inf")
    for _ in range(times):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def bounds(backend: TransformersBackend, rows: int = 8, prompt_tokens: int = 256) -> dict:
    """Where the model's passes stand against this machine's limits, measured in one run.
    Decoding reads every weight once per step, so a step at ``rows`` rows is set against the
    machine's read bandwidth (the best of 5 sums over 512 MB); a prefill is matrix products,
    so one of ``prompt_tokens`` tokens is set against bfloat16 matrix-product throughput (the
    best of 3 products of 2048 x 2048 matrices). Counted: the weights' bytes, and 2 FLOPs per
    parameter of the linear layers per token (attention's products left out: ~5% at 256)."""
    import torch

    decoder = backend._decoder()
    model = decoder.model
    params = list(model.parameters())  # a tied head is the embedding, listed once
    weight_bytes = sum(p.numel() * p.element_size() for p in params)
    body = sum(p.numel() for p in params) - model.get_input_embeddings().weight.numel()
    with torch.inference_mode():
        data = torch.ones(128 * 2**20)  # 512 MB of float32
        read_gbs = data.numel() * 4 / best_of(data.sum, 5) / 1e9
        del data
        a = torch.randn(2048, 2048, dtype=torch.bfloat16)
        peak_gflops = 2 * 2048**3 / best_of(lambda: a @ a, 3) / 1e9
        words = " ".join(f"{i} plus {i + 7} is {2 * i + 7}." for i in range(200))
        ids = decoder.tokenizer(words).input_ids[:prompt_tokens]
        requests = [
            GenerationRequest(prompt=f"{words[: 4 * prompt_tokens]} {i}", max_tokens=64)
            for i in range(rows)
        ]

        def prefill() -> None:  # one prompt into a new, empty batch: its forward pass alone
            backend._decoder()._join([(0, requests[0])], [ids])

        prefill_s = best_of(prefill, 3)
        decoder = backend._decoder()
        decoder.step(list(enumerate(requests)))
        step_s = best_of(lambda: decoder.step([]), 10)
    tokens = len(ids)
    return {
        "weights_gb": weight_bytes / 1e9,
        "read_gb_per_s": read_gbs,
        "decode_step_s": step_s,
        "decode_fraction": weight_bytes / step_s / 1e9 / read_gbs,
        "peak_gflops": peak_gflops,
        "prefill_tokens": tokens,
        "prefill_s": prefill_s,
        "prefill_fraction": 2 * body * tokens / prefill_s / 1e9 / peak_gflops,
    }


def measure_bounds() -> dict:
    base = RunConfig.from_file(CONFIG)
    _, student = build_backends(base)
    assert isinstance(student, TransformersBackend)
    return bounds(student)


def figures() -> list[Figure]:
    old = asyncio.run(measure({8: LESSONS[8]}, backend=baseline_backend))[8]
    results = asyncio.run(measure(LESSONS))
    one, eight = results[1], results[8]
    limits = measure_bounds()
    return [
        Figure(
            bench="embedded",
            name=f"lessons/hour, 8 in flight, this code / the backend before issue 14 ({BASELINE})",
            measured=round(eight["lessons_per_hour"] / old["lessons_per_hour"], 2),
            unit="x",
            target=">= 2",
            note=f"{old['lessons_per_hour']} lessons/h before, measured first",
        ),
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
        Figure(
            bench="embedded",
            name="decode step at 8 rows: weight bytes read per second / this machine's read "
            "bandwidth",
            measured=round(limits["decode_fraction"], 2),
            unit="x",
            note=f"{limits['decode_step_s'] * 1000:.0f} ms per step, "
            f"{limits['weights_gb']:.2f} GB of weights, {limits['read_gb_per_s']:.1f} GB/s",
        ),
        Figure(
            bench="embedded",
            name=f"prefill of {limits['prefill_tokens']} tokens: linear layers' FLOP/s / this "
            "machine's bfloat16 matrix-product peak",
            measured=round(limits["prefill_fraction"], 2),
            unit="x",
            note=f"{limits['prefill_s'] * 1000:.0f} ms, peak {limits['peak_gflops']:,.0f} GFLOP/s",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lessons-one", type=int, default=LESSONS[1])
    parser.add_argument("--lessons-eight", type=int, default=LESSONS[8])
    parser.add_argument("--no-baseline", action="store_true", help=f"skip {BASELINE}'s backend")
    args = parser.parse_args()
    results: dict[str, dict] = {}
    if not args.no_baseline:
        old = asyncio.run(measure({8: args.lessons_eight}, backend=baseline_backend))
        results["baseline, 8"] = old[8]
    now = asyncio.run(measure({1: args.lessons_one, 8: args.lessons_eight}))
    results.update({str(level): row for level, row in now.items()})
    results["bounds"] = measure_bounds()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
