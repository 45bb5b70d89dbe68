"""A month of Asterisk ``Master.csv`` CDRs for the demo operator, generated with numpy.

The file is the 18-column ``cdr_csv`` variant (``loguniqueid`` and ``loguserfield`` on)::

    accountcode, src, dst, dcontext, clid, channel, dstchannel, lastapp, lastdata,
    start, answer, end, duration, billsec, disposition, amaflags, uniqueid, userfield

Times are local (Europe/Paris) ``YYYY-MM-DD HH:MM:SS``; ``answer`` is empty when the call was
not answered. All calls are outbound: ``src`` is the service's number in national format
(``01…``) or, on business PBXs, an extension (``2xx``); ``dst`` is national (``0X…``) or
international (``00…``); ``accountcode`` is the service's account code (``C000123``).

Shares (drawn, so close to, not exactly): answered 70 %, NO ANSWER 21 %, BUSY 7 %, FAILED 2 %;
national fixed 44 %, national mobile 40 %, special (08) 3 %, international 13 %. Weekdays carry
the traffic, business hours peak at 10:00 and 15:00, nothing between 00:00 and 06:00 (so the
daylight-saving switch never makes a local time ambiguous), Saturdays and Sundays are light.

Besides the ``cdrs`` good lines the file holds :data:`MALFORMED_LINES` deliberately malformed
ones, inserted at seeded places: the first half (rounded down) have 13 columns instead of 18,
the others have an impossible start date (day 32, minute 61). A correct import quarantines
exactly those and imports all ``cdrs`` others.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from zoneinfo import ZoneInfo

import numpy as np

MALFORMED_LINES = 6
COLUMNS = ("accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp", "lastdata",
           "start", "answer", "end", "duration", "billsec", "disposition", "amaflags", "uniqueid", "userfield")
PARIS = ZoneInfo("Europe/Paris")

# dial prefix as the caller dials it, random digits after it, weight (‰ of calls), category
DIAL_PLANS = [
    ("01", 8, 120, "fixed"), ("02", 8, 70, "fixed"), ("03", 8, 60, "fixed"), ("04", 8, 90, "fixed"),
    ("05", 8, 60, "fixed"), ("09", 8, 40, "fixed"),
    ("06", 8, 250, "mobile"), ("07", 8, 150, "mobile"),
    ("081", 7, 12, "special"), ("082", 7, 8, "special"), ("089", 7, 10, "special"),
    ("00322", 7, 11, "international"), ("003247", 7, 8, "international"),
    ("004930", 8, 9, "international"), ("0049151", 8, 6, "international"),
    ("003491", 7, 10, "international"), ("00346", 8, 8, "international"),
    ("003906", 8, 7, "international"), ("00393", 9, 6, "international"),
    ("0035121", 7, 4, "international"), ("0035191", 7, 3, "international"),
    ("0035224", 6, 4, "international"),
    ("004122", 7, 5, "international"), ("004179", 7, 4, "international"),
    ("004420", 8, 9, "international"), ("00447", 9, 7, "international"),
    ("001212", 7, 5, "international"), ("001514", 7, 4, "international"),
    ("0021252", 7, 4, "international"), ("002126", 8, 6, "international"),
    ("0021321", 6, 2, "international"), ("002135", 8, 3, "international"),
    ("0021671", 6, 2, "international"), ("002162", 7, 3, "international"),
]
DISPOSITIONS = [("ANSWERED", 70), ("NO ANSWER", 21), ("BUSY", 7), ("FAILED", 2)]
HOUR_WEIGHTS = [0, 0, 0, 0, 0, 0, 3, 15, 50, 90, 100, 95, 50, 45, 85, 95, 90, 70, 35, 15, 8, 5, 3, 1]
WEEKDAY_WEIGHTS = [100, 100, 100, 100, 95, 15, 6]   # Monday … Sunday


@dataclass(frozen=True)
class CallerLine:
    """A service that places calls: its account code, E.164 number and active days."""

    account_code: str
    number: str                       # E.164, +33…
    weight: int = 1                   # relative traffic
    trunk: str = ""                   # channel name of a SIP trunk, else the account code
    extensions: bool = True           # a PBX: some calls show an extension as caller
    active_from: dt.date | None = None
    active_until: dt.date | None = None   # exclusive (the service's terminated_on)


@dataclass(frozen=True)
class CsvSummary:
    path: str
    lines: int
    cdrs: int
    malformed: int
    answered: int


def _national(e164: str) -> str:
    return "0" + e164[3:] if e164.startswith("+33") else e164.lstrip("+")


def _q(values) -> list[str]:
    return ['"' + v.replace('"', '""') + '"' for v in values]


def _fmt_times(base: np.datetime64, seconds: np.ndarray) -> np.ndarray:
    return np.char.replace(np.datetime_as_string(base + seconds.astype("timedelta64[s]"), unit="s"), "T", " ")


def write_asterisk_master_csv(path: str | os.PathLike, callers: Sequence[CallerLine], period: str, cdrs: int,
                              seed: int = 7, malformed: int = MALFORMED_LINES) -> CsvSummary:
    """Write ``cdrs`` CDRs of ``callers`` during ``period`` (YYYY-MM) plus ``malformed`` broken lines.

    Deterministic: the same callers, period, counts and seed give the same bytes.
    """
    if not callers:
        raise ValueError("no callers: build the demo accounts first")
    rng = np.random.default_rng(seed)
    start = dt.datetime.strptime(period, "%Y-%m").date()
    end = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    days = (end - start).days
    n = int(cdrs)

    # when: a day (weekday-weighted), an hour (business-hours-weighted), a second
    day_w = np.array([WEEKDAY_WEIGHTS[(start + dt.timedelta(d)).weekday()] for d in range(days)], dtype=float)
    day = rng.choice(days, size=n, p=day_w / day_w.sum())
    hour_w = np.array(HOUR_WEIGHTS, dtype=float)
    hour = rng.choice(24, size=n, p=hour_w / hour_w.sum())
    second = rng.integers(0, 3600, size=n)

    # who: a caller by weight
    weights = np.array([c.weight for c in callers], dtype=float)
    who = rng.choice(len(callers), size=n, p=weights / weights.sum())
    lo = np.array([max(0, (c.active_from - start).days) if c.active_from else 0 for c in callers])
    hi = np.array([min(days, (c.active_until - start).days) if c.active_until else days for c in callers])
    if np.any(hi <= lo):
        bad = [c.account_code for c, a, b in zip(callers, lo, hi) if b <= a]
        raise ValueError(f"callers not active during {period}: {', '.join(bad[:5])}")
    # calls outside their caller's window get a day drawn from the same weights within the window
    clo, chi = lo[who], hi[who]
    cdf = np.concatenate([[0.0], np.cumsum(day_w / day_w.sum())])
    u = rng.random(size=n)
    redrawn = np.searchsorted(cdf, cdf[clo] + u * (cdf[chi] - cdf[clo]), side="right") - 1
    day = np.where((day >= clo) & (day < chi), day, np.clip(redrawn, clo, chi - 1))
    start_s = day * 86400 + hour * 3600 + second
    order = np.argsort(start_s, kind="stable")
    start_s, who = start_s[order], who[order]

    # what: destination, outcome, durations
    plan_w = np.array([p[2] for p in DIAL_PLANS], dtype=float)
    plan = rng.choice(len(DIAL_PLANS), size=n, p=plan_w / plan_w.sum())
    raw_digits = rng.integers(0, 10**9, size=n)
    disp_w = np.array([d[1] for d in DISPOSITIONS], dtype=float)
    disp = rng.choice(len(DISPOSITIONS), size=n, p=disp_w / disp_w.sum())
    answered = disp == 0
    ring = np.select([answered, disp == 1, disp == 2], [rng.integers(2, 25, size=n), rng.integers(15, 46, size=n),
                                                        rng.integers(0, 5, size=n)], rng.integers(0, 2, size=n))
    talk = np.clip(np.rint(rng.lognormal(np.log(75.0), 1.1, size=n)), 1, 7200).astype(np.int64)
    billsec = np.where(answered, talk, 0)
    duration = ring + billsec
    use_ext = rng.random(size=n) < 0.25
    ext = rng.integers(201, 260, size=n)

    base = np.datetime64(start.isoformat(), "s")
    start_txt = _fmt_times(base, start_s)
    answer_txt = _fmt_times(base, start_s + ring)
    end_txt = _fmt_times(base, start_s + duration)
    # uniqueid: UTC epoch seconds (the local day's offset; no call in the 00:00-06:00 DST window)
    offsets = np.array([int(dt.datetime.combine(start + dt.timedelta(d), dt.time(12), tzinfo=PARIS)
                            .utcoffset().total_seconds()) for d in range(days)])
    epoch0 = int(dt.datetime.combine(start, dt.time(0), tzinfo=dt.timezone.utc).timestamp())
    epoch = epoch0 + start_s - offsets[start_s // 86400]

    caller_codes = _q(c.account_code for c in callers)
    caller_numbers = [_national(c.number) for c in callers]
    caller_trunks = [c.trunk or c.account_code.lower() for c in callers]
    caller_ext = [c.extensions for c in callers]
    disp_txt = _q(d[0] for d in DISPOSITIONS)
    rows = []
    for i in range(n):
        c = int(who[i])
        p = DIAL_PLANS[plan[i]]
        dst = p[0] + f"{int(raw_digits[i]) % 10**p[1]:0{p[1]}d}"
        src = str(ext[i]) if (use_ext[i] and caller_ext[c]) else caller_numbers[c]
        label = f"Poste {src}" if len(src) == 3 else src
        d = int(disp[i])
        seq = f"{i:08x}"
        rows.append((
            caller_codes[c], f'"{src}"', f'"{dst}"', '"from-internal"', f'"""{label}"" <{src}>"',
            f'"PJSIP/{caller_trunks[c]}-{seq}"', '""' if d == 3 else f'"PJSIP/operator-out-{seq}"', '"Dial"',
            f'"PJSIP/{dst}@operator-out,60,tT"', f'"{start_txt[i]}"', f'"{answer_txt[i]}"' if d == 0 else '""',
            f'"{end_txt[i]}"', str(int(duration[i])), str(int(billsec[i])), disp_txt[d], '"DOCUMENTATION"',
            f'"{int(epoch[i])}.{i}"', '""'))

    # malformed lines, after seeded positions: 13 columns, then an impossible start date
    count = min(malformed, n)
    spots = sorted(int(x) for x in rng.choice(n, size=count, replace=False)) if count else []
    broken: dict[int, str] = {}
    for k, spot in enumerate(spots):
        fields = list(rows[spot])
        if k < count // 2:
            broken[spot] = ",".join(fields[:13])
        else:
            fields[9] = f'"{period}-32 09:61:00"'
            fields[16] = f'"{epoch0}.{n + k}"'
            broken[spot] = ",".join(fields)
    out: list[str] = []
    for i, row in enumerate(rows):
        out.append(",".join(row))
        if i in broken:
            out.append(broken[i])

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(("\n".join(out) + "\n").encode("utf-8"))
    os.replace(tmp, path)
    return CsvSummary(str(path), len(out), n, count, int(answered.sum()))
