"""FreeSWITCH CDRs: ``mod_cdr_csv`` files (``freeswitch-csv``) and ``mod_xml_cdr`` documents
(``freeswitch-xml``), to normalized CDRs.

Both modules write the values of channel variables; both formats go through one vectorized
step (:func:`normalize_variables`) that turns FreeSWITCH variables into a raw batch for
:func:`~bluerocktel.mediation.normalize.normalize_batch`.

``freeswitch-csv`` (``mod_cdr_csv``)
    One line per call leg, written with a *template*. The default template of
    ``conf/autoload_configs/cdr_csv.conf.xml`` is :data:`DEFAULT_COLUMNS`::

        "${caller_id_name}","${caller_id_number}","${destination_number}","${context}",
        "${start_stamp}","${answer_stamp}","${end_stamp}","${duration}","${billsec}",
        "${hangup_cause}","${uuid}","${bleg_uuid}","${accountcode}","${read_codec}","${write_codec}"

    Every field is quoted and *nothing is escaped*: a ``"`` inside a value is written as is
    (``"Jean "JJ" Dupont"``), which breaks a CSV reader. The line is therefore read with quoting
    off: fields are cut at commas (fast, ``pyarrow.csv`` on worker threads) and each one loses
    its enclosing quotes; a line with a comma inside a value has too many fields and is re-read
    exactly by cutting it at the ``","`` separators. A value holding ``","`` itself cannot be
    told apart from two fields: such a line has the wrong field count and is quarantined.
    The source option ``columns`` replaces the default template: a list of variable names
    (``["caller_id_number", "destination_number", "start_epoch", ...]``, ``${...}`` allowed) or
    the template text itself. It must give a start time (``start_stamp``, ``start_epoch`` or
    ``start_uepoch``), an end time or a duration, a caller (``caller_id_number``,
    ``sip_from_user`` or ``ani``) and a callee (``destination_number``, ``sip_to_user`` or
    ``sip_req_user``); otherwise the file is refused (:class:`~bluerocktel.errors.FormatError`).
    Only templates of quoted, comma-separated fields are supported (all the stock ones).
    A blank line is skipped and not counted.

``freeswitch-xml`` (``mod_xml_cdr``)
    One XML document per call leg (``a_<uuid>.cdr.xml``)::

        <cdr core-uuid="…"><channel_data>…</channel_data>
          <variables><uuid>…</uuid><start_epoch>1791187200</start_epoch>
            <start_stamp>2026-10-05%2010%3A00%3A00</start_stamp>…</variables>
          <app_log>…</app_log>
          <callflow><caller_profile><caller_id_number>1000</caller_id_number>
            <destination_number>0612345678</destination_number>…</caller_profile>
            <times><created_time>1791187200123456</created_time>…</times></callflow>
        </cdr>

    The values under ``<variables>`` are URL-encoded (``%20``, ``%3A``; a ``+`` stays a ``+``)
    and are decoded; ``<callflow>`` values are plain XML text. A file may hold one ``<cdr>``
    document, several concatenated (each with or without its ``<?xml?>`` declaration), or
    ``<cdr>`` elements under any root element (a batch). Record number = the position of the
    ``<cdr>`` in the file (1-based): the ``source_line`` of its CDR and the ``line`` of its issue;
    the ``raw`` of an issue is the ``<cdr>`` as a standalone document (``raw_kind`` document).
    A document that is not well-formed XML is one issue naming the XML error and its line in
    the file (a broken batch document: one issue for the file); other documents of a
    concatenation are kept. Security: any ``DOCTYPE`` is refused (an issue, the document is not
    parsed) and lxml runs with ``resolve_entities=False``, ``no_network=True``,
    ``load_dtd=False``: no external entity, no entity expansion. The file is read whole (up to
    ``BLUEROCKTEL_MAX_CDR_FILE_MB``); parsing is one lxml call and one Python pass per document
    (forced by the format; the checks and conversions after it are vectorized).

    Which value is used, first found wins: caller ``caller_id_number`` (variable), the first
    ``<callflow>``'s ``caller_profile/caller_id_number`` (FreeSWITCH lists the latest caller
    profile first; ``${caller_id_number}`` in a CSV template is the same value),
    ``sip_from_user``, ``ani``; callee ``destination_number``, then the callflow's, then
    ``sip_to_user``, ``sip_req_user``; ``uuid`` (else the callflow's); channel ``channel_name``
    (else the callflow's ``chan_name``); dst_channel ``bridge_channel``; account code
    ``accountcode``. Times: ``start_epoch`` / ``answer_epoch`` / ``end_epoch`` (exact UTC
    seconds), else ``*_uepoch`` (µs), else the callflows' ``<times>`` (µs: earliest
    ``created_time``, earliest non-zero ``answered_time``, latest ``hangup_time``), else the
    ``*_stamp`` local times in the source's time zone; a document with no start time, or no end
    time nor duration, is an issue.

Times (both formats)
    ``*_stamp`` values are the switch's local wall time ``YYYY-MM-DD HH:MM:SS`` in the source's
    time zone (DST rules of :mod:`bluerocktel.mediation.records`); an empty ``answer_stamp``
    means unanswered. Epoch values (``*_epoch`` seconds, ``*_uepoch`` µs) are exact UTC and win
    over stamps when the template or the document has them; ``answer_epoch`` 0 means
    unanswered; a start or end epoch that is 0 or not a number is an issue.

Durations: ``duration`` and ``billsec`` are FreeSWITCH's whole seconds, truncated. When both
``mduration`` and ``billmsec`` (milliseconds, written by FreeSWITCH beside them, always in
``mod_xml_cdr``) are given, both are used rounded *up* to the second: ``duration_s =
ceil(mduration / 1000)``, ``billsec_s = ceil(billmsec / 1000)`` (a 12.001 s call bills 13 s;
since billmsec ≤ mduration the billsec never passes the duration). With only one of them the
whole seconds are used. Without ``duration`` the duration is end − start; without ``billsec``,
end − answer.

Disposition from ``hangup_cause`` (FreeSWITCH's cause names; Q.850 causes grouped as in the
``cucm`` format): ``ANSWERED`` whenever the leg has an answer time or billsec > 0, whatever
the cause (``NORMAL_CLEARING`` mostly); otherwise ``USER_BUSY``, ``BUSY_EVERYWHERE`` → BUSY;
``NORMAL_CIRCUIT_CONGESTION``, ``NETWORK_OUT_OF_ORDER``, ``NORMAL_TEMPORARY_FAILURE``,
``SWITCH_CONGESTION``, ``REQUESTED_CHAN_UNAVAIL`` → CONGESTION; the causes of
:data:`NO_ANSWER_CAUSES` (``NO_ANSWER``, ``NO_USER_RESPONSE``, ``ORIGINATOR_CANCEL``,
``NORMAL_CLEARING`` before answer, ``LOSE_RACE``, ``PICKED_OFF``, …) → NO ANSWER; every other
cause name (``CALL_REJECTED``, ``UNALLOCATED_NUMBER``, ``NO_ROUTE_DESTINATION``,
``SUBSCRIBER_ABSENT``, ``GATEWAY_DOWN``, ``RECOVERY_ON_TIMER_EXPIRE``, …) → FAILED. An empty
cause leaves the normalizer's default (answered or NO ANSWER); a value that is not a cause
name (``[A-Z][A-Z0-9_]*``) is an issue.

Direction: from the numbers (:mod:`bluerocktel.mediation.numbers`). FreeSWITCH's own
``direction`` variable is *not* used: it is the channel's direction seen from the switch (a
phone calling out is an ``inbound`` channel). With ``legs="ab"`` in ``cdr_csv.conf.xml`` or
``log-b-leg`` in ``xml_cdr.conf.xml`` each B-leg is a record of its own (its own uuid); the
stock settings log A-legs only.

Record id (``cdr_id``): source + ``uuid`` (one per leg); without a uuid the normalizer's
fallback key (start, caller, callee, channel, dst_channel, duration, billsec).

Speed (``import_cdr_file`` end to end, 2 cores shared with other jobs, load about 6, median of
3; ``benchmarks/cdrgen/freeswitch.py`` files): 1M CSV lines (235 MB) in 8.3 s wall, 5.5 CPU-s
(``asterisk-csv``, 1M lines, same conditions: 8.6 s, 4.3 CPU-s); 20,000 XML documents (63 MB)
in 3.4 s wall, 1.7 CPU-s (one lxml parse and one Python pass per document).
"""

