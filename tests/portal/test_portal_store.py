"""PortalStore is scoped to one customer's account; StaffStore lists and searches."""

from __future__ import annotations

import datetime as dt

import pytest

from bluerocktel.errors import NotFoundError
from bluerocktel.portal import PortalStore, StaffStore
from bluerocktel.security import AuthError


def test_summary_and_invoices_are_the_customers_own(wb, sample):
    store = PortalStore(wb, sample.user_ids["alice"])
    summary = store.account_summary()
    assert (summary.number, summary.name, summary.unpaid_invoices, summary.unpaid_total_minor) == \
        ("C0001", "Boulangerie Martin", 1, 3600)
    assert [i.number for i in store.invoices()] == ["FA-2026-000001"]
    assert store.invoice(sample.invoice_ids["martin"]).total_minor == 3600
    assert [s.label for s in store.services()] == ["SIP trunk C0001"]


def test_another_accounts_invoice_is_not_found(wb, sample):
    store = PortalStore(wb, sample.user_ids["alice"])
    path, filename = store.invoice_pdf_path(sample.invoice_ids["martin"])
    assert path.read_bytes().startswith(b"%PDF") and filename == "FA-2026-000001.pdf"
    for invoice_id in (sample.invoice_ids["durand"], 999_999):
        with pytest.raises(NotFoundError):
            store.invoice_pdf_path(invoice_id)
        with pytest.raises(NotFoundError):
            store.invoice(invoice_id)


def test_pdf_path_must_stay_inside_the_data_dir(wb, sample):
    from bluerocktel.db.models import Invoice

    with wb.db.transaction() as s:
        s.get(Invoice, sample.invoice_ids["martin"]).pdf_path = "../../etc/passwd"
    with pytest.raises(NotFoundError):
        PortalStore(wb, sample.user_ids["alice"]).invoice_pdf_path(sample.invoice_ids["martin"])


def test_only_customers_get_a_portal_store(wb, sample):
    with pytest.raises(AuthError):
        PortalStore(wb, sample.user_ids["admin"])
    with pytest.raises(AuthError):
        PortalStore(wb, 999_999)


def test_call_log_is_paginated_newest_first_and_scoped(wb, sample):
    store = PortalStore(wb, sample.user_ids["alice"])
    first = store.calls(offset=0, limit=25)
    assert (first.total, len(first.rows), first.page, first.pages) == (60, 25, 1, 3)
    starts = [r["start_at"] for r in first.rows]
    assert starts == sorted(starts, reverse=True)
    assert starts[0] == dt.datetime(2026, 10, 2, 8, tzinfo=dt.timezone.utc) + dt.timedelta(hours=59)
    last = store.calls(offset=50, limit=25)
    assert (len(last.rows), last.page) == (10, 3)
    assert {r["caller"] for r in first.rows + last.rows} == {"+33472000001"}
    assert isinstance(first.rows[0]["price_micro"], int)
    bob = PortalStore(wb, sample.user_ids["bob"]).calls()
    assert bob.total == 5 and {r["caller"] for r in bob.rows} == {"+33493000002"}


def test_call_log_of_an_empty_lake(wb, sample):
    import shutil

    shutil.rmtree(wb.lake_dir)
    page = PortalStore(wb, sample.user_ids["alice"]).calls()
    assert (page.total, page.rows, page.pages) == (0, [], 1)


def test_staff_accounts_search_and_paging(wb, sample):
    store = StaffStore(wb)
    everyone = store.accounts()
    assert everyone.total == 2 and [a.number for a in everyone.rows] == ["C0001", "C0002"]
    assert [a.brand for a in everyone.rows] == ["BRT", "AZU"]
    assert [a.name for a in store.accounts("durand").rows] == ["Cabinet Durand"]
    assert [a.name for a in store.accounts("LYON").rows] == ["Boulangerie Martin"]
    assert store.accounts("100%_").total == 0                  # LIKE wildcards are literal
    second = store.accounts(offset=1, limit=1)
    assert second.total == 2 and [a.number for a in second.rows] == ["C0002"]


def test_staff_billing_runs(wb, sample):
    [run] = StaffStore(wb).billing_runs()
    assert (run.id, run.period, run.status, run.invoices) == (sample.billing_run_id, "2026-10", "completed", 2)



def test_call_log_shows_a_re_rated_call_once_with_its_latest_price(wb, sample):
    """A CDR rated twice is one call at its latest price; one that re-rating moved to another
    account leaves this customer's log and appears in the other's."""
    import pyarrow as pa

    from bluerocktel.lake import RATED_SCHEMA, read_table, write_partition

    rows = read_table(wb.lake_dir, "rated", ["2026-10"], order_by="start_at").to_pylist()
    alice_rows = [r for r in rows if r["caller"] == "+33472000001"]
    bob_account = next(r["account_id"] for r in rows if r["caller"] == "+33493000002")
    repriced = dict(alice_rows[0], price_micro=999_999, rated_at=alice_rows[0]["rated_at"] + dt.timedelta(days=1))
    moved = dict(alice_rows[1], account_id=bob_account, rated_at=alice_rows[1]["rated_at"] + dt.timedelta(days=1))
    write_partition(wb.lake_dir, "rated", "2026-10", pa.Table.from_pylist([repriced, moved], schema=RATED_SCHEMA))

    page = PortalStore(wb, sample.user_ids["alice"]).calls(limit=100)
    assert page.total == len(page.rows) == 59
    assert sum(r["price_micro"] == 999_999 for r in page.rows) == 1
    assert alice_rows[0]["price_micro"] not in {r["price_micro"] for r in page.rows}
    assert PortalStore(wb, sample.user_ids["bob"]).calls().total == 6
