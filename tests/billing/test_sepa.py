"""SEPA direct debit: mandates, a pain.008 batch per collection date, collection, rejects and returns.

The world (brand BRT, creditor FR72ZZZ123456):
  C001 Boulangerie Martin (fr, sepa_debit, mandate UMR-C001-1): FA-2026-000001 36.00 due 2026-12-01,
       FA-2026-000004 50.00 due 2026-12-20 (after the collection date)
  C002 Acme Ltd (en, sepa_debit, mandate UMR-C002-1): FA-2026-000002 123.45 due 2026-12-05, 23.45 paid
       by transfer -> 100.00 open
  C003 (transfer): FA-2026-000003 50.00 -> never debited;  C004 (sepa_debit, no mandate): FA-2026-000005
Batch of 2026-12-05: 36.00 + 100.00 = 136.00 in 2 FRST transactions.
"""

import argparse
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from lxml import etree

from bluerocktel.billing.cli_collect import add_commands
from bluerocktel.billing.payments import open_amount_minor, record_payment
from bluerocktel.billing.sepa import (create_mandate, create_sepa_batch, create_sepa_batches, import_sepa_returns,
                                      mark_collected, revoke_mandate, validate_pain008)
from bluerocktel.db.models import (Account, AuditEntry, Brand, DirectDebit, Invoice, OneOffCharge, Payment,
                                   SepaBatch, SepaMandate)
from bluerocktel.errors import FormatError, NotFoundError, UserFacingError

DATA = Path(__file__).resolve().parent.parent / "data" / "sepa"
NS = {"p": "urn:iso:std:iso:20022:tech:xsd:pain.008.001.02"}
UTC = dt.timezone.utc


def add_invoice(s, account: Account, number: str, total_minor: int, due: dt.date) -> Invoice:
    """An issued invoice of ``total_minor`` (VAT 20 % included) due on ``due``."""
    vat = total_minor - total_minor * 5 // 6
    invoice = Invoice(number=number, account_id=account.id, brand_id=account.brand_id,
                      period_start=due, period_end=due + dt.timedelta(days=31),
                      issue_date=due - dt.timedelta(days=30), due_date=due, subtotal_minor=total_minor - vat,
                      vat_minor=vat, total_minor=total_minor, language=account.language)
    s.add(invoice)
    s.flush()
    return invoice


def build_world(wb, *, creditor_id: str | None = "FR72ZZZ123456") -> dict[str, int]:
    with wb.db.transaction() as s:
        brand = Brand(code="BRT", name="BlueRock", legal_name="BlueRock Télécom SAS", sepa_creditor_id=creditor_id,
                      iban="FR76 3000 6000 0112 3456 7890 189", bic="BNPAFRPPXXX", invoice_prefix="FA")
        s.add(brand)
        s.flush()
        accounts = {number: Account(number=number, brand_id=brand.id, name=name, language=lang, payment_method=pm)
                    for number, name, lang, pm in [("C001", "Boulangerie Martin & Fils", "fr", "sepa_debit"),
                                                   ("C002", "Acme Ltd", "en", "sepa_debit"),
                                                   ("C003", "Virement SA", "fr", "transfer"),
                                                   ("C004", "Sans Mandat", "fr", "sepa_debit")]}
        s.add_all(accounts.values())
        s.flush()
        ids = {n: a.id for n, a in accounts.items()}
        ids["FA1"] = add_invoice(s, accounts["C001"], "FA-2026-000001", 3600, dt.date(2026, 12, 1)).id
        ids["FA2"] = add_invoice(s, accounts["C002"], "FA-2026-000002", 12345, dt.date(2026, 12, 5)).id
        add_invoice(s, accounts["C003"], "FA-2026-000003", 5000, dt.date(2026, 12, 1))
        add_invoice(s, accounts["C001"], "FA-2026-000004", 5000, dt.date(2026, 12, 20))
        add_invoice(s, accounts["C004"], "FA-2026-000005", 5000, dt.date(2026, 12, 1))
        record_payment(s, ids["C002"], 2345, method="transfer", actor="test", invoice_id=ids["FA2"])
        create_mandate(s, ids["C001"], "UMR-C001-1", dt.date(2026, 11, 2), "FR14 2004 1010 0505 0001 3M02 606",
                       None, "Boulangerie Martin", "test")
        create_mandate(s, ids["C002"], "UMR-C002-1", dt.date(2026, 10, 15), "DE89370400440532013000",
                       "cobadeffxxx", "Acme Ltd", "test")
    return ids


