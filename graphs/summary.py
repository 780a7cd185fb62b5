"""The end-of-run summary, aggregated in SQL from what the store holds."""

from __future__ import annotations

import sys

from pydantic import BaseModel, ConfigDict
from rich.console import Console
from rich.table import Table

from teachloop.agents.mastery import MasteryModel
from teachloop.errors import StoreError
from teachloop.store.interface import LogStore
from teachloop.store.records import TopicAccuracy


class TopicSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    topic: str
    questions: int
    first_try_accuracy: float | None
    after_reteach_accuracy: float | None
    mastery: float  # the teacher's posterior mean of first-try success
    difficulty: int  # where the teacher's staircase ended


class RunResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: str
    db: str
    status: str
    lessons: int
    lessons_failed: int
    lessons_resumed: int  # already in the store when this invocation started
    questions: int
    first_try_accuracy: float | None
    after_reteach_accuracy: float | None  # eventually correct, after at most max_reteaches
    reteach_success_rate: float | None  # of first-try misses, the share fixed by reteaching
    messages_by_kind: dict[str, int]
    prompt_tokens: int
    completion_tokens: int
    wall_time_s: float
    topics: list[TopicSummary]

    def render(self, console: Console | None = None) -> None:
        # Logs and CI capture output: don't cut the table to 80 columns there.
        console = console or Console(width=None if sys.stdout.isatty() else 110)

        def pct(x: float | None) -> str:
            return "-" if x is None else f"{x:.0%}"

        table = Table(title=f"run {self.run_id}: {self.status}")
        for col in ("topic", "questions", "first try", "after reteach", "mastery", "difficulty"):
            if col == "topic":
                table.add_column(col, no_wrap=True, min_width=25)
            else:
                table.add_column(col, justify="right")
        for t in self.topics:
            table.add_row(
                t.topic,
                str(t.questions),
                pct(t.first_try_accuracy),
                pct(t.after_reteach_accuracy),
                f"{t.mastery:.2f}",
                str(t.difficulty),
            )
        table.add_row(
            "all",
            str(self.questions),
            pct(self.first_try_accuracy),
            pct(self.after_reteach_accuracy),
            "",
            "",
            style="bold",
        )
        console.print(table)
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.messages_by_kind.items()))
        tokens = self.prompt_tokens + self.completion_tokens
        console.print(
            f"lessons: {self.lessons} ({self.lessons_failed} failed, {self.lessons_resumed} "
            f"resumed from an earlier invocation); messages: {kinds}\n"
            f"reteach fixed {pct(self.reteach_success_rate)} of first-try misses; tokens: "
            f"{tokens} ({self.completion_tokens} generated); wall time {self.wall_time_s:.1f} s\n"
            f"log: {self.db}"
        )


def summarize(
    store: LogStore,
    run_id: str,
    mastery: MasteryModel,
    topics: tuple[str, ...],
    *,
    wall_time_s: float,
    lessons_resumed: int,
) -> RunResult:
    """The run's summary from the store's views (the same numbers SQL users see)."""
    run = store.run_summary(run_id)
    if run is None:
        raise StoreError(f"run {run_id!r} is not in {store.location}")
    per_topic = {t.topic: t for t in store.topic_accuracy(run_id)}
    return RunResult(
        run_id=run_id,
        db=store.location,
        status=run.status,
        lessons=run.lessons,
        lessons_failed=run.lessons_failed,
        lessons_resumed=lessons_resumed,
        questions=run.questions,
        first_try_accuracy=run.first_try_accuracy,
        after_reteach_accuracy=run.after_reteach_accuracy,
        reteach_success_rate=run.reteach_fix_rate,
        messages_by_kind=store.messages_by_kind(run_id),
        prompt_tokens=run.prompt_tokens,
        completion_tokens=run.completion_tokens,
        wall_time_s=wall_time_s,
        topics=[_topic_summary(t, per_topic.get(t), mastery) for t in topics],
    )


def _topic_summary(topic: str, row: TopicAccuracy | None, mastery: MasteryModel) -> TopicSummary:
    state = mastery.topic(topic)
    return TopicSummary(
        topic=topic,
        questions=row.questions if row else 0,
        first_try_accuracy=row.first_try_accuracy if row else None,
        after_reteach_accuracy=row.after_reteach_accuracy if row else None,
        mastery=state.estimate.mean,
        difficulty=state.difficulty,
    )
