"""SEPA Core direct debit: mandates, pain.008 batches, collections and returns.

- **Mandates** (:func:`create_mandate`): IBAN checked (ISO 13616: country length, mod 97), BIC
  format, UMR (at most 35 characters of the SEPA set, no space). An account has at most one
  active mandate: a new one revokes the old.
- **Batches** (:func:`create_sepa_batches`): the open invoices (EUR) of the accounts paying by
  ``sepa_debit`` with an active mandate, due on or before the collection date and in no pending or
  collected direct debit, become one pain.008.001.02 message per brand (the creditor), one
  ``PmtInf`` block per sequence type, checked against the XSD shipped by the ``sepaxml`` package.
  The amount is the invoice's open amount. A mandate's first collection is ``FRST``; once a
  ``FRST`` is in a batch, the mandate's next collections are ``RCUR`` (every invoice of one
  mandate in one batch shares the sequence type); a one-off (``OOFF``) mandate is used up by its
  collection and revoked.
- **Collection** (:func:`mark_collected`): the settled debits become payments (source ``sepa``,
  bank reference = EndToEndId) allocated to their invoices.
- **Returns** (:func:`import_sepa_returns`): pain.002 rejects (``TxSts`` RJCT, or a whole group or
  ``PmtInf`` rejected) and camt.053/camt.054 return entries (``RtrInf``), matched by end-to-end id:
  the debit is returned, its payment returned (the invoice reopens), a reject fee (setting
  ``sepa_reject_fee``, before VAT) is charged on the next invoice. Mandate rule: a reason saying
  the mandate or the account cannot be debited (:data:`MANDATE_ENDING_REASONS`: AC01 wrong
  account, AC04 closed, AC06 blocked, AG01 forbidden, MD01 no valid mandate, MD07 debtor
  deceased, SL01 debtor's bank service) revokes the mandate; any other reason (AM04 insufficient
  funds, MS02 refused by the debtor...) on a ``FRST`` debit, when nothing was ever collected under
  the mandate, puts it back to ``FRST``: the first collection did not happen. Importing the same
  file again changes nothing.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.resources
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa
from lxml import etree
from sqlalchemy.orm import Session

from bluerocktel.audit import record_audit
from bluerocktel.billing.payments import (local_date, open_amount_minor, operator_today, record_payment,
                                          return_payment)
from bluerocktel.db.models import (Account, Brand, DirectDebit, Invoice, OneOffCharge, Payment, SepaBatch,
                                   SepaMandate, utcnow)
from bluerocktel.documents.batch import write_file_atomically
from bluerocktel.errors import FormatError, NotFoundError, UserFacingError
from bluerocktel.money import D, MoneyError, from_minor
from bluerocktel.settings import get_setting
from bluerocktel.vocabulary import (ChargeKind, DirectDebitStatus, InvoiceKind, InvoiceStatus, MandateStatus,
                                    PaymentMethod, PaymentSource, PaymentStatus, SequenceType)
from bluerocktel.workbench import Workbench

PAIN008_NS = "urn:iso:std:iso:20022:tech:xsd:pain.008.001.02"
# ISO 13616 registry: IBAN length per country.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "BY": 28,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}
# Countries of the SEPA direct-debit scheme (EU, EEA, CH, GB, MC, SM, VA, AD).
SEPA_COUNTRIES = frozenset(
    "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK IS LI NO CH GB MC SM VA AD"
    .split())
MANDATE_ENDING_REASONS = frozenset({"AC01", "AC04", "AC06", "AG01", "MD01", "MD07", "SL01"})
_BIC = re.compile(r"^[A-Z]{4}[A-Z]{2}[A-Z0-9]{2}([A-Z0-9]{3})?$")
_SEPA_ID = re.compile(r"^[A-Za-z0-9/\-?:().,'+]{1,35}$")
_NOT_SEPA_TEXT = re.compile(r"[^A-Za-z0-9/\-?:().,'+ ]")
_REJECT_FEE_TEXT = {"fr": "Frais de rejet de prélèvement, facture {number} ({reason})",
                    "en": "Direct debit reject fee, invoice {number} ({reason})"}


def _mod97(text: str) -> int:
    return int("".join(str(int(c, 36)) for c in text)) % 97


def validate_iban(iban: str) -> str:
    """The IBAN without spaces, upper case; refused unless its length and check digits are right."""
    value = re.sub(r"\s+", "", iban or "").upper()
    if not re.fullmatch(r"[A-Z]{2}[0-9]{2}[A-Z0-9]+", value):
        raise UserFacingError(f"IBAN {iban!r}: expected 2 letters, 2 check digits, then letters and digits")
    expected = IBAN_LENGTHS.get(value[:2])
    if expected is None:
        raise UserFacingError(f"IBAN {iban!r}: no IBAN country {value[:2]!r}")
    if len(value) != expected:
        raise UserFacingError(f"IBAN {iban!r}: a {value[:2]} IBAN has {expected} characters, not {len(value)}")
    if _mod97(value[4:] + value[:4]) != 1:
        raise UserFacingError(f"IBAN {iban!r}: wrong check digits (ISO 13616 mod 97)")
    return value


def validate_bic(bic: str | None) -> str | None:
    """The BIC upper case (8 or 11 characters), or None when not given."""
    if bic is None or not bic.strip():
        return None
    value = bic.strip().upper()
    if not _BIC.match(value):
        raise UserFacingError(f"BIC {bic!r}: expected 4 letters (bank), 2 (country), 2 letters or digits "
                              f"(place) and an optional 3 (branch)")
    return value


def validate_sepa_id(value: str, what: str) -> str:
    """A SEPA identifier (UMR, message or end-to-end id): 1..35 characters of the SEPA set, no space,
    not starting or ending with ``/`` and without ``//``."""
    text = (value or "").strip()
    if not _SEPA_ID.match(text) or text.startswith("/") or text.endswith("/") or "//" in text:
        raise UserFacingError(f"{what} {value!r}: 1 to 35 characters among A-Z a-z 0-9 / - ? : ( ) . , ' + "
                              f"(no space, no leading, trailing or double '/')")
    return text


