"""Tariff tables for the rating kernel, loaded from the system of record.

Tariff tables are small (thousands of rows), so they are read with the ORM and converted in
Python: Decimal prices become integer micro units with :func:`bluerocktel.money.to_micro`
(ROUND_HALF_UP at the 6th decimal), so that the kernel only does integer arithmetic.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pyarrow as pa
from sqlalchemy import select
from sqlalchemy.orm import Session

from bluerocktel.db.models import Rate, Service, ServiceIdentifier
from bluerocktel.errors import UserFacingError
from bluerocktel.money import to_micro
from bluerocktel.rating.kernel import IDENTIFIER_SCHEMA, RATE_SCHEMA


class TariffError(UserFacingError):
    """A rate or identifier cannot be used for rating (e.g. a next increment of 0 s)."""


@dataclass(frozen=True)
class Tariffs:
    """Everything the kernel needs from the system of record, as Arrow tables."""

    identifiers: pa.Table      # IDENTIFIER_SCHEMA
    rates: pa.Table            # RATE_SCHEMA
    version: str               # fingerprint of the tables: a rated CDR records which tariffs priced it


def fingerprint(*tables: pa.Table) -> str:
    digest = hashlib.sha256()
    for table in tables:
        for batch in table.to_batches():
            for column in batch.columns:
                for buf in column.buffers():
                    if buf is not None:
                        digest.update(buf)
        digest.update(b"|")
    return digest.hexdigest()[:16]


def load_tariffs(session: Session) -> Tariffs:
    """Every service identifier with its service's account and deck, and every rate of the
    decks that services use, in the kernel's schemas."""
    id_rows = session.execute(
        select(ServiceIdentifier.id, ServiceIdentifier.service_id, Service.account_id,
               Service.rate_deck_id, ServiceIdentifier.kind, ServiceIdentifier.value,
               ServiceIdentifier.valid_from, ServiceIdentifier.valid_to)
        .join(Service, Service.id == ServiceIdentifier.service_id)
        .order_by(ServiceIdentifier.id)
    ).all()
    identifiers = pa.Table.from_pylist(
        [dict(zip(IDENTIFIER_SCHEMA.names, row)) for row in id_rows], schema=IDENTIFIER_SCHEMA)

    used_decks = select(Service.rate_deck_id).where(Service.rate_deck_id.is_not(None)).distinct()
    rate_rows = session.scalars(select(Rate).where(Rate.deck_id.in_(used_decks)).order_by(Rate.id)).all()
    for rate in rate_rows:
        if rate.next_increment < 1 or rate.first_increment < 0 or not rate.prefix.isdigit():
            raise TariffError(
                f"rate {rate.id} of deck {rate.deck_id} (prefix {rate.prefix!r}) is unusable: the prefix "
                f"must be digits, the first increment >= 0 s and the next increment >= 1 s "
                f"(got {rate.first_increment}/{rate.next_increment})")
    rates = pa.Table.from_pylist([
        {"rate_id": r.id, "deck_id": r.deck_id, "prefix": r.prefix, "destination": r.destination,
         "zone": r.zone, "price_per_minute_micro": to_micro(r.price),
         "connection_fee_micro": to_micro(r.connection_fee), "first_increment_s": r.first_increment,
         "next_increment_s": r.next_increment, "valid_from": r.valid_from}
        for r in rate_rows
    ], schema=RATE_SCHEMA)
    return Tariffs(identifiers, rates, fingerprint(identifiers, rates))
