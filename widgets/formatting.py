"""How dates read in the views: one function, a few variants.

Every date a user sees is written ``YYYY-MM-DD HH:MM`` (optionally with seconds and the UTC
offset): sortable at a glance and the same in every locale, so the message list, the
message header, reply quotations and the preferences page agree with each other.

No Qt here: :mod:`xtmail.widgets.compose` uses it and must load without Qt.
"""

from __future__ import annotations

from datetime import datetime

__all__ = ["format_date", "format_size"]


def format_date(
    date: datetime | None,
    *,
    local: bool = True,
    offset: bool = False,
    seconds: bool = False,
) -> str:
    """``date`` as ``YYYY-MM-DD HH:MM`` ("" for ``None``).

    ``local``: converted to the computer's time zone first (list and header: the user's
    clock). ``False`` keeps the date's own zone, as written by the sender (reply
    quotations). ``offset`` appends the UTC offset (`` +0100``), when the date has one;
    ``seconds`` adds ``:SS``.
    """
    if date is None:
        return ""
    if local:
        date = date.astimezone()
    text = date.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    if offset and date.utcoffset() is not None:
        text += date.strftime(" %z")
    return text


def format_size(size: int) -> str:
    """A byte count as people read it: ``512 bytes``, ``146 KB``, ``2.3 MB`` (1024-based,
    as mail programs and file managers on the desktop show attachment sizes)."""
    if size < 1024:
        return "1 byte" if size == 1 else f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    if size < 1024 * 1024 * 1024:
        return f"{size / 1024 / 1024:.1f} MB"
    return f"{size / 1024 / 1024 / 1024:.1f} GB"
