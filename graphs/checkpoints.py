"""The runner's checkpointers: LangGraph's SQLite saver, driven from the event loop's thread,
beside a DuckDB file; LangGraph's PostgreSQL saver beside a lake (``open_checkpointer``).

LangGraph's ``AsyncSqliteSaver`` sends every statement, cursor and commit through aiosqlite's
worker thread, and each of those is a round trip between threads; a checkpoint and its writes
take about seven, and with 16 lessons in flight the runner spent most of its time waiting for
them (measured: 383 messages/s with it against 1,016 with LangGraph's in-memory saver). The
same saver's synchronous methods run each statement in tens of microseconds, so calling them
directly from the loop costs far less than handing them to a thread.

Commits are grouped: the statements of one pass of the event loop (the steps of all the lessons
that ran in it) commit together at its end, instead of one commit per statement (a commit cost
about 115 us here, more than the insert: 608 -> 702-729 messages/s). Waiting longer did not pay:
commits every 50 ms measured 752 against 734 messages/s per pass, alternating runs, within the
noise. Durability: WAL with ``synchronous=NORMAL``. A process killed (SIGKILL, OOM) loses at
most the steps of the pass under way, and a step whose checkpoint is lost is simply run again on
resume, with the same message ids: exactly what happens to a step the kill interrupts anyway.
An operating-system crash or power loss can roll back the last commits, with the same effect.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.sqlite import SqliteSaver

from teachloop.errors import StoreError
from teachloop.store.lake import RECONNECT_TIMEOUT_S, catalog_conninfo, is_lake, redact


class LoopSqliteSaver(SqliteSaver):
    """``SqliteSaver`` whose async methods run on the calling (event loop) thread, with the
    commits of one event-loop pass grouped."""

    _scheduled: asyncio.Handle | None = None
    _dirty = False

    @contextmanager
    def cursor(self, transaction: bool = True) -> Iterator[sqlite3.Cursor]:
        with super().cursor(transaction=False) as cur:
            yield cur
        if transaction:
            self._dirty = True
            self._commit_soon()

    def _commit_soon(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside a loop (the sync API): commit now
            self._commit()
            return
        if self._scheduled is None:
            self._scheduled = loop.call_soon(self._commit)

    def _commit(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if self._dirty:
            with self.lock:
                self.conn.commit()
            self._dirty = False

    @classmethod
    @contextmanager
    def open(
        cls, path: str | Path, serde: SerializerProtocol | None = None
    ) -> Iterator[LoopSqliteSaver]:
        conn = sqlite3.connect(str(path), check_same_thread=False)
        saver = cls(conn, serde=serde)
        try:
            saver.setup()
            conn.execute("PRAGMA synchronous=NORMAL")
            yield saver
        finally:  # however the run ended: commit what was saved, leave nothing scheduled
            saver._commit()
            conn.close()

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.get_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for item in self.list(config, filter=filter, before=before, limit=limit):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self.put_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        self.delete_thread(thread_id)

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return self.get_delta_channel_history(config=config, channels=channels)


def checkpoint_path(db: Path) -> Path:
    return db.with_name(db.name + ".checkpoints.sqlite")


@asynccontextmanager
async def open_checkpointer(
    db: str | Path, serde: SerializerProtocol, reconnect_timeout_s: float = RECONNECT_TIMEOUT_S
) -> AsyncIterator[BaseCheckpointSaver]:
    """The checkpointer a run's lessons resume from. Beside a DuckDB file: SQLite next to it
    (one process drives the run). For a lake: LangGraph's PostgreSQL saver in the catalog's
    database, which every worker on every machine reaches, so another worker can resume a
    killed one's lessons (its tables, ``checkpoints*``, sit beside DuckLake's ``ducklake_*``);
    a dropped connection is replaced, waiting up to ``reconnect_timeout_s`` for the server."""
    if not is_lake(db):
        with LoopSqliteSaver.open(checkpoint_path(Path(db)), serde) as saver:
            yield saver
        return
    try:
        from psycopg import Error as PostgresError

        from teachloop.graphs.postgres_saver import open_postgres_saver
    except ImportError:
        raise StoreError(
            "checkpoints for a lake need the scale extra: pip install 'teachloop[scale]'"
        ) from None
    conninfo = catalog_conninfo(str(db))
    try:
        async with open_postgres_saver(conninfo, serde, reconnect_timeout_s) as saver:
            yield saver
    except PostgresError as e:
        raise StoreError(f"checkpoints in {redact(conninfo)}: {' '.join(str(e).split())}") from None
