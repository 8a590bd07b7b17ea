"""A throwaway SMTP server for tests: aiosmtpd in its own thread on a free loopback port,
keeping every message it accepts.

``SmtpServer(folder, security=...)`` speaks plain SMTP (``"none"``), requires STARTTLS
before mail (``"starttls"``), or TLS from the first byte (``"ssl"``); with ``users`` it
takes logins, offered only once TLS is up (and required with STARTTLS). Clients trust
``ca_file`` or use ``ssl_context()``. ``refuse`` names recipients it answers 550 for.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.helpers.tls import make_certificates

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Received:
    """One message the server accepted, as the client sent it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    login: str | None  # who logged in, if anyone


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self._server = server

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address.lower() in self._server.refuse:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        login = session.auth_data if session.authenticated else None
        self._server._accepted(Received(
            envelope.mail_from, tuple(envelope.rcpt_tos), bytes(envelope.original_content),
            login))
        return "250 2.0.0 Message accepted for delivery"


class SmtpServer:
    """A real SMTP server on ``HOST``:``port``; ``received`` lists what it accepted."""

    host = HOST

    def __init__(self, folder: Path, *, security: str = "none",
                 users: dict[str, str] | None = None, refuse: Iterable[str] = ()) -> None:
        if security not in {"none", "starttls", "ssl"}:
            raise ValueError(f"unknown security {security!r}")
        if users and security == "none":
            raise ValueError("logins are offered over TLS only")
        self.security = security
        self.users = dict(users or {})
        self.refuse = {a.lower() for a in refuse}
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._certificate = make_certificates(folder, [f"IP:{HOST}", "DNS:localhost"])
        self.port = _free_port()
        self._controller: Controller | None = None

    @property
    def ca_file(self) -> Path:
        return self._certificate.ca_file

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting only this server's CA, hostname checking on."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def start(self) -> None:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(self._certificate.cert_file, self._certificate.key_file)
        options: dict[str, Any] = {}
        if self.security == "ssl":
            options["ssl_context"] = tls
        elif self.security == "starttls":
            options.update(tls_context=tls, require_starttls=True)
        if self.users and self.security == "starttls":
            options.update(authenticator=self._authenticate, auth_required=True)
        elif self.users:
            # aiosmtpd counts only STARTTLS as TLS: on an implicit-TLS connection it offers
            # AUTH only if told TLS is not needed, and warns if a login is then required.
            options.update(authenticator=self._authenticate, auth_require_tls=False)
        self._controller = Controller(_Handler(self), hostname=HOST, port=self.port, **options)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            user = auth_data.login.decode()
            if self.users.get(user) == auth_data.password.decode():
                return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)

    def _accepted(self, message: Received) -> None:
        with self._lock:
            self.received.append(message)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])
