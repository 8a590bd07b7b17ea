"""What the ``xtmail`` commands share: exit codes and the contact-creation options."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

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
EXIT_CONFIG = ConfigError.exit_code  # a setting or argument is wrong (as argparse's errors)
EXIT_AUTH = AuthenticationFailed.exit_code  # the server refused the login
EXIT_CERTIFICATE = CertificateError.exit_code  # the certificate did not verify, not pinned
EXIT_NETWORK = ImapError.exit_code  # the server stayed unreachable through all retries
EXIT_DATABASE = DatabaseError.exit_code  # the database stayed unreachable, or refused
EXIT_INTERRUPTED = 130  # Ctrl+C / SIGTERM: committed batches are kept


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
    )


def add_policy_options(parser: argparse.ArgumentParser) -> None:
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
