"""Turn raw RFC 5322 bytes into the fields xtmail stores and shows.

`parse_message` never raises on bad input: whatever is wrong with a message is noted in
`ParsedMessage.defects` and the best reading of it is returned, because one malformed mail
must not stop a folder from syncing.

The raw bytes are only read, never re-serialised: Python's email package re-serialises
many real messages differently from how they arrived.

Speed: Python's parser with policy `default` is far too slow for bulk sync, and compat32
still reads every body line in Python (docs/benchmarks.md has the figures). Here the MIME
structure is walked on bytes (boundaries found with bytes.find), header fields are
split by compat32's rules, compat32 `Message` objects parse only the Content-Type and
Content-Disposition parameters (RFC 2231 included), and header values are decoded here.
"""

from __future__ import annotations

import binascii
import codecs
import copy
import functools
import inspect
import logging
import re
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.message import Message
from email.utils import collapse_rfc2231_value, getaddresses, parsedate_to_datetime
from html import unescape as unescape_html
from typing import Any, TypeAlias, TypeVar

from xtmail.sync.mail.textops import newlines_to_lf

__all__ = [
    "Address", "Attachment", "ParsedMessage", "attachment_bytes", "html_to_text",
    "looks_like_mail", "parse_message",
]

log = logging.getLogger(__name__)

_Part: TypeAlias = "Message[str, str]"


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox from an address header; `addr` is kept as written (only stripped)."""

    name: str
    addr: str

    @property
    def key(self) -> str:
        """The form used to match addresses against contacts."""
        return self.addr.lower()

    @property
    def is_valid(self) -> bool:
        """True when `addr` has a local part and a domain (malformed ones are kept too)."""
        return _PLAUSIBLE_ADDR.fullmatch(self.addr) is not None


@dataclass(frozen=True, slots=True)
class Attachment:
    """A part that is not body text; `size` is the decoded payload's length in bytes."""

    filename: str | None
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """What xtmail needs from one message."""

    date: datetime
    date_from_header: bool
    subject: str
    from_: tuple[Address, ...] = ()
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    sender: tuple[Address, ...] = ()
    message_id: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    list_id: str | None = None
    auto_submitted: str | None = None
    precedence: str | None = None
    body_text: str = ""
    attachments: tuple[Attachment, ...] = ()
    defects: tuple[str, ...] = ()

    @property
    def is_bulk(self) -> bool:
        """Mailing-list, bulk or machine-generated mail (no reason to create a contact)."""
        if self.list_id is not None:
            return True
        if self.precedence is not None and _first_token(self.precedence) in _BULK_PRECEDENCE:
            return True
        return self.auto_submitted is not None and _first_token(self.auto_submitted) not in {
            "",
            "no",
        }


_BULK_PRECEDENCE = frozenset({"bulk", "list", "junk"})


def _first_token(value: str) -> str:
    parts = value.replace(";", " ").replace("(", " ").split()
    return parts[0].lower() if parts else ""


class _Context:
    """Per-message state: the defects found so far and a charset hint for 8-bit headers."""

    def __init__(self) -> None:
        self.defects: list[str] = []
        self.hint: str | None = None
        self.label = "without Message-ID"  # names the message in the log
        self.detections = 0  # charset detections so far (each reads up to a sample)

    def note(self, text: str) -> None:
        # Notes quote what they found (a content type, a charset label): storable text only.
        self.defects.append(_clean(text))


# --------------------------------------------------------------------------- text decoding

_FALLBACK_ERRORS = "xtmail-cp1252-fallback"


def _cp1252_fallback(exc: UnicodeError) -> tuple[str, int]:
    # Mail that is "mostly UTF-8" often has stray Windows-1252 bytes pasted in, and Latin-1
    # text is often sent unlabelled; reading only the bad bytes as cp1252 keeps both.
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return exc.object[exc.start : exc.end].decode("cp1252", errors="replace"), exc.end


codecs.register_error(_FALLBACK_ERRORS, _cp1252_fallback)

# Charsets that mail labels one way and Python knows under a wider (superset) codec, keyed
# by Python's codec name: decoding with the superset loses nothing and fixes the usual
# mislabelling.
_CHARSET_OVERRIDES = {
    "ascii": "utf-8",  # 8-bit bytes in "us-ascii" mail are UTF-8 or cp1252 in practice
    "iso8859-1": "cp1252",  # WHATWG: an iso-8859-1 label means windows-1252
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "shift_jis": "cp932",
    "euc_kr": "cp949",
    "iso2022_jp": "iso2022_jp_2",
    "tis-620": "cp874",
    "iso8859-11": "cp874",
    "windows-874": "cp874",  # a label Python does not know
}


@functools.lru_cache(maxsize=256)
def _codec_for(charset: str | None) -> str | None:
    """The Python codec for a declared charset; None when Python does not know it."""
    if charset is None:
        return "utf-8"
    label = charset.strip().strip("\"'").strip().lower()
    if not label:
        return "utf-8"
    try:
        name = codecs.lookup(_CHARSET_OVERRIDES.get(label, label)).name
        name = _CHARSET_OVERRIDES.get(name, name)
        # lookup() also finds base64, rot13, zlib...: codecs that are not text encodings.
        b"".decode(name)
    except (LookupError, UnicodeError, ValueError):  # ValueError: a NUL in the label
        return None
    return name


@functools.lru_cache(maxsize=64)
def _single_byte(codec: str) -> bool:
    """True for a codec that maps every byte to one character (Latin-1, KOI8-R...): bytes in
    it always decode, so a wrong label of this kind never shows as an error."""
    if codec == "utf-8":
        return False
    try:
        return len(bytes(range(128, 256)).decode(codec, "replace")) == 128
    except (LookupError, UnicodeError):
        return False


@functools.lru_cache(maxsize=64)
def _seven_bit_label(charset: str | None) -> bool:
    if charset is None:
        return False
    label = charset.strip().strip("\"'").strip().lower().replace("_", "-")
    return label in _SEVEN_BIT_LABELS or label.startswith(("iso-2022-", "utf-7"))


_SEVEN_BIT_LABELS = frozenset(
    {"us-ascii", "ascii", "us", "ansi-x3.4-1968", "iso646-us", "hz-gb-2312"}
)


def _detected(data: bytes) -> tuple[str, str] | None:
    """The text and charset a detector finds for `data`, when it finds one."""
    # Imported on first use: only text whose label is wrong gets here.
    from charset_normalizer import from_bytes

    best = from_bytes(data[:_DETECT_LIMIT]).best()
    if best is None or best.encoding is None:
        return None
    try:
        return data.decode(best.encoding, errors="replace"), best.encoding
    except LookupError:
        return None


# Detection reads a sample; the whole text is then decoded in the charset found.
_DETECT_LIMIT = 64 * 1024
_MAX_DETECTIONS = 8


