"""TaskOwner and failure_text: how views run, cancel and report their background work."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import weakref

import pytest
import qasync
from PyQt6.QtCore import QCoreApplication, QEvent, QObject

from xtmail.sync.errors import (
    ConfigError,
    DatabaseConflict,
    DatabaseError,
    DatabaseUnavailable,
    PermissionDenied,
)
from xtmail.widgets.tasks import (
    UNEXPECTED_TEXT,
    RetryCountdown,
    TaskOwner,
    failure_text,
    mends_by_itself,
)

RETRY = "Press Refresh (F5) to try again."


class Recorder:
    """A failure handler that keeps what it was told."""

    def __init__(self) -> None:
        self.failures: list[tuple[str, Exception]] = []

    def __call__(self, purpose: str, exc: Exception) -> None:
        self.failures.append((purpose, exc))


async def wait(gate: asyncio.Event, done: list[str], name: str) -> None:
    await gate.wait()
    done.append(name)


async def fail(exc: Exception) -> None:
    raise exc


def settle(qloop: qasync.QEventLoop) -> None:
    """Let every task that can make progress do so."""
    for _ in range(3):
        qloop.run_until_complete(asyncio.sleep(0))


def test_one_task_per_purpose_kept_until_done(qloop: qasync.QEventLoop) -> None:
    owner = TaskOwner("test", Recorder())
    gate, done = asyncio.Event(), []
    first = owner.start("list", wait, gate, done, "first")
    second = owner.start("list", wait, gate, done, "second")
    other = owner.start("preview", wait, gate, done, "other")
    settle(qloop)
    assert first.cancelled(), "the newer task of a purpose replaces the older"
    assert owner.running() == {"list", "preview"}
    assert owner.is_running("list") and not owner.is_running("attach")
    gate.set()
    qloop.run_until_complete(asyncio.gather(second, other))
    assert sorted(done) == ["other", "second"]
    assert owner.running() == set()


def test_cancel_and_cancel_all_report_nothing(qloop: qasync.QEventLoop) -> None:
    failures = Recorder()
    owner = TaskOwner("test", failures)
    gate, done = asyncio.Event(), []
    a = owner.start("a", wait, gate, done, "a")
    b = owner.start("b", wait, gate, done, "b")
    c = owner.start("c", wait, gate, done, "c")
    owner.cancel("a", "not running")
    assert owner.running() == {"b", "c"}
    owner.cancel_all()
    settle(qloop)
    assert a.cancelled() and b.cancelled() and c.cancelled()
    assert owner.running() == set()
    assert done == [] and failures.failures == []


def test_a_destroyed_parent_cancels_every_task(qloop: qasync.QEventLoop) -> None:
    parent = QObject()
    owner = TaskOwner("test", Recorder(), parent)
    task = owner.start("list", wait, asyncio.Event(), [], "never")
    settle(qloop)
    parent.deleteLater()
    del parent
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
    settle(qloop)
    assert task.cancelled()
    assert owner.running() == set()


def test_xtmail_errors_are_reported_and_bugs_logged_with_their_traceback(
    qloop: qasync.QEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    failures = Recorder()
    owner = TaskOwner("test", failures)
    lost = DatabaseUnavailable("The connection to the database was lost.")
    bug = RuntimeError("a bug")
    with caplog.at_level(logging.INFO, logger="xtmail.widgets.tasks"):
        qloop.run_until_complete(owner.start("list", fail, lost))
        qloop.run_until_complete(owner.start("open", fail, bug))
    assert failures.failures == [("list", lost), ("open", bug)]
    assert [r.exc_info[1] if r.exc_info else None for r in caplog.records] == [bug]
    assert caplog.records[0].levelno == logging.ERROR
    assert owner.running() == set()


def test_without_a_handler_failures_are_logged(
    qloop: qasync.QEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    owner = TaskOwner("test")
    with caplog.at_level(logging.WARNING, logger="xtmail.widgets.tasks"):
        qloop.run_until_complete(owner.start("heading", fail, ConfigError("No host.")))
    assert "heading failed: No host." in caplog.text


def test_failure_text() -> None:
    lost = DatabaseUnavailable("The connection to the database was lost.",
                               hint="Check the network.")
    assert failure_text(lost, RETRY) == (
        "The connection to the database was lost.\nCheck the network.\n" + RETRY
    )
    assert failure_text(lost) == lost.user_text()
    conflict = DatabaseConflict("The database stopped a transaction.", hint="Try again.")
    assert failure_text(conflict, RETRY) == f"{conflict.user_text()}\n{RETRY}"
    # Trying again does not mend a message deleted meanwhile, a missing privilege or setting.
    gone = DatabaseError("Message 7 no longer exists.")
    assert failure_text(gone, RETRY) == "Message 7 no longer exists."
    denied = PermissionDenied("Not allowed.", hint="Ask your administrator.")
    assert failure_text(denied, RETRY) == "Not allowed.\nAsk your administrator."
    assert failure_text(ConfigError("No host.", hint="Set one."), RETRY) == "No host.\nSet one."
    # Anything else is a bug: general words, the details are in the log.
    assert failure_text(KeyError("eml_id"), RETRY) == f"{UNEXPECTED_TEXT}\n{RETRY}"
    assert "eml_id" not in failure_text(KeyError("eml_id"))


def test_a_cancelled_task_is_held_until_it_has_unwound(qloop: qasync.QEventLoop) -> None:
    """Cancelling starts the task's clean-up (a query being cancelled, a connection going
    back to its pool), which may await something only the task itself holds. The owner
    keeps the task alive until that has run, so it is never collected half-way."""
    cleaned: list[str] = []
    gates: list[weakref.ref[asyncio.Future[None]]] = []

    async def work() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            gates.append(weakref.ref(gate))
            await gate  # held by this task only, like a driver's pending reply
            cleaned.append("done")

    owner = TaskOwner("test")
    task = owner.start("load", work)
    qloop.run_until_complete(asyncio.sleep(0))
    owner.cancel("load")
    qloop.run_until_complete(asyncio.sleep(0))  # the task runs into its clean-up
    assert not owner.is_running("load")
    holder = weakref.ref(task)
    del task
    gc.collect()
    held, gate = holder(), gates[0]()
    assert held is not None and gate is not None, "the task was dropped while unwinding"
    gate.set_result(None)
    qloop.run_until_complete(asyncio.wait([held]))
    assert cleaned == ["done"]


def test_mends_by_itself_only_where_waiting_helps() -> None:
    assert mends_by_itself(DatabaseUnavailable("The database is not answering."))
    assert not mends_by_itself(DatabaseConflict("Lost a race."))  # retried at once instead
    assert not mends_by_itself(PermissionDenied("Not allowed."))
    assert not mends_by_itself(KeyError("eml_id"))


def test_the_retry_countdown_ticks_waits_longer_each_time_and_resets(
    qloop: qasync.QEventLoop,
) -> None:
    countdown = RetryCountdown(delays=(2, 3))
    heard: list[object] = []
    countdown.ticked.connect(heard.append)
    countdown.due.connect(lambda: heard.append("due"))

    async def until_due() -> None:
        due = asyncio.Event()
        countdown.due.connect(due.set)
        await due.wait()

    started = time.monotonic()
    assert countdown.schedule() == 2
    assert countdown.remaining() == 2
    qloop.run_until_complete(until_due())
    assert 1.9 <= time.monotonic() - started < 3.0
    assert heard == [2, 1, "due"]
    # The next failure waits longer; the last delay repeats.
    assert countdown.schedule() == 3
    countdown.stop()
    assert countdown.schedule() == 3
    assert heard[3:] == [3, 3]
    # A success starts again from the first delay; stopped, nothing comes.
    countdown.reset()
    assert not countdown.isActive() and countdown.remaining() == 0
    assert countdown.schedule() == 2
    countdown.stop()
    heard.clear()
    qloop.run_until_complete(asyncio.sleep(1.2))
    assert heard == []
