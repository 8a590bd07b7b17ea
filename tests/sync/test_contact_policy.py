"""Contact creation the user controls: whose addresses become contacts, and how many
recipients a message may have before it creates none (docs/import.md, "Contacts")."""

from __future__ import annotations

import mailbox
from pathlib import Path

import psycopg
import pytest

from tests.helpers.mail import make_message
from tests.helpers.maildata import MailData
from xtmail.app.cli import main
from xtmail.sync.db.writer import Importer
from xtmail.sync.files import import_paths
from xtmail.sync.values import ImportPolicy, Incoming


def _created(conn: psycopg.Connection, raw: bytes, policy: ImportPolicy | None = None) -> set[str]:
    result = Importer(conn, policy).import_batch([Incoming(raw)])
    emails = {r[0] for r in conn.execute("SELECT lower(cntct_email) FROM cntct")}
    assert len(emails) == result.contacts_created
    return emails


def test_a_message_to_sixty_people_creates_no_contacts_by_default(
    conn: psycopg.Connection,
) -> None:
    raw = make_message(
        sender="Events <events@conference.example>",
        to=", ".join(f"to{i}@guests.example" for i in range(30)),
        cc=", ".join(f"cc{i}@guests.example" for i in range(30)),
    )
    assert _created(conn, raw) == set()
    # Each address a contact with everyone allowed and no limit.
    everyone = ImportPolicy(contact_scope="everyone", max_recipients=0)
    assert len(_created(conn, raw.replace(b"Message-ID: <", b"Message-ID: <again."),
                        everyone)) == 61


@pytest.mark.parametrize(("scope", "expected"), [
    ("senders", {"ann@customer.example"}),
    ("correspondents", {"ann@customer.example", "bob@customer.example"}),
    ("everyone", {"ann@customer.example", "bob@customer.example", "carol@customer.example"}),
])
def test_the_scope_says_whose_addresses_become_contacts(
    conn: psycopg.Connection, scope: str, expected: set[str]
) -> None:
    raw = make_message(sender="Ann <ann@customer.example>", to="Bob <bob@customer.example>",
                       cc="Carol <carol@customer.example>")
    assert _created(conn, raw, ImportPolicy(contact_scope=scope)) == expected


def test_the_default_creates_the_people_a_message_is_between(conn: psycopg.Connection) -> None:
    raw = make_message(sender="Ann <ann@customer.example>", to="Bob <bob@customer.example>",
                       cc="Carol <carol@customer.example>")
    assert _created(conn, raw) == {"ann@customer.example", "bob@customer.example"}


def test_never_creates_none_but_still_ties_existing_contacts(conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO cntct (cntct_number, cntct_email) "
                 "VALUES ('K1', 'ann@customer.example')")
    raw = make_message(sender="Ann <ann@customer.example>", to="Bob <bob@customer.example>")
    result = Importer(conn, ImportPolicy(create_contacts=False)).import_batch([Incoming(raw)])
    assert result.contacts_created == 0
    assert conn.execute("SELECT count(*) FROM xtbatch.emlassc WHERE emlassc_type = 'T' "
                        "AND emlassc_eml_id = %s", (result.eml_ids[0],)).fetchone() == (1,)


def test_no_names_from_local_parts_that_are_no_names(conn: psycopg.Connection) -> None:
    raw = make_message(sender="cc10@lists.example",
                       to="mary.ann.smith@customer.example, j.smith2@customer.example")
    Importer(conn).import_batch([Incoming(raw)])
    names = dict(conn.execute(
        "SELECT lower(cntct_email), (cntct_first_name, cntct_last_name)::text FROM cntct"))
    assert names == {
        "cc10@lists.example": "(\"\",\"\")",
        "mary.ann.smith@customer.example": "(Mary,\"Ann Smith\")",
        "j.smith2@customer.example": "(\"\",\"\")",
    }


def test_a_dry_run_says_what_it_would_create_and_tie_and_keeps_nothing(
    conn: psycopg.Connection, tmp_path: Path, mail_data: MailData
) -> None:
    order = mail_data.sales_order("50123")
    folder = mailbox.Maildir(tmp_path / "md", create=True)
    for raw in (
        make_message(sender="Ann <ann@customer.example>", subject="Order [xtref:S-50123]"),
        make_message(sender="Bob <bob@customer.example>", to="sales@ourco.example",
                     subject="Hello"),
        make_message(sender="Events <events@conference.example>",
                     to=", ".join(f"guest{i}@guests.example" for i in range(20))),
    ):
        folder.add(raw)
    before = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()
              for t in ("xtbatch.eml", "xtbatch.emlassc", "cntct", "xtmail.location")}
    policy = ImportPolicy.build(own_addresses=["sales@ourco.example"])
    dry = import_paths(conn, [tmp_path / "md"], policy=policy, workers=1, dry_run=True)
    assert dry.dry_run and dry.imported == 3
    # Ann, Bob, and the recipient of Ann's message (sales@ourco.example is our own);
    # the message to 20 guests creates none.
    assert dry.contacts_created == 2
    assert dry.ties["S"] == 1 and dry.ties["T"] == 2
    after = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone() for t in before}
    assert after == before
    # The real run does what the dry run said.
    real = import_paths(conn, [tmp_path / "md"], policy=policy, workers=1)
    assert (real.imported, real.contacts_created, real.ties) == (
        dry.imported, dry.contacts_created, dry.ties)
    assert ("S", order) in conn.execute(
        "SELECT emlassc_type, emlassc_assc_id FROM xtbatch.emlassc").fetchall()


def test_the_import_command_takes_the_policy(
    conn: psycopg.Connection, db_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "one.eml"
    path.write_bytes(make_message(sender="ann@customer.example", to="bob@customer.example",
                                  cc="carol@customer.example"))
    args = ["import", "--dsn", db_dsn, "--quiet", "--workers", "1", str(path)]
    assert main([*args, "--new-contacts-from", "senders"]) == 0
    assert "contacts created: 1" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:
        main([*args, "--new-contacts-from", "nobody"])
    assert refused.value.code == 2
    assert "invalid choice: 'nobody'" in capsys.readouterr().err


def test_the_import_command_has_a_dry_run(
    conn: psycopg.Connection, db_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "one.eml"
    path.write_bytes(make_message(sender="ann@customer.example", to="bob@customer.example"))
    args = ["import", "--dsn", db_dsn, "--quiet", "--workers", "1", str(path)]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: nothing was stored" in out
    assert "ties by document type: T 2" in out
    assert "imported: 1" in out and "contacts created: 2" in out
    assert conn.execute("SELECT count(*) FROM xtbatch.eml").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM cntct").fetchone() == (0,)
