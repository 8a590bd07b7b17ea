"""Qt Designer plugin for EmailTab (metadata only; the behaviour is in _support)."""

from __future__ import annotations

try:
    from . import _support
except ImportError:  # Qt Designer loads plugin files as top-level modules
    import _support  # type: ignore[no-redef,import-not-found]

_support.ensure_importable()


class EmailTabPlugin(_support.WidgetPlugin):
    widget_class = "EmailTab"
    widget_module = "xtmail.widgets.email_tab"
    object_name = "emailTab"
    icon_file = "email_tab.svg"
    tooltip = "The mail tied to an ERP document: list, preview, New, Reply, Attach and more"
    dom_properties = (
        '<property name="geometry"><rect><x>0</x><y>0</y>'
        "<width>640</width><height>400</height></rect></property>"
    )
