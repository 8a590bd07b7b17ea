"""Qt and qasync helpers: run a qasync loop until something holds, and an in-memory keyring."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import keyring.backend
import qasync
from PyQt6.QtWidgets import QApplication, QDialog

#: ``run_until(predicate, timeout=10.0, message="")``, as the ``run_until`` fixture gives it.
RunUntil = Callable[..., None]


async def wait_until(predicate: Callable[[], object], within: float = 10.0,
                     message: str = "") -> None:
    """Return once ``predicate()`` holds; fail with ``message`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(message or f"timed out after {within} s waiting")
        await asyncio.sleep(0.005)


def loop_runner(loop: qasync.QEventLoop) -> RunUntil:
    """A ``run_until`` that drives ``loop`` until the predicate holds."""

    def run(predicate: Callable[[], object], timeout: float = 10.0, message: str = "") -> None:
        loop.run_until_complete(wait_until(predicate, timeout, message))

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


def close_dialog(widget: QDialog, loop: qasync.QEventLoop, tasks: str) -> None:
    """Close a dialog a test opened and let its cancelled tasks (named starting with
    ``tasks``) end (psycopg cancels their queries on the server) before the store closes.
    Only the dialog's tasks: the store's pool has tasks of its own that run until it
    closes."""
    if widget.isVisible():
        widget.reject()
    pending = [t for t in asyncio.all_tasks(loop)
               if not t.done() and t.get_name().startswith(tasks)]
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    widget.deleteLater()
    QApplication.sendPostedEvents(None, 0)
