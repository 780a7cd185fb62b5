"""Lesson checkpoints in PostgreSQL, for runs on a lake (imported only then: the scale extra).

LangGraph's ``AsyncPostgresSaver`` on one connection, with its writes grouped: the checkpoints
and writes that the steps of one event-loop pass save are sent together, in one pipeline and one
transaction (``GroupedPostgresSaver``), as ``LoopSqliteSaver`` groups its commits beside a file.
Ungrouped, every step cost a round trip to the server: a run on a lake measured 350-380
messages/s in one process against 770-870 beside a DuckDB file (SQLite checkpoints in-process),
most of the difference waiting on psycopg (profiled). A connection pool with the saver's lock
removed (operations concurrent) measured the same (350-360), so the lock was not what cost: the
round trips and the server's own CPU on the same 2 cores were.

Durability is the SQLite saver's: a process killed loses at most the steps whose group was not
yet committed, and a lost step is run again on resume with the same message ids. What is in
PostgreSQL is always a prefix of what was saved, whole groups in order, because each group is
one transaction and groups are sent one at a time. (A first grouped version, in 2026-11, sent
a pass's statements in a pipeline without a transaction, and a resumed lesson then missed a
channel, ``KeyError: 'problem'``, in 1-2 of 5 SIGKILL runs; its code was not kept, so which
difference mattered was not isolated: this one also never adds to a group already being sent.
Both kill tests passed 8 of 8 runs with it.) Reads wait for what was queued before them, so
they see every write saved earlier.

A dropped connection (the server restarted: a failover, an upgrade) is replaced, waiting up to
``reconnect_timeout_s`` for the server, and what it was doing is done again: the group being
sent goes again whole (it is one transaction of LangGraph's upserts, ``ON CONFLICT``, and
deletes, so a group that committed before the drop leaves the same rows), and a read
(``aget_tuple``, ``aget_delta_channel_history``: what lessons and resume use) is asked again.
Past the wait every call raises ``CatalogUnavailable``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import CheckpointTuple, DeltaChannelHistory
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import DictRow, dict_row

from teachloop.errors import CatalogUnavailable
from teachloop.store.lake import (
    RECONNECT_TIMEOUT_S,
    catalog_answers,
    catalog_deadline,
    redact,
)

T = TypeVar("T")
_POLL_S = 0.5


class _Recorder:
    """Stands in for the cursor the saver writes through: queues the statements, in order."""

    def __init__(self, saver: GroupedPostgresSaver) -> None:
        self.saver = saver

    async def execute(self, query: str, params: Any = None) -> None:
        self.saver._queue_statement(query, [params])

    async def executemany(self, query: str, params_seq: Sequence[Any]) -> None:
        self.saver._queue_statement(query, list(params_seq))


class GroupedPostgresSaver(AsyncPostgresSaver):
    """``AsyncPostgresSaver`` whose writes (``aput``, ``aput_writes``, ``adelete_thread``: every
    statement the saver sends in pipeline mode) are queued and sent a group at a time."""

    conn: AsyncConnection[DictRow]

    def __init__(self, conn: AsyncConnection[DictRow], serde: SerializerProtocol) -> None:
        super().__init__(conn, serde=serde)
        self._queue: list[tuple[str, list[Any]]] = []
        self._queued = 0  # statements queued so far
        self._sent = 0  # statements committed so far
        self._sender: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None
        # Set by open_postgres_saver: without a conninfo a dropped connection is an error.
        self.conninfo: str | None = None
        self.reconnect_timeout_s = RECONNECT_TIMEOUT_S
        self.reconnects = 0
        self._opened: list[AsyncConnection[DictRow]] = []  # by reconnecting; closed at the end

    @asynccontextmanager
    async def _cursor(self, *, pipeline: bool = False) -> AsyncIterator[AsyncCursor[DictRow]]:
        self._raise_failure()
        if pipeline:  # a write: queued, to go with the rest of this pass's
            yield _Recorder(self)  # type: ignore[misc]
            return
        await self.flush()  # a read sees every write saved before it
        async with super()._cursor() as cur:
            yield cur

    def _queue_statement(self, query: str, params: list[Any]) -> None:
        self._queue.append((query, params))
        self._queued += 1
        # After a failed group nothing more is sent: what PostgreSQL holds stays a prefix.
        if self._failed is None and (self._sender is None or self._sender.done()):
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        """Send the queue as one group in one transaction. Runs as a task, so what the loop's
        pass queues after the first statement joins the group; what is queued while it is
        sent goes in the next, which the next task sends once this one is committed."""
        group, self._queue = self._queue, []
        try:
            async with self.lock:
                while True:
                    conn = self.conn
                    try:
                        async with (
                            conn.pipeline(),
                            conn.transaction(),
                            conn.cursor(binary=True) as cur,
                        ):
                            for query, params in group:
                                await cur.executemany(query, params)
                        break
                    except psycopg.Error as e:
                        if not await self._dropped(conn):
                            raise
                        await self._reconnect(conn, e)  # then the same group again
        except BaseException as e:
            # Held for the next checkpoint call or flush, which raise it and stop the run (a
            # task's exception alone would only be logged when it is garbage-collected).
            self._failed = e
            if not isinstance(e, Exception):
                raise
            return
        self._sent += len(group)
        if self._queue:
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def flush(self) -> None:
        """Wait until every write queued so far is committed (not those queued later: under
        load the queue is never empty)."""
        target = self._queued
        while self._sent < target:
            self._raise_failure()
            assert self._sender is not None
            await asyncio.shield(self._sender)
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self._failed is not None:
            raise self._failed

    # -- a dropped connection ------------------------------------------------------------------

    async def _dropped(self, conn: AsyncConnection[DictRow]) -> bool:
        """Whether ``conn`` is gone: marked so, or (a server drop mid-pipeline can leave it
        looking alive with its pipeline aborted: "cannot exit pipeline mode while busy") it no
        longer answers a ping."""
        if self.conninfo is None:
            return False
        if conn.broken or conn.closed:
            return True
        try:
            await asyncio.wait_for(conn.execute("SELECT 1"), timeout=5)
        except Exception:
            return True
        return False

    async def _reconnect(self, dropped: AsyncConnection[DictRow], error: Exception) -> None:
        """Replace ``dropped`` (if no one has yet), waiting for the server to come back. Call it
        holding ``self.lock``."""
        if self.conn is not dropped:
            return
        assert self.conninfo is not None
        with suppress(Exception):
            await dropped.close()
        deadline = catalog_deadline(self.conninfo, self.reconnect_timeout_s)
        while True:
            try:
                conn = await AsyncConnection.connect(
                    self.conninfo,
                    autocommit=True,
                    prepare_threshold=0,
                    row_factory=dict_row,
                    connect_timeout=2,
                )
                break
            except psycopg.OperationalError as e:
                if time.monotonic() >= deadline:
                    catalog_answers(self.conninfo, False)
                    self._failed = CatalogUnavailable(
                        f"checkpoints in {redact(self.conninfo)}: PostgreSQL did not come back "
                        f"in time ([store] reconnect_timeout_s): {_one_line(e)} (after: "
                        f"{_one_line(error)})"
                    )
                    raise self._failed from None
                await asyncio.sleep(_POLL_S)
        catalog_answers(self.conninfo, True)
        self.conn = conn
        self._opened.append(conn)
        self.reconnects += 1

    async def _read(self, read: Callable[[], Awaitable[T]]) -> T:
        """``read()``, asked again on a new connection if the server dropped this one."""
        while True:
            conn = self.conn
            try:
                return await read()
            except psycopg.Error as e:
                if not await self._dropped(conn):
                    raise
                async with self.lock:
                    await self._reconnect(conn, e)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._read(lambda: super(GroupedPostgresSaver, self).aget_tuple(config))

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        parent = super()
        return await self._read(
            lambda: parent.aget_delta_channel_history(config=config, channels=channels)
        )

    async def aclose_reconnected(self) -> None:
        for conn in self._opened:
            with suppress(Exception):
                await conn.close()


@asynccontextmanager
async def open_postgres_saver(
    conninfo: str, serde: SerializerProtocol, reconnect_timeout_s: float = RECONNECT_TIMEOUT_S
) -> AsyncIterator[GroupedPostgresSaver]:
    async with GroupedPostgresSaver.from_conn_string(conninfo, serde=serde) as saver:
        assert isinstance(saver, GroupedPostgresSaver)
        saver.conninfo = conninfo
        saver.reconnect_timeout_s = reconnect_timeout_s
        await _setup_once(saver)
        try:
            yield saver
        finally:  # however the run ended: send what was saved
            try:
                await saver.flush()
            finally:
                await saver.aclose_reconnected()


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__


# The advisory lock key under which one process at a time creates the checkpoint tables.
_SETUP_LOCK = 0x7EAC4_100B


async def _setup_once(saver: AsyncPostgresSaver) -> None:
    """Create the tables, one process at a time: workers start together, and ``setup`` run twice
    at once collides on its migration rows. The lock is polled, not waited for: a session
    waiting in ``pg_advisory_lock`` is a transaction, and the holder's ``CREATE INDEX
    CONCURRENTLY`` waits for every transaction to end (a deadlock, measured with 4 workers)."""
    conn = saver.conn
    assert isinstance(conn, AsyncConnection)
    while not await _try_lock(conn):
        await asyncio.sleep(0.05)
    try:
        await saver.setup()
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", [_SETUP_LOCK])


async def _try_lock(conn: AsyncConnection) -> bool:
    cursor = await conn.execute("SELECT pg_try_advisory_lock(%s) AS locked", [_SETUP_LOCK])
    row = await cursor.fetchone()
    return bool(row and row["locked"])  # type: ignore[index]
