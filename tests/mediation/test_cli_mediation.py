"""The mediation commands of the real console script: formats, sources, import arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from bluerocktel.db.models import AuditEntry, CdrSource
from bluerocktel.mediation import FORMATS

BIN = Path(sys.executable).parent / "bluerocktel"
GOLDEN = Path(__file__).parent.parent / "data" / "asterisk" / "Master.csv"


def cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *args, "--data-dir", str(data_dir)], capture_output=True, text=True,
                          timeout=120)


def test_formats_lists_every_registered_format_with_its_record_id(data_dir):
    done = cli("cdr", "formats", "--json", data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    listed = {f["name"]: f for f in json.loads(done.stdout)["formats"]}
    assert set(listed) == set(FORMATS)
    assert "asterisk-csv" in listed
    for name, entry in listed.items():
        assert entry["description"], f"{name} has no description"
        assert entry["fingerprint"], f"{name} does not say which fields make its record id"
        assert entry["raw_kind"] in ("line", "document", "binary")
    text = cli("cdr", "formats", data_dir=data_dir).stdout
    assert "asterisk-csv" in text and "record id: source + uniqueid" in text and "--mapping" in text


def test_source_add_and_list(wb, data_dir):
    done = cli("source", "add", "pbx-lyon", "--format", "asterisk-csv", "--url",
               "sftp://cdr@pbx.example.net:2222/var/log/asterisk/cdr-csv", "--timezone", "Europe/Paris",
               "--option", "pattern=Master-*.csv", "--option", "max_files=50", "--poll-interval", "60",
               data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    with wb.db.session() as s:
        src = s.scalar(select(CdrSource).where(CdrSource.name == "pbx-lyon"))
        assert (src.format, src.poll_interval_s, src.options) == ("asterisk-csv", 60,
                                                                  {"pattern": "Master-*.csv", "max_files": 50})
        assert s.scalar(select(AuditEntry).where(AuditEntry.action == "cdr_source.create")).details["name"] == "pbx-lyon"
    again = cli("source", "add", "pbx-lyon", "--format", "asterisk-csv", data_dir=data_dir)
    assert again.returncode == 2 and "exists already" in again.stderr
    unknown = cli("source", "add", "pbx-x", "--format", "nortel-dms", data_dir=data_dir)
    assert unknown.returncode == 2 and "unknown CDR format 'nortel-dms'" in unknown.stderr
    listed = json.loads(cli("source", "list", "--json", data_dir=data_dir).stdout)["sources"]
    assert [(r["name"], r["format"], r["url"], r["last_status"]) for r in listed] == [
        ("pbx-lyon", "asterisk-csv", "sftp://cdr@pbx.example.net:2222/var/log/asterisk/cdr-csv", None)]


def test_source_list_hides_url_passwords(wb, data_dir):
    with wb.db.transaction() as s:
        s.add(CdrSource(name="db1", format="asterisk-csv", url="mysql://cdr:s3cret@10.0.0.5/asteriskcdrdb"))
    done = cli("source", "list", data_dir=data_dir)
    assert "s3cret" not in done.stdout and "mysql://cdr:***@10.0.0.5/asteriskcdrdb" in done.stdout


def test_import_needs_exactly_one_of_format_and_mapping(data_dir):
    neither = cli("cdr", "import", str(GOLDEN), data_dir=data_dir)
    assert neither.returncode == 2 and "give either --format NAME or --mapping MAPPING.toml" in neither.stderr
    both = cli("cdr", "import", str(GOLDEN), "--format", "asterisk-csv", "--mapping", "x.toml", data_dir=data_dir)
    assert both.returncode == 2 and "give either" in both.stderr


def test_import_takes_the_time_zone_from_the_command_line(data_dir):
    done = cli("cdr", "import", str(GOLDEN), "--format", "asterisk-csv", "--timezone", "America/New_York", "--json",
               data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    from bluerocktel import lake

    con = lake.connect_duckdb()
    try:
        first = con.sql(f"SELECT start_at FROM {lake.scan_sql(data_dir / 'lake', 'cdrs')} "
                        "ORDER BY source_line LIMIT 1").fetchall()[0][0]
    finally:
        con.close()
    line1_local = GOLDEN.read_text().splitlines()[0].split('","')[9]       # start, local wall time
    assert first.strftime("%Y-%m-%d %H:%M:%S") != line1_local               # converted from New York time
    assert first.utcoffset().total_seconds() == 0
    assert (first.hour - int(line1_local[11:13])) % 24 in (4, 5)           # EDT/EST is UTC-4/-5


def test_collect_without_a_source_or_watch_is_refused(data_dir):
    done = cli("collect", data_dir=data_dir)
    assert done.returncode == 2 and "name the CDR source to collect" in done.stderr
    missing = cli("collect", "nope", data_dir=data_dir)
    assert missing.returncode == 2 and "unknown CDR source 'nope'" in missing.stderr


def test_source_add_refuses_what_the_api_refuses(data_dir):
    secret = cli("source", "add", "db1", "--format", "asterisk-db", "--url", "mysql://cdr:s3cret@10.0.0.5/cdrdb",
                 data_dir=data_dir)
    assert secret.returncode == 2 and "password_env" in secret.stderr and "s3cret" not in secret.stderr
    odd = cli("source", "add", ".hidden/../x", "--format", "asterisk-csv", data_dir=data_dir)
    assert odd.returncode == 2 and "invalid CDR source name" in odd.stderr


def test_secret_options_may_only_name_our_own_environment_variables(data_dir):
    # else whoever configures a source could send the server's other secrets to a host of theirs
    done = cli("source", "add", "pbx-x", "--format", "asterisk-csv", "--url", "sftp://cdr@pbx.example.net/cdr",
               "--option", "password_env=BLUEROCKTEL_DATABASE_URL", data_dir=data_dir)
    assert done.returncode == 2
    assert "option password_env must name an environment variable starting with BLUEROCKTEL_CDR_" in done.stderr
    ok = cli("source", "add", "pbx-x", "--format", "asterisk-csv", "--url", "sftp://cdr@pbx.example.net/cdr",
             "--option", "password_env=BLUEROCKTEL_CDR_PBX_X", data_dir=data_dir)
    assert ok.returncode == 0, ok.stderr
