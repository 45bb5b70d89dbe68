"""Asterisk ``Master.csv`` files of any size, for the mediation benchmark.

Uses the demo's vectorized generator month by month (1M CDRs per month at most), so a 2 GB file
is ~10 consecutive months of a 300-line operator; uniqueids stay unique across months.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from bluerocktel.demo.cdrs import CallerLine, write_asterisk_master_csv

PER_MONTH = 1_000_000


def callers(count: int = 300) -> list[CallerLine]:
    return [CallerLine(account_code=f"ACC{k:05d}", number=f"+3317{k:07d}", weight=1 + k % 7)
            for k in range(count)]


def write_asterisk(path: str | Path, n: int, seed: int = 1, malformed: int = 0,
                   first_month: str = "2026-01") -> Path:
    """``n`` CDRs in one Master.csv (18 columns), ``malformed`` broken lines per month written."""
    path = Path(path)
    lines = callers()
    year, month = map(int, first_month.split("-"))
    left = n
    with open(path, "wb") as out:
        while left > 0:
            count = min(PER_MONTH, left)
            period = f"{year:04d}-{month:02d}"
            part = path.with_name(f".{path.name}.{period}.part")
            write_asterisk_master_csv(part, lines, period, count, seed=seed + month, malformed=malformed)
            out.write(part.read_bytes())
            part.unlink()
            left -= count
            month += 1
            if month == 13:
                year, month = year + 1, 1
    return path


def write_asterisk_bytes(path: str | Path, size_bytes: int, seed: int = 1) -> Path:
    """A Master.csv of about ``size_bytes`` (whole months of 1M CDRs, the last one partial)."""
    probe = Path(path).with_name(".probe.csv")
    write_asterisk(probe, 20_000, seed=seed)
    per_line = probe.stat().st_size / 20_000
    probe.unlink()
    return write_asterisk(path, int(size_bytes / per_line), seed=seed)


if __name__ == "__main__":
    import sys

    started = dt.datetime.now()
    print(write_asterisk(sys.argv[1], int(sys.argv[2])), dt.datetime.now() - started)