def validate_creditor_id(creditor_id: str) -> str:
    """A SEPA creditor identifier (ICS, e.g. ``FR72ZZZ123456``): country, check digits, business code, id."""
    value = re.sub(r"\s+", "", creditor_id or "").upper()
    if not re.fullmatch(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{3}[A-Z0-9]{1,28}", value):
        raise UserFacingError(f"SEPA creditor id {creditor_id!r}: expected country, 2 check digits, a 3-character "
                              f"business code and the national identifier (e.g. FR72ZZZ123456)")
    if _mod97(value[7:] + value[:2] + value[2:4]) != 1:
        raise UserFacingError(f"SEPA creditor id {creditor_id!r}: wrong check digits")
    return value


def create_mandate(session: Session, account_id: int, umr: str, signed_on: dt.date, iban: str, bic: str | None,
                   debtor_name: str, actor: str, *, one_off: bool = False) -> SepaMandate:
    """Record a signed mandate; the account's active mandate, if any, is revoked (replaced on ``signed_on``)."""
    account = session.get(Account, account_id)
    if account is None:
        raise NotFoundError(f"no account with id {account_id}")
    umr = validate_sepa_id(umr, "mandate reference (UMR)")
    iban = validate_iban(iban)
    if iban[:2] not in SEPA_COUNTRIES:
        raise UserFacingError(f"IBAN {iban}: {iban[:2]} is not in the SEPA direct-debit scheme")
    bic = validate_bic(bic)
    name = (debtor_name or "").strip()
    if not name or len(name) > 140:
        raise UserFacingError(f"mandate {umr}: the debtor name must have 1 to 140 characters")
    if session.scalar(sa.select(SepaMandate.id).where(SepaMandate.umr == umr)) is not None:
        raise UserFacingError(f"a mandate with reference {umr} exists already")
    for old in session.scalars(sa.select(SepaMandate).where(SepaMandate.account_id == account.id,
                                                            SepaMandate.status == MandateStatus.ACTIVE)):
        _revoke(session, old, signed_on, actor, reason=f"replaced by {umr}")
    mandate = SepaMandate(account_id=account.id, umr=umr, signed_on=signed_on, debtor_name=name, iban=iban, bic=bic,
                          sequence_type=SequenceType.OOFF if one_off else SequenceType.FRST,
                          status=MandateStatus.ACTIVE)
    session.add(mandate)
    session.flush()
    record_audit(session, actor, "sepa.mandate.create", "sepa_mandate", mandate.id, umr=umr,
                 account=account.number, iban=f"{iban[:4]}…{iban[-4:]}", one_off=one_off)
    return mandate


def revoke_mandate(session: Session, umr: str, revoked_on: dt.date, actor: str, reason: str = "revoked") -> SepaMandate:
    """Revoke the mandate ``umr``: no collection is made under it any more."""
    mandate = session.scalar(sa.select(SepaMandate).where(SepaMandate.umr == umr))
    if mandate is None:
        raise NotFoundError(f"no mandate with reference {umr!r}")
    if mandate.status != MandateStatus.ACTIVE:
        raise UserFacingError(f"mandate {umr} is revoked already (on {mandate.revoked_on})")
    _revoke(session, mandate, revoked_on, actor, reason)
    return mandate


def _revoke(session: Session, mandate: SepaMandate, on: dt.date, actor: str, reason: str) -> None:
    mandate.status, mandate.revoked_on = MandateStatus.REVOKED, on
    session.flush()
    record_audit(session, actor, "sepa.mandate.revoke", "sepa_mandate", mandate.id, umr=mandate.umr,
                 revoked_on=on.isoformat(), reason=reason)


# --- pain.008 batches -------------------------------------------------------------------------

@dataclass(frozen=True)
class _Debit:
    """One transaction of a batch being built."""

    direct_debit: DirectDebit
    invoice: Invoice
    account: Account
    mandate: SepaMandate


def create_sepa_batches(wb: Workbench, collection_date: dt.date, *, brand_code: str | None = None,
                        actor: str) -> list[SepaBatch]:
    """One pain.008 batch per brand with something to collect on ``collection_date`` (or only ``brand_code``).

    Each brand's batch is written in its own transaction; a brand that cannot collect (no creditor
    id...) does not stop the others, and the error raised at the end names what was written.
    """
    with wb.db.session() as s:
        query = sa.select(Brand.id).order_by(Brand.code)
        if brand_code:
            query = query.where(Brand.code == brand_code)
        brand_ids = list(s.scalars(query))
    if brand_code and not brand_ids:
        raise NotFoundError(f"no brand with code {brand_code!r}")
    batches, errors = [], []
    for brand_id in brand_ids:
        try:
            batches.append(_create_brand_batch(wb, brand_id, collection_date, actor))
        except UserFacingError as exc:
            errors.append(str(exc))
    batches = [b for b in batches if b is not None]
    if errors:
        written = ", ".join(b.message_id for b in batches) or "none"
        raise UserFacingError(f"{'; '.join(errors)} (batches written: {written})")
    return batches


def create_sepa_batch(wb: Workbench, collection_date: dt.date, *, brand_code: str | None = None,
                      actor: str) -> SepaBatch | None:
    """The pain.008 batch of one brand (``brand_code``, or the only brand) for ``collection_date``; None if
    nothing is to collect. With several brands, name one or use :func:`create_sepa_batches`."""
    if brand_code is None:
        with wb.db.session() as s:
            codes = list(s.scalars(sa.select(Brand.code)))
        if len(codes) > 1:
            raise UserFacingError(f"several brands ({', '.join(sorted(codes))}): name the brand to collect for")
    batches = create_sepa_batches(wb, collection_date, brand_code=brand_code, actor=actor)
    return batches[0] if batches else None


def batch_summary(batch: SepaBatch) -> dict:
    return {"id": batch.id, "message_id": batch.message_id, "collection_date": batch.collection_date.isoformat(),
            "transactions": batch.transactions, "total_minor": batch.total_minor, "file": batch.file_path}


def create_due_batches(wb: Workbench, *, collection_date: dt.date | str | None = None, days_ahead: int = 2,
                       brand: str | None = None, actor: str = "scheduler") -> dict:
    """The scheduler's ``sepa_batch`` job: every brand's batch (or ``brand``'s) for ``collection_date``,
    by default ``days_ahead`` days from today (a CORE file goes to the bank before its date)."""
    if isinstance(collection_date, str):
        collection_date = dt.date.fromisoformat(collection_date)
    collection_date = collection_date or operator_today() + dt.timedelta(days=int(days_ahead))
    batches = create_sepa_batches(wb, collection_date, brand_code=brand, actor=actor)
    return {"collection_date": collection_date.isoformat(), "batches": [batch_summary(b) for b in batches]}


def _lock_brand(session: Session, brand_id: int) -> Brand:
    """Serialize batch building per brand (row lock on PostgreSQL, the write lock on SQLite)."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(sa.text("UPDATE brands SET id = id WHERE id = :id"), {"id": brand_id})
        return session.get(Brand, brand_id, populate_existing=True)
    return session.get(Brand, brand_id, with_for_update=True, populate_existing=True)


def _collectable(session: Session, brand_id: int, collection_date: dt.date):
    """``(invoice, account, mandate)`` due for collection, by account then due date."""
    in_debit = sa.exists().where(DirectDebit.invoice_id == Invoice.id,
                                 DirectDebit.status.in_([DirectDebitStatus.PENDING, DirectDebitStatus.COLLECTED]))
    return session.execute(
        sa.select(Invoice, Account, SepaMandate)
        .join(Account, Account.id == Invoice.account_id)
        .join(SepaMandate, sa.and_(SepaMandate.account_id == Account.id, SepaMandate.status == MandateStatus.ACTIVE,
                                   SepaMandate.signed_on <= collection_date))
        .where(Invoice.brand_id == brand_id, Invoice.kind == InvoiceKind.INVOICE, Invoice.currency == "EUR",
               Invoice.status.not_in([InvoiceStatus.PAID, InvoiceStatus.CREDITED, InvoiceStatus.DISPUTED]),
               Invoice.due_date <= collection_date, Account.payment_method == PaymentMethod.SEPA_DEBIT, ~in_debit)
        .order_by(Account.number, Invoice.due_date, Invoice.id)).all()


def _check_creditor(brand: Brand) -> None:
    missing = [label for label, value in (("SEPA creditor id", brand.sepa_creditor_id), ("IBAN", brand.iban),
                                          ("legal name", brand.legal_name)) if not value]
    if missing:
        raise UserFacingError(f"brand {brand.code} cannot collect direct debits: no {', no '.join(missing)}")
    validate_creditor_id(brand.sepa_creditor_id)
    validate_iban(brand.iban)
    validate_bic(brand.bic)


def _create_brand_batch(wb: Workbench, brand_id: int, collection_date: dt.date, actor: str) -> SepaBatch | None:
    with wb.db.transaction() as s:
        brand = _lock_brand(s, brand_id)
        rows = [(invoice, account, mandate, open_amount_minor(s, invoice.id))
                for invoice, account, mandate in _collectable(s, brand_id, collection_date)]
        rows = [row for row in rows if row[3] > 0]
        if not rows:
            return None
        _check_creditor(brand)
        same_day = s.scalar(sa.select(sa.func.count()).select_from(SepaBatch).where(
            SepaBatch.brand_id == brand_id, SepaBatch.collection_date == collection_date))
        code = re.sub(r"[^A-Za-z0-9]", "", brand.code)[:12] or "B"
        message_id = f"{code}-{collection_date:%Y%m%d}-{same_day + 1:03d}"
        batch = SepaBatch(brand_id=brand_id, message_id=message_id, collection_date=collection_date,
                          created_by=actor)
        s.add(batch)
        s.flush()
        debits = []
        for n, (invoice, account, mandate, amount) in enumerate(rows, 1):
            dd = DirectDebit(batch_id=batch.id, invoice_id=invoice.id, mandate_id=mandate.id,
                             end_to_end_id=f"{message_id}-{n:05d}", amount_minor=amount,
                             sequence_type=mandate.sequence_type, status=DirectDebitStatus.PENDING)
            s.add(dd)
            debits.append(_Debit(dd, invoice, account, mandate))
        batch.transactions = len(debits)
        batch.total_minor = sum(d.direct_debit.amount_minor for d in debits)
        xml = pain008_xml(brand, batch, debits)
        errors = validate_pain008(xml)
        if errors:
            raise UserFacingError(f"pain.008 of brand {brand.code} is not valid: {'; '.join(errors[:5])}")
        path = wb.data_dir / "sepa" / f"{message_id}.xml"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomically(path, xml)
        batch.file_path = path.relative_to(wb.data_dir).as_posix()
        for mandate in {d.mandate.id: d.mandate for d in debits}.values():
            if mandate.sequence_type == SequenceType.FRST:
                mandate.sequence_type = SequenceType.RCUR
            elif mandate.sequence_type == SequenceType.OOFF:
                _revoke(s, mandate, collection_date, actor, reason=f"one-off mandate used by batch {message_id}")
        record_audit(s, actor, "sepa.batch", "sepa_batch", batch.id, message_id=message_id, brand=brand.code,
                     collection_date=collection_date.isoformat(), transactions=batch.transactions,
                     total_minor=batch.total_minor)
        return batch


def _sepa_text(text: str, limit: int) -> str:
    """``text`` in the SEPA Latin character set (accents dropped, ``&`` as ``+``), at most ``limit`` long."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", text or "") if not unicodedata.combining(c))
    plain = _NOT_SEPA_TEXT.sub(" ", plain.replace("&", "+"))
    return " ".join(plain.split())[:limit].strip() or "-"


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs) -> etree._Element:
    element = etree.SubElement(parent, f"{{{PAIN008_NS}}}{tag}", **attrs)
    if text is not None:
        element.text = text
    return element


