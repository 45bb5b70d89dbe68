"""The one vocabulary shared by the system of record and the usage lake (ids, enums, units)."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    BILLING = "billing"
    SUPPORT = "support"
    SALES = "sales"
    READ_ONLY = "read_only"
    CUSTOMER = "customer"


STAFF_ROLES = frozenset({Role.ADMIN, Role.BILLING, Role.SUPPORT, Role.SALES, Role.READ_ONLY})


class AccountKind(StrEnum):
    BUSINESS = "business"
    CONSUMER = "consumer"


class AccountStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    CLOSED = "closed"


class VatRegime(StrEnum):
    FR = "fr"                      # French VAT at the standard rate
    EU_REVERSE_CHARGE = "eu_reverse_charge"
    EXPORT = "export"


class ContactRole(StrEnum):
    BILLING = "billing"
    TECHNICAL = "technical"
    SIGNATORY = "signatory"
    OTHER = "other"


class ContractStatus(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    ENDED = "ended"


class ProductKind(StrEnum):
    RECURRING = "recurring"
    ONE_OFF = "one_off"
    USAGE = "usage"


class ServiceStatus(StrEnum):
    ORDERED = "ordered"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"


class IdentifierKind(StrEnum):
    """What identifies a service's CDRs."""

    NUMBER = "number"             # E.164 caller number
    DID = "did"                   # E.164 inbound number
    ACCOUNT_CODE = "account_code"  # switch account code (Asterisk accountcode)
    TRUNK = "trunk"               # trunk / channel name prefix


class RateDeckKind(StrEnum):
    SELL = "sell"
    BUY = "buy"


class BillingRunStatus(StrEnum):
    RUNNING = "running"
    PREVIEWED = "previewed"        # dry run finished; ``approved_by`` set once approved for issuing
    COMPLETED = "completed"
    FAILED = "failed"


class InvoiceKind(StrEnum):
    INVOICE = "invoice"
    CREDIT_NOTE = "credit_note"


class InvoiceStatus(StrEnum):
    """Where an issued invoice (or credit note) stands; its amounts never change."""

    ISSUED = "issued"
    SENT = "sent"
    PARTIALLY_PAID = "partially_paid"
    PAID = "paid"                  # settled by payments and/or credit notes
    DISPUTED = "disputed"
    CREDITED = "credited"          # fully cancelled by credit notes


class InvoiceLineKind(StrEnum):
    SUBSCRIPTION = "subscription"
    ONE_OFF = "one_off"
    USAGE = "usage"
    ADJUSTMENT = "adjustment"
    DISCOUNT = "discount"
    MINIMUM = "minimum"            # top-up to a contract's minimum commitment
    FEE = "fee"                    # late fee, direct-debit reject fee
    CREDIT = "credit"              # a credit note's line


class BillingTiming(StrEnum):
    ADVANCE = "advance"            # the period being started is billed
    ARREARS = "arrears"            # the period just ended is billed


class DiscountKind(StrEnum):
    PERCENT = "percent"            # value 0.10 = 10 %
    AMOUNT = "amount"              # value per month, before VAT


class ChargeKind(StrEnum):
    ONE_OFF = "one_off"            # installation, hardware
    FEE = "fee"                    # late fee, reject fee


class PaymentStatus(StrEnum):
    RECEIVED = "received"
    RETURNED = "returned"          # a direct debit returned or a payment reversed: allocations reversed


class PaymentSource(StrEnum):
    MANUAL = "manual"
    CAMT053 = "camt053"            # bank statement import
    SEPA = "sepa"                  # direct-debit collection


class MandateStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


class SequenceType(StrEnum):
    """SEPA direct-debit sequence types (pain.008 ``SeqTp``)."""

    FRST = "FRST"
    RCUR = "RCUR"
    OOFF = "OOFF"
    FNAL = "FNAL"


class DirectDebitStatus(StrEnum):
    PENDING = "pending"
    COLLECTED = "collected"
    RETURNED = "returned"


class DunningAction(StrEnum):
    REMINDER = "reminder"          # e-mail
    LATE_FEE = "late_fee"          # e-mail and a fee on the next invoice
    SUSPEND = "suspend"            # suspend the account's services (service events emitted)


class EmailStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"


