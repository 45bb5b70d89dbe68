"""The demo operator: deterministic, realistic, and its CDRs belong to its services."""

from __future__ import annotations

import csv
import datetime as dt
import re
import subprocess
import sys
import time
from pathlib import Path
from collections import Counter
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from bluerocktel.billing.vat import validate_vat_number
from bluerocktel.db.models import (
    Account, Brand, Contact, Contract, Discount, DunningStage, OneOffCharge, Product, Rate, RateDeck, Schedule,
    SepaMandate, Service, ServiceBundle, ServiceIdentifier, User,
)
from bluerocktel.demo import (
    DEMO_PASSWORD, MALFORMED_LINES, CallerLine, build_demo, demo_callers, run_demo, write_asterisk_master_csv,
)
from bluerocktel.demo.build import (
    be_vat_number, ch_uid, fr_iban, fr_vat_number, iban_valid, luhn_valid, period_bounds, previous_month,
    sepa_creditor_id, siret_of,
)
from bluerocktel.errors import UserFacingError
from bluerocktel.mediation import import_cdr_file
from bluerocktel.rating import rate_pending
from bluerocktel.security import authenticate_password
from bluerocktel.workbench import Workbench

PERIOD = "2026-10"   # holds the switch back from summer time (25 October)


def read_master(path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def is_malformed(row: list[str]) -> bool:
    return len(row) != 18 or not re.fullmatch(r"\d{4}-\d{2}-(0[1-9]|[12]\d|3[01]) ([01]\d|2[0-3]):[0-5]\d:[0-5]\d",
                                              row[9])


@pytest.fixture
def demo(wb):
    summary = build_demo(wb, accounts=40, cdrs=20_000, period=PERIOD, seed=7)
    return wb, summary


def test_demo_counts_match_the_system_of_record(demo):
    wb, summary = demo
    with wb.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Account)) == summary.accounts == 40
        assert summary.business_accounts + summary.consumer_accounts == 40
        assert summary.business_accounts > summary.consumer_accounts > 0
        assert s.scalar(select(func.count()).select_from(Service)) == summary.services
        assert s.scalar(select(func.count()).select_from(ServiceIdentifier)) == summary.identifiers
        assert s.scalar(select(func.count()).select_from(Contract)) == 40
        assert s.scalar(select(func.count()).select_from(Contact)) >= 40
        assert s.scalar(select(func.count()).select_from(Rate).join(RateDeck).where(RateDeck.kind == "sell")) \
            == summary.rates
        assert s.scalar(select(func.count()).select_from(ServiceBundle)) == summary.bundles > 0
        roles = Counter(s.scalars(select(User.role)))
        assert {r: roles[r] for r in ["admin", "billing", "support", "sales", "read_only"]} == dict.fromkeys(
            ["admin", "billing", "support", "sales", "read_only"], 1)
        assert roles["customer"] == 5
        admin = authenticate_password(s, "demo-admin@bluerock.localhost", DEMO_PASSWORD)
        assert admin.role == "admin"
        customer = authenticate_password(s, "client-c000001@client.localhost", DEMO_PASSWORD)
        assert s.get(Account, customer.account_id).number == "C000001"
    assert DEMO_PASSWORD in summary.describe() and "demo-admin@bluerock.localhost" in summary.describe()


def test_demo_legal_data_and_numbers_are_well_formed(demo):
    wb, _ = demo
    with wb.db.session() as s:
        brands = s.scalars(select(Brand).order_by(Brand.code)).all()
        assert [b.name for b in brands] == ["Azur Connect", "BlueRock Télécom"]
        assert "localhost" in brands[1].host_names and brands[0].host_names == ["espace.azur.localhost"]
        assert brands[0].primary_color != brands[1].primary_color
        assert len({b.invoice_prefix for b in brands}) == 2
        for b in brands:
            assert b.logo_svg.startswith("<svg") and luhn_valid(b.siren)
            assert b.vat_number == fr_vat_number(b.siren) and re.fullmatch(r"FR\d{11}", b.vat_number)
        for account in s.scalars(select(Account)):
            assert re.fullmatch(r"C\d{6}", account.number)
            assert account.city and account.postcode
            if account.kind == "business" and account.country == "FR":
                assert luhn_valid(account.siren) and account.vat_number == fr_vat_number(account.siren)
                assert luhn_valid(account.siret) and account.siret.startswith(account.siren)
            elif account.kind == "consumer":
                assert account.siren is None and account.siret is None
        for kind, value in s.execute(select(ServiceIdentifier.kind, ServiceIdentifier.value)):
            if kind in ("number", "did"):
                assert re.fullmatch(r"\+33[1-59]\d{8}", value), value
            if kind == "account_code":
                assert re.fullmatch(r"C\d{6}", value)
        values = s.execute(select(ServiceIdentifier.kind, ServiceIdentifier.value)).all()
        assert len(values) == len(set(values)), "identifiers are unique"
        start, end = period_bounds(PERIOD)
        activated = s.scalar(select(func.count()).select_from(Service).where(Service.activated_on >= start,
                                                                              Service.activated_on < end))
        terminated = s.scalar(select(func.count()).select_from(Service).where(Service.terminated_on >= start,
                                                                               Service.terminated_on < end))
        assert s.scalar(select(func.min(Service.activated_on))) < start
        assert activated + terminated >= 0   # a 40-account demo may have none; the 300 one has both


