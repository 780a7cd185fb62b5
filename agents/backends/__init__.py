"""LLM backends behind one async interface (`Backend.complete`)."""

from __future__ import annotations

from pathlib import Path

from teachloop.agents.backends.base import Backend, Completion, GenerationRequest, LoraAdapter
from teachloop.agents.backends.function import FunctionBackend, langchain_backend
from teachloop.config import EMBEDDED_MODEL, Role, RunConfig
from teachloop.errors import ConfigError
from teachloop.records import versioned_model


def build_backend(config: RunConfig, role: Role, adapter: LoraAdapter | None = None) -> Backend:
    """The backend ``config`` describes for ``role``, optionally with a LoRA adapter on the
    model. Heavy imports (torch) happen only when needed."""
    agent = config.agent(role)
    if agent.backend in ("openai", "vllm"):
        from teachloop.agents.backends.openai_backend import OpenAIBackend

        if adapter is not None and agent.backend == "openai":
            raise ConfigError(
                f"[{role}] uses endpoints that teachloop does not manage, so it cannot load the "
                "promoted adapter into them: use backend = 'vllm' with [[servers]], or set "
                "follow_promoted = false"
            )
        hint = (
            "start the servers with `teachloop serve --config FILE` (or pass --serve)"
            if agent.backend == "vllm"
            else None
        )
        return OpenAIBackend(
            config.endpoints_for(role),
            api=agent.api,
            role=role,
            adapter=adapter,
            hint=hint,
            # Endpoints teachloop does not start: their server must serve the student's weights.
            weights=_trained_weights(agent.model)
            if role == "student" and agent.backend == "openai"
            else None,
        )
    from teachloop.agents.backends.transformers_backend import TransformersBackend
    from teachloop.agents.embedded import resolve_model_path

    return TransformersBackend(
        resolve_model_path(agent.model),
        dtype=agent.dtype,
        max_batch_size=agent.max_batch_size,
        name=agent.model if adapter is None else versioned_model(agent.model, adapter.name),
        adapter_dir=adapter.path if adapter else None,
    )


def _trained_weights(model: str) -> Path:
    """Where the student's weights are (without converting the embedded model): what a server
    serving the student must have loaded."""
    from teachloop.agents.embedded import embedded_model_dir

    return embedded_model_dir() if model == EMBEDDED_MODEL else Path(model).expanduser()


def build_backends(
    config: RunConfig, student_adapter: LoraAdapter | None = None
) -> tuple[Backend, Backend]:
    """Teacher and student backends; one shared instance when both use the same model (and the
    student no adapter), so the model is loaded once and both roles' requests batch together."""
    from teachloop.agents.embedded import check_model

    for agent in (config.teacher, config.student):  # a wrong path must not wait behind a
        if agent.backend == "transformers":  # model conversion
            check_model(agent.model)
    same = {"backend", "model", "dtype", "api", "max_batch_size"}
    teacher, student = config.teacher, config.student
    if (
        student_adapter is None
        and teacher.model_dump(include=same) == student.model_dump(include=same)
        and config.endpoints_for("teacher") == config.endpoints_for("student")
    ):
        shared = build_backend(config, "student")
        return shared, shared
    return build_backend(config, "teacher"), build_backend(config, "student", student_adapter)


__all__ = [
    "Backend",
    "Completion",
    "FunctionBackend",
    "GenerationRequest",
    "LoraAdapter",
    "build_backend",
    "build_backends",
    "langchain_backend",
]
