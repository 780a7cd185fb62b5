"""A deterministic backend for tests: replies come from a function of the request.

Never a default: configs cannot select it; tests pass it to the runner explicitly.

It is a `FunctionBackend` with two more exemptions from the `Backend` contract, so scripted runs
are reproducible to the byte: latency is reported as 0, and it keeps answering after
``aclose()``. Its script is synchronous; ``delay_s`` makes each call take that long.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from teachloop.agents.backends.base import Completion, GenerationRequest
from teachloop.agents.backends.function import FunctionBackend

Responder = Callable[[GenerationRequest], str]


class ScriptedBackend(FunctionBackend):
    endpoint = "scripted"

    def __init__(self, respond: Responder, *, name: str = "scripted", delay_s: float = 0.0) -> None:
        super().__init__(respond, name=name)
        self.delay_s = delay_s
        self.requests: list[GenerationRequest] = []

    async def complete(self, request: GenerationRequest) -> Completion:
        self.requests.append(request)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return await super().complete(request)

    def _latency(self, measured: float) -> float:
        return 0.0

    async def aclose(self) -> None:
        return None  # holds nothing, keeps answering
