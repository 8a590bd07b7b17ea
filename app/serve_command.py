"""``xtmail serve``: synchronize every account of ``xtmail.server_account`` and send the
ERP's queued mail, as a service or once (cron). docs/serve.md."""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import psycopg

from xtmail.app import options
from xtmail.app.options import (
    EXIT_CONFIG,
    EXIT_DATABASE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    positive,
)
from xtmail.sync.errors import ConfigError

if TYPE_CHECKING:
    from xtmail.sync.outgoing import SmtpSettings
    from xtmail.sync.serve import OfferedLogin, OnceSummary

#: TCP keepalives on every connection of the service: a database server that vanished
#: without closing the connection (a host gone, a network cut) is noticed within about a
#: minute, and the lease's locks with it (docs/serve.md, "Takeover time").
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
              "keepalives_count": 3}


def _smtp_settings(args: argparse.Namespace) -> SmtpSettings | None:
    import ssl

    from xtmail.sync.imap.credentials import run_secret_command
    from xtmail.sync.outgoing import SmtpSettings

    if not args.smtp_host:
        return None
    password = None
    if args.smtp_password_env:
        password = os.environ.get(args.smtp_password_env)
        if not password:
            raise ConfigError(f"--smtp-password-env {args.smtp_password_env}: the environment "
                              "variable is not set.")
    elif args.smtp_password_command:
        password = run_secret_command(args.smtp_password_command)
    if password and not args.smtp_user:
        raise ConfigError("An SMTP password needs --smtp-user.")
    context = ssl.create_default_context(cafile=args.smtp_ca_file) if args.smtp_ca_file \
        else None
    port = args.smtp_port or {"ssl": 465, "starttls": 587, "none": 25}[args.smtp_security]
    return SmtpSettings(args.smtp_host, port, security=args.smtp_security,
                        username=args.smtp_user or None, password=password,
                        timeout=args.timeout, ssl_context=context)


def _offered_login(args: argparse.Namespace) -> OfferedLogin | None:
    from xtmail.sync.serve import OfferedLogin

    if not args.offered_secret:
        if args.offered_master_user:
            raise ConfigError("--offered-master-user needs --offered-secret with the master "
                              "user's password (env:VARIABLE, file:PATH or command:COMMAND).")
        return None
    source, sep, ref = args.offered_secret.partition(":")
    if not sep or not ref:
        raise ConfigError(f"--offered-secret {args.offered_secret!r}: expected SOURCE:REF, "
                          "e.g. env:XTMAIL_MASTER_PASSWORD or dir:/etc/xtmail/offered.")
    return OfferedLogin(source, ref, master_user=args.offered_master_user or "",
                        separator=args.offered_master_separator,
                        ca_file=args.offered_ca_file or "")


def _configure_logging(args: argparse.Namespace) -> Callable[[], None]:
    """One event per line on stderr (journald and container runtimes collect it); returns
    what puts the previous logging configuration back."""
    from xtmail.sync.serve import EventFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EventFormatter(json_lines=args.log_format == "json"))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, args.log_level.upper()))

    def restore() -> None:
        root.handlers[:] = handlers
        root.setLevel(level)
    return restore


def _print_summary(summary: OnceSummary) -> None:
    for key, result in sorted(summary.synced.items()):
        print(f"{key}: {result.imported} new, {result.already_present} already stored")
    for key, holder in sorted(summary.held.items()):
        print(f"{key}: skipped, synchronized by {holder}")
    for key, reason in sorted(summary.failed.items()):
        print(f"{key}: failed: {reason.splitlines()[0] if reason else '?'}")
    if summary.outbox_sent or summary.outbox_failed:
        print(f"outbox: {summary.outbox_sent} sent, {summary.outbox_failed} not sent")
    if summary.connect_recorded:
        print(f"recorded {summary.connect_recorded} mail(s) xTuple Connect's batch manager "
              "sent")
    if summary.connect_error:
        print("recording what xTuple Connect's batch manager sent failed: "
              + summary.connect_error.replace("\n", " "))
    print(f"accounts: {len(summary.synced)} synchronized, {len(summary.held)} held "
          f"elsewhere, {len(summary.failed)} failed")
    print(f"imported: {summary.imported}", flush=True)


