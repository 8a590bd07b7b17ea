"""The document registry: the 14 xTuple document types that mail can be tied to.

Everything that needs to know about a document type (references, association, the Email
tab, the demo) reads this module; nothing else lists document types.

Not every xTuple database has every table: PostBooks has no transfer orders (``tohead``) or
return authorizations (``rahead``); the commercial editions add them. xtmail never creates
such a table (the commercial install would then fail on it); a type whose table is absent is
unavailable there (:func:`available`), and references to it name no document.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DocumentType:
    """One supported document type.

    ``code`` is the ``emlassc_type`` value and the code in ``[xtref:CODE-NUMBER]``.
    ``number_column`` is the number a person sees; ``None`` means the key itself (To-Do).
    ``contact_columns`` are columns of ``table`` holding cntct ids.
    ``shows_contact_mail``: the Email tab also lists mail of the document's contacts.
    ``edition_only``: only some xTuple editions have the table (not PostBooks); every other
    type's table is part of every xTuple database.
    """

    code: str
    label: str
    table: str
    key: str
    number_column: str | None
    contact_columns: tuple[str, ...]
    number_is_integer: bool = False
    shows_contact_mail: bool = False
    edition_only: bool = False


CONTACT = DocumentType("T", "Contact", "cntct", "cntct_id", "cntct_number", ("cntct_id",))
CRM_ACCOUNT = DocumentType(
    "CRMA", "CRM Account", "crmacct", "crmacct_id", "crmacct_number",
    ("crmacct_cntct_id_1", "crmacct_cntct_id_2"), shows_contact_mail=True,
)
CUSTOMER = DocumentType(
    "C", "Customer", "custinfo", "cust_id", "cust_number",
    ("cust_cntct_id", "cust_corrcntct_id"), shows_contact_mail=True,
)
VENDOR = DocumentType(
    "V", "Vendor", "vendinfo", "vend_id", "vend_number",
    ("vend_cntct1_id", "vend_cntct2_id"), shows_contact_mail=True,
)
EMPLOYEE = DocumentType(
    "EMP", "Employee", "emp", "emp_id", "emp_code", ("emp_cntct_id",), shows_contact_mail=True,
)
OPPORTUNITY = DocumentType(
    "OPP", "Opportunity", "ophead", "ophead_id", "ophead_number", ("ophead_cntct_id",),
)
PROJECT = DocumentType("J", "Project", "prj", "prj_id", "prj_number", ("prj_cntct_id",))
QUOTE = DocumentType(
    "Q", "Quote", "quhead", "quhead_id", "quhead_number",
    ("quhead_billto_cntct_id", "quhead_shipto_cntct_id"),
)
SALES_ORDER = DocumentType(
    "S", "Sales Order", "cohead", "cohead_id", "cohead_number",
    ("cohead_billto_cntct_id", "cohead_shipto_cntct_id"),
)
TRANSFER_ORDER = DocumentType(
    "TO", "Transfer Order", "tohead", "tohead_id", "tohead_number",
    ("tohead_srccntct_id", "tohead_destcntct_id"), edition_only=True,
)
PURCHASE_ORDER = DocumentType(
    "P", "Purchase Order", "pohead", "pohead_id", "pohead_number",
    ("pohead_vend_cntct_id", "pohead_shipto_cntct_id"),
)
# Return authorizations carry no contact column: their contacts are the customer's.
RETURN_AUTHORIZATION = DocumentType(
    "RA", "Return Authorization", "rahead", "rahead_id", "rahead_number", (), edition_only=True,
)
TODO_ITEM = DocumentType(
    "TD", "To-Do Item", "todoitem", "todoitem_id", None, ("todoitem_cntct_id",),
    number_is_integer=True,
)
INCIDENT = DocumentType(
    "INCDT", "Incident", "incdt", "incdt_id", "incdt_number", ("incdt_cntct_id",),
    number_is_integer=True,
)

DOCUMENT_TYPES: tuple[DocumentType, ...] = (
    CONTACT, CRM_ACCOUNT, CUSTOMER, VENDOR, EMPLOYEE, OPPORTUNITY, PROJECT, QUOTE,
    SALES_ORDER, TRANSFER_ORDER, PURCHASE_ORDER, RETURN_AUTHORIZATION, TODO_ITEM, INCIDENT,
)

_BY_CODE = {doc.code: doc for doc in DOCUMENT_TYPES}


def by_code(code: str) -> DocumentType:
    """The document type for an ``emlassc_type`` / reference code (case-insensitive).

    Raises ``KeyError`` for an unknown code.
    """
    return _BY_CODE[code.upper()]


def find(code: str) -> DocumentType | None:
    """Like :func:`by_code`, but ``None`` for an unknown code."""
    return _BY_CODE.get(code.upper())


def available(present_tables: Collection[str]) -> tuple[DocumentType, ...]:
    """The document types whose table is among ``present_tables`` (the database's tables)."""
    return tuple(doc for doc in DOCUMENT_TYPES if doc.table in present_tables)
