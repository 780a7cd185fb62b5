"""LangGraph's checkpointer conformance suite (``langgraph-checkpoint-conformance``) on the two
savers the runner uses: ``LoopSqliteSaver`` beside a DuckDB file and ``GroupedPostgresSaver``
beside a lake (on the session's embedded PostgreSQL, a fresh database per capability suite).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

from lake_support import Postgres
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import CapabilityReport

from teachloop.graphs.checkpoints import LoopSqliteSaver
from teachloop.graphs.lesson import checkpoint_serde


def assert_conforms(report: CapabilityReport) -> None:
    """Every base capability passed (``passed_all`` alone would pass a saver whose methods
    went undetected), and every extended one the saver implements."""
    report.print_report()  # shown with -s, or under a failure
    failures = "\n".join(
        f"{cap}: {failure}"
        for cap, result in report.results.items()
        for failure in (result.failures or [])
    )
    assert report.passed_all_base() and report.passed_all(), failures or report.to_dict()


async def test_loop_sqlite_saver_conforms(tmp_path: Path) -> None:
    paths = (tmp_path / f"suite-{i}.sqlite" for i in itertools.count())

    @checkpointer_test(name="LoopSqliteSaver")
    async def sqlite_saver() -> AsyncIterator[LoopSqliteSaver]:
        with LoopSqliteSaver.open(next(paths), checkpoint_serde()) as saver:
            yield saver

    assert_conforms(await validate(sqlite_saver))


async def test_grouped_postgres_saver_conforms(postgres: Postgres) -> None:
    from teachloop.graphs.postgres_saver import GroupedPostgresSaver, open_postgres_saver

    names = (f"conformance_{i}" for i in itertools.count())

    @checkpointer_test(name="GroupedPostgresSaver")
    async def postgres_saver() -> AsyncIterator[GroupedPostgresSaver]:
        name = next(names)
        postgres.create_database(name)
        async with open_postgres_saver(postgres.conninfo(name), checkpoint_serde()) as saver:
            yield saver

    report = await validate(postgres_saver)
    assert_conforms(report)
    assert report.results["prune"].tests_passed == 8  # AsyncPostgresSaver.aprune, grouped
