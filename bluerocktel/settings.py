"""Every setting of the workbench, in one table.

Each setting is read from an environment variable ``BLUEROCKTEL_<NAME>``; the README's settings
table is checked against :data:`SETTINGS` by ``tests/test_settings.py``. Secrets come from the
environment (or a file the workbench generates in the data dir), never from committed files.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    help: str

    @property
    def env_var(self) -> str:
        return f"BLUEROCKTEL_{self.name.upper()}"


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", "./var", "Folder holding the SQLite file, the usage lake, documents and run records."),
    Setting("database_url", "", "SQLAlchemy URL of the system of record; empty means SQLite `bluerocktel.db` in the data dir. PostgreSQL: `postgresql+psycopg://user@host/db`."),
    Setting("secret_key", "", "Key signing session cookies; empty means a random key generated once and kept in `DATA_DIR/secret_key` (mode 600)."),
    Setting("session_max_age_s", "28800", "Lifetime of a signed-in session, in seconds."),
    Setting("cookie_secure", "0", "Set to 1 to mark the session cookie Secure (behind TLS)."),
    Setting("default_country", "FR", "Country whose national numbering plan normalizes numbers without an international prefix."),
    Setting("default_timezone", "Europe/Paris", "Time zone of CDR sources that do not say theirs."),
    Setting("import_chunk_mb", "32", "Size of the slices a line-based CDR file is imported in (bounds the memory of an import)."),
    Setting("max_cdr_file_mb", "1024", "Largest CDR file read whole (XML, ASN.1 BER and other formats that cannot be cut at line ends), in MiB."),
    Setting("max_decompressed_mb", "20480", "Largest decompressed size of a gzip or zip CDR input, in MiB (decompression bomb guard)."),
    Setting("max_compression_ratio", "200", "Largest decompressed/compressed size ratio accepted for a gzip or zip CDR input once past 1 MiB."),
    Setting("rating_batch_size", "1000000", "CDRs `rate` rates at a time: a month is rated in batches of this many calls, in call order, one lake file each (the kernel needs about 1 GB per million CDRs)."),
    Setting("vat_rate", "0.20", "Default VAT rate applied to invoices (French standard rate)."),
    Setting("payment_terms_days", "30", "Days between invoice date and due date for new accounts."),
    Setting("smtp_host", "127.0.0.1", "SMTP server the e-mail outbox sends through (`bluerocktel billing emails send`)."),
    Setting("smtp_port", "25", "Port of the SMTP server."),
    Setting("smtp_user", "", "SMTP login; empty means no authentication."),
    Setting("smtp_password", "", "SMTP password (a secret: set it in the environment)."),
    Setting("smtp_from", "billing@localhost", "Sender address (`From`) of the e-mails the workbench sends."),
    Setting("smtp_starttls", "0", "Set to 1 to upgrade the SMTP connection with STARTTLS before logging in."),
    Setting("report_delta_threshold_pct", "50", "Control report: an account's total is an anomaly when it moves more than this % from the previous period (and by more than report_delta_threshold_minor)."),
    Setting("report_delta_threshold_minor", "1000", "Control report: ...and by more than this many minor units (1000 = 10.00)."),
    Setting("support_email", "support@localhost", "Helpdesk inbox told of new tickets and customer replies when a ticket has no assignee or team address."),
    Setting("sepa_reject_fee", "7.50", "Fee (before VAT) billed on the next invoice when a SEPA direct debit is rejected or returned; 0 for none."),
    Setting("api_rate_per_minute", "1200", "Requests per minute each API token may make (sustained rate); beyond it the API answers 429 with Retry-After."),
    Setting("api_rate_burst", "200", "Requests an API token may make at once above its sustained rate before being limited."),
    Setting("host", "127.0.0.1", "Address `serve` and `dashboards` listen on."),
    Setting("port", "8000", "Port of `serve` (API, portal, staff app)."),
    Setting("web_workers", "1", "Processes `serve` runs on its port, each serving the whole app (API, portal, staff app): one per core for API throughput. API rate limits are counted in each process."),
    Setting("dashboards_port", "8866", "Port of the Voila dashboards server."),
    Setting("anomaly_window_minutes", "60", "Length of the windows the anomaly detectors count calls in, in minutes (a divisor of 1440; windows are aligned on UTC multiples of it)."),
    Setting("anomaly_high_cost_per_minute", "1.00", "A call is high-cost when the rate that priced it costs at least this per minute (price x 60 / unit size, in the deck's currency)."),
    Setting("anomaly_high_risk_zones", "", "Comma-separated rate zones whose calls always count as high-cost (e.g. `satellite,premium`)."),
    Setting("anomaly_spike_calls", "10", "High-cost spike (IRSF): floor of high-cost calls per account and window; flagged above the larger of it and the factor x the 7-day median."),
    Setting("anomaly_spike_minutes", "30", "High-cost spike: floor of high-cost minutes per account and window."),
    Setting("anomaly_spike_amount", "20.00", "High-cost spike: floor of the high-cost calls' price per account and window, in the account's currency."),
    Setting("anomaly_spike_factor", "3", "High-cost spike: how many times the account's baseline (median of the same window over the previous 7 days) a window must exceed."),
    Setting("anomaly_long_call_s", "14400", "A call with more answered seconds than this is a long-call anomaly (default 4 h)."),
    Setting("anomaly_off_hours_calls", "20", "Off-hours burst: more than this many answered outbound calls in one window outside business hours (account's time zone)."),
    Setting("anomaly_business_days", "mon,tue,wed,thu,fri", "Business days for the off-hours detector (mon..sun); public holidays of the account's country are off-hours."),
    Setting("anomaly_business_hours", "08:00-19:00", "Business hours `HH:MM-HH:MM` (end exclusive) in the account's time zone, for the off-hours detector."),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def get_setting(name: str) -> str:
    """The value of setting ``name``: its environment variable, else its default."""
    setting = _BY_NAME[name]
    return os.environ.get(setting.env_var, setting.default)


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data dir: the argument, else ``BLUEROCKTEL_DATA_DIR``, else ``./var``; created if missing."""
    path = Path(data_dir if data_dir is not None else get_setting("data_dir")).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_url(data_dir: Path) -> str:
    return get_setting("database_url") or f"sqlite:///{data_dir / 'bluerocktel.db'}"


def secret_key(data_dir: Path) -> str:
    """The cookie-signing key: ``BLUEROCKTEL_SECRET_KEY``, else one generated once per data dir."""
    configured = get_setting("secret_key")
    if configured:
        return configured
    key_file = data_dir / "secret_key"
    if not key_file.exists():
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
    return key_file.read_text().strip()
