"""Short-lived connections to one DuckDB file, shared by the store's parts.

DuckDB lets one process hold a file open for writing, and while it does no other process can
open it at all. So nothing holds a connection open: every write batch and every query opens,
works and closes, retrying while another process holds the lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from teachloop.errors import StoreError

_LOCK_WAIT_S = 60.0
# One writer per file within a process. Across processes DuckDB's file lock already allows only
# one; within one, connections share the database and two transactions could both append the
# same new message (no key stops them): this lock keeps ``insert_new``'s check-then-insert whole.
_WRITERS: dict[Path, threading.Lock] = {}
_WRITERS_LOCK = threading.Lock()


def utcnow() -> datetime:
    return datetime.now(UTC)


class DuckDBFile:
    """A DuckDB file opened per operation. ``read_only``: no connection that could write is
    ever opened (the read-only commands' guarantee that the file is left as it was)."""

    path: Path
    read_only: bool = False

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
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
    def writing(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write connection held as this process's only writer of the file."""
        with _WRITERS_LOCK:
            lock = _WRITERS.setdefault(self.path.resolve(), threading.Lock())
        with lock, self.connect() as con:
            yield con

    def query(self, sql: str, params: list | dict | None = None) -> pa.Table:
        with self.connect(read_only=True) as con:
            return con.execute(sql, params or []).to_arrow_table()


def insert_new(
    con: duckdb.DuckDBPyConnection, table: str, relation: str, key: tuple[str, ...]
) -> None:
    """Insert the rows of ``relation`` whose ``key`` columns are not in ``table`` yet (and each
    key once): idempotent writes without a PRIMARY KEY. Call it inside the transaction, under
    ``writing``."""
    match = " AND ".join(f"t.{c} = b.{c}" for c in key)
    con.execute(
        f"INSERT INTO {table} BY NAME SELECT * FROM {relation} b "
        f"WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE {match}) "
        f"QUALIFY row_number() OVER (PARTITION BY {', '.join(f'b.{c}' for c in key)}) = 1"
    )
