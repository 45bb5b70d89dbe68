"""The system of record: one SQLAlchemy 2 model of the whole domain.

Money columns: ``*_minor`` are integer minor units (cents); ``*_precise`` and catalog/tariff
prices are exact :class:`~decimal.Decimal` stored as canonical text (:class:`DecimalText`), so
SQLite never turns them into floats. Datetimes are UTC (``*_at``); dates are calendar days.
Billing periods are half-open ``[period_start, period_end)``.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from bluerocktel.money import D


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class DecimalText(TypeDecorator):
    """An exact Decimal stored as text (SQLite has no decimal type and would use REAL)."""

    impl = String(48)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        return format(D(value), "f")

    def process_result_value(self, value, dialect):
        return None if value is None else Decimal(value)


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the workbench stores UTC-aware datetimes")
        return value.astimezone(dt.timezone.utc)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


class Base(DeclarativeBase):
    pass


class TimestampMixin:
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow, index=True)


class Brand(TimestampMixin, Base):
    """A white-label identity of the operator, and the legal entity that issues its invoices."""

    __tablename__ = "brands"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    host_names: Mapped[list] = mapped_column(JSON, default=list)   # portal host names
    primary_color: Mapped[str] = mapped_column(String(16), default="#0b3d91")
    accent_color: Mapped[str] = mapped_column(String(16), default="#f5a623")
    logo_svg: Mapped[str | None] = mapped_column(Text)
    legal_name: Mapped[str] = mapped_column(String(200))
    siren: Mapped[str | None] = mapped_column(String(9))
    vat_number: Mapped[str | None] = mapped_column(String(20))
    address: Mapped[str] = mapped_column(Text, default="")
    email: Mapped[str | None] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(40))
    iban: Mapped[str | None] = mapped_column(String(40))
    invoice_prefix: Mapped[str] = mapped_column(String(16), default="FA")
    # The seller's legal identity printed on invoices and put in Factur-X (issue 5).
    siret: Mapped[str | None] = mapped_column(String(14))
    legal_form: Mapped[str | None] = mapped_column(String(64))          # "SAS", "SARL"...
    share_capital: Mapped[str | None] = mapped_column(String(40))       # as printed: "50 000 EUR"
    rcs: Mapped[str | None] = mapped_column(String(100))                # "RCS Lyon 912 345 678"
    postcode: Mapped[str | None] = mapped_column(String(16))
    city: Mapped[str | None] = mapped_column(String(100))
    country: Mapped[str] = mapped_column(String(2), default="FR", server_default="FR")
    bic: Mapped[str | None] = mapped_column(String(11))
    sepa_creditor_id: Mapped[str | None] = mapped_column(String(35))    # ICS, e.g. FR12ZZZ123456
    late_penalty_rate: Mapped[Decimal] = mapped_column(DecimalText, default=Decimal("0.12"), server_default="0.12")
    # ``{prefix}``, ``{year}`` and ``{n}`` (format spec allowed): FA-2026-000123
    invoice_number_pattern: Mapped[str] = mapped_column(String(64), default="{prefix}-{year}-{n:06d}",
                                                        server_default="{prefix}-{year}-{n:06d}")
    credit_note_prefix: Mapped[str] = mapped_column(String(16), default="AV", server_default="AV")
    sections: Mapped[list] = mapped_column(JSON, default=lambda: ["invoices", "calls", "services"])


class Account(TimestampMixin, Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    brand_id: Mapped[int] = mapped_column(ForeignKey("brands.id"), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    kind: Mapped[str] = mapped_column(String(16), default="business")
    status: Mapped[str] = mapped_column(String(16), default="active")
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(40))
    address: Mapped[str] = mapped_column(Text, default="")
    postcode: Mapped[str | None] = mapped_column(String(16))
    city: Mapped[str | None] = mapped_column(String(100))
    country: Mapped[str] = mapped_column(String(2), default="FR")
    siren: Mapped[str | None] = mapped_column(String(9))
    siret: Mapped[str | None] = mapped_column(String(14))
    vat_number: Mapped[str | None] = mapped_column(String(20))
    vat_regime: Mapped[str] = mapped_column(String(24), default="fr")
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    language: Mapped[str] = mapped_column(String(2), default="fr")
    timezone: Mapped[str] = mapped_column(String(64), default="Europe/Paris")
    billing_day: Mapped[int] = mapped_column(Integer, default=1)
    payment_terms_days: Mapped[int] = mapped_column(Integer, default=30)
    payment_method: Mapped[str] = mapped_column(String(16), default="transfer")

    brand: Mapped[Brand] = relationship()
    contacts: Mapped[list["Contact"]] = relationship(back_populates="account")
    services: Mapped[list["Service"]] = relationship(back_populates="account")


class Contact(TimestampMixin, Base):
    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str | None] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(40))
    role: Mapped[str] = mapped_column(String(16), default="billing")
    account: Mapped[Account] = relationship(back_populates="contacts")


class Product(TimestampMixin, Base):
    """A catalog entry. ``price`` is per period for recurring products, per unit for one-offs."""

    __tablename__ = "products"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    brand_id: Mapped[int | None] = mapped_column(ForeignKey("brands.id"))   # None: sold by every brand
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    price: Mapped[Decimal] = mapped_column(DecimalText, default=Decimal(0))
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    billing_period_months: Mapped[int] = mapped_column(Integer, default=1)     # 1 monthly, 12 yearly
    billing_timing: Mapped[str] = mapped_column(String(8), default="advance", server_default="advance")  # BillingTiming
    vat_rate: Mapped[Decimal] = mapped_column(DecimalText, default=Decimal("0.20"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Contract(TimestampMixin, Base):
    __tablename__ = "contracts"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    reference: Mapped[str] = mapped_column(String(40), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    start_date: Mapped[dt.date] = mapped_column(Date)
    end_date: Mapped[dt.date | None] = mapped_column(Date)
    term_months: Mapped[int] = mapped_column(Integer, default=12)
    commitment_end: Mapped[dt.date | None] = mapped_column(Date)
    notice_days: Mapped[int] = mapped_column(Integer, default=30)
    auto_renew: Mapped[bool] = mapped_column(Boolean, default=True)
    # Minimum commitment: the account's monthly net amount (before VAT) is topped up to this.
    minimum_monthly: Mapped[Decimal | None] = mapped_column(DecimalText)
    signed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    signatory_contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))


class Discount(TimestampMixin, Base):
    """A percentage or fixed-amount discount on an account (or one service), for a date range."""

    __tablename__ = "discounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    service_id: Mapped[int | None] = mapped_column(ForeignKey("services.id"))
    kind: Mapped[str] = mapped_column(String(8))                 # DiscountKind
    value: Mapped[Decimal] = mapped_column(DecimalText)          # 0.10 for 10 %, or an amount per month
    applies_to: Mapped[str] = mapped_column(String(16), default="all")   # subscription | usage | all
    description: Mapped[str] = mapped_column(String(200))
    valid_from: Mapped[dt.date] = mapped_column(Date)
    valid_to: Mapped[dt.date | None] = mapped_column(Date)       # exclusive


class OneOffCharge(Base):
    """A charge billed once by the next invoice: installation, hardware, a late or reject fee."""

    __tablename__ = "one_off_charges"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    service_id: Mapped[int | None] = mapped_column(ForeignKey("services.id"))
    product_id: Mapped[int | None] = mapped_column(ForeignKey("products.id"))
    kind: Mapped[str] = mapped_column(String(16), default="one_off")     # ChargeKind
    description: Mapped[str] = mapped_column(String(300))
    quantity: Mapped[Decimal] = mapped_column(DecimalText, default=Decimal(1))
    unit_price: Mapped[Decimal] = mapped_column(DecimalText)
    vat_rate: Mapped[Decimal | None] = mapped_column(DecimalText)      # None: the account's rate
    charge_date: Mapped[dt.date] = mapped_column(Date)
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"), index=True)   # set when billed
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200), default="system")


class RateDeck(TimestampMixin, Base):
    """A price list: a sell deck is a customer rating plan, a buy deck a carrier's prices.

    Rounding applies to each call's amount: ``rounding_method`` (up | half_up | down, see
    :class:`~bluerocktel.vocabulary.RoundingMethod`) at ``rounding_decimals`` (0..6); with an
    ``increment_rounding_method`` the cost of each billing increment is rounded first (at
    ``increment_rounding_decimals``), as CGRateS does. A plan lacking a destination falls back
    to ``fallback_deck_id``. ``holiday_calendar`` (ISO country, e.g. ``FR``) names the public
    holidays that time bands with the day ``hol`` match.
    """

    __tablename__ = "rate_decks"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(8), default="sell")
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    rounding_method: Mapped[str] = mapped_column(String(8), default="half_up", server_default="half_up")
    rounding_decimals: Mapped[int] = mapped_column(Integer, default=6, server_default="6")
    increment_rounding_method: Mapped[str | None] = mapped_column(String(8))
    increment_rounding_decimals: Mapped[int | None] = mapped_column(Integer)
    fallback_deck_id: Mapped[int | None] = mapped_column(ForeignKey("rate_decks.id"))
    holiday_calendar: Mapped[str | None] = mapped_column(String(8))
    rates: Mapped[list["Rate"]] = relationship(back_populates="deck")
    bands: Mapped[list["TimeBand"]] = relationship(back_populates="deck")
    trunks: Mapped[list["CarrierTrunk"]] = relationship()


class Rate(Base):
    """One price of a deck for a destination prefix, in force ``[valid_from, valid_to)`` (UTC).

    Quantities are base units of the call type: seconds (voice), messages (sms), bytes (data).
    ``price`` is per ``unit_size`` base units (60 = per minute). Several rows of one
    prefix and version make its time bands (``band``; ``''`` applies at any time) and grouped
    intervals (``group_start``: base units into the call from which this row's price
    applies). Connection fee, increments, minimum charge and maximum cost come from the
    ``group_start = 0`` row of the call's first band.
    """

    __tablename__ = "rates"
    __table_args__ = (UniqueConstraint("deck_id", "call_type", "prefix", "band", "group_start", "valid_from"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    deck_id: Mapped[int] = mapped_column(ForeignKey("rate_decks.id"), index=True)
    call_type: Mapped[str] = mapped_column(String(8), default="voice", server_default="voice")
    prefix: Mapped[str] = mapped_column(String(24))        # E.164 digits without '+'
    destination: Mapped[str] = mapped_column(String(200))
    zone: Mapped[str] = mapped_column(String(64))
    band: Mapped[str] = mapped_column(String(32), default="", server_default="")
    group_start: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    price: Mapped[Decimal] = mapped_column(DecimalText)
    unit_size: Mapped[int] = mapped_column(BigInteger, default=60, server_default="60")
    connection_fee: Mapped[Decimal] = mapped_column(DecimalText, default=Decimal(0))
    first_increment: Mapped[int] = mapped_column(BigInteger, default=60)
    next_increment: Mapped[int] = mapped_column(BigInteger, default=60)
    min_charge: Mapped[Decimal] = mapped_column(DecimalText, default=Decimal(0), server_default="0")
    max_cost: Mapped[Decimal | None] = mapped_column(DecimalText)
    max_cost_action: Mapped[str | None] = mapped_column(String(10))   # cap | disconnect
    valid_from: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    valid_to: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    deck: Mapped[RateDeck] = relationship(back_populates="rates")


class TimeBand(Base):
    """When a deck's band applies, in the paying account's time zone.

    ``days``: comma-separated ``mon,tue,wed,thu,fri,sat,sun,hol`` (``hol``: a public holiday
    of the deck's ``holiday_calendar``); minutes of the day ``[start_minute, end_minute)``
    (0..1440). Where several bands match an instant the highest ``priority`` wins; where none
    does, the band is ``''``.
    """

    __tablename__ = "time_bands"
    __table_args__ = (UniqueConstraint("deck_id", "name", "days", "start_minute"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    deck_id: Mapped[int] = mapped_column(ForeignKey("rate_decks.id"), index=True)
    name: Mapped[str] = mapped_column(String(32))
    days: Mapped[str] = mapped_column(String(40))
    start_minute: Mapped[int] = mapped_column(Integer, default=0)
    end_minute: Mapped[int] = mapped_column(Integer, default=1440)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    deck: Mapped[RateDeck] = relationship(back_populates="bands")


class CarrierTrunk(Base):
    """A carrier trunk: calls whose ``dst_channel`` starts with ``trunk`` cost what the buy deck says."""

    __tablename__ = "carrier_trunks"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    deck_id: Mapped[int] = mapped_column(ForeignKey("rate_decks.id"), index=True)
    trunk: Mapped[str] = mapped_column(String(100))
    valid_from: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    valid_to: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Bundle(TimestampMixin, Base):
    """Included usage per calendar month for calls of ``call_type`` to the given zones.

    ``allowance`` in base units (seconds, messages, bytes); null means unlimited, then
    ``fair_use_cap`` (if set) is where unlimited use stops being free.
    """

    __tablename__ = "bundles"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    call_type: Mapped[str] = mapped_column(String(8), default="voice")
    zones: Mapped[list] = mapped_column(JSON, default=list)
    allowance: Mapped[int | None] = mapped_column(BigInteger)
    fair_use_cap: Mapped[int | None] = mapped_column(BigInteger)


class ServiceBundle(Base):
    """A bundle granted to a service over ``[valid_from, valid_to)``; partial months are prorated."""

    __tablename__ = "service_bundles"
    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"), index=True)
    bundle_id: Mapped[int] = mapped_column(ForeignKey("bundles.id"), index=True)
    valid_from: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    valid_to: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    bundle: Mapped[Bundle] = relationship()


class RatingProfile(Base):
    """Which plan prices a (tenant, category, subject) from ``activation_at``, as in CGRateS.

    ``subject`` ``*any`` matches every subject; ``fallback_subjects`` (space-separated) are
    tried in order when the subject's plan lacks the destination.
    """

    __tablename__ = "rating_profiles"
    __table_args__ = (UniqueConstraint("tenant", "category", "subject", "activation_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[str] = mapped_column(String(100))
    category: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(100))
    activation_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    deck_id: Mapped[int] = mapped_column(ForeignKey("rate_decks.id"))
    fallback_subjects: Mapped[str] = mapped_column(String(400), default="")


class RatingAdjustment(Base):
    """A re-rating delta for an account and usage month, billed as a line of a later invoice."""

    __tablename__ = "rating_adjustments"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    usage_month: Mapped[str] = mapped_column(String(7))                   # YYYY-MM of the calls
    delta_micro: Mapped[int] = mapped_column(BigInteger)                  # new price - billed price
    calls: Mapped[int] = mapped_column(Integer, default=0)               # CDRs whose price changed
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"))   # set when billed


class Service(TimestampMixin, Base):
    __tablename__ = "services"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    contract_id: Mapped[int | None] = mapped_column(ForeignKey("contracts.id"))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    rate_deck_id: Mapped[int | None] = mapped_column(ForeignKey("rate_decks.id"))
    label: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="active")
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    unit_price: Mapped[Decimal | None] = mapped_column(DecimalText)   # overrides product price
    activated_on: Mapped[dt.date | None] = mapped_column(Date)
    terminated_on: Mapped[dt.date | None] = mapped_column(Date)       # last day is the day before

    account: Mapped[Account] = relationship(back_populates="services")
    product: Mapped[Product] = relationship()
    identifiers: Mapped[list["ServiceIdentifier"]] = relationship(back_populates="service")
    bundles: Mapped[list["ServiceBundle"]] = relationship()


class ServiceIdentifier(Base):
    """A number, DID, account code or trunk that identifies a service's CDRs, effective-dated."""

    __tablename__ = "service_identifiers"
    __table_args__ = (Index("ix_service_identifiers_kind_value", "kind", "value"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(64))
    valid_from: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    valid_to: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    service: Mapped[Service] = relationship(back_populates="identifiers")


class CdrSource(TimestampMixin, Base):
    """Where CDRs come from (a switch): format, collector, national rules.

    ``url`` says how they are collected: ``sftp://user@host:port/dir`` (SFTP polling),
    ``mysql://…`` / ``mariadb://…`` / ``postgresql://…`` (the switch's CDR table), or empty
    (pushed through the API or imported by hand). ``options`` holds the collector's settings
    (documented in :mod:`bluerocktel.collectors`); ``mapping`` the TOML text of a custom format.
    """

    __tablename__ = "cdr_sources"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    format: Mapped[str] = mapped_column(String(32))
    url: Mapped[str | None] = mapped_column(String(500))
    country: Mapped[str] = mapped_column(String(2), default="FR")
    timezone: Mapped[str] = mapped_column(String(64), default="Europe/Paris")
    options: Mapped[dict] = mapped_column(JSON, default=dict)
    mapping: Mapped[str | None] = mapped_column(Text)
    poll_interval_s: Mapped[int] = mapped_column(Integer, default=300)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class CdrSourceState(Base):
    """A collector's progress on one source: its cursor (high-water mark) and last run."""

    __tablename__ = "cdr_source_states"
    source_id: Mapped[int] = mapped_column(ForeignKey("cdr_sources.id"), primary_key=True)
    cursor: Mapped[str | None] = mapped_column(Text)
    last_run_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[str | None] = mapped_column(String(16))
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class CdrFile(Base):
    """One received CDR file or batch: the ingestion ledger (same bytes twice are imported once).

    A row is written ``importing`` before the first record reaches the lake and finished
    (``imported``/``failed``) after the last; a row left ``importing`` by a killed import is
    marked ``interrupted`` by the next import of the same bytes.
    """

    __tablename__ = "cdr_files"
    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    collector: Mapped[str] = mapped_column(String(16), default="manual")
    file_name: Mapped[str] = mapped_column(String(500))
    remote_path: Mapped[str | None] = mapped_column(String(1000))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    received: Mapped[int] = mapped_column(Integer, default=0)
    imported: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    quarantined: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)


class IdempotencyKey(Base):
    """A request made with an ``Idempotency-Key``: replayed, not re-executed, when sent again."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("principal", "key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    principal: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(200))
    request_sha256: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class BillingRun(Base):
    __tablename__ = "billing_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    period: Mapped[str] = mapped_column(String(7), index=True)      # YYYY-MM
    brand_code: Mapped[str | None] = mapped_column(String(32))
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    started_by: Mapped[str] = mapped_column(String(200), default="system")
    notebook_path: Mapped[str | None] = mapped_column(String(500))   # relative to the data dir
    summary: Mapped[dict] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    report_path: Mapped[str | None] = mapped_column(String(500))       # control report (xlsx), data-dir relative
    step: Mapped[str | None] = mapped_column(String(32))               # last step finished, to resume
    approved_by: Mapped[str | None] = mapped_column(String(200))       # dry runs: who approved issuing
    approved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    approved_run_id: Mapped[int | None] = mapped_column(ForeignKey("billing_runs.id", name="fk_billing_runs_approved_run_id"))  # issue runs: the dry run


class InvoiceSequence(Base):
    """Gapless invoice numbering: the last number used per issuer (brand) and year."""

    __tablename__ = "invoice_sequences"
    __table_args__ = (UniqueConstraint("brand_id", "year", "kind", name="uq_invoice_sequences_brand_year_kind"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    brand_id: Mapped[int] = mapped_column(ForeignKey("brands.id"))
    year: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16), default="invoice", server_default="invoice")  # InvoiceKind
    last_number: Mapped[int] = mapped_column(Integer, default=0)


class Invoice(TimestampMixin, Base):
    __tablename__ = "invoices"
    # One invoice per account and period; credit notes are not limited (several may correct one invoice).
    __table_args__ = (Index("uq_invoice_account_period", "account_id", "period_start", unique=True,
                            sqlite_where=text("kind = 'invoice'"), postgresql_where=text("kind = 'invoice'")),)
    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(40), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="invoice")
    status: Mapped[str] = mapped_column(String(16), default="issued")
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    brand_id: Mapped[int] = mapped_column(ForeignKey("brands.id"))
    billing_run_id: Mapped[int | None] = mapped_column(ForeignKey("billing_runs.id"))
    credits_invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"))
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    period_start: Mapped[dt.date] = mapped_column(Date)
    period_end: Mapped[dt.date] = mapped_column(Date)          # exclusive
    issue_date: Mapped[dt.date] = mapped_column(Date)
    due_date: Mapped[dt.date] = mapped_column(Date)
    subtotal_minor: Mapped[int] = mapped_column(BigInteger)
    vat_minor: Mapped[int] = mapped_column(BigInteger)
    total_minor: Mapped[int] = mapped_column(BigInteger)
    pdf_path: Mapped[str | None] = mapped_column(String(500))  # relative to the data dir (Factur-X PDF/A-3)
    annex_path: Mapped[str | None] = mapped_column(String(500))  # call-detail annex PDF, data-dir relative
    language: Mapped[str] = mapped_column(String(2), default="fr", server_default="fr")
    vat_regime: Mapped[str] = mapped_column(String(24), default="fr", server_default="fr")
    seller: Mapped[dict] = mapped_column(JSON, default=dict, server_default="{}")   # identities as at issue
    buyer: Mapped[dict] = mapped_column(JSON, default=dict, server_default="{}")
    reason: Mapped[str | None] = mapped_column(Text)           # credit notes: why
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    paid_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    account: Mapped[Account] = relationship()
    brand: Mapped[Brand] = relationship()
    lines: Mapped[list["InvoiceLine"]] = relationship(back_populates="invoice", order_by="InvoiceLine.position")


class InvoiceLine(Base):
    __tablename__ = "invoice_lines"
    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(String(300))
    product_id: Mapped[int | None] = mapped_column(ForeignKey("products.id"))
    service_id: Mapped[int | None] = mapped_column(ForeignKey("services.id"))
    zone: Mapped[str | None] = mapped_column(String(64))
    quantity: Mapped[Decimal] = mapped_column(DecimalText)
    unit: Mapped[str] = mapped_column(String(16), default="unit")
    unit_price_precise: Mapped[Decimal | None] = mapped_column(DecimalText)
    amount_precise: Mapped[Decimal] = mapped_column(DecimalText)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    vat_rate: Mapped[Decimal] = mapped_column(DecimalText)
    invoice: Mapped[Invoice] = relationship(back_populates="lines")


class Payment(TimestampMixin, Base):
    __tablename__ = "payments"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    method: Mapped[str] = mapped_column(String(16), default="transfer")
    reference: Mapped[str | None] = mapped_column(String(100))
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="received", server_default="received")  # PaymentStatus
    source: Mapped[str] = mapped_column(String(16), default="manual", server_default="manual")       # PaymentSource
    bank_reference: Mapped[str | None] = mapped_column(String(100))   # statement entry ref: imported once
    returned_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    return_reason: Mapped[str | None] = mapped_column(String(100))
    created_by: Mapped[str] = mapped_column(String(200), default="system", server_default="system")

    __table_args__ = (UniqueConstraint("source", "bank_reference", name="uq_payment_bank_reference"),)


class Allocation(Base):
    """Part of a payment or of a credit note settling an invoice; amounts of a source sum to at most its total."""

    __tablename__ = "allocations"
    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"), index=True)
    credit_note_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    reversed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)   # payment returned


class SepaMandate(TimestampMixin, Base):
    """A SEPA Core direct-debit mandate signed by the account holder."""

    __tablename__ = "sepa_mandates"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    umr: Mapped[str] = mapped_column(String(35), unique=True)          # unique mandate reference
    signed_on: Mapped[dt.date] = mapped_column(Date)
    debtor_name: Mapped[str] = mapped_column(String(140))
    iban: Mapped[str] = mapped_column(String(34))
    bic: Mapped[str | None] = mapped_column(String(11))
    sequence_type: Mapped[str] = mapped_column(String(4), default="FRST")   # next collection: FRST | RCUR | OOFF
    status: Mapped[str] = mapped_column(String(16), default="active")      # MandateStatus
    revoked_on: Mapped[dt.date | None] = mapped_column(Date)
    last_collected_on: Mapped[dt.date | None] = mapped_column(Date)


class SepaBatch(Base):
    """One pain.008 message: the collections of one creditor (brand) on one date."""

    __tablename__ = "sepa_batches"
    id: Mapped[int] = mapped_column(primary_key=True)
    brand_id: Mapped[int] = mapped_column(ForeignKey("brands.id"))
    message_id: Mapped[str] = mapped_column(String(35), unique=True)
    collection_date: Mapped[dt.date] = mapped_column(Date)
    file_path: Mapped[str | None] = mapped_column(String(500))       # data-dir relative
    transactions: Mapped[int] = mapped_column(Integer, default=0)
    total_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16), default="generated")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200), default="system")


class DirectDebit(Base):
    """One invoice collected under a mandate in a batch; a return reopens the invoice."""

    __tablename__ = "direct_debits"
    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("sepa_batches.id"), index=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    mandate_id: Mapped[int] = mapped_column(ForeignKey("sepa_mandates.id"), index=True)
    end_to_end_id: Mapped[str] = mapped_column(String(35), unique=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    sequence_type: Mapped[str] = mapped_column(String(4))
    status: Mapped[str] = mapped_column(String(16), default="pending")   # DirectDebitStatus
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id"))
    return_reason: Mapped[str | None] = mapped_column(String(8))        # ISO reason code: AM04, MD01...
    returned_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    fee_charge_id: Mapped[int | None] = mapped_column(ForeignKey("one_off_charges.id"))


class DunningStage(Base):
    """One step of the dunning ladder: so many days after the due date, do this."""

    __tablename__ = "dunning_stages"
    __table_args__ = (UniqueConstraint("brand_id", "position"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    brand_id: Mapped[int | None] = mapped_column(ForeignKey("brands.id"))   # None: every brand
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    days_after_due: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(16))                  # DunningAction
    fee: Mapped[Decimal | None] = mapped_column(DecimalText)         # late fee (before VAT), late_fee stages


class DunningEvent(Base):
    """A dunning stage applied to an invoice (once)."""

    __tablename__ = "dunning_events"
    __table_args__ = (UniqueConstraint("invoice_id", "stage_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    stage_id: Mapped[int] = mapped_column(ForeignKey("dunning_stages.id"))
    action: Mapped[str] = mapped_column(String(16))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    email_id: Mapped[int | None] = mapped_column(ForeignKey("email_messages.id"))
    charge_id: Mapped[int | None] = mapped_column(ForeignKey("one_off_charges.id"))


class EmailMessage(Base):
    """The outbox: every e-mail the system sends (invoices, reminders, tickets), kept with its outcome."""

    __tablename__ = "email_messages"
    id: Mapped[int] = mapped_column(primary_key=True)
    to_addr: Mapped[str] = mapped_column(String(500))
    subject: Mapped[str] = mapped_column(String(300))
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    attachments: Mapped[list] = mapped_column(JSON, default=list)      # data-dir relative paths
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)   # EmailStatus
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    related_type: Mapped[str | None] = mapped_column(String(32))
    related_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Schedule(TimestampMixin, Base):
    """A job run by ``bluerocktel scheduler`` on a cron-like schedule (in the operator's time zone)."""

    __tablename__ = "schedules"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    cron: Mapped[str] = mapped_column(String(100))                    # "0 6 1 * *"
    job: Mapped[str] = mapped_column(String(32))                      # ScheduleJob
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    next_run_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_run_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[str | None] = mapped_column(String(16))
    last_error: Mapped[str | None] = mapped_column(Text)


class ServiceEvent(Base):
    """A service lifecycle event (activated, suspended, ...): the outbox provisioning webhooks deliver."""

    __tablename__ = "service_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))                     # ServiceEventKind
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(200), default="system")
    payload: Mapped[dict] = mapped_column(JSON, default=dict)


class User(TimestampMixin, Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))  # customers only
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class ApiToken(Base):
    """A bearer token; only its SHA-256 is stored, the token is shown once at creation."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_prefix: Mapped[str] = mapped_column(String(16))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    user: Mapped[User] = relationship()


class Ticket(TimestampMixin, Base):
    __tablename__ = "tickets"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    service_id: Mapped[int | None] = mapped_column(ForeignKey("services.id"))
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id"))
    subject: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(24), default="new")
    priority: Mapped[str] = mapped_column(String(16), default="normal")
    category: Mapped[str] = mapped_column(String(64), default="general")
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    opened_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # SLA: due instants fixed when the ticket is opened (from sla_targets), and when they were met.
    first_response_due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)
    resolution_due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)
    first_response_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    messages: Mapped[list["TicketMessage"]] = relationship(back_populates="ticket", order_by="TicketMessage.id")


class TicketMessage(Base):
    __tablename__ = "ticket_messages"
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    author_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    author_email: Mapped[str | None] = mapped_column(String(200))      # a reply by e-mail, no user
    body: Mapped[str] = mapped_column(Text)
    internal: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    ticket: Mapped[Ticket] = relationship(back_populates="messages")


class TicketAttachment(Base):
    """A file attached to a ticket message, stored under the data dir (size and type limited)."""

    __tablename__ = "ticket_attachments"
    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("ticket_messages.id"), index=True)
    file_name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(500))                      # data-dir relative
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Team(TimestampMixin, Base):
    """A helpdesk team tickets can be assigned to."""

    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    email: Mapped[str | None] = mapped_column(String(200))


class TeamMember(Base):
    __tablename__ = "team_members"
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)


class SlaTarget(Base):
    """Helpdesk service levels per priority, in minutes of elapsed time."""

    __tablename__ = "sla_targets"
    priority: Mapped[str] = mapped_column(String(16), primary_key=True)    # TicketPriority
    first_response_minutes: Mapped[int] = mapped_column(Integer)
    resolution_minutes: Mapped[int] = mapped_column(Integer)


class Site(TimestampMixin, Base):
    """A customer's premises (where services are delivered)."""

    __tablename__ = "sites"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(Text, default="")
    postcode: Mapped[str | None] = mapped_column(String(16))
    city: Mapped[str | None] = mapped_column(String(100))
    country: Mapped[str] = mapped_column(String(2), default="FR")