def test_rate_deck_is_realistic(demo):
    wb, _ = demo
    with wb.db.session() as s:
        deck = s.scalar(select(RateDeck))
        rates = {r.prefix: r for r in deck.rates}
    for prefix in ["331", "332", "333", "334", "335", "339", "336", "337", "338", "44", "447", "1", "212", "213",
                   "216", "32", "49", "34", "39"]:
        assert prefix in rates, prefix
    assert all(isinstance(r.price, Decimal) and r.price > 0 for r in rates.values())
    assert (rates["44"].first_increment, rates["44"].next_increment) == (60, 60)
    assert (rates["331"].first_increment, rates["331"].next_increment) == (1, 1)
    assert (rates["336"].first_increment, rates["336"].next_increment) == (30, 6)
    assert rates["338"].connection_fee > 0 and rates["331"].connection_fee == 0
    assert rates["336"].price > rates["331"].price
    assert all(r.valid_from < dt.datetime(2026, 10, 1, tzinfo=dt.timezone.utc) for r in rates.values())


def test_cdrs_belong_to_services_and_their_active_days(demo):
    wb, summary = demo
    rows = read_master(summary.csv_path)
    assert len(rows) == 20_000 + MALFORMED_LINES == summary.cdrs_written + summary.malformed_lines
    assert sum(map(is_malformed, rows)) == MALFORMED_LINES == 6
    assert Counter(len(r) for r in rows)[13] == MALFORMED_LINES // 2
    with wb.db.session() as s:
        callers = {c.account_code: c for c in demo_callers(s)}
        codes = set(s.scalars(select(ServiceIdentifier.value).where(ServiceIdentifier.kind == "account_code")))
        numbers = set(s.scalars(select(ServiceIdentifier.value).where(ServiceIdentifier.kind == "number")))
    good = [r for r in rows if not is_malformed(r)]
    assert {r[0] for r in good} <= codes
    assert len({r[0] for r in good}) >= 0.8 * len(codes)
    for r in good:
        c = callers[r[0]]
        day = dt.date.fromisoformat(r[9][:10])
        assert day.strftime("%Y-%m") == PERIOD
        assert (c.active_from is None or day >= c.active_from) and (c.active_until is None or day < c.active_until)
        assert r[1] == "0" + c.number[3:] or re.fullmatch(r"2\d\d", r[1])
        assert int(r[12]) >= int(r[13]) >= 0
        assert (r[14] == "ANSWERED") == (r[10] != "") == (int(r[13]) > 0)
        assert r[2].startswith("0") and r[2].isdigit()
    assert {"0" + n[3:] for n in numbers} & {r[1] for r in good}


