"""Attach-dialog search speed over a large mail store.

    python bench/attach_search.py [--messages N] [--queries Q] [--seed S]

Fills a fresh database with N messages (default 1,000,000) using set-based SQL only: eml,
emladdr, emlassc contact ties and xtmail.msg rows whose ``msg_search`` vectors hold the words
of a subject, a body and the addresses and names, in the format the importer writes
(distinct lower-case words, no positions). Words follow a Zipf curve over a 60,000-word
vocabulary whose most common words are real business words, so a query meets the whole
range from "order" (in most messages) to words found a few dozen times. Then it runs Q
queries (default 200) through ``xtmail.sync.db.search.search_messages``: single words (common,
middle, rare), prefixes being typed, two words, address fragments, full addresses and
contact filters. The last lines are ``p50_ms: X`` and ``p95_ms: Y``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import threading
import time
from collections import defaultdict

import common  # noqa: F401  # puts the repo on sys.path
import psycopg

from bench.common import fresh_database
from bench.messages import KNOWN_CONTACTS, WORDS
from xtmail.sync.db.search import search_messages

VOCABULARY = 60_000
BODIES = 100_000  # distinct body texts; each message takes one, plus its own subject/addresses
SUBJECTS = 50_000
PEOPLE = 200_000  # unknown correspondents, besides the known contacts
DOMAINS = 3_000
SYLLABLES = (
    "ka lo mi ne ru sa ti vo be da fe gi ho ju ke la mo nu pi re se to vi wa xe yo zu an el or"
).split()

TABLES = ("xtbatch.eml", "xtbatch.emladdr", "xtbatch.emlassc", "xtmail.msg", "xtmail.address")


def log(text: str) -> None:
    print(text, flush=True)


def secondary_indexes(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(name, definition) of the indexes on the mail tables that back no constraint."""
    rows = conn.execute(
        """SELECT i.schemaname || '.' || i.indexname, i.indexdef FROM pg_indexes i
            WHERE i.schemaname || '.' || i.tablename = ANY(%s)
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                               WHERE c.conindid = (quote_ident(i.schemaname) || '.'
                                                   || quote_ident(i.indexname))::regclass)""",
        (list(TABLES),),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def load(dsn: str, n: int, seed: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT setseed(%s)", (seed / 1000,))
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute("SET work_mem = '256MB'")
        # Loading without FK checks and secondary indexes, then building the indexes in
        # bulk, is how a large mail store would be restored; the checks hold by construction.
        conn.execute("SET session_replication_role = replica")
        indexes = secondary_indexes(conn)
        for name, _ in indexes:
            conn.execute(f"DROP INDEX {name}")

        step = time.perf_counter()
        conn.execute(
            """CREATE UNLOGGED TABLE bench_vocab AS
               SELECT r AS rank,
                      CASE WHEN r < %(nwords)s THEN (%(words)s::text[])[r + 1]
                           ELSE s[r %% 30 + 1] || s[(r / 30) %% 30 + 1]
                                || CASE WHEN r >= 900 THEN s[(r / 900) %% 30 + 1] ELSE '' END
                                || CASE WHEN r >= 27000 THEN s[(r / 27000) %% 30 + 1] || 'n'
                                        ELSE '' END
                      END AS w
                 FROM generate_series(0, %(v)s - 1) AS r, (SELECT %(syl)s::text[] AS s) AS t""",
            {"nwords": len(WORDS), "words": list(WORDS), "v": VOCABULARY,
             "syl": list(SYLLABLES)},
        )
        conn.execute("CREATE UNIQUE INDEX ON bench_vocab (rank)")
        # Zipf: rank = floor(V ** u) - 1 for uniform u gives P(rank r) ~ 1/(r + 1).
        zipf = f"(floor(exp(random() * ln({VOCABULARY}))) - 1)::int"
        conn.execute(
            f"""CREATE UNLOGGED TABLE bench_body AS
                WITH picks AS (
                    SELECT b, {zipf} AS rank
                      FROM (SELECT b, least(400, floor(exp(3.8 + 1.2 * (random() + random()
                                   + random() - 1.5))))::int AS k
                              FROM generate_series(1, %(bodies)s) AS b) AS s,
                           generate_series(1, s.k))
                SELECT b, array_to_tsvector(array_agg(DISTINCT v.w)) AS vec,
                       left(string_agg(v.w, ' '), 600) AS text
                  FROM picks JOIN bench_vocab v USING (rank) GROUP BY b""",
            {"bodies": BODIES},
        )
        conn.execute(
            f"""CREATE UNLOGGED TABLE bench_subject AS
                WITH picks AS (
                    SELECT s, {zipf} AS rank, g
                      FROM (SELECT s, 3 + floor(random() * 6)::int AS k
                              FROM generate_series(1, %(subjects)s) AS s) AS t,
                           generate_series(1, t.k) AS g),
                words AS (
                    SELECT s, string_agg(v.w, ' ' ORDER BY g) AS text,
                           array_agg(DISTINCT v.w) AS lexemes
                      FROM picks JOIN bench_vocab v USING (rank) GROUP BY s),
                refs AS (
                    SELECT s, text, lexemes,
                           CASE WHEN random() < 0.2
                                THEN (50000 + floor(random() * 500))::int END AS so
                      FROM words)
                SELECT s, initcap(text) || coalesce(' [xtref:S-' || so || ']', '') AS text,
                       array_to_tsvector(lexemes || CASE WHEN so IS NULL THEN '{{}}'::text[]
                                         ELSE ARRAY['xtref', 's', so::text] END) AS vec
                  FROM refs""",
            {"subjects": SUBJECTS},
        )
        # People: 0 is our own sales address, 1..K the known contacts of fresh_database(),
        # then unknown correspondents at DOMAINS companies.
        conn.execute(
            f"""CREATE UNLOGGED TABLE bench_person AS
                SELECT 0 AS p, 'sales@ourcompany.example'::text AS addr, 'Sales'::text AS name,
                       NULL::integer AS cntct_id
                UNION ALL
                SELECT row_number() OVER (ORDER BY cntct_id)::int, cntct_email,
                       cntct_first_name || ' ' || cntct_last_name, cntct_id FROM cntct
                UNION ALL
                SELECT {KNOWN_CONTACTS} + i, f.w || '.' || l.w || (i %% 100) || '@' || d.w
                       || '.example.org', initcap(f.w) || ' ' || initcap(l.w), NULL
                  FROM generate_series(1, %(people)s) AS i
                  JOIN bench_vocab f ON f.rank = 50 + (i::bigint * 7919) %% 5000
                  JOIN bench_vocab l ON l.rank = 50 + (i::bigint * 104729) %% 20000
                  JOIN bench_vocab d ON d.rank = 5000 + (i * 31) %% %(domains)s""",
            {"people": PEOPLE, "domains": DOMAINS},
        )
        conn.execute(
            """ALTER TABLE bench_person ADD COLUMN vec tsvector;
               UPDATE bench_person SET vec = array_to_tsvector(array_remove(
                   regexp_split_to_array(lower(addr || ' ' || name), '\\W+'), ''));
               CREATE UNIQUE INDEX ON bench_person (p);"""
        )
        log(f"  vocabulary, bodies, subjects, people: {time.perf_counter() - step:.1f} s")

        step = time.perf_counter()
        # Each message: from a known contact (half), an unknown person, or from us (outgoing);
        # to us or to them; sometimes a Cc. Dates run over five years in import order with
        # a few days of jitter, and 15 % were imported late from old folders (random dates).
        conn.execute(
            f"""CREATE UNLOGGED TABLE bench_msg AS
                SELECT i,
                       CASE WHEN random() < 0.15
                            THEN timestamptz '2021-01-01' + random() * interval '1826 days'
                            ELSE timestamptz '2021-01-01'
                                 + (i::float8 / %(n)s) * interval '1826 days'
                                 + (random() - 0.5) * interval '6 days' END AS date,
                       1 + floor(random() * {SUBJECTS})::int AS subj,
                       1 + floor(random() * {BODIES})::int AS body,
                       CASE WHEN random() < 0.5
                            THEN 1 + (floor(exp(random() * ln({KNOWN_CONTACTS})))::int - 1)
                            ELSE {KNOWN_CONTACTS} + 1
                                 + (floor(exp(random() * ln({PEOPLE})))::int - 1) END AS them,
                       random() < 0.3 AS outgoing,
                       CASE WHEN random() < 0.3
                            THEN 1 + floor(random() * ({KNOWN_CONTACTS} + {PEOPLE}))::int
                       END AS cc
                  FROM generate_series(1, %(n)s) AS i""",
            {"n": n},
        )
    # Two pipelines on two connections (two cores): the eml side, then its indexes; the
    # msg side, then its indexes (the GIN index on msg_search is the longest step).
    definitions = [d for _, d in indexes]
    msg_indexes = [d for d in definitions if " xtmail.msg " in d]
    other_indexes = [d for d in definitions if d not in msg_indexes]
    step = time.perf_counter()
    run_parallel(dsn, [
        [EML_SQL, EMLADDR_SQL, ADDRESS_SQL, EMLASSC_SQL,
         f"SELECT setval('xtbatch.eml_eml_id_seq', {n})", *other_indexes],
        [MSG_SQL, *sorted(msg_indexes, key=lambda d: "gin" not in d)],
    ])
    log(f"  eml, emladdr, emlassc, msg and their indexes: {time.perf_counter() - step:.1f} s")
    step = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in TABLES:
            # VACUUM sets the visibility map, which the index-only date lookups rely on
            # (autovacuum does the same on a live database).
            conn.execute(f"VACUUM (ANALYZE) {table}")
        conn.execute("ANALYZE cntct")
    log(f"  vacuum, analyze: {time.perf_counter() - step:.1f} s")


# The trigger that keeps the address list (migration 0006) is off while loading (replica
# mode), as in a restore; the list is filled the way the migration fills it.
ADDRESS_SQL = (
    "INSERT INTO xtmail.address (addr) SELECT DISTINCT lower(emladdr_addr) FROM xtbatch.emladdr"
)


EML_SQL = """
    INSERT INTO xtbatch.eml (eml_id, eml_hash, eml_date, eml_subj, eml_body, eml_msg,
                             eml_status)
    SELECT m.i, convert_to('bench:' || m.i, 'UTF8'), (m.date AT TIME ZONE 'UTC')::date,
           s.text, b.text, '', 'C'
      FROM bench_msg m JOIN bench_subject s ON s.s = m.subj
      JOIN bench_body b ON b.b = m.body"""

EMLADDR_SQL = """
    INSERT INTO xtbatch.emladdr (emladdr_eml_id, emladdr_type, emladdr_addr, emladdr_name)
    SELECT m.i, x.kind, p.addr, coalesce(p.name, '')
      FROM bench_msg m
      CROSS JOIN LATERAL (VALUES
          ('FROM', CASE WHEN m.outgoing THEN 0 ELSE m.them END),
          ('TO', CASE WHEN m.outgoing THEN m.them ELSE 0 END),
          ('CC', m.cc)) AS x(kind, who)
      JOIN bench_person p ON p.p = x.who
     ORDER BY m.i"""

EMLASSC_SQL = """
    INSERT INTO xtbatch.emlassc (emlassc_eml_id, emlassc_type, emlassc_assc_id)
    SELECT DISTINCT m.i, 'T', p.cntct_id
      FROM bench_msg m
      CROSS JOIN LATERAL (VALUES (m.them), (m.cc)) AS x(who)
      JOIN bench_person p ON p.p = x.who
     WHERE p.cntct_id IS NOT NULL"""

MSG_SQL = """
    INSERT INTO xtmail.msg (msg_eml_id, msg_date, msg_message_id, msg_size, msg_search)
    SELECT m.i, m.date, '<bench.' || m.i || '@mail.example.com>', 2000 + length(b.text),
           b.vec || s.vec || us.vec || them.vec || coalesce(cc.vec, '')
      FROM bench_msg m JOIN bench_subject s ON s.s = m.subj
      JOIN bench_body b ON b.b = m.body
      JOIN bench_person us ON us.p = 0
      JOIN bench_person them ON them.p = m.them
      LEFT JOIN bench_person cc ON cc.p = m.cc"""


def run_parallel(dsn: str, pipelines: list[list[str]]) -> None:
    """Run each list of statements in order on its own connection, the lists at once."""
    errors: list[BaseException] = []

    def worker(statements: list[str]) -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("SET maintenance_work_mem = '768MB'")
                conn.execute("SET work_mem = '256MB'")
                # No FK checks while loading: the rows are consistent by construction, and
                # this is how a large mail store would be restored.
                conn.execute("SET session_replication_role = replica")
                for statement in statements:
                    conn.execute(statement.encode())
        except psycopg.Error as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(p,)) for p in pipelines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


Query = tuple[str, str, int | None]


def make_queries(conn: psycopg.Connection, count: int, seed: int) -> list[Query]:
    """(category, text, contact id) for ``count`` queries of mixed kinds."""
    rng = random.Random(seed)
    vocab = [r[0] for r in conn.execute("SELECT w FROM bench_vocab ORDER BY rank")]
    people = conn.execute(
        "SELECT addr, name, cntct_id FROM bench_person ORDER BY p"
    ).fetchall()
    contacts = [r[2] for r in people if r[2] is not None]

    def word(lo: int, hi: int) -> str:
        return vocab[rng.randrange(lo, hi)]

    def zipf_word() -> str:
        return vocab[min(int(VOCABULARY ** rng.random()) - 1, VOCABULARY - 1)]

    def person() -> tuple[str, str]:
        addr, name, _ = people[rng.randrange(1, len(people))]
        return str(addr), str(name)

    kinds = [
        ("common word", 0.12, lambda: word(0, 50)),
        ("middle word", 0.10, lambda: word(50, 3000)),
        ("rare word", 0.10, lambda: word(3000, VOCABULARY)),
        ("prefix", 0.14, lambda: (w := zipf_word())[: rng.randint(3, max(3, len(w) - 1))]),
        ("two words", 0.12, lambda: f"{zipf_word()} {zipf_word()[:4]}"),
        ("address fragment", 0.14,
         lambda: (a := person()[0])[max(0, a.index("@") - 4): a.index("@") + 4]),
        ("full address", 0.06, lambda: person()[0]),
        ("name", 0.06, lambda: person()[1]),
        ("contact, no text", 0.08, lambda: ""),
        ("contact + word", 0.08, lambda: zipf_word()),
    ]
    queries: list[Query] = []
    for name, share, make in kinds:
        for _ in range(max(1, round(count * share))):
            contact = rng.choice(contacts) if name.startswith("contact") else None
            queries.append((name, make(), contact))
    rng.shuffle(queries)
    return queries[:count]


async def run_queries(
    dsn: str, queries: list[Query], warmup: list[Query]
) -> tuple[list[float], dict[str, list[float]], int]:
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    try:
        for _, text, contact in warmup:
            await search_messages(conn, text, contact_id=contact)
        times: list[float] = []
        by_kind: dict[str, list[float]] = defaultdict(list)
        hits = 0
        for kind, text, contact in queries:
            start = time.perf_counter()
            rows = await search_messages(conn, text, contact_id=contact)
            elapsed = (time.perf_counter() - start) * 1000
            times.append(elapsed)
            by_kind[kind].append(elapsed)
            hits += len(rows)
            if elapsed > 100:
                log(f"  slow: {elapsed:.0f} ms {kind} {text!r} contact={contact} "
                    f"hits={len(rows)}")
        return times, by_kind, hits
    finally:
        await conn.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    with fresh_database() as dsn:
        log(f"loading {args.messages} messages")
        start = time.perf_counter()
        load(dsn, args.messages, args.seed)
        load_s = time.perf_counter() - start
        with psycopg.connect(dsn, autocommit=True) as conn:
            size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
            row = size.fetchone()
            queries = make_queries(conn, args.queries, args.seed)
            warmup = make_queries(conn, 30, args.seed + 1)
        log(f"loaded in {load_s:.1f} s, database {row[0] if row else '?'}")
        times, by_kind, hits = asyncio.run(run_queries(dsn, queries, warmup))
    log(f"{len(times)} queries, {hits} rows returned")
    for kind, values in sorted(by_kind.items()):
        log(f"  {kind:18} n={len(values):3}  p50 {statistics.median(values):6.1f} ms  "
            f"max {max(values):6.1f} ms")
    print(f"load_s: {load_s:.0f}")
    print(f"p50_ms: {percentile(times, 50):.1f}")
    print(f"p95_ms: {percentile(times, 95):.1f}")


if __name__ == "__main__":
    main()
