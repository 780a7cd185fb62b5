"""The store's model registry: model versions, the training jobs that make them, and the held-out
evaluations that gate their promotion.

Every change of state is one transaction, so a job killed at any point leaves the tables
consistent: a version row, the consumed pairs and the job's completion are written together
(``complete_job``); promotion is a single update.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from teachloop.errors import StoreError
from teachloop.records import ModelVersion
from teachloop.store.base import Connected, insert_new, utcnow
from teachloop.store.records import EvaluationRow, TrainingJob

BASE_VERSION = "base"


class ModelRegistry(Connected):
    # -- model versions -------------------------------------------------------------------------

    def ensure_base(self, base_model: str) -> None:
        """The base model is version 'base', promoted from the start."""
        with self.connect() as con:
            insert_new(
                con,
                "model_versions",
                "(SELECT ?::VARCHAR AS version, 'base' AS method, ?::VARCHAR AS base_model, "
                "true AS promoted, ?::TIMESTAMPTZ AS created_at)",
                [BASE_VERSION, base_model, utcnow()],
            )

    def model_versions(self) -> list[ModelVersion]:
        rows = self.query("SELECT * FROM model_versions ORDER BY created_at, version").to_pylist()
        return [ModelVersion.model_validate(r) for r in rows]

    def model_version(self, version: str) -> ModelVersion:
        """One version by name; an unknown name is an error that lists the known ones."""
        versions = self.model_versions()
        found = [v for v in versions if v.version == version]
        if not found:
            known = ", ".join(v.version for v in versions) or "none"
            raise StoreError(
                f"model version {version!r} is not in {self.location} (known: {known})"
            )
        return found[0]

    def current_student(self, base_model: str) -> ModelVersion:
        """The student lessons use for ``base_model``: its most recently promoted version, else
        the base model itself (the stored 'base' row, or an unsaved one: reading never writes)."""
        rows = self.query(
            "SELECT * FROM model_versions WHERE promoted AND base_model = ? "
            "ORDER BY created_at DESC, version DESC LIMIT 1",
            [base_model],
        ).to_pylist()
        if rows:
            return ModelVersion.model_validate(rows[0])
        return ModelVersion(
            version=BASE_VERSION, method="base", base_model=base_model, promoted=True
        )

    def promote(self, version: str) -> ModelVersion:
        """Make ``version`` the student lessons use, also to roll back: versions of the same base
        model created after it lose their promotion (they stay on disk and can be promoted
        again)."""
        target = self.model_version(version)
        with self.connect() as con:
            con.execute(
                "UPDATE model_versions SET promoted = (version = ?) "
                "WHERE base_model = ? AND (version = ? OR created_at > ?)",
                [version, target.base_model, version, target.created_at],
            )
        return self.model_version(version)

    def next_version_name(self) -> str:
        """The name the next trained version gets: v0001, v0002, ..."""
        n = self.query("SELECT count(*) AS n FROM model_versions WHERE method <> 'base'")
        return f"v{n.to_pylist()[0]['n'] + 1:04d}"

    # -- training jobs --------------------------------------------------------------------------

    def training_jobs(self) -> list[TrainingJob]:
        rows = self.query("SELECT * FROM training_jobs ORDER BY started_at, job_id").to_pylist()
        return [TrainingJob.model_validate(r) for r in rows]

    def fail_interrupted_jobs(self) -> int:
        """Mark jobs left 'running' (killed: only one job runs at a time) as failed; returns how
        many there were."""
        with self.connect() as con:
            row = con.execute(
                "UPDATE training_jobs SET status = 'failed', error = 'interrupted', "
                "finished_at = ? WHERE status = 'running'",
                [utcnow()],
            ).fetchone()
        return int(row[0]) if row else 0

    def start_job(self, job: TrainingJob) -> None:
        with self.connect() as con:
            con.execute(
                "INSERT INTO training_jobs (job_id, method, from_version, status, pairs, config, "
                "log, error, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    job.job_id,
                    job.method,
                    job.from_version,
                    job.status,
                    job.pairs,
                    job.config,
                    job.log,
                    job.error,
                    job.started_at,
                    job.finished_at,
                ],
            )

    def fail_job(self, job_id: str, error: str, log: str | None = None) -> None:
        """Record a job's failure (``error``: one line) with the steps it logged (JSON)."""
        with self.connect() as con:
            con.execute(
                "UPDATE training_jobs SET status = 'failed', error = ?, finished_at = ?, "
                "log = ? WHERE job_id = ?",
                [error, utcnow(), log, job_id],
            )

    def complete_job(
        self, job_id: str, version: ModelVersion, pair_ids: Sequence[str], log: str
    ) -> None:
        """The job's version, the pairs it consumed and its completion: all or nothing."""
        with self.connect() as con:
            con.execute("BEGIN")
            con.execute(
                "INSERT INTO model_versions BY NAME SELECT * FROM (SELECT ?::VARCHAR AS version, "
                "?::VARCHAR AS parent_version, ?::VARCHAR AS method, ?::VARCHAR AS adapter_path, "
                "?::VARCHAR AS base_model, ?::VARCHAR AS job_id, ?::TIMESTAMPTZ AS watermark, "
                "?::BOOLEAN AS promoted, ?::JSON AS metrics, ?::TIMESTAMPTZ AS created_at)",
                [
                    version.version,
                    version.parent_version,
                    version.method,
                    version.adapter_path,
                    version.base_model,
                    version.job_id,
                    version.watermark,
                    version.promoted,
                    version.metrics,
                    version.created_at,
                ],
            )
            con.execute(
                "UPDATE preference_pairs SET job_id = ? WHERE pair_id IN (SELECT unnest(?))",
                [job_id, list(pair_ids)],
            )
            con.execute(
                "UPDATE training_jobs SET status = 'complete', finished_at = ?, log = ? "
                "WHERE job_id = ?",
                [utcnow(), log, job_id],
            )
            con.execute("COMMIT")

    # -- held-out evaluations -------------------------------------------------------------------

    def evaluation(self, eval_id: str) -> list[EvaluationRow]:
        """The stored scores of one evaluation, by topic; empty if it never ran."""
        rows = self.query(
            "SELECT * FROM evaluations WHERE eval_id = ? ORDER BY topic", [eval_id]
        ).to_pylist()
        return [EvaluationRow.model_validate(r) for r in rows]

    def write_evaluation(self, rows: Sequence[EvaluationRow]) -> None:
        """Store an evaluation's scores; scores already stored (same eval_id, topic) are kept."""
        if not rows:
            return
        batch = pa.Table.from_pylist([r.model_dump() for r in rows])
        with self.connect() as con:
            con.register("batch_evaluations", batch)
            insert_new(con, "evaluations", "batch_evaluations")
