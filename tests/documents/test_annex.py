"""The call-detail annex lists the account's rated calls of the invoice period, once each, with
their latest rating, in the account's language and time zone."""

import datetime as dt

import pyarrow as pa
import pytest

from document_builders import issue, line, pdf_text
from bluerocktel import lake
from bluerocktel.documents.annex import AnnexCall, AnnexHeader, render_annex_pdf, render_call_annex

UTC = dt.timezone.utc
CALLS = line("Communications : 3 appels", 3, None, 37, unit="call", kind="usage")


def rated(cdr: str, account_id: int, start: dt.datetime, price_micro: int, *, status="rated",
          rated_at=dt.datetime(2026, 4, 1, tzinfo=UTC), callee="+33612345678", billsec=65) -> dict:
    return {"cdr_id": f"annex-{cdr}", "account_id": account_id, "start_at": start, "caller": "+33472000001",
            "callee": callee, "destination": "France Mobile", "zone": "fr_mobile", "call_type": "voice",
            "billsec_s": billsec, "billable_s": 120, "billable_units": 120, "price_micro": price_micro,
            "rating_status": status, "rated_at": rated_at}


@pytest.fixture(scope="module")
def march(docs_wb):
    """Account A: 3 billable March calls (one rated twice), plus calls that must not appear."""
    with docs_wb.db.session() as s:
        mine, other = issue(s, [CALLS]), issue(s, [CALLS], language="en")
        s.commit()
        a, b = mine.account_id, other.account_id
        ids = {"mine": mine.id, "other": other.id}
    march_2 = dt.datetime(2026, 3, 2, 8, 30, tzinfo=UTC)             # 09:30 in Paris
    rows = [
        rated("c1", a, march_2, 12_000, rated_at=dt.datetime(2026, 3, 3, tzinfo=UTC)),   # superseded below
        rated("c1", a, march_2, 12_345),                                                  # latest rating
        rated("c2", a, dt.datetime(2026, 3, 15, 12, 0, tzinfo=UTC), 10_000, callee="+33145000000", billsec=3725),
        rated("c3", a, dt.datetime(2026, 3, 31, 21, 59, tzinfo=UTC), 14_655, callee="+33699999999"),
        rated("c4", a, dt.datetime(2026, 3, 20, tzinfo=UTC), 0, status="unrated"),         # not billed
        rated("c5", b, dt.datetime(2026, 3, 20, tzinfo=UTC), 50_000, callee="+447700900000"),
    ]
    lake.write_partition(docs_wb.lake_dir, "rated", "2026-03", pa.Table.from_pylist(rows, schema=lake.RATED_SCHEMA))
    april = [rated("c6", a, dt.datetime(2026, 4, 1, 0, 0, tzinfo=UTC), 99_000)]           # next period
    lake.write_partition(docs_wb.lake_dir, "rated", "2026-04", pa.Table.from_pylist(april, schema=lake.RATED_SCHEMA))
    return ids


def load(wb, invoice_id):
    from bluerocktel.db.models import Invoice

    s = wb.db.session()
    return s, s.get(Invoice, invoice_id)


def test_annex_lists_each_billable_call_once_with_its_latest_rating(docs_wb, march):
    s, invoice = load(docs_wb, march["mine"])
    with s:
        text = pdf_text(render_annex_pdf(docs_wb, invoice))
    assert text.count("+33472000001") == 3                        # c1 once, c2, c3; not c4, c5, c6
    assert "02/03/2026 09:30:00" in text                           # Paris time (UTC+1 in March)
    assert "0,012345 €" in text and "0,012000 €" not in text       # c1 with its latest price
    assert "1:02:05" in text                                       # c2: 3,725 s
    assert "31/03/2026 23:59:00" in text                           # c3: 21:59 UTC, CEST (UTC+2) since 29 March
    # total: 12,345 + 10,000 + 14,655 = 37,000 µ€; 65 + 3,725 + 65 = 3,855 s = 1:04:15
    assert "3 communications 1:04:15 0,037000 €" in text
    assert "Détail des communications — Facture " + invoice.number in text
    assert "+447700900000" not in text and "+33699999999" in text


