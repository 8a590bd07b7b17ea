"""Shared set-up for the benchmark scripts: repo on sys.path, a fresh database, RSS."""

from __future__ import annotations

import contextlib
import resource
import sys
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402

from bench.messages import KNOWN_CONTACTS, contact_address  # noqa: E402
from xtmail.app.localpg import LocalPostgres  # noqa: E402
from xtmail.sync.db.schema import migrate  # noqa: E402


@contextmanager
def fresh_database(sales_orders: int = 500, *, durable: bool = False,
                   statements: bool = False) -> Iterator[str]:
    """A throwaway server with a migrated database holding contacts and sales orders.

    ``durable``: the server flushes every commit to disk as a production server does;
    otherwise it is the test suite's fast server (no fsync, asynchronous commits).
    ``statements``: the server counts the time of each statement and function
    (pg_stat_statements, track_functions), from zero once the database is seeded; read
    them with :func:`statement_lines`.
    """
    with tempfile.TemporaryDirectory(prefix="xtmail-bench-") as folder:
        server = LocalPostgres(Path(folder), fast=not durable)
        server.start()
        try:
            with psycopg.connect(server.dsn(), autocommit=True) as admin:
                if statements:
                    admin.execute(
                        "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
                    admin.execute("ALTER SYSTEM SET track_functions = 'all'")
                admin.execute("CREATE DATABASE bench")
            if statements:  # a preloaded library needs a restart
                server.stop()
                server.start()
            dsn = server.dsn("bench")
            seed_database(dsn, sales_orders)
            if statements:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                    conn.execute("SELECT pg_stat_statements_reset()")
                    conn.execute("SELECT pg_stat_reset()")
            yield dsn
        finally:
            server.stop(mode="immediate")


def statement_lines(dsn: str, top: int = 15) -> list[str]:
    """The server's ``top`` statements and functions by total time, as ``name: value`` lines
    (a database made with ``fresh_database(statements=True)``): milliseconds in the server,
    calls and rows. Times include waits (locks, the CPU held by others)."""
    lines = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        total = conn.execute("SELECT coalesce(sum(total_exec_time), 0) FROM pg_stat_statements "
                             "WHERE toplevel").fetchone()
        lines.append(f"statements_ms: {total[0] if total else 0:.0f}")
        for ms, calls, rows, text in conn.execute(
            "SELECT total_exec_time, calls, rows, regexp_replace(query, '\\s+', ' ', 'g') "
            "FROM pg_stat_statements WHERE toplevel ORDER BY total_exec_time DESC LIMIT %s",
            (top,)):
            lines.append(f"statement_ms[{text[:90]}]: {ms:.0f} ({calls} calls, {rows} rows)")
        for name, calls, ms in conn.execute(
            "SELECT funcid::regprocedure::text, calls, total_time FROM pg_stat_user_functions "
            "ORDER BY total_time DESC LIMIT %s", (top,)):
            lines.append(f"function_ms[{name}]: {ms:.0f} ({calls} calls)")
    return lines


@contextmanager
def kept_database(folder: Path, sales_orders: int = 500) -> Iterator[tuple[str, bool]]:
    """Like :func:`fresh_database`, but the (fast) server's files stay in ``folder`` and a
    later run reuses them: yields the dsn and whether the database was already there. Its
    migrations are brought up to date each time. The server is stopped cleanly at the end
    (an immediate stop would empty unlogged tables)."""
    server = LocalPostgres(folder, fast=True)
    server.start()
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as admin:
            existed = admin.execute(
                "SELECT 1 FROM pg_database WHERE datname = 'bench'").fetchone() is not None
            if not existed:
                admin.execute("CREATE DATABASE bench")
        dsn = server.dsn("bench")
        if existed:
            with psycopg.connect(dsn, autocommit=True) as conn:
                migrate(conn)
        else:
            seed_database(dsn, sales_orders)
        yield dsn, existed
    finally:
        server.stop(mode="fast")


def seed_database(dsn: str, sales_orders: int) -> None:
    """Migrate an empty database and add the known contacts and ``sales_orders`` orders."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
        conn.execute(
            """INSERT INTO cntct (cntct_number, cntct_first_name, cntct_last_name,
                                  cntct_email)
               SELECT 'B' || i, 'First' || i, 'Last' || i, a
                 FROM unnest(%s::text[]) WITH ORDINALITY AS t(a, i)""",
            ([contact_address(i) for i in range(KNOWN_CONTACTS)],),
        )
        conn.execute(
            """INSERT INTO cntcteml (cntcteml_cntct_id, cntcteml_primary,
                                     cntcteml_email)
               SELECT cntct_id, true, cntct_email FROM cntct"""
        )
        conn.execute(
            "INSERT INTO cohead (cohead_number) SELECT (50000 + i)::text "
            "FROM generate_series(0, %s) i",
            (sales_orders - 1,),
        )
        conn.execute("ANALYZE")


def peak_rss_mb() -> float:
    """Peak resident memory of this process and of its (waited-for) children, in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


# Servers whose worker processes come and go during a run: their ended workers' CPU time
# counts for them.
_REAPING_SERVERS = frozenset({"postgres", "dovecot"})


def postmaster_pid(dsn: str) -> int:
    """The process id of the PostgreSQL server behind ``dsn`` (the parent of a backend)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    stat = Path(f"/proc/{row[0]}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def cpu_seconds_by_program(
    roots: Collection[int] | None = None,
) -> dict[str, tuple[str, float]]:
    """Process id -> (program name, CPU seconds (user + system) used so far), for every
    process, read from /proc; empty where there is none.

    ``roots``: only these processes and their descendants count (this process and the
    benchmark's own database server, say), so that other work on a shared machine stays
    out of the figures. Without it every process counts.

    Take it before and after a run and subtract (:func:`cpu_used`): processes started in
    between count from zero; processes that ended in between are missed, except the
    workers of PostgreSQL and Dovecot, which count for their server once it has waited for
    them (at once).
    """
    import os

    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    used: dict[str, tuple[str, float]] = {}
    parents: dict[str, str] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return used
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if entry.name == str(os.getpid()):
            name = "this process"  # apart from the other Python processes (parse workers)
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[entry.name] = fields[1]
        seconds = int(fields[11]) + int(fields[12])  # utime + stime
        if name in _REAPING_SERVERS:
            # cutime + cstime: its children that ended and were waited for (a database
            # backend closed during the run). Only for the servers: other processes' ended
            # children have nothing to do with the run.
            seconds += int(fields[13]) + int(fields[14])
        used[entry.name] = (name, seconds / tick)
    if roots is None:
        return used
    wanted = {str(pid) for pid in roots}
    return {pid: entry for pid, entry in used.items() if _descends(pid, wanted, parents)}


def _descends(pid: str, roots: set[str], parents: dict[str, str]) -> bool:
    """Whether process ``pid`` is one of ``roots`` or below one (``parents``: pid -> ppid,
    from /proc)."""
    seen = 0
    while pid in parents and seen < 64:
        if pid in roots:
            return True
        pid, seen = parents[pid], seen + 1
    return pid in roots


def renice_servers(roots: Collection[int], niceness: int) -> int:
    """Every process under ``roots`` (a server's master and its workers) set to
    ``niceness``; the workers a master starts later inherit it. How many were set.

    What the GUI bench uses to stand the benchmark's PostgreSQL and Dovecot in for servers on
    other machines (as a desktop running the ERP client meets them): they still take the
    CPU they need, but a desktop's own threads come first (docs/benchmarks.md)."""
    import os

    wanted = {str(pid) for pid in roots}
    for pid in wanted:
        # Where the kernel groups each session's processes (autogroup), niceness counts
        # only inside the group; the group's own niceness is what the rest of the machine
        # sees. The servers start sessions of their own.
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/autogroup").write_text(str(niceness))
    parents: dict[str, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[entry.name] = stat[stat.rindex(")") + 2 :].split()[1]
    count = 0
    for pid in parents:
        if _descends(pid, wanted, parents):
            try:
                os.setpriority(os.PRIO_PROCESS, int(pid), niceness)
            except (ProcessLookupError, PermissionError):
                continue
            count += 1
    return count


def cpu_used(
    before: dict[str, tuple[str, float]], after: dict[str, tuple[str, float]]
) -> dict[str, float]:
    """Program name -> CPU seconds between two :func:`cpu_seconds_by_program` readings
    (kernel threads change their names: a process is known by its id)."""
    total: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        earlier = before.get(pid, (name, 0.0))[1]
        total[name] = total.get(name, 0.0) + seconds - earlier
    return {name: round(s, 2) for name, s in sorted(total.items(), key=lambda kv: -kv[1])
            if s >= 0.05}
