from pathlib import Path

import pytest

from teachloop.config import EMBEDDED_MODEL, RunConfig
from teachloop.errors import ConfigError

EXAMPLE = Path(__file__).parents[1] / "examples" / "arithmetic.toml"


def test_example_config_loads_with_paths_relative_to_the_file() -> None:
    config = RunConfig.from_file(EXAMPLE)
    assert config.lessons == 8
    assert config.student.model == EMBEDDED_MODEL
    assert config.db == EXAMPLE.parents[1] / "runs" / "arithmetic.duckdb"  # no ".." left
    assert "arithmetic.multiplication" in config.topics


def test_demo_config_is_what_make_demo_runs_and_trains_by_sft() -> None:
    # Plain DPO does not teach the embedded student (docs/experiments.md): the demo's round
    # trains by SFT, on the config the Makefile's demo target names.
    root = EXAMPLE.parents[1]
    config = RunConfig.from_file(root / "examples" / "demo.toml")
    assert config.training.method == "sft"
    assert config.db == root / "runs" / "demo.duckdb"
    demo_recipe = (root / "Makefile").read_text().split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "--config examples/demo.toml" in demo_recipe


@pytest.mark.parametrize("path", sorted(EXAMPLE.parent.glob("*.toml")), ids=lambda p: p.name)
def test_every_example_config_validates_and_names_known_topics(path: Path) -> None:
    from teachloop.domains import build_domains

    config = RunConfig.from_file(path)
    known = build_domains(config)  # raises on a topic no domain serves
    assert all(topic in known for topic in config.topics)
    assert config.db.is_relative_to(EXAMPLE.parents[1] / "runs")  # logs land in runs/


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lesons = 3\n", "lesons: unknown key (check the spelling)"),
        ("[student]\nbackend = 'openai'\n", "student: backend 'openai' needs at least one"),
        ("[student]\nbackend = 'gpu'\n", "student.backend: Input should be 'transformers'"),
        ("[student]\nbackend = 'vllm'\n", "no [[servers]] entry has 'student' in its roles"),
        (
            "[[servers]]\nroles = ['teacher']\nport = 8100\n",
            "servers.0 serves the teacher but [teacher].backend is 'transformers'",
        ),
        (
            "[teacher]\nbackend = 'vllm'\n[student]\nbackend = 'vllm'\nmodel = '/m'\n"
            "[[servers]]\nroles = ['teacher', 'student']\nport = 8100\n",
            "use different models",
        ),
        (
            "[teacher]\nbackend = 'vllm'\n[student]\nbackend = 'vllm'\n"
            "[[servers]]\nroles = ['teacher']\nport = 8100\nreplicas = 2\n"
            "[[servers]]\nroles = ['student']\nport = 8101\n",
            "servers.1: port 8101 is also used by servers.0",
        ),
        ("[[servers]]\nroles = []\nport = 8100\n", "servers.0.roles"),
        (
            "[student]\nbackend = 'vllm'\n[training]\nlora_r = 32\n"
            "[[servers]]\nroles = ['student']\nport = 8100\n",
            "servers.0.max_lora_rank (16) is below training.lora_r (32)",
        ),
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


def test_vllm_roles_get_one_endpoint_per_replica(tmp_path: Path) -> None:
    config = RunConfig.from_file(
        write(
            tmp_path,
            "[teacher]\nbackend = 'vllm'\n[student]\nbackend = 'vllm'\n"
            "[[servers]]\nroles = ['teacher', 'student']\nport = 8100\nreplicas = 2\n"
            "max_concurrency = 5\n"
            "[[servers]]\nroles = ['student']\nport = 8200\n",
        )
    )
    teacher = config.endpoints_for("teacher")
    student = config.endpoints_for("student")
    assert [e.url for e in teacher] == ["http://127.0.0.1:8100/v1", "http://127.0.0.1:8101/v1"]
    assert [e.url for e in student] == [e.url for e in teacher] + ["http://127.0.0.1:8200/v1"]
    assert {e.model for e in student} == {EMBEDDED_MODEL}
    assert [e.max_concurrency for e in student] == [5, 5, 32]
    assert config.servers[0].lora  # it serves the student: adapters are loaded at runtime


