"""The one interface every LLM backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from teachloop.messages import Generation
from teachloop.records import ModelVersion


class GenerationRequest(BaseModel):
    """A completion request. Prompts are plain text: base models (the embedded student) have no
    chat template, and the completions API serves both base and instruct models."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
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
    """Async text generation. Implementations must be safe to call concurrently: the runner
    keeps many requests in flight so that backends can batch them."""

    name: str = "backend"

    @abstractmethod
    async def complete(self, request: GenerationRequest) -> Completion: ...

    async def check(self) -> None:
        """Raise ``BackendUnavailable`` with a one-line reason if the backend cannot serve."""
        return None

    async def aclose(self) -> None:
        """Release resources (HTTP clients, worker tasks)."""
        return None


def truncate_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """Cut ``text`` at the first stop string (servers do this; in-process generation must too)."""
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]
