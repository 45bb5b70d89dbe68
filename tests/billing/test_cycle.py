"""The billing run steps in-process, on a small world: two billable accounts and one anomaly.

March 2026 has 31 days. Expected amounts, by hand:

C001 (fr): trunk 29.90 x 2 = 59.80; line 10.00 activated 11 March -> 21/31 days = 6.774.. -> 6.77;
           France fixe 2 calls 0.123456 + 0.010000 = 0.133456 -> 0.13; mobile 1 call 0.25
           subtotal 67.95, VAT 20 % 13.59, total 81.54
C002 (en): 15.50 (service price) terminated 16 March -> 15/31 days = 7.50; VAT 1.50; total 9.00
C003:      rated usage but no service: an anomaly, not billed.
"""

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest
import sqlalchemy as sa

from bluerocktel import lake
from bluerocktel.billing.cycle import (build_drafts, control_report, finish_run, issue_invoices, prepare_run,
                                       render_documents)
from bluerocktel.db.models import Account, AuditEntry, BillingRun, Brand, Invoice, Product, Service

UTC = dt.timezone.utc


def rated_row(n: int, account_id: int | None, zone: str, price_micro: int | None, status: str = "rated",
              start: dt.datetime = dt.datetime(2026, 3, 10, 9, 0, tzinfo=UTC), billable_s: int = 60) -> dict:
    return {
        "cdr_id": f"cdr{n:04d}", "source": "pbx1", "source_file": "Master.csv", "source_line": n,
        "start_at": start, "answer_at": start, "end_at": start + dt.timedelta(seconds=billable_s),
        "duration_s": billable_s, "billsec_s": billable_s, "caller": "+33140000000", "callee": "+33612345678",
        "account_code": "", "channel": "SIP/a", "dst_channel": "SIP/b", "disposition": "ANSWERED",
        "direction": "out", "call_type": "voice", "unique_id": str(n), "account_id": account_id,
        "service_id": None, "rate_deck_id": 1, "rate_id": 1, "prefix": "33", "destination": zone,
        "zone": zone, "billable_s": billable_s, "price_micro": price_micro, "rating_status": status,
        "rated_at": dt.datetime(2026, 4, 1, tzinfo=UTC),
    }