def _decode_bytes(data: bytes, charset: str | None, what: str, ctx: _Context) -> str:
    """Decode text whose label may be missing, unknown or wrong; never fails."""
    codec = _codec_for(charset)
    if codec is None:
        ctx.note(f"{what}: unknown charset {charset!r}; read as UTF-8/Windows-1252")
        return data.decode("utf-8", _FALLBACK_ERRORS)
    try:
        text = data.decode(codec)
    except UnicodeError:
        pass
    else:
        if codec != "utf-8" and not data.isascii() and _single_byte(codec):
            # A single-byte label cannot fail, so UTF-8 sent under a Latin-1 label would be
            # read as mojibake: valid UTF-8 with 8-bit bytes is practically never Latin-1.
            try:
                utf8 = data.decode("utf-8")
            except UnicodeError:
                return text
            ctx.note(f"{what}: labelled {charset} but is UTF-8; read as UTF-8")
            return utf8
        return text
    if codec != "utf-8":
        try:
            text = data.decode("utf-8")
        except UnicodeError:
            pass
        else:
            ctx.note(f"{what}: not valid {charset}; read as UTF-8")
            return text
    if (codec != "utf-8" or _seven_bit_label(charset)) and ctx.detections < _MAX_DETECTIONS:
        # The label cannot be right (8-bit bytes under a 7-bit charset, or bytes its codec
        # refuses): ask a detector before replacing anything. Bounded per message, so that
        # a message of many mislabelled parts still parses quickly.
        ctx.detections += 1
        found = _detected(data)
        if found is not None:
            ctx.note(f"{what}: not valid {charset}; read as {found[1]} (detected)")
            return found[0]
        try:
            # A known charset with a few bad bytes: the rest is still best read in it.
            text = data.decode(codec, errors="replace")
        except UnicodeError:
            pass
        else:
            ctx.note(f"{what}: invalid bytes for {charset} replaced")
            return text
    ctx.note(f"{what}: not valid {charset or 'UTF-8'}; bad bytes read as Windows-1252")
    return data.decode("utf-8", _FALLBACK_ERRORS)


def _unraw(value: str, what: str, ctx: _Context) -> str:
    """A header value as text: undo the parser's surrogateescape of raw 8-bit bytes."""
    if value.isascii():
        return value
    # Header bytes are read as ASCII with surrogateescape (as compat32 does), so 8-bit bytes
    # are lone surrogates here; encoding them back gives exactly the bytes on the wire.
    data = value.encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")  # RFC 6532 allows UTF-8 headers
    except UnicodeDecodeError:
        pass
    hint = _codec_for(ctx.hint)
    if hint is not None and hint != "utf-8":
        # Unlabelled 8-bit headers are usually in the charset of the message's text.
        try:
            return data.decode(hint)
        except UnicodeError:
            pass
    ctx.note(f"{what}: raw 8-bit header that is not UTF-8; read as Windows-1252")
    return data.decode("utf-8", _FALLBACK_ERRORS)


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")
_NEWLINES = re.compile(r"\r\n|\r|\n")
_UU_CTE = ("x-uuencode", "uuencode", "uue", "x-uue")


def _b64decode(text: bytes) -> bytes:
    """Lenient base64: ignore stray characters, tolerate missing or extra padding."""
    data = re.sub(rb"[^A-Za-z0-9+/]", b"", text)
    if len(data) % 4 == 1:
        # A dangling sixth of a byte carries no data; other readers drop it too.
        data = data[:-1]
    return binascii.a2b_base64(data + b"=" * (-len(data) % 4))


def _decode_words(value: str, what: str, ctx: _Context) -> str:
    """Decode RFC 2047 encoded words, also where real mailers put them against the rules.

    Not `email.header.decode_header`: it mangles unencoded non-Latin-1 text around encoded
    words and raises on bad base64.
    """
    if "=?" not in value:
        return value
    out: list[str] = []
    run = bytearray()
    run_charset: str | None = None
    pos = 0
    previous_encoded = False

    def flush() -> None:
        nonlocal run_charset
        if run_charset is not None:
            out.append(_decode_bytes(bytes(run), run_charset, what, ctx))
            run.clear()
            run_charset = None

    for match in _ENCODED_WORD.finditer(value):
        between = value[pos : match.start()]
        # Whitespace between two encoded words is folding, not text (RFC 2047 section 6.2).
        if between and not (previous_encoded and between.isspace()):
            flush()
            out.append(between)
        pos = match.end()
        charset = match.group(1).split("*", 1)[0].lower()  # drop an RFC 2231 language
        encoded = match.group(3).encode("utf-8", "surrogateescape")
        try:
            if match.group(2) in "bB":
                decoded = _b64decode(encoded)
            else:
                decoded = binascii.a2b_qp(encoded, header=True)
        except (binascii.Error, ValueError):
            ctx.note(f"{what}: broken encoded word kept as written")
            flush()
            out.append(match.group(0))
            previous_encoded = False
            continue
        # Adjacent words in one charset are joined as bytes before decoding: mailers split
        # multi-byte characters (and ISO-2022 escape sequences) across words.
        if charset != run_charset:
            flush()
        run_charset = charset
        run += decoded
        previous_encoded = True
    flush()
    out.append(value[pos:])
    return "".join(out)


