"""The ``xtmail`` command: headless entry points for administrators, cron and benchmarks."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import psycopg

from .errors import XtmailError

if TYPE_CHECKING:
    from .importer import ImportPolicy


def _cmd_init_db(args: argparse.Namespace) -> int:
    from .schema import migrate

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

    from .localpg import LocalPostgres
    from .schema import migrate

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


def _policy(args: argparse.Namespace) -> ImportPolicy:
    from .importer import ImportPolicy

    return ImportPolicy.build(
        own_addresses=args.own_address or (),
        excluded_domains=args.exclude_domain or (),
        exclude_automated=not args.allow_automated,
        exclude_bulk=not args.allow_bulk,
        create_contacts=not args.no_new_contacts,
    )


def _cmd_import(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .bulk import check_paths, import_paths

    paths = check_paths(args.paths)
    with (
        psycopg.connect(args.dsn, autocommit=True) as conn,
        tqdm(unit=" msg", desc="importing", file=sys.stderr, disable=args.quiet) as bar,
    ):
        summary = import_paths(
            conn, paths, policy=_policy(args), workers=args.workers, progress=bar.update
        )
    print(f"imported: {summary.imported}")
    print(f"already present: {summary.already_present}")
    print(f"contacts created: {summary.contacts_created}")
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
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_policy_options(imp)
    imp.set_defaults(func=_cmd_import)

    local = sub.add_parser(
        "local-db", help="start a private PostgreSQL in a folder and initialise a database"
    )
    local.add_argument("--folder", default=".xtmail-data", help="where the server keeps data")
    local.add_argument("--dbname", default="xtmail", help="database to create (default xtmail)")
    local.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    local.set_defaults(func=_cmd_local_db)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except XtmailError as exc:
        print(f"xtmail: {exc.user_text()}", file=sys.stderr)
        return 2
    except psycopg.OperationalError as exc:
        print(
            f"xtmail: cannot reach the database: {exc}\n"
            "Check --dsn (host, port, database name, user) and that the server is running.",
            file=sys.stderr,
        )
        return 2
