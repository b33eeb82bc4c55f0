"""Load test of POST /parse: throughput, latency percentiles and server memory.

Starts `voicenlu.server.serve` as a subprocess on a free loopback port for each worker count,
with micro-batching off and on, sends a fixed number of requests at each concurrency, and
stops by itself. Writes serve.md and serve.json. The load generator shares the machine with
the server, so run it when nothing else is busy, and read the figures as one machine's.

    python benchmarks/serve_load.py runs/snips/bundle --requests 7000 --workers 1,2
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
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
    "import sys; from voicenlu.server import serve; serve(sys.argv[1], port=int(sys.argv[2]), "
    "microbatch_ms=float(sys.argv[3]), workers=int(sys.argv[4]))"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def rss_mb(pid: int) -> float:
    """Resident memory of a server and its worker processes, from /proc (Linux)."""
    total_kb = 0
    for proc in _descendants(pid):
        try:
            lines = Path(f"/proc/{proc}/status").read_text().splitlines()
        except OSError:
            continue
        total_kb += sum(int(x.split()[1]) for x in lines if x.startswith("VmRSS:"))
    return round(total_kb / 1024, 1)


@contextmanager
def running_server(bundle: Path, microbatch_ms: float, workers: int, start_timeout: float):
    """Yield (url, pid) of a server subprocess; stop it afterwards whatever happens."""
    port = free_port()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(bundle), str(port), str(microbatch_ms), str(workers)],
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


def _request(text: str) -> bytes:
    body = json.dumps({"text": text}).encode()
    head = (
        "POST /parse HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.1 response with a Content-Length."""
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def load(url: str, requests: int, concurrency: int) -> tuple[list[float], int, float]:
    """Send ``requests`` parses over ``concurrency`` keep-alive connections.

    A hand-written HTTP/1.1 client: a general one (httpx) spends more CPU per request than
    the server does, and here the two share the machine. Each answer must be a 200 with a
    parse result in its body. Returns (latencies of good answers, errors, seconds).
    """
    host, port = url.removeprefix("http://").split(":")
    payloads = [_request(t) for t in TEXTS]
    latencies: list[float] = []
    errors = 0
    sent = 0

    async def connection() -> None:
        nonlocal sent, errors
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while sent < requests:
                payload = payloads[sent % len(payloads)]
                sent += 1
                start = time.perf_counter()
                try:
                    writer.write(payload)
                    status, body = await _answer(reader)
                    ok = status == 200 and "intent" in json.loads(body)
                except (OSError, ValueError, asyncio.IncompleteReadError):
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - start)
                else:  # the connection may be in any state: start a fresh one
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - start


def percentile_ms(sorted_seconds: list[float], q: float) -> float | None:
    if not sorted_seconds:
        return None
    index = min(len(sorted_seconds) - 1, round(q * (len(sorted_seconds) - 1)))
    return round(sorted_seconds[index] * 1000, 2)


def measure(bundle, requests, concurrencies, microbatch_ms, workers, start_timeout) -> list[dict]:
    rows = []
    for n_workers, window in itertools.product(workers, (0.0, microbatch_ms)):
        with running_server(bundle, window, n_workers, start_timeout) as (url, pid):
            # Warm every worker's connection handling and model.
            asyncio.run(load(url, 50 * n_workers, 2 * n_workers))
            for concurrency in concurrencies:
                rss_start = rss_mb(pid)
                latencies, errors, seconds = asyncio.run(load(url, requests, concurrency))
                latencies.sort()
                row = {
                    "workers": n_workers,
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
        "| workers | concurrency | micro-batch (ms) | requests | errors | req/s | p50 ms | p95 ms "
        "| p99 ms | RSS start MB | RSS end MB |"
    )
    lines = [
        "# Serving load test: POST /parse",
        "",
        f"Bundle `{setup['bundle']}`, {setup['cpus']} CPUs ({setup['machine']}), Python "
        f"{setup['python']}. Each worker runs its model on one thread; the load "
        f"generator (one process, keep-alive connections) ran on the same machine: "
        f"`{setup['command']}`. Micro-batch 0 means off. RSS is the server's, all its "
        "processes together.",
        "",
        header,
        "|" + "---|" * 11,
    ]
    for r in rows:
        cells = [r[k] for k in ("workers", "concurrency", "microbatch", "requests", "errors")]
        cells.append(r["rps"])
        cells += [r[k] for k in ("p50_ms", "p95_ms", "p99_ms", "rss_start_mb", "rss_end_mb")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    (out / "serve.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="the model bundle to serve")
    parser.add_argument("--requests", type=int, default=1000, help="requests per row")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated levels")
    parser.add_argument("--microbatch-ms", type=float, default=2.0, help="window when on")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for serve.md/json")
    parser.add_argument("--start-timeout", type=float, default=120.0, help="seconds")
    args = parser.parse_args()
    try:
        concurrencies = [int(c) for c in args.concurrency.split(",")]
        workers = [int(w) for w in args.workers.split(",")]
    except ValueError:
        parser.error("--concurrency and --workers take comma-separated whole numbers")
    if args.requests < 1 or min(concurrencies + workers) < 1 or args.microbatch_ms <= 0:
        parser.error("--requests, --concurrency, --workers and --microbatch-ms must be positive")
    rows = measure(
        args.bundle, args.requests, concurrencies, args.microbatch_ms, workers, args.start_timeout
    )
    setup = {
        "command": "python benchmarks/serve_load.py " + " ".join(sys.argv[1:]),
        "bundle": str(args.bundle),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_report(rows, setup, args.out)


if __name__ == "__main__":
    main()
