"""The value types every layer of xtmail.sync passes around: a leaf module, importing no
other part of xtmail, so parsing, the database and IMAP can all use them."""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime


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


@dataclass(frozen=True)
class ImportPolicy:
    """Which unknown addresses become new contacts (association rule 1's exclusion list).

    All matching is case-insensitive. ``create_contacts`` off: no contact is ever created.
    ``contact_scope`` says whose addresses may become contacts: ``senders`` (From),
    ``correspondents`` (From and To, the default: the people a message is between, not
    those copied on it) or ``everyone`` (From, To, Cc, Bcc). A message with more than
    ``max_recipients`` recipients (To, Cc and Bcc together; 0: no limit) creates none: a
    newsletter or a company-wide thread must not fill the CRM. ``own_addresses`` are the
    user's addresses; ``excluded_domains`` also excludes their subdomains;
    ``exclude_automated`` skips no-reply, mailer-daemon, postmaster and bounce senders;
    ``exclude_bulk`` creates no contacts from bulk or list mail (List-Id, Precedence:
    bulk/list/junk, Auto-Submitted). Matching existing contacts is never affected by the
    policy.
    """

    own_addresses: frozenset[str] = frozenset()
    excluded_domains: frozenset[str] = frozenset()
    exclude_automated: bool = True
    exclude_bulk: bool = True
    create_contacts: bool = True
    contact_scope: str = "correspondents"
    max_recipients: int = 10

    def creates_from(self, kind: str, recipients: int) -> bool:
        """Whether an address of this kind ("FROM", "TO", "CC", "BCC") of a message with
        this many recipients may become a contact (before the per-address checks)."""
        if not self.create_contacts:
            return False
        if self.max_recipients and recipients > self.max_recipients:
            return False
        return kind in CONTACT_SCOPES.get(self.contact_scope, ())

    @classmethod
    def build(
        cls,
        own_addresses: Iterable[str] = (),
        excluded_domains: Iterable[str] = (),
        *,
        exclude_automated: bool = True,
        exclude_bulk: bool = True,
        create_contacts: bool = True,
        contact_scope: str = "correspondents",
        max_recipients: int = 10,
    ) -> ImportPolicy:
        if contact_scope not in CONTACT_SCOPES:
            raise ValueError(f"contact scope {contact_scope!r} is not one of "
                             f"{', '.join(CONTACT_SCOPES)}")
        return cls(
            own_addresses=frozenset(a.strip().lower() for a in own_addresses if a.strip()),
            excluded_domains=frozenset(
                d.strip().lower().lstrip("@.") for d in excluded_domains if d.strip()
            ),
            exclude_automated=exclude_automated,
            exclude_bulk=exclude_bulk,
            create_contacts=create_contacts,
            contact_scope=contact_scope,
            max_recipients=max(0, max_recipients),
        )

    def may_create(self, address: str) -> bool:
        addr = address.lower()
        if addr in self.own_addresses or "@" not in addr:
            return False
        local, _, domain = addr.rpartition("@")
        if any(domain == d or domain.endswith("." + d) for d in self.excluded_domains):
            return False
        return not (self.exclude_automated and _AUTOMATED.search(local))


#: Contact scopes -> the address kinds whose unknown addresses may become contacts.
CONTACT_SCOPES: dict[str, tuple[str, ...]] = {
    "senders": ("FROM",),
    "correspondents": ("FROM", "TO"),
    "everyone": ("FROM", "TO", "CC", "BCC"),
}

_AUTOMATED = re.compile(
    r"(^|[._+-])(no-?reply|do-?not-?reply|donotreply|mailer-daemon|postmaster|bounces?"
    r"|notifications?|auto-?reply)([._+-]|$)",
    re.IGNORECASE,
)


# -- what the read side returns (MailStore), for the widgets and dialogs -------------------

@dataclass(frozen=True, slots=True)
class MessageRow:
    """One line of an Email tab."""

    eml_id: int
    date: datetime | None
    sender: str
    to: str
    cc: str
    subject: str
    #: True when the message is listed because it is tied to one of the document's contacts
    #: (CRM Account, Customer, Vendor, Employee), not to the document itself.
    via_contact: bool = False
    #: False when the message carries no usable date of its own (Date header missing,
    #: unreadable or in the future): ``date`` is then when it was received.
    dated: bool = True
    #: How many attachments the message has (inline images and attached messages count).
    attachments: int = 0
    #: From, To and Cc as names only (an address where there is no name), for lists whose
    #: columns show the names while ``sender``, ``to`` and ``cc`` hold "Name <address>"
    #: (the Attach dialog's search); empty where those are shown as they are.
    names: tuple[str, str, str] = ("", "", "")


@dataclass(frozen=True, slots=True)
class MessageDetail:
    eml_id: int
    date: datetime | None
    subject: str
    body: str
    from_: tuple[tuple[str, str], ...] = ()
    to: tuple[tuple[str, str], ...] = ()
    cc: tuple[tuple[str, str], ...] = ()
    reply_to: tuple[tuple[str, str], ...] = ()
    attachments: tuple[dict[str, object], ...] = field(default=())
    #: What was wrong with the message and how it was read (the parser's notes).
    defects: tuple[str, ...] = ()
    #: As :attr:`MessageRow.dated`: False when ``date`` is when the message was received.
    dated: bool = True


@dataclass(frozen=True, slots=True)
class ContactRow:
    cntct_id: int
    number: str
    name: str
    email: str


@dataclass(frozen=True, slots=True)
class DocumentRow:
    """A document in a list of records (the demo host's main window)."""

    doc_id: int
    number: str
    contact_name: str
    contact_email: str
