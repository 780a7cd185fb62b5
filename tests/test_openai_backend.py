"""The OpenAI-compatible backend against local fake servers on 127.0.0.1."""

import asyncio
import socket

import pytest
from fake_openai import FakeOpenAIServer

from teachloop.agents.backends.base import GenerationRequest
from teachloop.agents.backends.openai_backend import OpenAIBackend
from teachloop.config import EndpointConfig
from teachloop.errors import BackendUnavailable


def endpoint(server: FakeOpenAIServer | str, **kw) -> EndpointConfig:
    url = server if isinstance(server, str) else server.url
    return EndpointConfig(url=url, model="fake-model", timeout_s=5, max_retries=1, **kw)


def free_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


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
