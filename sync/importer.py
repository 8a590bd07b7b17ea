"""The import engine: raw bytes in, stored and associated messages out.

Two halves:

* :func:`prepare` is pure CPU work (MIME parsing, identity hash, reference scan). It runs in
  worker processes for bulk imports and in a worker thread for the sync service, never on
  the GUI thread. It returns a :class:`PreparedMessage`, which carries no raw bytes so that
  sending it back from a worker process is cheap.
* :class:`Importer` writes a batch of prepared messages in one transaction through
  :mod:`xtmail.sync.store`, which applies the association rules set-based in SQL.

The identity rule (docs/identity.md): a message's ``eml_hash`` is a SHA-256 over the header
fields that every copy of one logical message shares, wherever it was delivered, and the
body bytes, with line endings and header folding normalised. Headers that each delivery
adds (Received, Delivered-To, Return-Path, X-*, ARC-*, Authentication-Results) and Bcc
(only the sender's copy has it) are left out. Different messages sharing a Message-ID differ
in another header or in the body, so they stay distinct.
"""

from __future__ import annotations

import hashlib
import json
import logging
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING

from .mime import parse_message
from .refs import find_references
from .textops import crlf_to_lf, distinct_words, mapped_words

if TYPE_CHECKING:
    # Only for annotations: the settings and the preferences page import this module, and
    # Qt Designer loads them in a Python that has no database driver.
    import psycopg

log = logging.getLogger(__name__)

#: At most this many bytes of raw mail in one batch (a bigger message is a batch of its
#: own): a folder of large attachments must not put gigabytes in flight.
BATCH_BYTES = 16 * 1024 * 1024

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


@dataclass(frozen=True, slots=True)
class Location:
    """Where a message was seen: an IMAP folder position, or a file for imports."""

    account: str
    mailbox: str
    uidvalidity: int
    uid: int


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    """Everything the store needs about one message, except its raw bytes."""

    hash: str
    date: datetime
    subject: str
    body: str
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    reply_to: str | None
    list_id: str | None
    is_bulk: bool
    size: int
    attachments_json: str
    defects: tuple[str, ...]
    #: (type, address, display name), type one of FROM, TO, CC, BCC.
    addresses: tuple[tuple[str, str, str], ...]
    #: (code, number) of each ``[xtref:...]`` in subject or body.
    refs: tuple[tuple[str, str], ...]
    #: The full-text search document as a ``tsvector`` literal (see :func:`search_lexemes`).
    search: str

    def __reduce__(self) -> tuple[type[PreparedMessage], tuple[object, ...]]:
        # Sent back from parsing processes by the thousand: a flat tuple loads about three
        # times faster than a slotted dataclass's default pickled state.
        return (PreparedMessage, _prepared_fields(self))


_prepared_fields = operator.attrgetter(*(f.name for f in fields(PreparedMessage)))


@dataclass(frozen=True, slots=True)
class Incoming:
    """A raw message on its way in, with where it came from."""

    raw: bytes
    location: Location | None = None
    internal_date: datetime | None = None


@dataclass
class BatchResult:
    """What one batch did. ``ties`` maps each new eml_id to its (type, id) ties."""

    eml_ids: list[int] = field(default_factory=list)
    new: list[bool] = field(default_factory=list)
    ties: dict[int, list[tuple[str, int]]] = field(default_factory=dict)
    contacts_created: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def imported(self) -> int:
        return sum(self.new)

    @property
    def already_present(self) -> int:
        return len(self.new) - self.imported


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
        subject=_no_nul(parsed.subject),
        body=_no_nul(parsed.body_text),
        message_id=parsed.message_id,
        in_reply_to=parsed.in_reply_to,
        references=parsed.references,
        reply_to=", ".join(a.addr for a in parsed.reply_to) or None,
        list_id=parsed.list_id,
        is_bulk=parsed.is_bulk,
        size=len(raw),
        attachments_json=json.dumps(attachments, ensure_ascii=False),
        defects=parsed.defects,
        addresses=tuple((k, _no_nul(a), _no_nul(n)) for k, a, n in addresses),
        refs=tuple(unique_refs),
        search=search_document(
            parsed.subject,
            " ".join(f"{a[1]} {a[2]}" for a in addresses),
            parsed.body_text,
        ),
    )


