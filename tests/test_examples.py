"""Every examples/*.py runs, as a user runs it (a child process from a clean directory), on the
tiny random model instead of the embedded one, so the README's Python examples cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_model import build_tiny_model

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))

# What each example prints when it worked (its last line's start).
LAST_LINE = {
    "function_student.py": "arithmetic.",
    "lesson_subgraph.py": "logged to ",
    "own_domain.py": "held-out accuracy of the base student: ",
    "stream.py": "logged ",
    "stream_to_pandas.py": "",
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-examples"))


def test_every_example_is_checked() -> None:
    assert {p.name for p in EXAMPLES} == set(LAST_LINE)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(example: Path, tiny_dir: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TEACHLOOP_EXAMPLE_MODEL": str(tiny_dir),
        "TEACHLOOP_EXAMPLE_DIR": str(tmp_path / "out"),
    }
    done = subprocess.run(
        [sys.executable, str(example)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    assert lines[-1].lstrip().startswith(LAST_LINE[example.name]), done.stdout
