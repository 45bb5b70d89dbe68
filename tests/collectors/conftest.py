"""The SFTP test server: one real OpenSSH sshd per test session (per xdist worker), see sshd.py."""

from __future__ import annotations

import pytest

from .sshd import SftpServer, unavailable


@pytest.fixture(scope="session")
def sftp_server():
    """A running chrooted, key-only, sftp-only sshd on 127.0.0.1 (skips with the reason when it cannot run)."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    server = SftpServer().start()
    yield server
    server.stop()


@pytest.fixture
def sftp_folder(sftp_server):
    """A fresh folder on the server for one test: (its path on this machine, its SFTP path)."""
    return sftp_server.make_folder()
