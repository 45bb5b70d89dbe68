"""3gpp-ber: TS 32.298 MSC call records (BER), with and without a TS 32.297 file header.

The first records are written by hand, byte by byte, with the real 32.298 tags, next to what
they must become; the others are encoded by asn1tools from the project's module (which the
hand-written ones prove is tagged like 32.298), with the expected values written out.
"""

from __future__ import annotations

import base64
import datetime as dt
import struct

import asn1tools
import pyarrow as pa
import pytest

from bluerocktel.errors import FormatError
from bluerocktel.lake import CDR_SCHEMA
from bluerocktel.mediation import FORMATS, import_cdr_file, read_quarantine
from bluerocktel.mediation import ber
from bluerocktel.mediation.asn1 import module_text
from bluerocktel.mediation.formats.ber import parse_3gpp_ber, ts32298_spec
from bluerocktel.mediation.records import cdr_id

UTC = dt.timezone.utc

# A MOCallRecord written by hand from 3GPP TS 32.298 (CSChargingDataTypes), tag by tag.
MO_HEX = """
a0 66                                   -- CallEventRecord moCallRecord [0], SET, 102 bytes
   80 01 00                             -- recordType [0]: moCallRecord (0)
   81 08 02 08 11 32 54 76 98 f0        -- servedIMSI [1]: TBCD 208011234567890
   83 07 91 33 16 32 54 76 f8           -- servedMSISDN [3]: international, E.164, 33612345678
   85 06 a1 21 43 65 87 f9              -- calledNumber [5]: national, E.164, 123456789
   89 07 91 33 06 09 00 00 f1           -- recordingEntity [9]: international 33609000001
   aa 03 80 01 07                       -- mscIncomingTKGP [10] { tkgpNumber [0]: 7 }
   ab 06 81 04 4f 55 54 31              -- mscOutgoingTKGP [11] { tkgpName [1]: "OUT1" }
   96 09 26 10 01 10 00 00 2b 02 00     -- seizureTime [22]: 2026-10-01 10:00:00 +0200
   97 09 26 10 01 10 00 05 2b 02 00     -- answerTime [23]:  2026-10-01 10:00:05 +0200
   98 09 26 10 01 10 01 05 2b 02 00     -- releaseTime [24]: 2026-10-01 10:01:05 +0200
   99 01 3c                             -- callDuration [25]: 60
   9e 01 00                             -- causeForTerm [30]: normalRelease
   9f 20 04 00 00 30 39                 -- callReference [32]: 00003039
   9f 21 01 01                          -- sequenceNumber [33]: 1
"""

# An MTCallRecord by hand: the calling number carries a presentation octet (3a).
MT_HEX = """
a1 52                                   -- CallEventRecord mtCallRecord [1], SET, 82 bytes
   80 01 01                             -- recordType [0]: mtCallRecord (1)
   83 06 a1 16 32 54 76 f8              -- servedMSISDN [3] (CalledNumber): national 612345678
   84 08 11 80 44 97 11 21 43 65        -- callingNumber [4]: ext 0 + international, octet 3a 0x80,
                                        --   447911123456
   86 07 91 33 06 09 00 00 f2           -- recordingEntity [6]: 33609000002
   a7 03 80 01 0c                       -- mscIncomingTKGP [7] { tkgpNumber [0]: 12 }
   93 09 26 01 15 09 30 00 2b 01 00     -- seizureTime [19]: 2026-01-15 09:30:00 +0100
   94 09 26 01 15 09 30 12 2b 01 00     -- answerTime [20]:  2026-01-15 09:30:12 +0100
   95 09 26 01 15 09 35 12 2b 01 00     -- releaseTime [21]: 2026-01-15 09:35:12 +0100
   96 02 01 2c                          -- callDuration [22]: 300
   9b 01 00                             -- causeForTerm [27]: normalRelease
   9d 05 01 02 03 04 05                 -- callReference [29]: 0102030405
"""


def hexbytes(text: str) -> bytes:
    return bytes.fromhex(" ".join(line.split("--")[0] for line in text.splitlines()))


