"""Small helpers to write test messages."""

from __future__ import annotations

import itertools

_counter = itertools.count(1)


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
