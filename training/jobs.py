"""Training jobs, held-out evaluation with a promotion gate, and the periodic loop.

State lives in the store, and every change of state is one transaction, so a job killed at any
point leaves the log consistent: a version row, the consumed pairs and the job's completion are
written together after the adapter is on disk; promotion is a single update after evaluation.
A rerun starts over cleanly (a stale 'running' job is marked failed; its adapter directory, if
one was left, is replaced).
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
from teachloop.config import RunConfig
from teachloop.domains import heldout_problems
from teachloop.errors import TeachloopError
from teachloop.records import ModelVersion
from teachloop.store.store import Store
from teachloop.training.evaluate import EvalResult, TopicScore, evaluate, regressed
from teachloop.training.pairs import unused_pairs
from teachloop.training.trainer import StepLog, TrainingExample, train_adapter

BASE = "base"


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


def ensure_base(store: Store, base_model: str) -> None:
    """The base model is version 'base', promoted from the start."""
    with store.connect() as con:
        con.execute(
            "INSERT OR IGNORE INTO model_versions (version, method, base_model, promoted, "
            "created_at) VALUES (?, 'base', ?, true, ?)",
            [BASE, base_model, _now()],
        )


def get_version(store: Store, version: str) -> ModelVersion:
    found = [v for v in store.model_versions() if v.version == version]
    if not found:
        known = ", ".join(v.version for v in store.model_versions()) or "none"
        raise TeachloopError(f"model version {version!r} is not in {store.path} (known: {known})")
    return found[0]


def current_student(store: Store, base_model: str) -> ModelVersion:
    ensure_base(store, base_model)
    return store.promoted_version(base_model) or get_version(store, BASE)


def promote(store: Store, version: str) -> ModelVersion:
    """Make ``version`` the student lessons use, also to roll back: versions of the same base
    model created after it lose their promotion (they stay on disk and can be promoted again)."""
    target = get_version(store, version)
    with store.connect() as con:
        con.execute(
            "UPDATE model_versions SET promoted = (version = ?) "
            "WHERE base_model = ? AND (version = ? OR created_at > ?)",
            [version, target.base_model, version, target.created_at],
        )
    return get_version(store, version)


_make_student = promote  # for evaluate_and_promote, whose `promote` flag hides the name


def _next_version(store: Store) -> str:
    n = store.query("SELECT count(*) AS n FROM model_versions WHERE method <> 'base'")
    return f"v{n.to_pylist()[0]['n'] + 1:04d}"


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
    store = Store(config.db)
    base_model = config.student.model
    parent = (
        get_version(store, from_version) if from_version else current_student(store, base_model)
    )
    ensure_base(store, base_model)
    with store.connect() as con:  # a job left 'running' was killed: say so
        con.execute(
            "UPDATE training_jobs SET status = 'failed', error = 'interrupted', finished_at = ? "
            "WHERE status = 'running'",
            [_now()],
        )
    pairs = unused_pairs(store)
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
    version = _next_version(store)
    out_dir = (train_config.adapters or config.db.parent / "adapters") / version
    if out_dir.exists():  # left by a job killed after saving, before recording: not a version
        shutil.rmtree(out_dir)
    with store.connect() as con:
        con.execute(
            "INSERT INTO training_jobs (job_id, method, from_version, status, pairs, config, "
            "started_at) VALUES (?, ?, ?, 'running', ?, ?, ?)",
            [
                job_id,
                train_config.method,
                parent.version,
                len(pairs),
                train_config.model_dump_json(),
                _now(),
            ],
        )
    log: list[StepLog] = []
    try:
        result = train_adapter(
            _base_dir(base_model),
            [TrainingExample(prompt=p.prompt, chosen=p.chosen, rejected=p.rejected) for p in pairs],
            out_dir,
            train_config,
            parent_adapter=Path(parent.adapter_path) if parent.adapter_path else None,
            progress=progress,
            on_step=log.append,
        )
    except BaseException as e:
        with store.connect() as con:
            con.execute(
                "UPDATE training_jobs SET status = 'failed', error = ?, finished_at = ?, "
                "log = ? WHERE job_id = ?",
                [
                    f"{type(e).__name__}: {e}".splitlines()[0] if str(e) else type(e).__name__,
                    _now(),
                    _log_json(log),
                    job_id,
                ],
            )
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
    with store.connect() as con:  # the version, the consumed pairs and the job: all or nothing
        con.execute("BEGIN")
        con.execute(
            "INSERT INTO model_versions BY NAME SELECT * FROM (SELECT ?::VARCHAR AS version, "
            "?::VARCHAR AS parent_version, ?::VARCHAR AS method, ?::VARCHAR AS adapter_path, "
            "?::VARCHAR AS base_model, ?::VARCHAR AS job_id, ?::TIMESTAMPTZ AS watermark, "
            "false AS promoted, ?::JSON AS metrics, ?::TIMESTAMPTZ AS created_at)",
            [
                record.version,
                record.parent_version,
                record.method,
                record.adapter_path,
                record.base_model,
                record.job_id,
                record.watermark,
                record.metrics,
                record.created_at,
            ],
        )
        con.execute(
            "UPDATE preference_pairs SET job_id = ? WHERE pair_id IN (SELECT unnest(?))",
            [job_id, [p.pair_id for p in pairs]],
        )
        con.execute(
            "UPDATE training_jobs SET status = 'complete', finished_at = ?, log = ? "
            "WHERE job_id = ?",
            [_now(), _log_json(result.log), job_id],
        )
        con.execute("COMMIT")
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


def evaluate_version(config: RunConfig, version: str, *, store: Store | None = None) -> EvalResult:
    """Accuracy per topic of a model version on the held-out set (cached in `evaluations`)."""
    store = store or Store(config.db)
    ensure_base(store, config.student.model)
    model = get_version(store, version)
    eval_id = _eval_id(version, config)
    rows = store.query(
        "SELECT * FROM evaluations WHERE eval_id = ? ORDER BY topic", [eval_id]
    ).to_pylist()
    if rows:
        return _result_from_rows(version, config.eval.seed, rows)
    from teachloop.graphs.runner import build_domains

    domains = build_domains(config)
    problems = heldout_problems(domains, config.topics, config.eval.per_topic, config.eval.seed)
    backend = _eval_backend(config, model)

    async def run() -> EvalResult:
        try:
            await backend.check()  # a served student: reachable, with the adapter loaded
            return await evaluate(
                backend,
                problems,
                domains,
                version=version,
                seed=config.eval.seed,
                max_tokens=config.student.max_tokens,
            )
        finally:
            await backend.aclose()

    result = asyncio.run(run())
    now = _now()
    with store.connect() as con:
        con.executemany(
            "INSERT OR IGNORE INTO evaluations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                [eval_id, version, t.topic, t.questions, t.correct, t.accuracy, result.seed, now]
                for t in result.topics
            ],
        )
    return result


def _eval_backend(config: RunConfig, model: ModelVersion) -> Backend:
    """Where teachloop's vLLM servers serve the student, a version is evaluated there, its
    adapter hot-loaded as lessons would load it: no second copy of the model in memory, and
    batched. Otherwise (in-process, or endpoints that cannot load adapters) in-process."""
    if config.student.backend == "vllm":
        if model.base_model != config.student.model:
            raise TeachloopError(
                f"version {model.version} is of {model.base_model}, but the config's servers "
                f"serve the student {config.student.model}: use a config for that model"
            )
        return build_backend(config, "student", LoraAdapter.of(model))
    from teachloop.agents.backends.transformers_backend import TransformersBackend

    return TransformersBackend(
        _base_dir(model.base_model),
        dtype=config.student.dtype,
        max_batch_size=config.student.max_batch_size,
        adapter_dir=model.adapter_path,
        name=f"{model.base_model}@{model.version}",
    )


def _result_from_rows(version: str, seed: int, rows: list[dict]) -> EvalResult:
    topics = [
        TopicScore(
            topic=r["topic"], questions=r["questions"], correct=r["correct"], accuracy=r["accuracy"]
        )
        for r in rows
    ]
    return EvalResult.from_scores(version, seed, topics)


def evaluate_and_promote(config: RunConfig, version: str, *, promote: bool = True) -> GateDecision:
    """Evaluate ``version`` and the promoted incumbent on the same held-out set; promote the
    candidate unless some topic (or the overall accuracy) drops beyond the tolerance."""
    store = Store(config.db)
    incumbent = current_student(store, config.student.model)
    result = evaluate_version(config, version, store=store)
    incumbent_result = (
        result
        if incumbent.version == version
        else evaluate_version(config, incumbent.version, store=store)
    )
    dropped = regressed(result, incumbent_result, config.eval.tolerance)
    do_promote = promote and not dropped and incumbent.version != version
    if do_promote:  # as by hand: it becomes the student even if a newer version was
        _make_student(store, version)
    return GateDecision(
        version=version,
        result=result,
        incumbent=incumbent.version,
        incumbent_result=incumbent_result,
        regressed=dropped,
        promoted=do_promote,
    )
