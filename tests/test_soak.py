"""Soak: 2,000 lessons in one run on scripted backends with the real DuckDB store. Resident
memory and throughput around the 500th lesson and at the end must be about the same: nothing
accumulates per lesson (state, checkpoints, pending writes), and the store does not get slower
to write as it grows. The numbers are printed (run with -s to see them).

How it measures, so that the numbers mean that and not the machine:

- Memory: RSS as a user's process has it (default allocators, nothing trimmed), sampled every
  50 ms by a thread and summarised per window of lessons (median; a flush holds DuckDB's
  working set for a moment, so single samples jump). It used to creep up ~10% over the first
  ~1,500 lessons: store writes ran on the default executor's threads, each with a malloc arena
  of its own; the runner now writes on one thread (measured since: +1.7% and +2.3%).
- Throughput: lessons per second of wall time, and per second of process CPU time. Other work
  on a shared 2-core machine slows the wall clock of one window and not the other, so the
  strict bound is on CPU time and the wall-clock bound only catches gross decay.
"""

from __future__ import annotations

import collections
import statistics
import threading
import time
from pathlib import Path

import psutil
import pytest
from conftest import adds_only_student, teacher_reply

from teachloop import RunConfig, Store, run_lessons
from teachloop.agents.backends.scripted import ScriptedBackend
from teachloop.graphs import runner

LESSONS = 2000
EARLY = (250, 500)  # the window "around the 500th lesson" (the first 250 warm up)
LATE = (1750, 2000)


class _Probe:
    """Stands in for the progress bar: when each lesson finished (wall and CPU clock), and
    resident memory sampled by how many lessons had finished."""

    def __init__(self) -> None:
        self.done = 0
        self.finished_at: list[float] = []
        self.cpu_at: list[float] = []
        self.rss: dict[int, list[float]] = collections.defaultdict(list)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._stop.wait(0.05):
            self.rss[self.done].append(process.memory_info().rss / 2**20)

    def __call__(self, label: str | None, total: int, completed: int = 0) -> _Probe:
        self.done = completed
        return self

    def __enter__(self) -> _Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def advance(self) -> None:
        self.done += 1
        self.finished_at.append(time.perf_counter())
        self.cpu_at.append(time.process_time())

    def rate(self, window: tuple[int, int], clock: list[float]) -> float:
        start, end = window
        return (end - start) / (clock[end - 1] - clock[start - 1])

    def memory_mib(self, window: tuple[int, int]) -> tuple[float, float]:
        """(median, max) of the resident memory sampled while lessons start..end finished."""
        samples = [s for n in range(*window) for s in self.rss.get(n, [])]
        return statistics.median(samples), max(samples)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_thousand_lessons_keep_memory_and_throughput_flat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = RunConfig.validated(
        {
            "db": tmp_path / "soak.duckdb",
            "run_id": "soak",
            "lessons": LESSONS,
            "concurrency": 16,
            "topics": ["arithmetic.addition", "arithmetic.multiplication"],
            "lesson": {"questions": 2},
        }
    )
    teacher = ScriptedBackend(teacher_reply, name="teacher")
    student = ScriptedBackend(adds_only_student, name="student")
    for backend in (teacher, student):  # scripted backends keep every request: not here
        backend.requests = collections.deque(maxlen=0)  # type: ignore[assignment]
    probe = _Probe()
    monkeypatch.setattr(runner, "progress_bar", probe)  # the name runner.py calls

    started = time.perf_counter()
    result = run_lessons(config, teacher_backend=teacher, student_backend=student, progress=False)
    wall = time.perf_counter() - started

    assert result.status == "complete" and result.lessons == LESSONS
    assert len(probe.finished_at) == LESSONS
    row = (
        Store(config.db)
        .query("""
        SELECT (SELECT count(*) FROM lessons WHERE status = 'complete') AS lessons,
               count(*) AS messages, count(DISTINCT message_id) AS ids,
               count(*) FILTER (WHERE kind = 'question') AS questions
        FROM messages""")
        .to_pylist()[0]
    )
    assert row["lessons"] == LESSONS and row["questions"] == 2 * LESSONS
    assert row["messages"] == row["ids"]

    wall_early, wall_late = (probe.rate(w, probe.finished_at) for w in (EARLY, LATE))
    cpu_early, cpu_late = (probe.rate(w, probe.cpu_at) for w in (EARLY, LATE))
    rss_early, peak_early = probe.memory_mib(EARLY)
    rss_late, peak_late = probe.memory_mib(LATE)
    print(
        f"\nsoak: {LESSONS} lessons in {wall:.1f} s ({LESSONS / wall:.1f} lessons/s)\n"
        f"  lessons {EARLY[0]}-{EARLY[1]}: {wall_early:.1f} lessons/s, {cpu_early:.1f} per CPU-s, "
        f"RSS median {rss_early:.0f} MiB (peak {peak_early:.0f})\n"
        f"  lessons {LATE[0]}-{LATE[1]}: {wall_late:.1f} lessons/s, {cpu_late:.1f} per CPU-s, "
        f"RSS median {rss_late:.0f} MiB (peak {peak_late:.0f})\n"
        f"  RSS growth {rss_late / rss_early - 1:+.1%}; "
        f"throughput late/early {wall_late / wall_early:.2f} wall, {cpu_late / cpu_early:.2f} CPU"
    )
    assert rss_late < 1.05 * rss_early
    assert cpu_late >= 0.7 * cpu_early
    assert wall_late >= 0.5 * wall_early
