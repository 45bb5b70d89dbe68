"""The kernel's fast paths give the rows of its general ones: a batch cut into slices priced in
threads, and amounts too large for int64 priced with Python integers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rating_builders import RATED_AT, band, cdr, cdr_table, identifier, identifier_table, rate, rate_table, tariffs, \
    trunk

from bluerocktel.lake import connect_duckdb
from bluerocktel.rating import kernel, rate_batch


@pytest.fixture(scope="module")
def con():
    con = connect_duckdb()
    yield con
    con.close()


def _mixed_batch():
    """Eight calls that take every path: plain, grouped interval (two segments), crossing the
    peak boundary, identified by account code and by trunk, unrated, unassigned, inbound."""
    identifiers = identifier_table(identifier(), identifier("ACME", kind="account_code", service_id=2),
                                   identifier("SIP/pbx", kind="trunk", service_id=3))
    rates = rate_table(rate("33", 60_000), rate("44", 120_000), rate("44", 30_000, group_start=60, increments=(1, 1)),
                       rate("49", 90_000, band="peak"), rate("49", 45_000, band="offpeak"),
                       rate("", 10_000, deck_id=900, increments=(1, 1)))
    cdrs = cdr_table(
        cdr("+33612345678", billsec_s=61),
        cdr("+447700900123", billsec_s=150),
        cdr("+4915112345678", start="2026-10-12 16:58", billsec_s=240),    # 18:58 Paris: peak, then offpeak
        cdr("+33612345678", caller="+33999999999", account_code="ACME", billsec_s=30),
        cdr("+33612345678", caller="+33888888888", channel="SIP/pbx-0001", billsec_s=45),
        cdr("+1212555000", billsec_s=20),                                   # no rate for +1
        cdr("+33612345678", caller="+33777777777", channel="SIP/x-1", billsec_s=20),   # nobody's
        cdr("+33123456789", caller="+33612345678", direction="in", billsec_s=20))   # the PBX trunk's
    bands = [band("peak", "mon,tue,wed,thu,fri", "08:00", "19:00", priority=1),
             band("offpeak", "mon,tue,wed,thu,fri,sat,sun,hol")]
    return cdrs, tariffs(identifiers, rates, bands=bands, trunks=[trunk()])


def test_slices_priced_in_threads_give_the_rows_of_one_slice(con, monkeypatch):
    cdrs, plan = _mixed_batch()
    whole = rate_batch(con, cdrs, plan, RATED_AT)
    assert whole["price_micro"].num_chunks == 1
    monkeypatch.setattr(kernel, "_PART_ROWS", 2)
    monkeypatch.setattr(kernel.os, "cpu_count", lambda: 3)
    sliced = rate_batch(con, cdrs, plan, RATED_AT)
    assert sliced["price_micro"].num_chunks == 3              # 8 rows in slices of 3, 3 and 2
    assert sliced.to_pylist() == whole.to_pylist()
    rows = whole.to_pylist()
    assert [r["rating_status"] for r in rows] == ["rated"] * 5 + ["unrated", "unassigned", "free"]
    assert [r["service_id"] for r in rows] == [1, 1, 1, 2, 3, 1, None, 3]
    # +44, 150 s: 60 s at 0.12/min (one 60 s increment), then 90 s at 0.03/min (per second):
    # 120_000 + 30_000 * 90 / 60 = 120_000 + 45_000
    assert rows[1]["price_micro"] == 165_000
    assert json.loads(rows[1]["segments"]) == [
        {"band": "", "rate_id": 2, "group_start": 0, "increments": 1, "units": 60, "amount_pico": 120_000_000_000},
        {"band": "", "rate_id": 3, "group_start": 60, "increments": 90, "units": 90, "amount_pico": 45_000_000_000}]
    # +49, 240 s from 18:58 Paris: 2 minutes at peak 0.09, 2 at offpeak 0.045
    assert (rows[2]["band"], rows[2]["price_micro"]) == ("peak+offpeak", 2 * 90_000 + 2 * 45_000)
    # every rated call is bought on the carrier trunk at 0.01/min per second: 61 s -> 10_000 * 61 / 60
    assert rows[0]["cost_micro"] == 10_167   # 10_166.67 half up


def test_amounts_beyond_int64_picos_are_priced_with_python_integers(con):
    identifiers = identifier_table(identifier())
    rates = rate_table(rate("33", 30_000_000_000),                                    # 30,000.00 a minute
                       rate("44", 30_000_000_000), rate("44", 10_000_000_000, group_start=60, increments=(1, 1)))
    cdrs = cdr_table(cdr("+33612345678", billsec_s=3000), cdr("+447700900123", billsec_s=3000))
    plan = tariffs(identifiers, rates)
    prepared = kernel.prepare(con, plan)
    assert not kernel._int64_exact(prepared, np.array([3000, 3000]))    # the batch takes the exact path
    rows = rate_batch(con, cdrs, plan, RATED_AT).to_pylist()
    # 50 minutes at 30_000_000_000 micro: 1.5e12 micro, 1.5e18 pico
    assert (rows[0]["price_micro"], rows[0]["unrounded_pico"]) == (1_500_000_000_000, 1_500_000_000_000_000_000)
    # 1 minute at 3e10, then 2940 s at 1e10 a minute: 3e10 + 1e10 * 2940 / 60 = 3e10 + 4.9e11
    assert rows[1]["price_micro"] == 30_000_000_000 + 490_000_000_000
    assert json.loads(rows[1]["segments"])[1] == {"band": "", "rate_id": 3, "group_start": 60, "increments": 2940,
                                                  "units": 2940, "amount_pico": 490_000_000_000_000_000}
