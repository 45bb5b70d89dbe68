"""Run the web process (uvicorn + :func:`portal_app.server.create_app`) and the Voila dashboards.

``serve`` is the one ASGI process of DESIGN.md §4; with ``dashboards=True`` it also starts Voila
on ``BLUEROCKTEL_DASHBOARDS_PORT`` as a child process and stops it on exit. Voila starts one
kernel per page view (about 190 MB each), so idle kernels are culled. Panel and Voila are
imported only here, inside the functions, never when ``bluerocktel`` is imported.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from bluerocktel.settings import get_setting
from bluerocktel.workbench import Workbench

REPO_ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS_DIR = REPO_ROOT / "dashboards"

# Voila kernels idle this long are shut down (seconds).
KERNEL_CULL_IDLE_S = 600
KERNEL_CULL_INTERVAL_S = 60


def serve(wb: Workbench, host: str, port: int, dashboards: bool = False, workers: int | None = None) -> None:
    """Serve the API, the sign-in pages, the portal and the staff app until interrupted, in
    ``workers`` processes (default: the ``web_workers`` setting) sharing the port. A Panel session
    whose websocket reaches another process than its page is created again there (Bokeh's
    ``create_session_if_needed``), so no sticky routing is needed."""
    import uvicorn

    from portal_app.server import create_app

    workers = int(workers if workers is not None else get_setting("web_workers"))
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    voila = start_dashboards(wb, host, int(get_setting("dashboards_port"))) if dashboards else None
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the handler it
    # found: make that handler an exception, so that the ``finally`` below stops Voila.
    previous = signal.signal(signal.SIGTERM, _raise_system_exit)
    try:
        print(f"BlueRockTEL on http://{host}:{port}/  (API docs: /api/docs)", flush=True)
        if workers == 1:
            uvicorn.run(create_app(wb), host=host, port=int(port), log_level="info", proxy_headers=False)
        else:   # each worker process opens the same data dir and database (portal_app.server.app_from_environment)
            os.environ["BLUEROCKTEL_DATA_DIR"] = str(wb.data_dir)
            os.environ["BLUEROCKTEL_DATABASE_URL"] = wb.db.url
            uvicorn.run("portal_app.server:app_from_environment", factory=True, workers=workers, host=host, access_log=True,
                        port=int(port), log_level="info", proxy_headers=False)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if voila is not None:
            stop_process(voila)


def _raise_system_exit(signum, _frame):
    raise SystemExit(128 + signum)


def voila_command(host: str, port: int) -> list[str]:
    # port_retries=0: on a port in use Voila exits instead of moving to the next one unannounced.
    return [sys.executable, "-m", "voila", "dashboards/", "--no-browser", f"--port={int(port)}",
            "--Voila.port_retries=0", f"--Voila.ip={host}",
            "--Voila.identity_provider_class=portal_app.voila_identity.SessionCookieIdentityProvider",
            f"--MappingKernelManager.cull_idle_timeout={KERNEL_CULL_IDLE_S}",
            f"--MappingKernelManager.cull_interval={KERNEL_CULL_INTERVAL_S}"]


def _voila_env(wb: Workbench) -> dict[str, str]:
    env = dict(os.environ)
    env["BLUEROCKTEL_DATA_DIR"] = str(wb.data_dir)
    env["BLUEROCKTEL_DATABASE_URL"] = wb.db.url
    return env


def start_dashboards(wb: Workbench, host: str, port: int) -> subprocess.Popen:
    """Start Voila on the repository's ``dashboards/`` folder as a child process."""
    if not DASHBOARDS_DIR.is_dir():
        raise FileNotFoundError(f"no dashboards folder at {DASHBOARDS_DIR}")
    print(f"Voila dashboards on http://{host}:{port}/", flush=True)
    return subprocess.Popen(voila_command(host, port), cwd=REPO_ROOT, env=_voila_env(wb))


def stop_process(proc: subprocess.Popen, timeout_s: float = 10) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def serve_dashboards(wb: Workbench, host: str, port: int) -> None:
    """Run only the Voila server, in the foreground, until interrupted."""
    proc = start_dashboards(wb, host, port)
    previous = signal.signal(signal.SIGTERM, _raise_system_exit)
    try:
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_process(proc)
