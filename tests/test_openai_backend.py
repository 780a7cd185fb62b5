"""The OpenAI-compatible backend against local fake servers on 127.0.0.1."""

import asyncio

import pytest
from fake_openai import FakeOpenAIServer, free_port_url

from teachloop.agents.backends.base import GenerationRequest, LoraAdapter
from teachloop.agents.backends.openai_backend import OpenAIBackend
from teachloop.config import EndpointConfig
from teachloop.errors import BackendUnavailable


def endpoint(server: FakeOpenAIServer | str, **kw) -> EndpointConfig:
    url = server if isinstance(server, str) else server.url
    return EndpointConfig(url=url, model="fake-model", timeout_s=5, max_retries=1, **kw)


def echo(body: dict) -> str:
    return f" {body.get('prompt', 'chat')[-3:]}"


async def test_completion_carries_text_usage_and_endpoint() -> None:
    with FakeOpenAIServer(echo) as server:
        backend = OpenAIBackend([endpoint(server)])
        await backend.check()
        out = await backend.complete(GenerationRequest(prompt="2+2=", max_tokens=5, stop=("\n",)))
        await backend.aclose()
    assert out.text == " +2="
    assert out.generation.endpoint == server.url
    assert out.generation.model == "fake-model"
    assert (out.generation.prompt_tokens, out.generation.completion_tokens) == (7, 1)
    sent = server.requests[0]
    assert (sent["max_tokens"], sent["stop"], sent["temperature"]) == (5, ["\n"], 0.0)


async def test_requests_spread_over_endpoints_within_concurrency_limits() -> None:
    with FakeOpenAIServer(echo) as a, FakeOpenAIServer(echo) as b:
        a.delay_s = b.delay_s = 0.05
        backend = OpenAIBackend([endpoint(a, max_concurrency=3), endpoint(b, max_concurrency=3)])
        await asyncio.gather(
            *(backend.complete(GenerationRequest(prompt=f"p{i}")) for i in range(24))
        )
        await backend.aclose()
    assert len(a.requests) + len(b.requests) == 24
    assert abs(len(a.requests) - len(b.requests)) <= 4
    assert a.max_in_flight <= 3 and b.max_in_flight <= 3


async def test_server_errors_are_retried() -> None:
    with FakeOpenAIServer(echo) as server:
        server.fail_next = 1
        backend = OpenAIBackend([endpoint(server)])
        out = await backend.complete(GenerationRequest(prompt="abc"))
        await backend.aclose()
    assert out.text == " abc"
    assert len(server.requests) == 2


async def test_a_dead_endpoint_is_benched_and_the_live_one_serves() -> None:
    with FakeOpenAIServer(echo) as live:
        backend = OpenAIBackend([endpoint(free_port_url()), endpoint(live)])
        outs = await asyncio.gather(
            *(backend.complete(GenerationRequest(prompt=f"x{i}")) for i in range(6))
        )
        await backend.aclose()
    assert [o.generation.endpoint for o in outs] == [live.url] * 6


async def test_unreachable_endpoint_gives_one_line_error() -> None:
    url = free_port_url()
    backend = OpenAIBackend([endpoint(url)], role="student")
    with pytest.raises(BackendUnavailable) as err:
        await backend.check()
    message = str(err.value)
    assert f"cannot reach student endpoint {url}" in message
    assert "[student].endpoints" in message and "\n" not in message
    with pytest.raises(BackendUnavailable, match="failed after retries"):
        await backend.complete(GenerationRequest(prompt="x"))
    await backend.aclose()


async def test_wrong_model_name_is_reported() -> None:
    with FakeOpenAIServer(echo, model="other") as server:
        backend = OpenAIBackend([endpoint(server)], role="teacher")
        with pytest.raises(BackendUnavailable, match=r"does not serve model .fake-model.*other"):
            await backend.check()
        await backend.aclose()


async def test_structured_output_is_requested_on_both_apis() -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    with FakeOpenAIServer(lambda body: '{"ok": true}') as server:
        for api in ("completions", "chat"):
            backend = OpenAIBackend([endpoint(server)], api=api)
            out = await backend.complete(GenerationRequest(prompt="judge", json_schema=schema))
            assert out.text == '{"ok": true}'
            await backend.aclose()
    completions, chat = server.requests
    assert completions["structured_outputs"] == {"json": schema}
    assert chat["response_format"]["json_schema"]["schema"] == schema
    assert chat["messages"] == [{"role": "user", "content": "judge"}]


