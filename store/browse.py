"""The store's reads for browsing the log page by page (``teachloop view``).

Every list is paged in SQL (``LIMIT``/``OFFSET``, with the filtered total from ``count(*) OVER
()`` in the same query), so a page costs the same at 100 lessons and at 1M messages; filters are
parameters, never text spliced into SQL. Nothing here writes.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from teachloop.records import LessonRecord, MasterySnapshot
from teachloop.store.base import Connected
from teachloop.store.records import PreferencePair, Row, RunSummary

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list: its rows, where it starts, and how many rows the filters match."""

    model_config = ConfigDict(frozen=True)

    items: list[T]
    total: int
    offset: int
    limit: int


class Outcome(StrEnum):
    """What happened to a question; a lesson matches if one of its questions did."""

    first_try = "first_try"  # right on the first answer
    fixed = "fixed"  # wrong first, right after a reteach
    wrong = "wrong"  # still wrong after the last reteach


class LessonRow(Row):
    """A lesson in a run's list: its record's counts plus what its messages show."""

    lesson_id: str
    lesson_index: int
    status: str
    end_reason: str
    error: str | None
    questions: int
    correct_first: int
    fixed: int
    still_wrong: int
    topics: list[str]
    leaked: bool  # some reteach stated the reference answer
    messages: int
    started_at: datetime
    finished_at: datetime


class LessonFilter(Row):
    """A run's lessons, narrowed (None: any)."""

    topic: str | None = None
    outcome: Outcome | None = None
    leaked: bool | None = None
    status: str | None = None


class RunModel(Row):
    """Who wrote a run's messages: one row per (sender, model, endpoint)."""

    run_id: str
    sender: str
    model: str | None
    endpoint: str | None
    messages: int
    completion_tokens: int


class StrategyRow(Row):
    """One row of the ``strategy_effectiveness`` view."""

    topic: str
    strategy: str
    reteaches: int
    successes: int
    success_rate: float | None


class Neighbours(Row):
    """The lessons before and after one in its run (None at either end)."""

    previous: str | None
    next: str | None


_LESSONS_SQL = """
WITH per_lesson AS (
    SELECT lesson_id,
           coalesce(list(DISTINCT topic ORDER BY topic) FILTER (WHERE kind = 'question'), [])
               AS topics,
           coalesce(bool_or((payload ->> '$.leaked')::BOOLEAN) FILTER (WHERE kind = 'reteach'),
                    false) AS leaked,
           count(DISTINCT message_id) AS messages
    FROM messages WHERE run_id = $run GROUP BY lesson_id),
rows AS (
    SELECT l.lesson_id, l.lesson_index, l.status, l.end_reason, l.error, l.questions,
           l.correct_first, l.correct_after_reteach AS fixed,
           greatest(l.questions - l.correct_first - l.correct_after_reteach, 0) AS still_wrong,
           coalesce(p.topics, []) AS topics, coalesce(p.leaked, false) AS leaked,
           coalesce(p.messages, 0) AS messages, l.started_at, l.finished_at
    FROM lessons l LEFT JOIN per_lesson p USING (lesson_id)
    WHERE l.run_id = $run)
SELECT *, count(*) OVER () AS total FROM rows
WHERE ($topic IS NULL OR list_contains(topics, $topic))
  AND ($status IS NULL OR status = $status)
  AND ($leaked IS NULL OR leaked = $leaked)
  AND ($outcome IS NULL
       OR ($outcome = 'first_try' AND correct_first > 0)
       OR ($outcome = 'fixed' AND fixed > 0)
       OR ($outcome = 'wrong' AND still_wrong > 0))
ORDER BY lesson_index, lesson_id
LIMIT $limit OFFSET $offset
"""

_PAIRS_SQL = """
SELECT *, count(*) OVER () AS total FROM preference_pairs
WHERE ($run IS NULL OR run_id = $run) AND ($rule IS NULL OR rule = $rule)
  AND ($topic IS NULL OR topic = $topic) AND ($lesson IS NULL OR lesson_id = $lesson)
ORDER BY created_at, pair_id
LIMIT $limit OFFSET $offset
"""


def _page(rows: list[dict]) -> tuple[list[dict], int]:
    """The rows without their ``total`` column, and the total. A page past the end has no rows
    to carry the total: its caller counts again from the start."""
    total = rows[0]["total"] if rows else 0
    return [{k: v for k, v in r.items() if k != "total"} for r in rows], total


