"""Real servers in subprocesses and headless Debian Chromium driven by Playwright (DESIGN.md §8)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--host-resolver-rules=MAP *.localhost 127.0.0.1"]
REPO = Path(__file__).resolve().parents[1]

needs_chromium = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (Debian package chromium)"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_url(url: str, proc: subprocess.Popen, log_path: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"{url} did not answer:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)


def start_serve(data_dir: Path, env: dict[str, str], workers: int = 1) -> tuple[subprocess.Popen, int]:
    """``bluerocktel serve`` on a free port, started and answering; its output in DATA_DIR/server.log."""
    port = free_port()
    log_path = data_dir / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bluerocktel", "serve", "--data-dir", str(data_dir),
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)], cwd=REPO,
                                env={**env, "PYTHONUNBUFFERED": "1"}, stdout=log, stderr=subprocess.STDOUT)
    wait_for_url(f"http://127.0.0.1:{port}/login", proc, log_path)
    return proc, port


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def sqlite_env(data_dir: Path) -> dict[str, str]:
    """The environment of a subprocess working on ``data_dir`` with its embedded SQLite store."""
    env = {k: v for k, v in os.environ.items() if k != "BLUEROCKTEL_DATABASE_URL"}
    env["BLUEROCKTEL_DATA_DIR"] = str(data_dir)
    return env


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


def sign_in(page, email: str, password: str) -> None:
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("button[type=submit]")
