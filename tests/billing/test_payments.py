"""Payments: allocation oldest due first, account credit, returns, balances and statements."""

import datetime as dt
import json
import threading

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from money_builders import (make_account, make_brand, make_invoice, new_customer, run_money_cli,
                            sqlite_workbench)

from bluerocktel.billing.payments import (DuplicatePaymentError, account_balance, allocate, apply_account_credit,
                                          open_amount_minor, record_payment, return_payment, statement)
from bluerocktel.db.models import Account, Allocation, AuditEntry, Invoice, Payment
from bluerocktel.errors import UserFacingError

UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def mwb(tmp_path_factory):
    """One SQLite workbench for the module; each test bills its own new customer."""
    workbench = sqlite_workbench(tmp_path_factory.mktemp("payments"))
    yield workbench
    workbench.close()


def _setup(wb):
    """A new account with January (100.00 + 20 % = 120.00) and February (50.00 + 20 % = 60.00) invoices,
    issued on 1 February and 1 March, due 30 days later."""
    c = new_customer(wb)
    return c.account_id, c.invoice_ids[0], c.invoice_ids[1]


def _names(wb, account_id, *invoice_ids):
    with wb.db.session() as s:
        return [s.get(Account, account_id).number] + [s.get(Invoice, i).number for i in invoice_ids]


def _pay(wb, account_id, minor, **kw):
    kw.setdefault("received_at", dt.datetime(2026, 3, 10, 9, 0, tzinfo=UTC))
    with wb.db.transaction() as s:
        return record_payment(s, account_id, minor, method="transfer", actor="alice", **kw).id


def _status(wb, *invoice_ids):
    with wb.db.session() as s:
        return [(s.get(Invoice, i).status, open_amount_minor(s, i)) for i in invoice_ids]


def test_payment_settles_the_oldest_invoice_first_and_the_rest_is_credit(mwb):
    wb = mwb
    account_id, jan, feb = _setup(wb)
    assert _status(wb, jan, feb) == [("issued", 12000), ("issued", 6000)]
    _pay(wb, account_id, 15000)                                    # 120.00 to January, 30.00 to February
    assert _status(wb, jan, feb) == [("paid", 0), ("partially_paid", 6000 - 3000)]
    _pay(wb, account_id, 5000, received_at=dt.datetime(2026, 3, 20, 9, 0, tzinfo=UTC))   # 30.00 + 20.00 credit
    assert _status(wb, jan, feb) == [("paid", 0), ("paid", 0)]
    with wb.db.session() as s:
        assert s.get(Invoice, feb).paid_at == dt.datetime(2026, 3, 20, 9, 0, tzinfo=UTC)
        assert account_balance(s, account_id, today=dt.date(2026, 4, 1)) == {
            "account": _names(wb, account_id)[0], "currency": "EUR", "as_of": "2026-04-01", "due_minor": 0,
            "credit_minor": 2000, "overdue_minor": 0, "open_invoices": 0, "balance_minor": -2000}
        payments = [str(i) for i in s.scalars(sa.select(Payment.id).where(Payment.account_id == account_id))]
        assert s.scalar(sa.select(sa.func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "payment.record", AuditEntry.actor == "alice",
            AuditEntry.target_id.in_(payments))) == 2
    with wb.db.transaction() as s:                                 # March: 40.00 + 20 % = 48.00
        march = make_invoice(s, s.get(Invoice, jan).account, f"M{jan}", 3, [("Trunk SIP", 4000, "0.20")]).id
        assert apply_account_credit(s, account_id) == 2000
    assert _status(wb, march) == [("partially_paid", 4800 - 2000)]
    with wb.db.transaction() as s:
        assert apply_account_credit(s, account_id) == 0           # no credit left


