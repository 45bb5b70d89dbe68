"""``bluerocktel serve --dashboards`` runs the web app and a Voila child, and stops both."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bluerocktel.serving import voila_command

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _status(url: str) -> int | None:
    try:
        return urllib.request.urlopen(url, timeout=2).status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _wait_for(url: str, proc: subprocess.Popen, seconds: float = 60) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = _status(url)
        if status is not None:
            return status
        assert proc.poll() is None, f"server exited with {proc.returncode}"
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer in {seconds} s")


def test_voila_command_uses_the_venv_and_culls_kernels():
    cmd = voila_command("127.0.0.1", 8866)
    assert cmd[:4] == [sys.executable, "-m", "voila", "dashboards/"]
    assert "--no-browser" in cmd and "--port=8866" in cmd and "--Voila.ip=127.0.0.1" in cmd
    assert any(arg.startswith("--MappingKernelManager.cull_idle_timeout=") for arg in cmd)


@pytest.mark.slow
def test_serve_with_dashboards_starts_and_stops_voila(tmp_path):
    port, voila_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k != "BLUEROCKTEL_DATABASE_URL"}
    env.update(BLUEROCKTEL_DATA_DIR=str(tmp_path / "data"), BLUEROCKTEL_DASHBOARDS_PORT=str(voila_port))
    proc = subprocess.Popen([sys.executable, "-m", "bluerocktel", "serve", "--dashboards", "--host", "127.0.0.1",
                             "--port", str(port)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert _wait_for(f"http://127.0.0.1:{port}/api/v1/openapi.json", proc) == 200
        assert _wait_for(f"http://127.0.0.1:{voila_port}/", proc) == 403   # up, and refusing without a session
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while _status(f"http://127.0.0.1:{voila_port}/") is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _status(f"http://127.0.0.1:{voila_port}/") is None, "Voila outlived the web process"
