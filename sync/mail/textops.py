"""Hot text loops of the import engine, with optional C versions.

Preparing a message spends much of its time on plain loops over its bytes and text: the
distinct words of its body (for the search index), and two line-ending conversions. In
Python the first creates an object for every word of the body and, before that, copies the
body twice to lower-case it and turn separators into spaces (``mapped_words`` does both by
one table lookup per character); ``str.replace`` / ``bytes.replace`` are slow on long bodies
for what a ``memchr`` loop does. ``_speedups.c`` does the same in C; it is built by
``pip install`` where a C compiler and the Python headers are present (``dev.sh`` installs
them). Where it is not built, the Python versions below give the same results, more slowly;
``COMPILED`` says which are in use, and the tests compare both on random and real text.
Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

__all__ = ["COMPILED", "crlf_to_lf", "distinct_words", "mapped_words", "newlines_to_lf"]

log = logging.getLogger(__name__)


def py_distinct_words(text: str) -> list[str]:
    """The distinct words of ``text`` split on whitespace, in order of first appearance."""
    return list(dict.fromkeys(text.split()))


def py_mapped_words(text: str, table: bytes) -> list[str] | None:
    """The distinct words of ``text`` with each character mapped through ``table`` (256
    bytes: what each Latin-1 character becomes); ``None`` where ``text`` holds a character
    above U+00FF. (bytes.translate is a table lookup in C, unlike str.translate.)"""
    if max(table[:128]) >= 128:
        raise ValueError("mapped_words(): the table maps ASCII beyond it")
    try:
        data = text.encode("latin-1")
    except UnicodeEncodeError:
        return None
    return py_distinct_words(data.translate(table).decode("latin-1"))


_LONE_CR = re.compile(rb"\r(?!\n)")


def py_crlf_to_lf(data: bytes) -> bytes:
    """``data`` with every CR LF turned into LF; a CR alone stays."""
    # Where no CR stands alone (nearly always), deleting every CR gives the same bytes in
    # half the time of replace().
    if _LONE_CR.search(data) is None:
        return data.translate(None, b"\r")
    return data.replace(b"\r\n", b"\n")


def py_newlines_to_lf(text: str) -> str:
    """``text`` with every line ending (CR LF, or a CR alone) turned into LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


distinct_words: Callable[[str], list[str]]
mapped_words: Callable[[str, bytes], list[str] | None]
crlf_to_lf: Callable[[bytes], bytes]
newlines_to_lf: Callable[[str], str]

try:
    from xtmail.sync.mail._speedups import (
        crlf_to_lf,
        distinct_words,
        mapped_words,
        newlines_to_lf,
    )
except ImportError:  # built without a C compiler: the same results, more slowly
    log.debug("xtmail.sync.mail._speedups is not built; using the Python text loops")
    distinct_words, mapped_words, crlf_to_lf, newlines_to_lf = (
        py_distinct_words, py_mapped_words, py_crlf_to_lf, py_newlines_to_lf,
    )
    COMPILED = False
else:
    COMPILED = True
