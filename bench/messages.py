"""Realistic synthetic mail for the benchmarks.

Sizes follow a log-normal curve with a median near 10 KB; about one in eight messages has a
base64 attachment; half come from known contacts; one in five carries a document reference
and one in four replies to an earlier message. Deterministic for a given seed.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

WORDS = (
    "order invoice shipment delivery quote price quantity pallet warehouse freight "
    "discount payment terms customer vendor please confirm attached revised schedule "
    "thanks regards tomorrow week delay stock backorder item part number project status "
    "meeting agenda call follow update request approval budget contract renewal"
).split()

KNOWN_CONTACTS = 2000


def contact_address(i: int) -> str:
    return f"contact{i}@customer{i % 97}.example.com"


def _text(rng: random.Random, size: int) -> str:
    lines, total = [], 0
    while total < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14)))
        lines.append(line.capitalize() + ".")
        total += len(line) + 2
    return "\r\n".join(lines)


def generate(n: int, seed: int = 7, sales_orders: int = 500) -> Iterator[bytes]:
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    ids: list[str] = []
    for i in range(n):
        size = min(int(rng.lognormvariate(9.2, 0.8)), 400_000)  # median e^9.2 ~ 10 KB
        if rng.random() < 0.5:
            sender = contact_address(rng.randrange(KNOWN_CONTACTS))
        else:
            sender = f"person{rng.randrange(n * 2)}@unknown{rng.randrange(300)}.example.org"
        subject = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))).capitalize()
        if rng.random() < 0.2:
            subject += f" [xtref:S-{50000 + rng.randrange(sales_orders)}]"
        msgid = f"<bench.{seed}.{i}@mail.example.com>"
        headers = [
            f"From: Person {i} <{sender}>",
            "To: Sales <sales@ourcompany.example>, "
            + contact_address(rng.randrange(KNOWN_CONTACTS)),
            f"Subject: {subject}",
            f"Date: {format_datetime(start + timedelta(minutes=i))}",
            f"Message-ID: {msgid}",
            "MIME-Version: 1.0",
        ]
        if ids and rng.random() < 0.25:
            parent = rng.choice(ids[-200:])
            headers.append(f"In-Reply-To: {parent}")
            headers.append(f"References: {parent}")
        ids.append(msgid)
        if rng.random() < 0.125:
            attachment_size = max(size - 2000, 1000)
            blob = base64.encodebytes(rng.randbytes(attachment_size * 3 // 4)).decode()
            boundary = f"b{i}x"
            body = (
                f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                f"{_text(rng, 1500)}\r\n--{boundary}\r\n"
                f"Content-Type: application/pdf; name=\"doc{i}.pdf\"\r\n"
                "Content-Transfer-Encoding: base64\r\n"
                f"Content-Disposition: attachment; filename=\"doc{i}.pdf\"\r\n\r\n"
                f"{blob.replace(chr(10), chr(13) + chr(10))}--{boundary}--\r\n"
            )
            headers.append(f"Content-Type: multipart/mixed; boundary=\"{boundary}\"")
        elif rng.random() < 0.3:
            boundary = f"a{i}x"
            text = _text(rng, size // 2)
            html = "<html><body><p>" + text.replace("\r\n", "</p>\r\n<p>") + "</p></body></html>"
            body = (
                f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
                f"--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n"
                f"--{boundary}--\r\n"
            )
            headers.append(f"Content-Type: multipart/alternative; boundary=\"{boundary}\"")
        else:
            body = _text(rng, size) + "\r\n"
            headers.append("Content-Type: text/plain; charset=utf-8")
        yield ("\r\n".join(headers) + "\r\n\r\n" + body).encode()
