"""MIME parsing: the real corpus must never break the parser, and hand-written messages pin
down each rule (charsets, encoded words, dates, addresses, body choice, attachments)."""

from __future__ import annotations

import base64
import dataclasses
import html
import logging
import pickle
import re
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path

import pytest

from xtmail.sync.mail import mime
from xtmail.sync.mail.mime import Address, Attachment, ParsedMessage, html_to_text, parse_message
from xtmail.sync.mail.prepare import prepare

FALLBACK = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def make(*headers: str, body: str | bytes = "Hello.", crlf: bool = True) -> bytes:
    """A message from header lines and a body; bodies given as str are UTF-8."""
    eol = b"\r\n" if crlf else b"\n"
    head = eol.join(line.encode("utf-8") for line in headers)
    data = body.encode("utf-8") if isinstance(body, str) else body
    if crlf:
        data = re.sub(rb"(?<!\r)\n", b"\r\n", data)
    return head + eol + eol + data


def multipart(subtype: str, boundary: str, *parts: bytes, headers: tuple[str, ...] = ()) -> bytes:
    """A multipart message (or body part, with `headers` empty) made of raw parts."""
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    body += b"--" + boundary.encode() + b"--\r\n"
    content_type = f'Content-Type: multipart/{subtype}; boundary="{boundary}"'
    return make(*headers, content_type, body=body)


def part(content_type: str, body: str | bytes, *headers: str) -> bytes:
    return make(f"Content-Type: {content_type}", *headers, body=body)


# --------------------------------------------------------------------------- real corpus


def _visible(payload: bytes, subtype: str) -> bool:
    text = payload.decode("latin-1")
    if subtype == "html":
        text = re.sub(r"(?is)<(style|script|head)\b.*?</\1>", " ", text)
        text = html.unescape(re.sub(r"<[^>]*>", " ", text))
    return bool(text.strip())


def _has_text(msg: Message[str, str]) -> bool:
    """Independently of mime.py: does Python's own parser see readable body text?"""
    if msg.get_content_maintype() == "message":
        return False  # attached messages are attachments, not this message's text
    if msg.is_multipart():
        return any(_has_text(sub) for sub in msg.get_payload() if isinstance(sub, Message))
    if msg.get_content_type() not in {"text/plain", "text/html"}:
        return False
    if msg.get_content_disposition() == "attachment":
        return False
    payload = msg.get_payload(decode=True)
    return isinstance(payload, bytes) and _visible(payload, msg.get_content_subtype())


def test_corpus_is_there(corpus_files: list[Path]) -> None:
    assert len(corpus_files) >= 1


def test_corpus_message_parses(corpus_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    raw = corpus_file.read_bytes()
    with caplog.at_level(logging.ERROR, logger=mime.__name__):
        parsed = parse_message(raw, fallback_date=FALLBACK)
    # The safety net in parse_message must not have been needed.
    assert not caplog.records
    assert not any("internal error" in defect for defect in parsed.defects)
    assert isinstance(parsed, ParsedMessage)
    assert parsed.date.tzinfo is not None
    assert parsed.date.utcoffset() is not None
    assert isinstance(parsed.subject, str)
    assert isinstance(parsed.body_text, str)
    assert "\r" not in parsed.body_text
    assert "\x00" not in parsed.body_text
    parsed.body_text.encode("utf-8")  # storable: no lone surrogates
    if _has_text(BytesParser(policy=compat32).parsebytes(raw)):
        assert parsed.body_text.strip(), "message has text but body_text is empty"
    for address in parsed.from_ + parsed.to + parsed.cc + parsed.bcc:
        assert address.name or address.addr
    for attachment in parsed.attachments:
        assert attachment.size >= 0
        assert "/" in attachment.content_type


@pytest.mark.shared_corpus
def test_corpus_highlights(corpus_files: list[Path]) -> None:
    """A few shared-corpus messages whose reading needed special handling (tests/data has
    a case of its own for each)."""
    by_name = {path.name: path for path in corpus_files}

    def load(name: str) -> ParsedMessage:
        path = by_name.get(name)
        assert path is not None, f"{name} is not in the shared corpus given"
        return parse_message(path.read_bytes(), fallback_date=FALLBACK)

    # Raw UTF-8 in a filename parameter.
    nonascii = load("attachment_emails__attachment_nonascii_filename.eml")
    assert [a.filename for a in nonascii.attachments] == ["ciële.txt"]
    # Year 3609 in Date: implausible, so the fallback is used.
    bad_time = load("plain_emails__raw_email_bad_time.eml")
    assert bad_time.date == FALLBACK
    assert not bad_time.date_from_header
    # A bounce whose only explanation is in a message/delivery-status part.
    bounce = load("multipart_report_emails__multipart_report_multiple_status.eml")
    assert "undeliverable" in bounce.body_text
    # "From: tim@x concierge@x": both addresses recovered.
    two_from = load("plain_emails__raw_email_multiple_from.eml")
    assert [a.addr for a in two_from.from_] == ["tim@powerupdev.com", "concierge@powerupdev.com"]


# --------------------------------------------------------------------------- subjects


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("=?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=", "Grüße aus Köln"),
        ("=?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=", "Grüße aus Köln"),
        ("=?ISO-2022-JP?B?GyRCJF4kXyRgJGEkYhsoQg==?=", "まみむめも"),
        # Adjacent words: the folding whitespace between them is not text.
        ("=?utf-8?q?Hello?= =?utf-8?q?World?=", "HelloWorld"),
        ("Re: =?utf-8?q?caf=C3=A9?= time", "Re: café time"),
        # A multi-byte character split across two words.
        ("=?utf-8?b?4pw=?= =?utf-8?b?kw==?= done", "✓ done"),
        ("=?iso-8859-1?q?Ol=E9?=", "Olé"),
        # Unknown charset and broken padding: still readable.
        ("=?NONE?B?VEVTVA=?=", "TEST"),
        ("  folded\r\n\t subject  ", "folded subject"),
    ],
)
def test_encoded_word_subjects(header: str, expected: str) -> None:
    parsed = parse_message(make(f"Subject: {header}", "Date: Mon, 1 Jan 2024 10:00:00 +0000"))
    assert parsed.subject == expected


