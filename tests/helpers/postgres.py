"""PostgreSQL for tests and benchmarks: one server per session, a fresh database per test.

Every test database is a copy of a template that already holds the migrated schema, so a
test starts from a clean, fully initialised database in a few tens of milliseconds.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import psycopg

from xtmail.app.localpg import LocalPostgres
from xtmail.sync.db.schema import migrate

TEMPLATE = "xtmail_template"


class TestDatabases:
    """Hands out fresh databases cloned from a migrated template."""

    __test__ = False  # not a pytest test class

    def __init__(self, server: LocalPostgres) -> None:
        self.server = server
        self._counter = itertools.count(1)
        self._template_ready = False

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.server.dsn(), autocommit=True)

    def _ensure_template(self) -> None:
        if self._template_ready:
            return
        with self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
        with psycopg.connect(self.server.dsn(TEMPLATE), autocommit=True) as conn:
            migrate(conn)
        self._template_ready = True

    def create(self, *, migrated: bool = True) -> str:
        """A new database name; empty (``migrated=False``) or with the schema applied."""
        name = f"test_{next(self._counter)}"
        with self.admin() as conn:
            if migrated:
                self._ensure_template()
                conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE} STRATEGY FILE_COPY")
            else:
                conn.execute(f"CREATE DATABASE {name}")
        return self.server.dsn(name)

    def drop(self, dsn: str) -> None:
        name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
        with self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def start_server(folder: Path) -> Iterator[LocalPostgres]:
    server = LocalPostgres(folder, fast=True)
    server.start()
    try:
        yield server
    finally:
        server.stop(mode="immediate")
