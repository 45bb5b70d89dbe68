"""Bank statement import: ISO 20022 camt.053 (versions .001.02 to .001.08) to payments.

Each booked credit entry (``CdtDbtInd`` CRDT, status BOOK) becomes a payment of source
``camt053`` whose ``bank_reference`` is the bank's ``AcctSvcrRef`` (else ``NtryRef``, else the
``EndToEndId``, else statement id + entry position), so importing a statement twice records
nothing new. An entry carrying several transactions with their own amounts (a batch) gives one
payment per transaction.

Matching, first that applies:

1. **invoice** — an invoice number found in the remittance information (``RmtInf/Ustrd``,
   ``RmtInf/Strd/CdtrRefInf/Ref``), whatever its spaces, dashes or case: ``fa 2026 000123``
   and ``FA2026000123`` both name ``FA-2026-000123``; the payment settles those invoices;
2. **iban** — the debtor's IBAN is the IBAN of one account's SEPA mandate;
3. **name** — the debtor's name is the name of exactly one account (case and spaces aside);

then the payment is allocated like a manual one. Anything else is returned as *unmatched* with
its reference, amount and text, never dropped. Debit entries and entries not booked are counted
and ignored. A malformed file is refused as a whole, naming the element and its line; nothing
is written.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from lxml import etree

from bluerocktel.audit import record_audit
from bluerocktel.billing.payments import parse_amount_minor, record_payment
from bluerocktel.db.models import Account, Invoice, Payment, SepaMandate
from bluerocktel.errors import FormatError, UserFacingError
from bluerocktel.settings import get_setting
from bluerocktel.vocabulary import InvoiceKind, PaymentSource
from bluerocktel.workbench import Workbench

NAMESPACE = re.compile(r"urn:iso:std:iso:20022:tech:xsd:camt\.053\.001\.0([2-8])$")
MAX_NUMBER_PARTS = 6      # an invoice number may be split in up to this many words in a remittance text


@dataclass(frozen=True)
class CamtEntry:
    """One credit or debit of a statement (or one transaction of a batch entry)."""

    reference: str             # the bank reference that makes the import idempotent
    amount_minor: int
    currency: str
    credit: bool
    booked: bool
    booked_on: dt.date | None
    text: str                  # remittance information
    debtor_name: str | None
    debtor_iban: str | None
    line: int                  # line of the entry in the file


def _fail(name: str, element, message: str):
    raise FormatError(f"{name}, line {element.sourceline}: {message}")


def _text(element, path: str) -> str | None:
    found = element.find(path)
    return found.text.strip() if found is not None and found.text and found.text.strip() else None


def _amount(name: str, element, currency_hint: str | None = None) -> tuple[int, str]:
    """``(minor, currency)`` of an ``Amt`` element: a positive amount in whole minor units."""
    currency = element.get("Ccy") or currency_hint
    if not currency:
        _fail(name, element, "<Amt> has no Ccy attribute")
    try:
        return parse_amount_minor(element.text or "", currency, "<Amt>"), currency
    except UserFacingError as exc:
        _fail(name, element, str(exc))


def _date(name: str, entry) -> dt.date | None:
    for path in ("{*}BookgDt/{*}Dt", "{*}BookgDt/{*}DtTm", "{*}ValDt/{*}Dt", "{*}ValDt/{*}DtTm"):
        text = _text(entry, path)
        if text:
            try:
                return dt.date.fromisoformat(text[:10])
            except ValueError:
                _fail(name, entry.find(path), f"<{path.rsplit('}', 1)[-1]}> is not a date: {text!r}")
    return None


def _remittance(node) -> str:
    parts = [e.text.strip() for e in node.iterfind(".//{*}RmtInf/{*}Ustrd") if e.text and e.text.strip()]
    parts += [e.text.strip() for e in node.iterfind(".//{*}RmtInf/{*}Strd/{*}CdtrRefInf/{*}Ref")
              if e.text and e.text.strip()]
    return " ".join(parts)


def _debtor(node) -> tuple[str | None, str | None]:
    name = _text(node, ".//{*}RltdPties/{*}Dbtr/{*}Nm") or _text(node, ".//{*}RltdPties/{*}Dbtr/{*}Pty/{*}Nm")
    iban = _text(node, ".//{*}RltdPties/{*}DbtrAcct/{*}Id/{*}IBAN")
    return name, re.sub(r"\s", "", iban).upper() if iban else None


def _entry_reference(entry, tx, fallback: str) -> str:
    end_to_end = _text(tx, "{*}Refs/{*}EndToEndId") if tx is not None else None
    if end_to_end == "NOTPROVIDED":
        end_to_end = None
    tx_ref = _text(tx, "{*}Refs/{*}AcctSvcrRef") if tx is not None else None
    return tx_ref or _text(entry, "{*}AcctSvcrRef") or _text(entry, "{*}NtryRef") or end_to_end or fallback


def _parse_entry(name: str, statement_id: str, position: int, entry) -> list[CamtEntry]:
    amount_element = entry.find("{*}Amt")
    if amount_element is None:
        _fail(name, entry, "<Ntry> has no <Amt>")
    amount, currency = _amount(name, amount_element)
    indicator = _text(entry, "{*}CdtDbtInd")
    if indicator not in ("CRDT", "DBIT"):
        _fail(name, entry, f"<Ntry> <CdtDbtInd> must be CRDT or DBIT, got {indicator!r}")
    status = _text(entry, "{*}Sts/{*}Cd") or _text(entry, "{*}Sts")
    if status is None:
        _fail(name, entry, "<Ntry> has no <Sts>")
    common = {"credit": indicator == "CRDT", "booked": status == "BOOK", "booked_on": _date(name, entry)}
    if common["booked"] and common["booked_on"] is None:
        _fail(name, entry, "booked <Ntry> has no <BookgDt>")
    transactions = entry.findall("{*}NtryDtls/{*}TxDtls")
    tx_amounts = [tx.find("{*}AmtDtls/{*}TxAmt/{*}Amt") for tx in transactions]
    tx_amounts = [a if a is not None else tx.find("{*}Amt") for a, tx in zip(tx_amounts, transactions)]
    if len(transactions) > 1 and all(a is not None for a in tx_amounts):
        parts = [(tx, *_amount(name, a, currency)) for tx, a in zip(transactions, tx_amounts)]
        if sum(minor for _, minor, _ in parts) != amount:
            _fail(name, entry, f"the transactions of <Ntry> sum to {sum(m for _, m, _ in parts)}, not {amount}")
    else:
        parts = [(transactions[0] if len(transactions) == 1 else None, amount, currency)]
    entries = []
    for k, (tx, minor, tx_currency) in enumerate(parts, 1):
        node = tx if tx is not None else entry
        debtor_name, debtor_iban = _debtor(node)
        fallback = f"{statement_id}#{position}" + (f".{k}" if len(parts) > 1 else "")
        entries.append(CamtEntry(
            reference=_entry_reference(entry, tx, fallback)[:100], amount_minor=minor, currency=tx_currency,
            text=" ".join(filter(None, [_remittance(node), _text(entry, "{*}AddtlNtryInf")])),
            debtor_name=debtor_name, debtor_iban=debtor_iban, line=(tx if tx is not None else entry).sourceline,
            **common))
    return entries


def parse_camt053(data: bytes, name: str = "statement") -> tuple[list[str], list[CamtEntry]]:
    """Statement ids and entries of a camt.053 document; a malformed document raises :class:`FormatError`."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise FormatError(f"{name}: not well-formed XML at line {exc.lineno}: {exc.msg}") from None
    namespace = etree.QName(root).namespace or ""
    if etree.QName(root).localname != "Document" or not NAMESPACE.match(namespace):
        raise FormatError(f"{name}, line {root.sourceline}: not a camt.053.001.02-08 statement "
                          f"(root <{etree.QName(root).localname}> in namespace {namespace!r})")
    statements = root.findall("{*}BkToCstmrStmt/{*}Stmt")
    if not statements:
        raise FormatError(f"{name}: no <BkToCstmrStmt>/<Stmt> in the document")
    ids, entries = [], []
    for statement in statements:
        statement_id = _text(statement, "{*}Id")
        if statement_id is None:
            _fail(name, statement, "<Stmt> has no <Id>")
        ids.append(statement_id)
        for position, entry in enumerate(statement.iterfind("{*}Ntry"), 1):
            entries.extend(_parse_entry(name, statement_id, position, entry))
    return ids, entries


