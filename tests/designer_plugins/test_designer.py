"""The Designer plugins in the real Qt Designer, and a .ui form with every widget."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from PyQt6 import uic
from PyQt6.QtWidgets import QWidget
from pytestqt.qtbot import QtBot

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "designer_plugins"
FORM = Path(__file__).with_name("all_widgets.ui")
WIDGETS = ("EmailTab", "ContactMailLink", "EmailPreferencesPage")
DESIGNER_CANDIDATES = ("/usr/lib/qt6/bin/designer", "designer6", "designer-qt6", "designer")


def _designer() -> str:
    for candidate in DESIGNER_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    pytest.fail("Qt Designer is not installed: apt-get install designer-qt6 "
                "python3-pyqt6.qtdesigner")


def test_real_designer_loads_every_plugin_and_builds_its_widget(tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    env = {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "PYQTDESIGNERPATH": str(PLUGINS),
        "XTMAIL_DESIGNER_TRACE": str(trace),
        "HOME": str(tmp_path),  # Designer writes its settings there
    }
    # Designer embeds the system Python: the venv must not leak into it.
    for name in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(name, None)
    env["PATH"] = ":".join(p for p in env["PATH"].split(":") if ".venv" not in p)
    process = subprocess.Popen(
        [_designer(), str(FORM)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        expected = {f"createWidget {w} {w}" for w in WIDGETS} | {
            f"initialize {w}" for w in WIDGETS}
        deadline = time.monotonic() + 60
        seen: set[str] = set()
        while time.monotonic() < deadline and not expected <= seen:
            if process.poll() is not None:
                break
            if trace.exists():
                seen = set(trace.read_text().splitlines())
            time.sleep(0.2)
    finally:
        process.terminate()
        try:
            output, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert expected <= seen, (
        f"missing: {sorted(expected - seen)}\nDesigner said:\n"
        + output.decode(errors="replace")[-3000:]
    )


def test_ui_form_with_every_widget_loads_with_uic(qtbot: QtBot) -> None:
    window = uic.loadUi(str(FORM))
    assert isinstance(window, QWidget)
    qtbot.addWidget(window)
    window.show()
    for name, cls in (("emailTab", "EmailTab"), ("contactMailLink", "ContactMailLink"),
                      ("emailPreferencesPage", "EmailPreferencesPage")):
        widget = window.findChild(QWidget, name)
        assert widget is not None and type(widget).__name__ == cls
        assert widget.isVisible()
        assert type(widget).__module__.startswith("xtmail.")
