"""The ``xtmail`` command: headless entry points for administrators, cron and benchmarks."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from xtmail.app import privacy_command, serve_command, sync_command
from xtmail.app.options import (  # noqa: F401  (the exit codes are part of this module's API)
    CONNECT_TIMEOUT,
    EXIT_AUTH,
    EXIT_CERTIFICATE,
    EXIT_CONFIG,
    EXIT_DATABASE,
    EXIT_INTERRUPTED,
    EXIT_MEANINGS,
    EXIT_NETWORK,
    EXIT_OK,
    EXIT_SOME_FAILED,
    add_policy_options,
    connect,
    exit_codes,
    policy,
    positive,
)
from xtmail.sync.db.errors import translated
from xtmail.sync.errors import XtmailError

if TYPE_CHECKING:
    from xtmail.app.localpg import LocalPostgres


#: How long init-db waits for a lock (another init-db, or a long transaction on the tables).
LOCK_TIMEOUT = "60s"


def _cmd_init_db(args: argparse.Namespace) -> int:
    from xtmail.sync.db import inventory
    from xtmail.sync.db.schema import migrate

    with connect(args.dsn) as conn:
        conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
        before = inventory.snapshot(conn)
        applied = migrate(conn)
        after = inventory.snapshot(conn) if applied else before
    if applied:
        for migration in applied:
            print(f"applied {migration.version:04d} {migration.name}")
        # What an administrator needs to know about their ERP database (docs/xtuple.md).
        for line in inventory.changes(before, after).lines(detailed=args.verbose):
            print(line)
    else:
        print("database is up to date")
    return 0


def _cmd_local_db(args: argparse.Namespace) -> int:
    from pathlib import Path

    from xtmail.app.localpg import LocalPostgres
    from xtmail.sync.db.schema import migrate

    server = LocalPostgres(Path(args.folder) / "pg", port=args.port)
    server.start()
    with connect(server.dsn()) as admin:
        if not admin.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (args.dbname,)
        ).fetchone():
            admin.execute(f'CREATE DATABASE "{args.dbname}"')
    dsn = server.dsn(args.dbname)
    with connect(dsn) as conn:
        applied = migrate(conn)
    print(f"PostgreSQL is running in {server.folder} ({len(applied)} migrations applied).")
    print(f"DSN: {dsn}")
    print(f"Stop it with: pg_ctl -D {server.datadir} stop (as the postgres user when root)")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from xtmail.sync.files import check_paths, import_paths

    paths = check_paths(args.paths)
    # SIGTERM ends the import as Ctrl+C does: the batches being stored are finished.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with (
            connect(args.dsn) as conn,
            tqdm(unit=" msg", desc="importing", file=sys.stderr, disable=args.quiet) as bar,
        ):
            summary = import_paths(
                conn, paths, policy=policy(args), workers=args.workers, progress=bar.update,
                writers=args.writers, connect=lambda: connect(args.dsn),
                dry_run=args.dry_run,
            )
    finally:
        signal.signal(signal.SIGTERM, previous)
    if summary.dry_run:
        print("dry run: nothing was stored; this is what the import would do")
        ties = ", ".join(f"{code} {count}" for code, count in sorted(summary.ties.items()))
        print(f"ties by document type: {ties or 'none'}")
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
    if summary.interrupted:
        print(f"xtmail: interrupted: {summary.imported} messages saved. Run the same command "
              "again to import the rest (what is stored already is recognised).",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    if summary.failed:
        print(f"xtmail: {len(summary.failed)} messages or files could not be imported "
              "(listed under 'failed').", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_OK


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
        with connect(server.dsn()) as admin:
            if not admin.execute(
                "SELECT 1 FROM pg_database WHERE datname = 'xtmail_demo'"
            ).fetchone():
                admin.execute("CREATE DATABASE xtmail_demo")
        dsn = server.dsn("xtmail_demo")
        print(f"demo database: {dsn} (data in {server.folder})")
    with connect(dsn) as conn:
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
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="xtmail", description="Email integration for xTuple ERP.", formatter_class=raw,
        epilog=exit_codes(tuple(EXIT_MEANINGS)) + "\n\nEach command's --help lists its own.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = sub.add_parser("init-db", help="create or upgrade xtmail's tables in a database",
                          formatter_class=raw, epilog=exit_codes())
    init.add_argument("--dsn", required=True, help="PostgreSQL connection string")
    init.add_argument("--verbose", action="store_true",
                      help="also name every index and sequence created")
    init.set_defaults(func=_cmd_init_db)

    imp = sub.add_parser(
        "import", help="import .eml files, Maildir folders and mbox files into a database",
        description="A path that is missing or unreadable is reported and the others are "
        "imported. Ctrl+C stops the import; what is stored is kept, and running the same "
        "command again imports the rest.",
        formatter_class=raw,
        epilog=exit_codes((EXIT_OK, EXIT_SOME_FAILED, EXIT_CONFIG, EXIT_DATABASE,
                           EXIT_INTERRUPTED)),
    )
    imp.add_argument("--dsn", required=True, help="PostgreSQL connection string")
    imp.add_argument("paths", nargs="+", metavar="PATH", help=".eml file, Maildir or mbox")
    imp.add_argument("--workers", type=int, default=None,
                     help="parsing processes (default: one per core, at most 4)")
    imp.add_argument("--writers", type=positive, default=2,
                     help="database connections storing batches side by side (default: 2)")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    imp.add_argument("--dry-run", action="store_true",
                     help="do everything in a transaction that is rolled back: report what "
                     "would be imported, which contacts created and what tied; keep nothing")
    imp.add_argument("--verbose", action="store_true",
                     help="name each message read with repairs, and what was repaired")
    add_policy_options(imp)
    imp.set_defaults(func=_cmd_import)

    demo = sub.add_parser("demo", help="run the demo ERP host with the Email tabs",
                          formatter_class=raw, epilog=exit_codes())
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
        "local-db", help="start a private PostgreSQL in a folder and initialise a database",
        formatter_class=raw, epilog=exit_codes(),
    )
    local.add_argument("--folder", default=".xtmail-data", help="where the server keeps data")
    local.add_argument("--dbname", default="xtmail", help="database to create (default xtmail)")
    local.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    local.set_defaults(func=_cmd_local_db)

    sync_command.add_parser(sub)
    privacy_command.add_parser(sub)
    serve_command.add_parser(sub)
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
    except KeyboardInterrupt:
        # Before any work was stored (the commands report their own interruptions).
        print("xtmail: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
