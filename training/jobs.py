"""Training jobs, held-out evaluation with a promotion gate, and the periodic loop.

State lives in the store (its model registry: ``teachloop.store.registry``), and every change of
state is one transaction, so a job killed at any point leaves the log consistent: a version row,
the consumed pairs and the job's completion are written together after the adapter is on disk;
promotion is a single update after evaluation. A rerun starts over cleanly (a stale 'running'
job is marked failed; its adapter directory, if one was left, is replaced).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from teachloop.agents.backends import Backend, LoraAdapter, build_backend
from teachloop.agents.student import Student
from teachloop.config import RunConfig
from teachloop.domains import heldout_problems
from teachloop.errors import TeachloopError
from teachloop.records import ModelVersion
from teachloop.store.interface import LogStore
from teachloop.store.records import EvaluationRow, TrainingJob
from teachloop.store.registry import BASE_VERSION
from teachloop.store.store import Store
from teachloop.training.evaluate import EvalResult, TopicScore, evaluate, regressed
from teachloop.training.trainer import StepLog, TrainingExample, train_adapter

BASE = BASE_VERSION


class JobResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    job_id: str | None
    status: str  # complete | nothing_to_do
    message: str
    version: ModelVersion | None = None
    pairs: int = 0
    steps: int = 0
    final_loss: float | None = None
    final_reward_margin: float | None = None
    mean_step_time_s: float | None = None
    wall_time_s: float = 0.0


class GateDecision(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: str
    result: EvalResult
    incumbent: str
    incumbent_result: EvalResult
    regressed: list[str]  # topics (or "overall") that dropped beyond the tolerance
    promoted: bool


def _now() -> datetime:
    return datetime.now(UTC)


def promote(store: LogStore, version: str) -> ModelVersion:
    """Make ``version`` the student lessons use, also to roll back: versions of the same base
    model created after it lose their promotion (they stay on disk and can be promoted again)."""
    return store.promote(version)


def _base_dir(base_model: str) -> Path:
    from teachloop.agents.embedded import resolve_model_path

    return resolve_model_path(base_model)


def train(
    config: RunConfig,
    *,
    method: str | None = None,
    from_version: str | None = None,
    progress: bool = True,
) -> JobResult:
    """Train a new student version on the pairs no job has used yet (safe to run from cron:
    with nothing new it does nothing)."""
    started = time.perf_counter()
    store = Store.of(config)
    base_model = config.student.model
    store.ensure_base(base_model)
    parent = (
        store.model_version(from_version) if from_version else store.current_student(base_model)
    )
    store.fail_interrupted_jobs()  # a job left 'running' was killed: say so
    pairs = store.unused_pairs(config.training.pair_rules, config.training.targets)
    if not pairs:
        return JobResult(
            job_id=None,
            status="nothing_to_do",
            message="no unused preference pairs: run lessons, then `teachloop pairs`",
        )
    train_config = config.training
    if method is not None:
        train_config = train_config.model_copy(update={"method": method})
    job_id = f"job-{_now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    version = store.next_version_name()
    out_dir = (train_config.adapters or store.home / "adapters") / version
    if out_dir.exists():  # left by a job killed after saving, before recording: not a version
        shutil.rmtree(out_dir)
    store.start_job(
        TrainingJob(
            job_id=job_id,
            method=train_config.method,
            from_version=parent.version,
            status="running",
            pairs=len(pairs),
            config=train_config.model_dump_json(),
            started_at=_now(),
        )
    )
    log: list[StepLog] = []
    try:
        result = train_adapter(
            _base_dir(base_model),
            [TrainingExample.of_pair(p) for p in pairs],
            out_dir,
            train_config,
            parent_adapter=Path(parent.adapter_path) if parent.adapter_path else None,
            progress=progress,
            on_step=log.append,
        )
    except BaseException as e:
        error = f"{type(e).__name__}: {e}".splitlines()[0] if str(e) else type(e).__name__
        store.fail_job(job_id, error, _log_json(log))
        raise
    last = result.log[-1] if result.log else None
    metrics = {
        "pairs": len(pairs),
        "steps": result.steps,
        "final_loss": last.loss if last else None,
        "final_reward_margin": last.reward_margin if last else None,
        "mean_step_time_s": result.mean_step_time_s,
    }
    record = ModelVersion(
        version=version,
        parent_version=parent.version,
        method=train_config.method,
        adapter_path=str(out_dir.resolve()),
        base_model=base_model,
        job_id=job_id,
        watermark=max(p.created_at for p in pairs),
        metrics=json.dumps(metrics),
    )
    # the version, the consumed pairs and the job: all or nothing
    store.complete_job(job_id, record, [p.pair_id for p in pairs], _log_json(result.log))
    return JobResult(
        job_id=job_id,
        status="complete",
        message=f"trained {version} ({train_config.method}, {result.steps} steps on "
        f"{len(pairs)} pairs) from {parent.version}: adapter in {out_dir}",
        version=record,
        pairs=len(pairs),
        steps=result.steps,
        final_loss=metrics["final_loss"],
        final_reward_margin=metrics["final_reward_margin"],
        mean_step_time_s=result.mean_step_time_s,
        wall_time_s=time.perf_counter() - started,
    )


def _log_json(log: list[StepLog]) -> str:
    return json.dumps([s.model_dump() for s in log])


def _eval_id(version: str, config: RunConfig) -> str:
    """Evaluations are keyed by what they measured, so a repeated one is read, not rerun; and
    by where: a served model's numerics (its dtype, vLLM's kernels) differ from in-process."""
    key: list = [config.topics, config.eval.per_topic, config.eval.seed]
    if config.student.backend == "vllm":
        key.append(["vllm", *(s.dtype for s in config.servers_for("student"))])
    digest = hashlib.md5(json.dumps(key).encode()).hexdigest()[:10]
    return f"{version}:{digest}"


def evaluate_version(
    config: RunConfig, version: str, *, store: LogStore | None = None
) -> EvalResult:
    """Accuracy per topic of a model version on the held-out set (cached in `evaluations`)."""
    store = store or Store.of(config)
    store.ensure_base(config.student.model)
    model = store.model_version(version)
    eval_id = _eval_id(version, config)
    if rows := store.evaluation(eval_id):
        return _result_from_rows(version, config.eval.seed, rows)
    from teachloop.domains import build_domains

    domains = build_domains(config)
    problems = heldout_problems(domains, config.topics, config.eval.per_topic, config.eval.seed)
    backend = _eval_backend(config, model)

    async def run() -> EvalResult:
        try:
            await backend.check()  # a served student: reachable, with the adapter loaded
            return await evaluate(
                Student.for_config(backend, domains, config),
                problems,
                version=version,
                seed=config.eval.seed,
            )
        finally:
            await backend.aclose()

    result = asyncio.run(run())
    now = _now()
    store.write_evaluation(
        [
            EvaluationRow(
                eval_id=eval_id,
                version=version,
                topic=t.topic,
                questions=t.questions,
                correct=t.correct,
                accuracy=t.accuracy,
                seed=result.seed,
                created_at=now,
            )
            for t in result.topics
        ]
    )
    return result


def _eval_backend(config: RunConfig, model: ModelVersion) -> Backend:
    """The student's backend with the version's adapter, built as lessons build it. On
    teachloop's vLLM servers the adapter is hot-loaded: no second copy of the model in memory,
    and batched. Endpoints teachloop does not manage cannot load adapters, so there the version
    is evaluated in-process (the base model too, so both are measured alike)."""
    student = config.student
    if model.base_model != student.model:
        where = "servers serve the student" if student.backend == "vllm" else "student is"
        raise TeachloopError(
            f"version {model.version} is of {model.base_model}, but the config's {where} "
            f"{student.model}: use a config for that model"
        )
    if student.backend == "openai":
        in_process = student.model_dump() | {"backend": "transformers", "endpoints": ()}
        config = config.with_overrides(student=in_process)
    return build_backend(config, "student", LoraAdapter.of(model))


def _result_from_rows(version: str, seed: int, rows: list[EvaluationRow]) -> EvalResult:
    topics = [
        TopicScore(topic=r.topic, questions=r.questions, correct=r.correct, accuracy=r.accuracy)
        for r in rows
    ]
    return EvalResult.from_scores(version, seed, topics)


def evaluate_and_promote(config: RunConfig, version: str, *, promote: bool = True) -> GateDecision:
    """Evaluate ``version`` and the promoted incumbent on the same held-out set; promote the
    candidate unless some topic (or the overall accuracy) drops beyond the tolerance."""
    store = Store.of(config)
    store.ensure_base(config.student.model)
    incumbent = store.current_student(config.student.model)
    result = evaluate_version(config, version, store=store)
    incumbent_result = (
        result
        if incumbent.version == version
        else evaluate_version(config, incumbent.version, store=store)
    )
    dropped = regressed(result, incumbent_result, config.eval.tolerance)
    do_promote = promote and not dropped and incumbent.version != version
    if do_promote:  # as by hand: it becomes the student even if a newer version was
        store.promote(version)
    return GateDecision(
        version=version,
        result=result,
        incumbent=incumbent.version,
        incumbent_result=incumbent_result,
        regressed=dropped,
        promoted=do_promote,
    )
