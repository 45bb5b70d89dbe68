"""``bluerocktel scheduler``: run the jobs of the ``schedules`` table on their cron slots.

A schedule is a name, a five-field cron expression read in the operator's time zone (setting
``default_timezone``; croniter), a job (:class:`~bluerocktel.vocabulary.ScheduleJob`) and its
JSON parameters. ``next_run_at`` holds the next slot (UTC). A scheduler pass runs every enabled
schedule whose slot has come:

- it first **claims the slot**: one conditional UPDATE moves ``next_run_at`` from the slot it
  read to the next slot after now. Only one process wins that compare-and-set, so two schedulers
  never run the same slot, and a slot is run at most once (slots missed while nothing ran are
  run once, not replayed one by one);
- then runs the job and records ``last_run_at``, ``last_status`` (``ok`` or ``failed``) and
  ``last_error``. A failing job never stops the scheduler nor the other jobs.

Jobs (:data:`JOBS`): ``billing_run`` (params ``period``: default the month before the slot's
date; ``dry_run``: default true; ``brand``; an issuing run needs its approved dry run, see
:mod:`bluerocktel.billing.approval`), ``rate``, ``collect`` (params ``sources``: default every
source with a URL), ``dunning`` (as of the slot's date unless ``today`` is given), ``sepa_batch``
(:func:`bluerocktel.billing.sepa.create_due_batches`) and ``send_emails``.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Callable
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from bluerocktel.audit import record_audit
from bluerocktel.db.models import CdrSource, Schedule, utcnow
from bluerocktel.errors import NotFoundError, UserFacingError
from bluerocktel.settings import get_setting
from bluerocktel.vocabulary import ScheduleJob
from bluerocktel.workbench import Workbench

UTC = dt.timezone.utc
POLL_S = 30


class ScheduleError(UserFacingError):
    """A schedule refused: bad cron expression, unknown job, bad parameters."""


def operator_zone() -> ZoneInfo:
    return ZoneInfo(get_setting("default_timezone"))


def parse_now(text: str | None) -> dt.datetime:
    """``--now``: ISO 8601; without an offset it is the operator's local time. None: the real now."""
    if not text:
        return utcnow()
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ScheduleError(f"--now {text!r} is not an ISO 8601 date-time (e.g. 2026-04-01T06:00)") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=operator_zone())
    return value.astimezone(UTC)


def next_slot(cron: str, after: dt.datetime) -> dt.datetime:
    """The first slot of ``cron`` (operator's time zone) strictly after ``after``, in UTC."""
    from croniter import croniter

    local = after.astimezone(operator_zone())
    return croniter(cron, local).get_next(dt.datetime).astimezone(UTC)


def check_cron(cron: str) -> str:
    from croniter import croniter

    cron = " ".join((cron or "").split())
    if len(cron.split()) != 5 or not croniter.is_valid(cron):
        raise ScheduleError(f"{cron!r} is not a cron expression of five fields (minute hour day month weekday), "
                            f"e.g. '0 6 1 * *' for 06:00 on the 1st of every month")
    return cron


# --- jobs ---------------------------------------------------------------------------------------

def _billing_period(params: dict, slot: dt.datetime) -> str:
    if params.get("period"):
        return str(params["period"])
    local = slot.astimezone(operator_zone()).date()
    return f"{(local.replace(day=1) - dt.timedelta(days=1)):%Y-%m}"


def _job_billing_run(wb: Workbench, params: dict, slot: dt.datetime) -> dict:
    from bluerocktel.billing.approval import require_approval
    from bluerocktel.billing.cycle import parse_bool
    from bluerocktel.billing.pipeline import run_billing_cycle

    period, brand = _billing_period(params, slot), params.get("brand") or None
    dry_run = parse_bool(params.get("dry_run", True))
    approved = None if dry_run else require_approval(wb, period, brand)
    run = run_billing_cycle(wb, period, dry_run=dry_run, brand_code=brand, actor="scheduler",
                            approved_run_id=approved)
    if run.status == "failed":
        raise UserFacingError(f"billing run {run.id} for {period} failed: {run.error}")
    return {"run_id": run.id, "period": period, "status": run.status}


def _job_rate(wb: Workbench, params: dict, slot: dt.datetime) -> dict:
    from bluerocktel.rating import rate_pending

    return rate_pending(wb, months=params.get("months"), actor="scheduler").as_dict()


def _job_collect(wb: Workbench, params: dict, slot: dt.datetime) -> dict:
    from bluerocktel.collectors import collect

    names = params.get("sources")
    if not names:
        with wb.db.session() as s:
            names = list(s.scalars(sa.select(CdrSource.name).where(CdrSource.url.is_not(None), CdrSource.url != "")
                                   .order_by(CdrSource.name)))
    results = {name: collect(wb, name, actor="scheduler").as_dict() for name in names}
    failed = [name for name, result in results.items() if result.get("status") != "ok"]
    if failed:
        raise UserFacingError(f"collecting {', '.join(failed)} failed: "
                              + "; ".join(str(results[n].get("error")) for n in failed))
    return results


def _job_dunning(wb: Workbench, params: dict, slot: dt.datetime) -> dict:
    from bluerocktel.billing.dunning import run_dunning

    return run_dunning(wb, **{"today": slot.astimezone(operator_zone()).date(), "actor": "scheduler", **params})


