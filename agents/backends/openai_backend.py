"""OpenAI-compatible endpoints (vLLM's server, or any other) through the `openai` async client.

Several endpoints may serve one role: each request goes to the healthy endpoint with the fewest
requests in flight, within that endpoint's concurrency limit. The client retries 429/5xx,
timeouts and connection errors with exponential backoff (honouring Retry-After); a 200 reply that
is not a completion is retried here the same way. An endpoint that still fails is benched for a
cool-down and the request moves on to the next one. While the backend is in use, a health check
asks every endpoint for its model list every few seconds: an endpoint that does not answer is
taken out until it answers again.

With ``adapter`` (a LoRA adapter: the student's promoted version), requests name the adapter as
their model, and every endpoint is made to serve it: the health check loads it through vLLM's
``/v1/load_lora_adapter`` wherever it is missing, including on a server that restarted.

With ``weights`` (the student's ``model``: the weights teachloop trains), the health check also
compares them with the ``root`` vLLM reports for the served model (the path it loaded), where
the server reports one, and refuses a server that serves other weights.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
from openai import AsyncOpenAI

from teachloop.agents.backends.base import (
    Backend,
    Completion,
    GenerationRequest,
    LoraAdapter,
    truncate_at_stop,
)
from teachloop.config import EndpointConfig
from teachloop.errors import BackendUnavailable, ConfigError
from teachloop.messages import Generation

_COOLDOWN_S = 10.0
_HEALTH_INTERVAL_S = 5.0
_HEALTH_TIMEOUT_S = 5.0


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
    api_key: str = field(repr=False)
    in_flight: int = 0
    benched_until: float = 0.0
    failures: int = field(default=0)
    down: bool = False  # set by a failed health check, cleared by a passing one

    @property
    def healthy(self) -> bool:
        return not self.down and time.monotonic() >= self.benched_until


class OpenAIBackend(Backend):
    def __init__(
        self,
        endpoints: tuple[EndpointConfig, ...] | list[EndpointConfig],
        *,
        api: str = "completions",
        role: str = "model",
        adapter: LoraAdapter | None = None,
        health_interval_s: float = _HEALTH_INTERVAL_S,
        hint: str | None = None,
        weights: str | Path | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("OpenAIBackend needs at least one endpoint")
        self.api = api
        self.role = role
        self.adapter = adapter
        self.weights = Path(weights).expanduser() if weights is not None else None
        self.health_interval_s = health_interval_s
        self.hint = hint or f"start the server or fix [{role}].endpoints in the config"
        self.name = adapter.name if adapter else endpoints[0].model
        self._monitor: asyncio.Task[None] | None = None
        self._closed = False
        keys = [e.resolved_api_key() for e in endpoints]  # an unset api_key_env fails here
        self._http = httpx.AsyncClient(timeout=_HEALTH_TIMEOUT_S)
        self._endpoints = [
            _Endpoint(
                config=e,
                client=AsyncOpenAI(
                    base_url=e.url,
                    api_key=key,
                    timeout=e.timeout_s,
                    max_retries=e.max_retries,
                ),
                slots=asyncio.Semaphore(e.max_concurrency),
                api_key=key,
            )
            for e, key in zip(endpoints, keys, strict=True)
        ]

    def _pick(self, exclude: set[int]) -> _Endpoint | None:
        candidates = [e for i, e in enumerate(self._endpoints) if i not in exclude and e.healthy]
        if not candidates:  # all benched: try the least recently failed rather than give up
            candidates = [e for i, e in enumerate(self._endpoints) if i not in exclude]
        return min(candidates, key=lambda e: e.in_flight, default=None)

    async def complete(self, request: GenerationRequest) -> Completion:
        if self._closed:
            raise self._closed_error()
        self._ensure_monitor()
        try:
            return await self._complete(request)
        except Exception:
            if self._closed:  # closed while this request was in flight
                raise self._closed_error() from None
            raise

    def _closed_error(self) -> BackendUnavailable:
        return BackendUnavailable(f"{self.role} backend {self.name} was closed")

    async def _complete(self, request: GenerationRequest) -> Completion:
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
            "model": self.adapter.name if self.adapter else cfg.model,
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
            messages = (
                request.chat.messages()
                if request.chat is not None
                else ({"role": "user", "content": request.prompt},)
            )
            kwargs = {"messages": list(messages), **common}
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
            # vLLM cuts at the stop strings; a server that ignores them (or some) must not
            # hand the caller what follows a stop string.
            text=truncate_at_stop(text, request.stop),
            generation=Generation(
                model=resp.model or cfg.model,
                endpoint=cfg.url,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                latency_s=time.perf_counter() - start,
            ),
        )

    async def check(self) -> None:
        """Every endpoint must answer, serve the configured model (from ``weights``, where the
        server says where it loaded it from) and (with an adapter) have the adapter loaded; then
        the health check starts watching them."""
        if self._closed:
            raise self._closed_error()
        for e in self._endpoints:
            await self._probe(e)
        self._ensure_monitor()

    async def _probe(self, e: _Endpoint) -> None:
        """Raise ``BackendUnavailable`` unless ``e`` serves our model (loading the adapter
        into it if that is what is missing), ``ConfigError`` if it serves other weights."""
        url = e.config.url.rstrip("/")
        try:
            resp = await self._http.get(f"{url}/models", headers=_auth(e.api_key))
            resp.raise_for_status()
            served = {m["id"]: m for m in resp.json()["data"]}  # name -> model card
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as err:
            raise BackendUnavailable(
                f"cannot reach {self.role} endpoint {url} ({_reason(err)}): {self.hint}"
            ) from None
        if e.config.model not in served:
            raise BackendUnavailable(
                f"{self.role} endpoint {url} does not serve model "
                f"'{e.config.model}' (it serves: {', '.join(sorted(served)) or 'nothing'})"
            )
        root = served[e.config.model].get("root")  # vLLM's: where it loaded the model from
        weights = self.weights
        if weights is not None and isinstance(root, str) and not _same_weights(root, weights):
            raise ConfigError(
                f"{self.role} endpoint {url} serves '{e.config.model}' from {root}, but "
                f"[{self.role}].model is {weights}, the weights teachloop trains: set it to "
                "the weights the endpoint serves"
            )
        if self.adapter is not None and self.adapter.name not in served:
            await self._load_adapter(e)

    async def _load_adapter(self, e: _Endpoint) -> None:
        assert self.adapter is not None
        url = e.config.url.rstrip("/")
        body = {"lora_name": self.adapter.name, "lora_path": str(self.adapter.path)}
        try:
            resp = await self._http.post(
                f"{url}/load_lora_adapter",
                json=body,
                headers=_auth(e.api_key),
                timeout=60.0,  # the server reads the adapter from disk
            )
        except httpx.HTTPError as err:
            raise BackendUnavailable(
                f"{self.role} endpoint {url}: loading adapter '{self.adapter.name}' failed "
                f"({_reason(err)})"
            ) from None
        if resp.status_code != 200 and "already been loaded" not in resp.text:
            detail = " ".join(resp.text.split())[:200]
            raise BackendUnavailable(
                f"{self.role} endpoint {url} could not load adapter '{self.adapter.name}' from "
                f"{self.adapter.path} (HTTP {resp.status_code}: {detail}); the server needs "
                "LoRA enabled at runtime (`teachloop serve` does that for the student)"
            )

    def _ensure_monitor(self) -> None:
        if self._monitor is None or self._monitor.done():
            self._monitor = asyncio.get_running_loop().create_task(
                self._watch(), name=f"{self.role}-health"
            )

    async def _watch(self) -> None:
        """Probe every endpoint periodically: take out those that fail, put back those that
        pass again (with the adapter reloaded if the server lost it)."""
        while True:
            await asyncio.sleep(self.health_interval_s)
            for e in self._endpoints:
                try:
                    await self._probe(e)
                except Exception:  # BackendUnavailable, or any odd reply: the watcher goes on
                    e.down = True
                else:
                    if e.down:
                        e.benched_until = 0.0  # it passed a check: no need to wait out a bench
                    e.down = False

    def endpoint_status(self) -> list[tuple[str, bool, int]]:
        """(url, in service, requests in flight) per endpoint."""
        return [(e.config.url, e.healthy, e.in_flight) for e in self._endpoints]

    async def aclose(self) -> None:
        self._closed = True
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
        for e in self._endpoints:
            await e.client.close()
        await self._http.aclose()


def _auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def _same_weights(root: str, weights: Path) -> bool:
    """Whether the server's ``root`` (the path or hub name it loaded) is ``weights``: the same
    directory where the server's path exists here too (a server on this machine), else (a
    server elsewhere, or a hub name) the same final name."""
    if not root:  # nothing reported: nothing to compare
        return True
    served = Path(root).expanduser()
    if served.is_dir() and weights.is_dir():
        return os.path.samefile(served, weights)
    return served.name == weights.resolve().name


def _reason(err: Exception | None) -> str:
    if err is None:
        return "no endpoint available"
    # The cause names the network error, but some (httpx's timeouts) have no message.
    detail = str(err.__cause__ or "") or str(err)
    return f"{type(err).__name__}: {detail}".splitlines()[0][:200]
