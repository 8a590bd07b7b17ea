"""What the three plugin modules share: making ``xtmail`` importable, icons, the group.

Qt Designer's Python loader imports every ``*plugin.py`` file on PYQTDESIGNERPATH as a
top-level module, under the Python that Designer embeds (on Debian: the system Python with
PyQt6 6.4.2), which usually has no xtmail installed. From a source checkout this module
builds a small folder of symbolic links that maps the import name ``xtmail`` onto the
checkout's folders (and, if the checkout has a .venv, its pure-Python qasync) and puts it on
``sys.path``. Nothing else: the plugins hold metadata only.
"""

from __future__ import annotations

import glob
import importlib
import os
import sys
import tempfile
from pathlib import Path

from PyQt6.QtDesigner import QDesignerFormEditorInterface, QPyDesignerCustomWidgetPlugin
from PyQt6.QtGui import QIcon
from PyQt6.QtWidgets import QWidget

GROUP = "xTuple Email"
HERE = Path(__file__).resolve().parent
PACKAGES = ("sync", "widgets", "dialogs", "designer_plugins")


def ensure_importable() -> None:
    try:
        import xtmail.widgets  # noqa: F401
    except ImportError:
        pass
    else:
        return
    repo = HERE.parent
    tree = link_folder()
    (tree / "xtmail").mkdir(parents=True, exist_ok=True)
    links = {tree / "xtmail" / name: repo / name for name in PACKAGES}
    venv_qasync = sorted(glob.glob(str(repo / ".venv/lib/python3*/site-packages/qasync")))
    if venv_qasync:
        links[tree / "qasync"] = Path(venv_qasync[-1])
    for link, target in links.items():
        if link.is_symlink() and link.resolve() == target.resolve():
            continue
        if link.is_symlink():
            link.unlink()
        link.symlink_to(target, target_is_directory=True)
    sys.path.insert(0, str(tree))


def link_folder() -> Path:
    """The folder of links, one per user: by user id on POSIX, by login name on Windows
    (which has no ``os.getuid``)."""
    getuid = getattr(os, "getuid", None)
    if getuid is not None:
        owner = str(getuid())
    else:
        import getpass

        owner = "".join(c for c in getpass.getuser() if c.isalnum() or c in "-_") or "user"
    return Path(tempfile.gettempdir()) / f"xtmail-designer-{owner}"


def trace(event: str) -> None:
    """Note a plugin event in $XTMAIL_DESIGNER_TRACE, if set: how the tests see that the real
    Designer loaded a plugin and built its widget."""
    path = os.environ.get("XTMAIL_DESIGNER_TRACE")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(event + "\n")


def icon_path(name: str) -> str:
    return str(HERE / "icons" / name)


class WidgetPlugin(QPyDesignerCustomWidgetPlugin):
    """The plugin interface, filled from the class attributes of each widget's plugin.

    Plugin modules refer to this class as ``_support.WidgetPlugin``, never import its name:
    Designer's loader instantiates every plugin class it finds in a plugin module.
    """

    widget_class = ""
    widget_module = ""
    object_name = ""
    icon_file = ""
    tooltip = ""
    #: Extra XML inside <widget> of domXml (a default geometry, properties).
    dom_properties = ""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._initialized = False

    def initialize(self, core: QDesignerFormEditorInterface | None) -> None:
        self._initialized = True
        trace(f"initialize {self.name()}")

    def isInitialized(self) -> bool:
        return self._initialized

    def createWidget(self, parent: QWidget | None) -> QWidget:
        cls = getattr(importlib.import_module(self.widget_module), self.widget_class)
        widget: QWidget = cls(parent)
        trace(f"createWidget {self.name()} {type(widget).__name__}")
        return widget

    def name(self) -> str:
        return self.widget_class

    def group(self) -> str:
        return GROUP

    def icon(self) -> QIcon:
        return QIcon(icon_path(self.icon_file))

    def toolTip(self) -> str:
        return self.tooltip

    def whatsThis(self) -> str:
        return self.tooltip

    def isContainer(self) -> bool:
        return False

    def includeFile(self) -> str:
        return self.widget_module

    def domXml(self) -> str:
        trace(f"domXml {self.name()}")
        return (
            f'<widget class="{self.widget_class}" name="{self.object_name}">'
            f"{self.dom_properties}</widget>"
        )
