"""The usage lake: Parquet files partitioned by month, read by DuckDB from any process.

Layout under ``DATA_DIR/lake``::

    cdrs/month=YYYY-MM/<batch>.parquet        normalized CDRs (CDR_SCHEMA)
    rated/month=YYYY-MM/<batch>.parquet       rated CDRs (RATED_SCHEMA)
    quarantine/month=YYYY-MM/<batch>.parquet  records that could not be normalized (QUARANTINE_SCHEMA)
    quarantine_resolved/month=YYYY-MM/<batch>.parquet  quarantined records reprocessed since

Files are written to a temporary name and renamed, so a reader never sees half a file. The
month is the UTC month of ``start_at``. Money is integer micro units (``*_micro``, 1e-6 of
the currency): never DOUBLE.

Normalized CDR columns:

=============== ============== ======================================================
column          type           meaning
=============== ============== ======================================================
cdr_id          string         stable id: SHA-256 (hex, 32) of source + the switch's
                               unique key of the record; the dedup key
source          string         CDR source name (switch)
source_file     string         file name the record came from
source_line     int32          1-based line (or record number) in that file
start_at        timestamp UTC  call start
answer_at       timestamp UTC  answer time; null when unanswered
end_at          timestamp UTC  call end
duration_s      int32          seconds from start to end
billsec_s       int32          answered (billable) seconds; 0 when unanswered
caller          string         calling number, E.164 (``+33…``) or the raw extension
callee          string         called number, E.164 or the raw extension
account_code    string         switch account code (may be empty)
channel         string         originating channel / trunk
dst_channel     string         destination channel / trunk
disposition     string         ANSWERED, NO ANSWER, BUSY, FAILED, CONGESTION
direction       string         out, in, internal
call_type       string         voice, sms, data
units           int64          what is billed besides time: 1 per SMS (or the message
                               count), bytes for data; 0 for voice
unique_id       string         the switch's own record id
=============== ============== ======================================================
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

UTC_TS = pa.timestamp("us", tz="UTC")

CDR_SCHEMA = pa.schema([
    ("cdr_id", pa.string()),
    ("source", pa.string()),
    ("source_file", pa.string()),
    ("source_line", pa.int32()),
    ("start_at", UTC_TS),
    ("answer_at", UTC_TS),
    ("end_at", UTC_TS),
    ("duration_s", pa.int32()),
    ("billsec_s", pa.int32()),
    ("caller", pa.string()),
    ("callee", pa.string()),
    ("account_code", pa.string()),
    ("channel", pa.string()),
    ("dst_channel", pa.string()),
    ("disposition", pa.string()),
    ("direction", pa.string()),
    ("call_type", pa.string()),
    ("units", pa.int64()),
    ("unique_id", pa.string()),
])

# A rated CDR is the normalized CDR plus who pays, which rate applied and what it cost.
# Rated CDRs: the normalized CDR plus who pays, the price and its trace (lake ``rated``).
# Quantities are base units of the call type: seconds (voice), messages (sms), bytes (data).
RATED_SCHEMA = pa.schema(list(CDR_SCHEMA) + [
    ("account_id", pa.int64()),
    ("service_id", pa.int64()),
    ("rate_deck_id", pa.int64()),      # deck whose rate priced the call (the plan or a fallback)
    ("rate_id", pa.int64()),           # rate row of the first segment
    ("rate_valid_from", UTC_TS),       # version: when that rate took effect
    ("prefix", pa.string()),           # matched prefix (digits)
    ("destination", pa.string()),
    ("zone", pa.string()),
    ("band", pa.string()),             # time band(s) in call order, '+'-joined; '' = all-time rate
    ("segments", pa.string()),         # JSON array of the segments when more than one, else null
    ("first_increment", pa.int64()),
    ("next_increment", pa.int64()),
    ("billable_s", pa.int32()),        # voice: billed seconds after increments; sms/data: 0
    ("billable_units", pa.int64()),    # billed base units after increments (any call type)
    ("unrounded_pico", pa.int64()),    # exact amount before any rounding, 1e-12 of the currency
    ("price_micro", pa.int64()),       # what the customer pays (rounding, min, max, bundle applied)
    ("bundle_id", pa.int64()),         # service bundle (service_bundles.id) that covered units
    ("bundle_units", pa.int64()),      # base units the bundle(s) covered
    ("bundle_split", pa.string()),     # 'sbid:units,sbid:units' when several bundles covered the call, else null
    ("cost_deck_id", pa.int64()),      # carrier's buy deck
    ("cost_rate_id", pa.int64()),
    ("cost_micro", pa.int64()),        # what the call costs us; null when no buy rate priced it
    ("margin_micro", pa.int64()),      # price_micro - cost_micro
    ("flags", pa.string()),            # RatingFlag values, comma-separated ('' when none)
    ("rating_status", pa.string()),    # rated, unrated (no rate), unassigned (no service), free
    ("rating_reason", pa.string()),    # why unrated / unassigned ('' otherwise)
    ("tariff_version", pa.string()),   # fingerprint of the tariff tables used
    ("rated_at", UTC_TS),
])

# A record that could not be normalized: enough to read it again (raw text, or base64 of a
# binary record, plus the header lines its format needs) and to say where it was.
QUARANTINE_SCHEMA = pa.schema([
    ("quarantine_id", pa.string()),   # SHA-256 (hex, 32) of source, file, line and raw
    ("source", pa.string()),
    ("format", pa.string()),
    ("source_file", pa.string()),
    ("source_line", pa.int32()),      # line, or record number in a binary/XML file
    ("byte_offset", pa.int64()),      # where the record starts in a binary file; null for text
    ("reason", pa.string()),
    ("raw", pa.string()),
    ("header", pa.string()),          # header lines the raw record is read with (null: none)
    ("quarantined_at", UTC_TS),
])

# Quarantined records that a later reprocessing imported (or found already imported).
QUARANTINE_RESOLVED_SCHEMA = pa.schema([
    ("quarantine_id", pa.string()),
    ("outcome", pa.string()),         # imported, duplicate, consumed (read, no row of its own)
    ("cdr_id", pa.string()),
    ("resolved_at", UTC_TS),
])

DATASETS = {"cdrs": CDR_SCHEMA, "rated": RATED_SCHEMA, "quarantine": QUARANTINE_SCHEMA,
            "quarantine_resolved": QUARANTINE_RESOLVED_SCHEMA}


def dataset_dir(lake_dir: Path, dataset: str) -> Path:
    if dataset not in DATASETS:
        raise ValueError(f"unknown lake dataset {dataset!r}; known: {', '.join(DATASETS)}")
    return lake_dir / dataset


def write_partition(lake_dir: Path, dataset: str, month: str, table: pa.Table, name: str | None = None) -> Path:
    """Write ``table`` as one Parquet file of ``dataset``'s ``month`` partition, atomically."""
    table = table.cast(DATASETS[dataset])
    folder = dataset_dir(lake_dir, dataset) / f"month={month}"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{name or uuid.uuid4().hex}.parquet"
    tmp = folder / f".{final.name}.{uuid.uuid4().hex}.tmp"
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    return final


