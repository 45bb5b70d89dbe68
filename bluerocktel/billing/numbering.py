"""Gapless invoice numbers per issuer (brand) and year: ``{prefix}-{year}-{n:06d}``.

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


def format_invoice_number(prefix: str, year: int, n: int) -> str:
    return f"{prefix}-{year}-{n:06d}"


def _ensure_sequence_row(session: Session, brand_id: int, year: int) -> None:
    """Create the (brand, year) sequence row if missing; a concurrent creator wins quietly."""
    dialect = session.get_bind().dialect.name
    values = {"brand_id": brand_id, "year": year, "last_number": 0}
    if dialect in ("postgresql", "sqlite"):
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        session.execute(insert(InvoiceSequence).values(**values)
                        .on_conflict_do_nothing(index_elements=["brand_id", "year"]))
        return
    exists = session.scalar(sa.select(InvoiceSequence.id).where(
        InvoiceSequence.brand_id == brand_id, InvoiceSequence.year == year))
    if exists is None:
        try:
            with session.begin_nested():
                session.execute(sa.insert(InvoiceSequence).values(**values))
        except sa.exc.IntegrityError:
            pass


def allocate_invoice_number(session: Session, brand: Brand, year: int) -> str:
    """The next number of ``brand`` in ``year``; the sequence row stays locked until commit."""
    _ensure_sequence_row(session, brand.id, year)
    sequence = session.scalars(
        sa.select(InvoiceSequence)
        .where(InvoiceSequence.brand_id == brand.id, InvoiceSequence.year == year)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    sequence.last_number += 1
    session.flush()
    return format_invoice_number(brand.invoice_prefix or "FA", year, sequence.last_number)
