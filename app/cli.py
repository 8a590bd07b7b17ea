"""The ``xtmail`` command: headless entry points for administrators, cron and benchmarks."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import psycopg

from xtmail.sync.db.errors import translated
from xtmail.sync.errors import (
    AuthenticationFailed,
    CertificateError,
    ConfigError,
    DatabaseError,
    ImapError,
    XtmailError,
)

if TYPE_CHECKING:
    from xtmail.app.localpg import LocalPostgres
    from xtmail.sync.imap.credentials import CredentialProvider
    from xtmail.sync.imap.settings import SyncSettings
    from xtmail.sync.values import ImportPolicy


def _cmd_init_db(args: argparse.Namespace) -> int:
    from xtmail.sync.db.schema import migrate

    with psycopg.connect(args.dsn, autocommit=True) as conn:
        applied = migrate(conn)
    if applied:
        for migration in applied:
            print(f"applied {migration.version:04d} {migration.name}")
    else:
        print("database is up to date")
    return 0


def _cmd_local_db(args: argparse.Namespace) -> int:
    from pathlib import Path

    from xtmail.app.localpg import LocalPostgres
    from xtmail.sync.db.schema import migrate

    server = LocalPostgres(Path(args.folder) / "pg", port=args.port)
    server.start()
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        if not admin.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (args.dbname,)
        ).fetchone():
            admin.execute(f'CREATE DATABASE "{args.dbname}"')
    dsn = server.dsn(args.dbname)
    with psycopg.connect(dsn, autocommit=True) as conn:
        applied = migrate(conn)
    print(f"PostgreSQL is running in {server.folder} ({len(applied)} migrations applied).")
    print(f"DSN: {dsn}")
    print(f"Stop it with: pg_ctl -D {server.datadir} stop (as the postgres user when root)")
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def _policy(args: argparse.Namespace) -> ImportPolicy:
    from xtmail.sync.values import ImportPolicy

    return ImportPolicy.build(
        own_addresses=args.own_address or (),
        excluded_domains=args.exclude_domain or (),
        exclude_automated=not args.allow_automated,
        exclude_bulk=not args.allow_bulk,
        create_contacts=not args.no_new_contacts,
    )


def _cmd_import(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from xtmail.sync.files import check_paths, import_paths

    paths = check_paths(args.paths)
    with (
        psycopg.connect(args.dsn, autocommit=True) as conn,
        tqdm(unit=" msg", desc="importing", file=sys.stderr, disable=args.quiet) as bar,
    ):
        summary = import_paths(
            conn, paths, policy=_policy(args), workers=args.workers, progress=bar.update,
            writers=args.writers, connect=lambda: psycopg.connect(args.dsn, autocommit=True),
        )
    print(f"imported: {summary.imported}")
    print(f"already present: {summary.already_present}")
    print(f"contacts created: {summary.contacts_created}")
    # Damaged messages are imported; the count says how many were read with repairs.
    print(f"read with repairs: {len(summary.repaired)}")
    if args.verbose:
        for what, defects in summary.repaired:
            print(f"  {what}: {'; '.join(defects)}")
    print(f"failed: {len(summary.failed)}")
    for what, why in summary.failed:
        print(f"  {what}: {why}")
    if summary.skipped:
        print(f"skipped (not mail): {len(summary.skipped)}")
        for what in summary.skipped:
            print(f"  {what}")
    for warning in summary.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 1 if summary.failed else 0


def _add_policy_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("contact creation (the exclusion list)")
    group.add_argument("--own-address", action="append", metavar="ADDR",
                       help="your own address: never becomes a new contact (repeatable)")
    group.add_argument("--exclude-domain", action="append", metavar="DOMAIN",
                       help="no new contacts from this domain or its subdomains (repeatable)")
    group.add_argument("--allow-automated", action="store_true",
                       help="also create contacts for no-reply, mailer-daemon, bounce senders")
    group.add_argument("--allow-bulk", action="store_true",
                       help="also create contacts from list and bulk mail")
    group.add_argument("--no-new-contacts", action="store_true",
                       help="only tie mail to existing contacts")


# -- xtmail sync -------------------------------------------------------------------------------

#: Exit codes of ``xtmail`` (docs/sync.md). A command ending with an error exits with the
#: error's ``exit_code``; these name them for scripts and tests.
EXIT_OK = 0
EXIT_CONFIG = ConfigError.exit_code  # a setting or argument is wrong (as argparse's errors)
EXIT_AUTH = AuthenticationFailed.exit_code  # the server refused the login
EXIT_CERTIFICATE = CertificateError.exit_code  # the certificate did not verify, not pinned
EXIT_NETWORK = ImapError.exit_code  # the server stayed unreachable through all retries
EXIT_DATABASE = DatabaseError.exit_code  # the database stayed unreachable, or refused
EXIT_INTERRUPTED = 130  # Ctrl+C / SIGTERM: committed batches are kept


def _sync_settings(args: argparse.Namespace) -> SyncSettings:
    from datetime import date

    from xtmail.sync.imap.settings import (
        AccountSettings,
        AuthMethod,
        Security,
        SyncSettings,
    )

    try:
        since = date.fromisoformat(args.since) if args.since else None
    except ValueError:
        raise ConfigError(f"--since {args.since!r} is not a date like 2026-01-31.") from None
    account = AccountSettings(
        host=args.host,
        user=args.user,
        port=args.port or 0,
        security=Security(args.security),
        auth=AuthMethod.XOAUTH2 if args.token_env else AuthMethod.PASSWORD,
        ca_file=args.ca_file or "",
        pin_sha256=args.pin_sha256 or "",
        timeout=args.timeout,
    )
    return SyncSettings(
        account=account,
        folders=tuple(args.folder or ("INBOX",)),
        since=since,
        poll_interval=args.poll_interval,
        batch_size=args.batch_size,
        own_addresses=tuple(args.own_address or ()),
        excluded_domains=tuple(args.exclude_domain or ()),
        exclude_automated=not args.allow_automated,
        exclude_bulk=not args.allow_bulk,
        create_contacts=not args.no_new_contacts,
    ).validate()


def _sync_credentials(args: argparse.Namespace) -> CredentialProvider:
    import os

    from xtmail.sync.imap.credentials import (
        Credential,
        KeyringCredentials,
        StaticCredentials,
    )
    from xtmail.sync.imap.settings import AuthMethod

    for option, var, method in (("--token-env", args.token_env, AuthMethod.XOAUTH2),
                                ("--password-env", args.password_env, AuthMethod.PASSWORD)):
        if var:
            value = os.environ.get(var)
            if not value:
                raise ConfigError(f"{option} {var}: the environment variable is not set.")
            return StaticCredentials(Credential(method, value))
    return KeyringCredentials()


def _cmd_sync(args: argparse.Namespace) -> int:
    import multiprocessing
    import os
    import signal
    import threading
    from concurrent.futures import Executor, ProcessPoolExecutor
    from typing import Never

    from tqdm import tqdm

    from xtmail.sync.imap.account import AccountResult, AccountSync, Backoff
    from xtmail.sync.imap.folder_sync import SyncListener

    settings = _sync_settings(args)
    credentials = _sync_credentials(args)
    stop = threading.Event()
    quiet = args.quiet

    class Terminal(SyncListener):
        def __init__(self) -> None:
            self.bar: tqdm[Never] | None = None
            self.folder = ""

        def progress(self, account: str, folder: str, done: int, total: int) -> None:
            if quiet:
                return
            bar = self.bar
            if bar is None or folder != self.folder:
                self.close()
                self.folder = folder
                bar = self.bar = tqdm(total=total, unit=" msg", desc=folder, file=sys.stderr)
            bar.total = total
            bar.n = done
            bar.refresh()

        def status(self, text: str) -> None:
            if not quiet and args.verbose:
                tqdm.write(text, file=sys.stderr)

        def error(self, kind: str, error: XtmailError) -> None:
            self.close()
            print(f"xtmail: {error.user_text()}", file=sys.stderr)

        def warning(self, text: str) -> None:
            tqdm.write(f"xtmail: warning: {text}", file=sys.stderr)

        def close(self) -> None:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    def connect() -> psycopg.Connection:
        return psycopg.connect(args.dsn, autocommit=True, connect_timeout=10)

    def interrupted(signum: int, frame: object) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, interrupted)
    terminal = Terminal()
    workers = args.workers if args.workers is not None else min(4, os.cpu_count() or 1)
    # forkserver: the pool starts its processes lazily, when the sync's fetch thread already
    # runs, and forking a threaded process can copy a held lock into the child.
    executor: Executor | None = (
        ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
        if workers > 0 else None
    )
    sync = AccountSync(
        settings, credentials, connect, executor=executor, listener=terminal, stop=stop,
        backoff=Backoff(initial=args.retry_initial, cap=args.retry_cap),
        retry_limit=None if args.watch else args.retries, writers=args.writers,
    )
    totals = {"imported": 0, "present": 0}
    last: list[AccountResult] = []

    def summarize(result: AccountResult) -> None:
        terminal.close()
        totals["imported"] += result.imported
        totals["present"] += result.already_present
        last[:] = [result]
        if args.watch and result.imported and not quiet:
            print(f"imported {result.imported} new message(s)", flush=True)

    try:
        if args.watch:
            sync.watch(on_pass=summarize)
        else:
            summarize(sync.run_once())
    except KeyboardInterrupt:
        stop.set()
    finally:
        terminal.close()
        sync.close()
        if executor is not None:
            executor.shutdown(cancel_futures=True)
        signal.signal(signal.SIGTERM, previous)
    result = last[0] if last else None
    for folder in result.folders if result else []:
        note = f" ({folder.skipped})" if folder.skipped else ""
        rescan = " after a UIDVALIDITY change" if folder.rescanned else ""
        print(f"{folder.folder}: {folder.imported} new, {folder.already_present} already "
              f"stored{rescan}{note}")
    print(f"imported: {totals['imported']}")
    print(f"already present: {totals['present']}")
    error = result.error if result else None
    if stop.is_set():
        return EXIT_INTERRUPTED
    return EXIT_OK if error is None else error.exit_code


def _add_sync_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sync = sub.add_parser(
        "sync",
        help="synchronize IMAP folders into a database (once, or continuously with --watch)",
        description=f"Exit codes: {EXIT_OK} done, {EXIT_CONFIG} wrong setting, {EXIT_AUTH} "
        f"login refused, {EXIT_CERTIFICATE} certificate refused, {EXIT_NETWORK} server "
        f"unreachable, {EXIT_DATABASE} database unreachable or refusing, {EXIT_INTERRUPTED} "
        "interrupted.",
    )
    sync.add_argument("--dsn", required=True, help="PostgreSQL connection string")
    sync.add_argument("--host", required=True, help="IMAP server host name")
    sync.add_argument("--port", type=int, default=None, help="default 993 (imaps) or 143")
    sync.add_argument("--security", choices=("imaps", "starttls", "none"), default="imaps",
                      help="imaps (default), starttls, or none (unencrypted; test rigs only)")
    sync.add_argument("--user", required=True, help="IMAP login")
    sync.add_argument("--password-env", metavar="VAR",
                      help="read the password from this environment variable (for cron); "
                      "default: the keyring entry service 'xtmail', user 'USER@HOST'")
    sync.add_argument("--token-env", metavar="VAR",
                      help="log in with XOAUTH2, the access token in this environment variable")
    sync.add_argument("--ca-file", help="also trust the CA certificates in this PEM file")
    sync.add_argument("--pin-sha256", metavar="FINGERPRINT",
                      help="trust the server certificate with this SHA-256 fingerprint")
    sync.add_argument("--folder", action="append", metavar="NAME",
                      help="folder to synchronize (repeatable; default INBOX)")
    sync.add_argument("--since", metavar="YYYY-MM-DD",
                      help="a folder's first synchronization imports only mail since this day")
    mode = sync.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", default=True,
                      help="one pass over the folders, then exit (default)")
    mode.add_argument("--watch", action="store_true",
                      help="keep running: IDLE where offered, else poll every --poll-interval")
    sync.add_argument("--poll-interval", type=float, default=180.0, metavar="SECONDS")
    sync.add_argument("--batch-size", type=int, default=250, metavar="N",
                      help="messages per transaction (default 250)")
    sync.add_argument("--workers", type=int, default=None,
                      help="parsing processes (default: one per core, at most 4; 0: none)")
    sync.add_argument("--writers", type=_positive, default=2,
                      help="database connections storing batches side by side (default: 2)")
    sync.add_argument("--retries", type=int, default=8,
                      help="with --once: reconnect attempts before giving up (default 8)")
    sync.add_argument("--retry-initial", type=float, default=1.0, help=argparse.SUPPRESS)
    sync.add_argument("--retry-cap", type=float, default=60.0, help=argparse.SUPPRESS)
    sync.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                      help="network timeout (default 30)")
    sync.add_argument("--quiet", action="store_true", help="no progress bar")
    sync.add_argument("--verbose", action="store_true", help="print what happens")
    _add_policy_options(sync)
    sync.set_defaults(func=_cmd_sync)


def _prepare_demo_database(args: argparse.Namespace) -> tuple[str, LocalPostgres | None]:
    """The demo's DSN, and the private server if this call started it (to stop at exit)."""
    from pathlib import Path

    from xtmail.app.localpg import LocalPostgres
    from xtmail.app.sample_data import seed
    from xtmail.sync.db.schema import migrate

    started = None
    if args.dsn:
        dsn = str(args.dsn)
    else:
        server = LocalPostgres(Path(args.folder) / "pg")
        if not (server.datadir / "PG_VERSION").exists() or server.running_port() is None:
            started = server
        server.start()
        with psycopg.connect(server.dsn(), autocommit=True) as admin:
            if not admin.execute(
                "SELECT 1 FROM pg_database WHERE datname = 'xtmail_demo'"
            ).fetchone():
                admin.execute("CREATE DATABASE xtmail_demo")
        dsn = server.dsn("xtmail_demo")
        print(f"demo database: {dsn} (data in {server.folder})")
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
        if not args.dsn or args.sample_data:
            seed(conn)
    return dsn, started


