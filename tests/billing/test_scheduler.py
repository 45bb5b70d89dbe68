"""The scheduler: cron slots in the operator's time zone, each slot run once, failures recorded.

Times: Europe/Paris is UTC+1 until 29 March 2026, UTC+2 after. "0 6 1 * *" is 06:00 Paris on the
1st: 1 March 05:00 UTC, 1 April 04:00 UTC.
"""

import argparse
import datetime as dt
import json
import subprocess
import sys
import textwrap
import threading

import pytest
import sqlalchemy as sa

from bluerocktel.billing.cli_cycle import add_commands, add_top_level_commands
from bluerocktel.billing.scheduler import (ScheduleError, _billing_period, _claim, add_schedule, list_schedules,
                                           parse_now, remove_schedule, run_due)
from bluerocktel.db.models import AuditEntry, BillingRun, Brand, Schedule

UTC = dt.timezone.utc


def at(text: str) -> dt.datetime:
    return parse_now(text)


def schedule_row(wb, name: str) -> Schedule:
    with wb.db.session() as s:
        return s.scalar(sa.select(Schedule).where(Schedule.name == name))


def test_the_next_slot_is_computed_in_the_operator_time_zone(wb):
    monthly = add_schedule(wb, "monthly", "0 6 1 * *", "billing_run", {"dry_run": True}, now=at("2026-02-15T12:00"))
    assert monthly.next_run_at == dt.datetime(2026, 3, 1, 5, 0, tzinfo=UTC)
    later = add_schedule(wb, "april", " 0  6 1 * * ", "send_emails", now=at("2026-03-15T12:00"))
    assert (later.cron, later.next_run_at) == ("0 6 1 * *", dt.datetime(2026, 4, 1, 4, 0, tzinfo=UTC))
    assert at("2026-04-01T04:00:00+00:00") == at("2026-04-01T06:00")
    with pytest.raises(ScheduleError, match="'61 6 1 \\* \\*' is not a cron expression of five fields"):
        add_schedule(wb, "bad", "61 6 1 * *", "rate")
    with pytest.raises(ScheduleError, match="'0 6 1 \\*' is not a cron expression"):
        add_schedule(wb, "bad", "0 6 1 *", "rate")
    with pytest.raises(ScheduleError, match="unknown job 'invoice'; jobs: billing_run, collect"):
        add_schedule(wb, "bad", "0 6 1 * *", "invoice")
    with pytest.raises(ScheduleError, match="a schedule named 'monthly' exists already"):
        add_schedule(wb, "monthly", "0 7 1 * *", "rate")
    with pytest.raises(ScheduleError, match="not an ISO 8601"):
        parse_now("tomorrow")
    assert [s.name for s in list_schedules(wb)] == ["april", "monthly"]
    remove_schedule(wb, "april")
    assert [s.name for s in list_schedules(wb)] == ["monthly"]
    with wb.db.session() as s:
        assert s.scalars(sa.select(AuditEntry.action).order_by(AuditEntry.id)).all() == [
            "schedule.add", "schedule.add", "schedule.remove"]


def test_the_billing_period_is_the_month_before_the_slot_unless_given():
    assert _billing_period({}, dt.datetime(2026, 4, 1, 4, 0, tzinfo=UTC)) == "2026-03"
    # 31 Dec 23:30 UTC is already 1 January in Paris: the period is December
    assert _billing_period({}, dt.datetime(2026, 12, 31, 23, 30, tzinfo=UTC)) == "2026-12"
    assert _billing_period({}, dt.datetime(2027, 1, 1, 5, 0, tzinfo=UTC)) == "2026-12"
    assert _billing_period({"period": "2026-01"}, dt.datetime(2026, 4, 1, tzinfo=UTC)) == "2026-01"


def test_a_slot_runs_once_a_failing_job_is_recorded_and_the_others_still_run(wb):
    add_schedule(wb, "issue", "0 6 1 * *", "billing_run", {"dry_run": False}, now=at("2026-03-15T12:00"))
    add_schedule(wb, "mails", "*/15 * * * *", "send_emails", now=at("2026-04-01T05:50"))
    assert run_due(wb, at("2026-04-01T05:59")) == []                 # nothing due yet

    results = run_due(wb, at("2026-04-01T06:00"))
    assert [(r.schedule, r.status) for r in results] == [("issue", "failed"), ("mails", "ok")]
    assert "ApprovalError: no previewed dry run for 2026-03, all brands" in results[0].error
    assert results[1].result == {"sent": 0, "failed": 0, "errors": [], "stopped": None}
    issue = schedule_row(wb, "issue")
    assert (issue.last_status, issue.last_run_at) == ("failed", dt.datetime(2026, 4, 1, 4, 0, tzinfo=UTC))
    assert "no previewed dry run" in issue.last_error
    assert issue.next_run_at == dt.datetime(2026, 5, 1, 4, 0, tzinfo=UTC)
    assert schedule_row(wb, "mails").next_run_at == dt.datetime(2026, 4, 1, 4, 15, tzinfo=UTC)

    assert run_due(wb, at("2026-04-01T06:00")) == []                 # the same slot never twice
    # slots missed while no scheduler ran are run once, not replayed
    late = run_due(wb, at("2026-04-01T09:40"))
    assert [r.schedule for r in late] == ["mails"]
    assert schedule_row(wb, "mails").next_run_at == dt.datetime(2026, 4, 1, 7, 45, tzinfo=UTC)