def parse(wb, batch: SepaBatch):
    return etree.parse(str(wb.data_dir / batch.file_path))


def texts(doc, path: str) -> list[str]:
    return [e.text for e in doc.xpath(path, namespaces=NS)]


def test_pain008_batch_then_rcur_next_month(wb):
    ids = build_world(wb)
    batch = create_sepa_batch(wb, dt.date(2026, 12, 5), actor="test")
    assert (batch.message_id, batch.transactions, batch.total_minor) == ("BRT-20261205-001", 2, 3600 + 10000)
    assert batch.file_path == "sepa/BRT-20261205-001.xml"
    raw = (wb.data_dir / batch.file_path).read_bytes()
    assert validate_pain008(raw) == []
    [error] = validate_pain008(raw.replace(b"<SeqTp>FRST</SeqTp>", b"<SeqTp>LAST</SeqTp>"))
    assert "SeqTp" in error and "LAST" in error
    doc = parse(wb, batch)
    assert texts(doc, "//p:GrpHdr/p:MsgId") == ["BRT-20261205-001"]
    assert texts(doc, "//p:GrpHdr/p:NbOfTxs") == ["2"]
    assert texts(doc, "//p:GrpHdr/p:CtrlSum") == ["136.00"]
    assert texts(doc, "//p:GrpHdr/p:InitgPty/p:Nm") == ["BlueRock Telecom SAS"]      # SEPA character set
    assert texts(doc, "//p:PmtInf/p:PmtInfId") == ["BRT-20261205-001-FRST"]
    assert texts(doc, "//p:PmtInf/p:PmtMtd") == ["DD"]
    assert texts(doc, "//p:PmtTpInf/p:SeqTp") == ["FRST"]
    assert texts(doc, "//p:PmtTpInf/p:SvcLvl/p:Cd") == ["SEPA"]
    assert texts(doc, "//p:PmtTpInf/p:LclInstrm/p:Cd") == ["CORE"]
    assert texts(doc, "//p:PmtInf/p:ReqdColltnDt") == ["2026-12-05"]
    assert texts(doc, "//p:CdtrAcct/p:Id/p:IBAN") == ["FR7630006000011234567890189"]
    assert texts(doc, "//p:CdtrAgt//p:BIC") == ["BNPAFRPPXXX"]
    assert texts(doc, "//p:CdtrSchmeId//p:Othr/p:Id") == ["FR72ZZZ123456"]
    assert texts(doc, "//p:EndToEndId") == ["BRT-20261205-001-00001", "BRT-20261205-001-00002"]
    assert texts(doc, "//p:InstdAmt") == ["36.00", "100.00"]
    assert [e.get("Ccy") for e in doc.xpath("//p:InstdAmt", namespaces=NS)] == ["EUR", "EUR"]
    assert texts(doc, "//p:MndtRltdInf/p:MndtId") == ["UMR-C001-1", "UMR-C002-1"]
    assert texts(doc, "//p:MndtRltdInf/p:DtOfSgntr") == ["2026-11-02", "2026-10-15"]
    assert texts(doc, "//p:DbtrAgt/p:FinInstnId/p:BIC") == ["COBADEFFXXX"]
    assert texts(doc, "//p:DbtrAgt/p:FinInstnId/p:Othr/p:Id") == ["NOTPROVIDED"]
    assert texts(doc, "//p:Dbtr/p:Nm") == ["Boulangerie Martin", "Acme Ltd"]
    assert texts(doc, "//p:DbtrAcct/p:Id/p:IBAN") == ["FR1420041010050500013M02606", "DE89370400440532013000"]
    assert texts(doc, "//p:RmtInf/p:Ustrd") == ["FA-2026-000001", "FA-2026-000002"]
    with wb.db.session() as s:
        assert [m.sequence_type for m in s.scalars(sa.select(SepaMandate).order_by(SepaMandate.umr))] == ["RCUR",
                                                                                                         "RCUR"]
    # Invoices in a pending debit are not debited twice.
    assert create_sepa_batch(wb, dt.date(2026, 12, 6), actor="test") is None

    assert mark_collected(wb, batch.id, dt.date(2026, 12, 7), actor="test") == {
        "batch": "BRT-20261205-001", "collected": 2, "total_minor": 13600}
    assert mark_collected(wb, batch.id, dt.date(2026, 12, 7), actor="test")["collected"] == 0
    with wb.db.session() as s:
        payments = s.scalars(sa.select(Payment).where(Payment.source == "sepa").order_by(Payment.id)).all()
        assert [(p.amount_minor, p.method, p.bank_reference, p.reference) for p in payments] == [
            (3600, "sepa_debit", "BRT-20261205-001-00001", "FA-2026-000001"),
            (10000, "sepa_debit", "BRT-20261205-001-00002", "FA-2026-000002")]
        assert payments[0].received_at == dt.datetime(2026, 12, 7, tzinfo=UTC)
        assert [s.get(Invoice, ids[k]).status for k in ("FA1", "FA2")] == ["paid", "paid"]
        assert s.scalar(sa.select(SepaMandate.last_collected_on).where(SepaMandate.umr == "UMR-C001-1")) == \
            dt.date(2026, 12, 7)

    # Next month: the same mandate is collected as RCUR (4 200 = 35.00 + 20 % VAT).
    with wb.db.transaction() as s:
        add_invoice(s, s.get(Account, ids["C001"]), "FA-2027-000001", 4200, dt.date(2027, 1, 1))
    january = create_sepa_batch(wb, dt.date(2027, 1, 5), actor="test")
    doc = parse(wb, january)
    assert january.message_id == "BRT-20270105-001"
    assert texts(doc, "//p:PmtTpInf/p:SeqTp") == ["RCUR"]
    assert texts(doc, "//p:PmtInf/p:PmtInfId") == ["BRT-20270105-001-RCUR"]
    assert texts(doc, "//p:GrpHdr/p:NbOfTxs") == ["2"]            # FA-2026-000004 (due 20 Dec) and the new one
    assert texts(doc, "//p:RmtInf/p:Ustrd") == ["FA-2026-000004", "FA-2027-000001"]
    assert texts(doc, "//p:GrpHdr/p:CtrlSum") == ["92.00"]         # 50.00 + 42.00


