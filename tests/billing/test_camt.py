"""CAMT.053 import: booked credits become payments once, matched by invoice number, IBAN or name."""

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from money_builders import make_account, make_brand, make_invoice, run_money_cli, sqlite_workbench

from bluerocktel.billing.camt import import_camt053, parse_camt053
from bluerocktel.billing.payments import account_balance, open_amount_minor
from bluerocktel.db.models import AuditEntry, Invoice, Payment, SepaMandate
from bluerocktel.errors import FormatError

DATA = Path(__file__).parent.parent / "data" / "camt"
MARCH = DATA / "march_2026.camt053.xml"
APRIL = DATA / "april_2026_v08.camt053.xml"


def _world(wb) -> dict:
    """Martin: FA-2026-000001 (120.00), FA-2026-000002 (60.00); Durand (mandate IBAN): FA-2026-000003
    (48.00); Lefèvre: FA-2026-000004 (30.00)."""
    with wb.db.transaction() as s:
        brand = make_brand(s)
        martin = make_account(s, brand, "C0001", "Boulangerie Martin")
        durand = make_account(s, brand, "C0002", "Durand SARL")
        lefevre = make_account(s, brand, "C0003", "Garage Lefèvre")
        s.add(SepaMandate(account_id=durand.id, umr="BRT-C0002-1", signed_on=dt.date(2025, 6, 1),
                          debtor_name="M. et Mme Durand", iban="FR7630006000011234567890189"))
        ids = [make_invoice(s, account, f"FA-2026-00000{n}", month, [("Trunk SIP", net, "0.20")]).id
               for n, (account, month, net) in enumerate(
                   [(martin, 1, 10000), (martin, 2, 5000), (durand, 2, 4000), (lefevre, 2, 2500)], 1)]
        return {"accounts": [martin.id, durand.id, lefevre.id], "invoices": ids}


def _invoices(wb, ids):
    with wb.db.session() as s:
        return [(s.get(Invoice, i).status, open_amount_minor(s, i)) for i in ids]


def test_a_statement_is_reconciled_once(wb):
    world = _world(wb)
    summary = import_camt053(wb, MARCH, actor="alice")
    assert {k: summary[k] for k in ("file", "statements", "entries", "credits", "debits_ignored",
                                    "not_booked_ignored", "duplicates", "recorded_minor")} == {
        "file": "march_2026.camt053.xml", "statements": ["BRT-2026-03-11"], "entries": 9, "credits": 7,
        "debits_ignored": 1, "not_booked_ignored": 1, "duplicates": ["2026031000001"],
        "recorded_minor": 12000 + 3000 + 10000 + 4800 + 1000}
    assert [(r["reference"], r["account"], r["amount_minor"], r["matched_by"], r["invoices"])
            for r in summary["recorded"]] == [
        ("2026031000001", "C0001", 12000, "invoice", ["FA-2026-000001"]),
        ("2026031000002", "C0001", 3000, "invoice", ["FA-2026-000002"]),
        ("2026031000003", "C0003", 10000, "invoice", ["FA-2026-000004"]),
        ("2026031000004", "C0002", 4800, "iban", []),
        ("2026031000005", "C0001", 1000, "name", []),
    ]
    assert [(u["reference"], u["amount_minor"], u["text"], u["debtor_name"], u["booked_on"])
            for u in summary["unmatched"]] == [
        ("2026031000006", 1550, "Loyer mars", "SCI DES TILLEULS", "2026-03-10")]
    # FA-2026-000002: 60.00 - 30.00 - 10.00 (matched by name, oldest open invoice) = 20.00 open.
    assert _invoices(wb, world["invoices"]) == [("paid", 0), ("partially_paid", 2000), ("paid", 0), ("paid", 0)]
    with wb.db.session() as s:
        lefevre = account_balance(s, world["accounts"][2])
        assert (lefevre["due_minor"], lefevre["credit_minor"]) == (0, 10000 - 3000)
        payment = s.scalars(sa.select(Payment).where(Payment.bank_reference == "2026031000001")).one()
        assert (payment.source, payment.method, payment.reference, payment.created_by) == (
            "camt053", "transfer", "Facture FA-2026-000001", "alice")
        assert payment.received_at == dt.datetime(2026, 3, 9, 23, 0, tzinfo=dt.timezone.utc)  # midnight in Paris
        assert s.get(Invoice, world["invoices"][0]).paid_at == payment.received_at

    again = import_camt053(wb, MARCH.read_bytes(), actor="alice")
    assert again["recorded"] == [] and again["recorded_minor"] == 0
    assert sorted(again["duplicates"]) == ["2026031000001"] * 2 + [f"202603100000{n}" for n in range(2, 6)]
    assert [u["reference"] for u in again["unmatched"]] == ["2026031000006"]     # still reported, never dropped

    april = import_camt053(wb, APRIL, actor="alice")
    assert [(r["reference"], r["amount_minor"], r["invoices"]) for r in april["recorded"]] == [
        ("E2E-MARTIN-0401", 2000, ["FA-2026-000002"])]
    assert [(u["reference"], u["amount_minor"], u["debtor_name"]) for u in april["unmatched"]] == [
        ("E2E-GIFT-0401", 500, "ANONYME")]
    assert _invoices(wb, world["invoices"][1:2]) == [("paid", 0)]
    with wb.db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Payment)) == 6
        assert s.scalar(sa.select(sa.func.count()).select_from(AuditEntry)
                        .where(AuditEntry.action == "payment.import_camt")) == 3