def test_cuda_builds_of_torchvision_beside_cpu_torch_are_named_with_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from teachloop import environment

    installed = {"torch": "2.13.0+cpu", "torchvision": "0.28.0", "torchaudio": None}
    monkeypatch.setattr(environment, "_version", installed.get)
    with pytest.raises(ConfigError, match=r"torchvision 0\.28\.0 from PyPI cannot load") as err:
        environment.check_torch_companions()
    assert "pip uninstall -y torchvision" in str(err.value)
    installed["torchvision"] = None
    environment.check_torch_companions()  # nothing beside torch: fine
    installed.update(torch="2.13.0", torchvision="0.28.0")
    environment.check_torch_companions()  # a CUDA torch with its own torchvision: fine


def test_only_commands_that_load_models_refuse_a_broken_torchvision(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from teachloop import cli, environment
    from teachloop.store.store import Store

    installed = {"torch": "2.13.0+cpu", "torchvision": "0.28.0"}
    monkeypatch.setattr(environment, "_version", installed.get)
    db = tmp_path / "log.duckdb"
    Store(db)
    assert cli.main(["sql", "--db", str(db), "SELECT 1 AS one"]) == 0  # the log stays readable
    assert cli.main(["train", "--db", str(db)]) == 2
    assert "pip uninstall -y torchvision" in capsys.readouterr().err


# -- endpoint API keys -------------------------------------------------------------------------

ENDPOINT = "[[student.endpoints]]\nurl = 'http://127.0.0.1:8000/v1'\nmodel = 'served'\n"


def openai_student(tmp_path: Path, extra: str = "") -> RunConfig:
    return RunConfig.from_file(
        write(tmp_path, f"[student]\nbackend = 'openai'\nmodel = '/weights'\n{ENDPOINT}{extra}")
    )


def test_api_key_env_names_the_variable_that_holds_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (endpoint,) = openai_student(tmp_path, "api_key_env = 'MY_VLLM_KEY'\n").student.endpoints
    monkeypatch.setenv("MY_VLLM_KEY", "sk-from-env-123")
    assert endpoint.resolved_api_key() == "sk-from-env-123"
    monkeypatch.delenv("MY_VLLM_KEY")
    with pytest.raises(ConfigError) as err:
        endpoint.resolved_api_key()
    message = str(err.value)
    assert "MY_VLLM_KEY" in message and "not set" in message and "\n" not in message


def test_without_a_key_setting_the_key_is_the_openai_clients_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (endpoint,) = openai_student(tmp_path).student.endpoints
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert endpoint.resolved_api_key() == "EMPTY"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-default")
    assert endpoint.resolved_api_key() == "sk-openai-default"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("api_key = 'k'\napi_key_env = 'K'\n", "give api_key or api_key_env, not both"),
        ("api_key_env = 'not a name'\n", "student.endpoints.0.api_key_env"),
    ],
)
def test_bad_key_settings_are_one_line_errors(tmp_path: Path, extra: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        openai_student(tmp_path, extra)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_a_key_in_clear_is_never_dumped_but_survives_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_VLLM_KEY", "sk-from-env-456")
    config = openai_student(tmp_path, "api_key = 'sk-in-clear-789'\n")
    for text in (config.model_dump_json(), repr(config), str(config.model_dump())):
        assert "sk-in-clear-789" not in text
    again = config.with_overrides(lessons=2)
    assert again.student.endpoints[0].resolved_api_key() == "sk-in-clear-789"
    from_env = openai_student(tmp_path, "api_key_env = 'MY_VLLM_KEY'\n")
    assert "sk-from-env-456" not in from_env.model_dump_json()


# -- the weights a student on openai endpoints trains ------------------------------------------


def test_an_openai_student_must_name_its_weights(tmp_path: Path) -> None:
    path = write(tmp_path, f"[student]\nbackend = 'openai'\n{ENDPOINT}")
    with pytest.raises(ConfigError) as err:
        RunConfig.from_file(path)
    message = str(err.value)
    assert f"{path}: student: with backend 'openai', set model to the weights" in message
    assert "\n" not in message
    # given (even the default's value), it is taken as said; the teacher trains nothing
    assert openai_student(tmp_path).student.model == "/weights"
    explicit = RunConfig.from_file(
        write(tmp_path, f"[student]\nbackend = 'openai'\nmodel = '{EMBEDDED_MODEL}'\n{ENDPOINT}")
    )
    assert explicit.student.model == EMBEDDED_MODEL
    teacher = ENDPOINT.replace("student", "teacher")
    assert RunConfig.from_file(write(tmp_path, f"[teacher]\nbackend = 'openai'\n{teacher}"))
    assert explicit.with_overrides(lessons=2).student.model == EMBEDDED_MODEL


def test_an_openai_student_built_in_code_must_name_its_weights_too() -> None:
    from teachloop.config import AgentConfig, EndpointConfig

    endpoints = (EndpointConfig(url="http://127.0.0.1:8000/v1", model="served"),)
    unnamed = AgentConfig(backend="openai", endpoints=endpoints)  # no role yet: fine
    with pytest.raises(ValueError, match="set model to the weights the endpoint serves"):
        RunConfig(student=unnamed)
    assert RunConfig(teacher=unnamed).teacher == unnamed
    named = AgentConfig(backend="openai", endpoints=endpoints, model="/weights")
    assert RunConfig(student=named).student.model == "/weights"


def test_experiment_arms_are_checked_when_the_config_is_read() -> None:
    config = RunConfig.validated(
        {
            "experiment": {
                "arms": [
                    "base",
                    {
                        "name": "fast_dpo",
                        "data": "selective",
                        "method": "dpo",
                        "training": {"learning_rate": 1e-3},
                        "lesson": {"topic_policy": "uniform"},
                    },
                ]
            }
        }
    )
    assert [a.name for a in config.experiment.arm_configs()] == ["base", "fast_dpo"]
    bad = {
        "no_such_arm": ["bse"],
        "unknown key": [{"name": "x", "data": "selective", "method": "sft", "training": {"lr": 1}}],
        "needs preference pairs": [{"name": "x", "data": "uniform", "method": "dpo"}],
        "same name": ["base", {"name": "base", "data": "uniform", "method": "sft"}],
    }
    for expected, arms in bad.items():
        with pytest.raises(ConfigError, match=expected.replace("no_such_arm", "unknown arm")):
            RunConfig.validated({"experiment": {"arms": arms}})


def test_a_budget_curve_covers_the_arms_curve_names() -> None:
    from teachloop.training.experiment import arm_runs

    arms = ["base", "random", "failed_only", "oracle"]
    every = RunConfig.validated({"experiment": {"arms": arms, "budgets": [8, 16]}})
    assert [r.name for r in arm_runs(every)][4:] == [
        "random@8",
        "failed_only@8",
        "oracle@8",
        "random@16",
        "failed_only@16",
        "oracle@16",
    ]
    some = RunConfig.validated(
        {"experiment": {"arms": arms, "budgets": [16], "curve": ["failed_only", "random"]}}
    )
    assert [r.name for r in arm_runs(some)] == [*arms, "random@16", "failed_only@16"]
    assert [r.budget for r in arm_runs(some)][-2:] == [16, 16]
    for curve, expected in ((["base"], "not a trained arm"), (["kd"], "not a trained arm")):
        with pytest.raises(ConfigError, match=expected):
            RunConfig.validated({"experiment": {"arms": arms, "budgets": [16], "curve": curve}})
    with pytest.raises(ConfigError, match="primary names 'oracle@16'"):
        RunConfig.validated(
            {
                "experiment": {
                    "arms": arms,
                    "budgets": [16],
                    "curve": ["random"],
                    "primary": ["oracle@16", "random"],
                }
            }
        )