async def test_teacher_judges_free_text_with_the_servers_structured_output(tmp_path) -> None:
    """The teacher's verdict on an answer no verifier can check asks the server for the
    Judgement schema, and the reply becomes the critique's verdict and feedback."""
    from teachloop.agents.teacher import JUDGEMENT_SCHEMA, Teacher
    from teachloop.domains import DomainSet, Problem, builtin_domains, load_bank
    from teachloop.messages import Answer

    bank = tmp_path / "bio.jsonl"
    bank.write_text(
        '{"topic": "bio.why", "question": "Why do leaves fall in autumn?",'
        ' "answer": "trees shed them to save water and energy in winter"}\n'
    )
    domains = DomainSet([*builtin_domains().values(), load_bank(bank)])
    reply = '{"correct": true, "feedback": "Yes: to save water."}'
    with FakeOpenAIServer(lambda body: reply) as server:
        teacher = Teacher(OpenAIBackend([endpoint(server)], role="teacher"), domains)
        problem: Problem = domains.domain_for("bio.why").problems[0]
        question = teacher.ask(problem, run_id="r", lesson_id="L", turn=0, index=0)
        answer = Answer(
            message_id="L-m001", run_id="r", lesson_id="L", turn=1, text="to keep water",
            question_id=question.message_id, attempt=0, final_answer="to keep water",
        )  # fmt: skip
        critique = await teacher.critique(problem, question, answer, turn=2)
        await teacher.backend.aclose()
    (sent,) = server.requests
    assert sent["structured_outputs"] == {"json": JUDGEMENT_SCHEMA}
    assert "stop" not in sent or sent["stop"] is None  # JSON may span lines
    assert (critique.correct, critique.feedback, critique.parse_error) == (
        True,
        "Yes: to save water.",
        None,
    )
    assert critique.generation is not None and critique.generation.endpoint == server.url


async def test_least_outstanding_requests_favours_the_faster_endpoint() -> None:
    with FakeOpenAIServer(echo) as fast, FakeOpenAIServer(echo) as slow:
        fast.delay_s, slow.delay_s = 0.01, 0.2
        backend = OpenAIBackend([endpoint(slow), endpoint(fast)])

        async def client() -> None:  # a steady stream: each sends its next when one returns
            for _ in range(10):
                await backend.complete(GenerationRequest(prompt="p"))

        await asyncio.gather(*(client() for _ in range(4)))
        await backend.aclose()
    # the slow one's requests stay outstanding longer, so it is picked less often
    assert len(fast.requests) > 2 * len(slow.requests) > 0


async def test_adapter_is_loaded_into_every_endpoint_and_named_in_requests(tmp_path) -> None:
    adapter = LoraAdapter(name="v0003", path=tmp_path / "v0003")
    with FakeOpenAIServer(echo) as a, FakeOpenAIServer(echo) as b:
        backend = OpenAIBackend([endpoint(a), endpoint(b)], role="student", adapter=adapter)
        await backend.check()
        assert a.adapters == b.adapters == {"v0003": str(tmp_path / "v0003")}
        outs = await asyncio.gather(
            *(backend.complete(GenerationRequest(prompt=f"p{i}")) for i in range(8))
        )
        await backend.check()  # already loaded: not loaded twice
        await backend.aclose()
    assert {r["model"] for r in a.requests + b.requests} == {"v0003"}
    assert {o.generation.model for o in outs} == {"v0003"}
    assert {o.generation.endpoint for o in outs} == {a.url, b.url}
    assert backend.name == "v0003"


async def test_a_server_without_runtime_lora_gives_a_clear_error(tmp_path) -> None:
    adapter = LoraAdapter(name="v0001", path=tmp_path)
    with FakeOpenAIServer(echo) as server:
        server.refuse_adapters = True
        backend = OpenAIBackend([endpoint(server)], role="student", adapter=adapter)
        with pytest.raises(BackendUnavailable) as err:
            await backend.check()
        await backend.aclose()
    message = str(err.value)
    assert "could not load adapter 'v0001'" in message and "HTTP 404" in message
    assert "\n" not in message


async def test_an_endpoint_that_goes_down_is_taken_out_and_put_back_with_its_adapter(
    tmp_path,
) -> None:
    """A replica restarts: the health check takes it out while it is down (no request goes
    there), and when it answers again reloads the adapter the restart lost and uses it again."""
    adapter = LoraAdapter(name="v0002", path=tmp_path)
    steady = FakeOpenAIServer(echo)
    flaky = FakeOpenAIServer(echo)
    with steady:
        flaky.__enter__()
        backend = OpenAIBackend(
            [endpoint(flaky), endpoint(steady)],
            role="student",
            adapter=adapter,
            health_interval_s=0.1,
        )
        await backend.check()
        port = flaky.port
        flaky.stop()
        await asyncio.sleep(0.4)  # a few health checks
        assert [up for _, up, _ in backend.endpoint_status()] == [False, True]
        before = len(steady.requests)
        await asyncio.gather(*(backend.complete(GenerationRequest(prompt="p")) for _ in range(6)))
        assert len(steady.requests) - before == 6  # none went to the dead one first

        with FakeOpenAIServer(echo, port=port) as restarted:
            assert restarted.adapters == {}
            await asyncio.sleep(0.4)
            assert restarted.adapters == {"v0002": str(tmp_path)}
            assert [up for _, up, _ in backend.endpoint_status()] == [True, True]
            await asyncio.gather(
                *(backend.complete(GenerationRequest(prompt="p")) for _ in range(12))
            )
            await backend.aclose()
        assert len(restarted.requests) >= 3
        assert {r["model"] for r in restarted.requests} == {"v0002"}


