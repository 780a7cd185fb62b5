"""The DuckDB store: one file, short write transactions, idempotent batched writes.

The store owns its tables: everything that reads or writes them goes through a ``Store`` method
and gets typed records back (``teachloop.records``, ``teachloop.store.records``). Users' own SQL
over the tables and views (``query``, ``read_only_query``, ``teachloop sql``) is the exception.
``teachloop.store.interface.LogStore`` is the interface another implementation provides.

DuckDB lets one process hold a file open for writing, and while it does no other process can
open it at all. So nothing holds a connection open: every write batch and every query opens,
works and closes, retrying while another process holds the lock. A run's writer flushes whole
lessons in batches, so a reader in another process gets in between flushes.

``Store(path)`` creates the file or brings it to the current schema (migrations only ever add).
``Store.open(path, read_only=True)`` opens an existing file for reading and never writes to it:
not even a migration, so a file with an older schema is refused with the command that upgrades
it (``teachloop migrate``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from teachloop.errors import StoreError
from teachloop.messages import Message, parse_message
from teachloop.records import LessonLog, LessonRecord, RunRecord, model_of, versioned_model
from teachloop.store.base import Database, DuckDBFile, insert_new, set_meta, upsert
from teachloop.store.browse import LogBrowser
from teachloop.store.experiments import ExperimentLog
from teachloop.store.lake import RECONNECT_TIMEOUT_S, DuckLake, is_lake, redact
from teachloop.store.lake import attach as attach_lake
from teachloop.store.lake_writer import LakeWriter, resent, writer_for
from teachloop.store.maintenance import LakeMaintainer
from teachloop.store.pairs import PairBuilder
from teachloop.store.progress import ProgressReader
from teachloop.store.records import (
    MasteryCounts,
    RunSummary,
    StrategyCounts,
    TopicAccuracy,
    TopicCounts,
)
from teachloop.store.registry import ModelRegistry

if TYPE_CHECKING:
    import pandas as pd  # only with the `train` extra: imported by `df` when called

    from teachloop.config import RunConfig

# (version, file in store/migrations/); the schema version is the last one applied.
MIGRATIONS = [
    (1, "001_core.sql"),
    (2, "002_training.sql"),
    (3, "003_logged_at.sql"),
    (4, "004_experiments.sql"),
    (5, "005_messages_without_key.sql"),
    (6, "006_mastery_without_key.sql"),
    (7, "007_unique_messages.sql"),
    (8, "008_pair_target.sql"),
    (9, "009_experiment_design.sql"),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
LAKE_ROW_GROUP = 8192
# The order DuckLake writes a lake's files in (on insert, compaction and flushing inlined rows).
LAKE_SORTED_BY = {"messages": "lesson_id, turn", "mastery": "lesson_id, question_index"}
_READ_ONLY_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
# Tables whose rows belong to one run (exported per run); the rest are project-wide.
RUN_TABLES = ("runs", "lessons", "messages", "mastery", "preference_pairs")
ALL_TABLES = (
    *RUN_TABLES,
    *("training_jobs", "model_versions", "evaluations"),
    *("experiments", "experiment_arms", "experiment_outcomes"),
)


class Store(ModelRegistry, PairBuilder, ExperimentLog, LakeMaintainer, ProgressReader, LogBrowser):
    def __init__(
        self,
        target: str | Path,
        *,
        create: bool = True,
        read_only: bool = False,
        data_path: str | Path | None = None,
        reconnect_timeout_s: float = RECONNECT_TIMEOUT_S,
    ) -> None:
        """``target``: a DuckDB file, or a lake (``ducklake:postgres:<conninfo>``, whose Parquet
        files go to ``data_path`` when it is created; ``teachloop.store.lake``; its writes run
        in a writer process that survives a catalog restart of up to ``reconnect_timeout_s``,
        ``teachloop.store.lake_writer``).
        ``create``: make the file or lake if needed and migrate it to the current schema.
        ``create=False``: the file must exist; it is used as it is. ``read_only``: it must
        exist with the current schema, and nothing ever writes to it (see ``open``)."""
        self.db: Database
        self.lake_writer: LakeWriter | None = None
        if is_lake(target):
            self.db = DuckLake(
                str(target),
                data_path=data_path,
                read_only=read_only,
                reconnect_timeout_s=reconnect_timeout_s,
            )
            self.path = None
        else:
            self.db = DuckDBFile(target, read_only=read_only)
            self.path = self.db.path
        if (read_only or not create) and not self.db.exists():
            raise StoreError(f"database {self.location} does not exist")
        if read_only:
            self._check_readable()
        elif create:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.migrate()
        if isinstance(self.db, DuckLake) and not read_only:
            self.lake_writer = writer_for(self.db.target, self.db.data_path, reconnect_timeout_s)

    @classmethod
    def open(
        cls, target: str | Path, *, read_only: bool = False, data_path: str | Path | None = None
    ) -> Store:
        """An existing store. Writable: migrated to the current schema first. ``read_only``:
        never migrated and never written (every connection is read-only; a method that would
        write raises); a store with an older schema is refused with the command that upgrades
        it, one with a newer one with the advice to upgrade teachloop. ``data_path``: a lake's,
        which must be the one its catalog holds."""
        if not read_only and not is_lake(target) and not Path(target).exists():
            raise StoreError(f"database {target} does not exist")
        return cls(target, read_only=read_only, data_path=data_path)

    @classmethod
    def of(cls, config: RunConfig) -> Store:
        """The store a run config names (``db``, and ``[store]`` for a lake)."""
        return cls(
            config.db,
            data_path=config.store.data_path,
            reconnect_timeout_s=config.store.reconnect_timeout_s,
        )

    @property
    def home(self) -> Path:
        """Where files that belong with the log go (adapters): the DuckDB file's directory, or
        beside a lake's data directory (shared by every machine)."""
        if isinstance(self.db, DuckLake):
            return self.db.home or Path.cwd()
        return self.db.path.parent

    @property
    def is_lake(self) -> bool:
        return isinstance(self.db, DuckLake)

    def schema_version(self) -> int:
        return self.db.read(_schema_version)

    def _check_readable(self) -> None:
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise self._newer(version)
        if version == 0:
            raise StoreError(f"{self.location} is not a teachloop database (no schema version)")
        if version < SCHEMA_VERSION:
            raise StoreError(
                f"database {self.location} has schema version {version}, older than this "
                f"teachloop's ({SCHEMA_VERSION}): upgrade it with `teachloop migrate --db "
                f"{self.location}` (reading never changes the file)"
            )

    def _newer(self, version: int) -> StoreError:
        return StoreError(
            f"database {self.location} has schema version {version}, newer than this "
            f"teachloop understands ({SCHEMA_VERSION}): upgrade teachloop"
        )

    def migrate(self) -> int:
        """Bring the file to SCHEMA_VERSION: apply the migrations it lacks, then the views;
        returns the version it had. A file written by a newer teachloop is refused rather than
        misread."""
        if self.db.exists():
            version = self.schema_version()
            if version == SCHEMA_VERSION:
                return version
            if version > SCHEMA_VERSION:
                raise self._newer(version)
        with self.connect() as con:
            version = _schema_version(con)  # again, under the write lock
            if version >= SCHEMA_VERSION:
                return version
            con.execute("BEGIN")
            if self.is_lake:
                _create_lake_schema(con, version, self.location)
            else:
                for number, script in MIGRATIONS:
                    if number > version:
                        con.execute(_sql(f"migrations/{script}"))
            con.execute(_sql("views.sql"))
            set_meta(con, "schema_version", str(SCHEMA_VERSION))
            con.execute("COMMIT")
        return version

    # -- writes ---------------------------------------------------------------------------

    @resent
    def write_run(self, run: RunRecord) -> None:
        """Record a run's start; a resumed run keeps its first start time."""
        with self.connect() as con:
            con.execute("BEGIN")
            con.execute(
                "UPDATE runs SET status = 'running', finished_at = NULL, lessons_planned = ? "
                "WHERE run_id = ?",
                [run.lessons_planned, run.run_id],
            )
            insert_new(
                con,
                "runs",
                "(SELECT ?::VARCHAR AS run_id, ?::TIMESTAMPTZ AS started_at, 'running' AS status,"
                " ?::INTEGER AS lessons_planned, ?::VARCHAR AS teacher_model,"
                " ?::VARCHAR AS student_model, ?::JSON AS config)",
                [
                    run.run_id,
                    run.started_at,
                    run.lessons_planned,
                    run.teacher_model,
                    run.student_model,
                    run.config,
                ],
            )
            con.execute("COMMIT")

    @resent
    def finish_run(self, run_id: str, status: str) -> None:
        with self.connect() as con:
            con.execute(
                "UPDATE runs SET status = ?, finished_at = now() WHERE run_id = ?",
                [status, run_id],
            )

    @resent
    def write_lessons(self, logs: list[LessonLog]) -> None:
        """Write lessons with their messages and mastery snapshots in one transaction.
        Idempotent: messages and snapshots already present (same stable ids) are skipped, and a
        lesson's row is replaced, so a resumed lesson's final state wins.

        Messages go in as their JSON payloads (pydantic's serializer, ~3 us each) and DuckDB
        flattens them into columns (``messages_from_payloads``) and inserts only ids not yet
        stored, in one statement; ``bench/store_bench.py`` measures it."""
        if not logs:
            return
        lessons = pa.Table.from_pylist([log.lesson.model_dump(mode="python") for log in logs])
        payloads = _json_array([m for log in logs for m in log.messages])
        mastery = pa.Table.from_pylist(
            [s.model_dump(mode="python") for log in logs for s in log.mastery]
        )
        with self.writing() as con:
            con.execute("BEGIN")
            con.register("batch_lessons", lessons)
            con.register("batch_payloads", pa.table({"payload": payloads}))
            con.execute(
                "CREATE TEMP TABLE batch_messages AS "
                "SELECT * FROM messages_from_payloads('batch_payloads')"
            )
            # The lessons' counts come from question_outcomes' definition (applied to the
            # batch, which holds each lesson's every message), not the writer's arithmetic.
            con.execute(
                """
                CREATE TEMP TABLE batch_counted AS
                SELECT l.* REPLACE (coalesce(q.questions, l.questions) AS questions,
                                    coalesce(q.correct_first, l.correct_first) AS correct_first,
                                    coalesce(q.fixed, l.correct_after_reteach)
                                        AS correct_after_reteach)
                FROM batch_lessons l LEFT JOIN (
                    SELECT lesson_id, count(*) AS questions,
                           count(*) FILTER (WHERE correct_first) AS correct_first,
                           count(*) FILTER (WHERE correct_final AND NOT correct_first) AS fixed
                    FROM question_outcomes_of('batch_messages') GROUP BY lesson_id) q
                USING (lesson_id)
                """
            )
            upsert(con, "lessons", "batch_counted")
            insert_new(con, "messages", "batch_messages")
            if mastery.num_rows:
                con.register("batch_mastery", mastery)
                insert_new(con, "mastery", "batch_mastery")
            con.execute("DROP TABLE batch_messages")
            con.execute("DROP TABLE batch_counted")
            con.execute("COMMIT")

    # -- reads ----------------------------------------------------------------------------

    def read_only_query(self, sql: str) -> pa.Table:
        """Run a user's SQL, refusing anything but queries: the log is evidence, and the CLI
        must not be a way to change it (the connection is read-only as well)."""
        try:
            statements = duckdb.extract_statements(sql)
        except duckdb.Error as e:
            raise StoreError(f"SQL does not parse: {str(e).splitlines()[0]}") from None
        if not statements:
            raise StoreError("no SQL statement given")
        for statement in statements:
            if statement.type not in _READ_ONLY_STATEMENTS:
                kind = statement.type.name
                raise StoreError(
                    f"refused: teachloop sql is read-only and this is a {kind} statement "
                    "(use --out FILE.parquet to export a result)"
                )
        try:
            with self.connect(read_only=True) as con:
                return con.execute(sql).to_arrow_table()
        except duckdb.Error as e:
            raise StoreError(f"query failed: {str(e).splitlines()[0]}") from None

    def df(self, sql: str, params: list | dict | None = None) -> pd.DataFrame:
        """Like ``query``, as a pandas DataFrame (needs pandas: the `train` extra brings it)."""
        try:
            import pandas  # noqa: F401  (to_pandas imports it; fail with the fix instead)
        except ImportError:
            raise StoreError(
                "Store.df needs pandas: pip install pandas (or teachloop[train])"
            ) from None
        return self.query(sql, params).to_pandas()

    def lessons(
        self,
        *,
        run_id: str | None = None,
        topic: str | None = None,
        status: str | None = None,
    ) -> list[LessonRecord]:
        """Lessons in run and index order, optionally those of one run, touching one topic, or
        with one status."""
        rows = self.query(
            """
            SELECT * EXCLUDE (logged_at) FROM lessons l
            WHERE ($run IS NULL OR run_id = $run) AND ($status IS NULL OR status = $status)
              AND ($topic IS NULL OR EXISTS (
                    SELECT 1 FROM messages m
                    WHERE m.lesson_id = l.lesson_id AND m.kind = 'question' AND m.topic = $topic))
            ORDER BY run_id, lesson_index
            """,
            {"run": run_id, "topic": topic, "status": status},
        ).to_pylist()
        return [LessonRecord.model_validate(r) for r in rows]

    def transcripts(self, run_id: str) -> Iterator[tuple[LessonRecord, list[Message]]]:
        """Each lesson of a run with its typed messages (one query per lesson, in order)."""
        for lesson in self.lessons(run_id=run_id):
            yield lesson, self.transcript(lesson.lesson_id)

    # -- moving logs between machines -------------------------------------------------------

    def export_run(self, run_id: str, out_dir: str | Path) -> dict[str, int]:
        """Write a run's rows to ``out_dir/<table>.parquet``; returns rows per table."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        counts = {}
        with self.connect(read_only=True) as con:
            if not con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchone():
                raise StoreError(f"run {run_id!r} is not in {self.location}")
            for table in RUN_TABLES:
                rows = con.execute(f"SELECT * FROM {table} WHERE run_id = ?", [run_id])
                data = rows.to_arrow_table()
                pq.write_table(data, out / f"{table}.parquet")
                counts[table] = data.num_rows
        return counts

    def merge(self, source: str | Path) -> dict[str, int]:
        """Add the rows of another teachloop database (a DuckDB file or a lake) or an
        ``export_run`` directory. Rows whose ids are already here are skipped, so merging twice
        changes nothing. Returns rows added per table."""
        with self.writing() as con:
            try:
                return self._merge(con, source)
            finally:
                # A lake's connections share one database instance: leave nothing attached.
                con.execute("DETACH DATABASE IF EXISTS src")

    def _merge(self, con: duckdb.DuckDBPyConnection, source: str | Path) -> dict[str, int]:
        if is_lake(source):
            try:
                attach_lake(con, str(source), "src", read_only=True)
            except duckdb.Error as e:
                raise StoreError(f"cannot open lake {redact(str(source))}: {e}") from None
            tables = _source_tables(con, redact(str(source)))
        elif (source := Path(source)).is_dir():
            tables = {
                t: f"read_parquet('{_quote(source / f'{t}.parquet')}')"
                for t in RUN_TABLES
                if (source / f"{t}.parquet").exists()
            }
            if not tables:
                raise StoreError(f"{source} holds no teachloop export (*.parquet) files")
        elif source.is_file():
            con.execute(f"ATTACH '{_quote(source)}' AS src (READ_ONLY)")
            tables = _source_tables(con, str(source))
        else:
            raise StoreError(f"{source} does not exist")
        # Qualified: with a source attached, a bare name could resolve to either database.
        here = '"' + con.execute("SELECT current_database()").fetchone()[0].replace('"', '""') + '"'
        added: dict[str, int] = {}
        con.execute("BEGIN")
        for table, relation in tables.items():
            count = f"SELECT count(*) FROM {here}.main.{table}"
            before = con.execute(count).fetchone()[0]
            insert_new(con, f"{here}.main.{table}", relation)
            added[table] = con.execute(count).fetchone()[0] - before
        con.execute("COMMIT")
        return added

    def finished_lessons(self, run_id: str) -> set[str]:
        rows = self.query(
            "SELECT lesson_id FROM lessons WHERE run_id = ? AND status = 'complete'", [run_id]
        )
        return set(rows.column("lesson_id").to_pylist())

    def transcript(self, lesson_id: str) -> list[Message]:
        """The lesson's typed messages in turn order (an exact round trip of what was logged)."""
        rows = self.query(
            "SELECT payload FROM (SELECT DISTINCT ON (message_id) payload, turn FROM messages "
            "WHERE lesson_id = ?) ORDER BY turn",
            [lesson_id],
        )
        return [parse_message(p) for p in rows.column("payload").to_pylist()]

    def mastery_counts(
        self,
        student_model: str,
        *,
        decay: float = 0.5,
        run_id: str | None = None,
        exclude: Collection[str] = (),
    ) -> MasteryCounts:
        """What complete lessons showed about a student, aggregated from ``question_outcomes``:
        per topic the first-try successes and failures and the latest difficulty, per (topic,
        strategy) the reteach outcomes. Lessons of runs whose student was ``student_model``
        ("<model>@<version>") count fully, so a resumed run and every later round of the same
        version start from all they showed; lessons of other versions of the same model count
        ``decay`` each (a new version is a different learner, but not a stranger); 0 ignores
        them. ``run_id``: only that run's lessons (a run that starts from the prior).
        ``exclude``: lessons left out (a worker asking what the others' lessons showed)."""
        params = {
            "run": run_id,
            "student": student_model,
            # Any version of the same model: a prefix, not a LIKE pattern ("_" in a path).
            "base": versioned_model(model_of(student_model), ""),
            "decay": decay,
            "exclude": list(exclude),
        }
        weights = """
            weights AS (
                SELECT l.lesson_id,
                       CASE WHEN r.student_model = $student THEN 1.0 ELSE $decay END AS weight
                FROM lessons l JOIN runs r USING (run_id)
                WHERE l.status = 'complete' AND ($run IS NULL OR l.run_id = $run)
                  AND NOT list_contains($exclude::VARCHAR[], l.lesson_id)
                  AND (r.student_model = $student OR starts_with(r.student_model, $base))),
            outcomes AS (
                SELECT q.*, w.weight FROM question_outcomes q JOIN weights w USING (lesson_id)
                WHERE w.weight > 0)"""
        topics = self.query(
            f"""
            WITH {weights}
            SELECT topic,
                   coalesce(sum(weight) FILTER (WHERE correct_first), 0) AS successes,
                   coalesce(sum(weight) FILTER (WHERE NOT correct_first), 0) AS failures,
                   (SELECT arg_max(m.difficulty, m.created_at) FROM mastery m
                     WHERE m.topic = o.topic
                       AND m.lesson_id IN (SELECT lesson_id FROM weights)) AS difficulty
            FROM outcomes o GROUP BY topic ORDER BY topic
            """,
            params,
        ).to_pylist()
        strategies = self.query(
            f"""
            WITH {weights},
            last_reteach AS (
                SELECT m.question_id, arg_max(m.strategy, m.attempt) AS strategy
                FROM unique_messages m WHERE m.kind = 'reteach'
                  AND m.lesson_id IN (SELECT lesson_id FROM outcomes)
                GROUP BY m.question_id)
            SELECT o.topic, r.strategy,
                   coalesce(sum(o.weight) FILTER (WHERE o.correct_final), 0) AS successes,
                   coalesce(sum(o.weight) FILTER (WHERE NOT o.correct_final), 0) AS failures
            FROM outcomes o JOIN last_reteach r USING (question_id)
            GROUP BY ALL ORDER BY o.topic, r.strategy
            """,
            params,
        ).to_pylist()
        return MasteryCounts(
            topics=[TopicCounts.model_validate(r) for r in topics],
            strategies=[StrategyCounts.model_validate(r) for r in strategies],
        )

    def teacher_tokens(self, run_id: str) -> int:
        """Tokens the teacher generated in a run (feedback, reteaches, judgements)."""
        row = self.query(
            "SELECT coalesce(sum(completion_tokens), 0) AS n FROM unique_messages "
            "WHERE run_id = ? AND sender = 'teacher'",
            [run_id],
        ).to_pylist()
        return int(row[0]["n"])

    # -- run summaries (the views' numbers, as SQL users see them) ---------------------------

    def run_summary(self, run_id: str) -> RunSummary | None:
        """The run's row of the ``run_summary`` view; None if the run is not in the store."""
        rows = self.query("SELECT * FROM run_summary WHERE run_id = ?", [run_id]).to_pylist()
        return RunSummary.model_validate(rows[0]) if rows else None

    def topic_accuracy(self, run_id: str) -> list[TopicAccuracy]:
        """The run's rows of the ``topic_accuracy`` view, by topic."""
        rows = self.query(
            "SELECT * FROM topic_accuracy WHERE run_id = ? ORDER BY topic", [run_id]
        ).to_pylist()
        return [TopicAccuracy.model_validate(r) for r in rows]

    def messages_by_kind(self, run_id: str) -> dict[str, int]:
        """How many messages of each kind (question, answer, ...) the run logged."""
        rows = self.query(
            "SELECT kind, count(DISTINCT message_id) AS n FROM messages WHERE run_id = ? "
            "GROUP BY kind ORDER BY kind",
            [run_id],
        ).to_pylist()
        return {r["kind"]: r["n"] for r in rows}


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")


