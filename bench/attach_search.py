"""Attach-dialog search speed over a large mail store.

    python bench/attach_search.py [--messages N] [--queries Q] [--runs R] [--seed S]
                                  [--keep DIR] [--words FILE]

Fills a database with N messages (default 1,000,000) using set-based SQL only: eml,
emladdr, emlassc contact ties and xtmail.msg rows whose ``msg_search`` vectors hold the words
of a subject, a body and the addresses and names, in the format the importer writes
(distinct lower-case words, no positions). The words come from a real English word list,
Debian's ``wamerican`` (/usr/share/dict/american-english; ``apt-get install wamerican``),
about 74,000 words, drawn on a Zipf curve over the whole list: a message holds several
hundred distinct words (two body parts of about 200 each, a subject), a few numbers, and
the names and addresses of its correspondents (names from the list's proper nouns). So a
query meets the whole range from "the" (in every message) to words found a few hundred
times.

Then it runs Q queries (default 200) through ``xtmail.sync.db.search.search_messages``, R
times (default 3): single words (common, middle, rare), numbers, prefixes being typed, two
words, names, address fragments, full addresses and contact filters. The same-run baseline
is the median time of a plain primary-key lookup on ``xtmail.msg`` through the same
connection (a round trip and an index probe), so figures can be compared across machines
as ratios. The last lines are ``load_s``, ``baseline_ms``, ``p50_ms``, ``p95_ms`` (medians
over the R runs) and ``p95_ratio`` (p95 over the baseline).

Filling a million messages takes many minutes on two cores: ``--keep DIR`` keeps the
server's files in DIR, and a later run with the same DIR, N and seed reuses the filled
database (its migrations brought up to date first, so a new index can be measured on it);
``load_s`` is then the time of the original fill.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import common  # noqa: F401  # puts the repo on sys.path
import psycopg

from bench.common import fresh_database, kept_database
from bench.messages import KNOWN_CONTACTS, WORDS
from xtmail.sync.db.search import search_messages

WORD_LIST = Path("/usr/share/dict/american-english")
BODIES = 100_000  # distinct body parts; each message takes two, plus its own subject/addresses
SUBJECTS = 50_000
PEOPLE = 200_000  # unknown correspondents, besides the known contacts
DOMAINS = 3_000
#: Changes when the generator does: a kept database filled by another version is refilled.
GENERATOR = "wamerican-1"

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


def read_word_list(path: Path) -> tuple[list[str], list[str]]:
    """(vocabulary in rank order, names) from a word list of one word a line.

    The vocabulary is every entry but the possessives, in lower case, once: about a hundred
    of the most frequent English words first, then the business words of bench.messages,
    then the rest of the list in an order fixed by a seeded shuffle (alphabetical ranks
    would put all the rare words at one end of the alphabet). Names are the entries
    written with a capital and then small letters ("Abbott").
    """
    if not path.is_file():
        raise SystemExit(
            f"{path} is missing: this benchmark draws its mail from a real English word list.\n"
            "Install it with:  sudo apt-get install wamerican   (Debian, Ubuntu)\n"
            "or pass another list of one word a line with --words FILE."
        )
    entries = [w for w in path.read_text(encoding="utf-8").split() if "'" not in w]
    names = sorted({w for w in entries if len(w) >= 3 and w[0].isupper() and w[1:].islower()})
    rest = sorted({w.lower() for w in entries} - set(COMMON_ENGLISH) - set(WORDS))
    random.Random(1).shuffle(rest)
    head = list(dict.fromkeys([*COMMON_ENGLISH, *WORDS]))
    return head + rest, names


# The most frequent words of English text, most frequent first (function words mostly).
COMMON_ENGLISH = (
    "the of and to a in is you that it he was for on are as with his they i at be this have "
    "from or one had by word but not what all were we when your can said there use an each "
    "which she do how their if will up other about out many then them these so some her "
    "would make like him into time has look two more write go see number no way could "
    "people my than first water been call who oil its now find long down day did get come "
    "made may part"
).split()


def load(dsn: str, n: int, seed: int, words_path: Path) -> None:
    vocabulary, names = read_word_list(words_path)
    bodies = min(BODIES, max(2_000, n // 10))
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
        for table, values in (("bench_vocab", vocabulary), ("bench_name", names)):
            conn.execute(
                f"""CREATE TABLE {table} AS SELECT (r - 1)::int AS rank, w
                      FROM unnest(%s::text[]) WITH ORDINALITY AS t(w, r)""", (values,))
            conn.execute(f"CREATE UNIQUE INDEX ON {table} (rank)")
        v = len(vocabulary)
        # Zipf: rank = floor((V + 1) ** u) - 1 for uniform u gives P(rank r) ~ 1/(r + 1).
        zipf = f"(floor(exp(random() * ln({v + 1}))) - 1)::int"
        # Each body part draws about 270 words (log-normal, from about 100 to 740), about
        # 200 of them distinct, plus 2 to 9 numbers (quantities, amounts, item numbers);
        # a message has two parts.
        conn.execute(
            f"""CREATE UNLOGGED TABLE bench_body AS
                WITH sizes AS (
                    SELECT b, floor(exp(5.6 + random() + random() + random() - 1.5))::int AS k,
                           2 + floor(random() * 8)::int AS nums
                      FROM generate_series(1, %(bodies)s) AS b),
                picks AS (
                    SELECT b, {zipf} AS rank FROM sizes, generate_series(1, sizes.k)),
                words AS (
                    SELECT b, array_agg(DISTINCT v.w) AS lexemes,
                           left(string_agg(v.w, ' '), 400) AS text
                      FROM picks JOIN bench_vocab v USING (rank) GROUP BY b),
                numbers AS (
                    SELECT b, array_agg(DISTINCT CASE
                               WHEN x < 0.4 THEN 1 + floor(random() * 100)
                               WHEN x < 0.7 THEN floor(exp(random() * ln(100000)))
                               ELSE 100000 + floor(random() * 900000) END::bigint::text) AS nums
                      FROM (SELECT b, random() AS x FROM sizes, generate_series(1, sizes.nums))
                           AS t GROUP BY b)
                SELECT b, array_to_tsvector(lexemes || nums) AS vec,
                       text || ' ' || array_to_string(nums, ' ') AS text
                  FROM words JOIN numbers USING (b)""",
            {"bodies": bodies},
        )
        conn.execute("CREATE UNIQUE INDEX ON bench_body (b)")
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
        conn.execute("CREATE UNIQUE INDEX ON bench_subject (s)")
        # People: 0 is our own sales address, 1..K the known contacts of the seeded
        # database, then unknown correspondents at DOMAINS companies, named from the list.
        names_n = len(names)
        conn.execute(
            f"""CREATE TABLE bench_person AS
                SELECT 0 AS p, 'sales@ourcompany.example'::text AS addr, 'Sales'::text AS name,
                       NULL::integer AS cntct_id
                UNION ALL
                SELECT row_number() OVER (ORDER BY cntct_id)::int, cntct_email,
                       cntct_first_name || ' ' || cntct_last_name, cntct_id FROM cntct
                UNION ALL
                SELECT {KNOWN_CONTACTS} + i,
                       lower(f.w) || '.' || lower(l.w) || (i %% 100) || '@' || d.w
                       || '.example.org', f.w || ' ' || l.w, NULL
                  FROM generate_series(1, %(people)s) AS i
                  JOIN bench_name f ON f.rank = (i::bigint * 7919) %% {names_n}
                  JOIN bench_name l ON l.rank = (i::bigint * 104729 / 7) %% {names_n}
                  JOIN bench_vocab d ON d.rank = 5000 + (i * 31) %% %(domains)s""",
            {"people": PEOPLE, "domains": DOMAINS},
        )
        conn.execute(
            """ALTER TABLE bench_person ADD COLUMN vec tsvector;
               UPDATE bench_person SET vec = array_to_tsvector(array_remove(
                   regexp_split_to_array(lower(addr || ' ' || name), '\\W+'), ''));
               CREATE UNIQUE INDEX ON bench_person (p);"""
        )
        log(f"  vocabulary ({v} words, {names_n} names), bodies, subjects, people: "
            f"{time.perf_counter() - step:.1f} s")

        step = time.perf_counter()
        # Each message: from a known contact (half), an unknown person, or from us (outgoing);
        # to us or to them; sometimes a Cc. Dates run over five years in import order with
        # a few days of jitter, and 15 % were imported late from old folders (random dates).
        # Its text is two body parts.
        conn.execute(
            f"""CREATE UNLOGGED TABLE bench_msg AS
                SELECT i,
                       CASE WHEN random() < 0.15
                            THEN timestamptz '2021-01-01' + random() * interval '1826 days'
                            ELSE timestamptz '2021-01-01'
                                 + (i::float8 / %(n)s) * interval '1826 days'
                                 + (random() - 0.5) * interval '6 days' END AS date,
                       1 + floor(random() * {SUBJECTS})::int AS subj,
                       1 + floor(random() * {bodies})::int AS body,
                       1 + floor(random() * {bodies})::int AS body2,
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
           s.text, b.text || E'\\n\\n' || b2.text, '', 'C'
      FROM bench_msg m JOIN bench_subject s ON s.s = m.subj
      JOIN bench_body b ON b.b = m.body JOIN bench_body b2 ON b2.b = m.body2"""

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
    SELECT m.i, m.date, '<bench.' || m.i || '@mail.example.com>', 2000 + 8 * length(b.text),
           b.vec || b2.vec || s.vec || us.vec || them.vec || coalesce(cc.vec, '')
      FROM bench_msg m JOIN bench_subject s ON s.s = m.subj
      JOIN bench_body b ON b.b = m.body JOIN bench_body b2 ON b2.b = m.body2
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
    size = len(vocab)
    people = conn.execute(
        "SELECT addr, name, cntct_id FROM bench_person ORDER BY p"
    ).fetchall()
    contacts = [r[2] for r in people if r[2] is not None]

    def word(lo: int, hi: int) -> str:
        return vocab[rng.randrange(lo, hi)]

    def zipf_word() -> str:
        return vocab[min(int((size + 1) ** rng.random()) - 1, size - 1)]

    def person() -> tuple[str, str]:
        addr, name, _ = people[rng.randrange(1, len(people))]
        return str(addr), str(name)

    def number() -> str:
        x = rng.random()
        return str(1 + rng.randrange(100) if x < 0.4 else int(100000 ** rng.random())
                   if x < 0.7 else 100000 + rng.randrange(900000))

    kinds = [
        ("common word", 0.12, lambda: word(0, 50)),
        ("middle word", 0.10, lambda: word(50, 3000)),
        ("rare word", 0.10, lambda: word(3000, size)),
        ("number", 0.04, number),
        ("prefix", 0.12, lambda: (w := zipf_word())[: rng.randint(3, max(3, len(w) - 1))]),
        ("two words", 0.12, lambda: f"{zipf_word()} {zipf_word()[:4]}"),
        ("address fragment", 0.12,
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


async def baseline(conn: psycopg.AsyncConnection[object], n: int, seed: int) -> float:
    """Median ms of a primary-key lookup on xtmail.msg: the same-run yardstick."""
    rng = random.Random(seed)
    times = []
    for _ in range(200):
        start = time.perf_counter()
        cur = await conn.execute("SELECT 1 FROM xtmail.msg WHERE msg_eml_id = %s",
                                 (1 + rng.randrange(n),))
        await cur.fetchall()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def run_queries(
    dsn: str, n: int, queries: list[Query], warmup: list[Query], runs: int,
) -> tuple[list[list[float]], dict[str, list[float]], int, float]:
    """Times of each run, all times by kind, rows returned in a run, the baseline."""
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    try:
        for _, text, contact in warmup:
            await search_messages(conn, text, contact_id=contact)
        base = await baseline(conn, n, 1)
        all_runs: list[list[float]] = []
        by_kind: dict[str, list[float]] = defaultdict(list)
        hits = 0
        for run in range(runs):
            times: list[float] = []
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
            log(f"run {run + 1}: p50 {percentile(times, 50):.1f} ms, "
                f"p95 {percentile(times, 95):.1f} ms")
            all_runs.append(times)
        base = statistics.median([base, await baseline(conn, n, 2)])
        return all_runs, by_kind, hits, base
    finally:
        await conn.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def filled(conn: psycopg.Connection, n: int, seed: int) -> float | None:
    """The load time of a kept database filled with the same N, seed and generator."""
    if conn.execute("SELECT to_regclass('bench_meta')").fetchone() == (None,):
        return None
    row = conn.execute("SELECT messages, seed, generator, load_s FROM bench_meta").fetchone()
    if row is None or tuple(row[:3]) != (n, seed, GENERATOR):
        raise SystemExit(f"the kept database holds another fill ({row}): pass another "
                         "--keep folder, or delete this one")
    return float(row[3])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep the filled server in DIR and reuse it on later runs")
    parser.add_argument("--words", type=Path, default=WORD_LIST, metavar="FILE",
                        help=f"word list, one word a line (default {WORD_LIST})")
    args = parser.parse_args()
    database = (kept_database(args.keep.resolve()) if args.keep
                else fresh_database_flagged())
    with database as (dsn, existed):
        with psycopg.connect(dsn, autocommit=True) as conn:
            load_s = filled(conn, args.messages, args.seed) if existed else None
        if load_s is None:
            log(f"loading {args.messages} messages")
            start = time.perf_counter()
            load(dsn, args.messages, args.seed, args.words)
            load_s = time.perf_counter() - start
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("CREATE TABLE bench_meta AS SELECT %s::int AS messages, "
                             "%s::int AS seed, %s::text AS generator, %s::float8 AS load_s",
                             (args.messages, args.seed, GENERATOR, load_s))
        else:
            log(f"reusing the database filled in {load_s:.0f} s")
        with psycopg.connect(dsn, autocommit=True) as conn:
            size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
            row = size.fetchone()
            queries = make_queries(conn, args.queries, args.seed)
            warmup = make_queries(conn, 30, args.seed + 1)
        log(f"database {row[0] if row else '?'}")
        runs, by_kind, hits, base = asyncio.run(
            run_queries(dsn, args.messages, queries, warmup, args.runs))
    log(f"{len(queries)} queries x {len(runs)} runs, {hits} rows returned in a run")
    for kind, values in sorted(by_kind.items()):
        log(f"  {kind:18} n={len(values):3}  p50 {statistics.median(values):6.1f} ms  "
            f"p95 {percentile(values, 95):6.1f} ms  max {max(values):6.1f} ms")
    p50 = statistics.median(percentile(t, 50) for t in runs)
    p95 = statistics.median(percentile(t, 95) for t in runs)
    print(f"load_s: {load_s:.0f}")
    print(f"baseline_ms: {base:.3f}")
    print(f"p50_ms: {p50:.1f}")
    print(f"p95_ms: {p95:.1f}")
    print(f"p95_ratio: {p95 / base:.0f}")


@contextmanager
def fresh_database_flagged() -> Iterator[tuple[str, bool]]:
    with fresh_database() as dsn:
        yield dsn, False


if __name__ == "__main__":
    main()
