"""Rate sheets into effective-dated deck versions: mapping, reading, diff, activation, CLI."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import Workbook
from sqlalchemy import func, select

from bluerocktel.db.models import AuditEntry, Rate, RateDeck, TimeBand
from bluerocktel.errors import NotFoundError
from bluerocktel.rating.deckimport import (
    DeckImportError, RateSheetError, activate, diff_deck, find_deck, load_rate_mapping, read_rate_sheet,
)
from bluerocktel.workbench import Workbench

DATA = Path(__file__).parent.parent / "data" / "ratesheets"
BIN = Path(sys.executable).parent / "bluerocktel"
UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 15, tzinfo=UTC)       # the tests' "now": 2026-01-01 is past, 2026-12-01 pending
JAN = dt.datetime(2026, 1, 1, tzinfo=UTC)
DEC = dt.datetime(2026, 12, 1, tzinfo=UTC)


def sheet_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def mapping_file(tmp_path: Path, text: str, name: str = "m.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def refused(path: Path, mapping) -> RateSheetError:
    with pytest.raises(RateSheetError) as caught:
        read_rate_sheet(path, mapping)
    return caught.value


def brief(rows) -> list[tuple]:
    return [(r.line, r.call_type, r.prefix, r.destination, r.zone, r.price, r.unit_size, r.connection_fee,
             r.first_increment, r.next_increment) for r in rows]


# --- reading sheets ------------------------------------------------------------------------------

def test_generic_csv_parses_increments_and_fills_defaults_per_call_type(tmp_path):
    path = sheet_file(tmp_path, "rates.csv", (
        "Prefix,Destination,Price,Increments,Call_Type,Min_Charge\n"
        "+33 1,France Paris,0.0100,30/6,,\n"      # "30/6": first 30 s, then every 6 s
        "44,UK,0.02,60,,0.05\n"                   # "60" = 60/60
        "49,Germany,0.03,,,\n"                    # voice default 60/60, per minute
        "33,France SMS,0.05,,SMS,\n"              # sms default: per message, 1/1
    ))
    sheet = read_rate_sheet(path, "generic")
    assert brief(sheet) == [
        (2, "voice", "331", "France Paris", "", Decimal("0.0100"), 60, 0, 30, 6),
        (3, "voice", "44", "UK", "", Decimal("0.02"), 60, 0, 60, 60),
        (4, "voice", "49", "Germany", "", Decimal("0.03"), 60, 0, 60, 60),
        (5, "sms", "33", "France SMS", "", Decimal("0.05"), 1, 0, 1, 1),
    ]
    assert sheet.rows[1].min_charge == Decimal("0.05")
    assert sheet.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_french_sheet_decimal_commas_cp1252_title_lines_and_filter():
    mapping = load_rate_mapping(DATA / "carrier-fr.toml")
    sheet = read_rate_sheet(DATA / "carrier-fr.csv", mapping)
    # line 6 is "retiré" (filtered), line 7 is blank; "ACTIF" is kept (filters ignore case)
    assert brief(sheet) == [
        (4, "voice", "331", "France Paris", "fixe", Decimal("0.0100"), 60, Decimal("0"), 60, 60),
        (5, "voice", "336", "France mobile", "mobile", Decimal("0.0850"), 60, Decimal("0.0150"), 30, 6),
        (8, "voice", "32", "Belgique", "international", Decimal("0.0320"), 60, Decimal("0"), 1, 1),
        (9, "voice", "447", "Royaume-Uni mobile", "international", Decimal("0.125"), 60, Decimal("0"), 60, 60),
    ]
    assert sheet.skipped == 1 and sheet.currency == "EUR"


def test_excel_sheet_numbers_read_as_excel_shows_them(tmp_path):
    book = Workbook()
    book.active.title = "Notes"
    book.active.append(["read the Tarifs sheet"])
    ws = book.create_sheet("Tarifs")
    ws.append(["Carrier X, prices per minute"])
    ws.append(["Prefix", "Destination", "Rate", "Billing"])
    ws.append([33, "France", 0.012, "60/60"])
    ws.append(["336", "France mobile", 0.1, "30/6"])
    ws.append([44, "UK", 0.30000000000000004, "1/1"])     # what =0.1+0.2 stores; Excel shows 0.3
    ws.append([49, "Germany", "0,05", "1/1"])              # a number typed as text, French style
    ws.append([])
    ws.append(["Prices excl. VAT"])
    path = tmp_path / "carrier.xlsx"
    book.save(path)
    mapping = load_rate_mapping(mapping_file(tmp_path, (
        '[sheet]\nsheet = "Tarifs"\nheader_row = 2\ndecimal = ","\nend_at_blank_row = true\n'
        '[columns]\nprefix = "Prefix"\ndestination = "Destination"\nprice = "Rate"\nincrements = "Billing"\n')))
    assert brief(read_rate_sheet(path, mapping)) == [
        (3, "voice", "33", "France", "", Decimal("0.012"), 60, 0, 60, 60),
        (4, "voice", "336", "France mobile", "", Decimal("0.1"), 60, 0, 30, 6),
        (5, "voice", "44", "UK", "", Decimal("0.3"), 60, 0, 1, 1),
        (6, "voice", "49", "Germany", "", Decimal("0.05"), 60, 0, 1, 1),
    ]


def test_excel_refusals_name_the_sheet_and_the_date_cell(tmp_path):
    book = Workbook()
    book.active.title = "Rates"
    book.active.append(["prefix", "destination", "price", "increments"])
    book.active.append([33, "France", 0.01, dt.datetime(2026, 6, 30)])   # Excel turned "30/6" into a date
    path = tmp_path / "carrier.xlsx"
    book.save(path)
    assert str(refused(path, "generic")) == (
        "carrier.xlsx: refused, 1 problem (nothing imported):\n"
        "carrier.xlsx:2: column 'increments': '2026-06-30T00:00:00' is a date or time (Excel turns '30/6' "
        "into a date: format the column as text)")
    mapping = mapping_file(tmp_path, '[sheet]\nsheet = "Tarifs"\n[columns]\nprefix = "prefix"\n'
                                     'destination = "destination"\nprice = "price"\n')
    assert str(refused(path, mapping)) == "carrier.xlsx: no sheet 'Tarifs' (sheets: 'Rates')"
    not_excel = sheet_file(tmp_path, "fake.xlsx", "prefix,destination,price\n")
    assert str(refused(not_excel, "generic")).startswith("fake.xlsx: not an Excel .xlsx workbook (")


def test_a_malformed_sheet_lists_every_problem_with_line_column_and_value(tmp_path):
    path = sheet_file(tmp_path, "bad.csv", (
        "Prefix;Destination;Price;Increments;Unit_Size;Call_Type;Band\n"   # 1
        "33;France;0,0100;60/60;;;\n"            # 2 good
        "33-1;Paris;0,0100;60/60;;;\n"           # 3
        "336;France mobile;0,12x;30/6;;;\n"      # 4
        "337;France mobile;-0,05;30/6;;;\n"      # 5
        "338;France mobile;0.05;30/6;;;\n"       # 6 a '.' where the mapping says ','
        "339;France mobile;0,05;0/0;;;\n"        # 7
        "3310;Mobile;0,05;abc;;;\n"              # 8
        "3311;Mobile;0,05;60/60;0;;\n"           # 9
        "33;France bis;0,0200;60/60;;;\n"        # 10 same prefix as line 2
        ";Nowhere;0,01;60/60;;;\n"               # 11
        "34;Spain;;60/60;;;\n"                   # 12
        "35;Portugal;0,01;60/60;;fax;\n"         # 13
        "36;Italy;0,01;60/60;1;;peak\n"          # 14 per second...
        "36;Italy;0,01;60/60;;;\n"               # 15 ...and per minute (default 60) for one prefix
        "37;Gabon;0,0001667;60/60;1;;\n"          # 16 7 decimals: would be rounded to micro units
    ))
    error = refused(path, "generic-semicolon")
    assert [str(i) for i in error.issues] == [
        "bad.csv:3: column 'Prefix': '33-1' is not a prefix (digits only, after removing '+' and spaces)",
        "bad.csv:4: column 'Price': '0,12x' is not a number",
        "bad.csv:5: column 'Price': '-0,05' is negative",
        "bad.csv:6: column 'Price': '0.05' is not a number (the decimal separator is ','; set [sheet].decimal = \".\")",
        "bad.csv:7: column 'Increments': '0/0': the next increment must be at least 1",
        "bad.csv:8: column 'Increments': 'abc' is not increments (expected FIRST/NEXT in base units, e.g. '30/6' "
        "or '60')",
        "bad.csv:9: column 'Unit_Size': '0' is not a unit size (a whole number >= 1)",
        "bad.csv:10: column 'Prefix': duplicate prefix '33': also on line 2",
        "bad.csv:11: column 'Prefix': empty (a prefix is required)",
        "bad.csv:12: column 'Price': empty (a price is required)",
        "bad.csv:13: column 'Call_Type': 'fax' is not a call type (voice, sms, data)",
        "bad.csv:15: column 'Unit_Size': unit size 60 differs from line 14's (1) for prefix '36': the rows of a "
        "prefix share one unit size",
        "bad.csv:16: column 'Price': '0,0001667' has more than 6 decimals (rating is exact to 1e-6: price a larger "
        "unit_size, e.g. per minute rather than per second)",
    ]
    assert str(error).startswith("bad.csv: refused, 13 problems (nothing imported):\nbad.csv:3: column 'Prefix'")
    assert (error.issues[1].line, error.issues[1].column, error.issues[1].value) == (4, "Price", "0,12x")


def test_grouped_intervals_need_a_row_from_0_and_duplicates_count_band_and_group(tmp_path):
    path = sheet_file(tmp_path, "groups.csv", (
        "prefix,destination,price,band,group_start\n"
        "33,France,0.02,,60\n"           # band '' starts at 60: nothing prices the first minute
        "33,France,0.01,peak,0\n"
        "33,France,0.005,peak,60\n"
        "33,France,0.01,peak,0\n"        # same prefix, band and group as line 3
    ))
    assert [str(i) for i in refused(path, "generic").issues] == [
        "groups.csv:2: column 'group_start': prefix '33' has no row from 0 (its rows start at 60)",
        "groups.csv:5: column 'prefix': duplicate prefix '33' (band 'peak'): also on line 3",
    ]


def test_problems_beyond_50_are_counted_not_listed(tmp_path):
    path = sheet_file(tmp_path, "many.csv", "prefix,destination,price\n"
                      + "".join(f"{i},X,abc\n" for i in range(100, 160)))
    error = refused(path, "generic")
    assert len(error.issues) == 50
    assert str(error).splitlines()[0] == "many.csv: refused, 60 problems (nothing imported):"
    assert str(error).splitlines()[-1] == "… and 10 more"


def test_whole_file_refusals(tmp_path):
    assert str(refused(sheet_file(tmp_path, "empty.csv", ""), "generic")) == \
        "empty.csv: empty file: no header at line 1"
    assert str(refused(sheet_file(tmp_path, "head.csv", "prefix,destination,price\n\n"), "generic")) == \
        "head.csv: no rate rows after the header (line 1)"
    assert str(refused(sheet_file(tmp_path, "cols.csv", "Prefix,Dest,Rate\n33,France,0.01\n"), "generic")) == (
        "cols.csv:1: missing columns 'destination' ([columns].destination), 'price' ([columns].price); "
        "columns found: 'Prefix', 'Dest', 'Rate'")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("prefix,destination,price\n33,France,0.01\n33,Fréjus,0.01\n".encode("latin-1"))
    assert str(refused(latin, "generic")) == \
        "latin.csv:3: not valid utf-8 text (byte 0xE9); set [sheet].encoding, e.g. \"cp1252\""


def test_mapping_refusals_name_the_table_and_key(tmp_path):
    def message(text: str) -> str:
        with pytest.raises(RateSheetError) as caught:
            load_rate_mapping(mapping_file(tmp_path, text))
        return str(caught.value)

    base = '[columns]\nprefix = "P"\ndestination = "D"\n'
    assert message(base) == "m.toml: [columns].price: missing: prefix, destination and price are required"
    assert message(base + 'price = "R"\nincrements = { value = "0/0" }\n') == \
        "m.toml: [columns].increments.value: '0/0': the next increment must be at least 1"
    assert message('[sheet]\ndelimeter = ";"\n' + base + 'price = "R"\n') == (
        "m.toml: [sheet].delimeter: unknown key: expected among kind, delimiter, quote, encoding, decimal, "
        "header_row, sheet, end_at_blank_row, currency")
    assert message(base + 'price = "R"\nfirst_increment = "F"\n') == \
        "m.toml: [columns].next_increment: missing: first_increment is mapped, so map next_increment too " \
        "(or one increments column such as \"30/6\")"
    with pytest.raises(NotFoundError, match=r"no rate-sheet mapping 'nope': not a file, nor a preset "
                                            r"\(generic, generic-semicolon\)"):
        load_rate_mapping("nope")


# --- versions in the system of record ----------------------------------------------------------

def import_sheet(wb, path: Path, effective: dt.datetime, *, code: str = "FR", mapping="generic", now=NOW):
    """Activate ``path`` as deck ``code``'s version from ``effective`` (the deck is created if new)."""
    sheet = read_rate_sheet(path, mapping)
    with wb.db.transaction() as s:
        deck, _ = find_deck(s, code, create=True, name="France retail")
        return activate(s, deck, sheet, effective, "test", now=now)


