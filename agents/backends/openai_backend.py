"""OpenAI-compatible endpoints (vLLM's server, or any other) through the `openai` async client.

Several endpoints may serve one role: each request goes to the healthy endpoint with the fewest
requests in flight, within that endpoint's concurrency limit. The client retries 429/5xx and
connection errors with exponential backoff (honouring Retry-After); an endpoint that still fails
is benched for a cool-down and the request moves on to the next one.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import openai
from openai import AsyncOpenAI

from teachloop.agents.backends.base import Backend, Completion, GenerationRequest
from teachloop.config import EndpointConfig
from teachloop.errors import BackendUnavailable
from teachloop.messages import Generation

_COOLDOWN_S = 10.0
_TRANSIENT = (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError)


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
                    completion = await self._call(endpoint, request)
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
            resp = await endpoint.client.chat.completions.create(
                messages=[{"role": "user", "content": request.prompt}], **common
            )
            text = resp.choices[0].message.content or "" if resp.choices else ""
        else:
            if request.json_schema is not None:
                # vLLM's structured outputs (the older `guided_json` is silently ignored).
                common["extra_body"] = {"structured_outputs": {"json": request.json_schema}}
            resp = await endpoint.client.completions.create(prompt=request.prompt, **common)
            text = resp.choices[0].text if resp.choices else ""
        usage = resp.usage
        return Completion(
            text=text,
            generation=Generation(
                model=resp.model or cfg.model,
                endpoint=cfg.url,
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
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
    cause = err.__cause__ or err
    return f"{type(err).__name__}: {cause}".splitlines()[0][:200]
