"""LLM backends behind one async interface (`Backend.complete`)."""

from __future__ import annotations

from pathlib import Path

from teachloop.agents.backends.base import Backend, Completion, GenerationRequest
from teachloop.config import AgentConfig
from teachloop.errors import ConfigError


def build_backend(config: AgentConfig, role: str, adapter: Path | None = None) -> Backend:
    """The backend a role's config describes, optionally with a LoRA adapter on the model.
    Heavy imports (torch) happen only when needed."""
    if config.backend == "openai":
        from teachloop.agents.backends.openai_backend import OpenAIBackend

        if adapter is not None:
            raise ConfigError(
                f"[{role}] uses endpoints: load adapters into the server (teachloop serve), "
                "or set follow_promoted = false"
            )
        return OpenAIBackend(config.endpoints, api=config.api, role=role)
    from teachloop.agents.backends.transformers_backend import TransformersBackend
    from teachloop.agents.embedded import resolve_model_path

    return TransformersBackend(
        resolve_model_path(config.model),
        dtype=config.dtype,
        max_batch_size=config.max_batch_size,
        name=config.model if adapter is None else f"{config.model}+{adapter.name}",
        adapter_dir=adapter,
    )


def build_backends(
    teacher: AgentConfig, student: AgentConfig, student_adapter: Path | None = None
) -> tuple[Backend, Backend]:
    """Teacher and student backends; one shared instance when both use the same model (and the
    student no adapter), so the model is loaded once and both roles' requests batch together."""
    from teachloop.agents.embedded import check_model

    for role in (teacher, student):  # a wrong path must not wait behind a model conversion
        if role.backend == "transformers":
            check_model(role.model)
    same = {"backend", "model", "dtype", "api", "endpoints", "max_batch_size"}
    if student_adapter is None and teacher.model_dump(include=same) == student.model_dump(
        include=same
    ):
        shared = build_backend(student, "student")
        return shared, shared
    return build_backend(teacher, "teacher"), build_backend(student, "student", student_adapter)


__all__ = ["Backend", "Completion", "GenerationRequest", "build_backend", "build_backends"]
