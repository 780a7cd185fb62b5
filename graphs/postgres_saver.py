"""Lesson checkpoints in PostgreSQL, for runs on a lake (imported only then: the scale extra).

LangGraph's ``AsyncPostgresSaver`` on one connection. Each step costs a round trip to the
server: a run on a lake measured 350-380 messages/s in one process against 770-870 beside a
DuckDB file (SQLite checkpoints in-process), most of the difference waiting on psycopg
(profiled). A connection pool with the saver's lock removed (operations concurrent) measured
the same (350-360), so the lock is not what costs: the round trips and the server's own CPU on
the same 2 cores are. Sending the writes of one event-loop pass in one pipeline (as
``LoopSqliteSaver`` groups its commits; reads sending the queue first) measured 504-509
messages/s, but a resumed lesson then failed with a missing channel (``KeyError: 'problem'``)
in 1-2 of 5 SIGKILL runs of ``tests/test_lake.py``, against 0 of 6 without it: not kept until
that is understood.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.base import SerializerProtocol
from psycopg import AsyncConnection

# The advisory lock key under which one process at a time creates the checkpoint tables.
_SETUP_LOCK = 0x7EAC4_100B


@asynccontextmanager
async def open_postgres_saver(
    conninfo: str, serde: SerializerProtocol
) -> AsyncIterator[AsyncPostgresSaver]:
    async with AsyncPostgresSaver.from_conn_string(conninfo, serde=serde) as saver:
        await _setup_once(saver)
        yield saver


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
