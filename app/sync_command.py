"""``xtmail sync``: synchronize IMAP folders into a database, once or continuously."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

import psycopg

from xtmail.app import options
from xtmail.app.options import (
    EXIT_AUTH,
    EXIT_CERTIFICATE,
    EXIT_CONFIG,
    EXIT_DATABASE,
    EXIT_INTERRUPTED,
    EXIT_NETWORK,
    EXIT_OK,
    add_policy_options,
    positive,
)
from xtmail.sync.errors import ConfigError, XtmailError

if TYPE_CHECKING:
    from xtmail.sync.imap.credentials import CredentialProvider
    from xtmail.sync.imap.settings import SyncSettings


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
        auth=(AuthMethod.XOAUTH2 if args.token_env or args.token_command
              else AuthMethod.PASSWORD),
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
        contact_scope=args.new_contacts_from,
        max_recipients=args.max_recipients,
    ).validate()


def _sync_credentials(args: argparse.Namespace) -> CredentialProvider:
    import os

    from xtmail.sync.imap.credentials import (
        Credential,
        StaticCredentials,
        cli_credentials,
    )
    from xtmail.sync.imap.settings import AuthMethod

    for option, var, method in (("--token-env", args.token_env, AuthMethod.XOAUTH2),
                                ("--password-env", args.password_env, AuthMethod.PASSWORD)):
        if var:
            value = os.environ.get(var)
            if not value:
                raise ConfigError(f"{option} {var}: the environment variable is not set.")
            return StaticCredentials(Credential(method, value))
    return cli_credentials(password_command=args.password_command,
                           token_command=args.token_command, ask_password=args.ask_password)


def _cmd_sync(args: argparse.Namespace) -> int:
    import os
    import signal
    import threading
    from concurrent.futures import Executor
    from typing import Never

    from tqdm import tqdm

    from xtmail.sync.imap.account import AccountResult, AccountSync, Backoff
    from xtmail.sync.imap.folder_sync import SyncListener
    from xtmail.sync.pipeline import parse_processes

    settings = _sync_settings(args)
    credentials = _sync_credentials(args)
    stop = threading.Event()
    quiet = args.quiet

    class Terminal(SyncListener):
        def __init__(self) -> None:
            self.bar: tqdm[Never] | None = None
            self.folder = ""
            # Counted as batches commit (the sync thread calls in), so that the summary is
            # what the database holds however the run ends: reconnects, stops, signals.
            self.imported_total = 0
            self.present_total = 0

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

        def retrying(self, text: str) -> None:
            # Shown without --verbose: a run that waits for a server must say so.
            if not quiet:
                tqdm.write(f"xtmail: {text}", file=sys.stderr)

        def committed(self, account: str, folder: str, imported: int,
                      already_present: int) -> None:
            self.imported_total += imported
            self.present_total += already_present

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
        return options.connect(args.dsn)

    def interrupted(signum: int, frame: object) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl+C: stop waiting for the batch
        stop.set()
        if not quiet:
            tqdm.write("xtmail: stopping after the batch in progress (Ctrl+C again to "
                       "quit at once)", file=sys.stderr)

    # Both signals stop between batches, so that the summary can count what committed.
    previous = {sig: signal.signal(sig, interrupted) for sig in (signal.SIGTERM, signal.SIGINT)}
    terminal = Terminal()
    workers = args.workers if args.workers is not None else min(4, os.cpu_count() or 1)
    # forkserver: the pool starts its processes lazily, when the sync's fetch thread already
    # runs, and forking a threaded process can copy a held lock into the child.
    executor: Executor | None = parse_processes(workers) if workers > 0 else None
    sync = AccountSync(
        settings, credentials, connect, executor=executor, listener=terminal, stop=stop,
        backoff=Backoff(initial=args.retry_initial, cap=args.retry_cap),
        retry_limit=None if args.watch else args.retries, writers=args.writers,
    )

    def summarize(result: AccountResult) -> None:
        terminal.close()
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
        # Every way out prints what was committed, an interrupted run too.
        terminal.close()
        sync.close()
        if executor is not None:
            executor.shutdown(cancel_futures=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        result: AccountResult | None = sync.current
        for folder in result.folders if result else []:
            note = f" ({folder.skipped})" if folder.skipped else ""
            rescan = " after the server renumbered it" if folder.rescanned else ""
            print(f"{folder.folder}: {folder.imported} new, {folder.already_present} "
                  f"already stored{rescan}{note}")
        if result is not None and result.held_by is not None:
            # Not an error: another xtmail (the company's mail server) has this account.
            print(f"xtmail: synchronized by {result.held_by}; this run left the account to it.",
                  file=sys.stderr)
        print(f"imported: {terminal.imported_total}")
        print(f"already present: {terminal.present_total}", flush=True)
        if stop.is_set():
            print(f"xtmail: interrupted: {terminal.imported_total} messages saved. The next "
                  "run resumes where this one stopped.", file=sys.stderr)
    error = result.error if result else None
    if stop.is_set():
        return EXIT_INTERRUPTED
    return EXIT_OK if error is None else error.exit_code


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sync = sub.add_parser(
        "sync",
        help="synchronize IMAP folders into a database (once, or continuously with --watch)",
        description="Synchronize IMAP folders of one account into a database.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=options.exit_codes((EXIT_OK, EXIT_CONFIG, EXIT_AUTH, EXIT_CERTIFICATE,
                                   EXIT_NETWORK, EXIT_DATABASE, EXIT_INTERRUPTED)),
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
    sync.add_argument("--password-command", metavar="CMD",
                      help="run CMD (through the shell) for each login; its first line of "
                      "output is the password (isync's PassCmd)")
    sync.add_argument("--token-command", metavar="CMD",
                      help="log in with XOAUTH2, the access token printed by CMD (an OAuth2 "
                      "helper)")
    sync.add_argument("--ask-password", action="store_true",
                      help="ask for the password on the terminal when no keyring holds it")
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
    sync.add_argument("--writers", type=positive, default=2,
                      help="database connections storing batches side by side (default: 2)")
    sync.add_argument("--retries", type=int, default=8,
                      help="with --once: reconnect attempts before giving up (default 8)")
    sync.add_argument("--retry-initial", type=float, default=1.0, help=argparse.SUPPRESS)
    sync.add_argument("--retry-cap", type=float, default=60.0, help=argparse.SUPPRESS)
    sync.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                      help="network timeout (default 30)")
    sync.add_argument("--quiet", action="store_true", help="no progress bar")
    sync.add_argument("--verbose", action="store_true", help="print what happens")
    add_policy_options(sync)
    sync.set_defaults(func=_cmd_sync)
