"""Where the store's tables live, and the SQL helpers its parts share.

A store reaches its tables through a ``Database``: ``DuckDBFile`` (here) or ``DuckLake``
(``lake.py``). DuckDB lets one process hold a file open for writing, and while it does no other
process can open it at all. So nothing holds a file open: every write batch and every query opens,
works and closes, retrying while another process holds the lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar

import duckdb
import pyarrow as pa

from teachloop.errors import StoreError

Connection = duckdb.DuckDBPyConnection
T = TypeVar("T")

_LOCK_WAIT_S = 60.0
# One writer per file within a process. Across processes DuckDB's file lock already allows only
# one; within one, connections share the database and two transactions could both append the
# same new message (no key stops them): this lock keeps ``insert_new``'s check-then-insert whole.
_WRITERS: dict[str, threading.Lock] = {}
_WRITERS_LOCK = threading.Lock()


def utcnow() -> datetime:
    return datetime.now(UTC)


class Database(Protocol):
    """Where a store's tables live: a DuckDB file (``DuckDBFile``) or a lake
    (``teachloop.store.lake.DuckLake``). The store's SQL is the same for both."""

    location: str  # what messages name: the file's path, the lake's target
    read_only: bool

    def exists(self) -> bool: ...

    def connect(self, *, read_only: bool = False) -> AbstractContextManager[Connection]: ...

    def writing(self) -> AbstractContextManager[Connection]: ...

    def read(self, work: Callable[[Connection], T]) -> T:
        """``work`` on a read-only connection (a lake's is run again across a catalog
        restart)."""
        ...


def query(db: Database, sql: str, params: list | dict | None = None) -> pa.Table:
    return db.read(lambda con: con.execute(sql, params or []).to_arrow_table())


class Connected:
    """The store's parts reach their tables through ``self.db``."""

    db: Database

    @property
    def location(self) -> str:
        return self.db.location

    @property
    def read_only(self) -> bool:
        return self.db.read_only

    def connect(self, *, read_only: bool = False) -> AbstractContextManager[Connection]:
        return self.db.connect(read_only=read_only)

    def writing(self) -> AbstractContextManager[Connection]:
        """A write connection held as this process's only writer of the store."""
        return self.db.writing()

    def query(self, sql: str, params: list | dict | None = None) -> pa.Table:
        return query(self.db, sql, params)

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Keep the database open through the block: each read inside it still opens and closes
        its own connection, but DuckDB then reuses the open instance instead of opening the file
        again (~1 ms instead of ~20-25 ms each, measured). For several reads in a row (a page of
        ``teachloop view``); a writer in another process waits until the block ends."""
        with self.connect(read_only=True):
            yield


class DuckDBFile:
    """A DuckDB file opened per operation. ``read_only``: no connection that could write is
    ever opened (the read-only commands' guarantee that the file is left as it was)."""

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self.read_only = read_only

    def exists(self) -> bool:
        return self.path.exists()

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[Connection]:
        """A short-lived connection; waits (with backoff) while another process holds the file."""
        if self.read_only and not read_only:
            raise StoreError(f"database {self.path} is open read-only: this would write to it")
        deadline = time.monotonic() + _LOCK_WAIT_S
        delay = 0.01
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except (duckdb.IOException, duckdb.ConnectionException) as e:
                # Busy: another process holds the lock, or (same message family, in-process)
                # another thread's write connection is open and this one is read-only.
                busy = any(s in str(e).lower() for s in ("lock", "different configuration"))
                if not busy or time.monotonic() > deadline:
                    raise StoreError(f"cannot open database {self.path}: {e}") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        with writer_lock(str(self.path.resolve())), self.connect() as con:
            yield con

    def read(self, work: Callable[[Connection], T]) -> T:
        with self.connect(read_only=True) as con:
            return work(con)


def writer_lock(location: str) -> threading.Lock:
    """The process's one lock for writing to ``location``."""
    with _WRITERS_LOCK:
        return _WRITERS.setdefault(location, threading.Lock())


# The columns that identify a row of each table. The DuckDB file declares most of them as
# PRIMARY KEYs, a lake (DuckLake) cannot declare any: every write goes through ``insert_new`` or
# ``upsert`` with these, so the same SQL keeps rows unique in both.
KEYS: dict[str, tuple[str, ...]] = {
    "teachloop_meta": ("key",),
    "runs": ("run_id",),
    "lessons": ("lesson_id",),
    "messages": ("message_id",),
    "mastery": ("lesson_id", "question_index"),
    "preference_pairs": ("pair_id",),
    "training_jobs": ("job_id",),
    "model_versions": ("version",),
    "evaluations": ("eval_id", "topic"),
    "experiments": ("experiment",),
    "experiment_arms": ("experiment", "seed", "arm"),
    "experiment_outcomes": ("experiment", "seed", "arm", "question_index"),
    "experiment_seeds": ("experiment", "seed"),
    "experiment_examples": ("experiment", "seed", "arm", "position"),
    "experiment_validation": ("experiment", "seed", "question_index"),
}


def _key(table: str) -> tuple[tuple[str, ...], str]:
    """``table``'s key columns (``table`` may be qualified) and the condition that a row ``t``
    of it and a row ``b`` of a batch have the same key."""
    key = KEYS[table.rsplit(".", 1)[-1]]
    return key, " AND ".join(f"t.{c} = b.{c}" for c in key)


def insert_new_sql(table: str, relation: str) -> str:
    """``INSERT`` of the rows of ``relation`` whose key is not in ``table`` yet (each key once)."""
    key, match = _key(table)
    return (
        f"INSERT INTO {table} BY NAME SELECT * FROM {relation} b "
        f"WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE {match}) "
        f"QUALIFY row_number() OVER (PARTITION BY {', '.join(f'b.{c}' for c in key)}) = 1"
    )


def insert_new(
    con: duckdb.DuckDBPyConnection, table: str, relation: str, params: list | None = None
) -> None:
    """Insert the rows of ``relation`` whose key (``KEYS``) is not in ``table`` yet: idempotent
    writes without a PRIMARY KEY (``INSERT OR IGNORE`` where there may be none). Call it inside
    the transaction; for tables many threads append to, under ``writing``."""
    con.execute(insert_new_sql(table, relation), params or [])


def upsert(
    con: duckdb.DuckDBPyConnection, table: str, relation: str, params: list | None = None
) -> None:
    """Replace the rows of ``table`` whose key is in ``relation`` by ``relation``'s (``INSERT OR
    REPLACE`` where there may be no key). Call it inside a transaction."""
    _, match = _key(table)
    con.execute(
        f"DELETE FROM {table} t WHERE EXISTS (SELECT 1 FROM {relation} b WHERE {match})",
        params or [],
    )
    insert_new(con, table, relation, params)


def set_meta(con: duckdb.DuckDBPyConnection, key: str, value: str) -> None:
    upsert(con, "teachloop_meta", "(SELECT ?::VARCHAR AS key, ?::VARCHAR AS value)", [key, value])