def test_a_payment_for_a_named_invoice_leaves_the_rest_as_credit(mwb):
    wb = mwb
    account_id, jan, feb = _setup(wb)
    _pay(wb, account_id, 8000, invoice_id=feb, reference="virement fevrier")
    assert _status(wb, jan, feb) == [("issued", 12000), ("paid", 0)]
    with wb.db.session() as s:
        balance = account_balance(s, account_id, today=dt.date(2026, 3, 5))   # January due 2026-03-03
        assert (balance["due_minor"], balance["credit_minor"], balance["overdue_minor"]) == (12000, 8000 - 6000, 12000)
    with wb.db.transaction() as s:                                 # staff allocates the 20.00 left to January
        payment_id = s.scalar(sa.select(Payment.id).where(Payment.account_id == account_id))
        with pytest.raises(UserFacingError, match=f"cannot allocate 2001 to invoice {_names(wb, account_id, jan)[1]}"):
            allocate(s, jan, payment_id=payment_id, amount_minor=2001, actor="alice")
        assert allocate(s, jan, payment_id=payment_id, actor="alice").amount_minor == 2000
    assert _status(wb, jan) == [("partially_paid", 12000 - 2000)]


def test_refused_payments_name_the_problem(mwb):
    wb = mwb
    account_id, jan, _ = _setup(wb)
    with wb.db.transaction() as s:
        other = make_account(s, s.get(Invoice, jan).brand, number=f"D{jan}", name="Durand").id
    number, jan_number = _names(wb, account_id, jan)
    cases = [
        (dict(amount_minor=0), "payment amount must be positive, got 0"),
        (dict(amount_minor=12.5), "must be an integer number of minor units"),
        (dict(amount_minor=100, currency="USD"), f"payment in USD refused: account {number} is billed in EUR"),
        (dict(amount_minor=100, method="bitcoin"), "'bitcoin' is not a valid PaymentMethod"),
        (dict(amount_minor=100, account_id=other, invoice_id=jan),
         f"invoice {jan_number} belongs to another account than D{jan}"),
    ]
    for kwargs, message in cases:
        kwargs = {"account_id": account_id, "method": "transfer", **kwargs}
        with pytest.raises(UserFacingError, match=message), wb.db.transaction() as s:
            record_payment(s, kwargs.pop("account_id"), kwargs.pop("amount_minor"), actor="alice", **kwargs)
    _pay(wb, account_id, 100, source="camt053", bank_reference="2026031000042")
    with pytest.raises(DuplicatePaymentError, match="bank reference '2026031000042' exists already"):
        _pay(wb, account_id, 100, source="camt053", bank_reference="2026031000042")
    with wb.db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Payment).where(Payment.account_id == account_id)) == 1


def test_a_returned_payment_reopens_its_invoices(mwb):
    wb = mwb
    account_id, jan, feb = _setup(wb)
    first = _pay(wb, account_id, 15000)
    _pay(wb, account_id, 1000)
    assert _status(wb, jan, feb) == [("paid", 0), ("partially_paid", 6000 - 3000 - 1000)]
    with wb.db.transaction() as s:
        return_payment(s, first, "AM04", "sepa", returned_at=dt.datetime(2026, 3, 15, tzinfo=UTC))
    # The 10.00 payment stays on February; January is open again.
    assert _status(wb, jan, feb) == [("issued", 12000), ("partially_paid", 6000 - 1000)]
    with wb.db.session() as s:
        assert s.get(Invoice, jan).paid_at is None
        reversed_ = s.scalars(sa.select(Allocation.reversed_at).where(Allocation.payment_id == first)).all()
        assert reversed_ == [dt.datetime(2026, 3, 15, tzinfo=UTC)] * 2
        entry = s.scalars(sa.select(AuditEntry).where(AuditEntry.action == "payment.return",
                                                      AuditEntry.target_id == str(first))).one()
        assert entry.details["reopened"] == [jan, feb]
        assert account_balance(s, account_id)["credit_minor"] == 0
    with pytest.raises(UserFacingError, match="was returned already"), wb.db.transaction() as s:
        return_payment(s, first, "AM04", "sepa")


