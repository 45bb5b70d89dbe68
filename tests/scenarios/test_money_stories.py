"""Money after the invoice, told as stories through the real cycle: credit notes, payments, a SEPA reject.

Each month is billed by the cycle's own steps (prepare_run, rate_usage, build_drafts, issue_invoices,
finish_run). Products are billed in arrears here, so the cycle of a month bills that month. VAT 20 %.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa

from bluerocktel.billing.credit_notes import issue_credit_note
from bluerocktel.billing.cycle import build_drafts, finish_run, issue_invoices, prepare_run, rate_usage
from bluerocktel.billing.payments import account_balance, open_amount_minor, record_payment
from bluerocktel.billing.sepa import create_mandate, create_sepa_batch, import_sepa_returns, mark_collected
from bluerocktel.db.models import Account, Brand, Invoice, Product, Service

UTC = dt.timezone.utc


def world(wb, *, payment_method: str = "transfer") -> int:
    """A brand that collects by SEPA, one account with a 30.00 line billed monthly in arrears since January."""
    with wb.db.transaction() as s:
        brand = Brand(code="BRT", name="BlueRock", legal_name="BlueRock SAS", invoice_prefix="FA",
                      iban="FR7630006000011234567890189", bic="AGRIFRPP", sepa_creditor_id="FR72ZZZ123456")
        s.add(brand)
        s.flush()
        product = Product(code="LINE", name="Ligne SIP", kind="recurring", price=Decimal("30.00"),
                          billing_timing="arrears")
        account = Account(number="C001", brand_id=brand.id, name="Boulangerie Martin", email="compta@martin.example",
                          payment_method=payment_method, payment_terms_days=10)
        s.add_all([product, account])
        s.flush()
        s.add(Service(account_id=account.id, product_id=product.id, label="Ligne Lyon",
                      activated_on=dt.date(2026, 1, 1)))
        return account.id


def bill(wb, period: str, issue_date: dt.date) -> list[Invoice]:
    ctx = prepare_run(wb.data_dir, period, False, issue_date=issue_date, actor="story")
    try:
        rate_usage(ctx)
        issue_invoices(ctx, build_drafts(ctx))
        finish_run(ctx)
    finally:
        ctx.wb.close()
    with wb.db.session() as s:
        return s.scalars(sa.select(Invoice).where(Invoice.billing_run_id == ctx.run_id)
                         .order_by(Invoice.id)).all()


def test_a_disputed_month_is_corrected_by_a_partial_credit_note_and_credit_carries_to_the_next_invoice(wb):
    account_id = world(wb)
    [march] = bill(wb, "2026-03", dt.date(2026, 4, 1))
    assert (march.number, march.subtotal_minor, march.vat_minor, march.total_minor) == ("FA-2026-000001",
                                                                                      3000, 600, 3600)
    with wb.db.transaction() as s:
        record_payment(s, account_id, 2000, method="transfer", reference="VIR MARTIN", actor="story")
        assert open_amount_minor(s, march.id) == 1600                      # 36.00 - 20.00
        # The line was down ten days: credit 10.00 + 2.00 VAT = 12.00, which settles 12.00 of the 16.00 still due.
        note = issue_credit_note(s, march.id, lines={1: Decimal("10.00")}, reason="line down 10 days",
                                 actor="story", issue_date=dt.date(2026, 4, 12))
        assert (note.number, note.kind, note.subtotal_minor, note.vat_minor, note.total_minor) == (
            "AV-2026-000001", "credit_note", 1000, 200, 1200)
        assert open_amount_minor(s, march.id) == 400
        # The customer pays 10.00 more: 4.00 settles March, 6.00 is credit.
        record_payment(s, account_id, 1000, method="transfer", reference="VIR MARTIN 2", actor="story")
        assert s.get(Invoice, march.id).status == "paid"
        balance = account_balance(s, account_id, today=dt.date(2026, 4, 20))
        assert (balance["due_minor"], balance["credit_minor"]) == (0, 600)
    # April's invoice (36.00) is issued and the 6.00 credit applied to it at once: 30.00 left to pay.
    [april] = bill(wb, "2026-04", dt.date(2026, 5, 1))
    with wb.db.session() as s:
        assert (april.number, april.total_minor) == ("FA-2026-000002", 3600)
        assert open_amount_minor(s, april.id) == 3000
        assert s.get(Invoice, april.id).status == "partially_paid"
        assert account_balance(s, account_id, today=dt.date(2026, 5, 2))["credit_minor"] == 0


RETURN = """<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.054.001.02"><BkToCstmrDbtCdtNtfctn>
  <GrpHdr><MsgId>RET-1</MsgId><CreDtTm>2026-04-20T09:00:00+02:00</CreDtTm></GrpHdr>
  <Ntfctn><Id>N1</Id><CreDtTm>2026-04-20T09:00:00+02:00</CreDtTm>
    <Acct><Id><IBAN>FR7630006000011234567890189</IBAN></Id></Acct>
    <Ntry><Amt Ccy="EUR">36.00</Amt><CdtDbtInd>DBIT</CdtDbtInd><RvslInd>true</RvslInd><Sts>BOOK</Sts>
      <BookgDt><Dt>2026-04-20</Dt></BookgDt><BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>RDDT</Cd><SubFmlyCd>UPDD</SubFmlyCd>
      </Fmly></Domn></BkTxCd>
      <NtryDtls><TxDtls><Refs><EndToEndId>{e2e}</EndToEndId></Refs>
        <AmtDtls><TxAmt><Amt Ccy="EUR">36.00</Amt></TxAmt></AmtDtls>
        <RtrInf><Rsn><Cd>AM04</Cd></Rsn></RtrInf></TxDtls></NtryDtls></Ntry>
  </Ntfctn></BkToCstmrDbtCdtNtfctn></Document>