MO = hexbytes(MO_HEX)
MT = hexbytes(MT_HEX)


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def us(t: dt.datetime) -> str:
    return str(int(t.timestamp()) * 1_000_000)


def encode(kind: str, **fields) -> bytes:
    return bytes(ts32298_spec().encode("CallEventRecord", (kind, fields)))


def mo(**over) -> bytes:
    """An answered MO call (values as in MO_HEX unless overridden; None drops a member)."""
    fields = dict(recordType=0, servedMSISDN=bytes.fromhex("913316325476f8"),
                  calledNumber=bytes.fromhex("a121436587f9"), recordingEntity=bytes.fromhex("913306090000f1"),
                  seizureTime=bytes.fromhex("2610011000002b0200"), answerTime=bytes.fromhex("2610011000052b0200"),
                  releaseTime=bytes.fromhex("2610011001052b0200"), callDuration=60, causeForTerm=0,
                  callReference=bytes.fromhex("00003039"))
    fields.update(over)
    return encode("moCallRecord", **{k: v for k, v in fields.items() if v is not None})


def ts32297(cdrs: list[bytes], *, count: int | None = None, file_length: int | None = None,
            rel15: tuple[int, ...] = ()) -> bytes:
    """A TS 32.297 CDR file: a 54-octet file header (Rel-15), then each CDR behind its CDR
    header: 4 octets (Rel-9), or 5 for the CDRs whose index is in ``rel15``."""
    def cdr_header(k: int, cdr: bytes) -> bytes:
        if k in rel15:       # release identifier 7 (Rel-10+), version 2; BER, TS 32.250; extension 5 (Rel-15)
            return struct.pack(">H", len(cdr)) + bytes([(7 << 5) | 2, (1 << 5) | 6, 5])
        return struct.pack(">H", len(cdr)) + bytes([(6 << 5) | 3, (1 << 5) | 6])    # Rel-9 v3, BER, TS 32.250

    body = b"".join(cdr_header(k, c) + c for k, c in enumerate(cdrs))
    header = (struct.pack(">II", 54 + len(body) if file_length is None else file_length, 54)   # file, header length
              + bytes([7 << 5, 6 << 5])                      # high / low release identifier (Rel-10+, Rel-9)
              + bytes(4) + bytes(4)                          # file opening, last CDR append timestamps
              + struct.pack(">II", len(cdrs) if count is None else count, 7)   # number of CDRs, sequence no.
              + bytes([0]) + bytes(20) + bytes([0])          # closure reason, node IP address, lost CDRs
              + struct.pack(">HH", 0, 0)                      # routeing filter, private extension: empty
              + bytes([5, 0]))                               # release identifier extensions (high: Rel-15)
    assert len(header) == 54
    return header + body


def parse(data: bytes, **kwargs):
    table, issues = parse_3gpp_ber(data, file_name="msc1.ber", source="msc1", **kwargs)
    assert table.schema == CDR_SCHEMA
    return table.to_pylist(), issues


# --- the records, as 32.298 writes them ------------------------------------------------------

def test_hand_written_mo_record_is_what_the_module_encodes():
    # The project's module uses the real 32.298 tags: encoding the same values gives the same bytes.
    assert MO == mo(servedIMSI=bytes.fromhex("02081132547698f0"), mscIncomingTKGP=("tkgpNumber", 7),
                    mscOutgoingTKGP=("tkgpName", "OUT1"), sequenceNumber=1)
    assert MT == encode("mtCallRecord", recordType=1, servedMSISDN=bytes.fromhex("a116325476f8"),
                        callingNumber=bytes.fromhex("1180449711214365"),
                        recordingEntity=bytes.fromhex("913306090000f2"),
                        mscIncomingTKGP=("tkgpNumber", 12), seizureTime=bytes.fromhex("2601150930002b0100"),
                        answerTime=bytes.fromhex("2601150930122b0100"), releaseTime=bytes.fromhex("2601150935122b0100"),
                        callDuration=300, causeForTerm=0, callReference=bytes.fromhex("0102030405"))


