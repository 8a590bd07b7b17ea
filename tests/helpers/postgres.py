"""PostgreSQL for tests and benchmarks: one server per session, a fresh database per test.

Every test database is a copy of a template that already holds the migrated schema, so a
test starts from a clean, fully initialised database in a few tens of milliseconds.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psycopg

from tests.helpers.xtuple import create_connect_tables, ensure_xtrole
from xtmail.app.localpg import LocalPostgres
from xtmail.sync.db.schema import migrate

TEMPLATE = "xtmail_template"
#: The same, on a database where xTuple Connect's mail tables existed before init-db.
CONNECT_TEMPLATE = "xtmail_connect_template"


class TestDatabases:
    """Hands out fresh databases cloned from a migrated template."""

    __test__ = False  # not a pytest test class

    def __init__(self, server: LocalPostgres) -> None:
        self.server = server
        self._counter = itertools.count(1)
        self._templates: set[str] = set()
        with self.admin() as conn:
            ensure_xtrole(conn)  # as on every xTuple server: init-db grants to it

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.server.dsn(), autocommit=True)

    def _ensure_template(self, template: str) -> None:
        if template in self._templates:
            return
        with self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {template}")
            conn.execute(f"CREATE DATABASE {template}")
        with psycopg.connect(self.server.dsn(template), autocommit=True) as conn:
            if template == CONNECT_TEMPLATE:
                create_connect_tables(conn)
            migrate(conn)
        self._templates.add(template)

    def create(self, *, migrated: bool = True, connect: bool = False) -> str:
        """A new database name; empty (``migrated=False``) or with the schema applied, on
        xTuple Connect's own mail tables made beforehand when ``connect``."""
        name = f"test_{next(self._counter)}"
        with self.admin() as conn:
            if migrated:
                template = CONNECT_TEMPLATE if connect else TEMPLATE
                self._ensure_template(template)
                conn.execute(f"CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY")
            else:
                conn.execute(f"CREATE DATABASE {name}")
        return self.server.dsn(name)

    def drop(self, dsn: str) -> None:
        name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
        with self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def start_server(folder: Path) -> Iterator[LocalPostgres]:
    server = LocalPostgres(folder, fast=True)
    server.start()
    try:
        yield server
    finally:
        server.stop(mode="immediate")


# -- faults: a private server a test may stop, restart and freeze


def server_pids(server: LocalPostgres) -> list[int]:
    """The postmaster's pid and those of all its children (backends, background workers)."""
    pidfile = server.datadir / "postmaster.pid"
    postmaster = int(pidfile.read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command may hold spaces and parentheses: the fields follow the last ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == postmaster:
                children.append(int(stat.parent.name))
    return [postmaster, *children]


@contextlib.contextmanager
def frozen(server: LocalPostgres) -> Iterator[list[int]]:
    """The server stopped dead (SIGSTOP to the postmaster and every backend) for the block:
    connections are accepted by the kernel, nothing ever answers. Always resumed after."""
    pids = server_pids(server)
    stopped: list[int] = []
    try:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        yield pids
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
