"""Document references (``[xtref:S-50123]``) and reply/forward subject prefixes.

A reference ties mail to an ERP document: mail started from the ERP carries its document's
token once, at the end of the subject, and replies come back carrying it
(docs/architecture.md). Pure functions: no database, no Qt.

Decisions:

* Syntax: ``[xtref:CODE-NUMBER]``, matched case-insensitively anywhere in the text.
  Optional blanks (spaces, tabs) are tolerated after the colon only, because some clients
  insert one there when re-wrapping; nowhere else, so ordinary bracketed text is not
  mistaken for a reference.
* ``CODE`` must be a code of the document registry; a token with an unknown code is not a
  reference at all. Codes never contain ``-``, so the code is what stands before the first
  ``-`` (``[xtref:TO-10001]`` is Transfer Order 10001, not Contact ``O-10001``).
* ``NUMBER`` is ``[A-Za-z0-9][A-Za-z0-9._/-]*`` (ASCII only): xTuple numbers are mostly
  digits but customer, vendor and CRM account numbers are often letters (``TTOYS``).
  Whether the document exists is not checked here; the store keeps unknown ones on record.
* The code is upper-cased; the number keeps the spelling it was written with. Two
  references are the same when code and number are equal ignoring case, so
  :func:`find_references` and :func:`add_reference` never count one document twice.
* Reply/forward prefixes removed by :func:`normalize_subject`: RE, AW, Antw, Antwort, SV,
  VS, Odp, YNT, FW, Fwd, WG, TR, RV, Enc and the CJK ``回复``/``回覆``/``答复``/``转发``/
  ``轉寄``, in any case, with an optional counter (``RE[2]:``, ``Re(3):``, ``Re^2:``),
  blanks before the colon (``re :``) and a full-width colon (U+FF1A). Anything else (mailing-list
  tags, the reference token) stays.
* The prefixes written are ``RE: `` and ``FW: `` (what Outlook writes, the client most ERP
  users have), exactly once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from xtmail.sync.mail.registry import DOCUMENT_TYPES, find

__all__ = [
    "Reference",
    "add_reference",
    "compose_subject",
    "find_references",
    "forward_subject",
    "normalize_subject",
    "reply_subject",
]

_NUMBER = r"[A-Za-z0-9][A-Za-z0-9._/-]*"
_NUMBER_RE = re.compile(_NUMBER, re.ASCII)

# Longest code first: the required '-' after the code already rules out T for "TO-1",
# but trying TO before T states the rule (longest registry code) and saves a backtrack.
_CODES = sorted((doc.code for doc in DOCUMENT_TYPES), key=len, reverse=True)
# re.ASCII: with Unicode case folding the long s (U+017F) would match 's' and the Kelvin
# sign 'k'.
_TOKEN_RE = re.compile(
    r"\[xtref:[ \t]*(" + "|".join(map(re.escape, _CODES)) + r")-(" + _NUMBER + r")\]",
    re.IGNORECASE | re.ASCII,
)
_BLANKS_AND_TOKEN_RE = re.compile(r"[ \t]*" + _TOKEN_RE.pattern, _TOKEN_RE.flags)

_PREFIX_WORDS = (
    "re", "aw", "antw", "antwort", "sv", "vs", "odp", "ynt",
    "fw", "fwd", "wg", "tr", "rv", "enc",
    "回复", "回覆", "答复", "转发", "轉寄",
)
# Longest word first, like _CODES ("fwd" before "fw").
_PREFIX_RE = re.compile(
    r"^\s*(?:(?:"
    + "|".join(sorted(_PREFIX_WORDS, key=len, reverse=True))
    + r")(?:\s*(?:\[\d+\]|\(\d+\)|\^\d+))?\s*[:\uff1a]\s*)+",
    re.IGNORECASE,
)

SubjectKind = Literal["new", "reply", "forward"]


@dataclass(frozen=True, slots=True)
class Reference:
    """A reference to one ERP document, ``[xtref:<code>-<number>]``.

    ``code`` is a registry code (given in any case, stored upper-case); ``number`` is the
    document's visible number. Raises ``ValueError`` for an unknown code or a number that
    would not parse back from the token.
    """

    code: str
    number: str

    def __post_init__(self) -> None:
        if find(self.code) is None:
            raise ValueError(f"unknown document code {self.code!r}")
        if not _NUMBER_RE.fullmatch(self.number):
            raise ValueError(f"{self.number!r} cannot be written in a document reference")
        # Frozen dataclass: normalising the code has to go around __setattr__.
        object.__setattr__(self, "code", self.code.upper())

    @property
    def token(self) -> str:
        """The text put in subjects, e.g. ``[xtref:S-50123]``."""
        return f"[xtref:{self.code}-{self.number}]"

    def __str__(self) -> str:
        return self.token


def _key(code: str, number: str) -> tuple[str, str]:
    return code.upper(), number.casefold()


def find_references(text: str) -> list[Reference]:
    """Every reference with a known code in ``text``, first occurrence first, no repeats."""
    seen: set[tuple[str, str]] = set()
    found: list[Reference] = []
    for match in _TOKEN_RE.finditer(text):
        code, number = match.group(1), match.group(2)
        key = _key(code, number)
        if key not in seen:
            seen.add(key)
            found.append(Reference(code, number))
    return found


def _contains(text: str, ref: Reference) -> bool:
    wanted = _key(ref.code, ref.number)
    return any(_key(m.group(1), m.group(2)) == wanted for m in _TOKEN_RE.finditer(text))


def add_reference(subject: str, ref: Reference) -> str:
    """``subject`` with ``ref``'s token at the end, unless it carries that reference already."""
    if _contains(subject, ref):
        return subject
    stripped = subject.rstrip()
    return f"{stripped} {ref.token}" if stripped else ref.token


def normalize_subject(subject: str) -> str:
    """``subject`` without its stack of reply/forward prefixes and surrounding blanks."""
    return _PREFIX_RE.sub("", subject, count=1).strip()


def _drop_repeated_tokens(subject: str) -> str:
    # Clients that append the token themselves can leave it twice; keep the first only,
    # together with the blanks before the later copies so no double spaces remain.
    seen: set[tuple[str, str]] = set()

    def keep_first(match: re.Match[str]) -> str:
        key = _key(match.group(1), match.group(2))
        if key in seen:
            return ""
        seen.add(key)
        return match.group(0)

    return _BLANKS_AND_TOKEN_RE.sub(keep_first, subject).strip()


def compose_subject(kind: SubjectKind, subject: str, ref: Reference | None = None) -> str:
    """The subject for a new mail, a reply or a forward, carrying ``ref`` exactly once.

    ``"new"`` keeps ``subject`` as given (it is the user's); ``"reply"`` and ``"forward"``
    replace any stack of prefixes with one ``RE: `` / ``FW: ``. A reference token that is
    already there is kept (once), ``ref`` is appended when missing.
    """
    text = subject.strip() if kind == "new" else normalize_subject(subject)
    text = _drop_repeated_tokens(text)
    if ref is not None:
        text = add_reference(text, ref)
    if kind == "reply":
        return f"RE: {text}".rstrip()
    if kind == "forward":
        return f"FW: {text}".rstrip()
    return text


def reply_subject(subject: str) -> str:
    """``RE: `` once, then ``subject`` without its prefixes; its reference kept once."""
    return compose_subject("reply", subject)


def forward_subject(subject: str) -> str:
    """``FW: `` once, then ``subject`` without its prefixes; its reference kept once."""
    return compose_subject("forward", subject)