def rates(wb, code: str = "FR") -> list[tuple]:
    with wb.db.session() as s:
        return [(r.call_type, r.prefix, r.band, str(r.price), r.first_increment, r.next_increment,
                 r.valid_from.date().isoformat(), r.valid_to.date().isoformat() if r.valid_to else None)
                for r in s.scalars(select(Rate).join(RateDeck).where(RateDeck.code == code).order_by(Rate.id))]


def priced_by(wb, number: str, at: dt.datetime, code: str = "FR") -> list[tuple]:
    """The rows the kernel (spec step 3-4) prices a voice call to ``number`` at ``at`` with:
    rows valid at ``at``, the longest matching prefix, then its newest valid_from, all its rows."""
    with wb.db.session() as s:
        valid = [r for r in s.scalars(select(Rate).join(RateDeck).where(RateDeck.code == code))
                 if r.call_type == "voice" and r.valid_from <= at and (r.valid_to is None or at < r.valid_to)
                 and number.startswith(r.prefix)]
    if not valid:
        return []
    longest = max(len(r.prefix) for r in valid)
    newest = max(r.valid_from for r in valid if len(r.prefix) == longest)
    return sorted((r.prefix, r.band, str(r.price)) for r in valid
                  if len(r.prefix) == longest and r.valid_from == newest)


