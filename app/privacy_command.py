"""``xtmail remove`` and ``xtmail visibility``: removing mail that should never have been
imported, and who sees which mail (docs/privacy.md).

Both run as the connection's role; the database decides what that role may do (its xTuple
privileges DeleteAllEmail and MaintainEmailVisibility, or its own mail).
"""

from __future__ import annotations

import argparse

from xtmail.app import options
from xtmail.app.options import (
    EXIT_CONFIG,
    EXIT_DATABASE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
)

REMOVE_EPILOG = """\
Removed mail goes entirely: raw bytes, text, addresses, document ties, search words and
where it was found. A record of who removed what and when stays (by the message's identity
hash, not its content), and later syncs and imports skip the message until it is allowed
again (--allow-again). Your own mail (every copy imported by you) you may remove; others'
needs the DeleteAllEmail privilege: such messages are left, and counted.
"""


def _remove(args: argparse.Namespace) -> int:
    from xtmail.sync.db import privacy

    with options.connect(args.dsn) as conn:
        if args.allow_again:
            if args.message is not None:
                cleared = privacy.allow_again(conn, args.message)
            elif args.folder is not None:
                cleared = privacy.allow_again(conn, account=args.folder[0],
                                              mailbox=args.folder[1])
            else:
                cleared = privacy.allow_again(conn, account=args.account)
            print(f"allowed again: {cleared}")
            return EXIT_OK
        keep_out = not args.let_back
        if args.message is not None:
            done = privacy.remove_messages(conn, args.message, reason=args.reason,
                                           keep_out=keep_out)
        elif args.folder is not None:
            done = privacy.remove_folder(conn, args.folder[0], args.folder[1],
                                         reason=args.reason, keep_out=keep_out)
        else:
            done = privacy.remove_folder(conn, args.account, None, reason=args.reason,
                                         keep_out=keep_out)
    print(f"removed: {done.removed}")
    if done.refused:
        print(f"not removed (others hold them; needs DeleteAllEmail): {done.refused}")
        return EXIT_SOME_FAILED
    return EXIT_OK


def _visibility(args: argparse.Namespace) -> int:
    from xtmail.sync.db import privacy

    with options.connect(args.dsn) as conn:
        if args.action == "set":
            private = {"private": True, "shared": False, "default": None}[args.rule]
            count = privacy.set_visibility(conn, args.account, args.folder or "",
                                           private=private, owner=args.owner)
            print(f"messages re-evaluated: {count}")
        elif args.action == "block":
            privacy.block_sender(conn, args.pattern, any_party=args.any_party,
                                 reason=args.reason)
            if args.apply:
                done = privacy.remove_blocked(conn)
                print(f"removed: {done.removed}")
                if done.refused:
                    print(f"not removed (others hold them; needs DeleteAllEmail): "
                          f"{done.refused}")
                    return EXIT_SOME_FAILED
        elif args.action == "unblock":
            privacy.unblock_sender(conn, args.pattern)
        else:
            for rule in privacy.visibility_rules(conn):
                where = f"{rule.account}/{rule.mailbox}" if rule.mailbox else rule.account
                owner = f" owner {rule.owner}" if rule.owner else ""
                print(f"{where}\t{'private' if rule.private else 'shared'}{owner}"
                      f"\t(set by {rule.set_by})")
            for blocked in privacy.blocked_senders(conn):
                party = " (any party)" if blocked.any_party else ""
                print(f"blocked\t{blocked.pattern}{party}\t{blocked.reason}")
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``remove`` and ``visibility`` on the CLI's subcommands."""
    raw = argparse.RawDescriptionHelpFormatter
    remove = sub.add_parser(
        "remove", help="remove imported mail from the database (and keep it out)",
        description="Remove one or more messages, a folder's or an account's mail.",
        formatter_class=raw,
        epilog=REMOVE_EPILOG + "\n" + options.exit_codes(
            (EXIT_OK, EXIT_SOME_FAILED, EXIT_CONFIG, EXIT_DATABASE, EXIT_INTERRUPTED)),
    )
    remove.add_argument("--dsn", required=True, help="PostgreSQL connection string")
    what = remove.add_mutually_exclusive_group(required=True)
    what.add_argument("--message", type=options.positive, nargs="+", metavar="ID",
                      help="message ids (eml_id)")
    what.add_argument("--folder", nargs=2, metavar=("ACCOUNT", "FOLDER"),
                      help="every message found in this folder of this account")
    what.add_argument("--account", metavar="ACCOUNT", help="every message of this account")
    remove.add_argument("--allow-again", action="store_true",
                        help="do not remove: let mail removed earlier (these ids, or removed "
                        "with this folder or account) be imported again")
    remove.add_argument("--let-back", action="store_true",
                        help="remove, but let a later sync or import bring it back")
    remove.add_argument("--reason", default="", help="why (kept with the record)")
    remove.set_defaults(func=_remove)

    vis = sub.add_parser(
        "visibility", help="private and shared accounts and folders; blocked senders",
        description="Mail of a private account or folder is seen only by whoever imported "
        "it (and the owner a rule names) and by holders of ViewAllEmail; shared mail by "
        "everyone. No rule: shared.",
        formatter_class=raw, epilog=options.exit_codes(),
    )
    vis.add_argument("--dsn", required=True, help="PostgreSQL connection string")
    actions = vis.add_subparsers(dest="action", required=True, metavar="ACTION")
    set_ = actions.add_parser("set", help="set an account's or a folder's rule")
    set_.add_argument("account", help="the account name, as the sync records it")
    set_.add_argument("folder", nargs="?", help="a folder (default: the whole account)")
    set_.add_argument("rule", choices=("private", "shared", "default"),
                      help="private, shared, or default (drop the rule)")
    set_.add_argument("--owner", help="who reads the private mail besides its importer")
    actions.add_parser("list", help="the rules and the blocked senders")
    block = actions.add_parser("block", help="never import mail from an address or domain")
    block.add_argument("pattern", help="an address, or a domain (and its subdomains)")
    block.add_argument("--any-party", action="store_true",
                       help="also mail to or copied to it, not only from it")
    block.add_argument("--reason", default="", help="why (kept with the rule)")
    block.add_argument("--apply", action="store_true",
                       help="also remove what is stored already from the blocked senders")
    unblock = actions.add_parser("unblock", help="import mail from it again")
    unblock.add_argument("pattern")
    vis.set_defaults(func=_visibility)
