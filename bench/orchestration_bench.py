"""Orchestration benchmark: messages/s one process drives through the real lesson graph,
checkpointer and store, with zero-latency scripted backends (so the runner, not a model, is
what is measured). Run: `.venv/bin/python bench/orchestration_bench.py [--lessons N]
[--profile out.prof]`.

The scripted student is right on addition and wrong elsewhere (each wrong first answer is
retaught once), so lessons have the shape real ones do: ~6 messages per question.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import re
import tempfile
import time
from pathlib import Path

from teachloop import RunConfig, Store, run_lessons
from teachloop.agents.backends.base import GenerationRequest
from teachloop.agents.backends.scripted import ScriptedBackend

_ADD = re.compile(r"What is (-?\d+) \+ (-?\d+)\?")


def student(request: GenerationRequest) -> str:
    question = request.prompt.rsplit("Question:", 1)[-1]
    if m := _ADD.search(question):
        return f" {int(m[1]) + int(m[2])}\n"
    return " 0\n"


def teacher(request: GenerationRequest) -> str:
    return " Look at each place value in turn.\n"


def measure(lessons: int, concurrency: int, questions: int, db: Path) -> dict:
    config = RunConfig.validated(
        {
            "db": db,
            "run_id": "bench",
            "lessons": lessons,
            "concurrency": concurrency,
            "topics": ["arithmetic.addition", "arithmetic.multiplication"],
            "lesson": {"questions": questions},
        }
    )
    backends = ScriptedBackend(teacher, name="teacher"), ScriptedBackend(student, name="student")
    for backend in backends:  # scripted backends keep every request; not here
        backend.requests = _Discard()  # type: ignore[assignment]
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


class _Discard(list):
    def append(self, item: object) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lessons", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the run here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.duckdb"
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
        result = measure(args.lessons, args.concurrency, args.questions, db)
        if args.profile:
            profiler.disable()
            profiler.dump_stats(args.profile)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
