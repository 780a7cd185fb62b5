"""Every examples/*.py runs, as a user runs it (a child process from a clean directory), on the
tiny random model instead of the embedded one, so the README's Python examples cannot rot."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_model import build_tiny_model

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))

# What each example prints last when it worked (a regular expression for the whole line).
LAST_LINE = {
    "function_student.py": r"arithmetic\.\S+ +asked +[1-9]\d*  right \d+%",
    "lesson_subgraph.py": r"logged to (\S+): try `teachloop replay --db \1 course-L0`",
    "own_domain.py": r"held-out accuracy of the base student: \d+/[1-9]\d*",
    "stream.py": r"logged [1-9]\d* questions to \S+ \(run \S+\)",
    # every streamed message is in the log: the two counts are the same number
    "stream_to_pandas.py": r"([1-9]\d*) streamed, \1 in \S+\.duckdb",
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
    assert re.fullmatch(LAST_LINE[example.name], lines[-1].strip()), done.stdout
