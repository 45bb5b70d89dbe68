"""SFTP polling: take the complete CDR files of a remote folder, import each exactly once.

A CDR source with ``url = sftp://user@host[:port]/remote/dir`` (port 22 by default; the path is
absolute, ``sftp://user@host`` alone is the login folder) is collected by :func:`collect`:

1. **Connect** with paramiko, key or password, the server's host key checked (never trusted on
   first use). An unreachable server never raises: the run is ``failed`` and ``error`` says
   which host and port and what failed (connection refused, timed out, authentication failed,
   host key unknown or mismatched, no such directory, permission denied).
2. **List** the folder once (``lstat`` attributes: a symlink is never followed) and decide, for
   each entry, whether to take it now (steps below). What is seen but not taken goes to
   ``summary.skipped`` as ``name: reason``. Folders (the archive folder among them), markers and
   files already marked imported are ignored without a word.
3. **Download** each file taken, oldest first, at most ``max_files`` per run, into the spool
   folder ``DATA_DIR/spool/<source>/``: first to ``.partial/<name>`` (its remote size and mtime
   kept beside it in ``.meta/<name>``), in 1 MiB blocks with pipelined reads. When the
   connection drops, the collector reconnects and continues from the size of the local partial
   file (``seek`` + prefetch), up to ``retries`` times with exponential backoff; a partial left by
   a run that failed or died is resumed by the next run if the remote file still has the same
   size and mtime (otherwise started again). The final size must equal the listed size.
4. **Import** it with :func:`bluerocktel.mediation.import_cdr_file` (``collector="sftp"``, the
   remote path in the ledger): the same bytes imported before are a ``duplicate`` and records
   already in the lake are counted as duplicates, so nothing is counted twice.
5. **Only then** act on the remote file (``after``), then delete the local copy (or keep it in
   ``spool/<source>/imported/`` with ``keep_local``). A process that dies between 4 and 5 leaves
   the remote file in place: the next run downloads the same bytes, the ledger says
   ``duplicate``, and the remote action is done then. A complete local copy left in the spool
   folder by a run that died before importing it, whose remote file is gone since, is imported
   by the next run (or, refused by the importer, moved to ``spool/<source>/refused/``).

Names are checked before anything is written: a remote name that is empty, holds ``/``, ``\\``,
``..``, a NUL or another control character, starts with ``.`` or ``-``, is not valid UTF-8,
is longer than 200 bytes, or does not match ``pattern`` is skipped with the reason; anything
that is not a regular file (symlink, device, fifo) too. Local paths are built only from accepted
names, inside the spool folder. One run per source at a time (a lock file in the spool folder).

Options (``cdr_sources.options``; secrets never go there, nor in the URL):

======================== ==================== ==================================================================
option                   default              meaning
======================== ==================== ==================================================================
``key_file``             (none)               private key file (OpenSSH or PEM; ed25519, ECDSA or RSA)
``key_passphrase_env``   (none)               name of the environment variable holding the key's passphrase
``password_env``         (none)               name of the environment variable holding the password (one of
                                              ``key_file`` and ``password_env`` is required)
``known_hosts``          ~/.ssh/known_hosts   OpenSSH known_hosts file the host key is checked against
                                              (a non-22 port is looked up as ``[host]:port``); the default
                                              only when ``host_key`` is not given
``host_key``             (none)               the expected host key, ``ssh-ed25519 AAAA…`` (the ``.pub``
                                              line), instead of or besides ``known_hosts``
``pattern``              ``*``                glob (``fnmatch``, case-sensitive) the file names must match
``completion``           ``stable``           when a file is complete, one of:
                                              ``stable``: its size and mtime were the same in two listings
                                              at least ``stable_s`` apart (the previous listing is the previous
                                              run's, kept in the cursor; with ``stable_wait`` a run that finds
                                              files not yet stable lists once more after ``stable_s`` seconds
                                              instead of leaving them to the next poll);
                                              ``marker``: the file ``<name><marker_suffix>`` exists (the
                                              marker itself is never imported);
                                              ``rename``: the switch writes ``<name><temp_suffix>`` and renames
                                              it when done; names ending with a temp suffix are not taken
``stable_s``             2                    seconds (decimal) for ``stable``
``stable_wait``          true                 see ``stable``
``marker_suffix``        ``.done``            see ``marker``
``temp_suffix``          ``.tmp``, ``.part``  see ``rename``: one suffix, a list, or a comma-separated text
``after``                ``keep``             what becomes of a remote file once imported:
                                              ``move`` into ``archive_dir`` (created if missing),
                                              ``rename`` to ``<name><done_suffix>``, ``delete``, or ``keep``
                                              (left as is; the cursor remembers each name with its size and
                                              mtime, so it is taken again only if it changes, and then only
                                              its new records are imported). A marker follows its file. A
                                              failed remote action makes the run ``failed`` (the file, imported,
                                              is a duplicate next run and the action is tried again)
``archive_dir``          ``archive``          for ``move``: folder, relative to the source folder or absolute;
                                              a name already there gets a UTC time suffix
``done_suffix``          ``.imported``        for ``rename``
``max_files``            1000                 files downloaded per run, oldest mtime first (the others wait)
``keep_local``           false                keep each imported local copy in ``spool/<source>/imported/``
``retries``              5                    reconnections per file after a dropped connection
``backoff_s``            1                    first wait before reconnecting; doubled each time, at most 30
``timeout_s``            30                   connect, authentication and read timeout, seconds (at least 1)
======================== ==================== ==================================================================

The cursor (``cdr_source_states.cursor``) is JSON: ``seen`` (name → size, mtime, first seen at,
for ``stable``), ``taken`` (name → size, mtime, for ``after = keep``) and ``refused`` (name →
size, mtime, reason: files whose import was refused as a whole, not downloaded again until
they change). Entries of names no longer listed are dropped.

Throughput (measured on 127.0.0.1, OpenSSH 9.2, paramiko 5, 2 cores): the download alone runs at
100 to 150 MB/s with 255 KiB read requests and 64 in flight (paramiko's default 32 KiB requests
reached 5 MB/s). Collecting one 271 MB ``Master.csv`` of 1M CDRs took 8.1 s (median of 3; 3.0 s
connect and download, the rest the import), 123,000 CDRs/s, on a machine busy with other work.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import fnmatch
import json
import logging
import os
import posixpath
import re
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlsplit

from bluerocktel.collectors import CollectSummary, load_cursor, redact
from bluerocktel.errors import FormatError, UserFacingError
from bluerocktel.vocabulary import Collector

log = logging.getLogger(__name__)

COMPLETIONS = ("stable", "marker", "rename")
AFTER_ACTIONS = ("move", "rename", "delete", "keep")
BLOCK_BYTES = 1 << 20              # written to the local partial file, one progress event each
READ_REQUEST_BYTES = 255 * 1024    # one SFTP read request (OpenSSH serves up to 256 KiB - 1 KiB)
PREFETCH_REQUESTS = 64             # read requests in flight
MAX_NAME_BYTES = 200
MAX_BACKOFF_S = 30.0


# --- settings -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SftpSettings:
    """A source's URL and options, checked (see the module doc for each)."""

    user: str
    host: str
    port: int
    directory: str
    key_file: str | None = None
    key_passphrase_env: str | None = None
    password_env: str | None = None
    known_hosts: str | None = None
    host_key: str | None = None
    pattern: str = "*"
    completion: str = "stable"
    stable_s: float = 2.0
    stable_wait: bool = True
    marker_suffix: str = ".done"
    temp_suffixes: tuple[str, ...] = (".tmp", ".part")
    after: str = "keep"
    archive_dir: str = "archive"
    done_suffix: str = ".imported"
    max_files: int = 1000
    keep_local: bool = False
    retries: int = 5
    backoff_s: float = 1.0
    timeout_s: float = 30.0

    @property
    def where(self) -> str:
        return f"sftp {self.user}@{self.host}:{self.port}"

    @property
    def archive_path(self) -> str:
        return posixpath.normpath(posixpath.join(self.directory, self.archive_dir))

    def remote(self, name: str) -> str:
        return posixpath.join(self.directory, name)


