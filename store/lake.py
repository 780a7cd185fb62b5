"""A store on DuckLake: the same tables and views as the DuckDB file, in Parquet files on storage
every machine mounts, with the catalog in PostgreSQL, so many processes on many machines write
and read one log at once (README "Scaling out").

A target is ``ducklake:postgres:<libpq conninfo>`` (e.g. ``ducklake:postgres:dbname=teach
host=db.internal user=teach``), the catalog DuckLake keeps in that PostgreSQL database; the data
path (Parquet files) is given when the lake is created and stored in the catalog, so later users
need only the target. One process keeps one attached connection (attaching costs ~0.2 s, loading
the extensions ~0.7 s) and hands out a cursor per operation.

DuckLake has no PRIMARY KEY or UNIQUE: rows stay unique by design (every write is
``insert_new``/``upsert`` on the keys in ``base.KEYS``, each lesson has one writer and
deterministic message ids) and the views count a duplicate that slips through once.

A restart of the catalog's PostgreSQL (a failover, an upgrade) is waited for, up to
``reconnect_timeout_s``: a read that fails while the catalog is unreachable is retried once it
is back (reads fail with a catchable error, measured); writes run in a child process
(``lake_writer``), because a write the restart interrupts aborts the process that runs it.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import duckdb

from teachloop.config import LAKE_PREFIX
from teachloop.environment import default_cache_root
from teachloop.errors import CatalogUnavailable, StoreError
from teachloop.store.base import Connection, writer_lock

_CATALOG = "lake"
T = TypeVar("T")
# DuckLake retries a commit that conflicts with another writer's (10 times by default); with many
# workers committing small batches that can run out, so allow more.
_MAX_COMMIT_RETRIES = 100
RECONNECT_TIMEOUT_S = 60.0  # [store] reconnect_timeout_s
_POLL_S = 0.5
# Errors in the query itself, never retried.
_QUERY_ERRORS = (
    duckdb.ParserException,
    duckdb.BinderException,
    duckdb.CatalogException,
    duckdb.ConversionException,
)


def is_lake(target: str | Path) -> bool:
    return isinstance(target, str) and target.startswith(LAKE_PREFIX)


def catalog_conninfo(target: str) -> str:
    """The PostgreSQL conninfo of a ``ducklake:postgres:...`` target (for the checkpointer)."""
    catalog = target.removeprefix(LAKE_PREFIX)
    if not catalog.startswith("postgres:"):
        raise StoreError(
            f"lake {redact(target)}: only a PostgreSQL catalog is supported "
            "(ducklake:postgres:dbname=... host=... user=...)"
        )
    return catalog.removeprefix("postgres:")


def catalog_down(target: str) -> str | None:
    """Why the lake's catalog cannot be reached now (one line), or None if it answers."""
    import psycopg  # the scale extra, which a lake needs anyway

    try:
        with psycopg.connect(catalog_conninfo(target), connect_timeout=2) as con:
            con.execute("SELECT 1")
    except psycopg.Error as e:
        return " ".join(str(e).split())[:300] or type(e).__name__
    return None


# Catalogs (conninfo) that a wait ran out on: later waits in this process give up at once (the
# command is ending: its last writes must not wait again, one after another).
_GIVEN_UP: set[str] = set()


def catalog_deadline(conninfo: str, timeout_s: float) -> float:
    """When a wait for the catalog that starts now gives up (``time.monotonic()``)."""
    return time.monotonic() + (0.0 if conninfo in _GIVEN_UP else timeout_s)


def catalog_answers(conninfo: str, answers: bool) -> None:
    """Record that a wait for the catalog ended: it answered, or the wait ran out."""
    if answers:
        _GIVEN_UP.discard(conninfo)
    else:
        _GIVEN_UP.add(conninfo)


def wait_for_catalog(target: str, deadline: float, reason: str) -> None:
    """Return once the lake's catalog answers; past ``deadline`` (``time.monotonic()``) raise
    ``CatalogUnavailable`` naming it and ``reason`` (what failed)."""
    conninfo = catalog_conninfo(target)
    while (down := catalog_down(target)) is not None:
        if time.monotonic() >= deadline:
            catalog_answers(conninfo, False)
            raise CatalogUnavailable(
                f"the catalog of lake {redact(target)} did not come back in time ([store] "
                f"reconnect_timeout_s): {down} (after: {reason})"
            )
        time.sleep(_POLL_S)
    catalog_answers(conninfo, True)


def redact(target: str) -> str:
    """The target as messages may show it: without a password."""
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", target)


def _extension_dir() -> Path:
    return default_cache_root() / "duckdb-extensions"


def _load_extensions(con: Connection) -> None:
    """DuckDB cannot download extensions offline: the wheels of the `scale` extra carry them."""
    directory = _extension_dir()
    directory.mkdir(parents=True, exist_ok=True)
    con.execute(f"SET extension_directory = '{_quote(str(directory))}'")
    try:
        from duckdb_extensions import import_extension
    except ImportError:
        raise StoreError(
            "a DuckLake store needs the scale extra: pip install 'teachloop[scale]'"
        ) from None
    for name in ("ducklake", "postgres"):
        try:
            con.execute(f"LOAD {name}")
        except duckdb.Error:
            try:
                import_extension(name, con=con)
            except Exception as e:
                raise StoreError(
                    f"cannot install the DuckDB extension {name!r} from its wheel "
                    f"(pip install 'teachloop[scale]'): {e}"
                ) from None
            con.execute(f"LOAD {name}")