# Word separators: ASCII punctuation and the common typographic marks. str.translate + split
# runs in C and is about five times faster than a \w+ regex over a 10 KB body.
_SEPARATORS = str.maketrans(
    {c: " " for c in map(chr, range(128)) if not (c.isalnum() or c == "_")}
    | dict.fromkeys(
        "\u00a0\u00ab\u00bb\u2013\u2014\u2018\u2019\u201a\u201c\u201d"
        "\u201e\u2026\u2022\u00b7\u3000\u3001\u3002\uff0c",
        " ",
    )
)
# The same for the Latin-1 characters, as a table of 256 bytes for textops.mapped_words:
# each one's _separated(), always one Latin-1 character (ord() fails at import otherwise).
_LATIN1_SEPARATED = bytes(ord(chr(i).lower().translate(_SEPARATORS)) for i in range(256))
_SEARCH_TEXT_LIMIT = 200_000
_MAX_LEXEME = 100


def search_lexemes(*texts: str) -> list[str]:
    """The distinct lower-case words of ``texts``, as stored in ``msg_search``.

    Words are computed here, in the parsing workers, rather than with PostgreSQL's
    ``to_tsvector``, which costs about 1.7 ms per 10 KB message on the database's single
    connection. Searches split their words with the same function (``search_query``), so
    both sides always agree on what a word is. No positions are kept: the Attach dialog
    matches words and prefixes, not phrases.
    """
    joined = " ".join(text[:_SEARCH_TEXT_LIMIT] for text in texts)
    words = mapped_words(joined, _LATIN1_SEPARATED)
    if words is None:  # a character above U+00FF: str.lower's rules, and a copy per step
        words = distinct_words(_separated(joined))
    # max() runs in C; the filter is a Python loop, needed only when a long word exists.
    if words and max(map(len, words)) > _MAX_LEXEME:
        words = [w for w in words if len(w) <= _MAX_LEXEME]
    return sorted(words)


def search_document(*texts: str) -> str:
    """``msg_search`` as a ``tsvector`` literal: the words of :func:`search_lexemes`, quoted.

    Words never hold a quote or a backslash (both are separators), so no escaping is needed.
    """
    words = search_lexemes(*texts)
    return "'" + "' '".join(words) + "'" if words else ""


def _separated(text: str) -> str:
    """``text`` in lower case with every separator a space: its words are its split()."""
    return text.lower().translate(_SEPARATORS)


def _words(text: str) -> list[str]:
    return _separated(text).split()


def search_query(text: str) -> str | None:
    """A ``tsquery`` literal matching messages holding every word of ``text`` (last one as a
    prefix, for search-as-you-type); ``None`` when ``text`` has no words."""
    words = [w for w in _words(text) if len(w) <= _MAX_LEXEME]
    if not words:
        return None
    terms = [f"'{w}'" for w in words[:-1]] + [f"'{words[-1]}':*"]
    return " & ".join(terms)


def _no_nul(text: str) -> str:
    # PostgreSQL text cannot hold NUL; the raw bytes (bytea) keep the original.
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _prepare_args(args: tuple[bytes, datetime | None]) -> PreparedMessage:
    return prepare(*args)


def prepare_raw(args: Sequence[tuple[bytes, datetime | None]]) -> list[PreparedMessage]:
    """:func:`prepare` over (raw bytes, internal date) pairs: what a parsing process gets,
    without the rest of each :class:`Incoming` to pickle."""
    return [prepare(raw, internal_date) for raw, internal_date in args]


