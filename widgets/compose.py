"""Mail drafts for the Email tab's New/Reply/Reply All/Forward, and mailto: URLs for them.

Pure Python on purpose: Qt Designer loads widget modules in its own Python, so nothing here
imports Qt or a database driver; the widget hands the URL to ``QDesktopServices`` itself.

Decisions:

* Addresses in :class:`Draft` are bare addr-specs (``jane@example.com``). An address that
  is not one, or holds anything that could break out of the URL or a header (blanks,
  control characters, ``, ; < > ( ) [ ] " \\ :``), makes :func:`mailto_url` raise
  :class:`UnsafeAddressError` (a ``ValueError``): it is the safety boundary, and silently
  sending to fewer people than shown would be worse. The draft builders, whose addresses
  come from received mail or contact records, drop such addresses instead, so one odd Cc
  cannot make Reply All impossible; the user sees who is left in the mail program.
* Encoding follows RFC 6068: addresses are percent-encoded except unreserved characters
  and ``@`` (``+`` too is encoded, because some handlers decode it to a space); header
  values are encoded with nothing left as is, so ``?``, ``&``, ``#``, ``%``, ``=`` and CR/LF
  can never start another field. Several addresses are joined with ``,``.
* Header fields come in the order subject, cc, bcc, body; empty ones are left out.
* The subject is one line: line breaks and other control characters become one space, so
  even a mail program that puts the decoded value into a header unchecked gets no second
  header. The body keeps its lines, written as CRLF (RFC 6068 section 5); control
  characters other than tab are removed (``%00`` ends the string in some C handlers).
  Text that cannot be encoded (lone surrogates) becomes ``?``.
* Length: the body is shortened, never the headers, when the URL would exceed
  ``max_length`` (2,000 by default: Windows ShellExecute stops near 2,048 characters and
  Outlook and some browsers cut long mailto: URLs). Whole lines are kept from the top; the
  next line is kept up to the last word that fits, so a long unwrapped paragraph is not
  lost entirely; then a blank line and :data:`SHORTENED_NOTICE`. When the headers and that
  notice alone do not fit, :class:`MailtoTooLongError` is raised.
* Replies: To is Reply-To when present, else From. When that is only the user's own
  addresses (replying to one's own sent mail) the original To is used instead, as mail
  programs do. Reply All adds the other To addresses to To and keeps Cc as Cc; the user's
  own addresses and repeats (ignoring case) are removed.
* Bodies start with an empty line, so the user has a place to type above the quotation.
  The attribution is ``On 2024-03-05 14:03 +0100, Jane Doe wrote:`` (locale-free date,
  the message's own offset; without a date just ``Jane Doe wrote:``). Quoted lines get
  ``> ``; lines already quoted get ``>`` only (``>> text``) and empty lines a bare ``>``,
  the usual nesting convention (RFC 3676 section 4.5). Trailing empty lines are dropped.
* Forward: no addresses, never attachments, a ``---------- Forwarded message ----------``
  block with From, Date, Subject, To and (when present) Cc, then the original text.
* A reply carries the thread: ``In-Reply-To`` is the original's Message-ID and
  ``References`` the original's References (else its In-Reply-To) followed by its
  Message-ID (RFC 5322 section 3.6.4). A mailto: URL leaves them out (mail programs
  differ in which header fields of a URL they accept); the complete draft has them.
* A draft too long for a mailto: URL is handed over whole instead (see docs/compose.md for
  which mail program takes which form): :func:`draft_eml` writes it as an RFC 5322 message
  marked ``X-Unsent: 1``, one text/plain part in UTF-8 and nothing else (so a forward
  still carries no attachment), without From, Date or Message-ID, which the mail program
  fills in when the user sends it. :func:`draft_text` is the same draft as plain text,
  for the clipboard when nothing can take it.
"""

from __future__ import annotations

import email.parser
import email.policy
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from typing import Any, Final
from urllib.parse import quote

