"""FreeSWITCH CDR files of any size, for the mediation benchmark and tests.

- :func:`write_freeswitch_csv`: a ``mod_cdr_csv`` Master.csv with the default template (every
  field quoted, nothing escaped), local times in Europe/Paris;
- :func:`write_freeswitch_xml`: ``mod_xml_cdr`` documents concatenated in one file (each with its
  ``<?xml?>`` declaration), URL-encoded variables, epochs, millisecond durations, a callflow.

A 300-extension operator over one month (November 2026 by default: no DST change): about 70 %
outgoing calls from extensions 1000–1299 (French fixed, mobile, special and international
numbers), 25 % incoming calls from French and foreign numbers to extensions, 5 % internal.
About 3 % of calls are not answered (no answer, busy, caller cancel), 0.5 % fail (unallocated
number, rejected). A few caller names hold a comma or a ``"`` (the exact path of the CSV parser).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from urllib.parse import quote

import numpy as np

TEMPLATE = ("caller_id_name", "caller_id_number", "destination_number", "context", "start_stamp",
            "answer_stamp", "end_stamp", "duration", "billsec", "hangup_cause", "uuid", "bleg_uuid",
            "accountcode", "read_codec", "write_codec")
NAMES = ("Jean Dupont", "Marie Martin", "Accueil", "Compta", "Support", "Sophie Bernard", "Luc Petit",
         "Dr Moreau", "Atelier", "Direction")
ODD_NAMES = ("Dupont, Jean", 'Paul "PJ" Jacob', "Martin, Sophie")
CODECS = ("PCMA", "G722", "opus", "PCMU")
FOREIGN = ("0044", "0049", "0032", "0041", "0034", "001", "00212", "00216")


def _calls(n: int, seed: int, month: str) -> dict:
    """Vectorized call attributes: numbers, times (naive local), durations, causes, ids."""
    rng = np.random.default_rng(seed)
    year, mon = map(int, month.split("-"))
    first = np.datetime64(f"{year:04d}-{mon:02d}-01T00:00:00")
    days = (dt.date(year + mon // 12, mon % 12 + 1, 1) - dt.date(year, mon, 1)).days
    # office hours mostly: 08:00-19:00 with a tail
    day = rng.integers(0, days, n)
    second = np.clip(rng.normal(13.5 * 3600, 3.2 * 3600, n), 0, 86399).astype(np.int64)
    start = first + (day * 86400 + second).astype("timedelta64[s]")
    kind = rng.choice(np.array(["out", "in", "internal"]), n, p=[0.70, 0.25, 0.05])
    ext = (1000 + rng.integers(0, 300, n)).astype(str)
    ext2 = (1000 + rng.integers(0, 300, n)).astype(str)
    national = np.char.add(rng.choice(np.array(["01", "02", "03", "04", "05", "09", "06", "07"]), n,
                                      p=[0.16, 0.08, 0.08, 0.1, 0.06, 0.04, 0.38, 0.1]),
                           rng.integers(10_000_000, 99_999_999, n).astype(str))
    foreign = np.char.add(rng.choice(np.array(FOREIGN), n), rng.integers(100_000_000, 999_999_999, n).astype(str))
    special = np.char.add(rng.choice(np.array(["0800", "0805", "0820", "0899"]), n),
                          rng.integers(100_000, 999_999, n).astype(str))
    outside = np.where(rng.random(n) < 0.06, foreign, np.where(rng.random(n) < 0.03, special, national))
    caller = np.where(kind == "out", ext, np.where(kind == "in", np.where(rng.random(n) < 0.5, national,
                                                                          np.char.add("+33", np.char.lstrip(national, "0"))),
                                                  ext))
    callee = np.where(kind == "out", outside, np.where(kind == "in", ext, ext2))
    outcome = rng.choice(np.array(["NORMAL_CLEARING", "NO_ANSWER", "USER_BUSY", "ORIGINATOR_CANCEL",
                                   "UNALLOCATED_NUMBER", "CALL_REJECTED"]), n,
                         p=[0.965, 0.012, 0.01, 0.008, 0.003, 0.002])
    answered = outcome == "NORMAL_CLEARING"
    ring_ms = rng.integers(800, 20_000, n)
    talk_ms = np.where(answered, np.clip(rng.lognormal(4.2, 1.1, n) * 1000, 1000, 3 * 3600 * 1000), 0).astype(np.int64)
    return {
        "kind": kind, "caller": caller, "callee": callee, "start": start, "answered": answered,
        "ring_ms": ring_ms, "talk_ms": talk_ms, "cause": outcome,
        "name": rng.choice(np.array(NAMES), n), "odd": rng.random(n) < 0.005,
        "odd_name": rng.choice(np.array(ODD_NAMES), n),
        "account": np.char.add("ACC", (rng.integers(0, 300, n)).astype(str)),
        "codec": rng.choice(np.array(CODECS), n),
        "uuid_parts": rng.integers(0, 2**62, (n, 2), dtype=np.int64),
    }


def _uuid(a: int, b: int) -> str:
    h = f"{a:016x}{b:016x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def _stamps(times: np.ndarray) -> list[str]:
    return [s.replace("T", " ") for s in np.datetime_as_string(times, unit="s").tolist()]


def write_freeswitch_csv(path: str | Path, n: int, seed: int = 1, month: str = "2026-11") -> Path:
    """``n`` a-leg CDRs in one mod_cdr_csv Master.csv (default template), local wall times."""
    path = Path(path)
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        for lo in range(0, n, 200_000):
            c = _calls(min(200_000, n - lo), seed * 1000 + lo // 200_000, month)
            ring_s, talk_s = c["ring_ms"] // 1000, c["talk_ms"] // 1000
            answer = c["start"] + ring_s.astype("timedelta64[s]")
            end = answer + talk_s.astype("timedelta64[s]")
            starts, answers, ends = _stamps(c["start"]), _stamps(answer), _stamps(end)
            lines = []
            for k in range(len(starts)):
                name = c["odd_name"][k] if c["odd"][k] else c["name"][k]
                answered = c["answered"][k]
                bleg = _uuid(int(c["uuid_parts"][k][1]), int(c["uuid_parts"][k][0])) if answered else ""
                fields = (name, c["caller"][k], c["callee"][k], "default" if c["kind"][k] != "in" else "public",
                          starts[k], answers[k] if answered else "", ends[k], str(ring_s[k] + talk_s[k]),
                          str(talk_s[k]), c["cause"][k], _uuid(int(c["uuid_parts"][k][0]), int(c["uuid_parts"][k][1])),
                          bleg, c["account"][k], c["codec"][k], c["codec"][k])
                lines.append('"' + '","'.join(fields) + '"\n')
            out.write("".join(lines))
    return path


def xml_document(c: dict, k: int) -> str:
    """The mod_xml_cdr document of call ``k`` of ``c`` (see :func:`_calls`)."""
    uuid = _uuid(int(c["uuid_parts"][k][0]), int(c["uuid_parts"][k][1]))
    start_us = int(c["start"][k].astype("datetime64[us]").astype(np.int64)) - 3600 * 1_000_000  # CET = UTC+1
    start_us += int(c["uuid_parts"][k][0] % 1_000_000)
    answered = bool(c["answered"][k])
    ring_us, talk_us = int(c["ring_ms"][k]) * 1000, int(c["talk_ms"][k]) * 1000
    answer_us = start_us + ring_us if answered else 0
    end_us = start_us + ring_us + talk_us
    caller, callee = str(c["caller"][k]), str(c["callee"][k])
    name = str(c["odd_name"][k] if c["odd"][k] else c["name"][k])
    inbound = c["kind"][k] == "in"
    channel = f"sofia/external/{caller}@trunk.example.net" if inbound else f"sofia/internal/{caller}@pbx.example.fr"
    bridge = f"sofia/internal/{callee}@pbx.example.fr" if inbound else f"sofia/gateway/ovh/{callee}"

    def stamp(us: int) -> str:
        local = dt.datetime.fromtimestamp(us / 1e6, dt.timezone(dt.timedelta(hours=1)))
        return local.strftime("%Y-%m-%d %H:%M:%S")

    variables = {
        "direction": "inbound", "uuid": uuid, "session_id": str(k + 1), "sip_from_user": caller,
        "sip_from_host": "pbx.example.fr", "sip_to_user": callee, "sip_req_user": callee,
        "sip_call_id": f"{uuid[:18]}@10.0.0.{k % 250 + 1}", "sip_user_agent": "Yealink SIP-T46U 108.86.0.45",
        "channel_name": channel, "caller_id_name": name, "caller_id_number": caller,
        "effective_caller_id_name": name, "accountcode": str(c["account"][k]),
        "read_codec": str(c["codec"][k]), "write_codec": str(c["codec"][k]), "remote_media_ip": "192.0.2.10",
        "bridge_channel": bridge if answered else "", "current_application": "bridge",
        "current_application_data": f"{{absolute_codec_string=PCMA}}sofia/gateway/ovh/{callee}",
        "hangup_cause": str(c["cause"][k]), "hangup_cause_q850": "16" if answered else "19",
        "sip_term_status": "200" if answered else "487",
        "start_stamp": stamp(start_us), "answer_stamp": stamp(answer_us) if answered else "",
        "end_stamp": stamp(end_us),
        "start_epoch": str(start_us // 1_000_000), "start_uepoch": str(start_us),
        "answer_epoch": str(answer_us // 1_000_000), "answer_uepoch": str(answer_us),
        "end_epoch": str(end_us // 1_000_000), "end_uepoch": str(end_us),
        "duration": str((end_us - start_us) // 1_000_000), "mduration": str((end_us - start_us) // 1000),
        "billsec": str(talk_us // 1_000_000), "billmsec": str(talk_us // 1000),
        "progresssec": "1", "answersec": str(ring_us // 1_000_000) if answered else "0",
        "waitsec": str(ring_us // 1_000_000), "flow_billsec": str((end_us - start_us) // 1_000_000),
    }
    body = "".join(f"<{key}>{quote(value, safe='')}</{key}>" for key, value in variables.items() if value)
    return (
        '<?xml version="1.0"?>\n'
        f'<cdr core-uuid="7c1d3b5e-2f4a-4e8b-9c6d-1a2b3c4d5e6f" switchname="fs1">'
        "<channel_data><state>CS_REPORTING</state><state_number>11</state_number><flags>0=1;1=1;38=1</flags>"
        "<caps>1=1;2=1;3=1;4=1;5=1;6=1</caps></channel_data>"
        f"<variables>{body}</variables>"
        f'<app_log><application app_name="set" app_data="hangup_after_bridge=true"></application>'
        f'<application app_name="bridge" app_data="sofia/gateway/ovh/{callee}"></application></app_log>'
        f'<callflow dialplan="XML" profile_index="1"><extension name="outbound" number="{callee}">'
        f'<application app_name="bridge" app_data="sofia/gateway/ovh/{callee}"></application></extension>'
        f"<caller_profile><username>{caller}</username><dialplan>XML</dialplan>"
        f"<caller_id_name>{name.replace('&', '&amp;').replace('<', '&lt;')}</caller_id_name>"
        f"<ani>{caller}</ani><aniii></aniii><caller_id_number>{caller}</caller_id_number>"
        f"<network_addr>192.0.2.10</network_addr><rdnis></rdnis><destination_number>{callee}</destination_number>"
        f"<uuid>{uuid}</uuid><source>mod_sofia</source><context>default</context><chan_name>{channel}</chan_name>"
        "</caller_profile>"
        f"<times><created_time>{start_us}</created_time><profile_created_time>{start_us}</profile_created_time>"
        f"<progress_time>0</progress_time><progress_media_time>0</progress_media_time>"
        f"<answered_time>{answer_us}</answered_time><hangup_time>{end_us}</hangup_time>"
        "<resurrect_time>0</resurrect_time><transfer_time>0</transfer_time></times></callflow></cdr>\n"
    )


def write_freeswitch_xml(path: str | Path, n: int, seed: int = 1, month: str = "2026-11") -> Path:
    """``n`` mod_xml_cdr documents concatenated in one file."""
    path = Path(path)
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        for lo in range(0, n, 50_000):
            c = _calls(min(50_000, n - lo), seed * 1000 + lo // 50_000, month)
            out.write("".join(xml_document(c, k) for k in range(len(c["kind"]))))
    return path


if __name__ == "__main__":
    import sys

    kind, target, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    started = dt.datetime.now()
    writer = write_freeswitch_xml if kind == "xml" else write_freeswitch_csv
    print(writer(target, count), dt.datetime.now() - started)
