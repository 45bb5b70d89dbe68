"""Generate realistic Asterisk ``Master.csv`` files (used by tests and by the import benchmark).

    .venv/bin/python tests/mediation/asterisk_gen.py OUT.csv 1000000 [--variant 16|18|21]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
from pathlib import Path

DISPOSITIONS = ["ANSWERED"] * 14 + ["NO ANSWER"] * 3 + ["BUSY", "FAILED", "CONGESTION"]


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def generate_lines(count: int, variant: int = 18, seed: int = 7,
                   start: dt.datetime = dt.datetime(2026, 10, 1)) -> list[str]:
    """``count`` Master.csv lines (no newline) of ``variant`` columns, local times from ``start``."""
    rng = random.Random(seed)
    lines = []
    base = start
    for i in range(count):
        ext = str(rng.randint(200, 299))
        national = f"0{rng.choice('1234567')}{rng.randint(0, 99_999_999):08d}"
        kind = rng.random()
        if kind < 0.75:     # outbound
            src, dst, ctx = ext, national, "from-internal"
            channel, dstchannel = f"PJSIP/{ext}-{i:08x}", f"PJSIP/trunk-ovh-{i:08x}"
            lastapp, lastdata = "Dial", f"PJSIP/{dst}@trunk-ovh,60,tTr"
        elif kind < 0.95:   # inbound
            src, dst, ctx = "+33" + national[1:], ext, "from-trunk"
            channel, dstchannel = f"PJSIP/trunk-ovh-{i:08x}", f"PJSIP/{ext}-{i:08x}"
            lastapp, lastdata = "Dial", f"PJSIP/{ext},30,r"
        else:               # internal
            src, dst, ctx = ext, str(rng.randint(200, 299)), "from-internal"
            channel, dstchannel = f"PJSIP/{src}-{i:08x}", f"PJSIP/{dst}-{i:08x}"
            lastapp, lastdata = "Dial", f"PJSIP/{dst}|20|tT"
        base += dt.timedelta(seconds=rng.randint(0, 3))
        disposition = rng.choice(DISPOSITIONS)
        ring = rng.randint(0, 20)
        billsec = rng.randint(1, 900) if disposition == "ANSWERED" else 0
        answer = base + dt.timedelta(seconds=ring) if disposition == "ANSWERED" else None
        end = base + dt.timedelta(seconds=ring + billsec)
        duration = ring + billsec
        fmt = "%Y-%m-%d %H:%M:%S"
        clid = f'"Poste {src}" <{src}>'
        fields = [
            _quote(f"acct{int(ext) % 10}"), _quote(src), _quote(dst), _quote(ctx), _quote(clid),
            _quote(channel), _quote(dstchannel), _quote(lastapp), _quote(lastdata),
            _quote(base.strftime(fmt)), _quote(answer.strftime(fmt) if answer else ""),
            _quote(end.strftime(fmt)), str(duration), str(billsec), _quote(disposition),
            _quote("DOCUMENTATION"),
        ]
        uniqueid = f"{1790000000 + i}.{i}"
        if variant >= 18:
            fields += [_quote(uniqueid), _quote("")]
        if variant == 21:
            fields += [_quote(""), _quote(uniqueid), str(i)]
        lines.append(",".join(fields))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("count", type=int)
    parser.add_argument("--variant", type=int, default=18, choices=[16, 18, 21])
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    Path(args.out).write_text("\n".join(generate_lines(args.count, args.variant, args.seed)) + "\n")


if __name__ == "__main__":
    main()
