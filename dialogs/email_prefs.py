"""The Email page of User Preferences: accounts, folders, "synchronize while running", status.

The page edits :class:`~xtmail.sync.imap.settings.EmailSettings` (one or more accounts, each
with its folders, and the options they share), persisted with ``QSettings`` on
:meth:`EmailPreferencesPage.save` and dropped by :meth:`EmailPreferencesPage.revert`: the
Save and Cancel of xTuple's own User Preferences (:class:`EmailPreferencesDialog` has the
two buttons). Passwords never go to the settings: to the keyring where one is usable, else
kept in memory for the session. The page drives a
:class:`~xtmail.sync.imap.service.SyncService` (Start Now, Stop, settings applied at Save)
and shows its progress, last sync time and last error. Network calls (Test Connection, the
folder list refreshed when the page is shown) run in a worker thread, awaited in tasks the
page owns (:class:`~xtmail.widgets.tasks.TaskOwner`); the page stays responsive.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, TypeVar

from PyQt6.QtCore import QSettings, QSize, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QCloseEvent, QGuiApplication, QIcon, QShowEvent
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
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
    EmailSettings,
    MailAccount,
    Security,
    SyncSettings,
    describe_error,
    load_email_settings,
    save_email_settings,
)
from xtmail.widgets.formatting import format_date
from xtmail.widgets.tasks import TaskOwner, failure_text

if TYPE_CHECKING:
    from xtmail.sync.imap.connection import FolderInfo
    from xtmail.sync.imap.service import SyncService

#: Lists the folders of an account (blocking; runs in a worker thread).
FolderLister = Callable[[AccountSettings, Credential], "list[FolderInfo]"]

_NAME_ROLE = Qt.ItemDataRole.UserRole
T = TypeVar("T")


def list_folders(account: AccountSettings, credential: Credential) -> list[FolderInfo]:
    from xtmail.sync.imap.connection import ImapConnection

    with ImapConnection(account, credential) as imap:
        return [f for f in imap.list_folders() if f.selectable or f.name]


class ServerOffers(Protocol):
    """Offers the user's accounts to the company's mail server and withdraws them
    (:class:`xtmail.sync.imap.offers.DatabaseOffers`). Blocking: called in a worker thread."""

    def offer(self, entry: MailAccount, options: SyncSettings) -> None: ...

    def withdraw(self, account: AccountSettings) -> None: ...


class _Folder(Protocol):
    """What the tree needs of a folder: a LIST result, or one only known from the settings."""

    @property
    def name(self) -> str: ...
    @property
    def delimiter(self) -> str: ...
    @property
    def selectable(self) -> bool: ...
    @property
    def special_use(self) -> str | None: ...


@dataclass(frozen=True)
class _SavedFolder:
    name: str
    delimiter: str
    selectable: bool = True
    special_use: str | None = None


def people_text(exc: BaseException, account: AccountSettings | None = None) -> str:
    """What to tell a person about a failure on this page: no errno strings, no doubled
    periods, and no pointer to this very page."""
    if isinstance(exc, XtmailError):
        text = describe_error(exc, account)
    else:
        text = failure_text(exc)
    return text.replace(" on the Email page of User Preferences", " above")


class EmailPreferencesPage(QWidget):
    """Email settings page for the host's User Preferences dialog.

    Edits are kept until :meth:`save` (written, applied to the service) or :meth:`revert`
    (dropped); :meth:`isModified` tells whether there is anything to save.

    Signals:
        settingsSaved(): the settings were written (QSettings; passwords to the keyring or
            the session).
        connectionTested(bool ok, str message): Test Connection finished.
        foldersChanged(list): the ticked folders of the shown account changed (applied at
            Save).
        modifiedChanged(bool): the page has (or no longer has) edits to save.
        offersApplied(bool ok, str message): after a save, the accounts offered to the
            company's mail server (and the offers withdrawn) were written to the database,
            or could not be.
    """

    settingsSaved = pyqtSignal()
    connectionTested = pyqtSignal(bool, str)
    foldersChanged = pyqtSignal(list)
    modifiedChanged = pyqtSignal(bool)
    offersApplied = pyqtSignal(bool, str)

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        settings_store: QSettings | None = None,
        credentials: KeyringCredentials | None = None,
        service: SyncService | None = None,
        folder_lister: FolderLister = list_folders,
        server_offers: ServerOffers | None = None,
    ) -> None:
        super().__init__(parent)
        self._server_offers = server_offers
        self._store = settings_store or QSettings()
        self._credentials = credentials or KeyringCredentials()
        self._service: SyncService | None = None
        self._folder_lister = folder_lister
        self._saved = load_email_settings(self._store)
        self._entries: list[MailAccount] = []
        self._passwords: list[str] = []
        self._current = -1
        self._folders: list[str] = []
        self._listed: dict[str, list[_Folder]] = {}  # user@host -> the server's folders
        self._folders_touched = False
        self._modified = False
        self._loading = False
        self._refresh_pending = True
        self._tasks = TaskOwner("Email preferences", self._on_task_failed, self)
        self._suggested_pin = ""
        self._build()
        self._show_email(self._saved)
        if service is not None:
            self.setService(service)

    # -- construction -------------------------------------------------------------------------
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        # Scrolls when the screen is smaller than the page (a 1366x768 laptop).
        self.scrollArea = QScrollArea(self)
        self.scrollArea.setWidgetResizable(True)
        self.scrollArea.setFrameShape(QFrame.Shape.NoFrame)
        self.scrollArea.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        body = QWidget(self.scrollArea)
        layout = QVBoxLayout(body)
        self.scrollArea.setWidget(body)
        outer.addWidget(self.scrollArea)

        accounts_row = QHBoxLayout()
        accounts_row.addWidget(QLabel(self.tr("Account:"), body))
        self.accountCombo = QComboBox(body)
        self.accountCombo.setSizePolicy(QSizePolicy.Policy.Expanding,
                                        QSizePolicy.Policy.Fixed)
        self.accountCombo.currentIndexChanged.connect(self._on_account_chosen)
        self.addAccountButton = QPushButton(self.tr("Add Account"), body)
        self.addAccountButton.clicked.connect(self._on_add_account)
        self.removeAccountButton = QPushButton(self.tr("Remove Account"), body)
        self.removeAccountButton.clicked.connect(self._on_remove_account)
        accounts_row.addWidget(self.accountCombo, 1)
        accounts_row.addWidget(self.addAccountButton)
        accounts_row.addWidget(self.removeAccountButton)
        layout.addLayout(accounts_row)

        account = QGroupBox(self.tr("Account"), body)
        form = QFormLayout(account)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.enabledCheck = QCheckBox(self.tr("Synchronize this account"), account)
        self.serverSyncCheck = QCheckBox(
            self.tr("Let the company mail server sync this account"), account)
        self.serverSyncCheck.setToolTip(self.tr(
            "The company's mail server then synchronizes this account whether or not xTuple "
            "runs here, with a sign-in your administrator gave it: your password stays on "
            "this computer. While it does, this computer leaves the account to it."))
        # Only where the host connected the page to the database.
        self.serverSyncCheck.setVisible(self._server_offers is not None)
        self.serverSyncLabel = _wrapping_label(account)
        self.serverSyncLabel.setVisible(self._server_offers is not None)
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
        self.authCombo = QComboBox(account)
        self.authCombo.addItem(self.tr("Password"), AuthMethod.PASSWORD.value)
        self.authCombo.addItem(self.tr("OAuth2 (token command)"), AuthMethod.XOAUTH2.value)
        self.passwordEdit = QLineEdit(account)
        self.passwordEdit.setEchoMode(QLineEdit.EchoMode.Password)
        self.passwordCommandEdit = QLineEdit(account)
        self.passwordCommandEdit.setPlaceholderText(
            self.tr("optional: a command that prints the password or token"))
        self.passwordCommandEdit.setToolTip(self.tr(
            "Run for each sign-in; its first line of output is the password (or, with "
            "OAuth2, the access token). For example: pass show mail/work"))
        self.caFileEdit = QLineEdit(account)
        self.caFileEdit.setPlaceholderText(self.tr("optional: extra trusted CA (PEM file)"))
        self.pinEdit = QLineEdit(account)
        self.pinEdit.setPlaceholderText(self.tr("optional: trusted certificate SHA-256"))
        self.timeoutSpin = QDoubleSpinBox(account)
        self.timeoutSpin.setRange(1, 600)
        self.timeoutSpin.setDecimals(0)
        self.timeoutSpin.setSuffix(self.tr(" s"))
        form.addRow(self.enabledCheck)
        form.addRow(self.serverSyncCheck)
        form.addRow(self.serverSyncLabel)
        form.addRow(self.tr("Server:"), self.hostEdit)
        form.addRow(self.tr("Port:"), self.portSpin)
        form.addRow(self.tr("Security:"), self.securityCombo)
        form.addRow(self.tr("User:"), self.userEdit)
        form.addRow(self.tr("Sign-in:"), self.authCombo)
        form.addRow(self.tr("Password:"), self.passwordEdit)
        form.addRow(self.tr("Password command:"), self.passwordCommandEdit)
        form.addRow(self.tr("CA file:"), self.caFileEdit)
        form.addRow(self.tr("Pinned certificate:"), self.pinEdit)
        form.addRow(self.tr("Network timeout:"), self.timeoutSpin)
        test_row = QHBoxLayout()
        self.testButton = QPushButton(self.tr("Test Connection"), account)
        self.testButton.clicked.connect(self._on_test_clicked)
        self.pinButton = QPushButton(self.tr("Trust This Certificate"), account)
        self.pinButton.setVisible(False)
        self.pinButton.clicked.connect(self._on_pin_clicked)
        test_row.addWidget(self.testButton)
        test_row.addWidget(self.pinButton)
        test_row.addStretch(1)
        form.addRow(test_row)
        self.testResultLabel = _wrapping_label(account)
        form.addRow(self.testResultLabel)
        layout.addWidget(account)

        folders = QGroupBox(self.tr("Folders"), body)
        folder_layout = QVBoxLayout(folders)
        self.folderTree = QTreeWidget(folders)
        self.folderTree.setHeaderLabels([self.tr("Folder / Synchronize with xTuple")])
        self.folderTree.setMinimumHeight(120)
        self.folderTree.itemChanged.connect(self._on_folder_item_changed)
        self.folderNoteLabel = _wrapping_label(folders)
        folder_layout.addWidget(self.folderTree)
        folder_layout.addWidget(self.folderNoteLabel)
        layout.addWidget(folders)

        self.syncWhileRunningCheck = QCheckBox(
            self.tr("Synchronize email while running application"), body
        )
        self.syncWhileRunningCheck.toggled.connect(self._on_sync_box_toggled)
        self.syncHintLabel = _wrapping_label(body)
        layout.addWidget(self.syncWhileRunningCheck)
        layout.addWidget(self.syncHintLabel)

        exclusions = QGroupBox(self.tr("My addresses, and who never becomes a contact"), body)
        ex_form = QFormLayout(exclusions)
        ex_form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.ownAddressesEdit = QPlainTextEdit(exclusions)
        self.ownAddressesEdit.setPlaceholderText(
            self.tr("one address per line (the accounts' login addresses count already)"))
        self.excludedDomainsEdit = QPlainTextEdit(exclusions)
        self.excludedDomainsEdit.setPlaceholderText(self.tr("one domain per line"))
        for edit in (self.ownAddressesEdit, self.excludedDomainsEdit):
            edit.setMaximumHeight(64)
        self.excludeAutomatedCheck = QCheckBox(
            self.tr("Automated senders (no-reply, mailer-daemon, bounces)"), exclusions
        )
        self.excludeBulkCheck = QCheckBox(self.tr("Bulk and mailing-list mail"), exclusions)
        self.contactScopeCombo = QComboBox(exclusions)
        for label, scope in (
            (self.tr("Senders and direct recipients (From, To)"), "correspondents"),
            (self.tr("Senders only (From)"), "senders"),
            (self.tr("Everyone on the message (From, To, Cc)"), "everyone"),
            (self.tr("Nobody: only tie mail to existing contacts"), ""),
        ):
            self.contactScopeCombo.addItem(label, scope)
        self.contactScopeCombo.setToolTip(self.tr(
            "Whose unknown addresses become new contacts when mail is imported."))
        self.maxRecipientsSpin = QSpinBox(exclusions)
        self.maxRecipientsSpin.setRange(0, 1000)
        self.maxRecipientsSpin.setSpecialValueText(self.tr("no limit"))
        self.maxRecipientsSpin.setSuffix(self.tr(" recipients"))
        self.maxRecipientsSpin.setToolTip(self.tr(
            "A message to more people than this creates no contacts at all: announcements "
            "and company-wide threads are not correspondence with each person on them."))
        ex_form.addRow(self.tr("New &contacts from:"), self.contactScopeCombo)
        ex_form.addRow(self.tr("None from mail to &more than:"), self.maxRecipientsSpin)
        ex_form.addRow(self.tr("My addresses:"), self.ownAddressesEdit)
        ex_form.addRow(self.tr("Domains:"), self.excludedDomainsEdit)
        ex_form.addRow(self.excludeAutomatedCheck)
        ex_form.addRow(self.excludeBulkCheck)
        layout.addWidget(exclusions)

        status = QGroupBox(self.tr("Status"), body)
        status_layout = QVBoxLayout(status)
        buttons = QHBoxLayout()
        self.startNowButton = QPushButton(self.tr("Start Now"), status)
        self.startNowButton.setToolTip(self.tr("Saves the settings, then synchronizes."))
        self.startNowButton.clicked.connect(self._on_start_now_clicked)
        self.stopButton = QPushButton(self.tr("Stop"), status)
        self.stopButton.clicked.connect(self._on_stop_clicked)
        self.stopButton.setEnabled(False)
        buttons.addWidget(self.startNowButton)
        buttons.addWidget(self.stopButton)
        buttons.addStretch(1)
        status_layout.addLayout(buttons)
        self.statusLabel = _wrapping_label(status, self.tr("Not running"))
        self.progressBar = QProgressBar(status)
        self.progressBar.setRange(0, 1)
        self.progressBar.setValue(0)
        self.lastSyncLabel = _wrapping_label(status, self.tr("Last synchronized: never"))
        self.lastErrorLabel = _wrapping_label(status)
        for widget in (self.statusLabel, self.progressBar, self.lastSyncLabel,
                       self.lastErrorLabel):
            status_layout.addWidget(widget)
        layout.addWidget(status)
        layout.addStretch(1)

        style = self.style()
        # The marker of synchronized folders, as the original client showed one.
        self._sync_icon = (style.standardIcon(QStyle.StandardPixmap.SP_BrowserReload)
                           if style is not None else QIcon())

        # Any edit of the account makes the last test result stale, and the page modified.
        for line in (self.hostEdit, self.userEdit, self.passwordEdit, self.passwordCommandEdit,
                     self.caFileEdit, self.pinEdit):
            line.textChanged.connect(self._on_account_edited)
        self.portSpin.valueChanged.connect(self._on_account_edited)
        self.timeoutSpin.valueChanged.connect(self._on_account_edited)
        self.securityCombo.currentIndexChanged.connect(self._on_account_edited)
        self.authCombo.currentIndexChanged.connect(self._on_account_edited)
        self.authCombo.currentIndexChanged.connect(self._update_sign_in)
        self.enabledCheck.toggled.connect(self._on_edited)
        self.serverSyncCheck.toggled.connect(self._on_edited)
        for text in (self.ownAddressesEdit, self.excludedDomainsEdit):
            text.textChanged.connect(self._on_edited)
        for box in (self.excludeAutomatedCheck, self.excludeBulkCheck):
            box.toggled.connect(self._on_edited)
        self.contactScopeCombo.currentIndexChanged.connect(self._on_edited)
        self.maxRecipientsSpin.valueChanged.connect(self._on_edited)

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

    def value(self) -> EmailSettings:
        """The settings as currently edited (not yet saved)."""
        self._keep_current()
        options = replace(
            self._saved.options,
            sync_while_running=self.syncWhileRunningCheck.isChecked(),
            own_addresses=_lines(self.ownAddressesEdit.toPlainText()),
            excluded_domains=_lines(self.excludedDomainsEdit.toPlainText()),
            exclude_automated=self.excludeAutomatedCheck.isChecked(),
            exclude_bulk=self.excludeBulkCheck.isChecked(),
            create_contacts=bool(scope := self.contactScopeCombo.currentData()),
            contact_scope=scope or self._saved.options.contact_scope,
            max_recipients=self.maxRecipientsSpin.value(),
        )
        return EmailSettings(accounts=tuple(self._entries), options=options)

    def setValue(self, settings: EmailSettings) -> None:
        """Show ``settings`` for editing (marks the page modified; :meth:`save` keeps them)."""
        self._show_email(settings)
        self._set_modified(True)

    def savedValue(self) -> EmailSettings:
        return self._saved

    def isModified(self) -> bool:
        return self._modified

    def save(self) -> bool:
        """Validate and persist; passwords go to the keyring (or, without one, are kept for
        this session). False (and what to fix shown) when a setting must be fixed first."""
        settings = self.value()
        try:
            settings = settings.validate()
        except XtmailError as exc:
            self._show_problem(people_text(exc))
            return False
        session_only: list[str] = []
        # validate() dropped the accounts left empty; their passwords go the same way.
        passwords = [p for m, p in zip(self._entries, self._passwords, strict=True)
                     if m.account.host.strip() or m.account.user.strip()]
        for entry, password in zip(settings.accounts, passwords, strict=True):
            if entry.account.auth is AuthMethod.PASSWORD and password and (
                    not self._credentials.store_password(entry.account, password)):
                session_only.append(entry.account.key)
        save_email_settings(self._store, settings)
        before, self._saved = self._saved, settings
        self._start_offers(before, settings)
        shown = self._entries[self._current].account.key if self._entries else ""
        self._show_email(settings, keep_passwords=True)
        for index, entry in enumerate(self._entries):
            if entry.account.key == shown and index != self._current:
                self._show_account(index)  # the account on screen stays on screen
        if self._service is not None:
            self._service.setSettings(settings.enabled())
        self.lastErrorLabel.clear()
        if session_only:
            self.lastErrorLabel.setText(self.tr(
                "There is no system keyring here: the password of %1 is kept until you quit, "
                "and asked for again at the next start. A password command keeps it for good."
            ).replace("%1", ", ".join(session_only)))
        self._set_modified(False)
        self.settingsSaved.emit()
        return True

    def revert(self) -> None:
        """Drop the edits: show the saved settings again."""
        self._tasks.cancel("test")
        self._show_email(self._saved)
        self.lastErrorLabel.clear()
        self._set_modified(False)

    def accountCount(self) -> int:
        return len(self._entries)

    def currentAccount(self) -> int:
        return self._current

    def setCurrentAccount(self, index: int) -> None:
        self.accountCombo.setCurrentIndex(index)

    def addAccount(self) -> int:
        """A new, empty account, shown for editing; returns its index."""
        self._keep_current()
        self._entries.append(MailAccount(enabled=True))
        self._passwords.append("")
        self._fill_combo()
        self.accountCombo.setCurrentIndex(len(self._entries) - 1)
        self._set_modified(True)
        self.hostEdit.setFocus()
        return len(self._entries) - 1

    def removeCurrentAccount(self) -> None:
        if not self._entries:
            return
        index = self._current
        del self._entries[index]
        del self._passwords[index]
        if not self._entries:
            self._entries.append(MailAccount())
            self._passwords.append("")
        self._current = -1
        self._fill_combo()
        self._show_account(min(index, len(self._entries) - 1))
        self._set_modified(True)

    def checkedFolders(self) -> list[str]:
        return list(self._folders)

    def setAvailableFolders(self, folders: Iterable[_Folder]) -> None:
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
            folders = await self._list(account.validate())
        except CertificateError as exc:
            self._suggested_pin = exc.fingerprint or ""
            self.pinButton.setVisible(bool(self._suggested_pin))
            self._tested(False, people_text(exc, account))
            return False
        except XtmailError as exc:
            self._tested(False, people_text(exc, account))
            return False
        finally:
            self.testButton.setEnabled(True)
        self._show_listed(account, folders)
        self._tested(True, self.tr("Connected: %n folder(s).", "", len(folders)))
        return True

    async def refreshFolders(self) -> bool:
        """List the shown account's folders from the server, when a secret is at hand without
        asking (typed, a command, the keyring); the saved ones stay shown meanwhile and when
        it fails. True when the list was refreshed."""
        account = self._account_from_fields()
        if account.problems():
            return False
        if not self.passwordEdit.text() and self._credentials.needs_password(account):
            return False
        try:
            folders = await self._list(account.validate())
        except XtmailError as exc:
            self.folderNoteLabel.setText(self.tr("The folder list could not be refreshed: %1")
                                         .replace("%1", people_text(exc, account)))
            return False
        if self._account_from_fields() == account:  # not edited meanwhile
            self._show_listed(account, folders)
        return True

    # -- slots ----------------------------------------------------------------------------------
    def showEvent(self, event: QShowEvent | None) -> None:
        super().showEvent(event)
        if self._refresh_pending:
            QTimer.singleShot(0, self._start_refresh)

    def _start_refresh(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no event loop runs (yet): the next show tries again
            return
        self._refresh_pending = False
        self._tasks.start("folders", self.refreshFolders)

    def _on_test_clicked(self, *_: object) -> None:
        self._tasks.start("test", self.testConnection)

    def _on_task_failed(self, purpose: str, exc: Exception) -> None:
        if purpose == "offers":
            text = failure_text(exc)
            self.serverSyncLabel.setText(text)
            self.offersApplied.emit(False, text)
            return
        if purpose == "folders":
            self.folderNoteLabel.setText(failure_text(exc))
            return
        self._tested(False, failure_text(exc, self.tr("Press Test Connection to try again.")))

    def _on_pin_clicked(self, *_: object) -> None:
        self.pinEdit.setText(self._suggested_pin)
        self.pinButton.setVisible(False)

    def _on_start_now_clicked(self, *_: object) -> None:
        if self._service is None:
            return
        if not self.save():
            return
        for entry in self._saved.accounts:
            if (entry.enabled and entry.account.host
                    and self._credentials.needs_password(entry.account)):
                self._show_problem(self.tr(
                    "Enter the password of %1 above, or set a password command for it."
                ).replace("%1", entry.account.key))
                return
        self._service.startNow()

    def _on_stop_clicked(self, *_: object) -> None:
        if self._service is not None:
            self._service.stop()
            self.statusLabel.setText(self.tr("Stopping…"))

    def _on_account_chosen(self, index: int) -> None:
        if self._loading or index < 0 or index == self._current:
            return
        self._keep_current()
        self._show_account(index)
        self._tasks.cancel("test", "folders")
        self._refresh_pending = True
        self._start_refresh()

    def _on_add_account(self, *_: object) -> None:
        self.addAccount()

    def _on_remove_account(self, *_: object) -> None:
        self.removeCurrentAccount()

    def _on_account_edited(self, *_: object) -> None:
        if self._loading:
            return
        self._tasks.cancel("test")
        self.testButton.setEnabled(True)
        self.testResultLabel.clear()
        self.pinButton.setVisible(False)
        self._update_sync_hint()
        self._set_modified(True)
        if 0 <= self._current < len(self._entries):
            self.accountCombo.setItemText(self._current, self._account_title(
                self._account_from_fields()))

    def _update_sign_in(self) -> None:
        # OAuth2 signs in with the token command's output: no password to type.
        oauth = self.authCombo.currentData() == AuthMethod.XOAUTH2.value
        self.passwordEdit.setEnabled(not oauth)
        self.passwordCommandEdit.setPlaceholderText(
            self.tr("a command that prints an access token (required for OAuth2)") if oauth
            else self.tr("optional: a command that prints the password"))

    def _on_edited(self, *_: object) -> None:
        if not self._loading:
            self._set_modified(True)

    def _on_sync_box_toggled(self, _checked: bool) -> None:
        self._update_sync_hint()
        self._on_edited()

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
        self._folders_touched = True
        self.folderTree.blockSignals(True)
        self._mark(item, checked)
        self.folderTree.blockSignals(False)
        self._set_modified(True)
        self.foldersChanged.emit(list(self._folders))

    def _on_progress(self, account: str, folder: str, done: int, total: int) -> None:
        self.progressBar.setRange(0, max(total, 1))
        self.progressBar.setValue(done if total else 1)
        self.progressBar.setFormat(f"{folder}: %v / %m")

    def _on_error(self, kind: str, message: str) -> None:
        message = message.replace(" on the Email page of User Preferences", " above")
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
    def _start_offers(self, before: EmailSettings, after: EmailSettings) -> None:
        """Write the offers of the saved settings to the database: every offered account
        (its settings may have changed), and withdraw what is no longer offered."""
        if self._server_offers is None:
            return
        offered = [m for m in after.accounts if m.offered]
        keep = {m.account.key for m in offered}
        withdrawn = [m.account for m in before.accounts
                     if m.offered and m.account.key not in keep]
        if offered or withdrawn:
            self._tasks.start("offers", self._apply_offers, offered, withdrawn, after.options)

    async def _apply_offers(self, offered: list[MailAccount], withdrawn: list[AccountSettings],
                            options: SyncSettings) -> None:
        offers = self._server_offers
        if offers is None:
            return
        self.serverSyncLabel.setText(self.tr("Telling the company mail server…"))
        problems: list[str] = []
        for account in withdrawn:
            try:
                await _in_thread(offers.withdraw, account)
            except XtmailError as exc:
                problems.append(f"{account.key}: {people_text(exc, account)}")
        for entry in offered:
            try:
                await _in_thread(offers.offer, entry, options)
            except XtmailError as exc:
                problems.append(f"{entry.account.key}: {people_text(exc, entry.account)}")
        if problems:
            text = self.tr("The company mail server was not told: %1").replace(
                "%1", " ".join(problems))
        elif offered:
            text = self.tr("The company mail server synchronizes %1.").replace(
                "%1", ", ".join(m.account.key for m in offered))
        else:
            text = self.tr("The company mail server no longer synchronizes %1.").replace(
                "%1", ", ".join(a.key for a in withdrawn))
        self.serverSyncLabel.setText(text)
        self.offersApplied.emit(not problems, text)

    async def _list(self, account: AccountSettings) -> list[FolderInfo]:
        password = self.passwordEdit.text()
        if account.auth is AuthMethod.PASSWORD and password and not (
                account.password_command.strip()):
            credential = Credential(AuthMethod.PASSWORD, password)
        else:
            credential = await _in_thread(self._credentials.credential, account)
        return await _in_thread(self._folder_lister, account, credential)

    def _show_listed(self, account: AccountSettings, folders: list[FolderInfo]) -> None:
        self._listed[account.key] = list(folders)
        delimiter = next((f.delimiter for f in folders if f.delimiter), "")
        if 0 <= self._current < len(self._entries) and delimiter:
            entry = self._entries[self._current]
            self._entries[self._current] = replace(entry, delimiter=delimiter)
        is_new = account.key not in {m.account.key for m in self._saved.accounts}
        if is_new and not self._folders_touched:
            # A new account: propose the inbox and the mail the user sends.
            proposed = ["INBOX"] if any(f.name.upper() == "INBOX" for f in folders) else []
            proposed += [f.name for f in folders if f.special_use == "\\Sent" and f.selectable]
            if proposed != self._folders:
                self._folders = proposed
                self._set_modified(True)
            self.folderNoteLabel.setText(self.tr(
                "Proposed: %1. Tick the folders whose mail belongs in xTuple."
            ).replace("%1", ", ".join(proposed) or self.tr("none")))
        else:
            self.folderNoteLabel.clear()
        self.setAvailableFolders(folders)

    def _show_problem(self, text: str) -> None:
        self.lastErrorLabel.setText(text)
        self.scrollArea.ensureWidgetVisible(self.lastErrorLabel)

    def _update_sync_hint(self) -> None:
        if not self.syncWhileRunningCheck.isChecked():
            self.syncHintLabel.clear()
            return
        missing = [p for p in self._account_from_fields().problems()
                   if "host name" in p or "user name" in p]
        self.syncHintLabel.setText(
            self.tr("To synchronize, the account needs: %1").replace("%1", " ".join(missing))
            if missing else "")

    def _set_modified(self, modified: bool) -> None:
        if modified != self._modified:
            self._modified = modified
            self.modifiedChanged.emit(modified)

    def _tested(self, ok: bool, message: str) -> None:
        self.testResultLabel.setText(_breakable(message))
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
            auth=AuthMethod(self.authCombo.currentData()),
            ca_file=self.caFileEdit.text().strip(),
            pin_sha256=self.pinEdit.text().strip(),
            timeout=float(self.timeoutSpin.value()),
            password_command=self.passwordCommandEdit.text().strip(),
        )

    def _keep_current(self) -> None:
        """Put the shown account's fields back into its entry."""
        if not 0 <= self._current < len(self._entries):
            return
        entry = self._entries[self._current]
        self._entries[self._current] = replace(
            entry, account=self._account_from_fields(), folders=tuple(self._folders),
            enabled=self.enabledCheck.isChecked(), offered=self.serverSyncCheck.isChecked())
        self._passwords[self._current] = self.passwordEdit.text()

    def _account_title(self, account: AccountSettings) -> str:
        if account.host and account.user:
            return account.key
        return account.host or account.user or self.tr("New account")

    def _fill_combo(self) -> None:
        self._loading = True
        try:
            self.accountCombo.clear()
            for entry in self._entries:
                self.accountCombo.addItem(self._account_title(entry.account))
        finally:
            self._loading = False
        self.removeAccountButton.setEnabled(bool(self._entries))

    def _show_email(self, settings: EmailSettings, *, keep_passwords: bool = False) -> None:
        passwords = {m.account.key: p for m, p in zip(self._entries, self._passwords,
                                                        strict=False)}
        self._entries = list(settings.accounts) or [MailAccount()]
        self._passwords = [passwords.get(m.account.key, "") if keep_passwords else ""
                           for m in self._entries]
        self._current = -1
        self._fill_combo()
        self._loading = True
        try:
            options = settings.options
            self.syncWhileRunningCheck.setChecked(options.sync_while_running)
            self.ownAddressesEdit.setPlainText("\n".join(options.own_addresses))
            self.excludedDomainsEdit.setPlainText("\n".join(options.excluded_domains))
            self.excludeAutomatedCheck.setChecked(options.exclude_automated)
            self.excludeBulkCheck.setChecked(options.exclude_bulk)
            scope = options.contact_scope if options.create_contacts else ""
            self.contactScopeCombo.setCurrentIndex(max(0, self.contactScopeCombo.findData(scope)))
            self.maxRecipientsSpin.setValue(options.max_recipients)
        finally:
            self._loading = False
        self._show_account(0)

    def _show_account(self, index: int) -> None:
        entry = self._entries[index]
        account = entry.account
        self._current = index
        self._loading = True
        try:
            self.accountCombo.setCurrentIndex(index)
            self.enabledCheck.setChecked(entry.enabled)
            self.serverSyncCheck.setChecked(entry.offered)
            self.serverSyncLabel.clear()
            self.hostEdit.setText(account.host)
            self.userEdit.setText(account.user)
            self.portSpin.setValue(account.port)
            self.securityCombo.setCurrentIndex(
                max(0, self.securityCombo.findData(account.security.value)))
            self.authCombo.setCurrentIndex(max(0, self.authCombo.findData(account.auth.value)))
            self.passwordCommandEdit.setText(account.password_command)
            self.caFileEdit.setText(account.ca_file)
            self.pinEdit.setText(account.pin_sha256)
            self.timeoutSpin.setValue(account.timeout)
            password = self._passwords[index]
            if not password and account.host and account.user and (
                    account.auth is AuthMethod.PASSWORD and not account.password_command):
                password = self._credentials.session.get(account.key) or ""
                if not password and self._credentials.keyring_usable():
                    try:
                        password = self._credentials.password(account) or ""
                    except XtmailError as exc:
                        self.lastErrorLabel.setText(people_text(exc))
            self.passwordEdit.setText(password)
            self.testResultLabel.clear()
            self.pinButton.setVisible(False)
            self.folderNoteLabel.clear()
        finally:
            self._loading = False
        self._update_sign_in()
        self._folders = list(entry.folders)
        self._folders_touched = False
        listed = self._listed.get(account.key)
        if listed is not None:
            self.setAvailableFolders(listed)
        else:
            # At once, from what was saved; the server's list replaces it when it comes.
            self.setAvailableFolders(_SavedFolder(name, entry.delimiter)
                                     for name in entry.folders)
        self._update_sync_hint()


