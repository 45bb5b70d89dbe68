"""``3gpp-ber``: 3GPP TS 32.298 circuit-switched MSC call records, ASN.1 BER.

**Files.** Concatenated BER records, with or without a 3GPP TS 32.297 CDR file header (told
apart by the first byte: a record starts with a context-specific constructed tag, a 32.297
file with its 4-octet file length; the CDR source option ``file_header`` = ``ts32297`` or
``none`` forces one). Splitting, the 32.297 checks (file length, number of CDRs, data record
format of each CDR), padding and truncated tails: :mod:`bluerocktel.mediation.ber`.

**Records** are decoded by asn1tools with the project's module
``bluerocktel/mediation/asn1/ts32298.asn`` (the real 32.298 tags, 3GPP TS 32.298 clause
5.2.2.1, CSChargingDataTypes). ``CallEventRecord`` (32.298 ``CSRecord``) alternatives read:

=================== ================================= =================================
32.298 member        MOCallRecord ``[0]`` tag          MTCallRecord ``[1]`` tag
=================== ================================= =================================
servedMSISDN         [3] ISDN-AddressString            [3] CalledNumber (BCD)
callingNumber        [4] CallingNumber (BCD)           [4] CallingNumber (BCD)
calledNumber         [5] CalledNumber (BCD)            —
recordingEntity      [9] AddressString                 [6] AddressString
mscIncomingTKGP      [10] TrunkGroup                   [7] TrunkGroup
mscOutgoingTKGP      [11] TrunkGroup                   [8] TrunkGroup
seizureTime          [22] TimeStamp                    [19] TimeStamp
answerTime           [23] TimeStamp                    [20] TimeStamp
releaseTime          [24] TimeStamp                    [21] TimeStamp
callDuration         [25] INTEGER (s)                  [22] INTEGER (s)
causeForTerm         [30] INTEGER                      [27] INTEGER
diagnostics          [31] Diagnostics                  [28] Diagnostics
callReference        [32] OCTET STRING (1..8)          [29] OCTET STRING (1..8)
sequenceNumber       [33] INTEGER                      [30] INTEGER
=================== ================================= =================================

(servedIMSI [1], servedIMEI [2] and, for MO, translated/connected/roaming numbers are declared
but not used; every other member is skipped.) The other record types of a CS file (roaming,
gateway, transit, SMS, SS action, location update...: ``CSRecord`` tags [2]..[22]) are
quarantined with a reason naming the type: nothing is dropped silently.

**Normalized CDR.**

- ``caller``: MO the servedMSISDN (else the callingNumber), MT the callingNumber; ``callee``:
  MO the calledNumber, MT the servedMSISDN. Numbers: type of number international → ``+``
  digits; national → the national trunk prefix (``0`` in France) + digits; unknown and others
  → the digits; then the source's national rules (:mod:`bluerocktel.mediation.numbers`).
  TBCD and BCD details: :func:`bluerocktel.mediation.ber.tbcd_numbers`.
- ``direction``: ``out`` for MO, ``in`` for MT (the served subscriber's view).
- ``start_at``: the seizureTime, else the answerTime; ``answer_at``: the answerTime (none: not
  answered); ``end_at``: the releaseTime, else answer (or start) + callDuration. Time stamps
  are ``YYMMDDhhmmss`` local time with their offset to UTC (``+0200``), so they are exact: the
  source's time zone does not apply. Years are 20YY.
- ``duration_s`` = release − seizure (end − start); ``billsec_s`` = callDuration for an
  answered call (32.298: answer to release), 0 for an unanswered one (whatever holding time a
  switch puts in callDuration then). A callDuration longer than end − start is refused by the
  normalizer (``billsec > duration``).
- ``disposition``: ANSWERED when answered; else from the Q.850 cause of ``diagnostics``
  (gsm0408Cause or itu-tQ767Cause): 17 → BUSY; 16, 18, 19, 31 → NO ANSWER; 34, 38, 41, 42,
  44, 47 → CONGESTION; any other → FAILED; without such a cause, causeForTerm
  unsuccessfulCallAttempt (3) → FAILED, else NO ANSWER.
- ``channel`` / ``dst_channel``: mscIncomingTKGP / mscOutgoingTKGP (the trunk group number in
  decimal, or its name); ``unique_id``: callReference in lower-case hex.
- Record id (``cdr_id``): SHA-256 of, joined by 0x1F: the source, the record type
  (``moCallRecord`` / ``mtCallRecord``: the MO and MT records of one on-net call share a call
  reference), the recordingEntity as read (``+3360...``), callReference (hex), sequenceNumber
  (decimal, empty when absent: partial records of a long call differ by it) and start_at (µs
  since the epoch, UTC).

**Issues** (``CdrIssue``: record number, byte offset, base64 of the record's BER bytes, reason):
a record that does not decode (asn1tools' message), a record type not imported, a time stamp
that is not a BCD ``YYMMDDhhmmss±hhmm`` (shown in hex), a number with a filler before its last
digit, no seizureTime nor answerTime, a negative callDuration or one that does not fit in
32 bits, then every check of :func:`~bluerocktel.mediation.normalize.normalize_batch`.

**Speed.** Decoding is asn1tools' BER decoder (with the faster SET reading of
:mod:`bluerocktel.mediation.ber`), one record at a time: the format forces it, each record being
a tree of variable-length TLVs. From 5,000 records on, worker processes decode and convert
slices of 16,384 records (numpy/Arrow, vectorized) while this process normalizes them in
batches of 131,072 (:func:`~bluerocktel.mediation.normalize.normalize_batch`). Measured on this
machine (2 cores, other jobs running beside), ``benchmarks/mediation.py --formats 3gpp-ber``
(``import_cdr_file`` end to end, fresh process per run, median of 3): 500,000 records (49 MB,
TS 32.297 file) at 127,000 to 134,000 records/s (three medians), peak RSS 548 MB; the same
records concatenated without the header, 126,000 to 133,000. CPU per record: about 6 µs to
decode (a 15-member MO record) and 2.5 µs to convert, in the workers; 4 µs in this process
(split, normalize, importer). The whole file is read at once
(not line based): memory grows with it, about 1 KB per record at the peak of an import.
"""