from xtmail.sync.errors import XtmailError
from xtmail.sync.mail.refs import Reference, compose_subject
from xtmail.widgets.formatting import format_date

__all__ = [
    "SHORTENED_NOTICE",
    "Draft",
    "MailtoTooLongError",
    "MessageInfo",
    "UnsafeAddressError",
    "draft_eml",
    "draft_text",
    "forward_draft",
    "is_safe_address",
    "mailto_url",
    "new_draft",
    "reply_all_draft",
    "reply_draft",
    "shortened_mailto_url",
    "thread_of",
]

SHORTENED_NOTICE: Final = (
    "[Quoted text shortened to fit the mail program's limit; the full message is in xTuple.]"
)
FORWARD_SEPARATOR: Final = "---------- Forwarded message ----------"

#: (display name, address); the name may be empty.
Mailbox = tuple[str, str]


class UnsafeAddressError(XtmailError, ValueError):
    """An address cannot be put into a mailto: URL safely."""

    hint = "Correct the address in the contact, or type it in the mail program."


class MailtoTooLongError(XtmailError):
    """The draft does not fit a mailto: URL of the length asked for."""

    hint = (
        "Start a new mail in your mail program and copy the recipients, subject and text into it."
    )


@dataclass(frozen=True, slots=True)
class Draft:
    """A message for the user's mail program to open; addresses are bare addr-specs."""

    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    subject: str = ""
    body: str = ""
    #: The Message-ID this draft answers (``<id@host>``), "" for a new mail or a forward.
    in_reply_to: str = ""
    #: The thread's Message-IDs, oldest first, the answered one last.
    references: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """What the draft builders need of a stored message."""

    subject: str
    date: datetime | None
    from_: tuple[Mailbox, ...]
    to: tuple[Mailbox, ...] = ()
    cc: tuple[Mailbox, ...] = ()
    reply_to: tuple[Mailbox, ...] = ()
    body_text: str = ""
    #: The message's own Message-ID and References (see :func:`thread_of`).
    message_id: str = ""
    references: tuple[str, ...] = ()


# atext of RFC 5322 plus '.', the characters of an unquoted local part.
_LOCAL_ASCII = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-."
)
_DOMAIN_ASCII = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


def _intl_ok(ch: str) -> bool:
    # Internationalised addresses (RFC 6531) and IDN domains are legal; RFC 6068 wants them
    # as percent-encoded UTF-8. isprintable() excludes format/separator characters (bidi
    # overrides, U+2028), which could disguise an address.
    return ord(ch) > 0x7F and ch.isprintable() and not ch.isspace()


