"""3CX CDR output files of any size, for the mediation benchmark and tests.

:func:`write_3cx` writes a header line with the 27 fields of the 3CX v18 CDR output in their
default order, then one ``Call …`` line per call leg, times ``YYYY/MM/DD HH:MM:SS`` in UTC,
durations ``HH:MM:SS``. Same operator as :mod:`cdrgen.freeswitch` (300 extensions 100–399 here,
one month): about 70 % outgoing (Extension → Line), 25 % incoming (Line → Extension, or through a
queue), 5 % internal; about 3 % unanswered (TerminatedBySrc, TargetBusy, Failed_Cancelled,
NoAnswerTimeout), 0.5 % failed (TargetNotFound, RouteNotFound).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

FIELDS = ("historyid", "callid", "duration", "time-start", "time-answered", "time-end", "reason-terminated",
          "from-no", "to-no", "from-dn", "to-dn", "dial-no", "reason-changed", "final-number", "final-dn",
          "bill-code", "bill-rate", "bill-cost", "bill-name", "chain", "from-type", "to-type", "final-type",
          "from-dispname", "to-dispname", "final-dispname", "missed-queue-calls")
NAMES = ("Jean Dupont", "Marie Martin", "Accueil", "Compta", "Support", "Sophie Bernard", "Luc Petit",
         "Dr Moreau", "Atelier", "Direction")


def _times(values: np.ndarray) -> list[str]:
    return [s.replace("-", "/").replace("T", " ") for s in np.datetime_as_string(values, unit="s").tolist()]


def _clock(seconds: np.ndarray) -> list[str]:
    return [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in seconds.tolist()]


def _lines(n: int, seed: int, month: str, first_history: int) -> list[str]:
    rng = np.random.default_rng(seed)
    year, mon = map(int, month.split("-"))
    days = (dt.date(year + mon // 12, mon % 12 + 1, 1) - dt.date(year, mon, 1)).days
    day = rng.integers(0, days, n)
    second = np.clip(rng.normal(12.5 * 3600, 3.2 * 3600, n), 0, 86399).astype(np.int64)   # UTC
    start = np.datetime64(f"{year:04d}-{mon:02d}-01T00:00:00") + (day * 86400 + second).astype("timedelta64[s]")
    kind = rng.choice(np.array(["out", "in", "internal"]), n, p=[0.70, 0.25, 0.05])
    ext = (100 + rng.integers(0, 300, n)).astype(str)
    ext2 = (100 + rng.integers(0, 300, n)).astype(str)
    national = np.char.add(rng.choice(np.array(["01", "02", "03", "04", "05", "09", "06", "07"]), n),
                           rng.integers(10_000_000, 99_999_999, n).astype(str))
    foreign = np.char.add(rng.choice(np.array(["+44", "+49", "+32", "+41", "+1"]), n),
                          rng.integers(100_000_000, 999_999_999, n).astype(str))
    outside = np.where(rng.random(n) < 0.07, foreign, national)
    reason_ok = rng.choice(np.array(["TerminatedBySrc", "TerminatedByDst"]), n)
    outcome = rng.choice(np.array(["ok", "TerminatedBySrc", "TargetBusy", "Failed_Cancelled", "NoAnswerTimeout",
                                   "TargetNotFound", "RouteNotFound"]), n,
                         p=[0.965, 0.01, 0.008, 0.007, 0.005, 0.003, 0.002])
    answered = outcome == "ok"
    ring = rng.integers(1, 20, n)
    talk = np.where(answered, np.clip(rng.lognormal(4.2, 1.1, n), 1, 3 * 3600), 0).astype(np.int64)
    answer = start + ring.astype("timedelta64[s]")
    end = answer + talk.astype("timedelta64[s]")
    starts, answers, ends, durations = _times(start), _times(answer), _times(end), _clock(talk)
    names = rng.choice(np.array(NAMES), n)
    codes = np.where(rng.random(n) < 0.05, np.char.add("**", rng.integers(10, 99, n).astype(str)), "")
    queue = rng.random(n) < 0.3
    lines = []
    for k in range(n):
        history = first_history + k
        callid = f"00000C21DE5C{history >> 12:04X}_{history}"
        if kind[k] == "out":
            from_no, to_no, from_dn, to_dn = f"Ext.{ext[k]}", outside[k], ext[k], "10000"
            dial, types, disp = outside[k], ("Extension", "Line", "Line"), (names[k], "", "")
            chain = f"Chain: Ext.{ext[k]};{outside[k]};"
        elif kind[k] == "in":
            via = "Queue" if queue[k] else "Extension"
            from_no, to_no, from_dn, to_dn = outside[k], f"Ext.{ext[k]}", "10000", ext[k]
            dial, types, disp = ext[k], ("Line", via, "Extension"), ("", names[k], names[k])
            chain = f"Chain: {outside[k]};Ext.{ext[k]};"
        else:
            from_no, to_no, from_dn, to_dn = f"Ext.{ext[k]}", f"Ext.{ext2[k]}", ext[k], ext2[k]
            dial, types, disp = ext2[k], ("Extension", "Extension", "Extension"), (names[k], names[k], "")
            chain = f"Chain: Ext.{ext[k]};Ext.{ext2[k]};"
        ok = answered[k]
        reason = reason_ok[k] if ok else outcome[k]
        fields = (f"Call {history}", callid, durations[k], starts[k], answers[k] if ok else "", ends[k], reason,
                  from_no, to_no, from_dn, to_dn, dial, "", to_no if ok else "", to_dn if ok else "", codes[k],
                  "", "", "", chain, types[0], types[1], types[2] if ok else "", disp[0], disp[1],
                  disp[2] if ok else "", "")
        lines.append(",".join(fields) + "\n")
    return lines


def write_3cx(path: str | Path, n: int, seed: int = 1, month: str = "2026-11") -> Path:
    """``n`` 3CX CDR lines after a header line (see the module doc)."""
    path = Path(path)
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        out.write(",".join(FIELDS) + "\n")
        for lo in range(0, n, 200_000):
            out.write("".join(_lines(min(200_000, n - lo), seed * 1000 + lo // 200_000, month, 3_000_000 + lo)))
    return path


if __name__ == "__main__":
    import sys

    started = dt.datetime.now()
    print(write_3cx(sys.argv[1], int(sys.argv[2])), dt.datetime.now() - started)