def _job_sepa_batch(wb: Workbench, params: dict, slot: dt.datetime) -> dict:
    from bluerocktel.billing.sepa import create_due_batches

    return create_due_batches(wb, **params)


def _job_send_emails(wb: Workbench, params: dict, slot: dt.datetime) -> dict:
    from bluerocktel.mail import send_queued

    return send_queued(wb, **params)


JOBS: dict[str, Callable[[Workbench, dict, dt.datetime], dict]] = {
    ScheduleJob.BILLING_RUN: _job_billing_run,
    ScheduleJob.RATE: _job_rate,
    ScheduleJob.COLLECT: _job_collect,
    ScheduleJob.DUNNING: _job_dunning,
    ScheduleJob.SEPA_BATCH: _job_sepa_batch,
    ScheduleJob.SEND_EMAILS: _job_send_emails,
}


# --- schedules ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobResult:
    schedule: str
    job: str
    slot: dt.datetime
    status: str                 # ok | failed
    error: str | None
    result: dict | None


def add_schedule(wb: Workbench, name: str, cron: str, job: str, params: dict | None = None, *,
                 enabled: bool = True, now: dt.datetime | None = None, actor: str = "cli") -> Schedule:
    """Add schedule ``name``; its first slot is the first one after ``now``."""
    name = (name or "").strip()
    if not name:
        raise ScheduleError("a schedule needs a name")
    if job not in JOBS:
        raise ScheduleError(f"unknown job {job!r}; jobs: {', '.join(sorted(JOBS))}")
    if not isinstance(params or {}, dict):
        raise ScheduleError(f"schedule parameters must be a JSON object, got {params!r}")
    cron = check_cron(cron)
    with wb.db.transaction() as s:
        if s.scalar(sa.select(Schedule.id).where(Schedule.name == name)) is not None:
            raise ScheduleError(f"a schedule named {name!r} exists already")
        schedule = Schedule(name=name, cron=cron, job=job, params=params or {}, enabled=enabled,
                            next_run_at=next_slot(cron, now or utcnow()))
        s.add(schedule)
        s.flush()
        record_audit(s, actor, "schedule.add", "schedule", schedule.id, name=name, cron=cron, job=job,
                     params=params or {})
    return schedule


def list_schedules(wb: Workbench) -> list[Schedule]:
    with wb.db.session() as s:
        return list(s.scalars(sa.select(Schedule).order_by(Schedule.name)))


def remove_schedule(wb: Workbench, name: str, actor: str = "cli") -> None:
    with wb.db.transaction() as s:
        schedule = s.scalar(sa.select(Schedule).where(Schedule.name == name))
        if schedule is None:
            raise NotFoundError(f"no schedule named {name!r}")
        record_audit(s, actor, "schedule.remove", "schedule", schedule.id, name=name)
        s.delete(schedule)


def _claim(wb: Workbench, schedule_id: int, slot: dt.datetime, following: dt.datetime) -> bool:
    """Move the schedule from ``slot`` to ``following``; False when another process did it first."""
    with wb.db.transaction() as s:
        return s.execute(sa.update(Schedule).where(Schedule.id == schedule_id, Schedule.next_run_at == slot)
                         .values(next_run_at=following).execution_options(synchronize_session=False)).rowcount == 1


def run_due(wb: Workbench, now: dt.datetime | None = None) -> list[JobResult]:
    """One scheduler pass at ``now``: run each enabled schedule whose slot has come (claimed first)."""
    now = now or utcnow()
    with wb.db.session() as s:
        due = s.execute(sa.select(Schedule.id, Schedule.name, Schedule.cron, Schedule.job, Schedule.params,
                                  Schedule.next_run_at)
                        .where(Schedule.enabled.is_(True), Schedule.next_run_at <= now)
                        .order_by(Schedule.next_run_at, Schedule.id)).all()
    results = []
    for schedule_id, name, cron, job, params, slot in due:
        if not _claim(wb, schedule_id, slot, next_slot(cron, now)):
            continue
        try:
            outcome = JOBS[job](wb, dict(params or {}), slot)
            result = JobResult(name, job, slot, "ok", None, outcome)
        except Exception as exc:  # noqa: BLE001 - a failing job is recorded; the scheduler goes on
            result = JobResult(name, job, slot, "failed", f"{type(exc).__name__}: {exc}"[:10_000], None)
        with wb.db.transaction() as s:
            s.execute(sa.update(Schedule).where(Schedule.id == schedule_id).values(
                last_run_at=now, last_status=result.status, last_error=result.error))
        results.append(result)
    return results


def run_scheduler(wb: Workbench, *, once: bool = False, now: dt.datetime | None = None,
                  on_result: Callable[[JobResult], None] | None = None) -> list[JobResult]:
    """Run due schedules once (``once``, at ``now``) or forever, waking at the next slot (at most every 30 s)."""
    while True:
        results = run_due(wb, now)
        for result in results:
            if on_result:
                on_result(result)
        if once:
            return results
        with wb.db.session() as s:
            upcoming = s.scalar(sa.select(sa.func.min(Schedule.next_run_at)).where(Schedule.enabled.is_(True)))
        wait = POLL_S if upcoming is None else (upcoming - utcnow()).total_seconds()
        time.sleep(min(max(wait, 0.5), POLL_S))
