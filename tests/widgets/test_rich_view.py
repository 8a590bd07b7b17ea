"""The Email tab's formatted view: HTML mail sanitised (nh3), nothing fetched, links shown
before they are followed and opened only on click, the choice remembered. Real database
(both kinds of xTuple database), offscreen, clicked as a user clicks."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest
import qasync
from PyQt6.QtCore import QBuffer, QEvent, QIODevice, QPoint, QSettings, QSize, Qt, QUrl
from PyQt6.QtGui import QImage, QTextCursor, QTextDocument
from PyQt6.QtWidgets import QApplication, QLabel, QTextBrowser, QToolButton
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


# -- inline images (cid:) ------------------------------------------------------------------------


def test_sanitiser_keeps_cid_images_only() -> None:
    clean = safe_html(
        "<img src='cid:logo-1@example.com' alt='logo'><img src='https://t.example/p.gif'>"
        "<img src='file:///etc/passwd'><a href='cid:part@x'>part</a>"
    )
    assert '<img src="cid:logo-1@example.com" alt="logo">' in clean
    for gone in ("t.example", "file:", "cid:part"):
        assert gone not in clean, gone


def png(width: int, height: int, color: Qt.GlobalColor) -> bytes:
    image = QImage(width, height, QImage.Format.Format_RGB32)
    image.fill(color)
    buffer = QBuffer()
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    assert image.save(buffer, "PNG")
    return bytes(buffer.data().data())


class CountingServer:
    """A real HTTP server on a random local port that counts the requests it gets."""

    def __init__(self) -> None:
        requests: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()
                self.wfile.write(png(4, 4, Qt.GlobalColor.blue))

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.requests = requests
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def web() -> Iterator[CountingServer]:
    server = CountingServer()
    yield server
    server.close()


def related_message(html: str, images: dict[str, bytes]) -> bytes:
    """A multipart/related message: the HTML, then each image by its Content-ID."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = "Ada Lovelace <ada@example.com>"
    msg["To"] = "Sales <sales@ourco.example>"
    msg["Subject"] = "Our logo [xtref:S-50123]"
    msg["Date"] = "Mon, 02 Mar 2026 10:00:00 +0000"
    msg["Message-ID"] = "<logo.1@example.com>"
    msg.set_content("Our logo.")
    msg.add_alternative(html, subtype="html")
    html_part = msg.get_payload()[1]
    for cid, data in images.items():
        html_part.add_related(data, maintype="image", subtype="png", cid=f"<{cid}>")
    return msg.as_bytes()


def red_pixels(widget: QTextBrowser) -> int:
    viewport = widget.viewport()
    assert viewport is not None
    image = viewport.grab().toImage()
    return sum(
        1 for y in range(image.height()) for x in range(0, image.width(), 2)
        if image.pixelColor(x, y).name() == "#ff0000"
    )


def test_inline_images_are_drawn_from_the_message_and_nothing_is_fetched(
    qtbot: QtBot, mail_store: MailStore, recording_desktop: RecordingDesktop, tmp_path: Path,
    settings: QSettings, tabs: list[EmailTab], run_until: RunUntil, mail_data: MailData,
    web: CountingServer,
) -> None:
    so = mail_data.sales_order("50123")
    html = (
        "<p>Our new logo:</p><p><img src='cid:Logo.Red@example.com' alt='red logo'></p>"
        f"<p>Tracked: <img src='{web.url}/pixel.png?u=ada' alt='pixel'></p>"
        f"<p style=\"background:url('{web.url}/bg.png')\">Thanks!</p>"
    )
    mail_data.import_raw(
        [related_message(html, {"Logo.Red@example.com": png(40, 20, Qt.GlobalColor.red)})]
    )
    settings.setValue("emailTab/formattedView", True)
    tab = make_tab(mail_store, recording_desktop, tmp_path, settings)
    tabs.append(tab)
    open_message(qtbot, tab, run_until, so)
    browser = tab.formattedPreview()
    run_until(lambda: "Thanks!" in browser.toPlainText() and not tab.isBusy())
    # The part's image is the document's image for its cid: URL, and it is drawn.
    image = browser.document().resource(
        QTextDocument.ResourceType.ImageResource.value, QUrl("cid:Logo.Red@example.com"))
    assert isinstance(image, QImage) and image.size() == QSize(40, 20)
    run_until(lambda: red_pixels(browser) >= 20 * 20, message="the red logo was not drawn")
    # The remote image and background were neither fetched nor kept in the document.
    assert web.requests == []
    assert web.url not in browser.toHtml()


def test_the_corpus_message_with_cid_images_shows_both(
    qtbot: QtBot, mail_store: MailStore, recording_desktop: RecordingDesktop, tmp_path: Path,
    settings: QSettings, tabs: list[EmailTab], run_until: RunUntil, mail_data: MailData,
) -> None:
    so = mail_data.sales_order("50123")
    raw = (Path(__file__).parents[1] / "data" / "inline-images-cid.eml").read_bytes()
    mail_data.import_raw([raw], ties=[("S", so)])
    settings.setValue("emailTab/formattedView", True)
    tab = make_tab(mail_store, recording_desktop, tmp_path, settings)
    tabs.append(tab)
    open_message(qtbot, tab, run_until, so)
    browser = tab.formattedPreview()
    run_until(lambda: "new logo" in browser.toPlainText() and not tab.isBusy())
    assert set(browser.inlineImages()) == {"logo-1@example.com", "spacer-2@example.com"}
    for cid in ("logo-1@example.com", "spacer-2@example.com"):
        image = browser.document().resource(
            QTextDocument.ResourceType.ImageResource.value, QUrl(f"cid:{cid}"))
        assert isinstance(image, QImage) and image.size() == QSize(1, 1)
        assert image.pixelColor(0, 0).alpha() == 255  # the part's pixel, not the blank