def build_world(wb) -> dict[str, int]:
    with wb.db.transaction() as s:
        brand = Brand(code="BRT", name="BlueRock Télécom", legal_name="BlueRock Télécom SAS", siren="123456789",
                      vat_number="FR12123456789", address="1 rue de la Paix\n75002 Paris", invoice_prefix="FA",
                      logo_svg='<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
        s.add(brand)
        s.flush()
        trunk = Product(code="TRUNK", name="Trunk SIP", kind="recurring", price=Decimal("29.90"),
                        billing_timing="arrears")
        line = Product(code="LINE", name="Ligne fixe", kind="recurring", price=Decimal("10.00"),
                       billing_timing="arrears")
        s.add_all([trunk, line])
        c1 = Account(number="C001", brand_id=brand.id, name="Boulangerie Martin", language="fr")
        c2 = Account(number="C002", brand_id=brand.id, name="Acme Ltd", language="en", payment_terms_days=15)
        c3 = Account(number="C003", brand_id=brand.id, name="Sans Service")
        s.add_all([c1, c2, c3])
        s.flush()
        s.add_all([
            Service(account_id=c1.id, product_id=trunk.id, label="Siège", quantity=2),
            Service(account_id=c1.id, product_id=line.id, label="Ligne fixe", activated_on=dt.date(2026, 3, 11)),
            Service(account_id=c2.id, product_id=trunk.id, label="London", unit_price=Decimal("15.50"),
                    status="terminated", terminated_on=dt.date(2026, 3, 16)),
        ])
        ids = {"C001": c1.id, "C002": c2.id, "C003": c3.id}
    rows = [
        rated_row(1, ids["C001"], "France fixe", 123_456),
        rated_row(2, ids["C001"], "France fixe", 10_000),
        rated_row(3, ids["C001"], "mobile", 250_000),
        rated_row(4, ids["C001"], "international", None, status="unrated"),
        rated_row(5, ids["C001"], "France fixe", 0, status="free"),
        rated_row(6, None, "", None, status="unassigned"),
        rated_row(7, ids["C003"], "mobile", 99_000),
    ]
    lake.write_partition(wb.lake_dir, "rated", "2026-03", pa.Table.from_pylist(rows, schema=lake.RATED_SCHEMA))
    # another month's usage must not leak into March
    lake.write_partition(wb.lake_dir, "rated", "2026-02", pa.Table.from_pylist(
        [rated_row(8, ids["C001"], "mobile", 5_000_000, start=dt.datetime(2026, 2, 27, tzinfo=UTC))],
        schema=lake.RATED_SCHEMA))
    return ids


def run_steps(wb, dry_run: bool):
    ctx = prepare_run(wb.data_dir, "2026-03", dry_run, issue_date="2026-04-01", actor="tester")
    try:
        drafts = build_drafts(ctx)
        report = control_report(ctx, drafts)
        issued = issue_invoices(ctx, drafts)
        documents = render_documents(ctx)
        summary = finish_run(ctx)
    finally:
        ctx.wb.close()
    return ctx, drafts, report, issued, documents, summary


def invoices(wb) -> list[Invoice]:
    with wb.db.session() as s:
        return s.scalars(sa.select(Invoice).options(sa.orm.selectinload(Invoice.lines))
                         .order_by(Invoice.number)).all()


def test_drafts_and_control_report_match_the_hand_computed_amounts(wb):
    build_world(wb)
    ctx, drafts, report, issued, documents, summary = run_steps(wb, dry_run=True)
    by_account = {d.account_number: d for d in drafts}
    assert sorted(by_account) == ["C001", "C002"]
    c1, c2 = by_account["C001"], by_account["C002"]
    assert [(line.kind, line.zone, line.quantity, line.amount_minor) for line in c1.lines] == [
        ("subscription", None, Decimal(2), 5980), ("subscription", None, Decimal(1), 677),
        ("usage", "France fixe", Decimal(2), 13), ("usage", "mobile", Decimal(1), 25)]
    assert (c1.subtotal_minor, c1.vat_minor, c1.total_minor) == (6695, 1339, 8034)
    assert c1.anomalies == ["1 call(s) without a rate, not billed"]
    assert (c2.subtotal_minor, c2.vat_minor, c2.total_minor) == (750, 150, 900)
    assert c2.lines[0].description == "Trunk SIP — London, 2026-03-01 to 2026-03-15 (prorated 15/31 days)"

    rows = report.accounts.set_index("account")
    assert rows.loc["C001", "total_minor"] == 8034 and rows.loc["C001", "lines"] == 4
    assert report.accounts["total_minor"].dtype == "int64"
    anomalies = report.anomalies.set_index("kind")
    assert "no service active" in anomalies.loc["usage_without_service", "detail"]
    assert anomalies.loc["usage_without_service", "account"] == "C003"
    assert any("unassigned" in a for a in report.anomalies["detail"])

    assert issued == [] and documents == []
    assert summary["accounts"] == 2 and summary["invoices_issued"] == 0
    assert summary["totals"] == {"EUR": {"subtotal_minor": 7445, "vat_minor": 1489, "total_minor": 8934}}


def test_dry_run_issues_nothing_then_a_run_issues_and_a_second_run_issues_nothing_more(wb):
    build_world(wb)
    ctx, *_ , summary = run_steps(wb, dry_run=True)
    assert invoices(wb) == []
    with wb.db.session() as s:
        run = s.get(BillingRun, ctx.run_id)
        assert (run.status, run.dry_run, run.finished_at is not None) == ("previewed", True, True)

    ctx, drafts, report, issued, documents, summary = run_steps(wb, dry_run=False)
    assert issued == ["FA-2026-000001", "FA-2026-000002"]
    issued_invoices = invoices(wb)
    c1, c2 = issued_invoices
    assert (c1.account_id, c1.total_minor, c1.issue_date, c1.due_date) == (
        drafts[0].account_id, 8034, dt.date(2026, 4, 1), dt.date(2026, 5, 1))
    assert (c2.total_minor, c2.due_date, c2.billing_run_id) == (900, dt.date(2026, 4, 16), ctx.run_id)
    assert (c1.period_start, c1.period_end) == (dt.date(2026, 3, 1), dt.date(2026, 4, 1))
    assert sum(line.amount_minor for line in c1.lines) == c1.subtotal_minor
    assert c1.lines[2].amount_precise == Decimal("0.133456")
    assert [line.position for line in c1.lines] == [1, 2, 3, 4]
    for invoice in issued_invoices:
        assert invoice.pdf_path == f"documents/invoices/{invoice.number}.pdf"
        assert (wb.data_dir / invoice.pdf_path).read_bytes().startswith(b"%PDF-")
    assert documents == [i.pdf_path for i in issued_invoices]
    assert summary["invoices_issued"] == 2 and summary["numbers"] == ["FA-2026-000001", "FA-2026-000002"]
    assert summary["issued_totals"] == {"EUR": {"subtotal_minor": 7445, "vat_minor": 1489, "total_minor": 8934}}
    assert any(a["account_number"] == "C003" for a in summary["anomalies"])
    with wb.db.session() as s:
        audits = s.scalars(sa.select(AuditEntry).where(AuditEntry.action == "invoice.issue")
                           .order_by(AuditEntry.id)).all()
        assert [a.details["number"] for a in audits] == ["FA-2026-000001", "FA-2026-000002"]
        assert all(a.actor == "tester" for a in audits)
        assert s.get(BillingRun, ctx.run_id).status == "completed"

    ctx, drafts, report, issued, documents, summary = run_steps(wb, dry_run=False)
    assert issued == [] and documents == []
    assert summary["skipped"] == [{"account": "C001", "reason": "already invoiced for this period"},
                                  {"account": "C002", "reason": "already invoiced for this period"}]
    assert [i.number for i in invoices(wb)] == ["FA-2026-000001", "FA-2026-000002"]


def test_a_lost_pdf_is_rendered_again_and_next_numbers_stay_gapless(wb):
    ids = build_world(wb)
    run_steps(wb, dry_run=False)
    with wb.db.transaction() as s:
        s.execute(sa.update(Invoice).where(Invoice.number == "FA-2026-000002").values(pdf_path=None))
        brand_id = s.scalar(sa.select(Brand.id))
        trunk_id = s.scalar(sa.select(Product.id).where(Product.code == "TRUNK"))
        s.add(Service(account_id=ids["C003"], product_id=trunk_id, label="Nouveau"))
        s.add(Account(number="C004", brand_id=brand_id, name="Autre"))
    ctx, drafts, report, issued, documents, summary = run_steps(wb, dry_run=False)
    assert issued == ["FA-2026-000003"]            # C003 now has a service; C001 and C002 skipped
    assert documents == ["documents/invoices/FA-2026-000002.pdf", "documents/invoices/FA-2026-000003.pdf"]


def test_documents_render_in_worker_processes(wb):
    build_world(wb)
    run_steps(wb, dry_run=False)
    with wb.db.transaction() as s:
        s.execute(sa.update(Invoice).values(pdf_path=None))
    for pdf in (wb.documents_dir / "invoices").glob("*.pdf"):
        pdf.unlink()
    ctx = prepare_run(wb.data_dir, "2026-03", False)
    try:
        documents = render_documents(ctx, workers=2)
    finally:
        ctx.wb.close()
    assert documents == ["documents/invoices/FA-2026-000001.pdf", "documents/invoices/FA-2026-000002.pdf"]
    assert all((wb.data_dir / d).read_bytes().startswith(b"%PDF-") for d in documents)


def test_from_enough_invoices_documents_render_in_workers_while_issuing_goes_on(wb, monkeypatch):
    """Each committed batch goes to two worker processes at once; render_documents waits for them.
    No call-detail annex is rendered by the cycle: e-mailing or a download renders it on demand."""
    from bluerocktel.billing import cycle
    from bluerocktel.documents import batch

    build_world(wb)
    monkeypatch.setattr(batch, "PIPELINE_FROM", 2)
    monkeypatch.setattr(batch, "PARALLEL_FROM", 2)
    monkeypatch.setattr(cycle, "ISSUE_BATCH", 1)
    ctx = prepare_run(wb.data_dir, "2026-03", False, issue_date="2026-04-01")
    try:
        issued = issue_invoices(ctx, build_drafts(ctx))
        pipeline = ctx.documents_pipeline
        assert pipeline is not None and pipeline.workers == 2 and len(pipeline.submitted) == 2
        documents = render_documents(ctx)
        assert ctx.documents_pipeline is None and pipeline._pool is None
        finish_run(ctx)
    finally:
        ctx.wb.close()
    assert issued == ["FA-2026-000001", "FA-2026-000002"]
    assert documents == [i.pdf_path for i in invoices(wb)] == [f"documents/invoices/{n}.pdf" for n in issued]
    assert all((wb.data_dir / d).read_bytes().startswith(b"%PDF-") for d in documents)
    assert [i.annex_path for i in invoices(wb)] == [None, None]
    assert sorted(p.name for p in (wb.documents_dir / "invoices").iterdir()) == [f"{n}.pdf" for n in issued]


def test_a_batch_that_fails_midway_leaves_no_invoice_and_takes_no_number(wb, monkeypatch):
    """Both drafts are issued in one transaction: an error after the inserts rolls back the invoices,
    their lines, audit entries and numbers; the run issued again takes the same numbers."""
    from bluerocktel.billing import payments
    from bluerocktel.db.models import InvoiceLine, InvoiceSequence

    build_world(wb)

    def broken(session, account_ids):
        raise RuntimeError("disk full")

    with monkeypatch.context() as patch, pytest.raises(RuntimeError, match="disk full"):
        patch.setattr(payments, "accounts_with_credit", broken)
        run_steps(wb, dry_run=False)
    with wb.db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(InvoiceLine)) == 0
        assert s.scalar(sa.select(sa.func.count()).where(AuditEntry.action == "invoice.issue")) == 0
        assert s.scalar(sa.select(sa.func.coalesce(sa.func.max(InvoiceSequence.last_number), 0))) == 0
    assert invoices(wb) == []
    *_, issued, documents, summary = run_steps(wb, dry_run=False)
    assert issued == ["FA-2026-000001", "FA-2026-000002"] and summary["skipped"] == []