def test_iso_2022_jp_subject_folded_over_lines() -> None:
    subject = "Subject: =?ISO-2022-JP?B?GyRCJF4kXxsoQg==?=\r\n =?ISO-2022-JP?B?GyRCJGAkYSRiGyhC?="
    assert parse_message(make(subject)).subject == "まみむめも"


def test_no_subject_is_empty_string() -> None:
    assert parse_message(make("From: a@example.com")).subject == ""


def test_raw_utf8_headers() -> None:
    raw = make("Subject: Grüße", "From: Jörg Müller <joerg@example.de>")
    parsed = parse_message(raw)
    assert parsed.subject == "Grüße"
    assert parsed.from_ == (Address("Jörg Müller", "joerg@example.de"),)
    assert not parsed.defects or all("8-bit" not in d for d in parsed.defects)


def test_raw_latin1_header_falls_back_to_windows_1252() -> None:
    raw = b"Subject: caf\xe9 \x93quoted\x94\r\nFrom: Ren\xe9 <rene@example.fr>\r\n\r\nx"
    parsed = parse_message(raw)
    assert parsed.subject == "café \u201cquoted\u201d"
    assert parsed.from_[0].name == "René"
    assert any("8-bit" in d for d in parsed.defects)


def test_raw_8bit_header_uses_the_charset_of_the_text() -> None:
    subject = "Привет".encode("koi8-r")
    raw = (
        b"Subject: "
        + subject
        + b"\r\nContent-Type: text/plain; charset=koi8-r\r\n\r\n"
        + "мир".encode("koi8-r")
    )
    parsed = parse_message(raw)
    assert parsed.subject == "Привет"
    assert parsed.body_text == "мир"


# --------------------------------------------------------------------------- dates


def test_date_from_header() -> None:
    parsed = parse_message(make("Date: Fri, 21 Nov 1997 09:55:06 -0600"), fallback_date=FALLBACK)
    assert parsed.date == datetime(1997, 11, 21, 9, 55, 6, tzinfo=timezone(timedelta(hours=-6)))
    assert parsed.date_from_header


def test_missing_date_uses_fallback() -> None:
    parsed = parse_message(make("Subject: x"), fallback_date=FALLBACK)
    assert parsed.date == FALLBACK
    assert not parsed.date_from_header
    assert any("Date" in d for d in parsed.defects)


def test_missing_date_with_naive_fallback_is_taken_as_utc() -> None:
    parsed = parse_message(make("Subject: x"), fallback_date=datetime(2024, 1, 2, 3, 4, 5))
    assert parsed.date == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_missing_date_without_fallback_is_now() -> None:
    before = datetime.now(UTC)
    parsed = parse_message(make("Subject: x"))
    assert before <= parsed.date <= datetime.now(UTC)
    assert parsed.date.tzinfo is not None
    assert not parsed.date_from_header


@pytest.mark.parametrize(
    "value", ["Pn, 29 paX 2007 21:13:00 +0100", "<HR>", "", "Mon, 30 Jun 3609 15:33:50 +0600"]
)
def test_broken_or_implausible_date_uses_fallback(value: str) -> None:
    parsed = parse_message(make(f"Date: {value}"), fallback_date=FALLBACK)
    assert parsed.date == FALLBACK
    assert not parsed.date_from_header


def test_minus_zero_zone_is_utc() -> None:
    parsed = parse_message(make("Date: Tue, 1 Jul 2003 10:52:37 -0000"))
    assert parsed.date == datetime(2003, 7, 1, 10, 52, 37, tzinfo=UTC)
    assert parsed.date_from_header


# --------------------------------------------------------------------------- charsets


def test_unknown_charset_body_still_decoded() -> None:
    raw = make("Content-Type: text/plain; charset=x-unknown", body="Grüße, plain ASCII too")
    parsed = parse_message(raw)
    assert parsed.body_text == "Grüße, plain ASCII too"
    assert any("x-unknown" in d for d in parsed.defects)


