"""The Email tab's formatted view: HTML mail sanitised (nh3), nothing fetched, links shown
before they are followed and opened only on click, the choice remembered. Real database
(both kinds of xTuple database), offscreen, clicked as a user clicks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import qasync
from PyQt6.QtCore import QEvent, QPoint, QSettings, Qt
from PyQt6.QtGui import QTextCursor, QTextDocument
from PyQt6.QtWidgets import QApplication, QLabel, QToolButton
from pytestqt.qtbot import QtBot

from tests.helpers.mail import make_message
from tests.helpers.maildata import MailData, RecordingDesktop
from tests.helpers.qt import RunUntil
from xtmail.sync.db.mailstore import MailStore, safe_html
from xtmail.widgets.desktop import PrivateFiles
from xtmail.widgets.email_tab import EmailTab
from xtmail.widgets.message_model import SUBJECT

pytestmark = pytest.mark.qt_log_ignore("^This plugin does not support")

HTML = (
    "<html><head><style>p {color: red}</style>"
    "<script>document.write('ran')</script></head><body>"
    "<p>Your order <b>50123</b> has shipped.</p>"
    "<p><a href='https://shop.example/track?o=50123'>Track your order</a></p>"
    "<p><a href='javascript:alert(1)'>Click me</a></p>"
    "<img src='https://tracker.example/pixel.gif?u=ada' alt='Shop logo'>"
    "<form action='https://phish.example/'><input name='password'></form>"
    "<p onclick='steal()' style='background:url(https://tracker.example/bg)'>Thanks!</p>"
    "</body></html>"
)


@pytest.fixture
def db_dsn(xtuple_dsn: str) -> str:
    """Both kinds of xTuple database, as the owner and as an ordinary user."""
    return xtuple_dsn


@pytest.fixture
def settings(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "xtmail.ini"), QSettings.Format.IniFormat)


def make_tab(store: MailStore, desktop: RecordingDesktop, tmp_path: Path,
             settings: QSettings) -> EmailTab:
    widget = EmailTab()
    widget.setDesktop(desktop)
    widget.setPrivateFiles(PrivateFiles(tmp_path))
    widget.setSettings(settings)
    widget.resize(900, 700)
    widget.show()
    widget.setStore(store)
    return widget


@pytest.fixture
def tabs(qloop: qasync.QEventLoop) -> Iterator[list[EmailTab]]:
    made: list[EmailTab] = []
    yield made
    for widget in made:
        widget.close()
    qloop.run_until_complete(asyncio.sleep(0))
    for widget in made:
        widget.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)


@pytest.fixture
def html_mail(mail_data: MailData) -> tuple[int, int]:
    so = mail_data.sales_order("50123")
    raw = make_message(subject="Shipped [xtref:S-50123]", body=HTML).replace(
        b"Content-Type: text/plain", b"Content-Type: text/html")
    (eml_id,) = mail_data.import_raw([raw])
    return so, eml_id


def open_message(qtbot: QtBot, tab: EmailTab, run_until: RunUntil, so: int) -> None:
    tab.setDocument("S", so)
    run_until(lambda: not tab.isBusy() and tab.model().rowCount() == 1)
    view = tab.view()
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton,
                     pos=view.visualRect(tab.model().index(0, SUBJECT)).center())
    run_until(lambda: tab.preview().toPlainText() != "" and not tab.isBusy())


def test_sanitiser_keeps_text_and_safe_links_only() -> None:
    clean = safe_html(HTML)
    for gone in ("<script", "document.write", "<style", "<form", "<input", "javascript:",
                 "tracker.example", "onclick", "phish.example"):
        assert gone not in clean, gone
    assert '<a href="https://shop.example/track?o=50123"' in clean
    assert 'alt="Shop logo"' in clean
    assert "<b>50123</b>" in clean


def test_the_formatted_view_renders_safely_and_is_remembered(
    qtbot: QtBot, mail_store: MailStore, recording_desktop: RecordingDesktop, tmp_path: Path,
    settings: QSettings, tabs: list[EmailTab], run_until: RunUntil,
    html_mail: tuple[int, int],
) -> None:
    so, _ = html_mail
    tab = make_tab(mail_store, recording_desktop, tmp_path, settings)
    tabs.append(tab)
    open_message(qtbot, tab, run_until, so)
    assert not tab.isFormattedView() and tab.preview().isVisible()
    # The plain view: readable text, no markup.
    assert "Your order 50123 has shipped." in tab.preview().toPlainText()

    button = tab.findChild(QToolButton, "formattedViewButton")
    assert button is not None
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    browser = tab.formattedPreview()
    run_until(lambda: "Track your order" in browser.toPlainText() and not tab.isBusy())
    assert browser.isVisible() and not tab.preview().isVisible()
    html = browser.toHtml()
    assert "https://shop.example/track?o=50123" in html
    assert "tracker.example" not in html and "javascript" not in html
    assert "ran" not in browser.toPlainText().split("Thanks!")[0].split("shipped.")[1]
    assert "Subject:" in browser.toPlainText()  # the headers come first
    assert settings.value("emailTab/formattedView") in (True, "true")

    # Another tab (another window, a later session) starts in the formatted view.
    other = make_tab(mail_store, recording_desktop, tmp_path, settings)
    tabs.append(other)
    assert other.isFormattedView()
    qtbot.mouseClick(other.findChild(QToolButton, "formattedViewButton"),
                     Qt.MouseButton.LeftButton)
    assert not other.isFormattedView()
    assert settings.value("emailTab/formattedView") in (False, "false")


def test_a_link_shows_its_target_and_opens_only_when_clicked(
    qtbot: QtBot, mail_store: MailStore, recording_desktop: RecordingDesktop, tmp_path: Path,
    settings: QSettings, tabs: list[EmailTab], run_until: RunUntil,
    html_mail: tuple[int, int],
) -> None:
    so, _ = html_mail
    settings.setValue("emailTab/formattedView", True)
    tab = make_tab(mail_store, recording_desktop, tmp_path, settings)
    tabs.append(tab)
    open_message(qtbot, tab, run_until, so)
    browser = tab.formattedPreview()
    run_until(lambda: "Track your order" in browser.toPlainText() and not tab.isBusy())
    found = browser.document().find("Track your order", 0,
                                    QTextDocument.FindFlag.FindCaseSensitively)
    assert not found.isNull()
    cursor = QTextCursor(found)
    cursor.setPosition(found.selectionStart() + 3)
    point = browser.cursorRect(cursor).center()
    viewport = browser.viewport()
    assert viewport is not None
    label = tab.findChild(QLabel, "linkTargetLabel")
    assert label is not None
    qtbot.mouseMove(viewport, QPoint(2, 2))  # the pointer enters the view, then the link
    qtbot.mouseMove(viewport, point)
    run_until(lambda: label.text() == "Link: https://shop.example/track?o=50123",
              message=f"the target was not shown: {label.text()!r}")
    assert recording_desktop.urls == []  # pointing at it opened nothing
    qtbot.mouseClick(viewport, Qt.MouseButton.LeftButton, pos=point)
    run_until(lambda: recording_desktop.urls != [])
    assert recording_desktop.strings == ["https://shop.example/track?o=50123"]
