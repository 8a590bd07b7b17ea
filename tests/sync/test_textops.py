"""The C text loops (sync/mail/_speedups.c) give exactly what their Python versions give.

Random text of every string width and every character str.split() and the line-ending
rules care about, then the real corpus, then whole prepared messages: the search words, the
identity hash and the body text must not depend on whether the extension was built.
"""

from __future__ import annotations

import dataclasses
import random
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.helpers.mail import mutated
from xtmail.sync.mail import mime, prepare, textops, words

# Every character str.split() splits on, and a few that look like separators but are not.
WHITESPACE = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
NOT_WHITESPACE = "\u200b\u2060\ufeff\x00_-"
WORD_CHARS = "aAzZ09éßΣς\u20ac\u4e2d\U0001f600"


def random_texts(seed: int, count: int, alphabet: str, longest: int = 40) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randrange(longest)))
            for _ in range(count)]


def test_the_c_versions_are_built() -> None:
    # What CI measures and what the installed product runs. Without a C compiler the
    # Python versions take over; dev.sh installs gcc and the Python headers.
    assert textops.COMPILED, (
        "xtmail.sync.mail._speedups is not built: install a C compiler and the Python headers "
        "(apt-get install gcc python3-dev) and reinstall (pip install -e .)"
    )


@pytest.mark.parametrize("alphabet", [
    "ab c\t\n",                                       # ASCII
    "ab \xa0\x85\xe9\x1c\x1f",                        # Latin-1, with its two odd spaces
    WORD_CHARS[:8] + " \u3000\u2028\u1680",           # two bytes per character
    WORD_CHARS + WHITESPACE + NOT_WHITESPACE,         # four bytes, everything
])
def test_distinct_words_match_python(alphabet: str) -> None:
    for text in random_texts(1, 20_000, alphabet):
        assert textops.distinct_words(text) == textops.py_distinct_words(text), repr(text)


def test_distinct_words_with_many_words_and_long_ones() -> None:
    rng = random.Random(2)
    words = ["".join(rng.choice(WORD_CHARS) for _ in range(rng.randrange(1, 30)))
             for _ in range(5_000)]
    words.append("x" * 100_000)
    for _ in range(20):
        text = " ".join(rng.choice(words) for _ in range(rng.randrange(1, 20_000)))
        assert textops.distinct_words(text) == textops.py_distinct_words(text)
    assert textops.distinct_words("") == []
    assert textops.distinct_words(" \n\t ") == []


LATIN1 = "".join(map(chr, range(256)))


def random_table(seed: int) -> bytes:
    """A table as mapped_words takes: any Latin-1 character for each, ASCII to ASCII."""
    rng = random.Random(seed)
    return bytes([rng.randrange(128) for _ in range(128)] + [rng.randrange(256)
                                                           for _ in range(128)])


@pytest.mark.parametrize("alphabet", [
    "aB c\t\n.,",                                      # ASCII
    "aB \xa0\x85\xc9\xe9\xdf\xb5\xab\x1c",             # Latin-1 letters, spaces, separators
    LATIN1,                                             # every Latin-1 character
    "ab \u20ac\u2019",                                  # wider: None from both
    "ab \U0001f600",
])
def test_mapped_words_match_python(alphabet: str) -> None:
    tables = [words._LATIN1_SEPARATED, random_table(6), random_table(7)]
    for index, text in enumerate(random_texts(5, 20_000, alphabet)):
        table = tables[index % len(tables)]
        assert textops.mapped_words(text, table) == textops.py_mapped_words(text, table), (
            repr(text))


@pytest.mark.parametrize("mapped_words", [textops.mapped_words, textops.py_mapped_words])
def test_mapped_words_are_the_search_words_of_latin1_text(
    mapped_words: Callable[[str, bytes], list[str] | None],
) -> None:
    # The search index's words by one table lookup per character are those of str.lower
    # and the separator table, for every Latin-1 character; wider text is left to them.
    for text in [LATIN1, *random_texts(8, 5_000, LATIN1 + "   ", longest=60)]:
        assert mapped_words(text, words._LATIN1_SEPARATED) == textops.distinct_words(
            words._separated(text)), repr(text)
    assert mapped_words("na\u00efve \u2019quote\u2019", words._LATIN1_SEPARATED) is None
    assert mapped_words("", words._LATIN1_SEPARATED) == []