def test_charset_label_with_a_nul_is_an_unknown_charset(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Found by fuzzing: codecs.lookup() raises ValueError for a NUL, and the whole message
    # fell back to the raw reading (no MIME at all).
    raw = make("Content-Type: text/plain; charset=\"utf\x00-8\"", body="Grüße")
    with caplog.at_level(logging.ERROR, logger="xtmail.sync.mail.mime"):
        parsed = parse_message(raw)
    assert parsed.body_text == "Grüße"
    assert not caplog.records
    assert any("unknown charset" in d for d in parsed.defects)


def test_unknown_charset_latin1_bytes_still_decoded() -> None:
    raw = make("Content-Type: text/plain; charset=x-unknown", body="Gr\xfc\xdfe".encode("latin-1"))
    assert parse_message(raw).body_text == "Grüße"


def test_wrong_declared_charset_utf8_that_is_latin1() -> None:
    body = "Grüße aus Köln".encode("latin-1")
    raw = make("Content-Type: text/plain; charset=utf-8", body=body)
    parsed = parse_message(raw)
    assert parsed.body_text == "Grüße aus Köln"
    assert parsed.defects


def test_wrong_declared_charset_ascii_that_is_utf8() -> None:
    raw = make('Content-Type: text/plain; charset="us-ascii"', body="naïve ✓")
    assert parse_message(raw).body_text == "naïve ✓"


def test_mostly_utf8_with_a_stray_windows_1252_byte() -> None:
    body = "Preis: 5 €, ".encode() + b"\x93ok\x94"
    raw = make("Content-Type: text/plain; charset=utf-8", body=body)
    assert parse_message(raw).body_text == "Preis: 5 €, \u201cok\u201d"


def test_iso_8859_1_label_reads_windows_1252_quotes() -> None:
    raw = make("Content-Type: text/plain; charset=iso-8859-1", body=b"\x93Hi\x94 caf\xe9")
    assert parse_message(raw).body_text == "\u201cHi\u201d café"


@pytest.mark.parametrize("charset", ["base64", "rot13", "", '"  "'])
def test_non_text_or_empty_charset_label(charset: str) -> None:
    raw = make(f"Content-Type: text/plain; charset={charset}", body="Olá")
    assert parse_message(raw).body_text == "Olá"


def test_missing_charset_defaults_to_utf8_then_windows_1252() -> None:
    assert parse_message(make(body="Olá")).body_text == "Olá"
    assert parse_message(make(body=b"Ol\xe1")).body_text == "Olá"


@pytest.mark.parametrize(
    ("charset", "text"),
    [("shift_jis", "あいうえお"), ("iso-2022-jp", "すみません。"), ("ks_c_5601-1987", "스티해")],
)
def test_asian_charsets(charset: str, text: str) -> None:
    codec = {"ks_c_5601-1987": "cp949"}.get(charset, charset)
    raw = make(f"Content-Type: text/plain; charset={charset}", body=text.encode(codec))
    assert parse_message(raw).body_text == text


# --------------------------------------------------------------------------- transfer encodings


def test_quoted_printable_with_soft_breaks_and_crlf() -> None:
    body = "Gr=C3=BC=C3=9Fe, this line is =\r\nsoft-broken.\r\nNext line.\r\n"
    raw = make(
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable",
        body=body,
    )
    assert parse_message(raw).body_text == "Grüße, this line is soft-broken.\nNext line."


def test_base64_body_with_bad_padding_and_odd_spelling() -> None:
    encoded = base64.b64encode("Grüße".encode()).decode().rstrip("=")
    raw = make(
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: Base64; ",
        body=encoded,
    )
    assert parse_message(raw).body_text == "Grüße"


def test_garbage_in_base64_body() -> None:
    raw = make("Content-Transfer-Encoding: base64", body="SGVsbG8*!gd29y\nbGQ")
    parsed = parse_message(raw)
    assert isinstance(parsed.body_text, str)
    assert parsed.body_text.startswith("Hello")


def test_unknown_transfer_encoding_kept_as_written() -> None:
    raw = make("Content-Transfer-Encoding: 7-bit", body="plain words")
    parsed = parse_message(raw)
    assert parsed.body_text == "plain words"
    assert any("7-bit" in d for d in parsed.defects)


def test_uuencoded_attachment_size() -> None:
    import binascii

    payload = b"uuencoded payload bytes"
    body = b"begin 644 f.bin\r\n" + binascii.b2a_uu(payload) + b"`\r\nend\r\n"
    raw = multipart(
        "mixed",
        "b",
        part("text/plain", "see file"),
        part(
            "application/octet-stream",
            body,
            "Content-Transfer-Encoding: x-uuencode",
            "Content-Disposition: attachment; filename=f.bin",
        ),
    )
    parsed = parse_message(raw)
    assert parsed.attachments == (Attachment("f.bin", "application/octet-stream", len(payload)),)


@pytest.mark.parametrize(
    "body",
    ["one\r\ntwo\r\nthree", "one\ntwo\nthree", "one\rtwo\rthree"],
    ids=["crlf", "lf", "cr"],
)
def test_line_endings_normalised(body: str) -> None:
    raw = b"Subject: x\r\n\r\n" + body.encode()
    assert parse_message(raw).body_text == "one\ntwo\nthree"


def test_lf_only_message() -> None:
    raw = make("Subject: LF only", "From: a@example.com", body="line 1\nline 2\n", crlf=False)
    parsed = parse_message(raw)
    assert parsed.subject == "LF only"
    assert parsed.body_text == "line 1\nline 2"


def test_nul_bytes_are_dropped() -> None:
    assert parse_message(make(body=b"a\x00b")).body_text == "ab"


# --------------------------------------------------------------------------- HTML


HTML_MAIL = """<html><head><style>p { color: red; }</style>
<script>alert("x")</script><title>T</title></head>
<body><h1>Order&nbsp;confirmed</h1>
<p>Caf&eacute; &amp; Co. thanks you &mdash; <b>really</b>.</p>
<img src="http://tracker.example.invalid/pixel.png" alt="pixel">
<img src="cid:logo@x">
<table><tr><td>Item</td><td>Qty</td></tr><tr><td>Widget</td><td>3</td></tr></table>
<a href="https://example.invalid/track">Click here</a>
</body></html>"""


def _forbid_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("network access while converting HTML")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_html_only_mail_becomes_readable_text(monkeypatch: pytest.MonkeyPatch) -> None:
    _forbid_network(monkeypatch)
    raw = make("Content-Type: text/html; charset=utf-8", body=HTML_MAIL)
    text = parse_message(raw).body_text
    assert "Order confirmed" in text
    assert "Café & Co. thanks you — really." in text
    assert "Widget" in text
    assert "Click here" in text
    assert "<" not in text
    assert ">" not in text
    assert "&" not in text.replace("Café & Co.", "")
    assert "color: red" not in text
    assert "alert" not in text
    assert "tracker.example" not in text


def test_html_to_text_is_public_and_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    _forbid_network(monkeypatch)
    assert html_to_text("<p>a &lt;b&gt; c</p>") == "a <b> c"
    assert html_to_text("") == ""
    assert html_to_text("   ") == ""
    assert html_to_text("<!-- only a comment -->") == ""
    assert html_to_text("\ufeff<?xml version='1.0' encoding='utf-8'?><p>x</p>") == "x"
    assert html_to_text("<p>nul\x00 and \x0b control</p>") == "nul and control"
    assert html_to_text("plain text, no tags") == "plain text, no tags"


def test_html_to_text_survives_deep_nesting() -> None:
    deep = "<style>x{}</style>" + "<div>" * 5000 + "deep &amp; nested" + "</div>" * 5000
    assert html_to_text(deep) == "deep & nested"


def test_html_to_text_in_parallel_threads() -> None:
    """Parsing runs in worker threads; inscriptis' shared default profile mixes documents."""
    docs = [
        f"<p>{f'doc{i} ' * 200}</p><table><tr><td>a{i}</td><td>b{i}</td></tr></table>"
        for i in range(16)
    ]
    expected = [html_to_text(doc) for doc in docs]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            for _ in range(10):
                assert list(pool.map(html_to_text, docs)) == expected
    finally:
        sys.setswitchinterval(interval)


def test_html_charset_from_meta_tag() -> None:
    page = '<html><head><meta charset="windows-1251"></head><body>Привет</body></html>'
    raw = make("Content-Type: text/html", body=page.encode("cp1251"))
    assert parse_message(raw).body_text == "Привет"


# --------------------------------------------------------------------------- body choice


def test_alternative_prefers_plain_text() -> None:
    raw = multipart(
        "alternative",
        "alt",
        part("text/plain; charset=utf-8", "The plain version."),
        part("text/html; charset=utf-8", "<p>The <b>HTML</b> version.</p>"),
        headers=("Subject: alt",),
    )
    parsed = parse_message(raw)
    assert parsed.body_text == "The plain version."
    assert parsed.attachments == ()


def test_alternative_with_empty_plain_uses_html() -> None:
    raw = multipart(
        "alternative",
        "alt",
        part("text/plain", "\r\n"),
        part("text/html", "<p>Only the HTML says it.</p>"),
    )
    assert parse_message(raw).body_text == "Only the HTML says it."


def test_alternative_inside_mixed_with_related_images() -> None:
    related = multipart(
        "related",
        "rel",
        part("text/html", '<p>Hi <img src="cid:i1"></p>'),
        part(
            "image/png",
            base64.b64encode(b"PNGDATA").decode(),
            "Content-ID: <i1>",
            "Content-Transfer-Encoding: base64",
        ),
    )
    alternative = multipart("alternative", "alt", part("text/plain", "Hi (plain)"), related)
    raw = multipart(
        "mixed",
        "mix",
        alternative,
        part(
            "application/pdf; name=quote.pdf",
            base64.b64encode(b"%PDF-1.4").decode(),
            "Content-Transfer-Encoding: base64",
            "Content-Disposition: attachment",
        ),
    )
    parsed = parse_message(raw)
    assert parsed.body_text == "Hi (plain)"
    assert parsed.attachments == (
        Attachment(None, "image/png", 7),
        Attachment("quote.pdf", "application/pdf", 8),
    )


def test_several_inline_plain_parts_joined_by_blank_line() -> None:
    raw = multipart(
        "mixed",
        "m",
        part("text/plain", "First part.\r\n"),
        part("image/gif", "GIF89a", "Content-Disposition: inline"),
        part("text/plain", "Second part."),
    )
    parsed = parse_message(raw)
    assert parsed.body_text == "First part.\n\nSecond part."
    assert [a.content_type for a in parsed.attachments] == ["image/gif"]


def test_plain_attachment_is_not_body() -> None:
    raw = multipart(
        "mixed",
        "m",
        part("text/plain", "Body."),
        part("text/plain", "secret file", "Content-Disposition: attachment; filename=a.txt"),
    )
    parsed = parse_message(raw)
    assert parsed.body_text == "Body."
    assert parsed.attachments == (Attachment("a.txt", "text/plain", 11),)


def test_message_without_text_has_empty_body() -> None:
    raw = make(
        "Content-Type: application/zip",
        "Content-Transfer-Encoding: base64",
        body=base64.b64encode(b"PK\x03\x04").decode(),
    )
    parsed = parse_message(raw)
    assert parsed.body_text == ""
    assert parsed.attachments == (Attachment(None, "application/zip", 4),)


def test_single_part_text_sent_as_attachment_is_still_the_text() -> None:
    raw = make("Content-Type: text/plain", "Content-Disposition: attachment", body="All of it.")
    assert parse_message(raw).body_text == "All of it."


def test_multipart_without_boundary_line_keeps_the_text() -> None:
    raw = make('Content-Type: multipart/mixed; boundary="nowhere"', body="Just text, no parts.")
    parsed = parse_message(raw)
    assert parsed.body_text == "Just text, no parts."
    assert parsed.defects


def test_missing_closing_boundary() -> None:
    raw = make('Content-Type: multipart/mixed; boundary="b"', body="--b\r\n\r\nUnclosed part.\r\n")
    parsed = parse_message(raw)
    assert parsed.body_text == "Unclosed part."
    assert any("closing boundary" in d for d in parsed.defects)


def test_similar_nested_boundaries() -> None:
    inner = multipart("alternative", "b-1", part("text/plain", "inner plain"))
    raw = multipart("mixed", "b", inner, part("text/plain", "outer plain"))
    assert parse_message(raw).body_text == "inner plain\n\nouter plain"


def test_header_line_without_colon_starts_the_body() -> None:
    raw = b"Subject: s\r\nthis is not a header\r\nmore\r\n\r\nbody"
    parsed = parse_message(raw)
    assert parsed.subject == "s"
    assert parsed.body_text == "this is not a header\nmore\n\nbody"


def test_obsolete_space_before_colon() -> None:
    parsed = parse_message(b"Subject  : old style\r\nTo : a@example.com\r\n\r\nx")
    assert parsed.subject == "old style"
    assert parsed.to == (Address("", "a@example.com"),)


# --------------------------------------------------------------------------- attachments


def test_rfc2231_non_ascii_filename_and_sizes() -> None:
    pdf = b"%PDF-1.4 " + bytes(range(256)) * 4
    raw = multipart(
        "mixed",
        "m",
        part("text/plain", "See attachments."),
        part(
            "application/pdf",
            base64.encodebytes(pdf).decode(),
            "Content-Transfer-Encoding: base64",
            "Content-Disposition: attachment; filename*=UTF-8''%C3%A9t%C3%A9%20%E2%9C%93.pdf",
        ),
        part(
            "text/plain; charset=utf-8",
            "caf=C3=A9\r\n",
            "Content-Transfer-Encoding: quoted-printable",
            "Content-Disposition: attachment;\r\n filename*0*=utf-8''%E3%81%8B%E3%81%8D;"
            "\r\n filename*1*=%E3%81%8F.txt",
        ),
        part(
            'image/jpeg; name="=?ISO-8859-1?Q?Eelanal=FC=FCsi_p=E4ring.jpg?="',
            "JPEGDATA",
            "Content-Disposition: inline",
        ),
        part(
            "application/octet-stream",
            "raw8",
            'Content-Disposition: attachment; filename="ciële.bin"',
        ),
    )
    parsed = parse_message(raw)
    assert parsed.body_text == "See attachments."
    assert parsed.attachments == (
        Attachment("été ✓.pdf", "application/pdf", len(pdf)),
        Attachment("かきく.txt", "text/plain", len("café\r\n".encode())),
        Attachment("Eelanalüüsi päring.jpg", "image/jpeg", 8),
        Attachment("ciële.bin", "application/octet-stream", 4),
    )


def test_message_rfc822_attachment() -> None:
    inner = make(
        "From: inner@example.com",
        "Subject: Forwarded original",
        body="The inner body follows the outer text.",
    )
    raw = multipart(
        "mixed",
        "m",
        part("text/plain", "See the forwarded message."),
        part("message/rfc822", inner, "Content-Disposition: attachment; filename=orig.eml"),
        headers=("Subject: Fwd: Forwarded original", "From: outer@example.com"),
    )
    parsed = parse_message(raw)
    assert parsed.subject == "Fwd: Forwarded original"
    assert parsed.body_text == (
        "See the forwarded message.\n\n---------- Forwarded message ----------\n"
        "From: inner@example.com\nSubject: Forwarded original\n\n"
        "The inner body follows the outer text."
    )
    assert parsed.attachments == (Attachment("orig.eml", "message/rfc822", len(inner)),)
    assert [a.addr for a in parsed.from_] == ["outer@example.com"]


def test_digest_parts_default_to_message_rfc822() -> None:
    inner = make("Subject: digest item", body="item body")
    raw = multipart("digest", "d", b"\r\n" + inner)
    parsed = parse_message(raw)
    assert [a.content_type for a in parsed.attachments] == ["message/rfc822"]


def test_large_attachment_size_is_exact() -> None:
    payload = bytes(range(256)) * 4000 + b"xy"  # 1,024,002 bytes: needs padding
    raw = multipart(
        "mixed",
        "m",
        part("text/plain", "big"),
        part(
            "application/octet-stream",
            base64.encodebytes(payload).decode(),
            "Content-Transfer-Encoding: base64",
            "Content-Disposition: attachment; filename=big.bin",
        ),
    )
    assert parse_message(raw).attachments[0].size == len(payload)


# --------------------------------------------------------------------------- threading headers


def test_references_and_in_reply_to() -> None:
    raw = make(
        "Message-ID:  <3456@example.net> ",
        "In-Reply-To: <1234@local.machine.example> (John's note)",
        "References: <1111@example.com>\r\n <1234@local.machine.example>",
    )
    parsed = parse_message(raw)
    assert parsed.message_id == "3456@example.net"
    assert parsed.in_reply_to == "1234@local.machine.example"
    assert parsed.references == ("1111@example.com", "1234@local.machine.example")


def test_in_reply_to_alone_fills_references() -> None:
    parsed = parse_message(make("In-Reply-To: <a@b.example> <c@d.example>"))
    assert parsed.in_reply_to == "a@b.example"
    assert parsed.references == ("a@b.example", "c@d.example")


def test_several_references_headers_and_junk() -> None:
    raw = make(
        "References: <foo@bar.net>", "References: <baz@bar.net>, <invalid.  ", "In-Reply-To:"
    )
    parsed = parse_message(raw)
    assert parsed.references == ("foo@bar.net", "baz@bar.net")
    assert parsed.in_reply_to is None


def test_ids_without_brackets_and_missing_ids() -> None:
    parsed = parse_message(make("Message-ID: bare-id@example.com"))
    assert parsed.message_id == "bare-id@example.com"
    assert parsed.in_reply_to is None
    assert parsed.references == ()
    assert parse_message(make("Subject: none")).message_id is None


# --------------------------------------------------------------------------- addresses


def test_addresses_with_display_names_and_commas() -> None:
    raw = make(
        'From: "Doe, John" <John.Doe@Example.COM>',
        'To: Mary Smith <mary@x.test>, jdoe@example.org, "Who?" <one@y.test>,\r\n'
        " =?utf-8?q?M=C3=BCller=2C_J=C3=B6rg?= <joerg@example.de>",
        'Cc: "Giant; \\"Big\\" Box" <sysservices@example.net>, boss@nil.test (The Boss)',
        "Bcc: undisclosed-recipients:;",
        "Reply-To: Sales <sales@example.com>",
        "Sender: list-bounces@example.com",
    )
    parsed = parse_message(raw)
    assert parsed.from_ == (Address("Doe, John", "John.Doe@Example.COM"),)
    assert parsed.from_[0].key == "john.doe@example.com"
    assert parsed.to == (
        Address("Mary Smith", "mary@x.test"),
        Address("", "jdoe@example.org"),
        Address("Who?", "one@y.test"),
        Address("Müller, Jörg", "joerg@example.de"),
    )
    assert parsed.cc == (
        Address('Giant; "Big" Box', "sysservices@example.net"),
        Address("The Boss", "boss@nil.test"),
    )
    assert parsed.bcc == ()
    assert parsed.reply_to == (Address("Sales", "sales@example.com"),)
    assert parsed.sender == (Address("", "list-bounces@example.com"),)


def test_group_syntax_and_empty_entries() -> None:
    parsed = parse_message(make("To: , a@example.com,, Team: b@example.com, c@example.com;"))
    assert [a.addr for a in parsed.to] == ["a@example.com", "b@example.com", "c@example.com"]


def test_malformed_addresses_are_kept_best_effort() -> None:
    raw = make(
        "From: Big Bug bb@bug.example",
        "To: smith@example.com, Mikel@Lindsaar <raasdnil@example.com>",
        "Cc: <Undisclosed-Recipient:@mailman.example;>",
    )
    parsed = parse_message(raw)
    assert parsed.from_ == (Address("Big Bug", "bb@bug.example"),)
    assert parsed.to == (
        Address("", "smith@example.com"),
        Address("Mikel@Lindsaar", "raasdnil@example.com"),
    )
    assert parsed.cc  # garbage, but kept
    assert not all(a.is_valid for a in parsed.cc)
    assert parsed.from_[0].is_valid


def test_address_headers_repeated() -> None:
    parsed = parse_message(make("To: a@example.com", "To: b@example.com"))
    assert [a.addr for a in parsed.to] == ["a@example.com", "b@example.com"]


# --------------------------------------------------------------------------- bulk


@pytest.mark.parametrize(
    ("header", "bulk"),
    [
        ("List-Id: Sales team <sales.lists.example.com>", True),
        ("Precedence: bulk", True),
        ("Precedence: List", True),
        ("Precedence: junk", True),
        ("Precedence: first-class", False),
        ("Auto-Submitted: auto-replied", True),
        ("Auto-Submitted: auto-generated; owner-email=x@example.com", True),
        ("Auto-Submitted: no", False),
        ("Auto-Submitted: No (comment)", False),
        ("X-Other: 1", False),
    ],
)
def test_is_bulk(header: str, bulk: bool) -> None:
    parsed = parse_message(make(header))
    assert parsed.is_bulk is bulk


def test_bulk_headers_are_kept_raw() -> None:
    raw = make("List-Id: Sales\r\n <sales.example.com>", "Precedence: bulk", "Auto-Submitted: no")
    parsed = parse_message(raw)
    assert parsed.list_id == "Sales <sales.example.com>"
    assert parsed.precedence == "bulk"
    assert parsed.auto_submitted == "no"
    plain = parse_message(make("Subject: x"))
    assert (plain.list_id, plain.precedence, plain.auto_submitted) == (None, None, None)


# --------------------------------------------------------------------------- robustness


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n",
        b"no headers at all",
        b"Subject: only a header",
        b"\x00\xff\xfe garbage \x80\x81",
        b" leading continuation\r\nSubject: s\r\n\r\nbody",
        b"From sender@example.com Mon Jan  1 00:00:00 2024\r\nSubject: mbox\r\n\r\nbody",
        b"Content-Type: multipart/mixed\r\n\r\nno boundary parameter",
        b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x--\r\n',
        b"Content-Type: text/plain; charset*=''\r\n\r\nx",
        b"Content-Type: /\r\nContent-Disposition: ;;;\r\n\r\nx",
        b"Subject: =?utf-8?b?####?= =?utf-8?q?=ZZ?=\r\n\r\n",
    ],
)
def test_never_raises(raw: bytes) -> None:
    parsed = parse_message(raw, fallback_date=FALLBACK)
    assert isinstance(parsed.body_text, str)
    assert parsed.date.tzinfo is not None
    assert not any("internal error" in d for d in parsed.defects)


