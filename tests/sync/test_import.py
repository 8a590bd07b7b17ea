"""The import engine and its association rules, against a real PostgreSQL database."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from tests.helpers.mail import make_message
from tests.helpers.xtuple import refuse_new_contacts
from xtmail.app.cli import main
from xtmail.sync.db import writer
from xtmail.sync.db.writer import Importer
from xtmail.sync.mail.prepare import identity_hash, prepare
from xtmail.sync.values import ImportPolicy, Incoming, Location

# -- helpers ---------------------------------------------------------------------------------


def add_contact(conn: psycopg.Connection, number: str, email: str, *extra: str) -> int:
    row = conn.execute(
        "INSERT INTO cntct (cntct_number, cntct_first_name, cntct_last_name, cntct_email) "
        "VALUES (%s, 'F', 'L', %s) RETURNING cntct_id",
        (number, email),
    ).fetchone()
    assert row
    for i, addr in enumerate((email, *extra)):
        conn.execute(
            "INSERT INTO cntcteml (cntcteml_cntct_id, cntcteml_primary, cntcteml_email) "
            "VALUES (%s, %s, %s)",
            (row[0], i == 0, addr),
        )
    return int(row[0])


def add_document(conn: psycopg.Connection, table: str, number_col: str, number: object) -> int:
    key = {"cohead": "cohead_id", "incdt": "incdt_id", "quhead": "quhead_id",
           "custinfo": "cust_id", "prj": "prj_id"}[table]
    row = conn.execute(
        f"INSERT INTO {table} ({number_col}) VALUES (%s) RETURNING {key}", (number,)
    ).fetchone()
    assert row
    return int(row[0])


def ties_of(conn: psycopg.Connection, eml_id: int, code: str | None = None) -> set[tuple[str, int]]:
    rows = conn.execute(
        "SELECT emlassc_type, emlassc_assc_id FROM xtbatch.emlassc WHERE emlassc_eml_id = %s",
        (eml_id,),
    ).fetchall()
    return {(t, i) for t, i in rows if code is None or t == code}


def import_one(conn: psycopg.Connection, raw: bytes, policy: ImportPolicy | None = None,
               location: Location | None = None) -> int:
    result = Importer(conn, policy).import_batch([Incoming(raw, location)])
    return result.eml_ids[0]


def count(conn: psycopg.Connection, query: str, *params: object) -> int:
    row = conn.execute(query, params).fetchone()
    assert row
    return int(row[0])


# -- the corpus --------------------------------------------------------------------------------


def test_every_corpus_message_imports_with_its_raw_bytes(
    db_dsn: str, corpus_files: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folders = sorted({str(path.parent) for path in corpus_files})
    assert main(["import", "--dsn", db_dsn, "--quiet", *folders]) == 0
    out = capsys.readouterr().out
    assert "failed: 0" in out
    with psycopg.connect(db_dsn) as conn:
        merged = []
        for path in corpus_files:
            row = conn.execute(
                """SELECT coalesce(l.loc_raw, e.eml_msg), e.eml_body, e.eml_hash, l.loc_raw IS NULL
                     FROM xtmail.location l
                     JOIN xtbatch.eml e ON e.eml_id = l.loc_eml_id
                    WHERE l.loc_account = 'file' AND l.loc_mailbox = %s""",
                (str(path.resolve()),),
            ).fetchone()
            assert row is not None, f"{path.name} was lost"
            raw, body, eml_hash, is_stored_copy = row
            assert bytes(raw) == path.read_bytes(), path.name
            assert bytes(eml_hash).decode() == prepare(path.read_bytes()).hash
            assert isinstance(body, str)
            if not is_stored_copy:
                # The same logical message as another file (another delivery of it).
                merged.append(path)
        # Every message with a text or HTML part has a readable body.
        empty = conn.execute(
            "SELECT count(*) FROM xtbatch.eml WHERE eml_body = '' AND eml_msg::text ILIKE "
            "'%%text/%%'"
        ).fetchone()
        assert empty == (0,)
        stored = count(conn, "SELECT count(*) FROM xtbatch.eml")
        assert stored + len(merged) == len(corpus_files)
        assert len(merged) <= len(corpus_files) // 10
    # Importing again finds everything present and stores nothing new.
    assert main(["import", "--dsn", db_dsn, "--quiet", *folders]) == 0
    again = capsys.readouterr().out
    assert "imported: 0" in again
    assert f"already present: {len(corpus_files)}" in again


def test_import_reads_maildir_and_mbox(db_dsn: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    import mailbox

    maildir = mailbox.Maildir(tmp_path / "md", create=True)
    maildir.add(make_message(subject="from maildir"))
    mbox_path = tmp_path / "old.mbox"
    box = mailbox.mbox(mbox_path, create=True)
    box.add(make_message(subject="from mbox one"))
    box.add(make_message(subject="from mbox two"))
    box.close()
    (tmp_path / "damaged.eml").write_bytes(b"\xef\xbb\xbf" + make_message(subject="damaged"))
    code = main(["import", "--dsn", db_dsn, "--quiet", "--workers", "1",
                 str(tmp_path / "md"), str(mbox_path), str(tmp_path / "damaged.eml")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "imported: 4" in out
    with psycopg.connect(db_dsn) as conn:
        subjects = {r[0] for r in conn.execute("SELECT eml_subj FROM xtbatch.eml")}
        assert {"from maildir", "from mbox one", "from mbox two", "damaged"} <= subjects
        raw = conn.execute(
            "SELECT eml_msg FROM xtbatch.eml WHERE eml_subj = 'damaged'"
        ).fetchone()
        assert raw is not None and bytes(raw[0]).startswith(b"\xef\xbb\xbf"), (
            "a damaged message is stored with its raw bytes"
        )


def test_import_refuses_what_is_not_mail_and_names_repairs(
    db_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty.eml").write_bytes(b"")
    (tmp_path / "binary.eml").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)))
    (tmp_path / "good.eml").write_bytes(make_message(subject="good"))
    (tmp_path / "bom.eml").write_bytes(b"\xef\xbb\xbf" + make_message(subject="bom"))
    code = main(["import", "--dsn", db_dsn, "--quiet", "--workers", "1", "--verbose",
                 str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "imported: 2" in out
    assert "read with repairs: 1" in out
    assert f"  {(tmp_path / 'bom.eml').resolve()}: UTF-8 byte order mark before the headers" in out
    assert "failed: 2" in out
    for name in ("empty.eml", "binary.eml"):
        assert f"  {tmp_path / name}: not a mail message" in out
    with psycopg.connect(db_dsn) as conn:
        assert {r[0] for r in conn.execute("SELECT eml_subj FROM xtbatch.eml")} == {"good", "bom"}


def test_missing_path_is_a_clear_error(db_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", "--dsn", db_dsn, "/nonexistent/mail"]) == 2
    assert "no such file or folder" in capsys.readouterr().err


# -- rule 5: stored once ---------------------------------------------------------------------------


def test_nul_and_surrogates_in_any_header_are_stored(conn: psycopg.Connection) -> None:
    raw = (b"From: Ann <ann@example.com>\r\nSubject: odd\r\n"
           b"Message-ID: <a\x00b@example.com>\r\nList-Id: <l\x00ist>\r\n"
           b"Content-Type: \x00multipart/mixed; boundary=XX\r\n\r\n"
           b"--XX\r\nContent-Type: text/plain\r\n\r\nHello\r\n--XX--\r\n")
    eml_id = import_one(conn, raw)
    stored = conn.execute("SELECT eml_msg FROM xtbatch.eml WHERE eml_id = %s", (eml_id,))
    assert bytes(stored.fetchone()[0]) == raw  # type: ignore[index]
    # Stored with its parsed fields (not by the one-by-one fallback's raw bytes only).
    assert count(conn, "SELECT count(*) FROM xtmail.msg JOIN xtbatch.eml ON eml_id = msg_eml_id"
                 " WHERE msg_eml_id = %s AND eml_subj = 'odd' AND msg_list_id IS NOT NULL"
                 " AND msg_message_id LIKE 'a%%b@example.com'", eml_id) == 1


def test_a_batch_the_database_refuses_is_stored_one_by_one(conn: psycopg.Connection) -> None:
    """A parser bug letting through a value PostgreSQL cannot hold must not stick a folder:
    the other messages go in as usual, the refused one by its raw bytes."""
    import dataclasses

    raws = [make_message(subject=f"one of three {i}", sender=f"p{i}@example.org")
            for i in range(3)]
    prepared = [prepare(raw) for raw in raws]
    prepared[1] = dataclasses.replace(  # as if prepare() had let a NUL through
        prepared[1], attachments_json='[{"filename": "a\\u0000b"}]')
    items = [Incoming(raw, Location("poison", "INBOX", 1, i + 1)) for i, raw in enumerate(raws)]
    states: list[int] = []
    result = writer.write_batch(conn, items, prepared, policy=ImportPolicy(), source="imap",
                               on_state=lambda c: states.append(len(states)))
    assert result.new == [True, True, True] and len(set(result.eml_ids)) == 3
    assert states == [0]  # the caller's state, once, with the last message
    assert len(result.warnings) == 1 and "raw bytes" in result.warnings[0]
    rows = conn.execute(
        """SELECT e.eml_msg, e.eml_subj, m.msg_defects FROM xtbatch.eml e
             JOIN xtmail.msg m ON m.msg_eml_id = e.eml_id WHERE e.eml_id = ANY(%s)
            ORDER BY e.eml_id""", (result.eml_ids,)).fetchall()
    by_id = dict(zip(sorted(result.eml_ids), rows, strict=True))
    refused = by_id[result.eml_ids[1]]
    assert bytes(refused[0]) == raws[1] and refused[1] == ""
    assert "stored without its parsed fields" in refused[2][0]
    assert [by_id[result.eml_ids[i]][1] for i in (0, 2)] == ["one of three 0", "one of three 2"]
    # The good ones are tied to their senders' (new) contacts; the refused one to nothing.
    assert set(result.ties) == {result.eml_ids[0], result.eml_ids[2]}


def test_same_message_from_two_folders_is_stored_once(conn: psycopg.Connection) -> None:
    raw = make_message(subject="Quarterly numbers")
    delivered = b"Received: from mx.example by mail.ourco.example\r\nDelivered-To: bob@ourco\r\n"
    first = import_one(conn, raw, location=Location("alice", "INBOX", 7, 1))
    second = import_one(conn, delivered + raw, location=Location("bob", "Archive", 9, 42))
    third = import_one(conn, raw, location=Location("alice", "Sent", 3, 5))
    assert first == second == third
    assert count(conn, "SELECT count(*) FROM xtbatch.eml") == 1
    places = conn.execute(
        "SELECT loc_account, loc_mailbox, loc_uid FROM xtmail.location ORDER BY 1, 2"
    ).fetchall()
    assert places == [("alice", "INBOX", 1), ("alice", "Sent", 5), ("bob", "Archive", 42)]
    # The raw bytes are the ones first received, untouched.
    stored = conn.execute("SELECT eml_msg FROM xtbatch.eml").fetchone()
    assert stored and bytes(stored[0]) == raw


def test_messages_sharing_a_message_id_stay_distinct(conn: psycopg.Connection) -> None:
    one = make_message(message_id="<same@x>", subject="First", body="one")
    two = make_message(message_id="<same@x>", subject="Second", body="two")
    three = make_message(message_id="<same@x>", subject="First", body="three")
    ids = {import_one(conn, m) for m in (one, two, three)}
    assert len(ids) == 3


def test_duplicates_inside_one_batch(conn: psycopg.Connection) -> None:
    raw = make_message()
    result = Importer(conn).import_batch(
        [Incoming(raw, Location("a", "INBOX", 1, 1)), Incoming(raw, Location("a", "Copy", 1, 1))]
    )
    assert result.new == [True, False]
    assert result.eml_ids[0] == result.eml_ids[1]
    assert count(conn, "SELECT count(*) FROM xtmail.location") == 2


# -- rule 1: contacts ------------------------------------------------------------------------------


def test_addresses_match_every_address_of_every_contact(conn: psycopg.Connection) -> None:
    ada = add_contact(conn, "C1", "ada@example.com", "Ada.Alt@Example.ORG")
    bob = add_contact(conn, "C2", "bob@example.net")
    raw = make_message(sender="ADA <ada.alt@example.org>", to="Bob <BOB@Example.net>",
                       cc="Ada <Ada@Example.com>")
    eml = import_one(conn, raw, ImportPolicy(create_contacts=False))
    assert ties_of(conn, eml) == {("T", ada), ("T", bob)}


def test_unknown_addresses_become_contacts(conn: psycopg.Connection) -> None:
    raw = make_message(sender='"Hopper, Grace" <grace@navy.example>',
                       to="Linus Torvalds <linus@kernel.example>, plain@nobody.example")
    result = Importer(conn).import_batch([Incoming(raw)])
    assert result.contacts_created == 3
    rows = conn.execute(
        """SELECT c.cntct_first_name, c.cntct_last_name, c.cntct_email, c.cntct_number,
                  c.cntct_owner_username, c.cntct_created IS NOT NULL, e.cntcteml_primary
             FROM cntct c JOIN cntcteml e ON e.cntcteml_cntct_id = c.cntct_id
            ORDER BY c.cntct_email"""
    ).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("Grace", "Hopper", "grace@navy.example"),
        ("Linus", "Torvalds", "linus@kernel.example"),
        ("", "", "plain@nobody.example"),  # no name from a bare local part
    ]
    assert all(r[3] and r[4] == "postgres" and r[5] and r[6] for r in rows)
    assert len({r[3] for r in rows}) == 3
    assert len(ties_of(conn, result.eml_ids[0], "T")) == 3


def test_exclusion_list(conn: psycopg.Connection) -> None:
    known = add_contact(conn, "C9", "noreply@shop.example")
    policy = ImportPolicy.build(own_addresses=["Me@OurCo.example"],
                                excluded_domains=["partner.example"])
    raw = make_message(
        sender="Shop <noreply@shop.example>",
        to="me@ourco.example, x@partner.example, y@eu.partner.example, "
           "MAILER-DAEMON@mx.example, bounces+123@lists.example, keep@customer.example",
    )
    eml = import_one(conn, raw, policy)
    emails = {r[0] for r in conn.execute("SELECT lower(cntct_email) FROM cntct")}
    assert emails == {"noreply@shop.example", "keep@customer.example"}
    # An excluded address that is an existing contact still ties the message to it.
    assert ("T", known) in ties_of(conn, eml)


def test_bulk_mail_creates_no_contacts_unless_allowed(conn: psycopg.Connection) -> None:
    raw = make_message(sender="News <news@letter.example>",
                       extra="List-Id: <weekly.letter.example>")
    import_one(conn, raw)
    assert count(conn, "SELECT count(*) FROM cntct") == 0
    other = make_message(sender="News <news@letter.example>", subject="again",
                         extra="Precedence: bulk")
    import_one(conn, other, ImportPolicy(exclude_bulk=False))
    assert count(conn, "SELECT count(*) FROM cntct") == 2


def test_contact_numbers_come_from_fetch_next_number_when_present(
    conn: psycopg.Connection,
) -> None:
    conn.execute("CREATE SEQUENCE erp_cntct_seq START 700")
    conn.execute(
        """CREATE FUNCTION fetchNextNumber(text) RETURNS text LANGUAGE sql AS
           $$ SELECT 'ERP' || nextval('erp_cntct_seq') $$"""
    )
    import_one(conn, make_message(sender="a@one.example", to="b@two.example"))
    numbers = sorted(r[0] for r in conn.execute("SELECT cntct_number FROM cntct"))
    assert numbers == ["ERP700", "ERP701"]


def test_trigger_refusing_contacts_keeps_the_mail(conn: psycopg.Connection) -> None:
    refuse_new_contacts(conn)
    conn.execute("ALTER TABLE cntct DISABLE TRIGGER refuse")
    known = add_contact(conn, "K1", "known@example.com")
    conn.execute("ALTER TABLE cntct ENABLE TRIGGER refuse")
    result = Importer(conn).import_batch(
        [Incoming(make_message(sender="known@example.com", to="new@example.com"))]
    )
    assert result.imported == 1
    assert result.contacts_created == 0
    assert result.warnings and "privileges to maintain Contacts" in result.warnings[0]
    assert ties_of(conn, result.eml_ids[0]) == {("T", known)}


# -- rule 2: references ----------------------------------------------------------------------------


def test_references_in_subject_and_body(conn: psycopg.Connection) -> None:
    so = add_document(conn, "cohead", "cohead_number", "50123")
    so2 = add_document(conn, "cohead", "cohead_number", "50124")
    incident = add_document(conn, "incdt", "incdt_number", 4711)
    quote = add_document(conn, "quhead", "quhead_number", "Q-77")
    raw = make_message(
        subject="Your order [xtref:S-50123]",
        body="See also [XTREF:s-50124], [xtref:INCDT-4711] and [xtref:Q-Q-77].\r\n"
             "Unknown: [xtref:S-99999] [xtref:INCDT-abc]. Not ours: [xtref:ZZ-1]",
    )
    eml = import_one(conn, raw, ImportPolicy(create_contacts=False))
    assert ties_of(conn, eml) == {("S", so), ("S", so2), ("INCDT", incident), ("Q", quote)}
    unresolved = conn.execute(
        "SELECT uref_code, uref_number FROM xtmail.unresolved_ref ORDER BY 1, 2"
    ).fetchall()
    assert unresolved == [("INCDT", "abc"), ("S", "99999")]


# -- rule 3: replies -------------------------------------------------------------------------------


def test_reply_inherits_document_ties(conn: psycopg.Connection) -> None:
    so = add_document(conn, "cohead", "cohead_number", "50123")
    parent = make_message(message_id="<p@x>", subject="Order [xtref:S-50123]",
                          sender="ada@example.com")
    reply = make_message(message_id="<r@x>", subject="RE: Order", in_reply_to="<p@x>",
                         sender="bob@example.net", to="carol@example.org")
    second = make_message(message_id="<r2@x>", subject="RE: RE: Order",
                          references="<p@x> <r@x>", sender="carol@example.org")
    parent_id = import_one(conn, parent)
    reply_id = import_one(conn, reply)
    assert ("S", so) in ties_of(conn, reply_id)
    # Contact ties are the reply's own (bob, carol), not inherited from the parent (ada).
    contact = dict(conn.execute("SELECT lower(cntct_email), cntct_id FROM cntct").fetchall())
    assert ties_of(conn, parent_id, "T") == {
        ("T", contact["ada@example.com"]), ("T", contact["sales@ourco.example"])}
    assert ties_of(conn, reply_id, "T") == {
        ("T", contact["bob@example.net"]), ("T", contact["carol@example.org"])}
    third = import_one(conn, second)
    assert ties_of(conn, third, "S") == {("S", so)}


def test_reply_inherits_hand_ties_of_every_parent_sharing_the_id(
    conn: psycopg.Connection,
) -> None:
    """Message-IDs repeat across different messages: a reply inherits from all of them,
    including ties added by hand (Attach); a message naming its own id gains nothing."""
    quote = add_document(conn, "quhead", "quhead_number", "Q-77")
    order = add_document(conn, "cohead", "cohead_number", "77")
    policy = ImportPolicy(create_contacts=False)
    one = import_one(conn, make_message(message_id="<same@x>", subject="one"), policy)
    import_one(conn, make_message(message_id="<same@x>", subject="two [xtref:S-77]"), policy)
    writer.insert_ties(conn, [(one, "Q", quote)])  # attached by hand
    selfish = make_message(message_id="<self@x>", references="<self@x>", subject="me")
    reply = make_message(message_id="<r-same@x>", in_reply_to="<same@x>", subject="RE")
    result = Importer(conn, policy).import_batch([Incoming(selfish), Incoming(reply)])
    assert ties_of(conn, result.eml_ids[0]) == set()
    assert ties_of(conn, result.eml_ids[1]) == {("Q", quote), ("S", order)}


def test_reply_chain_inside_one_batch(conn: psycopg.Connection) -> None:
    so = add_document(conn, "cohead", "cohead_number", "1")
    msgs = [
        make_message(message_id="<a@x>", subject="[xtref:S-1]"),
        make_message(message_id="<b@x>", in_reply_to="<a@x>", subject="RE"),
        make_message(message_id="<c@x>", in_reply_to="<b@x>", subject="RE RE"),
    ]
    result = Importer(conn, ImportPolicy(create_contacts=False)).import_batch(
        [Incoming(m) for m in reversed(msgs)]
    )
    for eml in result.eml_ids:
        assert ties_of(conn, eml) == {("S", so)}


def test_parent_stored_after_its_replies_passes_its_ties_down(conn: psycopg.Connection) -> None:
    so = add_document(conn, "cohead", "cohead_number", "4242")
    policy = ImportPolicy(create_contacts=False)
    reply = make_message(message_id="<late-r@x>", in_reply_to="<late-p@x>", subject="RE: it")
    deeper = make_message(message_id="<late-r2@x>", references="<late-p@x> <late-r@x>",
                          subject="RE: RE: it")
    unrelated = make_message(message_id="<other@x>", in_reply_to="<nobody@x>", subject="RE")
    first = Importer(conn, policy).import_batch([Incoming(m) for m in (reply, deeper, unrelated)])
    assert all(ties_of(conn, e) == set() for e in first.eml_ids)
    parent = make_message(message_id="<late-p@x>", subject="Your order [xtref:S-4242]")
    result = Importer(conn, policy).import_batch([Incoming(parent)])
    reply_id, deeper_id, unrelated_id = first.eml_ids
    assert ties_of(conn, reply_id) == {("S", so)}
    assert ties_of(conn, deeper_id) == {("S", so)}
    assert ties_of(conn, unrelated_id) == set()
    # The replies that gained ties are announced with the batch, for open Email tabs.
    assert result.ties[reply_id] == [("S", so)]
    assert result.ties[deeper_id] == [("S", so)]
    assert result.imported == 1


def test_batch_reply_to_a_stored_reply_gains_ties_the_batch_passed_down(
    conn: psycopg.Connection,
) -> None:
    """A stored reply gains a new parent's ties in the same batch as a reply to that stored
    reply: the new reply gets them too, and the batch's announced ties say so."""
    so = add_document(conn, "cohead", "cohead_number", "4343")
    policy = ImportPolicy(create_contacts=False)
    middle = make_message(message_id="<m@x>", in_reply_to="<p@x>", subject="RE: it")
    middle_id = import_one(conn, middle, policy)
    parent = make_message(message_id="<p@x>", subject="Order [xtref:S-4343]")
    last = make_message(message_id="<l@x>", in_reply_to="<m@x>", subject="RE: RE: it")
    result = Importer(conn, policy).import_batch([Incoming(parent), Incoming(last)])
    parent_id, last_id = result.eml_ids
    for eml in (parent_id, middle_id, last_id):
        assert ties_of(conn, eml) == {("S", so)}
        assert result.ties[eml] == [("S", so)]


