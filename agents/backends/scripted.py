"""A deterministic backend for tests: replies come from a function of the request.

Never a default: configs cannot select it; tests pass it to the runner explicitly.

Its exemptions from the `Backend` contract: the script decides the text (max_tokens and
json_schema are the script's to honour; stop strings are applied here), token counts are
whitespace-separated words, latency is 0, it is never unavailable (an exception the script
raises propagates as it is), and it keeps answering after ``aclose()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from teachloop.agents.backends.base import Backend, Completion, GenerationRequest, truncate_at_stop
from teachloop.messages import Generation

Responder = Callable[[GenerationRequest], str]


class ScriptedBackend(Backend):
    def __init__(self, respond: Responder, *, name: str = "scripted", delay_s: float = 0.0) -> None:
        self.respond = respond
        self.name = name
        self.delay_s = delay_s
        self.requests: list[GenerationRequest] = []

    async def complete(self, request: GenerationRequest) -> Completion:
        self.requests.append(request)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        text = truncate_at_stop(self.respond(request), request.stop)
        return Completion(
            text=text,
            generation=Generation(
                model=self.name,
                endpoint="scripted",
                prompt_tokens=len(request.prompt.split()),
                completion_tokens=len(text.split()),
            ),
        )
