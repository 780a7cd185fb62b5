"""Any Python function as an agent: here the student is a plain async function, a "calculator"
that adds perfectly and guesses at everything else, and the teacher is the embedded model.

    python examples/function_student.py

A student of known skill shows the teacher's targeting at work: after a few lessons the
teacher spends its questions on the topics the student fails. Put your own model behind a role
the same way (an HTTP client, a local library, a LangChain chat model through
`teachloop.agents.backends.langchain_backend`). ($TEACHLOOP_EXAMPLE_MODEL /
$TEACHLOOP_EXAMPLE_DIR: see examples/own_domain.py.)
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from teachloop import FunctionBackend, GenerationRequest, RunConfig, Store, run_lessons
from teachloop.agents.backends import build_backend

MODEL = os.environ.get("TEACHLOOP_EXAMPLE_MODEL", "embedded:gemma-3-270m")
OUT = Path(os.environ.get("TEACHLOOP_EXAMPLE_DIR", "runs/examples"))
_ADDITION = re.compile(r"What is (\d+) \+ (\d+)\?\s*$")


async def calculator(request: GenerationRequest) -> str:
    """The student: sees the same prompt a model would and answers the last question."""
    question = request.prompt.rsplit("Question:", 1)[1].split("\n", 1)[0]
    if m := _ADDITION.search(question):
        return f" {int(m[1]) + int(m[2])}\n"
    return " 7\n"  # a guess


def main() -> None:
    config = RunConfig(
        db=OUT / "function_student.duckdb",
        run_id="calculator",
        lessons=8,
        concurrency=4,
        topics=("arithmetic.addition", "arithmetic.multiplication", "units.length"),
        lesson={"questions": 3, "max_reteaches": 0},
        teacher={"model": MODEL, "max_tokens": 40},
    )
    teacher = build_backend(config, "teacher")
    result = run_lessons(
        config,
        teacher_backend=teacher,
        student_backend=FunctionBackend(calculator),
        progress=False,
    )
    asyncio.run(teacher.aclose())
    print(f"{result.lessons} lessons, first-try accuracy {result.first_try_accuracy:.0%}")
    asked = Store(config.db).query(
        "SELECT topic, count(*) AS asked, avg(correct_first::INT) AS right"
        " FROM question_outcomes WHERE run_id = 'calculator' GROUP BY topic ORDER BY asked DESC"
    )
    for row in asked.to_pylist():
        print(f"{row['topic']:<28} asked {row['asked']:>2}  right {row['right']:.0%}")


if __name__ == "__main__":
    main()
