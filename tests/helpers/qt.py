"""Fixtures shared by the Qt tests (widgets, dialogs, the sync service): a qasync loop, a
way to run it until something holds, and an in-memory keyring. Loaded by tests/conftest.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import keyring
import keyring.backend
import pytest
import qasync
from PyQt6.QtWidgets import QApplication

RunUntil = Callable[..., None]


@pytest.fixture
def qloop(qapp: QApplication) -> Iterator[qasync.QEventLoop]:
    """A qasync loop for this test; tasks still pending at the end are cancelled."""
    qapp.setQuitOnLastWindowClosed(False)
    loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    try:
        yield loop
    finally:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        # Widgets deleted with deleteLater() go now, while their loop still exists.
        QApplication.sendPostedEvents(None, 0)
        loop.close()
        asyncio.set_event_loop(None)


@pytest.fixture
def run_until(qloop: qasync.QEventLoop) -> RunUntil:
    """``run_until(predicate, timeout=10.0, message="")``: run the loop until it holds."""

    def run(predicate: Callable[[], object], timeout: float = 10.0, message: str = "") -> None:
        async def wait() -> None:
            deadline = time.monotonic() + timeout
            while not predicate():
                if time.monotonic() > deadline:
                    raise AssertionError(message or f"timed out after {timeout} s waiting")
                await asyncio.sleep(0.005)

        qloop.run_until_complete(wait())

    return run


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A real keyring backend that keeps its secrets in memory."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.secrets.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.secrets[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.secrets.pop((service, username), None)


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)
