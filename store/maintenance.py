"""Looking after a lake: every commit of every worker is a snapshot and a small Parquet file, and
a row that slipped in twice (DuckLake has no keys) stays until removed. ``maintain`` compacts
both and frees the files nothing needs (``teachloop lake maintain``)."""

from __future__ import annotations

from pathlib import Path

from teachloop.errors import StoreError
from teachloop.store.base import KEYS, Connected, Connection, upsert
from teachloop.store.records import Row

_LAKE = "lake"


class Maintenance(Row):
    duplicates_removed: dict[str, int]
    rows_flushed: int  # small inserts DuckLake kept in the catalog, now in Parquet
    files_before: int
    files_after: int
    snapshots_expired: int
    files_deleted: int  # of expired snapshots
    orphans_deleted: int  # written by commits that never happened (a killed writer)

    def render(self) -> str:
        dupes = sum(self.duplicates_removed.values())
        return (
            f"data files {self.files_before} -> {self.files_after}; {dupes} duplicate rows "
            f"removed; {self.rows_flushed} inlined rows flushed; {self.snapshots_expired} "
            f"snapshots expired; {self.files_deleted} old and {self.orphans_deleted} orphaned "
            "files deleted"
        )


class LakeMaintainer(Connected):
    path: Path | None  # the store's DuckDB file; None for a lake

    def maintain(self, *, keep_days: float = 7.0, grace_hours: float = 24.0) -> Maintenance:
        """Remove duplicate rows, write inlined rows out, rewrite files with deleted rows, merge
        small files, expire snapshots
        older than ``keep_days`` (time travel reaches back that far), delete the files only
        expired snapshots used, and orphaned files older than ``grace_hours`` (younger ones may
        belong to a commit still under way). Safe while workers write: each step is a DuckLake
        transaction, and a conflicting commit is retried."""
        if self.path is not None:
            raise StoreError(f"{self.location} is a DuckDB file: maintain is for lakes")
        with self.writing() as con:
            dupes = {t: _deduplicate(con, t) for t in KEYS}
            before = _files(con)
            flushed = _sum(con, f"CALL ducklake_flush_inlined_data('{_LAKE}')", "rows_flushed")
            # Files with deleted rows (the duplicates') are rewritten first: merging skips them.
            con.execute(
                f"CALL ducklake_rewrite_data_files('{_LAKE}', delete_threshold => 0)"
            ).fetchall()
            con.execute(f"CALL ducklake_merge_adjacent_files('{_LAKE}')").fetchall()
            keep = f"now() - INTERVAL '{float(keep_days) * 86400} seconds'"
            grace = f"now() - INTERVAL '{float(grace_hours) * 3600} seconds'"
            expired = con.execute(
                f"CALL ducklake_expire_snapshots('{_LAKE}', older_than => {keep})"
            ).fetchall()
            deleted = con.execute(
                f"CALL ducklake_cleanup_old_files('{_LAKE}', older_than => {grace})"
            ).fetchall()
            orphans = con.execute(
                f"CALL ducklake_delete_orphaned_files('{_LAKE}', older_than => {grace})"
            ).fetchall()
            return Maintenance(
                duplicates_removed={t: n for t, n in dupes.items() if n},
                rows_flushed=flushed,
                files_before=before,
                files_after=_files(con),
                snapshots_expired=len(expired),
                files_deleted=len(deleted),
                orphans_deleted=len(orphans),
            )


def _deduplicate(con: Connection, table: str) -> int:
    """Keep one row per key of ``table`` (rows with one key are copies of one record)."""
    key = ", ".join(KEYS[table])
    extra = con.execute(f"SELECT count(*) - count(DISTINCT ({key})) FROM {table}").fetchall()[0][0]
    if not extra:
        return 0
    con.execute("BEGIN")
    con.execute(
        f"CREATE TEMP TABLE keep AS SELECT DISTINCT ON ({key}) * FROM {table} "
        f"WHERE ({key}) IN (SELECT ({key}) FROM {table} GROUP BY ALL HAVING count(*) > 1)"
    )
    upsert(con, table, "keep")  # the copies out, one of each back
    con.execute("DROP TABLE keep")
    con.execute("COMMIT")
    return int(extra)


def _files(con: Connection) -> int:
    return sum(
        len(con.execute(f"FROM ducklake_list_files('{_LAKE}', '{t}')").fetchall()) for t in KEYS
    )


def _sum(con: Connection, sql: str, column: str) -> int:
    rows = con.execute(sql).to_arrow_table()
    return int(sum(rows.column(column).to_pylist())) if rows.num_rows else 0