def test_prepare_run_refuses_unknown_brand_and_bad_period(wb):
    from bluerocktel.errors import NotFoundError, UserFacingError

    with pytest.raises(NotFoundError, match="no brand"):
        prepare_run(wb.data_dir, "2026-03", False, brand_code="NOPE")
    with pytest.raises(UserFacingError, match="YYYY-MM"):
        prepare_run(wb.data_dir, "March", False)
    ctx = prepare_run(wb.data_dir, "2026-03", True)
    ctx.wb.close()
    with pytest.raises(UserFacingError, match="not for these parameters"):
        prepare_run(wb.data_dir, "2026-04", True, run_id=str(ctx.run_id))
    again = prepare_run(wb.data_dir, "2026-03", "true", run_id=str(ctx.run_id))   # the notebook's call
    finish_run(again)
    again.wb.close()
    with pytest.raises(UserFacingError, match="previewed already"):
        prepare_run(wb.data_dir, "2026-03", True, run_id=ctx.run_id)


def test_rate_usage_rates_the_periods_pending_cdrs(wb):
    from bluerocktel.billing.cycle import rate_usage

    start = dt.datetime(2026, 3, 10, 9, 0, tzinfo=dt.timezone.utc)
    pending = pa.Table.from_pylist([{
        "cdr_id": "c" * 32, "source": "t", "source_file": "t.csv", "source_line": 1, "start_at": start,
        "answer_at": start, "end_at": start + dt.timedelta(seconds=65), "duration_s": 65, "billsec_s": 60,
        "caller": "+33999999999", "callee": "+33612345678", "account_code": "", "channel": "SIP/x",
        "dst_channel": "SIP/y", "disposition": "ANSWERED", "direction": "out", "call_type": "voice",
        "unique_id": "u1"}], schema=lake.CDR_SCHEMA)
    lake.write_partition(wb.lake_dir, "cdrs", "2026-03", pending)
    ctx = prepare_run(wb.data_dir, "2026-03", "true")
    try:
        result = rate_usage(ctx)
        again = rate_usage(ctx)
    finally:
        ctx.wb.close()
    assert (result["considered"], result["unassigned"]) == (1, 1)    # nobody owns +33999999999
    assert again["considered"] == 0                                    # rated once only
    rated = lake.connect_duckdb().execute(
        f"SELECT cdr_id, rating_status FROM {lake.scan_sql(wb.lake_dir, 'rated')}").fetchall()
    assert rated == [("c" * 32, "unassigned")]


