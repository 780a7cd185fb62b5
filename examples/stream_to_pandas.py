"""A lesson run streaming into a pandas DataFrame: the notebook-friendly way to watch one.

In Jupyter, paste `main()`'s body into a cell and use top-level `await` (no asyncio.run); put
`display(frame.tail())` in the loop to watch the rows arrive. ($TEACHLOOP_EXAMPLE_MODEL /
$TEACHLOOP_EXAMPLE_DIR: see examples/own_domain.py.)
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pandas as pd

from teachloop import RunConfig, Store, stream_lessons

MODEL = os.environ.get("TEACHLOOP_EXAMPLE_MODEL", "embedded:gemma-3-270m")
OUT = Path(os.environ.get("TEACHLOOP_EXAMPLE_DIR", "runs/examples"))


async def main() -> pd.DataFrame:
    config = RunConfig(
        db=OUT / "pandas.duckdb",
        lessons=2,
        topics=("arithmetic.subtraction", "units.length"),
        lesson={"questions": 2},
        teacher={"model": MODEL, "max_tokens": 40},
        student={"model": MODEL, "max_tokens": 10},
    )
    rows = []
    stream = stream_lessons(config)
    async for message in stream:
        rows.append(
            {
                "lesson": message.lesson_id,
                "turn": message.turn,
                "kind": message.kind,
                "text": message.text,
                "tokens": message.generation.completion_tokens if message.generation else 0,
            }
        )
    frame = pd.DataFrame(rows)
    print(frame.groupby("kind").agg(messages=("turn", "size"), tokens=("tokens", "sum")))
    # The same messages are in the log, for SQL later:
    assert stream.result is not None
    run = {"run": stream.result.run_id}
    logged = Store(config.db).query("SELECT count(*) FROM messages WHERE run_id = $run", run)[0][0]
    print(f"{len(frame)} streamed, {logged} in {config.db}")
    return frame


if __name__ == "__main__":
    asyncio.run(main())