def test_reject_before_settlement_and_return_after(wb, monkeypatch):
    monkeypatch.setenv("BLUEROCKTEL_SEPA_REJECT_FEE", "7.50")
    ids = build_world(wb)
    batch = create_sepa_batch(wb, dt.date(2026, 12, 5), actor="test")

    # pain.002: C002's debit (100.00) rejected MD01 before settlement -> mandate revoked, fee 7.50.
    assert import_sepa_returns(wb, DATA / "pain002_reject_md01.xml", actor="test") == {
        "returned": ["BRT-20261205-001-00002"], "already_returned": [], "unknown": []}
    assert mark_collected(wb, batch.id, dt.date(2026, 12, 7), actor="test") == {
        "batch": "BRT-20261205-001", "collected": 1, "total_minor": 3600}

    # camt.054: C001's debit (36.00) returned AM04 after settlement -> invoice reopened, back to FRST.
    camt = (DATA / "camt054_return_am04.xml").read_bytes()
    assert import_sepa_returns(wb, camt, actor="test") == {
        "returned": ["BRT-20261205-001-00001"], "already_returned": [], "unknown": ["ZZZ-20261101-001-00009"]}
    # The same files again change nothing.
    assert import_sepa_returns(wb, camt, actor="test")["already_returned"] == ["BRT-20261205-001-00001"]
    assert import_sepa_returns(wb, DATA / "pain002_reject_md01.xml", actor="test")["returned"] == []

    with wb.db.session() as s:
        debits = s.scalars(sa.select(DirectDebit).order_by(DirectDebit.id)).all()
        assert [(d.status, d.return_reason) for d in debits] == [("returned", "AM04"), ("returned", "MD01")]
        assert debits[1].returned_at == dt.datetime(2026, 12, 6, 8, 30, tzinfo=UTC)
        assert debits[0].returned_at == dt.datetime(2026, 12, 9, tzinfo=UTC)
        assert debits[1].payment_id is None
        payment = s.get(Payment, debits[0].payment_id)
        assert (payment.status, payment.return_reason) == ("returned", "SEPA return AM04")
        assert s.get(Invoice, ids["FA1"]).status == "issued"
        assert open_amount_minor(s, ids["FA1"]) == 3600
        assert open_amount_minor(s, ids["FA2"]) == 12345 - 2345
        charges = s.scalars(sa.select(OneOffCharge).order_by(OneOffCharge.id)).all()
        assert [(c.account_id, c.kind, c.quantity, c.unit_price, c.charge_date, c.description) for c in charges] == [
            (ids["C002"], "fee", Decimal(1), Decimal("7.50"), dt.date(2026, 12, 6),
             "Direct debit reject fee, invoice FA-2026-000002 (MD01)"),
            (ids["C001"], "fee", Decimal(1), Decimal("7.50"), dt.date(2026, 12, 9),
             "Frais de rejet de prélèvement, facture FA-2026-000001 (AM04)")]
        assert [d.fee_charge_id for d in debits] == [charges[1].id, charges[0].id]
        mandates = {m.umr: m for m in s.scalars(sa.select(SepaMandate))}
        assert (mandates["UMR-C001-1"].status, mandates["UMR-C001-1"].sequence_type) == ("active", "FRST")
        assert (mandates["UMR-C002-1"].status, mandates["UMR-C002-1"].revoked_on) == ("revoked",
                                                                                      dt.date(2026, 12, 6))
        assert s.scalar(sa.select(sa.func.count()).select_from(AuditEntry)
                        .where(AuditEntry.action == "sepa.return")) == 2

    # The reopened invoice is debited again, as a first collection; C002 has no mandate any more.
    again = create_sepa_batch(wb, dt.date(2026, 12, 12), actor="test")
    doc = parse(wb, again)
    assert texts(doc, "//p:RmtInf/p:Ustrd") == ["FA-2026-000001"]
    assert texts(doc, "//p:PmtTpInf/p:SeqTp") == ["FRST"]