def test_two_concurrent_runs_bill_each_account_once_with_gapless_numbers(wb):
    import threading

    ids = build_world(wb)
    with wb.db.transaction() as s:
        brand_id = s.scalar(sa.select(Brand.id))
        trunk_id = s.scalar(sa.select(Product.id).where(Product.code == "TRUNK"))
        for i in range(20):
            account = Account(number=f"D{i:03d}", brand_id=brand_id, name=f"Client {i}")
            s.add(account)
            s.flush()
            s.add(Service(account_id=account.id, product_id=trunk_id, label="Trunk"))
    contexts = [prepare_run(wb.data_dir, "2026-03", False, issue_date="2026-04-01") for _ in range(2)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run(ctx):
        try:
            drafts = build_drafts(ctx)
            barrier.wait()
            issue_invoices(ctx, drafts)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(ctx,)) for ctx in contexts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ctx in contexts:
        ctx.wb.close()
    assert errors == []
    assert len(contexts[0].issued) + len(contexts[1].issued) == 22
    assert len(contexts[0].skipped) + len(contexts[1].skipped) == 22
    numbers = [i.number for i in invoices(wb)]
    assert numbers == [f"FA-2026-{n:06d}" for n in range(1, 23)]
    with wb.db.session() as s:
        per_account = s.execute(sa.select(Invoice.account_id, sa.func.count()).group_by(Invoice.account_id)).all()
    assert len(per_account) == 22 and all(count == 1 for _, count in per_account)
    assert ids["C003"] not in {account_id for account_id, _ in per_account}


