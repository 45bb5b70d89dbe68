"""REST API under load: the real server (``bluerocktel serve``) with the demo data, 50 concurrent clients.

    .venv/bin/python benchmarks/api.py [--database sqlite|postgresql] [--clients 50] [--read-s 20]
                                       [--paced-s 20] [--rate 500] [--mixed-s 60] [--workers 2]
                                       [--accounts 300] [--cdrs 20000] [--data-dir DIR] [--database-url URL]

Setup (not timed): ``bluerocktel demo --no-serve`` into a temporary data dir (or ``--data-dir``,
reused when it holds a demo already) on SQLite, or on a fresh PostgreSQL database
(``brt_bench_*`` on ``BLUEROCKTEL_BENCH_PG``, default ``postgresql+psycopg://postgres@127.0.0.1:5432``,
dropped at the end); one API token per client for the demo admin; then ``bluerocktel serve`` in a
subprocess on a free port (``--workers`` uvicorn processes, default 2: one per core). The per-token rate limit is raised
out of the way (``BLUEROCKTEL_API_RATE_PER_MINUTE``): this measures the server, not the limiter.

1. ``GET /api/v1/invoices`` (50 per page) from ``--clients`` clients for ``--read-s`` seconds:
   p50/p99 latency and requests/s. Target (issue 6): p99 under 100 ms and at least 500 requests/s
   on PostgreSQL on 2 cores. Each client sends its next request as soon as it has the answer (a closed
   loop): this is the most the server gives, and the latency is what 50 clients queueing for it
   see (Little's law: 50 clients at N requests/s wait 50/N s on average).
2. ``GET /api/v1/invoices`` offered at ``--rate`` requests/s (default 500) in all by the same clients for
   ``--paced-s`` seconds, each on a fixed schedule (wrk2's constant-throughput model), latency counted
   from the instant each request was due: p50/p99 at that load, and whether the server kept up.
3. A mixed load for ``--mixed-s`` seconds: reads of invoices, accounts, services and tickets
   (85 %), writes (15 %): ``POST /tickets`` and ``POST /tickets/{id}/replies`` with an
   ``Idempotency-Key`` each. Every answer must be 2xx: errors are counted and must be 0.

The load generator is this process (asyncio streams on uvloop, raw HTTP/1.1 keep-alive connections), on the same
machine: its CPU competes with the server's, so the figures are a floor. ``/proc/loadavg`` is
printed before and after, and the server's CPU time per request (from ``/proc/<pid>/stat``), which
load on the machine does not inflate much: 1000 / that figure is what one core could serve.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import uvloop

REPO = Path(__file__).resolve().parent.parent
ADMIN = "demo-admin@bluerock.localhost"
PG_SERVER = os.environ.get("BLUEROCKTEL_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
READS = [("GET", "/api/v1/invoices", 30), ("GET", "/api/v1/accounts", 20), ("GET", "/api/v1/services", 20),
         ("GET", "/api/v1/tickets", 15)]
WRITES = [("POST", "ticket", 8), ("POST", "reply", 7)]


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process and its live descendants (``serve --workers``) have used so far."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    tree, total = {pid}, 0
    for child, (parent, _) in sorted(stats.items()):
        if parent in tree:
            tree.add(child)
    for member in tree:
        total += stats.get(member, (0, 0))[1]
    return total / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(env: dict, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "bluerocktel", *args], cwd=REPO, env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"bluerocktel {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def create_pg_database() -> tuple[str, str]:
    import sqlalchemy as sa

    name = f"brt_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name, f"{PG_SERVER}/{name}"


def drop_pg_database(name: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def make_tokens(env: dict, count: int) -> list[str]:
    """``count`` API tokens of the demo admin, created in this process on the server's database."""
    os.environ.update(env)
    from sqlalchemy import select

    from bluerocktel.db.models import User
    from bluerocktel.security import create_api_token
    from bluerocktel.workbench import Workbench

    wb = Workbench.open(env["BLUEROCKTEL_DATA_DIR"])
    try:
        with wb.db.transaction() as s:
            user = s.scalar(select(User).where(User.email == ADMIN))
            return [create_api_token(s, user, f"bench-{i}") for i in range(count)]
    finally:
        wb.close()


def start_server(env: dict, port: int, log_path: Path, workers: int = 1) -> subprocess.Popen:
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "bluerocktel", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", str(workers)],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}); see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit(f"the server did not answer within 120 s; see {log_path}")


