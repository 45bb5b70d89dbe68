"""Dunning ladder: reminder at due + 7, late fee at + 15, suspension at + 30, reactivation once paid.

  C001 Boulangerie Martin (fr, billing contact jeanne@): FA-2026-000001 36.00 due 2026-12-01
  C002 Acme Ltd (en, no contact, ap@acme): FA-2026-000002 123.45 due 2026-12-01, 23.45 paid -> 100.00 due
  C003: FA-2026-000003 disputed, due 2026-12-01 -> never dunned
"""

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa

from bluerocktel.billing.dunning import ensure_default_stages, reactivate_after_payment, run_dunning
from bluerocktel.billing.payments import record_payment
from bluerocktel.db.models import (Account, Brand, Contact, DunningEvent, DunningStage, EmailMessage, Invoice,
                                   OneOffCharge, Product, Service, ServiceEvent)
from test_sepa import add_invoice, run_cli


def build_world(wb) -> dict[str, int]:
    with wb.db.transaction() as s:
        brand = Brand(code="BRT", name="BlueRock", legal_name="BlueRock Télécom SAS")
        s.add(brand)
        s.flush()
        accounts = {number: Account(number=number, brand_id=brand.id, name=name, language=lang, email=email)
                    for number, name, lang, email in [("C001", "Boulangerie Martin", "fr", "compta@martin.example"),
                                                      ("C002", "Acme Ltd", "en", "ap@acme.example"),
                                                      ("C003", "Litige SA", "fr", "litige@example.org")]}
        s.add_all(accounts.values())
        s.flush()
        s.add(Contact(account_id=accounts["C001"].id, first_name="Jeanne", last_name="Martin",
                      email="jeanne@martin.example", role="billing"))
        product = Product(code="SIP", name="SIP trunk", kind="recurring", price=Decimal("30.00"))
        s.add(product)
        s.flush()
        s.add_all([Service(account_id=accounts["C001"].id, product_id=product.id, label=label, status=status)
                   for label, status in [("Trunk 1", "active"), ("Trunk 2", "active"), ("Old", "terminated")]])
        ids = {n: a.id for n, a in accounts.items()}
        due = dt.date(2026, 12, 1)
        fa1 = add_invoice(s, accounts["C001"], "FA-2026-000001", 3600, due)
        fa1.pdf_path = "documents/invoices/FA-2026-000001.pdf"
        ids["FA1"] = fa1.id
        ids["FA2"] = add_invoice(s, accounts["C002"], "FA-2026-000002", 12345, due).id
        add_invoice(s, accounts["C003"], "FA-2026-000003", 5000, due).status = "disputed"
        record_payment(s, ids["C002"], 2345, method="transfer", actor="test", invoice_id=ids["FA2"])
    return ids


def outbox(wb) -> list[EmailMessage]:
    with wb.db.session() as s:
        return list(s.scalars(sa.select(EmailMessage).order_by(EmailMessage.id)))