def test_rejected_block_returns_all_its_debits(wb, monkeypatch):
    monkeypatch.setenv("BLUEROCKTEL_SEPA_REJECT_FEE", "0")
    build_world(wb)
    create_sepa_batch(wb, dt.date(2026, 12, 5), actor="test")
    report = b"""<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.002.001.03"><CstmrPmtStsRpt>
      <GrpHdr><MsgId>R1</MsgId><CreDtTm>2026-12-05T07:00:00+01:00</CreDtTm></GrpHdr>
      <OrgnlGrpInfAndSts><OrgnlMsgId>BRT-20261205-001</OrgnlMsgId><OrgnlMsgNmId>pain.008.001.02</OrgnlMsgNmId>
        <GrpSts>RJCT</GrpSts></OrgnlGrpInfAndSts>
      <OrgnlPmtInfAndSts><OrgnlPmtInfId>BRT-20261205-001-FRST</OrgnlPmtInfId><PmtInfSts>RJCT</PmtInfSts>
        <StsRsnInf><Rsn><Cd>FF01</Cd></Rsn></StsRsnInf></OrgnlPmtInfAndSts>
    </CstmrPmtStsRpt></Document>"""
    result = import_sepa_returns(wb, report, actor="test")
    assert result["returned"] == ["BRT-20261205-001-00001", "BRT-20261205-001-00002"]
    with pytest.raises(FormatError, match="not XML"):
        import_sepa_returns(wb, b"RJCT;BRT-20261205-001-00001", actor="test")
    with pytest.raises(FormatError, match="expected pain.002, camt.053 or camt.054, got namespace 'urn:x'"):
        import_sepa_returns(wb, b'<Document xmlns="urn:x"/>', actor="test")
    with wb.db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(OneOffCharge)) == 0      # fee 0: none
        debit = s.scalar(sa.select(DirectDebit).order_by(DirectDebit.id))
        assert (debit.return_reason, debit.returned_at) == ("NOTGIVEN", dt.datetime(2026, 12, 5, 6, tzinfo=UTC))
        assert {m.sequence_type for m in s.scalars(sa.select(SepaMandate))} == {"FRST"}