def test_diff_lists_new_removed_up_down_changed_with_exact_figures(wb):
    import_sheet(wb, DATA / "deck-v1.csv", JAN)
    sheet = read_rate_sheet(DATA / "deck-v2.csv", "generic")
    with wb.db.session() as s:
        deck, created = find_deck(s, "FR")
        diff = diff_deck(s, deck, sheet, DEC, now=NOW)
    assert not created
    assert diff.counts() == {"new": 1, "removed": 1, "up": 1, "down": 1, "changed": 2, "unchanged": 1,
                             "reissued": 0}
    rows = diff.as_dict()["rows"]
    assert [(r["prefix"], r["destination"], r["new_price"], r["line"]) for r in rows["new"]] == [
        ("49", "Germany", "0.0200", 7)]
    assert [(r["prefix"], r["old_price"], r["new_price"]) for r in rows["removed"]] == [("44", "0.0200", None)]
    assert [(r["prefix"], r["old_price"], r["new_price"]) for r in rows["up"]] == [("33", "0.0100", "0.0120")]
    assert [(r["prefix"], r["old_price"], r["new_price"]) for r in rows["down"]] == [("336", "0.1000", "0.0900")]
    # 337: same price, increments 30/6 -> 60/60; 35: 0.60 per minute = 0.01 per second, the same price
    assert [(r["prefix"], r["changes"]) for r in rows["changed"]] == [
        ("337", {"first_increment": [30, 60], "next_increment": [6, 60]}),
        ("35", {"price": ["0.60", "0.01"], "unit_size": [60, 1]}),
    ]
    assert diff.warnings == []