def test_mo_call_normalized():
    [row], issues = parse(MO)
    assert issues == []
    assert (row["source"], row["source_file"], row["source_line"]) == ("msc1", "msc1.ber", 1)
    assert (row["start_at"], row["answer_at"], row["end_at"]) == (
        utc(2026, 10, 1, 8, 0, 0), utc(2026, 10, 1, 8, 0, 5), utc(2026, 10, 1, 8, 1, 5))
    assert (row["duration_s"], row["billsec_s"]) == (65, 60)       # release - seizure; callDuration
    assert (row["caller"], row["callee"], row["direction"]) == ("+33612345678", "+33123456789", "out")
    assert (row["channel"], row["dst_channel"], row["account_code"]) == ("7", "OUT1", "")
    assert (row["disposition"], row["call_type"], row["units"], row["unique_id"]) == ("ANSWERED", "voice", 0, "00003039")
    assert row["cdr_id"] == cdr_id("msc1", "moCallRecord", "+33609000001", "00003039", "1",
                                   us(utc(2026, 10, 1, 8, 0, 0)))


def test_mt_call_normalized():
    [row], issues = parse(MT)
    assert issues == []
    # The served subscriber is called: caller is the callingNumber (octet 3a skipped), direction in.
    assert (row["caller"], row["callee"], row["direction"]) == ("+447911123456", "+33612345678", "in")
    assert (row["start_at"], row["answer_at"], row["end_at"]) == (
        utc(2026, 1, 15, 8, 30, 0), utc(2026, 1, 15, 8, 30, 12), utc(2026, 1, 15, 8, 35, 12))
    assert (row["duration_s"], row["billsec_s"], row["disposition"]) == (312, 300, "ANSWERED")
    assert (row["channel"], row["dst_channel"], row["unique_id"]) == ("12", "", "0102030405")
    assert row["cdr_id"] == cdr_id("msc1", "mtCallRecord", "+33609000002", "0102030405", "",
                                   us(utc(2026, 1, 15, 8, 30, 0)))


def test_unanswered_calls_and_their_disposition():
    base = dict(answerTime=None, callDuration=0, releaseTime=bytes.fromhex("2610011000202b0200"))
    rows, issues = parse(
        mo(**base, diagnostics=("gsm0408Cause", 17), callReference=b"\x01")              # user busy
        + mo(**base, diagnostics=("gsm0408Cause", 19), callReference=b"\x02")            # no answer
        + mo(**base, diagnostics=("itu-tQ767Cause", 34), callReference=b"\x03")          # no circuit
        + mo(**base, diagnostics=("gsm0408Cause", 1), callReference=b"\x04")             # unallocated number
        + mo(**base, causeForTerm=3, callReference=b"\x05")                              # unsuccessful attempt
        + mo(**base, callReference=b"\x06")                                              # caller hung up
        + mo(**dict(base, callDuration=20), callReference=b"\x07"))                      # holding time given
    assert issues == []
    assert [r["disposition"] for r in rows] == ["BUSY", "NO ANSWER", "CONGESTION", "FAILED", "FAILED", "NO ANSWER",
                                                "NO ANSWER"]
    for row in rows:
        assert row["answer_at"] is None and row["billsec_s"] == 0
        assert (row["start_at"], row["end_at"], row["duration_s"]) == (
            utc(2026, 10, 1, 8, 0, 0), utc(2026, 10, 1, 8, 0, 20), 20)


def test_time_stamps_carry_their_offset_the_source_zone_does_not_apply():
    rows, issues = parse(
        mo(seizureTime=bytes.fromhex("2612311900002d0500"), answerTime=bytes.fromhex("2612311900102d0500"),
           releaseTime=bytes.fromhex("2612311901102d0500"))                        # New York, -0500
        + mo(seizureTime=bytes.fromhex("2603290159302b0100"), answerTime=bytes.fromhex("2603290159402b0100"),
             releaseTime=bytes.fromhex("2603290300402b0200"), callReference=b"\x09"),   # across the DST change
        timezone="Asia/Tokyo")
    assert issues == []
    assert (rows[0]["start_at"], rows[0]["end_at"]) == (utc(2027, 1, 1, 0, 0, 0), utc(2027, 1, 1, 0, 1, 10))
    assert (rows[1]["start_at"], rows[1]["answer_at"], rows[1]["end_at"]) == (
        utc(2026, 3, 29, 0, 59, 30), utc(2026, 3, 29, 0, 59, 40), utc(2026, 3, 29, 1, 0, 40))
    assert rows[1]["duration_s"] == 70


