"""Load test of POST /parse: throughput, latency percentiles and worker memory.

Starts `voicenlu.server.serve` as a subprocess on a free loopback port, sends a fixed number of
requests at each concurrency, with micro-batching off and on, and stops by itself. Writes
benchmarks/serve.md and benchmarks/serve.json. The load generator shares the machine with the
server, so run it when nothing else is busy, and read the figures as one machine's.

    python benchmarks/serve_load.py runs/snips/bundle --requests 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
TEXTS = [
    "add Diamonds to my roadtrip playlist",
    "will it rain in Paris tomorrow",
    "book a table for two at a sushi place tonight",
    "play something by Miles Davis",
    "rate this book four out of six stars",
    "find the movie schedule for the nearest cinema",
    "i want to hear the album Thriller by Michael Jackson on spotify",
    "what is the weather like in Berlin this weekend",
]
SERVE = (
    "import sys; from voicenlu.server import serve; "
    "serve(sys.argv[1], port=int(sys.argv[2]), microbatch_ms=float(sys.argv[3]))"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for process {pid}")


@contextmanager
def running_server(bundle: Path, microbatch_ms: float, start_timeout: float):
    """Yield (url, pid) of a server subprocess; stop it afterwards whatever happens."""
    port = free_port()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(bundle), str(port), str(microbatch_ms)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + start_timeout
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    sys.exit(f"The server exited with code {proc.returncode}:\n{log.read()}")
                if time.monotonic() > deadline:
                    sys.exit(f"The server was not ready after {start_timeout:.0f} s.")
                try:
                    if httpx.get(url + "/ready", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            yield url, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def load(url: str, requests: int, concurrency: int) -> tuple[list[float], int, float]:
    """Send ``requests`` parses from ``concurrency`` workers: (ok latencies, errors, seconds)."""
    latencies: list[float] = []
    errors = 0
    sent = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal sent, errors
            while sent < requests:
                text = TEXTS[sent % len(TEXTS)]
                sent += 1
                start = time.perf_counter()
                try:
                    response = await client.post("/parse", json={"text": text})
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - start


def percentile_ms(sorted_seconds: list[float], q: float) -> float | None:
    if not sorted_seconds:
        return None
    index = min(len(sorted_seconds) - 1, round(q * (len(sorted_seconds) - 1)))
    return round(sorted_seconds[index] * 1000, 2)


def measure(bundle, requests, concurrencies, microbatch_ms, start_timeout) -> list[dict]:
    rows = []
    for window in (0.0, microbatch_ms):
        with running_server(bundle, window, start_timeout) as (url, pid):
            asyncio.run(load(url, min(requests, 20), 1))  # warm the connection and the model
            for concurrency in concurrencies:
                rss_start = rss_mb(pid)
                latencies, errors, seconds = asyncio.run(load(url, requests, concurrency))
                latencies.sort()
                row = {
                    "concurrency": concurrency,
                    "microbatch": window,
                    "requests": requests,
                    "errors": errors,
                    "rps": round(len(latencies) / seconds, 1),
                    "p50_ms": percentile_ms(latencies, 0.50),
                    "p95_ms": percentile_ms(latencies, 0.95),
                    "p99_ms": percentile_ms(latencies, 0.99),
                    "rss_start_mb": rss_start,
                    "rss_end_mb": rss_mb(pid),
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def write_report(rows: list[dict], setup: dict, out: Path) -> None:
    (out / "serve.json").write_text(json.dumps({"setup": setup, "rows": rows}, indent=2) + "\n")
    header = (
        "| concurrency | micro-batch (ms) | requests | errors | req/s | p50 ms | p95 ms "
        "| p99 ms | RSS start MB | RSS end MB |"
    )
    lines = [
        "# Serving load test: POST /parse",
        "",
        f"Bundle `{setup['bundle']}`, {setup['cpus']} CPUs ({setup['machine']}), Python "
        f"{setup['python']}. One uvicorn worker; the load generator ran on the same machine "
        f"(`python benchmarks/serve_load.py`). Micro-batch 0 means off.",
        "",
        header,
        "|" + "---|" * 10,
    ]
    for r in rows:
        cells = [r[k] for k in ("concurrency", "microbatch", "requests", "errors", "rps")]
        cells += [r[k] for k in ("p50_ms", "p95_ms", "p99_ms", "rss_start_mb", "rss_end_mb")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    (out / "serve.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="the model bundle to serve")
    parser.add_argument("--requests", type=int, default=1000, help="requests per row")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated levels")
    parser.add_argument("--microbatch-ms", type=float, default=5.0, help="window when on")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for serve.md/json")
    parser.add_argument("--start-timeout", type=float, default=120.0, help="seconds")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    if args.requests < 1 or min(concurrencies) < 1 or args.microbatch_ms <= 0:
        parser.error("--requests, each --concurrency and --microbatch-ms must be positive")
    rows = measure(
        args.bundle, args.requests, concurrencies, args.microbatch_ms, args.start_timeout
    )
    setup = {
        "bundle": str(args.bundle),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_report(rows, setup, args.out)


if __name__ == "__main__":
    main()