def test_dry_run_writes_nothing_and_activation_writes_the_version(wb):
    import_sheet(wb, DATA / "deck-v1.csv", JAN)
    before = rates(wb)
    sheet = read_rate_sheet(DATA / "deck-v2.csv", "generic")
    with wb.db.session() as s:
        diff_deck(s, find_deck(s, "FR")[0], sheet, DEC, now=NOW)
    assert rates(wb) == before

    summary = import_sheet(wb, DATA / "deck-v2.csv", DEC)
    assert (summary.inserted, summary.closed, summary.deleted, summary.created_deck) == (5, 5, 0, False)
    # changed (33, 336, 337, 35) and removed (44) rows end at 2026-12-01; 34 (unchanged) is untouched;
    # the changed and new (49) rows start at 2026-12-01
    assert rates(wb) == [
        ("voice", "33", "", "0.0100", 60, 60, "2026-01-01", "2026-12-01"),
        ("voice", "336", "", "0.1000", 30, 6, "2026-01-01", "2026-12-01"),
        ("voice", "337", "", "0.1000", 30, 6, "2026-01-01", "2026-12-01"),
        ("voice", "34", "", "0.0300", 60, 60, "2026-01-01", None),
        ("voice", "35", "", "0.60", 1, 1, "2026-01-01", "2026-12-01"),
        ("voice", "44", "", "0.0200", 1, 1, "2026-01-01", "2026-12-01"),
        ("voice", "33", "", "0.0120", 60, 60, "2026-12-01", None),
        ("voice", "336", "", "0.0900", 30, 6, "2026-12-01", None),
        ("voice", "337", "", "0.1000", 60, 60, "2026-12-01", None),
        ("voice", "35", "", "0.01", 1, 1, "2026-12-01", None),
        ("voice", "49", "", "0.0200", 1, 1, "2026-12-01", None),
    ]
    last_second = DEC - dt.timedelta(seconds=1)
    assert priced_by(wb, "33612345678", last_second) == [("336", "", "0.1000")]
    assert priced_by(wb, "33612345678", DEC) == [("336", "", "0.0900")]
    assert priced_by(wb, "447700900123", last_second) == [("44", "", "0.0200")]
    assert priced_by(wb, "447700900123", DEC) == []
    assert priced_by(wb, "4930123456", last_second) == []
    assert priced_by(wb, "4930123456", DEC) == [("49", "", "0.0200")]
    with wb.db.session() as s:
        entries = s.scalars(select(AuditEntry).where(AuditEntry.action.like("rate_deck.%"))
                            .order_by(AuditEntry.id)).all()
    assert [e.action for e in entries] == ["rate_deck.create", "rate_deck.import", "rate_deck.import"]
    assert entries[-1].details == {
        "file": "deck-v2.csv", "sha256": hashlib.sha256((DATA / "deck-v2.csv").read_bytes()).hexdigest(),
        "effective": "2026-12-01T00:00:00Z", "call_types": ["voice"],
        "counts": {"new": 1, "removed": 1, "up": 1, "down": 1, "changed": 2, "unchanged": 1, "reissued": 0},
        "inserted": 5, "closed": 5, "deleted": 0}