from __future__ import annotations

import functools
from array import array

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bluerocktel.errors import FormatError
from bluerocktel.lake import CDR_SCHEMA
from bluerocktel.mediation.ber import (
    PARALLEL_MIN_RECORDS,
    UTC_TS,
    RecordSplit,
    b64,
    bcd_timestamps,
    compile_module,
    hex_strings,
    run_slices,
    slice_jobs,
    split_records,
    tbcd_numbers,
    warm_workers,
)
from bluerocktel.mediation.formats import FormatSpec
from bluerocktel.mediation.normalize import normalize_batch
from bluerocktel.mediation.numbers import national_plan
from bluerocktel.mediation.records import CdrIssue
from bluerocktel.settings import get_setting

RECORD_TYPE = "CallEventRecord"
MO_TAG, MT_TAG = 0xA0, 0xA1
KIND_NAMES = ("moCallRecord", "mtCallRecord")
# 32.298 CSRecord alternatives, by context tag number
CS_RECORDS = ("moCallRecord", "mtCallRecord", "roamingRecord", "incGatewayRecord", "outGatewayRecord",
              "transitRecord", "moSMSRecord", "mtSMSRecord", "moSMSIWRecord", "mtSMSGWRecord", "ssActionRecord",
              "hlrIntRecord", "locUpdateHLRRecord", "locUpdateVLRRecord", "commonEquipRecord",
              "recTypeExtensions", "termCAMELRecord", "mtLCSRecord", "moLCSRecord", "niLCSRecord",
              "mSCsRVCCRecord", "mMTRFRecord", "iCSRegisterRecord")
BINARY_FIELDS = ("servedMSISDN", "callingNumber", "calledNumber", "recordingEntity", "seizureTime",
                 "answerTime", "releaseTime", "callReference", "mscIncomingTKGP", "mscOutgoingTKGP")
KEY = ("_key_type", "_key_entity", "_key_callref", "_key_seq", "start_at")
INT32 = 1 << 31
NO_VALUE = -(1 << 63)                # integer column sentinel: member absent
BUSY_CAUSES = (17,)
NO_ANSWER_CAUSES = (16, 18, 19, 31)
CONGESTION_CAUSES = (34, 38, 41, 42, 44, 47)
UNSUCCESSFUL_CALL_ATTEMPT = 3
Q850_DIAGNOSTICS = ("gsm0408Cause", "itu-tQ767Cause")      # Diagnostics alternatives holding a Q.850 cause
NORMALIZE_ROWS = 131_072             # records normalized together (each normalize_batch call has a fixed cost)
PARALLEL_HINT_BYTES = PARALLEL_MIN_RECORDS * 64      # a file this big is likely to be decoded by workers