def test_mbox_from_line_is_skipped() -> None:
    raw = b"From sender@example.com Mon Jan  1 00:00:00 2024\r\nSubject: mbox\r\n\r\nbody"
    parsed = parse_message(raw)
    assert parsed.subject == "mbox"
    assert parsed.body_text == "body"


def test_absurd_nesting_is_cut_off() -> None:
    raw = part("text/plain", "deepest")
    for level in range(200):
        raw = multipart("mixed", f"b{level}", raw)
    parsed = parse_message(raw)
    assert any("nesting" in d for d in parsed.defects)
    assert not any("internal error" in d for d in parsed.defects)


def test_internal_error_still_keeps_the_message(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(mime, "_walk", broken)
    with caplog.at_level(logging.ERROR, logger=mime.__name__):
        parsed = parse_message(make("Subject: s", body="still here"), fallback_date=FALLBACK)
    assert parsed.body_text == "still here"
    assert parsed.date == FALLBACK
    assert any("internal error" in d for d in parsed.defects)
    assert any("simulated bug" in (r.exc_text or "") for r in caplog.records)


def test_parsed_message_is_frozen_and_picklable() -> None:
    raw = multipart(
        "mixed",
        "m",
        part("text/plain", "body"),
        part("image/png", "x", "Content-Disposition: attachment; filename=a.png"),
        headers=("From: A <a@example.com>", "Date: Mon, 1 Jan 2024 10:00:00 +0100"),
    )
    parsed = parse_message(raw)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.subject = "changed"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(parsed)) == parsed  # noqa: S301 - our own object
    assert hash(parsed.from_[0]) == hash(Address("A", "a@example.com"))