def _squash(text: str) -> str:
    """Letters and digits only, upper case: how invoice numbers are compared."""
    return re.sub(r"[^0-9A-Z]", "", text.upper())


class _Matcher:
    """The accounts and invoices a statement is matched against, loaded once."""

    def __init__(self, session):
        self.invoices = {_squash(number): (invoice_id, account_id, number) for invoice_id, account_id, number in
                         session.execute(sa.select(Invoice.id, Invoice.account_id, Invoice.number)
                                         .where(Invoice.kind == InvoiceKind.INVOICE))}
        self.ibans: dict[str, set[int]] = {}
        for account_id, iban in session.execute(sa.select(SepaMandate.account_id, SepaMandate.iban)):
            self.ibans.setdefault(re.sub(r"\s", "", iban).upper(), set()).add(account_id)
        self.names: dict[str, set[int]] = {}
        for account_id, account_name in session.execute(sa.select(Account.id, Account.name)):
            self.names.setdefault(" ".join(account_name.lower().split()), set()).add(account_id)

    def invoice_numbers(self, text: str) -> list[tuple[int, int, str]]:
        """Invoices named in ``text`` (in order), each number possibly split over several words."""
        words = re.findall(r"[0-9A-Za-z]+", text.upper())
        found = []
        for i in range(len(words)):
            for j in range(i + 1, min(i + MAX_NUMBER_PARTS, len(words)) + 1):
                match = self.invoices.get("".join(words[i:j]))
                if match and match not in found:
                    found.append(match)
        return found

    def match(self, entry: CamtEntry) -> tuple[int | None, list[int], list[str], str]:
        """``(account_id, invoice ids, invoice numbers, how)``; ``account_id`` None with the reason in ``how``."""
        invoices = self.invoice_numbers(entry.text)
        accounts = {account_id for _, account_id, _ in invoices}
        if len(accounts) == 1:
            return accounts.pop(), [i for i, _, _ in invoices], [n for _, _, n in invoices], "invoice"
        if len(accounts) > 1:
            return None, [], [], "the text names invoices of several accounts"
        for how, candidates in (("iban", self.ibans.get(entry.debtor_iban or "", set())),
                                ("name", self.names.get(" ".join((entry.debtor_name or "").lower().split()), set()))):
            if len(candidates) == 1:
                return next(iter(candidates)), [], [], how
        return None, [], [], "no invoice number, mandate IBAN or account name matches"


