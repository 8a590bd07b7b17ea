"""The boundary to the user's desktop: opening URLs and files, and private temporary files.

The Email tab and the contact mail link hand ``mailto:`` URLs and ``.eml`` files to the
user's own mail program. They do it through a small object passed in, so a test
can record what would have reached the operating system instead of starting a mail program.
:class:`SystemDesktop` is the real one; it only wraps ``QDesktopServices.openUrl``.

Temporary message files hold mail that may be confidential, so they live in a directory
only the user can enter (mode 0700) and are themselves readable by the user alone (0600).
They are kept until the process exits: the mail program reads the file some time after we
hand it over (it may first have to start), and deleting it earlier would race with that.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Protocol

from PyQt6.QtCore import QUrl
from PyQt6.QtGui import QDesktopServices

from xtmail.sync.errors import XtmailError

__all__ = [
    "Desktop",
    "DesktopError",
    "PrivateFiles",
    "SystemDesktop",
    "default_private_files",
    "open_url",
    "safe_file_name",
]


class Desktop(Protocol):
    """What the widgets need of the desktop: open a URL with the user's chosen program."""

    def openUrl(self, url: QUrl) -> bool:
        """Hand ``url`` to the desktop; False when no program accepted it."""
        ...


class SystemDesktop:
    """The real desktop: ``QDesktopServices.openUrl``."""

    def openUrl(self, url: QUrl) -> bool:
        return QDesktopServices.openUrl(url)


_UNSAFE_NAME = re.compile(r"[^\w .-]+")


def _slug(text: str, limit: int = 40) -> str:
    # A readable file name helps the user recognise the message in the mail program's title
    # bar; everything that is not a plain word character is dropped so no path can result.
    cleaned = _UNSAFE_NAME.sub("", text).strip(" .")
    return re.sub(r"\s+", " ", cleaned)[:limit].strip(" .")


_UNSAFE_SUFFIX = re.compile(r"[^\w-]+")


def safe_file_name(name: str, fallback: str = "attachment") -> str:
    """``name`` as a file name that is no path, no hidden file and not too long: its stem
    made readable as in :class:`PrivateFiles`, its extension kept when it is plain."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, suffix = base.rpartition(".")
    if not dot:
        stem, suffix = base, ""
    suffix = _UNSAFE_SUFFIX.sub("", suffix)[:16]
    stem = _slug(stem, 80) or fallback
    return f"{stem}.{suffix}" if suffix else stem


class PrivateFiles:
    """Files readable by the user alone, in a private directory removed at process exit.

    ``parent`` is where the private directory is made (the system's temporary directory
    when ``None``). The directory is created on the first :meth:`write`.
    """

    def __init__(self, parent: str | os.PathLike[str] | None = None) -> None:
        self._parent = parent
        self._folder: Path | None = None

    @property
    def folder(self) -> Path | None:
        """The private directory, once a file has been written."""
        return self._folder

    def _ensure_folder(self) -> Path:
        if self._folder is None:
            # mkdtemp creates the directory with mode 0700 whatever the umask.
            self._folder = Path(tempfile.mkdtemp(prefix="xtmail-", dir=self._parent))
            weakref.finalize(self, shutil.rmtree, self._folder, ignore_errors=True)
        return self._folder

    def write(self, data: bytes, *, stem: str, suffix: str) -> Path:
        """Write ``data`` to a new file (mode 0600) named after ``stem``; return its path."""
        folder = self._ensure_folder()
        prefix = (_slug(stem) or "message") + "-"
        # mkstemp opens with O_EXCL and mode 0600, so no other user can read or swap it.
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return Path(name)

    def write_named(self, data: bytes, name: str) -> Path:
        """Write ``data`` to a file called ``name`` (made safe) in a new private
        subdirectory, so the program that opens it shows the name the sender gave it."""
        folder = Path(tempfile.mkdtemp(prefix="part-", dir=self._ensure_folder()))
        path = folder / safe_file_name(name)
        # O_EXCL in a directory only we can enter: nothing can be there or be swapped in.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return path

    def cleanup(self) -> None:
        """Remove the private directory and everything in it now."""
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


_default: PrivateFiles | None = None


def default_private_files() -> PrivateFiles:
    """The process's shared :class:`PrivateFiles`, used when a widget was given none.

    Shared so that every tab's message files share one directory that lives as long as the
    process (see the module docstring for why files outlive the tab that wrote them).
    """
    global _default
    if _default is None:
        _default = PrivateFiles()
    return _default


class DesktopError(XtmailError):
    """The desktop found no program for what we handed it, or we could not write it."""


def open_url(desktop: Desktop, url: QUrl, error: DesktopError) -> None:
    """Hand ``url`` to ``desktop``; raise ``error`` when no program took it."""
    if not desktop.openUrl(url):
        raise error
