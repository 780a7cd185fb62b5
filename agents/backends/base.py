"""The one interface every LLM backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from teachloop.agents.prompts import ChatPrompt
from teachloop.messages import Generation
from teachloop.records import ModelVersion


class GenerationRequest(BaseModel):
    """A completion request. ``prompt`` is plain text: base models (the embedded student) have
    no chat template, and the completions API serves both base and instruct models. ``chat``
    is the same request as chat messages, which a backend on a chat API sends instead."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    chat: ChatPrompt | None = None
    max_tokens: int = Field(default=64, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    stop: tuple[str, ...] = ()
    # A JSON schema the reply must follow (structured output); backends that cannot
    # constrain decoding validate and retry instead.
    json_schema: dict | None = None


class LoraAdapter(BaseModel):
    """A LoRA adapter on the base model: a student version trained from the log."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="the version name; servers serve the adapter under it")
    path: Path = Field(description="the PEFT adapter directory")

    @classmethod
    def of(cls, version: ModelVersion) -> LoraAdapter | None:
        """The adapter of a student version; None for a base model, which has none."""
        if not version.adapter_path:
            return None
        return cls(name=version.version, path=Path(version.adapter_path))


class Completion(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    generation: Generation


class Backend(ABC):
    """Async text generation: the contract every backend keeps.

    ``tests/test_backend_contract.py`` checks each item on every backend (``ScriptedBackend``,
    ``TransformersBackend`` on a tiny random model, ``OpenAIBackend`` against a fake server);
    an exemption below is tested as the behaviour it states, not skipped.

    **Stop strings.** ``Completion.text`` ends before the first occurrence of any of
    ``request.stop`` (the earliest one in the text wins); the stop string is not included, and
    text without a stop string is returned whole. (``OpenAIBackend`` cuts again what the server
    returns, for servers that ignore ``stop``.)

    **max_tokens.** At most ``request.max_tokens`` tokens are generated per attempt. For
    ``OpenAIBackend`` that is the server's doing; ``ScriptedBackend``: the script decides.

    **Usage.** ``Completion.generation`` says what the reply cost: ``model`` (the name that
    answered: the adapter's for a LoRA version), ``endpoint`` (the server URL,
    ``"in-process"`` or ``"scripted"``), ``prompt_tokens`` and ``completion_tokens`` (what was
    generated, stop string and retries included, so it may exceed the text) and ``latency_s``
    (wall time of the call, > 0). Token counts are the tokenizer's (in-process) or the server's
    ``usage`` (0 where it reports none). Exemption: ``ScriptedBackend`` counts whitespace-
    separated words and reports ``latency_s = 0`` (scripted runs are reproducible to the byte).

    **json_schema.** The reply is JSON following the schema, either because decoding is
    constrained (``OpenAIBackend``: vLLM's structured outputs, or ``response_format`` on the
    chat API) or because the backend validates and retries (``TransformersBackend``: up to 3
    attempts, each hotter, returning just the JSON object's text, with usage summed over the
    attempts). A backend that still has none returns the last reply as it is: callers validate
    (the teacher records a ``parse_error``). Exemption: ``ScriptedBackend`` hands the request,
    schema included, to its script, which decides.

    **Temperature 0** is greedy: the same request gives the same text, alone or among any
    number of concurrent requests. (In-process, bit-identical in float32; bfloat16 batching
    and server-side batching may flip a near-tie.)

    **Concurrency.** ``complete`` is safe under many concurrent calls on one event loop: the
    runner and the evaluation keep many requests in flight so that backends batch them
    (``TransformersBackend`` into one continuously batched decode, ``OpenAIBackend`` over
    endpoints).
    Each caller gets its own request's reply.

    **Errors.** A backend that cannot produce a reply raises ``BackendUnavailable`` with a
    one-line reason: unreachable or down (after the client's retries), a model or adapter
    that does not load, a malformed reply (a 200 that is not a completion, after retries), or
    use after ``aclose()``. A request the server refuses as such (HTTP 4xx, e.g. a prompt
    longer than the context) raises the client's error (``openai.BadRequestError``): retrying
    cannot help, and the endpoint is not benched for it. A failure inside in-process
    generation reaches every caller of the batch as raised. Exemption: ``ScriptedBackend`` is
    never unavailable; an exception raised by its script propagates as it is.

    **check()** raises ``BackendUnavailable`` (one line, naming the fix) if the backend cannot
    serve, or ``ConfigError`` if it serves something other than the config says (a student
    endpoint whose server loaded other weights than ``[student].model``); it may take long
    (``TransformersBackend`` loads the model). It may be called again. The runner calls it
    before the first lesson, the evaluation before the first question.

    **aclose()** releases what the backend holds (HTTP clients, health checks, the batching
    worker); callers still waiting get ``BackendUnavailable``, later calls too. It may be
    called again. Exemption: ``ScriptedBackend`` holds nothing and keeps answering.
    """

    name: str = "backend"

    @abstractmethod
    async def complete(self, request: GenerationRequest) -> Completion: ...

    async def check(self) -> None:
        """Raise ``BackendUnavailable`` with a one-line reason if the backend cannot serve
        (``ConfigError`` if it serves something other than the config says)."""
        return None

    async def aclose(self) -> None:
        """Release resources (HTTP clients, worker tasks); safe to call twice."""
        return None


def truncate_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """Cut ``text`` at the first stop string (servers do this; in-process generation must too)."""
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]
