"""A lake's writes in a child process that may die and be replaced: the catalog's PostgreSQL can
restart (a failover, an upgrade) in the middle of a write.

When the catalog's connection breaks during a DuckLake write, DuckDB's postgres extension rolls
back on the dead connection where it cannot throw, and the process that runs the write aborts
(``terminate called after throwing an instance of 'duckdb::Exception'``: "Failed to execute query
\\"ROLLBACK\\"", SIGABRT; issue 31). Python never sees an error to retry. So a writable lake's
writes (the ``Store`` methods marked ``@resent``) run in a writer process, one per lake per
process, started on the first write: the parent sends the method's name and arguments, keeps
them until the child answers, and when the child dies (any exit) or fails while the catalog is
unreachable, it waits for the catalog to answer again (``[store] reconnect_timeout_s``), starts a
new writer and sends the same call again. Past the wait the call raises ``CatalogUnavailable``.

Sending a write twice is safe only because each marked method writes with ``insert_new`` /
``upsert`` on ``base.KEYS`` or sets columns to given values (``tests/test_lake_restart.py`` runs
each one twice and compares): a write that committed before its writer died leaves the same rows
when it runs again. DuckDB files never get here (no catalog; their writes stay in-process), nor
do reads, which fail catchably and are retried in place (``DuckLake.read``).

The protocol: length-prefixed pickles over the child's stdin and stdout (the child's own stdout
goes to its stderr, whose last lines the parent keeps to say why a writer ended).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import struct
import subprocess
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

from teachloop.errors import StoreError
from teachloop.store.lake import (
    RECONNECT_TIMEOUT_S,
    catalog_conninfo,
    catalog_deadline,
    catalog_down,
    redact,
    wait_for_catalog,
)

log = logging.getLogger(__name__)

_FRAME = struct.Struct("!Q")
# Set in the writer process itself, whose store writes in place.
_IN_WRITER = False
# One writer per lake per process (as ``base.writer_lock`` keeps one writing thread): stores on
# the same lake share it while any of them lives.
_WRITERS: weakref.WeakValueDictionary[str, LakeWriter] = weakref.WeakValueDictionary()
_WRITERS_LOCK = threading.Lock()

F = TypeVar("F", bound=Callable[..., Any])
RESENT: set[str] = set()  # the names of the methods marked ``@resent``


def resent(method: F) -> F:
    """Mark a store write that a lake runs in its writer process, and sends again if the writer
    dies: only for writes that leave the same rows when run twice."""
    RESENT.add(method.__name__)

    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        writer: LakeWriter | None = getattr(self, "lake_writer", None)
        if writer is None:
            return method(self, *args, **kwargs)
        return writer.call(method.__name__, args, kwargs)

    return run  # type: ignore[return-value]


def writer_for(
    target: str, data_path: Path | None, reconnect_timeout_s: float = RECONNECT_TIMEOUT_S
) -> LakeWriter | None:
    """The process's writer for the lake ``target`` (None inside the writer itself)."""
    if _IN_WRITER:
        return None
    with _WRITERS_LOCK:
        writer = _WRITERS.get(target)
        if writer is None:
            writer = _WRITERS[target] = LakeWriter(target, data_path, reconnect_timeout_s)
        return writer