from __future__ import annotations

import csv
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Mapping
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc

from bluerocktel.errors import FormatError
from bluerocktel.lake import CDR_SCHEMA
from bluerocktel.mediation.formats import FormatSpec
from bluerocktel.mediation.normalize import normalize_batch
from bluerocktel.mediation.records import ISO_SECONDS, CdrIssue, read_csv_slice
from bluerocktel.settings import get_setting
from bluerocktel.vocabulary import Disposition

DEFAULT_COLUMNS = ("caller_id_name", "caller_id_number", "destination_number", "context", "start_stamp",
                   "answer_stamp", "end_stamp", "duration", "billsec", "hangup_cause", "uuid", "bleg_uuid",
                   "accountcode", "read_codec", "write_codec")

# Variables that make a CDR, by role; the first one holding a value wins (module doc).
CALLER_VARS = ("caller_id_number", "sip_from_user", "ani")
CALLEE_VARS = ("destination_number", "sip_to_user", "sip_req_user")
TIME_VARS = {kind: (f"{kind}_epoch", f"{kind}_uepoch", f"{kind}_stamp") for kind in ("start", "answer", "end")}
USED_VARS = frozenset(CALLER_VARS + CALLEE_VARS + sum(TIME_VARS.values(), ()) + (
    "duration", "billsec", "mduration", "billmsec", "hangup_cause", "uuid", "accountcode", "channel_name",
    "bridge_channel"))

