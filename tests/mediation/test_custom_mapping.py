"""Custom formats from mapping files: one vendor example per kind, every validation rule, XML
safety, and the import end to end (library and console script).

Golden files are in ``tests/data/mappings/``; the values they must become are written out here.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from bluerocktel import lake
from bluerocktel.db.models import CdrFile
from bluerocktel.errors import FormatError, NotFoundError
from bluerocktel.lake import CDR_SCHEMA
from bluerocktel.mediation import import_cdr_file, read_quarantine
from bluerocktel.mediation.custom import load_mapping
from bluerocktel.mediation.records import cdr_id

DATA = Path(__file__).parent.parent / "data" / "mappings"
BIN = Path(sys.executable).parent / "bluerocktel"
UTC = dt.timezone.utc


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def parse(spec, data: bytes, file_name: str = "cdrs.txt", **kwargs):
    kwargs.setdefault("timezone", "Europe/Paris")
    kwargs.setdefault("country", "FR")
    table, issues = spec.parse(data, file_name=file_name, source="src1", **kwargs)
    assert table.schema == CDR_SCHEMA
    return table.to_pylist(), issues


def brief(row: dict) -> tuple:
    return (row["source_line"], row["unique_id"], row["start_at"], row["answer_at"], row["end_at"],
            row["duration_s"], row["billsec_s"], row["caller"], row["callee"], row["disposition"], row["direction"])


def lake_rows(wb) -> list[dict]:
    return lake.read_table(wb.lake_dir, "cdrs", order_by="source_file, source_line").to_pylist()


# --- one vendor example per kind --------------------------------------------------------------

def test_delimited_latin1_semicolons_header_french_dates_and_status_map():
    spec = load_mapping(DATA / "acme-sbc.toml")
    assert (spec.name, spec.line_based, spec.header_lines, spec.raw_kind) == ("acme-sbc", True, 1, "line")
    assert spec.fingerprint == "source + unique_id"
    rows, issues = parse(spec, (DATA / "acme-sbc.csv").read_bytes(), "acme-sbc.csv")

    assert [brief(r) for r in rows] == [
        (2, "ACME-0001", utc(2026, 10, 5, 7, 12, 3), utc(2026, 10, 5, 7, 12, 11), utc(2026, 10, 5, 7, 15, 41),
         218, 210, "+33144556677", "+33612345678", "ANSWERED", "out"),
        (3, "ACME-0002", utc(2026, 10, 5, 8, 0, 0), None, utc(2026, 10, 5, 8, 0, 25),
         25, 0, "+33144556677", "+33612345678", "NO ANSWER", "out"),
        # line 4 is a comment, line 6 blank
        (5, "ACME-0003", utc(2026, 10, 5, 9, 30, 0), None, utc(2026, 10, 5, 9, 30, 4),
         4, 0, "+33478000000", "+33144556677", "BUSY", "out"),
        # 25 October 2026, clocks go back at 03:00: 02:50 is the first (summer) 02:50, the end
        # 02:05 the second (winter) one, as the 900 s duration says.
        (7, "ACME-0004", utc(2026, 10, 25, 0, 50, 0), utc(2026, 10, 25, 0, 50, 10), utc(2026, 10, 25, 1, 5, 0),
         900, 890, "+33144556677", "+442071234567", "ANSWERED", "out"),
        (10, "ACME-0007", utc(2026, 11, 3, 7, 0, 0), utc(2026, 11, 3, 7, 0, 2), utc(2026, 11, 3, 7, 1, 2),
         62, 60, "+33144556677", "3615", "ANSWERED", "in"),
    ]
    first = rows[0]
    # latin-1 decoded, quoted values with the delimiter inside kept in one field
    assert (first["account_code"], first["channel"], first["dst_channel"]) == ("SOCIÉTÉ DUPONT", "sbc-in-1", "ovh-out")
    assert rows[2]["account_code"] == "Café Lumière"
    assert first["cdr_id"] == cdr_id("src1", "ACME-0001")
    assert [(i.line, i.reason, i.raw) for i in issues] == [
        (8, "wrong field count: 3 (expected 12)", "ACME-0005;05/10/2026 12:00:00;05/10/2026 12:00:05"),
        (9, "unparseable start time: '32/10/2026 12:00:00'",
         "ACME-0006;32/10/2026 12:00:00;;05/10/2026 12:00:05;5;0144556677;0612345678;SOCIÉTÉ DUPONT;"
         "sbc-in-1;ovh-out;1;date impossible"),
        (11, "unknown disposition: '7'",
         "ACME-0008;03/11/2026 09:00:00;;03/11/2026 09:00:10;10;0144556677;0612345678;SOCIÉTÉ DUPONT;"
         "sbc-in-1;ovh-out;7;statut inconnu"),
    ]
    assert all(i.file == "acme-sbc.csv" and i.offset is None for i in issues)


def test_delimited_tabs_without_header_by_column_number_epoch_times():
    spec = load_mapping(DATA / "fs-tab.toml")
    assert (spec.name, spec.header_lines) == ("softswitch-tab", 0)
    rows, issues = parse(spec, (DATA / "fs-tab.tsv").read_bytes(), "fs-tab.tsv")
    assert [brief(r) for r in rows] == [
        (1, "b7e1c2a0-0001", utc(2026, 10, 5, 7, 12, 3), utc(2026, 10, 5, 7, 12, 11), utc(2026, 10, 5, 7, 15, 41),
         218, 210, "201", "+33612345678", "ANSWERED", "out"),
        # answer epoch 0: not answered
        (2, "b7e1c2a0-0002", utc(2026, 10, 5, 8, 0, 0), None, utc(2026, 10, 5, 8, 0, 30),
         30, 0, "+33612345678", "201", "NO ANSWER", "in"),
        (3, "b7e1c2a0-0003", utc(2026, 10, 5, 9, 30), utc(2026, 10, 5, 9, 30), utc(2026, 10, 5, 9, 30),
         0, 0, "201", "+33699887766", "ANSWERED", "out"),
        (5, "b7e1c2a0-0005", utc(2026, 10, 5, 10, 0, 0), None, utc(2026, 10, 5, 10, 0, 3),
         3, 0, "202", "+33478000000", "BUSY", "out"),
    ]
    # default for a blank account, call type map, units "0002" through convert = "int"
    assert [(r["account_code"], r["call_type"], r["units"]) for r in rows] == [
        ("acme", "voice", 0), ("UNKNOWN", "voice", 0), ("acme", "sms", 2), ("acme", "voice", 0)]
    [issue] = issues
    assert (issue.line, issue.reason) == (4, "wrong field count: 5 (expected 13)")
    assert issue.raw == "b7e1c2a0-0004\t201\t0612345678\t1791194400\t0"


def test_fixed_width_cp1252_record_type_filter_trailer_and_short_line():
    spec = load_mapping(DATA / "telco-fw.toml")
    assert (spec.name, spec.line_based, spec.header_lines, spec.raw_kind) == ("telco-fw", True, 0, "line")
    rows, issues = parse(spec, (DATA / "telco-fw.dat").read_bytes(), "telco-fw.dat")
    # line 1 (header "00"), line 4 (type "20") and line 8 (trailer "99") are not records
    assert [brief(r) for r in rows] == [
        (2, "CALL000001", utc(2026, 10, 5, 7, 12, 3), utc(2026, 10, 5, 7, 12, 11), utc(2026, 10, 5, 7, 15, 41),
         218, 210, "+33144556677", "+33612345678", "ANSWERED", "out"),
        (3, "CALL000002", utc(2026, 10, 5, 8, 0, 0), None, utc(2026, 10, 5, 8, 0, 25),
         25, 0, "+33144556677", "+33612345678", "NO ANSWER", "out"),
        (5, "CALL000004", utc(2026, 11, 3, 7, 0, 0), utc(2026, 11, 3, 7, 0, 2), utc(2026, 11, 3, 7, 1, 2),
         62, 60, "201", "+33612345678", "ANSWERED", "out"),
    ]
    # columns are counted in characters: "É" (one character, two UTF-8 bytes) shifts nothing
    assert [r["account_code"] for r in rows] == ["CAFÉ", "ACME", "ACME"]
    assert [(i.line, i.reason) for i in issues] == [
        (6, "short line: 63 characters, the mapping reads up to character 95"),
        (7, "unparseable duration: '000abc'"),
    ]
    assert issues[0].raw == "1020261005120000              0000120144556677          0612345"

    # pure ASCII text is cut by bytes (a faster road): the same records
    ascii_rows, ascii_issues = parse(spec, (DATA / "telco-fw.dat").read_bytes().replace(b"CAF\xc9", b"CAFE"),
                                     "telco-fw.dat")
    assert [r["account_code"] for r in ascii_rows] == ["CAFE", "ACME", "ACME"]
    assert [brief(r) for r in ascii_rows] == [brief(r) for r in rows]
    assert [(i.line, i.reason, i.raw) for i in ascii_issues] == [(i.line, i.reason, i.raw) for i in issues]


def test_xml_with_namespaces_records_by_xpath():
    spec = load_mapping(DATA / "voip-xml.toml")
    assert (spec.name, spec.line_based, spec.raw_kind) == ("voip-xml", False, "document")
    rows, issues = parse(spec, (DATA / "voip-export.xml").read_bytes(), "voip-export.xml")
    assert [brief(r) for r in rows] == [
        (1, "c-1001", utc(2026, 10, 5, 7, 12, 3), utc(2026, 10, 5, 7, 12, 11), utc(2026, 10, 5, 7, 15, 41),
         218, 210, "+33144556677", "+33612345678", "ANSWERED", "out"),
        (2, "c-1002", utc(2026, 10, 5, 8, 0, 0), None, utc(2026, 10, 5, 8, 0, 25),
         25, 0, "+33612345678", "201", "NO ANSWER", "in"),
        # no offset: wall time in the mapping's zone (Paris, winter time)
        (4, "c-1004", utc(2026, 11, 3, 7, 0, 0), None, utc(2026, 11, 3, 7, 0, 4),
         4, 0, "+33144556677", "+33478000000", "BUSY", "out"),
    ]
    assert [(r["account_code"], r["channel"]) for r in rows] == [
        ("ACME-7", "PAR-SBC-1"), ("NONE", "PAR-SBC-1"), ("ACME-7", "PAR-SBC-1")]
    [issue] = issues
    assert (issue.file, issue.line, issue.reason) == ("voip-export.xml", 3, "unparseable start time: '2026-10-05T25:00:00Z'")
    # the raw text is a standalone document: the record inside its ancestors (tags and attributes)
    assert issue.raw.startswith('<c:export xmlns:c="urn:example:voip:cdr:2" xmlns:ext="urn:example:voip:ext:1" '
                                'switch="PAR-SBC-1"><c:call id="c-1003">')
    assert "<c:header>" not in issue.raw and "c-1001" not in issue.raw

    # ... which reads again as one record once corrected (quarantine reprocessing)
    fixed = issue.raw.replace("T25:00:00Z", "T10:00:00Z").replace("T25:00:30Z", "T10:00:30Z")
    [again], none = parse(spec, fixed.encode(), "voip-export.xml")
    assert none == []
    assert (again["unique_id"], again["start_at"], again["duration_s"], again["channel"]) == (
        "c-1003", utc(2026, 10, 5, 10, 0, 0), 30, "PAR-SBC-1")


def test_quarantined_delimited_line_reads_again_after_the_header():
    spec = load_mapping(DATA / "acme-sbc.toml")
    _, issues = parse(spec, (DATA / "acme-sbc.csv").read_bytes(), "acme-sbc.csv")
    header = (DATA / "acme-sbc.csv").read_bytes().decode("latin-1").splitlines()[0]
    fixed = issues[1].raw.replace("32/10/2026", "05/10/2026")
    [row], none = parse(spec, f"{header}\n{fixed}\n".encode("latin-1"))
    assert none == [] and (row["unique_id"], row["start_at"]) == ("ACME-0006", utc(2026, 10, 5, 10, 0, 0))


# --- smaller behaviours -----------------------------------------------------------------------

def mapping(kind_block: str, fields: str, times: str = '[times]\nformat = "%Y-%m-%d %H:%M:%S"\ntimezone = "UTC"\n',
            extra: str = "") -> str:
    return textwrap.dedent(kind_block) + "\n" + times + "\n[fields]\n" + textwrap.dedent(fields) + extra


CSV_HEAD = '''
    [format]
    name = "small-csv"
    kind = "delimited"
'''


def test_converters_defaults_constants_and_skip_lines():
    spec = load_mapping(mapping(CSV_HEAD + '[input]\nskip_lines = 2\n', '''
        start = "t"
        duration = { column = "d", convert = "hex" }
        caller = { column = "a", convert = "strip" }
        callee = { column = "b", convert = "int" }
        unique_id = { column = "id", default = "" }
        disposition = { column = "s", default = "0", map = { "0" = "ANSWERED", "3" = "FAILED" } }
        call_type = { default = "voice" }
        channel = { default = "trunk-7" }
    '''))
    assert spec.header_lines == 3
    data = ("exported by switch 4\nversion 2\nt,d,a,b,id,s\n"
            "2026-10-05 09:00:00,3C,  201  ,00201,x1,\n"
            "2026-10-05 09:05:00,0x0a,202,+33612345678,x2, 3 \n"
            "2026-10-05 09:06:00,zz,202,0612345678,x3,0\n").encode()
    rows, issues = parse(spec, data)
    assert [(r["source_line"], r["duration_s"], r["caller"], r["callee"], r["disposition"], r["channel"],
             r["call_type"]) for r in rows] == [
        (4, 60, "201", "201", "ANSWERED", "trunk-7", "voice"),
        (5, 10, "202", "+33612345678", "FAILED", "trunk-7", "voice"),
    ]
    assert rows[0]["end_at"] == utc(2026, 10, 5, 9, 1, 0)
    assert [(i.line, i.reason) for i in issues] == [(6, "unparseable duration: 'zz'")]


def test_open_quote_is_one_bad_line_and_the_others_survive():
    spec = load_mapping(mapping(CSV_HEAD, 'start = "t"\nduration = "d"\ncallee = "b"\n'))
    data = b't,d,b\n2026-10-05 09:00:00,60,0612345678\n2026-10-05 09:01:00,"60,0612345678\n2026-10-05 09:02:00,5,201\n'
    rows, issues = parse(spec, data)
    assert [(r["source_line"], r["duration_s"]) for r in rows] == [(2, 60), (4, 5)]
    assert [(i.line, i.reason, i.raw) for i in issues] == [
        (3, "unbalanced quotes (truncated line?)", '2026-10-05 09:01:00,"60,0612345678')]


def test_utf16_file_is_read_whole_and_decoded():
    spec = load_mapping(mapping(CSV_HEAD + '[input]\nencoding = "utf-16"\ndelimiter = "|"\n',
                                'start = "Début"\nduration = "Durée"\naccount_code = "Société"\n'))
    assert (spec.line_based, spec.header_lines) == (False, 0)
    data = "Début|Durée|Société\r\n2026-10-05 09:00:00|42|Éole Télécom\r\n".encode("utf-16")
    [row], issues = parse(spec, data)
    assert issues == [] and (row["duration_s"], row["account_code"]) == (42, "Éole Télécom")


def test_fixed_width_trailer_lines_and_skip_lines():
    spec = load_mapping(mapping('''
        [format]
        name = "small-fw"
        kind = "fixed-width"
        [input]
        skip_lines = 1
        trailer_lines = 1
    ''', 'start = { start = 1, length = 19 }\nduration = { start = 20, length = 4 }\n'))
    assert (spec.line_based, spec.header_lines) == (False, 0)     # only the whole file knows its end
    data = b"HEADER 2026-10-05\n2026-10-05 09:00:00  60\n\n2026-10-05 09:10:00 120\nTOTAL 0002 RECORDS\n\n"
    rows, issues = parse(spec, data)
    assert issues == [] and [(r["source_line"], r["duration_s"]) for r in rows] == [(2, 60), (4, 120)]
    # quarantined lines read again have no trailer
    rows, _ = parse(spec, data[:-21], options={"quarantine_reprocess": True})
    assert [r["source_line"] for r in rows] == [2, 4]


def test_key_fields_make_the_record_id():
    fields = 'start = "t"\nduration = "d"\ncallee = "b"\naccount_code = "acct"\n'
    keyed = load_mapping(mapping(CSV_HEAD, fields, extra='[key]\nfields = ["account_code", "start"]\n'))
    assert keyed.fingerprint == "source + account_code + start"
    data = b"t,d,b,acct\n2026-10-05 09:00:00,60,0612345678,A42\n"
    [row], _ = parse(keyed, data)
    start_us = str(int(utc(2026, 10, 5, 9, 0, 0).timestamp()) * 1_000_000)
    assert row["cdr_id"] == cdr_id("src1", "A42", start_us)
    fallback = load_mapping(mapping(CSV_HEAD, fields))       # no unique_id mapped: the fallback key
    assert fallback.fingerprint.startswith("source + start + caller + callee")
    [row], _ = parse(fallback, data)
    assert row["billsec_s"] == 0          # not answered
    assert row["cdr_id"] == cdr_id("src1", start_us, "", "+33612345678", "", "", "60", "0")


def test_impossible_calendar_date_is_quarantined_not_rolled_over():
    spec = load_mapping(DATA / "acme-sbc.toml")
    header = (DATA / "acme-sbc.csv").read_bytes().decode("latin-1").splitlines()[0]
    line = "X-1;31/02/2026 09:00:00;;31/02/2026 09:00:30;30;0144556677;0612345678;A;a;b;1;"
    rows, issues = parse(spec, f"{header}\n{line}\n".encode("latin-1"))
    assert rows == [] and [i.reason for i in issues] == ["unparseable start time: '31/02/2026 09:00:00'"]


def test_header_without_a_mapped_column_refuses_the_file_listing_the_columns():
    spec = load_mapping(DATA / "acme-sbc.toml")
    data = "IdAppel;Debut;Reponse;Fin;Durée;Appelant;Appelé;Compte;TrunkEntrée;TrunkSortie;Statut\n".encode("latin-1")
    with pytest.raises(FormatError) as err:
        parse(spec, data, "export-2026-10-05.csv")
    assert str(err.value) == (
        "acme-sbc.toml: [fields].start: column 'Début' is not in the header of export-2026-10-05.csv "
        "(columns: IdAppel, Debut, Reponse, Fin, Durée, Appelant, Appelé, Compte, TrunkEntrée, TrunkSortie, Statut)")


def test_column_number_beyond_the_lines_refuses_the_file():
    spec = load_mapping(DATA / "fs-tab.toml")
    with pytest.raises(FormatError, match=r"fs-tab.toml: \[fields\].duration: column 7, but the records "
                                          r"of short.tsv have 6 fields"):
        parse(spec, b"u1\t201\t0612345678\t1791190323\t0\t1791190383\n", "short.tsv")


def test_an_empty_file_is_no_records():
    for name in ("acme-sbc", "telco-fw"):
        rows, issues = parse(load_mapping(DATA / f"{name}.toml"), b"")
        assert rows == [] and issues == []


def test_every_example_of_the_reference_documentation_loads():
    """The module docstring is the mapping reference: its example mappings must be valid."""
    from bluerocktel.mediation import custom

    blocks = [textwrap.dedent(_indented_block(part))
              for part in custom.__doc__.split("::\n\n")[1:]]
    examples = [b for b in blocks if b.lstrip().startswith("[format]")]
    assert len(examples) == 5
    kinds = set()
    for text in examples:
        if 'kind = "asn1"' in text:
            kinds.add("asn1")                 # needs the ASN.1 support and the .asn module
            continue
        spec = load_mapping(text)
        kinds.add(spec.raw_kind + ("-fw" if "fixed-width" in text else ""))
    assert kinds == {"line", "line-fw", "document", "asn1"}


def _indented_block(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return "\n".join(lines)


def test_xml_fields_read_the_same_by_xpath_and_by_the_child_walk():
    """Simple fields take a fast path; written as general XPaths they must read the same values."""
    simple = load_mapping(DATA / "voip-xml.toml")
    text = (DATA / "voip-xml.toml").read_text()
    for plain, general in [('"@id"', '"string(@id)"'), ('"c:calling"', '"c:calling[1]"'), ('"c:called"', '"./c:called/text()"'),
                           ('"c:setup"', '"string(c:setup)"'), ('"c:connect"', '"c:connect[1]"'),
                           ('"c:release"', '"(c:release)[1]"')]:
        assert plain in text
        text = text.replace(plain, general)
    general = load_mapping(text)
    data = (DATA / "voip-export.xml").read_bytes()
    a, issues_a = parse(simple, data)
    b, issues_b = parse(general, data)
    assert a == b and [i.reason for i in issues_a] == [i.reason for i in issues_b]
    assert len(a) == 3


def test_pieces_and_parallel_normalization_keep_lines_and_results(monkeypatch):
    """The parser cuts big files into pieces (threads) and normalizes big batches in parts: with
    tiny pieces and parts, the rows, their lines and the issues are those of one whole pass."""
    from bluerocktel.mediation import custom

    spec = load_mapping(DATA / "acme-sbc.toml")
    header = (DATA / "acme-sbc.csv").read_bytes().decode("latin-1").splitlines()[0]
    lines = [header]
    for n in range(1, 61):
        if n % 13 == 0:
            lines.append(f"ACME-{n:04d};05/10/2026 09:00:00")               # wrong field count
        elif n % 17 == 0:
            lines.append("# pause")
        elif n % 19 == 0:
            lines.append("")
        else:
            lines.append(f"ACME-{n:04d};05/10/2026 09:{n % 60:02d}:00;;05/10/2026 09:{n % 60:02d}:30;30;"
                         f"0144556677;0612345678;SOCIÉTÉ;a;b;{'1' if n != 29 else '9'};n°{n}")
    data = ("\r\n".join(lines) + "\r\n").encode("latin-1")
    whole_rows, whole_issues = parse(spec, data)
    monkeypatch.setattr(custom, "CHUNK_BYTES", 300)
    monkeypatch.setattr(custom, "NORMALIZE_ROWS", 7)
    monkeypatch.setattr(custom.os, "cpu_count", lambda: 4)
    rows, issues = parse(spec, data)
    assert rows == whole_rows and issues == whole_issues
    assert [(i.line, i.reason) for i in issues] == [
        (14, "wrong field count: 2 (expected 12)"), (27, "wrong field count: 2 (expected 12)"),
        (30, "unknown disposition: '9'"), (40, "wrong field count: 2 (expected 12)"),
        (53, "wrong field count: 2 (expected 12)")]
    # 60 lines: 4 bad field counts, 3 comments (17, 34, 51), 3 blank (19, 38, 57), 1 bad status
    assert len(rows) == 49
    assert all(r["unique_id"] == f"ACME-{r['source_line'] - 1:04d}" for r in rows)


# --- every validation rule, with its message --------------------------------------------------

GOOD = '''
[format]
name = "acme"
kind = "delimited"
[input]
delimiter = ";"
[times]
format = "%d/%m/%Y %H:%M:%S"
[fields]
start = "Start"
duration = "Duration"
caller = "Caller"
'''

BROKEN = [
    ("[format\nname = 1", r"^mapping: not valid TOML: "),
    (GOOD + "[extras]\nx = 1\n",
     r"^mapping: unknown table \[extras\] \(expected: \[format\], \[input\], \[times\], \[fields\], \[key\]\)$"),
    (GOOD.replace('name = "acme"\n', ""), r"^mapping: \[format\].name: missing: expected a format name"),
    (GOOD.replace('"acme"', '"ACME SBC"'), r"^mapping: \[format\].name: 'ACME SBC' is not a format name: expected 2 to 32"),
    (GOOD.replace('"acme"', '"asterisk-csv"'), r"^mapping: \[format\].name: 'asterisk-csv' is the name of a built-in"),
    (GOOD.replace('"delimited"', '"json"'),
     r"^mapping: \[format\].kind: 'json' is not a kind: expected one of delimited, fixed-width, xml, asn1$"),
    (GOOD.replace("[input]\n", "[input]\nrecord_type = 1\n"),
     r"^mapping: \[input\].record_type: unknown key for kind 'delimited': expected among delimiter, quote, header"),
    (GOOD.replace('delimiter = ";"', 'delimiter = ";;"'), r"^mapping: \[input\].delimiter: ';;' is not one character"),
    (GOOD.replace('delimiter = ";"', 'delimiter = ";"\nquote = ";"'),
     r"^mapping: \[input\].quote: ';': expected one character other than the delimiter"),
    (GOOD.replace('delimiter = ";"', 'encoding = "klingon-8"'),
     r"^mapping: \[input\].encoding: unknown encoding 'klingon-8': expected a Python codec"),
    (GOOD.replace('delimiter = ";"', 'skip_lines = -1'),
     r"^mapping: \[input\].skip_lines: expected a number of lines \(0 or more\), got -1$"),
    (GOOD.replace('delimiter = ";"', 'header = "yes"'),
     r"^mapping: \[input\].header: expected true or false, got text 'yes'$"),
    (GOOD.replace('%d/%m/%Y %H:%M:%S', '%d/%m/%Q'),
     r"^mapping: \[times\].format: '%d/%m/%Q' is not a time format this importer can read: expected epoch, "
     r"epoch_ms, epoch_us, iso or a strptime format"),
    (GOOD.replace('%d/%m/%Y %H:%M:%S', '%H:%M:%S'), r"^mapping: \[times\].format: '%H:%M:%S' is not a time format"),
    (GOOD.replace('[times]\n', '[times]\ntimezone = "Europe/Paname"\n'),
     r"^mapping: \[times\].timezone: unknown time zone 'Europe/Paname'"),
    (GOOD.replace('[times]\n', '[times]\nzone = "UTC"\n'),
     r"^mapping: \[times\].zone: unknown key: expected among format, timezone$"),
    (GOOD.replace('start = "Start"\n', ""), r"^mapping: \[fields\].start: missing: the start time is required$"),
    (GOOD.replace('duration = "Duration"\n', ""), r"^mapping: \[fields\].end: missing: map end or duration"),
    (GOOD + 'calling = "A"\n', r"^mapping: \[fields\].calling: unknown field 'calling': expected one of start, answer"),
    (GOOD + 'callee = { start = 1, length = 10 }\n',
     r"^mapping: \[fields\].callee: unknown key 'start' \('start' is for fixed-width mappings\): expected a column"),
    (GOOD + 'callee = 0\n', r"^mapping: \[fields\].callee: column 0: column numbers start at 1$"),
    (GOOD + 'callee = 2.5\n', r"^mapping: \[fields\].callee: a number is not a column: expected a column name"),
    (GOOD.replace('delimiter = ";"', "header = false"),
     r"^mapping: \[fields\].start: column 'Start' is a name, but \[input\].header = false: give its 1-based column"),
    (GOOD + 'callee = { column = "B", convert = "upper" }\n',
     r"^mapping: \[fields\].callee.convert: unknown converter 'upper': expected one of int, hex, strip "
     r"\(and tbcd, tbcd_digits, bcd_time for asn1 mappings\)$"),
    (GOOD + 'callee = { column = "B", convert = "tbcd" }\n',
     r"^mapping: \[fields\].callee.convert: 'tbcd' decodes BER octets and is only for asn1 mappings; for kind "
     r"'delimited' use int, hex or strip$"),
    (GOOD + 'disposition = { column = "S", map = { "0" = 1 } }\n',
     r"^mapping: \[fields\].disposition.map: expected a table of \"value in the file\" = \"value to use\""),
    (GOOD + 'units = { convert = "int" }\n',
     r"^mapping: \[fields\].units: says neither where to read the field nor a default"),
    (GOOD + '[key]\nfields = ["unique_id"]\n',
     r"^mapping: \[key\].fields: 'unique_id' is not mapped in \[fields\], so it would always be empty$"),
    (GOOD + '[key]\nfields = ["end"]\n', r"^mapping: \[key\].fields: 'end' cannot be part of the record id: expected among start"),
    (GOOD.replace('kind = "delimited"', 'kind = "fixed-width"').replace('delimiter = ";"', ""),
     r"^mapping: \[fields\].start: text is not a field for kind 'fixed-width': expected a table \{start = 1, length = 14\}$"),
    (GOOD.replace('kind = "delimited"', 'kind = "fixed-width"').replace('delimiter = ";"', "")
     .replace('"Start"', "{ start = 0, length = 14 }"),
     r"^mapping: \[fields\].start.start: expected a whole number from 1 \(characters are counted from 1\), got 0$"),
    (GOOD.replace('kind = "delimited"', 'kind = "fixed-width"')
     .replace('delimiter = ";"', 'record_type = { start = 1, length = 2 }'),
     r"^mapping: \[input\].record_type.value: expected the record type text \(1 to 2 characters\), got None$"),
    (GOOD.replace('kind = "delimited"', 'kind = "xml"').replace('delimiter = ";"', 'namespaces = { a = "urn:x" }'),
     r"^mapping: \[input\].record: missing: expected an XPath selecting each record element"),
    (GOOD.replace('kind = "delimited"', 'kind = "xml"').replace('delimiter = ";"', 'record = "//cdr[["'),
     r"^mapping: \[input\].record: '//cdr\[\[' is not a valid XPath"),
    (GOOD.replace('kind = "delimited"', 'kind = "xml"').replace('delimiter = ";"', 'record = "//cdr"')
     .replace('"Caller"', '"b:calling"'),
     r"^mapping: \[fields\].caller: 'b:calling' is not a valid XPath \(.*\); namespace prefixes must be declared"),
    (GOOD.replace('kind = "delimited"', 'kind = "xml"').replace('delimiter = ";"', 'record = "//cdr"\nnamespaces = ["urn:x"]'),
     r"^mapping: \[input\].namespaces: expected a table of prefix = \"namespace URI\""),
]


@pytest.mark.parametrize("text, message", BROKEN, ids=[f"rule{k}" for k in range(len(BROKEN))])
def test_broken_mapping_is_refused_naming_table_key_and_expectation(text, message):
    with pytest.raises(FormatError, match=message):
        load_mapping(text)


def test_the_good_mapping_of_the_broken_ones_loads():
    assert load_mapping(GOOD).name == "acme"          # each broken case above differs from it by one thing


def test_mapping_file_errors_name_the_file(tmp_path):
    path = tmp_path / "acme.toml"
    path.write_text(GOOD.replace('start = "Start"\n', 'start = ""\n'))
    with pytest.raises(FormatError, match=r"^acme.toml: \[fields\].start: empty column name$"):
        load_mapping(path)
    with pytest.raises(NotFoundError, match=r"mapping file not found: .*nope.toml"):
        load_mapping(tmp_path / "nope.toml")


def _ber_support():
    import importlib

    for name in ("bluerocktel.mediation.ber", "bluerocktel.mediation.formats.ber"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        if hasattr(module, "asn1_mapping_parser"):
            return module
    pytest.skip("the ASN.1 BER support (asn1_mapping_parser) is not in this checkout yet")


ASN1_MAPPING = '''
[format]
name = "acme-ber"
kind = "asn1"
[input]
module = "{module}"
record_type = "CallRecord"
[times]
timezone = "Europe/Paris"
[fields]
start = {{ path = "startTime", convert = "bcd_time" }}
duration = "duration"
callee = {{ path = "calledNumber", convert = "strip" }}
'''
ACME_ASN = """Acme DEFINITIONS IMPLICIT TAGS ::= BEGIN
CallRecord ::= [APPLICATION 1] SEQUENCE {
    startTime    [0] OCTET STRING,
    duration     [1] INTEGER,
    calledNumber [2] OCTET STRING
}
END
"""


def test_asn1_mapping_with_a_missing_module_file_is_refused(tmp_path):
    _ber_support()
    path = tmp_path / "acme-ber.toml"
    path.write_text(ASN1_MAPPING.format(module="missing/acme.asn"))
    with pytest.raises(FormatError) as err:
        load_mapping(path)
    message = str(err.value)
    assert message.startswith("acme-ber.toml: [input].module") and "missing/acme.asn" in message
    assert "not found" in message


def test_asn1_mapping_is_handed_to_the_ber_support(tmp_path):
    import asn1tools

    _ber_support()
    (tmp_path / "acme.asn").write_text(ACME_ASN)
    path = tmp_path / "acme-ber.toml"
    path.write_text(ASN1_MAPPING.format(module="acme.asn"))
    spec = load_mapping(path)
    assert (spec.name, spec.line_based, spec.raw_kind) == ("acme-ber", False, "binary")
    codec = asn1tools.compile_string(ACME_ASN, "ber")
    data = codec.encode("CallRecord", {"startTime": bytes.fromhex("261005091203"), "duration": 218,
                                       "calledNumber": b"0612345678 "})
    [row], issues = parse(spec, data, "acme.ber")
    assert issues == []
    assert (row["start_at"], row["end_at"], row["duration_s"], row["callee"]) == (
        utc(2026, 10, 5, 7, 12, 3), utc(2026, 10, 5, 7, 15, 41), 218, "+33612345678")
    # kind asn1 with a key this module does not know is still refused here
    path.write_text(ASN1_MAPPING.format(module="acme.asn").replace("[times]", "[times]\nzone = 1"))
    with pytest.raises(FormatError, match=r"^acme-ber.toml: \[times\].zone: unknown key"):
        load_mapping(path)


# --- XML safety -------------------------------------------------------------------------------

XML_MAPPING = '''
[format]
name = "xml-small"
kind = "xml"
[input]
record = "//cdr"
[times]
format = "iso"
[fields]
start = "start"
duration = "duration"
callee = "callee"
'''

BILLION_LAUGHS = b'''<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<cdrs><cdr><start>2026-10-05T09:00:00Z</start><duration>60</duration><callee>&lol9;</callee></cdr></cdrs>
'''


def xxe(secret: Path) -> str:
    return (f'<?xml version="1.0"?>\n<!DOCTYPE cdrs [ <!ENTITY xxe SYSTEM "file://{secret}"> ]>\n'
            '<cdrs><cdr><start>2026-10-05T09:00:00Z</start><duration>60</duration>'
            '<callee>&xxe;</callee></cdr></cdrs>\n')


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text("TOP-SECRET-4242")
    return path


def test_xml_billion_laughs_and_xxe_are_refused_before_any_expansion(secret):
    spec = load_mapping(XML_MAPPING)
    for data in (BILLION_LAUGHS, xxe(secret).encode(), xxe(secret).encode("utf-16")):
        with pytest.raises(FormatError, match=r"cdrs.xml: refused, the XML document declares a DOCTYPE") as err:
            parse(spec, data, "cdrs.xml")
        assert "TOP-SECRET" not in str(err.value) and "lol" not in str(err.value)


def test_xml_parser_itself_expands_no_entity(secret, monkeypatch):
    """Even if the DOCTYPE scan missed one, the parser resolves no external entity and stops the
    entity amplification: both documents are refused, quickly, without their content."""
    from bluerocktel.mediation import custom

    monkeypatch.setattr(custom, "_DOCTYPE", ())
    spec = load_mapping(XML_MAPPING)
    started = time.monotonic()
    with pytest.raises(FormatError, match=r"^cdrs.xml: not well-formed XML .*amplification") as err:
        parse(spec, BILLION_LAUGHS, "cdrs.xml")
    assert "lollol" not in str(err.value)
    with pytest.raises(FormatError, match=r"^cdrs.xml: refused, the XML document declares a DOCTYPE") as err:
        parse(spec, xxe(secret).encode(), "cdrs.xml")
    assert "TOP-SECRET" not in str(err.value)
    assert time.monotonic() - started < 5


def test_xml_undeclared_entity_and_garbage_are_refused_clearly():
    spec = load_mapping(XML_MAPPING)
    with pytest.raises(FormatError, match=r"^cdrs.xml: not well-formed XML \(line 1: .*xxe"):
        parse(spec, b"<cdrs><cdr><start>&xxe;</start></cdr></cdrs>", "cdrs.xml")
    with pytest.raises(FormatError, match=r"^cdrs.xml: not well-formed XML"):
        parse(spec, b"IdAppel;Debut\n", "cdrs.xml")


def test_xxe_import_leaves_no_trace_of_the_secret(wb, tmp_path, secret):
    path = tmp_path / "cdrs.xml"
    path.write_text(xxe(secret))
    with pytest.raises(FormatError, match="DOCTYPE"):
        import_cdr_file(wb, path, load_mapping(XML_MAPPING))
    with wb.db.session() as s:
        [ledger] = s.scalars(select(CdrFile)).all()
        assert (ledger.status, ledger.format) == ("failed", "xml-small")
        assert "DOCTYPE" in ledger.error and "TOP-SECRET" not in ledger.error
    assert lake.partition_files(wb.lake_dir, "cdrs") == [] and lake.partition_files(wb.lake_dir, "quarantine") == []
    for file in tmp_path.rglob("*"):
        if file.is_file() and file != secret:
            assert b"TOP-SECRET" not in file.read_bytes(), file


# --- end to end -------------------------------------------------------------------------------

def test_import_cdr_file_with_a_mapping_ledger_lake_and_quarantine(wb):
    summary = import_cdr_file(wb, DATA / "acme-sbc.csv", load_mapping(DATA / "acme-sbc.toml"), source="sbc-paris")
    assert (summary.format, summary.received, summary.imported, summary.duplicates, summary.quarantined) == (
        "acme-sbc", 8, 5, 0, 3)
    assert summary.months == ["2026-10", "2026-11"]
    rows = lake_rows(wb)
    assert [(r["source_line"], r["unique_id"], r["account_code"]) for r in rows] == [
        (2, "ACME-0001", "SOCIÉTÉ DUPONT"), (3, "ACME-0002", "SOCIÉTÉ DUPONT"), (5, "ACME-0003", "Café Lumière"),
        (7, "ACME-0004", "Café Lumière"), (10, "ACME-0007", "SOCIÉTÉ DUPONT")]
    quarantined = read_quarantine(wb).to_pylist()
    assert [(q["format"], q["source"], q["source_line"], q["reason"]) for q in quarantined] == [
        ("acme-sbc", "sbc-paris", 8, "wrong field count: 3 (expected 12)"),
        ("acme-sbc", "sbc-paris", 9, "unparseable start time: '32/10/2026 12:00:00'"),
        ("acme-sbc", "sbc-paris", 11, "unknown disposition: '7'"),
    ]
    assert quarantined[0]["raw"] == "ACME-0005;05/10/2026 12:00:00;05/10/2026 12:00:05"
    with wb.db.session() as s:
        [ledger] = s.scalars(select(CdrFile)).all()
        assert (ledger.format, ledger.status, ledger.imported, ledger.quarantined) == ("acme-sbc", "imported", 5, 3)
    # the same records in a new file are duplicates
    again = (DATA / "acme-sbc.csv").read_bytes() + b"\r\n"
    copy = wb.lake_dir.parent / "acme-sbc-resent.csv"
    copy.write_bytes(again)
    second = import_cdr_file(wb, copy, load_mapping(DATA / "acme-sbc.toml"), source="sbc-paris")
    assert (second.imported, second.duplicates) == (0, 5)


def test_import_in_slices_repeats_the_header_and_keeps_line_numbers(wb, tmp_path, monkeypatch):
    monkeypatch.setenv("BLUEROCKTEL_IMPORT_CHUNK_MB", "1")
    path = tmp_path / "big.csv"
    line = "ACME-{n:06d};05/10/2026 09:{m:02d}:00;;05/10/2026 09:{m:02d}:30;30;0144556677;0612345678;SOCIÉTÉ;a;b;1;{pad}\r\n"
    body = "".join(line.format(n=n, m=n % 60, pad="x" * 60) for n in range(1, 15001))
    header = (DATA / "acme-sbc.csv").read_bytes().decode("latin-1").splitlines()[0]
    path.write_bytes((header + "\r\n" + body).encode("latin-1"))
    assert path.stat().st_size > 2 << 20                         # three slices at least
    summary = import_cdr_file(wb, path, load_mapping(DATA / "acme-sbc.toml"))
    assert (summary.received, summary.imported, summary.quarantined) == (15000, 15000, 0)
    rows = lake_rows(wb)
    assert [r["source_line"] for r in rows] == list(range(2, 15002))
    assert all(r["unique_id"] == f"ACME-{r['source_line'] - 1:06d}" for r in rows)
    assert {r["account_code"] for r in rows} == {"SOCIÉTÉ"}


REPROCESS_MAPPING = '''
[format]
name = "sbc-lyon"
kind = "delimited"
[input]
delimiter = ";"
encoding = "latin-1"
[times]
format = "%d/%m/%Y %H:%M:%S"
timezone = "Europe/Paris"
[fields]
unique_id = "{id}"
start = "Debut"
end = "Fin"
callee = "Appele"
account_code = "Compte"
disposition = {{ column = "Statut", map = {{ "0" = "ANSWERED", "1" = "NO ANSWER"{more} }} }}
'''
REPROCESS_FILE = """{id};Debut;Fin;Appele;Compte;Statut
L-1;05/10/2026 09:00:00;05/10/2026 09:01:00;0612345678;SOCIÉTÉ;0
L-2;05/10/2026 09:05:00;05/10/2026 09:05:20;0612345678;Café;7
L-3;05/10/2026 09:06:00
"""


def test_reprocess_with_a_corrected_mapping_reads_the_quarantined_line_again(wb, tmp_path):
    from bluerocktel.mediation.quarantine import reprocess_quarantine

    path = tmp_path / "lyon.csv"
    path.write_bytes(REPROCESS_FILE.format(id="Id").encode("latin-1"))
    first = import_cdr_file(wb, path, load_mapping(REPROCESS_MAPPING.format(id="Id", more="")), source="sbc-lyon")
    assert (first.imported, first.quarantined) == (1, 2)
    fixed = load_mapping(REPROCESS_MAPPING.format(id="Id", more=', "7" = "FAILED"'))
    summary = reprocess_quarantine(wb, source="sbc-lyon", format=fixed)
    assert (summary.received, summary.imported, summary.still_failing, summary.errors) == (2, 1, 1, [])
    assert [(i.line, i.reason) for i in summary.issues] == [(4, "wrong field count: 2 (expected 6)")]
    rows = lake_rows(wb)
    # the quarantine kept decoded text, handed back as UTF-8: "Café", not "CafÃ©"
    assert [(r["source_file"], r["source_line"], r["unique_id"], r["account_code"], r["disposition"])
            for r in rows] == [("lyon.csv", 2, "L-1", "SOCIÉTÉ", "ANSWERED"), ("lyon.csv", 3, "L-2", "Café", "FAILED")]


def test_reprocess_of_a_latin1_file_with_accented_header(wb, tmp_path):
    from bluerocktel.mediation.quarantine import reprocess_quarantine

    path = tmp_path / "lyon.csv"
    path.write_bytes(REPROCESS_FILE.format(id="Numéro").encode("latin-1"))
    import_cdr_file(wb, path, load_mapping(REPROCESS_MAPPING.format(id="Numéro", more="")), source="sbc-lyon")
    fixed = load_mapping(REPROCESS_MAPPING.format(id="Numéro", more=', "7" = "FAILED"'))
    summary = reprocess_quarantine(wb, source="sbc-lyon", format=fixed)
    assert (summary.imported, summary.errors) == (1, [])


def test_cli_import_with_mapping_prints_json(wb, data_dir):
    cmd = [str(BIN), "cdr", "import", str(DATA / "telco-fw.dat"), "--mapping", str(DATA / "telco-fw.toml"),
           "--source", "telco", "--data-dir", str(data_dir), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert {k: payload[k] for k in ("format", "source", "received", "imported", "quarantined", "status")} == {
        "format": "telco-fw", "source": "telco", "received": 5, "imported": 3, "quarantined": 2,
        "status": "imported"}
    assert [(i["line"], i["reason"]) for i in payload["issues"]] == [
        (6, "short line: 63 characters, the mapping reads up to character 95"),
        (7, "unparseable duration: '000abc'")]
    assert [r["unique_id"] for r in lake_rows(wb)] == ["CALL000001", "CALL000002", "CALL000004"]


def test_cli_import_with_a_broken_mapping_exits_2_naming_it(data_dir, tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text(GOOD.replace('"delimited"', '"cobol"'))
    done = subprocess.run([str(BIN), "cdr", "import", str(DATA / "acme-sbc.csv"), "--mapping", str(broken),
                           "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "broken.toml: [format].kind: 'cobol' is not a kind" in done.stderr