def _clean(text: str) -> str:
    # PostgreSQL text cannot hold NUL, and psycopg cannot encode lone surrogates.
    if "\x00" in text:
        text = text.replace("\x00", "")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _fold(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------- headers


class _Headers:
    """Header values as written (compat32 form), looked up by lower-case name."""

    def __init__(self, values: dict[str, list[str]]) -> None:
        self._values = values

    def all(self, name: str) -> list[str]:
        return self._values.get(name, [])

    def first(self, name: str) -> str | None:
        values = self._values.get(name)
        return values[0] if values else None


def _header_text(raw: str, what: str, ctx: _Context) -> str:
    return _unraw(_NEWLINES.sub("", raw), what, ctx)


def _subject(headers: _Headers, ctx: _Context) -> str:
    raw = headers.first("subject")
    if raw is None:
        return ""
    return _clean(_fold(_decode_words(_header_text(raw, "Subject", ctx), "Subject", ctx)))


def _plain_header(headers: _Headers, name: str, ctx: _Context) -> str | None:
    raw = headers.first(name)
    if raw is None:
        return None
    return _clean(_fold(_header_text(raw, name, ctx))) or None


# Since CPython 3.11.10 / 3.12.6, getaddresses() returns nothing for a whole field when one
# entry is malformed (gh-102988); best effort needs the old behaviour where it can be chosen.
_GETADDRESSES_KW: dict[str, bool] = (
    {"strict": False} if "strict" in inspect.signature(getaddresses).parameters else {}
)
_PLAUSIBLE_ADDR = re.compile(r"[^@\s]+@[^@\s]+")
# Only from the start of a run of address characters: trying every position of a long run
# without "@" took quadratic time.
_ADDR_SPEC = re.compile(r"(?<![^\s<>,;:\"()\[\]@])[^\s<>,;:\"()\[\]@]+@[^\s<>,;:\"()\[\]@]+")
# `Mikel@Lindsaar <m@x.example>`: an unquoted "@" in a display name splits the address.
_UNQUOTED_AT_NAME = re.compile(r"(^|,)(\s*)([^,\"<>()]*@[^,\"<>()]*?)(\s*<[^<>]*>)")


# The common shapes of an address list entry: `Name <a@b>`, `"Name, Inc." <a@b>`, `a@b`.
# Lists made only of these are split here; anything else (comments, groups, escapes, route
# addresses...) goes to getaddresses(), which is five times slower.
_SIMPLE_ENTRY = re.compile(
    r"\s*(?:"
    r"(?:\"(?P<quoted>[^\"\\]*)\"|(?P<phrase>[^\"<>,;:@()\\]*?))\s*<(?P<angle>[^<>\"\s(),;:\\]*)>"
    r"|(?P<bare>[^\s\"<>,;:()\\]+)"
    r")?\s*(?:,|\Z)"
)


def _simple_addresses(value: str) -> list[tuple[str, str]] | None:
    pairs: list[tuple[str, str]] = []
    pos = 0
    size = len(value)
    while pos < size:
        entry = _SIMPLE_ENTRY.match(value, pos)
        if entry is None or entry.end() == pos:
            return None
        pos = entry.end()
        if entry.group("bare") is not None:
            pairs.append(("", entry.group("bare")))
        elif entry.group("angle") is not None:
            name = entry.group("quoted")
            pairs.append(
                (name if name is not None else entry.group("phrase"), entry.group("angle"))
            )
    return pairs


_MAX_COMMENTS = 32


def _without_comments(value: str) -> str:
    """`value` without its (possibly nested) comments, read without recursion."""
    out: list[str] = []
    depth = 0
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(char)
            continue
        if char == "\\":
            escaped = True
            if depth == 0:
                out.append(char)
        elif quoted:
            quoted = char != '"'
            out.append(char)
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif depth == 0:
            quoted = char == '"'
            out.append(char)
    return "".join(out)


def _split_addresses(value: str, what: str, ctx: _Context) -> list[tuple[str, str]]:
    simple = _simple_addresses(value)
    if simple is not None:
        return simple
    if "<" in value and "@" in value:
        value = _UNQUOTED_AT_NAME.sub(r'\1\2"\3"\4', value)
    if value.count("(") > _MAX_COMMENTS:
        # getaddresses() reads nested comments by recursion: a few thousand "(" exhaust
        # the stack. Comments carry nothing xtmail keeps.
        value = _without_comments(value)
        ctx.note(f"{what}: {_MAX_COMMENTS}+ comments removed before reading the addresses")
    if value.count(":") > _MAX_COMMENTS:
        # Likewise each ":" opens a group that getaddresses() reads by recursion; no real
        # list has this many groups, and their names are not kept.
        value = value.replace(":", " ")
        ctx.note(f"{what}: {_MAX_COMMENTS}+ group colons removed before reading the addresses")
    pairs = getaddresses([value], **_GETADDRESSES_KW)
    good = [(n, a) for n, a in pairs if "@" not in a or _PLAUSIBLE_ADDR.fullmatch(a.strip())]
    if len(good) == len(pairs):
        return pairs
    # getaddresses lost or garbled something ("Big Bug bb@bug.example", two bare addresses
    # separated by a space): recover the addresses written in the value.
    known = {addr.strip().lower() for _, addr in good}
    repaired: list[tuple[str, str]] = []
    for name, addr in pairs:
        if (name, addr) in good:
            continue
        inner = _ADDR_SPEC.findall(addr)
        if len(inner) == 1 and inner[0].lower() not in known:
            rest = _fold(addr.replace(inner[0], " ").replace("<", " ").replace(">", " "))
            repaired.append((name or rest, inner[0]))
            known.add(inner[0].lower())
    for found in _ADDR_SPEC.findall(value):
        if found.lower() not in known:
            repaired.append(("", found))
            known.add(found.lower())
    if not repaired:
        return pairs
    ctx.note(f"{what}: malformed address list; addresses recovered from the text")
    return good + repaired


def _addresses(headers: _Headers, name: str, ctx: _Context) -> tuple[Address, ...]:
    what = name.capitalize()
    result: list[Address] = []
    for raw in headers.all(name):
        value = _unraw(_NEWLINES.sub(" ", raw), what, ctx)
        for display, addr in _split_addresses(value, what, ctx):
            display = _clean(_fold(_decode_words(display, what, ctx)))
            addr = _clean(addr.strip())
            if display or addr:  # group syntax and stray commas leave empty entries
                result.append(Address(display, addr))
    return tuple(result)


_MSG_ID = re.compile(r"<([^<>]*)>")


def _message_ids(value: str) -> list[str]:
    ids = [found.strip() for found in _MSG_ID.findall(value)]
    if not ids and "<" not in value:
        # Some mailers leave out the brackets; a bare token with "@" is still an id.
        ids = [token for token in value.replace(",", " ").split() if "@" in token]
    return [one for one in ids if one]


def _first_id(headers: _Headers, name: str, ctx: _Context) -> str | None:
    raw = headers.first(name)
    if raw is None:
        return None
    ids = _message_ids(_clean(_header_text(raw, name, ctx)))
    return ids[0] if ids else None


def _references(headers: _Headers, ctx: _Context) -> tuple[str, ...]:
    ids: list[str] = []
    for raw in headers.all("references"):
        ids += _message_ids(_clean(_header_text(raw, "References", ctx)))
    if not ids:
        for raw in headers.all("in-reply-to"):
            ids += _message_ids(_clean(_header_text(raw, "In-Reply-To", ctx)))
    return tuple(dict.fromkeys(ids))


# A Date this far ahead of the clock is a broken or lying sender (the corpus has year 3609);
# it would sit on top of every newest-first list forever.
_FUTURE_TOLERANCE = timedelta(days=2)


_ISO_DATE = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)(?:[T ]+(\d\d?):(\d\d)(?::(\d\d)(?:[.,]\d+)?)?)?"
    r"\s*(Z|UTC|GMT|[+-]\d\d(?::?\d\d)?)?",
    re.I,
)
_FRACTION = re.compile(r"(\d:\d\d)[.,]\d+")
_COLON_ZONE = re.compile(r"([+-]\d\d):(\d\d)\b")
_NAMED_ZONE_OFFSET = re.compile(r"\b(?:GMT|UTC|UT)\s*([+-]\d{4})\b", re.I)
_UNSIGNED_ZONE = re.compile(r"(\d\d:\d\d(?::\d\d)?)\s+([01]\d[0-5]\d)\s*(\(.*\))?$")
_YEAR_BEFORE_TIME = re.compile(r"\b\d{4}\b.*\d\d?:\d\d")
_DATE_NOISE = re.compile(r"[,.](?=\s)|\s+at\s+", re.I)
# "2:05:09 PM": a twelve-hour clock. The strict reading takes "PM" for an unknown zone.
_TWELVE_HOUR = re.compile(r"\b(\d\d?)(:\d\d(?::\d\d)?)\s*([AP])\.?M\.?(?=\s|$)", re.I)


def _twenty_four_hour(match: re.Match[str]) -> str:
    hour = int(match.group(1))
    if not 1 <= hour <= 12:
        return match.group(0)  # "13:00 PM" is no time a person reads one way
    hour = hour % 12 + (12 if match.group(3).upper() == "P" else 0)
    return f"{hour:02d}{match.group(2)}"


