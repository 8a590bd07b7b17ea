"""The owner of a view's background work, and what a view says when that work fails.

Every coroutine a widget or dialog starts (a database read, an action, a connection test)
runs as a task of the widget's :class:`TaskOwner`: one task per purpose, a newer one
replacing the older, all of them cancelled when the widget closes or is destroyed, and
every failure reported. Nothing is fire-and-forget: a task nobody holds can be collected
while it runs, and a failure nobody hears about leaves the user waiting.

Views receive only :class:`~xtmail.sync.errors.XtmailError` from the layers below; those
say what went wrong and what to do. Anything else is a bug: it is logged with its traceback
and the user is told, in general words, that it happened.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final

from PyQt6.QtCore import QObject, QTimer, pyqtSignal

from xtmail.sync.errors import Reaction, XtmailError

__all__ = [
    "RETRY_DELAYS",
    "UNEXPECTED_TEXT",
    "FailureHandler",
    "RetryCountdown",
    "TaskOwner",
    "failure_text",
    "mends_by_itself",
]

log = logging.getLogger(__name__)

#: What a view shows for a failure that is not an xtmail error (a bug).
UNEXPECTED_TEXT: Final = "Something went wrong inside xtmail (details in the log)."

#: Told the purpose and the exception of a task that failed; a cancelled task tells nothing.
FailureHandler = Callable[[str, Exception], None]

#: A coroutine function a task runs; what it returns is not used.
_Work = Callable[..., Coroutine[Any, Any, object]]


def failure_text(exc: BaseException, retry: str = "") -> str:
    """What to tell the user about a failed task: the error's own text and what to do.

    ``retry`` (for example "Press Refresh (F5) to try again.") is added on a line of its
    own when trying again may help: after an error whose ``reaction`` is to retry (a lost
    connection, a lost race), and after a bug. An error that stops until someone changes
    something (a setting, a privilege, a message deleted meanwhile) says what to do itself.
    """
    if isinstance(exc, XtmailError):
        text = exc.user_text()
        if exc.reaction is Reaction.STOP:
            return text
    else:
        text = UNEXPECTED_TEXT
    return f"{text}\n{retry}" if retry else text


def mends_by_itself(exc: BaseException) -> bool:
    """Whether the same work, tried again later unchanged, may succeed: the database or
    the network is away (restarting, frozen, unreachable) and will be back."""
    return isinstance(exc, XtmailError) and exc.reaction is Reaction.RETRY_LATER


#: Seconds before each automatic retry after consecutive failures; the last one repeats.
RETRY_DELAYS: Final = (5, 10, 20, 30)


class RetryCountdown(QObject):
    """Counts the seconds down to an automatic retry after a failure that may mend by
    itself; each further failure waits longer (:data:`RETRY_DELAYS`), a success starts
    again from the first delay (:meth:`reset`).

    Signals:

    * ``ticked(int)``: this many seconds are left (also emitted when the count starts).
    * ``due()``: time to try again; the count has stopped.
    """

    ticked = pyqtSignal(int)
    due = pyqtSignal()

    def __init__(self, parent: QObject | None = None,
                 delays: tuple[int, ...] = RETRY_DELAYS) -> None:
        super().__init__(parent)
        self._delays = delays or RETRY_DELAYS
        self._failures = 0
        self._left = 0
        self._timer = QTimer(self)
        self._timer.setInterval(1000)
        self._timer.timeout.connect(self._tick)

    def schedule(self) -> int:
        """Start counting down to the next retry; return its delay in seconds."""
        self._left = self._delays[min(self._failures, len(self._delays) - 1)]
        self._failures += 1
        self._timer.start()
        self.ticked.emit(self._left)
        return self._left

    def stop(self) -> None:
        """Stop counting; the next :meth:`schedule` still waits longer."""
        self._timer.stop()

    def reset(self) -> None:
        """Stop counting and forget the failures (the work succeeded)."""
        self._timer.stop()
        self._failures = 0

    def isActive(self) -> bool:
        return self._timer.isActive()

    def remaining(self) -> int:
        """Seconds left before the retry (0 when none is counted down)."""
        return self._left if self._timer.isActive() else 0

    def _tick(self) -> None:
        self._left -= 1
        if self._left > 0:
            self.ticked.emit(self._left)
            return
        self._timer.stop()
        self.due.emit()


class TaskOwner:
    """Runs a view's coroutines on the current (qasync) loop, at most one per purpose.

    ``name`` names the view in task names and in the log. ``on_failure(purpose, exc)`` is
    called on the GUI thread when a task raises (bugs are logged with their traceback
    first); without it, failures are only logged. With a ``parent``, every task is
    cancelled when the parent is destroyed; the parent cancels them itself on close
    (:meth:`cancel_all`).
    """

    def __init__(
        self,
        name: str,
        on_failure: FailureHandler | None = None,
        parent: QObject | None = None,
    ) -> None:
        self._name = name
        self._on_failure = on_failure
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Cancelled tasks still unwinding (a query being cancelled, a connection going back
        # to its pool): held until they finish, or they could be collected half-way.
        self._cancelled: set[asyncio.Task[None]] = set()
        if parent is not None:
            parent.destroyed.connect(self.cancel_all)

    def start(self, purpose: str, func: _Work, *args: Any) -> asyncio.Task[None]:
        """Run ``func(*args)`` as the task for ``purpose``, cancelling the one before it."""
        self.cancel(purpose)
        # The coroutine is created inside the task, so a task cancelled before its first
        # step leaves no never-awaited coroutine behind.
        loop = asyncio.get_event_loop()
        task = loop.create_task(self._run(purpose, func, args), name=f"{self._name} {purpose}")
        # Held until done: the loop keeps only a weak reference to a task.
        self._tasks[purpose] = task
        task.add_done_callback(functools.partial(self._forget, purpose))
        return task

    async def _run(self, purpose: str, func: _Work, args: tuple[Any, ...]) -> None:
        try:
            await func(*args)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not isinstance(exc, XtmailError):
                log.error("%s: %s failed", self._name, purpose, exc_info=exc)
            if self._on_failure is not None:
                self._on_failure(purpose, exc)
            elif isinstance(exc, XtmailError):
                log.warning("%s: %s failed: %s", self._name, purpose, exc)

    def _forget(self, purpose: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(purpose) is task:
            del self._tasks[purpose]

    def cancel(self, *purposes: str) -> None:
        """Cancel the tasks for ``purposes`` (those not running are ignored)."""
        for purpose in purposes:
            task = self._tasks.pop(purpose, None)
            if task is not None and not task.done():
                self._cancelled.add(task)
                task.add_done_callback(self._cancelled.discard)
                task.cancel()

    def cancel_all(self, *_: object) -> None:
        """Cancel every task (also a slot, for ``destroyed`` and ``finished``)."""
        self.cancel(*list(self._tasks))

    def running(self) -> set[str]:
        """The purposes with a task under way."""
        return set(self._tasks)

    def is_running(self, purpose: str) -> bool:
        return purpose in self._tasks
