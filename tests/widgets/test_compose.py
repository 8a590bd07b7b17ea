"""Drafts and mailto: URLs (xtmail.widgets.compose)."""

from __future__ import annotations

import email
import email.policy
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

from xtmail.sync.errors import XtmailError
from xtmail.sync.mail.refs import Reference
from xtmail.widgets.compose import (
    SHORTENED_NOTICE,
    Draft,
    MailtoTooLongError,
    MessageInfo,
    UnsafeAddressError,
    draft_eml,
    draft_text,
    forward_draft,
    is_safe_address,
    mailto_url,
    new_draft,
    reply_all_draft,
    reply_draft,
    shortened_mailto_url,
    thread_of,
)

S_50123 = Reference("S", "50123")
CET = timezone(timedelta(hours=1))
NOTICE_Q = (
    "%5BQuoted%20text%20shortened%20to%20fit%20the%20mail%20program%27s%20limit%3B"
    "%20the%20full%20message%20is%20in%20xTuple.%5D"
)


def parse(url: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Recipients and header fields of a mailto: URL, decoded the way a mail program does."""
    parts = urlsplit(url)
    assert parts.scheme == "mailto"
    assert parts.fragment == ""
    to = [unquote(a, errors="strict") for a in parts.path.split(",")] if parts.path else []
    fields = (
        parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True, errors="strict")
        if parts.query
        else []
    )
    return to, fields


def draft(**kwargs: object) -> Draft:
    values: dict[str, object] = {"to": ("a@example.com",), "subject": "", "body": ""}
    values.update(kwargs)
    return Draft(**values)  # type: ignore[arg-type]


class TestMailtoUrl:
    def test_rfc6068_example(self) -> None:
        url = mailto_url(
            Draft(
                to=("a@example.com",),
                cc=(),
                bcc=(),
                subject="Order [xtref:S-50123]",
                body="Hi\nthere",
            )
        )
        assert url == (
            "mailto:a@example.com?subject=Order%20%5Bxtref%3AS-50123%5D&body=Hi%0D%0Athere"
        )

    def test_all_fields_in_order(self) -> None:
        url = mailto_url(
            Draft(
                to=("a@example.com", "b@example.com"),
                cc=("c@example.com",),
                bcc=("d@example.com", "e@example.com"),
                subject="S",
                body="B",
            )
        )
        assert url == (
            "mailto:a@example.com,b@example.com?subject=S&cc=c@example.com"
            "&bcc=d@example.com,e@example.com&body=B"
        )

    def test_empty_fields_left_out(self) -> None:
        assert mailto_url(Draft()) == "mailto:"
        assert mailto_url(Draft(to=("a@example.com",))) == "mailto:a@example.com"
        assert mailto_url(Draft(subject="Hi")) == "mailto:?subject=Hi"
        assert mailto_url(Draft(body="Hi")) == "mailto:?body=Hi"
        assert mailto_url(Draft(cc=("c@example.com",))) == "mailto:?cc=c@example.com"

    def test_address_encoding(self) -> None:
        addresses = ("a+b@example.com", "o'neil@example.com", "100%@example.com", "jörg@exämple.de")
        url = mailto_url(Draft(to=addresses))
        assert url == (
            "mailto:a%2Bb@example.com,o%27neil@example.com,100%25@example.com,"
            "j%C3%B6rg@ex%C3%A4mple.de"
        )
        assert parse(url)[0] == [
            "a+b@example.com",
            "o'neil@example.com",
            "100%@example.com",
            "jörg@exämple.de",
        ]

    def test_line_ends_become_crlf(self) -> None:
        url = mailto_url(Draft(body="a\nb\r\nc\rd\n"))
        assert url == "mailto:?body=a%0D%0Ab%0D%0Ac%0D%0Ad%0D%0A"

    def test_control_characters_removed_from_body(self) -> None:
        assert mailto_url(Draft(body="a\x00b\x07c\td\x7f")) == "mailto:?body=abc%09d"

    def test_subject_is_one_line(self) -> None:
        url = mailto_url(Draft(subject="one\r\ntwo\tthree\u2028four\x00five"))
        assert url == "mailto:?subject=one%20two%20three%20four%20five"

    def test_lone_surrogate_does_not_crash(self) -> None:
        assert mailto_url(Draft(subject="a\udcffb", body="\ud800")) == (
            "mailto:?subject=a%3Fb&body=%3F"
        )

    def test_non_ascii_text(self) -> None:
        url = mailto_url(Draft(subject="Grüße €", body="日本"))
        assert url == "mailto:?subject=Gr%C3%BC%C3%9Fe%20%E2%82%AC&body=%E6%97%A5%E6%9C%AC"


HOSTILE = "x\r\nBcc: evil@example.org\r\n?cc=evil@example.org&bcc=evil@example.org#frag %41 = é"


class TestNoHeaderInjection:
    def test_hostile_subject_and_body(self) -> None:
        url = mailto_url(draft(subject=HOSTILE, body=HOSTILE))
        to, fields = parse(url)
        assert to == ["a@example.com"]
        assert [key for key, _ in fields] == ["subject", "body"]
        values = dict(fields)
        assert values["subject"] == HOSTILE.replace("\r\n", " ")
        assert values["body"] == HOSTILE
        assert "#" not in url
        assert url.count("?") == 1
        assert url.count("&") == 1

    def test_hostile_but_valid_address_stays_one_address(self) -> None:
        # '?', '=', '&', '#' and '%' are legal in a local part: they must be encoded,
        # not act as URL syntax.
        address = "a?bcc=evil&cc=x#y%41@example.com"
        url = mailto_url(Draft(to=(address,), cc=(address,)))
        to, fields = parse(url)
        assert to == [address]
        assert fields == [("cc", address)]

    @pytest.mark.parametrize(
        "address",
        [
            "a@example.com\r\nBcc: evil@example.org",
            "a@example.com\nx",
            "a@example.com?bcc=evil@example.org",
            "a@example.com,evil@example.org",
            "a@example.com;evil@example.org",
            "Jane Doe <jane@example.com>",
            "<jane@example.com>",
            "jane@example.com (Jane)",
            '"a b"@example.com',
            "a b@example.com",
            "a@example.com ",
            "a:b@example.com",
            "a\\b@example.com",
            "a@[192.0.2.1]",
            "a@exam_ple.com",
            "a@example..com",
            "a@example.com.",
            "a@example.com#x",
            "a@example.com&bcc=e@x",
            "a@example.com%0D%0Abcc:e@x",
            "\u202eevil@example.com",
            "a@\u2028example.com",
            "a\x00@example.com",
            "",
            "noat",
            "a@",
            "@example.com",
        ],
    )
    @pytest.mark.parametrize("field", ["to", "cc", "bcc"])
    def test_unsafe_address_rejected(self, field: str, address: str) -> None:
        with pytest.raises(UnsafeAddressError) as info:
            mailto_url(Draft(**{field: (address,)}))  # type: ignore[arg-type]
        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, XtmailError)
        assert info.value.hint
        assert not is_safe_address(address)

    @pytest.mark.parametrize(
        "address",
        ["a@example.com", "first.last+tag@sub.example.co.uk", "x@localhost", "ü@bücher.de"],
    )
    def test_safe_addresses(self, address: str) -> None:
        assert is_safe_address(address)


class TestLength:
    def test_fits_exactly(self) -> None:
        d = draft(subject="S", body="line one\nline two")
        url = mailto_url(d, max_length=10_000)
        assert mailto_url(d, max_length=len(url)) == url

    def test_trimmed_at_line_boundary(self) -> None:
        d = draft(subject="S", body="line one\nline two\n" + "z" * 300)
        expected = "mailto:a@example.com?subject=S&body=line%20one%0D%0A%0D%0A" + NOTICE_Q
        assert mailto_url(d, max_length=len(expected)) == expected
        # Three more characters would still not hold "line two" (it needs 14).
        assert mailto_url(d, max_length=len(expected) + 3) == expected

    def test_long_line_cut_at_word(self) -> None:
        d = draft(subject="S", body="line one\nline two\n" + "z" * 300)
        full_line = "mailto:a@example.com?subject=S&body=line%20one%0D%0A%0D%0A" + NOTICE_Q
        expected = "mailto:a@example.com?subject=S&body=line%0D%0A%0D%0A" + NOTICE_Q
        assert mailto_url(d, max_length=len(full_line) - 1) == expected

    def test_only_notice_fits(self) -> None:
        d = draft(subject="S", body="x" * 500)
        expected = "mailto:a@example.com?subject=S&body=" + NOTICE_Q
        assert mailto_url(d, max_length=len(expected)) == expected

    def test_quote_markers_alone_are_not_kept(self) -> None:
        d = draft(body="> " + "y" * 300)
        expected = "mailto:a@example.com?body=" + NOTICE_Q
        assert mailto_url(d, max_length=len(expected) + 20) == expected

    @pytest.mark.parametrize("max_length", [300, 1000, 2000, 2048])
    def test_non_ascii_reply_trimmed_within_limit(self, max_length: int) -> None:
        line = "Zeile {}: Grüße aus Köln \u2013 Überweisung für Bestellung Nr. {} ✓"
        original = "\n".join(line.format(i, i) for i in range(200))
        msg = MessageInfo(
            subject="Bestellbestätigung [xtref:S-50123]",
            date=datetime(2024, 3, 5, 14, 3, tzinfo=CET),
            from_=(("Jürgen Müller", "jürgen@example.de"),),
            body_text=original,
        )
        d = reply_draft(msg, ref=S_50123)
        url = mailto_url(d, max_length=max_length)
        assert len(url) <= max_length
        # Close to the limit: no more than one line's worth of room wasted.
        assert len(url) > max_length - 250
        to, fields = parse(url)
        assert to == ["jürgen@example.de"]
        assert [key for key, _ in fields] == ["subject", "body"]
        assert dict(fields)["subject"] == "RE: Bestellbestätigung [xtref:S-50123]"
        body_lines = dict(fields)["body"].split("\r\n")
        assert body_lines[-2:] == ["", SHORTENED_NOTICE]
        kept = body_lines[:-2]
        expected_lines = d.body.split("\n")
        # Every kept line is the original line, except that the last may be cut at a word.
        assert kept[:-1] == expected_lines[: len(kept) - 1]
        assert expected_lines[len(kept) - 1].startswith(kept[-1])

    def test_long_paragraph_keeps_leading_words(self) -> None:
        words = " ".join(f"wört{i}" for i in range(1000))
        url = mailto_url(draft(body=words), max_length=600)
        assert len(url) <= 600
        body = dict(parse(url)[1])["body"]
        text, notice = body.split("\r\n\r\n")
        assert notice == SHORTENED_NOTICE
        assert words.startswith(text + " ")
        assert len(text) > 100

    def test_headers_never_trimmed(self) -> None:
        many = tuple(f"person{i}@example.com" for i in range(100))
        with pytest.raises(MailtoTooLongError) as info:
            mailto_url(Draft(to=many, body="hello"))
        assert info.value.hint
        with pytest.raises(MailtoTooLongError):
            mailto_url(Draft(to=many))

    def test_headers_fit_but_not_the_notice(self) -> None:
        head = "mailto:a@example.com?subject=S"
        with pytest.raises(MailtoTooLongError):
            mailto_url(draft(subject="S", body="x" * 50), max_length=len(head) + 20)
        assert mailto_url(draft(subject="S", body="x"), max_length=len(head) + 7) == (
            head + "&body=x"
        )

    def test_positive_limit_required(self) -> None:
        with pytest.raises(ValueError, match="positive"):
            mailto_url(Draft(), max_length=0)


MESSAGE = MessageInfo(
    subject="Re: AW: Order 50123 [xtref:S-50123]",
    date=datetime(2024, 3, 5, 14, 3, tzinfo=CET),
    from_=(("Jane Doe", "jane@example.com"),),
    to=(("Me", "Me@ERP.example"), ("Bob", "bob@example.com"), ("", "team@example.com")),
    cc=(("Carol", "carol@example.com"), ("Bob again", "BOB@example.com"), ("", "me2@erp.example")),
    body_text="Hello,\r\n\r\n> earlier text\r\nthanks\r\n\r\n\r\n",
)
OWN = ("me@erp.example", "ME2@erp.example")
QUOTED = "\nOn 2024-03-05 14:03 +0100, Jane Doe wrote:\n> Hello,\n>\n>> earlier text\n> thanks"


class TestNewDraft:
    def test_with_reference(self) -> None:
        assert new_draft(["jane@example.com"], S_50123, "Your order") == Draft(
            to=("jane@example.com",), subject="Your order [xtref:S-50123]"
        )

    def test_subject_only_reference(self) -> None:
        assert new_draft(["jane@example.com"], S_50123).subject == "[xtref:S-50123]"

    def test_without_reference(self) -> None:
        assert new_draft([], None, "Hello") == Draft(subject="Hello")

    def test_reference_not_doubled(self) -> None:
        assert new_draft([], S_50123, "Order [XTREF:S-50123]").subject == "Order [XTREF:S-50123]"

    def test_unusable_and_repeated_addresses_dropped(self) -> None:
        d = new_draft([" jane@example.com ", "Jane <j@x.com>", "JANE@example.com", ""], S_50123)
        assert d.to == ("jane@example.com",)


class TestReplyDraft:
    def test_reply(self) -> None:
        assert reply_draft(MESSAGE, ref=S_50123, own_addresses=OWN) == Draft(
            to=("jane@example.com",),
            subject="RE: Order 50123 [xtref:S-50123]",
            body=QUOTED,
        )

    def test_reference_added_when_missing(self) -> None:
        msg = MessageInfo(subject="RE: RE: Order", date=None, from_=(("", "jane@example.com"),))
        d = reply_draft(msg, ref=S_50123)
        assert d.subject == "RE: Order [xtref:S-50123]"
        assert d.body == "\njane@example.com wrote:"

    def test_without_reference(self) -> None:
        msg = MessageInfo(subject="Fwd: Hi", date=None, from_=(("Jane", "jane@example.com"),))
        assert reply_draft(msg, ref=None).subject == "RE: Hi"

    def test_reply_to_preferred(self) -> None:
        msg = MessageInfo(
            subject="Hi",
            date=None,
            from_=(("Jane", "jane@example.com"),),
            reply_to=(("Sales", "sales@example.com"), ("", "orders@example.com")),
        )
        assert reply_draft(msg).to == ("sales@example.com", "orders@example.com")

    def test_own_sent_mail_replies_to_its_recipients(self) -> None:
        msg = MessageInfo(
            subject="Hi",
            date=None,
            from_=(("Me", "ME@erp.example"),),
            to=(("Jane", "jane@example.com"), ("Me", "me@erp.example")),
        )
        assert reply_draft(msg, own_addresses=OWN).to == ("jane@example.com",)

    def test_unusable_sender_dropped(self) -> None:
        msg = MessageInfo(subject="Hi", date=None, from_=(("Odd", "odd address@example.com"),))
        assert reply_draft(msg).to == ()

    def test_naive_date_and_no_sender(self) -> None:
        msg = MessageInfo(subject="Hi", date=datetime(2024, 1, 2, 3, 4), from_=(), body_text="x")
        assert reply_draft(msg).body == "\nOn 2024-01-02 03:04, The sender wrote:\n> x"

    def test_reply_url(self) -> None:
        url = mailto_url(reply_draft(MESSAGE, ref=S_50123, own_addresses=OWN))
        assert url == (
            "mailto:jane@example.com?subject=RE%3A%20Order%2050123%20%5Bxtref%3AS-50123%5D"
            "&body=%0D%0AOn%202024-03-05%2014%3A03%20%2B0100%2C%20Jane%20Doe%20wrote%3A"
            "%0D%0A%3E%20Hello%2C%0D%0A%3E%0D%0A%3E%3E%20earlier%20text%0D%0A%3E%20thanks"
        )


class TestReplyAllDraft:
    def test_reply_all(self) -> None:
        assert reply_all_draft(MESSAGE, ref=S_50123, own_addresses=OWN) == Draft(
            to=("jane@example.com", "bob@example.com", "team@example.com"),
            cc=("carol@example.com",),
            subject="RE: Order 50123 [xtref:S-50123]",
            body=QUOTED,
        )

    def test_reply_to_and_duplicates(self) -> None:
        msg = MessageInfo(
            subject="Hi",
            date=None,
            from_=(("Jane", "jane@example.com"),),
            reply_to=(("List", "list@example.com"),),
            to=(("List", "LIST@example.com"), ("Me", "me@erp.example")),
            cc=(("Jane", "Jane@Example.com"), ("", "bad,addr@example.com"), ("", "x@example.com")),
        )
        d = reply_all_draft(msg, own_addresses=OWN)
        assert d.to == ("list@example.com",)
        assert d.cc == ("Jane@Example.com", "x@example.com")

    def test_own_sent_mail(self) -> None:
        msg = MessageInfo(
            subject="Hi",
            date=None,
            from_=(("Me", "me@erp.example"),),
            to=(("Jane", "jane@example.com"),),
            cc=(("Me", "me2@ERP.example"), ("Bob", "bob@example.com")),
        )
        d = reply_all_draft(msg, own_addresses=OWN)
        assert d.to == ("jane@example.com",)
        assert d.cc == ("bob@example.com",)

    def test_url_parses_back(self) -> None:
        to, fields = parse(mailto_url(reply_all_draft(MESSAGE, ref=S_50123, own_addresses=OWN)))
        assert to == ["jane@example.com", "bob@example.com", "team@example.com"]
        assert [key for key, _ in fields] == ["subject", "cc", "body"]
        assert dict(fields)["cc"] == "carol@example.com"


class TestForwardDraft:
    def test_forward(self) -> None:
        assert forward_draft(MESSAGE, ref=S_50123) == Draft(
            subject="FW: Order 50123 [xtref:S-50123]",
            body=(
                "\n---------- Forwarded message ----------\n"
                "From: Jane Doe <jane@example.com>\n"
                "Date: 2024-03-05 14:03 +0100\n"
                "Subject: Re: AW: Order 50123 [xtref:S-50123]\n"
                "To: Me <Me@ERP.example>, Bob <bob@example.com>, team@example.com\n"
                "Cc: Carol <carol@example.com>, Bob again <BOB@example.com>, me2@erp.example\n"
                "\n"
                "Hello,\n"
                "\n"
                "> earlier text\n"
                "thanks"
            ),
        )

    def test_no_prefix_stacking_and_minimal_block(self) -> None:
        msg = MessageInfo(
            subject="Fwd: RE: FW: Quote",
            date=None,
            from_=(("", "jane@example.com"),),
            body_text="Text",
        )
        d = forward_draft(msg, ref=S_50123)
        assert d == Draft(
            subject="FW: Quote [xtref:S-50123]",
            body=(
                "\n---------- Forwarded message ----------\n"
                "From: jane@example.com\n"
                "Subject: Fwd: RE: FW: Quote\n"
                "\n"
                "Text"
            ),
        )
        url = mailto_url(d)
        assert url.startswith("mailto:?subject=FW%3A%20Quote%20%5Bxtref%3AS-50123%5D&body=")


LONG_TEXT = "\n".join(f"Line {n:04d} of the original, with some words." for n in range(450))
THREADED = MessageInfo(
    subject="Order 50123",
    date=datetime(2024, 3, 5, 14, 3, tzinfo=CET),
    from_=(("Jane Doe", "jane@example.com"),),
    to=(("Me", "me@erp.example"),),
    body_text=LONG_TEXT,
    message_id="<orig.2@example.com>",
    references=("<root.1@example.com>",),
)


def parse_eml(data: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


class TestLongDrafts:
    def test_without_shortening_a_long_draft_raises(self) -> None:
        d = reply_draft(THREADED, ref=S_50123)
        with pytest.raises(MailtoTooLongError):
            mailto_url(d, shorten=False)
        # The same draft fits a longer URL whole, every line in it.
        _to, fields = parse(mailto_url(d, max_length=200_000, shorten=False))
        body = dict(fields)["body"]
        assert all(f"> Line {n:04d} of the original" in body for n in range(450))

    def test_shortened_url_says_how_much_it_kept(self) -> None:
        d = reply_draft(THREADED, ref=S_50123)
        url, kept, total = shortened_mailto_url(d)
        assert len(url) <= 2000
        assert total == len(d.body.split("\n")) == 452
        _to, fields = parse(url)
        body = dict(fields)["body"].split("\r\n")
        assert body[-1] == SHORTENED_NOTICE
        assert 2 < kept < total
        assert body[kept - 1].startswith("> Line")  # the last kept line, perhaps cut
        assert f"Line {kept - 3:04d} " in body[kept - 1]  # blank, attribution, quote
        short = Draft(to=("a@example.com",), body="Hi")
        assert shortened_mailto_url(short)[1:] == (1, 1)

    def test_a_reply_carries_the_thread(self) -> None:
        d = reply_draft(THREADED, ref=S_50123)
        assert d.in_reply_to == "<orig.2@example.com>"
        assert d.references == ("<root.1@example.com>", "<orig.2@example.com>")
        assert reply_all_draft(THREADED).references == d.references
        # A forward starts a thread of its own; a message without Message-ID gives none.
        assert forward_draft(THREADED).in_reply_to == ""
        assert forward_draft(THREADED).references == ()
        assert reply_draft(MESSAGE).in_reply_to == ""

    def test_eml_parses_back_to_the_draft(self) -> None:
        d = reply_all_draft(
            MessageInfo(
                subject="Lieferung für Jörg",
                date=None,
                from_=(("Jane", "jane@example.com"),),
                cc=(("Bob", "bob@example.com"),),
                body_text=LONG_TEXT + "\nGrüße",
                message_id="<orig.2@example.com>",
            ),
            ref=S_50123,
        )
        data = draft_eml(d)
        assert b"\r\n\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
        head = data.split(b"\r\n\r\n", 1)[0]
        assert head.isascii()  # encoded words, not raw UTF-8, for every mail program
        message = parse_eml(data)
        assert message["To"] == "jane@example.com"
        assert message["Cc"] == "bob@example.com"
        assert message["Subject"] == "RE: Lieferung für Jörg [xtref:S-50123]"
        assert message["X-Unsent"] == "1"
        assert message["In-Reply-To"] == "<orig.2@example.com>"
        assert message["References"] == "<orig.2@example.com>"
        for absent in ("From", "Date", "Message-ID", "Bcc"):
            assert message[absent] is None, absent
        assert not message.is_multipart()
        assert message.get_content_type() == "text/plain"
        text = message.get_content()
        assert text.replace("\r\n", "\n").rstrip("\n") == d.body
        assert list(message.iter_attachments()) == []

    def test_eml_with_international_addresses_uses_utf8_headers(self) -> None:
        d = Draft(to=("jörg@bücher.example",), subject="Bücher")
        message = parse_eml(draft_eml(d))
        assert message["To"] == "jörg@bücher.example"
        assert message["Subject"] == "Bücher"

    @pytest.mark.parametrize(
        ("field", "value"),
        [("subject", "Hi\r\nBcc: evil@example.com"), ("in_reply_to", "<a@b>\r\nX-Evil: 1")],
    )
    def test_eml_headers_cannot_be_injected(self, field: str, value: str) -> None:
        d = Draft(to=("a@example.com",), **{field: value})  # type: ignore[arg-type]
        message = parse_eml(draft_eml(d))
        assert message["Bcc"] is None and message["X-Evil"] is None
        assert list(message.keys()).count("X-Unsent") == 1

    def test_eml_rejects_unsafe_addresses(self) -> None:
        with pytest.raises(UnsafeAddressError):
            draft_eml(Draft(to=("a@example.com>, evil@example.com",)))

    def test_draft_text_for_the_clipboard(self) -> None:
        d = Draft(to=("a@example.com", "b@example.com"), cc=("c@example.com",),
                  subject="RE: X", body="\nOn then, A wrote:\n> hi")
        assert draft_text(d) == (
            "To: a@example.com, b@example.com\nCc: c@example.com\nSubject: RE: X\n\n"
            "\nOn then, A wrote:\n> hi"
        )


class TestThreadOf:
    def test_references_then_own_id(self) -> None:
        raw = (b"Message-ID: <m1@x> (comment)\r\nReferences: <r1@x>\r\n <r2@x> junk\r\n"
               b"In-Reply-To: <r2@x>\r\n\r\nbody <not@header>")
        assert thread_of(raw) == ("<m1@x>", ("<r1@x>", "<r2@x>"))

    def test_in_reply_to_when_no_references(self) -> None:
        assert thread_of(b"Message-ID: <m1@x>\r\nIn-Reply-To: <p@x> <q@x>\r\n\r\n") == (
            "<m1@x>", ("<p@x>",))

    def test_no_message_id(self) -> None:
        assert thread_of(b"Subject: x\r\nReferences: <r@x>\r\n\r\nbody") == ("", ())

    def test_long_threads_are_capped(self) -> None:
        refs = " ".join(f"<r{n}@x>" for n in range(100)).encode()
        raw = b"Message-ID: <m@x>\r\nReferences: " + refs + b"\r\n\r\n"
        message_id, references = thread_of(raw)
        assert message_id == "<m@x>"
        assert len(references) == 19
        assert references[0] == "<r0@x>" and references[-1] == "<r99@x>"


def test_module_imports_neither_qt_nor_a_database_driver() -> None:
    code = (
        "import sys, xtmail.widgets.compose; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('PyQt6', 'psycopg', 'psycopg2')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