# --------------------------------------------------------------------------- damage, field by field


def test_a_field_that_cannot_be_read_costs_only_itself(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = mime._subject

    def broken(headers: object, ctx: object) -> str:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(mime, "_subject", broken)
    raw = make(
        "From: A <a@example.com>", "To: b@example.org", "Subject: lost",
        "Date: Mon, 1 Jan 2024 10:00:00 +0100", "Message-ID: <named@example.com>",
        body="still here",
    )
    with caplog.at_level(logging.ERROR, logger=mime.__name__):
        parsed = parse_message(raw, fallback_date=FALLBACK)
    assert parsed.subject == ""
    assert [a.addr for a in parsed.from_] == ["a@example.com"]
    assert [a.addr for a in parsed.to] == ["b@example.org"]
    assert parsed.date_from_header
    assert parsed.body_text == "still here"
    assert "Subject: could not be read; kept only in the raw message" in parsed.defects
    # The log names the message, so that it can be found.
    assert any("named@example.com" in r.getMessage() for r in caplog.records)
    assert real is not broken


@pytest.mark.parametrize(
    "to",
    [
        "(" * 20000 + "x" + ")" * 20000 + " <a@example.org>",
        "a@example.org, " + ":" * 20000,
        "x" * 50000 + " y z, a@example.org",
        "g:" * 20000 + " a@example.org" + ";" * 20000,
        "=?utf-8?q?a?= (" * 5000 + " <a@example.org>",
        ", ".join(f"=?utf-8?b?w6Q=?={i} <u{i}@example.org>" for i in range(20000)),
        "<" * 50000 + "a@example.org",
        '"' + "\\" * 50000 + '" <a@example.org>',
        "=?utf-8?q?" + "=C3=A4" * 100000 + "?= <a@example.org>",
    ],
)
def test_hostile_address_headers_take_bounded_time(to: str) -> None:
    raw = make(
        "From: A <a@example.com>", f"To: {to}", "Subject: still read",
        "Date: Mon, 1 Jan 2024 10:00:00 +0100", body="body",
    )
    started = time.perf_counter()
    parsed = parse_message(raw, fallback_date=FALLBACK)
    assert time.perf_counter() - started < 5
    assert parsed.subject == "still read"
    assert [a.addr for a in parsed.from_] == ["a@example.com"]
    assert parsed.date_from_header
    assert not any("could not be read" in d or "internal error" in d for d in parsed.defects)


def test_many_header_fields_take_bounded_time() -> None:
    raw = make(*(f"X-Filler-{i}: {'v' * 50}" for i in range(50000)), "Subject: last", body="b")
    started = time.perf_counter()
    parsed = parse_message(raw)
    assert time.perf_counter() - started < 5
    assert parsed.subject == "last"


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("Tue, 17 Jul 2012 22:23:35.882 0000", "2012-07-17T22:23:35+00:00"),
        ("17 Jul 2012 22:23:35 0200 (CEST)", "2012-07-17T22:23:35+02:00"),
        ("Tue, 17 Jul 2012 22:23:35 +02:00", "2012-07-17T22:23:35+02:00"),
        ("Tue, 17 Jul 2012 22:23:35 GMT+0200", "2012-07-17T22:23:35+02:00"),
        ("Tue. 17 Jul. 2012 22:23:35 -0500", "2012-07-17T22:23:35-05:00"),
        ("2012-07-17T22:23:35Z", "2012-07-17T22:23:35+00:00"),
        ("2012-07-17 22:23 -03:30", "2012-07-17T22:23:00-03:30"),
    ],
)
def test_lenient_dates(written: str, expected: str) -> None:
    parsed = parse_message(make(f"Date: {written}"), fallback_date=FALLBACK)
    assert parsed.date_from_header
    assert parsed.date.isoformat() == expected


