"""What a word is, for the search index and for searches: both sides split text here, so
they always agree."""

from __future__ import annotations

from .textops import distinct_words, mapped_words

# Word separators: ASCII punctuation and the common typographic marks. str.translate + split
# runs in C and is several times faster than a \w+ regex over a long body.
_SEPARATORS = str.maketrans(
    {c: " " for c in map(chr, range(128)) if not (c.isalnum() or c == "_")}
    | dict.fromkeys(
        "\u00a0\u00ab\u00bb\u2013\u2014\u2018\u2019\u201a\u201c\u201d"
        "\u201e\u2026\u2022\u00b7\u3000\u3001\u3002\uff0c",
        " ",
    )
)
# The same for the Latin-1 characters, as a table of 256 bytes for textops.mapped_words:
# each one's _separated(), always one Latin-1 character (ord() fails at import otherwise).
_LATIN1_SEPARATED = bytes(ord(chr(i).lower().translate(_SEPARATORS)) for i in range(256))
_SEARCH_TEXT_LIMIT = 200_000
_MAX_LEXEME = 100


def search_lexemes(*texts: str) -> list[str]:
    """The distinct lower-case words of ``texts``, as stored in ``msg_search``.

    Words are computed here, in the parsing workers, rather than with PostgreSQL's
    ``to_tsvector``, which costs milliseconds per message on the database's single
    connection (docs/benchmarks.md). Searches split their words with the same function
    (``search_query``), so both sides always agree on what a word is. No positions are kept:
    the Attach dialog matches words and prefixes, not phrases.
    """
    joined = " ".join(text[:_SEARCH_TEXT_LIMIT] for text in texts)
    words = mapped_words(joined, _LATIN1_SEPARATED)
    if words is None:  # a character above U+00FF: str.lower's rules, and a copy per step
        words = distinct_words(_separated(joined))
    # max() runs in C; the filter is a Python loop, needed only when a long word exists.
    if words and max(map(len, words)) > _MAX_LEXEME:
        words = [w for w in words if len(w) <= _MAX_LEXEME]
    return sorted(words)


def search_document(*texts: str) -> str:
    """``msg_search`` as a ``tsvector`` literal: the words of :func:`search_lexemes`, quoted.

    Words never hold a quote or a backslash (both are separators), so no escaping is needed.
    """
    words = search_lexemes(*texts)
    return "'" + "' '".join(words) + "'" if words else ""


def _separated(text: str) -> str:
    """``text`` in lower case with every separator a space: its words are its split()."""
    return text.lower().translate(_SEPARATORS)


def _words(text: str) -> list[str]:
    return _separated(text).split()


def search_query(text: str) -> str | None:
    """A ``tsquery`` literal matching messages holding every word of ``text`` (last one as a
    prefix, for search-as-you-type); ``None`` when ``text`` has no words."""
    words = [w for w in _words(text) if len(w) <= _MAX_LEXEME]
    if not words:
        return None
    terms = [f"'{w}'" for w in words[:-1]] + [f"'{words[-1]}':*"]
    return " & ".join(terms)