def test_no_release_time_end_is_answer_plus_call_duration():
    [row], issues = parse(mo(releaseTime=None))
    assert issues == []
    assert (row["end_at"], row["duration_s"], row["billsec_s"]) == (utc(2026, 10, 1, 8, 1, 5), 65, 60)
    [row], issues = parse(mo(seizureTime=None))     # answer time only: it is the start
    assert (row["start_at"], row["duration_s"]) == (utc(2026, 10, 1, 8, 0, 5), 60)


def test_numbers_follow_their_type_of_number():
    def callee(address: str) -> str:
        [row], issues = parse(mo(calledNumber=bytes.fromhex(address)))
        assert issues == []
        return row["callee"]

    assert callee("a121436587f9") == "+33123456789"     # national: trunk prefix 0 added
    assert callee("a11032547698") == "+33123456789"     # national written with its 0: kept
    assert callee("816021436587") == "+33612345678"     # unknown: 0612345678, French rules
    assert callee("91449711214365") == "+447911123456"  # international
    assert callee("c1") == ""                           # no digits
    assert callee("8163f5") == "365"                    # unknown, short: an extension or service number
    assert callee("81a3fb") == "3*#"                    # TBCD * and #


def test_partial_records_and_the_mo_mt_pair_of_one_call_are_distinct_records():
    rows, issues = parse(mo(sequenceNumber=1, causeForTerm=1) + mo(sequenceNumber=2)
                         + encode("mtCallRecord", recordingEntity=bytes.fromhex("913306090000f1"),
                                  servedMSISDN=bytes.fromhex("a121436587f9"),
                                  seizureTime=bytes.fromhex("2610011000002b0200"), callDuration=0, causeForTerm=0,
                                  callReference=bytes.fromhex("00003039")))
    assert issues == []
    assert len({r["cdr_id"] for r in rows}) == 3
    # The same record twice is the same record.
    again, _ = parse(mo(sequenceNumber=2))
    assert again[0]["cdr_id"] == rows[1]["cdr_id"]


# --- what real files carry besides ------------------------------------------------------------

def test_members_the_module_does_not_declare_are_skipped():
    # location [12], basicService [14], msClassmark [20], recordExtensions [35] and a vendor
    # member [101], between the declared ones: everything declared is still read.
    record = hexbytes("""
    a0 72
       83 07 91 33 16 32 54 76 f8
       85 06 a1 21 43 65 87 f9
       89 07 91 33 06 09 00 00 f1
       ac 08 80 02 ab cd 81 02 00 01        -- location [12] { locationAreaCode, cellId }
       ae 03 83 01 11                       -- basicService [14] { teleservice: telephony }
       94 03 33 19 a2                       -- msClassmark [20]
       96 09 26 10 01 10 00 00 2b 02 00
       97 09 26 10 01 10 00 05 2b 02 00
       98 09 26 10 01 10 01 05 2b 02 00
       9f 65 02 ca fe                       -- a vendor member [101]
       99 01 3c
       9e 01 00
       9f 20 04 00 00 30 39
       bf 23 0e 30 0c 06 04 2a 03 04 05 a2 04 04 02 ca fe   -- recordExtensions [35]
    """)
    assert len(record) == 2 + record[1]
    rows, issues = parse(record)
    assert issues == []
    assert (rows[0]["answer_at"], rows[0]["billsec_s"], rows[0]["callee"]) == (
        utc(2026, 10, 1, 8, 0, 5), 60, "+33123456789")
    # asn1tools alone stops at the first member it does not know: the answer time is lost.
    plain = asn1tools.compile_string(module_text("ts32298.asn"), "ber")
    with pytest.raises(asn1tools.DecodeError):
        plain.decode("CallEventRecord", record)


