"""Gapless invoice and credit-note numbers per issuer (brand), kind and year.

The brand's ``invoice_number_pattern`` (default ``{prefix}-{year}-{n:06d}``) is formatted with
``prefix`` = ``invoice_prefix`` (FA) for invoices or ``credit_note_prefix`` (AV) for credit
notes, each kind with its own sequence: ``FA-2026-000123``, ``AV-2026-000004``.

The number is taken inside the transaction that inserts the invoice: the brand's
:class:`~bluerocktel.db.models.InvoiceSequence` row of that year is locked (``SELECT … FOR
UPDATE`` on PostgreSQL; SQLite holds its single write lock from the first write), incremented
and released at commit. A transaction that fails rolls the increment back with everything else,
so a number is never burned and two invoices never share one.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bluerocktel.db.models import Brand, InvoiceSequence
from bluerocktel.errors import UserFacingError
from bluerocktel.vocabulary import InvoiceKind

DEFAULT_PATTERN = "{prefix}-{year}-{n:06d}"


def format_invoice_number(prefix: str, year: int, n: int, pattern: str = DEFAULT_PATTERN) -> str:
    """``pattern`` formatted with ``prefix``, ``year`` and ``n``; a bad pattern is named."""
    try:
        number = pattern.format(prefix=prefix, year=year, n=n)
    except (KeyError, IndexError, ValueError) as exc:
        raise UserFacingError(f"invoice number pattern {pattern!r} is invalid ({exc}); "
                              f"use {{prefix}}, {{year}} and {{n}}, e.g. {DEFAULT_PATTERN!r}") from exc
    if str(n) not in number:
        raise UserFacingError(f"invoice number pattern {pattern!r} does not contain the sequence number {{n}}")
    return number


def _ensure_sequence_row(session: Session, brand_id: int, year: int, kind: str) -> None:
    """Create the (brand, year, kind) sequence row if missing; a concurrent creator wins quietly."""
    dialect = session.get_bind().dialect.name
    values = {"brand_id": brand_id, "year": year, "kind": kind, "last_number": 0}
    if dialect in ("postgresql", "sqlite"):
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        session.execute(insert(InvoiceSequence).values(**values)
                        .on_conflict_do_nothing(index_elements=["brand_id", "year", "kind"]))
        return
    exists = session.scalar(sa.select(InvoiceSequence.id).where(
        InvoiceSequence.brand_id == brand_id, InvoiceSequence.year == year, InvoiceSequence.kind == kind))
    if exists is None:
        try:
            with session.begin_nested():
                session.execute(sa.insert(InvoiceSequence).values(**values))
        except sa.exc.IntegrityError:
            pass


def allocate_invoice_number(session: Session, brand: Brand, year: int, kind: str = InvoiceKind.INVOICE) -> str:
    """The next number of ``brand`` for ``kind`` in ``year``; the sequence row stays locked until commit."""
    return allocate_invoice_numbers(session, brand, year, 1, kind)[0]


def allocate_invoice_numbers(session: Session, brand: Brand, year: int, count: int,
                             kind: str = InvoiceKind.INVOICE) -> list[str]:
    """The next ``count`` numbers of ``brand`` for ``kind`` in ``year``, in order (``count`` 0 only locks the
    sequence row); the row stays locked until commit, so the transaction must use them all."""
    kind = InvoiceKind(kind).value
    _ensure_sequence_row(session, brand.id, year, kind)
    sequence = session.scalars(
        sa.select(InvoiceSequence)
        .where(InvoiceSequence.brand_id == brand.id, InvoiceSequence.year == year, InvoiceSequence.kind == kind)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    first = sequence.last_number + 1
    sequence.last_number += count
    session.flush()
    prefix = (brand.credit_note_prefix or "AV") if kind == InvoiceKind.CREDIT_NOTE else (brand.invoice_prefix or "FA")
    pattern = brand.invoice_number_pattern or DEFAULT_PATTERN
    return [format_invoice_number(prefix, year, n, pattern) for n in range(first, first + count)]
