"""What init-db created and granted: the catalog before and after, compared.

An administrator running ``xtmail init-db`` on an ERP database wants to know exactly what
it added (docs/xtuple.md): every schema, table, sequence, view, function, index and trigger
xtmail may create, and every privilege it granted to xTuple's group role ``xtrole``. The
list is read from the catalog, not kept by hand, so it cannot drift from the migrations.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

# Objects in xtmail's schemas, objects named xtmail_* anywhere (indexes and triggers on
# xTuple's tables), the tables of the demo subset in public, and Connect's tables where
# xtmail made them. What was there before is subtracted, so xTuple's and Connect's own
# objects never show as created.
_OBJECTS = """
SELECT 'schema', n.nspname FROM pg_namespace n
 WHERE n.nspname IN ('xtbatch', 'xtmail', 'xtmail_ext')
UNION ALL
SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view'
                      WHEN 'i' THEN 'index' WHEN 'm' THEN 'view' ELSE 'relation' END,
       n.nspname || '.' || c.relname
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname IN ('xtbatch', 'xtmail', 'xtmail_ext', 'public')
   AND c.relkind IN ('r', 'S', 'v', 'i', 'm')
   AND NOT c.relispartition
UNION ALL
SELECT 'function',
       n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname IN ('xtbatch', 'xtmail')
UNION ALL
SELECT 'trigger', t.tgname || ' on ' || t.tgrelid::regclass::text
  FROM pg_trigger t WHERE NOT t.tgisinternal AND t.tgname LIKE 'xtmail%'
UNION ALL
SELECT 'extension', x.extname FROM pg_extension x
"""

_GRANTS = """
SELECT c.relname, n.nspname, a.privilege_type
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
       aclexplode(c.relacl) a
 WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = 'xtrole')
   AND n.nspname IN ('xtbatch', 'xtmail', 'xtmail_ext', 'public')
UNION ALL
SELECT n.nspname, '', a.privilege_type
  FROM pg_namespace n, aclexplode(n.nspacl) a
 WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = 'xtrole')
   AND n.nspname IN ('xtbatch', 'xtmail', 'xtmail_ext')
UNION ALL
SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', n.nspname,
       a.privilege_type
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, aclexplode(p.proacl) a
 WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = 'xtrole')
   AND n.nspname IN ('xtbatch', 'xtmail')
"""


@dataclass(frozen=True)
class Snapshot:
    objects: frozenset[tuple[str, str]]  # (kind, name)
    grants: frozenset[tuple[str, str]]  # (object, privilege) granted to xtrole


def snapshot(conn: psycopg.Connection) -> Snapshot:
    objects = frozenset((kind, name) for kind, name in conn.execute(_OBJECTS))
    grants = frozenset(
        (f"{schema}.{name}" if schema else f"schema {name}", privilege)
        for name, schema, privilege in conn.execute(_GRANTS)
    )
    return Snapshot(objects, grants)


@dataclass(frozen=True)
class Changes:
    created: list[tuple[str, str]]
    granted: list[tuple[str, list[str]]]  # object -> privileges

    def lines(self, *, detailed: bool = False) -> list[str]:
        """What an administrator reads: one line per kind of object created, one per set of
        privileges granted. Indexes and sequences are counted, and named when
        ``detailed``."""
        out: list[str] = []
        kinds: dict[str, list[str]] = {}
        for kind, name in self.created:
            kinds.setdefault(kind, []).append(name)
        for kind in sorted(kinds):
            names = kinds[kind]
            label = kind if len(names) == 1 else kind + ("es" if kind.endswith("x") else "s")
            listed = names if detailed or kind not in {"index", "sequence"} else []
            out.append(f"created {len(names)} {label}" + (": " + ", ".join(listed)
                                                          if listed else ""))
        by_privileges: dict[str, list[str]] = {}
        for what, privileges in self.granted:
            by_privileges.setdefault(", ".join(privileges), []).append(what)
        for rights, objects in sorted(by_privileges.items()):
            out.append(f"granted to xtrole {rights} on: {', '.join(objects)}")
        return out


def changes(before: Snapshot, after: Snapshot) -> Changes:
    created = sorted(after.objects - before.objects)
    granted: dict[str, list[str]] = {}
    for what, privilege in sorted(after.grants - before.grants):
        granted.setdefault(what, []).append(privilege)
    return Changes(created, sorted(granted.items()))