def _path(parent: etree._Element, tags: str, text: str | None = None) -> etree._Element:
    """Nested elements ``A/B/C`` under ``parent``; ``text`` goes in the last."""
    for tag in tags.split("/"):
        parent = _sub(parent, tag)
    if text is not None:
        parent.text = text
    return parent


def _agent(parent: etree._Element, tag: str, bic: str | None) -> None:
    institution = _path(parent, f"{tag}/FinInstnId")
    if bic:
        _sub(institution, "BIC", bic)
    else:
        _path(institution, "Othr/Id", "NOTPROVIDED")


def _amount(minor: int) -> str:
    return str(from_minor(minor, "EUR"))


def pmt_inf_id(message_id: str, sequence_type: str) -> str:
    """The ``PmtInfId`` of a batch's block of one sequence type (rejects may name a whole block)."""
    return f"{message_id}-{sequence_type}"


def pain008_xml(brand: Brand, batch: SepaBatch, debits: list[_Debit]) -> bytes:
    """The pain.008.001.02 message of ``batch``: one ``PmtInf`` per sequence type, in FRST, RCUR, OOFF order."""
    root = etree.Element(f"{{{PAIN008_NS}}}Document", nsmap={None: PAIN008_NS})
    initiation = _sub(root, "CstmrDrctDbtInitn")
    header = _sub(initiation, "GrpHdr")
    _sub(header, "MsgId", batch.message_id)
    _sub(header, "CreDtTm", utcnow().strftime("%Y-%m-%dT%H:%M:%S"))
    _sub(header, "NbOfTxs", str(len(debits)))
    _sub(header, "CtrlSum", _amount(sum(d.direct_debit.amount_minor for d in debits)))
    _path(header, "InitgPty/Nm", _sepa_text(brand.legal_name, 70))
    for sequence_type in (SequenceType.FRST, SequenceType.RCUR, SequenceType.OOFF):
        block = [d for d in debits if d.direct_debit.sequence_type == sequence_type]
        if block:
            _payment_information(initiation, brand, batch, sequence_type, block)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _payment_information(parent, brand: Brand, batch: SepaBatch, sequence_type: str, block: list[_Debit]) -> None:
    info = _sub(parent, "PmtInf")
    _sub(info, "PmtInfId", pmt_inf_id(batch.message_id, sequence_type))
    _sub(info, "PmtMtd", "DD")
    _sub(info, "NbOfTxs", str(len(block)))
    _sub(info, "CtrlSum", _amount(sum(d.direct_debit.amount_minor for d in block)))
    kind = _sub(info, "PmtTpInf")
    _path(kind, "SvcLvl/Cd", "SEPA")
    _path(kind, "LclInstrm/Cd", "CORE")
    _sub(kind, "SeqTp", sequence_type)
    _sub(info, "ReqdColltnDt", batch.collection_date.isoformat())
    creditor = _sub(info, "Cdtr")
    _sub(creditor, "Nm", _sepa_text(brand.legal_name, 70))
    _path(creditor, "PstlAdr/Ctry", brand.country or "FR")
    _path(info, "CdtrAcct/Id/IBAN", validate_iban(brand.iban))
    _agent(info, "CdtrAgt", validate_bic(brand.bic))
    _sub(info, "ChrgBr", "SLEV")
    scheme = _path(info, "CdtrSchmeId/Id/PrvtId/Othr")
    _sub(scheme, "Id", validate_creditor_id(brand.sepa_creditor_id))
    _path(scheme, "SchmeNm/Prtry", "SEPA")
    for debit in block:
        dd, mandate = debit.direct_debit, debit.mandate
        tx = _sub(info, "DrctDbtTxInf")
        _path(tx, "PmtId/EndToEndId", dd.end_to_end_id)
        _sub(tx, "InstdAmt", _amount(dd.amount_minor), Ccy="EUR")
        related = _path(tx, "DrctDbtTx/MndtRltdInf")
        _sub(related, "MndtId", mandate.umr)
        _sub(related, "DtOfSgntr", mandate.signed_on.isoformat())
        _agent(tx, "DbtrAgt", mandate.bic)
        debtor = _sub(tx, "Dbtr")
        _sub(debtor, "Nm", _sepa_text(mandate.debtor_name, 70))
        _path(debtor, "PstlAdr/Ctry", debit.account.country or mandate.iban[:2])
        _path(tx, "DbtrAcct/Id/IBAN", mandate.iban)
        _path(tx, "RmtInf/Ustrd", _sepa_text(debit.invoice.number, 140))