def test_ladder_from_reminder_to_suspension_and_back(wb):
    ids = build_world(wb)
    assert run_dunning(wb, dt.date(2026, 12, 7), actor="test")["events"] == []     # 6 days late: nothing yet

    day7 = run_dunning(wb, "2026-12-08", actor="test")
    assert [(e["invoice"], e["action"], e["days_late"], e["email"]) for e in day7["events"]] == [
        ("FA-2026-000001", "reminder", 7, True), ("FA-2026-000002", "reminder", 7, True)]
    fr, en = outbox(wb)
    assert (fr.to_addr, fr.subject) == ("jeanne@martin.example", "Rappel : facture FA-2026-000001 impayée")
    assert "arrivée à échéance le 01/12/2026 reste impayée depuis 7 jours" in fr.body_text
    assert "Montant restant dû : 36,00\u00a0€." in fr.body_text
    assert fr.body_text.rstrip().endswith("BlueRock")
    assert fr.attachments == ["documents/invoices/FA-2026-000001.pdf"]
    assert (fr.related_type, fr.status) == ("dunning_event", "queued")
    assert (en.to_addr, en.subject) == ("ap@acme.example", "Reminder: invoice FA-2026-000002 is unpaid")
    assert "due on 1 December 2026, has been unpaid for 7 days" in en.body_text
    assert "Amount still due: €100.00." in en.body_text
    assert en.attachments == []

    # Running again the same day changes nothing.
    assert run_dunning(wb, dt.date(2026, 12, 8), actor="test")["events"] == []
    assert len(outbox(wb)) == 2

    # C002 settles its 100.00: its ladder stops.
    with wb.db.transaction() as s:
        record_payment(s, ids["C002"], 10000, method="transfer", actor="test")
    day15 = run_dunning(wb, dt.date(2026, 12, 16), actor="test")
    assert [(e["invoice"], e["action"]) for e in day15["events"]] == [("FA-2026-000001", "late_fee")]
    second = outbox(wb)[-1]
    assert second.subject == "Second rappel : facture FA-2026-000001 impayée"
    assert "Des frais de relance de 10,00\u00a0€ HT figureront sur votre prochaine facture." in second.body_text
    with wb.db.session() as s:
        [fee] = s.scalars(sa.select(OneOffCharge)).all()
        assert (fee.account_id, fee.kind, fee.quantity, fee.unit_price, fee.charge_date, fee.description,
                fee.invoice_id) == (ids["C001"], "fee", Decimal(1), Decimal("10.00"), dt.date(2026, 12, 16),
                                    "Frais de relance, facture FA-2026-000001", None)
        event = s.scalar(sa.select(DunningEvent).where(DunningEvent.charge_id.is_not(None)))
        assert (event.invoice_id, event.email_id) == (ids["FA1"], second.id)

    day30 = run_dunning(wb, dt.date(2026, 12, 31), actor="test")
    assert [(e["invoice"], e["action"], e["days_late"]) for e in day30["events"]] == [
        ("FA-2026-000001", "suspend", 30)]
    assert run_dunning(wb, dt.date(2026, 12, 31), actor="test")["events"] == []
    with wb.db.session() as s:
        assert s.get(Account, ids["C001"]).status == "suspended"
        assert [(sv.label, sv.status) for sv in s.scalars(sa.select(Service).order_by(Service.id))] == [
            ("Trunk 1", "suspended"), ("Trunk 2", "suspended"), ("Old", "terminated")]
        events = s.scalars(sa.select(ServiceEvent).order_by(ServiceEvent.id)).all()
        assert [(e.kind, e.reason, e.actor, e.payload) for e in events] == [
            ("suspended", "dunning: invoice FA-2026-000001 overdue 30 days", "test",
             {"invoice": "FA-2026-000001", "days_overdue": 30})] * 2
        assert s.scalar(sa.select(sa.func.count()).select_from(DunningEvent)) == 2 + 1 + 1
        assert s.scalar(sa.select(sa.func.count()).select_from(OneOffCharge)) == 1
    assert len(outbox(wb)) == 3

    # Paid: reactivation needs nothing overdue.
    with wb.db.transaction() as s:
        assert reactivate_after_payment(s, ids["C001"], "test", today=dt.date(2027, 1, 2)) == []
        record_payment(s, ids["C001"], 3600, method="transfer", actor="test")
        restored = reactivate_after_payment(s, ids["C001"], "test", today=dt.date(2027, 1, 2))
        assert len(restored) == 2
    with wb.db.session() as s:
        assert s.get(Account, ids["C001"]).status == "active"
        assert [sv.status for sv in s.scalars(sa.select(Service).order_by(Service.id))] == [
            "active", "active", "terminated"]
        assert [e.kind for e in s.scalars(sa.select(ServiceEvent).order_by(ServiceEvent.id))] == [
            "suspended", "suspended", "reactivated", "reactivated"]
    assert run_dunning(wb, dt.date(2027, 1, 2), actor="test") == {
        "as_of": "2027-01-02", "events": [], "no_address": [], "reactivated": []}


def test_late_run_applies_stages_in_order_with_the_brand_ladder(wb):
    ids = build_world(wb)
    with wb.db.transaction() as s:
        assert [st.days_after_due for st in ensure_default_stages(s)] == [7, 15, 30]
        assert ensure_default_stages(s) == []
        brand_id = s.get(Account, ids["C002"]).brand_id
        s.add_all([DunningStage(brand_id=brand_id, position=1, name="Relance", days_after_due=3, action="late_fee",
                                fee=Decimal("4.99")),
                   DunningStage(brand_id=brand_id, position=2, name="Coupure", days_after_due=10,
                                action="suspend")])
        s.get(Account, ids["C002"]).email = None                         # nobody to write to
    result = run_dunning(wb, dt.date(2026, 12, 20), actor="test")
    assert [(e["invoice"], e["stage"]) for e in result["events"]] == [
        ("FA-2026-000001", "Relance"), ("FA-2026-000001", "Coupure"),
        ("FA-2026-000002", "Relance"), ("FA-2026-000002", "Coupure")]
    assert result["no_address"] == ["FA-2026-000002"]
    with wb.db.session() as s:
        assert [(c.account_id, c.unit_price) for c in s.scalars(sa.select(OneOffCharge).order_by(OneOffCharge.id))] \
            == [(ids["C001"], Decimal("4.99")), (ids["C002"], Decimal("4.99"))]
        assert s.get(Account, ids["C002"]).status == "suspended"      # no service, the account all the same
        assert s.get(Invoice, ids["FA2"]).status == "partially_paid"
    assert [m.to_addr for m in outbox(wb)] == ["jeanne@martin.example"]


def test_cli_dunning_run(wb, capsys):
    build_world(wb)
    assert run_cli("dunning", "run", "--date", "2026-12-08", "--data-dir", str(wb.data_dir)) == 0
    assert capsys.readouterr().out == ("FA-2026-000001: Reminder (7 days late)\n"
                                       "FA-2026-000002: Reminder (7 days late)\n")
    assert run_cli("dunning", "run", "--date", "2026-12-08", "--data-dir", str(wb.data_dir)) == 0
    assert capsys.readouterr().out == "nothing to do on 2026-12-08\n"
