"""Invoice numbers: gapless and unique per brand and year, never burned by a failed transaction."""

import threading

import pytest
import sqlalchemy as sa

from bluerocktel.billing.numbering import allocate_invoice_number, format_invoice_number
from bluerocktel.db.models import Brand, InvoiceSequence
from bluerocktel.errors import UserFacingError


def _brands(wb):
    with wb.db.transaction() as s:
        a = Brand(code="A", name="A", legal_name="A SAS", invoice_prefix="FA")
        b = Brand(code="B", name="B", legal_name="B SAS", invoice_prefix="BR")
        s.add_all([a, b])
    return a, b


def _take(wb, brand, year):
    with wb.db.transaction() as s:
        return allocate_invoice_number(s, brand, year)


def test_format():
    assert format_invoice_number("FA", 2026, 123) == "FA-2026-000123"


def test_numbers_are_sequential_per_brand_and_year(wb):
    a, b = _brands(wb)
    assert [_take(wb, a, 2026) for _ in range(3)] == ["FA-2026-000001", "FA-2026-000002", "FA-2026-000003"]
    assert _take(wb, b, 2026) == "BR-2026-000001"
    assert _take(wb, a, 2027) == "FA-2027-000001"
    assert _take(wb, a, 2026) == "FA-2026-000004"


def test_a_failed_transaction_does_not_burn_a_number(wb):
    a, _ = _brands(wb)
    assert _take(wb, a, 2026) == "FA-2026-000001"
    with pytest.raises(RuntimeError):
        with wb.db.transaction() as s:
            assert allocate_invoice_number(s, a, 2026) == "FA-2026-000002"
            raise RuntimeError("the invoice insert failed")
    assert _take(wb, a, 2026) == "FA-2026-000002"


def test_concurrent_transactions_get_gapless_unique_numbers(wb):
    """Six threads, 90 transactions, one in four rolled back after taking its number.

    PostgreSQL serializes them on the sequence row lock, SQLite on its single write lock.
    """
    a, _ = _brands(wb)
    numbers: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)
    lock = threading.Lock()

    def worker(k: int) -> None:
        try:
            barrier.wait()
            for i in range(15):
                try:
                    with wb.db.transaction() as s:
                        number = allocate_invoice_number(s, a, 2026)   # first call also creates the row
                        if (k + i) % 4 == 0:
                            raise RuntimeError("rolled back")
                    with lock:
                        numbers.append(number)
                except RuntimeError:
                    pass
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(numbers) == len(set(numbers))
    assert sorted(numbers) == [format_invoice_number("FA", 2026, n) for n in range(1, len(numbers) + 1)]
    with wb.db.session() as s:
        assert s.scalar(sa.select(InvoiceSequence.last_number)) == len(numbers)


def test_credit_notes_have_their_own_sequence_with_the_brand_pattern(wb):
    with wb.db.transaction() as s:
        brand = Brand(code="C", name="C", legal_name="C SAS", invoice_prefix="FA", credit_note_prefix="AV",
                      invoice_number_pattern="{prefix}{year}/{n:05d}")
        s.add(brand)
    taken = []
    for kind in ("invoice", "credit_note", "invoice", "invoice", "credit_note"):
        with wb.db.transaction() as s:
            taken.append(allocate_invoice_number(s, brand, 2026, kind=kind))
    assert taken == ["FA2026/00001", "AV2026/00001", "FA2026/00002", "FA2026/00003", "AV2026/00002"]
    with wb.db.session() as s:
        rows = s.execute(sa.select(InvoiceSequence.kind, InvoiceSequence.last_number)
                         .where(InvoiceSequence.brand_id == brand.id).order_by(InvoiceSequence.kind)).all()
    assert [tuple(r) for r in rows] == [("credit_note", 2), ("invoice", 3)]


def test_a_bad_pattern_is_named():
    with pytest.raises(UserFacingError, match=r"invoice number pattern '\{prefix\}-\{yr\}' is invalid"):
        format_invoice_number("AV", 2026, 1, "{prefix}-{yr}")
    with pytest.raises(UserFacingError, match="does not contain the sequence number"):
        format_invoice_number("AV", 2026, 7, "{prefix}-{year}")
    assert format_invoice_number("AV", 2026, 7, "{year}-{prefix}-{n:04d}") == "2026-AV-0007"