@functools.lru_cache(maxsize=1)
def ts32298_spec():
    """The compiled project module (once per process)."""
    from bluerocktel.mediation.asn1 import module_text

    return compile_module(module_text("ts32298.asn"))


def parse_3gpp_ber(data: bytes, *, file_name: str, source: str = "default", timezone: str | None = None,
                   country: str | None = None, options=None) -> tuple[pa.Table, list[CdrIssue]]:
    """Normalize the bytes of a 32.298 CS CDR file: a ``CDR_SCHEMA`` table and the issues."""
    options = dict(options or {})
    country = country or get_setting("default_country")
    timezone = timezone or get_setting("default_timezone")
    file_header = str(options.get("file_header", "auto")).lower()
    if file_header not in ("auto", "ts32297", "none"):
        raise FormatError(f"{file_name}: CDR source option file_header = {options['file_header']!r}: "
                          "expected \"auto\", \"ts32297\" or \"none\"")
    if len(data) >= PARALLEL_HINT_BYTES:
        warm_workers(_compile_in_worker)                # workers compile the module while this process splits
    split = split_records(data, file_name, file_header=file_header)
    issues = list(split.issues)
    jobs = [(payload, bounds, split.numbers[first:first + count], split.starts[first], file_name, country)
            for first, count, payload, bounds in slice_jobs(data, split)]
    tables: list[pa.Table] = []
    pending: list[pa.Table] = []

    def flush() -> None:
        if pending:
            table, more = _normalize(pa.concat_tables(pending), split, data, file_name, source, timezone, country)
            pending.clear()
            if table.num_rows:
                tables.append(table)
            issues.extend(more)

    for raw, more in run_slices(_parse_slice, jobs, len(split)):
        issues += more
        if raw is not None:
            pending.append(raw)
            if sum(t.num_rows for t in pending) >= NORMALIZE_ROWS:
                flush()
    flush()
    issues.sort(key=lambda i: i.line)
    if not tables:
        return CDR_SCHEMA.empty_table(), issues
    return pa.concat_tables(tables), issues


def _compile_in_worker() -> None:
    ts32298_spec()


def _parse_slice(payload: bytes, bounds: array, numbers: array, base: int, file_name: str, country: str):
    """Decode a slice of records and convert it to a raw batch (runs in a worker process):
    (raw batch or None, issues)."""
    return _raw_slice(_decode_slice(payload, bounds), payload, bounds, numbers, base, file_name, country)


# --- worker: decode a slice -------------------------------------------------------------------