@pytest.mark.parametrize("written", ["07/08/2012 10:00", "yesterday", "Tue, 99 Foo 2012"])
def test_ambiguous_dates_are_not_guessed(written: str) -> None:
    parsed = parse_message(make(f"Date: {written}"), fallback_date=FALLBACK)
    assert not parsed.date_from_header
    assert parsed.date == FALLBACK


def test_well_formed_mail_has_no_repair_notes() -> None:
    # The repairs run only where the cheap reading sees something wrong.
    raw = multipart(
        "mixed", "m",
        part("text/plain; charset=iso-8859-1", "Caf\xe9 au lait".encode("latin-1")),
        part("application/pdf", "JVBERi0=", "Content-Transfer-Encoding: base64",
             "Content-Disposition: attachment; filename=a.pdf"),
        headers=("From: A <a@example.com>", "Date: Mon, 1 Jan 2024 10:00:00 +0100",
                 "Subject: fine"),
    )
    parsed = parse_message(raw)
    assert parsed.defects == ()
    assert parsed.body_text == "Café au lait"


def test_richtext_inside_a_mixed_message_is_text() -> None:
    raw = multipart("mixed", "m", part("text/enriched", "<bold>Bold</bold> and <<plain>."))
    assert parse_message(raw).body_text == "Bold and <plain>."