class _Child:
    """A running writer process; ``stop`` ends it (its input closed, it exits). ``lifeline``:
    the write end of a pipe the child watches, which the kernel closes when this process dies
    (even by SIGKILL): the child then exits at once, in the middle of a write too, as the write
    would have died with this process before (a writer outliving a killed run could commit
    while the resumed run writes the same lessons)."""

    def __init__(self, proc: subprocess.Popen[bytes], lifeline: int) -> None:
        self.proc = proc
        self.lifeline = lifeline
        self.stderr: deque[str] = deque(maxlen=20)
        self._drainer = threading.Thread(target=self._drain, daemon=True, name="lake-writer")
        self._drainer.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if text := line.decode(errors="replace").strip():
                self.stderr.append(text)

    def why(self) -> str:
        """The writer's end, as one line: its exit status and last words."""
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._drainer.join(timeout=1)
        lines = list(self.stderr)
        last = next((x for x in reversed(lines) if "what()" in x), lines[-1] if lines else "")
        return f"exit status {code}" + (f": {last[:200]}" if last else "")

    def stop(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        with contextlib.suppress(OSError):
            os.close(self.lifeline)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class LakeWriter:
    """Runs ``Store`` writes on a lake in a child process, resending a call its child did not
    answer (see the module's docstring)."""

    def __init__(self, target: str, data_path: Path | None, reconnect_timeout_s: float) -> None:
        self.target = target
        self.data_path = data_path
        self.reconnect_timeout_s = reconnect_timeout_s
        self._lock = threading.Lock()
        self._child: _Child | None = None
        self._slot: list[_Child] = []  # what the finalizer stops
        weakref.finalize(self, _stop_all, self._slot)
        self.restarts = 0  # writers started after one ended (tests read it)

    def call(self, method: str, args: tuple, kwargs: dict) -> Any:
        request = pickle.dumps((method, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            deadline: float | None = None
            retried_error = False
            while True:
                try:
                    child = self._child or self._start()
                    _write(child.proc.stdin, request)
                    status, value = pickle.loads(_read(child.proc.stdout))
                except (OSError, EOFError, pickle.UnpicklingError) as e:
                    ended = self._end() if self._child else f"it could not start: {e}"
                    reason = f"the lake's writer process ended ({ended})"
                    log.warning("%s; waiting for the catalog of %s", reason, redact(self.target))
                    deadline = self._wait(deadline, reason)
                    self.restarts += 1
                    continue
                if status == "ok":
                    return value
                # The write raised. While the catalog is unreachable that is the restart; an
                # error while it answers is tried once more on a new writer (the restart may
                # have ended between the error and the check), then it is the write's own.
                if isinstance(value, StoreError) or (
                    catalog_down(self.target) is None and retried_error
                ):
                    raise value
                retried_error = True
                reason = " ".join(str(value).split())[:300]
                self._end()
                deadline = self._wait(deadline, reason)

    def _wait(self, deadline: float | None, reason: str) -> float:
        """Wait for the catalog until ``deadline`` (set now, at a call's first failure)."""
        if deadline is None:
            deadline = catalog_deadline(catalog_conninfo(self.target), self.reconnect_timeout_s)
        wait_for_catalog(self.target, deadline, reason)
        return deadline

    def _start(self) -> _Child:
        watched, lifeline = os.pipe()  # not inherited by other children (close-on-exec)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", f"from {__name__} import serve; serve({watched})"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(watched,),
            )
        except BaseException:
            os.close(lifeline)
            raise
        finally:
            os.close(watched)
        child = _Child(proc, lifeline)
        self._child = child
        self._slot[:] = [child]
        _write(proc.stdin, pickle.dumps((self.target, self.data_path)))
        status, value = pickle.loads(_read(proc.stdout))
        if status != "ok":  # could not open the lake: treated as the writer's end
            child.stop()
            self._child = None
            raise OSError(str(value))
        return child

    def _end(self) -> str:
        """Stop the current writer (it may be dead already); why it ended."""
        child, self._child = self._child, None
        self._slot[:] = []
        if child is None:
            return "it could not start"
        child.stop()
        return child.why()

    def close(self) -> None:
        with self._lock:
            self._end()


def _stop_all(slot: list[_Child]) -> None:
    for child in slot:
        child.stop()


def _write(stream: IO[bytes] | None, data: bytes) -> None:
    assert stream is not None
    stream.write(_FRAME.pack(len(data)) + data)
    stream.flush()


def _read(stream: IO[bytes] | None) -> bytes:
    assert stream is not None
    header = stream.read(_FRAME.size)
    if len(header) < _FRAME.size:
        raise EOFError
    (size,) = _FRAME.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return data


def serve(lifeline: int) -> None:
    """The writer process: open the lake, then run each call sent until the input closes; exit
    at once when the parent dies (``lifeline`` reads end of file)."""
    global _IN_WRITER
    _IN_WRITER = True
    threading.Thread(target=_exit_with_parent, args=(lifeline,), daemon=True).start()
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints must not corrupt the replies
    inp = sys.stdin.buffer
    from teachloop.store.store import Store

    target, data_path = pickle.loads(_read(inp))
    try:
        store = Store(target, create=False, data_path=data_path)
        store.schema_version()  # attached: the lake is open
    except Exception as e:
        _write(out, _reply("error", e))
        return
    _write(out, _reply("ok", None))
    while True:
        try:
            request = _read(inp)
        except EOFError:
            return
        method, args, kwargs = pickle.loads(request)
        try:
            _write(out, _reply("ok", getattr(store, method)(*args, **kwargs)))
        except Exception as e:
            _write(out, _reply("error", e))


def _exit_with_parent(lifeline: int) -> None:
    while os.read(lifeline, 1):
        pass
    os._exit(70)


def _reply(status: str, value: Any) -> bytes:
    try:
        return pickle.dumps((status, value), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # an exception that does not pickle: its text
        return pickle.dumps((status, StoreError(f"{type(value).__name__}: {value}")))
