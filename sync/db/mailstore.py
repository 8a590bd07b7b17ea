"""The read side of the store, for the widgets: asynchronous, on the host's qasync loop.

Views never run SQL and never see a connection: they hold a :class:`MailStore` that the host
passes in, and await its methods. The store owns a small pool of connections
(:class:`~xtmail.sync.db.pool.AsyncPool`, autocommit); each method takes one for its query
and gives it back, so the tabs and dialogs of a window can await the store side by side,
and a setting one query changes for its own transaction cannot reach another. Every method
raises only :class:`~xtmail.sync.errors.XtmailError` subclasses: driver errors are
translated here, once (:mod:`xtmail.sync.db.errors`).

psycopg is imported here, not in the widget modules, so Qt Designer can load the widgets
without a database driver.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime, time
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from xtmail.sync.db import newest, search
from xtmail.sync.db.errors import translated
from xtmail.sync.db.pool import NOT_ANSWERING_HINT, AsyncPool
from xtmail.sync.errors import ConfigError, DatabaseError, DatabaseUnavailable
from xtmail.sync.mail import mime, registry
from xtmail.sync.values import ContactRow, DocumentRow, MessageDetail, MessageRow

#: Connections the pool opens at most: the views of one program run a few queries at a
#: time (a tab's list, a preview, a search), each short.
MAX_CONNECTIONS = 4
#: Seconds a query waits for a connection when all are in use before it fails with
#: DatabaseUnavailable: long enough for a burst of queries, short enough that a user is
#: told while still looking at the screen.
WAIT_FOR_CONNECTION = 5.0
#: Seconds a person waits for any one call of the store before it fails with
#: DatabaseUnavailable ("the database is not answering"): a frozen server never answers,
#: and nothing but a bound on the wait tells the user so. Also the server-side
#: statement_timeout of the store's connections.
ANSWER_TIMEOUT = 15.0

P = ParamSpec("P")
R = TypeVar("R")


#: How contacts belong to CRM accounts: xTuple 4.x has ``cntct.cntct_crmacct_id``; xTuple 5.0
#: dropped it for the association table ``crmacctcntctass``; a database with neither (none
#: known) links none.
CRM_LINK_COLUMN, CRM_LINK_TABLE, CRM_LINK_NONE = "column", "table", "none"

_CRM_LINK_QUERY = """
SELECT CASE
         WHEN EXISTS (SELECT 1 FROM pg_attribute
                       WHERE attrelid = to_regclass('cntct') AND attname = 'cntct_crmacct_id'
                         AND NOT attisdropped) THEN 'column'
         WHEN to_regclass('crmacctcntctass') IS NOT NULL THEN 'table'
         ELSE 'none' END
"""


def _contacts_sql(doc: registry.DocumentType, crm_link: str = CRM_LINK_COLUMN) -> sql.Composable:
    """SQL selecting the cntct ids of one document (parameter: the document id)."""
    parts: list[sql.Composable] = []
    table, key = sql.Identifier(doc.table), sql.Identifier(doc.key)
    for column in doc.contact_columns:
        parts.append(
            sql.SQL("SELECT {col} FROM {table} WHERE {key} = %(doc_id)s").format(
                col=sql.Identifier(column), table=table, key=key
            )
        )
    if doc is registry.CRM_ACCOUNT and crm_link == CRM_LINK_COLUMN:
        parts.append(sql.SQL("SELECT cntct_id FROM cntct WHERE cntct_crmacct_id = %(doc_id)s"))
    elif doc is registry.CRM_ACCOUNT and crm_link == CRM_LINK_TABLE:
        parts.append(sql.SQL("SELECT crmacctcntctass_cntct_id FROM crmacctcntctass "
                             "WHERE crmacctcntctass_crmacct_id = %(doc_id)s"))
    if doc is registry.RETURN_AUTHORIZATION:
        parts.append(
            sql.SQL(
                "SELECT c.x FROM rahead r JOIN custinfo cu ON cu.cust_id = r.rahead_cust_id, "
                "LATERAL (VALUES (cu.cust_cntct_id), (cu.cust_corrcntct_id)) AS c(x) "
                "WHERE r.rahead_id = %(doc_id)s"
            )
        )
    if not parts:
        return sql.SQL("SELECT NULL::integer WHERE false")
    return sql.SQL(" UNION ").join(parts)


_ADDRESSES = """
  (SELECT string_agg(coalesce(nullif(a.emladdr_name, ''), a.emladdr_addr), ', '
                     ORDER BY a.emladdr_id)
     FROM xtbatch.emladdr a WHERE a.emladdr_eml_id = m.eml_id AND a.emladdr_type = '{kind}')