def _lenient_date(value: str) -> datetime | None:
    """The dates real clients write that a person reads unambiguously and
    parsedate_to_datetime refuses: fractional seconds, a zone without its sign, a zone
    with a colon or after "GMT", ISO 8601. Numeric day/month orders other than ISO are
    ambiguous and left unread. Only called when the strict reading failed."""
    iso = _ISO_DATE.search(value)
    if iso is not None:
        year, month, day, hour, minute, second, zone = iso.groups()
        offset = timedelta(0)
        if zone and zone[0] in "+-":
            digits = zone[1:].replace(":", "")
            offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
            offset = -offset if zone[0] == "-" else offset
        try:
            return datetime(
                int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                int(second or 0), tzinfo=timezone(offset),
            )
        except ValueError:
            return None
    fixed = _FRACTION.sub(r"\1", value)
    fixed = _TWELVE_HOUR.sub(_twenty_four_hour, fixed)
    fixed = _COLON_ZONE.sub(r"\1\2", fixed)
    fixed = _NAMED_ZONE_OFFSET.sub(r"\1", fixed)
    fixed = _DATE_NOISE.sub(" ", fixed)
    if _YEAR_BEFORE_TIME.search(fixed):
        # After a year and a time, four digits alone are a zone whose sign was lost.
        fixed = _UNSIGNED_ZONE.sub(r"\1 +\2", fixed)
    try:
        parsed = parsedate_to_datetime(fixed)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return parsed


def _date(headers: _Headers, fallback: datetime | None, ctx: _Context) -> tuple[datetime, bool]:
    raw = headers.first("date")
    if raw is None:
        ctx.note("Date: header missing")
    else:
        value = _fold(_header_text(raw, "Date", ctx))
        try:
            if "GMT" in value and ("GMT+" in value or "GMT-" in value):
                # "GMT+01:00": the strict reading takes GMT and drops the offset.
                raise ValueError(value)
            if "M" in value.upper() and _TWELVE_HOUR.search(value):
                raise ValueError(value)
            parsed: datetime | None = parsedate_to_datetime(value)
        except (TypeError, ValueError, OverflowError, IndexError):
            parsed = _lenient_date(value[:200])
            if parsed is None:
                ctx.note(f"Date: cannot read {value[:80]!r}")
            else:
                ctx.note(f"Date: {value[:80]!r} read leniently")
        if parsed is not None and parsed.tzinfo is None and "-0000" not in value:
            # A zone the strict reading could not place ("+01:00", "GMT+0100") is no UTC.
            lenient = _lenient_date(value[:200])
            if lenient is not None and lenient.tzinfo is not None:
                ctx.note(f"Date: {value[:80]!r} read leniently")
                parsed = lenient
        if parsed is not None:
            if parsed.tzinfo is None:
                # "-0000" (RFC 5322 3.3): the time is UTC, the sender's zone unknown.
                parsed = parsed.replace(tzinfo=UTC)
            if parsed <= datetime.now(UTC) + _FUTURE_TOLERANCE:
                return parsed, True
            ctx.note(f"Date: {value[:80]!r} is in the future; not used")
    return _fallback_date(fallback)


# --------------------------------------------------------------------------- MIME structure
#
# The structure is walked here rather than by BytesParser: its feed parser runs every line
# through Python code (boundary search, header lines) and took most of the time per message.
# Bodies stay bytes and boundaries are found with bytes.find(); header blocks are split
# here by the rules of compat32's feed parser, and parameters that use RFC 2231 are read by
# compat32's Message.get_params().

_BLANK_LINE = re.compile(rb"\n\r?\n")
_MAX_DEPTH = 60
_HTML_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:-]+)", re.I)
_KNOWN_CTE = frozenset(
    {"", "7bit", "8bit", "binary", "base64", "quoted-printable", "x-gzip64", "gzip64", *_UU_CTE}
)


# One header field: name, optional obsolete blanks, colon, value with its folded lines.
# A line starting "--" is a boundary line, never a field, even with a colon in it.
_FIELD = re.compile(rb"(?!--)([\x21-\x39\x3b-\x7e]+)[ \t]*:[ \t]*(.*(?:\r?\n[ \t].*)*)")


def _read_headers(head: bytes, ctx: _Context) -> tuple[_Headers, bytes]:
    """The header fields of a header block, and any lines of it that are really body.

    Values are kept as compat32 keeps them: folding line breaks in, the final one out, raw
    8-bit bytes as lone surrogates.
    """
    values: dict[str, list[str]] = {}
    pos = 0
    size = len(head)
    last: list[str] | None = None  # the values of the field read last
    while pos < size:
        field = _FIELD.match(head, pos)
        if field is not None:
            name = field.group(1).decode("ascii").lower()
            value = field.group(2).rstrip(b"\r\n").decode("ascii", "surrogateescape")
            last = values.setdefault(name, [])
            last.append(value)
            pos = field.end()
            pos += 2 if head.startswith(b"\r\n", pos) else 1
            continue
        line_end = head.find(b"\n", pos)
        next_line = size if line_end < 0 else line_end + 1
        if head[pos : pos + 1] in (b" ", b"\t"):
            ctx.note("header block starts with a continuation line; line ignored")
        elif head.startswith(b"From ", pos):
            pass  # an mbox envelope line; Python's parser skips these too
        elif head.startswith(b"--", pos):
            # A boundary line right after the headers (no blank line): the body is there,
            # even when the boundary holds a colon and so looks like a header field.
            ctx.note("boundary line inside the header block; the body starts there")
            return _Headers(values), head[pos:]
        elif head[pos:next_line].strip():
            if last and _FIELD.match(head, next_line) is not None:
                # Outlook wraps long header lines without indenting them: a line without a
                # name between two fields is the rest of the one before.
                ctx.note("header line wrapped without indentation; joined to the field before")
                last[-1] += " " + head[pos:next_line].rstrip(b"\r\n").decode(
                    "ascii", "surrogateescape"
                )
                pos = next_line
                continue
            ctx.note("line without a header name; the body starts there")
            return _Headers(values), head[pos:]
        pos = next_line
    return _Headers(values), b""


# `; name=value` or `; name="quoted value"` after the type or disposition.
_PARAM = re.compile(r';\s*([^\s=;"]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^;]*))?')


def _params(value: str) -> dict[str, str]:
    """The parameters of a Content-Type or Content-Disposition value, first one winning."""
    result: dict[str, str] = {}
    if "*" in value:
        # RFC 2231 (charset, language, continuations): compat32's rules, slower.
        mime: _Part = Message()
        mime.set_raw("content-type", value)
        try:
            pairs: Any = mime.get_params()
        except (TypeError, ValueError, LookupError):
            # The standard library fails on some damaged continuations ("name*0" next to
            # "name*"): the parameters are then read without RFC 2231.
            pairs = None
        if pairs is not None:
            for key, param in pairs[1:]:
                result.setdefault(str(key).strip().lower(), collapse_rfc2231_value(param))
            return result
    for param in _PARAM.finditer(value):
        raw = (param.group(2) or "").strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) > 1:
            raw = raw[1:-1].replace("\\\\", "\\").replace('\\"', '"')
        result.setdefault(param.group(1).lower(), raw)
    return result