def test_two_schedulers_racing_for_a_slot_run_it_once(wb):
    add_schedule(wb, "mails", "0 * * * *", "send_emails", now=at("2026-04-01T05:30"))
    slot = schedule_row(wb, "mails").next_run_at
    following = slot + dt.timedelta(hours=1)
    assert _claim(wb, schedule_row(wb, "mails").id, slot, following) is True
    assert _claim(wb, schedule_row(wb, "mails").id, slot, following) is False     # the loser of the race

    add_schedule(wb, "again", "0 * * * *", "send_emails", now=at("2026-04-01T05:30"))
    barrier = threading.Barrier(2)
    ran: list = []

    def scheduler():
        barrier.wait()
        ran.extend(run_due(wb, at("2026-04-01T06:00")))

    threads = [threading.Thread(target=scheduler) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.schedule for r in ran] == ["again"]


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=None)
    common.add_argument("--json", action="store_true")
    top = argparse.ArgumentParser(prog="bluerocktel")
    sub = top.add_subparsers(dest="command", required=True)
    add_top_level_commands(sub, common)
    billing = sub.add_parser("billing").add_subparsers(dest="billing_command", required=True)
    add_commands(billing, common)
    return top


def cli(*argv: str) -> int:
    args = parser().parse_args(list(argv))
    return args.func(args)


def test_schedule_commands(wb, capsys):
    data = ["--data-dir", str(wb.data_dir)]
    assert cli("schedule", "add", "monthly", "--cron", "0 6 1 * *", "--job", "billing_run", "--params",
               '{"dry_run": true, "brand": "BRT"}', "--now", "2026-03-15T12:00", *data) == 0
    assert "next run 2026-04-01 04:00 UTC" in capsys.readouterr().out
    assert cli("schedule", "list", *data, "--json") == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["name"], row["job"], row["params"], row["last_status"]) == (
        "monthly", "billing_run", {"dry_run": True, "brand": "BRT"}, None)
    from bluerocktel.errors import UserFacingError

    with pytest.raises(UserFacingError, match="--params is not JSON"):
        cli("schedule", "add", "x", "--cron", "0 6 1 * *", "--job", "rate", "--params", "{dry_run}", *data)
    assert cli("schedule", "remove", "monthly", *data) == 0
    assert cli("schedule", "list", *data) == 0
    assert capsys.readouterr().out.endswith("no schedule\n")


SCHEDULER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_scheduler import cli
    raise SystemExit(cli(*sys.argv[1:]))
""")


@pytest.mark.slow
def test_a_real_scheduler_process_starts_the_dry_run_of_the_month_before(wb, database_url):
    """``bluerocktel scheduler --once --now`` in its own process (through this module's parser
    until the command is wired in bluerocktel/cli.py): the monthly dry run of March starts on 1 April.
    Once, on SQLite: the claim itself is tested on both backends above."""
    if database_url:
        pytest.skip("the scheduler process (papermill inside) runs on SQLite only, to keep the suite fast")
    with wb.db.transaction() as s:
        s.add(Brand(code="BRT", name="BlueRock", legal_name="BlueRock SAS"))
    add_schedule(wb, "monthly", "0 6 1 * *", "billing_run", {"brand": "BRT"}, now=at("2026-03-15T12:00"))
    from pathlib import Path

    tests = str(Path(__file__).parent)
    command = [sys.executable, "-c", SCHEDULER.format(tests=tests), "scheduler", "--once", "--now",
               "2026-04-01T06:00:30", "--data-dir", str(wb.data_dir)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "2026-04-01 04:00 UTC  monthly (billing_run): ok"
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert (again.returncode, again.stdout) == (0, "nothing due\n")
    with wb.db.session() as s:
        [run] = s.scalars(sa.select(BillingRun)).all()
        assert (run.period, run.brand_code, run.dry_run, run.status, run.started_by) == (
            "2026-03", "BRT", True, "previewed", "scheduler")
    row = schedule_row(wb, "monthly")
    assert (row.last_status, row.next_run_at) == ("ok", dt.datetime(2026, 5, 1, 4, 0, tzinfo=UTC))