def test_the_tolerant_decoder_reads_what_asn1tools_reads():
    # Records the plain asn1tools decoder can read (no undeclared member): same values, through
    # the fast paths (primitive leaves, explicit CHOICEs of leaves) and the slow ones.
    plain = asn1tools.compile_string(module_text("ts32298.asn"), "ber")
    records = [
        MO, MT,
        mo(diagnostics=("gsm0408Cause", 17), mscIncomingTKGP=("tkgpName", "Ärger-Ç"), callDuration=-1),
        mo(diagnostics=("networkSpecificCause", {}), callDuration=2**40, sequenceNumber=-129),
        mo(diagnostics=("itu-tQ767Cause", 300), servedIMEI=bytes(8), callingNumber=b"\x91" + b"\x21" * 150),
        encode("mtCallRecord", recordingEntity=b"\x91", callDuration=0, causeForTerm=5, callReference=b"\x00",
               mscOutgoingTKGP=("tkgpNumber", -70000), servedIMSI=bytes.fromhex("02081132547698f0")),
    ]
    for record in records:
        assert ts32298_spec().decode("CallEventRecord", record) == plain.decode("CallEventRecord", record)
    assert ts32298_spec().decode("CallEventRecord", records[4])[1]["callingNumber"] == b"\x91" + b"\x21" * 150
    # A bad length inside a member is an error either way, never a silent value.
    broken = bytearray(MO)
    broken[MO.index(bytes.fromhex("9f2004"))+2] = 0x40                # callReference says 64 bytes
    for spec in (ts32298_spec(), plain):
        with pytest.raises(asn1tools.DecodeError):
            spec.decode("CallEventRecord", bytes(broken))


def test_other_record_types_are_quarantined_with_their_name():
    sms = hexbytes("a6 05 80 01 06 81 00")          # moSMSRecord [6]
    rows, issues = parse(MO + sms + MT)
    assert [r["source_line"] for r in rows] == [1, 3]
    [issue] = issues
    assert (issue.line, issue.offset) == (2, len(MO))
    assert issue.reason == "record type moSMSRecord [6] is not imported by 3gpp-ber (MO and MT call records only)"
    assert base64.b64decode(issue.raw) == sms


def test_a_record_that_does_not_decode_is_an_issue_the_others_are_kept():
    no_duration = hexbytes("a0 0e  89 02 91 f1  9e 01 00  9f 20 04 00 00 30 39")
    rows, issues = parse(MO + no_duration + MT)
    assert [r["source_line"] for r in rows] == [1, 3]
    [issue] = issues
    assert (issue.line, issue.offset) == (2, len(MO))
    assert issue.reason.startswith("does not decode as a TS 32.298 moCallRecord: ")
    assert "callDuration" in issue.reason
    assert base64.b64decode(issue.raw) == no_duration
    # The raw record parses again alone (what `cdr quarantine reprocess` does).
    assert parse(base64.b64decode(issue.raw))[1][0].reason == issue.reason


@pytest.mark.parametrize("field, value, reason", [
    ("seizureTime", "2613011000002b0200", "seizureTime 2613011000002b0200 is not a BCD time stamp YYMMDDhhmmss±hhmm"),
    ("answerTime", "2602301000052b0200", "answerTime 2602301000052b0200 is not a BCD time stamp YYMMDDhhmmss±hhmm"),
    ("releaseTime", "26100110010a2b0200", "releaseTime 26100110010a2b0200 is not a BCD time stamp YYMMDDhhmmss±hhmm"),
    ("releaseTime", "2610011001052a0200", "releaseTime 2610011001052a0200 is not a BCD time stamp YYMMDDhhmmss±hhmm"),
    ("calledNumber", "a121f36587f9", "calledNumber a121f36587f9 has a filler digit F before its last digit"),
    ("callDuration", -5, "negative callDuration: -5"),
    ("callDuration", 90, "billsec > duration: '90'"),
])
def test_bad_values_are_named(field, value, reason):
    rows, issues = parse(MO + mo(**{field: bytes.fromhex(value) if isinstance(value, str) else value}))
    assert len(rows) == 1
    [issue] = issues
    assert (issue.line, issue.offset, issue.reason) == (2, len(MO), reason)