def test_traffic_shares_are_realistic(demo):
    _, summary = demo
    good = [r for r in read_master(summary.csv_path) if not is_malformed(r)]
    n = len(good)
    share = lambda pred: sum(1 for r in good if pred(r)) / n  # noqa: E731
    assert 0.66 < share(lambda r: r[14] == "ANSWERED") < 0.74
    assert 0.25 < share(lambda r: r[14] in ("NO ANSWER", "BUSY")) < 0.32
    assert 0.36 < share(lambda r: r[2][:2] in ("06", "07")) < 0.44
    assert 0.10 < share(lambda r: r[2].startswith("00")) < 0.16
    assert 0.01 < share(lambda r: r[2].startswith("08")) < 0.05
    assert share(lambda r: dt.date.fromisoformat(r[9][:10]).weekday() >= 5) < 0.08
    assert share(lambda r: 9 <= int(r[9][11:13]) < 18) > 0.75
    assert share(lambda r: int(r[9][11:13]) < 6) == 0
    talk = sorted(int(r[13]) for r in good if r[14] == "ANSWERED")
    assert 45 < talk[len(talk) // 2] < 120           # median call of one to two minutes
    assert len({r[16] for r in good}) == n            # unique ids are unique


def test_same_seed_same_bytes(wb, tmp_path):
    build_demo(wb, accounts=30, cdrs=0, period=PERIOD, seed=11)
    with wb.db.session() as s:
        callers = demo_callers(s)
    a = write_asterisk_master_csv(tmp_path / "a.csv", callers, PERIOD, 5_000, seed=11)
    b = write_asterisk_master_csv(tmp_path / "b.csv", callers, PERIOD, 5_000, seed=11)
    c = write_asterisk_master_csv(tmp_path / "c.csv", callers, PERIOD, 5_000, seed=12)
    data = (tmp_path / "a.csv").read_bytes()
    assert data == (tmp_path / "b.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()
    assert a.lines == b.lines == 5_000 + MALFORMED_LINES and c.cdrs == 5_000


def test_same_seed_same_demo_in_two_data_dirs(tmp_path, monkeypatch):
    monkeypatch.delenv("BLUEROCKTEL_DATABASE_URL", raising=False)
    outputs = []
    for name in ["one", "two"]:
        wb = Workbench.open(tmp_path / name)
        try:
            summary = build_demo(wb, accounts=25, cdrs=3_000, period=PERIOD, seed=5)
            with wb.db.session() as s:
                accounts = s.execute(select(Account.number, Account.name, Account.siren, Account.city)
                                     .order_by(Account.number)).all()
            outputs.append((open(summary.csv_path, "rb").read(), accounts,
                            {k: v for k, v in summary.as_dict().items() if k != "csv_path"}))
        finally:
            wb.close()
    assert outputs[0] == outputs[1]


def test_build_refuses_a_data_dir_with_brands_and_run_refuses_a_foreign_one(wb):
    with wb.db.transaction() as s:
        s.add(Brand(code="REAL", name="Real Operator", legal_name="Real SAS"))
    with pytest.raises(UserFacingError, match="brands already"):
        build_demo(wb, accounts=3, cdrs=0, period=PERIOD)
    with pytest.raises(UserFacingError, match="empty --data-dir"):
        run_demo(wb, accounts=3, cdrs=100, period=PERIOD, out=lambda _text: None)


def test_siren_and_vat_number_rules():
    assert luhn_valid("542051180") and not luhn_valid("542051181")   # TotalEnergies SE
    assert fr_vat_number("542051180") == "FR59542051180"
    # Luhn over 5420511800001 from the right, every other digit doubled (10 -> 1):
    # 2+0+0+0+0+8+2+1+1+0+4+4+1 = 23, check digit (10 - 3) mod 10 = 7
    assert siret_of("542051180", "0001") == "54205118000017" and not luhn_valid("54205118000013")
    # 4123456 = 97 × 42509 + 83, key 97 - 83 = 14
    assert be_vat_number("04123456") == "BE0412345614" == validate_vat_number("BE 0412.345.614")
    # weights 5 4 3 2 7 6 5 4: 5 + 0 + 27 + 8 + 35 + 36 + 35 + 32 = 178 = 11 × 16 + 2, check 11 - 2 = 9
    assert ch_uid("10945678") == "CHE-109.456.789 TVA"


def test_iban_and_creditor_id_rules():
    assert iban_valid("GB82 WEST 1234 5698 7654 32") and not iban_valid("GB82 WEST 1234 5698 7654 33")
    assert sepa_creditor_id("DE", "09999999999") == "DE98ZZZ09999999999"   # the EPC's example
    # RIB key 97 - (89 × 30004 + 15 × 312 + 3 × 34567890143) mod 97 = 86
    assert fr_iban("30004", "00312", "34567890143") == "FR76 3000 4003 1234 5678 9014 386"
    assert iban_valid(fr_iban("30004", "00312", "34567890143"))


def test_demo_billing_data(demo):
    """Seller legal data, foreign and consumer customers, mandates, products, charges, discount,
    minimum, dunning ladder and billing schedule: what the billing cycle needs to show."""
    wb, summary = demo
    with wb.db.session() as s:
        for b in s.scalars(select(Brand)):
            assert luhn_valid(b.siret) and b.siret.startswith(b.siren) and b.legal_form in ("SAS", "SARL")
            assert b.rcs.endswith(f"{b.siren[:3]} {b.siren[3:6]} {b.siren[6:]}") and b.share_capital.endswith("EUR")
            assert re.fullmatch(r"FR\d{2}ZZZ\d{6}", b.sepa_creditor_id)
            assert sepa_creditor_id("FR", b.sepa_creditor_id[-6:]) == b.sepa_creditor_id
            assert iban_valid(b.iban) and re.fullmatch(r"[A-Z]{6}[A-Z0-9]{5}", b.bic)
            assert b.postcode and b.city and "\n" not in b.address and b.late_penalty_rate in (Decimal("0.12"),
                                                                                                Decimal("0.15"))
        accounts = {a.number: a for a in s.scalars(select(Account))}
        eu = accounts[summary.showcase["intra-EU reverse charge (BE)"]]
        assert (eu.country, eu.vat_regime, eu.language, eu.siren) == ("BE", "eu_reverse_charge", "en", None)
        assert validate_vat_number(eu.vat_number) == eu.vat_number == "BE0412345614"
        export = accounts[summary.showcase["export (CH)"]]
        assert (export.country, export.vat_regime, export.vat_number) == ("CH", "export", "CHE-109.456.789 TVA")
        assert any(a.kind == "consumer" and a.vat_regime == "fr" for a in accounts.values())

        mandates = s.scalars(select(SepaMandate)).all()
        debit = {a.id for a in accounts.values() if a.payment_method == "sepa_debit"}
        assert len(mandates) == summary.mandates == len(debit) > 0 and {m.account_id for m in mandates} == debit
        assert all(iban_valid(m.iban) and m.iban.startswith("FR") and m.status == "active" for m in mandates)
        assert {m.sequence_type for m in mandates} <= {"FRST", "RCUR"}
        assert len({m.umr for m in mandates}) == len(mandates)

        products = {p.code: p for p in s.scalars(select(Product))}
        assert (products["MAINT-AN"].billing_period_months, products["SECOURS-4G"].billing_timing) == (12, "arrears")
        codes = Counter(s.scalars(select(Product.code).join(Service, Service.product_id == Product.id)))
        assert codes["MAINT-AN"] >= 1 and codes["SECOURS-4G"] >= 1

        charges = s.scalars(select(OneOffCharge)).all()
        second_site = [c for c in charges if c.description.startswith("Installation d'un second site")]
        assert [(c.account_id, c.kind, c.quantity, c.unit_price, c.charge_date, c.invoice_id) for c in second_site] \
            == [(accounts[summary.showcase["one-off second-site installation"]].id, "one_off", Decimal(1),
                 Decimal("390.00"), dt.date(2026, 10, 10), None)]
        installs = [c for c in charges if c not in second_site]
        assert len(installs) == s.scalar(select(func.count()).select_from(Service).join(Product)
                                         .where(Product.code == "INSTALL"))
        assert all(c.unit_price == Decimal("150.00") and c.service_id for c in installs)

        discount = s.scalar(select(Discount))
        assert (discount.kind, discount.value, discount.valid_from, discount.valid_to) == (
            "percent", Decimal("0.10"), dt.date(2026, 10, 1), dt.date(2027, 1, 1))
        assert accounts[summary.showcase["10 % discount for 3 months"]].id == discount.account_id
        minimum = s.scalars(select(Contract).where(Contract.minimum_monthly.is_not(None))).all()
        assert [(c.account_id, c.minimum_monthly) for c in minimum] == [
            (accounts[summary.showcase["minimum 250.00/month"]].id, Decimal("250.00"))]

        stages = s.execute(select(DunningStage.days_after_due, DunningStage.action, DunningStage.fee,
                                  DunningStage.brand_id).order_by(DunningStage.position)).all()
        assert stages == [(7, "reminder", None, None), (15, "late_fee", Decimal("10.00"), None),
                          (30, "suspend", None, None)]
        schedule = s.scalar(select(Schedule))
        assert (schedule.name, schedule.cron, schedule.job, schedule.params, schedule.enabled) == (
            "monthly-billing", "0 6 1 * *", "billing_run", {"dry_run": True}, True)
        assert schedule.next_run_at is not None


def test_period_defaults_and_checks():
    assert previous_month(dt.date(2026, 1, 15)) == "2025-12"
    assert period_bounds("2024-02") == (dt.date(2024, 2, 1), dt.date(2024, 3, 1))
    with pytest.raises(UserFacingError):
        period_bounds("10/2026")


def test_two_hundred_thousand_cdrs_are_fast(tmp_path):
    callers = [CallerLine(account_code=f"C{i:06d}", number=f"+3314{i:07d}", weight=1 + i % 7,
                          active_from=dt.date(2026, 10, 10) if i % 50 == 0 else None,
                          active_until=dt.date(2026, 10, 20) if i % 60 == 1 else None) for i in range(1, 301)]
    t0 = time.perf_counter()
    summary = write_asterisk_master_csv(tmp_path / "Master.csv", callers, PERIOD, 200_000, seed=7)
    elapsed = time.perf_counter() - t0
    assert summary.lines == 200_000 + MALFORMED_LINES
    assert elapsed < 10, f"200k CDRs took {elapsed:.1f} s"


def test_importing_the_demo_and_reports_loads_no_ui_library():
    code = ("import sys, bluerocktel.demo, bluerocktel.reports; "
            "bad = [m for m in ('panel', 'ipywidgets', 'voila', 'papermill', 'IPython') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_run_demo_imports_rates_and_bills(wb):
    printed: list[str] = []
    result = run_demo(wb, accounts=12, cdrs=2_000, period=PERIOD, seed=3, out=printed.append)
    assert result["cdrs_imported"] == 2_000 and result["cdrs_quarantined"] == MALFORMED_LINES
    assert sum(i["count"] for i in result["invoices"]) >= 10
    assert "demo-admin@bluerock.localhost" in printed[-1] and DEMO_PASSWORD in printed[-1]
    printed.clear()
    again = run_demo(wb, accounts=12, cdrs=2_000, seed=3, out=printed.append)   # reuses the demo
    assert printed[0].startswith("reusing the demo")
    assert again["invoices"] == result["invoices"] and again["cdrs_imported"] == 2_000


def test_demo_traffic_exercises_bands_bundles_and_carrier_costs(demo):
    """Rated demo traffic uses what the demo tariffs define: off-peak international calls, bundles
    that make mobile/fixed minutes free, a cost and margin on every rated call, and negative
    margins only on the Moroccan mobiles the carrier sells above our per-minute price."""
    from bluerocktel.demo.build import DEMO_SOURCE
    from bluerocktel.lake import connect_duckdb, scan_sql

    wb, summary = demo
    import_cdr_file(wb, Path(summary.csv_path), "asterisk-csv", source=DEMO_SOURCE, actor="test")
    rate_pending(wb)
    con = connect_duckdb()
    try:
        rows = con.sql(f"""
            SELECT count(*) FILTER (WHERE band = 'offpeak'),
                   count(*) FILTER (WHERE zone IN ('national_fixed', 'national_mobile') AND band <> ''),
                   count(*) FILTER (WHERE flags LIKE '%bundle%' AND price_micro = 0),
                   count(*) FILTER (WHERE cost_micro IS NULL),
                   count(*) FILTER (WHERE margin_micro <> price_micro - cost_micro),
                   count(*) FILTER (WHERE flags LIKE '%negative_margin%'),
                   count(*) FILTER (WHERE flags LIKE '%negative_margin%' AND left(prefix, 4) NOT IN ('2126', '2127'))
            FROM {scan_sql(wb.lake_dir, "rated", [PERIOD])} WHERE rating_status = 'rated'""").fetchall()[0]
    finally:
        con.close()
    offpeak, national_banded, free_in_bundle, no_cost, bad_margin, negative, negative_elsewhere = rows
    assert offpeak > 0 and national_banded == 0       # only international zones have an off-peak rate
    assert free_in_bundle > 0
    assert no_cost == 0 and bad_margin == 0
    # the connection fee and 60 s increments cover the dearer carrier on short Moroccan mobile
    # calls; the long ones sell below cost
    assert negative > 0 and negative_elsewhere == 0
