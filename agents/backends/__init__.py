"""LLM backends behind one async interface (`Backend.complete`)."""

from __future__ import annotations

from teachloop.agents.backends.base import Backend, Completion, GenerationRequest
from teachloop.config import AgentConfig


def build_backend(config: AgentConfig, role: str) -> Backend:
    """The backend a role's config describes. Heavy imports (torch) happen only when needed."""
    if config.backend == "openai":
        from teachloop.agents.backends.openai_backend import OpenAIBackend

        return OpenAIBackend(config.endpoints, api=config.api, role=role)
    from teachloop.agents.backends.transformers_backend import TransformersBackend
    from teachloop.agents.embedded import resolve_model_path

    return TransformersBackend(
        resolve_model_path(config.model),
        dtype=config.dtype,
        max_batch_size=config.max_batch_size,
        name=config.model,
    )


def build_backends(teacher: AgentConfig, student: AgentConfig) -> tuple[Backend, Backend]:
    """Teacher and student backends; one shared instance when both use the same model, so the
    model is loaded once and both roles' requests batch together."""
    same = {"backend", "model", "dtype", "api", "endpoints", "max_batch_size"}
    if teacher.model_dump(include=same) == student.model_dump(include=same):
        shared = build_backend(student, "student")
        return shared, shared
    return build_backend(teacher, "teacher"), build_backend(student, "student")


__all__ = ["Backend", "Completion", "GenerationRequest", "build_backend", "build_backends"]