# -- concurrency -----------------------------------------------------------------------------------


def test_two_importers_at_once_never_double_anything(db_dsn: str) -> None:
    shared = [
        make_message(sender=f"Person {i} <person{i}@customer.example>",
                     to=f"other{i % 5}@customer.example", subject=f"Message {i}")
        for i in range(60)
    ]
    errors: list[BaseException] = []
    for round_ in range(3):
        barrier = threading.Barrier(2)
        batch = [m.replace(b"Message ", f"Round {round_} message ".encode()) for m in shared]

        def run(order: int, batch: list[bytes] = batch, barrier: threading.Barrier = barrier
                ) -> None:
            try:
                with psycopg.connect(db_dsn, autocommit=True) as conn:
                    items = [Incoming(m) for m in (batch if order == 0 else batch[::-1])]
                    barrier.wait()
                    for start in range(0, len(items), 15):
                        Importer(conn).import_batch(items[start:start + 15])
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
    with psycopg.connect(db_dsn) as conn:
        assert count(conn, "SELECT count(*) FROM xtbatch.eml") == 180
        assert count(conn, "SELECT count(*) FROM cntct") == 65
        assert count(conn, "SELECT count(DISTINCT lower(cntct_email)) FROM cntct") == 65
        assert count(conn, "SELECT count(*) FROM cntcteml") == 65
        assert count(
            conn,
            """SELECT count(*) FROM (SELECT 1 FROM xtbatch.emlassc
                GROUP BY emlassc_eml_id, emlassc_type, emlassc_assc_id HAVING count(*) > 1) d""",
        ) == 0