def attach(
    con: Connection,
    target: str,
    alias: str,
    *,
    data_path: Path | None = None,
    read_only: bool = False,
) -> None:
    """Attach the lake ``target`` to ``con`` as ``alias`` (also into a DuckDB file's connection,
    to copy between the two)."""
    _load_extensions(con)
    options = []
    if data_path is not None:
        options.append(f"DATA_PATH '{_quote(str(data_path))}/'")
    if read_only:
        options.append("READ_ONLY")
    sql = f"ATTACH '{_quote(target)}' AS {alias}"
    con.execute(sql + (f" ({', '.join(options)})" if options else ""))


class DuckLake:
    """A lake opened once per process; ``connect`` hands out cursors on it. ``read_only``: the
    lake is attached read-only, so nothing this process runs can change it."""

    def __init__(
        self,
        target: str,
        *,
        data_path: str | Path | None = None,
        read_only: bool = False,
        reconnect_timeout_s: float = RECONNECT_TIMEOUT_S,
    ) -> None:
        catalog_conninfo(target)  # only PostgreSQL catalogs: the one many machines can share
        self.target = target
        self.reconnect_timeout_s = reconnect_timeout_s
        self.location = redact(target)
        self.data_path = Path(data_path).expanduser().absolute() if data_path else None
        self.read_only = read_only
        self._root: Connection | None = None
        self._lock = threading.Lock()

    def exists(self) -> bool:
        return True  # a catalog is created on first attach; the schema version says the rest

    def _attach(self) -> Connection:
        con = duckdb.connect(config={"autoinstall_known_extensions": False})
        if self.data_path is not None and not self.read_only:
            self.data_path.mkdir(parents=True, exist_ok=True)
        try:
            attach(con, self.target, _CATALOG, data_path=self.data_path, read_only=self.read_only)
            con.execute(f"SET ducklake_max_retry_count = {_MAX_COMMIT_RETRIES}")
            # fetchall: a result left unread keeps its transaction open, and with it one on
            # the catalog, which blocks PostgreSQL's CREATE INDEX CONCURRENTLY (checkpointer
            # setup) for as long as this process lives.
            rows = con.execute(
                f"SELECT value FROM __ducklake_metadata_{_CATALOG}.ducklake_metadata "
                "WHERE key = 'data_path'"
            ).fetchall()
            stored = rows[0] if rows else None
        except duckdb.Error as e:
            con.close()
            raise StoreError(f"cannot open lake {self.location}: {self._explain(e)}") from None
        if stored and "://" not in stored[0] and not Path(stored[0]).is_dir():
            con.close()
            raise StoreError(
                f"lake {self.location}: its data path {stored[0]} (stored in the catalog) is "
                "not a directory on this machine: mount the lake's data there"
            )
        if stored and self.data_path is None and "://" not in stored[0]:
            self.data_path = Path(stored[0])
        return con

    @property
    def home(self) -> Path | None:
        """Where files that belong with the lake go (adapters): beside its data directory,
        which every machine mounts."""
        with self.connect(read_only=True):  # attached: the catalog's data path is known
            pass
        return self.data_path.parent if self.data_path else None

    def _explain(self, e: duckdb.Error) -> str:
        """DuckLake's attach errors, as what to fix."""
        text = str(e)
        if "Unable to connect to Postgres" in text:
            reason = text.split("failed: ", 1)[-1].replace("FATAL:", "").split("\n")[0]
            return f"the catalog's PostgreSQL server refused or is unreachable ({reason.strip()})"
        if "does not match existing data path" in text:
            stored = text.split("in the catalog", 1)[1].split('"')[1]
            return (
                f"--data-path {self.data_path} differs from the lake's data path {stored}: "
                "leave it out (the catalog remembers it) or give the same one"
            )
        if "creating a new DuckLake is explicitly disabled" in text:
            return (
                "it does not exist (no DuckLake catalog in that database): "
                "a writing command creates it"
            )
        return _first_line(e)

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[Connection]:
        if self.read_only and not read_only:
            raise StoreError(f"lake {self.location} is open read-only: this would write to it")
        with self._lock:
            if self._root is None:
                self._root = self._attach()
            cursor = self._root.cursor()
        try:
            cursor.execute(f"USE {_CATALOG}")
            yield cursor
        finally:
            cursor.close()

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        with writer_lock(self.target), self.connect() as con:
            yield con

    def read(self, work: Callable[[Connection], T]) -> T:
        """``work`` on a read cursor; run again while the catalog restarts. A read the restart
        interrupts fails with a catchable error (``IOException``: "Failed to query most recent
        snapshot", 5 of 5 restarts in a tight read loop; the connection's pool reconnects
        afterwards), never an abort. While the catalog answers, an error is tried twice more
        (the first read after a restart may meet a stale connection), then it is the read's."""
        deadline = None
        again = 2  # reads after the catalog answers again (the pool's connection may be stale)
        while True:
            try:
                with self.connect(read_only=True) as con:
                    return work(con)
            except _QUERY_ERRORS:
                raise
            except duckdb.Error as e:
                reason = _first_line(e)
                if catalog_down(self.target) is None:
                    if not again:
                        raise
                    again -= 1
                    continue
                if deadline is None:
                    deadline = catalog_deadline(
                        catalog_conninfo(self.target), self.reconnect_timeout_s
                    )
                wait_for_catalog(self.target, deadline, reason)

    def close(self) -> None:
        with self._lock:
            if self._root is not None:
                self._root.close()
                self._root = None


def _quote(s: str) -> str:
    return s.replace("'", "''")


def _first_line(e: Exception) -> str:
    return " ".join(str(e).split())[:300]