def _cmd_serve(args: argparse.Namespace) -> int:
    restore_logging = _configure_logging(args)
    try:
        return _serve(args)
    finally:
        restore_logging()


def _serve(args: argparse.Namespace) -> int:
    from xtmail.sync.pipeline import parse_processes
    from xtmail.sync.serve import ServeOptions, Server, event, start_http

    smtp = _smtp_settings(args)
    offered = _offered_login(args)
    listen: tuple[str, int] | None = None
    if args.listen:
        host, _, port = args.listen.rpartition(":")
        if not port.isdigit():
            raise ConfigError(f"--listen {args.listen!r}: expected HOST:PORT, e.g. "
                              "127.0.0.1:9469.")
        listen = (host or "127.0.0.1", int(port))

    # libpq's connect_timeout bounds a new connection (whole seconds, at least 2); the
    # server's Watchdog bounds every call on it after that.
    bound: dict[str, str | int | None] = dict(KEEPALIVES)
    if "connect_timeout" not in psycopg.conninfo.conninfo_to_dict(args.dsn) \
            and not os.environ.get("PGCONNECT_TIMEOUT"):
        bound["connect_timeout"] = max(2, math.ceil(min(args.db_timeout,
                                                        options.CONNECT_TIMEOUT)))

    def connect(application: str) -> psycopg.Connection:
        dsn = psycopg.conninfo.make_conninfo(args.dsn, application_name=application, **bound)
        return options.connect(dsn)

    serve_options = ServeOptions(
        max_active=args.max_active, writers=args.writers, poll_interval=args.poll_interval,
        batch_size=args.batch_size, timeout=args.timeout,
        rebalance_every=args.rebalance_every, outbox_every=args.outbox_every,
        pass_retries=args.retries, retry_initial=args.retry_initial,
        retry_cap=args.retry_cap, failed_initial=args.failed_initial,
        failed_cap=args.failed_cap, share=not args.no_share, db_timeout=args.db_timeout)
    workers = args.workers if args.workers is not None else min(2, os.cpu_count() or 1)
    executor = parse_processes(workers) if workers > 0 else None
    server = Server(connect, options=serve_options, executor=executor, smtp=smtp,
                    offered=offered)
    http = None
    stopped = threading.Event()

    def interrupted(signum: int, frame: object) -> None:
        stopped.set()
        server.stop.set()

    previous = {sig: signal.signal(sig, interrupted) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if listen is not None:
            http = start_http(server, *listen)
            address = http.server_address
            event("listening", host=address[0], port=address[1])
        if args.once:
            summary = server.run_once()
            _print_summary(summary)
            if stopped.is_set():
                return EXIT_INTERRUPTED
            return EXIT_SOME_FAILED if summary.failed or summary.connect_error else EXIT_OK
        server.run()
        return EXIT_OK
    finally:
        if http is not None:
            http.shutdown()
        if executor is not None:
            executor.shutdown(cancel_futures=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser(
        "serve",
        help="synchronize every account configured in the database, and send the ERP's "
        "queued mail (a service; --once for cron)",
        description="Synchronize every enabled account of xtmail.server_account, and with "
        "--offered-secret the accounts users offered (IDLE where the server has it), and "
        "send the mail xTuple queued with submitEmailToBatch when SMTP is set; "
        "where xTuple Connect sends it, record what its batch manager sent. "
        "Several instances on several hosts share the accounts through the database. "
        "SIGTERM stops between batches. See docs/serve.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=options.exit_codes((EXIT_OK, EXIT_SOME_FAILED, EXIT_CONFIG, EXIT_DATABASE,
                                   EXIT_INTERRUPTED)),
    )
    serve.add_argument("--dsn", required=True, help="PostgreSQL connection string (a role "
                       "that may read xtmail.server_account and xtmail.outbox)")
    serve.add_argument("--once", action="store_true",
                       help="one pass over every account and the outbox, then exit with a "
                       "summary (exit 1 if an account failed)")
    serve.add_argument("--listen", metavar="HOST:PORT",
                       help="serve /metrics (Prometheus) and /healthz here (port 0: any)")
    serve.add_argument("--max-active", type=positive, default=4, metavar="N",
                       help="accounts in a pass at once (default 4); the others wait")
    serve.add_argument("--workers", type=int, default=None,
                       help="parsing processes shared by all accounts (default: one per "
                       "core, at most 2; 0: none)")
    serve.add_argument("--writers", type=positive, default=2,
                       help="database connections storing one folder's batches (default 2)")
    serve.add_argument("--poll-interval", type=float, default=180.0, metavar="SECONDS",
                       help="between passes where the server offers no IDLE (default 180)")
    serve.add_argument("--rebalance-every", type=float, default=10.0, metavar="SECONDS",
                       help="between looks at the accounts, the locks and the other "
                       "instances (default 10): bounds the takeover after an instance died")
    serve.add_argument("--no-share", action="store_true",
                       help="take every free account, not about an equal share")
    serve.add_argument("--batch-size", type=int, default=250, metavar="N")
    serve.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                       help="network timeout (default 30)")
    serve.add_argument("--db-timeout", type=float, default=60.0, metavar="SECONDS",
                       help="the longest any one database call may take (default 60): a "
                       "database that does not answer within it is reported, its "
                       "connection closed and tried again (health: unhealthy meanwhile)")
    serve.add_argument("--retries", type=int, default=3,
                       help="reconnects within a pass before the account waits (default 3)")
    serve.add_argument("--retry-initial", type=float, default=1.0, help=argparse.SUPPRESS)
    serve.add_argument("--retry-cap", type=float, default=60.0, help=argparse.SUPPRESS)
    serve.add_argument("--failed-initial", type=float, default=30.0, metavar="SECONDS",
                       help="first wait after a failed pass, doubling (default 30)")
    serve.add_argument("--failed-cap", type=float, default=900.0, help=argparse.SUPPRESS)
    serve.add_argument("--log-format", choices=("kv", "json"), default="kv",
                       help="one line per event: key=value (default) or JSON")
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                       default="info")
    offered = serve.add_argument_group(
        "accounts users offer the service (xtmail.offered_account; docs/serve.md)")
    offered.add_argument("--offered-secret", metavar="SOURCE:REF",
                         help="synchronize the accounts users offered, logging in with this "
                         "secret: the IMAP master user's password (env:VARIABLE, file:PATH, "
                         "command:COMMAND, with --offered-master-user), or dir:FOLDER holding "
                         "one file per account named user@host")
    offered.add_argument("--offered-master-user", metavar="NAME",
                         help="log in to offered accounts as USER<separator>NAME (an IMAP "
                         "master user, e.g. Dovecot's)")
    offered.add_argument("--offered-master-separator", default="*", metavar="SEP",
                         help="between the user and the master user in the login (default "
                         "'*', Dovecot's auth_master_user_separator)")
    offered.add_argument("--offered-ca-file", metavar="PATH",
                         help="also trust the CA certificates in this file for offered accounts")
    smtp = serve.add_argument_group("sending the ERP's queued mail (xtmail.outbox)")
    smtp.add_argument("--smtp-host", help="send the queue through this SMTP server")
    smtp.add_argument("--smtp-port", type=int, default=None,
                      help="default 587 (starttls), 465 (ssl), 25 (none)")
    smtp.add_argument("--smtp-security", choices=("starttls", "ssl", "none"),
                      default="starttls")
    smtp.add_argument("--smtp-user")
    smtp.add_argument("--smtp-password-env", metavar="VAR",
                      help="the SMTP password is in this environment variable")
    smtp.add_argument("--smtp-password-command", metavar="COMMAND",
                      help="a command that prints the SMTP password")
    smtp.add_argument("--smtp-ca-file", help="also trust the CA certificates in this file")
    smtp.add_argument("--outbox-every", type=float, default=30.0, metavar="SECONDS",
                      help="between looks at the queue, and where xTuple Connect is "
                      "installed at what its batch manager sent (default 30)")
    serve.set_defaults(func=_cmd_serve)