def parse_settings(url: str, options: dict | None) -> SftpSettings:
    """The settings of an ``sftp://`` source; :class:`FormatError` names a bad URL or option."""
    parts = urlsplit(url or "")
    if parts.scheme.lower() != "sftp":
        raise FormatError(f"not an sftp:// URL: {redact(url)!r}")
    try:
        port = parts.port or 22
    except ValueError:
        raise FormatError(f"bad port in {redact(url)!r}") from None
    if parts.password:
        raise FormatError("the URL holds a password: remove it and name an environment variable "
                          "holding it with option password_env")
    if not parts.username or not parts.hostname:
        raise FormatError(f"the URL must say user and host: sftp://user@host[:port]/dir, got {redact(url)!r}")
    path = unquote(parts.path)
    directory = posixpath.normpath(path) if path not in ("", "/") else (path or ".")
    opts = dict(options or {})
    kw: dict = {}
    for key in ("key_file", "key_passphrase_env", "password_env", "known_hosts", "host_key", "pattern",
                "marker_suffix", "archive_dir", "done_suffix"):
        if opts.get(key) not in (None, ""):
            kw[key] = _text(opts, key)
    if "completion" in opts:
        kw["completion"] = _choice(opts, "completion", COMPLETIONS)
    if "after" in opts:
        kw["after"] = _choice(opts, "after", AFTER_ACTIONS)
    for key, minimum in (("stable_s", 0.0), ("backoff_s", 0.0), ("timeout_s", 1.0)):
        if key in opts:
            kw[key] = _number(opts, key, minimum=minimum)
    for key, minimum in (("max_files", 1), ("retries", 0)):
        if key in opts:
            kw[key] = int(_number(opts, key, minimum=minimum, integer=True))
    for key in ("stable_wait", "keep_local"):
        if key in opts:
            kw[key] = _flag(opts, key)
    if "temp_suffix" in opts:
        raw = opts["temp_suffix"]
        items = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(items, list) or not all(isinstance(i, str) and i.strip() for i in items):
            raise FormatError(f"option temp_suffix: a suffix or a list of suffixes, got {raw!r}")
        kw["temp_suffixes"] = tuple(i.strip() for i in items)
    for key in ("marker_suffix", "done_suffix"):
        if key in kw and ("/" in kw[key] or kw[key] in (".", "..")):
            raise FormatError(f"option {key}: not a file name suffix: {kw[key]!r}")
    settings = SftpSettings(user=unquote(parts.username), host=parts.hostname, port=port, directory=directory, **kw)
    if settings.after == "move" and settings.archive_path == posixpath.normpath(directory):
        raise FormatError("option archive_dir: the archive folder cannot be the collected folder")
    if settings.key_file is None and settings.password_env is None:
        raise FormatError("say how to sign in: option key_file (a private key file) or password_env "
                          "(the name of an environment variable holding the password)")
    return settings