def test_store_helpers_resolve_documents(conn: psycopg.Connection) -> None:
    cust = add_document(conn, "custinfo", "cust_number", "TTOYS")
    assert writer.resolve_documents(conn, "C", ["ttoys", "NONE"]) == {"ttoys": cust}
    assert writer.resolve_documents(conn, "INCDT", ["12a"]) == {}
    incident = add_document(conn, "incdt", "incdt_number", 4711)
    # Integer numbers as integers: leading zeros name the same one, and numbers too large
    # for any column name none (no error).
    assert writer.resolve_documents(conn, "INCDT", ["4711", "04711", "9" * 30, "4712"]) == {
        "4711": incident, "04711": incident}
    assert writer.split_name("", "john.smith@x") == ("John", "Smith")
    assert writer.split_name("Doe, Jane", "j@x") == ("Jane", "Doe")
    assert writer.split_name("Jane van Doe", "j@x") == ("Jane van", "Doe")


def test_ties_stay_single_without_a_unique_index(conn: psycopg.Connection) -> None:
    # No unique index over the ties (xTuple's merges would fail on one, 0010): the store
    # keeps new ties single by itself.
    assert conn.execute(
        "SELECT to_regclass('xtbatch.xtmail_emlassc_unique_idx')").fetchone() == (None,)
    so = add_document(conn, "cohead", "cohead_number", "777")
    parent = make_message(message_id="<u1@x>", subject="[xtref:S-777]")
    reply = make_message(message_id="<u2@x>", in_reply_to="<u1@x>", subject="RE [xtref:S-777]")
    parent_id = import_one(conn, parent)
    reply_id = import_one(conn, reply)
    assert writer.insert_ties(conn, [(parent_id, "S", so), (reply_id, "S", so)]) == 0
    assert count(
        conn,
        "SELECT count(*) FROM xtbatch.emlassc WHERE emlassc_type = 'S' AND emlassc_assc_id = %s",
        so,
    ) == 2