def test_neither_seizure_nor_answer_time():
    rows, [issue] = parse(mo(seizureTime=None, answerTime=None))
    assert rows == [] and issue.reason == "neither seizureTime nor answerTime"


# --- files ---------------------------------------------------------------------------------------

def test_ts32297_file_header_and_cdr_headers():
    rows, issues = parse(ts32297([MO, MT, MO], rel15=(1,)))     # CDR 2 has a 5-octet CDR header
    assert issues == []
    assert [r["source_line"] for r in rows] == [1, 2, 3]
    assert [r["direction"] for r in rows] == ["out", "in", "out"]
    rows = rows[:2]
    # The same records without the header are the same records.
    plain, _ = parse(MO + MT)
    assert [r["cdr_id"] for r in plain] == [r["cdr_id"] for r in rows]


def test_ts32297_count_and_length_disagreements_are_issues():
    rows, issues = parse(ts32297([MO, MT], count=3))
    assert len(rows) == 2
    assert [(i.line, i.reason, i.raw) for i in issues] == [
        (0, "TS 32.297 file header says 3 CDRs, the file holds 2", "")]
    data = ts32297([MO, MT])
    rows, issues = parse(data + b"\x00" * 10)          # bytes after the declared length
    assert len(rows) == 2
    assert [i.reason for i in issues] == [
        f"TS 32.297 file header says the file has {len(data)} bytes, it has {len(data) + 10} "
        "(10 bytes after it are not read)"]


def test_ts32297_cdr_in_another_data_record_format_is_an_issue():
    data = bytearray(ts32297([MO, MT]))
    data[54 + 3] = (2 << 5) | 6                          # first CDR: unaligned PER
    rows, [issue] = parse(bytes(data))
    assert [r["source_line"] for r in rows] == [2]
    assert (issue.line, issue.offset, issue.reason) == (1, 58, "CDR 1: data record format 2 (unaligned PER) is not BER")
    assert base64.b64decode(issue.raw) == MO


def test_ts32297_cdr_whose_record_does_not_fill_it_and_a_cut_cdr_header():
    rows, [issue] = parse(ts32297([MO + b"\x00\x00", MT]))
    assert [r["source_line"] for r in rows] == [2]
    assert (issue.line, issue.offset) == (1, 58)
    assert issue.reason == f"CDR 1 at byte 54: its BER record is {len(MO)} bytes, the CDR header says {len(MO) + 2}"
    assert base64.b64decode(issue.raw) == MO + b"\x00\x00"

    data = bytearray(ts32297([MO]) + b"\x00\x10")           # two stray bytes, counted in the file length
    data[0:4] = struct.pack(">I", len(data))
    rows, issues = parse(bytes(data))
    assert len(rows) == 1
    assert [(i.line, i.reason) for i in issues] == [
        (0, "TS 32.297 file header says 1 CDRs, the file holds 2"),
        (2, f"CDR 2 at byte {len(data) - 2}: truncated CDR header; the rest of the file (2 bytes) is not read")]


@pytest.mark.parametrize("header", [False, True])
def test_a_truncated_file_keeps_the_whole_records(header):
    whole = ts32297([MO, MT, MO]) if header else MO + MT + MO
    data = whole[:-20]
    rows, issues = parse(data)
    assert [r["source_line"] for r in rows] == [1, 2]
    tail = [i for i in issues if i.line == 3]
    [issue] = tail
    assert "truncated" in issue.reason
    offset = (54 + 4 + len(MO) + 4 + len(MT) + 4) if header else len(MO) + len(MT)
    assert issue.offset == offset
    assert base64.b64decode(issue.raw) == data[offset:]
    if header:   # the header's file length and count now disagree with the file
        assert {i.line for i in issues} == {0, 3}


def test_padding_between_records_is_skipped():
    rows, issues = parse(MO + b"\x00" * 7 + MT + b"\xff" * 100)
    assert issues == [] and [r["source_line"] for r in rows] == [1, 2]