@pytest.mark.parametrize("dry_run", [False, True])
def test_rating_waits_while_a_run_is_between_its_drafts_and_its_invoices(wb, dry_run):
    """A `rate` landing between build_drafts and issue_invoices would price calls that neither the
    invoices nor any adjustment bill; so a real run holds the rating lock until its invoices are
    issued (a dry run issues nothing and holds nothing)."""
    import threading

    from bluerocktel.billing.cycle import rate_usage
    from bluerocktel.rating import rate_pending

    ctx = prepare_run(wb.data_dir, "2026-03", dry_run, issue_date="2026-04-01")
    finished = threading.Event()
    try:
        rate_usage(ctx)
        drafts = build_drafts(ctx)
        rater = threading.Thread(target=lambda: (rate_pending(wb), finished.set()), daemon=True)
        rater.start()
        assert finished.wait(1.5) is dry_run
        issue_invoices(ctx, drafts)
        assert finished.wait(30)
        rater.join(5)
    finally:
        ctx.wb.close()


def test_issuing_bills_one_off_charges_once_and_keeps_the_parties_as_at_issue(wb):
    from bluerocktel.db.models import OneOffCharge

    ids = build_world(wb)
    with wb.db.transaction() as s:
        s.add(OneOffCharge(account_id=ids["C002"], description="Installation", unit_price=Decimal("50.00"),
                           charge_date=dt.date(2026, 3, 20)))
        s.add(OneOffCharge(account_id=ids["C002"], description="Next month", unit_price=Decimal("9.00"),
                           charge_date=dt.date(2026, 4, 1)))          # not before the period's end: not yet
    run_steps(wb, dry_run=False)
    c1, c2 = invoices(wb)
    # C002: 7.50 + 50.00 = 57.50; VAT 11.50; total 69.00
    assert (c2.subtotal_minor, c2.vat_minor, c2.total_minor) == (5750, 1150, 6900)
    assert [(line.kind, line.amount_minor) for line in c2.lines] == [("subscription", 750), ("one_off", 5000)]
    assert (c2.language, c2.vat_regime, c1.language) == ("en", "fr", "fr")
    assert c2.buyer["name"] == "Acme Ltd" and c2.seller["legal_name"] == "BlueRock Télécom SAS"
    with wb.db.session() as s:
        billed = dict(s.execute(sa.select(OneOffCharge.description, OneOffCharge.invoice_id)).all())
    assert billed == {"Installation": c2.id, "Next month": None}
    with wb.db.transaction() as s:      # the seller's identity changes later: the invoice keeps the old one
        s.scalar(sa.select(Brand)).legal_name = "BlueRock Télécom SA"
    assert invoices(wb)[1].seller["legal_name"] == "BlueRock Télécom SAS"