BUSY_CAUSES = ("USER_BUSY", "BUSY_EVERYWHERE")
CONGESTION_CAUSES = ("NORMAL_CIRCUIT_CONGESTION", "NETWORK_OUT_OF_ORDER", "NORMAL_TEMPORARY_FAILURE",
                     "SWITCH_CONGESTION", "REQUESTED_CHAN_UNAVAIL")
NO_ANSWER_CAUSES = ("UNSPECIFIED", "NORMAL_CLEARING", "NO_USER_RESPONSE", "NO_ANSWER", "NORMAL_UNSPECIFIED",
                    "ORIGINATOR_CANCEL", "LOSE_RACE", "PICKED_OFF", "NO_PICKUP", "PROGRESS_TIMEOUT",
                    "ALLOTTED_TIMEOUT", "MANAGER_REQUEST", "BLIND_TRANSFER", "ATTENDED_TRANSFER",
                    "CALL_AWARDED_DELIVERED", "REDIRECTION_TO_NEW_DESTINATION", "SUCCESS", "BOWOUT")

CHUNK_BYTES = 16 << 20
_DIGITS = r"^[0-9]{1,18}$"
_CAUSE = r"^[A-Z][A-Z0-9_]*$"
_TEMPLATE_VAR = re.compile(r"\$\{([^}]+)\}")
_XML_START = re.compile(rb"<([A-Za-z_][\w.\-]*)")
_CDR_START = re.compile(rb"<cdr[\s>/]")
_DOCTYPE = re.compile(rb"<!DOCTYPE", re.IGNORECASE)


# --- freeswitch-csv ---------------------------------------------------------------------------

def parse_freeswitch_csv(data: bytes, *, file_name: str, source: str = "default", timezone: str | None = None,
                         country: str | None = None, options: Mapping | None = None,
                         ) -> tuple[pa.Table, list[CdrIssue]]:
    """Normalize the bytes of a ``mod_cdr_csv`` file (module doc): a ``CDR_SCHEMA`` table and the issues."""
    timezone = timezone or get_setting("default_timezone")
    country = country or get_setting("default_country")
    columns = template_columns(options, file_name)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    used = [k for k, name in enumerate(columns) if name in USED_VARS and columns.index(name) == k]

    def one_chunk(start: int, end: int, first_line: int):
        table, rejected = read_chunk(data, start, end, first_line, len(columns), used, quote_char=False)
        issues: list[CdrIssue] = []
        raw = {columns[k]: table.column(f"c{k}") for k in used}
        quoted = None
        for values in raw.values():
            shape = pc.and_(pc.and_(pc.starts_with(values, '"'), pc.ends_with(values, '"')),
                            pc.greater_equal(pc.utf8_length(values), 2))
            quoted = shape if quoted is None else pc.and_(quoted, shape)
        lines = table.column("_line")
        if quoted is not None and not pc.all(quoted).as_py():
            bad = pc.indices_nonzero(pc.invert(quoted)).to_pylist()
            texts = chunk_line_texts(data, start, first_line, [lines[i].as_py() for i in bad])
            issues += [CdrIssue(file_name, line, "fields are not all quoted (not a mod_cdr_csv line)", text)
                       for line, text in texts.items()]
            raw = {name: pc.filter(v, quoted) for name, v in raw.items()}
            lines = pc.filter(lines, quoted)
        raw = {name: pc.utf8_slice_codeunits(v, 1, -1) for name, v in raw.items()}
        batch = pa.table({**raw, "_line": lines})
        slow = []
        for line, text in rejected:
            fields = split_template_line(text, len(columns))
            if isinstance(fields, str):
                issues.append(CdrIssue(file_name, line, fields, text))
            elif fields is not None:
                slow.append((line, fields))
        if slow:
            batch = pa.concat_tables([batch, pa.table({
                **{columns[k]: pa.array([f[k] for _, f in slow], pa.string()) for k in used},
                "_line": pa.array([line for line, _ in slow], pa.int32())})])
            batch = batch.take(pc.sort_indices(batch.column("_line")))
        table, more = normalize_variables(batch, file_name=file_name, source=source, timezone=timezone,
                                          country=country,
                                          raw_text=lambda wanted: chunk_line_texts(data, start, first_line, wanted))
        return table, issues + more

    return merge_chunks(run_chunks(data, chunk_bounds(data, 0, 1), one_chunk))


