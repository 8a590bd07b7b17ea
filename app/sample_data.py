"""Sample ERP records and sample mail for the demo host and the screenshots.

The records go into the xTuple-compatible subset; the mail goes through the real import
engine, so the demo shows exactly what an import would produce. Seeding is idempotent: a
database that already holds the sample contacts is left alone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

import psycopg

from xtmail.sync.db.writer import Importer
from xtmail.sync.values import ImportPolicy, Incoming

OWN_ADDRESS = "you@ourcompany.example"

CONTACTS = [
    # number, first, last, email, crm account number
    ("C-1001", "Ada", "Lovelace", "ada@analytical.example", "ANALYTICAL"),
    ("C-1002", "Charles", "Babbage", "charles@analytical.example", "ANALYTICAL"),
    ("C-1003", "Grace", "Hopper", "grace@cobol.example", "COBOL"),
    ("C-1004", "Alan", "Turing", "alan@bletchley.example", "BLETCHLEY"),
    ("C-1005", "Katherine", "Johnson", "katherine@orbit.example", "ORBIT"),
    ("C-1006", "Edsger", "Dijkstra", "edsger@shortest.example", "SHORTEST"),
]

# document table, number column, numbers, contact column(s) filled with contact indexes
_DOCUMENTS: list[tuple[str, str, list[str], dict[str, int]]] = [
    ("custinfo", "cust_number", ["ANALYTICAL", "COBOL", "ORBIT"],
     {"cust_cntct_id": 0, "cust_corrcntct_id": 1}),
    ("vendinfo", "vend_number", ["BLETCHLEY", "SHORTEST"], {"vend_cntct1_id": 3}),
    ("emp", "emp_code", ["ADA", "GRACE"], {"emp_cntct_id": 2}),
    ("ophead", "ophead_number", ["700", "701"], {"ophead_cntct_id": 4}),
    ("prj", "prj_number", ["ENGINE", "COMPILER"], {"prj_cntct_id": 2}),
    ("quhead", "quhead_number", ["40001", "40002"], {"quhead_billto_cntct_id": 0}),
    ("cohead", "cohead_number", ["50123", "50124", "50125"],
     {"cohead_billto_cntct_id": 0, "cohead_shipto_cntct_id": 1}),
    ("tohead", "tohead_number", ["9001", "9002"], {"tohead_srccntct_id": 5}),
    ("pohead", "pohead_number", ["30001", "30002"], {"pohead_vend_cntct_id": 3}),
    ("rahead", "rahead_number", ["801", "802"], {}),
    ("incdt", "incdt_number", ["4711", "4712"], {"incdt_cntct_id": 4}),
]

_MAIL = [
    # sender index, subject, body
    (0, "Order for two difference engines [xtref:S-50123]",
     "Hello,\n\nplease confirm the delivery date for the two engines.\n\nAda"),
    (1, "Shipping address for [xtref:S-50123]",
     "The engines should go to the London workshop, not to the office."),
    (0, "Quote request [xtref:Q-40001]",
     "Could you quote us 40 punched cards, assorted?"),
    (2, "Compiler project kick-off [xtref:J-COMPILER]",
     "Agenda for Monday: scope, milestones, the first bug."),
    (3, "Purchase order [xtref:P-30001] received",
     "We received your order and will ship the rotors next week."),
    (4, "Trajectory incident [xtref:INCDT-4711]",
     "The numbers in yesterday's report are off by one orbit."),
    (5, "Transfer [xtref:TO-9001] between warehouses",
     "Please move the remaining stock to the Amsterdam warehouse."),
    (4, "Opportunity follow-up [xtref:OPP-700]",
     "Thanks for the call; we are interested in the larger package."),
    (2, "Hello from Grace", "Just saying hello. No document mentioned here."),
    (0, "Invoice question", "Is the invoice for the engines final?"),
]


def seed(conn: psycopg.Connection) -> bool:
    """Fill an initialised database with the sample records and mail; False if present."""
    row = conn.execute(
        "SELECT count(*) FROM cntct WHERE cntct_number = %s", (CONTACTS[0][0],)
    ).fetchone()
    if row and row[0]:
        return False
    with conn.transaction():
        accounts: dict[str, int] = {}
        for account in sorted({c[4] for c in CONTACTS}):
            acc = conn.execute(
                "INSERT INTO crmacct (crmacct_number, crmacct_name) VALUES (%s, %s) "
                "RETURNING crmacct_id",
                (account, account.title()),
            ).fetchone()
            accounts[account] = _first(acc)
        contact_ids: list[int] = []
        for number, first, last, email, account in CONTACTS:
            cid = conn.execute(
                """INSERT INTO cntct (cntct_number, cntct_first_name, cntct_last_name,
                                      cntct_name, cntct_email, cntct_crmacct_id)
                   VALUES (%s, %s, %s, %s, %s, %s) RETURNING cntct_id""",
                (number, first, last, f"{first} {last}", email, accounts[account]),
            ).fetchone()
            contact_ids.append(_first(cid))
            conn.execute(
                "INSERT INTO cntcteml (cntcteml_cntct_id, cntcteml_primary, cntcteml_email) "
                "VALUES (%s, true, %s)",
                (contact_ids[-1], email),
            )
        conn.execute(
            "UPDATE crmacct SET crmacct_cntct_id_1 = c.cntct_id FROM cntct c "
            "WHERE c.cntct_crmacct_id = crmacct_id AND crmacct_cntct_id_1 IS NULL"
        )
        # Tables a commercial xTuple edition adds (tohead, rahead) may be absent: their
        # documents are then unavailable, and none are made.
        present = {r[0] for r in conn.execute(
            "SELECT t FROM unnest(%s::text[]) AS t WHERE to_regclass(quote_ident(t)) IS NOT NULL",
            ([d[0] for d in _DOCUMENTS],))}
        for table, number_column, numbers, contacts in _DOCUMENTS:
            if table not in present:
                continue
            columns = [number_column, *contacts]
            for number in numbers:
                values = [int(number) if table == "incdt" else number,
                          *(contact_ids[i] for i in contacts.values())]
                conn.execute(
                    f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608 - our constants
                    f"VALUES ({', '.join(['%s'] * len(values))})",
                    values,
                )
        if "rahead" in present:
            conn.execute(
                "UPDATE rahead SET rahead_cust_id = (SELECT min(cust_id) FROM custinfo)"
            )
        conn.execute(
            "INSERT INTO todoitem (todoitem_name, todoitem_cntct_id) VALUES "
            "('Call Ada about the engines', %s), ('Send Grace the compiler notes', %s)",
            (contact_ids[0], contact_ids[2]),
        )
    Importer(conn, ImportPolicy.build(own_addresses=[OWN_ADDRESS])).import_batch(
        [Incoming(raw) for raw in sample_messages()], source="sample"
    )
    return True


def _first(row: tuple[int, ...] | None) -> int:
    if row is None:
        raise RuntimeError("INSERT ... RETURNING returned no row")
    return row[0]


def sample_messages() -> list[bytes]:
    """The sample mail: a few threads touching most document types, newest last."""
    start = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    messages: list[bytes] = []
    for n, (sender, subject, body) in enumerate(_MAIL):
        first, last, email = CONTACTS[sender][1:4]
        msg = EmailMessage()
        msg["From"] = f"{first} {last} <{email}>"
        msg["To"] = f"You <{OWN_ADDRESS}>"
        msg["Subject"] = subject
        msg["Date"] = format_datetime(start + timedelta(hours=7 * n))
        msg["Message-ID"] = f"<sample.{n}@xtmail.example>"
        msg.set_content(body + "\n")
        messages.append(msg.as_bytes(policy=SMTP))
    # A reply that dropped the subject token: rule 3 still ties it to the sales order.
    reply = EmailMessage()
    reply["From"] = "Ada Lovelace <ada@analytical.example>"
    reply["To"] = f"You <{OWN_ADDRESS}>"
    reply["Subject"] = "RE: Delivery date"
    reply["Date"] = format_datetime(start + timedelta(days=4))
    reply["Message-ID"] = "<sample.reply@xtmail.example>"
    reply["In-Reply-To"] = "<sample.0@xtmail.example>"
    reply["References"] = "<sample.0@xtmail.example>"
    reply.set_content("Friday works for us. Thank you!\n\n> please confirm the delivery date\n")
    messages.append(reply.as_bytes(policy=SMTP))
    return messages
