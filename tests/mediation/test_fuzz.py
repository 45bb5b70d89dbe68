"""Property tests of every CDR format: bad bytes never crash a batch, every record is accounted for.

For each format of the registry (read when the tests are collected, so a format added later is
covered without editing this file), and for the custom mappings of ``tests/data/mappings``:

- random bytes, and mutations of a small valid sample (truncated, bytes flipped, lines
  duplicated or dropped, quotes, NULs, CRs, separators and invalid UTF-8 inserted) are either
  refused whole with a :class:`FormatError` or parsed into ``CDR_SCHEMA`` rows plus issues;
  nothing else is ever raised;
- no record is counted twice: the line (or record number) of each row and issue is distinct
  and inside the input; for ``asterisk-csv`` every non-blank line is exactly one row or issue;
- a quarantined ``raw`` can be read again as its format's ``raw_kind`` says (one line; base64
  of the record's bytes; a document parsed alone without crashing);
- through the importer (SQLite), ``received == imported + duplicates + quarantined``, the lake
  gains ``imported`` records and the quarantine ``quarantined`` rows.

Bounded: at most 50 examples per format and property, no deadline.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bluerocktel import lake
from bluerocktel.errors import FormatError
from bluerocktel.lake import CDR_SCHEMA
from bluerocktel.mediation import FORMATS, FormatSpec, import_cdr_bytes
from bluerocktel.mediation.records import CdrIssue
from bluerocktel.workbench import Workbench

DATA = Path(__file__).parent.parent / "data"

JSON_RECORDS = json.dumps({"records": [
    {"unique_id": "j-1", "start": "2026-10-05T09:12:03+02:00", "answer": "2026-10-05T09:12:11+02:00",
     "end": "2026-10-05T09:15:41+02:00", "caller": "201", "callee": "0612345678", "account_code": "acme"},
    {"unique_id": "j-2", "start": "2026-10-05T10:00:00Z", "duration": 30, "caller": "+33478123456",
     "callee": "202", "disposition": "NO ANSWER"},
    {"start": "2026-10-05 11:00:00", "duration": 5, "billsec": 0, "caller": "203", "callee": "204",
     "disposition": "BUSY", "call_type": "voice"},
]}, indent=1).encode()

ASTERISK_DB_ROWS = json.dumps([
    {"id": 1, "start": "2026-10-05 09:12:03", "answer": "2026-10-05 09:12:11", "end": "2026-10-05 09:15:41",
     "src": "201", "dst": "0612345678", "accountcode": "acme", "channel": "PJSIP/201-00000001",
     "dstchannel": "PJSIP/ovh-00000002", "duration": 218, "billsec": 210, "disposition": "ANSWERED",
     "uniqueid": "1791184323.1"},
    {"id": 2, "start": "2026-10-05 10:00:00", "answer": None, "end": "2026-10-05 10:00:30", "src": "202",
     "dst": "0145678912", "accountcode": "acme", "channel": "PJSIP/202-00000003", "dstchannel": "",
     "duration": 30, "billsec": 0, "disposition": "NO ANSWER", "uniqueid": "1791187200.3"},
]).encode()

# Two 3GPP TS 32.298 MSC call records (BER), an MO and an MT call, written tag by tag.
MSC_RECORDS = bytes.fromhex("""
a0 66 80 01 00 81 08 02 08 11 32 54 76 98 f0 83 07 91 33 16 32 54 76 f8 85 06 a1 21 43 65 87 f9
89 07 91 33 06 09 00 00 f1 aa 03 80 01 07 ab 06 81 04 4f 55 54 31 96 09 26 10 01 10 00 00 2b 02 00
97 09 26 10 01 10 00 05 2b 02 00 98 09 26 10 01 10 01 05 2b 02 00 99 01 3c 9e 01 00 9f 20 04 00 00
30 39 9f 21 01 01
a1 52 80 01 01 83 06 a1 16 32 54 76 f8 84 08 11 80 44 97 11 21 43 65 86 07 91 33 06 09 00 00 f2
a7 03 80 01 0c 93 09 26 01 15 09 30 00 2b 01 00 94 09 26 01 15 09 30 12 2b 01 00 95 09 26 01 15 09
35 12 2b 01 00 96 02 01 2c 9b 01 00 9d 05 01 02 03 04 05
""")

# A small valid file of each format: a path under tests/data, or the bytes themselves.
SAMPLES: dict[str, Path | bytes] = {
    "asterisk-csv": DATA / "asterisk" / "Master.csv",
    "cucm": DATA / "cucm" / "cdr_StandAloneCluster_01_202611010105_118",
    "kamailio-acc": DATA / "kamailio" / "acc_2026-10-05.csv",
    "3cx": DATA / "3cx" / "cdr.log",
    "freeswitch-csv": DATA / "freeswitch" / "Master.csv",
    "freeswitch-xml": DATA / "freeswitch" / "batch.cdr.xml",
    "json-records": JSON_RECORDS,
    "asterisk-db": ASTERISK_DB_ROWS,
    "3gpp-ber": MSC_RECORDS,
}
# Custom formats: (mapping, sample) under tests/data/mappings.
MAPPINGS = {
    "mapping:acme-sbc": ("acme-sbc.toml", "acme-sbc.csv"),
    "mapping:fs-tab": ("fs-tab.toml", "fs-tab.tsv"),
    "mapping:telco-fw": ("telco-fw.toml", "telco-fw.dat"),
    "mapping:voip-xml": ("voip-xml.toml", "voip-export.xml"),
}
STRICT_LINES = {"asterisk-csv"}       # every non-blank line is one row or one issue
CASES = sorted(FORMATS) + sorted(MAPPINGS)
FUZZ = settings(max_examples=50, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def without_sample() -> list[str]:
    return [name for name in sorted(FORMATS)
            if not isinstance(SAMPLES.get(name), bytes) and not (SAMPLES.get(name) and SAMPLES[name].is_file())]


def case(name: str) -> tuple[FormatSpec, bytes]:
    """The format and a valid sample of case ``name``; skipped, naming them all, when it has none."""
    if name in MAPPINGS:
        mapping, sample = (DATA / "mappings" / p for p in MAPPINGS[name])
        if not (mapping.is_file() and sample.is_file()):
            pytest.skip(f"{name}: {mapping.name} or {sample.name} missing under tests/data/mappings")
        from bluerocktel.mediation.custom import load_mapping

        return load_mapping(mapping), sample.read_bytes()
    sample = SAMPLES.get(name)
    if isinstance(sample, bytes):
        return FORMATS[name], sample
    if sample is None or not sample.is_file():
        pytest.skip(f"no valid sample of format {name!r}: add one to SAMPLES in {Path(__file__).name} "
                    f"(formats without a sample: {', '.join(without_sample())})")
    return FORMATS[name], sample.read_bytes()


def parse(spec: FormatSpec, data: bytes, file_name: str = "fuzz.cdr"):
    return spec.parse(data, file_name=file_name, source="fuzz", timezone="Europe/Paris", country="FR", options={})


def check_accounting(name: str, spec: FormatSpec, data: bytes) -> None:
    """The properties of the module doc for one input."""
    try:
        table, issues = parse(spec, data)
    except FormatError as exc:
        assert str(exc), "a FormatError must say what is wrong"
        return
    assert table.schema == CDR_SCHEMA
    assert all(isinstance(i, CdrIssue) and i.reason and i.file == "fuzz.cdr" and i.line >= 1 for i in issues)
    assert table.column("cdr_id").null_count == 0 and table.column("start_at").null_count == 0
    row_lines = table.column("source_line").to_pylist()
    issue_lines = [i.line for i in issues]
    counted = row_lines + issue_lines
    assert len(set(counted)) == len(counted), f"a record counted twice: {sorted(counted)}"
    if spec.raw_kind == "line" or spec.line_based:
        physical = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
        assert max(counted, default=1) <= physical, (counted, physical)
    if name in STRICT_LINES:
        text = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
        wanted = {n for n, line in enumerate(text.split(b"\n"), start=1)
                  if line.decode("utf-8", "replace").strip()}
        assert set(counted) == wanted
    for issue in issues[:3]:
        if spec.raw_kind == "line":
            assert "\n" not in issue.raw
        elif spec.raw_kind == "binary":
            try:
                record = base64.b64decode(issue.raw, validate=True)
            except (binascii.Error, ValueError):
                pytest.fail(f"{issue}: raw is not base64: {issue.raw[:80]!r}")
            try:
                parse(spec, record)
            except FormatError:
                pass
        else:
            try:
                parse(spec, issue.raw.encode())
            except FormatError:
                pass


@st.composite
def mutations(draw, sample: bytes) -> bytes:
    """``sample`` with one to four damages of the kinds real files show."""
    data = bytearray(sample)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        kind = draw(st.sampled_from(["truncate", "flip", "duplicate_line", "drop_line", "insert", "invalid_utf8"]))
        at = draw(st.integers(0, len(data) - 1))
        if kind == "truncate":
            del data[at:]
        elif kind == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif kind in ("duplicate_line", "drop_line"):
            start = data.rfind(b"\n", 0, at) + 1
            end = data.find(b"\n", at)
            end = len(data) if end < 0 else end + 1
            if kind == "duplicate_line":
                data[end:end] = data[start:end]
            else:
                del data[start:end]
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from([b'"', b"\x00", b"\r", b"\r\n", b"\n", b",", b";", b"\t", b"<",
                                                b"&", b"\xef\xbb\xbf", b'""', b"\\", b"9" * 30]))
        else:
            data[at:at] = draw(st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf"]))
    return bytes(data)


def test_every_registered_format_has_a_sample():
    missing = without_sample()
    if missing:
        pytest.skip(f"formats without a sample in {Path(__file__).name}: {', '.join(missing)}")


@pytest.mark.parametrize("name", CASES)
def test_a_valid_sample_parses_and_accounts_for_its_records(name):
    spec, sample = case(name)
    table, issues = parse(spec, sample)
    assert table.num_rows > 0, f"the sample of {name} yields no record"
    check_accounting(name, spec, sample)


@pytest.mark.parametrize("name", CASES)
def test_random_bytes_are_refused_or_accounted_for(name):
    spec, _ = case(name)

    @FUZZ
    @given(st.binary(max_size=3000))
    def run(data: bytes) -> None:
        check_accounting(name, spec, data)

    run()


@pytest.mark.parametrize("name", CASES)
def test_damaged_files_are_refused_or_accounted_for(name):
    spec, sample = case(name)

    @FUZZ
    @given(mutations(sample))
    def run(data: bytes) -> None:
        check_accounting(name, spec, data)

    run()


@pytest.mark.parametrize("name", CASES)
def test_the_importer_accounts_for_every_record_of_damaged_files(name, tmp_path, monkeypatch):
    spec, sample = case(name)
    monkeypatch.delenv("BLUEROCKTEL_DATABASE_URL", raising=False)
    wb = Workbench.open(tmp_path / "data")
    counter = iter(range(1_000_000))

    def counts() -> tuple[int, int]:
        """(records in the lake, rows in the quarantine)."""
        con = lake.connect_duckdb()
        try:
            return con.sql(f"SELECT (SELECT count(*) FROM {lake.scan_sql(wb.lake_dir, 'cdrs')}), "
                           f"(SELECT count(*) FROM {lake.scan_sql(wb.lake_dir, 'quarantine')})").fetchall()[0]
        finally:
            con.close()

    @settings(FUZZ, max_examples=10)
    @given(mutations(sample))
    def run(data: bytes) -> None:
        records, quarantined = counts()
        try:
            summary = import_cdr_bytes(wb, data, f"fuzz-{next(counter)}.cdr", spec, source="fuzz")
        except FormatError:
            assert counts() == (records, quarantined)                  # refused whole: nothing written
            return
        if summary.status == "duplicate":
            return
        assert summary.received == summary.imported + summary.duplicates + summary.quarantined
        assert counts() == (records + summary.imported, quarantined + summary.quarantined)

    try:
        run()
    finally:
        wb.close()
