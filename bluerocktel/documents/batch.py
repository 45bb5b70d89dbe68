"""Render the documents of many invoices: Factur-X PDF/A-3b and call-detail annex, in parallel.

For each invoice: the printed page (ReportLab) → PDF/A-3b with the Factur-X CII embedded
(pikepdf; the CII checked against the XSD, the schematron being for tests and on-demand checks,
too slow for the hot path) →
``documents/invoices/<number>.pdf``, and the call-detail annex (ReportLab) →
``documents/invoices/<number>-annex.pdf`` when the period has calls.

The main process reads the database (and the lake for the annex rows) and builds the page's
strings and the XML (about 1.5 ms an invoice); worker processes render and write the files atomically (temp
file, fsync, rename); the main process records ``pdf_path`` / ``annex_path`` batch by batch. An
interrupted run leaves finished documents with their paths, and maybe a few finished files
without a path, which the next run renders again.

A :class:`DocumentPipeline` keeps its workers busy while its caller goes on: the billing cycle
submits each batch of invoices as soon as it is committed and issues the next meanwhile.

The billing cycle renders the invoice PDFs only; the annex (about 0.1 s of CPU for 1,000 calls,
as much as the invoice) is rendered on demand by :func:`render_annexes`, when the e-mail that
attaches it is built or when it is first downloaded, then kept (``annex_path``). It lists the
calls as they were rated when the invoice was issued: a rating made after the invoice's
``created_at`` (a re-rating, billed as an adjustment later) does not change it.
"""

from __future__ import annotations

import os
import re
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from bluerocktel.db.models import Invoice
from bluerocktel.documents.annex import AnnexCall, AnnexHeader, annex_header, read_annex_calls, render_call_annex
from bluerocktel.documents.content import invoice_content
from bluerocktel.documents.facturx import cii_xml
from bluerocktel.documents.invoice import InvoicePage, invoice_page, page_to_pdf, prepare_pdf_worker
from bluerocktel.errors import NotFoundError
from bluerocktel.vocabulary import InvoiceKind
from bluerocktel.workbench import Workbench

PARALLEL_FROM = 16      # invoices: fewer are rendered in this process (starting workers costs ~1 s)
PIPELINE_FROM = 200     # invoices: from this many, the cycle renders while it issues
BATCH = 200             # invoices per database read, per lake read and per path update
CHUNK = 4               # invoices per task sent to a worker
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class RenderJob:
    """One invoice's prepared inputs; picklable for worker processes."""

    invoice_id: int
    number: str
    page: InvoicePage | None            # None: no invoice PDF wanted
    xml: bytes | None
    annex_calls: list[AnnexCall]        # empty: no annex
    annex_header: AnnexHeader | None


def default_workers(invoices: int) -> int:
    """Worker processes for ``invoices``: one per core (at most 4) from :data:`PARALLEL_FROM` on, else 1."""
    return min(os.cpu_count() or 1, 4) if invoices >= PARALLEL_FROM else 1


def render_invoice_documents(wb: Workbench, invoice_ids, workers: int | None = None) -> list[str]:
    """Render and store the Factur-X PDF and the annex of each invoice; data-dir relative PDF paths, in order.

    ``workers``: processes for the PDF work (default: :func:`default_workers`).
    """
    ids = list(dict.fromkeys(invoice_ids))
    with wb.db.session() as s:          # all refused before anything is written
        found = set(s.scalars(sa.select(Invoice.id).where(Invoice.id.in_(ids))))
    if missing := [i for i in ids if i not in found]:
        raise NotFoundError(f"invoices not found: {', '.join(map(str, missing))}")
    pipeline = DocumentPipeline(wb, default_workers(len(ids)) if workers is None else workers)
    pipeline.submit(ids)
    return [pdf for _, pdf, _ in pipeline.finish()]


def render_annexes(wb: Workbench, invoice_ids, workers: int | None = None) -> dict[int, str]:
    """``{invoice id: annex path}`` of the invoices whose period has calls: the annexes kept from
    before, the others rendered now and kept (``annex_path``). Credit notes have none."""
    ids = list(dict.fromkeys(invoice_ids))
    with wb.db.session() as s:
        rows = s.execute(sa.select(Invoice.id, Invoice.kind, Invoice.annex_path).where(Invoice.id.in_(ids))).all()
    kept = {i: path for i, _, path in rows if path and (wb.data_dir / path).is_file()}
    todo = [i for i, kind, _ in rows if i not in kept and kind != InvoiceKind.CREDIT_NOTE]
    pipeline = DocumentPipeline(wb, default_workers(len(todo)) if workers is None else workers, pdf=False)
    pipeline.submit(todo)
    return {**kept, **{i: annex for i, _, annex in pipeline.finish() if annex}}


