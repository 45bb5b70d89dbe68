"""Custom mappings of kind asn1: an operator's .asn module, a record type and field paths.

``tests/data/asn1/acme.asn`` is an ACME softswitch's module and ``acme.toml`` its mapping; the
records are encoded with asn1tools from that module, the expected values written out.
"""

from __future__ import annotations

import base64
import datetime as dt
import struct
import tomllib
from pathlib import Path

import asn1tools
import pytest

from bluerocktel.errors import FormatError
from bluerocktel.lake import CDR_SCHEMA
from bluerocktel.mediation import import_cdr_bytes, read_quarantine
from bluerocktel.mediation.ber import asn1_mapping_format, asn1_mapping_parser
from bluerocktel.mediation.records import cdr_id

DATA = Path(__file__).parent.parent / "data" / "asn1"
ACME = asn1tools.compile_files(str(DATA / "acme.asn"), "ber")
HEADER = b"ACME-CDR-FILE-v1"                                  # the 16-byte file header
UTC = dt.timezone.utc


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def mapping(**changes) -> dict:
    """acme.toml as parsed, with ``changes`` ({"fields.caller": ...}; None removes the key)."""
    m = tomllib.loads((DATA / "acme.toml").read_text())
    for dotted, value in changes.items():
        table, key = dotted.split(".", 1)
        if value is None:
            m[table].pop(key, None)
        else:
            m.setdefault(table, {})[key] = value
    return m


def record(**over) -> bytes:
    fields = dict(recordId="ACME-0001", callingParty=bytes.fromhex("a116325476f8"),
                  calledParty=bytes.fromhex("9144971121436587"), startTime=bytes.fromhex("2610051412002b0200"),
                  answerTime=bytes.fromhex("2610051412092b0200"), endTime=bytes.fromhex("2610051414092b0200"),
                  chargeableSecs=120, status="answered", trunkIn="SIP-IN-1", account=b"CUST042\x00\x00\x00",
                  extensions=[{"id": 7, "value": b"\xca\xfe"}])
    fields.update(over)
    return bytes(ACME.encode("AcmeRecord", {k: v for k, v in fields.items() if v is not None}))


def parse(data: bytes, m: dict | None = None, **kwargs):
    parser = asn1_mapping_parser(m or mapping(), DATA)
    table, issues = parser(data, file_name="acme_20261005.cdr", source="acme1", **kwargs)
    assert table.schema == CDR_SCHEMA
    return table.to_pylist(), issues


def test_acme_records_normalized():
    data = HEADER + record() + record(recordId="ACME-0002", answerTime=None, chargeableSecs=0, status="busy",
                                      endTime=bytes.fromhex("2610051412042b0200"), trunkIn=None, account=None)
    rows, issues = parse(data, timezone="America/New_York", country="FR")
    assert issues == []
    first, second = rows
    assert (first["source_line"], first["unique_id"], first["cdr_id"]) == (1, "ACME-0001", cdr_id("acme1", "ACME-0001"))
    # callingParty: national 612345678 → 0612345678 → +33; calledParty: international 44791112345678
    assert (first["caller"], first["callee"], first["direction"]) == ("+33612345678", "+44791112345678", "out")
    # bcd_time: exact, the time stamps carry +0200 (the source's zone does not apply)
    assert (first["start_at"], first["answer_at"], first["end_at"]) == (
        utc(2026, 10, 5, 12, 12, 0), utc(2026, 10, 5, 12, 12, 9), utc(2026, 10, 5, 12, 14, 9))
    assert (first["duration_s"], first["billsec_s"], first["disposition"]) == (129, 120, "ANSWERED")
    assert (first["channel"], first["dst_channel"], first["account_code"]) == ("SIP-IN-1", "", "CUST042")
    assert (second["source_line"], second["disposition"], second["answer_at"], second["billsec_s"]) == (
        2, "BUSY", None, 0)
    assert (second["duration_s"], second["channel"], second["account_code"]) == (4, "", "")