_HASHED = (b"Received: from a by b\r\nFrom: Ann <ann@example.com>\r\nSubject: Hello\r\n\tthere\r\n"
           b"Message-ID: <1@example.com>\r\n\r\nLine one\r\nLine two\r\n\r\n")


@pytest.mark.parametrize(("raw", "expected"), [
    # Hashes stored by earlier versions must stay valid: these values are fixed.
    (_HASHED, "x1:6209693f9fa86de93adfa1f32f172a2a5aac7b3b3f0aa0f1ac28443a8009cbab"),
    (_HASHED.replace(b"\r\n", b"\n"),
     "x1:6209693f9fa86de93adfa1f32f172a2a5aac7b3b3f0aa0f1ac28443a8009cbab"),
    (_HASHED.replace(b"Received: from a by b\r\n", b""),
     "x1:6209693f9fa86de93adfa1f32f172a2a5aac7b3b3f0aa0f1ac28443a8009cbab"),
    # Lone carriage returns are kept; only CRLF becomes LF.
    (_HASHED.replace(b"Line one\r\n", b"Line one\rstill one\r\r\n"),
     "x1:82d4084ef83a7289b8e94adf1f7d3815bd454bb15151f6ece7cddc21a76b9fb2"),
])
def test_identity_hash_is_fixed(raw: bytes, expected: str) -> None:
    assert identity_hash(raw) == expected