def _unfold(value: str) -> str:
    # RFC 5322 unfolding removes the line break and keeps the blank: also inside quotes, so
    # that a boundary folded inside its quotes matches the boundary lines.
    return _NEWLINES.sub("", value) if "\n" in value or "\r" in value else value


def _main_value(value: str | None) -> str:
    return "" if value is None else value.split(";", 1)[0].strip().lower()


class _Entity:
    """A message or body part: its header fields, its body bytes and what they declare."""

    __slots__ = (
        "body", "ctype", "declared", "disposition", "dparams", "fields", "params",
        "transfer_encoding",
    )

    def __init__(self, data: bytes, ctx: _Context, default_type: str = "text/plain") -> None:
        if data.startswith(b"\n") or data.startswith(b"\r\n"):
            self.fields = _Headers({})  # no header fields at all
            self.body = data[data.index(b"\n") + 1 :]
        else:
            blank = _BLANK_LINE.search(data)
            if blank is None:
                self.fields, self.body = _read_headers(data, ctx)
            else:
                self.fields, spill = _read_headers(data[: blank.start() + 1], ctx)
                # Body lines found in the header block come first, the blank line with them.
                self.body = spill + data[blank.start() + 1 :] if spill else data[blank.end() :]
        # Raw 8-bit bytes are decoded first so that 8-bit filenames survive.
        content_type = self.fields.first("content-type")
        if content_type is not None:
            content_type = _unraw(_unfold(content_type), "Content-Type", ctx)
        disposition = self.fields.first("content-disposition")
        if disposition is not None:
            disposition = _unraw(_unfold(disposition), "Content-Disposition", ctx)
        ctype = _main_value(content_type)
        self.declared = content_type is not None  # a Content-Type field, even a broken one
        # As compat32: no type means the default; a malformed one means text/plain.
        self.ctype = default_type if content_type is None else ctype
        if self.ctype.count("/") != 1:
            self.ctype = "text/plain"
        self.params = _params(content_type) if content_type else {}
        self.disposition = _main_value(disposition) or None
        self.dparams = _params(disposition) if disposition else {}
        # Real mail has "base64; ", " Quoted-Printable" and '"7bit"'.
        cte = (self.fields.first("content-transfer-encoding") or "").replace('"', " ")
        words = cte.replace(";", " ").split()
        self.transfer_encoding = words[0].lower() if words else ""

    @property
    def charset(self) -> str | None:
        charset = self.params.get("charset", "").strip().lower()
        return charset if charset and charset.isascii() else None

    @property
    def filename(self) -> str | None:
        name = self.dparams.get("filename", self.params.get("name"))
        return None if name is None else name.strip()


def _line_break_before(data: bytes, pos: int) -> int:
    """Where the line break just before `pos` starts (RFC 2046: it belongs to the
    boundary line that follows)."""
    if pos >= 2 and data[pos - 2 : pos] == b"\r\n":
        return pos - 2
    if pos >= 1 and data[pos - 1 : pos] in (b"\n", b"\r"):
        return pos - 1
    return pos


def _split_multipart(body: bytes, boundary: str, ctype: str, ctx: _Context) -> list[bytes] | None:
    """The parts of a multipart body, or None when no boundary line is found."""
    marker = b"--" + boundary.encode("utf-8", "surrogateescape")
    parts: list[bytes] = []
    start: int | None = None  # where the current part's content begins
    pos = 0
    while True:
        found = body.find(marker, pos)
        if found < 0:
            break
        pos = found + len(marker)
        if found > 0 and body[found - 1] not in b"\r\n":
            continue  # boundaries count only at the start of a line
        line_end = body.find(b"\n", pos)
        if line_end < 0:
            line_end = len(body)
        tail = body[pos:line_end].rstrip(b" \t\r")
        if tail not in (b"", b"--"):
            continue  # a longer boundary that starts the same (nested parts do this)
        if start is not None:
            parts.append(body[start : _line_break_before(body, found)])
        elif tail == b"--":
            # No opening boundary: what comes before the closing one is the only part.
            ctx.note(f"{ctype}: only a closing boundary; the text before it read as one part")
            return [_as_part(body[: _line_break_before(body, found)])]
        start = line_end + 1
        if tail == b"--":
            return parts  # what follows the closing boundary is epilogue
        pos = line_end
    if start is None:
        ctx.note(f"{ctype}: boundary never found; body shown as text")
        return None
    ctx.note(f"{ctype}: closing boundary missing")
    parts.append(body[start:])
    return parts


def _as_part(data: bytes) -> bytes:
    # Part headers when it starts with them, otherwise text without headers.
    return data if data.lstrip()[:8].lower() == b"content-" else b"\n" + data


class _Body:
    """Body text segments in message order and the attachments found on the way."""

    def __init__(self) -> None:
        self.segments: list[tuple[str, str]] = []  # ("plain" | "html", text)
        self.last_resort: list[str] = []  # inline named text parts, delivery reports
        self.attachments: list[Attachment] = []
        # One per attachment, in the same order: reads its decoded bytes when called (only
        # attachment_bytes calls them; parsing keeps sizes only).
        self.payloads: list[Callable[[], bytes]] = []
        self.forwarded: list[str] = []  # attached messages, shown after the text

    def has(self, kind: str) -> bool:
        return any(k == kind and text.strip() for k, text in self.segments)


