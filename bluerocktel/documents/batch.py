"""Render the documents of many invoices: Factur-X PDF/A-3b plus call-detail annex, in parallel.

For each invoice: HTML → PDF/A-3b (WeasyPrint) → Factur-X CII embedded (checked against the
XSD; the schematron is for tests and on-demand checks, too slow for the hot path) →
``documents/invoices/<number>.pdf``, and the call-detail annex (ReportLab) →
``documents/invoices/<number>-annex.pdf`` when the period has calls.

The main process reads the database and the lake and builds the HTML, the XML and the annex
rows (cheap); the PDF work runs in ``workers`` spawned processes. Files are written atomically
(temp file, fsync, rename) and ``pdf_path`` / ``annex_path`` are set batch by batch, so an
interrupted run leaves either a finished document with its path or nothing.
"""

from __future__ import annotations

import os
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from bluerocktel.db.models import Invoice
from bluerocktel.documents.annex import AnnexCall, AnnexHeader, annex_header, read_annex_calls, render_call_annex
from bluerocktel.documents.content import invoice_content
from bluerocktel.documents.facturx import cii_xml, embed_facturx
from bluerocktel.documents.invoice import html_to_pdf, prepare_pdf_worker, render_content_html
from bluerocktel.errors import NotFoundError
from bluerocktel.vocabulary import InvoiceKind
from bluerocktel.workbench import Workbench

PARALLEL_FROM = 16      # invoices: fewer are rendered in this process (starting workers costs ~1 s)
BATCH = 200             # invoices per database read and per path update
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class RenderJob:
    """One invoice's prepared inputs; picklable for worker processes."""

    invoice_id: int
    number: str
    language: str
    html: str
    xml: bytes
    annex_calls: list[AnnexCall]
    annex_header: AnnexHeader


def render_invoice_documents(wb: Workbench, invoice_ids, workers: int | None = None) -> list[str]:
    """Render and store the Factur-X PDF (and annex) of each invoice; data-dir relative PDF paths, in order.

    ``workers``: processes for the PDF work; by default one per core (at most 4) from
    :data:`PARALLEL_FROM` invoices on, else this process alone.
    """
    ids = list(dict.fromkeys(invoice_ids))
    folder = wb.documents_dir / "invoices"
    folder.mkdir(parents=True, exist_ok=True)
    if workers is None:
        workers = min(os.cpu_count() or 1, 4) if len(ids) >= PARALLEL_FROM else 1
    pool = None
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=prepare_pdf_worker)   # warm up, then freeze the GC
    rendered: list[str] = []
    try:
        for i in range(0, len(ids), BATCH):
            jobs = prepare_jobs(wb, ids[i:i + BATCH])
            results = pool.map(render_job, jobs, chunksize=4) if pool else map(render_job, jobs)
            done = []
            for job, (pdf, annex) in zip(jobs, results):
                name = _UNSAFE.sub("_", job.number)
                pdf_path = write_file_atomically(folder / f"{name}.pdf", pdf)
                annex_path = None if annex is None else write_file_atomically(folder / f"{name}-annex.pdf", annex)
                done.append((job.invoice_id, _relative(wb, pdf_path), annex_path and _relative(wb, annex_path)))
            with wb.db.transaction() as s:
                for invoice_id, pdf_rel, annex_rel in done:
                    s.execute(sa.update(Invoice).where(Invoice.id == invoice_id)
                              .values(pdf_path=pdf_rel, annex_path=annex_rel))
            rendered.extend(pdf_rel for _, pdf_rel, _ in done)
    finally:
        if pool is not None:
            pool.shutdown()
    return rendered


def prepare_jobs(wb: Workbench, invoice_ids: list[int]) -> list[RenderJob]:
    """HTML, CII XML and annex rows of the invoices, in the order of ``invoice_ids``."""
    with wb.db.session() as s:
        invoices = {inv.id: inv for inv in s.scalars(
            sa.select(Invoice).where(Invoice.id.in_(invoice_ids))
            .options(selectinload(Invoice.lines), selectinload(Invoice.account), selectinload(Invoice.brand)))}
        missing = [i for i in invoice_ids if i not in invoices]
        if missing:
            raise NotFoundError(f"invoices not found: {', '.join(map(str, missing))}")
        calls = _annex_calls(wb, list(invoices.values()))
        jobs = []
        for invoice_id in invoice_ids:
            invoice = invoices[invoice_id]
            content = invoice_content(invoice)
            jobs.append(RenderJob(invoice_id, invoice.number, content.language,
                                  render_content_html(content, invoice.brand), cii_xml(content),
                                  calls.get((invoice.account_id, invoice.period_start, invoice.period_end), []),
                                  annex_header(invoice)))
    return jobs


def _annex_calls(wb: Workbench, invoices: list[Invoice]) -> dict[tuple, list[AnnexCall]]:
    """Calls per (account, period) for the invoices (not credit notes), one lake read per period."""
    by_period: dict[tuple, list[int]] = defaultdict(list)
    for invoice in invoices:
        if invoice.kind != InvoiceKind.CREDIT_NOTE:
            by_period[(invoice.period_start, invoice.period_end)].append(invoice.account_id)
    calls = {}
    for (start, end), account_ids in by_period.items():
        for account_id, rows in read_annex_calls(wb.lake_dir, account_ids, start, end).items():
            calls[(account_id, start, end)] = rows
    return calls


def render_job(job: RenderJob) -> tuple[bytes, bytes | None]:
    """(Factur-X PDF, annex PDF or None) of one prepared invoice; runs in worker processes."""
    pdf = embed_facturx(html_to_pdf(job.html), job.xml, lang=job.language)
    annex = render_call_annex(job.annex_calls, job.annex_header) if job.annex_calls else None
    return pdf, annex


def write_file_atomically(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder (fsync, rename)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def _relative(wb: Workbench, path: Path) -> str:
    return path.relative_to(wb.data_dir).as_posix()