def test_parallel_writers_store_what_one_writer_stores(db_dsn: str, tmp_path: Path) -> None:
    from xtmail.sync.files import import_paths

    for i in range(30):
        (tmp_path / f"{i:02}.eml").write_bytes(make_message(
            sender=f"writer{i % 7}@customer.example", subject=f"Parallel {i}"))
    (tmp_path / "copy.eml").write_bytes((tmp_path / "03.eml").read_bytes())
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        summary = import_paths(
            conn, [tmp_path], workers=2, batch_size=4, writers=3,
            connect=lambda: psycopg.connect(db_dsn, autocommit=True),
        )
        assert (summary.imported, summary.already_present, summary.failed) == (30, 1, [])
        assert count(conn, "SELECT count(*) FROM xtbatch.eml") == 30
        assert count(conn, "SELECT count(*) FROM xtmail.location") == 31
        assert count(conn, "SELECT count(*) FROM cntct WHERE cntct_email LIKE 'writer%%'") == 7


def test_a_failing_writer_stops_the_import_with_its_error(db_dsn: str, tmp_path: Path) -> None:
    from xtmail.sync.files import import_paths

    for i in range(12):
        (tmp_path / f"{i:02}.eml").write_bytes(make_message(subject=f"Failing {i}"))

    def broken() -> psycopg.Connection:
        lost = psycopg.connect(db_dsn, autocommit=True)
        lost.close()
        return lost

    with pytest.raises(psycopg.OperationalError):
        import_paths(broken(), [tmp_path], workers=1, batch_size=2, writers=2, connect=broken)
    with psycopg.connect(db_dsn) as conn:
        assert count(conn, "SELECT count(*) FROM xtbatch.eml") == 0