def partition_files(lake_dir: Path, dataset: str, months: list[str] | None = None) -> list[Path]:
    """The Parquet files of ``dataset`` (optionally only the given months), in name order."""
    root = dataset_dir(lake_dir, dataset)
    if not root.exists():
        return []
    folders = [root / f"month={m}" for m in months] if months else sorted(root.glob("month=*"))
    return sorted(p for folder in folders if folder.exists() for p in folder.glob("*.parquet"))


def scan_sql(lake_dir: Path, dataset: str, months: list[str] | None = None) -> str:
    """A DuckDB table expression reading ``dataset``; an empty typed relation when no file exists."""
    files = partition_files(lake_dir, dataset, months)
    if files:
        listed = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
        return f"read_parquet([{listed}], hive_partitioning = false, union_by_name = true)"
    return empty_relation_sql(DATASETS[dataset])


_DUCK_TYPES = {
    pa.string(): "VARCHAR", pa.int32(): "INTEGER", pa.int64(): "BIGINT", UTC_TS: "TIMESTAMPTZ",
}


def empty_relation_sql(schema: pa.Schema) -> str:
    cols = ", ".join(f"CAST(NULL AS {_DUCK_TYPES[f.type]}) AS {f.name}" for f in schema)
    return f"(SELECT {cols} WHERE false)"


def read_table(lake_dir: Path, dataset: str, months: list[str] | None = None, order_by: str | None = None) -> pa.Table:
    """All of ``dataset`` (or the given months) as one Arrow table, optionally ``ORDER BY`` columns."""
    con = connect_duckdb()
    try:
        order = f" ORDER BY {order_by}" if order_by else ""
        return con.sql(f"SELECT * FROM {scan_sql(lake_dir, dataset, months)}{order}").to_arrow_table()
    finally:
        con.close()


_DUCKDB: tuple[int, object] | None = None     # (pid, the process's in-memory database)


def connect_duckdb():
    """A connection (cursor) to this process's in-memory DuckDB database, UTC as its time zone.

    Opening a database costs ~12 ms and a cursor ~0.1 ms, and an import opens several per slice,
    so one database is shared; each cursor has its own registered views and temporary objects
    and may run on its own thread. ``close()`` closes the cursor only. A forked child gets a
    database of its own (the parent's threads do not exist there)."""
    import duckdb

    global _DUCKDB
    if _DUCKDB is None or _DUCKDB[0] != os.getpid():
        _DUCKDB = (os.getpid(), duckdb.connect())
    con = _DUCKDB[1].cursor()
    con.execute("SET TimeZone = 'UTC'")
    return con
