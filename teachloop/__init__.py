"""teachloop: a teacher LLM finds what a student LLM gets wrong, re-teaches it, logs every
message to DuckDB, and trains the student on its own mistakes.

    from teachloop import RunConfig, run_lessons
    result = run_lessons(RunConfig.from_file("examples/arithmetic.toml"))

More in README, "From Python": streaming (``stream_lessons``), the lesson graph itself
(``lesson_graph``), own domains (``Domain``) and own models (``FunctionBackend``); the training
loop (``run_loop``) and experiments (``run_experiment``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from teachloop.config import RunConfig
from teachloop.errors import TeachloopError
from teachloop.messages import Answer, Critique, Message, Question, Reteach, parse_message

if TYPE_CHECKING:
    from teachloop.agents.backends import Backend, FunctionBackend, GenerationRequest
    from teachloop.domains import Domain, Problem, Verdict
    from teachloop.graphs.distributed import RayOptions, run_lessons_on_ray
    from teachloop.graphs.lesson import initial_state, lesson_graph
    from teachloop.graphs.runner import arun_lessons, run_lessons, stream_lessons
    from teachloop.graphs.summary import RunResult
    from teachloop.store.store import Store
    from teachloop.training.experiment import run_experiment
    from teachloop.training.loop import RoundResult, run_loop

_LAZY = {
    # Imported on first use: they pull in LangGraph, DuckDB and (for models) torch.
    "run_lessons": "teachloop.graphs.runner",
    "arun_lessons": "teachloop.graphs.runner",
    "stream_lessons": "teachloop.graphs.runner",
    "run_lessons_on_ray": "teachloop.graphs.distributed",
    "RayOptions": "teachloop.graphs.distributed",
    "lesson_graph": "teachloop.graphs.lesson",
    "initial_state": "teachloop.graphs.lesson",
    "Backend": "teachloop.agents.backends",
    "FunctionBackend": "teachloop.agents.backends",
    "GenerationRequest": "teachloop.agents.backends",
    "Domain": "teachloop.domains",
    "Problem": "teachloop.domains",
    "Verdict": "teachloop.domains",
    "RunResult": "teachloop.graphs.summary",
    "run_loop": "teachloop.training.loop",
    "RoundResult": "teachloop.training.loop",
    "run_experiment": "teachloop.training.experiment",
    "Store": "teachloop.store.store",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'teachloop' has no attribute {name!r}")


__all__ = [
    "Answer",
    "Backend",
    "Critique",
    "Domain",
    "FunctionBackend",
    "GenerationRequest",
    "Message",
    "Problem",
    "Question",
    "RayOptions",
    "Reteach",
    "RoundResult",
    "RunConfig",
    "RunResult",
    "Store",
    "TeachloopError",
    "Verdict",
    "arun_lessons",
    "initial_state",
    "lesson_graph",
    "parse_message",
    "run_experiment",
    "run_lessons",
    "run_lessons_on_ray",
    "run_loop",
    "stream_lessons",
]
