"""Throughput of invoice documents: Factur-X PDFs (1 and 2 worker processes) and call-detail annex pages.

    .venv/bin/python benchmarks/documents.py [--invoices 40] [--runs 3]

Invoices: in-memory ORM objects (no database), 5 lines each (subscription, two usage zones, a
one-off charge, a discount), FR 20 %, the demo brand's SVG logo. Each is prepared once (printed
strings + CII XML, the main process's share); the timed part is what ``documents/batch.py`` runs
in its workers (``render_job``): the Factur-X PDF/A-3b (ReportLab page, logo placed, PDF/A and
the XSD-checked CII added by pikepdf), in processes prepared by
``prepare_pdf_worker`` (the 1-worker figure prepares this process; the 2-worker one uses spawned
processes with it as initializer, warmed up by one invoice each), as in a billing run that
renders thousands. ``--profile`` prints where one worker's CPU goes instead (cProfile, cumulative).

Annex: ReportLab pages per second for a document of 100 and of 1,000 calls (the document's
pages divided by its rendering time). Prints the median of ``--runs`` timed runs after a warm-up,
per wall-clock second and, in this process, per CPU second (the figure to trust on a busy machine).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from decimal import Decimal

from bluerocktel.db.models import Account, Brand, Invoice, InvoiceLine
from bluerocktel.demo.data import BLUEROCK_LOGO
from bluerocktel.documents.annex import AnnexCall, AnnexHeader, render_call_annex
from bluerocktel.documents.batch import RenderJob, render_job
from bluerocktel.documents.content import invoice_content
from bluerocktel.documents.facturx import cii_xml
from bluerocktel.documents.invoice import invoice_page, prepare_pdf_worker
from bluerocktel.documents.parties import party_snapshot_buyer, party_snapshot_seller

UTC = dt.UTC
HEADER = AnnexHeader("FA-2026-000001", dt.date(2026, 10, 1), dt.date(2026, 10, 31), "fr", "EUR", "Europe/Paris",
                     "BlueRock Télécom", "#0b3d91", "#f5a623")


def build_invoice(n: int) -> Invoice:
    brand = Brand(code="BRT", name="BlueRock Télécom", legal_name="BlueRock Télécom SAS", siren="912345678",
                  siret="91234567800017", vat_number="FR40912345678", legal_form="SAS", share_capital="50 000 €",
                  rcs="RCS Lyon 912 345 678", address="12 quai Rambaud", postcode="69002", city="Lyon",
                  country="FR", iban="FR7630006000011234567890189", bic="AGRIFRPP", late_penalty_rate=Decimal("0.12"),
                  primary_color="#0b3d91", accent_color="#f5a623", logo_svg=BLUEROCK_LOGO)
    account = Account(id=n, number=f"C{n:06d}", name=f"Client {n} SARL", kind="business", address="3 place du Marché",
                      postcode="69001", city="Lyon", country="FR", language="fr", vat_regime="fr",
                      vat_number="FR44999999999", siren="999999999", payment_method="transfer")
    amounts = [("Trunk SIP — 4 canaux", 2, "29.90", 5980), ("Appels France fixe : 412 appels", 412, None, 1873),
               ("Appels mobiles : 96 appels", 96, None, 2411), ("Frais de mise en service", 1, "49.00", 4900),
               ("Remise fidélité 10 %", 1, "-5.98", -598)]
    lines = [InvoiceLine(position=i, kind="subscription", description=text, quantity=Decimal(qty), unit="unit",
                         unit_price_precise=None if price is None else Decimal(price),
                         amount_precise=Decimal(minor) / 100, amount_minor=minor, vat_rate=Decimal("0.20"))
             for i, (text, qty, price, minor) in enumerate(amounts, start=1)]
    subtotal = sum(minor for *_, minor in amounts)          # 145.66 €; VAT 29.132 → 29.13
    invoice = Invoice(id=n, number=f"FA-2026-{n:06d}", kind="invoice", currency="EUR", account_id=n,
                      period_start=dt.date(2026, 10, 1), period_end=dt.date(2026, 11, 1),
                      issue_date=dt.date(2026, 11, 1), due_date=dt.date(2026, 12, 1), subtotal_minor=subtotal,
                      vat_minor=2913, total_minor=subtotal + 2913, language="fr", vat_regime="fr",
                      seller=party_snapshot_seller(brand), buyer=party_snapshot_buyer(account))
    invoice.brand, invoice.account, invoice.lines = brand, account, lines
    return invoice


def prepare(n: int) -> RenderJob:
    invoice = build_invoice(n)
    content = invoice_content(invoice)
    return RenderJob(n, invoice.number, invoice_page(content, invoice.brand), cii_xml(content), [],
                     HEADER)


def invoices_per_second(jobs: list[RenderJob], workers: int, runs: int) -> tuple[float, float | None]:
    """(invoices per wall-clock second, per CPU second of this process or None with workers)."""
    rates, cpu_rates = [], []
    if workers == 1:
        prepare_pdf_worker()
        render_job(jobs[0])
        for _ in range(runs):
            start, cpu = time.perf_counter(), time.process_time()
            list(map(render_job, jobs))
            rates.append(len(jobs) / (time.perf_counter() - start))
            cpu_rates.append(len(jobs) / (time.process_time() - cpu))
        return statistics.median(rates), statistics.median(cpu_rates)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=prepare_pdf_worker) as pool:
        list(pool.map(render_job, jobs[:workers], chunksize=1))
        for _ in range(runs):
            start = time.perf_counter()
            list(pool.map(render_job, jobs, chunksize=4))
            rates.append(len(jobs) / (time.perf_counter() - start))
    return statistics.median(rates), None


def annex_pages_per_second(calls: int, runs: int) -> tuple[float, float, int]:
    """(pages per wall-clock second, per CPU second, pages of the document)."""
    import pypdf

    first = dt.datetime(2026, 10, 2, 8, tzinfo=UTC)
    rows = [AnnexCall(first + dt.timedelta(minutes=7 * i), "+33472000001", f"+336{i:08d}", "France Mobile", "voice",
                      30 + i % 300, 60 * (1 + (30 + i % 300) // 60), 12_345 + i) for i in range(calls)]
    pages = len(pypdf.PdfReader(io.BytesIO(render_call_annex(rows, HEADER))).pages)
    rates, cpu_rates = [], []
    for _ in range(runs):
        start, cpu = time.perf_counter(), time.process_time()
        render_call_annex(rows, HEADER)
        rates.append(pages / (time.perf_counter() - start))
        cpu_rates.append(pages / (time.process_time() - cpu))
    return statistics.median(rates), statistics.median(cpu_rates), pages


def profile(jobs: list[RenderJob]) -> None:
    """cProfile of rendering ``jobs`` in this (prepared) process: the top functions by cumulative time."""
    import cProfile
    import pstats

    prepare_pdf_worker()
    render_job(jobs[0])
    profiler = cProfile.Profile()
    profiler.runcall(lambda: list(map(render_job, jobs)))
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=40)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="profile one worker instead of timing")
    args = parser.parse_args()
    jobs = [prepare(n) for n in range(1, args.invoices + 1)]
    if args.profile:
        profile(jobs)
        return
    for workers in (1, 2):
        rate, cpu_rate = invoices_per_second(jobs, workers, args.runs)
        per_cpu = f" ({cpu_rate:.1f} per CPU second)" if cpu_rate else ""
        print(f"Factur-X PDF (ReportLab page, PDF/A-3b + CII XSD-checked and attached by pikepdf), {workers} worker(s): "
              f"{rate:.1f} invoices/s{per_cpu}")
    for calls in (100, 1000):
        rate, cpu_rate, pages = annex_pages_per_second(calls, args.runs)
        print(f"call-detail annex, {calls} calls ({pages} pages): {rate:.0f} pages/s, {rate / pages:.1f} documents/s "
              f"({cpu_rate:.0f} pages per CPU second)")


if __name__ == "__main__":
    main()