#: Room a window frame and a task bar take from a screen.
FRAME_WIDTH, FRAME_HEIGHT = 40, 90
#: The largest the dialog grows: a 1366x768 laptop screen, less frame and task bar.
MAX_WIDTH, MAX_HEIGHT = 1366 - FRAME_WIDTH, 768 - FRAME_HEIGHT


class EmailPreferencesDialog(QDialog):
    """The Email page in a dialog with Save and Cancel, sized to fit the screen.

    Save writes the settings and closes; when a setting must be fixed first, the dialog
    stays open and says what. Cancel (or Escape, or closing the window) drops the edits.
    """

    def __init__(self, page: EmailPreferencesPage, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(self.tr("User Preferences: Email"))
        self.page = page
        page.setParent(self)
        layout = QVBoxLayout(self)
        layout.addWidget(page)
        self.buttonBox = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel, self)
        self.buttonBox.accepted.connect(self._on_save)
        self.buttonBox.rejected.connect(self.reject)
        layout.addWidget(self.buttonBox)
        self.resize(self.sizeHint())

    def saveButton(self) -> QPushButton | None:
        return self.buttonBox.button(QDialogButtonBox.StandardButton.Save)

    def cancelButton(self) -> QPushButton | None:
        return self.buttonBox.button(QDialogButtonBox.StandardButton.Cancel)

    def sizeHint(self) -> QSize:
        """The whole page where the screen allows, never more than a 1366x768 laptop holds
        (less a window frame and a task bar): the page scrolls for the rest."""
        content = self.page.scrollArea.widget()
        hint = super().sizeHint()
        if content is not None:
            inner = content.sizeHint()
            bar = self.page.scrollArea.verticalScrollBar()
            extra = bar.sizeHint().width() if bar is not None else 0
            hint = QSize(max(hint.width(), inner.width() + extra + 24),
                         inner.height() + self.buttonBox.sizeHint().height() + 32)
        width, height = MAX_WIDTH, MAX_HEIGHT
        screen = self.screen() or QGuiApplication.primaryScreen()
        if screen is not None:
            available = screen.availableGeometry()
            width = min(width, available.width() - FRAME_WIDTH)
            height = min(height, available.height() - FRAME_HEIGHT)
        return QSize(min(max(hint.width(), 640), width), min(hint.height(), height))

    def _on_save(self) -> None:
        if self.page.save():
            self.accept()

    def reject(self) -> None:
        self.page.revert()
        super().reject()


