"""Handing a draft to the user's mail program: a ``mailto:`` URL when it fits, else whole.

A ``mailto:`` URL is the one form every mail program on every desktop opens as a new
message, but it has to pass through the operating system, and Windows' ShellExecute and
Outlook cut it near 2,000 characters. A reply quoting a long message does not fit. The
research behind the rule below, with its sources, is in docs/compose.md; in short:

1. The draft fits a ``mailto:`` URL of :data:`MAILTO_LIMIT` characters: that URL, as
   before (every platform).
2. It does not: the complete draft, the best way the platform offers.

   * Linux and other Unix desktops, Thunderbird being the desktop's mail program
     (``xdg-mime query default x-scheme-handler/mailto``, as ``xdg-email`` decides it)
     and its program on ``PATH``: the draft as an ``.eml`` file marked ``X-Unsent: 1``,
     passed to ``thunderbird``, which opens such a file as a draft in a compose window,
     In-Reply-To and References kept (its ``-compose`` option has no field for them).
     A Thunderbird under ``/snap`` is passed over: its sandbox has a /tmp of its own and
     would not find the file.
   * Windows: the ``.eml`` file handed to the desktop, i.e. to the program for ``.eml``
     files; Outlook and Thunderbird open a file marked ``X-Unsent: 1`` as a new message.
   * macOS, and Linux with another mail program (Evolution, KMail, Geary...): a
     ``mailto:`` URL of up to :data:`LONG_MAILTO_LIMIT` characters. There the URL reaches
     the mail program as an Apple event (macOS) or as one command-line argument (Linux,
     where one argument may hold 128 KiB), not through ShellExecute; Apple Mail opens an
     ``.eml`` file as a received message, not as a draft.
3. Nothing took the complete draft (no such program, the file could not be written, the
   desktop refused it, longer still): the shortened ``mailto:`` URL of
   :func:`~xtmail.widgets.compose.shortened_mailto_url`, and :class:`Handover` says how
   much of the text it kept, so the tab tells the user and offers the full text for the
   clipboard. When not even the recipients and subject fit, no mail program is started
   and the tab says so.

:class:`MailProgram` is what the Email tab uses (``EmailTab.setMailProgram``); the
platform it acts for is a constructor argument, so a test can take the Windows or the
Linux road on any machine, with a small real program on ``PATH`` standing in for
Thunderbird. Draft files are written with :class:`~xtmail.widgets.desktop.PrivateFiles`
(mode 0600 in a private folder), like the messages the tab opens.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from PyQt6.QtCore import QProcess, QUrl

from xtmail.widgets.compose import (
    Draft,
    MailtoTooLongError,
    draft_eml,
    mailto_url,
    shortened_mailto_url,
)
from xtmail.widgets.desktop import Desktop, DesktopError, PrivateFiles

__all__ = [
    "LONG_MAILTO_LIMIT",
    "MAILTO_LIMIT",
    "Handover",
    "MailProgram",
]

log = logging.getLogger(__name__)

#: The longest ``mailto:`` URL handed over as the first choice: Windows' ShellExecute stops
#: near 2,048 characters and Outlook cuts long mailto: URLs.
MAILTO_LIMIT: Final = 2000
#: The longest ``mailto:`` URL handed over where it does not pass through ShellExecute
#: (macOS, Linux): under Linux's limit for one command-line argument (MAX_ARG_STRLEN,
#: 32 pages of 4 KiB), which the URL meets on its way to the mail program.
LONG_MAILTO_LIMIT: Final = 120_000
#: Names under which Thunderbird is installed, and appears in its .desktop file's name.
THUNDERBIRD_NAMES: Final = ("thunderbird", "betterbird", "icedove")

_NO_MAIL_PROGRAM = DesktopError(
    "No mail program is set up to write mail.",
    hint="Choose a default mail program in the system settings, then try again.",
)


@dataclass(frozen=True, slots=True)
class Handover:
    """How a draft went to the mail program.

    ``how``: ``"mailto"`` (the URL as the first choice), ``"program"`` (the ``.eml`` file
    passed to Thunderbird), ``"file"`` (the ``.eml`` file handed to the desktop),
    ``"long-mailto"`` (a longer URL), ``"shortened"`` (the shortened URL: the quote was
    cut), ``"none"`` (nothing was started: not even the headers fit). ``target`` is the URL
    or the file's path. When shortened, ``kept_lines`` of the ``total_lines`` body lines
    went over (the last one perhaps cut at a word).
    """

    how: str
    target: str = ""
    kept_lines: int = 0
    total_lines: int = 0

    @property
    def complete(self) -> bool:
        """Whether the whole draft went over."""
        return self.how in ("mailto", "program", "file", "long-mailto")

    def url(self) -> str:
        """What was handed over, as a URL (a file's ``file:`` URL); "" for none."""
        if self.how in ("program", "file"):
            return QUrl.fromLocalFile(self.target).toString()
        return self.target


class MailProgram:
    """Hands drafts to the user's mail program (see the module docstring for the rule).

    ``platform`` is a ``sys.platform`` value (the running one by default).
    """

    def __init__(self, platform: str | None = None) -> None:
        self._platform = platform or sys.platform

    def platform(self) -> str:
        return self._platform

    async def compose(self, draft: Draft, desktop: Desktop, files: PrivateFiles) -> Handover:
        """Hand ``draft`` over; raise :class:`~xtmail.widgets.desktop.DesktopError` when the
        desktop has no mail program at all."""
        try:
            url = mailto_url(draft, max_length=MAILTO_LIMIT, shorten=False)
        except MailtoTooLongError:
            pass
        else:
            if not desktop.openUrl(QUrl(url)):
                raise _NO_MAIL_PROGRAM
            return Handover("mailto", url)
        whole = await self._complete(draft, desktop, files)
        if whole is not None:
            return whole
        try:
            url, kept, total = shortened_mailto_url(draft, max_length=MAILTO_LIMIT)
        except MailtoTooLongError:
            return Handover("none")
        if not desktop.openUrl(QUrl(url)):
            raise _NO_MAIL_PROGRAM
        return Handover("shortened", url, kept, total)

    async def _complete(
        self, draft: Draft, desktop: Desktop, files: PrivateFiles
    ) -> Handover | None:
        """The whole draft handed over the platform's way, or None when that failed."""
        if self._platform.startswith("win"):
            path = await self._write(draft, files)
            if path is not None and desktop.openUrl(QUrl.fromLocalFile(str(path))):
                return Handover("file", str(path))
            return None
        if self._platform != "darwin":
            program = await asyncio.to_thread(self.thunderbird)
            if program is not None:
                path = await self._write(draft, files)
                if path is not None and self.start(program, [str(path)]):
                    return Handover("program", str(path))
        try:
            url = mailto_url(draft, max_length=LONG_MAILTO_LIMIT, shorten=False)
        except MailtoTooLongError:
            return None
        if desktop.openUrl(QUrl(url)):
            return Handover("long-mailto", url)
        return None

    async def _write(self, draft: Draft, files: PrivateFiles) -> Path | None:
        try:
            data = draft_eml(draft)
            return await asyncio.to_thread(
                files.write, data, stem=draft.subject or "draft", suffix=".eml"
            )
        except OSError:
            # Said to the user as "shortened"; the reason is for whoever reads the log.
            log.warning("the draft could not be written for the mail program", exc_info=True)
            return None

    def thunderbird(self) -> str | None:
        """Thunderbird's program when it is the desktop's mail program, else None.

        Blocking (runs ``xdg-mime``): call it in a worker thread.
        """
        xdg_mime = shutil.which("xdg-mime")
        if xdg_mime is None:
            return None
        try:
            answer = (
                subprocess.run(  # noqa: S603 (a fixed program and arguments)
                    [xdg_mime, "query", "default", "x-scheme-handler/mailto"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                    check=False,
                )
                .stdout.strip()
                .lower()
            )
        except (OSError, subprocess.SubprocessError):
            log.info("xdg-mime could not say which program writes mail", exc_info=True)
            return None
        for name in THUNDERBIRD_NAMES:
            if name in answer:
                program = shutil.which(name)
                if program is not None and not os.path.realpath(program).startswith("/snap/"):
                    return program
        return None

    def start(self, program: str, arguments: list[str]) -> bool:
        """Start ``program`` detached from this process; whether it started."""
        started, _pid = QProcess.startDetached(program, arguments)
        return bool(started)
