"""What the ``xtmail`` commands share: exit codes, the database connection and the
contact-creation options."""

from __future__ import annotations

import argparse
import os
import textwrap
from typing import TYPE_CHECKING

import psycopg

from xtmail.sync.errors import (
    AuthenticationFailed,
    CertificateError,
    ConfigError,
    DatabaseError,
    ImapError,
)

if TYPE_CHECKING:
    from xtmail.sync.values import ImportPolicy

#: Exit codes of ``xtmail`` (docs/sync.md). A command ending with an error exits with the
#: error's ``exit_code``; these name them for scripts and tests.
EXIT_OK = 0
EXIT_SOME_FAILED = 1  # the command ran, but some of its work failed (listed in its output)
EXIT_CONFIG = ConfigError.exit_code  # a setting or argument is wrong (as argparse's errors)
EXIT_AUTH = AuthenticationFailed.exit_code  # the server refused the login
EXIT_CERTIFICATE = CertificateError.exit_code  # the certificate did not verify, not pinned
EXIT_NETWORK = ImapError.exit_code  # the server stayed unreachable through all retries
EXIT_DATABASE = DatabaseError.exit_code  # the database stayed unreachable, or refused
EXIT_INTERRUPTED = 130  # Ctrl+C / SIGTERM: committed batches are kept

#: What each exit code means, for the commands' --help.
EXIT_MEANINGS = {
    EXIT_OK: "done",
    EXIT_SOME_FAILED: "done, but some messages or files could not be imported (listed)",
    EXIT_CONFIG: "a wrong argument or setting: a malformed connection string, a database, "
                 "user or host that does not exist, a refused database password, a missing "
                 "file",
    EXIT_AUTH: "the IMAP server refused the login",
    EXIT_CERTIFICATE: "the IMAP server's certificate did not verify and is not pinned",
    EXIT_NETWORK: "the IMAP server stayed unreachable",
    EXIT_DATABASE: "the database could not be reached or did not answer in time, refused "
                   "the work (missing rights), or is not set up (run 'xtmail init-db')",
    EXIT_INTERRUPTED: "interrupted (Ctrl+C or SIGTERM); what was stored is kept",
}
#: A command that only talks to the database exits with these.
DATABASE_EXITS = (EXIT_OK, EXIT_CONFIG, EXIT_DATABASE, EXIT_INTERRUPTED)


def exit_codes(codes: tuple[int, ...] = DATABASE_EXITS) -> str:
    """The "exit codes" paragraph of a command's --help (use RawDescriptionHelpFormatter)."""
    lines = [textwrap.fill(EXIT_MEANINGS[code], width=88, initial_indent=f"  {code:<5}",
                           subsequent_indent=" " * 7) for code in codes]
    return "exit codes:\n" + "\n".join(lines)


#: Seconds to wait for a database connection (libpq's connect_timeout) where neither the
#: connection string nor PGCONNECT_TIMEOUT sets one: a server that accepts the connection but
#: never answers would otherwise hold the command forever.
CONNECT_TIMEOUT = 10


def connect(dsn: str) -> psycopg.Connection:
    """An autocommit connection to ``dsn``, with a connect timeout unless the string or the
    environment sets one. Driver errors are the caller's to translate."""
    given = psycopg.conninfo.conninfo_to_dict(dsn)  # a malformed string raises here
    if "connect_timeout" not in given and not os.environ.get("PGCONNECT_TIMEOUT"):
        dsn = psycopg.conninfo.make_conninfo(dsn, connect_timeout=CONNECT_TIMEOUT)
    return psycopg.connect(dsn, autocommit=True)


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def policy(args: argparse.Namespace) -> ImportPolicy:
    from xtmail.sync.values import ImportPolicy

    return ImportPolicy.build(
        own_addresses=args.own_address or (),
        excluded_domains=args.exclude_domain or (),
        exclude_automated=not args.allow_automated,
        exclude_bulk=not args.allow_bulk,
        create_contacts=not args.no_new_contacts,
        contact_scope=args.new_contacts_from,
        max_recipients=args.max_recipients,
    )


def add_policy_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("contact creation (docs/import.md, rule 1)")
    group.add_argument("--new-contacts-from", choices=("correspondents", "senders", "everyone"),
                       default="correspondents",
                       help="whose unknown addresses become contacts: correspondents (From "
                       "and To, the default), senders (From) or everyone (also Cc and Bcc)")
    group.add_argument("--max-recipients", type=int, default=10, metavar="N",
                       help="a message to more than N recipients creates no contacts "
                       "(default 10; 0: no limit)")
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