def template_columns(options: Mapping | None, file_name: str = "") -> list[str]:
    """The variable names of the CSV template: the option ``columns`` (names or template text), else the default."""
    given = (options or {}).get("columns")
    if given is None:
        return list(DEFAULT_COLUMNS)
    if isinstance(given, str):
        names = _TEMPLATE_VAR.findall(given) or given.split(",")
    elif isinstance(given, (list, tuple)) and all(isinstance(c, str) for c in given):
        names = list(given)
    else:
        raise FormatError(f"{file_name}: source option columns must be a list of FreeSWITCH variable names "
                          f"or the cdr_csv template text, not {given!r}")
    names = [n.strip().strip('"').strip() for n in names]
    names = [n[2:-1] if n.startswith("${") and n.endswith("}") else n for n in names]
    if not names or not all(names):
        raise FormatError(f"{file_name}: source option columns holds an empty variable name: {given!r}")
    needs = {"a start time": TIME_VARS["start"], "an end time or a duration": TIME_VARS["end"] + ("duration",
                                                                                                  "mduration"),
             "a caller": CALLER_VARS, "a callee": CALLEE_VARS}
    missing = [f"{role} ({' or '.join(choices)})" for role, choices in needs.items()
               if not any(c in names for c in choices)]
    if missing:
        raise FormatError(f"{file_name}: the freeswitch-csv column list lacks {', '.join(missing)}; set the source "
                          "option columns to the variables of the cdr_csv.conf.xml template, in order")
    return names


def split_template_line(text: str, width: int) -> list[str] | str | None:
    """The exact path for one line: its fields cut at the ``","`` separators, the reason it is not
    a template line, or None for a blank line."""
    text = text.rstrip("\r")
    if not text.strip():
        return None
    if len(text) < 2 or not (text.startswith('"') and text.endswith('"')):
        return "fields are not all quoted (not a mod_cdr_csv line)"
    fields = text[1:-1].split('","')
    if len(fields) != width:
        hint = '; a value holding "," cannot be told from two fields' if len(fields) > width else ""
        return f"wrong field count: {len(fields)} (expected {width}{hint})"
    return fields


# --- freeswitch-xml ---------------------------------------------------------------------------

def parse_freeswitch_xml(data: bytes, *, file_name: str, source: str = "default", timezone: str | None = None,
                         country: str | None = None, options: Mapping | None = None,
                         ) -> tuple[pa.Table, list[CdrIssue]]:
    """Normalize ``mod_xml_cdr`` documents (module doc): a ``CDR_SCHEMA`` table and the issues."""
    from lxml import etree

    timezone = timezone or get_setting("default_timezone")
    country = country or get_setting("default_country")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data.strip():
        return CDR_SCHEMA.empty_table(), []
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                             huge_tree=False)
    check_doctype = _DOCTYPE.search(data) is not None
    records: list[tuple[int, tuple[dict, dict]]] = []
    issues: list[CdrIssue] = []
    raws: dict[int, Callable[[], str]] = {}            # record number -> its standalone document

    first = _XML_START.search(data)
    if first is not None and first.group(1) == b"cdr":
        # one document, or several concatenated: each <cdr> with what precedes it
        for number, (offset, chunk) in enumerate(_split_documents(data), start=1):
            raws[number] = lambda chunk=chunk: chunk.decode("utf-8", "replace")
            root = _parse_document(chunk, parser, data, offset, check_doctype)
            if isinstance(root, str) or root.tag != "cdr":
                reason = root if isinstance(root, str) else f"expected a <cdr> document, found <{root.tag}>"
                issues.append(CdrIssue(file_name, number, reason, raws[number]()))
                continue
            records.append((number, cdr_values(root)))
    else:
        root = _parse_document(data, parser, data, 0, check_doctype)
        if isinstance(root, str):
            return CDR_SCHEMA.empty_table(), [CdrIssue(file_name, 1, root, data.decode("utf-8", "replace"))]
        cdrs = [el for el in root if el.tag == "cdr"]
        if not cdrs:
            return CDR_SCHEMA.empty_table(), [CdrIssue(file_name, 1, f"no <cdr> element under the root <{root.tag}>",
                                                       data.decode("utf-8", "replace"))]
        for number, el in enumerate(cdrs, start=1):
            raws[number] = lambda el=el: etree.tostring(el, encoding="unicode", with_tail=False)
            records.append((number, cdr_values(el)))

    if not records:
        return CDR_SCHEMA.empty_table(), issues
    variables = _struct_columns([v for _, (v, _) in records])
    fallbacks = _struct_columns([f for _, (_, f) in records])
    columns = {name: url_decode(values) for name, values in variables.items()}
    for name, values in fallbacks.items():
        columns[name] = pc.if_else(pc.is_valid(columns[name]), columns[name], values) if name in columns else values
    batch = pa.table({**columns, "_line": pa.array([number for number, _ in records], pa.int32())})
    table, more = normalize_variables(batch, file_name=file_name, source=source, timezone=timezone, country=country,
                                      raw_text=lambda wanted: {n: raws[n]() for n in wanted})
    issues = sorted(issues + more, key=lambda i: i.line)
    return table, issues