def test_indefinite_length_record_ends_the_readable_part():
    rows, [issue] = parse(MO + b"\xa1\x80" + MT[2:] + b"\x00\x00")
    assert len(rows) == 1
    assert issue.reason == (f"record 2 at byte {len(MO)}: it has an indefinite length (0x80); only definite lengths "
                            f"are read; the rest of the file ({len(MT) + 2} bytes) is not read")


def test_a_file_that_is_neither_is_refused():
    with pytest.raises(FormatError, match=r"msc1.ber: neither a TS 32.297 CDR file header nor a BER record at byte 0 "
                                          r"\(first bytes 4e6f7420"):
        parse(b"Not a CDR file at all, sorry")
    assert parse(b"") == ([], [])


# --- the parallel path ---------------------------------------------------------------------------

def many(n: int) -> list[bytes]:
    out = []
    for k in range(n):
        seconds = k % 3000
        stamp = lambda s: bytes.fromhex(f"261001{10 + s // 3600:02d}{s // 60 % 60:02d}{s % 60:02d}2b0200")  # noqa: E731
        out.append(mo(callReference=k.to_bytes(4, "big"), seizureTime=stamp(seconds),
                      answerTime=stamp(seconds + 5), releaseTime=stamp(seconds + 65)))
    return out


def test_worker_processes_give_the_same_result_as_one_process(monkeypatch):
    records = many(6_000)
    records[10] = b"\xa6\x03\x80\x01\x06"                  # an SMS record in the first slice
    records[5_500] = hexbytes("a0 0e  89 02 91 f1  9e 01 00  9f 20 04 00 00 30 39")   # no callDuration
    data = ts32297(records)
    monkeypatch.setattr(ber, "SLICE_RECORDS", 1_000)
    parallel = parse_3gpp_ber(data, file_name="f", source="s")
    monkeypatch.setattr(ber, "PARALLEL_MIN_RECORDS", 10**9)
    inline = parse_3gpp_ber(data, file_name="f", source="s")
    assert parallel[0].equals(inline[0])
    assert parallel[1] == inline[1]
    assert parallel[0].num_rows == 5_998
    assert [(i.line, i.offset) for i in parallel[1]] == [
        (11, 54 + sum(len(r) + 4 for r in records[:10]) + 4),
        (5_501, 54 + sum(len(r) + 4 for r in records[:5_500]) + 4)]
    lines = parallel[0].column("source_line").to_pylist()
    assert lines == [k for k in range(1, 6_001) if k not in (11, 5_501)]


# --- conversions: vectorized and one value at a time agree -----------------------------------------

def test_vectorized_numbers_and_times_agree_with_the_single_value_rules():
    numbers = ["913316325476f8", "a121436587f9", "a11032547698", "816021436587", "1180449711214365", "91",
               "81a3fb", "c1163254", "91ffff", "", "a121f36587f9", None]
    arr = pa.array([None if n is None else bytes.fromhex(n) for n in numbers], pa.binary())
    got, bad = ber.tbcd_numbers(arr, "0")
    for k, n in enumerate(numbers):
        if n is None:
            assert got[k].as_py() is None
            continue
        try:
            expected = ber.decode_address(bytes.fromhex(n), "0")
        except ValueError:
            assert bad[k], n
            continue
        assert (got[k].as_py(), bool(bad[k])) == (expected, False), n
    assert got.to_pylist()[:5] == ["+33612345678", "0123456789", "0123456789", "0612345678", "+447911123456"]

    stamps = ["2610011000002b0200", "2612311900002d0500", "2402291200002b0000", "2302291200002b0000",
              "2610011000002b1500", "261001100000", "2610011000002b02", None]
    arr = pa.array([None if s is None else bytes.fromhex(s) for s in stamps], pa.binary())
    ts, bad = ber.bcd_timestamps(arr)
    assert ts.to_pylist() == [utc(2026, 10, 1, 8), utc(2027, 1, 1, 0), utc(2024, 2, 29, 12), None, None, None, None,
                              None]
    assert list(bad) == [False, False, False, True, True, True, True, False]
    texts, bad = ber.bcd_time_texts(arr)
    for k, stamp in enumerate(stamps):
        if stamp is None:
            assert texts[k].as_py() is None and not bad[k]
            continue
        try:
            assert (texts[k].as_py(), bool(bad[k])) == (ber.decode_bcd_time(bytes.fromhex(stamp)), False)
        except ValueError:
            assert bad[k] and texts[k].as_py() is None, stamp
    assert ber.bcd_time_texts(pa.array([bytes.fromhex("26100110000099")]))[0].to_pylist() == ["2026-10-01 10:00:00"]
    assert ber.decode_bcd_time(bytes.fromhex(stamps[0])) == "2026-10-01 10:00:00+02:00"
    assert ber.decode_bcd_time(bytes.fromhex(stamps[5])) == "2026-10-01 10:00:00"
    with pytest.raises(ValueError, match="no such date"):
        ber.decode_bcd_time(bytes.fromhex(stamps[3]))
    assert ber.hex_strings(pa.array([b"\x00\x0f\xab", None, b""])).to_pylist() == ["000fab", None, ""]