def _decode_slice(payload: bytes, bounds: array):
    """Decode the records ``payload[bounds[2k]:bounds[2k+1]]``; returns (indexes decoded, their
    kinds, [(index, reason)], {field: [value or None]}, {integer field: array})."""
    choice = ts32298_spec().types[RECORD_TYPE]._type        # the SETs are decoded directly: tag checked here
    decoders = {MO_TAG: choice.name_to_member[KIND_NAMES[0]].decode,
                MT_TAG: choice.name_to_member[KIND_NAMES[1]].decode}
    ok = array("q")
    kinds = bytearray()
    bad: list[tuple[int, str]] = []
    values: dict[str, list] = {name: [] for name in BINARY_FIELDS}
    msisdn, calling, called, entity = (values[k] for k in BINARY_FIELDS[:4])
    seizure, answer, release, callref, tk_in, tk_out = (values[k] for k in BINARY_FIELDS[4:])
    duration, cause, diag, seq = array("q"), array("q"), array("q"), array("q")
    # One record at a time (the format forces it); the values are taken out of each decoded
    # record at once (keeping the dicts alive costs more, in garbage collection, than this).
    for k in range(len(bounds) // 2):
        record = payload[bounds[2 * k]:bounds[2 * k + 1]]
        tag = record[0]
        decode = decoders.get(tag)
        if decode is None:
            bad.append((k, _unsupported(record)))
            continue
        try:
            v = decode(record, 0)[0]
        except Exception as exc:   # asn1tools raises DecodeError, and IndexError/ValueError on garbage
            bad.append((k, f"does not decode as a TS 32.298 {KIND_NAMES[tag - MO_TAG]}: {exc}"))
            continue
        get = v.get
        d, s = v["callDuration"], get("sequenceNumber")
        if not -INT32 <= d < INT32:
            bad.append((k, f"callDuration {d} does not fit in 32 bits"))
            continue
        if s is not None and not -INT32 <= s < INT32:
            bad.append((k, f"sequenceNumber {s} does not fit in 32 bits"))
            continue
        ok.append(k)
        kinds.append(tag - MO_TAG)
        msisdn.append(get("servedMSISDN"))
        calling.append(get("callingNumber"))
        called.append(get("calledNumber"))
        entity.append(get("recordingEntity"))
        seizure.append(get("seizureTime"))
        answer.append(get("answerTime"))
        release.append(get("releaseTime"))
        callref.append(get("callReference"))
        t = get("mscIncomingTKGP")
        tk_in.append(None if t is None or t[1] is None else str(t[1]))
        t = get("mscOutgoingTKGP")
        tk_out.append(None if t is None or t[1] is None else str(t[1]))
        duration.append(d)
        c = v["causeForTerm"]
        cause.append(c if -INT32 <= c < INT32 else NO_VALUE)
        g = get("diagnostics")
        diag.append(g[1] if g is not None and g[0] in Q850_DIAGNOSTICS and 0 <= g[1] < 256 else NO_VALUE)
        seq.append(NO_VALUE if s is None else s)
    ints = {"callDuration": duration, "causeForTerm": cause, "diagnostics": diag, "sequenceNumber": seq}
    return ok, bytes(kinds), bad, values, {name: np.frombuffer(a, dtype=np.int64) if len(a) else
                                           np.zeros(0, np.int64) for name, a in ints.items()}


def _unsupported(record: bytes) -> str:
    first = record[0]
    if first & 0xC0 != 0x80:
        return f"not a TS 32.298 CS record: tag 0x{first:02x} is not a context-specific CHOICE tag"
    number, p = first & 0x1F, 1
    if number == 0x1F:
        number = 0
        while p < len(record) and p < 6:
            number = (number << 7) | (record[p] & 0x7F)
            p += 1
            if not record[p - 1] & 0x80:
                break
    name = CS_RECORDS[number] if number < len(CS_RECORDS) else "unknown"
    return f"record type {name} [{number}] is not imported by 3gpp-ber (MO and MT call records only)"


# --- parent: convert and normalize a slice ------------------------------------------------------

def _raw_slice(decoded, payload: bytes, bounds: array, numbers: array, base: int, file_name: str,
               country: str) -> tuple[pa.Table | None, list[CdrIssue]]:
    """The raw batch (``normalize_batch`` columns) of a decoded slice, and the issues of the
    records refused here (module doc)."""
    ok, kinds, bad, values, num = decoded

    def issue(k: int, reason: str) -> CdrIssue:
        k = int(k)
        return CdrIssue(file_name, numbers[k], reason, b64(payload[bounds[2 * k]:bounds[2 * k + 1]]),
                        base + bounds[2 * k])

    issues = [issue(k, reason) for k, reason in bad]
    if not len(ok):
        return None, issues
    ok = np.frombuffer(ok, dtype=np.int64)
    mo = np.frombuffer(kinds, dtype=np.uint8) == 0
    col = {name: pa.array(values[name], pa.string() if name.endswith("TKGP") else pa.binary())
           for name in BINARY_FIELDS}
    trunk = national_plan(country).trunk_prefix

    mo_arr = pa.array(mo)
    caller_raw = pc.if_else(mo_arr, pc.coalesce(col["servedMSISDN"], col["callingNumber"]), col["callingNumber"])
    callee_raw = pc.if_else(mo_arr, col["calledNumber"], col["servedMSISDN"])
    caller, caller_bad = tbcd_numbers(caller_raw, trunk)
    callee, callee_bad = tbcd_numbers(callee_raw, trunk)
    entity, entity_bad = tbcd_numbers(col["recordingEntity"], trunk)
    seizure, seizure_bad = bcd_timestamps(col["seizureTime"])
    answer, answer_bad = bcd_timestamps(col["answerTime"])
    release, release_bad = bcd_timestamps(col["releaseTime"])
    answered = np.asarray(answer.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    start = pc.coalesce(seizure, answer)
    no_start = np.asarray(start.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    call_duration = num["callDuration"]

    checks = [
        (seizure_bad, lambda k: _bad_time("seizureTime", col["seizureTime"], k)),
        (answer_bad, lambda k: _bad_time("answerTime", col["answerTime"], k)),
        (release_bad, lambda k: _bad_time("releaseTime", col["releaseTime"], k)),
        (no_start & ~seizure_bad & ~answer_bad, lambda k: "neither seizureTime nor answerTime"),
        (caller_bad, lambda k: _bad_number("servedMSISDN/callingNumber" if mo[k] else "callingNumber", caller_raw, k)),
        (callee_bad, lambda k: _bad_number("calledNumber" if mo[k] else "servedMSISDN", callee_raw, k)),
        (entity_bad, lambda k: _bad_number("recordingEntity", col["recordingEntity"], k)),
        (call_duration < 0, lambda k: f"negative callDuration: {call_duration[k]}"),
    ]
    bad_any = np.zeros(len(ok), dtype=bool)
    for mask, _ in checks:
        bad_any |= mask
    for k in np.flatnonzero(bad_any):
        reason = next(word(k) for mask, word in checks if mask[k])
        issues.append(issue(int(ok[k]), reason))
    keep_np = ~bad_any

    cause = num["diagnostics"]
    disposition = np.select(
        [answered, np.isin(cause, BUSY_CAUSES), np.isin(cause, NO_ANSWER_CAUSES), np.isin(cause, CONGESTION_CAUSES),
         cause >= 0, num["causeForTerm"] == UNSUCCESSFUL_CALL_ATTEMPT],
        ["ANSWERED", "BUSY", "NO ANSWER", "CONGESTION", "FAILED", "FAILED"], "NO ANSWER")
    from_ts = pc.if_else(pa.array(answered), answer, start)
    computed_end = pc.add(from_ts, pa.array(call_duration * 1_000_000, pa.int64()).cast(pa.duration("us")))
    seq = num["sequenceNumber"]
    seq_text = pc.if_else(pa.array(seq == np.int64(NO_VALUE)), "", pa.array(seq).cast(pa.string()))
    callref = hex_strings(col["callReference"])
    lines = np.frombuffer(numbers, dtype=np.int64)[ok]
    offsets = base + np.frombuffer(bounds, dtype=np.int64)[0::2][ok]
    raw = pa.table({
        "_line": pa.array(lines, pa.int32()),
        "_offset": pa.array(offsets, pa.int64()),
        "start": start.cast(UTC_TS),
        "answer": answer,
        "end": pc.coalesce(release, computed_end).cast(UTC_TS),
        "billsec": pa.array(np.where(answered, call_duration, 0), pa.int64()),
        "caller": caller,
        "callee": callee,
        "channel": col["mscIncomingTKGP"],
        "dst_channel": col["mscOutgoingTKGP"],
        "disposition": pa.array(disposition),
        "direction": pa.array(np.where(mo, "out", "in")),
        "unique_id": callref,
        "_key_type": pa.array(np.where(mo, KIND_NAMES[0], KIND_NAMES[1])),
        "_key_entity": entity,
        "_key_callref": callref,
        "_key_seq": seq_text,
    })
    if not keep_np.all():
        raw = raw.filter(pa.array(keep_np))
    return (raw if raw.num_rows else None), issues


def _normalize(raw: pa.Table, split: RecordSplit, data: bytes, file_name: str, source: str, timezone: str,
               country: str) -> tuple[pa.Table, list[CdrIssue]]:
    numbers = np.frombuffer(split.numbers, dtype=np.int64)

    def raw_text(wanted: list[int]) -> dict[int, str]:
        found = {}
        for number in wanted:
            i = int(np.searchsorted(numbers, number))
            found[number] = b64(data[split.starts[i]:split.ends[i]])
        return found

    return normalize_batch(raw, file_name=file_name, source=source, timezone=timezone, country=country,
                           key=KEY, raw_text=raw_text)


def _bad_time(name: str, values: pa.Array, k: int) -> str:
    value = values[int(k)].as_py()
    return f"{name} {value.hex()} is not a BCD time stamp YYMMDDhhmmss±hhmm"


def _bad_number(name: str, values: pa.Array, k: int) -> str:
    value = values[int(k)].as_py()
    return f"{name} {value.hex()} has a filler digit F before its last digit"


FORMATS = [FormatSpec(
    "3gpp-ber", parse_3gpp_ber,
    description="3GPP TS 32.298 MSC call records (MO/MT), ASN.1 BER, with or without a TS 32.297 file header",
    fingerprint="source + record type + recordingEntity + callReference + sequenceNumber + start "
                "(seizureTime, else answerTime)",
    line_based=False, raw_kind="binary", extensions=(".ber", ".cdr", ".dat"),
)]