def test_paths_alternatives_indexes_and_choices():
    m = mapping(**{"fields.account_code": {"path": "extensions.0.value", "convert": "hex"},
                   "fields.units": "service.sms|extensions.1.id",
                   "fields.dst_channel": {"path": "service", "default": "none"}})
    rows, issues = parse(HEADER
                         + record(service=("sms", 3), extensions=[{"id": 7, "value": b"\xca\xfe"}])
                         + record(recordId="B", service=("voice", 8),
                                  extensions=[{"id": 7, "value": b"\x01"}, {"id": 2, "value": b""}])
                         + record(recordId="C", extensions=None), m)
    assert issues == []
    assert [(r["account_code"], r["units"], r["dst_channel"]) for r in rows] == [
        ("cafe", 3, "3"), ("01", 2, "8"), ("", 0, "none")]


def test_the_operator_module_decodes_as_asn1tools_decodes_it():
    from bluerocktel.mediation.ber import compile_module

    ours = compile_module((DATA / "acme.asn").read_text())
    for data in (record(), record(service=("sms", 3), trunkOut="TRK-2",
                                  extensions=[{"id": -5, "value": b"\x00" * 200}]),
                 record(answerTime=None, account=None, extensions=None, status="failed")):
        assert ours.decode("AcmeRecord", data) == ACME.decode("AcmeRecord", data)
    # A member whose length runs past the end of its SEQUENCE (into the next bytes) is an error,
    # not a value read from its neighbours.
    data = record(extensions=[{"id": 7, "value": b"\xca\xfe"}, {"id": 8, "value": b"\x01"}])
    at = data.index(bytes.fromhex("800107"))
    broken = data[:at] + bytes.fromhex("8006") + data[at + 2:]
    with pytest.raises(asn1tools.DecodeError, match="runs past the end"):
        ours.decode("AcmeRecord", broken)
    # Non-ASCII in an IA5String is refused by both.
    bad = record(trunkIn="TRK-1").replace(b"TRK-1", b"TRK-\xe9")
    for spec in (ours, ACME):
        with pytest.raises(UnicodeDecodeError):
            spec.decode("AcmeRecord", bad)


def test_text_times_with_a_strptime_format_and_a_time_zone():
    module = """
    PBX DEFINITIONS IMPLICIT TAGS ::= BEGIN
    Call ::= SEQUENCE { id [0] INTEGER, from [1] IA5String, to [2] IA5String, begin [3] IA5String,
                        seconds [4] INTEGER, ... }
    END
    """
    m = {"format": {"name": "pbx-ber", "kind": "asn1"},
         "input": {"module_text": module, "record_type": "Call"},
         "times": {"format": "%d/%m/%Y %H:%M:%S", "timezone": "Europe/Paris"},
         "fields": {"unique_id": {"path": "id", "convert": "int"}, "caller": "from", "callee": "to",
                    "start": "begin", "duration": "seconds"},
         "key": {"fields": ["caller", "start"]}}
    spec = asn1tools.compile_string(module, "ber")
    data = b"".join(bytes(spec.encode("Call", v)) for v in (
        {"id": 1, "from": "201", "to": "0478123456", "begin": "25/10/2026 02:30:00", "seconds": 3600},
        {"id": 2, "from": "202", "to": "0612345678", "begin": "05/10/2026 09:00:00", "seconds": 30},
        {"id": 3, "from": "203", "to": "3615", "begin": "32/01/2026 09:00:00", "seconds": 30}))
    rows, issues = parse(data, m, timezone="Asia/Tokyo")
    # 02:30 on 25 October occurs twice in Paris: its first occurrence (summer time, UTC+2)
    assert [(r["unique_id"], r["start_at"], r["end_at"]) for r in rows] == [
        ("1", utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)), ("2", utc(2026, 10, 5, 7, 0), utc(2026, 10, 5, 7, 0, 30))]
    assert rows[0]["callee"] == "+33478123456"
    assert rows[0]["cdr_id"] == cdr_id("acme1", "201", str(int(utc(2026, 10, 25, 0, 30).timestamp()) * 10**6))
    [issue] = issues
    assert (issue.line, issue.reason) == (3, "unparseable start time: '32/01/2026 09:00:00'")
    assert base64.b64decode(issue.raw) == bytes(spec.encode("Call", {"id": 3, "from": "203", "to": "3615",
                                                                     "begin": "32/01/2026 09:00:00", "seconds": 30}))