def _cmd_demo(args: argparse.Namespace) -> int:
    dsn, started = _prepare_demo_database(args)
    try:
        return _run_demo(args, dsn)
    finally:
        if started is not None:
            started.stop()


def _run_demo(args: argparse.Namespace, dsn: str) -> int:
    import os
    from pathlib import Path

    headless = not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if headless and "QT_QPA_PLATFORM" not in os.environ:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        print("No screen found: running offscreen, saving screenshots and quitting.")
        if args.screenshot is None:
            args.screenshot = str(Path(args.folder) / "demo.png")
        if args.quit_after is None:
            args.quit_after = 3.0
    from PyQt6.QtCore import QSettings

    from xtmail.app.demo_host import quiet_offscreen_warnings, run

    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        quiet_offscreen_warnings()
    settings_file = args.settings or str(Path(args.folder) / "settings.ini")
    settings = QSettings(settings_file, QSettings.Format.IniFormat)
    open_document = None
    if args.open:
        code, _, number = args.open.partition(":")
        open_document = (code.upper(), number)
    return run(dsn, settings, screenshot=args.screenshot, open_document=open_document,
               quit_after=args.quit_after)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xtmail", description="Email integration for xTuple ERP."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = sub.add_parser("init-db", help="create or upgrade xtmail's tables in a database")
    init.add_argument("--dsn", required=True, help="PostgreSQL connection string")
    init.set_defaults(func=_cmd_init_db)

    imp = sub.add_parser(
        "import", help="import .eml files, Maildir folders and mbox files into a database"
    )
    imp.add_argument("--dsn", required=True, help="PostgreSQL connection string")
    imp.add_argument("paths", nargs="+", metavar="PATH", help=".eml file, Maildir or mbox")
    imp.add_argument("--workers", type=int, default=None,
                     help="parsing processes (default: one per core, at most 4)")
    imp.add_argument("--writers", type=_positive, default=2,
                     help="database connections storing batches side by side (default: 2)")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    imp.add_argument("--verbose", action="store_true",
                     help="name each message read with repairs, and what was repaired")
    _add_policy_options(imp)
    imp.set_defaults(func=_cmd_import)

    demo = sub.add_parser("demo", help="run the demo ERP host with the Email tabs")
    demo.add_argument("--dsn", help="database to use (default: a private local PostgreSQL "
                      "in --folder, filled with sample records and mail)")
    demo.add_argument("--folder", default=".xtmail-data",
                      help="where the private database and the settings live")
    demo.add_argument("--settings", help="settings file (default: FOLDER/settings.ini)")
    demo.add_argument("--sample-data", action="store_true",
                      help="with --dsn: also add the sample records and mail")
    demo.add_argument("--open", metavar="CODE:NUMBER",
                      help="open a document at start, e.g. S:50123")
    demo.add_argument("--screenshot", metavar="FILE.png",
                      help="save screenshots of the main and a document window")
    demo.add_argument("--quit-after", type=float, metavar="SECONDS",
                      help="quit after this many seconds")
    demo.set_defaults(func=_cmd_demo)

    local = sub.add_parser(
        "local-db", help="start a private PostgreSQL in a folder and initialise a database"
    )
    local.add_argument("--folder", default=".xtmail-data", help="where the server keeps data")
    local.add_argument("--dbname", default="xtmail", help="database to create (default xtmail)")
    local.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    local.set_defaults(func=_cmd_local_db)

    _add_sync_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with translated():
            return int(args.func(args))
    except XtmailError as exc:
        print(f"xtmail: {exc.user_text()}", file=sys.stderr)
        return exc.exit_code
