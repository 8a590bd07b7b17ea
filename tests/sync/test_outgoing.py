"""Mail the ERP sends: recorded like imported mail and tied, sent through a real SMTP server."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path

import psycopg
import pytest

from tests.helpers.mail import make_message
from tests.helpers.maildata import MailData
from tests.helpers.smtp import SmtpServer
from xtmail.sync.errors import ConfigError, DatabaseError, XtmailError
from xtmail.sync.outgoing import record_sent_mail, send_mail

ERP = "Sales <sales@ourco.example>"


def ties_of(conn: psycopg.Connection, eml_id: int) -> set[tuple[str, int]]:
    rows = conn.execute("SELECT emlassc_type, emlassc_assc_id FROM xtbatch.emlassc "
                        "WHERE emlassc_eml_id = %s", (eml_id,)).fetchall()
    return {(t, int(i)) for t, i in rows}


def stored(conn: psycopg.Connection) -> list[tuple[int, bytes, str]]:
    """(eml_id, raw bytes, source) of every stored message."""
    rows = conn.execute("SELECT eml_id, eml_msg, msg_source FROM xtbatch.eml "
                        "JOIN xtmail.msg ON msg_eml_id = eml_id ORDER BY eml_id").fetchall()
    return [(int(i), bytes(raw), source) for i, raw, source in rows]


def order_mail() -> EmailMessage:
    message = EmailMessage()
    message["From"] = ERP
    message["To"] = "Ada Lovelace <ada@example.com>"
    message["Cc"] = "Bob Builder <bob@builder.example>"
    message["Bcc"] = "archive@ourco.example"
    message["Subject"] = "Order 50123 confirmed"
    message.set_content("Your order 50123 ships on Friday.\n")
    return message


# -- record_sent_mail ------------------------------------------------------------------------


def test_sent_mail_is_stored_as_sent_and_tied(
    conn: psycopg.Connection, mail_data: MailData
) -> None:
    order = mail_data.sales_order("50123")
    raw = make_message(sender=ERP, to="Ada Lovelace <ada@example.com>",
                       subject="Order 50123 confirmed", message_id="<ack.50123@ourco.example>")
    eml_id = record_sent_mail(conn, raw, [("S", order)])
    assert stored(conn) == [(eml_id, raw, "erp")]
    assert ("S", order) in ties_of(conn, eml_id)


def test_recording_twice_stores_once_and_keeps_every_tie(
    conn: psycopg.Connection, mail_data: MailData
) -> None:
    first, second = mail_data.sales_order("50123"), mail_data.sales_order("50124")
    raw = make_message(sender=ERP, subject="Two orders")
    eml_id = record_sent_mail(conn, raw, [("S", first)])
    assert record_sent_mail(conn, raw, [("S", first), ("S", second)]) == eml_id
    assert len(stored(conn)) == 1
    assert {("S", first), ("S", second)} <= ties_of(conn, eml_id)
    count = conn.execute("SELECT count(*) FROM xtbatch.emlassc WHERE emlassc_eml_id = %s "
                         "AND emlassc_type = 'S' AND emlassc_assc_id = %s",
                         (eml_id, first)).fetchone()
    assert count == (1,)


def test_mail_imported_first_is_tied_when_recorded(
    conn: psycopg.Connection, mail_data: MailData
) -> None:
    order = mail_data.sales_order("50123")
    raw = make_message(sender=ERP, subject="Came back through the Sent folder")
    (eml_id,) = mail_data.import_raw([raw])
    assert record_sent_mail(conn, raw, [("S", order)]) == eml_id
    assert ("S", order) in ties_of(conn, eml_id)


def test_a_reply_to_sent_mail_finds_the_same_document(
    conn: psycopg.Connection, mail_data: MailData
) -> None:
    order = mail_data.sales_order("50123")
    record_sent_mail(conn, make_message(sender=ERP, to="ada@example.com",
                                        message_id="<ack.50123@ourco.example>"), [("S", order)])
    (reply,) = mail_data.import_raw([make_message(
        sender="ada@example.com", to=ERP, subject="Re: Hello",
        in_reply_to="<ack.50123@ourco.example>", references="<ack.50123@ourco.example>")])
    assert ("S", order) in ties_of(conn, reply)


def test_a_tie_to_a_missing_document_stores_nothing(conn: psycopg.Connection) -> None:
    with pytest.raises(DatabaseError, match="There is no Sales Order with id 999999"):
        record_sent_mail(conn, make_message(sender=ERP), [("S", 999999)])
    assert stored(conn) == []


# -- send_mail -------------------------------------------------------------------------------


@pytest.mark.parametrize("security", ["none", "starttls", "ssl"])
def test_sent_mail_reaches_the_server_and_is_recorded(
    tmp_path: Path, conn: psycopg.Connection, mail_data: MailData, security: str
) -> None:
    order = mail_data.sales_order("50123")
    message = order_mail()
    users = {"erp": "smtp-secret"} if security != "none" else None
    with SmtpServer(tmp_path, security=security, users=users) as server:
        sent = send_mail(
            conn, message, host=server.host, port=server.port, ties=[("S", order)],
            security=security, ssl_context=server.ssl_context(),
            username="erp" if users else None, password="smtp-secret" if users else None,
        )
    eml_id = sent.eml_id
    assert sent.refused == {}
    (received,) = server.received
    assert received.mail_from == "sales@ourco.example"
    assert received.rcpt_tos == ("ada@example.com", "bob@builder.example",
                                 "archive@ourco.example")
    assert received.login == ("erp" if users else None)
    [(stored_id, raw, source)] = stored(conn)
    assert (stored_id, source) == (eml_id, "erp")
    assert ("S", order) in ties_of(conn, eml_id)
    delivered = email.message_from_bytes(received.data, policy=email.policy.default)
    recorded = email.message_from_bytes(raw, policy=email.policy.default)
    # One message: the Date and Message-ID added on sending are in both copies; only the
    # recorded copy names the Bcc recipient, as a Sent folder does.
    assert delivered["Message-ID"] and delivered["Date"]
    # The Message-ID names the sender's domain, not the relay's address.
    assert delivered["Message-ID"].endswith("@ourco.example>")
    assert recorded["Message-ID"] == delivered["Message-ID"]
    assert recorded["Date"] == delivered["Date"]
    assert "Bcc" not in delivered and b"archive@ourco.example" not in received.data
    assert recorded["Bcc"] == "archive@ourco.example"
    assert delivered.get_content() == recorded.get_content()
    assert delivered.get_content().rstrip() == "Your order 50123 ships on Friday."
    # The caller's message is left as it was.
    assert "Message-ID" not in message and "Date" not in message


def test_existing_date_and_message_id_are_kept(
    tmp_path: Path, conn: psycopg.Connection
) -> None:
    message = order_mail()
    message["Date"] = "Mon, 02 Mar 2026 10:00:00 +0000"
    message["Message-ID"] = "<ack.50123@ourco.example>"
    with SmtpServer(tmp_path) as server:
        send_mail(conn, message, host=server.host, port=server.port, security="none")
    delivered = email.message_from_bytes(server.received[0].data, policy=email.policy.default)
    assert delivered["Message-ID"] == "<ack.50123@ourco.example>"
    assert delivered["Date"] == "Mon, 02 Mar 2026 10:00:00 +0000"
    found = conn.execute("SELECT msg_message_id FROM xtmail.msg").fetchall()
    assert found == [("ack.50123@ourco.example",)]


def assert_not_sent_nor_recorded(error: XtmailError, server: SmtpServer,
                                 conn: psycopg.Connection) -> None:
    assert f"Could not send mail through {server.host}:{server.port}" in str(error)
    assert "the message was not recorded" in error.user_text()
    assert server.received == []
    assert stored(conn) == []


def test_a_refused_login_is_reported_and_nothing_recorded(
    tmp_path: Path, conn: psycopg.Connection
) -> None:
    with SmtpServer(tmp_path, security="starttls", users={"erp": "right"}) as server, \
            pytest.raises(XtmailError) as caught:
        send_mail(conn, order_mail(), host=server.host, port=server.port,
                  ssl_context=server.ssl_context(), username="erp", password="wrong")
    assert_not_sent_nor_recorded(caught.value, server, conn)


def test_an_untrusted_certificate_is_refused(tmp_path: Path, conn: psycopg.Connection) -> None:
    # The system's trust store does not know the test server's private CA.
    with SmtpServer(tmp_path, security="ssl") as server, pytest.raises(XtmailError) as caught:
        send_mail(conn, order_mail(), host=server.host, port=server.port, security="ssl")
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert_not_sent_nor_recorded(caught.value, server, conn)


def test_starttls_is_never_given_up_for_a_plain_connection(
    tmp_path: Path, conn: psycopg.Connection
) -> None:
    with SmtpServer(tmp_path, security="none") as server, pytest.raises(XtmailError) as caught:
        send_mail(conn, order_mail(), host=server.host, port=server.port,
                  ssl_context=server.ssl_context())
    assert "STARTTLS" in str(caught.value)
    assert_not_sent_nor_recorded(caught.value, server, conn)


def test_a_server_that_is_not_there_is_reported(
    tmp_path: Path, conn: psycopg.Connection
) -> None:
    server = SmtpServer(tmp_path)  # never started: nothing listens on its port
    with pytest.raises(XtmailError) as caught:
        send_mail(conn, order_mail(), host=server.host, port=server.port, security="none",
                  timeout=5)
    assert_not_sent_nor_recorded(caught.value, server, conn)


def test_mail_every_recipient_refused_is_not_recorded(
    tmp_path: Path, conn: psycopg.Connection
) -> None:
    message = EmailMessage()
    message["From"] = ERP
    message["To"] = "gone@example.com"
    message["Subject"] = "Nobody home"
    message.set_content("Hello?\n")
    with SmtpServer(tmp_path, refuse=["gone@example.com"]) as server, \
            pytest.raises(XtmailError) as caught:
        send_mail(conn, message, host=server.host, port=server.port, security="none")
    assert "No such user here" in str(caught.value)
    assert_not_sent_nor_recorded(caught.value, server, conn)


def test_sending_makes_no_contact_of_our_own_address(
    tmp_path: Path, conn: psycopg.Connection
) -> None:
    with SmtpServer(tmp_path) as server:
        send_mail(conn, order_mail(), host=server.host, port=server.port, security="none")
    contacts = {e for (e,) in conn.execute("SELECT cntcteml_email FROM cntcteml")}
    assert "ada@example.com" in contacts
    assert "sales@ourco.example" not in contacts


def test_an_unknown_security_is_a_setting_to_fix(conn: psycopg.Connection) -> None:
    with pytest.raises(ConfigError) as caught:
        send_mail(conn, order_mail(), host="127.0.0.1", port=1, security="tls")
    assert "Use 'starttls', 'ssl' or 'none'" in caught.value.user_text()
    assert stored(conn) == []


def test_a_tie_to_a_missing_document_is_refused_before_sending(
    tmp_path: Path, conn: psycopg.Connection
) -> None:
    with SmtpServer(tmp_path) as server:
        with pytest.raises(DatabaseError, match="There is no Sales Order"):
            send_mail(conn, order_mail(), host=server.host, port=server.port,
                      security="none", ties=[("S", 999999)])
        assert server.received == []


def test_recipients_refused_while_others_accept_are_reported(
    tmp_path: Path, conn: psycopg.Connection
) -> None:
    with SmtpServer(tmp_path, refuse=["bob@builder.example"]) as server:
        sent = send_mail(conn, order_mail(), host=server.host, port=server.port,
                         security="none")
    assert sent.refused == {"bob@builder.example": (550, "5.1.1 No such user here")}
    (received,) = server.received
    assert received.rcpt_tos == ("ada@example.com", "archive@ourco.example")
    assert [eml for eml, _, _ in stored(conn)] == [sent.eml_id]


def test_a_tie_to_an_unknown_document_type_is_a_setting_to_fix(
    conn: psycopg.Connection
) -> None:
    with pytest.raises(ConfigError) as caught:
        record_sent_mail(conn, make_message(), ties=[("NOPE", 1)])
    assert "'NOPE' is not a document type" in str(caught.value)
    assert "Use one of" in caught.value.user_text()
    assert stored(conn) == []
