"""A private CA and a server certificate for throwaway test servers (the openssl binary)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple


class ServerCertificate(NamedTuple):
    ca_file: Path  # what clients trust
    cert_file: Path
    key_file: Path


def make_certificates(folder: Path, names: Sequence[str]) -> ServerCertificate:
    """A CA and a server certificate it signed for ``names`` ("DNS:localhost",
    "IP:127.0.0.1", ...), written into ``folder``."""
    ca_key, ca_crt = folder / "ca.key", folder / "ca.crt"
    key, crt = folder / "server.key", folder / "server.crt"
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-noenc"]
    _openssl(
        "req", "-x509", *newkey, "-keyout", str(ca_key), "-out", str(ca_crt),
        "-days", "30", "-subj", "/CN=xtmail test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _openssl(
        "req", "-x509", *newkey, "-keyout", str(key), "-out", str(crt),
        "-CA", str(ca_crt), "-CAkey", str(ca_key), "-days", "30", "-subj", "/CN=localhost",
        "-addext", "subjectAltName=" + ",".join(dict.fromkeys(names)),
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
        "-addext", "extendedKeyUsage=serverAuth",
    )  # fmt: skip
    ca_crt.chmod(0o644)
    return ServerCertificate(ca_crt, crt, key)


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed: apt-get install openssl")
    result = subprocess.run([openssl, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")