def test_mandate_rules(wb):
    ids = build_world(wb, creditor_id=None)
    bad = [
        (dict(iban="FR7630006000011234567890188"), "wrong check digits"),
        (dict(iban="FR76300060000112345678901"), "a FR IBAN has 27 characters, not 25"),
        (dict(iban="ZZ7630006000011234567890189"), "no IBAN country 'ZZ'"),
        (dict(iban="BR1800360305000010009795493C1"), "BR is not in the SEPA direct-debit scheme"),
        (dict(bic="BNPA FR"), "BIC 'BNPA FR'"),
        (dict(umr="UMR 2"), "no space"),
        (dict(umr="U" * 36), "1 to 35 characters"),
        (dict(umr="UMR-C001-1"), "a mandate with reference UMR-C001-1 exists already"),
        (dict(debtor_name=" "), "debtor name"),
    ]
    base = dict(umr="UMR-C003-1", signed_on=dt.date(2026, 11, 20), iban="NL91ABNA0417164300", bic=None,
                debtor_name="Virement SA")
    with wb.db.session() as s:
        for change, message in bad:
            with pytest.raises(UserFacingError, match=message):
                create_mandate(s, ids["C003"], **{**base, **change}, actor="test")
    with wb.db.transaction() as s:
        replacement = create_mandate(s, ids["C001"], "UMR-C001-2", dt.date(2026, 11, 25), "NL91ABNA0417164300",
                                     "ABNANL2A", "Martin Holding", "test", one_off=True)
        assert replacement.sequence_type == "OOFF"
        old = s.scalar(sa.select(SepaMandate).where(SepaMandate.umr == "UMR-C001-1"))
        assert (old.status, old.revoked_on) == ("revoked", dt.date(2026, 11, 25))
        revoke_mandate(s, "UMR-C002-1", dt.date(2026, 11, 30), "test")
    with wb.db.session() as s, pytest.raises(UserFacingError, match="revoked already"):
        revoke_mandate(s, "UMR-C002-1", dt.date(2026, 12, 1), "test")

    # BRT cannot collect without a creditor id; another brand collects all the same.
    with wb.db.transaction() as s:
        azur = Brand(code="AZU", name="Azur", legal_name="Azur Telecom SARL", sepa_creditor_id="FR72ZZZ123456",
                     iban="BE68539007547034")
        s.add(azur)
        s.flush()
        nice = Account(number="C010", brand_id=azur.id, name="Nice Fleurs", payment_method="sepa_debit")
        s.add(nice)
        s.flush()
        add_invoice(s, nice, "AZ-2026-000001", 1200, dt.date(2026, 12, 1))
        create_mandate(s, nice.id, "AZ-C010", dt.date(2026, 11, 1), "BE68539007547034", None, "Nice Fleurs", "test")
    with pytest.raises(UserFacingError, match=r"^brand BRT cannot collect direct debits: no SEPA creditor id "
                                              r"\(batches written: AZU-20261205-001\)$"):
        create_sepa_batches(wb, dt.date(2026, 12, 5), actor="test")
    with pytest.raises(UserFacingError, match=r"several brands \(AZU, BRT\): name the brand"):
        create_sepa_batch(wb, dt.date(2026, 12, 5), actor="test")
    with wb.db.transaction() as s:
        s.scalar(sa.select(Brand)).sepa_creditor_id = "FR72ZZZ123456"
    # A one-off mandate is used once: OOFF, then revoked.
    [batch] = create_sepa_batches(wb, dt.date(2026, 12, 5), brand_code="BRT", actor="test")
    assert texts(parse(wb, batch), "//p:PmtTpInf/p:SeqTp") == ["OOFF"]
    with wb.db.session() as s:
        used = s.scalar(sa.select(SepaMandate).where(SepaMandate.umr == "UMR-C001-2"))
        assert (used.status, used.revoked_on) == ("revoked", dt.date(2026, 12, 5))