def cdr_values(cdr) -> tuple[dict[str, str], dict[str, str]]:
    """The used variables of one ``<cdr>`` element (still URL-encoded), and the values its
    callflows give for them (plain text; used where the variable is missing)."""
    values: dict[str, str] = {}
    variables = cdr.find("variables")
    if variables is not None:
        for el in variables:
            if el.tag in USED_VARS and el.text:
                values[el.tag] = el.text
    fallback: dict[str, str] = {}
    callflows = cdr.findall("callflow")
    if not callflows:
        return values, fallback
    profile = callflows[0].find("caller_profile")
    if profile is not None:
        for var, tag in (("caller_id_number", "caller_id_number"), ("destination_number", "destination_number"),
                         ("uuid", "uuid"), ("channel_name", "chan_name")):
            if var not in values:
                text = profile.findtext(tag)
                if text:
                    fallback[var] = text
    if not any(v in values for v in TIME_VARS["start"]):
        times: dict[str, list[int]] = {tag: [] for tag in ("created_time", "answered_time", "hangup_time")}
        for flow in callflows:
            for tag, found in times.items():
                text = (flow.findtext(f"times/{tag}") or "").strip()
                if text.isdigit() and int(text) > 0:
                    found.append(int(text))
        if times["created_time"]:
            fallback["start_uepoch"] = str(min(times["created_time"]))
            fallback["answer_uepoch"] = str(min(times["answered_time"])) if times["answered_time"] else "0"
            if times["hangup_time"]:
                fallback["end_uepoch"] = str(max(times["hangup_time"]))
    return values, fallback


def _struct_columns(dicts: list[dict[str, str]]) -> dict[str, pa.Array]:
    """Text columns (null where a dict lacks the key) from dicts, converted by Arrow in one pass."""
    names = sorted(set().union(*dicts))
    if not names:
        return {}
    structs = pa.array(dicts, pa.struct([(name, pa.string()) for name in names]))
    return {name: structs.field(name) for name in names}


def url_decode(values: pa.Array) -> pa.Array:
    """URL-decode (``%XX``, UTF-8) the values of a column that hold a ``%``: time stamps by two
    substitutions, the rest one distinct value at a time (channel names repeat)."""
    encoded = pc.fill_null(pc.match_substring(values, "%"), False)
    if not pc.any(encoded).as_py():
        return values
    values = pc.replace_substring(pc.replace_substring(values, "%20", " "), "%3A", ":")
    encoded = pc.fill_null(pc.match_substring(values, "%"), False)
    if not pc.any(encoded).as_py():
        return values
    distinct = pc.unique(pc.filter(values, encoded))
    decoded = pa.array([unquote(v) for v in distinct.to_pylist()], pa.string())
    return pc.if_else(encoded, pc.take(decoded, pc.index_in(values, value_set=distinct)), values)