# -- API keys from the environment -------------------------------------------------------------

KEY = "sk-test-0f1e2d3c4b5a"


async def test_a_key_from_the_environment_is_sent_but_never_logged_or_stored(
    make_config, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One lesson through endpoints whose keys come from the environment (the student's) and
    from the config in clear (the teacher's): both reach the server; neither is in the debug
    log nor in the run's stored config."""
    import logging

    from conftest import adds_only_student, current_question

    from teachloop import Store
    from teachloop.graphs.runner import arun_lessons

    def reply(body: dict) -> str:
        if body["prompt"].startswith("Each question"):
            return adds_only_student(GenerationRequest(prompt=body["prompt"]))
        return f" Think about {current_question(body['prompt'])}."

    monkeypatch.setenv("TEACHLOOP_TEST_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer(reply) as server:
        url = server.url
        config = make_config(
            lessons=1,
            lesson={"questions": 1},
            teacher={
                "backend": "openai",
                "endpoints": [{"url": url, "model": "fake-model", "api_key": "sk-clear-42"}],
            },
            student={
                "backend": "openai",
                "model": "/weights/my-student",
                "endpoints": [
                    {"url": url, "model": "fake-model", "api_key_env": "TEACHLOOP_TEST_KEY"}
                ],
            },
        )
        result = await arun_lessons(config, progress=False)
    assert result.lessons == 1 and result.lessons_failed == 0
    assert {f"Bearer {KEY}", "Bearer sk-clear-42"} == set(server.authorization)
    (stored,) = Store(config.db).query("SELECT config FROM runs").column("config").to_pylist()
    assert '"api_key_env":"TEACHLOOP_TEST_KEY"' in stored.replace(" ", "")
    for secret in (KEY, "sk-clear-42"):
        assert secret not in stored
        assert secret not in caplog.text
    assert "HTTP Request: POST" in caplog.text  # the debug log was on


async def test_an_unset_key_variable_stops_the_backend_from_starting(
    make_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    from teachloop.agents.backends import build_backend
    from teachloop.errors import ConfigError

    monkeypatch.delenv("TEACHLOOP_UNSET_KEY", raising=False)
    endpoints = [{"url": free_port_url(), "model": "m", "api_key_env": "TEACHLOOP_UNSET_KEY"}]
    config = make_config(teacher={"backend": "openai", "endpoints": endpoints})
    with pytest.raises(ConfigError) as err:
        build_backend(config, "teacher")
    assert "TEACHLOOP_UNSET_KEY" in str(err.value) and "\n" not in str(err.value)


# -- the student's weights against what the server loaded ----------------------------------------


@pytest.mark.parametrize(
    ("root", "ok"),
    [
        (None, True),  # not reported (a server other than vLLM): nothing to compare
        ("{weights}", True),  # a server on this machine, the same directory
        ("{weights}/", True),
        ("{other}", False),  # a server on this machine, another directory
        ("/srv/models/my-student", True),  # a server elsewhere: the same name
        ("google/my-student", True),  # a hub name
        ("/srv/models/gemma-3-270m", False),
    ],
)
async def test_the_served_weights_must_be_the_students(tmp_path, root: str | None, ok) -> None:
    from teachloop.errors import ConfigError

    weights, other = tmp_path / "my-student", tmp_path / "other"
    weights.mkdir()
    other.mkdir()
    with FakeOpenAIServer(echo) as server:
        server.root = root.format(weights=weights, other=other) if root else None
        backend = OpenAIBackend([endpoint(server)], role="student", weights=weights)
        try:
            if ok:
                await backend.check()
            else:
                with pytest.raises(ConfigError) as err:
                    await backend.check()
                message = str(err.value)
                assert f"serves 'fake-model' from {server.root}" in message
                assert f"[student].model is {weights}" in message and "\n" not in message
        finally:
            await backend.aclose()


async def test_a_student_endpoint_serving_other_weights_stops_the_lessons(
    make_config, tmp_path
) -> None:
    from teachloop.agents.backends import build_backend
    from teachloop.errors import ConfigError
    from teachloop.graphs.runner import arun_lessons

    weights = tmp_path / "my-student"
    weights.mkdir()
    with FakeOpenAIServer(echo) as server:
        server.root = "/srv/models/llama-3-8b"
        role = {"backend": "openai", "endpoints": [{"url": server.url, "model": "fake-model"}]}
        config = make_config(
            teacher=role, student={**role, "model": str(weights), "follow_promoted": False}
        )
        student, teacher = build_backend(config, "student"), build_backend(config, "teacher")
        assert isinstance(student, OpenAIBackend) and isinstance(teacher, OpenAIBackend)
        assert (student.weights, teacher.weights) == (weights, None)
        await student.aclose()
        await teacher.aclose()
        with pytest.raises(ConfigError, match="serves 'fake-model' from /srv/models/llama-3-8b"):
            await arun_lessons(config, progress=False)
        assert server.requests == []  # refused before the first lesson