def run_cli(*argv: str) -> int:
    """Run a ``bluerocktel billing ...`` command of cli_collect through its own parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=None)
    common.add_argument("--json", action="store_true")
    parser = argparse.ArgumentParser(prog="bluerocktel billing")
    add_commands(parser.add_subparsers(required=True), common)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli(wb, capsys):
    build_world(wb)
    where = ("--data-dir", str(wb.data_dir))
    assert run_cli("mandate", "add", "C003", "--umr", "UMR-C003-1", "--signed-on", "2026-11-20",
                   "--iban", "NL91 ABNA 0417 1643 00", "--name", "Virement SA", *where) == 0
    assert capsys.readouterr().out == "mandate UMR-C003-1 recorded for C003 (next: FRST)\n"
    assert run_cli("mandate", "list", "--json", *where) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["account"], r["umr"], r["status"]) for r in rows] == [
        ("C001", "UMR-C001-1", "active"), ("C002", "UMR-C002-1", "active"), ("C003", "UMR-C003-1", "active")]
    with pytest.raises(NotFoundError, match="no account 'C999'"):
        run_cli("mandate", "add", "C999", "--umr", "X", "--signed-on", "2026-11-20", "--iban", "NL91ABNA0417164300",
                "--name", "X", *where)
    with pytest.raises(SystemExit):
        run_cli("sepa", "batch", "--date", "5/12/2026", *where)
    capsys.readouterr()

    assert run_cli("sepa", "batch", "--date", "2026-12-05", *where) == 0
    assert capsys.readouterr().out == "BRT-20261205-001: 2 debit(s), 136.00 EUR -> sepa/BRT-20261205-001.xml\n"
    assert run_cli("sepa", "batch", "--date", "2026-12-05", *where) == 0
    assert capsys.readouterr().out == "nothing to collect on 2026-12-05\n"
    assert run_cli("sepa", "collected", "BRT-20261205-001", "--date", "2026-12-07", *where) == 0
    assert capsys.readouterr().out == "BRT-20261205-001: 2 debit(s) collected\n"
    assert run_cli("sepa", "returns", str(DATA / "camt054_return_am04.xml"), *where) == 0
    assert capsys.readouterr().out == ("returned: BRT-20261205-001-00001\nalready returned: -\n"
                                       "unknown: ZZZ-20261101-001-00009\n")
    assert run_cli("mandate", "revoke", "UMR-C003-1", "--date", "2026-12-01", *where) == 0
    assert capsys.readouterr().out == "mandate UMR-C003-1 revoked on 2026-12-01\n"
