"""Who sees which mail, as three real database roles: the owner of a private message, an
ordinary colleague, and an auditor holding ViewAllEmail through an xTuple group. What each
sees through MailStore (the Email tab's list and preview, the Attach dialog's search) and
through direct SQL; removal, re-import and "allow again"; blocked senders.

Databases (a) with Connect's mail tables made beforehand and (b) without, both with xTuple's
privilege tables and checkPrivilege() (tests/helpers/xtuple.py), migrated by the owner.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
import qasync
from pytestqt.qtbot import QtBot

from tests.helpers.mail import make_message
from tests.helpers.postgres import TestDatabases
from tests.helpers.qt import wait_until
from tests.helpers.xtuple import (
    MERGE_FUNCTIONS,
    MERGE_TABLES,
    add_contact_triggers,
    create_connect_tables,
    create_privilege_tables,
    create_user,
    ensure_xtrole,
    grant_group_privilege,
    grant_privilege,
    set_metric,
)
from xtmail.sync.db import privacy
from xtmail.sync.db.mailstore import MailStore
from xtmail.sync.db.schema import migrate, migrations
from xtmail.sync.db.writer import NOT_IMPORTED, SKIPPED, Importer
from xtmail.sync.errors import DatabaseError, PermissionDenied
from xtmail.sync.values import Incoming, Location
from xtmail.widgets.email_tab import EmailTab

OWNER, COLLEAGUE, AUDITOR = "xtmail_priv_ada", "xtmail_priv_bob", "xtmail_priv_cyd"
MAIL_TABLES = ("xtbatch.eml", "xtbatch.emladdr", "xtbatch.emlassc", "xtmail.msg",
               "xtmail.location")


@dataclass
class Company:
    """A migrated xTuple database and its three users."""

    dsn: str
    admin: psycopg.Connection

    def as_user(self, user: str) -> psycopg.Connection:
        return psycopg.connect(psycopg.conninfo.make_conninfo(self.dsn, user=user),
                               autocommit=True)

    def sales_order(self, number: str) -> int:
        row = self.admin.execute("INSERT INTO cohead (cohead_number) VALUES (%s) "
                                 "RETURNING cohead_id", (number,)).fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture(params=["connect", "no-connect"])
def company(request: pytest.FixtureRequest, databases: TestDatabases) -> Iterator[Company]:
    dsn = databases.create(migrated=False)
    with databases.admin() as server:
        for user in (OWNER, COLLEAGUE, AUDITOR):
            create_user(server, user)
    with psycopg.connect(dsn, autocommit=True) as admin:
        if request.param == "connect":
            create_connect_tables(admin)
        create_privilege_tables(admin)
        migrate(admin)
        grant_group_privilege(admin, AUDITOR, "AUDITORS", privacy.VIEW_ALL)
        yield Company(dsn, admin)
    databases.drop(dsn)


def _import(conn: psycopg.Connection, raws: list[bytes], account: str, folder: str,
            first_uid: int = 1, ties: tuple[tuple[str, int], ...] = ()) -> list[int]:
    items = [Incoming(raw, Location(account, folder, 7, first_uid + i))
             for i, raw in enumerate(raws)]
    return Importer(conn).import_batch(items, source="test", extra_ties=list(ties)).eml_ids


def _counts(conn: psycopg.Connection, eml_id: int) -> dict[str, int]:
    """Rows of ``eml_id`` each mail table shows this role."""
    column = {"xtbatch.eml": "eml_id", "xtbatch.emladdr": "emladdr_eml_id",
              "xtbatch.emlassc": "emlassc_eml_id", "xtmail.msg": "msg_eml_id",
              "xtmail.location": "loc_eml_id"}
    found = {}
    for table in MAIL_TABLES:
        row = conn.execute(f"SELECT count(*) FROM {table} WHERE {column[table]} = %s",
                           (eml_id,)).fetchone()
        assert row is not None
        found[table] = int(row[0])
    return found


PRIVATE = make_message(subject="Salary review for Ada [xtref:S-7001]",
                       body="private numbers zebracorn", sender="hr@ourco.example",
                       to="ada@ourco.example", date="Mon, 02 Mar 2026 10:00:00 +0000")
SHARED = make_message(subject="Order confirmation [xtref:S-7001]", body="shipping zebracorn",
                      sender="buyer@customer.example", to="ada@ourco.example",
                      date="Tue, 03 Mar 2026 10:00:00 +0000")


@dataclass
class Seen:
    listed: set[int]
    searched: set[int]
    previews: set[int]
    #: The Attach dialog's search narrowed to a contact (all of its mail when None).
    of_contact: set[int] | None = None


def _through_mailstore(qloop: qasync.QEventLoop, dsn: str, order: int,
                       ids: list[int], contact: int | None = None) -> Seen:
    async def look() -> Seen:
        store = await MailStore.connect(dsn)
        try:
            listed = {r.eml_id for r in await store.messages_for("S", order)}
            searched = {r.eml_id for r in await store.search_messages("zebracorn")}
            of_contact = None if contact is None else {
                r.eml_id for r in await store.search_messages("", contact_id=contact)}
            previews = set()
            for eml_id in ids:
                try:
                    await store.message(eml_id)
                    previews.add(eml_id)
                except DatabaseError:
                    pass
            return Seen(listed, searched, previews, of_contact)
        finally:
            await store.close()
    return qloop.run_until_complete(look())


def test_private_folder_is_seen_by_its_owner_and_the_auditor_only(
    company: Company, qloop: qasync.QEventLoop,
) -> None:
    order = company.sales_order("7001")
    with company.as_user(OWNER) as ada:
        private_id, = _import(ada, [PRIVATE], "ada", "Personal")
        shared_id, = _import(ada, [SHARED], "ada", "INBOX")
        assert privacy.set_visibility(ada, "ada", "Personal", private=True) == 1
    both = [private_id, shared_id]
    row = company.admin.execute("SELECT cntcteml_cntct_id FROM cntcteml "
                                "WHERE cntcteml_email = 'ada@ourco.example'").fetchone()
    assert row is not None  # a contact the import made: both messages are to Ada
    for user, expected in ((OWNER, set(both)), (COLLEAGUE, {shared_id}),
                           (AUDITOR, set(both))):
        dsn = psycopg.conninfo.make_conninfo(company.dsn, user=user)
        seen = _through_mailstore(qloop, dsn, order, both, contact=int(row[0]))
        assert seen == Seen(expected, expected, expected, expected), user
        with company.as_user(user) as conn:
            counts = _counts(conn, private_id)
            if private_id in expected:
                assert counts["xtbatch.eml"] == 1 and counts["xtbatch.emladdr"] == 2, user
                assert counts["xtbatch.emlassc"] >= 1 and counts["xtmail.msg"] == 1
            else:
                assert counts == dict.fromkeys(MAIL_TABLES, 0), user
                row = conn.execute("SELECT count(*) FROM xtbatch.eml").fetchone()
                assert row == (1,)  # the shared message only
            assert _counts(conn, shared_id)["xtbatch.eml"] == 1
    # Direct SQL cannot change or delete what it cannot read.
    with company.as_user(COLLEAGUE) as bob:
        for statement in ("DELETE FROM xtbatch.emlassc WHERE emlassc_eml_id = %s",
                          "UPDATE xtbatch.eml SET eml_subj = 'x' WHERE eml_id = %s",
                          "DELETE FROM xtmail.location WHERE loc_eml_id = %s"):
            assert bob.execute(statement, (private_id,)).rowcount == 0
    assert _counts(company.admin, private_id)["xtmail.location"] == 1
    # Shared again: everyone sees it.
    with company.as_user(OWNER) as ada:
        privacy.set_visibility(ada, "ada", "Personal", private=False)
    with company.as_user(COLLEAGUE) as bob:
        assert _counts(bob, private_id)["xtbatch.eml"] == 1


def test_account_rule_covers_its_folders_and_a_folder_rule_wins(company: Company) -> None:
    with company.as_user(OWNER) as ada:
        in_box, = _import(ada, [SHARED], "ada", "INBOX")
        personal, = _import(ada, [PRIVATE], "ada", "Personal")
        privacy.set_visibility(ada, "ada", "", private=True)
        privacy.set_visibility(ada, "ada", "INBOX", private=False)
        rules = privacy.visibility_rules(ada)
    assert [(r.account, r.mailbox, r.private, r.set_by) for r in rules] == [
        ("ada", "", True, OWNER), ("ada", "INBOX", False, OWNER)]
    with company.as_user(COLLEAGUE) as bob:
        assert _counts(bob, in_box)["xtbatch.eml"] == 1
        assert _counts(bob, personal)["xtbatch.eml"] == 0


def test_a_copy_the_colleague_imports_gives_the_colleague_the_message(
    company: Company,
) -> None:
    """Duplicate detection under row security: the colleague's import of the message Ada
    holds privately finds it (no unique violation, no second row); the colleague then holds
    a copy of their own, in a shared folder, so it is shared."""
    with company.as_user(OWNER) as ada:
        private_id, = _import(ada, [PRIVATE], "ada", "Personal")
        privacy.set_visibility(ada, "ada", "Personal", private=True)
    with company.as_user(COLLEAGUE) as bob:
        assert _counts(bob, private_id)["xtbatch.eml"] == 0
        again = Importer(bob).import_batch(
            [Incoming(PRIVATE, Location("bob", "INBOX", 3, 9))], source="test")
        assert again.eml_ids == [private_id] and again.new == [False]
        assert _counts(bob, private_id)["xtbatch.eml"] == 1
    row = company.admin.execute("SELECT count(*) FROM xtbatch.eml").fetchone()
    assert row == (1,)


def test_a_private_copy_of_the_colleague_keeps_it_between_the_two(company: Company) -> None:
    with company.as_user(OWNER) as ada:
        eml_id, = _import(ada, [PRIVATE], "ada", "Personal")
        privacy.set_visibility(ada, "ada", "Personal", private=True)
    with company.as_user(COLLEAGUE) as bob:
        _import(bob, [PRIVATE], "bob", "Private")
        privacy.set_visibility(bob, "bob", "Private", private=True)
        assert _counts(bob, eml_id)["xtbatch.eml"] == 1
    create_user(company.admin, "xtmail_priv_eve")
    with company.as_user("xtmail_priv_eve") as eve:
        assert _counts(eve, eml_id)["xtbatch.eml"] == 0


def test_only_the_owner_or_an_administrator_sets_a_rule_on_others_mail(
    company: Company,
) -> None:
    with company.as_user(OWNER) as ada:
        _import(ada, [PRIVATE], "ada", "Personal")
    with company.as_user(COLLEAGUE) as bob, pytest.raises(PermissionDenied):
        privacy.set_visibility(bob, "ada", "Personal", private=False)
    grant_privilege(company.admin, COLLEAGUE, privacy.MAINTAIN_VISIBILITY)
    with company.as_user(COLLEAGUE) as bob:
        assert privacy.set_visibility(bob, "ada", "Personal", private=True, owner=OWNER) == 1


def test_privileges_are_registered_once_where_xtuple_has_its_table(company: Company) -> None:
    for migration in migrations():
        if migration.version == 12:
            company.admin.execute(migration.sql.encode())
    rows = company.admin.execute(
        "SELECT priv_name, count(*) FROM priv WHERE priv_name = ANY(%s) GROUP BY 1 ORDER BY 1",
        (list(privacy.PRIVILEGES),)).fetchall()
    assert rows == [(name, 1) for name in sorted(privacy.PRIVILEGES)]
    with company.as_user(AUDITOR) as cyd:
        assert cyd.execute("SELECT checkPrivilege('ViewAllEmail'), "
                           "xtmail.sees_all_mail()").fetchone() == (True, True)
    with company.as_user(COLLEAGUE) as bob:
        assert bob.execute("SELECT xtmail.sees_all_mail()").fetchone() == (False,)


# -- removal ------------------------------------------------------------------------------------


def test_owner_removes_a_message_and_a_later_import_keeps_it_out_until_allowed(
    company: Company,
) -> None:
    order = company.sales_order("7001")
    with company.as_user(OWNER) as ada:
        eml_id, = _import(ada, [PRIVATE], "ada", "INBOX")
        assert privacy.remove_messages(ada, [eml_id], reason="personal") == privacy.Removal(1, 0)
    admin = company.admin
    assert _counts(admin, eml_id) == dict.fromkeys(MAIL_TABLES, 0)
    assert admin.execute("SELECT count(*) FROM xtmail.address "
                         "WHERE addr = 'hr@ourco.example'").fetchone() == (0,)
    assert admin.execute("SELECT count(*) FROM xtbatch.emlassc WHERE emlassc_type = 'S' "
                         "AND emlassc_assc_id = %s", (order,)).fetchone() == (0,)
    record = admin.execute("SELECT rm_eml_id, rm_by, rm_reason, rm_keep_out, "
                           "convert_from(rm_hash, 'UTF8') LIKE 'x1:%' FROM xtmail.removed"
                           ).fetchall()
    assert record == [(eml_id, OWNER, "personal", True, True)]
    with company.as_user(OWNER) as ada:
        result = Importer(ada).import_batch([Incoming(PRIVATE, Location("ada", "INBOX", 8, 1))],
                                            source="test")
        assert result.eml_ids == [SKIPPED] and result.new == [False]
        assert result.warnings == [NOT_IMPORTED]
        assert admin.execute("SELECT count(*) FROM xtbatch.eml").fetchone() == (0,)
        assert privacy.allow_again(ada, [eml_id]) == 1
        back, = _import(ada, [PRIVATE], "ada", "INBOX", first_uid=2)
    assert back != eml_id
    assert admin.execute("SELECT count(*) FROM xtbatch.eml WHERE eml_id = %s",
                         (back,)).fetchone() == (1,)
    assert admin.execute("SELECT rm_keep_out, rm_allowed_by FROM xtmail.removed"
                         ).fetchall() == [(False, OWNER)]


def test_colleague_cannot_remove_others_mail_an_administrator_can(company: Company) -> None:
    with company.as_user(OWNER) as ada:
        eml_id, = _import(ada, [SHARED], "ada", "INBOX")
    with company.as_user(COLLEAGUE) as bob:
        assert privacy.remove_messages(bob, [eml_id]) == privacy.Removal(0, 1)
        # Row security: not even a direct DELETE of another user's rows goes unseen-through.
        assert _counts(company.admin, eml_id)["xtbatch.eml"] == 1
    grant_privilege(company.admin, COLLEAGUE, privacy.DELETE_ALL)
    with company.as_user(COLLEAGUE) as bob:
        assert privacy.remove_messages(bob, [eml_id]) == privacy.Removal(1, 0)
    assert _counts(company.admin, eml_id)["xtbatch.eml"] == 0


def test_a_message_others_also_hold_is_not_the_owners_to_remove(company: Company) -> None:
    with company.as_user(OWNER) as ada:
        eml_id, = _import(ada, [SHARED], "ada", "INBOX")
    with company.as_user(COLLEAGUE) as bob:
        _import(bob, [SHARED], "bob", "INBOX")
    with company.as_user(OWNER) as ada:
        assert privacy.remove_messages(ada, [eml_id]) == privacy.Removal(0, 1)


def test_removing_a_folder_and_allowing_it_again_resyncs_it(company: Company) -> None:
    other = make_message(subject="Lunch", body="sandwich", sender="friend@home.example",
                         to="ada@ourco.example")
    with company.as_user(OWNER) as ada:
        ids = _import(ada, [PRIVATE, other], "ada", "Personal")
        kept, = _import(ada, [SHARED], "ada", "INBOX")
        ada.execute("INSERT INTO xtmail.folder_state (fs_account, fs_mailbox, fs_uidvalidity, "
                    "fs_last_uid) VALUES ('ada', 'Personal', 7, 2)")
        assert privacy.remove_folder(ada, "ada", "Personal") == privacy.Removal(2, 0)
        assert all(_counts(ada, i)["xtbatch.eml"] == 0 for i in ids)
        assert _counts(ada, kept)["xtbatch.eml"] == 1
        again = Importer(ada).import_batch(
            [Incoming(r, Location("ada", "Personal", 7, 1 + n))
             for n, r in enumerate([PRIVATE, other])], source="test")
        assert again.eml_ids == [SKIPPED, SKIPPED]
        assert privacy.allow_again(ada, account="ada", mailbox="Personal") == 2
        assert ada.execute("SELECT count(*) FROM xtmail.folder_state WHERE fs_account = 'ada' "
                           "AND fs_mailbox = 'Personal'").fetchone() == (0,)
        back = _import(ada, [PRIVATE, other], "ada", "Personal", first_uid=10)
        assert SKIPPED not in back
        # The whole account in one step.
        assert privacy.remove_folder(ada, "ada") == privacy.Removal(3, 0)


# -- blocked senders ----------------------------------------------------------------------------


def test_blocked_senders_are_not_imported_and_can_be_removed_from_what_is_stored(
    company: Company,
) -> None:
    legal = make_message(subject="Contract dispute", body="lawyers",
                         sender="counsel@law.partner.example", to="ada@ourco.example")
    to_hr = make_message(subject="Sick note", body="doctor", sender="ada@ourco.example",
                         to="hr@ourco.example")
    with company.as_user(OWNER) as ada:
        stored_legal, = _import(ada, [legal], "ada", "INBOX")
        with pytest.raises(PermissionDenied):
            privacy.block_sender(ada, "partner.example")
    grant_privilege(company.admin, OWNER, privacy.MAINTAIN_VISIBILITY)
    grant_privilege(company.admin, OWNER, privacy.DELETE_ALL)
    with company.as_user(OWNER) as ada:
        privacy.block_sender(ada, "@Partner.Example", reason="legal")
        privacy.block_sender(ada, "hr@ourco.example", any_party=True, reason="HR")
        assert [b.pattern for b in privacy.blocked_senders(ada)] == [
            "hr@ourco.example", "partner.example"]
        result = Importer(ada).import_batch(
            [Incoming(r, Location("ada", "INBOX", 7, 20 + n))
             for n, r in enumerate([to_hr, PRIVATE, SHARED])], source="test")
        assert result.eml_ids[:2] == [SKIPPED, SKIPPED] and result.new == [False, False, True]
        assert _counts(ada, stored_legal)["xtbatch.eml"] == 1  # stored before the rule
        assert privacy.remove_blocked(ada) == privacy.Removal(1, 0)
        assert _counts(company.admin, stored_legal)["xtbatch.eml"] == 0
        privacy.unblock_sender(ada, "partner.example")
        assert [b.pattern for b in privacy.blocked_senders(ada)] == ["hr@ourco.example"]


# -- xTuple's merges, run by a colleague who cannot see the private mail ------------------------


def test_a_contact_merge_by_a_colleague_moves_the_private_mails_ties(
    databases: TestDatabases, qloop: qasync.QEventLoop,
) -> None:
    dsn = databases.create(migrated=False)
    try:
        with databases.admin() as server:
            for user in (OWNER, COLLEAGUE):
                create_user(server, user)
        with psycopg.connect(dsn, autocommit=True) as admin:
            ensure_xtrole(admin)
            admin.execute(MERGE_TABLES)  # type: ignore[arg-type]
            create_privilege_tables(admin)
            migrate(admin)
            admin.execute(MERGE_FUNCTIONS)  # type: ignore[arg-type]
            add_contact_triggers(admin)
            set_metric(admin, "EnableBatchManager", False)
            ids = [admin.execute(
                "INSERT INTO cntct (cntct_number, cntct_first_name, cntct_email) "
                "VALUES (%s, %s, %s) RETURNING cntct_id", (n, n, e)).fetchone()
                for n, e in (("SRC", "hr@ourco.example"), ("DST", "hr2@ourco.example"))]
            source, target = (int(r[0]) for r in ids if r)
            company = Company(dsn, admin)
            with company.as_user(OWNER) as ada:
                eml_id, = _import(ada, [PRIVATE], "ada", "Personal")
                privacy.set_visibility(ada, "ada", "Personal", private=True)
            with company.as_user(COLLEAGUE) as bob:
                assert _counts(bob, eml_id)["xtbatch.emlassc"] == 0
                bob.execute("SELECT cntctmerge(%s, %s, true)", (source, target))
            ties = admin.execute("SELECT emlassc_assc_id FROM xtbatch.emlassc WHERE "
                                 "emlassc_eml_id = %s AND emlassc_type = 'T' ORDER BY 1",
                                 (eml_id,)).fetchall()
            assert (target,) in ties and (source,) not in ties
            seen = _through_mailstore(
                qloop, psycopg.conninfo.make_conninfo(dsn, user=OWNER), 0, [eml_id])
            assert seen.previews == {eml_id}

            async def contact_mail() -> set[int]:
                store = await MailStore.connect(psycopg.conninfo.make_conninfo(dsn, user=OWNER))
                try:
                    return {r.eml_id for r in await store.messages_for("T", target)}
                finally:
                    await store.close()
            assert qloop.run_until_complete(contact_mail()) == {eml_id}
    finally:
        databases.drop(dsn)


def test_the_hidden_set_tells_nobody_what_another_user_reads(company: Company) -> None:
    with company.as_user(OWNER) as ada:
        eml_id, = _import(ada, [PRIVATE], "ada", "Personal")
        privacy.set_visibility(ada, "ada", "Personal", private=True)
        assert ada.execute("SELECT * FROM xtmail.hidden_mail(current_user)").fetchall() == []
    with company.as_user(COLLEAGUE) as bob:
        # Asking as Ada: everything private is hidden, as from anyone bob may not act as.
        assert bob.execute("SELECT * FROM xtmail.hidden_mail(%s)", (OWNER,)).fetchall() == [
            (eml_id,)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            bob.execute("SELECT count(*) FROM xtmail.private_reader")


def test_mail_a_service_imports_for_the_owner_a_rule_names_is_the_owners_to_remove(
    company: Company,
) -> None:
    """xtmail serve imports as its service role; the folder's rule names the person."""
    service = "xtmail_priv_service"
    create_user(company.admin, service)
    with company.as_user(service) as sync:
        eml_id, = _import(sync, [PRIVATE], "ada@ourco", "Personal")
    grant_privilege(company.admin, OWNER, privacy.MAINTAIN_VISIBILITY)
    with company.as_user(OWNER) as ada:
        privacy.set_visibility(ada, "ada@ourco", "", private=True, owner=OWNER)
        assert _counts(ada, eml_id)["xtbatch.eml"] == 1
    with company.as_user(COLLEAGUE) as bob:
        assert _counts(bob, eml_id)["xtbatch.eml"] == 0
        assert privacy.remove_messages(bob, [eml_id]) == privacy.Removal(0, 1)
    with company.as_user(OWNER) as ada:
        assert privacy.remove_messages(ada, [eml_id]) == privacy.Removal(1, 0)


