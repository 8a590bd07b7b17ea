"""Fixtures shared by all tests: real PostgreSQL and real Dovecot on free loopback ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

# Qt must be told before any QApplication exists (pytest-qt creates it lazily).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import psycopg
import pytest

from tests.qtsupport import memory_keyring, qloop, run_until  # noqa: F401 - fixtures
from tests.servers.conftest_snippet import dovecot, imap_user  # noqa: F401 - fixtures
from tests.servers.postgres import TestDatabases, start_server
from xtmail.app.localpg import LocalPostgres

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus" / "mikel-mail"


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    yield from start_server(tmp_path_factory.mktemp("pg"))


@pytest.fixture(scope="session")
def databases(pg_server: LocalPostgres) -> TestDatabases:
    return TestDatabases(pg_server)


@pytest.fixture
def db_dsn(databases: TestDatabases) -> Iterator[str]:
    """A fresh, migrated database for this test."""
    dsn = databases.create()
    yield dsn
    databases.drop(dsn)


@pytest.fixture
def empty_db_dsn(databases: TestDatabases) -> Iterator[str]:
    """A fresh database with nothing in it."""
    dsn = databases.create(migrated=False)
    yield dsn
    databases.drop(dsn)


@pytest.fixture
def conn(db_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture(scope="session")
def corpus_files() -> list[Path]:
    files = sorted(CORPUS.glob("*.eml"))
    assert files, f"no corpus messages found in {CORPUS}"
    return files
