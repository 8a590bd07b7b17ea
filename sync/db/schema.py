"""The migration runner: numbered, idempotent SQL files applied in order, recorded once.

Each file in ``migrations/`` named ``NNNN_name.sql`` runs in its own transaction under an
advisory lock, so two processes initialising the same database wait for each other instead
of racing. Files are written to be harmless when re-run, and the version table keeps them
from being re-run at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from xtmail.sync.db.errors import translate
from xtmail.sync.errors import MigrationError

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant distinct from other advisory-lock users of the database.
_LOCK_KEY = 0x78746D61696C  # "xtmail"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """All shipped migrations, in version order."""
    found = []
    for entry in resources.files("xtmail.sync.db.migrations").iterdir():
        match = _FILE_RE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    return found


_VERSION_TABLE = """
CREATE SCHEMA IF NOT EXISTS xtmail;
CREATE TABLE IF NOT EXISTS xtmail.schema_version (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    applied_by  text NOT NULL DEFAULT current_user
);
"""


def applied_versions(conn: psycopg.Connection) -> set[int]:
    exists = conn.execute("SELECT to_regclass('xtmail.schema_version')").fetchone()
    if not exists or exists[0] is None:
        return set()
    return {row[0] for row in conn.execute("SELECT version FROM xtmail.schema_version")}


def migrate(conn: psycopg.Connection) -> list[Migration]:
    """Apply every migration not yet recorded; return the ones applied this time."""
    applied: list[Migration] = []
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            done = applied_versions(conn)
            pending = [m for m in migrations() if m.version not in done]
            if pending and not done:
                conn.execute(_VERSION_TABLE)
            for migration in pending:
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO xtmail.schema_version (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                applied.append(migration)
    except psycopg.Error as exc:
        raise translate(
            exc, "to change the database schema", refused=MigrationError,
            privilege_hint="Run 'xtmail init-db' as the database owner or an administrator.",
        ) from exc
    return applied