class PriceList(TimestampMixin, Base):
    """A brand's prices for catalog products, effective-dated; overrides ``Product.price``."""

    __tablename__ = "price_lists"
    id: Mapped[int] = mapped_column(primary_key=True)
    brand_id: Mapped[int] = mapped_column(ForeignKey("brands.id"), index=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    valid_from: Mapped[dt.date] = mapped_column(Date)
    valid_to: Mapped[dt.date | None] = mapped_column(Date)                # exclusive


class PriceListItem(Base):
    __tablename__ = "price_list_items"
    __table_args__ = (UniqueConstraint("price_list_id", "product_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    price_list_id: Mapped[int] = mapped_column(ForeignKey("price_lists.id"), index=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    price: Mapped[Decimal] = mapped_column(DecimalText)


class Quote(TimestampMixin, Base):
    """A priced offer to an account; accepting it creates the contract and its ordered services."""

    __tablename__ = "quotes"
    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    brand_id: Mapped[int] = mapped_column(ForeignKey("brands.id"))
    status: Mapped[str] = mapped_column(String(16), default="draft")       # QuoteStatus
    currency: Mapped[str] = mapped_column(String(3), default="EUR")
    valid_until: Mapped[dt.date] = mapped_column(Date)
    term_months: Mapped[int] = mapped_column(Integer, default=12)
    created_by: Mapped[str] = mapped_column(String(200), default="system")
    accepted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    contract_id: Mapped[int | None] = mapped_column(ForeignKey("contracts.id"))
    lines: Mapped[list["QuoteLine"]] = relationship(order_by="QuoteLine.position")


class QuoteLine(Base):
    __tablename__ = "quote_lines"
    id: Mapped[int] = mapped_column(primary_key=True)
    quote_id: Mapped[int] = mapped_column(ForeignKey("quotes.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    description: Mapped[str] = mapped_column(String(300))
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    unit_price: Mapped[Decimal] = mapped_column(DecimalText)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"))


class WebhookSubscription(TimestampMixin, Base):
    """A provisioning system's endpoint: service events are POSTed to it, signed with its secret."""

    __tablename__ = "webhook_subscriptions"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    url: Mapped[str] = mapped_column(String(1000))
    secret: Mapped[str] = mapped_column(String(200))         # encrypted at rest (bluerocktel.security)
    events: Mapped[list] = mapped_column(JSON, default=list)  # ServiceEventKind values; empty = all
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(200), default="system")


class WebhookDelivery(Base):
    """One event to one subscription: attempts with backoff, the outcome of each kept in ``log``."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("subscription_id", "event_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("webhook_subscriptions.id"), index=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("service_events.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)   # DeliveryStatus
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    log: Mapped[list] = mapped_column(JSON, default=list)    # [{"at", "status_code", "error", "ms"}]
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Activity(Base):
    """Something that happened with a customer: a call journaled by 3CX, a note, an e-mail."""

    __tablename__ = "activities"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id"))
    kind: Mapped[str] = mapped_column(String(16))               # ActivityKind
    direction: Mapped[str | None] = mapped_column(String(8))    # CallDirection for calls
    number: Mapped[str | None] = mapped_column(String(64))
    agent: Mapped[str | None] = mapped_column(String(200))      # 3CX extension or user
    subject: Mapped[str] = mapped_column(String(300), default="")
    notes: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    duration_s: Mapped[int | None] = mapped_column(Integer)
    external_id: Mapped[str | None] = mapped_column(String(100), unique=True)   # 3CX call id: journaled once
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditEntry(Base):
    """Append-only: the ORM refuses updates and deletes, and so do database triggers."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str | None] = mapped_column(String(64))
    target_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict] = mapped_column(JSON, default=dict)


class AuditLogError(RuntimeError):
    """Raised on an attempt to change or delete an audit entry."""


@event.listens_for(AuditEntry, "before_update")
@event.listens_for(AuditEntry, "before_delete")
def _refuse_audit_change(mapper, connection, target):
    raise AuditLogError("the audit log is append-only")