@functools.lru_cache(maxsize=1)
def _pain008_schema() -> etree.XMLSchema:
    """The pain.008.001.02 XSD, as shipped by the ``sepaxml`` package."""
    xsd = importlib.resources.files("sepaxml") / "schemas" / "pain.008.001.02.xsd"
    with importlib.resources.as_file(xsd) as path:
        return etree.XMLSchema(etree.parse(str(path)))


def validate_pain008(xml: bytes) -> list[str]:
    """XSD errors of a pain.008.001.02 message (empty: valid)."""
    schema = _pain008_schema()
    if schema.validate(etree.fromstring(xml, _safe_parser())):
        return []
    return [f"line {e.line}: {e.message}" for e in schema.error_log]


def mark_collected(wb: Workbench, batch_id: int, settlement_date: dt.date, *, actor: str) -> dict:
    """Record the pending debits of a batch as settled: one payment each (source ``sepa``), allocated to
    its invoice. Debits rejected meanwhile are left out; calling it again collects nothing more."""
    received_at = dt.datetime.combine(settlement_date, dt.time(), dt.timezone.utc)
    with wb.db.transaction() as s:
        batch = s.get(SepaBatch, batch_id)
        if batch is None:
            raise NotFoundError(f"no SEPA batch {batch_id}")
        pending = s.scalars(sa.select(DirectDebit).where(DirectDebit.batch_id == batch_id,
                                                         DirectDebit.status == DirectDebitStatus.PENDING)
                            .order_by(DirectDebit.id)).all()
        for dd in pending:
            invoice = s.get(Invoice, dd.invoice_id)
            payment = record_payment(s, invoice.account_id, dd.amount_minor, method=PaymentMethod.SEPA_DEBIT,
                                     reference=invoice.number, received_at=received_at, source=PaymentSource.SEPA,
                                     bank_reference=dd.end_to_end_id, actor=actor, invoice_id=invoice.id)
            dd.status, dd.payment_id = DirectDebitStatus.COLLECTED, payment.id
            s.get(SepaMandate, dd.mandate_id).last_collected_on = settlement_date
        if pending:
            batch.status = "collected"
            record_audit(s, actor, "sepa.collected", "sepa_batch", batch.id, message_id=batch.message_id,
                         settlement_date=settlement_date.isoformat(), transactions=len(pending),
                         total_minor=sum(dd.amount_minor for dd in pending))
        return {"batch": batch.message_id, "collected": len(pending),
                "total_minor": sum(dd.amount_minor for dd in pending)}


