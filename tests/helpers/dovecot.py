"""A throwaway Dovecot IMAP server for tests and benchmarks.

``DovecotServer(base_dir)`` writes everything into a fresh folder below ``base_dir``: a private
CA and a server certificate, a ``dovecot.conf``, one passwd-file per user and the users'
Maildirs. It listens on ``host`` (127.0.0.2, see DEFAULT_HOST) on free high ports:
``imap_port`` (STARTTLS; plaintext LOGIN is refused until TLS is up) and ``imaps_port``
(implicit TLS). Clients trust ``ca_file`` or use ``ssl_context()``; the certificate names
127.0.0.2, 127.0.0.1 and localhost, and the system trust store is refused.

As root the mail, login and internal processes all run as ``nobody``; as any other user
Dovecot runs unprivileged as that user. Works with Dovecot 2.3 (Debian 12 ``dovecot-imapd``).
Only the standard library and the ``dovecot`` and ``openssl`` binaries are used, so
benchmarks import it with the repository root on ``sys.path``::

    from tests.helpers.dovecot import DovecotServer

    with DovecotServer(tmpdir) as server:
        server.add_user("alice", "secret")
        server.seed_maildir("alice", "INBOX", messages)
        imap = imaplib.IMAP4_SSL(server.host, server.imaps_port,
                                 ssl_context=server.ssl_context())
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import grp
import hashlib
import http.server
import imaplib
import itertools
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

from tests.helpers.tls import make_certificates

__all__ = [
    "DEFAULT_HOST",
    "INSTALL_HINT",
    "DovecotError",
    "DovecotServer",
    "ImapAccount",
    "find_dovecot",
    "imap_quote",
    "imap_utf7",
    "iter_generated_messages",
]

INSTALL_HINT = "Dovecot is not installed: apt-get install dovecot-imapd"
# Debian keeps the binary in /usr/sbin, which is not on a normal user's PATH.
DOVECOT_FALLBACK = Path("/usr/sbin/dovecot")
# Dovecot treats a connection whose remote and local addresses are equal as secured and
# allows plaintext LOGIN on it (login-common/client-common.c). Clients connecting to 127.0.0.2
# come from 127.0.0.1, so listening there makes STARTTLS-before-LOGIN real, as on a remote
# server. Linux routes all of 127.0.0.0/8 to the loopback interface.
DEFAULT_HOST = "127.0.0.2"
LOOPBACK = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
# Unix socket paths are limited to 108 bytes; Dovecot's longest socket name below base_dir is
# about 25 characters, so a longer base_dir goes to a short temporary folder instead.
MAX_RUN_DIR_LEN = 75

_USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
_APPENDUID_RE = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")


class ImapAccount(NamedTuple):
    """A user of the test server, unpackable as ``user, password``."""

    user: str
    password: str


class DovecotError(RuntimeError):
    """The test server could not be set up, started or used."""


def find_dovecot() -> str:
    """Path of the ``dovecot`` binary, or DovecotError (a RuntimeError) with the install hint."""
    found = shutil.which("dovecot")
    if found:
        return found
    if os.access(DOVECOT_FALLBACK, os.X_OK):
        return str(DOVECOT_FALLBACK)
    raise DovecotError(INSTALL_HINT)


def _free_ports(host: str, count: int) -> list[int]:
    # All sockets stay bound until every port is picked, so the ports differ.
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def imap_utf7(name: str) -> str:
    """Modified UTF-7 (RFC 3501 section 5.1.3), as IMAP and Maildir++ folder names use it."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def imap_quote(name: str) -> str:
    """A mailbox name as an IMAP quoted string (imaplib does not quote arguments itself)."""
    encoded = imap_utf7(name)
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ssha512(password: str) -> str:
    salt = secrets.token_bytes(8)
    digest = hashlib.sha512(password.encode() + salt).digest()
    return "{SSHA512}" + base64.b64encode(digest + salt).decode()


