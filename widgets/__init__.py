"""Embeddable widgets: the Email tab, the contact mail link, the message list model.

Names are imported on first use (PEP 562), so ``import xtmail.widgets`` loads no Qt module
and no database driver: Qt Designer imports widget packages in its own Python.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xtmail.widgets.contact_mail_link import ContactMailLink
    from xtmail.widgets.desktop import Desktop, PrivateFiles, SystemDesktop
    from xtmail.widgets.email_tab import EmailTab
    from xtmail.widgets.message_model import MessageListModel

__all__ = [
    "ContactMailLink",
    "Desktop",
    "EmailTab",
    "MessageListModel",
    "PrivateFiles",
    "SystemDesktop",
]

_WHERE = {
    "ContactMailLink": "contact_mail_link",
    "Desktop": "desktop",
    "EmailTab": "email_tab",
    "MessageListModel": "message_model",
    "PrivateFiles": "desktop",
    "SystemDesktop": "desktop",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