def test_each_issued_invoice_is_emailed_once_to_the_billing_contacts(wb, monkeypatch):
    import email
    import socket
    from email import policy

    from aiosmtpd.controller import Controller

    from bluerocktel.billing.cycle import email_invoices
    from bluerocktel.db.models import Contact, EmailMessage

    class Inbox:
        def __init__(self):
            self.envelopes = []

        async def handle_DATA(self, server, session, envelope):
            self.envelopes.append(envelope)
            return "250 OK"

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setenv("BLUEROCKTEL_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("BLUEROCKTEL_SMTP_PORT", str(port))
    try:
        ids = build_world(wb)
        with wb.db.transaction() as s:
            s.add_all([Contact(account_id=ids["C001"], first_name="A", last_name="Compta", role="billing",
                               email="compta@martin.example"),
                       Contact(account_id=ids["C001"], first_name="B", last_name="Tech", role="technical",
                               email="tech@martin.example")])
            s.get(Account, ids["C002"]).email = "accounts@acme.example"
        ctx = prepare_run(wb.data_dir, "2026-03", False, issue_date="2026-04-01")
        try:
            drafts = build_drafts(ctx)
            issue_invoices(ctx, drafts)
            render_documents(ctx)
            result = email_invoices(ctx)
            again = email_invoices(ctx)                  # a resumed run: nothing queued twice
        finally:
            ctx.wb.close()
    finally:
        controller.stop()
    assert result["outbox"]["sent"] == 2 and again["outbox"]["sent"] == 0
    assert sorted(e.rcpt_tos[0] for e in inbox.envelopes) == ["accounts@acme.example", "compta@martin.example"]
    messages = {m["To"]: m for m in (email.message_from_bytes(e.content, policy=policy.default)
                                     for e in inbox.envelopes)}
    french = messages["compta@martin.example"]
    assert french["Subject"] == "Votre facture FA-2026-000001"
    assert "d'un montant de 80,34\u00a0€, à régler avant le 2026-05-01" in french.get_body(("plain",)).get_content()
    # the invoice and its call-detail annex (C001 made calls)
    assert [(a.get_filename(), a.get_content()[:5]) for a in french.iter_attachments()] == [
        ("FA-2026-000001.pdf", b"%PDF-"), ("FA-2026-000001-annex.pdf", b"%PDF-")]
    english = messages["accounts@acme.example"]
    assert english["Subject"] == "Your invoice FA-2026-000002"
    assert "for €9.00, due by 2026-04-16" in english.get_body(("plain",)).get_content()
    assert [a.get_filename() for a in english.iter_attachments()] == ["FA-2026-000002.pdf"]
    for invoice in invoices(wb):
        assert invoice.status == "sent" and invoice.sent_at is not None
    with wb.db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(EmailMessage)) == 2