def is_safe_address(address: str) -> bool:
    """Whether ``address`` is a bare addr-spec that :func:`mailto_url` accepts."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or "@" in local:
        return False
    if not all(ch in _LOCAL_ASCII or _intl_ok(ch) for ch in local):
        return False
    labels = domain.split(".")
    return all(
        label and all(ch in _DOMAIN_ASCII or _intl_ok(ch) for ch in label) for label in labels
    )


def _checked(address: str) -> str:
    if not is_safe_address(address):
        raise UnsafeAddressError(f"{address!r} cannot be used as a mail address here.")
    return address


def _quote_addresses(addresses: Sequence[str]) -> str:
    return ",".join(quote(_checked(a), safe="@") for a in addresses)


_SUBJECT_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_BODY_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_LINE_END = re.compile(r"\r\n|\r|\n")


def _encodable(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")


def _clean_subject(subject: str) -> str:
    return _SUBJECT_BREAKS.sub(" ", _encodable(subject))


def _body_lines(body: str) -> list[str]:
    if not body:
        return []
    # Line ends first: the control-character pass would otherwise eat a lone CR.
    return [_BODY_CONTROLS.sub("", line) for line in _LINE_END.split(_encodable(body))]


def _q(text: str) -> str:
    return quote(text, safe="")


_CRLF_Q: Final = _q("\r\n")


def mailto_url(draft: Draft, *, max_length: int = 2000, shorten: bool = True) -> str:
    """The RFC 6068 ``mailto:`` URL for ``draft``, at most ``max_length`` characters.

    Raises :class:`UnsafeAddressError` for an address that is not a plain addr-spec and
    :class:`MailtoTooLongError` when the draft does not fit: with ``shorten`` (the default)
    only when even a body cut down to the notice does not fit, without it whenever the whole
    draft does not (see the module docstring for both rules).
    """
    return _mailto(draft, max_length, shorten)[0]


def shortened_mailto_url(draft: Draft, *, max_length: int = 2000) -> tuple[str, int, int]:
    """:func:`mailto_url` with the quote shortened to fit, and how much of the body it kept:
    ``(url, kept_lines, total_lines)`` (the last kept line may be cut at a word)."""
    url, kept = _mailto(draft, max_length, True)
    total = len(_body_lines(draft.body))
    return url, total if kept is None else kept, total


def _mailto(draft: Draft, max_length: int, shorten: bool) -> tuple[str, int | None]:
    """The URL, and the number of body lines kept when the body had to be shortened."""
    if max_length <= 0:
        raise ValueError("max_length must be positive")
    fields: list[str] = []
    subject = _clean_subject(draft.subject)
    if subject:
        fields.append("subject=" + _q(subject))
    if draft.cc:
        fields.append("cc=" + _quote_addresses(draft.cc))
    if draft.bcc:
        fields.append("bcc=" + _quote_addresses(draft.bcc))
    head = "mailto:" + _quote_addresses(draft.to)
    if fields:
        head += "?" + "&".join(fields)
    body_prefix = ("&" if fields else "?") + "body="

    lines = _body_lines(draft.body)
    if lines:
        url = head + body_prefix + _q("\r\n".join(lines))
        if len(url) <= max_length:
            return url, None
        budget = max_length - len(head) - len(body_prefix)
        shortened = _shorten(lines, budget) if shorten else None
        if shortened is not None:
            encoded, kept = shortened
            return head + body_prefix + encoded, kept
        if not shorten:
            raise MailtoTooLongError(
                f"The mail needs {len(url)} characters, more than the {max_length} "
                "a mail link may have here."
            )
    elif len(head) <= max_length:
        return head, None
    raise MailtoTooLongError(
        f"The recipients and subject need more than the {max_length} characters "
        "a mail link may have here."
    )


def _shorten(lines: list[str], budget: int) -> tuple[str, int] | None:
    """The encoded body: leading lines of ``lines`` and the notice within ``budget``, and
    how many lines of ``lines`` it holds (wholly or in part).

    ``None`` when the notice alone does not fit.
    """
    notice = _q(SHORTENED_NOTICE)
    if len(notice) > budget:
        return None
    # Kept lines are followed by CRLF each, then an empty line (CRLF) before the notice.
    room = budget - len(notice) - len(_CRLF_Q)
    kept: list[str] = []
    for line in lines:
        cost = len(_q(line)) + len(_CRLF_Q)
        if cost > room:
            partial = _leading_words(line, room - len(_CRLF_Q))
            if partial:
                kept.append(partial)
            break
        kept.append(_q(line))
        room -= cost
    if not kept:
        return notice, 0
    return _CRLF_Q.join([*kept, "", notice]), len(kept)


def _leading_words(line: str, room: int) -> str:
    """The encoded longest start of ``line`` that ends at a word boundary within ``room``."""
    if room <= 0:
        return ""
    used = 0
    cut = 0
    for index, ch in enumerate(line):
        if ch.isspace():
            cut = index
        used += len(_q(ch))
        if used > room:
            break
    else:
        cut = len(line)
    start = line[:cut].rstrip()
    # A line cut down to its quote markers carries nothing worth keeping.
    if not start.strip("> \t"):
        return ""
    return _q(start)


def _usable(addresses: Iterable[str], *, exclude: Iterable[str] = ()) -> list[str]:
    """Safe addresses from ``addresses``, first spelling of each, none of ``exclude``."""
    seen = {a.strip().casefold() for a in exclude}
    result: list[str] = []
    for raw in addresses:
        address = raw.strip()
        key = address.casefold()
        if key in seen or not is_safe_address(address):
            continue
        seen.add(key)
        result.append(address)
    return result


def _addresses(mailboxes: Iterable[Mailbox]) -> list[str]:
    return [address for _name, address in mailboxes]


def _display(mailbox: Mailbox) -> str:
    name, address = mailbox
    return name.strip() or address.strip()


def _format_mailbox(mailbox: Mailbox) -> str:
    name, address = mailbox
    return f"{name.strip()} <{address.strip()}>" if name.strip() else address.strip()


def _text_lines(text: str) -> list[str]:
    lines = _LINE_END.split(text)
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _quote_line(line: str) -> str:
    if not line:
        return ">"
    return ">" + line if line.startswith(">") else "> " + line


def new_draft(to: Sequence[str], ref: Reference | None, subject: str = "") -> Draft:
    """A new mail to ``to`` whose subject carries ``ref``; unusable addresses are dropped."""
    return Draft(to=tuple(_usable(to)), subject=compose_subject("new", subject, ref))


def _reply_targets(msg: MessageInfo, own: set[str]) -> list[str]:
    targets = _usable(_addresses(msg.reply_to or msg.from_), exclude=own)
    if not targets:
        # Replying to one's own sent mail goes to its recipients, not back to oneself.
        targets = _usable(_addresses(msg.to), exclude=own)
    return targets


def _reply_body(msg: MessageInfo) -> str:
    who = _display(msg.from_[0]) if msg.from_ else "The sender"
    # The sender's own clock and offset, as mail programs quote it.
    when = format_date(msg.date, local=False, offset=True)
    attribution = f"On {when}, {who} wrote:" if when else f"{who} wrote:"
    quoted = [_quote_line(line) for line in _text_lines(msg.body_text)]
    return "\n".join(["", attribution, *quoted])


def _thread(msg: MessageInfo) -> dict[str, Any]:
    """In-Reply-To and References of a reply to ``msg`` (none when it has no Message-ID)."""
    if not msg.message_id:
        return {}
    earlier = [r for r in msg.references if r != msg.message_id]
    return {"in_reply_to": msg.message_id, "references": (*earlier, msg.message_id)}


def reply_draft(
    msg: MessageInfo, *, ref: Reference | None = None, own_addresses: Iterable[str] = ()
) -> Draft:
    """A reply to the sender (Reply-To when present), ``RE: `` once, body quoted."""
    own = {a.strip().casefold() for a in own_addresses}
    return Draft(
        to=tuple(_reply_targets(msg, own)),
        subject=compose_subject("reply", msg.subject, ref),
        body=_reply_body(msg),
        **_thread(msg),
    )


def reply_all_draft(
    msg: MessageInfo, *, ref: Reference | None = None, own_addresses: Iterable[str] = ()
) -> Draft:
    """A reply to the sender and every other To/Cc address except the user's own."""
    own = {a.strip().casefold() for a in own_addresses}
    to = _usable([*_reply_targets(msg, own), *_addresses(msg.to)], exclude=own)
    cc = _usable(_addresses(msg.cc), exclude=[*own, *to])
    return Draft(
        to=tuple(to),
        cc=tuple(cc),
        subject=compose_subject("reply", msg.subject, ref),
        body=_reply_body(msg),
        **_thread(msg),
    )