"""


def test_a_returned_direct_debit_reopens_the_invoice_and_the_fee_is_on_the_next_one(wb, monkeypatch):
    monkeypatch.setenv("BLUEROCKTEL_SEPA_REJECT_FEE", "7.50")
    account_id = world(wb, payment_method="sepa_debit")
    with wb.db.transaction() as s:
        create_mandate(s, account_id, "UMR-C001-1", dt.date(2026, 1, 2), "FR7630004000031234567890143", "BNPAFRPP",
                       "Boulangerie Martin", "story")
    [march] = bill(wb, "2026-03", dt.date(2026, 4, 1))                   # 36.00, due 11 April
    batch = create_sepa_batch(wb, dt.date(2026, 4, 11), actor="story")
    assert (batch.transactions, batch.total_minor) == (1, 3600)
    assert mark_collected(wb, batch.id, dt.date(2026, 4, 13), actor="story")["collected"] == 1
    with wb.db.session() as s:
        assert s.get(Invoice, march.id).status == "paid"
        e2e = s.execute(sa.text("SELECT end_to_end_id FROM direct_debits")).scalar_one()
    # The bank returns it (AM04, insufficient funds): March is open again and a 7.50 fee waits for April.
    assert import_sepa_returns(wb, RETURN.format(e2e=e2e).encode(), actor="story")["returned"] == [e2e]
    with wb.db.session() as s:
        assert (s.get(Invoice, march.id).status, open_amount_minor(s, march.id)) == ("issued", 3600)
    [april] = bill(wb, "2026-04", dt.date(2026, 5, 1))
    with wb.db.session() as s:
        april = s.get(Invoice, april.id)
        assert [(line.kind, line.amount_minor) for line in april.lines] == [("subscription", 3000), ("fee", 750)]
        # 30.00 + 7.50 = 37.50; VAT 7.50 → total 45.00
        assert (april.subtotal_minor, april.vat_minor, april.total_minor) == (3750, 750, 4500)
        assert account_balance(s, account_id, today=dt.date(2026, 5, 2))["due_minor"] == 3600 + 4500
