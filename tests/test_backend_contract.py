"""The backend contract (the ``Backend`` docstring in agents/backends/base.py), item by item, on
every backend: the scripted one, a ``FunctionBackend`` on an async function,
``TransformersBackend`` on the tiny random model and ``OpenAIBackend`` (both APIs) against the
fake server.

In the style of LangGraph's checkpointer conformance tests: one parametrized fixture builds each
backend, each test is one item of the contract, and a backend's exemption from an item (stated in
the contract) is tested as the behaviour the contract states instead, never skipped.

Behind the scripted backend and the fake server sits the same deterministic stand-in for a model
(``model_text``): like a model it honours max_tokens but not stop strings (the backend must cut),
and the fake server writes JSON only where the request asks for structured output.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
from fake_openai import FakeOpenAIServer, free_port
from tiny_model import build_tiny_model

from teachloop.agents.backends.base import Backend, Completion, GenerationRequest
from teachloop.agents.backends.function import FunctionBackend
from teachloop.agents.backends.openai_backend import OpenAIBackend
from teachloop.agents.backends.scripted import ScriptedBackend
from teachloop.agents.backends.transformers_backend import TransformersBackend
from teachloop.agents.prompts import student_prompt
from teachloop.config import EndpointConfig
from teachloop.errors import BackendUnavailable

pytestmark = pytest.mark.timeout(60)

KINDS = ["scripted", "function", "transformers", "openai-completions", "openai-chat"]
PROMPT = "Question: What is 2 + 3?\nAnswer:"
PROMPTS = [
    PROMPT,
    "Hi",
    student_prompt("What is 12 + 30?"),
    "Question: What is the sum of 12 and 99, and then times 7 minus 4?\nAnswer:",
    "Answer: 42",
    "What is",
]
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "integer"}, "why": {"type": "string"}},
    "required": ["answer", "why"],
}
NEVER = "\x00never"  # a stop string no reply contains


def model_text(prompt: str, max_tokens: int) -> str:
    """The stand-in model: depends on the prompt, at most ``max_tokens`` words, several lines."""
    n = sum(map(ord, prompt)) % 1000
    text = f" {n} apples\nQuestion: and {len(prompt)} pears?\nAnswer: {n + 1} fruits"
    words = re.findall(r"\s\S+", text)  # a "token": a word and the space or newline before it
    return "".join(words[:max_tokens])


def fake_reply(body: dict) -> str:
    prompt = body["prompt"] if "prompt" in body else body["messages"][-1]["content"]
    if "structured_outputs" in body or "response_format" in body:  # constrained decoding
        return json.dumps({"answer": len(prompt), "why": "counted"})
    return model_text(prompt, body["max_tokens"])


@dataclass
class Case:
    kind: str
    backend: Backend
    model: str  # what Generation.model says
    endpoint: str  # what Generation.endpoint says
    server: FakeOpenAIServer | None = None
    requests: list[GenerationRequest] | None = None  # what a function backend was given
    delay_s: list[float] | None = None  # how long a function backend's function takes

    async def complete(self, prompt: str = PROMPT, **kw: object) -> Completion:
        request = GenerationRequest(prompt=prompt, **kw)  # type: ignore[arg-type]
        return await asyncio.wait_for(self.backend.complete(request), 30)


def endpoint(url: str, retries: int = 1) -> EndpointConfig:
    return EndpointConfig(url=url, model="fake-model", timeout_s=5, max_retries=retries)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-contract"))


@pytest.fixture(params=KINDS)
async def case(request: pytest.FixtureRequest, tiny_dir: Path) -> AsyncIterator[Case]:
    kind: str = request.param
    if kind == "scripted":
        respond = ScriptedBackend(
            lambda r: model_text(r.prompt, r.max_tokens), name="scripted-model"
        )
        made = Case(kind, respond, model="scripted-model", endpoint="scripted")
    elif kind == "function":
        seen: list[GenerationRequest] = []
        delay = [0.0]

        async def model(r: GenerationRequest) -> str:
            seen.append(r)
            await asyncio.sleep(delay[0])
            return model_text(r.prompt, r.max_tokens)

        made = Case(kind, FunctionBackend(model), model="model", endpoint="function")
        made.requests, made.delay_s = seen, delay
    elif kind == "transformers":
        # float32: a request's greedy output is then the same in any batch (see the contract).
        tiny = TransformersBackend(tiny_dir, dtype="float32", batch_window_s=0.02, name="tiny")
        made = Case(kind, tiny, model="tiny", endpoint="in-process")
    else:
        server = FakeOpenAIServer(fake_reply).__enter__()
        api = kind.removeprefix("openai-")
        client = OpenAIBackend([endpoint(server.url)], api=api)
        made = Case(kind, client, model="fake-model", endpoint=server.url, server=server)
    try:
        yield made
    finally:
        await made.backend.aclose()
        if made.server is not None:
            made.server.stop()


def _first_occurrences(text: str) -> list[tuple[str, int]]:
    """Two-character substrings of ``text`` at the index of their first occurrence (past the
    start), in order."""
    found = []
    for i in range(1, len(text) - 1):
        stop = text[i : i + 2]
        if text.find(stop) == i and stop.strip():
            found.append((stop, i))
    return found


# -- stop strings ----------------------------------------------------------------------------


async def test_text_ends_before_the_first_stop_string(case: Case) -> None:
    full = (await case.complete(max_tokens=24)).text
    stops = _first_occurrences(full)
    assert len(stops) >= 2, f"reply too short to place stop strings in: {full!r}"
    (early, i), (late, j) = stops[0], stops[-1]
    assert (await case.complete(max_tokens=24, stop=(early,))).text == full[:i]
    assert (await case.complete(max_tokens=24, stop=(late,))).text == full[:j]
    # the earliest in the text wins, whatever the order of the stop strings
    assert (await case.complete(max_tokens=24, stop=(NEVER, late, early))).text == full[:i]
    assert (await case.complete(max_tokens=24, stop=(NEVER,))).text == full


# -- usage accounting ------------------------------------------------------------------------


async def test_generation_says_what_the_reply_cost(case: Case) -> None:
    for max_tokens in (1, 8):
        g = (await case.complete(max_tokens=max_tokens)).generation
        assert (g.model, g.endpoint) == (case.model, case.endpoint)
        assert g.prompt_tokens >= 1
        assert 1 <= g.completion_tokens <= max_tokens
        if case.kind == "scripted":
            assert g.latency_s == 0.0  # exemption: scripted runs are reproducible to the byte
        else:
            assert g.latency_s > 0


# -- json_schema -----------------------------------------------------------------------------


async def test_json_schema_is_followed_or_validated_and_retried(case: Case) -> None:
    reply = await case.complete(max_tokens=12, json_schema=SCHEMA)
    if case.server is not None:  # constrained decoding: the server was asked for the schema
        value = json.loads(reply.text)
        assert isinstance(value["answer"], int) and isinstance(value["why"], str)
    elif case.kind == "transformers":
        # The tiny random model writes no JSON, so every attempt fails validation: the last
        # raw reply comes back, costing all attempts (the first of which is the greedy reply).
        plain = await case.complete(max_tokens=12)
        assert reply.generation.completion_tokens > plain.generation.completion_tokens
    else:  # exemption: the script or function gets the schema and decides
        requests = case.requests if case.requests is not None else case.backend.requests  # type: ignore[attr-defined]
        assert requests[-1].json_schema == SCHEMA


# -- temperature 0 and concurrency -----------------------------------------------------------


async def test_temperature_zero_repeats_itself(case: Case) -> None:
    first = await case.complete(max_tokens=12)
    second = await case.complete(max_tokens=12)
    assert first.text == second.text


async def test_concurrent_calls_each_get_their_own_reply(case: Case) -> None:
    """Greedy requests that differ in prompt, max_tokens and stop strings, each sent twice,
    all at once: every reply is the one the request gets alone."""
    requests = [
        GenerationRequest(prompt=p, max_tokens=4 + 5 * k, stop=("\n",) if k else ())
        for p in PROMPTS[:4]
        for k in (0, 1)
    ]
    alone = [(await asyncio.wait_for(case.backend.complete(r), 30)).text for r in requests]
    together = await asyncio.wait_for(
        asyncio.gather(*(case.backend.complete(r) for r in requests * 2)), 30
    )
    assert [c.text for c in together] == alone * 2
    assert len(set(alone)) > 2, "replies should depend on the request"


# -- errors ----------------------------------------------------------------------------------


def _one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(err.value)
    assert message and "\n" not in message
    return message


async def test_a_backend_that_cannot_serve_raises_backend_unavailable(
    case: Case, tmp_path: Path
) -> None:
    if case.kind in ("scripted", "function"):
        # exemption: the script's or function's errors propagate as they are; a function that
        # returns something other than text is a malformed reply
        await case.backend.check()

        def broken(request: GenerationRequest) -> str:
            raise KeyError("the script's own error")

        kind = ScriptedBackend if case.kind == "scripted" else FunctionBackend
        with pytest.raises(KeyError, match="the script's own error"):
            await kind(broken).complete(GenerationRequest(prompt="x"))
        if case.kind == "function":
            with pytest.raises(BackendUnavailable) as err:
                await FunctionBackend(lambda r: None).complete(GenerationRequest(prompt="x"))  # type: ignore[arg-type, return-value]
            assert "return the reply text" in _one_line(err)
        return
    if case.kind == "transformers":
        down: Backend = TransformersBackend(tmp_path / "no-model")
    else:
        down = OpenAIBackend(
            [endpoint(f"http://127.0.0.1:{free_port()}/v1", retries=0)],
            api=case.kind.removeprefix("openai-"),
        )
    try:
        with pytest.raises(BackendUnavailable) as err:
            await down.check()
        _one_line(err)
        with pytest.raises(BackendUnavailable) as err:
            await asyncio.wait_for(down.complete(GenerationRequest(prompt="x")), 30)
        _one_line(err)
    finally:
        await down.aclose()


# Only backends that talk to a server get replies that can be malformed or refused.
@pytest.mark.parametrize("case", ["openai-completions", "openai-chat"], indirect=True)
async def test_a_malformed_or_refused_reply(case: Case) -> None:
    assert case.server is not None
    backend = OpenAIBackend([endpoint(case.server.url, retries=0)])
    try:
        case.server.faults = ["html"]
        with pytest.raises(BackendUnavailable) as err:
            await backend.complete(GenerationRequest(prompt="x"))
        assert "MalformedResponse" in _one_line(err)
        # refused as such (4xx): the client's error, not retried, the endpoint not benched
        case.server.faults = ["400"]
        with pytest.raises(openai.BadRequestError):
            await backend.complete(GenerationRequest(prompt="x"))
        assert (await backend.complete(GenerationRequest(prompt="x", max_tokens=1))).text
    finally:
        await backend.aclose()


# -- check() and aclose() --------------------------------------------------------------------


async def test_check_does_its_work_up_front_and_may_be_repeated(case: Case) -> None:
    """check() finds out whether the backend can serve before the first request: what it
    looks at is observable, and a backend that stops being able to serve fails it."""
    if case.kind == "transformers":
        assert case.backend._model is None  # type: ignore[attr-defined]
    if case.server is not None:
        asked_before = len(case.server.authorization)
    await case.backend.check()
    await case.backend.check()
    if case.kind == "scripted":  # a function: check() has nothing to load and calls nothing
        assert case.backend.requests == []  # type: ignore[attr-defined]
    elif case.kind == "function":
        assert case.requests == []  # the function may cost (a remote model): not called
    elif case.kind == "transformers":  # the model loads in check(), not on the first request
        assert case.backend._model is not None  # type: ignore[attr-defined]
    else:  # each check asked the server what it serves (GET /models), and sent no request
        assert case.server is not None
        assert len(case.server.authorization) >= asked_before + 2
        assert case.server.requests == []
        case.server.model = "other-model"  # the server now serves something else
        with pytest.raises(BackendUnavailable) as err:
            await case.backend.check()
        assert "does not serve model 'fake-model'" in _one_line(err)
        case.server.model = "fake-model"
    assert (await case.complete(max_tokens=2)).text


async def test_aclose_may_be_repeated_and_later_calls_fail(case: Case) -> None:
    await case.complete(max_tokens=2)
    await case.backend.aclose()
    await case.backend.aclose()
    if case.kind == "scripted":  # exemption: holds nothing, keeps answering
        await case.backend.check()
        assert (await case.complete(max_tokens=2)).text
        return
    with pytest.raises(BackendUnavailable) as err:
        await case.complete(max_tokens=2)
    assert "closed" in _one_line(err)
    with pytest.raises(BackendUnavailable) as err:  # check() says so too
        await case.backend.check()
    assert "closed" in _one_line(err)


async def test_aclose_fails_calls_in_flight_rather_than_leaving_them_waiting(case: Case) -> None:
    if isinstance(case.backend, ScriptedBackend):
        case.backend.delay_s = 0.5
    if case.delay_s is not None:
        case.delay_s[0] = 0.5
    if case.server is not None:
        case.server.delay_s = 1.0  # the requests reach the server, which answers late
    calls = [asyncio.create_task(case.backend.complete(GenerationRequest(prompt=p)))
             for p in PROMPTS]  # fmt: skip
    # the in-process backend has queued them (and is loading the model) by then
    await asyncio.sleep(0.01 if case.kind == "transformers" else 0.2)
    await case.backend.aclose()
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
    if case.kind == "scripted":  # exemption: holds nothing, so closing stops nothing
        assert all(isinstance(r, Completion) for r in results), results
        return
    # each either finished before the close or was failed by it; none hangs or gets another error
    assert all(isinstance(r, Completion | BackendUnavailable) for r in results), results
    assert any(isinstance(r, BackendUnavailable) for r in results), "none was in flight"
