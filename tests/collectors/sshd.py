"""A real OpenSSH ``sshd`` for the SFTP collector tests (DESIGN.md §8).

:class:`SftpServer` starts ``/usr/sbin/sshd -D -e -f CONFIG`` on a free port of 127.0.0.1 with
its own ed25519 host key and configuration: key-only authentication, no PAM, and one user
(``brt-sftp``, a system user created if missing) that may only use ``internal-sftp``, chrooted.

OpenSSH refuses a chroot unless the directory and every parent are root-owned and not group or
world writable, so the server lives under ``/var/lib/bluerocktel-test-sftp/<random>/`` (not in
the temp dir, whose ancestors are world-writable)::

    <random>/            root 0755   everything of this server, removed by stop()
      etc/               root 0755   sshd_config, host key, authorized_keys, client key, known_hosts
      chroot/            root 0755   ChrootDirectory: the SFTP user's "/"
        cdr/             brt-sftp    writable by the SFTP user; each test gets a folder in it

Needs root (to run sshd, create the user and chroot) and ``/usr/sbin/sshd``; :func:`unavailable`
says why not when they are missing, so the tests skip with that reason.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
BASE = Path("/var/lib/bluerocktel-test-sftp")
USER = "brt-sftp"


def unavailable() -> str | None:
    """Why a test SFTP server cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "the SFTP tests start a chrooted OpenSSH sshd and need root"
    if not os.access(SSHD, os.X_OK):
        return f"{SSHD} is missing (Debian package openssh-server)"
    if not os.access(SSH_KEYGEN, os.X_OK):
        return "ssh-keygen is missing (Debian package openssh-client)"
    return None