def _sql(name: str) -> str:
    return files("teachloop.store").joinpath(name).read_text()


def _create_lake_schema(con: duckdb.DuckDBPyConnection, version: int, location: str) -> None:
    """A new lake gets the tables a DuckDB file has after every migration, without their keys
    (DuckLake has none): built in memory, copied empty. Lakes start at the current version; a
    migration that changes tables later needs its lake form beside the file's."""
    if version != 0:
        raise StoreError(
            f"lake {location} has schema version {version} and this teachloop cannot migrate "
            f"lakes (it creates them at {SCHEMA_VERSION}): copy the log with `teachloop migrate`"
        )
    with duckdb.connect() as schema:
        for _, script in MIGRATIONS:
            schema.execute(_sql(f"migrations/{script}"))
        tables = schema.execute(
            "SELECT table_name, string_agg(column_name || ' ' || data_type "
            "|| coalesce(' DEFAULT ' || column_default, ''), ', ' "
            "ORDER BY column_index) FROM duckdb_columns() WHERE NOT internal "
            "AND table_name IN (SELECT table_name FROM duckdb_tables()) GROUP BY table_name"
        ).fetchall()
    for table, columns in tables:
        con.execute(f"CREATE TABLE {table} ({columns})")
    # Parquet row groups of 8,192 rows (default 122,880): a one-lesson query reads one small
    # group. At 1M messages, transcript of one lesson 53 -> 21-23 ms (2,048: 33 ms), aggregate
    # views unchanged (measured). Set before the views exist: set_option once crashed DuckLake
    # in a catalog holding views (../shared/notes/scale-out.md).
    con.execute(f"CALL lake.set_option('parquet_row_group_size', {LAKE_ROW_GROUP})").fetchall()
    # A lesson's rows together: min/max statistics then skip every other row group when one
    # lesson is read (replay, transcript). At 1M messages, maintained: one lesson's transcript
    # 27 -> 18 ms (12 ms on a file), aggregates 0.85-1.0x their time unsorted (measured).
    for table, keys in LAKE_SORTED_BY.items():
        con.execute(f"ALTER TABLE {table} SET SORTED BY ({keys})")


