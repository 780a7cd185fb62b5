"""One run's lessons spread over Ray workers, all writing one lake (README "Scaling out").

The driver records the run, splits the lessons not yet logged into one share per worker
(``plan_run``) and starts a Ray task per share (``lesson_worker``; `bench/lake_bench.py` runs the
same shares in plain processes). Each task drives its share as ``run_lessons`` would in one process
(lessons concurrently against the endpoint pool, finished lessons flushed to the lake in
batches) with its checkpoints in PostgreSQL. A task whose process dies (SIGKILL, a lost
machine) is rerun by Ray (``max_retries``) on another worker: lessons already in the lake are
skipped, the others resume from their last checkpoint. Each lesson has one writer at a time and
deterministic message ids, and every write inserts only ids not yet stored, so the log ends
with every message once. The driver's bar counts the lessons the lake holds.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence

from pydantic import BaseModel, Field

from teachloop.agents.backends import Backend
from teachloop.agents.mastery import MasteryModel
from teachloop.config import RunConfig
from teachloop.domains import build_domains
from teachloop.errors import BackendUnavailable, ConfigError
from teachloop.graphs.runner import (
    _Runner,
    lesson_backends,
    lesson_id,
    promoted_student,
    start_run,
)
from teachloop.graphs.summary import RunResult, summarize
from teachloop.progress import progress_bar
from teachloop.records import ModelVersion, versioned_model
from teachloop.store.store import Store

_POLL_S = 0.5
# A killed worker's task is rerun this many times before the run fails.
_TASK_RETRIES = 3


class RayOptions(BaseModel):
    """``address``: "local" (a private cluster on this machine, stopped after the run), "auto"
    (the cluster this machine belongs to) or a head's address ("10.0.0.1:6379"). A Ray that
    is already initialized in this process is used as it is."""

    address: str = "local"
    workers: int = Field(default=2, ge=1)
    cpus_per_worker: float = Field(default=1.0, ge=0)


class WorkerResult(BaseModel):
    lessons: int
    failed: int
    pid: int


class RunPlan(BaseModel):
    """A recorded run split for its workers: ``shares`` holds the lessons not yet logged, one
    list per worker (none empty); ``resumed`` counts the lessons already logged."""

    config: RunConfig  # with its run id fixed
    version: ModelVersion
    student_model: str  # as the run records it: model@version
    shares: list[list[int]]
    resumed: int


def plan_run(store: Store, config: RunConfig, workers: int) -> RunPlan:
    """Record the run in its lake ``store`` (``start_run``) and split the lessons it has not
    logged yet into one share per worker, each to be driven by ``lesson_worker``."""
    if not store.is_lake:
        raise ConfigError(
            "--ray needs a lake every worker can write: --db ducklake:postgres:... (a DuckDB "
            "file has one writer)"
        )
    config = config.with_run_id()
    assert config.run_id is not None
    version = promoted_student(store, config)
    student_model = versioned_model(config.student.model, version.version)
    start_run(store, config, student_model)
    done = store.finished_lessons(config.run_id)
    todo = [i for i in range(config.lessons) if lesson_id(config.run_id, i) not in done]
    shares = [s for s in (todo[k::workers] for k in range(workers)) if s]
    return RunPlan(
        config=config,
        version=version,
        student_model=student_model,
        shares=shares,
        resumed=len(done),
    )


def lesson_worker(
    config: RunConfig,
    indices: list[int],
    version: ModelVersion,
    teacher_backend: Backend | None = None,
    student_backend: Backend | None = None,
) -> WorkerResult:
    """A Ray task: drive lessons ``indices`` of ``config``'s run into its lake."""
    return asyncio.run(_work(config, indices, version, teacher_backend, student_backend))


async def _work(
    config: RunConfig,
    indices: list[int],
    version: ModelVersion,
    teacher: Backend | None,
    student: Backend | None,
) -> WorkerResult:
    store = Store.of(config)
    assert config.run_id is not None
    async with lesson_backends(config, version, teacher, student) as (teacher, student):
        runner = _Runner(
            config, config.run_id, store, build_domains(config), teacher, student, version
        )
        finished = 0

        def advance() -> None:
            nonlocal finished
            finished += 1

        await runner.lessons(indices, advance)
        return WorkerResult(lessons=finished, failed=len(runner.failed), pid=os.getpid())


def run_lessons_on_ray(
    config: RunConfig,
    ray_options: RayOptions,
    *,
    teacher_backend: Backend | None = None,
    student_backend: Backend | None = None,
    progress: bool = True,
) -> RunResult:
    """Run ``config.lessons`` lessons on Ray workers into the lake ``config.db``; returns the
    run's summary, as ``run_lessons`` does. Backends given here are sent to every worker (they
    must pickle); by default each worker builds the config's."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs the scale extra: pip install 'teachloop[scale]'") from None
    started = time.perf_counter()
    store = Store.of(config)
    plan = plan_run(store, config, ray_options.workers)
    config, version = plan.config, plan.version
    run_id = config.run_id
    assert run_id is not None

    ours = not ray.is_initialized()
    if ours:
        _init_ray(ray, ray_options)
    status = "interrupted"
    try:
        task = ray.remote(lesson_worker).options(
            max_retries=_TASK_RETRIES, num_cpus=ray_options.cpus_per_worker
        )
        refs = [
            task.remote(config, share, version, teacher_backend, student_backend)
            for share in plan.shares
        ]
        with progress_bar("lessons" if progress else None, config.lessons, plan.resumed) as bar:
            pending = list(refs)
            while pending:
                _, pending = ray.wait(pending, timeout=_POLL_S)
                bar.update(len(store.finished_lessons(run_id)))
        results = [WorkerResult.model_validate(r) for r in _results(ray, refs)]
        status = "failed" if any(r.failed for r in results) else "complete"
    finally:
        store.finish_run(run_id, status)
        if ours:
            ray.shutdown()
    estimate = MasteryModel.from_counts(
        store.mastery_counts(plan.student_model, run_id=run_id),
        start_difficulty=config.lesson.start_difficulty,
    )
    return summarize(
        store,
        run_id,
        estimate,
        config.topics,
        wall_time_s=time.perf_counter() - started,
        lessons_resumed=plan.resumed,
    )


def _init_ray(ray: object, options: RayOptions) -> None:
    if options.address == "local":
        # A private cluster with room for every worker at once (tasks ask for cpus_per_worker).
        cpus = max(os.cpu_count() or 1, int(options.workers * options.cpus_per_worker + 0.999))
        ray.init(  # type: ignore[attr-defined]
            address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False
        )
    else:
        ray.init(address=options.address, log_to_driver=False)  # type: ignore[attr-defined]


def _results(ray: object, refs: Sequence[object]) -> list[object]:
    """The workers' results; a worker's own error (an endpoint down, a bad config) is raised
    as itself, not wrapped in Ray's."""
    try:
        return ray.get(list(refs))  # type: ignore[attr-defined]
    except ray.exceptions.RayTaskError as e:  # type: ignore[attr-defined]
        cause = e.cause if isinstance(e.cause, Exception) else None
        if isinstance(cause, BackendUnavailable | ConfigError):
            raise cause from None
        raise