def test_damaged_gzip64_is_kept_as_an_attachment() -> None:
    raw = multipart(
        "mixed", "m", part("text/plain", "see attachment"),
        part("application/octet-stream", "bm90IGd6aXA=", "Content-Transfer-Encoding: x-gzip64"),
    )
    parsed = parse_message(raw)
    assert parsed.body_text == "see attachment"
    assert [a.content_type for a in parsed.attachments] == ["application/octet-stream"]
    assert any("x-gzip64" in d for d in parsed.defects)


def test_nested_forwarded_messages_are_cut_off_at_the_depth_limit() -> None:
    raw = make("Subject: innermost", body="deepest text")
    for level in range(100):
        raw = make("Content-Type: message/rfc822", f"Subject: level {level}", body=raw)
    parsed = parse_message(raw)
    assert any("nesting" in d for d in parsed.defects)
    assert not any("internal error" in d for d in parsed.defects)


def test_an_empty_file_reads_as_an_empty_message_and_is_no_mail() -> None:
    # `xtmail import` refuses it (not a mail message); the parser still never fails on it.
    parsed = parse_message(b"", fallback_date=FALLBACK)
    assert (parsed.subject, parsed.from_, parsed.body_text) == ("", (), "")
    assert parsed.date == FALLBACK
    assert parsed.defects == ("Date: header missing",)
    assert not mime.looks_like_mail(b"")