def _split_documents(data: bytes) -> list[tuple[int, bytes]]:
    """(offset, bytes) of each ``<cdr>`` document of a concatenation, with what precedes it
    (declaration, blanks); trailing non-blank bytes make a last (broken) document."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        found = _CDR_START.search(data, pos)
        if found is None:
            if data[pos:].strip():
                out.append((pos, data[pos:]))
            break
        end = data.find(b"</cdr>", found.end())
        end = len(data) if end < 0 else end + len(b"</cdr>")
        chunk = data[pos:end]
        stripped = chunk.lstrip()
        out.append((pos + len(chunk) - len(stripped), stripped))
        pos = end
    return out


def _parse_document(chunk: bytes, parser, data: bytes, offset: int, check_doctype: bool = True):
    """The root element of one document (``chunk`` starts at ``offset`` of the file ``data``), or
    the reason it is refused (a DOCTYPE) or unreadable (the XML error and its line in the file)."""
    from lxml import etree

    doctype = _DOCTYPE.search(chunk) if check_doctype else None
    if doctype is not None:
        line = data.count(b"\n", 0, offset + doctype.start()) + 1
        return f"DOCTYPE refused (line {line}): no DTD, entity or external reference is read"
    try:
        return etree.fromstring(chunk, parser)
    except etree.XMLSyntaxError as exc:
        error = exc.error_log.last_error if exc.error_log else None
        message = (error.message if error is not None else str(exc)).strip()
        rel_line = (error.line if error is not None else exc.lineno) or 1
        base = data.count(b"\n", 0, offset)
        # libxml2 names lines of the document; say the file's
        message = re.sub(r"\bline (\d+)", lambda m: f"line {int(m.group(1)) + base}", message)
        return f"broken XML: {message} (line {base + rel_line})"


# --- variables to normalized CDRs (both formats) ----------------------------------------------

def normalize_variables(raw: pa.Table, *, file_name: str, source: str, timezone: str, country: str,
                        raw_text: Callable[[list[int]], dict[int, str]]) -> tuple[pa.Table, list[CdrIssue]]:
    """FreeSWITCH variables (text columns named by variable, plus ``_line``) to ``CDR_SCHEMA`` rows
    and issues: choose the values (module doc), check what the normalizer cannot, normalize."""
    n = raw.num_rows
    if n == 0:
        return CDR_SCHEMA.empty_table(), []
    names = set(raw.column_names)

    def text(name: str):
        if name not in names:
            return pa.chunked_array([pa.repeat(pa.scalar(""), n)])
        return pc.utf8_trim_whitespace(pc.fill_null(raw.column(name), ""))

    def first_given(candidates) -> pa.ChunkedArray:
        present = [c for c in candidates if c in names]
        if not present:
            return text("")
        out = text(present[-1])
        for name in reversed(present[:-1]):
            value = text(name)
            out = pc.if_else(pc.not_equal(value, ""), value, out)
        return out

    checks: list[tuple[str, object, object]] = []     # (reason, bad mask, values shown)
    cols: dict[str, object] = {"_line": raw.column("_line")}
    exact = any(v in names for kind in TIME_VARS.values() for v in kind[:2])
    for kind, (epoch, uepoch, stamp) in TIME_VARS.items():
        if not any(v in names for v in (epoch, uepoch, stamp)):
            continue
        if not exact:
            cols[kind] = text(stamp)
            continue
        value, problems = _time_text(text(epoch), text(uepoch), text(stamp), epoch, uepoch,
                                     zero_is_empty=kind == "answer")
        cols[kind] = value
        checks += problems

    # a document may lack a time altogether: say so (the normalizer needs the columns)
    cols.setdefault("start", text(""))
    checks.append(("no start time (start_epoch, start_uepoch, start_stamp or callflow created_time)",
                   pc.equal(cols["start"], ""), None))
    if "end" in cols or not any(v in names for v in ("duration", "mduration")):
        cols.setdefault("end", text(""))
        checks.append(("no end time (end_epoch, end_uepoch, end_stamp or callflow hangup_time)",
                       pc.equal(cols["end"], ""), None))

    if "mduration" in names and "billmsec" in names:
        mduration, billmsec = text("mduration"), text("billmsec")
        use_ms = pc.and_(pc.not_equal(mduration, ""), pc.not_equal(billmsec, ""))
        everywhere = pc.all(use_ms).as_py()
        for name, values in (("mduration", mduration), ("billmsec", billmsec)):
            checks.append((f"unparseable {name}", pc.and_(use_ms, pc.invert(pc.match_substring_regex(values, _DIGITS))),
                           values))
        for name, millis in (("duration", mduration), ("billsec", billmsec)):
            if name in names or everywhere:
                cols[name] = pc.if_else(use_ms, _ceil_seconds(millis, use_ms), text(name))
    else:
        for name in ("duration", "billsec"):
            if name in names:
                cols[name] = text(name)

    cols["caller"] = first_given(CALLER_VARS)
    cols["callee"] = first_given(CALLEE_VARS)
    cols["unique_id"] = text("uuid")
    cols["account_code"] = text("accountcode")
    cols["channel"] = text("channel_name")
    cols["dst_channel"] = text("bridge_channel")
    if "hangup_cause" in names:
        cause = pc.utf8_upper(text("hangup_cause"))
        checks.append(("unknown hangup_cause", pc.and_(pc.not_equal(cause, ""), pc.invert(
            pc.match_substring_regex(cause, _CAUSE))), text("hangup_cause")))
        answered = pc.not_equal(cols["answer"], "") if "answer" in cols else pa.repeat(pa.scalar(False), n)
        if "billsec" in cols:
            billsec = cols["billsec"]
            positive = pc.and_(pc.match_substring_regex(billsec, _DIGITS),
                               pc.invert(pc.match_substring_regex(billsec, r"^0+$")))
            answered = pc.or_(answered, positive)
        unanswered = pc.case_when(
            pc.make_struct(pc.equal(cause, ""), pc.is_in(cause, pa.array(BUSY_CAUSES)),
                           pc.is_in(cause, pa.array(CONGESTION_CAUSES)), pc.is_in(cause, pa.array(NO_ANSWER_CAUSES))),
            Disposition.NO_ANSWER.value, Disposition.BUSY.value, Disposition.CONGESTION.value,
            Disposition.NO_ANSWER.value, Disposition.FAILED.value)
        cols["disposition"] = pc.if_else(answered, Disposition.ANSWERED.value, unanswered)

    batch = pa.table(cols)
    issues: list[CdrIssue] = []
    bad_any = None
    for _, mask, _ in checks:
        bad_any = mask if bad_any is None else pc.or_(bad_any, mask)
    if bad_any is not None and pc.any(bad_any).as_py():
        bad_idx = pc.indices_nonzero(bad_any)
        lines = pc.take(raw.column("_line"), bad_idx).to_pylist()
        flags = [pc.take(mask, bad_idx).to_pylist() for _, mask, _ in checks]
        shown = [None if values is None else pc.take(values, bad_idx).to_pylist() for _, _, values in checks]
        texts = raw_text(lines)
        for k, line in enumerate(lines):
            j = next(j for j, fl in enumerate(flags) if fl[k])
            reason = checks[j][0] if shown[j] is None else f"{checks[j][0]}: {shown[j][k]!r}"
            issues.append(CdrIssue(file_name, line, reason, texts.get(line, "")))
        batch = batch.filter(pc.invert(bad_any))
    table, more = normalize_batch(batch, file_name=file_name, source=source, timezone=timezone, country=country,
                                  time_format="iso" if exact else ISO_SECONDS, key=("unique_id",),
                                  raw_text=raw_text)
    return table, sorted(issues + more, key=lambda i: i.line)


def _time_text(epoch, uepoch, stamp, epoch_name: str, uepoch_name: str, zero_is_empty: bool):
    """One time as ISO text for the normalizer (``…Z`` when from an epoch, the local stamp
    otherwise) and the checks of the epoch values used."""
    use_e = pc.not_equal(epoch, "")
    use_u = pc.and_(pc.invert(use_e), pc.not_equal(uepoch, ""))
    e_ok = pc.match_substring_regex(epoch, r"^[0-9]{1,11}$")
    u_ok = pc.match_substring_regex(uepoch, r"^[0-9]{1,17}$")
    micros = pc.if_else(pc.and_(use_e, e_ok),
                        pc.multiply(pc.cast(pc.if_else(e_ok, epoch, "0"), pa.int64()), pa.scalar(1_000_000, pa.int64())),
                        pc.cast(pc.if_else(pc.and_(use_u, u_ok), uepoch, "0"), pa.int64()))
    zero = pc.equal(micros, 0)
    seconds = pc.divide(micros, pa.scalar(1_000_000, pa.int64()))      # whole seconds, like the stamps
    iso = pc.strftime(pc.cast(seconds, pa.timestamp("s", tz="UTC")), format="%Y-%m-%dT%H:%M:%SZ")
    from_epoch = pc.or_(use_e, use_u)
    value = pc.if_else(from_epoch, pc.if_else(zero, "", iso), stamp)
    e_bad = pc.invert(e_ok) if zero_is_empty else pc.or_(pc.invert(e_ok), pc.equal(epoch, "0"))
    u_bad = pc.invert(u_ok) if zero_is_empty else pc.or_(pc.invert(u_ok), pc.equal(uepoch, "0"))
    problems = [(f"unparseable {epoch_name}", pc.and_(use_e, e_bad), epoch),
                (f"unparseable {uepoch_name}", pc.and_(use_u, u_bad), uepoch)]
    return value, problems


def _ceil_seconds(millis, use):
    """Whole seconds rounded up from millisecond text (rows outside ``use``: anything)."""
    ok = pc.and_(use, pc.match_substring_regex(millis, _DIGITS))
    ms = pc.cast(pc.if_else(ok, millis, "0"), pa.int64())
    return pc.cast(pc.divide(pc.add(ms, pa.scalar(999, pa.int64())), pa.scalar(1000, pa.int64())), pa.string())


# --- reading delimited lines on worker threads (shared with the 3CX format) ---------------------

def chunk_bounds(data: bytes, offset: int, first_line: int) -> list[tuple[int, int, int]]:
    """(start, end, number of the first line) of chunks of about ``CHUNK_BYTES`` cut at line ends."""
    bounds, start, line = [], offset, first_line
    while start < len(data):
        end = data.find(b"\n", min(start + CHUNK_BYTES, len(data)))
        end = len(data) if end < 0 else end + 1
        bounds.append((start, end, line))
        line += data.count(b"\n", start, end)
        start = end
    return bounds


def run_chunks(data: bytes, bounds: list[tuple[int, int, int]], fn) -> list:
    """``fn(start, end, first_line)`` for every chunk, on worker threads (Arrow releases the GIL)."""
    if len(bounds) <= 1:
        return [fn(*b) for b in bounds]
    with ThreadPoolExecutor(max_workers=max(1, min(len(bounds), os.cpu_count() or 1))) as pool:
        return list(pool.map(lambda b: fn(*b), bounds))


def read_chunk(data: bytes, start: int, end: int, first_line: int, width: int, used: list[int],
               quote_char: str | bool) -> tuple[pa.Table, list[tuple[int, str]]]:
    """The fields ``used`` (columns ``c<k>``, text) of the lines of ``data[start:end]`` that have
    ``width`` comma-separated fields, with their ``_line``; and (line, text) of the other lines.

    Every physical line is one row, accepted or rejected; when pyarrow's count disagrees (an
    open quote ran lines together, a lone CR) every line of the chunk is handed back as rejected
    for the caller's exact path."""
    names = [f"c{k}" for k in range(width)]
    wanted = [f"c{k}" for k in used]
    table, rejected, lines = read_csv_slice(data, start, end, names, wanted, quote_char=quote_char)
    if table is None:
        text = bytes(memoryview(data)[start:end]).decode("utf-8", "replace").split("\n")[:lines]
        empty = pa.table({**{c: pa.array([], pa.string()) for c in wanted}, "_line": pa.array([], pa.int32())})
        return empty, [(first_line + k, t.rstrip("\r")) for k, t in enumerate(text)]
    rejected = [(first_line + rel - 1, t.rstrip("\r")) for rel, t in rejected]
    table = table.set_column(table.schema.get_field_index("_line"), "_line",
                             pc.add(table.column("_line"), pa.scalar(first_line - 1, pa.int32())))
    blank = _blank_lines(data, start, end, first_line)
    if blank:
        # pyarrow reads an empty line as a row of empty fields: skipped, not counted
        table = table.filter(pc.invert(pc.is_in(table.column("_line"), pa.array(blank, pa.int32()))))
    return table, rejected