class ScheduleJob(StrEnum):
    BILLING_RUN = "billing_run"    # params: dry_run, brand; the period is the month before the run
    RATE = "rate"
    COLLECT = "collect"
    DUNNING = "dunning"
    SEPA_BATCH = "sepa_batch"
    SEND_EMAILS = "send_emails"


class ServiceEventKind(StrEnum):
    ORDERED = "ordered"
    ACTIVATED = "activated"
    SUSPENDED = "suspended"
    REACTIVATED = "reactivated"
    TERMINATED = "terminated"


class PaymentMethod(StrEnum):
    TRANSFER = "transfer"
    SEPA_DEBIT = "sepa_debit"
    CARD = "card"
    CHEQUE = "cheque"


class TicketStatus(StrEnum):
    NEW = "new"
    OPEN = "open"
    PENDING_CUSTOMER = "pending_customer"
    RESOLVED = "resolved"
    CLOSED = "closed"


class TicketPriority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class CallDirection(StrEnum):
    OUT = "out"
    IN = "in"
    INTERNAL = "internal"


class CallType(StrEnum):
    VOICE = "voice"
    SMS = "sms"
    DATA = "data"


class Disposition(StrEnum):
    ANSWERED = "ANSWERED"
    NO_ANSWER = "NO ANSWER"
    BUSY = "BUSY"
    FAILED = "FAILED"
    CONGESTION = "CONGESTION"


class CdrFileStatus(StrEnum):
    IMPORTING = "importing"       # records may be reaching the lake
    IMPORTED = "imported"
    DUPLICATE = "duplicate"       # the same bytes were imported before
    FAILED = "failed"             # the whole file was refused (nothing of it is in the lake)
    INTERRUPTED = "interrupted"   # killed while importing; the next import finished the job


class Collector(StrEnum):
    """How a CDR file or batch reached us (``cdr_files.collector``)."""

    MANUAL = "manual"             # CLI or staff-app upload
    SFTP = "sftp"
    DATABASE = "database"
    API = "api"


class RatingStatus(StrEnum):
    """Outcome of rating one CDR (lake ``rated.rating_status``)."""

    RATED = "rated"               # priced with a rate of the service's deck
    UNRATED = "unrated"           # billable, but no rate matched: never free, price null
    UNASSIGNED = "unassigned"     # no service identifier matched: nobody to bill
    FREE = "free"                 # not billable (unanswered, 0 s, inbound or internal): price 0


class RoundingMethod(StrEnum):
    """How a deck rounds an amount to its decimals (``rate_decks.rounding_method``)."""

    UP = "up"                     # towards +infinity (amounts are never negative)
    HALF_UP = "half_up"           # nearest, a half away from zero
    DOWN = "down"                 # towards zero (truncate)


class MaxCostAction(StrEnum):
    """What a rate's maximum cost does to a call that costs more (``rates.max_cost_action``)."""

    CAP = "cap"                   # charge the maximum, the rest is free (CGRateS ``*free``)
    DISCONNECT = "disconnect"     # charge the full price and flag the call (``*disconnect``)


class RatingFlag(StrEnum):
    """Remarks on one rated CDR (lake ``rated.flags``, comma-separated)."""

    MIN_CHARGE = "min_charge"             # the minimum charge applied
    MAX_COST_CAPPED = "max_cost_capped"   # price capped at the rate's maximum cost
    MAX_COST_EXCEEDED = "max_cost_exceeded"   # over the maximum cost of a "disconnect" rate
    BAND_SPLIT = "band_split"             # priced in more than one segment (band or interval change)
    BUNDLE = "bundle"                     # a bundle covered all or part of the call
    FAIR_USE_EXCEEDED = "fair_use_exceeded"   # beyond an unlimited bundle's fair-use cap
    NEGATIVE_MARGIN = "negative_margin"   # it costs us more than we charge
    NO_COST = "no_cost"                   # billable, but no carrier trunk or buy rate priced it


class QuoteStatus(StrEnum):
    DRAFT = "draft"
    SENT = "sent"
    ACCEPTED = "accepted"          # a contract was created from it
    REJECTED = "rejected"
    EXPIRED = "expired"


class DeliveryStatus(StrEnum):
    """A webhook delivery: retried with backoff until delivered or out of attempts."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"              # gave up; can be replayed by hand


class ActivityKind(StrEnum):
    CALL = "call"                  # journaled by 3CX
    NOTE = "note"
    EMAIL = "email"
