"""3GPP TS 32.298 MSC call record files (ASN.1 BER) of any size, for the mediation benchmark.

:func:`write_3gpp_ber` encodes ``n`` MO and MT call records with asn1tools and the project's
module (``bluerocktel/mediation/asn1/ts32298.asn``), behind a TS 32.297 CDR file header
(``header=True``: each record behind its CDR header, release 15, BER, TS 32.250) or
concatenated. The calls: 60 % MO, 40 % MT; 70 % answered (ring 2–20 s, talk 1 s–30 min),
the others busy (cause 17) or not answered (cause 19, or no diagnostics); French mobile
subscribers (international type of number), called numbers national or international; four
MSCs as recording entities; trunk groups by number or name; local time Europe/Paris with its
real UTC offset in every time stamp (CEST +0200 / CET +0100); one call in fifty is a partial
record pair (sequence numbers 1 and 2). Deterministic for a given ``seed``.

    .venv/bin/python benchmarks/cdrgen/ber.py /tmp/msc.ber 500000
"""

from __future__ import annotations

import datetime as dt
import random
import struct
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")
MSCS = ("33609000001", "33609000002", "33609000003", "33609000004")
CDR_HEADER_R15 = bytes([(7 << 5) | 0, (1 << 5) | 6, 5])   # release 7 (=10+ext), version 0; BER, TS 32.250; ext 5


def tbcd(digits: str) -> bytes:
    """TBCD digits (first digit in the low nibble, filler F)."""
    if len(digits) % 2:
        digits += "F"
    return bytes(int(digits[i + 1] + digits[i], 16) for i in range(0, len(digits), 2))


def address(digits: str, ton: int = 1, npi: int = 1) -> bytes:
    """AddressString / BCD number: extension bit, type of number, numbering plan, TBCD digits."""
    return bytes([0x80 | (ton << 4) | npi]) + tbcd(digits)


def timestamp(local: dt.datetime) -> bytes:
    """32.298 TimeStamp: YYMMDDhhmmss BCD, sign in ASCII, offset hhmm BCD."""
    offset = int(local.utcoffset().total_seconds()) // 60
    sign = b"+" if offset >= 0 else b"-"
    offset = abs(offset)
    return (bytes.fromhex(local.strftime("%y%m%d%H%M%S")) + sign
            + bytes.fromhex(f"{offset // 60:02d}{offset % 60:02d}"))


def file_header(records: int, body_length: int, sequence: int = 1) -> bytes:
    """A TS 32.297 CDR file header (54 octets: no routeing filter, no private extension)."""
    header_length = 54
    opening = struct.pack(">I", (10 << 28) | (1 << 23) | (10 << 18) | (0 << 12) | (0 << 11) | (2 << 6) | 0)
    return (struct.pack(">II", header_length + body_length, header_length)
            + bytes([(7 << 5) | 0, (7 << 5) | 0]) + opening + opening
            + struct.pack(">II", records, sequence) + bytes([0]) + bytes(20) + bytes([0])
            + struct.pack(">H", 0) + struct.pack(">H", 0) + bytes([5, 5]))


def generate_records(n: int, seed: int = 1, month: str = "2026-10") -> list[bytes]:
    """``n`` encoded CallEventRecord values (module doc)."""
    from bluerocktel.mediation.formats.ber import ts32298_spec

    spec = ts32298_spec()
    rng = random.Random(seed)
    year, mon = map(int, month.split("-"))
    first = dt.datetime(year, mon, 1)
    span_s = 28 * 86_400
    out: list[bytes] = []
    call = 0
    while len(out) < n:
        call += 1
        mo = rng.random() < 0.6
        subscriber = f"336{rng.randrange(10_000_000, 99_999_999)}"
        roll = rng.random()
        other_national = roll < 0.8
        other = (f"{rng.choice('1234567')}{rng.randrange(10_000_000, 99_999_999)}" if other_national
                 else f"44{rng.randrange(7_000_000_000, 7_999_999_999)}")
        other_ton = 2 if other_national else 1
        seizure = (first + dt.timedelta(seconds=rng.randrange(span_s))).replace(tzinfo=PARIS)
        answered = rng.random() < 0.7
        ring = rng.randrange(2, 21)
        talk = rng.choice((rng.randrange(1, 60), rng.randrange(60, 600), rng.randrange(600, 1800)))
        answer = seizure + dt.timedelta(seconds=ring) if answered else None
        release = answer + dt.timedelta(seconds=talk) if answered else seizure + dt.timedelta(seconds=ring)
        value = {
            "recordType": 0 if mo else 1,
            "servedIMSI": tbcd(f"20801{rng.randrange(10**9, 10**10)}"),
            "recordingEntity": address(MSCS[call % len(MSCS)]),
            "seizureTime": timestamp(seizure),
            "releaseTime": timestamp(release),
            "callDuration": talk if answered else 0,
            "causeForTerm": 0 if answered else 3,
            "callReference": call.to_bytes(5, "big"),
        }
        if mo:
            value["servedMSISDN"] = address(subscriber)
            value["calledNumber"] = address(other, ton=other_ton)
        else:
            value["servedMSISDN"] = address(subscriber)
            value["callingNumber"] = address(other, ton=other_ton)
        if answer is not None:
            value["answerTime"] = timestamp(answer)
        else:
            cause = rng.choice((17, 19, None))
            if cause is not None:
                value["diagnostics"] = ("gsm0408Cause", cause)
        trunk = ("tkgpNumber", rng.randrange(1, 64)) if rng.random() < 0.5 else ("tkgpName", f"TG-{rng.randrange(1, 9)}")
        value["mscOutgoingTKGP" if mo else "mscIncomingTKGP"] = trunk
        kind = "moCallRecord" if mo else "mtCallRecord"
        if answered and call % 50 == 0 and len(out) + 2 <= n:
            # a partial record pair: the same call closed in two records
            cut = max(1, talk // 2)
            part1 = dict(value, releaseTime=timestamp(answer + dt.timedelta(seconds=cut)), callDuration=cut,
                         causeForTerm=1, sequenceNumber=1)
            part2 = dict(value, seizureTime=timestamp(answer + dt.timedelta(seconds=cut)),
                         answerTime=timestamp(answer + dt.timedelta(seconds=cut)), callDuration=talk - cut,
                         sequenceNumber=2)
            out.append(bytes(spec.encode("CallEventRecord", (kind, part1))))
            out.append(bytes(spec.encode("CallEventRecord", (kind, part2))))
            continue
        out.append(bytes(spec.encode("CallEventRecord", (kind, value))))
    return out


def write_3gpp_ber(path: str | Path, n: int, seed: int = 1, header: bool = True) -> Path:
    """Write ``n`` records to ``path`` (TS 32.297 file when ``header``, else concatenated BER)."""
    path = Path(path)
    records = generate_records(n, seed=seed)
    if header:
        body = b"".join(struct.pack(">H", len(r)) + CDR_HEADER_R15 + r for r in records)
        data = file_header(len(records), len(body)) + body
    else:
        data = b"".join(records)
    path.write_bytes(data)
    return path


if __name__ == "__main__":
    target = write_3gpp_ber(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100_000)
    print(f"{target}: {target.stat().st_size:,} bytes")