def _blank_lines(data: bytes, start: int, end: int, first_line: int) -> list[int]:
    """Numbers of the empty lines (nothing, or a lone CR, before the LF) of ``data[start:end]``."""
    found = []
    if data.startswith(b"\n", start) or data.startswith(b"\r\n", start):
        found.append(first_line)
    for pattern in (b"\n\n", b"\n\r\n"):
        pos, line, counted = data.find(pattern, start, end), first_line, start
        while pos >= 0:
            line += data.count(b"\n", counted, pos + 1)
            counted = pos + 1
            found.append(line)
            pos = data.find(pattern, pos + 1, end)
    return found


def chunk_line_texts(data: bytes, start: int, first_line: int, lines: list[int]) -> dict[int, str]:
    """The text of the given (absolute) lines, found from the chunk starting at ``start``."""
    out: dict[int, str] = {}
    pos, line = start, first_line
    for wanted in sorted(set(lines)):
        while line < wanted:
            pos = data.find(b"\n", pos) + 1
            line += 1
        end = data.find(b"\n", pos)
        out[wanted] = data[pos:end if end >= 0 else len(data)].rstrip(b"\r").decode("utf-8", "replace")
    return out


def csv_fields(text: str) -> list[str] | str:
    """The fields of one standard CSV line (quotes doubled inside quoted fields), or why it has none."""
    if text.count('"') % 2:
        return "unbalanced quotes (truncated line?)"
    try:
        return next(csv.reader([text]), [])
    except csv.Error as exc:          # a CR or NUL inside a field
        return f"unreadable line: {exc}"


