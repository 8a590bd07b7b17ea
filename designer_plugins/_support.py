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
import os
import sys
import tempfile
from pathlib import Path

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
    tree = Path(tempfile.gettempdir()) / f"xtmail-designer-{os.getuid()}"
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


def trace(event: str) -> None:
    """Note a plugin event in $XTMAIL_DESIGNER_TRACE, if set: how the tests see that the real
    Designer loaded a plugin and built its widget."""
    path = os.environ.get("XTMAIL_DESIGNER_TRACE")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(event + "\n")


def icon_path(name: str) -> str:
    return str(HERE / "icons" / name)
