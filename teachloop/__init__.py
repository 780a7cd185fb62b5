"""teachloop: a teacher LLM finds what a student LLM gets wrong, re-teaches it, logs every
message to DuckDB, and trains the student on its own mistakes.

    from teachloop import RunConfig, run_lessons
    result = run_lessons(RunConfig.from_file("examples/arithmetic.toml"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from teachloop.config import RunConfig
from teachloop.errors import TeachloopError
from teachloop.messages import Answer, Critique, Message, Question, Reteach, parse_message

if TYPE_CHECKING:
    from teachloop.graphs.runner import arun_lessons, run_lessons
    from teachloop.graphs.summary import RunResult
    from teachloop.store.store import Store

_LAZY = {
    # Imported on first use: they pull in LangGraph, DuckDB and (for models) torch.
    "run_lessons": "teachloop.graphs.runner",
    "arun_lessons": "teachloop.graphs.runner",
    "RunResult": "teachloop.graphs.summary",
    "Store": "teachloop.store.store",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'teachloop' has no attribute {name!r}")


__all__ = [
    "Answer",
    "Critique",
    "Message",
    "Question",
    "Reteach",
    "RunConfig",
    "RunResult",
    "Store",
    "TeachloopError",
    "arun_lessons",
    "parse_message",
    "run_lessons",
]
