"""Any Python callable as a backend: your own model, a rule, a remote service, a LangChain chat
model. This is the extension point for putting something other than the built-in backends
behind the teacher or the student.

    async def student(request: GenerationRequest) -> str:
        return " 42"

    run_lessons(config, student_backend=FunctionBackend(student))

The function receives the `GenerationRequest` (prompt, max_tokens, temperature, stop,
json_schema) and returns the reply text, or a `Completion` when it knows its token usage. It may
be sync or async; an async one lets lessons in flight overlap their calls.

Its place in the `Backend` contract: stop strings are cut here; max_tokens, temperature and
json_schema are the function's to honour; token counts are the `Completion`'s if it returns one,
else whitespace-separated words; latency is measured around the call. An exception the function
raises propagates as it is (a lesson logs it as that lesson's error); a reply that is neither
text nor a `Completion` raises `BackendUnavailable`. ``aclose()`` cancels the async calls in
flight (their callers get `BackendUnavailable`), and later calls and ``check()`` raise it
too; ``check()`` never calls the function.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

from teachloop.agents.backends.base import Backend, Completion, GenerationRequest, truncate_at_stop
from teachloop.errors import BackendUnavailable
from teachloop.messages import Generation

Reply = str | Completion
Function = Callable[[GenerationRequest], Reply | Awaitable[Reply]]


class FunctionBackend(Backend):
    endpoint = "function"

    def __init__(self, function: Function, *, name: str | None = None) -> None:
        self.function = function
        self.name = name or getattr(function, "__name__", "function")
        self.closed = False
        self._in_flight: set[asyncio.Future[Reply]] = set()

    async def complete(self, request: GenerationRequest) -> Completion:
        if self.closed:
            raise BackendUnavailable(f"backend {self.name!r} was closed")
        started = time.perf_counter()
        reply = self.function(request)
        if inspect.isawaitable(reply):
            reply = await self._await(reply)
        latency = time.perf_counter() - started
        if isinstance(reply, Completion):
            text = truncate_at_stop(reply.text, request.stop)
            return Completion(text=text, generation=reply.generation)
        if not isinstance(reply, str):
            raise BackendUnavailable(
                f"backend {self.name!r} returned {type(reply).__name__}: return the reply text "
                "(str) or a Completion"
            )
        text = truncate_at_stop(reply, request.stop)
        return Completion(
            text=text,
            generation=Generation(
                model=self.name,
                endpoint=self.endpoint,
                prompt_tokens=len(request.prompt.split()),
                completion_tokens=len(text.split()),
                latency_s=self._latency(latency),
            ),
        )

    async def check(self) -> None:
        """Nothing to load, and the function is not called (it may cost: a remote model);
        only a closed backend cannot serve."""
        if self.closed:
            raise BackendUnavailable(f"backend {self.name!r} was closed")

    def _latency(self, measured: float) -> float:
        return max(measured, 1e-9)  # the contract: > 0, even for an instant function

    async def _await(self, reply: Awaitable[Reply]) -> Reply:
        call = asyncio.ensure_future(reply)
        self._in_flight.add(call)
        try:
            return await call
        except asyncio.CancelledError:
            if self.closed and call.cancelled():  # cancelled by aclose, not our caller
                raise BackendUnavailable(f"backend {self.name!r} was closed") from None
            raise
        finally:
            self._in_flight.discard(call)

    async def aclose(self) -> None:
        self.closed = True
        for call in list(self._in_flight):
            call.cancel()


def langchain_backend(chat_model: Any, *, name: str | None = None) -> FunctionBackend:
    """A LangChain chat model (anything with ``ainvoke(prompt, stop=...)`` returning a message
    with ``content``) as a backend, with no LangChain import here. ``max_tokens`` and
    ``temperature`` are the model's own settings (bind them when you build it); stop strings
    are passed on and cut again here; token usage comes from ``usage_metadata`` when the
    model reports it."""

    async def call(request: GenerationRequest) -> Completion:
        started = time.perf_counter()
        message = await chat_model.ainvoke(request.prompt, stop=list(request.stop) or None)
        content = message.content
        if not isinstance(content, str):  # content blocks: keep the text ones
            content = "".join(
                b if isinstance(b, str) else str(b.get("text", ""))
                for b in content
                if isinstance(b, str) or b.get("type") == "text"
            )
        usage = getattr(message, "usage_metadata", None) or {}
        return Completion(
            text=content,
            generation=Generation(
                model=model_name,
                endpoint="langchain",
                prompt_tokens=usage.get("input_tokens", len(request.prompt.split())),
                completion_tokens=usage.get("output_tokens", len(content.split())),
                latency_s=max(time.perf_counter() - started, 1e-9),
            ),
        )

    model_name = name or getattr(chat_model, "model_name", None) or type(chat_model).__name__
    return FunctionBackend(call, name=model_name)
