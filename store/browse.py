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
from teachloop.store.records import PreferencePair, Row

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


class RunRow(Row):
    """A run with its numbers (the ``run_summary`` view's, from the lessons' stored counts)."""

    run_id: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    student_model: str
    teacher_model: str
    lessons_planned: int
    lessons: int
    lessons_failed: int  # not complete: failed or interrupted
    questions: int
    correct_first: int
    fixed: int  # wrong first, right after a reteach
    messages: int
    prompt_tokens: int
    completion_tokens: int

    @property
    def first_try_accuracy(self) -> float | None:
        return self.correct_first / self.questions if self.questions else None

    @property
    def after_reteach_accuracy(self) -> float | None:
        return (self.correct_first + self.fixed) / self.questions if self.questions else None

    @property
    def reteach_fix_rate(self) -> float | None:
        missed = self.questions - self.correct_first
        return self.fixed / missed if missed else None


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


class LogState(Row):
    """What changes when the log does, for a cache of what is drawn from it: a page drawn from
    an equal state would come out the same."""

    lessons: int
    last_logged: datetime | None
    pairs: int
    pairs_trained: int
    jobs: int
    last_job: datetime | None
    versions: int
    evaluations: int
    arms: int
    last_arm: datetime | None


class Neighbours(Row):
    """The lessons before and after one in its run (None at either end)."""

    previous: str | None
    next: str | None


# The page of lessons first (from the lessons' stored counts), then what their messages show,
# read for those lessons only: at 1M messages a page costs the same on lesson 10 and 50,000.
# The topic and leaked filters read the run's questions or reteaches, only when they are set
# (DuckDB evaluates a subquery even behind `$x IS NULL OR`): fixed text, values as parameters.
_TOPIC_FILTER = """AND lesson_id IN (
            SELECT lesson_id FROM messages
            WHERE run_id = $run AND kind = 'question' AND topic = $topic)"""
_LEAKED_FILTER = """AND $leaked = (lesson_id IN (
            SELECT lesson_id FROM messages
            WHERE run_id = $run AND kind = 'reteach' AND (payload ->> '$.leaked')::BOOLEAN))"""
_LESSONS_SQL = """
WITH page AS (
    SELECT lesson_id, lesson_index, status, end_reason, error, questions, correct_first,
           correct_after_reteach AS fixed,
           greatest(questions - correct_first - correct_after_reteach, 0) AS still_wrong,
           started_at, finished_at, count(*) OVER () AS total
    FROM lessons
    WHERE run_id = $run
      AND ($status IS NULL OR status = $status)
      AND ($outcome IS NULL
           OR ($outcome = 'first_try' AND correct_first > 0)
           OR ($outcome = 'fixed' AND correct_after_reteach > 0)
           OR ($outcome = 'wrong' AND questions > correct_first + correct_after_reteach))
      {topic}{leaked}
    ORDER BY lesson_index, lesson_id
    LIMIT $limit OFFSET $offset),
shown AS (
    SELECT lesson_id,
           coalesce(list(DISTINCT topic ORDER BY topic) FILTER (WHERE kind = 'question'), [])
               AS topics,
           coalesce(bool_or((payload ->> '$.leaked')::BOOLEAN) FILTER (WHERE kind = 'reteach'),
                    false) AS leaked,
           max(turn) + 1 AS messages  -- turns count from 0; a row stored twice counts once
    FROM messages
    WHERE run_id = $run AND lesson_id IN (SELECT lesson_id FROM page)
    GROUP BY lesson_id)
SELECT p.*, coalesce(s.topics, []) AS topics, coalesce(s.leaked, false) AS leaked,
       coalesce(s.messages, 0) AS messages
FROM page p LEFT JOIN shown s USING (lesson_id)
ORDER BY p.lesson_index, p.lesson_id
"""

# Runs with their numbers: accuracies from the lessons' stored counts (question_outcomes'
# definitions, counted when each lesson was written), tokens and who wrote from the runs'
# messages. The run_summary view derives the same from every message (1.1 s at 1M messages on a
# busy machine, this ~0.1 s).
_RUNS_SQL = """
WITH page AS (
    SELECT *, count(*) OVER () AS total FROM runs
    WHERE $run IS NULL OR run_id = $run
    ORDER BY started_at DESC, run_id LIMIT $limit OFFSET $offset),
l AS (
    SELECT run_id, count(*) AS lessons,
           count(*) FILTER (WHERE status <> 'complete') AS lessons_failed,
           coalesce(sum(questions), 0) AS questions,
           coalesce(sum(correct_first), 0) AS correct_first,
           coalesce(sum(correct_after_reteach), 0) AS fixed
    FROM lessons WHERE run_id IN (SELECT run_id FROM page) GROUP BY run_id),
m AS (
    SELECT run_id, count(*) AS messages, sum(prompt_tokens) AS prompt_tokens,
           sum(completion_tokens) AS completion_tokens
    FROM messages WHERE run_id IN (SELECT run_id FROM page) GROUP BY run_id)
SELECT p.run_id, p.status, p.started_at, p.finished_at, p.student_model, p.teacher_model,
       p.lessons_planned, coalesce(l.lessons, 0) AS lessons,
       coalesce(l.lessons_failed, 0) AS lessons_failed, coalesce(l.questions, 0) AS questions,
       coalesce(l.correct_first, 0) AS correct_first, coalesce(l.fixed, 0) AS fixed,
       coalesce(m.messages, 0) AS messages, coalesce(m.prompt_tokens, 0) AS prompt_tokens,
       coalesce(m.completion_tokens, 0) AS completion_tokens, p.total
FROM page p LEFT JOIN l USING (run_id) LEFT JOIN m USING (run_id)
ORDER BY p.started_at DESC, p.run_id
"""