def test_a_refused_extra_writer_leaves_the_import_on_one(db_dsn: str, tmp_path: Path) -> None:
    from xtmail.sync.files import import_paths

    for i in range(9):
        (tmp_path / f"{i:02}.eml").write_bytes(make_message(subject=f"Limit {i}"))

    def refused() -> psycopg.Connection:
        raise psycopg.OperationalError("sorry, too many clients already")

    with psycopg.connect(db_dsn, autocommit=True) as conn:
        summary = import_paths(conn, [tmp_path], workers=1, batch_size=2, writers=3,
                               connect=refused)
        assert (summary.imported, summary.failed) == (9, [])
        assert count(conn, "SELECT count(*) FROM xtbatch.eml") == 9


def test_import_batches_are_bounded_by_bytes_too() -> None:
    from xtmail.sync.files import ImportSummary, _batches

    items = [Incoming(b"x" * n) for n in (10, 10, 500, 10, 10, 10, 10)]
    batches = _batches(iter(items), 3, ImportSummary(), max_bytes=100)
    # The pipeline's rule, as in IMAP sync: a batch ends before the message that would take
    # it past the limit, and a message larger than the limit is a batch of its own.
    assert [[len(i.raw) for i in b] for b in batches] == [[10, 10], [500], [10, 10, 10], [10]]