# --- the importer ----------------------------------------------------------------------------------

def test_import_lake_quarantine_and_ledger(wb, tmp_path):
    assert FORMATS["3gpp-ber"].raw_kind == "binary" and not FORMATS["3gpp-ber"].line_based
    bad = hexbytes("a0 0e  89 02 91 f1  9e 01 00  9f 20 04 00 00 30 39")
    path = tmp_path / "MSC1_20261001.dat"
    path.write_bytes(ts32297([MO, bad, MT, MO]))
    summary = import_cdr_file(wb, path, "3gpp-ber", source="msc1")
    assert (summary.received, summary.imported, summary.duplicates, summary.quarantined) == (4, 2, 1, 1)
    assert summary.months == ["2026-01", "2026-10"]
    [q] = read_quarantine(wb).to_pylist()
    assert (q["source"], q["format"], q["source_file"], q["source_line"]) == ("msc1", "3gpp-ber", path.name, 2)
    assert q["byte_offset"] == 54 + 4 + len(MO) + 4
    assert base64.b64decode(q["raw"]) == bad and "callDuration" in q["reason"]
    again = import_cdr_file(wb, path, "3gpp-ber", source="msc1")
    assert again.status == "duplicate"
    # `cdr quarantine reprocess` reads the raw record alone again: still failing, same reason,
    # same file and record number.
    from bluerocktel.mediation.quarantine import reprocess_quarantine

    run = reprocess_quarantine(wb, source="msc1")
    assert (run.received, run.still_failing, run.errors) == (1, 1, [])
    [issue] = run.issues
    assert (issue.file, issue.line, issue.reason) == (path.name, 2, q["reason"])


def test_file_header_option_forces_or_refuses():
    rows, _ = parse(ts32297([MO]), options={"file_header": "ts32297"})
    assert len(rows) == 1
    with pytest.raises(FormatError, match=r"msc1.ber: not a TS 32.297 CDR file"):
        parse(MO, options={"file_header": "ts32297"})
    with pytest.raises(FormatError, match=r"msc1.ber: CDR source option file_header = 'yes': expected"):
        parse(MO, options={"file_header": "yes"})


def test_the_benchmark_generator_writes_files_this_format_reads(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "cdrgen" / "ber.py"
    spec = importlib.util.spec_from_file_location("cdrgen_ber", path)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for header in (True, False):
        target = gen.write_3gpp_ber(tmp_path / f"msc-{header}.ber", 120, seed=3, header=header)
        rows, issues = parse(target.read_bytes())
        assert issues == [] and len(rows) == 120 and len({r["cdr_id"] for r in rows}) == 120
        assert {r["direction"] for r in rows} == {"in", "out"}
        assert {r["disposition"] for r in rows} <= {"ANSWERED", "BUSY", "NO ANSWER", "FAILED"}
        assert all(r["caller"].startswith("+") and r["callee"].startswith("+") for r in rows)