def test_statement_has_a_running_balance_from_the_opening(mwb):
    wb = mwb
    account_id, jan, feb = _setup(wb)            # January issued 2026-02-01, February 2026-03-01
    _pay(wb, account_id, 12000, received_at=dt.datetime(2026, 2, 20, 10, 0, tzinfo=UTC), reference="VIR-1")
    payment = _pay(wb, account_id, 6000, received_at=dt.datetime(2026, 3, 5, 23, 30, tzinfo=UTC),
                   reference="SEPA-2")           # 00:30 on 6 March in Paris
    with wb.db.transaction() as s:
        return_payment(s, payment, "AM04", "sepa", returned_at=dt.datetime(2026, 3, 12, 8, 0, tzinfo=UTC))
    with wb.db.session() as s:
        lines = statement(s, account_id, dt.date(2026, 2, 15), dt.date(2026, 4, 1))
    assert [(ln["date"].isoformat(), ln["kind"], ln["reference"], ln["debit_minor"], ln["credit_minor"],
             ln["balance_minor"]) for ln in lines] == [
        ("2026-02-15", "opening", "", 0, 0, 12000),
        ("2026-02-20", "payment", "VIR-1", 0, 12000, 0),
        ("2026-03-01", "invoice", _names(wb, account_id, feb)[1], 6000, 0, 6000),
        ("2026-03-06", "payment", "SEPA-2", 0, 6000, 0),
        ("2026-03-12", "return", "SEPA-2", 6000, 0, 6000),
    ]
    with wb.db.session() as s:
        assert account_balance(s, account_id)["balance_minor"] == 6000
        with pytest.raises(UserFacingError, match="must be after the start"):
            statement(s, account_id, dt.date(2026, 4, 1), dt.date(2026, 4, 1))


def test_concurrent_payments_never_over_allocate(wb):
    """Four payments of 40.00 arrive together for one invoice of 120.00: 120.00 allocated, 40.00 credit."""
    with wb.db.transaction() as s:
        account = make_account(s, make_brand(s))
        account_id, jan = account.id, make_invoice(s, account, "FA-2026-000001", 1, [("Trunk", 10000, "0.20")]).id
    errors = []
    barrier = threading.Barrier(4)

    def pay():
        try:
            barrier.wait()
            _pay(wb, account_id, 4000)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=pay) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with wb.db.session() as s:
        allocated = s.scalars(sa.select(Allocation.amount_minor).where(Allocation.invoice_id == jan)).all()
        assert sum(allocated) == 12000 and sorted(allocated) == [4000, 4000, 4000]
        assert account_balance(s, account_id)["credit_minor"] == 4 * 4000 - 12000


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(invoices=st.lists(st.integers(1, 50_000), min_size=1, max_size=4),
       payments=st.lists(st.tuples(st.integers(1, 60_000), st.booleans()), min_size=1, max_size=5))
def test_allocations_sum_to_whole_payments_and_never_overdraw_an_invoice(mwb, invoices, payments):
    """Random invoices and payments (some returned later): each payment = allocated + credit; open ≥ 0."""
    shared_wb = mwb
    c = new_customer(mwb, months=range(1, len(invoices) + 1), nets=invoices)
    account_id, invoice_ids = c.account_id, c.invoice_ids
    payment_ids = [(_pay(shared_wb, account_id, minor), returned) for minor, returned in payments]
    with shared_wb.db.transaction() as s:
        for payment_id, returned in payment_ids:
            if returned:
                return_payment(s, payment_id, "MD06", "test")
        apply_account_credit(s, account_id)
    with shared_wb.db.session() as s:
        active = s.execute(sa.select(Allocation.payment_id, Allocation.invoice_id, Allocation.amount_minor)
                           .where(Allocation.invoice_id.in_(invoice_ids), Allocation.reversed_at.is_(None))).all()
        totals = {i: s.get(Invoice, i).total_minor for i in invoice_ids}
        for invoice_id in invoice_ids:
            allocated = sum(a for _, i, a in active if i == invoice_id)
            assert 0 <= allocated <= totals[invoice_id]
            assert open_amount_minor(s, invoice_id) == totals[invoice_id] - allocated
        received = sum(minor for (minor, returned) in payments if not returned)
        balance = account_balance(s, account_id)
        assert sum(a for _, _, a in active) + balance["credit_minor"] == received
        assert balance["due_minor"] == sum(totals.values()) - sum(a for _, _, a in active)
        # Credit is left only when nothing is open any more.
        assert balance["credit_minor"] == 0 or balance["due_minor"] == 0
        # The statement's closing balance is what the balance says: invoices - payments kept.
        closing = statement(s, account_id, dt.date(2026, 1, 1), dt.date(2100, 1, 1))[-1]["balance_minor"]
        assert closing == balance["balance_minor"] == sum(totals.values()) - received