def _pids_in_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, read from /proc."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state ppid pgrp ...
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def _title_of(pid: int) -> tuple[str, str] | None:
    """The Dovecot service a process runs ("log", "imap", ...) and the words its process
    title shows in brackets (for an IMAP session: user, address, commands in progress)."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return None
    # Dovecot titles its processes "dovecot[-<instance_name>]/<service>", followed by
    # " [<what it does>]" under verbose_proctitle.
    name, _, detail = argv0.decode(errors="replace").partition(" [")
    prefix, _, service = name.rpartition("/")
    if not prefix.startswith("dovecot"):
        return None
    return service, detail.rstrip("]")


def _service_of(pid: int) -> str | None:
    """The Dovecot service a process runs ("log", "imap", ...), from its process title."""
    title = _title_of(pid)
    return title[0] if title is not None else None


class _IntrospectionHandler(http.server.BaseHTTPRequestHandler):
    """OAuth2 token introspection (RFC 7662) for Dovecot's ``introspection_mode = post``."""

    server: _IntrospectionServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        token = (form.get("token") or [""])[0]
        username = self.server.tokens.get(token)
        answer = {"active": True, "username": username} if username else {"active": False}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: test output is not the place for an access log."""


class _IntrospectionServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__((LOOPBACK, 0), _IntrospectionHandler)
        self.tokens: dict[str, str] = {}


class DovecotServer:
    """A private Dovecot IMAP server below ``base_dir``, started with ``start()``.

    Data (users, Maildirs, certificates) lives in ``self.root`` and survives ``stop()`` and
    ``restart()``; the ports picked by the first ``start()`` are kept for the object's life.
    With ``oauth2=True`` an in-process HTTP endpoint validates tokens registered with
    ``add_oauth_token()`` for the XOAUTH2 and OAUTHBEARER mechanisms. With
    ``plaintext_auth=True`` the plain port takes a login without STARTTLS (for tests of
    unencrypted connections; by default it announces LOGINDISABLED there). With
    ``master_user=(name, password)`` that IMAP master user logs in as any user with
    ``user*name`` and its own password (``auth_master_user_separator = *``).
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        *,
        oauth2: bool = False,
        plaintext_auth: bool = False,
        host: str = DEFAULT_HOST,
        master_user: tuple[str, str] | None = None,
    ) -> None:
        self._dovecot = find_dovecot()
        self._host = host
        Path(base_dir).mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="dovecot-", dir=base_dir)).resolve()
        self.oauth2 = oauth2
        self.plaintext_auth = plaintext_auth
        self.master_user = master_user
        self.home_dir = self.root / "home"
        self.state_dir = self.root / "state"
        self.tls_dir = self.root / "tls"
        self.config_file = self.root / "dovecot.conf"
        self.passwd_dir = self.root / "passwd.d"
        self.log_file = self.root / "dovecot.log"
        self._stderr_file = self.root / "dovecot.stderr"
        self._oauth_conf = self.root / "oauth2.conf.ext"

        if os.geteuid() == 0:
            account = pwd.getpwnam("nobody")
        else:
            account = pwd.getpwuid(os.geteuid())
        self.mail_user = account.pw_name
        self.mail_uid = account.pw_uid
        self.mail_gid = account.pw_gid

        self._imap_port: int | None = None
        self._imaps_port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_dir: Path | None = None
        self._oauth_server: _IntrospectionServer | None = None
        self._oauth_thread: threading.Thread | None = None
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._seed_counter = itertools.count()
        self._seed_epoch = int(time.time())
        self._prepare_folders()
        self._make_certificates()

    # -- public properties ------------------------------------------------------------------
    @property
    def host(self) -> str:
        """Address of both listeners (an IP address, also in the certificate)."""
        return self._host

    @property
    def imap_port(self) -> int:
        """Port of the plain IMAP listener: STARTTLS is required before logging in."""
        if self._imap_port is None:
            raise DovecotError("The Dovecot server has not been started")
        return self._imap_port

    @property
    def imaps_port(self) -> int:
        """Port of the implicit-TLS (IMAPS) listener."""
        if self._imaps_port is None:
            raise DovecotError("The Dovecot server has not been started")
        return self._imaps_port

    @property
    def ca_file(self) -> Path:
        """PEM file of the private CA that signed the server certificate."""
        return self.tls_dir / "ca.crt"

    @property
    def running(self) -> bool:
        """Whether the Dovecot master process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting only this server's CA, hostname checking on."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def log_tail(self, offset: int = 0, lines: int = 30) -> str:
        """The last lines Dovecot wrote (its stderr, then its log from byte ``offset``)."""
        text = ""
        for path, start in ((self._stderr_file, 0), (self.log_file, offset)):
            if path.exists():
                with path.open("rb") as fh:
                    fh.seek(start)
                    text += fh.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start Dovecot and return once both listeners send their IMAP greeting."""
        if self.running:
            return
        if self.oauth2 and self._oauth_server is None:
            self._start_oauth_server()
        fresh_ports = self._imap_port is None
        for attempt in range(2 if fresh_ports else 1):
            if fresh_ports:
                self._imap_port, self._imaps_port = _free_ports(self.host, 2)
            try:
                self._launch()
            except _AddressInUse as exc:
                # Another process took a picked port between probing and binding: pick again.
                if fresh_ports and attempt == 0:
                    continue
                raise DovecotError(str(exc)) from None
            # A benchmark that dies on an exception must not leave Dovecot running.
            atexit.unregister(self.stop)
            atexit.register(self.stop)
            return

    @property
    def master_pid(self) -> int:
        """The process id of the running Dovecot master (its children are its services)."""
        if self._proc is None:
            raise RuntimeError("Dovecot is not running")
        return self._proc.pid

    def stop(self) -> None:
        """Stop every Dovecot process and the OAuth2 endpoint; the data stays for start()."""
        atexit.unregister(self.stop)
        self._stop_dovecot()
        if self._oauth_server is not None:
            self._oauth_server.shutdown()
            self._oauth_server.server_close()
            assert self._oauth_thread is not None
            self._oauth_thread.join()
            self._oauth_server = None
            self._oauth_thread = None

    def restart(self) -> None:
        """Stop and start again on the same ports with the same data; clients are cut off."""
        self._stop_dovecot()
        self.start()

    def __enter__(self) -> DovecotServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- users and mail -------------------------------------------------------------------
    def add_user(self, name: str, password: str, *, capability: str | None = None) -> None:
        """Create a user, or change its password; either takes effect for the next login.

        ``capability`` replaces what the server announces to this user after login (one
        word, ``"IMAP4rev1"`` for a bare server without IDLE, CONDSTORE or SPECIAL-USE).
        """
        self._check_user(name)
        if capability is not None and not re.fullmatch(r"[A-Za-z0-9+=-]+", capability):
            raise ValueError(f"one capability word expected, not {capability!r}")
        path = self.passwd_dir / name
        extra = f"::::::userdb_imap_capability={capability}" if capability else ""
        with self._lock:
            previous = path.stat().st_mtime_ns if path.exists() else None
            tmp = self.passwd_dir / f".{name}.tmp"
            tmp.write_text(f"{name}:{_ssha512(password)}{extra}\n")
            tmp.chmod(0o600)
            self._chown(tmp)  # read by the auth process, which runs as the mail user
            if previous is not None:
                # Dovecot re-reads a passwd-file only if its mtime (in whole seconds) or size
                # changed, and stats it at most once per second: bump the mtime, then wait
                # for the new password to work.
                mtime = max(time.time_ns(), previous + 1_000_000_000)
                os.utime(tmp, ns=(mtime, mtime))
            tmp.replace(path)
            if previous is not None and self.running:
                self._wait_for_password(name, password)
        self._ensure_dir(self.home_dir / name, 0o700)

    def _wait_for_password(self, user: str, password: str) -> None:
        """Log in until the server takes ``password`` (it stats a passwd-file at most once
        per second, so a change is seen within about a second)."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.login(user, password, timeout=START_TIMEOUT).logout()
                return
            except imaplib.IMAP4.error:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def add_oauth_token(self, user: str, token: str) -> None:
        """Make ``token`` a valid OAuth2 bearer token for ``user`` (needs ``oauth2=True``)."""
        if not self.oauth2:
            raise DovecotError("DovecotServer was created without oauth2=True")
        self._check_user(user)
        self._ensure_dir(self.home_dir / user, 0o700)
        with self._lock:
            self._tokens[token] = user
            if self._oauth_server is not None:
                self._oauth_server.tokens[token] = user

    def seed_maildir(
        self, user: str, mailbox: str, messages: Iterable[bytes], *, seen: bool = False
    ) -> None:
        """Write messages straight into the mailbox's Maildir ``cur/``, far faster than APPEND.

        The mailbox (Maildir++ ``.Name`` folder; ``/`` is the hierarchy separator) is created
        and subscribed if needed. Safe while the server runs: each file is written in ``tmp/``
        and renamed into ``cur/``, and Dovecot notices the new files on its next mailbox sync
        (SELECT, NOOP, IDLE). UIDs are assigned then, in seeding order. Bytes are stored as
        given: seed CRLF line endings to get byte-identical ``BODY[]`` back.
        """
        self._check_user(user)
        folder = self._mailbox_dir(user, mailbox)
        self._ensure_maildir(user, folder)
        self._subscribe(user, "INBOX" if mailbox.upper() == "INBOX" else mailbox)
        tmp_dir, cur_dir = f"{folder}/tmp/", f"{folder}/cur/"
        info = ":2,S" if seen else ":2,"
        uid, gid, pid = self.mail_uid, self.mail_gid, os.getpid()
        chown = os.geteuid() == 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        for message in messages:
            n = next(self._seed_counter)
            # Dovecot gives new files UIDs in filename order: the time part encodes the counter.
            secs, usecs = self._seed_epoch + n // 1_000_000, n % 1_000_000
            # S= and W= (size with CRLF line endings) spare Dovecot a stat and a read.
            vsize = len(message) + message.count(b"\n") - message.count(b"\r\n")
            base = f"{secs}.M{usecs:06d}P{pid}Q{n}.xtmail-seed,S={len(message)},W={vsize}"
            fd = os.open(tmp_dir + base, flags, 0o600)
            try:
                view = memoryview(message)
                while view:
                    view = view[os.write(fd, view) :]
                if chown:
                    os.fchown(fd, uid, gid)
            finally:
                os.close(fd)
            os.rename(tmp_dir + base, cur_dir + base + info)

    def login(self, user: str, password: str, *, timeout: float = 30) -> imaplib.IMAP4_SSL:
        """A logged-in IMAPS client (verification on); use it as a context manager."""
        imap = imaplib.IMAP4_SSL(
            self.host, self.imaps_port, ssl_context=self.ssl_context(), timeout=timeout
        )
        try:
            imap.login(user, password)
        except imaplib.IMAP4.error as exc:
            imap.shutdown()
            if "UNAVAILABLE" in str(exc):  # trouble inside Dovecot: its log says what
                raise imaplib.IMAP4.error(f"{exc}\nDovecot log:\n{self.log_tail()}") from exc
            raise
        except BaseException:
            imap.shutdown()
            raise
        return imap

    def append(
        self,
        user: str,
        password: str,
        mailbox: str,
        message: bytes,
        flags: Iterable[str] = (),
    ) -> int:
        """APPEND over IMAPS (creating the mailbox if needed) and return the new UID.

        imaplib turns bare LF into CRLF, so only CRLF messages come back byte-identical.
        """
        flag_list = "(" + " ".join(flags) + ")"
        quoted = imap_quote(mailbox)
        with self.login(user, password) as imap:
            typ, data = imap.append(quoted, flag_list, None, message)
            if typ != "OK" and b"TRYCREATE" in (data[0] or b""):
                imap.create(quoted)
                typ, data = imap.append(quoted, flag_list, None, message)
            match = _APPENDUID_RE.search(data[0] or b"")
            if typ != "OK" or match is None:
                raise DovecotError(f"APPEND to {mailbox!r} failed: {typ} {data!r}")
            return int(match.group(2))

    def sessions(self, user: str, *, running: str | None = None) -> int:
        """How many IMAP sessions ``user`` has logged in now, as the server sees them; with
        ``running``, only those in the middle of that command (``"IDLE"``)."""
        if self._proc is None:
            return 0
        count = 0
        for pid in _pids_in_group(self._proc.pid):
            title = _title_of(pid)
            if title is None or title[0] != "imap":
                continue
            # "<user> <address> <command> ...": the commands the session is running.
            words = title[1].split()
            if words[:1] == [user] and (running is None or running in words[2:]):
                count += 1
        return count

    def kill_sessions(self, user: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to the imap processes serving ``user``'s sessions, and return how
        many. SIGKILL ends a session as a crash or an out-of-memory kill would: the server
        says no ``* BYE``, the client just sees its connection end."""
        if self._proc is None:
            return 0
        killed = 0
        for pid in _pids_in_group(self._proc.pid):
            title = _title_of(pid)
            if title is None or title[0] != "imap" or title[1].split()[:1] != [user]:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
                killed += 1
        return killed

    def wait_for_idle(self, user: str, *, sessions: int = 1, timeout: float = 10.0) -> None:
        """Return once ``sessions`` of ``user``'s sessions are in IDLE on the server."""
        deadline = time.monotonic() + timeout
        while self.sessions(user, running="IDLE") < sessions:
            if time.monotonic() > deadline:
                raise DovecotError(f"{user} did not enter IDLE within {timeout} s")
            time.sleep(0.005)

    def set_uidvalidity_change(self, user: str, mailbox: str) -> None:
        """Force a new UIDVALIDITY for a mailbox, as a server rebuilding its index would.

        Deletes the folder's ``dovecot-uidlist`` and index files (and the mailbox list index)
        with Dovecot stopped, then starts it again if it was running, so connected clients are
        cut off. The messages stay; they get new UIDs from 1 and the mailbox a new, larger
        UIDVALIDITY from the user's ``dovecot-uidvalidity`` counter.
        """
        self._check_user(user)
        folder = self._mailbox_dir(user, mailbox)
        if not (folder / "cur").is_dir():
            raise DovecotError(f"Mailbox {mailbox!r} of {user!r} does not exist")
        was_running = self.running
        self._stop_dovecot()
        doomed = [*folder.glob("dovecot-uidlist*"), *folder.glob("dovecot.index*")]
        doomed += self._mailbox_dir(user, "INBOX").glob("dovecot.list.index*")
        for path in doomed:
            path.unlink(missing_ok=True)
        if was_running:
            self.start()

    # -- internals: files -----------------------------------------------------------------
    def _check_user(self, name: str) -> None:
        # The name becomes a directory and a passwd-file field.
        if not _USER_RE.fullmatch(name) or ".." in name:
            raise ValueError(f"Unsupported test user name: {name!r}")

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            os.chown(path, self.mail_uid, self.mail_gid)

    def _ensure_dir(self, path: Path, mode: int = 0o700) -> None:
        if not path.is_dir():
            path.mkdir(mode=mode)
            self._chown(path)

    def _prepare_folders(self) -> None:
        # The unprivileged Dovecot processes must reach their files through every parent
        # (pytest's and mkdtemp's folders are 0700): grant search, never listing.
        self.root.chmod(0o711)
        if os.geteuid() == 0:
            for parent in self.root.parents:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    parent.chmod(mode | 0o001)
        self.state_dir.mkdir(mode=0o755)
        self.tls_dir.mkdir(mode=0o700)
        self.passwd_dir.mkdir(mode=0o700)
        self._chown(self.passwd_dir)
        self.home_dir.mkdir(mode=0o755)
        self._chown(self.home_dir)

    def _mailbox_dir(self, user: str, mailbox: str) -> Path:
        maildir = self.home_dir / user / "Maildir"
        if mailbox.upper() == "INBOX":
            return maildir
        parts = mailbox.split("/")
        # Maildir++ uses "." on disk for the hierarchy, so a "." inside a name cannot map.
        if any(not part or "." in part or part.startswith("~") for part in parts):
            raise ValueError(f"Unsupported mailbox name for seeding: {mailbox!r}")
        return maildir / ("." + ".".join(imap_utf7(part) for part in parts))

    def _ensure_maildir(self, user: str, folder: Path) -> None:
        maildir = self.home_dir / user / "Maildir"
        self._ensure_dir(maildir.parent)
        for path in (maildir, folder):
            self._ensure_dir(path)
            for sub in ("cur", "new", "tmp"):
                self._ensure_dir(path / sub)
        if folder != maildir:
            marker = folder / "maildirfolder"
            if not marker.exists():
                marker.touch(0o600)
                self._chown(marker)

    def _subscribe(self, user: str, mailbox: str) -> None:
        # Dovecot 2.3 keeps storage names there: Maildir++ "." as the hierarchy separator.
        path = self.home_dir / user / "Maildir" / "subscriptions"
        name = ".".join(imap_utf7(part) for part in mailbox.split("/"))
        with self._lock:
            existing = path.read_text().splitlines() if path.exists() else []
            if name in existing:
                return
            tmp = path.with_name("subscriptions.xtmail-tmp")
            tmp.write_text("".join(f"{line}\n" for line in [*existing, name]))
            self._chown(tmp)
            tmp.replace(path)

    def _make_certificates(self) -> None:
        try:
            make_certificates(self.tls_dir, ["DNS:localhost", f"IP:{LOOPBACK}", f"IP:{self.host}"])
        except RuntimeError as exc:
            raise DovecotError(str(exc)) from exc

    def _write_config(self) -> None:
        assert self._run_dir is not None
        mechanisms = "plain login" + (" xoauth2 oauthbearer" if self.oauth2 else "")
        oauth_passdb = ""
        if self.oauth2:
            assert self._oauth_server is not None
            url = f"http://{LOOPBACK}:{self._oauth_server.server_address[1]}/introspect"
            self._oauth_conf.write_text(
                f"introspection_mode = post\n"
                f"introspection_url = {url}\n"
                f"username_attribute = username\n"
                f"active_attribute = active\n"
                f"active_value = true\n"
            )
            oauth_passdb = (
                "passdb {\n"
                "  driver = oauth2\n"
                "  mechanisms = xoauth2 oauthbearer\n"
                f"  args = {self._oauth_conf}\n"
                "}\n"
            )
        master_passdb = ""
        if self.master_user is not None:
            name, password = self.master_user
            masters = self.root / "master-users"
            masters.write_text(f"{name}:{_ssha512(password)}\n")
            masters.chmod(0o600)
            self._chown(masters)
            # pass = yes: the user logged in as must exist in the ordinary passdb.
            master_passdb = (
                "auth_master_user_separator = *\n"
                "passdb {\n"
                "  driver = passwd-file\n"
                f"  args = {masters}\n"
                "  master = yes\n"
                "  pass = yes\n"
                "}\n"
            )
        user = self.mail_user
        config = f"""\
# Written by tests/helpers/dovecot.py for a throwaway test server.
base_dir = {self._run_dir}
state_dir = {self.state_dir}
instance_name = xtmail-test-{self.root.name}
log_path = {self.log_file}
protocols = imap
listen = {self.host}
default_internal_user = {user}
default_internal_group = {self._group_name()}
default_login_user = {user}
first_valid_uid = {self.mail_uid}
last_valid_uid = {self.mail_uid}
ssl = yes
ssl_cert = <{self.tls_dir / "server.crt"}
ssl_key = <{self.tls_dir / "server.key"}
disable_plaintext_auth = {"no" if self.plaintext_auth else "yes"}
auth_mechanisms = {mechanisms}
auth_verbose = yes
# Process titles show each session's user and the command in progress: tests wait for a
# client's IDLE or login to reach the server (sessions) instead of sleeping.
verbose_proctitle = yes
# Tests fail logins on purpose: no 2 s delay per failure, no growing per-IP penalty.
auth_failure_delay = 0
# One passwd-file per user: Dovecot reads a new file at once, where a shared file it would
# re-read at most once per second.
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = {self.passwd_dir}/%u
}}
{oauth_passdb}{master_passdb}userdb {{
  driver = static
  args = uid={self.mail_uid} gid={self.mail_gid} home={self.home_dir}/%u
}}
mail_location = maildir:~/Maildir
mail_fsync = never
mail_max_userip_connections = 100
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Drafts {{
    special_use = \\Drafts
  }}
  mailbox Sent {{
    special_use = \\Sent
  }}
  mailbox Trash {{
    special_use = \\Trash
  }}
  mailbox Junk {{
    special_use = \\Junk
  }}
  mailbox Archive {{
    special_use = \\Archive
  }}
}}
service imap-login {{
  chroot =
  # One long-lived login process instead of a fork per connection: faster for benchmarks.
  # No process_min_avail: a pre-forked login process is respawned when stop() ends it.
  service_count = 0
  inet_listener imap {{
    address = {self.host}
    port = {self._imap_port}
  }}
  inet_listener imaps {{
    address = {self.host}
    port = {self._imaps_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""
        self.config_file.write_text(config)

    def _group_name(self) -> str:
        return grp.getgrgid(self.mail_gid).gr_name

    # -- internals: processes ---------------------------------------------------------------
    def _start_oauth_server(self) -> None:
        server = _IntrospectionServer()
        server.tokens.update(self._tokens)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long shutdown() may wait
            name="dovecot-oauth2-introspection",
            daemon=True,
        )
        thread.start()
        self._oauth_server, self._oauth_thread = server, thread

    def _make_run_dir(self) -> Path:
        run_dir = self.root / "run"
        if len(str(run_dir)) <= MAX_RUN_DIR_LEN:
            return run_dir
        short = Path(tempfile.mkdtemp(prefix="xtmail-dovecot-", dir="/tmp"))
        short.chmod(0o755)
        return short

    def _launch(self) -> None:
        self._run_dir = self._make_run_dir()
        self._write_config()
        log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with self._stderr_file.open("ab") as stderr:
            self._proc = subprocess.Popen(
                [self._dovecot, "-F", "-c", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, to wait for every child
            )
        try:
            self._wait_for_greetings(log_offset)
        except BaseException:
            self._stop_dovecot()
            raise

    def _wait_for_greetings(self, log_offset: int) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        pending = {self.imap_port: False, self.imaps_port: True}
        while pending:
            if self._proc.poll() is not None:
                self._reap()
                log = self.log_tail(log_offset)
                if "Address already in use" in log:
                    raise _AddressInUse(f"Dovecot could not bind its ports:\n{log}")
                raise DovecotError(f"Dovecot exited during start-up:\n{log}")
            if time.monotonic() > deadline:
                raise DovecotError(
                    f"No IMAP greeting within {START_TIMEOUT:.0f} s on port(s) "
                    f"{sorted(pending)}:\n{self.log_tail(log_offset)}"
                )
            for port, tls in list(pending.items()):
                try:
                    greeted = self._greets(port, tls=tls)
                except ssl.SSLError as exc:
                    self._wait_for_log(log_offset, ("SSL", "TLS"))  # the server's reason
                    raise DovecotError(
                        f"TLS handshake with Dovecot on port {port} failed: {exc}\n"
                        f"{self.log_tail(log_offset)}"
                    ) from exc
                if greeted:
                    del pending[port]
            if pending:
                time.sleep(0.01)

    def _wait_for_log(self, offset: int, words: tuple[str, ...], timeout: float = 2.0) -> None:
        """Wait (briefly) until Dovecot's log past ``offset`` mentions one of ``words``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(word in self.log_tail(offset) for word in words):
                return
            time.sleep(0.01)

    def _greets(self, port: int, *, tls: bool) -> bool:
        try:
            with socket.create_connection((self.host, port), timeout=2) as sock:
                if not tls:
                    return sock.recv(256).startswith(b"* OK")
                with self.ssl_context().wrap_socket(sock, server_hostname=self.host) as tls_sock:
                    return tls_sock.recv(256).startswith(b"* OK")
        except (ConnectionError, TimeoutError):
            return False

    def _stop_dovecot(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            # SIGTERM to the master, and to the processes serving clients, which otherwise
            # keep the master waiting for about a second and then outlive it. Not to the
            # others: killed before the master handles its own signal, they would be respawned
            # and the new ones would hold up the shutdown for 5 s.
            proc.send_signal(signal.SIGTERM)
            self._signal_children(proc.pid, {"imap", "imap-login"})
            self._wait_for_master_exit(proc)
        self._reap()

    @staticmethod
    def _signal_children(master: int, services: set[str]) -> None:
        for pid in _pids_in_group(master):
            if pid != master and _service_of(pid) in services:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)

    def _wait_for_master_exit(self, proc: subprocess.Popen[bytes]) -> None:
        """Wait for the master, and kill it once only its log process is left.

        Dovecot 2.3 ends a shutdown with about a second of idling: the master signals its
        log process and sleeps 1 s, or the log process waits for the master's log pipe to
        close (both seen with strace). By then every other child has exited, so there is
        nothing left to wait for: the master is killed (the log process drains what was
        written and exits when the master's end of the pipe closes) and master.pid removed.
        """
        deadline = time.monotonic() + STOP_TIMEOUT
        idle_since: float | None = None
        while proc.poll() is None:
            now = time.monotonic()
            if now > deadline or (idle_since is not None and now - idle_since > 0.02):
                proc.kill()
                break
            busy = any(
                pid != proc.pid and _service_of(pid) != "log" for pid in _pids_in_group(proc.pid)
            )
            if busy:
                idle_since = None
            elif idle_since is None:
                idle_since = now
            time.sleep(0.005)
        proc.wait()
        if proc.returncode != 0 and self._run_dir is not None:
            (self._run_dir / "master.pid").unlink(missing_ok=True)

    def _reap(self) -> None:
        """Wait until no process of Dovecot's group is left (they hold the listening sockets).

        Leftovers get SIGTERM after a grace second, SIGKILL after STOP_TIMEOUT.
        """
        proc = self._proc
        if proc is None:
            return
        proc.wait()
        started = time.monotonic()
        escalation = [(1.0, signal.SIGTERM), (STOP_TIMEOUT, signal.SIGKILL)]
        while _pids_in_group(proc.pid):
            if escalation and time.monotonic() - started > escalation[0][0]:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, escalation.pop(0)[1])
            time.sleep(0.005)
        self._proc = None
        if self._run_dir is not None and not self._run_dir.is_relative_to(self.root):
            shutil.rmtree(self._run_dir, ignore_errors=True)
        self._run_dir = None


class _AddressInUse(DovecotError):
    pass


def iter_generated_messages(count: int, *, prefix: str = "msg") -> Iterator[bytes]:
    """``count`` small distinct RFC 5322 messages with CRLF line endings, for seeding."""
    for i in range(count):
        yield (
            f"From: Sender {i} <sender{i}@example.com>\r\n"
            f"To: Test <test@example.com>\r\n"
            f"Subject: {prefix} {i}\r\n"
            f"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
            f"Message-ID: <{prefix}-{i}@xtmail.test>\r\n"
            f"X-Seq: {i}\r\n"
            f"\r\n"
            f"Body of {prefix} {i}.\r\n"
        ).encode()
