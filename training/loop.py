"""The periodic loop: lessons -> pairs -> train -> evaluate -> promote, for N rounds or on a
schedule; on a lake, the lessons can run on Ray workers and the lake can be maintained after
each round. It sits above graphs and training and only calls their public functions."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from pydantic import BaseModel, ConfigDict

from teachloop.config import RunConfig
from teachloop.domains import Domain
from teachloop.errors import ConfigError
from teachloop.graphs.distributed import RayOptions, run_lessons_on_ray
from teachloop.graphs.runner import run_lessons
from teachloop.graphs.summary import RunResult
from teachloop.store.maintenance import Maintenance
from teachloop.store.store import Store
from teachloop.training.jobs import GateDecision, JobResult, evaluate_and_promote, train
from teachloop.training.pairs import PairBuild, build_pairs


class RoundResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    round: int
    run: RunResult
    pairs: PairBuild
    job: JobResult
    gate: GateDecision | None
    maintenance: Maintenance | None = None
    seconds: dict[str, float]  # wall time of each step


def run_loop(
    config: RunConfig,
    *,
    rounds: int,
    domains: Sequence[Domain] = (),
    every_s: float = 0.0,
    progress: bool = True,
    on_round: Callable[[RoundResult], None] | None = None,
    ray: RayOptions | None = None,
    maintain: bool = False,
) -> list[RoundResult]:
    """Run ``rounds`` rounds, starting one every ``every_s`` seconds (0: back to back). Each
    round's lessons are a new run, named ``<run_id>-r<k>`` (so a rerun resumes them).
    ``domains``: your own, beside the built-in ones and the config's. On a lake: ``ray`` runs
    each round's lessons on Ray workers, and ``maintain`` runs ``lake maintain`` (default
    ages) after each round, so a long-running loop keeps its lake compact."""
    config = config.with_domains(domains)
    store = Store.of(config)
    if maintain and not store.is_lake:
        raise ConfigError(f"{store.location} is a DuckDB file: --maintain is for lakes")
    prefix = config.with_run_id().run_id
    results: list[RoundResult] = []
    for k in range(rounds):
        began = time.monotonic()
        clock = _Clock()
        round_config = config.with_overrides(run_id=f"{prefix}-r{k}")
        if ray is None:
            run = run_lessons(round_config, progress=progress)
        else:
            run = run_lessons_on_ray(round_config, ray, progress=progress)
        clock.lap("lessons")
        pairs = build_pairs(store)
        clock.lap("pairs")
        job = train(config, progress=progress)
        clock.lap("train")
        gate = None
        if job.version is not None:
            gate = evaluate_and_promote(config, job.version.version)
            clock.lap("eval")
        maintenance = None
        if maintain:
            maintenance = store.maintain()
            clock.lap("maintain")
        result = RoundResult(
            round=k,
            run=run,
            pairs=pairs,
            job=job,
            gate=gate,
            maintenance=maintenance,
            seconds=clock.laps,
        )
        results.append(result)
        if on_round:
            on_round(result)
        if every_s and k + 1 < rounds:
            time.sleep(max(0.0, every_s - (time.monotonic() - began)))
    return results


class _Clock:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 2)
        self._last = now
