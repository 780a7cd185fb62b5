from pathlib import Path

import pytest

from teachloop.config import EMBEDDED_MODEL, RunConfig
from teachloop.errors import ConfigError

EXAMPLE = Path(__file__).parents[1] / "examples" / "arithmetic.toml"


def test_example_config_loads_with_paths_relative_to_the_file() -> None:
    config = RunConfig.from_file(EXAMPLE)
    assert config.lessons == 8
    assert config.student.model == EMBEDDED_MODEL
    assert config.db == EXAMPLE.parent / "../runs/arithmetic.duckdb"
    assert "arithmetic.multiplication" in config.topics


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lesons = 3\n", "lesons: unknown key (check the spelling)"),
        ("[student]\nbackend = 'openai'\n", "student: backend 'openai' needs at least one"),
        ("[student]\nbackend = 'vllm'\n", "student.backend: Input should be 'transformers'"),
        ("lessons = 0\n", "lessons: Input should be greater than or equal to 1"),
        ("[lesson]\nmastery_target = 2\n", "lesson.mastery_target"),
        ("lessons = [\n", "is not valid TOML"),
        (
            "[[student.endpoints]]\nurl = '127.0.0.1:8000'\nmodel = 'm'\n",
            "student.endpoints",
        ),
    ],
)
def test_bad_config_gives_one_line_naming_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        RunConfig.from_file(write(tmp_path, text))
    message = str(err.value)
    assert expected in message
    assert "\n" not in message
    assert str(tmp_path / "c.toml") in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        RunConfig.from_file(tmp_path / "nope.toml")


def test_overrides_are_validated() -> None:
    config = RunConfig().with_overrides(lessons=3, concurrency=None)
    assert (config.lessons, config.concurrency) == (3, 8)
    with pytest.raises(ConfigError, match="lessons"):
        RunConfig().with_overrides(lessons=-1)
