"""Viewer benchmark: the time of each `teachloop view` page on a log of ~1M messages (the store
bench's synthetic lessons, 4 runs, with their preference pairs and a trained version).
Run: `.venv/bin/python bench/view_bench.py [--messages N]`.

Pages are requested in-process through Starlette's test client: the store's reads (each on its
own read-only connection, as a served page makes them) and the rendering, not the network.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from figures import Figure, cpu_name
from starlette.testclient import TestClient
from store_bench import synthetic_logs

from teachloop.records import ModelVersion, RunRecord
from teachloop.store.records import EvaluationRow, TrainingJob
from teachloop.store.store import Store
from teachloop.view import app

RUNS = 4
REPEATS = 5
BEGIN, END = "<!-- view-bench:begin -->", "<!-- view-bench:end -->"


def build(path: Path, messages: int) -> Store:
    """The log: lessons in 5,000-lesson transactions, pairs built, one DPO job that made v0001
    (trained on some of the pairs) and held-out evaluations of base and v0001."""
    store = Store(path)
    logs = synthetic_logs(messages, runs=RUNS)
    for r in range(RUNS):
        store.write_run(
            RunRecord(
                run_id=f"bench{r}",
                lessons_planned=len(logs) // RUNS,
                teacher_model="bench",
                student_model="bench",
                config="{}",
            )
        )
    for i in range(0, len(logs), 5000):
        store.write_lessons(logs[i : i + 5000])
    store.build_pairs()
    store.ensure_base("bench")
    steps = [{"step": i, "loss": 1.0 / i, "reward_margin": 0.1 * i} for i in range(1, 51)]
    store.start_job(
        TrainingJob(
            job_id="job-1", method="dpo", status="running", started_at=logs[0].lesson.started_at
        )
    )
    version = ModelVersion(version="v0001", parent_version="base", method="dpo", base_model="bench")
    pairs = [p.pair_id for p in store.pair_page(limit=1000).items]
    store.complete_job("job-1", version, pairs, json.dumps(steps))
    topics = sorted({m.topic for m in logs[0].messages if m.kind == "question"})
    store.write_evaluation(
        [
            EvaluationRow(
                eval_id=f"e-{v}",
                version=v,
                topic=t,
                questions=50,
                correct=20 + 5 * k,
                accuracy=(20 + 5 * k) / 50,
                seed=0,
                created_at=logs[0].lesson.started_at,
            )
            for k, v in enumerate(("base", "v0001"))
            for t in topics
        ]
    )
    return store


def pages(store: Store, page_size: int = 50) -> dict[str, str]:
    """What a visitor opens, with the last page of the longest lists."""
    lessons = store.lesson_page("bench0", limit=1).total
    pairs = store.pair_page(limit=1).total
    middle = store.lesson_page("bench0", offset=lessons // 2, limit=1).items[0].lesson_id
    last_lessons = (lessons - 1) // page_size * page_size
    last_pairs = (pairs - 1) // page_size * page_size
    return {
        "runs": "/",
        "run": "/runs/bench0",
        "lessons, first page": "/runs/bench0/lessons",
        "lessons, last page": f"/runs/bench0/lessons?offset={last_lessons}",
        "lessons, topic + outcome filter": "/runs/bench0/lessons?topic=units.mass&outcome=fixed",
        "lessons, leaked + status filter": "/runs/bench0/lessons?leaked=no&status=complete",
        "lesson (conversation)": f"/lessons/{middle}",
        "pairs, first page": "/pairs",
        "pairs, last page": f"/pairs?offset={last_pairs}",
        "pairs, run + rule filter": "/pairs?run=bench1&rule=reference",
        "training": "/training",
        "plot: learning curves": "/plots/learning_curves.png",
        "plot: held-out accuracy": "/plots/accuracy_by_version.png",
        "plot: pairs by rule": "/plots/pairs_by_rule.png",
        "plot: training curves": "/plots/training_curves.png",
    }


def measure(store: Store) -> dict:
    """Per page: the first request (templates compiled, caches cold) and the median of the
    next REPEATS."""
    client = TestClient(app(store.path), base_url="http://127.0.0.1")
    result: dict = {"pages": {}}
    for name, url in pages(store).items():
        times = []
        for _ in range(REPEATS + 1):
            started = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - started)
            assert response.status_code == 200, (url, response.text[:500])
        result["pages"][name] = {
            "url": url,
            "first_s": times[0],
            "median_s": statistics.median(times[1:]),
        }
    return result


def run(messages: int, db: Path | None = None) -> dict:
    """Build the log (in a temporary directory, or at ``db`` if it does not exist yet: reused
    as it is when it does) and time the pages."""
    load = os.getloadavg()
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    with tempfile.TemporaryDirectory() as tmp:
        path = db or Path(tmp) / "view.duckdb"
        started = time.perf_counter()
        store = Store.open(path) if path.exists() else build(path, messages)
        built_s = time.perf_counter() - started
        result = measure(store)
        counts = store.query(
            "SELECT (SELECT count(*) FROM messages) AS messages, "
            "(SELECT count(*) FROM lessons) AS lessons, "
            "(SELECT count(*) FROM preference_pairs) AS pairs"
        ).to_pylist()[0]
    return {**result, **counts, "build_s": built_s, "load_average": load, "date": date}


def figures() -> list[Figure]:
    result = run(1_000_000)
    slowest = max(result["pages"], key=lambda n: result["pages"][n]["median_s"])
    first = max(result["pages"], key=lambda n: result["pages"][n]["first_s"])
    return [
        Figure(
            bench="view",
            name=f"slowest viewer page at 1M messages, median of {REPEATS} ({slowest})",
            measured=round(result["pages"][slowest]["median_s"], 3),
            unit="s",
            target="<= 1.0",
            note=f"{result['messages']:,} messages, {result['pairs']:,} pairs",
        ),
        Figure(
            bench="view",
            name=f"slowest first request of a viewer page at 1M messages ({first})",
            measured=round(result["pages"][first]["first_s"], 3),
            unit="s",
            target="<= 1.0",
        ),
    ]


def table(result: dict) -> str:
    load = ", ".join(f"{x:.1f}" for x in result["load_average"])
    lines = [
        f"Measured {result['date']} on {cpu_name()}, {os.cpu_count()} cores (load average "
        f"{load} at the start: other work shared the cores); {result['messages']:,} messages, "
        f"{result['lessons']:,} lessons, {result['pairs']:,} pairs.",
        "",
        f"| page | first request | median of the next {REPEATS} |",
        "|---|---:|---:|",
    ]
    for name, r in result["pages"].items():
        lines.append(f"| {name} | {1000 * r['first_s']:.0f} ms | {1000 * r['median_s']:.0f} ms |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, help="keep the log here (reused if it exists)")
    parser.add_argument(
        "--readme", type=Path, help="rewrite the view-bench table in this file (docs/viewer.md)"
    )
    args = parser.parse_args()
    result = run(args.messages, args.db)
    print(f"(log built in {result['build_s']:.0f} s)")
    print(table(result))
    if args.readme:
        text = args.readme.read_text()
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        args.readme.write_text(f"{head}{BEGIN}\n{table(result)}\n{END}{tail}")


if __name__ == "__main__":
    main()
