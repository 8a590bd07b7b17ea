"""Corpus messages with random damage: parsed without the raw-reading fallback, and stored.

A fixed seed makes the damage the same in every run. Fuzzing this way found a charset label
with a NUL that threw the parser off (mime._codec_for) and a NUL in a Content-Type that made
PostgreSQL refuse a whole batch (mime._attach now cleans it like every text it returns).
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
import pytest

from tests.helpers.mail import mutated
from xtmail.sync.db.writer import Importer
from xtmail.sync.mail.prepare import prepare
from xtmail.sync.values import Incoming, Location


def test_damaged_mail_is_parsed_without_the_fallback(
    corpus_files: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="xtmail.sync.mail.mime"):
        for raw in mutated(corpus_files, 600, seed=1):
            prepare(raw)
    assert not caplog.records, caplog.records[0].getMessage()


def test_damaged_mail_is_stored_with_its_raw_bytes(
    corpus_files: list[Path], conn: psycopg.Connection
) -> None:
    raws = mutated(corpus_files, 400, seed=7)
    importer = Importer(conn)
    for start in range(0, len(raws), 50):
        chunk = raws[start : start + 50]
        result = importer.import_batch(
            [Incoming(raw, Location("damaged", "INBOX", 1, start + i + 1))
             for i, raw in enumerate(chunk)]
        )
        # Nothing needed the one-by-one fallback: every parsed field was storable.
        assert not result.warnings, result.warnings
    stored = {
        bytes(raw) for (raw,) in conn.execute(
            """SELECT coalesce(l.loc_raw, e.eml_msg) FROM xtmail.location l
                 JOIN xtbatch.eml e ON e.eml_id = l.loc_eml_id
                WHERE l.loc_account = 'damaged'""")
    }
    assert stored == set(raws)
