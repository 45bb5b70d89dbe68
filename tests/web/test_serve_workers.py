"""``bluerocktel serve --workers 2``: two processes share the port; the API and the Panel portal
work whichever process takes a connection (a portal page's websocket may reach the other process,
which creates the session again: no sticky routing needed). Real server, real Chromium, SQLite."""

from __future__ import annotations

import http.client
import json
import os
import time
from pathlib import Path

import pytest
from browser_support import needs_chromium, sign_in, sqlite_env, start_serve, stop

pytestmark = needs_chromium


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from sample_operator import PASSWORD, build_sample_operator
    from sqlalchemy import select

    from bluerocktel.db.models import User
    from bluerocktel.security import create_api_token
    from bluerocktel.workbench import Workbench

    data_dir = tmp_path_factory.mktemp("workers") / "data"
    saved = os.environ.pop("BLUEROCKTEL_DATABASE_URL", None)
    try:
        wb = Workbench.open(data_dir)
        sample = build_sample_operator(wb, real_pdf=False)
        with wb.db.transaction() as s:
            admin = s.scalar(select(User).where(User.role == "admin"))
            token = create_api_token(s, admin, "workers-test")
        wb.close()
    finally:
        if saved is not None:
            os.environ["BLUEROCKTEL_DATABASE_URL"] = saved
    proc, port = start_serve(data_dir, sqlite_env(data_dir), workers=2)
    yield {"proc": proc, "port": port, "sample": sample, "password": PASSWORD, "token": token}
    stop(proc)


def _workers(proc) -> list[int]:
    # uvicorn's supervisor spawns the workers (multiprocessing also starts a resource tracker)
    return [pid for pid in _children(proc.pid)
            if b"multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes()
            and b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()]


def test_two_worker_processes_each_serve_the_api(server):
    workers = _workers(server["proc"])
    assert len(workers) == 2
    before = {pid: _cpu_ticks(pid) for pid in workers}
    bodies = set()
    deadline = time.monotonic() + 60
    # new connection per request: the kernel hands them to either process; both must do real work
    while time.monotonic() < deadline:
        for _ in range(40):
            conn = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=30)
            conn.request("GET", "/api/v1/invoices?limit=5", headers={"Authorization": f"Bearer {server['token']}"})
            response = conn.getresponse()
            assert response.status == 200
            bodies.add(response.read())
            conn.close()
        if all(_cpu_ticks(pid) - before[pid] >= 5 for pid in workers):
            break
    else:
        pytest.fail(f"one worker did no work: {[(pid, _cpu_ticks(pid) - before[pid]) for pid in workers]}")
    assert len(bodies) == 1                                # the same answer from either process
    assert [i["number"] for i in json.loads(bodies.pop())["items"]]


def test_portal_renders_on_every_load_with_two_workers(server, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.goto(f"http://portal.bluerock.localhost:{server['port']}/portal")
    sign_in(page, "alice@martin.example", server["password"])
    page.get_by_text("FA-2026-000001").wait_for(timeout=30_000)
    for _ in range(5):          # each load's page request and websocket may reach either process
        page.reload()
        page.get_by_text("FA-2026-000001").wait_for(timeout=30_000)
        assert page.get_by_text("AZ-2026-000001").count() == 0
    context.close()