def test_writers_must_be_positive(db_dsn: str, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["import", "--dsn", db_dsn, "--writers", "0", str(tmp_path)])
    assert exit_.value.code == 2
    assert "'0' is not a whole number of 1 or more" in capsys.readouterr().err


def test_a_prepared_message_survives_the_trip_from_a_parsing_process(
    corpus_files: list[Path],
) -> None:
    import pickle

    for path in corpus_files[:20]:
        prepared = prepare(path.read_bytes())
        data = pickle.dumps(prepared, protocol=pickle.HIGHEST_PROTOCOL)
        assert pickle.loads(data) == prepared  # noqa: S301 - bytes this test just made


# -- values the COPY literals must carry unchanged ------------------------------------------------


@pytest.mark.parametrize("values", [
    [], [""], ["NULL"], ["a,b", "{c}", " d "], ['q"uote', "back\\slash", '\\"both'],
    ["\u00e9t\u00e9", "\u4e2d\u6587", "tab\there"],
])
def test_text_array_literal_reads_back_as_the_same_list(
    conn: psycopg.Connection, values: list[str]
) -> None:
    assert conn.execute("SELECT %s::text[]", (writer._text_array(values),)).fetchone() == (values,)


def test_odd_message_ids_and_defects_are_stored_as_written(conn: psycopg.Connection) -> None:
    refs = ['<a"b@x>', "<c\\d@x>", "<{e},f@x>"]
    raw = make_message(references=" ".join(refs), extra="Content-Transfer-Encoding: bogus")
    eml = import_one(conn, raw)
    stored, defects = conn.execute(
        "SELECT msg_references, msg_defects FROM xtmail.msg WHERE msg_eml_id = %s", (eml,)
    ).fetchone()
    assert stored == [r.strip("<>") for r in refs]
    assert any("bogus" in d for d in defects), defects