"""


#: A message's time: the exact one xtmail keeps, else (mail stored by Connect) the start of
#: Connect's day in the session's time zone.
MESSAGE_TIME = "coalesce({msg}.msg_date, {eml}.eml_date::timestamptz)"


#: True when a message has no usable date of its own: the parser then dated it by when it
#: was received (the IMAP arrival time, else the import) and said why in its notes.
UNDATED = (
    "coalesce(EXISTS (SELECT 1 FROM unnest({msg}.msg_defects) AS d "
    "WHERE d = 'Date: header missing' OR d LIKE 'Date: cannot read %%' "
    "OR d LIKE 'Date: %% is in the future; not used'), false)"
)


#: Where a link in rendered mail may lead: nothing that runs or reads local files.
LINK_SCHEMES = frozenset({"http", "https", "mailto"})


def _no_remote(tag: str, attribute: str, value: str) -> str | None:
    # Images are never fetched: their source goes, their alt text stays; only a ``cid:``
    # source stays, a part of the message itself (RFC 2392), drawn by the view from
    # :meth:`MailStore.inline_images`. A ``cid:`` anywhere else (a link) goes.
    is_cid = value.strip().lower().startswith("cid:")
    if tag == "img" and attribute == "src":
        return value if is_cid else None
    return None if is_cid else value


def safe_html(html: str) -> str:
    """``html`` through ammonia's allow-list (nh3): no scripts, styles, forms, frames,
    event handlers or inline styles; links only to http(s) and mailto; no image sources
    but ``cid:`` ones (the message's own parts), so rendering it fetches nothing."""
    import nh3

    return nh3.clean(
        html, url_schemes={*LINK_SCHEMES, "cid"}, attribute_filter=_no_remote
    )


#: Inline images read for one message at most (count, decoded bytes): a message built to
#: exhaust memory draws the first ones only.
MAX_INLINE_IMAGES = 100
MAX_INLINE_BYTES = 32 * 1024 * 1024


def _inline_images_of(raw: bytes) -> dict[str, bytes]:
    """The message's image parts that have a Content-ID, by that id without its angle
    brackets; {} when there are none or the message cannot be read."""
    import email
    import email.policy

    images: dict[str, bytes] = {}
    total = 0
    try:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        for part in message.walk():
            content_id = str(part.get("Content-ID", "")).strip()
            if part.get_content_maintype() != "image" or not content_id:
                continue
            data = part.get_payload(decode=True)
            if not isinstance(data, bytes) or not data:
                continue
            total += len(data)
            if len(images) >= MAX_INLINE_IMAGES or total > MAX_INLINE_BYTES:
                break
            images.setdefault(content_id.removeprefix("<").removesuffix(">").strip(), data)
    except (LookupError, ValueError, TypeError, AttributeError, UnicodeError):
        pass  # the view shows the images it got and the alt text of the others
    return images


def _html_of(raw: bytes) -> str:
    """The HTML body of a message, made safe ("" when it has none or it cannot be read)."""
    import email
    import email.policy

    try:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        part = message.get_body(preferencelist=("html",))
        if part is None:
            return ""
        text = part.get_content()
    except (LookupError, ValueError, TypeError, AttributeError, UnicodeError):
        return ""  # the plain view still has the text, read leniently
    return safe_html(text) if isinstance(text, str) else ""


def _midnight(day: date | None) -> datetime | None:
    """The start of ``day`` in local time, as :data:`MESSAGE_TIME` gives it."""
    return None if day is None else datetime.combine(day, time()).astimezone()


def _document(code: str) -> registry.DocumentType:
    doc = registry.find(code)
    if doc is None:
        raise ConfigError(f"{code!r} is not a document type xtmail knows.",
                          hint="Use one of the codes xtbatch.emlassc holds: S for a sales order, "
                          "C for a customer, T for a contact, and so on.")
    return doc


def _bounded(
    doing: str,
) -> Callable[[Callable[Concatenate[MailStore, P], Coroutine[Any, Any, R]]],
              Callable[Concatenate[MailStore, P], Coroutine[Any, Any, R]]]:
    """Make a method of the store give up after the pool's ``answer_timeout`` (see
    :meth:`~xtmail.sync.db.pool.AsyncPool.bounded`): the whole call, from taking a
    connection to the last row, is bounded, and cancelling the caller returns at once."""

    def wrap(
        method: Callable[Concatenate[MailStore, P], Coroutine[Any, Any, R]],
    ) -> Callable[Concatenate[MailStore, P], Coroutine[Any, Any, R]]:
        async def once_more_if_lost(self: MailStore, *args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return await method(self, *args, **kwargs)
            except DatabaseUnavailable as exc:
                cause = exc.__cause__
                if not isinstance(cause, psycopg.OperationalError) or isinstance(
                        cause, psycopg.errors.QueryCanceled):
                    raise
                # The connection was lost under the call: a backend the server ended a
                # moment before (a restart, pg_terminate_backend) can still look idle and
                # sound when it is taken. Every call of the store can be repeated safely
                # (reads; attach and detach change nothing twice): once more, on a new
                # connection; a server that is really away fails it again at once.
                return await method(self, *args, **kwargs)

        async def bounded(self: MailStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
            return await self._pool.bounded(once_more_if_lost(self, *args, **kwargs), doing)

        functools.update_wrapper(bounded, method)
        return bounded

    return wrap


class MailStore:
    """Asynchronous queries and changes for the Email tab and the Attach dialog.

    Every call gives up after ``answer_timeout`` seconds with DatabaseUnavailable; a call
    cancelled by its caller returns at once, its query stopped in the background. After a
    database restart the next call reconnects: no call is handed a dead connection.

    Build it with :meth:`connect` and end it with :meth:`close`, on the loop that runs the
    queries; or pass in a pool (the store then owns it, and closes it).
    """

    def __init__(
        self, pool: AsyncPool, available: tuple[registry.DocumentType, ...] | None = None
    ) -> None:
        self._pool = pool
        self._available = available
        self._crm_link: str | None = None

    @classmethod
    async def connect(
        cls, dsn: str, *, max_size: int = MAX_CONNECTIONS,
        wait_for_connection: float = WAIT_FOR_CONNECTION,
        answer_timeout: float = ANSWER_TIMEOUT,
    ) -> MailStore:
        """A store on the database ``dsn``; raises DatabaseUnavailable when it cannot be
        reached, with the server's reason."""
        pool = AsyncPool(dsn, max_size=max_size, timeout=wait_for_connection,
                         answer_timeout=answer_timeout)
        # One connection now, kept for the first query: a wrong setting or a server that
        # is down shows when the store is made, not at the first query.
        await pool.bounded(cls._open(pool), "to open the mail store")
        return cls(pool)

    @staticmethod
    async def _open(pool: AsyncPool) -> None:
        with translated("to open the mail store"):
            async with pool.connection():
                pass

    async def close(self) -> None:
        """Close the connections; one in use closes when its query ends. Closing twice is
        harmless; any query after the first raises DatabaseUnavailable."""
        await self._pool.close()

    @property
    def closed(self) -> bool:
        return self._pool.closed

    @asynccontextmanager
    async def _connection(self, doing: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection for one method's queries; driver errors translated."""
        try:
            with translated(doing):
                async with self._pool.connection() as conn:
                    yield conn
        except DatabaseUnavailable as exc:
            if not isinstance(exc.__cause__, psycopg.errors.QueryCanceled):
                raise
            # The server's statement_timeout (the pool's answer timeout) stopped the query:
            # the server runs but is too slow, which "cannot reach" would misname.
            raise DatabaseUnavailable(
                f"The database is not answering: it stopped the query {doing} after "
                f"{self._pool.statement_timeout:g} s.",
                hint=NOT_ANSWERING_HINT,
            ) from exc.__cause__

    # -- search (the Attach dialog) ----------------------------------------------------------
    @_bounded("to search the mail")
    async def search_messages(
        self, text: str, *, contact_id: int | None = None, limit: int = 200
    ) -> list[MessageRow]:
        """The newest ``limit`` messages matching ``text`` (see :mod:`xtmail.sync.db.search`),
        restricted to ``contact_id``'s mail when given."""
        async with self._connection("to search the mail") as conn:
            return await search.search_messages(conn, text, contact_id=contact_id,
                                                limit=limit)

    @_bounded("to search the contacts")
    async def search_contacts(self, text: str, limit: int = 50) -> list[ContactRow]:
        """Contacts whose name, number or any address contains every word of ``text``."""
        async with self._connection("to search the contacts") as conn:
            return await search.search_contacts(conn, text, limit)

    # -- documents -----------------------------------------------------------------------------
    @_bounded("to read the document's contacts")
    async def document_contacts(self, code: str, doc_id: int) -> list[ContactRow]:
        """The contacts of a document, with their primary address (for New)."""
        doc = _document(code)
        async with self._connection("to read the document's contacts") as conn:
            link = await self._crm_link_on(conn, doc)
            query = self._document_contacts_query(doc, link)
            rows = await (await conn.execute(query, {"doc_id": doc_id})).fetchall()
        return [ContactRow(*r) for r in rows]

    @staticmethod
    def _document_contacts_query(doc: registry.DocumentType, link: str) -> sql.Composed:
        return sql.SQL(
            """SELECT c.cntct_id, c.cntct_number,
                      trim(coalesce(c.cntct_first_name, '') || ' ' ||
                           coalesce(c.cntct_last_name, '')),
                      coalesce(nullif(c.cntct_email, ''),
                               (SELECT e.cntcteml_email FROM cntcteml e
                                 WHERE e.cntcteml_cntct_id = c.cntct_id
                                 ORDER BY e.cntcteml_primary DESC, e.cntcteml_id LIMIT 1), '')
                 FROM cntct c WHERE c.cntct_id IN ({ids}) ORDER BY c.cntct_id"""
        ).format(ids=_contacts_sql(doc, link) if doc is not registry.CONTACT
                 else sql.SQL("SELECT %(doc_id)s"))

    @_bounded("to look up the document tables")
    async def available_documents(self) -> tuple[registry.DocumentType, ...]:
        """The document types this database has tables for (asked once per store: tables do
        not come and go while a program runs)."""
        if self._available is None:
            async with self._connection("to look up the document tables") as conn:
                return await self._available_on(conn)
        return self._available

    async def _crm_link_on(self, conn: psycopg.AsyncConnection[Any], doc: registry.DocumentType
                           ) -> str:
        """How this database links contacts to CRM accounts (asked once, only for them)."""
        if doc is not registry.CRM_ACCOUNT:
            return CRM_LINK_COLUMN
        if self._crm_link is None:
            row = await (await conn.execute(_CRM_LINK_QUERY)).fetchone()
            self._crm_link = str(row[0]) if row else CRM_LINK_NONE
        return self._crm_link

    async def _available_on(
        self, conn: psycopg.AsyncConnection[Any]
    ) -> tuple[registry.DocumentType, ...]:
        """:meth:`available_documents` on a connection the caller holds already."""
        if self._available is None:
            cur = await conn.execute(
                "SELECT t FROM unnest(%b::text[]) AS t "
                "WHERE to_regclass(quote_ident(t)) IS NOT NULL",
                ([doc.table for doc in registry.DOCUMENT_TYPES],),
            )
            self._available = registry.available({str(r[0]) for r in await cur.fetchall()})
        return self._available

    @_bounded("to read the document's number")
    async def document_number(self, code: str, doc_id: int) -> str | None:
        """The number a person sees for a document (for its reference), or None (also for a
        type this database does not have)."""
        doc = _document(code)
        query = sql.SQL("SELECT {number}::text FROM {table} WHERE {key} = %s").format(
            number=sql.Identifier(doc.number_column or doc.key),
            table=sql.Identifier(doc.table), key=sql.Identifier(doc.key),
        )
        async with self._connection("to read the document's number") as conn:
            if doc.edition_only and doc not in await self._available_on(conn):
                return None
            row = await (await conn.execute(query, (doc_id,))).fetchone()
        return None if row is None else str(row[0])

    @_bounded("to list the documents")
    async def list_documents(self, code: str, *, limit: int = 500) -> list[DocumentRow]:
        """Records of one document type with their first contact, by number; none for a type
        this database does not have."""
        doc = _document(code)
        table, key = sql.Identifier(doc.table), sql.Identifier(doc.key)
        number = sql.Identifier(doc.number_column or doc.key)
        if doc is registry.CONTACT:
            contact: sql.Composable = sql.SQL("d.cntct_id")
        elif doc is registry.RETURN_AUTHORIZATION:
            contact = sql.SQL(
                "(SELECT cust_cntct_id FROM custinfo WHERE cust_id = d.rahead_cust_id)"
            )
        elif doc.contact_columns:
            contact = sql.SQL("coalesce({})").format(
                sql.SQL(", ").join(sql.SQL("d.") + sql.Identifier(c) for c in doc.contact_columns)
            )
        else:
            contact = sql.SQL("NULL::integer")
        query = sql.SQL(
            """SELECT d.{key}, d.{number}::text,
                      trim(coalesce(c.cntct_first_name, '') || ' ' ||
                           coalesce(c.cntct_last_name, '')),
                      coalesce(c.cntct_email, '')
                 FROM {table} d LEFT JOIN cntct c ON c.cntct_id = {contact}
                ORDER BY d.{number} LIMIT %s"""
        ).format(key=key, number=number, table=table, contact=contact)
        async with self._connection("to list the documents") as conn:
            if doc.edition_only and doc not in await self._available_on(conn):
                return []
            rows = await (await conn.execute(query, (limit,))).fetchall()
        return [DocumentRow(*r) for r in rows]

    # -- message lists ---------------------------------------------------------------------------
    def _ids_query(self, doc: registry.DocumentType, link: str) -> sql.Composable:
        direct = sql.SQL(
            "SELECT DISTINCT emlassc_eml_id AS eml_id, false AS via FROM xtbatch.emlassc "
            "WHERE emlassc_type = %(code)s AND emlassc_assc_id = %(doc_id)s"
        )
        if not doc.shows_contact_mail:
            return direct
        via = sql.SQL(
            "SELECT emlassc_eml_id, true FROM xtbatch.emlassc "
            "WHERE emlassc_type = 'T' AND emlassc_assc_id IN ({contacts})"
        ).format(contacts=_contacts_sql(doc, link))
        return sql.SQL(
            "SELECT eml_id, bool_and(via) AS via FROM ({direct} UNION ALL {via}) AS u "
            "GROUP BY eml_id"
        ).format(direct=direct, via=via)

    @_bounded("to list the document's mail")
    async def messages_for(
        self, code: str, doc_id: int, *, limit: int = 100, offset: int = 0
    ) -> list[MessageRow]:
        """A document's mail, newest first; ``limit`` rows from ``offset``."""
        doc = _document(code)
        async with self._connection("to list the document's mail") as conn:
            link = await self._crm_link_on(conn, doc)
            params: dict[str, Any] = {"code": doc.code, "doc_id": doc_id, "limit": limit,
                                      "offset": offset}
            # A document holding much of all mail: the newest found by a walk (newest.py).
            page = await newest.page_ids(conn, self._ids_query(doc, link), params,
                                         offset + limit)
            query = self._messages_query(doc, link, only_page=page is not None)
            cur = await conn.execute(query, {**params, "page": page})
            rows = await cur.fetchall()
        return [
            MessageRow(eml_id=r[0], date=r[1], subject=r[2], via_contact=bool(r[3]),
                       sender=r[4], to=r[5], cc=r[6], dated=not r[7], attachments=r[8])
            for r in rows
        ]

    @_bounded("to count the document's mail")
    async def message_count(self, code: str, doc_id: int) -> int:
        """How many messages :meth:`messages_for` lists for a document in all."""
        doc = _document(code)
        async with self._connection("to count the document's mail") as conn:
            query = sql.SQL("SELECT count(*) FROM ({ids}) AS t").format(
                ids=self._ids_query(doc, await self._crm_link_on(conn, doc)))
            row = await (await conn.execute(
                query, {"code": doc.code, "doc_id": doc_id})).fetchone()
        return int(row[0]) if row else 0

    def _messages_query(self, doc: registry.DocumentType, link: str, *,
                        only_page: bool = False) -> sql.Composed:
        """``only_page``: only the ids of ``%(page)s``, a set holding the rows asked for."""
        return sql.SQL(
            """SELECT m.eml_id, {date} AS date, coalesce(m.eml_subj, ''), t.via,
                      coalesce({from_}, ''), coalesce({to}, ''), coalesce({cc}, ''),
                      {undated}, coalesce(jsonb_array_length(x.msg_attachments), 0)
                 FROM ({ids}) AS t
                 JOIN xtbatch.eml m ON m.eml_id = t.eml_id
                 LEFT JOIN xtmail.msg x ON x.msg_eml_id = m.eml_id
                WHERE {page}
                ORDER BY date DESC NULLS LAST, m.eml_id DESC
                LIMIT %(limit)s OFFSET %(offset)s"""
        ).format(
            ids=self._ids_query(doc, link),
            page=sql.SQL("t.eml_id = ANY(%(page)b::integer[])" if only_page else "true"),
            date=sql.SQL(MESSAGE_TIME.format(eml="m", msg="x")),
            from_=sql.SQL(_ADDRESSES.format(kind="FROM")),
            to=sql.SQL(_ADDRESSES.format(kind="TO")),
            cc=sql.SQL(_ADDRESSES.format(kind="CC")),
            undated=sql.SQL(UNDATED.format(msg="x")),
        )

    # -- one message -------------------------------------------------------------------------------
    @_bounded("to read the message")
    async def message(self, eml_id: int) -> MessageDetail:
        async with (
            self._connection("to read the message") as conn,
            conn.cursor(row_factory=dict_row) as cur,
        ):
            await cur.execute(
                """SELECT e.eml_id, m.msg_date, e.eml_date, coalesce(e.eml_subj, '') AS subject,
                          coalesce(e.eml_body, '') AS body, m.msg_reply_to,
                          coalesce(m.msg_attachments, '[]') AS attachments,
                          coalesce(m.msg_defects, '{}') AS defects,
                          {undated} AS undated
                     FROM xtbatch.eml e LEFT JOIN xtmail.msg m ON m.msg_eml_id = e.eml_id
                    WHERE e.eml_id = %s""".replace("{undated}", UNDATED.format(msg="m")),
                (eml_id,),
            )
            row = await cur.fetchone()
            if row is None:
                raise DatabaseError(f"Message {eml_id} no longer exists.")
            await cur.execute(
                """SELECT emladdr_type, coalesce(emladdr_name, ''), emladdr_addr
                     FROM xtbatch.emladdr WHERE emladdr_eml_id = %s ORDER BY emladdr_id""",
                (eml_id,),
            )
            addresses: dict[str, list[tuple[str, str]]] = {}
            for a in await cur.fetchall():
                kind, name, addr = a.values()
                addresses.setdefault(kind, []).append((name, addr))
        reply_to = tuple(
            ("", a.strip()) for a in (row["msg_reply_to"] or "").split(",") if a.strip()
        )
        return MessageDetail(
            eml_id=row["eml_id"], date=row["msg_date"] or _midnight(row["eml_date"]),
            subject=row["subject"],
            body=row["body"], from_=tuple(addresses.get("FROM", ())),
            to=tuple(addresses.get("TO", ())), cc=tuple(addresses.get("CC", ())),
            reply_to=reply_to, attachments=tuple(row["attachments"]),
            defects=tuple(row["defects"]), dated=not row["undated"],
        )

    @_bounded("to read the message")
    async def raw_message(self, eml_id: int) -> bytes:
        return await self._raw(eml_id)

    async def _raw(self, eml_id: int) -> bytes:
        async with self._connection("to read the message") as conn:
            row = await (
                await conn.execute("SELECT eml_msg FROM xtbatch.eml WHERE eml_id = %s", (eml_id,))
            ).fetchone()
        if row is None or row[0] is None:
            raise DatabaseError(f"Message {eml_id} no longer exists.")
        return bytes(row[0])

    @_bounded("to read the attachment")
    async def attachment(self, eml_id: int, index: int) -> bytes:
        """The decoded content of attachment ``index`` of a message, in the order of
        :attr:`MessageDetail.attachments <xtmail.sync.values.MessageDetail.attachments>`.
        The message is parsed again from its raw bytes in a worker thread."""
        raw = await self._raw(eml_id)
        try:
            _info, data = await asyncio.to_thread(mime.attachment_bytes, raw, index)
        except IndexError as exc:
            raise DatabaseError(
                f"Message {eml_id} has no attachment {index + 1} that can be read.",
                hint="Open the whole message (double click) to see it in your mail program.",
            ) from exc
        return data

    @_bounded("to read the document's mail")
    async def tied_ids(self, eml_ids: Sequence[int], code: str, doc_id: int) -> set[int]:
        """Which of ``eml_ids`` are tied to the document itself already."""
        doc = _document(code)
        async with self._connection("to read the document's mail") as conn:
            cur = await conn.execute(
                "SELECT DISTINCT emlassc_eml_id FROM xtbatch.emlassc "
                "WHERE emlassc_eml_id = ANY(%b::integer[]) AND emlassc_type = %s "
                "AND emlassc_assc_id = %s",
                (list(eml_ids), doc.code, doc_id),
            )
            return {int(r[0]) for r in await cur.fetchall()}

    @_bounded("to read the message")
    async def message_html(self, eml_id: int) -> str:
        """The message's HTML text made safe to render (see :func:`safe_html`), or "" when
        it has none. Parsed from the raw bytes in a worker thread."""
        raw = await self._raw(eml_id)
        return await asyncio.to_thread(_html_of, raw)

    @_bounded("to read the message")
    async def inline_images(self, eml_id: int) -> dict[str, bytes]:
        """The message's inline images (the parts a ``cid:`` URL names), by Content-ID
        without angle brackets, as their encoded bytes (PNG, JPEG...). Parsed from the raw
        bytes in a worker thread; nothing is fetched from anywhere else."""
        raw = await self._raw(eml_id)
        return await asyncio.to_thread(_inline_images_of, raw)

    # -- rule 4: attach and detach -------------------------------------------------------------
    @_bounded("to attach the mail")
    async def attach(self, eml_ids: Sequence[int], code: str, doc_id: int) -> int:
        """Tie messages to a document, recording who and when; return how many were new."""
        doc = _document(code)
        async with self._connection("to attach the mail") as conn, conn.transaction():
            cur = await conn.execute(
                """WITH added AS (
                       INSERT INTO xtbatch.emlassc (emlassc_eml_id, emlassc_type,
                                                    emlassc_assc_id)
                       SELECT e, %(code)s, %(doc_id)s FROM unnest(%(ids)b::int[]) AS e
                        WHERE NOT EXISTS (
                              SELECT 1 FROM xtbatch.emlassc x
                               WHERE x.emlassc_eml_id = e AND x.emlassc_type = %(code)s
                                 AND x.emlassc_assc_id = %(doc_id)s)
                       ON CONFLICT DO NOTHING
                       RETURNING emlassc_eml_id)
                   INSERT INTO xtmail.assc_log (al_eml_id, al_type, al_assc_id, al_action)
                   SELECT emlassc_eml_id, %(code)s, %(doc_id)s, 'attach' FROM added""",
                {"code": doc.code, "doc_id": doc_id, "ids": list(eml_ids)},
            )
            return cur.rowcount

    @_bounded("to detach the mail")
    async def detach(self, eml_ids: Sequence[int], code: str, doc_id: int) -> int:
        """Untie messages from a document, recording who and when; return how many."""
        doc = _document(code)
        async with self._connection("to detach the mail") as conn, conn.transaction():
            cur = await conn.execute(
                """WITH removed AS (
                       DELETE FROM xtbatch.emlassc
                        WHERE emlassc_eml_id = ANY(%(ids)s) AND emlassc_type = %(code)s
                          AND emlassc_assc_id = %(doc_id)s
                       RETURNING emlassc_eml_id)
                   INSERT INTO xtmail.assc_log (al_eml_id, al_type, al_assc_id, al_action)
                   SELECT DISTINCT emlassc_eml_id, %(code)s, %(doc_id)s, 'detach'
                     FROM removed""",
                {"code": doc.code, "doc_id": doc_id, "ids": list(eml_ids)},
            )
            return cur.rowcount
