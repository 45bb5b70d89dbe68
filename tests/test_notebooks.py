"""Every notebook of the repo runs against a small demo data dir; the revenue dashboard renders in Voila.

Notebooks are found by glob under ``notebooks/``, ``dashboards/`` and ``pipelines/``, so a new
notebook is executed without touching this file. A notebook with a ``parameters`` cell gets an
injected cell after it (as papermill does) setting the names it declares among ``data_dir``,
``period`` and ``dry_run`` (pipelines run as dry runs on their own copy of the data dir).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import httpx
import nbformat
import pytest
from browser_support import free_port
from nbclient import NotebookClient

from sqlalchemy import select

from bluerocktel import reports
from bluerocktel.db.models import User
from bluerocktel.demo import run_demo
from bluerocktel.security import SESSION_COOKIE, sign_session
from bluerocktel.serving import start_dashboards, stop_process
from bluerocktel.workbench import Workbench

ROOT = Path(__file__).resolve().parent.parent
PERIOD = "2026-10"
NOTEBOOKS = sorted(p for folder in ("notebooks", "dashboards", "pipelines") for p in (ROOT / folder).rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    """A data dir (SQLite) holding a small demo operator whose month is imported, rated and billed."""
    path = tmp_path_factory.mktemp("demo") / "data"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("BLUEROCKTEL_DATABASE_URL", raising=False)
        mp.setenv("BLUEROCKTEL_DATA_DIR", str(path))
        wb = Workbench.open(path)
        try:
            run_demo(wb, accounts=8, cdrs=1_500, period=PERIOD, seed=7, out=lambda _text: None)
        finally:
            wb.close()
    return path


@pytest.fixture
def data_copy(demo_dir, tmp_path, monkeypatch) -> Path:
    """A private copy of the demo data dir, set as BLUEROCKTEL_DATA_DIR for kernels and servers."""
    copy = tmp_path / "data"
    shutil.copytree(demo_dir, copy)
    monkeypatch.delenv("BLUEROCKTEL_DATABASE_URL", raising=False)
    monkeypatch.setenv("BLUEROCKTEL_DATA_DIR", str(copy))
    return copy


def inject_parameters(nb, values: dict) -> None:
    """Papermill-style: a cell after the ``parameters`` cell overriding the names it declares."""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            declared = set(re.findall(r"^(\w+)\s*=", cell.source, flags=re.M))
            source = "\n".join(f"{name} = {value!r}" for name, value in values.items() if name in declared)
            if source:
                injected = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
                nb.cells.insert(index + 1, injected)
            return


def test_notebooks_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in NOTEBOOKS}
    assert {"dashboards/revenue.ipynb", "notebooks/traffic_analysis.ipynb"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_notebook_executes(path, data_copy):
    nb = nbformat.read(path, as_version=4)
    inject_parameters(nb, {"data_dir": str(data_copy), "period": PERIOD, "dry_run": True})
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    if path.name == "revenue.ipynb":
        html = "".join(o.get("data", {}).get("text/html", "") for c in nb.cells if c.cell_type == "code"
                       for o in c.get("outputs", []))
        assert 'id="revenue-overview"' in html and "BlueRock Télécom" in html


def rendered_html(page: str) -> list[str]:
    """The HTML outputs of a Voila page: Voila 0.5 ships each cell output as JSON for its front end."""
    blocks = re.findall(r'<script type="application/vnd.voila.cell-output\+json">(.*?)</script>', page, flags=re.S)
    html = [json.loads(b).get("data", {}).get("text/html", "") for b in blocks]
    return ["".join(h) if isinstance(h, list) else h for h in html]


def _session_cookie(wb, email: str) -> dict[str, str]:
    with wb.db.session() as s:
        user = s.scalar(select(User).where(User.email == email))
        return {SESSION_COOKIE: sign_session(wb.secret_key, user)}


def answering_dashboards(wb, deadline: float):
    """Voila started as `serve --dashboards` does, once it answers, and its base URL. Voila exits on a port in
    use (``port_retries=0``): when a test running in parallel took the free port first, try another."""
    for _ in range(3):
        port = free_port()
        server = start_dashboards(wb, "127.0.0.1", port)
        while server.poll() is None:
            assert time.monotonic() < deadline, "voila did not answer within 300 s"
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
                return server, f"http://127.0.0.1:{port}"
            except httpx.TransportError:
                time.sleep(0.5)
    raise AssertionError("voila exited three times (ports taken?)")


@pytest.mark.slow
def test_voila_serves_the_revenue_dashboard_to_signed_in_finance_staff_only(data_copy, tmp_path):
    wb = Workbench.open(data_copy, migrate=False)
    try:
        expected = reports.revenue_by_brand(wb, PERIOD)
        billing = _session_cookie(wb, "demo-billing@bluerock.localhost")
        sales = _session_cookie(wb, "demo-sales@bluerock.localhost")
        deadline = time.monotonic() + 300
        server, base = answering_dashboards(wb, deadline)
    finally:
        wb.close()
    assert not expected.empty, "the demo issued no invoice"
    url = f"{base}/voila/render/revenue.ipynb?period={PERIOD}"
    try:
        anonymous = httpx.get(url, timeout=10)
        assert anonymous.status_code == 403                  # no session cookie
        assert httpx.get(url, cookies={SESSION_COOKIE: "forged"}, timeout=10).status_code == 403
        assert httpx.get(url, cookies=sales, timeout=10).status_code == 403   # staff, but no invoices:read
        chunks = []
        with httpx.stream("GET", url, cookies=billing, timeout=httpx.Timeout(10, read=120)) as response:
            for chunk in response.iter_text():   # Voila streams the page cell by cell
                chunks.append(chunk)
                assert time.monotonic() < deadline, f"page not rendered in 300 s: {''.join(chunks)[-2000:]}"
            status, page = response.status_code, "".join(chunks)
        assert status == 200, page[-2000:]
        html = "".join(rendered_html(page))
        assert 'id="revenue-overview"' in html, f"no revenue table in the page: {page[-3000:]}"
        table = html[html.index('id="revenue-overview"'):]
        table = table[:table.index("</table>")]
        for brand, total in zip(expected["brand"], expected["total_eur"]):
            assert f"<td>{brand}</td>" in table and f"<td>{total}</td>" in table
        assert 'id="revenue-by-product"' in html            # the period asked for in the query string
        assert "Traceback" not in page
    finally:
        stop_process(server)


def test_dashboards_on_a_port_in_use_fail_instead_of_moving_to_another_port(data_copy):
    import socket

    wb = Workbench.open(data_copy, migrate=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = start_dashboards(wb, "127.0.0.1", taken.getsockname()[1])
        wb.close()
        try:
            assert server.wait(timeout=60) != 0          # the URL printed is never a lie
        finally:
            stop_process(server)