def _text(opts: dict, key: str) -> str:
    value = opts[key]
    if not isinstance(value, str):
        raise FormatError(f"option {key}: text expected, got {value!r}")
    return value


def _choice(opts: dict, key: str, allowed: tuple[str, ...]) -> str:
    value = opts[key]
    if value not in allowed:
        raise FormatError(f"option {key}: one of {', '.join(allowed)}, got {value!r}")
    return value


def _number(opts: dict, key: str, *, minimum: float, integer: bool = False) -> float:
    value = opts[key]
    try:
        if isinstance(value, bool):
            raise ValueError
        number = int(value) if integer and not isinstance(value, float) else float(value)
        if integer and number != int(number):
            raise ValueError
    except (TypeError, ValueError):
        raise FormatError(f"option {key}: {'a whole number' if integer else 'a number'} expected, "
                          f"got {value!r}") from None
    if number < minimum:
        raise FormatError(f"option {key}: at least {minimum}, got {value!r}")
    return number


def _flag(opts: dict, key: str) -> bool:
    value = opts[key]
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.lower() in ("true", "yes", "1")
    raise FormatError(f"option {key}: true or false expected, got {value!r}")


# --- names and the listing ----------------------------------------------------------------------

def check_name(name: str, pattern: str = "*") -> str | None:
    """Why a remote file name is refused, or None when it may be taken."""
    if not name:
        return "empty name"
    if "\x00" in name:
        return "refused name: holds a NUL byte"
    if "/" in name or "\\" in name:
        return "refused name: holds a path separator"
    if ".." in name:
        return "refused name: holds '..'"
    if name.startswith("."):
        return "refused name: starts with '.'"
    if name.startswith("-"):
        return "refused name: starts with '-'"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "refused name: holds a control character"
    if re.search(r"[\ud800-\udfff]", name):
        return "refused name: not valid UTF-8"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"refused name: longer than {MAX_NAME_BYTES} bytes"
    if not fnmatch.fnmatchcase(name, pattern):
        return f"does not match pattern {pattern!r}"
    return None


def show_name(name: str) -> str:
    """A name as printed in ``skipped`` (quoted when it holds odd characters)."""
    printable = name.isprintable() and not re.search(r"[\ud800-\udfff]", name)
    return name if printable else ascii(name)