async def _in_thread(func: Callable[..., T], *args: object) -> T:
    # Not asyncio.to_thread, which needs a running loop: qasync's run_until_complete runs
    # queued callbacks once more after its loop stopped, and the current loop serves there.
    return await asyncio.get_event_loop().run_in_executor(None, func, *args)


def _wrapping_label(parent: QWidget, text: str = "") -> QLabel:
    label = QLabel(text, parent)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    # Long words (fingerprints, paths) wrap instead of widening the page.
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    return label


_FINGERPRINT_PART = re.compile(r"((?:[0-9A-F]{2}:){8})")


def _breakable(text: str) -> str:
    """A fingerprint is one long word: let it wrap every 8 bytes instead of widening the
    page (a zero-width space, invisible; Trust This Certificate pins the fingerprint
    itself, not this text)."""
    return _FINGERPRINT_PART.sub("\\1\u200b", text)


def _no_icon() -> QIcon:
    return QIcon()


def _lines(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.replace(",", "\n").splitlines() if line.strip())


def _folder_sort_key(info: _Folder) -> tuple[bool, str]:
    return (info.name.upper() != "INBOX", info.name.lower())


__all__ = ["EmailPreferencesDialog", "EmailPreferencesPage", "FolderLister", "list_folders",
           "people_text"]