def test_the_email_tab_of_each_user_shows_what_that_user_may_read(
    company: Company, qloop: qasync.QEventLoop, qtbot: QtBot,
) -> None:
    """The widget itself, opened by each of the three users on the same sales order."""
    order = company.sales_order("7001")
    with company.as_user(OWNER) as ada:
        private_id, = _import(ada, [PRIVATE], "ada", "Personal")
        shared_id, = _import(ada, [SHARED], "ada", "INBOX")
        privacy.set_visibility(ada, "ada", "Personal", private=True)

    async def listed_by(user: str) -> set[int]:
        store = await MailStore.connect(psycopg.conninfo.make_conninfo(company.dsn, user=user))
        tab = EmailTab()
        qtbot.addWidget(tab)
        try:
            tab.setStore(store)
            tab.setDocument("S", order)
            await wait_until(lambda: not tab.isBusy() and tab.model().rowCount() > 0,
                             message=f"{user}'s tab never listed its mail")
            return {tab.model().messageRow(r).eml_id for r in range(tab.model().rowCount())}
        finally:
            tab.close()
            await store.close()

    assert qloop.run_until_complete(listed_by(OWNER)) == {private_id, shared_id}
    assert qloop.run_until_complete(listed_by(COLLEAGUE)) == {shared_id}
    assert qloop.run_until_complete(listed_by(AUDITOR)) == {private_id, shared_id}