def merge_chunks(parts: list[tuple[pa.Table, list[CdrIssue]]]) -> tuple[pa.Table, list[CdrIssue]]:
    tables = [t for t, _ in parts if t.num_rows]
    issues = sorted((i for _, found in parts for i in found), key=lambda i: i.line)
    if not tables:
        return CDR_SCHEMA.empty_table(), issues
    return (pa.concat_tables(tables) if len(tables) > 1 else tables[0]), issues


FORMATS = [
    FormatSpec(
        "freeswitch-csv", parse_freeswitch_csv,
        description='FreeSWITCH mod_cdr_csv (default template, or the source option columns), every field '
                    '"quoted" without escaping, local times or epochs',
        fingerprint="source + uuid (one record per leg); without uuid: source + start + caller + callee + "
                    "channel + dst_channel + duration + billsec",
        extensions=(".csv",),
        raw_kind="line",
    ),
    FormatSpec(
        "freeswitch-xml", parse_freeswitch_xml,
        description="FreeSWITCH mod_xml_cdr documents (one <cdr> per leg, concatenated or under a root), "
                    "URL-encoded variables, epoch times, billsec from billmsec rounded up",
        fingerprint="source + variables/uuid (else callflow caller_profile/uuid); without uuid: source + start + "
                    "caller + callee + channel + dst_channel + duration + billsec",
        line_based=False,
        extensions=(".xml",),
        raw_kind="document",
    ),
]
