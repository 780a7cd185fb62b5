"""The store's interface: what lessons, training and the CLI call, whatever holds the log.

``teachloop.store.store.Store`` (one DuckDB file) implements it; another implementation (a
DuckLake catalogue on PostgreSQL, say) provides the same methods with the same meaning, and
``tests/test_store_contract.py`` runs against each. Nothing outside ``store/`` writes SQL against
the tables: the methods return typed records. ``query`` is for users' own SQL over the tables
and views, whose names and columns are a public format (``store/migrations``, ``views.sql``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import pyarrow as pa

from teachloop.messages import Message
from teachloop.records import LessonLog, LessonRecord, ModelVersion, RunRecord
from teachloop.store.experiments import (
    ArmAccuracy,
    ArmResult,
    DifficultyAccuracy,
    Discordance,
    ExperimentExample,
    ExperimentRecord,
    QuestionOutcome,
    SeedPlan,
    SeedQuestions,
    TopicShare,
    TrainedShare,
    ValidationOutcome,
)
from teachloop.store.pairs import TARGETS, TRAINED_RULES
from teachloop.store.records import (
    EvaluationRow,
    MasteryCounts,
    PairBuild,
    PreferencePair,
    RunSummary,
    TopicAccuracy,
    TrainingJob,
)


@runtime_checkable
class LogStore(Protocol):
    path: Path | None  # the DuckDB file; None for a lake
    location: str  # what messages name: the file, or the lake's target without a password
    read_only: bool  # opened for reading only: nothing (not even a migration) writes

    def schema_version(self) -> int: ...

    # -- the lesson log -------------------------------------------------------------------------

    def write_run(self, run: RunRecord) -> None:
        """Record a run's start; a resumed run keeps its first start time."""
        ...

    def finish_run(self, run_id: str, status: str) -> None: ...

    def write_lessons(self, logs: list[LessonLog]) -> None:
        """Lessons with their messages and mastery snapshots, in one transaction; idempotent
        (a lesson's row is replaced, messages and snapshots already present are skipped)."""
        ...

    def lessons(
        self, *, run_id: str | None = None, topic: str | None = None, status: str | None = None
    ) -> list[LessonRecord]: ...

    def finished_lessons(self, run_id: str) -> set[str]: ...

    def transcript(self, lesson_id: str) -> list[Message]: ...

    def transcripts(self, run_id: str) -> Iterator[tuple[LessonRecord, list[Message]]]: ...

    def mastery_counts(
        self,
        student_model: str,
        *,
        decay: float = 0.5,
        run_id: str | None = None,
        exclude: Collection[str] = (),
    ) -> MasteryCounts:
        """Outcomes of complete lessons of runs with this student ("<model>@<version>"); other
        versions of the same model weighted by ``decay``; only run ``run_id``'s if given; none
        of the lessons ``exclude`` names."""
        ...

    def teacher_tokens(self, run_id: str) -> int: ...

    def run_summary(self, run_id: str) -> RunSummary | None: ...

    def topic_accuracy(self, run_id: str) -> list[TopicAccuracy]: ...

    def messages_by_kind(self, run_id: str) -> dict[str, int]: ...

    # -- users' SQL and moving logs -------------------------------------------------------------

    def query(self, sql: str, params: list | dict | None = None) -> pa.Table: ...

    def read_only_query(self, sql: str) -> pa.Table:
        """A user's SQL; anything but a query is refused."""
        ...

    def export_run(self, run_id: str, out_dir: str | Path) -> dict[str, int]: ...

    def merge(self, source: str | Path) -> dict[str, int]: ...

    # -- preference pairs -----------------------------------------------------------------------

    def build_pairs(self) -> PairBuild:
        """Pairs from the lessons logged since the last build (pairs and watermark together)."""
        ...

    def unused_pairs(
        self, rules: Sequence[str] = TRAINED_RULES, targets: Sequence[str] = TARGETS
    ) -> list[PreferencePair]: ...

    def run_pairs(self, run_id: str, rules: Sequence[str] = TRAINED_RULES) -> list[PreferencePair]:
        """One run's pairs, built as ``build_pairs`` would, recorded nowhere."""
        ...

    # -- model versions, training jobs, evaluations ---------------------------------------------

    def ensure_base(self, base_model: str) -> None: ...

    def model_versions(self) -> list[ModelVersion]: ...

    def model_version(self, version: str) -> ModelVersion:
        """Raises ``StoreError`` naming the known versions if there is no such version."""
        ...

    def current_student(self, base_model: str) -> ModelVersion:
        """The latest promoted version of ``base_model``, else the base model itself."""
        ...

    def promote(self, version: str) -> ModelVersion:
        """``version`` becomes the student; later versions of its base model lose promotion."""
        ...

    def next_version_name(self) -> str: ...

    def training_jobs(self) -> list[TrainingJob]: ...

    def fail_interrupted_jobs(self) -> int: ...

    def start_job(self, job: TrainingJob) -> None: ...

    def fail_job(self, job_id: str, error: str, log: str | None = None) -> None: ...

    def complete_job(
        self, job_id: str, version: ModelVersion, pair_ids: Sequence[str], log: str
    ) -> None:
        """The new version, the consumed pairs and the job's completion: all or nothing."""
        ...

    def evaluation(self, eval_id: str) -> list[EvaluationRow]: ...

    def write_evaluation(self, rows: Sequence[EvaluationRow]) -> None: ...

    # -- experiments ----------------------------------------------------------------------------

    def write_experiment(self, record: ExperimentRecord, seeds: Sequence[int]) -> None: ...

    def experiments(self) -> list[str]: ...

    def write_arm_result(
        self,
        result: ArmResult,
        outcomes: Sequence[QuestionOutcome],
        examples: Sequence[ExperimentExample] = (),
    ) -> None: ...

    def fix_seed_plan(
        self, plan: SeedPlan, validation: Sequence[ValidationOutcome]
    ) -> SeedPlan: ...

    def seed_plan(self, experiment: str, seed: int) -> SeedPlan | None: ...

    def seed_questions(self, experiment: str, seed: int) -> SeedQuestions: ...

    def experiment_examples(self, experiment: str) -> list[ExperimentExample]: ...

    def validation_outcomes(self, experiment: str) -> list[ValidationOutcome]: ...

    def run_questions(self, run_id: str) -> dict[str, tuple[str, int]]: ...

    def trained_shares(self, experiment: str) -> list[TrainedShare]: ...

    def arm_results(self, experiment: str) -> list[ArmResult]: ...

    def experiment_accuracy(self, experiment: str) -> list[ArmAccuracy]: ...

    def difficulty_accuracy(self, experiment: str) -> list[DifficultyAccuracy]: ...

    def experiment_design(self, experiment: str) -> str | None: ...

    def discordance(self, experiment: str, against: Sequence[str]) -> list[Discordance]: ...

    def targeting(self, experiment: str) -> list[TopicShare]: ...