def test_importing_the_same_sheet_again_is_a_no_op(wb):
    import_sheet(wb, DATA / "deck-v1.csv", JAN)
    import_sheet(wb, DATA / "deck-v2.csv", DEC)
    before = rates(wb)
    for effective in (DEC, dt.datetime(2027, 3, 1, tzinfo=UTC)):
        summary = import_sheet(wb, DATA / "deck-v2.csv", effective)
        assert (summary.inserted, summary.closed, summary.deleted) == (0, 0, 0)
        assert summary.counts["unchanged"] == 6
    assert rates(wb) == before
    with wb.db.session() as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry)
                        .where(AuditEntry.action == "rate_deck.import")) == 2


def test_an_earlier_effective_is_refused_and_a_version_in_force_is_never_edited(wb, tmp_path):
    import_sheet(wb, DATA / "deck-v1.csv", JAN)
    import_sheet(wb, DATA / "deck-v2.csv", DEC)
    before = rates(wb)
    with pytest.raises(DeckImportError) as caught:
        import_sheet(wb, DATA / "deck-v1.csv", dt.datetime(2026, 6, 1, tzinfo=UTC))
    assert str(caught.value) == (
        "deck 'FR' already has a version from 2026-12-01T00:00:00Z; versions are append-only, so --effective "
        "2026-06-01T00:00:00Z (earlier) is refused: import with --effective 2026-12-01T00:00:00Z or later")
    with pytest.raises(DeckImportError) as caught:
        import_sheet(wb, DATA / "deck-v1.csv", DEC, now=dt.datetime(2026, 12, 2, tzinfo=UTC))
    assert str(caught.value) == (
        "deck 'FR''s version from 2026-12-01T00:00:00Z is already in force (now 2026-12-02T00:00:00Z); a version "
        "in force is never edited: import with a later --effective")
    assert rates(wb) == before