def test_annex_speaks_the_invoice_language(docs_wb, march):
    s, invoice = load(docs_wb, march["other"])
    with s:
        text = pdf_text(render_annex_pdf(docs_wb, invoice))
    assert "Call detail — Invoice " + invoice.number in text and "1 calls" in text
    assert "Caller Called Destination Duration Billed Amount excl. VAT" in text
    assert "€0.050000" in text


def test_no_annex_without_calls_nor_for_credit_notes(docs_wb, march):
    with docs_wb.db.session() as s:
        quiet = issue(s, [line("Trunk SIP", 1, "29.90", 2990)], period=(dt.date(2026, 5, 1), dt.date(2026, 6, 1)))
        assert render_annex_pdf(docs_wb, quiet) is None
        from bluerocktel.db.models import Invoice

        invoice = s.get(Invoice, march["mine"])
        credit = issue(s, [line("Avoir", 1, "0.37", 37, kind="credit")], credits=invoice)
        credit.account_id = invoice.account_id
        assert render_annex_pdf(docs_wb, credit) is None


def test_many_calls_make_every_row_over_pages():
    header = AnnexHeader("FA-2026-000001", dt.date(2026, 10, 1), dt.date(2026, 10, 31), "fr", "EUR",
                         "Europe/Paris", "BlueRock Télécom", "#0b3d91", "#f5a623")
    first = dt.datetime(2026, 10, 2, 8, tzinfo=UTC)
    calls = [AnnexCall(first + dt.timedelta(minutes=i), "+33472000001", f"+3361234{i:04d}", "France Mobile",
                       "voice", 30, 60, 10_000) for i in range(250)]
    text = pdf_text(render_call_annex(calls, header))
    assert text.count("+3361234") == 250
    assert "250 communications 2:05:00 2,500000 €" in text          # 250 × 30 s; 250 × 0.01 €
    assert "Page 1/5" in text and "Page 5/5" in text and "Page 6" not in text


def test_an_annex_rendered_later_lists_the_calls_as_rated_when_the_invoice_was_issued(docs_wb):
    """The cycle renders annexes on demand, maybe weeks after issuing: a re-rating or a late call
    rated after the invoice was created is billed later (adjustments), not on this annex."""
    with docs_wb.db.session() as s:
        invoice = issue(s, [CALLS])
        invoice.created_at = dt.datetime(2026, 4, 2, 6, 0, tzinfo=UTC)
        s.commit()
        account_id, invoice_id = invoice.account_id, invoice.id
    march_9 = dt.datetime(2026, 3, 9, 10, 0, tzinfo=UTC)
    rows = [rated("asof-1", account_id, march_9, 20_000, rated_at=dt.datetime(2026, 4, 1, tzinfo=UTC)),
            rated("asof-1", account_id, march_9, 30_000, rated_at=dt.datetime(2026, 5, 10, tzinfo=UTC)),
            rated("asof-2", account_id, march_9, 40_000, rated_at=dt.datetime(2026, 5, 10, tzinfo=UTC))]
    lake.write_partition(docs_wb.lake_dir, "rated", "2026-03", pa.Table.from_pylist(rows, schema=lake.RATED_SCHEMA))
    s, invoice = load(docs_wb, invoice_id)
    with s:
        text = pdf_text(render_annex_pdf(docs_wb, invoice))
    assert "1 communications 1:05 0,020000 €" in text and "0,030000" not in text and "0,040000" not in text


def test_the_header_band_and_the_column_titles_are_in_the_brand_colours():
    import io
    import re

    import pypdf

    header = AnnexHeader("FA-2026-000001", dt.date(2026, 10, 1), dt.date(2026, 10, 31), "fr", "EUR",
                         "Europe/Paris", "BlueRock Télécom", "#0b3d91", "#f5a623")
    call = AnnexCall(dt.datetime(2026, 10, 2, 8, tzinfo=UTC), "+33472000001", "+33612340000", "France Mobile",
                     "voice", 30, 60, 10_000)
    page = pypdf.PdfReader(io.BytesIO(render_call_annex([call], header))).pages[0]
    fills = re.findall(r"([\d.]+) ([\d.]+) ([\d.]+) rg", page.get_contents().get_data().decode("latin-1"))
    assert all(0 <= float(v) <= 1 for fill in fills for v in fill)
    colours = {tuple(round(float(v) * 255) for v in fill) for fill in fills}
    assert {(0x0b, 0x3d, 0x91), (0xf5, 0xa6, 0x23)} <= colours