def forward_draft(msg: MessageInfo, *, ref: Reference | None = None) -> Draft:
    """A forward without addresses or attachments: ``FW: `` once, the original below."""
    block = ["", FORWARD_SEPARATOR]
    if msg.from_:
        block.append("From: " + ", ".join(_format_mailbox(m) for m in msg.from_))
    if msg.date is not None:
        block.append("Date: " + format_date(msg.date, local=False, offset=True))
    block.append("Subject: " + _clean_subject(msg.subject))
    if msg.to:
        block.append("To: " + ", ".join(_format_mailbox(m) for m in msg.to))
    if msg.cc:
        block.append("Cc: " + ", ".join(_format_mailbox(m) for m in msg.cc))
    block.append("")
    block.extend(_text_lines(msg.body_text))
    return Draft(subject=compose_subject("forward", msg.subject, ref), body="\n".join(block))


# A msg-id as RFC 5322 writes it, without the obsolete forms' comments and blanks; anything
# else in the header (comments, junk) is left behind, so nothing but ids reaches a draft.
_MSG_ID = re.compile(r"<[^<>\s\x00-\x1f\x7f]+>")
#: A longer References list is cut from the front (keeping the first, as RFC 5322 allows
#: any subset and mail programs keep the thread's root), so a runaway thread cannot make
#: a draft header of unbounded length.
MAX_REFERENCES: Final = 20


