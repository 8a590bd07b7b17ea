"""Property tests: the corpus's messages (tests/data), damaged at random by hypothesis, go
through the parser. It never fails inside, never takes long, and every header field it read
in the undamaged message is still read the same unless the damage touched that field.

The fixed-seed damage of tests/sync/test_mutated_mail.py covers storing; this covers what
is read. Hypothesis searches for failures and shrinks them to a small damage.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.mail import mutated
from xtmail.sync.mail.mime import ParsedMessage, parse_message

DATA = Path(__file__).resolve().parents[1] / "data"
FILES = sorted(DATA.glob("*.eml"))
ORIGINALS = [path.read_bytes() for path in FILES]
# Generous for a shared CI core; the messages take milliseconds.
TIME_LIMIT = 3.0

# Damage that hits the parser's special cases, a few of them at hostile sizes.
SNIPPETS = (
    b"\x00", b"\r", b"\n", b"\r\n", b"\r\n\r\n", b" ", b":", b"=?utf-8?b?", b"?=", b"\xef\xbb\xbf",
    b"\xff\xfe", b"--", b"boundary=", b";", b'"', b"(", b"<", b"\\", b"=\r\n", b"begin 644 x\n",
    b"=ybegin ", b"Content-Type: message/rfc822\r\n", b"Content-Type: multipart/mixed\r\n",
    b"Content-Transfer-Encoding: x-gzip64\r\n", b"charset=iso-2022-jp\r\n",
    b"Date: Tue, 17 Jul 2012 22:23:35.882 0000\r\n", b"\x80\x81\xfe",
)


@dataclass(frozen=True)
class Damage:
    """One change at an offset of the undamaged message."""

    at: int
    kind: str  # "set" a byte, "insert" a snippet (repeated), "delete" bytes
    byte: int
    snippet: bytes
    count: int


@st.composite
def damaged(draw: st.DrawFn) -> tuple[int, list[Damage]]:
    index = draw(st.integers(0, len(ORIGINALS) - 1))
    size = len(ORIGINALS[index])
    damage = draw(st.lists(
        st.builds(
            Damage,
            at=st.integers(0, size),
            kind=st.sampled_from(("set", "insert", "delete")),
            byte=st.integers(0, 255),
            snippet=st.sampled_from(SNIPPETS),
            count=st.one_of(st.integers(1, 3), st.integers(1, 200), st.just(20000)),
        ),
        min_size=1, max_size=8,
    ))
    return index, damage


def apply(raw: bytes, damage: list[Damage]) -> bytes:
    # From the end backwards, so that every offset means the undamaged message's byte.
    data = bytearray(raw)
    for one in sorted(damage, key=lambda d: d.at, reverse=True):
        if one.kind == "set" and one.at < len(data):
            data[one.at] = one.byte
        elif one.kind == "insert":
            data[one.at : one.at] = one.snippet * one.count
        elif one.kind == "delete":
            del data[one.at : one.at + min(one.count, 200)]
    return bytes(data)


_FIELD_LINE = re.compile(
    rb"^(subject|from|to|cc|date|message-id)[ \t]*:.*(?:\r?\n[ \t].*)*", re.I | re.M
)


def field_spans(raw: bytes) -> dict[str, list[tuple[int, int, bool]]]:
    """Per field name: (start, safe from, ASCII value) for each of its lines in the header
    block. Damage at or after "safe from" cannot change the field: it lies beyond the line
    after the field (a nameless line right after a field is joined to it, as Outlook wraps)."""
    blank = re.search(rb"\n\r?\n", raw)
    head_end = blank.start() if blank else len(raw)
    spans: dict[str, list[tuple[int, int, bool]]] = {}
    for match in _FIELD_LINE.finditer(raw, 0, head_end):
        line_end = raw.find(b"\n", match.end())
        next_end = raw.find(b"\n", line_end + 1) if line_end >= 0 else -1
        safe_from = len(raw) if next_end < 0 else next_end + 1
        spans.setdefault(match.group(1).lower().decode(), []).append(
            (match.start(), safe_from, match.group(0).isascii())
        )
    return spans


ADDRESS_FIELDS = frozenset({"from", "to", "cc"})


def fields(parsed: ParsedMessage) -> dict[str, object]:
    return {
        "subject": parsed.subject,
        "from": parsed.from_,
        "to": parsed.to,
        "cc": parsed.cc,
        "date": parsed.date if parsed.date_from_header else None,
        "message-id": parsed.message_id,
    }


def parse_in_time(raw: bytes) -> ParsedMessage:
    started = time.perf_counter()
    parsed = parse_message(raw)
    assert time.perf_counter() - started < TIME_LIMIT
    # Nothing failed inside: no field or body fell back to its raw reading.
    assert not [d for d in parsed.defects if "internal error" in d or "could not be read" in d]
    return parsed


@settings(
    max_examples=250, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(damaged())
def test_damaged_mail_keeps_every_untouched_header(case: tuple[int, list[Damage]]) -> None:
    index, damage = case
    raw = ORIGINALS[index]
    before = fields(parse_message(raw))
    after = fields(parse_in_time(apply(raw, damage)))
    first = min(one.at for one in damage)
    spans = field_spans(raw)
    for name, lines in spans.items():
        # Only fields whose every line lies wholly before the damage; raw 8-bit values are
        # read in the charset of the message's text, which damage further on may change.
        if all(safe_from <= first and ascii_only for _start, safe_from, ascii_only in lines):
            value, expected = after[name], before[name]
            if name in ADDRESS_FIELDS and isinstance(value, tuple) and isinstance(expected, tuple):
                # Every field of the name counts: damage further on can join more (the body
                # of a forwarded message pulled into the header block), none may be lost.
                value = value[: len(expected)]
            assert value == expected, (FILES[index].name, name)


def test_fixed_seed_damage_of_every_message_is_read_in_bounded_time() -> None:
    # The helper's damage (shared with the storing test), on every corpus file.
    for raw in mutated(FILES, 300, seed=14):
        parse_in_time(raw)
