"""Watch a run's messages as they are produced, while everything is logged as usual.

    python examples/stream.py

Each lesson's messages arrive in turn order; lessons in flight interleave. The same stream is
what `teachloop run --follow` prints. ($TEACHLOOP_EXAMPLE_MODEL / $TEACHLOOP_EXAMPLE_DIR: see
examples/own_domain.py.)
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from teachloop import Critique, Question, Reteach, RunConfig, stream_lessons

MODEL = os.environ.get("TEACHLOOP_EXAMPLE_MODEL", "embedded:gemma-3-270m")
OUT = Path(os.environ.get("TEACHLOOP_EXAMPLE_DIR", "runs/examples"))


async def main() -> None:
    config = RunConfig(
        db=OUT / "stream.duckdb",
        lessons=3,
        concurrency=3,
        topics=("arithmetic.addition", "arithmetic.multiplication"),
        lesson={"questions": 2},
        teacher={"model": MODEL, "max_tokens": 40},
        student={"model": MODEL, "max_tokens": 10},
    )
    stream = stream_lessons(config)
    async for message in stream:
        match message:
            case Question():
                print(f"{message.lesson_id} asks   {message.text!r}")
            case Critique():
                print(f"{message.lesson_id} judges {'right' if message.correct else 'wrong'}")
            case Reteach():
                print(f"{message.lesson_id} reteaches ({message.strategy.value})")
            case _:
                print(f"{message.lesson_id} answer {message.text!r}")
    assert stream.result is not None
    print(f"logged {stream.result.questions} questions to {config.db} (run {stream.result.run_id})")


if __name__ == "__main__":
    asyncio.run(main())
