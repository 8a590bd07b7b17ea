"""The ``xtmail`` command: headless entry points for administrators, cron and benchmarks."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import psycopg

from .errors import XtmailError


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xtmail", description="Email integration for xTuple ERP."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = sub.add_parser("init-db", help="create or upgrade xtmail's tables in a database")
    init.add_argument("--dsn", required=True, help="PostgreSQL connection string")
    init.set_defaults(func=_cmd_init_db)

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