@pytest.fixture(scope="module")
def mwb(tmp_path_factory):
    workbench = sqlite_workbench(tmp_path_factory.mktemp("camt"))
    yield workbench
    workbench.close()


MARCH_TEXT = MARCH.read_text()
FIRST_AMOUNT = '<Amt Ccy="EUR">120.00</Amt>\n        <CdtDbtInd>CRDT</CdtDbtInd>'
FIRST_AMOUNT_LINE = MARCH_TEXT[:MARCH_TEXT.index(FIRST_AMOUNT)].count("\n") + 1


@pytest.mark.parametrize("broken, message", [
    (MARCH_TEXT.replace(FIRST_AMOUNT, "<CdtDbtInd>CRDT</CdtDbtInd>", 1),
     f"line {FIRST_AMOUNT_LINE - 1}: <Ntry> has no <Amt>"),
    (MARCH_TEXT.replace("<CdtDbtInd>CRDT</CdtDbtInd>\n        <Sts>BOOK", "<CdtDbtInd>CREDIT</CdtDbtInd>\n"
                        "        <Sts>BOOK", 1), "<CdtDbtInd> must be CRDT or DBIT, got 'CREDIT'"),
    (MARCH_TEXT.replace(">120.00<", ">120.005<", 1),
     f"line {FIRST_AMOUNT_LINE}: <Amt>: 120.005 is not a positive amount with at most 2 decimals"),
    (MARCH_TEXT.replace(">120.00<", ">cent vingt<", 1), "<Amt>: not a decimal number: 'cent vingt'"),
    (MARCH_TEXT.replace("<BookgDt><Dt>2026-03-10</Dt></BookgDt>\n        <ValDt><Dt>2026-03-10</Dt></ValDt>", "", 1),
     "booked <Ntry> has no <BookgDt>"),
    (MARCH_TEXT[:MARCH_TEXT.index("</NtryDtls>")], "not well-formed XML at line"),
    (MARCH_TEXT.replace("camt.053.001.02", "camt.054.001.02"), "not a camt.053.001.02-08 statement"),
])
def test_a_malformed_statement_is_refused_whole(mwb, tmp_path, broken, message):
    path = tmp_path / "broken.xml"
    path.write_text(broken)
    with pytest.raises(FormatError, match=message.replace("(", r"\(")) as refused:
        import_camt053(mwb, path, actor="alice")
    assert str(refused.value).startswith("broken.xml")
    with mwb.db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Payment)) == 0


def test_a_batch_entry_must_add_up():
    text = APRIL.read_text().replace('<Amt Ccy="EUR">5.00</Amt>', '<Amt Ccy="EUR">5.01</Amt>')
    with pytest.raises(FormatError, match="the transactions of <Ntry> sum to 2501, not 2500"):
        parse_camt053(text.encode())
    ids, entries = parse_camt053(APRIL.read_bytes())
    assert ids == ["BRT-2026-04-02"]
    assert [(e.reference, e.amount_minor, e.booked_on, e.text) for e in entries] == [
        ("E2E-MARTIN-0401", 2000, dt.date(2026, 4, 1), "Solde facture FA 2026 000002"),
        ("E2E-GIFT-0401", 500, dt.date(2026, 4, 1), "Don")]


def test_cli_import_camt(mwb, capsys):
    assert run_money_cli(mwb.data_dir, "payment", "import-camt", str(APRIL)) == 0
    assert capsys.readouterr().out.splitlines() == [
        "april_2026_v08.camt053.xml: 0 payment(s) recorded (0.00), 0 already imported, 2 unmatched, "
        "0 debit(s) ignored",
        "  UNMATCHED E2E-MARTIN-0401: 20.00 EUR BOULANGERIE MARTIN 'Solde facture FA 2026 000002' "
        "(no invoice number, mandate IBAN or account name matches)",
        "  UNMATCHED E2E-GIFT-0401: 5.00 EUR ANONYME 'Don' (no invoice number, mandate IBAN or account name matches)"]
