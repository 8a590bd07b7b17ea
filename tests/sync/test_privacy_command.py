"""``xtmail remove`` and ``xtmail visibility`` on a real database, parsed by the parser the
CLI registers (app/privacy_command.add_parser)."""

from __future__ import annotations

import argparse

import psycopg
import pytest

from tests.helpers.mail import make_message
from tests.helpers.xtuple import create_user
from xtmail.app import privacy_command
from xtmail.app.options import EXIT_OK, EXIT_SOME_FAILED
from xtmail.sync.db.writer import SKIPPED, Importer
from xtmail.sync.values import Incoming, Location

CLERK, OTHER = "xtmail_cmd_clerk", "xtmail_cmd_other"


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="xtmail")
    privacy_command.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def _dsn(db_dsn: str, user: str) -> str:
    return psycopg.conninfo.make_conninfo(db_dsn, user=user)


@pytest.fixture
def users(conn: psycopg.Connection) -> None:
    for user in (CLERK, OTHER):
        create_user(conn, user)


def _store(dsn: str, raws: list[bytes], account: str, folder: str) -> list[int]:
    with psycopg.connect(dsn, autocommit=True) as c:
        return Importer(c).import_batch(
            [Incoming(r, Location(account, folder, 1, n + 1)) for n, r in enumerate(raws)],
            source="test").eml_ids


def test_remove_a_message_then_allow_it_again(
    db_dsn: str, conn: psycopg.Connection, users: None, capsys: pytest.CaptureFixture[str],
) -> None:
    raw = make_message(subject="Doctor's note", body="private")
    clerk = _dsn(db_dsn, CLERK)
    eml_id, = _store(clerk, [raw], "clerk", "INBOX")
    assert _run(["remove", "--dsn", clerk, "--message", str(eml_id), "--reason", "oops"]) == 0
    assert "removed: 1" in capsys.readouterr().out
    assert _store(clerk, [raw], "clerk", "INBOX") == [SKIPPED]
    assert _run(["remove", "--dsn", clerk, "--message", str(eml_id), "--allow-again"]) == 0
    assert "allowed again: 1" in capsys.readouterr().out
    assert _store(clerk, [raw], "clerk", "INBOX") != [SKIPPED]


def test_removing_others_mail_is_refused_and_said(
    db_dsn: str, conn: psycopg.Connection, users: None, capsys: pytest.CaptureFixture[str],
) -> None:
    ids = _store(_dsn(db_dsn, OTHER), [make_message(subject="a"), make_message(subject="b")],
                 "other", "INBOX")
    code = _run(["remove", "--dsn", _dsn(db_dsn, CLERK), "--folder", "other", "INBOX"])
    out = capsys.readouterr().out
    assert code == EXIT_SOME_FAILED and "removed: 0" in out and "needs DeleteAllEmail): 2" in out
    assert conn.execute("SELECT count(*) FROM xtbatch.eml WHERE eml_id = ANY(%s)",
                        (ids,)).fetchone() == (2,)
    # The database owner (no xTuple privilege tables here: an administrator) may.
    assert _run(["remove", "--dsn", db_dsn, "--account", "other"]) == EXIT_OK
    assert conn.execute("SELECT count(*) FROM xtbatch.eml").fetchone() == (0,)


def test_visibility_set_list_and_block(
    db_dsn: str, conn: psycopg.Connection, users: None, capsys: pytest.CaptureFixture[str],
) -> None:
    clerk = _dsn(db_dsn, CLERK)
    eml_id, = _store(clerk, [make_message(subject="mine")], "clerk", "Personal")
    assert _run(["visibility", "--dsn", clerk, "set", "clerk", "Personal", "private"]) == 0
    assert "messages re-evaluated: 1" in capsys.readouterr().out
    with psycopg.connect(_dsn(db_dsn, OTHER), autocommit=True) as other:
        assert other.execute("SELECT count(*) FROM xtbatch.eml WHERE eml_id = %s",
                             (eml_id,)).fetchone() == (0,)
    assert _run(["visibility", "--dsn", clerk, "set", "clerk", "shared"]) == 0
    assert _run(["visibility", "--dsn", db_dsn, "block", "spam.example", "--reason", "HR",
                 "--apply"]) == 0
    assert _run(["visibility", "--dsn", clerk, "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert "clerk\tshared\t(set by xtmail_cmd_clerk)" in listed
    assert "clerk/Personal\tprivate\t(set by xtmail_cmd_clerk)" in listed
    assert "blocked\tspam.example\tHR" in listed
    assert _run(["visibility", "--dsn", db_dsn, "unblock", "spam.example"]) == 0