def _received_at(day: dt.date) -> dt.datetime:
    """Midnight of the booking day in the operator's time zone, as UTC."""
    local = dt.datetime.combine(day, dt.time(0), tzinfo=ZoneInfo(get_setting("default_timezone")))
    return local.astimezone(dt.timezone.utc)


def import_camt053(wb: Workbench, path_or_bytes: str | os.PathLike | bytes, actor: str) -> dict:
    """Record the booked credits of a camt.053 statement as payments (one transaction); a summary.

    The summary lists what was ``recorded`` (with how it matched), the ``duplicates`` (bank
    references seen before) and what stayed ``unmatched``; debits and unbooked entries are counted.
    """
    if isinstance(path_or_bytes, bytes):
        data, name = path_or_bytes, "statement"
    else:
        path = Path(path_or_bytes)
        data, name = path.read_bytes(), path.name
    statement_ids, entries = parse_camt053(data, name)
    credits = [e for e in entries if e.credit and e.booked]
    summary = {"file": name, "statements": statement_ids, "entries": len(entries), "credits": len(credits),
               "debits_ignored": sum(1 for e in entries if not e.credit),
               "not_booked_ignored": sum(1 for e in entries if e.credit and not e.booked),
               "recorded": [], "duplicates": [], "unmatched": [], "recorded_minor": 0}
    with wb.db.transaction() as s:
        matcher = _Matcher(s)
        seen = set(s.scalars(sa.select(Payment.bank_reference).where(
            Payment.source == PaymentSource.CAMT053, Payment.bank_reference.in_([e.reference for e in credits]))))
        for entry in credits:
            if entry.reference in seen:
                summary["duplicates"].append(entry.reference)
                continue
            seen.add(entry.reference)
            account_id, invoice_ids, numbers, how = matcher.match(entry)
            account = s.get(Account, account_id) if account_id is not None else None
            if account is not None and account.currency != entry.currency:
                account, how = None, f"in {entry.currency}, account {account.number} is billed in {account.currency}"
            if account is None:
                summary["unmatched"].append({**asdict(entry), "booked_on": entry.booked_on.isoformat(), "reason": how})
                continue
            payment = record_payment(s, account.id, entry.amount_minor, method="transfer",
                                     reference=(entry.text or entry.debtor_name or entry.reference)[:100],
                                     received_at=_received_at(entry.booked_on), source=PaymentSource.CAMT053,
                                     bank_reference=entry.reference, actor=actor, invoice_id=invoice_ids or None,
                                     currency=entry.currency)
            summary["recorded"].append({"payment_id": payment.id, "reference": entry.reference,
                                        "account": account.number, "amount_minor": entry.amount_minor,
                                        "currency": entry.currency, "matched_by": how, "invoices": numbers})
            summary["recorded_minor"] += entry.amount_minor
        record_audit(s, actor, "payment.import_camt", "statement", ",".join(statement_ids)[:64], file=name,
                     recorded=len(summary["recorded"]), duplicates=len(summary["duplicates"]),
                     unmatched=len(summary["unmatched"]), recorded_minor=summary["recorded_minor"])
    return summary