# The strategy_effectiveness view's definition on one run's messages.
_RUN_STRATEGIES_SQL = """
WITH r AS (
    SELECT DISTINCT ON (message_id) question_id, topic, strategy, attempt FROM messages
    WHERE run_id = $run AND kind = 'reteach'),
c AS (
    SELECT DISTINCT ON (message_id) question_id, attempt, correct FROM messages
    WHERE run_id = $run AND kind = 'critique')
SELECT r.topic, r.strategy, count(*) AS reteaches, count(*) FILTER (WHERE c.correct) AS successes,
       avg(c.correct::INT) AS success_rate
FROM r JOIN c ON c.question_id = r.question_id AND c.attempt = r.attempt
GROUP BY r.topic, r.strategy ORDER BY r.topic, r.strategy
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
    def run_page(self, *, offset: int = 0, limit: int = 50) -> Page[RunRow]:
        """Runs, newest first, with their numbers."""
        return self._runs(None, offset, limit)

    def run_row(self, run_id: str) -> RunRow | None:
        page = self._runs(run_id, 0, 1)
        return page.items[0] if page.items else None

    def _runs(self, run_id: str | None, offset: int, limit: int) -> Page[RunRow]:
        params = {"run": run_id, "limit": limit, "offset": offset}
        items, total = _page(self.query(_RUNS_SQL, params).to_pylist())
        if not items and offset:
            total = self._runs(run_id, 0, 1).total
        return Page(
            items=[RunRow.model_validate(r) for r in items], total=total, offset=offset, limit=limit
        )

    def run_topics(self, run_id: str) -> list[str]:
        """The topics a run asked about."""
        rows = self.query(
            "SELECT DISTINCT topic FROM messages WHERE run_id = ? AND kind = 'question' "
            "ORDER BY topic",
            [run_id],
        )
        return rows.column("topic").to_pylist()

    def run_models(self, run_ids: list[str]) -> list[RunModel]:
        """Models and endpoints that wrote the runs' messages, with their message counts."""
        rows = self.query(
            """
            SELECT run_id, sender, model, endpoint, count(*) AS messages,
                   sum(completion_tokens) AS completion_tokens
            FROM messages WHERE run_id IN (SELECT unnest($runs::VARCHAR[]))
            GROUP BY ALL ORDER BY run_id, sender, model, endpoint
            """,
            {"runs": run_ids},
        ).to_pylist()
        return [RunModel.model_validate(r) for r in rows]

    def strategy_rows(self, run_id: str) -> list[StrategyRow]:
        """The run's rows of ``strategy_effectiveness``, by topic and strategy."""
        rows = self.query(_RUN_STRATEGIES_SQL, {"run": run_id}).to_pylist()
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
        params: dict[str, object] = {
            "run": run_id,
            "status": where.status,
            "outcome": where.outcome.value if where.outcome else None,
        }
        sql = _LESSONS_SQL.format(
            topic=_TOPIC_FILTER if where.topic is not None else "",
            leaked=_LEAKED_FILTER if where.leaked is not None else "",
        )
        if where.topic is not None:
            params["topic"] = where.topic
        if where.leaked is not None:
            params["leaked"] = where.leaked
        rows = self.query(sql, {**params, "limit": limit, "offset": offset}).to_pylist()
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

    def log_state(self) -> LogState:
        """Counts and latest times of every table a plot reads (small tables, one scan of
        lessons: milliseconds at 1M messages)."""
        rows = self.query(
            """
            SELECT (SELECT count(*) FROM lessons) AS lessons,
                   (SELECT max(logged_at) FROM lessons) AS last_logged,
                   (SELECT count(*) FROM preference_pairs) AS pairs,
                   (SELECT count(job_id) FROM preference_pairs) AS pairs_trained,
                   (SELECT count(*) FROM training_jobs) AS jobs,
                   (SELECT max(coalesce(finished_at, started_at)) FROM training_jobs) AS last_job,
                   (SELECT count(*) FROM model_versions) AS versions,
                   (SELECT count(*) FROM evaluations) AS evaluations,
                   (SELECT count(*) FROM experiment_arms) AS arms,
                   (SELECT max(created_at) FROM experiment_arms) AS last_arm
            """
        ).to_pylist()
        return LogState.model_validate(rows[0])
