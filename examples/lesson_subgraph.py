"""The lesson graph as a LangGraph building block: run it with a checkpointer of your choice, and
embed it as a subgraph of your own graph.

    python examples/lesson_subgraph.py

Here a "course" graph runs one lesson, then a node of its own writes a report from the lesson's
messages; the lesson is then logged to a store like any run's, so SQL, replay and training see
it. ($TEACHLOOP_EXAMPLE_MODEL / $TEACHLOOP_EXAMPLE_DIR: see examples/own_domain.py.)
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from teachloop import Critique, RunConfig, Store
from teachloop.agents.backends import build_backends
from teachloop.graphs import LessonState, initial_state, lesson_graph, lesson_log
from teachloop.records import RunRecord

MODEL = os.environ.get("TEACHLOOP_EXAMPLE_MODEL", "embedded:gemma-3-270m")
OUT = Path(os.environ.get("TEACHLOOP_EXAMPLE_DIR", "runs/examples"))


class Course(LessonState):
    """The parent's state: the lesson's keys (shared with the subgraph) plus its own."""

    report: str


def report(state: Course) -> dict:
    verdicts = [m for m in state["messages"] if isinstance(m, Critique)]
    right = sum(v.correct for v in verdicts)
    return {"report": f"{right} of {len(verdicts)} answers right in {state['lesson_id']}"}


async def main() -> None:
    config = RunConfig(
        db=OUT / "subgraph.duckdb",
        topics=("arithmetic.addition", "units.length"),
        lesson={"questions": 2},
        teacher={"model": MODEL, "max_tokens": 40},
        student={"model": MODEL, "max_tokens": 10},
    )
    teacher, student = build_backends(config)  # the config's models; any Backend works here
    try:
        # 1. On its own, with LangGraph's in-memory checkpointer: resumable by thread id.
        lesson = lesson_graph(
            config, teacher=teacher, student=student, checkpointer=InMemorySaver()
        )
        thread = {"configurable": {"thread_id": "solo-L0"}}
        state = await lesson.ainvoke(initial_state("solo", "solo-L0"), thread)
        print(f"alone: {len(state['messages'])} messages, ended by {state['end_reason'].value}")

        # 2. As a subgraph: a node of a parent graph that checkpoints for both.
        parent = StateGraph(Course)
        parent.add_node("lesson", lesson_graph(config, teacher=teacher, student=student))
        parent.add_node("report", report)
        parent.add_edge(START, "lesson")
        parent.add_edge("lesson", "report")
        parent.add_edge("report", END)
        course = parent.compile(checkpointer=InMemorySaver())
        start = {**initial_state("course", "course-L0"), "report": ""}
        final = await course.ainvoke(start, {"configurable": {"thread_id": "course-L0"}})
        print(f"as a subgraph: {final['report']}")

        # 3. Log both lessons, so `teachloop sql/replay` and pair building see them.
        store = Store(config.db)
        for run_id, done in (("solo", state), ("course", final)):
            store.write_run(
                RunRecord(
                    run_id=run_id,
                    lessons_planned=1,
                    teacher_model=config.teacher.model,
                    student_model=config.student.model,
                    config=config.model_dump_json(),
                )
            )
            store.write_lessons([lesson_log(done)])
        print(f"logged to {config.db}: try `teachloop replay --db {config.db} course-L0`")
    finally:
        for backend in {id(b): b for b in (teacher, student)}.values():
            await backend.aclose()


if __name__ == "__main__":
    asyncio.run(main())
