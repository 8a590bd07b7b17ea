"""Raw bytes to a :class:`~xtmail.sync.values.PreparedMessage`: pure CPU work (MIME
parsing, the identity hash, the reference scan, search words), run in worker processes for
bulk work and never on the GUI thread. A prepared message carries no raw bytes, so sending
it back from a worker process is cheap.

The identity rule: a message's ``eml_hash`` is a SHA-256 over the header fields that every
copy of one logical message shares, wherever it was delivered, and the body bytes, with line
endings and header folding normalised. Headers that each delivery adds (Received,
Delivered-To, Return-Path, X-*, ARC-*, Authentication-Results) and Bcc (only the sender's
copy has it) are left out. Different messages sharing a Message-ID differ in another header
or in the body, so they stay distinct.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import datetime

from ..values import Incoming, PreparedMessage
from .mime import parse_message
from .refs import find_references
from .textops import crlf_to_lf
from .words import search_document

HASH_PREFIX = "x1:"  # Connect's hashes were bare MD5 hex; ours never collide with them.
_SPLIT = re.compile(rb"\r?\n\r?\n")
_UNFOLD = re.compile(rb"\r?\n[ \t]+")
# Added per delivery or per mailbox, so they differ between copies of one message; Bcc is
# only in the sender's copy. X- headers are mostly added by receiving servers and filters.
_DELIVERY_HEADERS = frozenset({
    b"received", b"return-path", b"delivered-to", b"envelope-to", b"apparently-to",
    b"status", b"content-length", b"lines", b"authentication-results", b"received-spf",
    b"bcc",
})
_DELIVERY_PREFIXES = (b"x-", b"arc-")


def identity_hash(raw: bytes) -> str:
    """The ``eml_hash`` of a raw message: equal for every delivered copy of it."""
    parts = _SPLIT.split(raw, maxsplit=1)
    head = parts[0]
    body = parts[1] if len(parts) > 1 else b""
    digest = hashlib.sha256()
    for line in _UNFOLD.sub(b" ", crlf_to_lf(head)).split(b"\n"):
        name, sep, value = line.partition(b":")
        name = name.strip().lower()
        if not sep or name in _DELIVERY_HEADERS or name.startswith(_DELIVERY_PREFIXES):
            continue
        digest.update(name + b":" + b" ".join(value.split()) + b"\n")
    digest.update(b"\n")
    digest.update(crlf_to_lf(body).rstrip())
    return HASH_PREFIX + digest.hexdigest()


def prepare(raw: bytes, internal_date: datetime | None = None) -> PreparedMessage:
    """Parse one raw message into what the store needs. Never raises on bad input."""
    parsed = parse_message(raw, fallback_date=internal_date)
    addresses = tuple(
        (kind, a.addr, a.name)
        for kind, group in (("FROM", parsed.from_), ("TO", parsed.to), ("CC", parsed.cc),
                            ("BCC", parsed.bcc))
        for a in group
        if a.addr
    )
    refs = find_references(parsed.subject) + find_references(parsed.body_text)
    seen: set[tuple[str, str]] = set()
    unique_refs = []
    for ref in refs:
        key = (ref.code, ref.number)
        if key not in seen:
            seen.add(key)
            unique_refs.append(key)
    attachments = [
        {"filename": a.filename, "content_type": a.content_type, "size": a.size}
        for a in parsed.attachments
    ]
    return PreparedMessage(
        hash=identity_hash(raw),
        date=parsed.date,
        subject=parsed.subject,
        body=parsed.body_text,
        message_id=parsed.message_id,
        in_reply_to=parsed.in_reply_to,
        references=parsed.references,
        reply_to=", ".join(a.addr for a in parsed.reply_to) or None,
        list_id=parsed.list_id,
        is_bulk=parsed.is_bulk,
        size=len(raw),
        attachments_json=json.dumps(attachments, ensure_ascii=False),
        defects=parsed.defects,
        addresses=addresses,
        refs=tuple(unique_refs),
        search=search_document(
            parsed.subject,
            " ".join(f"{a[1]} {a[2]}" for a in addresses),
            parsed.body_text,
        ),
    )


def prepare_raw(pairs: Sequence[tuple[bytes, datetime | None]]) -> list[PreparedMessage]:
    """:func:`prepare` over (raw bytes, internal date) pairs: what a parsing process runs,
    given nothing else of each :class:`Incoming` to pickle. It lives here, not with the
    pipeline, so that a parsing process imports no database driver."""
    return [prepare(raw, internal_date) for raw, internal_date in pairs]


def prepare_many(items: Sequence[Incoming]) -> list[PreparedMessage]:
    """Prepare a batch in this thread, for a caller that stores without the pipeline."""
    return [prepare(item.raw, item.internal_date) for item in items]
