"""format_date: the one way dates read in the views."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from xtmail.widgets.formatting import format_date

PLUS_ONE = timezone(timedelta(hours=1))
#: 14:03:09 at +0100 is 13:03:09 UTC.
SENT = datetime(2024, 3, 5, 14, 3, 9, tzinfo=PLUS_ONE)


@pytest.fixture
def utc_machine(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The computer's time zone is UTC for the test."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_none_is_empty() -> None:
    assert format_date(None) == ""
    assert format_date(None, local=False, offset=True, seconds=True) == ""


@pytest.mark.usefixtures("utc_machine")
def test_local_variants_use_the_computers_zone() -> None:
    assert format_date(SENT) == "2024-03-05 13:03"  # the message list
    assert format_date(SENT, offset=True) == "2024-03-05 13:03 +0000"  # the message header
    assert format_date(SENT, seconds=True) == "2024-03-05 13:03:09"  # last sync time


def test_own_zone_variants_keep_the_senders_clock() -> None:
    # Reply quotations, exactly as before they shared this function.
    assert format_date(SENT, local=False, offset=True) == "2024-03-05 14:03 +0100"
    assert format_date(SENT, local=False, offset=True, seconds=True) == (
        "2024-03-05 14:03:09 +0100"
    )
    # A date without a zone has no offset to show.
    assert format_date(datetime(2024, 3, 5, 14, 3), local=False, offset=True) == (
        "2024-03-05 14:03"
    )
