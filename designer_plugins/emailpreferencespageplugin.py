"""Qt Designer plugin for EmailPreferencesPage (metadata only; the behaviour is in _support)."""

from __future__ import annotations

try:
    from . import _support
except ImportError:  # Qt Designer loads plugin files as top-level modules
    import _support  # type: ignore[no-redef,import-not-found]

_support.ensure_importable()


class EmailPreferencesPagePlugin(_support.WidgetPlugin):
    widget_class = "EmailPreferencesPage"
    widget_module = "xtmail.dialogs.email_prefs"
    object_name = "emailPreferencesPage"
    icon_file = "email_preferences.svg"
    tooltip = "The Email page of User Preferences: IMAP account, folders to synchronize, status"
