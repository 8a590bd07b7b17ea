"""``xtmail serve``: one service that synchronizes every account of ``xtmail.server_account``
and sends the ERP's queued mail (docs/serve.md).

Work is shared between instances through PostgreSQL alone. Each instance keeps one *lease
connection* and takes each account it synchronizes with a session advisory lock on it
(:class:`LeaseConnection`, the same lock :class:`AccountSync` takes on the desktop). The
server drops the locks of a session whose process died, so another instance takes those
accounts on its next look (``rebalance_every``). Instances see each other by their lease
connections' ``application_name`` and each keeps about its share of the accounts.

Memory stays bounded whatever the number of accounts: at most ``max_active`` accounts are in
a pass at once (a semaphore), all sharing one parse pool; an account between passes holds
no database connection, only its thread and its IMAP connection (in IDLE where offered).
An account that fails is retried with its own backoff, outside the slots, so it never
holds up the others.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest

from xtmail.sync.connect_sent import record_connect_sent
from xtmail.sync.db.errors import translated
from xtmail.sync.db.watchdog import NOT_ANSWERING_HINT, Watchdog
from xtmail.sync.errors import AuthenticationFailed, ConfigError, XtmailError
from xtmail.sync.imap.account import (
    SERVER_APPLICATION,
    AccountResult,
    AccountSync,
    Backoff,
    account_lock_holder,
    try_lock_account,
    unlock_account,
)
from xtmail.sync.imap.credentials import COMMAND_TIMEOUT, Credential, run_secret_command
from xtmail.sync.imap.folder_sync import SyncListener
from xtmail.sync.imap.settings import (
    AccountSettings,
    AuthMethod,
    Security,
    SyncSettings,
    describe_error,
)
from xtmail.sync.outbox import send_queued
from xtmail.sync.outgoing import SmtpSettings

log = logging.getLogger("xtmail.serve")

#: What to do when the service's role may not record Connect's sent mail.
CONNECT_GRANT_HINT = (
    "Grant the service's role the ledger of Connect's sent mail, as the database owner: "
    "GRANT SELECT, INSERT, UPDATE ON xtmail.connect_sent TO <the service's role> "
    "(docs/serve.md); it also needs SELECT on xtbatch.batch, which Connect grants xtrole.")

ConnectDb = Callable[[str], psycopg.Connection]
"""Opens an autocommit connection whose ``application_name`` is the argument."""


# -- structured logs -----------------------------------------------------------------------


def event(name: str, level: int = logging.INFO, **fields: object) -> None:
    """Log one event: a name and fields, one line (:class:`EventFormatter`)."""
    log.log(level, name, extra={"event": name, "fields": fields})


class EventFormatter(logging.Formatter):
    """One line per record: ``ts=... level=info event=pass_done account=a@h imported=3``, or
    a JSON object per line with ``json_lines``. Records of other loggers become
    ``event=log logger=... msg=...``."""

    def __init__(self, json_lines: bool = False) -> None:
        super().__init__()
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
        }
        name = getattr(record, "event", None)
        if name is None:
            fields.update(event="log", logger=record.name, msg=record.getMessage())
        else:
            fields["event"] = name
            fields.update(getattr(record, "fields", {}))
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        if self.json_lines:
            return json.dumps(fields, default=str, ensure_ascii=False)
        return " ".join(f"{key}={_quoted(value)}" for key, value in fields.items())


def _quoted(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    if text and not any(c.isspace() or c in '"=\\' for c in text):
        return text
    return json.dumps(text, ensure_ascii=False)


# -- the accounts --------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerAccount:
    """One row of ``xtmail.server_account``: what to synchronize and where its secret is."""

    id: int
    settings: SyncSettings
    secret_source: str  # "command", "env" or "file"
    secret_ref: str

    @property
    def key(self) -> str:
        return self.settings.account.key


@dataclass
class AccountsFound:
    accounts: list[ServerAccount] = field(default_factory=list)
    #: Rows that cannot be used as they are: (account key, what is wrong).
    problems: list[tuple[str, str]] = field(default_factory=list)


def load_accounts(conn: psycopg.Connection, *, poll_interval: float = 180.0,
                  batch_size: int = 250, timeout: float = 30.0) -> AccountsFound:
    """The enabled accounts of ``xtmail.server_account``, validated."""
    rows = conn.execute(
        """SELECT sa_id, sa_host, sa_port, sa_security, sa_user, sa_auth, sa_secret_source,
                  sa_secret_ref, sa_folders, sa_since, sa_ca_file, sa_pin_sha256,
                  sa_own_addresses, sa_exclude_domains, sa_create_contacts
             FROM xtmail.server_account WHERE sa_enabled ORDER BY sa_id"""
    ).fetchall()
    found = AccountsFound()
    for (sa_id, host, port, security, user, auth, source, ref, folders, since, ca_file, pin,
         own, excluded, create) in rows:
        key = f"{user}@{host}"
        try:
            settings = _row_settings(
                AccountSettings(
                    host=host, user=user, port=port, security=Security(security),
                    auth=AuthMethod(auth), ca_file=ca_file, pin_sha256=pin, timeout=timeout),
                folders, since, own, excluded, create,
                poll_interval=poll_interval, batch_size=batch_size)
        except XtmailError as exc:
            found.problems.append((key, exc.user_text().replace("\n", " ")))
            continue
        found.accounts.append(ServerAccount(int(sa_id), settings, source, ref))
    return found


def _row_settings(
    account: AccountSettings, folders: list[str], since: object, own: list[str],
    excluded: list[str], create: object, *, poll_interval: float, batch_size: int,
) -> SyncSettings:
    """An account row's sync settings (a server account's or an offered one's), validated:
    raises :class:`XtmailError` saying what to fix."""
    return SyncSettings(
        account=account,
        folders=tuple(folders) or ("INBOX",),
        since=since if isinstance(since, date) else None,
        poll_interval=poll_interval, batch_size=batch_size,
        own_addresses=tuple(own), excluded_domains=tuple(excluded),
        create_contacts=bool(create),
    ).validate()


@dataclass(frozen=True)
class OfferedLogin:
    """How the service logs in to the accounts users offered it (``xtmail.offered_account``,
    migration 0015): never with a secret of the user's, with one the administrator gave the
    service.

    With ``master_user``, an IMAP master user: the service logs in as
    ``<user><separator><master_user>`` (Dovecot's ``auth_master_user_separator``) with the
    master user's password, found through ``source`` and ``ref`` as a server account's
    secret (``env``, ``file``, ``command``). Without, ``source`` is ``dir``: a secret file
    per account, ``<ref>/<user>@<host>``, its first line the password (or token).
    ``ca_file`` is trusted for every offered account (a private CA), besides each offer's
    pinned certificate.
    """

    source: str
    ref: str
    master_user: str = ""
    separator: str = "*"
    ca_file: str = ""

    def __post_init__(self) -> None:
        if self.source not in {"env", "file", "command", "dir"}:
            raise ConfigError(f"Unknown source {self.source!r} of the offered accounts' secret.",
                              hint="Use env:VARIABLE, file:PATH, command:COMMAND or dir:FOLDER.")
        if self.master_user and self.source == "dir":
            raise ConfigError("An IMAP master user has one password: give it as env:, file: "
                              "or command:, not a folder of per-account files.")
        if not self.master_user and self.source != "dir":
            raise ConfigError("Without an IMAP master user the service needs a secret per "
                              "offered account: give a folder (dir:FOLDER) of files named "
                              "user@host.")

    def account(self, user: str, host: str) -> tuple[str, str, str]:
        """(login name, secret source, secret reference) for the account ``user@host``."""
        if self.master_user:
            return f"{user}{self.separator}{self.master_user}", self.source, self.ref
        return "", "file", str(Path(self.ref) / f"{user}@{host}")


def load_offered(conn: psycopg.Connection, login: OfferedLogin, *,
                 poll_interval: float = 180.0, batch_size: int = 250,
                 timeout: float = 30.0) -> AccountsFound:
    """The accounts users offered the service, validated, with the administrator's login."""
    rows = conn.execute(
        """SELECT oa_id, oa_host, oa_port, oa_security, oa_user, oa_auth, oa_folders,
                  oa_since, oa_pin_sha256, oa_own_addresses, oa_exclude_domains,
                  oa_create_contacts
             FROM xtmail.offered_account ORDER BY oa_id"""
    ).fetchall()
    found = AccountsFound()
    for (oa_id, host, port, security, user, auth, folders, since, pin, own, excluded,
         create) in rows:
        key = f"{user}@{host}"
        name, source, ref = login.account(user, host)
        try:
            settings = _row_settings(
                AccountSettings(
                    host=host, user=user, port=port, security=Security(security),
                    auth=AuthMethod(auth), ca_file=login.ca_file, pin_sha256=pin,
                    timeout=timeout, login=name),
                folders, since, own, excluded, create,
                poll_interval=poll_interval, batch_size=batch_size)
        except XtmailError as exc:
            found.problems.append((key, exc.user_text().replace("\n", " ")))
            continue
        # Negative ids: offered accounts, apart from the administrator's (positive).
        found.accounts.append(ServerAccount(-int(oa_id), settings, source, ref))
    return found


#: What to do when the service may not read the offered accounts.
OFFERED_GRANT_HINT = ("Grant the service's role the offered accounts, as the database owner: "
                      "GRANT SELECT ON xtmail.offered_account TO <the service's role> "
                      "(docs/serve.md).")


class SecretCredentials:
    """The secret of a server account, found on the host the service runs on: printed by a
    command (``command``), in an environment variable of the service (``env``), or the first
    line of a file (``file``; a relative path is looked up in systemd's
    ``$CREDENTIALS_DIRECTORY`` when set). Read again at every login (tokens expire)."""

    def __init__(self, source: str, ref: str, *, environ: Mapping[str, str] | None = None,
                 timeout: float = COMMAND_TIMEOUT) -> None:
        self.source = source
        self.ref = ref
        self.environ = environ if environ is not None else os.environ
        self.timeout = timeout

    def credential(self, account: AccountSettings) -> Credential:
        if self.source == "command":
            return Credential(account.auth, run_secret_command(self.ref, self.timeout))
        if self.source == "env":
            value = self.environ.get(self.ref, "")
            if not value:
                raise ConfigError(
                    f"The environment variable {self.ref} named for {account.key} is not set "
                    "in the service's environment.",
                    hint="Set it in the service's environment (systemd: an EnvironmentFile "
                    "readable by root only), or change sa_secret_ref.")
            return Credential(account.auth, value)
        if self.source == "file":
            path = Path(self.ref)
            folder = self.environ.get("CREDENTIALS_DIRECTORY")
            if not path.is_absolute() and folder:
                path = Path(folder) / path
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ConfigError(
                    f"The secret file {path} of {account.key} cannot be read "
                    f"({exc.strerror or exc}).",
                    hint="Give the service that file (systemd: LoadCredential=).") from exc
            if not lines or not lines[0]:
                raise ConfigError(f"The secret file {path} of {account.key} is empty.")
            return Credential(account.auth, lines[0])
        raise ConfigError(f"{account.key}: unknown secret source {self.source!r}.")

    def __repr__(self) -> str:
        return f"SecretCredentials({self.source}, {self.ref!r})"


# -- the lease -----------------------------------------------------------------------------


def instance_name() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


class LeaseConnection:
    """This instance's accounts: advisory locks on one connection (an :class:`AccountLease`).

    Its ``application_name`` is ``xtmail serve on <host> pid <pid>``: who holds an account
    (:func:`account_lock_holder`), and how many instances run (:meth:`instances`). If the
    connection breaks, every lock is gone with it: :meth:`check` says so, and the server
    stops its accounts before it takes any again.
    """

    def __init__(self, connect: ConnectDb, instance: str) -> None:
        self._connect = connect
        self.application = f"{SERVER_APPLICATION} on {instance}"
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        self._held: set[str] = set()
        #: Set when the session broke while it held locks, until check() reports it.
        self._broken = False

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._held.clear()  # a new session holds nothing
            with translated():
                self._conn = self._connect(self.application)
        return self._conn

    def _dropped(self) -> None:
        conn, self._conn = self._conn, None
        self._broken = self._broken or bool(self._held)
        self._held.clear()
        if conn is not None:
            conn.close()

    def acquire(self, key: str) -> str | None:
        with self._lock:
            if key in self._held and self._conn is not None and not self._conn.closed:
                return None
            try:
                with translated():
                    conn = self._connection()
                    if try_lock_account(conn, key):
                        self._held.add(key)
                        return None
                    return account_lock_holder(conn, key)
            except XtmailError:
                self._dropped()
                raise

    def release(self, key: str) -> None:
        with self._lock:
            if key not in self._held:
                return
            self._held.discard(key)
            if self._conn is not None and not self._conn.closed:
                try:
                    unlock_account(self._conn, key)
                except psycopg.Error:
                    self._dropped()  # and with the session, every lock it held

    def holds(self, key: str) -> bool:
        with self._lock:
            return key in self._held

    def check(self) -> bool:
        """Whether the connection, and so every lock taken on it, is still there."""
        with self._lock:
            if self._conn is not None and not self._conn.closed:
                try:
                    self._conn.execute("SELECT 1")
                except psycopg.Error:
                    self._dropped()
            elif self._held:
                self._dropped()
            broken, self._broken = self._broken, False
            return not broken

    def run(self, work: Callable[[psycopg.Connection], Any]) -> Any:
        """``work(connection)`` on the lease connection (reading the accounts)."""
        with self._lock:
            try:
                with translated():
                    return work(self._connection())
            except XtmailError:
                self._dropped()
                raise

    def instances(self) -> int:
        """How many ``xtmail serve`` instances have a lease connection to this database."""
        def count(conn: psycopg.Connection) -> int:
            row = conn.execute(
                """SELECT count(*) FROM pg_stat_activity
                    WHERE datname = current_database() AND application_name LIKE %s""",
                (f"{SERVER_APPLICATION} on %",)).fetchone()
            return int(row[0]) if row else 1
        return max(1, int(self.run(count)))

    def close(self) -> None:
        with self._lock:
            self._dropped()


# -- metrics -------------------------------------------------------------------------------


class Metrics:
    """The service's metrics, in their own registry (the Prometheus text format)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.imported = Counter("xtmail_serve_messages_imported",
                                "New messages stored", ["account"], registry=r)
        self.already_present = Counter("xtmail_serve_messages_already_present",
                                       "Messages fetched that were stored already",
                                       ["account"], registry=r)
        self.passes = Counter("xtmail_serve_passes", "Completed passes over an account",
                              ["account"], registry=r)
        self.errors = Counter("xtmail_serve_account_errors",
                              "Passes that ended with an error, by kind",
                              ["account", "kind"], registry=r)
        self.retries = Counter("xtmail_serve_account_retries",
                               "Connection faults retried within a pass", ["account"],
                               registry=r)
        self.last_success = Gauge("xtmail_serve_account_last_success_timestamp_seconds",
                                  "When the account's last pass completed", ["account"],
                                  registry=r)
        self.lag = Gauge("xtmail_serve_account_lag_seconds",
                         "Seconds since the account's last completed pass (since this "
                         "instance took it, before its first)", ["account"], registry=r)
        self.first_sync = Gauge("xtmail_serve_account_first_pass_seconds",
                                "Duration of the first pass after this instance took the "
                                "account", ["account"], registry=r)
        self.owned = Gauge("xtmail_serve_accounts_owned",
                           "Accounts this instance synchronizes", registry=r)
        self.active = Gauge("xtmail_serve_passes_active", "Accounts in a pass now",
                            registry=r)
        self.configured = Gauge("xtmail_serve_accounts_configured",
                                "Enabled accounts in xtmail.server_account", registry=r)
        self.lease_up = Gauge("xtmail_serve_lease_connected",
                              "1 while the lease connection (and its locks) is there",
                              registry=r)
        self.outbox_sent = Counter("xtmail_serve_outbox_sent", "Queued ERP mail sent",
                                   registry=r)
        self.outbox_failed = Counter("xtmail_serve_outbox_failed",
                                     "Queued ERP mail not sent, by what became of it",
                                     ["state"], registry=r)
        self.connect_recorded = Counter("xtmail_serve_connect_sent_recorded",
                                        "Mail xTuple Connect's batch manager sent, recorded",
                                        registry=r)
        self._since: dict[str, float] = {}
        self._lock = threading.Lock()

    def taken(self, key: str) -> None:
        with self._lock:
            self._since[key] = time.time()
        self.lag.labels(key).set_function(lambda: self._lag(key))

    def passed(self, key: str) -> None:
        now = time.time()
        with self._lock:
            self._since[key] = now
        self.passes.labels(key).inc()
        self.last_success.labels(key).set(now)

    def dropped(self, key: str) -> None:
        with self._lock:
            self._since.pop(key, None)
        try:
            self.lag.remove(key)
        except KeyError:
            pass

    def _lag(self, key: str) -> float:
        with self._lock:
            since = self._since.get(key)
        return 0.0 if since is None else max(0.0, time.time() - since)

    def text(self) -> bytes:
        return generate_latest(self.registry)


class _Listener(SyncListener):
    def __init__(self, metrics: Metrics, account: AccountSettings) -> None:
        self.metrics = metrics
        self.account = account

    def committed(self, account: str, folder: str, imported: int, already_present: int) -> None:
        self.metrics.imported.labels(account).inc(imported)
        self.metrics.already_present.labels(account).inc(already_present)
        event("batch_committed", logging.DEBUG, account=account, folder=folder,
              imported=imported, already_present=already_present)

    def error(self, kind: str, error: XtmailError) -> None:
        self.metrics.errors.labels(self.account.key, kind).inc()
        event("account_error", logging.ERROR, account=self.account.key, kind=kind,
              error=describe_error(error, self.account).replace("\n", " "))

    def retrying(self, text: str) -> None:
        self.metrics.retries.labels(self.account.key).inc()
        event("account_retrying", logging.WARNING, account=self.account.key, detail=text)

    def warning(self, text: str) -> None:
        event("account_warning", logging.WARNING, account=self.account.key, detail=text)

    def status(self, text: str) -> None:
        event("account_status", logging.DEBUG, account=self.account.key, status=text)


# -- the server ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServeOptions:
    max_active: int = 4  # accounts in a pass at once
    writers: int = 2  # database connections storing one folder's batches
    poll_interval: float = 180.0  # seconds between passes where IDLE is not offered
    batch_size: int = 250
    timeout: float = 30.0  # network timeout of the IMAP connections
    rebalance_every: float = 10.0  # seconds between looks at the accounts and the locks
    outbox_every: float = 30.0  # seconds between runs of the outbox
    pass_retries: int = 3  # reconnects within a pass before it ends with the error
    retry_initial: float = 1.0  # backoff within a pass
    retry_cap: float = 60.0
    failed_initial: float = 30.0  # backoff between passes of an account that failed
    failed_cap: float = 900.0
    share: bool = True  # keep about an equal share of the accounts per instance
    #: Seconds any one database call may take before its connection is cut (client side);
    #: the server's statement_timeout is a little less.
    db_timeout: float = 60.0


@dataclass
class OnceSummary:
    """What ``xtmail serve --once`` did."""

    synced: dict[str, AccountResult] = field(default_factory=dict)
    held: dict[str, str] = field(default_factory=dict)  # account -> who synchronizes it
    failed: dict[str, str] = field(default_factory=dict)  # account -> why
    outbox_sent: int = 0
    outbox_failed: int = 0
    connect_recorded: int = 0
    connect_error: str | None = None  # why Connect's sent mail could not be recorded

    @property
    def imported(self) -> int:
        return sum(r.imported for r in self.synced.values())


class Server:
    """Synchronizes the accounts of ``xtmail.server_account`` this instance takes, and sends
    the outbox when ``smtp`` is given. ``connect(application_name)`` opens an autocommit
    connection. :meth:`run` until ``stop`` is set; :meth:`run_once` for cron."""

    def __init__(self, connect: ConnectDb, *, options: ServeOptions | None = None,
                 executor: Executor | None = None, smtp: SmtpSettings | None = None,
                 metrics: Metrics | None = None, instance: str | None = None,
                 environ: Mapping[str, str] | None = None,
                 offered: OfferedLogin | None = None) -> None:
        self.options = options or ServeOptions()
        self._connect_db = connect
        self.watchdog = Watchdog(self.options.db_timeout, on_cut=self._not_answering)
        self.executor = executor
        self.smtp = smtp
        self.metrics = metrics or Metrics()
        self.instance = instance or instance_name()
        self.environ = environ
        self.offered = offered
        self.lease = LeaseConnection(self.connect, self.instance)
        self.slots = threading.BoundedSemaphore(max(1, self.options.max_active))
        self.stop = threading.Event()
        self._workers: dict[str, _Worker] = {}
        self._stopping: dict[str, _Worker] = {}
        self._healthy_at = 0.0
        #: Why the last look at the database failed; None once one succeeded again.
        self._db_error: str | None = None

    # -- the database
    def connect(self, application: str) -> psycopg.Connection:
        """A new autocommit connection, every call on it bounded (:class:`Watchdog`)."""
        conn = self._connect_db(application)
        try:
            return self.watchdog.watch(conn, application)
        except BaseException:
            conn.close()
            raise

    def _not_answering(self, label: str, waited: float) -> None:
        event("database_not_answering", logging.ERROR, connection=label,
              seconds=round(waited, 1),
              error=f"The database did not answer within {self.options.db_timeout:g} s; "
              "the connection was closed. " + NOT_ANSWERING_HINT)

    # -- health
    def health(self) -> tuple[bool, dict[str, object]]:
        """Healthy while the lease connection answered within three rebalance periods and
        the last look at the database succeeded."""
        age = time.monotonic() - self._healthy_at
        ok = (self._healthy_at > 0 and age < 3 * self.options.rebalance_every + 5
              and self._db_error is None)
        details: dict[str, object] = {
            "status": "ok" if ok else "unhealthy", "instance": self.instance,
            "accounts": sorted(self._workers),
            "lease_checked_seconds_ago": round(age, 1) if self._healthy_at else None}
        if self._db_error is not None:
            details["error"] = self._db_error
        return ok, details

    # -- connections for the accounts' passes
    def _worker_connection(self) -> psycopg.Connection:
        return self.connect(f"xtmail serve worker on {self.instance}")

    def _account_sync(self, account: ServerAccount, stop: threading.Event,
                      retry_limit: int) -> AccountSync:
        o = self.options
        return AccountSync(
            account.settings,
            SecretCredentials(account.secret_source, account.secret_ref, environ=self.environ),
            self._worker_connection, executor=self.executor,
            listener=_Listener(self.metrics, account.settings.account), stop=stop,
            backoff=Backoff(initial=o.retry_initial, cap=o.retry_cap),
            retry_limit=retry_limit, writers=o.writers, lease=self.lease)

    def _load(self) -> AccountsFound:
        o = self.options

        def load(conn: psycopg.Connection) -> AccountsFound:
            found = load_accounts(conn, poll_interval=o.poll_interval,
                                  batch_size=o.batch_size, timeout=o.timeout)
            if self.offered is None:
                return found
            try:
                offered = load_offered(conn, self.offered, poll_interval=o.poll_interval,
                                       batch_size=o.batch_size, timeout=o.timeout)
            except psycopg.errors.InsufficientPrivilege:
                found.problems.append(("offered accounts", "The service may not read "
                                       "xtmail.offered_account. " + OFFERED_GRANT_HINT))
                return found
            # The administrator's row for an account comes first.
            taken = {a.key for a in found.accounts} | {k for k, _ in found.problems}
            found.accounts += [a for a in offered.accounts if a.key not in taken]
            found.problems += offered.problems
            return found

        found: AccountsFound = self.lease.run(load)
        for key, problem in found.problems:
            event("account_invalid", logging.ERROR, account=key, error=problem)
        self.metrics.configured.set(len(found.accounts))
        return found

    # -- cron
    def run_once(self) -> OnceSummary:
        """One pass over every enabled account this instance can take, then the outbox."""
        summary = OnceSummary()
        found = self._load()
        for key, problem in found.problems:
            summary.failed[key] = problem
        lock = threading.Lock()

        def one(account: ServerAccount) -> None:
            key = account.key
            holder = self.lease.acquire(key)
            if holder is not None:
                event("account_held", account=key, held_by=holder)
                with lock:
                    summary.held[key] = holder
                return
            sync = self._account_sync(account, self.stop, self.options.pass_retries)
            started = time.monotonic()
            try:
                self.metrics.active.inc()
                result = sync.run_once()
            finally:
                self.metrics.active.dec()
                sync.close()
                self.lease.release(key)
            _log_pass(result, time.monotonic() - started)
            with lock:
                if result.error is not None:
                    summary.failed[key] = describe_error(result.error,
                                                         account.settings.account)
                elif result.held_by is not None:
                    summary.held[key] = result.held_by
                else:
                    summary.synced[key] = result
                    self.metrics.passed(key)

        try:
            with ThreadPoolExecutor(max(1, self.options.max_active),
                                    thread_name_prefix="xtmail-serve") as pool:
                for future in [pool.submit(one, a) for a in found.accounts]:
                    future.result()
            with translated():
                conn = self.connect(f"xtmail serve outbox on {self.instance}")
            with conn:
                if self.smtp is not None:
                    sent, failed = self._send_outbox(conn, self.smtp)
                    summary.outbox_sent, summary.outbox_failed = sent, failed
                try:
                    summary.connect_recorded = self._record_connect_sent(conn)
                except XtmailError as exc:
                    summary.connect_error = exc.user_text()
                    event("connect_sent_error", logging.ERROR,
                          error=exc.user_text().replace("\n", " "))
        finally:
            self.lease.close()
            self.watchdog.close()
        return summary

    def _send_outbox(self, conn: psycopg.Connection, smtp: SmtpSettings) -> tuple[int, int]:
        with translated():
            result = send_queued(conn, smtp, worker=self.instance)
        self.metrics.outbox_sent.inc(len(result.sent))
        for state, ids in (("dead", result.dead), ("retrying", result.retrying),
                           ("uncertain", result.uncertain)):
            if ids:
                self.metrics.outbox_failed.labels(state).inc(len(ids))
        failed = len(result.dead) + len(result.retrying) + len(result.uncertain)
        if result.sent or failed:
            event("outbox_sent", sent=len(result.sent), dead=len(result.dead),
                  retrying=len(result.retrying), uncertain=len(result.uncertain))
        return len(result.sent), failed

    def _record_connect_sent(self, conn: psycopg.Connection) -> int:
        """Record what Connect's batch manager sent (where Connect is installed)."""
        with translated("to record what Connect's batch manager sent",
                        privilege_hint=CONNECT_GRANT_HINT):
            result = record_connect_sent(conn)
        if result.recorded:
            self.metrics.connect_recorded.inc(len(result.recorded))
            event("connect_sent_recorded", recorded=len(result.recorded))
        return len(result.recorded)

    # -- service
    def run(self) -> None:
        """Until :attr:`stop` is set: take, synchronize and give up accounts; send mail."""
        outbox: threading.Thread | None = None
        if self.smtp is not None:
            outbox = threading.Thread(target=self._outbox_loop, args=(self.smtp,),
                                      name="xtmail-serve-outbox", daemon=True)
            outbox.start()
        recorder = threading.Thread(target=self._connect_loop, name="xtmail-serve-connect",
                                    daemon=True)
        recorder.start()
        backoff = Backoff(initial=1.0, cap=max(1.0, self.options.rebalance_every))
        event("serve_started", instance=self.instance, max_active=self.options.max_active)
        try:
            while not self.stop.is_set():
                delay = self.options.rebalance_every
                try:
                    self._rebalance()
                    backoff.reset()
                    self._db_error = None
                except XtmailError as exc:
                    self._db_error = exc.user_text().replace("\n", " ")
                    self.metrics.lease_up.set(0)
                    self._stop_all("lease connection lost")
                    delay = backoff.next()
                    event("database_unavailable", logging.ERROR,
                          error=self._db_error, retry_in=round(delay, 1))
                self.stop.wait(delay)
        finally:
            self._stop_all("stopping")
            self._reap(wait=True)
            self.lease.close()
            if outbox is not None:
                outbox.join(timeout=self.options.timeout)
            recorder.join(timeout=self.options.timeout)
            self.watchdog.close()
            event("serve_stopped", instance=self.instance)

    def _rebalance(self) -> None:
        if not self.lease.check():
            # The session and every lock with it is gone: another instance may be on our
            # accounts already. Stop them all before taking any again.
            self._db_error = "the lease connection broke"
            self.metrics.lease_up.set(0)
            self._stop_all("lease connection lost")
            event("lease_lost", logging.ERROR, error=self._db_error)
        self._reap(wait=False)
        found = self._load()  # reconnects the lease connection when needed
        self.metrics.lease_up.set(1)
        self._healthy_at = time.monotonic()
        wanted = {a.key: a for a in found.accounts}
        for key, worker in list(self._workers.items()):
            if key not in wanted:
                self._retire(key, "removed or disabled")
            elif wanted[key] != worker.account:
                self._retire(key, "settings changed")  # taken again with the new ones
            elif not worker.thread.is_alive():
                self._retire(key, worker.ended or "ended")
        fair = len(wanted)
        if self.options.share and wanted:
            fair = math.ceil(len(wanted) / self.lease.instances())
        if len(self._workers) > fair:
            # More than this instance's share: give the last taken back, between batches.
            # (Those still stopping count for nothing here: they are on their way out.)
            for key in list(self._workers)[fair:]:
                self._retire(key, "shared with another instance")
        free = [a for k, a in sorted(wanted.items())
                if k not in self._workers and k not in self._stopping]
        for account in free:
            if len(self._workers) + len(self._stopping) >= fair:
                break
            holder = self.lease.acquire(account.key)
            if holder is None:
                self._start(account)
        self.metrics.owned.set(len(self._workers))

    def _start(self, account: ServerAccount) -> None:
        worker = _Worker(self, account)
        self._workers[account.key] = worker
        self.metrics.taken(account.key)
        event("account_taken", account=account.key, instance=self.instance)
        worker.thread.start()

    def _retire(self, key: str, why: str) -> None:
        worker = self._workers.pop(key, None)
        if worker is None:
            return
        worker.halt()
        self._stopping[key] = worker
        event("account_given_up", account=key, reason=why)

    def _stop_all(self, why: str) -> None:
        for key in list(self._workers):
            self._retire(key, why)

    def _reap(self, *, wait: bool) -> None:
        """Release the accounts whose workers have ended: only then may another take them."""
        for key, worker in list(self._stopping.items()):
            if wait:
                worker.thread.join(timeout=self.options.timeout + 5)
            if not worker.thread.is_alive():
                del self._stopping[key]
                self.lease.release(key)
                self.metrics.dropped(key)

    def _outbox_loop(self, smtp: SmtpSettings) -> None:
        conn: psycopg.Connection | None = None
        backoff = Backoff(initial=self.options.outbox_every, cap=3600.0)  # a refused login
        unavailable = self._database_backoff()
        delay = 0.0
        while not self.stop.wait(delay):
            delay = self.options.outbox_every
            try:
                if conn is None or conn.closed:
                    with translated():
                        conn = self.connect(f"xtmail serve outbox on {self.instance}")
                self._send_outbox(conn, smtp)
                backoff.reset()
                unavailable.reset()
            except AuthenticationFailed as exc:
                delay = backoff.next()
                event("outbox_error", logging.ERROR, error=exc.user_text().replace("\n", " "),
                      retry_in=round(delay))
            except XtmailError as exc:
                if conn is not None:
                    conn.close()
                conn = None
                delay = unavailable.next()
                event("outbox_error", logging.ERROR, error=exc.user_text().replace("\n", " "),
                      retry_in=round(delay))
        if conn is not None:
            conn.close()


    def _database_backoff(self) -> Backoff:
        """Waits after a database fault in the periodic jobs: short, so they go on soon after
        the database is back."""
        every = self.options.outbox_every
        return Backoff(initial=every, cap=max(every, self.options.rebalance_every, 30.0))

    def _connect_loop(self) -> None:
        """Every ``outbox_every`` seconds: record what Connect's batch manager sent."""
        conn: psycopg.Connection | None = None
        backoff = self._database_backoff()
        delay = 0.0
        while not self.stop.wait(delay):
            delay = self.options.outbox_every
            try:
                if conn is None or conn.closed:
                    with translated():
                        conn = self.connect(f"xtmail serve connect on {self.instance}")
                self._record_connect_sent(conn)
                backoff.reset()
            except XtmailError as exc:
                if conn is not None:
                    conn.close()
                conn = None
                delay = backoff.next()
                event("connect_sent_error", logging.ERROR,
                      error=exc.user_text().replace("\n", " "), retry_in=round(delay))
        if conn is not None:
            conn.close()


class _Worker:
    """One account this instance holds: passes in a slot, waits (IDLE) outside one."""

    def __init__(self, server: Server, account: ServerAccount) -> None:
        self.server = server
        self.account = account
        self.stop = threading.Event()
        self.sync = server._account_sync(account, self.stop, server.options.pass_retries)
        #: Why the worker ended on its own (the account is held elsewhere), for the log.
        self.ended = ""
        self.thread = threading.Thread(target=self._run, name=f"xtmail-serve {account.key}",
                                       daemon=True)

    def halt(self) -> None:
        self.stop.set()
        self.sync.wake.set()

    def _run(self) -> None:
        o = self.server.options
        failed = Backoff(initial=o.failed_initial, cap=o.failed_cap)
        first = True
        try:
            while not self.stop.is_set():
                while not self.server.slots.acquire(timeout=0.5):
                    if self.stop.is_set():
                        return
                started = time.monotonic()
                self.server.metrics.active.inc()
                try:
                    result = self.sync.run_once()
                finally:
                    self.server.metrics.active.dec()
                    self.server.slots.release()
                # Between passes the account holds no database connection.
                self.sync.release_database()
                took = time.monotonic() - started
                if result.held_by is not None:
                    self.ended = f"synchronized by {result.held_by}"
                    return
                if self.stop.is_set() and result.error is None:
                    _log_pass(result, took)
                    return
                _log_pass(result, took)
                if result.error is not None:
                    delay = failed.next()
                    event("account_retry_later", logging.WARNING, account=self.account.key,
                          retry_in=round(delay, 1))
                    self.stop.wait(delay)
                    continue
                failed.reset()
                self.server.metrics.passed(self.account.key)
                if first:
                    first = False
                    self.server.metrics.first_sync.labels(self.account.key).set(took)
                self.sync.wait_for_change(o.poll_interval)
        except Exception:
            # A bug in this account's pass must not end the others: logged, and the
            # account is given up (the next rebalance takes it again).
            log.exception("account %s: unexpected error", self.account.key)
            self.ended = "unexpected error (logged)"
        finally:
            self.sync.close()


def _log_pass(result: AccountResult, took: float) -> None:
    if result.held_by is not None:
        event("account_held", account=result.account, held_by=result.held_by)
        return
    fields: dict[str, object] = {
        "account": result.account, "imported": result.imported,
        "already_present": result.already_present, "retries": result.retries,
        "seconds": round(took, 3)}
    if result.error is not None:
        fields["error_kind"] = result.error.kind
    event("pass_done" if result.error is None else "pass_failed",
          logging.INFO if result.error is None else logging.WARNING, **fields)


# -- the health and metrics endpoint -------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._answer(200, CONTENT_TYPE_LATEST, self.server.serve.metrics.text())
        elif path in {"/health", "/healthz"}:
            ok, details = self.server.serve.health()
            self._answer(200 if ok else 503, "application/json",
                         json.dumps(details).encode())
        else:
            self._answer(404, "text/plain; charset=utf-8", b"not found\n")

    def _answer(self, code: int, kind: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes are not events worth a log line."""


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], serve: Server) -> None:
        super().__init__(address, _Handler)
        self.serve = serve


def start_http(server: Server, host: str, port: int) -> ThreadingHTTPServer:
    """``/metrics`` (Prometheus) and ``/healthz`` (200 or 503, JSON) in a thread; stop it
    with ``shutdown()``. Port 0 picks a free one (``server_address``)."""
    http = _HttpServer((host, port), server)
    threading.Thread(target=http.serve_forever, name="xtmail-serve-http",
                     daemon=True).start()
    return http


__all__ = [
    "AccountsFound",
    "EventFormatter",
    "LeaseConnection",
    "Metrics",
    "OfferedLogin",
    "OnceSummary",
    "SecretCredentials",
    "ServeOptions",
    "Server",
    "ServerAccount",
    "event",
    "instance_name",
    "load_accounts",
    "load_offered",
    "start_http",
]