# --- returns and rejects ----------------------------------------------------------------------

@dataclass(frozen=True)
class SepaReturn:
    """One debit the bank did not collect, or took back: its end-to-end id, ISO reason code and when."""

    end_to_end_id: str
    reason: str
    at: dt.datetime


def _safe_parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def _parse_datetime(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    value = dt.datetime.fromisoformat(text.strip())
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value


def _reason(element: etree._Element | None) -> str:
    code = element.findtext("StsRsnInf/Rsn/Cd") if element is not None else None
    return (code or "NOTGIVEN").strip()[:8]


def parse_sepa_returns(data: bytes) -> tuple[list[SepaReturn], list[tuple[str, str | None, SepaReturn]]]:
    """The returns in a pain.002, camt.053 or camt.054 file.

    Returns ``(transactions, blocks)``: debits named by end-to-end id, and whole rejected
    messages or blocks as ``(original message id, PmtInfId or None, reject)`` (no end-to-end id).
    """
    try:
        root = etree.fromstring(data, _safe_parser())
    except etree.XMLSyntaxError as exc:
        raise FormatError(f"SEPA return file: not XML ({exc})") from None
    namespace = etree.QName(root).namespace or ""
    for element in root.iter(etree.Element):
        element.tag = etree.QName(element).localname
    if "pain.002" in namespace:
        return _pain002_returns(root)
    if "camt.053" in namespace or "camt.054" in namespace:
        return _camt_returns(root), []
    raise FormatError(f"SEPA return file: expected pain.002, camt.053 or camt.054, got namespace {namespace!r}")


def _pain002_returns(root) -> tuple[list[SepaReturn], list[tuple[str, str | None, SepaReturn]]]:
    report = root.find("CstmrPmtStsRpt")
    if report is None:
        raise FormatError("pain.002: no CstmrPmtStsRpt")
    at = _parse_datetime(report.findtext("GrpHdr/CreDtTm")) or utcnow()
    group = report.find("OrgnlGrpInfAndSts")
    message_id = (group.findtext("OrgnlMsgId") or "").strip() if group is not None else ""
    blocks, transactions = [], []
    if group is not None and group.findtext("GrpSts") == "RJCT":
        blocks.append((message_id, None, SepaReturn("", _reason(group), at)))
    for info in report.findall("OrgnlPmtInfAndSts"):
        if info.findtext("PmtInfSts") == "RJCT":
            blocks.append((message_id, (info.findtext("OrgnlPmtInfId") or "").strip(),
                           SepaReturn("", _reason(info), at)))
        for tx in info.findall("TxInfAndSts"):
            if tx.findtext("TxSts") == "RJCT":
                transactions.append(SepaReturn((tx.findtext("OrgnlEndToEndId") or "").strip(), _reason(tx), at))
    return transactions, blocks


def _camt_returns(root) -> list[SepaReturn]:
    returns = []
    for entry in root.iter("Ntry"):
        at = (_parse_datetime(entry.findtext("BookgDt/DtTm")) or _parse_datetime(entry.findtext("BookgDt/Dt"))
              or _parse_datetime(entry.findtext("ValDt/Dt")) or utcnow())
        for tx in entry.iter("TxDtls"):
            info = tx.find("RtrInf")
            if info is None:
                continue
            original = tx.find(".//OrgnlEndToEndId")
            e2e = original.text if original is not None else tx.findtext("Refs/EndToEndId")
            code = (info.findtext("Rsn/Cd") or "NOTGIVEN").strip()[:8]
            returns.append(SepaReturn((e2e or "").strip(), code, at))
    return returns


def import_sepa_returns(wb: Workbench, path_or_bytes: str | Path | bytes, *, actor: str) -> dict:
    """Apply the rejects and returns of a pain.002 / camt.053 / camt.054 file (each debit once).

    Returns ``{"returned": [end-to-end ids], "already_returned": [...], "unknown": [...]}``.
    """
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    transactions, blocks = parse_sepa_returns(data)
    with wb.db.session() as s:
        for message_id, block_id, reject in blocks:
            query = (sa.select(DirectDebit.end_to_end_id, DirectDebit.sequence_type).join(SepaBatch)
                     .where(SepaBatch.message_id == message_id).order_by(DirectDebit.id))
            transactions += [SepaReturn(e2e, reject.reason, reject.at) for e2e, seq in s.execute(query)
                             if block_id is None or pmt_inf_id(message_id, seq) == block_id]
    result: dict[str, list[str]] = {"returned": [], "already_returned": [], "unknown": []}
    for item in transactions:
        outcome = _apply_return(wb, item, actor)
        if item.end_to_end_id not in result[outcome]:
            result[outcome].append(item.end_to_end_id)
    return result


def _reject_fee() -> Decimal:
    text = get_setting("sepa_reject_fee")
    try:
        fee = D(text)
    except MoneyError:
        raise UserFacingError(f"setting sepa_reject_fee: {text!r} is not an amount such as 7.50") from None
    if fee < 0:
        raise UserFacingError(f"setting sepa_reject_fee: {text!r} is negative")
    return fee


def _apply_return(wb: Workbench, item: SepaReturn, actor: str) -> str:
    with wb.db.transaction() as s:
        dd = s.scalar(sa.select(DirectDebit).where(DirectDebit.end_to_end_id == item.end_to_end_id))
        if dd is None:
            return "unknown"
        invoice = s.get(Invoice, dd.invoice_id)
        account = s.get(Account, invoice.account_id)
        if dd.status == DirectDebitStatus.RETURNED:
            return "already_returned"
        if dd.payment_id is not None and s.get(Payment, dd.payment_id).status != PaymentStatus.RETURNED:
            return_payment(s, dd.payment_id, f"SEPA return {item.reason}", actor, returned_at=item.at)
        dd.status, dd.return_reason, dd.returned_at = DirectDebitStatus.RETURNED, item.reason, item.at
        fee = _reject_fee()
        if fee > 0:
            text = _REJECT_FEE_TEXT.get(account.language, _REJECT_FEE_TEXT["fr"])
            charge = OneOffCharge(account_id=account.id, kind=ChargeKind.FEE, quantity=Decimal(1), unit_price=fee,
                                  description=text.format(number=invoice.number, reason=item.reason),
                                  charge_date=local_date(item.at), created_by=actor)
            s.add(charge)
            s.flush()
            dd.fee_charge_id = charge.id
        _after_return(s, dd, item, actor)
        record_audit(s, actor, "sepa.return", "direct_debit", dd.id, end_to_end_id=dd.end_to_end_id,
                     invoice=invoice.number, reason=item.reason, amount_minor=dd.amount_minor,
                     fee=str(fee), collected_before=dd.payment_id is not None)
        return "returned"


def _after_return(session: Session, dd: DirectDebit, item: SepaReturn, actor: str) -> None:
    """The mandate rule of the module docstring: revoke it, or make the next collection a first one."""
    mandate = session.get(SepaMandate, dd.mandate_id)
    if mandate.status != MandateStatus.ACTIVE:
        return
    if item.reason in MANDATE_ENDING_REASONS:
        _revoke(session, mandate, local_date(item.at), actor, reason=f"direct debit returned: {item.reason}")
        return
    collected = session.scalar(sa.select(sa.func.count()).select_from(DirectDebit).where(
        DirectDebit.mandate_id == mandate.id, DirectDebit.status == DirectDebitStatus.COLLECTED))
    if dd.sequence_type == SequenceType.FRST and not collected:
        mandate.sequence_type = SequenceType.FRST