# -- plans made while the mail table was small ------------------------------------------------


def eml_sequential_scans(conn: psycopg.Connection) -> int:
    conn.execute("SELECT pg_stat_force_next_flush()")  # this session's counts, flushed when idle
    row = conn.execute(
        "SELECT seq_scan FROM pg_stat_user_tables WHERE relid = 'xtbatch.eml'::regclass"
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_tiny_first_batch_leaves_no_table_scanning_plans(conn: psycopg.Connection) -> None:
    """The foreign-key checks of the rows stored with each message (addresses, details)
    probe xtbatch.eml's primary key even when the session's plans were made while the
    table held a few messages: without replanning, they scanned the whole table once per
    row for the rest of the session (until autovacuum analyzed it again)."""
    importer = Importer(conn, ImportPolicy(create_contacts=False))
    conn.execute("ANALYZE xtbatch.eml")  # empty, as autovacuum or a restore leaves it
    first = [Incoming(make_message(subject=f"first {i}")) for i in range(25)]
    assert importer.import_batch(first).imported == 25
    later = [Incoming(make_message(subject=f"later {i}", sender=f"p{i}@example.org"))
             for i in range(2000)]
    before = eml_sequential_scans(conn)
    for start in range(0, len(later), 250):
        assert importer.import_batch(later[start:start + 250]).imported == 250
    # About three checks a message: a scan each would be 6,000.
    assert eml_sequential_scans(conn) - before < 100