def _run(*cmd: str) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def ensure_user(name: str = USER) -> pwd.struct_passwd:
    """The SFTP test user, created once (idempotent, safe across parallel test workers)."""
    BASE.mkdir(mode=0o755, exist_ok=True)
    os.chmod(BASE, 0o755)
    with open(BASE / ".user.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            pwd.getpwnam(name)
        except KeyError:
            _run("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name)
        # A locked account ("!" in the password field) is refused even for key authentication
        # when PAM is off: "*" means "no password" without locking it.
        _run("usermod", "-p", "*", name)
    return pwd.getpwnam(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SftpServer:
    """One sshd with its own host key, config, chroot and client key (see the module doc)."""

    def __init__(self) -> None:
        self.user = ensure_user()
        self.root = BASE / uuid.uuid4().hex[:12]
        self.etc = self.root / "etc"
        self.chroot = self.root / "chroot"
        self.cdr = self.chroot / "cdr"
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.log = self.root / "sshd.log"

    # --- set up ---------------------------------------------------------------------------

    def start(self) -> "SftpServer":
        for folder in (self.root, self.etc, self.chroot):
            folder.mkdir(mode=0o755)
            os.chmod(folder, 0o755)
        self.cdr.mkdir(mode=0o755)
        os.chown(self.cdr, self.user.pw_uid, self.user.pw_gid)
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)   # privilege separation dir

        _run(SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "test-host", "-f", str(self.host_key_file))
        _run(SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "collector", "-f", str(self.client_key))
        authorized = self.etc / "authorized_keys"
        authorized.write_text(Path(f"{self.client_key}.pub").read_text())
        os.chmod(authorized, 0o644)
        self._launch()
        return self

    @property
    def host_key_file(self) -> Path:
        return self.etc / "ssh_host_ed25519_key"

    @property
    def client_key(self) -> Path:
        return self.etc / "client_ed25519"

    @property
    def host_key_line(self) -> str:
        """The server's public host key, ``ssh-ed25519 AAAA…`` (the ``host_key`` option)."""
        kind, blob = Path(f"{self.host_key_file}.pub").read_text().split()[:2]
        return f"{kind} {blob}"

    @property
    def known_hosts(self) -> Path:
        """A known_hosts file naming this server as OpenSSH does for a non-22 port."""
        path = self.etc / f"known_hosts-{self.port}"
        path.write_text(f"[127.0.0.1]:{self.port} {self.host_key_line}\n")
        return path

    def _config(self) -> Path:
        config = self.etc / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key_file}",
            f"PidFile {self.etc / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.etc / 'authorized_keys'}",
            "StrictModes no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin no",
            "UsePAM no",
            "LogLevel VERBOSE",
            "MaxStartups 50",
            "Subsystem sftp internal-sftp",
            f"AllowUsers {USER}",
            f"Match User {USER}",
            f"    ChrootDirectory {self.chroot}",
            "    ForceCommand internal-sftp",
            "    AllowTcpForwarding no",
            "    X11Forwarding no",
            "",
        ]))
        return config

    def _launch(self) -> None:
        """Start sshd on a free port (a new one if another process took it meanwhile)."""
        for _ in range(5):
            self.port = free_port()
            config = self._config()
            _run(SSHD, "-t", "-f", str(config))          # the config is valid
            with open(self.log, "ab") as log:
                self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log)
            if self._wait_ready():
                return
            self.stop_process()
        raise RuntimeError(f"sshd did not start; its log:\n{self.log.read_text(errors='replace')}")

    def _wait_ready(self, timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-2.0-"):
                        return True
            except OSError:
                time.sleep(0.05)
        return False

    # --- the test's handles -----------------------------------------------------------------

    def url(self, folder: str) -> str:
        return f"sftp://{USER}@127.0.0.1:{self.port}/{folder.strip('/')}"

    def options(self, **extra) -> dict:
        """Collector options that reach this server (client key, known_hosts) plus ``extra``."""
        return {"key_file": str(self.client_key), "known_hosts": str(self.known_hosts), **extra}

    def make_folder(self) -> tuple[Path, str]:
        """A fresh folder for one test: its path on this machine and its SFTP path."""
        name = uuid.uuid4().hex[:10]
        path = self.cdr / name
        path.mkdir(mode=0o755)
        os.chown(path, self.user.pw_uid, self.user.pw_gid)
        return path, f"/cdr/{name}"

    def put(self, folder: Path, name: str | bytes, data: bytes, mtime: float | None = None) -> Path:
        """Write a file as the switch would (owned by the SFTP user); ``mtime`` in epoch seconds."""
        path = Path(os.fsdecode(os.path.join(os.fsencode(folder), os.fsencode(name))))
        with open(os.fsencode(path), "wb") as fh:
            fh.write(data)
        os.chown(os.fsencode(path), self.user.pw_uid, self.user.pw_gid)
        if mtime is not None:
            os.utime(os.fsencode(path), (mtime, mtime))
        return path

    def listdir(self, path: str) -> list[str]:
        """The names in SFTP folder ``path``, sorted, as the SFTP user sees them over SFTP."""
        import paramiko

        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect("127.0.0.1", self.port, username=USER, key_filename=str(self.client_key),
                       allow_agent=False, look_for_keys=False, timeout=10)
        try:
            return sorted(client.open_sftp().listdir(path))
        finally:
            client.close()

    def session_pids(self) -> list[int]:
        """The processes sshd forked for client connections (descendants of the listener)."""
        if self.process is None:
            return []
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("PPid:"):
                    parents[int(entry.name)] = int(line.split()[1])
        found, frontier = [], {self.process.pid}
        while frontier:
            children = {pid for pid, parent in parents.items() if parent in frontier}
            found += sorted(children)
            frontier = children
        return found

    def drop_connections(self) -> int:
        """Kill every client connection (SIGKILL its sshd processes); the listener stays up."""
        pids = self.session_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    # --- tear down --------------------------------------------------------------------------

    def stop_process(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.drop_connections()
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        self.stop_process()
        shutil.rmtree(self.root, ignore_errors=True)
