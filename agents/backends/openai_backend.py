"""OpenAI-compatible endpoints (vLLM's server, or any other) through the `openai` async client.

Several endpoints may serve one role: each request goes to the healthy endpoint with the fewest
requests in flight, within that endpoint's concurrency limit. The client retries 429/5xx,
timeouts and connection errors with exponential backoff (honouring Retry-After); a 200 reply that
is not a completion is retried here the same way. An endpoint that still fails is benched for a
cool-down and the request moves on to the next one.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import openai
from openai import AsyncOpenAI

from teachloop.agents.backends.base import Backend, Completion, GenerationRequest
from teachloop.config import EndpointConfig
from teachloop.errors import BackendUnavailable
from teachloop.messages import Generation

_COOLDOWN_S = 10.0


class MalformedResponse(Exception):
    """The server answered 200 with something that is not a completion (a body that is not
    JSON, a proxy's HTML page, a completion without text)."""


_TRANSIENT = (
    openai.APIConnectionError,
    openai.APITimeoutError,
    openai.InternalServerError,
    openai.RateLimitError,  # still limited after the client honoured Retry-After: bench it
    MalformedResponse,
)


@dataclass
class _Endpoint:
    config: EndpointConfig
    client: AsyncOpenAI
    slots: asyncio.Semaphore
    in_flight: int = 0
    benched_until: float = 0.0
    failures: int = field(default=0)

    @property
    def healthy(self) -> bool:
        return time.monotonic() >= self.benched_until


class OpenAIBackend(Backend):
    def __init__(
        self,
        endpoints: tuple[EndpointConfig, ...] | list[EndpointConfig],
        *,
        api: str = "completions",
        role: str = "model",
    ) -> None:
        if not endpoints:
            raise ValueError("OpenAIBackend needs at least one endpoint")
        self.api = api
        self.role = role
        self.name = endpoints[0].model
        self._endpoints = [
            _Endpoint(
                config=e,
                client=AsyncOpenAI(
                    base_url=e.url,
                    api_key=e.api_key,
                    timeout=e.timeout_s,
                    max_retries=e.max_retries,
                ),
                slots=asyncio.Semaphore(e.max_concurrency),
            )
            for e in endpoints
        ]

    def _pick(self, exclude: set[int]) -> _Endpoint | None:
        candidates = [e for i, e in enumerate(self._endpoints) if i not in exclude and e.healthy]
        if not candidates:  # all benched: try the least recently failed rather than give up
            candidates = [e for i, e in enumerate(self._endpoints) if i not in exclude]
        return min(candidates, key=lambda e: e.in_flight, default=None)

    async def complete(self, request: GenerationRequest) -> Completion:
        tried: set[int] = set()
        last_error: Exception | None = None
        while (endpoint := self._pick(tried)) is not None:
            tried.add(self._endpoints.index(endpoint))
            endpoint.in_flight += 1
            try:
                async with endpoint.slots:
                    completion = await self._call_retrying(endpoint, request)
                endpoint.failures = 0
                return completion
            except _TRANSIENT as e:
                endpoint.failures += 1
                endpoint.benched_until = time.monotonic() + _COOLDOWN_S
                last_error = e
            finally:
                endpoint.in_flight -= 1
        urls = ", ".join(e.config.url for e in self._endpoints)
        raise BackendUnavailable(
            f"{self.role} endpoint(s) {urls} failed after retries: {_reason(last_error)}"
        )

    async def _call_retrying(self, endpoint: _Endpoint, request: GenerationRequest) -> Completion:
        """The client retries HTTP errors, timeouts and broken connections itself; a malformed
        200 reply is retried here, as many times and with the same backoff."""
        attempt = 0
        while True:
            try:
                return await self._call(endpoint, request)
            except MalformedResponse:
                if attempt >= endpoint.config.max_retries:
                    raise
                await asyncio.sleep(min(0.5 * 2**attempt, 8.0))
                attempt += 1

    async def _call(self, endpoint: _Endpoint, request: GenerationRequest) -> Completion:
        cfg = endpoint.config
        start = time.perf_counter()
        common: dict = {
            "model": cfg.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stop": list(request.stop) or None,
        }
        if self.api == "chat":
            if request.json_schema is not None:
                common["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "reply", "schema": request.json_schema},
                }
            create = endpoint.client.chat.completions.create
            kwargs = {"messages": [{"role": "user", "content": request.prompt}], **common}
        else:
            if request.json_schema is not None:
                # vLLM's structured outputs (the older `guided_json` is silently ignored).
                common["extra_body"] = {"structured_outputs": {"json": request.json_schema}}
            create = endpoint.client.completions.create
            kwargs = {"prompt": request.prompt, **common}
        try:
            resp = await create(**kwargs)
        except json.JSONDecodeError as e:  # a JSON content type, a body that is not JSON
            raise MalformedResponse(f"reply body is not JSON ({e})") from None
        try:
            if self.api == "chat":
                text = resp.choices[0].message.content or "" if resp.choices else ""
            else:
                text = resp.choices[0].text if resp.choices else ""
            usage = resp.usage
            prompt_tokens = (usage.prompt_tokens or 0) if usage else 0
            completion_tokens = (usage.completion_tokens or 0) if usage else 0
        except (AttributeError, IndexError, TypeError):
            # the client hands back the raw text of a non-JSON content type (an HTML page)
            raise MalformedResponse(f"reply is not a completion: {str(resp)[:80]!r}") from None
        if not isinstance(text, str):
            raise MalformedResponse(f"reply has no completion text: {str(resp)[:80]!r}")
        return Completion(
            text=text,
            generation=Generation(
                model=resp.model or cfg.model,
                endpoint=cfg.url,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                latency_s=time.perf_counter() - start,
            ),
        )

    async def check(self) -> None:
        """Every endpoint must answer `GET /models` and serve the configured model."""
        for e in self._endpoints:
            try:
                models = await e.client.with_options(timeout=10.0, max_retries=1).models.list()
            except openai.APIError as err:
                raise BackendUnavailable(
                    f"cannot reach {self.role} endpoint {e.config.url} ({_reason(err)}): "
                    f"start the server or fix [{self.role}].endpoints in the config"
                ) from None
            served = {m.id async for m in models}
            if e.config.model not in served:
                raise BackendUnavailable(
                    f"{self.role} endpoint {e.config.url} does not serve model "
                    f"'{e.config.model}' (it serves: {', '.join(sorted(served)) or 'nothing'})"
                )

    async def aclose(self) -> None:
        for e in self._endpoints:
            await e.client.close()


def _reason(err: Exception | None) -> str:
    if err is None:
        return "no endpoint available"
    # The cause names the network error, but some (httpx's timeouts) have no message.
    detail = str(err.__cause__ or "") or str(err)
    return f"{type(err).__name__}: {detail}".splitlines()[0][:200]