def test_records_that_do_not_decode_or_convert_are_issues():
    good = record()
    broken = b"\x30\x05\x80\x09ACM"                  # recordId says 9 bytes, 3 follow
    bad_number = record(recordId="Y", calledParty=bytes.fromhex("911f32"))
    data = HEADER + good + bad_number + good
    rows, issues = parse(data)
    assert [r["source_line"] for r in rows] == [1, 3]       # 3 is the same record as 1: the lake dedups it
    [issue] = issues
    assert (issue.line, issue.offset) == (2, 16 + len(good))
    assert issue.reason == "[fields].callee: 911f32 has a filler digit F before its last digit"
    assert base64.b64decode(issue.raw) == bad_number
    rows, [issue] = parse(HEADER + good + broken)
    assert len(rows) == 1
    assert issue.line == 2 and issue.reason.startswith("does not decode as AcmeRecord: ")
    bad_time = record(recordId="Z", answerTime=bytes.fromhex("2610051412092b02"))
    rows, [issue] = parse(HEADER + bad_time + good)
    assert [r["unique_id"] for r in rows] == ["ACME-0001"]
    assert (issue.line, issue.reason) == (1, "[fields].answer: 2610051412092b02 is not a BCD time stamp (YYMMDDhhmmss, "
                                             "6 or 7 octets, or 9 with a UTC offset ±hhmm)")


def test_ts32297_file_header():
    body = b"".join(struct.pack(">H", len(r)) + bytes([(6 << 5) | 3, (1 << 5) | 6]) + r
                    for r in (record(), record(recordId="ACME-0002")))
    header = (struct.pack(">II", 54 + len(body), 54) + bytes([6 << 5, 6 << 5]) + bytes(8)
              + struct.pack(">II", 2, 1) + bytes(22) + struct.pack(">HH", 0, 0) + bytes(2))
    m = mapping(**{"input.header_bytes": None, "input.file_header": "ts32297"})
    rows, issues = parse(header + body, m)
    assert issues == [] and [r["unique_id"] for r in rows] == ["ACME-0001", "ACME-0002"]


def test_format_spec_and_import(wb):
    spec = asn1_mapping_format(mapping(), DATA, "acme.toml")
    assert (spec.name, spec.line_based, spec.raw_kind) == ("acme-softswitch", False, "binary")
    bad = record(recordId="Y", calledParty=bytes.fromhex("911f32"))
    summary = import_cdr_bytes(wb, HEADER + record() + bad, "acme_1.cdr", spec, source="acme1")
    assert (summary.received, summary.imported, summary.quarantined) == (2, 1, 1)
    [q] = read_quarantine(wb).to_pylist()
    assert (q["format"], q["source_line"], q["byte_offset"]) == ("acme-softswitch", 2, 16 + len(record()))
    assert base64.b64decode(q["raw"]) == bad


