"""Interaction graphs: the lesson as a LangGraph state machine, and the runner that drives many.

from teachloop.graphs import lesson_graph, initial_state, run_lessons, stream_lessons
"""

from teachloop.graphs.lesson import LessonState, initial_state, lesson_graph
from teachloop.graphs.runner import (
    LessonStream,
    arun_lessons,
    lesson_log,
    run_lessons,
    stream_lessons,
)

__all__ = [
    "LessonState",
    "LessonStream",
    "arun_lessons",
    "initial_state",
    "lesson_graph",
    "lesson_log",
    "run_lessons",
    "stream_lessons",
]