class DocumentPipeline:
    """Renders the documents of the invoices submitted, in ``workers`` processes (this one when 1).

    :meth:`submit` returns at once with workers (their queue is fed :data:`BATCH` invoices at a
    time, so memory stays bounded however many are submitted); :meth:`finish` renders what is
    left, waits and returns ``(invoice id, pdf path, annex path)`` in the order submitted.
    ``pdf`` / ``annex`` choose the documents; the paths of those chosen are recorded (None: no annex).
    """

    def __init__(self, wb: Workbench, workers: int = 1, *, pdf: bool = True, annex: bool = True):
        self.wb, self.workers, self.pdf, self.annex = wb, workers, pdf, annex
        self.folder = wb.documents_dir / "invoices"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.submitted: set[int] = set()
        self._waiting: deque[int] = deque()       # submitted, not prepared yet
        self._running: deque = deque()            # (invoices, future) sent to the workers, in order
        self._in_flight = 0
        self._unrecorded: list[tuple[int, str | None, str | None]] = []
        self._done: list[tuple[int, str | None, str | None]] = []
        self._pool = None

    def submit(self, invoice_ids) -> None:
        new = [i for i in dict.fromkeys(invoice_ids) if i not in self.submitted]
        self.submitted.update(new)
        self._waiting.extend(new)
        if self.workers > 1:
            self._feed()

    def finish(self) -> list[tuple[int, str | None, str | None]]:
        try:
            while self._waiting or self._running:
                self._feed()
                self._collect(wait=True)
            self._record()
        finally:
            self.close()
        return self._done

    def close(self) -> None:
        """Stop the workers (what they were doing is lost; finished files are rendered again next time)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def _feed(self) -> None:
        """Record what is done; prepare and send the next batch while the workers have less than one queued."""
        self._collect(wait=False)
        while self._waiting and self._in_flight < BATCH:
            ids = [self._waiting.popleft() for _ in range(min(BATCH, len(self._waiting)))]
            jobs = prepare_jobs(self.wb, ids, pdf=self.pdf, annex=self.annex)
            if self.workers <= 1:
                self._unrecorded.extend(render_and_store(self.wb.data_dir, self.folder, jobs))
                self._record()
                continue
            pool = self._executor()
            for i in range(0, len(jobs), CHUNK):
                chunk = jobs[i:i + CHUNK]
                self._running.append((len(chunk), pool.submit(render_and_store, self.wb.data_dir, self.folder, chunk)))
                self._in_flight += len(chunk)

    def _collect(self, wait: bool) -> None:
        """Take the results of the oldest tasks that are done, waiting for the first one when ``wait``
        (a task that failed is left for :meth:`finish` to raise: the caller's work goes on)."""
        try:
            while self._running and (wait or self._running[0][1].done()
                                     and self._running[0][1].exception() is None):
                count, future = self._running[0]
                self._unrecorded.extend(future.result())
                self._running.popleft()
                self._in_flight -= count
                wait = False
        except BaseException:
            self._record()          # keep what was finished
            raise
        if len(self._unrecorded) >= BATCH:
            self._record()

    def _record(self) -> None:
        if not self._unrecorded:
            return
        with self.wb.db.transaction() as s:
            for invoice_id, pdf, annex in self._unrecorded:
                values = {**({"pdf_path": pdf} if self.pdf else {}), **({"annex_path": annex} if self.annex else {})}
                s.execute(sa.update(Invoice).where(Invoice.id == invoice_id).values(**values))
        self._done.extend(self._unrecorded)
        self._unrecorded = []

    def _executor(self):
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=prepare_pdf_worker if self.pdf else None)
        return self._pool


def prepare_jobs(wb: Workbench, invoice_ids: list[int], *, pdf: bool = True, annex: bool = True) -> list[RenderJob]:
    """Printed page and CII XML (``pdf``), annex rows (``annex``) of the invoices, in the order of ``invoice_ids``."""
    with wb.db.session() as s:
        invoices = {inv.id: inv for inv in s.scalars(
            sa.select(Invoice).where(Invoice.id.in_(invoice_ids))
            .options(selectinload(Invoice.lines), selectinload(Invoice.account), selectinload(Invoice.brand)))}
        missing = [i for i in invoice_ids if i not in invoices]
        if missing:
            raise NotFoundError(f"invoices not found: {', '.join(map(str, missing))}")
        calls = _annex_calls(wb, list(invoices.values())) if annex else {}
        jobs = []
        for invoice_id in invoice_ids:
            invoice = invoices[invoice_id]
            content = invoice_content(invoice)
            page, xml = (invoice_page(content, invoice.brand), cii_xml(content)) if pdf else (None, None)
            jobs.append(RenderJob(invoice_id, invoice.number, page, xml,
                                  calls.get(invoice.id, []), annex_header(invoice) if annex else None))
    return jobs


def _annex_calls(wb: Workbench, invoices: list[Invoice]) -> dict[int, list[AnnexCall]]:
    """Calls per invoice (not credit notes) as rated when it was issued, one lake read per period."""
    by_period: dict[tuple, dict[int, Invoice]] = defaultdict(dict)
    for invoice in invoices:
        if invoice.kind != InvoiceKind.CREDIT_NOTE:
            by_period[(invoice.period_start, invoice.period_end)][invoice.account_id] = invoice
    calls = {}
    for (start, end), by_account in by_period.items():
        as_of = {account_id: invoice.created_at for account_id, invoice in by_account.items()}
        for account_id, rows in read_annex_calls(wb.lake_dir, list(by_account), start, end, as_of).items():
            calls[by_account[account_id].id] = rows
    return calls


def render_job(job: RenderJob) -> tuple[bytes | None, bytes | None]:
    """(Factur-X PDF, annex PDF) of one prepared invoice, each None when not wanted or, for the
    annex, without calls; runs in worker processes."""
    pdf = None if job.page is None else page_to_pdf(job.page, job.xml)
    annex = render_call_annex(job.annex_calls, job.annex_header) if job.annex_calls else None
    return pdf, annex


def render_and_store(data_dir: Path, folder: Path, jobs: list[RenderJob]) -> list[tuple[int, str | None, str | None]]:
    """Render ``jobs`` and write their files in ``folder``: ``(invoice id, pdf path, annex path)``, relative
    to ``data_dir``."""
    stored = []
    for job in jobs:
        pdf, annex = render_job(job)
        name = _UNSAFE.sub("_", job.number)
        paths = [None if data is None else write_file_atomically(folder / f"{name}{suffix}", data)
                 .relative_to(data_dir).as_posix() for data, suffix in ((pdf, ".pdf"), (annex, "-annex.pdf"))]
        stored.append((job.invoice_id, *paths))
    return stored


def write_file_atomically(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder (fsync, rename)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path