@dataclass(frozen=True)
class RemoteFile:
    """One entry of the remote folder, with its ``lstat`` attributes."""

    name: str          # undecodable bytes are kept as surrogates (then refused by check_name)
    size: int
    mtime: int
    mode: int

    @property
    def regular(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def key(self) -> list:
        return [self.size, self.mtime]


@dataclass
class Plan:
    """What one listing says: the files to take now and the others, with why."""

    ready: list[RemoteFile] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unstable: int = 0                        # files waiting only for a second listing (stable)
    seen: dict = field(default_factory=dict)
    markers: dict[str, str] = field(default_factory=dict)   # file name → its marker's name


def plan_files(files: list[RemoteFile], settings: SftpSettings, cursor: dict, now: float) -> Plan:
    """Decide, from one listing and the cursor, which files are complete and not yet taken."""
    plan = Plan()
    names = {f.name for f in files if f.regular}
    prev_seen = cursor.get("seen", {})
    taken = cursor.get("taken", {})
    refused = cursor.get("refused", {})
    for entry in sorted(files, key=lambda f: f.name):
        name, shown = entry.name, show_name(entry.name)
        if entry.is_dir:
            continue
        if settings.completion == "marker" and entry.regular and name.endswith(settings.marker_suffix) \
                and len(name) > len(settings.marker_suffix):
            continue                                   # a marker: never imported itself
        if settings.after == "rename" and entry.regular and name.endswith(settings.done_suffix):
            continue                                   # imported by an earlier run
        if settings.completion == "rename" and entry.regular and name.endswith(settings.temp_suffixes):
            if check_name(name) is None:
                plan.skipped.append(f"{shown}: incomplete (still being written: temporary suffix)")
                continue
        reason = check_name(name, settings.pattern)
        if reason is not None:
            plan.skipped.append(f"{shown}: {reason}")
            continue
        if not entry.regular:
            kind = "a symbolic link" if stat.S_ISLNK(entry.mode) else "not a regular file"
            plan.skipped.append(f"{shown}: {kind}, not followed")
            continue
        if settings.after == "keep" and taken.get(name) == entry.key:
            continue                                   # taken already, unchanged since
        if name in refused and refused[name][:2] == entry.key:
            plan.skipped.append(f"{shown}: refused by an earlier run, not taken again until it changes: "
                                f"{refused[name][2]}")
            continue
        if settings.completion == "stable":
            before = prev_seen.get(name)
            same = before is not None and before[:2] == entry.key
            plan.seen[name] = [entry.size, entry.mtime, before[2] if same else now]
            if not same or now + 1e-3 < before[2] + settings.stable_s:
                plan.unstable += 1
                plan.skipped.append(f"{shown}: incomplete (size and mtime not yet seen unchanged "
                                    f"for {settings.stable_s:g} s)")
                continue
        elif settings.completion == "marker":
            marker = name + settings.marker_suffix
            if marker not in names:
                plan.skipped.append(f"{shown}: incomplete (waiting for its marker {show_name(marker)})")
                continue
            plan.markers[name] = marker
        plan.ready.append(entry)
    plan.ready.sort(key=lambda f: (f.mtime, f.name))
    if len(plan.ready) > settings.max_files:
        for entry in plan.ready[settings.max_files:]:
            plan.skipped.append(f"{show_name(entry.name)}: left for the next run (max_files {settings.max_files})")
        plan.ready = plan.ready[:settings.max_files]
    return plan


# --- the connection -----------------------------------------------------------------------------

class SftpConnectError(Exception):
    """The server could not be reached or used; ``retryable`` when trying again may help."""

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


class FileSkip(Exception):
    """One file cannot be taken now (changed meanwhile, refused by the server); the run goes on."""


@dataclass(frozen=True)
class TransferProgress:
    """Reported after each block written to the local partial file (the ``on_progress`` hook)."""

    remote: str
    offset: int          # bytes in the local partial file now
    size: int            # the remote file's listed size
    attempt: int         # 1 for the first connection used for this file, 2 after one reconnection…
    resumed_from: int    # the partial file's size when this attempt started


class _Session:
    """One SSH connection and its SFTP channel, opened on demand and opened again after a drop."""

    def __init__(self, settings: SftpSettings):
        self.settings = settings
        self.client = None
        self.sftp = None
        self.connections = 0

    def open(self):
        if self.sftp is not None and self.alive():
            return self.sftp
        self.close()
        self.client, self.sftp = _connect(self.settings)
        self.connections += 1
        return self.sftp

    def alive(self) -> bool:
        transport = self.client.get_transport() if self.client is not None else None
        return transport is not None and transport.is_active()

    def close(self) -> None:
        for thing in (self.sftp, self.client):
            if thing is not None:
                try:
                    thing.close()
                except Exception:   # noqa: BLE001 - closing a dead connection may fail in many ways
                    pass
        self.client = self.sftp = None


def _connect(settings: SftpSettings):
    """(SSHClient, SFTPClient) signed in, the host key checked; :class:`SftpConnectError` otherwise."""
    import socket

    import paramiko
    from paramiko.hostkeys import HostKeyEntry

    where = settings.where
    client = paramiko.SSHClient()
    keyname = settings.host if settings.port == 22 else f"[{settings.host}]:{settings.port}"
    known_hosts = settings.known_hosts
    if known_hosts is None and settings.host_key is None:
        known_hosts = os.path.expanduser("~/.ssh/known_hosts")
    try:
        if known_hosts is not None:
            client.load_host_keys(os.path.expanduser(known_hosts))
    except OSError as exc:
        raise SftpConnectError(f"{where}: cannot read known_hosts {known_hosts}: {exc.strerror or exc}") from None
    if settings.host_key is not None:
        try:
            entry = HostKeyEntry.from_line(f"{keyname} {settings.host_key.strip()}")
        except Exception:   # noqa: BLE001 - InvalidHostKey, or whatever a bad key blob raises
            entry = None
        if entry is None or entry.key is None:
            raise SftpConnectError(f"{where}: option host_key is not a public key line "
                                   f"('ssh-ed25519 AAAA…'): {settings.host_key[:40]!r}")
        client.get_host_keys().add(keyname, entry.key.get_name(), entry.key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    password = passphrase = None
    from bluerocktel.collectors import env_name_problem

    for option in ("password_env", "key_passphrase_env"):
        name = getattr(settings, option)
        if name is not None and (problem := env_name_problem(name, option)) is not None:
            raise SftpConnectError(f"{where}: {problem}")
    if settings.password_env is not None:
        password = os.environ.get(settings.password_env)
        if password is None:
            raise SftpConnectError(f"{where}: environment variable {settings.password_env} (option password_env) "
                                   "is not set")
    if settings.key_passphrase_env is not None:
        passphrase = os.environ.get(settings.key_passphrase_env)
        if passphrase is None:
            raise SftpConnectError(f"{where}: environment variable {settings.key_passphrase_env} "
                                   "(option key_passphrase_env) is not set")
    key_file = os.path.expanduser(settings.key_file) if settings.key_file else None
    if key_file is not None and not os.access(key_file, os.R_OK):
        raise SftpConnectError(f"{where}: cannot read key_file {key_file}")
    try:
        client.connect(settings.host, settings.port, username=settings.user, key_filename=key_file,
                       password=password, passphrase=passphrase, timeout=settings.timeout_s,
                       banner_timeout=settings.timeout_s, auth_timeout=settings.timeout_s,
                       channel_timeout=settings.timeout_s, allow_agent=False, look_for_keys=False)
        sftp = client.open_sftp()
        sftp.get_channel().settimeout(settings.timeout_s)
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise SftpConnectError(
            f"{where}: host key mismatch: the server offered {exc.key.get_name()} {exc.key.fingerprint}, "
            f"{known_hosts or 'option host_key'} expects {exc.expected_key.get_name()} "
            f"{exc.expected_key.fingerprint}; refused (nothing downloaded)") from None
    except paramiko.AuthenticationException as exc:
        client.close()
        how = f"key {key_file}" if key_file else f"password from {settings.password_env}"
        raise SftpConnectError(f"{where}: authentication failed for user {settings.user} ({how}): {exc}") from None
    except paramiko.ssh_exception.NoValidConnectionsError as exc:
        client.close()
        refused = any(getattr(e, "errno", None) == errno.ECONNREFUSED for e in exc.errors.values())
        what = "connection refused" if refused else f"cannot connect ({exc})"
        raise SftpConnectError(f"{where}: {what}", retryable=True) from None
    except socket.gaierror as exc:
        client.close()
        raise SftpConnectError(f"{where}: cannot resolve host {settings.host}: {exc.strerror}") from None
    except (TimeoutError, socket.timeout):
        client.close()
        raise SftpConnectError(f"{where}: timed out after {settings.timeout_s:g} s", retryable=True) from None
    except paramiko.SSHException as exc:
        client.close()
        text = str(exc)
        if "not found in known_hosts" in text:
            raise SftpConnectError(
                f"{where}: host key not known: {keyname} is not in {known_hosts or 'option host_key'}; "
                "refused (add its key to known_hosts or option host_key)") from None
        raise SftpConnectError(f"{where}: SSH error: {text}", retryable=True) from None
    except OSError as exc:
        client.close()
        raise SftpConnectError(f"{where}: {exc.strerror or exc}", retryable=True) from None
    return client, sftp


def list_remote(sftp, directory: str) -> list[RemoteFile]:
    """The entries of ``directory`` with their lstat attributes (names that are not UTF-8 kept as
    surrogates, where paramiko's ``listdir_attr`` would raise)."""
    from paramiko.sftp import CMD_CLOSE, CMD_HANDLE, CMD_NAME, CMD_OPENDIR, CMD_READDIR, SFTPError
    from paramiko.sftp_attr import SFTPAttributes

    t, msg = sftp._request(CMD_OPENDIR, directory)
    if t != CMD_HANDLE:
        raise SFTPError("expected a handle")
    handle = msg.get_binary()
    found = []
    try:
        while True:
            try:
                t, msg = sftp._request(CMD_READDIR, handle)
            except EOFError:
                break
            if t != CMD_NAME:
                raise SFTPError("expected a name response")
            for _ in range(msg.get_int()):
                name = msg.get_string().decode("utf-8", "surrogateescape")
                msg.get_string()                                   # the "ls -l" long name
                attrs = SFTPAttributes._from_msg(msg)
                if name in (".", ".."):
                    continue
                found.append(RemoteFile(name=name, size=int(attrs.st_size or 0), mtime=int(attrs.st_mtime or 0),
                                        mode=int(attrs.st_mode or 0)))
    finally:
        sftp._request(CMD_CLOSE, handle)
    return found


def _is_refusal(session: _Session, exc: BaseException) -> bool:
    """A server's answer to one request (no such file, permission denied), the connection alive."""
    return type(exc) in (OSError, FileNotFoundError, PermissionError) and session.alive()


# --- download -----------------------------------------------------------------------------------

def download(session: _Session, settings: SftpSettings, entry: RemoteFile, spool: Path, *,
             on_progress: Callable[[TransferProgress], None] | None = None,
             sleep: Callable[[float], None] = time.sleep) -> Path:
    """Fetch one listed file into ``spool/<name>``, resuming a partial download (module doc).

    :class:`FileSkip` when the file changed or the server refused it; :class:`SftpConnectError`
    when the connection could not be kept up within ``retries``."""
    import paramiko

    remote = settings.remote(entry.name)
    partial, meta, final = (_inside(spool / ".partial", entry.name), _inside(spool / ".meta", entry.name),
                            _inside(spool, entry.name))
    ident = {"remote": remote, "size": entry.size, "mtime": entry.mtime}
    if partial.exists():
        try:
            same = json.loads(meta.read_text()) == ident
        except (OSError, ValueError):
            same = False
        if not same or partial.stat().st_size > entry.size:
            log.info("%s: the partial download is of another version of the file, starting again", remote)
            partial.unlink()
    meta.write_text(json.dumps(ident))
    partial.touch()
    attempt = 0
    while True:
        attempt += 1
        offset = partial.stat().st_size if partial.exists() else 0
        try:
            sftp = session.open()
            now = sftp.lstat(remote)
            if not stat.S_ISREG(now.st_mode or 0) or (now.st_size, now.st_mtime) != (entry.size, entry.mtime):
                raise FileSkip(f"changed since listed (size {entry.size} → {now.st_size}), taken when complete")
            if offset < entry.size:
                if offset:
                    log.info("%s: resuming at byte %d of %d (attempt %d)", remote, offset, entry.size, attempt)
                _copy(sftp, remote, partial, offset, entry.size, attempt, on_progress)
            break
        except FileSkip:
            raise
        except SftpConnectError as exc:
            if not exc.retryable or attempt > settings.retries:
                raise
            failure = str(exc)
        except (OSError, EOFError, paramiko.SSHException, paramiko.SFTPError) as exc:
            if isinstance(exc, FileNotFoundError) and session.alive():
                raise FileSkip("gone from the server before it was downloaded") from None
            if _is_refusal(session, exc):
                raise FileSkip(f"refused by the server: {exc}") from None
            failure = f"{type(exc).__name__}: {exc}".rstrip(": ")
            if attempt > settings.retries:
                got = partial.stat().st_size if partial.exists() else 0
                raise SftpConnectError(f"{settings.where}: connection lost while downloading {remote} "
                                       f"(byte {got} of {entry.size}, {attempt} attempts): {failure}; "
                                       "the next run resumes from there", retryable=True) from None
        log.warning("%s: %s; reconnecting (attempt %d of %d)", remote, failure, attempt + 1, settings.retries + 1)
        session.close()
        sleep(min(settings.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S))
    got = partial.stat().st_size if partial.exists() else 0
    if got != entry.size:
        partial.unlink(missing_ok=True)
        raise FileSkip(f"downloaded {got} bytes, {entry.size} listed; taken again next run")
    os.replace(partial, final)
    meta.unlink(missing_ok=True)
    return final


def _inside(folder: Path, name: str) -> Path:
    """``folder/name``, refused unless it is a direct child of ``folder`` (defence in depth:
    :func:`check_name` refused such names already)."""
    joined = os.path.normpath(os.path.join(folder, name))
    if os.path.dirname(joined) != os.path.normpath(folder) or os.path.basename(joined) != name:
        raise FileSkip(f"refused local path for {name!r}")
    return Path(joined)


def _copy(sftp, remote: str, partial: Path, offset: int, size: int, attempt: int,
          on_progress: Callable[[TransferProgress], None] | None) -> None:
    start = offset
    fh = sftp.open(remote, "rb")
    try:
        fh.MAX_REQUEST_SIZE = READ_REQUEST_BYTES      # paramiko's default (32 KiB) is 20× slower
        fh.seek(offset)
        fh.prefetch(size, max_concurrent_requests=PREFETCH_REQUESTS)
        with open(partial, "ab") as out:
            while offset < size:
                block = fh.read(min(BLOCK_BYTES, size - offset))
                if not block:
                    raise FileSkip(f"ended at byte {offset} while {size} bytes were listed; taken when complete")
                out.write(block)
                offset += len(block)
                if on_progress is not None:
                    on_progress(TransferProgress(remote, offset, size, attempt, start))
    finally:
        try:
            fh.close()
        except Exception:   # noqa: BLE001 - the connection may be gone already
            pass


# --- after the import ---------------------------------------------------------------------------

def _exists(sftp, path: str) -> bool:
    try:
        sftp.lstat(path)
        return True
    except FileNotFoundError:
        return False


def _free_name(sftp, path: str, suffix: str = "") -> str:
    """``path + suffix``, or ``path.<UTC time>[-n] + suffix`` when taken (the suffix stays last,
    so a renamed file still ends with the done-suffix that keeps it from being taken again)."""
    if not _exists(sftp, path + suffix):
        return path + suffix
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        candidate = f"{path}.{stamp}" + (f"-{n}" if n else "") + suffix
        if not _exists(sftp, candidate):
            return candidate
    raise FileSkip(f"no free name for {path}")


def _make_dirs(sftp, path: str) -> None:
    parts = [p for p in path.split("/") if p]
    current = "/" if path.startswith("/") else ""
    for part in parts:
        current = posixpath.join(current, part) if current else part
        try:
            attrs = sftp.stat(current)
        except FileNotFoundError:
            sftp.mkdir(current)
            continue
        if not stat.S_ISDIR(attrs.st_mode or 0):
            raise FileSkip(f"archive_dir: {current} exists and is not a folder")


def apply_after(sftp, settings: SftpSettings, name: str, marker: str | None) -> str:
    """Do the ``after`` action on a file imported (and on its marker); what was done."""
    names = [name] + ([marker] if marker else [])
    if settings.after == "keep":
        return "kept"
    if settings.after == "delete":
        for n in names:
            sftp.remove(settings.remote(n))
        return "deleted"
    if settings.after == "rename":
        for n in names:
            sftp.rename(settings.remote(n), _free_name(sftp, settings.remote(n), settings.done_suffix))
        return f"renamed {settings.done_suffix}"
    _make_dirs(sftp, settings.archive_path)
    for n in names:
        sftp.rename(settings.remote(n), _free_name(sftp, posixpath.join(settings.archive_path, n)))
    return f"moved to {settings.archive_path}"


# --- the run ------------------------------------------------------------------------------------

def spool_dir(wb, source_name: str) -> Path:
    """Where the files of a source are downloaded: ``DATA_DIR/spool/<source>``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", source_name).lstrip(".") or "_"
    return wb.data_dir / "spool" / safe


@contextmanager
def _source_lock(spool: Path):
    spool.mkdir(parents=True, exist_ok=True)
    with open(spool / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _source_format(source):
    """The format (name or FormatSpec) the source's files are read with."""
    if source.mapping:
        from bluerocktel.mediation.custom import load_mapping

        return load_mapping(source.mapping)
    from bluerocktel.mediation import format_spec

    return format_spec(source.format).name


def _read_cursor(text: str | None) -> dict:
    try:
        cursor = json.loads(text) if text else {}
    except ValueError:
        cursor = {}
    if not isinstance(cursor, dict):
        cursor = {}
    return {k: dict(cursor.get(k) or {}) for k in ("seen", "taken", "refused")}


def collect(wb, source, actor: str = "collector", *,
            on_progress: Callable[[TransferProgress], None] | None = None,
            on_imported: Callable[[str, object], None] | None = None,
            sleep: Callable[[float], None] = time.sleep) -> CollectSummary:
    """Collect the complete files of an ``sftp://`` CDR source once (module doc).

    ``on_progress`` is called after each block downloaded, ``on_imported(name, ImportSummary)``
    after each import committed (before the remote action), ``sleep`` for every wait."""
    summary = CollectSummary(source=source.name, collector=Collector.SFTP.value)
    try:
        settings = parse_settings(source.url, source.options)
        fmt = _source_format(source)
    except UserFacingError as exc:
        summary.status, summary.error = "failed", f"CDR source {source.name}: {exc}"
        return summary
    spool = spool_dir(wb, source.name)
    with _source_lock(spool) as held:
        if not held:
            summary.status = "failed"
            summary.error = f"another collect run of CDR source {source.name} is in progress ({spool / '.lock'})"
            return summary
        for sub in (".partial", ".meta"):
            (spool / sub).mkdir(exist_ok=True)
        session = _Session(settings)
        try:
            _run(wb, source, actor, settings, fmt, spool, session, summary, on_progress, on_imported, sleep)
        except SftpConnectError as exc:
            summary.status = "failed"
            summary.error = f"{summary.error}; {exc}" if summary.error else str(exc)
        finally:
            session.close()
    return summary


def _list(session: _Session, settings: SftpSettings) -> list[RemoteFile]:
    sftp = session.open()
    try:
        return list_remote(sftp, settings.directory)
    except FileNotFoundError:
        raise SftpConnectError(f"{settings.where}: no such directory {settings.directory}") from None
    except PermissionError:
        raise SftpConnectError(f"{settings.where}: permission denied listing {settings.directory}") from None
    except Exception as exc:   # noqa: BLE001 - paramiko raises SSHException, EOFError, OSError…
        if _is_refusal(session, exc):
            raise SftpConnectError(f"{settings.where}: cannot list {settings.directory}: {exc}") from None
        raise SftpConnectError(f"{settings.where}: connection lost while listing {settings.directory}: "
                               f"{type(exc).__name__}: {exc}", retryable=True) from None


def _run(wb, source, actor, settings, fmt, spool, session, summary, on_progress, on_imported, sleep) -> None:
    import paramiko

    from bluerocktel.mediation import import_cdr_file

    cursor = _read_cursor(load_cursor(wb, source.id))
    files = _list(session, settings)
    plan = plan_files(files, settings, cursor, time.time())
    if settings.completion == "stable" and plan.unstable and settings.stable_wait:
        sleep(settings.stable_s + 0.01)
        files = _list(session, settings)
        plan = plan_files(files, settings, {**cursor, "seen": plan.seen}, time.time())
    listed = {f.name: f for f in files if f.regular}
    cursor["seen"] = plan.seen
    cursor["taken"] = {n: v for n, v in cursor["taken"].items() if n in listed}
    cursor["refused"] = {n: v for n, v in cursor["refused"].items() if n in listed}
    summary.skipped.extend(plan.skipped)
    summary.cursor = json.dumps(cursor, sort_keys=True)
    _clean_spool(spool, listed)
    errors: list[str] = []
    try:
        for local in sorted(p for p in spool.iterdir() if p.is_file() and p.name != ".lock" and p.name not in listed):
            # Downloaded whole by a run that died before importing it, and gone from the server
            # since: import it now (the ledger makes that a duplicate if it was imported).
            try:
                result = import_cdr_file(wb, local, fmt, source=source.name, actor=actor,
                                         collector=Collector.SFTP.value, remote_path=settings.remote(local.name),
                                         file_name=local.name)
            except UserFacingError as exc:
                summary.skipped.append(f"{show_name(local.name)} (left in the spool by an earlier run): "
                                       f"not imported: {exc}; moved to {spool / 'refused'}")
                (spool / "refused").mkdir(exist_ok=True)
                os.replace(local, spool / "refused" / local.name)
                continue
            summary.add(result)
            _keep_or_delete(spool, local, settings)
        for entry in plan.ready:
            shown = show_name(entry.name)
            remote = settings.remote(entry.name)
            try:
                local = download(session, settings, entry, spool, on_progress=on_progress, sleep=sleep)
            except FileSkip as exc:
                summary.skipped.append(f"{shown}: {exc}")
                continue
            try:
                result = import_cdr_file(wb, local, fmt, source=source.name, actor=actor,
                                         collector=Collector.SFTP.value, remote_path=remote, file_name=entry.name)
            except UserFacingError as exc:
                # The whole file is unusable (ledgered failed): not downloaded again until it changes.
                summary.skipped.append(f"{shown}: not imported: {exc}")
                cursor["refused"][entry.name] = [entry.size, entry.mtime, str(exc)]
                local.unlink(missing_ok=True)
                continue
            except Exception as exc:     # a bug, not the file's fault: the others still go in
                errors.append(f"{shown}: import failed: {type(exc).__name__}: {exc}")
                continue
            summary.add(result)
            if on_imported is not None:
                on_imported(entry.name, result)
            if settings.after == "keep":
                cursor["taken"][entry.name] = entry.key
            else:
                try:
                    apply_after(session.open(), settings, entry.name, plan.markers.get(entry.name))
                    cursor["seen"].pop(entry.name, None)
                except (FileSkip, SftpConnectError, OSError, EOFError, paramiko.SSHException,
                        paramiko.SFTPError) as exc:
                    if isinstance(exc, SftpConnectError) and not exc.retryable:
                        raise
                    errors.append(f"{shown}: imported, but the remote action ({settings.after}) failed: "
                                  f"{type(exc).__name__}: {exc} (the next run finds it a duplicate and tries again)")
                    if not session.alive():
                        session.close()
            _keep_or_delete(spool, local, settings)
    finally:
        summary.cursor = json.dumps(cursor, sort_keys=True)
        if errors:
            summary.status = "failed"
            summary.error = "; ".join(errors)


def _keep_or_delete(spool: Path, local: Path, settings: SftpSettings) -> None:
    if settings.keep_local:
        kept = spool / "imported"
        kept.mkdir(exist_ok=True)
        os.replace(local, kept / local.name)
    else:
        local.unlink(missing_ok=True)


def _clean_spool(spool: Path, listed: dict[str, RemoteFile]) -> None:
    """Drop partial downloads of files no longer on the server."""
    for sub in (".partial", ".meta"):
        for path in (spool / sub).iterdir():
            if path.name not in listed:
                path.unlink(missing_ok=True)