@pytest.mark.parametrize(
    ("raw", "is_mail"),
    [
        (b"", False),
        (b"\r\n\r\nbody only", False),
        (b"\x7fELF\x02\x01\x01\x00\x00", False),
        (b"no headers at all", False),
        (b"Subject: only a header", True),
        (b"\xef\xbb\xbfFrom: a@example.com\r\n\r\nx", True),
        (b"From sender@example.com Mon Jan  1 00:00:00 2024\nSubject: mbox\n\nbody", True),
    ],
)
def test_looks_like_mail(raw: bytes, is_mail: bool) -> None:
    assert mime.looks_like_mail(raw) is is_mail


@pytest.mark.parametrize(
    "body",
    [
        "begin 644 x\n" * 50000,
        "=ybegin size=1 name=y\n" * 50000 + "end\n",
        "text\n" + "begin 644 a\nM86)C\n" * 20000 + "end\n",
    ],
)
def test_inline_encoded_blocks_take_bounded_time(body: str) -> None:
    started = time.perf_counter()
    parsed = parse_message(make("Subject: blocks", body=body))
    assert time.perf_counter() - started < 5
    assert parsed.subject == "blocks"


def test_richtext_params_without_end_take_bounded_time() -> None:
    raw = make("Content-Type: text/enriched", body="<param>x " * 50000 + "<bold>end</bold>")
    started = time.perf_counter()
    parsed = parse_message(raw)
    assert time.perf_counter() - started < 5
    assert parsed.body_text.endswith("end")


def test_charset_detection_is_bounded_per_message() -> None:
    sjis = "会議は金曜日の午後三時に変更になりました。".encode("shift_jis")
    parts = [part("text/plain; charset=us-ascii", sjis) for _ in range(200)]
    started = time.perf_counter()
    parsed = parse_message(multipart("mixed", "m", *parts))
    assert time.perf_counter() - started < 5
    assert parsed.body_text.startswith("会議は金曜日")


def test_search_words_cover_the_attached_message() -> None:
    inner = make("From: Landlord <office@landlord.example>", "Subject: Lease terms",
                 body="The inner offer: rent rises by two percent.")
    raw = multipart("mixed", "m", part("text/plain", "See below."), part("message/rfc822", inner),
                    headers=("Subject: Fwd: Lease terms",))
    words = set(prepare(raw).search.replace("'", "").split())
    # The inner text and the inner headers shown with it are found by search.
    assert {"rent", "rises", "landlord"} <= words


def test_no_text_field_holds_a_nul() -> None:
    """PostgreSQL text cannot hold NUL: the parser leaves none in any field it returns (the
    raw bytes, stored as bytea, keep the original)."""
    raw = (b"From: A\x00da <a\x00b@example.com>\r\nTo: B\x00 <b@x.example>\r\n"
           b"Subject: Hi\x00there =?utf-8?q?a=00b?=\r\nContent-Type: text/html\r\n\r\n"
           b"<p>x\x00y</p>\r\n")
    prepared = prepare(raw)
    texts = [prepared.subject, prepared.body, prepared.search,
             *(part for address in prepared.addresses for part in address)]
    assert all("\x00" not in text for text in texts), texts
    assert prepared.subject == "Hithere ab"
