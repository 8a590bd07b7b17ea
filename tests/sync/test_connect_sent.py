"""Where xTuple Connect is installed: what its batch manager sent is recorded once as the ERP's
sent mail, tied by its references, marked as rebuilt from the batch row.

Each database here is made as a Connect installation leaves it (Connect's mail tables, its
batch queue and its own submitEmailToBatch) before init-db. Ordinary users queue mail
through Connect's function; the batch manager is simulated by plain UPDATEs of the batch
rows, as it marks them done; the recorder runs as a service role in xtrole, granted the
ledger as docs/serve.md says.
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.helpers.maildata import MailData
from tests.helpers.postgres import TestDatabases
from tests.helpers.xtuple import complete_batch, create_connect_batch, create_user
from xtmail.app.cli import main
from xtmail.sync.connect_sent import (
    MARKER,
    SOURCE,
    connect_in_charge,
    reconstruct,
    record_connect_sent,
)
from xtmail.sync.db.schema import migrate
from xtmail.sync.serve import ServeOptions, Server

CLERK = "connect_clerk"
SERVICE = "connect_service"
SUBMIT = "SELECT xtbatch.submitEmailToBatch(%s, %s, %s, %s, %s, %s, now(), %s, %s, %s)"


@pytest.fixture
def connect_dsn(databases: TestDatabases) -> Iterator[str]:
    """A database where Connect was installed before xtmail's init-db."""
    dsn = databases.create(migrated=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        create_connect_batch(conn)
        migrate(conn)
    yield dsn
    databases.drop(dsn)


@pytest.fixture
def owner(connect_dsn: str) -> Iterator[psycopg.Connection]:
    """The database owner's connection: the batch manager runs as the owner."""
    with psycopg.connect(connect_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def clerk_dsn(connect_dsn: str, databases: TestDatabases) -> str:
    with databases.admin() as admin:
        create_user(admin, CLERK)
    return psycopg.conninfo.make_conninfo(connect_dsn, user=CLERK)


@pytest.fixture
def service_dsn(connect_dsn: str, databases: TestDatabases,
                owner: psycopg.Connection) -> str:
    """The service's role: an ordinary xtrole member with the grants docs/serve.md lists."""
    with databases.admin() as admin:
        create_user(admin, SERVICE)
    owner.execute(f"GRANT SELECT ON xtmail.server_account TO {SERVICE}")
    owner.execute(f"GRANT SELECT, INSERT, UPDATE ON xtmail.connect_sent TO {SERVICE}")
    return psycopg.conninfo.make_conninfo(connect_dsn, user=SERVICE)


def submit(dsn: str, subject: str, body: str = "Body", *, to: str = "ada@example.com",
           html: bool = False, bcc: str | None = None) -> int:
    """Queue a mail the way xTuple's alarms and EDI profiles do, as the given user."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(SUBMIT, ("Sales <sales@ourco.example>", to, "", subject, body,
                                    None, html, None, bcc)).fetchone()
    assert row is not None
    return int(row[0])


def record(dsn: str, **kwargs: int) -> dict[int, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        result = record_connect_sent(conn, **kwargs)
    assert result.in_charge
    return result.recorded


def ledger(conn: psycopg.Connection) -> list[tuple[int, int | None]]:
    return [(r[0], r[1]) for r in conn.execute(
        "SELECT cs_batch_id, cs_eml_id FROM xtmail.connect_sent ORDER BY 1")]


def test_a_completed_batch_row_is_recorded_once_tied_and_marked(
    owner: psycopg.Connection, clerk_dsn: str, service_dsn: str
) -> None:
    order = MailData(owner).sales_order("50123")
    assert connect_in_charge(owner)
    sent = submit(clerk_dsn, "Order 50123 shipped [xtref:S-50123]", "Shipped today.",
                  bcc="archive@ourco.example")
    failed = submit(clerk_dsn, "Invoice 7")
    waiting = submit(clerk_dsn, "Quote 3")
    complete_batch(owner, sent)
    complete_batch(owner, failed, "Error sending mail: 550 no such user")
    recorded = record(service_dsn)
    assert list(recorded) == [sent]
    eml_id = recorded[sent]
    assert ledger(owner) == [(sent, eml_id)]
    assert ("S", order) in owner.execute(
        "SELECT emlassc_type, emlassc_assc_id FROM xtbatch.emlassc WHERE emlassc_eml_id = %s",
        (eml_id,)).fetchall()
    row = owner.execute("SELECT eml_subj, eml_msg, msg_source FROM xtbatch.eml "
                        "JOIN xtmail.msg ON msg_eml_id = eml_id WHERE eml_id = %s",
                        (eml_id,)).fetchone()
    assert row is not None
    subject, raw, source = row
    assert (subject, source) == ("Order 50123 shipped [xtref:S-50123]", SOURCE)
    message = email.message_from_bytes(bytes(raw), policy=email.policy.default)
    assert message[MARKER].startswith(f"xtbatch.batch {sent},")
    assert message["Bcc"] == "archive@ourco.example"
    assert message.get_content().strip() == "Shipped today."
    # The sender's own address makes no contact; the recipient does.
    addresses = {r[0] for r in owner.execute("SELECT cntcteml_email FROM cntcteml")}
    assert "ada@example.com" in addresses and "sales@ourco.example" not in addresses
    # Again: nothing new.
    assert record(service_dsn) == {}
    assert owner.execute("SELECT count(*) FROM xtbatch.eml").fetchone() == (1,)
    # The batch manager finishes the waiting one, and retries the failed one successfully.
    complete_batch(owner, waiting)
    owner.execute("UPDATE xtbatch.batch SET batch_completed = NULL WHERE batch_id = %s",
                  (failed,))
    again = record(service_dsn)
    assert list(again) == [waiting] and again[waiting] == record_id(owner, waiting)
    complete_batch(owner, failed)
    later = record(service_dsn)
    assert list(later) == [failed]
    assert [b for b, _ in ledger(owner)] == sorted([sent, waiting, failed])
    assert owner.execute("SELECT count(*) FROM xtbatch.eml").fetchone() == (3,)


def record_id(conn: psycopg.Connection, batch_id: int) -> int | None:
    row = conn.execute("SELECT cs_eml_id FROM xtmail.connect_sent WHERE cs_batch_id = %s",
                       (batch_id,)).fetchone()
    return None if row is None else row[0]


def test_an_html_row_is_recorded_as_html_and_rebuilt_the_same_every_time(
    owner: psycopg.Connection, clerk_dsn: str, service_dsn: str
) -> None:
    batch_id = submit(clerk_dsn, "Statement", "<p>Your statement</p>", html=True,
                      to="ada@example.com; bob@example.com")
    complete_batch(owner, batch_id)
    (eml_id,) = record(service_dsn).values()
    raw = owner.execute("SELECT eml_msg FROM xtbatch.eml WHERE eml_id = %s",
                        (eml_id,)).fetchone()
    assert raw is not None
    message = email.message_from_bytes(bytes(raw[0]), policy=email.policy.default)
    assert message.get_content_type() == "text/html"
    assert message["To"] == "ada@example.com, bob@example.com"
    with owner.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute("""SELECT batch_id, batch_user, batch_email, batch_cc, batch_bcc,
                              batch_fromemail, batch_replyto, batch_subject,
                              batch_responsebody, batch_filename,
                              batch_emailhtml::text AS html,
                              batch_submitted AS submitted, batch_completed AS completed
                         FROM xtbatch.batch WHERE batch_id = %s""", (batch_id,))
        row = cur.fetchone()
    assert row is not None
    assert reconstruct(row) == bytes(raw[0])


def test_two_recorders_at_once_record_each_row_once(
    owner: psycopg.Connection, clerk_dsn: str, service_dsn: str
) -> None:
    ids = [submit(clerk_dsn, f"Mail {i}") for i in range(30)]
    for batch_id in ids:
        complete_batch(owner, batch_id)
    recorded: list[int] = []
    lock = threading.Lock()

    def recorder() -> None:
        # Until everything is recorded or time is up, not a count of tries: while one
        # recorder stores its three, the other's tries come back busy within a millisecond,
        # and on a slow machine a count ran out with rows left.
        deadline = time.monotonic() + 60
        with psycopg.connect(service_dsn, autocommit=True) as conn:
            while time.monotonic() < deadline:
                result = record_connect_sent(conn, limit=3)
                with lock:
                    recorded.extend(result.recorded)
                    if len(recorded) >= len(ids):
                        return
                if result.busy:
                    time.sleep(0.005)  # the other recorder has the turn

    threads = [threading.Thread(target=recorder) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert sorted(recorded) == ids
    assert [b for b, _ in ledger(owner)] == ids
    assert owner.execute("SELECT count(*) FROM xtbatch.eml").fetchone() == (30,)


def test_ordinary_users_cannot_write_the_ledger(
    owner: psycopg.Connection, clerk_dsn: str
) -> None:
    batch_id = submit(clerk_dsn, "Hello")
    with psycopg.connect(clerk_dsn, autocommit=True) as conn, \
            pytest.raises(psycopg.errors.InsufficientPrivilege):
        # A row of theirs would keep the sent mail from being recorded.
        conn.execute("INSERT INTO xtmail.connect_sent (cs_batch_id) VALUES (%s)", (batch_id,))


def test_without_connect_nothing_is_recorded_and_a_later_connect_takes_charge(
    conn: psycopg.Connection
) -> None:
    # init-db provided submitEmailToBatch (0011): xtmail's outbox is in charge.
    assert not connect_in_charge(conn)
    assert not record_connect_sent(conn).in_charge
    # Connect installed afterwards replaces the function and brings its queue.
    conn.execute("DROP FUNCTION xtbatch.submitemailtobatch(text, text, text, text, text, "
                 "text, timestamptz, boolean)")
    conn.execute("DROP FUNCTION xtbatch.submitemailtobatch(text, text, text, text, text, "
                 "text, timestamptz, boolean, text, text)")
    conn.execute("DROP TABLE xtbatch.eml, xtbatch.emladdr, xtbatch.emlassc CASCADE")
    create_connect_batch(conn)
    assert connect_in_charge(conn)


def test_serve_once_records_what_the_batch_manager_sent(
    owner: psycopg.Connection, clerk_dsn: str, service_dsn: str,
    capsys: pytest.CaptureFixture[str]
) -> None:
    batch_id = submit(clerk_dsn, "Purchase order 88 approved")
    complete_batch(owner, batch_id)
    command = ["serve", "--dsn", service_dsn, "--once", "--workers", "0"]
    assert main(command) == 0
    assert "recorded 1 mail(s) xTuple Connect's batch manager sent" in capsys.readouterr().out
    assert main(command) == 0
    assert "recorded" not in capsys.readouterr().out
    assert [b for b, _ in ledger(owner)] == [batch_id]


def test_serve_once_says_what_grant_the_service_role_lacks(
    owner: psycopg.Connection, clerk_dsn: str, connect_dsn: str,
    databases: TestDatabases, capsys: pytest.CaptureFixture[str]
) -> None:
    with databases.admin() as admin:
        create_user(admin, "connect_bare")
    owner.execute("GRANT SELECT ON xtmail.server_account TO connect_bare")
    complete_batch(owner, submit(clerk_dsn, "Hello"))
    bare = psycopg.conninfo.make_conninfo(connect_dsn, user="connect_bare")
    assert main(["serve", "--dsn", bare, "--once", "--workers", "0"]) == 1
    out = capsys.readouterr().out
    assert "recording what xTuple Connect's batch manager sent failed" in out
    assert "xtmail.connect_sent" in out


def test_two_running_services_record_rows_as_the_batch_manager_completes_them(
    owner: psycopg.Connection, clerk_dsn: str, service_dsn: str
) -> None:
    def connect(application: str) -> psycopg.Connection:
        return psycopg.connect(service_dsn, autocommit=True, application_name=application)

    options = ServeOptions(rebalance_every=0.5, outbox_every=0.2)
    servers = [Server(connect, options=options, instance=f"cs{i} pid {i}") for i in range(2)]
    threads = [threading.Thread(target=s.run, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        ids = [submit(clerk_dsn, f"Mail {i}") for i in range(12)]
        for batch_id in ids:  # the batch manager works through the queue
            complete_batch(owner, batch_id)
            time.sleep(0.05)
        deadline = time.monotonic() + 30
        while len(ledger(owner)) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.6)  # a few more passes each: nothing more
        assert [b for b, _ in ledger(owner)] == ids
        assert all(eml for _, eml in ledger(owner))
        assert owner.execute("SELECT count(*) FROM xtbatch.eml").fetchone() == (12,)
        total = sum(s.metrics.registry.get_sample_value(
            "xtmail_serve_connect_sent_recorded_total") or 0 for s in servers)
        assert total == 12
    finally:
        for server in servers:
            server.stop.set()
        for thread in threads:
            thread.join(30)