# --- the mapping is checked when it is loaded --------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    ({"input.module": "missing.asn"}, "acme.toml: [input].module: ASN.1 module 'missing.asn' not found"),
    ({"input.module": None}, "acme.toml: [input].module: give the ASN.1 module as module"),
    ({"input.module": None, "input.module_text": "BROKEN DEFINITIONS ::= BEGIN X ::= SEQUENCE { END"},
     "acme.toml: [input].module_text: the ASN.1 module does not compile: "),
    ({"input.record_type": "AcmeCall"},
     "acme.toml: [input].record_type: 'AcmeCall' is not a type of the module (types: AcmeRecord, AddressString, "
     "CallStatus, Extension, Service, TimeStamp)"),
    ({"input.codec": "per"}, "acme.toml: [input].codec: 'per' is not supported (only \"ber\")"),
    ({"input.blocks": 2048}, "acme.toml: [input].blocks: unknown key for kind asn1"),
    ({"input.header_bytes": -1}, "acme.toml: [input].header_bytes: -1 is not a byte count"),
    ({"fields.caller": "callingNumber"},
     "acme.toml: [fields].caller: path 'callingNumber' does not exist in AcmeRecord: the record (SEQUENCE) has no "
     "member 'callingNumber' (members: recordId, callingParty, calledParty, startTime, answerTime, endTime, "
     "chargeableSecs, status, trunkIn, trunkOut, account, service, extensions)"),
    ({"fields.account_code": "extensions.first.value"},
     "acme.toml: [fields].account_code: path 'extensions.first.value' does not exist in AcmeRecord: extensions "
     "(SEQUENCE OF) is a list: the next step must be an index (0, 1, ...), not 'first'"),
    ({"fields.account_code": "extensions.0"},
     "acme.toml: [fields].account_code: path 'extensions.0' does not exist in AcmeRecord: it ends on a Extension (SEQUENCE); "
     "continue to one of: id, value"),
    ({"fields.account_code": "service.fax"},
     "acme.toml: [fields].account_code: path 'service.fax' does not exist in AcmeRecord: service (Service (CHOICE)) has no "
     "alternative 'fax' (alternatives: voice, sms)"),
    ({"fields.account_code": "recordId.x"},
     "acme.toml: [fields].account_code: path 'recordId.x' does not exist in AcmeRecord: recordId (IA5String) has "
     "no members, so no 'x'"),
    ({"fields.caller": {"path": "chargeableSecs", "convert": "tbcd"}},
     "acme.toml: [fields].caller.convert: tbcd reads an OCTET STRING; chargeableSecs is INTEGER"),
    ({"fields.caller": {"path": "callingParty", "convert": "e164"}},
     "acme.toml: [fields].caller.convert: unknown converter 'e164' (expected: tbcd, tbcd_digits, bcd_time, int, hex, "
     "strip)"),
    ({"fields.caller": {"column": 3}}, "acme.toml: [fields].caller.column: not valid for kind asn1"),
    ({"fields.caller": 3}, "acme.toml: [fields].caller: expected a path (text) or a table"),
    ({"fields.colour": "status"}, "acme.toml: [fields].colour: not a standard field"),
    ({"fields.start": None}, "acme.toml: [fields].start: required"),
    ({"fields.end": None}, "acme.toml: [fields].end: required (or [fields].duration)"),
    ({"fields.answer": "answerTime"},
     "acme.toml: [fields].answer: every time field must use convert = \"bcd_time\" when [fields].start does"),
    ({"times.timezone": "Europe/Lutece"}, "acme.toml: [times].timezone: unknown time zone 'Europe/Lutece'"),
    ({"key.fields": ["unique_id", "colour"]}, "acme.toml: [key].fields: 'colour' is not a normalized field name"),
])
def test_mapping_errors_name_the_table_and_key(changes, message):
    with pytest.raises(FormatError) as caught:
        asn1_mapping_parser(mapping(**changes), DATA, "acme.toml")
    assert str(caught.value).startswith(message), str(caught.value)


def test_times_format_must_be_known():
    m = mapping(**{"fields.start": "recordId", "fields.answer": None, "fields.end": None,
                   "fields.duration": "chargeableSecs", "times.format": "dd/mm/yyyy"})
    with pytest.raises(FormatError, match=r"\[times\].format: 'dd/mm/yyyy' is not a strptime format"):
        asn1_mapping_parser(m, DATA, "acme.toml")


def test_worker_processes_give_the_same_result_as_one_process(monkeypatch):
    from bluerocktel.mediation import ber

    records = [record(recordId=f"ACME-{k:05d}", chargeableSecs=k % 100) for k in range(6_000)]
    records[4_321] = record(recordId="BAD", calledParty=bytes.fromhex("911f32"))
    data = HEADER + b"".join(records)
    monkeypatch.setattr(ber, "SLICE_RECORDS", 1_000)
    parallel = parse(data)
    monkeypatch.setattr(ber, "PARALLEL_MIN_RECORDS", 10**9)
    inline = parse(data)
    assert parallel == inline
    rows, [issue] = parallel
    assert len(rows) == 5_999 and issue.line == 4_322
    assert [r["billsec_s"] for r in rows[:3]] == [0, 1, 2]
