"""The Email page of User Preferences: account, folders, "synchronize while running", status.

The page edits :class:`~xtmail.sync.imap.settings.SyncSettings`, persisted with ``QSettings``
(never the password, which goes to the keyring), drives a
:class:`~xtmail.sync.imap.service.SyncService` (Start Now, Stop, folder changes applied at once)
and shows its progress, last sync time and last error. Network calls (Test Connection)
run in a worker thread, awaited in a task the page owns
(:class:`~xtmail.widgets.tasks.TaskOwner`); the page stays responsive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from PyQt6.QtCore import QSettings, Qt, pyqtSignal
from PyQt6.QtGui import QCloseEvent, QIcon
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QStyle,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from xtmail.sync.errors import CertificateError, XtmailError
from xtmail.sync.imap.credentials import Credential, KeyringCredentials
from xtmail.sync.imap.settings import (
    AccountSettings,
    AuthMethod,
    Security,
    SyncSettings,
    load_settings,
    save_settings,
)
from xtmail.widgets.formatting import format_date
from xtmail.widgets.tasks import TaskOwner, failure_text

if TYPE_CHECKING:
    from xtmail.sync.imap.connection import FolderInfo
    from xtmail.sync.imap.service import SyncService

#: Lists the folders of an account (blocking; runs in a worker thread).
FolderLister = Callable[[AccountSettings, Credential], "list[FolderInfo]"]

_NAME_ROLE = Qt.ItemDataRole.UserRole


def list_folders(account: AccountSettings, credential: Credential) -> list[FolderInfo]:
    from xtmail.sync.imap.connection import ImapConnection

    with ImapConnection(account, credential) as imap:
        return [f for f in imap.list_folders() if f.selectable or f.name]


class EmailPreferencesPage(QWidget):
    """Email settings page for the host's User Preferences dialog.

    Signals:
        settingsSaved(): the settings were written (QSettings and keyring).
        connectionTested(bool ok, str message): Test Connection finished.
        foldersChanged(list): the ticked folders changed (already applied to the service).
    """

    settingsSaved = pyqtSignal()
    connectionTested = pyqtSignal(bool, str)
    foldersChanged = pyqtSignal(list)

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        settings_store: QSettings | None = None,
        credentials: KeyringCredentials | None = None,
        service: SyncService | None = None,
        folder_lister: FolderLister = list_folders,
    ) -> None:
        super().__init__(parent)
        self._store = settings_store or QSettings()
        self._credentials = credentials or KeyringCredentials()
        self._service: SyncService | None = None
        self._folder_lister = folder_lister
        self._settings = load_settings(self._store)
        self._folders: list[str] = list(self._settings.folders)
        self._tasks = TaskOwner("Email preferences", self._on_task_failed, self)
        self._suggested_pin = ""
        self._build()
        self._show_settings(self._settings)
        if service is not None:
            self.setService(service)

    # -- construction -------------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)

        account = QGroupBox(self.tr("Account"), self)
        form = QFormLayout(account)
        self.hostEdit = QLineEdit(account)
        self.hostEdit.setPlaceholderText("imap.example.com")
        self.portSpin = QSpinBox(account)
        self.portSpin.setRange(0, 65535)
        self.portSpin.setSpecialValueText(self.tr("default"))
        self.securityCombo = QComboBox(account)
        self.securityCombo.addItem(self.tr("SSL/TLS (IMAPS)"), Security.IMAPS.value)
        self.securityCombo.addItem(self.tr("STARTTLS"), Security.STARTTLS.value)
        self.securityCombo.addItem(self.tr("None (unencrypted)"), Security.NONE.value)
        self.userEdit = QLineEdit(account)
        self.passwordEdit = QLineEdit(account)
        self.passwordEdit.setEchoMode(QLineEdit.EchoMode.Password)
        self.caFileEdit = QLineEdit(account)
        self.caFileEdit.setPlaceholderText(self.tr("optional: extra trusted CA (PEM file)"))
        self.pinEdit = QLineEdit(account)
        self.pinEdit.setPlaceholderText(self.tr("optional: trusted certificate SHA-256"))
        form.addRow(self.tr("Server:"), self.hostEdit)
        form.addRow(self.tr("Port:"), self.portSpin)
        form.addRow(self.tr("Security:"), self.securityCombo)
        form.addRow(self.tr("User:"), self.userEdit)
        form.addRow(self.tr("Password:"), self.passwordEdit)
        form.addRow(self.tr("CA file:"), self.caFileEdit)
        form.addRow(self.tr("Pinned certificate:"), self.pinEdit)
        test_row = QHBoxLayout()
        self.testButton = QPushButton(self.tr("Test Connection"), account)
        self.testButton.clicked.connect(self._on_test_clicked)
        self.pinButton = QPushButton(self.tr("Trust This Certificate"), account)
        self.pinButton.setVisible(False)
        self.pinButton.clicked.connect(self._on_pin_clicked)
        self.testResultLabel = QLabel(account)
        self.testResultLabel.setWordWrap(True)
        test_row.addWidget(self.testButton)
        test_row.addWidget(self.pinButton)
        test_row.addWidget(self.testResultLabel, 1)
        form.addRow(test_row)
        layout.addWidget(account)

        folders = QGroupBox(self.tr("Folders"), self)
        folder_layout = QVBoxLayout(folders)
        self.folderTree = QTreeWidget(folders)
        self.folderTree.setHeaderLabels([self.tr("Folder / Synchronize with xTuple")])
        self.folderTree.itemChanged.connect(self._on_folder_item_changed)
        folder_layout.addWidget(self.folderTree)
        layout.addWidget(folders)

        self.syncWhileRunningCheck = QCheckBox(
            self.tr("Synchronize email while running application"), self
        )
        layout.addWidget(self.syncWhileRunningCheck)

        exclusions = QGroupBox(self.tr("Do not create contacts for"), self)
        ex_form = QFormLayout(exclusions)
        self.ownAddressesEdit = QPlainTextEdit(exclusions)
        self.ownAddressesEdit.setPlaceholderText(self.tr("one address per line"))
        self.excludedDomainsEdit = QPlainTextEdit(exclusions)
        self.excludedDomainsEdit.setPlaceholderText(self.tr("one domain per line"))
        self.excludeAutomatedCheck = QCheckBox(
            self.tr("Automated senders (no-reply, mailer-daemon, bounces)"), exclusions
        )
        self.excludeBulkCheck = QCheckBox(self.tr("Bulk and mailing-list mail"), exclusions)
        ex_form.addRow(self.tr("My addresses:"), self.ownAddressesEdit)
        ex_form.addRow(self.tr("Domains:"), self.excludedDomainsEdit)
        ex_form.addRow(self.excludeAutomatedCheck)
        ex_form.addRow(self.excludeBulkCheck)
        layout.addWidget(exclusions)

        status = QGroupBox(self.tr("Status"), self)
        status_layout = QVBoxLayout(status)
        buttons = QHBoxLayout()
        self.startNowButton = QPushButton(self.tr("Start Now"), status)
        self.startNowButton.clicked.connect(self._on_start_now_clicked)
        self.stopButton = QPushButton(self.tr("Stop"), status)
        self.stopButton.clicked.connect(self._on_stop_clicked)
        self.stopButton.setEnabled(False)
        buttons.addWidget(self.startNowButton)
        buttons.addWidget(self.stopButton)
        buttons.addStretch(1)
        status_layout.addLayout(buttons)
        self.statusLabel = QLabel(self.tr("Not running"), status)
        self.progressBar = QProgressBar(status)
        self.progressBar.setRange(0, 1)
        self.progressBar.setValue(0)
        self.lastSyncLabel = QLabel(self.tr("Last synchronized: never"), status)
        self.lastErrorLabel = QLabel(status)
        self.lastErrorLabel.setWordWrap(True)
        self.lastErrorLabel.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
        )
        for widget in (self.statusLabel, self.progressBar, self.lastSyncLabel,
                       self.lastErrorLabel):
            status_layout.addWidget(widget)
        layout.addWidget(status)

        style = self.style()
        # The marker of synchronized folders, as the original client showed one.
        self._sync_icon = (style.standardIcon(QStyle.StandardPixmap.SP_BrowserReload)
                           if style is not None else QIcon())

    # -- public API ---------------------------------------------------------------------------
    def service(self) -> SyncService | None:
        return self._service

    def setService(self, service: SyncService | None) -> None:
        if self._service is not None:
            old = self._service
            old.progressChanged.disconnect(self._on_progress)
            old.statusChanged.disconnect(self.statusLabel.setText)
            old.errorOccurred.disconnect(self._on_error)
            old.syncFinished.disconnect(self._on_sync_finished)
            old.runningChanged.disconnect(self._on_running_changed)
        self._service = service
        if service is not None:
            service.progressChanged.connect(self._on_progress)
            service.statusChanged.connect(self.statusLabel.setText)
            service.errorOccurred.connect(self._on_error)
            service.syncFinished.connect(self._on_sync_finished)
            service.runningChanged.connect(self._on_running_changed)
            self._on_running_changed(service.isRunning())

    def value(self) -> SyncSettings:
        """The settings as currently edited (not yet saved)."""
        return SyncSettings(
            account=self._account_from_fields(),
            folders=tuple(self._folders),
            sync_while_running=self.syncWhileRunningCheck.isChecked(),
            since=self._settings.since,
            poll_interval=self._settings.poll_interval,
            batch_size=self._settings.batch_size,
            own_addresses=_lines(self.ownAddressesEdit.toPlainText()),
            excluded_domains=_lines(self.excludedDomainsEdit.toPlainText()),
            exclude_automated=self.excludeAutomatedCheck.isChecked(),
            exclude_bulk=self.excludeBulkCheck.isChecked(),
        )

    def setValue(self, settings: SyncSettings) -> None:
        self._settings = settings
        self._folders = list(settings.folders)
        self._show_settings(settings)

    def save(self) -> bool:
        """Validate and persist; the password goes to the keyring. False (and the error
        shown) when a setting must be fixed first."""
        settings = self.value()
        try:
            settings = settings.validate() if settings.account.host else settings
            if settings.account.host and settings.account.user:
                self._credentials.set_password(settings.account, self.passwordEdit.text())
        except XtmailError as exc:
            self.lastErrorLabel.setText(exc.user_text())
            return False
        save_settings(self._store, settings)
        self._settings = settings
        if self._service is not None:
            self._service.setSettings(settings)
        self.settingsSaved.emit()
        return True

    def checkedFolders(self) -> list[str]:
        return list(self._folders)

    def setAvailableFolders(self, folders: list[FolderInfo]) -> None:
        """Fill the tree from LIST results (hierarchy by each folder's delimiter)."""
        self.folderTree.blockSignals(True)
        try:
            self.folderTree.clear()
            items: dict[str, QTreeWidgetItem] = {}
            for info in sorted(folders, key=_folder_sort_key):
                parts = info.name.split(info.delimiter) if info.delimiter else [info.name]
                parent_item: QTreeWidgetItem | None = None
                for depth in range(1, len(parts) + 1):
                    path = (info.delimiter or "").join(parts[:depth])
                    item = items.get(path)
                    if item is None:
                        item = (QTreeWidgetItem(parent_item) if parent_item is not None
                                else QTreeWidgetItem(self.folderTree))
                        item.setText(0, parts[depth - 1])
                        item.setData(0, _NAME_ROLE, path)
                        items[path] = item
                    parent_item = item
                if parent_item is None:  # an empty name: nothing to show
                    continue
                if info.selectable:
                    parent_item.setFlags(parent_item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                    self._mark(parent_item, info.name in self._folders)
                if info.special_use:
                    parent_item.setToolTip(0, info.special_use.lstrip("\\"))
            self.folderTree.expandAll()
        finally:
            self.folderTree.blockSignals(False)

    def folderItem(self, name: str) -> QTreeWidgetItem | None:
        for item in self._all_items():
            if item.data(0, _NAME_ROLE) == name:
                return item
        return None

    async def testConnection(self) -> bool:
        """Log in with the fields as edited and list the folders; shows the outcome."""
        account = self._account_from_fields()
        problems = account.problems()
        if problems:
            self._tested(False, " ".join(problems))
            return False
        self.testButton.setEnabled(False)
        self.testResultLabel.setText(self.tr("Connecting…"))
        self.pinButton.setVisible(False)
        try:
            account = account.validate()
            password = self.passwordEdit.text()
            if account.auth is AuthMethod.PASSWORD and password:
                credential = Credential(AuthMethod.PASSWORD, password)
            else:
                credential = await asyncio.to_thread(self._credentials.credential, account)
            folders = await asyncio.to_thread(self._folder_lister, account, credential)
        except CertificateError as exc:
            self._suggested_pin = exc.fingerprint or ""
            self.pinButton.setVisible(bool(self._suggested_pin))
            self._tested(False, exc.user_text())
            return False
        except XtmailError as exc:
            self._tested(False, exc.user_text())
            return False
        finally:
            self.testButton.setEnabled(True)
        self.setAvailableFolders(folders)
        self._tested(True, self.tr("Connected: %n folder(s).", "", len(folders)))
        return True

    # -- slots ----------------------------------------------------------------------------------
    def _on_test_clicked(self, *_: object) -> None:
        self._tasks.start("test", self.testConnection)

    def _on_task_failed(self, _purpose: str, exc: Exception) -> None:
        self._tested(False, failure_text(exc, self.tr("Press Test Connection to try again.")))

    def _on_pin_clicked(self, *_: object) -> None:
        self.pinEdit.setText(self._suggested_pin)
        self.pinButton.setVisible(False)

    def _on_start_now_clicked(self, *_: object) -> None:
        if self._service is None:
            return
        if not self.save():
            return
        self.lastErrorLabel.clear()
        self._service.startNow()

    def _on_stop_clicked(self, *_: object) -> None:
        if self._service is not None:
            self._service.stop()
            self.statusLabel.setText(self.tr("Stopping…"))

    def _on_folder_item_changed(self, item: QTreeWidgetItem, column: int) -> None:
        name = item.data(0, _NAME_ROLE)
        if not isinstance(name, str) or not item.flags() & Qt.ItemFlag.ItemIsUserCheckable:
            return
        checked = item.checkState(0) == Qt.CheckState.Checked
        if checked and name not in self._folders:
            self._folders.append(name)
        elif not checked and name in self._folders:
            self._folders.remove(name)
        else:
            return
        self.folderTree.blockSignals(True)
        self._mark(item, checked)
        self.folderTree.blockSignals(False)
        self._settings = replace(self._settings, folders=tuple(self._folders))
        if self._service is not None:
            self._service.setFolders(list(self._folders))
        self.foldersChanged.emit(list(self._folders))

    def _on_progress(self, account: str, folder: str, done: int, total: int) -> None:
        self.progressBar.setRange(0, max(total, 1))
        self.progressBar.setValue(done if total else 1)
        self.progressBar.setFormat(f"{folder}: %v / %m")

    def _on_error(self, kind: str, message: str) -> None:
        if kind == "warning":  # the sync goes on; the user may still have to act
            message = self.tr("Warning: %1").replace("%1", message)
        self.lastErrorLabel.setText(message)

    def _on_sync_finished(self, account: str, imported: int) -> None:
        when = format_date(datetime.now(), seconds=True)
        self.lastSyncLabel.setText(
            self.tr("Last synchronized: %1 (%2 new)").replace("%1", when)
            .replace("%2", str(imported))
        )

    def _on_running_changed(self, running: bool) -> None:
        self.stopButton.setEnabled(running)
        if not running:
            self.statusLabel.setText(self.tr("Not running"))

    def closeEvent(self, event: QCloseEvent | None) -> None:
        self._tasks.cancel_all()
        super().closeEvent(event)

    # -- helpers --------------------------------------------------------------------------------
    def _tested(self, ok: bool, message: str) -> None:
        self.testResultLabel.setText(message)
        self.connectionTested.emit(ok, message)

    def _mark(self, item: QTreeWidgetItem, checked: bool) -> None:
        item.setCheckState(0, Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
        item.setIcon(0, self._sync_icon if checked else _no_icon())

    def _all_items(self) -> list[QTreeWidgetItem]:
        found: list[QTreeWidgetItem] = []
        stack = [self.folderTree.topLevelItem(i)
                 for i in range(self.folderTree.topLevelItemCount())]
        while stack:
            item = stack.pop()
            if item is None:
                continue
            found.append(item)
            stack.extend(item.child(i) for i in range(item.childCount()))
        return found

    def _account_from_fields(self) -> AccountSettings:
        return AccountSettings(
            host=self.hostEdit.text().strip(),
            user=self.userEdit.text().strip(),
            port=self.portSpin.value(),
            security=Security(self.securityCombo.currentData()),
            auth=self._settings.account.auth,
            ca_file=self.caFileEdit.text().strip(),
            pin_sha256=self.pinEdit.text().strip(),
            timeout=self._settings.account.timeout,
        )

    def _show_settings(self, settings: SyncSettings) -> None:
        account = settings.account
        self.hostEdit.setText(account.host)
        self.userEdit.setText(account.user)
        self.portSpin.setValue(account.port)
        self.securityCombo.setCurrentIndex(
            max(0, self.securityCombo.findData(account.security.value))
        )
        self.caFileEdit.setText(account.ca_file)
        self.pinEdit.setText(account.pin_sha256)
        password = None
        if account.host and account.user:
            try:
                password = self._credentials.password(account)
            except XtmailError as exc:
                self.lastErrorLabel.setText(exc.user_text())
        self.passwordEdit.setText(password or "")
        self.syncWhileRunningCheck.setChecked(settings.sync_while_running)
        self.ownAddressesEdit.setPlainText("\n".join(settings.own_addresses))
        self.excludedDomainsEdit.setPlainText("\n".join(settings.excluded_domains))
        self.excludeAutomatedCheck.setChecked(settings.exclude_automated)
        self.excludeBulkCheck.setChecked(settings.exclude_bulk)
        for item in self._all_items():
            if item.flags() & Qt.ItemFlag.ItemIsUserCheckable:
                self._mark(item, item.data(0, _NAME_ROLE) in self._folders)


def _no_icon() -> QIcon:
    return QIcon()


def _lines(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.replace(",", "\n").splitlines() if line.strip())


def _folder_sort_key(info: FolderInfo) -> tuple[bool, str]:
    return (info.name.upper() != "INBOX", info.name.lower())

