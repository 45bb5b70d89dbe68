"""The real server in a subprocess, driven by headless Chromium (DESIGN.md §8).

Runs on SQLite only (to keep time down). Skipped, with the reason, where /usr/bin/chromium is
missing. Page load times are printed (``-s`` shows them) and kept in ``LOAD_TIMES``.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from browser_support import needs_chromium, sign_in, sqlite_env, start_serve, stop

SCREENSHOTS = Path(os.environ.get("BLUEROCKTEL_SCREENSHOTS", "/tmp/bluerocktel-screenshots"))
LOAD_TIMES: dict[str, float] = {}

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from sample_operator import PASSWORD, build_sample_operator

    from bluerocktel.workbench import Workbench

    data_dir = tmp_path_factory.mktemp("browser") / "data"
    saved = os.environ.pop("BLUEROCKTEL_DATABASE_URL", None)
    try:
        wb = Workbench.open(data_dir)
        sample = build_sample_operator(wb, real_pdf=True)
        wb.close()
    finally:
        if saved is not None:
            os.environ["BLUEROCKTEL_DATABASE_URL"] = saved
    proc, port = start_serve(data_dir, sqlite_env(data_dir))
    yield {"port": port, "sample": sample, "password": PASSWORD, "log": data_dir / "server.log"}
    stop(proc)


def _url(server, host: str, path: str) -> str:
    return f"http://{host}:{server['port']}{path}"


def _sign_in(page, server, email: str) -> None:
    sign_in(page, email, server["password"])


def _timed(name: str, action) -> float:
    started = time.perf_counter()
    action()
    LOAD_TIMES[name] = elapsed = time.perf_counter() - started
    print(f"\n{name}: {elapsed * 1000:.0f} ms")
    return elapsed


def test_customer_signs_in_sees_invoices_downloads_the_pdf_and_pages_the_call_log(server, browser):
    from pypdf import PdfReader

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.goto(_url(server, "portal.bluerock.localhost", "/portal"))
    assert "/login?next=/portal" in page.url                      # not signed in: the login page
    assert page.locator("#brand-name").inner_text() == "BlueRock Telecom"
    _sign_in(page, server, "alice@martin.example")
    _timed("portal first load after sign-in", lambda: page.get_by_text("FA-2026-000001").wait_for(timeout=20_000))
    assert page.url.endswith("/portal")
    assert page.title() == "BlueRock Telecom · Customer area"
    header = page.locator(".brt-header")
    assert header.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(11, 61, 145)"
    assert "Boulangerie Martin" in page.locator("body").inner_text() or page.get_by_text("Boulangerie Martin").count()

    with page.expect_download() as download_info:
        page.get_by_text("Download PDF").first.click()
    pdf_bytes = Path(download_info.value.path()).read_bytes()
    assert pdf_bytes.startswith(b"%PDF")
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf_bytes)).pages)
    assert "FA-2026-000001" in text
    assert download_info.value.suggested_filename == "FA-2026-000001.pdf"

    page.get_by_text("Call log", exact=True).click()
    page.get_by_text("Page 1 of 3 · 60 calls").wait_for(timeout=10_000)
    assert page.get_by_text("+33472000001").count() == 25
    page.screenshot(path=str(SCREENSHOTS / "portal-calls.png"), full_page=True)
    page.get_by_text("Older ›").click()
    page.get_by_text("Page 2 of 3 · 60 calls").wait_for(timeout=10_000)
    page.get_by_text("Invoices", exact=True).click()
    page.get_by_text("FA-2026-000001").wait_for()
    page.screenshot(path=str(SCREENSHOTS / "portal-invoices.png"), full_page=True)

    # a second and a third page load render too (extensions listed explicitly, DESIGN.md §4)
    for n in (2, 3):
        _timed(f"portal reload {n}", lambda: (page.reload(),
                                              page.get_by_text("FA-2026-000001").wait_for(timeout=20_000)))
    assert page.get_by_text("AZ-2026-000001").count() == 0 and page.get_by_text("Cabinet Durand").count() == 0
    # another account's PDF through the browser session: 404
    other = f"/portal/invoices/{server['sample'].invoice_ids['durand']}.pdf"
    assert page.evaluate("url => fetch(url).then(r => r.status)", other) == 404
    context.close()


def test_second_brand_host_shows_the_second_brand(server, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.goto(_url(server, "espace.azur.localhost", "/login"))
    assert page.locator("#brand-name").inner_text() == "Espace Azur"
    assert page.title() == "Sign in · Espace Azur"
    assert page.locator("button[type=submit]").evaluate("e => getComputedStyle(e).backgroundColor") == \
        "rgb(0, 121, 107)"
    page.screenshot(path=str(SCREENSHOTS / "login-azur.png"))
    _sign_in(page, server, "bob@durand.example")
    page.get_by_text("AZ-2026-000001").wait_for(timeout=20_000)
    header = page.locator(".brt-header")
    from playwright.sync_api import expect

    expect(header).to_contain_text("Espace Azur", timeout=20_000)   # Panel may fill the pane a moment later
    assert header.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(0, 121, 107)"
    assert page.get_by_text("FA-2026-000001").count() == 0
    page.screenshot(path=str(SCREENSHOTS / "portal-azur.png"), full_page=True)
    context.close()


def test_staff_app_lists_accounts_and_billing_runs(server, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.goto(_url(server, "portal.bluerock.localhost", "/login"))
    _sign_in(page, server, "admin@bluerock.example")
    _timed("staff first load after sign-in", lambda: page.get_by_text("Cabinet Durand").wait_for(timeout=20_000))
    assert page.url.endswith("/staff")
    page.get_by_text("Billing runs", exact=True).click()
    page.get_by_text("completed").wait_for(timeout=10_000)
    page.screenshot(path=str(SCREENSHOTS / "staff.png"), full_page=True)
    # staff may not use the customer portal
    page.goto(_url(server, "portal.bluerock.localhost", "/portal"))
    assert page.url.endswith("/staff")
    context.close()
