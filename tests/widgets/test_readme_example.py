"""The README's embedding example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import qasync
from pytestqt.qtbot import QtBot

from tests.helpers.maildata import MailData
from tests.helpers.qt import RunUntil
from xtmail.sync.db.mailstore import MailStore

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    section = README.read_text().split("## Embedding the widgets", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "the README lost its embedding example"
    return match.group(1)


def test_readme_embedding_example(
    mail_data: MailData, mail_store: MailStore, qloop: qasync.QEventLoop,
    run_until: RunUntil, qtbot: QtBot,
) -> None:
    contact = mail_data.contact("buyer@example.com")
    order = mail_data.sales_order("60001", billto=contact)
    mail_data.message(subject="About [xtref:S-60001]", sender="buyer@example.com")
    namespace: dict[str, object] = {}
    exec(compile(_example(), str(README), "exec"), namespace)  # noqa: S102 - our README
    window_class = namespace["SalesOrderWindow"]
    window = window_class(mail_store, order, "60001", "buyer@example.com")  # type: ignore[operator]
    qtbot.addWidget(window)
    window.show()
    run_until(lambda: window.email.model().rowCount() == 1, message="the tab stayed empty")
    assert window.email.model().index(0, 4).data() == "About [xtref:S-60001]"
    assert window.contact.property("email") == "buyer@example.com"
