"""Orchestration benchmark: messages/s one process drives through the real lesson graph,
checkpointer and store, with zero-latency scripted backends (so the runner, not a model, is
what is measured). Run: `.venv/bin/python bench/orchestration_bench.py [--lessons N]
[--profile out.prof]`.

The scripted student is right on addition and wrong elsewhere (each wrong first answer is
retaught once), so lessons have the shape real ones do: ~6 messages per question.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import re
import tempfile
import time
from pathlib import Path

from figures import Figure
from langgraph.checkpoint.memory import InMemorySaver

from teachloop import RunConfig, Store, run_lessons
from teachloop.agents.backends.base import GenerationRequest
from teachloop.agents.backends.scripted import ScriptedBackend
from teachloop.graphs import initial_state, lesson_graph
from teachloop.graphs.lesson import checkpoint_serde

_ADD = re.compile(r"What is (-?\d+) \+ (-?\d+)\?")


def student(request: GenerationRequest) -> str:
    question = request.prompt.rsplit("Question:", 1)[-1]
    if m := _ADD.search(question):
        return f" {int(m[1]) + int(m[2])}\n"
    return " 0\n"


def teacher(request: GenerationRequest) -> str:
    return " Look at each place value in turn.\n"


def _config(lessons: int, concurrency: int, questions: int, db: Path) -> RunConfig:
    return RunConfig.validated(
        {
            "db": db,
            "run_id": "bench",
            "lessons": lessons,
            "concurrency": concurrency,
            "topics": ["arithmetic.addition", "arithmetic.multiplication"],
            "lesson": {"questions": questions},
        }
    )


def _backends() -> tuple[ScriptedBackend, ScriptedBackend]:
    backends = ScriptedBackend(teacher, name="teacher"), ScriptedBackend(student, name="student")
    for backend in backends:  # scripted backends keep every request; not here
        backend.requests = _Discard()  # type: ignore[assignment]
    return backends


def measure_graph_alone(
    lessons: int, concurrency: int, questions: int, *, checkpoints: bool = False
) -> float:
    """Messages/s of the same lessons through the compiled graph and no store: what LangGraph's
    own loop costs, the ceiling of any runner built on it. With ``checkpoints``, every step is
    checkpointed by LangGraph's in-memory saver (durability "sync", as the runner's): the
    ceiling of a runner that checkpoints each step, whatever its saver writes to."""
    config = _config(lessons, concurrency, questions, Path("unused.duckdb"))
    t, s = _backends()
    saver = InMemorySaver(serde=checkpoint_serde()) if checkpoints else None
    graph = lesson_graph(config, teacher=t, student=s, checkpointer=saver)

    async def drive() -> int:
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> int:
            lesson = f"bench-L{i}"
            start = initial_state("bench", lesson, i)
            async with gate:
                if saver is None:
                    return len((await graph.ainvoke(start))["messages"])
                thread = {"configurable": {"thread_id": lesson}}
                state = await graph.ainvoke(start, thread, durability="sync")
                await saver.adelete_thread(lesson)  # as the runner does once a lesson is stored
                return len(state["messages"])

        return sum(await asyncio.gather(*(one(i) for i in range(lessons))))

    started = time.perf_counter()
    messages = asyncio.run(drive())
    return messages / (time.perf_counter() - started)


def measure(lessons: int, concurrency: int, questions: int, db: Path) -> dict:
    config = _config(lessons, concurrency, questions, db)
    backends = _backends()
    wall, cpu = time.perf_counter(), time.process_time()
    result = run_lessons(
        config, teacher_backend=backends[0], student_backend=backends[1], progress=False
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert result.status == "complete", result.status
    messages = Store(db).query("SELECT count(*) AS n FROM messages").to_pylist()[0]["n"]
    return {
        "lessons": lessons,
        "concurrency": concurrency,
        "messages": messages,
        "wall_s": round(wall, 2),
        "messages_per_s": round(messages / wall, 1),
        "messages_per_cpu_s": round(messages / cpu, 1),
    }


def warm_up(tmp: Path) -> None:
    """A short untimed run first, so the figures are the steady rate: the first run in a
    process also pays its imports and first uses (~0.25 s, measured with 16 lessons)."""
    measure(16, 16, 3, tmp / "warm-up.duckdb")


def figures() -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp:
        warm_up(Path(tmp))
        run = measure(400, 16, 3, Path(tmp) / "bench.duckdb")
    alone = measure_graph_alone(400, 16, 3)
    in_memory = measure_graph_alone(400, 16, 3, checkpoints=True)
    rate = run["messages_per_s"]
    return [
        Figure(
            bench="orchestration",
            name="messages/s, one process, zero-latency backends",
            measured=rate,
            unit="msg/s",
            target=">= 2000",
            note=f"{run['messages']:,} messages, 400 lessons, 16 in flight, SQLite checkpoints",
        ),
        Figure(
            bench="orchestration",
            name="the same lessons through LangGraph alone",
            measured=round(alone, 1),
            unit="msg/s",
            note="compiled graph, no checkpointer, no store: the ceiling",
        ),
        Figure(
            bench="orchestration",
            name="the same lessons through LangGraph with in-memory checkpoints",
            measured=round(in_memory, 1),
            unit="msg/s",
            note="every step checkpointed by InMemorySaver, no store: the ceiling of a runner "
            "that checkpoints each step",
        ),
        Figure(
            bench="orchestration",
            name="runner / LangGraph alone",
            measured=round(rate / alone, 3),
            unit="x",
        ),
        Figure(
            bench="orchestration",
            name="runner / LangGraph with in-memory checkpoints",
            measured=round(rate / in_memory, 3),
            unit="x",
        ),
    ]


class _Discard(list):
    def append(self, item: object) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lessons", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the run here")
    parser.add_argument(
        "--graph-alone",
        action="store_true",
        help="also time LangGraph alone, without and with in-memory checkpoints",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.duckdb"
        warm_up(Path(tmp))
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
        result = measure(args.lessons, args.concurrency, args.questions, db)
        if args.profile:
            profiler.disable()
            profiler.dump_stats(args.profile)
    if args.graph_alone:
        alone = measure_graph_alone(args.lessons, args.concurrency, args.questions)
        result["graph_alone_messages_per_s"] = round(alone, 1)
        in_memory = measure_graph_alone(
            args.lessons, args.concurrency, args.questions, checkpoints=True
        )
        result["graph_in_memory_checkpoints_messages_per_s"] = round(in_memory, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