@pytest.mark.parametrize("mapped_words", [textops.mapped_words, textops.py_mapped_words])
def test_mapped_words_refuses_a_table_taking_ascii_beyond(
    mapped_words: Callable[[str, bytes], list[str] | None],
) -> None:
    with pytest.raises(ValueError, match="maps ASCII beyond"):
        mapped_words("abc", bytes([200] * 256))


@pytest.mark.parametrize("alphabet", ["ab\r\n", "a\r\n\xe9", "a\r\n\u20ac", "a\r\n\U0001f600"])
def test_newlines_to_lf_match_python(alphabet: str) -> None:
    for text in random_texts(3, 20_000, alphabet, longest=16):
        converted = textops.newlines_to_lf(text)
        assert converted == textops.py_newlines_to_lf(text), repr(text)
        assert converted.isascii() == text.isascii()


def test_crlf_to_lf_matches_python() -> None:
    rng = random.Random(4)
    for _ in range(20_000):
        data = bytes(rng.choice(b"a\r\n\x00\xff") for _ in range(rng.randrange(16)))
        assert textops.crlf_to_lf(data) == textops.py_crlf_to_lf(data), data
        assert textops.crlf_to_lf(data) == data.replace(b"\r\n", b"\n")


@pytest.mark.parametrize("crlf_to_lf", [textops.crlf_to_lf, textops.py_crlf_to_lf])
@pytest.mark.parametrize("data", [
    b"", b"a\r\nb\r\n", b"a\rb\r\n", b"\r\r\n", b"\r\n\r", b"\n\r\n", b"x\r", b"\r",
])
def test_crlf_to_lf_is_bytes_replace(crlf_to_lf: Callable[[bytes], bytes], data: bytes) -> None:
    assert crlf_to_lf(data) == data.replace(b"\r\n", b"\n")


def test_line_endings_on_the_corpus(corpus_files: list[Path]) -> None:
    for path in corpus_files:
        raw = path.read_bytes()
        assert textops.crlf_to_lf(raw) == raw.replace(b"\r\n", b"\n"), path.name
        assert textops.py_crlf_to_lf(raw) == raw.replace(b"\r\n", b"\n"), path.name
        text = raw.decode("latin-1")
        assert textops.newlines_to_lf(text) == textops.py_newlines_to_lf(text), path.name
        words = text.lower()
        assert textops.distinct_words(words) == textops.py_distinct_words(words), path.name


def test_wrong_types_are_refused() -> None:
    with pytest.raises(TypeError, match="expects str"):
        textops.distinct_words(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expects bytes"):
        textops.crlf_to_lf("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expects str"):
        textops.newlines_to_lf(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expects str and 256 bytes"):
        textops.mapped_words("text", b"short")
    with pytest.raises(TypeError, match="expects str and 256 bytes"):
        textops.mapped_words(b"bytes", bytes(256))  # type: ignore[arg-type]


def test_prepared_messages_do_not_depend_on_the_extension(
    corpus_files: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    raws = [path.read_bytes() for path in corpus_files] + mutated(corpus_files, 300, seed=5)
    received = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)  # for messages without a date
    with_c = [prepare.prepare(raw, received) for raw in raws]
    # The search words without the Latin-1 table: str.lower and str.translate for all text.
    with monkeypatch.context() as patch:
        patch.setattr(words, "mapped_words", lambda text, table: None)
        for raw, fast in zip(raws, with_c, strict=True):
            assert prepare.prepare(raw, received).search == fast.search
    monkeypatch.setattr(words, "mapped_words", textops.py_mapped_words)
    monkeypatch.setattr(words, "distinct_words", textops.py_distinct_words)
    monkeypatch.setattr(prepare, "crlf_to_lf", textops.py_crlf_to_lf)
    monkeypatch.setattr(mime, "newlines_to_lf", textops.py_newlines_to_lf)
    for raw, fast in zip(raws, with_c, strict=True):
        slow = prepare.prepare(raw, received)
        assert dataclasses.astuple(fast) == dataclasses.astuple(slow)