def test_a_pending_version_is_replaced_by_importing_again_at_its_instant(wb, tmp_path):
    import_sheet(wb, DATA / "deck-v1.csv", JAN)
    import_sheet(wb, DATA / "deck-v2.csv", DEC)               # pending on NOW = 2026-11-15
    fixed = sheet_file(tmp_path, "v2-fixed.csv", (DATA / "deck-v2.csv").read_text().replace(
        "33,France,fr-fixed,0.0120", "33,France,fr-fixed,0.0110").replace("49,Germany,de,0.0200,1/1,\n", ""))
    summary = import_sheet(wb, fixed, DEC)
    assert (summary.inserted, summary.closed, summary.deleted) == (1, 0, 2)   # 33 rewritten, 49 withdrawn
    assert [r for r in rates(wb) if r[1] in ("33", "49")] == [
        ("voice", "33", "", "0.0100", 60, 60, "2026-01-01", "2026-12-01"),
        ("voice", "33", "", "0.0110", 60, 60, "2026-12-01", None),
    ]
    assert priced_by(wb, "33123456789", DEC) == [("33", "", "0.0110")]


def test_a_changed_band_reissues_every_row_of_its_prefix(wb, tmp_path):
    v1 = sheet_file(tmp_path, "v1.csv", "prefix,destination,price,band\n"
                                        "33,France,0.0200,peak\n33,France,0.0100,offpeak\n44,UK,0.0500,\n")
    v2 = sheet_file(tmp_path, "v2.csv", "prefix,destination,price,band\n"
                                        "33,France,0.0250,peak\n33,France,0.0100,offpeak\n44,UK,0.0500,\n")
    import_sheet(wb, v1, JAN)
    with wb.db.transaction() as s:
        s.add(TimeBand(deck_id=find_deck(s, "FR")[0].id, name="peak", days="mon,tue,wed,thu,fri",
                       start_minute=480, end_minute=1200))
    sheet = read_rate_sheet(v2, "generic")
    with wb.db.session() as s:
        diff = diff_deck(s, find_deck(s, "FR")[0], sheet, DEC, now=NOW)
    assert diff.counts() == {"new": 0, "removed": 0, "up": 1, "down": 0, "changed": 0, "unchanged": 2,
                             "reissued": 1}
    assert diff.warnings == ["band 'offpeak' is not a time band of deck 'FR': its rates apply only once the band "
                             "is defined"]
    summary = import_sheet(wb, v2, DEC)
    assert (summary.inserted, summary.closed) == (2, 2)
    # the kernel takes all rows of the newest version of a prefix: both bands must be there from DEC on
    assert priced_by(wb, "33123456789", DEC - dt.timedelta(seconds=1)) == [
        ("33", "offpeak", "0.0100"), ("33", "peak", "0.0200")]
    assert priced_by(wb, "33123456789", DEC) == [("33", "offpeak", "0.0100"), ("33", "peak", "0.0250")]
    assert [r for r in rates(wb) if r[1] == "44"] == [("voice", "44", "", "0.0500", 60, 60, "2026-01-01", None)]


def test_a_sheet_replaces_only_the_call_types_it_holds_and_checks_the_currency(wb, tmp_path):
    import_sheet(wb, sheet_file(tmp_path, "all.csv", "prefix,destination,price,call_type\n"
                                                     "33,France,0.0100,voice\n33,France,0.0500,sms\n"), JAN)
    summary = import_sheet(wb, sheet_file(tmp_path, "voice.csv", "prefix,destination,price\n44,UK,0.02\n"), DEC)
    assert summary.counts == {"new": 1, "removed": 1, "up": 0, "down": 0, "changed": 0, "unchanged": 0,
                              "reissued": 0}
    assert [r[:4] + r[6:] for r in rates(wb)] == [
        ("voice", "33", "", "0.0100", "2026-01-01", "2026-12-01"),
        ("sms", "33", "", "0.0500", "2026-01-01", None),
        ("voice", "44", "", "0.02", "2026-12-01", None),
    ]
    usd = mapping_file(tmp_path, '[sheet]\ncurrency = "USD"\n[columns]\nprefix = "prefix"\n'
                                 'destination = "destination"\nprice = "price"\n')
    with pytest.raises(DeckImportError, match=r"^voice.csv is in USD \(its mapping says so\), deck 'FR' is in EUR$"):
        import_sheet(wb, tmp_path / "voice.csv", DEC, mapping=load_rate_mapping(usd))