def _ids(value: str | None) -> list[str]:
    return _MSG_ID.findall(str(value)) if value else []


def thread_of(raw: bytes) -> tuple[str, tuple[str, ...]]:
    """A stored message's Message-ID and the References a reply to it continues from (its
    References, else its In-Reply-To), read from its raw header; ``("", ())`` without a
    usable Message-ID."""
    header = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    own = _ids(header.get("Message-ID"))
    if not own:
        return "", ()
    earlier = _ids(header.get("References")) or _ids(header.get("In-Reply-To"))[:1]
    if len(earlier) > MAX_REFERENCES - 1:
        earlier = [earlier[0], *earlier[-(MAX_REFERENCES - 2) :]]
    return own[0], tuple(earlier)


def _checked_all(addresses: Sequence[str]) -> str:
    return ", ".join(_checked(a) for a in addresses)


def draft_eml(draft: Draft) -> bytes:
    """``draft`` as a complete message a mail program opens for editing (``X-Unsent: 1``).

    One text/plain part in UTF-8, lines ending in CRLF; To, Cc, Bcc, Subject, In-Reply-To
    and References as in ``draft`` (addresses checked as for :func:`mailto_url`, the
    subject made one line). No From, Date or Message-ID: the mail program sets them when
    the user sends it.
    """
    # Internationalised addresses cannot be written as encoded words (RFC 2047 section 5
    # forbids them in an addr-spec): such a draft is written as UTF-8 headers (RFC 6532);
    # any other keeps to ASCII headers, which every mail program reads.
    addresses = (*draft.to, *draft.cc, *draft.bcc)
    utf8 = not all(a.isascii() for a in addresses)
    message = EmailMessage(policy=email.policy.SMTPUTF8 if utf8 else email.policy.SMTP)
    if draft.to:
        message["To"] = _checked_all(draft.to)
    if draft.cc:
        message["Cc"] = _checked_all(draft.cc)
    if draft.bcc:
        message["Bcc"] = _checked_all(draft.bcc)
    message["Subject"] = _clean_subject(draft.subject)
    in_reply_to = _ids(draft.in_reply_to)[:1]
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to[0]
    references = [r for ref in draft.references for r in _ids(ref)]
    if references:
        message["References"] = " ".join(references)
    message["X-Unsent"] = "1"
    body = "\n".join(_body_lines(draft.body))
    message.set_content(body + "\n", charset="utf-8")
    return message.as_bytes()


def draft_text(draft: Draft) -> str:
    """``draft`` as plain text for the clipboard: the address lines, the subject, a blank
    line and the body."""
    lines = []
    for name, addresses in (("To", draft.to), ("Cc", draft.cc), ("Bcc", draft.bcc)):
        if addresses:
            lines.append(f"{name}: {', '.join(addresses)}")
    lines.append(f"Subject: {_clean_subject(draft.subject)}")
    return "\n".join([*lines, "", *_body_lines(draft.body)])