class Stats:
    def __init__(self):
        self.latencies_ms: list[float] = []
        self.errors: dict[str, int] = {}

    def add(self, label: str, started: float, status: int | None) -> None:
        self.latencies_ms.append((time.perf_counter() - started) * 1000)
        if status is None or status >= 400:
            key = f"{label} -> {status or 'connection error'}"
            self.errors[key] = self.errors.get(key, 0) + 1

    def summary(self, seconds: float) -> dict:
        lat = sorted(self.latencies_ms)
        pct = statistics.quantiles(lat, n=100) if len(lat) > 1 else lat * 99
        return {"requests": len(lat), "requests_per_s": round(len(lat) / seconds, 1),
                "p50_ms": round(pct[49], 1), "p99_ms": round(pct[98], 1), "errors": sum(self.errors.values()),
                "error_kinds": self.errors}


class RawClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: a load generator that costs the machine
    tens of microseconds per request (httpx costs about a millisecond, which the server's core would lose)."""

    def __init__(self, host: str, port: int, token: str):
        self.host, self.port = host, port
        self.head = f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes | None = None,
                      headers: dict | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        if body is not None:
            extra += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(f"{method} {path} HTTP/1.1\r\n{self.head}{extra}\r\n".encode() + (body or b""))
        status = int((await self.reader.readline()).split(b" ", 2)[1])
        length, chunked, close = 0, False, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            parts = []
            while size := int((await self.reader.readline()).strip(), 16):
                parts.append(await self.reader.readexactly(size + 2))
            await self.reader.readline()
            data = b"".join(p[:-2] for p in parts)
        else:
            data = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def timed(client: RawClient, stats: Stats, label: str, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None, started: float | None = None) -> tuple[int, bytes] | None:
    """One request, its latency counted from ``started`` (default: now; a paced client passes the
    instant the request was due, so a late send counts as latency: no coordinated omission)."""
    started = time.perf_counter() if started is None else started
    try:
        status, data = await client.request(method, path, body, headers)
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
        await client.close()
        stats.add(label, started, None)
        return None
    stats.add(label, started, status)
    return status, data


def measure(server_pid: int, base: str, tokens: list[str], seconds: float, step) -> dict:
    """:func:`run_clients` plus the server's CPU time per request: the figure a busy machine does not skew
    (requests/s per core it would serve = 1000 / ``server_cpu_ms_per_request``)."""
    cpu = cpu_seconds(server_pid)
    figures = uvloop.run(run_clients(base, tokens, seconds, step))
    figures["server_cpu_ms_per_request"] = round((cpu_seconds(server_pid) - cpu) * 1000 / figures["requests"], 2)
    return figures


async def run_clients(base: str, tokens: list[str], seconds: float, step) -> dict:
    """``len(tokens)`` clients calling ``step(client, stats, rng, state)`` in a loop for ``seconds``."""
    stats = Stats()
    deadline = time.monotonic() + seconds
    host, port = base.split("//")[1].split(":")

    async def worker(i: int, token: str):
        rng, state = random.Random(i), {"tickets": []}
        client = RawClient(host, int(port), token)
        try:
            while time.monotonic() < deadline:
                await step(client, stats, rng, state)
        finally:
            await client.close()

    started = time.monotonic()
    await asyncio.gather(*(worker(i, token) for i, token in enumerate(tokens)))
    return stats.summary(time.monotonic() - started)


async def invoice_list(client, stats, rng, state):
    await timed(client, stats, "GET /invoices", "GET", "/api/v1/invoices?limit=50")


async def paced_invoice_list(base: str, tokens: list[str], seconds: float, rate: float) -> dict:
    """``len(tokens)`` clients sending ``GET /invoices`` at ``rate`` requests/s in all, each on its own
    fixed schedule (wrk2's constant-throughput model): the latency of a given load, not of a saturated
    server."""
    stats = Stats()
    host, port = base.split("//")[1].split(":")
    interval = len(tokens) / rate
    started = time.perf_counter()
    deadline = started + seconds

    async def worker(i: int, token: str):
        client = RawClient(host, int(port), token)
        due = started + interval * i / len(tokens)
        try:
            while due < deadline:
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await timed(client, stats, "GET /invoices", "GET", "/api/v1/invoices?limit=50", started=due)
                due += interval
        finally:
            await client.close()

    await asyncio.gather(*(worker(i, token) for i, token in enumerate(tokens)))
    figures = stats.summary(time.perf_counter() - started)
    figures["offered_per_s"] = rate
    return figures


def mixed_step(account_ids: list[int]):
    choices = READS + WRITES
    weights = [w for *_, w in choices]

    async def step(client, stats, rng, state):
        method, what, _ = rng.choices(choices, weights)[0]
        key = {"Idempotency-Key": uuid.uuid4().hex}
        if method == "GET":
            await timed(client, stats, f"GET {what}", "GET", f"{what}?limit=50")
        elif what == "ticket" or not state["tickets"]:
            body = {"subject": "Load test", "body": "Line down since 9:00?", "account_id": rng.choice(account_ids)}
            r = await timed(client, stats, "POST /tickets", "POST", "/api/v1/tickets", json.dumps(body).encode(), key)
            if r is not None and r[0] == 201:
                state["tickets"].append(json.loads(r[1])["id"])
        else:
            ticket = rng.choice(state["tickets"])
            await timed(client, stats, "POST /replies", "POST", f"/api/v1/tickets/{ticket}/replies",
                        json.dumps({"body": "We are looking into it."}).encode(), key)

    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--read-s", type=float, default=20)
    parser.add_argument("--mixed-s", type=float, default=60)
    parser.add_argument("--paced-s", type=float, default=20)
    parser.add_argument("--rate", type=float, default=500, help="offered requests/s of the paced invoice list")
    parser.add_argument("--accounts", type=int, default=300)
    parser.add_argument("--cdrs", type=int, default=20_000)
    parser.add_argument("--data-dir", default=None, help="reuse (or build once) the demo here (SQLite)")
    parser.add_argument("--database-url", default=None,
                        help="reuse this database, holding a demo built with the same --data-dir (not dropped)")
    parser.add_argument("--workers", type=int, default=2, help="server processes (serve --workers)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="brt-apibench-")).resolve()
    env = {**os.environ, "BLUEROCKTEL_DATA_DIR": str(data_dir), "BLUEROCKTEL_API_RATE_PER_MINUTE": "100000000",
           "BLUEROCKTEL_API_RATE_BURST": "1000000"}
    env.pop("BLUEROCKTEL_DATABASE_URL", None)
    pg_name = None
    if args.database_url:
        env["BLUEROCKTEL_DATABASE_URL"] = args.database_url
    elif args.database == "postgresql":
        pg_name, env["BLUEROCKTEL_DATABASE_URL"] = create_pg_database()
    server = None
    try:
        if pg_name or (not args.database_url and not (data_dir / "bluerocktel.db").exists()):
            print(f"building the demo ({args.accounts} accounts, {args.cdrs:,} CDRs) in {data_dir} ...", flush=True)
            t0 = time.monotonic()
            cli(env, "demo", "--no-serve", "--accounts", str(args.accounts), "--cdrs", str(args.cdrs))
            print(f"  demo built in {time.monotonic() - t0:.0f} s", flush=True)
        tokens = make_tokens(env, args.clients)
        port = free_port()
        server = start_server(env, port, data_dir / "bench-server.log", args.workers)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {tokens[0]}"}) as c:
            account_ids = [a["id"] for a in c.get("/api/v1/accounts?limit=500").json()["items"]]
            invoices = c.get("/api/v1/invoices?limit=50").json()["items"]
        print(f"server on {base} ({args.database}); {len(account_ids)} accounts, first invoice page "
              f"{len(invoices)} rows; load before: {loadavg()}", flush=True)
        figures = {"database": args.database, "clients": args.clients, "loadavg_before": loadavg()}
        uvloop.run(run_clients(base, tokens, 2, invoice_list))                        # warm-up
        figures["invoice_list"] = measure(server.pid, base, tokens, args.read_s, invoice_list)
        figures["loadavg_after_reads"] = loadavg()
        cpu = cpu_seconds(server.pid)
        figures["paced"] = uvloop.run(paced_invoice_list(base, tokens, args.paced_s, args.rate))
        figures["paced"]["server_cpu_ms_per_request"] = round(
            (cpu_seconds(server.pid) - cpu) * 1000 / figures["paced"]["requests"], 2)
        figures["mixed"] = measure(server.pid, base, tokens, args.mixed_s, mixed_step(account_ids))
        figures["loadavg_after"] = loadavg()
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if pg_name:
            drop_pg_database(pg_name)
        if not args.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for name in ("invoice_list", "paced", "mixed"):
            f = figures[name]
            print(f"{name:>12}: {f['requests_per_s']:7.1f} req/s  p50 {f['p50_ms']:6.1f} ms  p99 {f['p99_ms']:6.1f} ms"
                  f"  {f['requests']:,} requests  errors {f['errors']} {f['error_kinds'] or ''}"
                  f"  server CPU {f['server_cpu_ms_per_request']} ms/request")
        print(f"load average: before {figures['loadavg_before']} | after reads {figures['loadavg_after_reads']} | "
              f"after {figures['loadavg_after']}")
    return 1 if figures["mixed"]["errors"] or figures["invoice_list"]["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