def test_cli_payment_balance_and_statement(mwb, capsys):
    account_id, jan, feb = _setup(mwb)
    number, jan_number, feb_number = _names(mwb, account_id, jan, feb)
    assert run_money_cli(mwb.data_dir, "payment", "add", "--account", number, "--amount", "150.00",
                         "--invoice", feb_number, "--reference", "chq 1234", "--method", "cheque") == 0
    assert capsys.readouterr().out == (f"payment {_last_payment(mwb, account_id)}: 150,00\u00a0€ from {number}; "
                                       f"{feb_number} still open: 0,00\u00a0€\n")
    assert run_money_cli(mwb.data_dir, "payment", "add", "--account", number, "--amount", "1.005") == 2
    assert "--amount: 1.005 is not a positive amount with at most 2 decimals" in capsys.readouterr().err
    assert run_money_cli(mwb.data_dir, "balance", "--account", number, "--json") == 0
    balance = json.loads(capsys.readouterr().out)
    assert (balance["due_minor"], balance["credit_minor"], balance["balance_minor"]) == (12000, 15000 - 6000, 3000)
    assert run_money_cli(mwb.data_dir, "statement", "--account", number, "--from", "2026-01-01",
                         "--to", "2026-04-01", "--csv") == 0
    assert capsys.readouterr().out.splitlines() == [      # the payment, received today, comes after --to
        "date,kind,reference,description,debit,credit,balance,currency",
        "2026-01-01,opening,,,0.00,0.00,0.00,EUR",
        f"2026-02-01,invoice,{jan_number},2026-01-01 – 2026-02-01,120.00,0.00,120.00,EUR",
        f"2026-03-01,invoice,{feb_number},2026-02-01 – 2026-03-01,60.00,0.00,180.00,EUR",
    ]
    assert run_money_cli(mwb.data_dir, "statement", "--account", number, "--from", "2026-13-01",
                         "--to", "2026-04-01") == 2
    assert "--from must be a date YYYY-MM-DD, got '2026-13-01'" in capsys.readouterr().err


def _last_payment(wb, account_id):
    with wb.db.session() as s:
        return s.scalar(sa.select(sa.func.max(Payment.id)).where(Payment.account_id == account_id))


def test_accounts_with_credit_are_those_with_an_unallocated_payment_or_credit_note(mwb):
    """The cycle applies credit only to these accounts, found in one query per issuing batch."""
    from bluerocktel.billing.credit_notes import issue_credit_note
    from bluerocktel.billing.payments import accounts_with_credit

    wb = mwb
    settled, _, _ = _setup(wb)
    _pay(wb, settled, 18000)                                       # both invoices paid, nothing left
    overpaid, _, _ = _setup(wb)
    _pay(wb, overpaid, 18500)                                      # 5.00 of credit
    returned, _, _ = _setup(wb)
    with wb.db.transaction() as s:
        return_payment(s, _pay(wb, returned, 20000), "AM04", actor="bank")   # its 20.00 of credit went back
    credited, _, feb = _setup(wb)
    _pay(wb, credited, 18000)
    with wb.db.transaction() as s:                                 # February paid, then credited: 60.00 of credit
        issue_credit_note(s, feb, reason="Geste commercial", actor="alice")
    untouched, _, _ = _setup(wb)
    accounts = [settled, overpaid, returned, credited, untouched]
    with wb.db.transaction() as s:
        assert accounts_with_credit(s, accounts) == {overpaid, credited}
        assert {a for a in accounts if account_balance(s, a)["credit_minor"] > 0} == {overpaid, credited}
        assert accounts_with_credit(s, []) == set()