def _source_tables(con: duckdb.DuckDBPyConnection, source: str) -> dict[str, str]:
    """The tables of the database attached as ``src``, checked to be a teachloop log."""
    present = {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = 'src'"
        ).fetchall()
    }
    version = 0
    if "teachloop_meta" in present:
        rows = con.execute(
            "SELECT value FROM src.teachloop_meta WHERE key = 'schema_version'"
        ).fetchall()
        version = int(rows[0][0]) if rows else 0
    if version == 0 or version > SCHEMA_VERSION:
        raise StoreError(
            f"{source} is not a teachloop database that this version can read "
            f"(schema version {version}, this teachloop reads up to {SCHEMA_VERSION})"
        )
    return {t: f"src.{t}" for t in ALL_TABLES if t in present}


def _schema_version(con: duckdb.DuckDBPyConnection) -> int:
    has_meta = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'teachloop_meta' "
        "AND table_catalog = current_database()"
    ).fetchone()
    if not has_meta or not has_meta[0]:
        return 0
    row = con.execute("SELECT value FROM teachloop_meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def _json_array(messages: list[Message]) -> pa.ExtensionArray:
    """The messages' JSON (exactly ``model_dump_json``) as an Arrow JSON column. Built from
    bytes: Arrow takes UTF-8 bytes ~40x faster than Python strings it must encode."""
    data = pa.array([m.__pydantic_serializer__.to_json(m) for m in messages], pa.binary())
    return pa.ExtensionArray.from_storage(pa.json_(), data.cast(pa.string()))