def _uudecode(data: bytes, what: str, ctx: _Context) -> bytes:
    out = bytearray()
    started = False
    for line in data.splitlines():
        if not started:
            started = line.startswith(b"begin ")
            continue
        if line.strip() == b"end":
            break
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            # Some encoders pad lines with garbage; the length character says what counts.
            try:
                out += binascii.a2b_uu(line[: (((line[0] - 32) & 63) * 4 + 5) // 3])
            except (binascii.Error, IndexError):
                ctx.note(f"{what}: bad uuencoded line skipped")
    if not started:
        if data.strip():
            ctx.note(f"{what}: uuencoded data without a 'begin' line; kept as written")
        return data
    return bytes(out)


def _decoded(entity: _Entity, what: str, ctx: _Context) -> bytes:
    cte = entity.transfer_encoding
    body = entity.body
    if cte == "base64":
        _stray_base64(body, what, ctx)
        try:
            return binascii.a2b_base64(body)
        except binascii.Error:
            ctx.note(f"{what}: damaged base64 read leniently")
            return _b64decode(body)
    if cte == "quoted-printable":
        return binascii.a2b_qp(body)
    if cte in _UU_CTE:
        return _uudecode(body, what, ctx)
    if cte in _GZIP64:
        return _gunzip(_b64decode(body), what, ctx)
    if cte not in _KNOWN_CTE:
        ctx.note(f"{what}: unknown Content-Transfer-Encoding {cte!r}; kept as written")
    return body


def _gunzip(data: bytes, what: str, ctx: _Context) -> bytes:
    # Bounded: a small bomb must not take the memory of a parsing process.
    unpack = zlib.decompressobj(wbits=47)  # gzip or zlib header
    try:
        result = unpack.decompress(data, _GUNZIP_LIMIT)
    except zlib.error:
        ctx.note(f"{what}: damaged x-gzip64 data; kept compressed")
        return data
    if unpack.unconsumed_tail:
        ctx.note(f"{what}: x-gzip64 data larger than {_GUNZIP_LIMIT} bytes; size cut there")
    return result


_GUNZIP_LIMIT = 64 * 1024 * 1024
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
# Everything else: whitespace, and the stray characters that lenient decoding drops.
_NOT_BASE64 = bytes(sorted(set(range(256)) - set(_BASE64_ALPHABET)))
_BASE64_OR_SPACE = _BASE64_ALPHABET + b" \t\r\n"


def _stray_base64(body: bytes, what: str, ctx: _Context) -> None:
    stray = len(body.translate(None, _BASE64_OR_SPACE))
    if stray:
        plural = "character" if stray == 1 else "characters"
        ctx.note(f"{what}: {stray} stray {plural} in its base64 ignored")


def _decoded_size(entity: _Entity, what: str, ctx: _Context) -> int:
    if entity.transfer_encoding == "base64":
        # Counted, not decoded: attachments can be many megabytes and only the size is kept.
        # Stray characters count for nothing, as in lenient decoding.
        _stray_base64(entity.body, what, ctx)
        chars = len(entity.body.translate(None, _NOT_BASE64))
        padding = entity.body[-64:].translate(None, _NOT_BASE64)[-2:].count(b"=")
        return max(0, (chars - padding) * 3 // 4)
    return len(_decoded(entity, what, ctx))


def _part_text(entity: _Entity, kind: str, ctx: _Context) -> str:
    what = f"text/{kind} part"
    data = _decoded(entity, what, ctx)
    charset = entity.charset
    if charset is None and kind == "html":
        sniffed = _HTML_META_CHARSET.search(data[:4096])
        if sniffed is not None:
            charset = sniffed.group(1).decode("ascii").lower()
    if ctx.hint is None:
        ctx.hint = charset
    return newlines_to_lf(_decode_bytes(data, charset, what, ctx))


def _attach(out: _Body, entity: _Entity, ctx: _Context) -> None:
    filename = entity.filename
    if filename is not None:
        # RFC 2047 words inside a quoted filename are against the rules and everywhere.
        filename = _clean(_fold(_decode_words(_unraw(filename, "filename", ctx), "filename", ctx)))
    what = f"attachment {filename or entity.ctype}"
    size = _decoded_size(entity, what, ctx)
    out.attachments.append(Attachment(filename or None, _clean(entity.ctype), size))
    out.payloads.append(functools.partial(_decoded, entity, what, ctx))


def _walk(entity: _Entity, out: _Body, ctx: _Context, depth: int, alternative: bool) -> None:
    if depth > _MAX_DEPTH:
        ctx.note(f"MIME nesting deeper than {_MAX_DEPTH}; inner parts ignored")
        return
    maintype, _, subtype = entity.ctype.partition("/")
    if maintype == "multipart":
        boundary = entity.params.get("boundary", "").rstrip()
        if not boundary:
            ctx.note(f"{entity.ctype} without boundary; body shown as text")
        children = _split_multipart(entity.body, boundary, entity.ctype, ctx) if boundary else None
        if children is None:
            # Whatever the body holds is all the text there is.
            out.segments.append(("plain", _part_text(entity, "plain", ctx)))
            return
        default = "message/rfc822" if subtype == "digest" else "text/plain"  # RFC 2046 5.1.5
        entities = [_Entity(child, ctx, default) for child in children]
        if subtype == "alternative":
            _walk_alternative(entities, out, ctx, depth)
        else:
            for child in entities:
                _walk(child, out, ctx, depth + 1, alternative=False)
        return
    if maintype == "message":
        # Attached messages and delivery reports are attachments, never the body...
        _attach(out, entity, ctx)
        if subtype == "delivery-status":
            # ...but a bounce that explains itself only in its report should still say why.
            out.last_resort.append(_part_text(entity, "plain", ctx))
        elif subtype in _INNER_MESSAGE:
            # ...and an attached message is shown after the text, as mail clients do, so
            # that what was forwarded is read and found by search.
            out.forwarded.append(_inner_message(entity, ctx, depth))
        return
    if entity.transfer_encoding in _GZIP64 or (
        maintype == "text" and subtype in _RICH and not alternative
    ):
        if entity.transfer_encoding not in _GZIP64 and not entity.filename and (
            entity.disposition != "attachment"
        ):
            out.segments.append(("plain", _rich_to_plain(_part_text(entity, subtype, ctx))))
            return
        _attach(out, entity, ctx)
        return
    named = entity.filename is not None
    if maintype == "text" and subtype in {"plain", "html"} and entity.disposition != "attachment":
        if not named:
            text = _part_text(entity, subtype, ctx)
            if subtype == "plain" and (
                "\nbegin " in text or "\n=ybegin " in text
                or text.startswith(("begin ", "=ybegin "))
            ):
                # Inline uuencode and yEnc: mailers and newsreaders that predate MIME, and
                # some that label the whole text text/plain around them. Only a line that
                # starts so is looked at further (two substring searches per text part).
                text = _inline_encoded(text, out, ctx)
            out.segments.append((subtype, text))
            return
        if subtype == "plain":
            out.last_resort.append(_part_text(entity, "plain", ctx))
    elif alternative and maintype == "text" and not named:
        return  # another rendering of the same text (text/enriched, text/watch-html)
    _attach(out, entity, ctx)


def _walk_alternative(entities: list[_Entity], out: _Body, ctx: _Context, depth: int) -> None:
    # RFC 2046 5.1.4: alternatives come in increasing faithfulness. Plain text is preferred,
    # but not an empty one (some senders leave it blank); otherwise the richest HTML.
    collected: list[_Body] = []
    for entity in entities:
        sub = _Body()
        _walk(entity, sub, ctx, depth + 1, alternative=True)
        collected.append(sub)
        out.attachments += sub.attachments
        out.payloads += sub.payloads
        out.last_resort += sub.last_resort
        out.forwarded += sub.forwarded
    chosen = next((sub for sub in collected if sub.has("plain")), None)
    if chosen is None:
        chosen = next((sub for sub in reversed(collected) if sub.has("html")), None)
    if chosen is not None:
        out.segments += chosen.segments


def _body_text(out: _Body) -> str:
    texts = [
        (text if kind == "plain" else html_to_text(text)).strip("\n") for kind, text in out.segments
    ]
    texts = [text for text in texts if text.strip()]
    if not texts:
        texts = [text.strip("\n") for text in out.last_resort if text.strip()]
    texts += out.forwarded
    return _clean("\n\n".join(texts))


_INNER_MESSAGE = frozenset({"rfc822", "global", "news"})
_INNER_HEADERS = (("from", "From"), ("date", "Date"), ("subject", "Subject"), ("to", "To"),
                  ("cc", "Cc"))
_FORWARD_LINE = "---------- Forwarded message ----------"


def _inner_message(entity: _Entity, ctx: _Context, depth: int) -> str:
    """An attached message as a mail client shows it: a separator, its main headers as
    written (encoded words decoded), its text."""
    data = entity.body
    if entity.transfer_encoding in {"base64", "quoted-printable"}:
        data = _decoded(entity, "attached message", ctx)
    inner = _Entity(data, ctx)
    lines = [_FORWARD_LINE]
    for key, label in _INNER_HEADERS:
        raw = inner.fields.first(key)
        if raw is not None:
            what = f"attached message's {label}"
            value = _fold(_decode_words(_header_text(raw, what, ctx), what, ctx))
            lines.append(f"{label}: {value}")
    sub = _Body()
    _walk(inner, sub, ctx, depth + 1, alternative=False)
    text = _body_text(sub)
    return "\n".join(lines) + ("\n\n" + text if text else "")


_RICH = frozenset({"richtext", "enriched"})
_GZIP64 = frozenset({"x-gzip64", "gzip64"})
_RICH_COMMAND = re.compile(r"<<|<(/?)([A-Za-z0-9-]{1,60})>")
# Linear: a <param> without its end stops at the next command.
_RICH_PARAM = re.compile(r"(?i)<param>[^<]*(?:<<[^<]*)*</param>")


def _rich_to_plain(text: str) -> str:
    """text/richtext (RFC 1341) and text/enriched (RFC 1896) without their formatting
    commands: "<<" is a "<", and <nl> (richtext) is a line break."""
    text = _RICH_PARAM.sub("", text)

    def command(match: re.Match[str]) -> str:
        name = match.group(2)
        if name is None:
            return "<"
        return "\n" if name.lower() in {"nl", "np"} and not match.group(1) else ""

    return _RICH_COMMAND.sub(command, text)


_ENCODED_START = re.compile(
    r"(?m)^(?:begin(?:-base64)? [0-7]{3,4} (?P<uuname>[^\n]+)|=ybegin (?P<yhead>[^\n]*))$"
)
_ENCODED_END = re.compile(r"(?m)^(?:end[ \t]*|=yend[^\n]*)$")
_YENC_NAME = re.compile(r"\bname=(.*)$")
_YENC_SIZE = re.compile(r"\bsize=(\d+)")


def _inline_encoded(text: str, out: _Body, ctx: _Context) -> str:
    """Uuencoded and yEnc blocks inside plain text are attachments, not text."""
    kept: list[str] = []
    pos = 0
    for start in _ENCODED_START.finditer(text):
        if start.start() < pos:
            continue  # inside a block already taken out
        uu = start.group("uuname") is not None
        end = _ENCODED_END.search(text, start.end())
        while end is not None and end.group(0).startswith("end") != uu:
            end = _ENCODED_END.search(text, end.end())
        if end is None:
            break  # no block closes after this one, nor after any later start
        if uu:
            name = start.group("uuname").strip()
            block = text[start.start() : end.end()].encode("utf-8", "surrogateescape")
            size = len(_uudecode(block, name, ctx))
            ctx.note(f"uuencoded {name!r} inside the text read as an attachment")
            payload: Callable[[], bytes] = functools.partial(_uudecode, block, name, ctx)
        else:
            head = start.group("yhead")
            name_match = _YENC_NAME.search(head)
            size_match = _YENC_SIZE.search(head)
            name = name_match.group(1).strip() if name_match else "yenc.bin"
            size = int(size_match.group(1)) if size_match else 0
            ctx.note(f"yEnc {name!r} inside the text read as an attachment")
            payload = functools.partial(
                _ydecode, text[start.end() : end.start()].encode("utf-8", "surrogateescape")
            )
        out.attachments.append(Attachment(_clean(name), "application/octet-stream", size))
        out.payloads.append(payload)
        kept.append(text[pos : start.start()])
        pos = end.end()
    if not kept:
        return text
    kept.append(text[pos:])
    return _BLANK_LINES.sub("\n\n", "".join(kept))


def _ydecode(data: bytes) -> bytes:
    """yEnc lines (between =ybegin and =yend) back to bytes; =ypart lines are skipped."""
    out = bytearray()
    for line in data.splitlines():
        if line.startswith(b"=y"):
            continue
        escaped = False
        for byte in line:
            if escaped:
                out.append((byte - 106) % 256)
                escaped = False
            elif byte == 0x3D:  # "=": the next byte is shifted by another 64
                escaped = True
            else:
                out.append((byte - 42) % 256)
    return bytes(out)


# --------------------------------------------------------------------------- HTML

_BLANK_LINES = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_INVISIBLE = re.compile(r"(?is)<(script|style|head)\b.*?</\1\s*>")
_TAG = re.compile(r"<[^>]*>")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


_THREAD = threading.local()


def _html_config() -> Any:
    config = getattr(_THREAD, "html_config", None)
    if config is None:
        # Imported on first use: widget modules import this one and must load fast.
        from inscriptis.css_profiles import CSS_PROFILES
        from inscriptis.model.config import ParserConfig

        # One per thread: inscriptis keeps per-document state on its CSS profile's "body"
        # element (HtmlDocumentState.__init__ calls set_canvas on it), so the shared
        # default profile mixes up documents converted in parallel threads.
        config = ParserConfig(
            css=copy.deepcopy(CSS_PROFILES["relaxed"]), display_links=False, display_images=False
        )
        _THREAD.html_config = config
    return config


def _strip_tags(html: str) -> str:
    return unescape_html(_TAG.sub(" ", _INVISIBLE.sub(" ", html)))


def html_to_text(html: str) -> str:
    """Readable plain text from HTML mail. Nothing is fetched: no images, no stylesheets."""
    # lxml refuses NUL and most C0 controls, and an XML declaration after a BOM.
    cleaned = _CONTROL.sub("", html).lstrip("\ufeff")
    if not cleaned.strip():
        return ""
    from inscriptis import get_text

    try:
        text: str = get_text(cleaned, _html_config())
    except (ValueError, TypeError, LookupError, RecursionError) as exc:
        log.debug("inscriptis could not convert HTML (%s); stripping tags", exc)
        text = ""
    if not text.strip():
        # libxml2 silently drops what is nested deeper than 256 elements, and some broken
        # markup converts to nothing: the text without its tags is better than no body.
        text = _strip_tags(cleaned)
    text = newlines_to_lf(text).replace("\xa0", " ")
    text = _TRAILING_SPACE.sub("\n", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


# --------------------------------------------------------------------------- entry point


def attachment_bytes(raw: bytes, index: int) -> tuple[Attachment, bytes]:
    """Attachment number ``index`` of a message, as :func:`parse_message` lists it (same
    order, same leniency), and its decoded bytes. An attached message comes back as the
    message itself (an ``.eml``). Raises ``IndexError`` when there is no such attachment
    (also when the message's structure could not be read at all)."""
    ctx = _Context()
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    out = _Body()
    try:
        _walk(_Entity(raw, ctx), out, ctx, 0, alternative=False)
        if 0 <= index < len(out.attachments):
            return out.attachments[index], out.payloads[index]()
    except Exception:  # as parse_message: a bug costs this message only
        log.exception("attachment %d of a message could not be read", index)
    raise IndexError(f"the message has no readable attachment {index}")

_FIRST_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")


def looks_like_mail(raw: bytes) -> bool:
    """True when `raw` starts with a header field (after a byte order mark or an mbox
    "From " line): an empty file or a binary one given as mail does not."""
    start = len(_BOM) if raw.startswith(_BOM) else 0
    if raw.startswith(b"From ", start):
        line_end = raw.find(b"\n", start)
        start = len(raw) if line_end < 0 else line_end + 1
    return _FIRST_FIELD.match(raw, start) is not None



def parse_message(raw: bytes, *, fallback_date: datetime | None = None) -> ParsedMessage:
    """Parse one message as received; never raises on bad input.

    `fallback_date` (the IMAP INTERNALDATE) is used when the Date header is missing or
    cannot be read; without it, the current time in UTC.
    """
    try:
        return _parse(raw, fallback_date)
    except Exception:
        # A bug here must not stop a folder from syncing or lose the mail: keep it with
        # what can be read without MIME, and leave a trace so the bug gets fixed.
        found = _MESSAGE_ID_LINE.search(raw, 0, 65536)
        label = found.group(1).strip().decode("ascii", "replace") if found else "without Message-ID"
        log.exception("MIME parsing of message %s failed; keeping it with a raw reading", label)
        return _raw_reading(raw, fallback_date)


# Names the message in the log when nothing else of it could be read.
_MESSAGE_ID_LINE = re.compile(rb"(?im)^message-id:[ \t]*([^\r\n]{0,200})")


_BOM = b"\xef\xbb\xbf"
_NONE: tuple[Address, ...] = ()
_NO_IDS: tuple[str, ...] = ()
_T = TypeVar("_T")


def _guarded(ctx: _Context, what: str, read: Callable[[], _T], default: _T) -> _T:
    """`read()`, or `default` when it fails: one field that cannot be read costs only itself."""
    try:
        return read()
    except Exception:
        # A bug, or input beyond what the standard library copes with (RecursionError on
        # deeply nested comments): the field stays in the raw bytes, the others are read.
        log.exception("%s of message %s could not be read; left out", what, ctx.label)
        ctx.note(f"{what}: could not be read; kept only in the raw message")
        return default


_HeaderFields: TypeAlias = tuple[
    str | None,  # message_id
    tuple[datetime, bool],
    str,  # subject
    list[tuple[Address, ...]],  # from, to, cc, bcc, reply-to, sender
    str | None,  # in_reply_to
    tuple[str, ...],  # references
    list[str | None],  # list-id, auto-submitted, precedence
]
_ADDRESS_FIELDS = ("from", "to", "cc", "bcc", "reply-to", "sender")
_PLAIN_FIELDS = ("list-id", "auto-submitted", "precedence")


def _header_fields(headers: _Headers, fallback: datetime | None, ctx: _Context) -> _HeaderFields:
    return (
        _first_id(headers, "message-id", ctx),
        _date(headers, fallback, ctx),
        _subject(headers, ctx),
        [_addresses(headers, name, ctx) for name in _ADDRESS_FIELDS],
        _first_id(headers, "in-reply-to", ctx),
        _references(headers, ctx),
        [_plain_header(headers, name, ctx) for name in _PLAIN_FIELDS],
    )


def _header_fields_one_by_one(
    headers: _Headers, fallback: datetime | None, ctx: _Context
) -> _HeaderFields:
    # The same as _header_fields, each field on its own: run only after that failed, so
    # that well-formed mail pays nothing for the guards.
    message_id = _guarded(ctx, "Message-ID", lambda: _first_id(headers, "message-id", ctx), None)
    return (
        message_id,
        _guarded(ctx, "Date", lambda: _date(headers, fallback, ctx), _fallback_date(fallback)),
        _guarded(ctx, "Subject", lambda: _subject(headers, ctx), ""),
        [
            _guarded(ctx, name.capitalize(), functools.partial(_addresses, headers, name, ctx),
                     _NONE)
            for name in _ADDRESS_FIELDS
        ],
        _guarded(ctx, "In-Reply-To", lambda: _first_id(headers, "in-reply-to", ctx), None),
        _guarded(ctx, "References", lambda: _references(headers, ctx), _NO_IDS),
        [
            _guarded(ctx, name, functools.partial(_plain_header, headers, name, ctx), None)
            for name in _PLAIN_FIELDS
        ],
    )


def _label(headers: _Headers) -> str:
    # The Message-ID as written: names the message in the log, whatever else failed.
    return _fold(headers.first("message-id") or "")[:200] or "without Message-ID"


def _parse(raw: bytes, fallback_date: datetime | None) -> ParsedMessage:
    ctx = _Context()
    if raw.startswith(_BOM):
        # Saved by an editor: the mark is no part of the first header's name.
        ctx.note("UTF-8 byte order mark before the headers; ignored")
        raw = raw[len(_BOM) :]
    root = _Entity(raw, ctx)
    headers = root.fields
    ctx.hint = root.charset
    out = _Body()
    try:
        body_text = _root_text(root, out, ctx)
    except Exception:
        # As for a header field: the body's failure costs only the body.
        ctx.label = _label(headers)
        log.exception("the body of message %s could not be read", ctx.label)
        body_text = _raw_text(root.body, ctx)
    try:
        fields = _header_fields(headers, fallback_date, ctx)
    except Exception:  # noqa: BLE001 - read again field by field, each failure logged there
        ctx.label = _label(headers)
        fields = _header_fields_one_by_one(headers, fallback_date, ctx)
    message_id, (date, date_from_header), subject, addresses, in_reply_to, references, plain = (
        fields
    )
    from_, to, cc, bcc, reply_to, sender = addresses
    list_id, auto_submitted, precedence = plain
    return ParsedMessage(
        date=date,
        date_from_header=date_from_header,
        subject=subject,
        from_=from_,
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        sender=sender,
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=references,
        list_id=list_id,
        auto_submitted=auto_submitted,
        precedence=precedence,
        body_text=body_text,
        attachments=tuple(out.attachments),
        defects=tuple(dict.fromkeys(ctx.defects)),  # read last: every step above adds notes
    )


def _root_text(root: _Entity, out: _Body, ctx: _Context) -> str:
    _walk(root, out, ctx, 0, alternative=False)
    body_text = _body_text(out)
    if not body_text and root.ctype in {"text/plain", "text/html"} and root.body.strip():
        # A single-part text message sent "as an attachment" is still the message's text.
        text = _part_text(root, root.ctype[5:], ctx)
        body_text = _clean(html_to_text(text) if root.ctype == "text/html" else text.strip("\n"))
    return body_text


def _raw_text(body: bytes, ctx: _Context) -> str:
    ctx.note("internal error while parsing; the body is the raw text after the headers")
    return _clean(_decode_bytes(body, None, "body", ctx).replace("\r\n", "\n").replace("\r", "\n"))


def _fallback_date(fallback: datetime | None) -> tuple[datetime, bool]:
    if fallback is None:
        return datetime.now(UTC), False
    if fallback.tzinfo is None:
        return fallback.replace(tzinfo=UTC), False
    return fallback, False


def _raw_reading(raw: bytes, fallback_date: datetime | None) -> ParsedMessage:
    ctx = _Context()
    _head, _sep, rest = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    text = _raw_text(rest, ctx)
    date = _fallback_date(fallback_date)[0]
    return ParsedMessage(
        date=date,
        date_from_header=False,
        subject="",
        body_text=text,
        defects=tuple(ctx.defects),
    )
