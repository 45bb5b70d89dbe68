"""Batch rendering: each invoice gets its Factur-X PDF (and annex when it has calls) written
atomically, with its paths stored; two worker processes give the same documents as one."""

import datetime as dt

import pyarrow as pa
import pytest
import sqlalchemy as sa

from document_builders import issue, line, pdf_text
from bluerocktel import lake
from bluerocktel.db.models import Invoice
from bluerocktel.documents.batch import render_invoice_documents
from bluerocktel.documents.facturx import extract_facturx_xml, facturx_xml
from bluerocktel.documents.validation import validate_facturx_xml
from bluerocktel.errors import NotFoundError

UTC = dt.timezone.utc


def store_invoices(wb) -> list[int]:
    """Three invoices (the first with 2 rated calls in March) and a credit note of the first."""
    with wb.db.transaction() as s:
        calls = issue(s, [line("Trunk SIP", 1, "29.90", 2990), line("Appels", 2, None, 25, unit="call", kind="usage")])
        plain = issue(s, [line("Trunk SIP", 1, "29.90", 2990)], language="en")
        reverse = issue(s, [line("Trunk SIP", 1, "29.90", 2990, "0")], vat_regime="eu_reverse_charge",
                        country="DE", buyer_vat="DE123456789")
        credit = issue(s, [line("Avoir", 1, "29.90", 2990, kind="credit")], credits=calls, reason="Erreur")
        ids = [calls.id, plain.id, reverse.id, credit.id]
        account_id = calls.account_id
    rows = [{"cdr_id": f"batch-{account_id}-{i}", "account_id": account_id,
             "start_at": dt.datetime(2026, 3, 5 + i, 9, tzinfo=UTC),
             "caller": "+33472000001", "callee": f"+3361234000{i}", "destination": "France Mobile",
             "call_type": "voice", "billsec_s": 42, "billable_units": 60, "price_micro": 125_000,
             "rating_status": "rated", "rated_at": dt.datetime(2026, 4, 1, tzinfo=UTC)} for i in range(2)]
    lake.write_partition(wb.lake_dir, "rated", "2026-03", pa.Table.from_pylist(rows, schema=lake.RATED_SCHEMA))
    return ids


def test_batch_writes_facturx_pdfs_and_annexes_and_records_their_paths(wb):
    """On SQLite and PostgreSQL, in this process."""
    ids = store_invoices(wb)
    check_rendered(wb, ids, render_invoice_documents(wb, ids))


def test_two_worker_processes_render_the_same_documents(docs_wb):
    ids = store_invoices(docs_wb)
    check_rendered(docs_wb, ids, render_invoice_documents(docs_wb, ids, workers=2))


def check_rendered(wb, ids: list[int], paths: list[str]) -> None:
    with wb.db.session() as s:
        invoices = {inv.id: inv for inv in s.scalars(sa.select(Invoice).where(Invoice.id.in_(ids)))}
        assert paths == [invoices[i].pdf_path for i in ids]
        assert paths[0] == f"documents/invoices/{invoices[ids[0]].number}.pdf"
        for invoice_id in ids:
            pdf = (wb.data_dir / invoices[invoice_id].pdf_path).read_bytes()
            embedded = extract_facturx_xml(pdf)
            assert embedded == facturx_xml(invoices[invoice_id])
            assert validate_facturx_xml(embedded) == []
        annex_paths = [invoices[i].annex_path for i in ids]
    assert annex_paths == [f"documents/invoices/{invoices[ids[0]].number}-annex.pdf", None, None, None]
    annex = pdf_text((wb.data_dir / annex_paths[0]).read_bytes())
    assert annex.count("+3361234000") == 2 and "2 communications 1:24 0,250000 €" in annex
    assert "Autoliquidation" in pdf_text((wb.data_dir / paths[2]).read_bytes())
    leftovers = [p.name for p in (wb.documents_dir / "invoices").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_unknown_invoice_ids_are_refused_before_anything_is_written(docs_wb):
    ids = store_invoices(docs_wb)
    with pytest.raises(NotFoundError, match="invoices not found: 999999"):
        render_invoice_documents(docs_wb, [ids[0], 999999])
    with docs_wb.db.session() as s:
        invoice = s.get(Invoice, ids[0])
        assert invoice.pdf_path is None
        assert not (docs_wb.documents_dir / "invoices" / f"{invoice.number}.pdf").exists()


def test_annexes_are_rendered_on_demand_once_then_kept(docs_wb, monkeypatch):
    from bluerocktel.documents import batch
    from bluerocktel.documents.batch import render_annexes

    ids = store_invoices(docs_wb)
    with docs_wb.db.session() as s:
        number = s.get(Invoice, ids[0]).number
    expected = {ids[0]: f"documents/invoices/{number}-annex.pdf"}
    assert render_annexes(docs_wb, ids) == expected                 # calls on the first only; no PDF
    with docs_wb.db.session() as s:
        stored = {i.id: (i.pdf_path, i.annex_path) for i in s.scalars(sa.select(Invoice).where(Invoice.id.in_(ids)))}
    assert stored == {ids[0]: (None, expected[ids[0]]), ids[1]: (None, None), ids[2]: (None, None),
                      ids[3]: (None, None)}

    def refused(*args):
        raise AssertionError("rendered again")

    with monkeypatch.context() as patch:
        patch.setattr(batch, "render_call_annex", refused)
        assert render_annexes(docs_wb, [ids[0]]) == expected        # kept: not rendered again
    (docs_wb.data_dir / expected[ids[0]]).unlink()
    assert render_annexes(docs_wb, [ids[0]]) == expected            # the file is gone: rendered again
    assert "2 communications" in pdf_text((docs_wb.data_dir / expected[ids[0]]).read_bytes())
