"""Qt Designer plugin for ContactMailLink (metadata only; the behaviour is in _support)."""

from __future__ import annotations

try:
    from . import _support
except ImportError:  # Qt Designer loads plugin files as top-level modules
    import _support  # type: ignore[no-redef,import-not-found]

_support.ensure_importable()


class ContactMailLinkPlugin(_support.WidgetPlugin):
    widget_class = "ContactMailLink"
    widget_module = "xtmail.widgets.contact_mail_link"
    object_name = "contactMailLink"
    icon_file = "contact_mail_link.svg"
    tooltip = "A contact's address as a link: composes mail carrying the document's reference"
