"""Test messages: small ones written to order, and damaged copies of real ones."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from pathlib import Path

_counter = itertools.count(1)

# Fragments that hit the parser's special cases: NUL, bare CR and LF, encoded words, BOMs,
# boundaries, parameters, quoted-printable soft breaks, absurd dates, base64, UTF-16.
_SNIPPETS = (
    b"\x00", b"\r", b"\n", b"=?utf-8?b?", b"?=", b"\xff\xfe", b"--", b"boundary=", b";", b'"',
    b"=\r\n", b"Date: 31 Feb 99999 99:99:99 +9999\r\n",
    b"Content-Transfer-Encoding: base64\r\n", b"charset=utf-16\r\n",
)


def make_message(
    *,
    sender: str = "Ada Lovelace <ada@example.com>",
    to: str = "Sales <sales@ourco.example>",
    cc: str | None = None,
    subject: str = "Hello",
    body: str = "Hello there.",
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: str | None = None,
    extra: str = "",
    date: str = "Mon, 02 Mar 2026 10:00:00 +0000",
) -> bytes:
    message_id = message_id or f"<test.{next(_counter)}@example.com>"
    lines = [f"From: {sender}", f"To: {to}"]
    if cc:
        lines.append(f"Cc: {cc}")
    lines += [f"Subject: {subject}", f"Date: {date}", f"Message-ID: {message_id}"]
    if in_reply_to:
        lines.append(f"In-Reply-To: {in_reply_to}")
    if references:
        lines.append(f"References: {references}")
    if extra:
        lines.append(extra.rstrip("\r\n"))
    lines += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", "", body, ""]
    return "\r\n".join(lines).encode()


def mutated(files: Sequence[Path], count: int, seed: int) -> list[bytes]:
    """``count`` copies of messages from ``files`` with random damage; the same for a seed."""
    rng = random.Random(seed)
    originals = [path.read_bytes() for path in files]
    out = []
    for _ in range(count):
        data = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 30)):
            at = rng.randrange(len(data)) if data else 0
            roll = rng.random()
            if roll < 0.4 and data:
                data[at] = rng.randrange(256)
            elif roll < 0.6:
                data[at:at] = rng.choice(_SNIPPETS)
            elif data:
                del data[at : at + rng.randint(1, 200)]
        out.append(bytes(data))
    return out