def prepare_many(
    items: Sequence[Incoming], executor: Executor | None = None, chunksize: int = 32
) -> list[PreparedMessage]:
    """Prepare a batch, in ``executor`` (a process pool for bulk) when one is given."""
    args = [(item.raw, item.internal_date) for item in items]
    if executor is None:
        return prepare_raw(args)
    return list(executor.map(_prepare_args, args, chunksize=chunksize))


@dataclass(frozen=True)
class ImportPolicy:
    """Which unknown addresses become new contacts (association rule 1's exclusion list).

    All matching is case-insensitive. ``own_addresses`` are the user's addresses;
    ``excluded_domains`` also excludes their subdomains; ``exclude_automated`` skips
    no-reply, mailer-daemon, postmaster and bounce senders; ``exclude_bulk`` creates no
    contacts from bulk or list mail (List-Id, Precedence: bulk/list/junk, Auto-Submitted).
    Matching existing contacts is never affected by the policy.
    """

    own_addresses: frozenset[str] = frozenset()
    excluded_domains: frozenset[str] = frozenset()
    exclude_automated: bool = True
    exclude_bulk: bool = True
    create_contacts: bool = True

    @classmethod
    def build(
        cls,
        own_addresses: Iterable[str] = (),
        excluded_domains: Iterable[str] = (),
        **flags: bool,
    ) -> ImportPolicy:
        return cls(
            own_addresses=frozenset(a.strip().lower() for a in own_addresses if a.strip()),
            excluded_domains=frozenset(
                d.strip().lower().lstrip("@.") for d in excluded_domains if d.strip()
            ),
            **flags,
        )

    def may_create(self, address: str) -> bool:
        addr = address.lower()
        if addr in self.own_addresses or "@" not in addr:
            return False
        local, _, domain = addr.rpartition("@")
        if any(domain == d or domain.endswith("." + d) for d in self.excluded_domains):
            return False
        return not (self.exclude_automated and _AUTOMATED.search(local))


_AUTOMATED = re.compile(
    r"(^|[._+-])(no-?reply|do-?not-?reply|donotreply|mailer-daemon|postmaster|bounces?"
    r"|notifications?|auto-?reply)([._+-]|$)",
    re.IGNORECASE,
)


class Importer:
    """Writes prepared messages, one transaction per batch, and applies the association rules.

    ``conn`` is a psycopg connection in autocommit mode; the importer opens its own
    transactions. ``on_state`` lets the caller write its progress marker (a folder's last
    UID) inside the same transaction as the messages it covers.
    """

    def __init__(self, conn: psycopg.Connection, policy: ImportPolicy | None = None) -> None:
        self.conn = conn
        self.policy = policy or ImportPolicy()

    def import_batch(
        self,
        items: Sequence[Incoming],
        prepared: Sequence[PreparedMessage] | None = None,
        *,
        source: str = "imap",
        extra_ties: Sequence[tuple[str, int]] = (),
        on_state: Callable[[psycopg.Connection], None] | None = None,
    ) -> BatchResult:
        if prepared is None:
            prepared = prepare_many(items)
        from . import store

        return store.write_batch(
            self.conn,
            items,
            prepared,
            policy=self.policy,
            source=source,
            extra_ties=extra_ties,
            on_state=on_state,
        )


def extra_writers(
    connect: Callable[[], psycopg.Connection] | None, count: int, what: str
) -> list[psycopg.Connection]:
    """Up to ``count`` more connections for writers storing batches side by side.

    A refused connection (a server at its connection limit) ends the list early: the work
    goes on with the writers there are. Each gets custom plans only (see ``write_batch``).
    """
    import psycopg

    conns: list[psycopg.Connection] = []
    while connect is not None and len(conns) < count:
        try:
            conn = connect()
        except psycopg.OperationalError as exc:
            log.info("%s: storing with %d writer(s); another connection was refused: %s",
                     what, len(conns) + 1, exc)
            break
        conn.prepare_threshold = None
        conns.append(conn)
    return conns