class LogBrowser(Connected):
    def run_page(self, *, offset: int = 0, limit: int = 50) -> Page[RunSummary]:
        """Runs, newest first, with the ``run_summary`` view's numbers."""
        rows = self.query(
            "SELECT *, count(*) OVER () AS total FROM run_summary "
            "ORDER BY started_at DESC, run_id LIMIT $limit OFFSET $offset",
            {"limit": limit, "offset": offset},
        ).to_pylist()
        items, total = _page(rows)
        if not items and offset:
            total = self.run_page(limit=1).total
        return Page(
            items=[RunSummary.model_validate(r) for r in items],
            total=total,
            offset=offset,
            limit=limit,
        )

    def run_models(self, run_ids: list[str]) -> list[RunModel]:
        """Models and endpoints that wrote the runs' messages, with their message counts."""
        rows = self.query(
            """
            SELECT run_id, sender, model, endpoint, count(*) AS messages,
                   sum(completion_tokens) AS completion_tokens
            FROM (SELECT DISTINCT ON (message_id) run_id, sender, model, endpoint,
                         completion_tokens FROM messages
                  WHERE run_id IN (SELECT unnest($runs::VARCHAR[])))
            GROUP BY ALL ORDER BY run_id, sender, model, endpoint
            """,
            {"runs": run_ids},
        ).to_pylist()
        return [RunModel.model_validate(r) for r in rows]

    def strategy_rows(self, run_id: str) -> list[StrategyRow]:
        """The run's rows of the ``strategy_effectiveness`` view, by topic and strategy."""
        rows = self.query(
            "SELECT topic, strategy, reteaches, successes, success_rate "
            "FROM strategy_effectiveness WHERE run_id = ? ORDER BY topic, strategy",
            [run_id],
        ).to_pylist()
        return [StrategyRow.model_validate(r) for r in rows]

    def lesson_page(
        self,
        run_id: str,
        where: LessonFilter | None = None,
        *,
        offset: int = 0,
        limit: int = 50,
    ) -> Page[LessonRow]:
        """A run's lessons in index order, filtered by topic asked, question outcome, leaked
        reteach and status."""
        where = where or LessonFilter()
        params = {
            "run": run_id,
            "topic": where.topic,
            "status": where.status,
            "leaked": where.leaked,
            "outcome": where.outcome.value if where.outcome else None,
        }
        rows = self.query(_LESSONS_SQL, {**params, "limit": limit, "offset": offset}).to_pylist()
        items, total = _page(rows)
        if not items and offset:
            total = self.lesson_page(run_id, where, limit=1).total
        return Page(
            items=[LessonRow.model_validate(r) for r in items],
            total=total,
            offset=offset,
            limit=limit,
        )

    def lesson(self, lesson_id: str) -> LessonRecord | None:
        rows = self.query(
            "SELECT * EXCLUDE (logged_at) FROM lessons WHERE lesson_id = ?", [lesson_id]
        ).to_pylist()
        return LessonRecord.model_validate(rows[0]) if rows else None

    def lesson_neighbours(self, lesson: LessonRecord) -> Neighbours:
        rows = self.query(
            """
            SELECT max(lesson_id) FILTER (WHERE lesson_index = $i - 1) AS previous,
                   max(lesson_id) FILTER (WHERE lesson_index = $i + 1) AS next
            FROM lessons WHERE run_id = $run AND lesson_index IN ($i - 1, $i + 1)
            """,
            {"run": lesson.run_id, "i": lesson.lesson_index},
        ).to_pylist()
        return Neighbours.model_validate(rows[0])

    def lesson_mastery(self, lesson_id: str) -> list[MasterySnapshot]:
        """The teacher's estimate after each question of the lesson, in question order."""
        rows = self.query(
            "SELECT DISTINCT ON (question_index) * FROM mastery WHERE lesson_id = ? "
            "ORDER BY question_index",
            [lesson_id],
        ).to_pylist()
        return [MasterySnapshot.model_validate(r) for r in rows]

    def pair_page(
        self,
        *,
        run_id: str | None = None,
        rule: str | None = None,
        topic: str | None = None,
        lesson_id: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Page[PreferencePair]:
        """Preference pairs, oldest first, optionally of one run, rule, topic or lesson."""
        filters = {"run_id": run_id, "rule": rule, "topic": topic, "lesson_id": lesson_id}
        params = {"run": run_id, "rule": rule, "topic": topic, "lesson": lesson_id}
        rows = self.query(_PAIRS_SQL, {**params, "limit": limit, "offset": offset}).to_pylist()
        items, total = _page(rows)
        if not items and offset:
            total = self.pair_page(**filters, limit=1).total
        return Page(
            items=[PreferencePair.model_validate(r) for r in items],
            total=total,
            offset=offset,
            limit=limit,
        )

    def pair_rules(self) -> list[str]:
        rows = self.query("SELECT DISTINCT rule FROM preference_pairs ORDER BY rule")
        return rows.column("rule").to_pylist()