# --- the command ---------------------------------------------------------------------------------

def cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), "rating", "import", *args, "--data-dir", str(data_dir)], capture_output=True,
                          text=True, timeout=120)


def test_cli_prints_the_diff_then_activates_with_json(wb, data_dir):
    import_sheet(wb, DATA / "deck-v1.csv", JAN)
    v2 = str(DATA / "deck-v2.csv")
    done = cli(v2, "--deck", "FR", "--mapping", "generic", "--effective", "2099-12-01", data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "deck-v2.csv -> deck FR (sell, EUR), version from 2099-12-01T00:00:00Z",
        "  1 new, 1 removed, 1 up, 1 down, 2 changed, 1 unchanged",
        "new      49                       Germany                      0.0200",
        "removed  44                       UK                           0.0200",
        "up       33                       France                       0.0100 -> 0.0120",
        "down     336                      France mobile                0.1000 -> 0.0900",
        "changed  337                      France mobile                0.1000 (first_increment 30 -> 60; "
        "next_increment 6 -> 60)",
        "changed  35                       Portugal                     0.60 -> 0.01 (unit_size 60 -> 1)",
        "dry run: nothing written (add --activate to write this version)",
    ]
    assert len(rates(wb)) == 6 and all(r[-1] is None for r in rates(wb))     # the dry run wrote nothing

    done = cli(v2, "--deck", "FR", "--effective", "2099-12-01T00:00:00Z", "--activate", "--json", data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert (payload["file"], payload["activated"], payload["counts"]) == ("deck-v2.csv", True, {
        "new": 1, "removed": 1, "up": 1, "down": 1, "changed": 2, "unchanged": 1, "reissued": 0})
    assert payload["rows"]["up"] == [{"call_type": "voice", "prefix": "33", "band": "", "group_start": 0,
                                      "destination": "France", "old_price": "0.0100", "new_price": "0.0120",
                                      "line": 2, "rate_id": payload["rows"]["up"][0]["rate_id"],
                                      "changes": {"price": ["0.0100", "0.0120"]}}]
    assert {k: payload["activation"][k] for k in ("deck", "effective", "created_deck", "inserted", "closed")} == {
        "deck": "FR", "effective": "2099-12-01T00:00:00Z", "created_deck": False, "inserted": 5, "closed": 5}
    assert sum(1 for r in rates(wb) if r[-2] == "2099-12-01") == 5


def test_cli_dry_run_of_a_new_deck_creates_nothing_and_refusals_exit_2(data_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("BLUEROCKTEL_DATABASE_URL", raising=False)      # SQLite in data_dir
    done = cli(str(DATA / "carrier-fr.csv"), "--deck", "CARRIER", "--mapping", str(DATA / "carrier-fr.toml"),
               "--effective", "2026-12-01", "--create-deck", "--kind", "buy", "--json", data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert (payload["created_deck"], payload["activated"], payload["skipped"]) == (True, False, 1)
    assert [(r["prefix"], r["new_price"]) for r in payload["rows"]["new"]] == [
        ("331", "0.0100"), ("336", "0.0850"), ("32", "0.0320"), ("447", "0.125")]
    wb = Workbench.open(data_dir)
    try:
        with wb.db.session() as s:
            assert s.scalar(select(func.count()).select_from(RateDeck)) == 0
            with pytest.raises(NotFoundError, match=r"^no rate deck 'CARRIER'; add --create-deck"):
                find_deck(s, "CARRIER")
    finally:
        wb.close()

    bad = sheet_file(tmp_path, "bad.csv", "prefix,destination,price\n33,France,0.01\n33x,France,abc\n")
    done = cli(str(bad), "--deck", "FR", "--effective", "2026-01-01", "--create-deck", data_dir=data_dir)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: bad.csv: refused, 2 problems (nothing imported):",
        "bad.csv:3: column 'prefix': '33x' is not a prefix (digits only, after removing '+' and spaces)",
        "bad.csv:3: column 'price': 'abc' is not a number",
    ]
