"""Dialogs for the host application: Attach Email, and the Email page of User Preferences.

The names are exported lazily: ``import xtmail.dialogs`` loads no Qt widgets and no
database driver, so Qt Designer and light tools can import the package cheaply; each class
is imported on first use (``from xtmail.dialogs import AttachEmailDialog``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .attach_email import AttachEmailDialog
    from .email_prefs import EmailPreferencesPage

__all__ = ["AttachEmailDialog", "EmailPreferencesPage"]

#: Exported name -> module (in this package) defining it.
_EXPORTS = {
    "AttachEmailDialog": "attach_email",
    "EmailPreferencesPage": "email_prefs",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
