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
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final
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
    "forward_draft",
    "is_safe_address",
    "mailto_url",
    "new_draft",
    "reply_all_draft",
    "reply_draft",
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
    """The recipients and subject alone exceed what the mail program accepts."""

    hint = "Remove some recipients, or address the message in the mail program."


@dataclass(frozen=True, slots=True)
class Draft:
    """A message for the user's mail program to open; addresses are bare addr-specs."""

    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    subject: str = ""
    body: str = ""


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


def mailto_url(draft: Draft, *, max_length: int = 2000) -> str:
    """The RFC 6068 ``mailto:`` URL for ``draft``, at most ``max_length`` characters.

    Raises :class:`UnsafeAddressError` for an address that is not a plain addr-spec and
    :class:`MailtoTooLongError` when even a body cut down to the notice does not fit (see
    the module docstring for both rules).
    """
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
            return url
        budget = max_length - len(head) - len(body_prefix)
        shortened = _shorten(lines, budget)
        if shortened is not None:
            return head + body_prefix + shortened
    elif len(head) <= max_length:
        return head
    raise MailtoTooLongError(
        f"The recipients and subject need more than the {max_length} characters "
        "a mail program accepts."
    )


def _shorten(lines: list[str], budget: int) -> str | None:
    """The encoded body: leading lines of ``lines`` and the notice within ``budget``.

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
        return notice
    return _CRLF_Q.join([*kept, "", notice])


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


def reply_draft(
    msg: MessageInfo, *, ref: Reference | None = None, own_addresses: Iterable[str] = ()
) -> Draft:
    """A reply to the sender (Reply-To when present), ``RE: `` once, body quoted."""
    own = {a.strip().casefold() for a in own_addresses}
    return Draft(
        to=tuple(_reply_targets(msg, own)),
        subject=compose_subject("reply", msg.subject, ref),
        body=_reply_body(msg),
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
