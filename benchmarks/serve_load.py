"""Load test of POST /parse against the model's own ceiling, plus where one request's time goes.

For each worker count, with micro-batching off and on: first the model-only ceiling (the same
number of processes, each calling ``Parser.parse`` in a loop with the server's thread settings,
no HTTP), then `voicenlu.server.serve` as a subprocess on a free loopback port, a fixed number
of requests at each concurrency, and a hostile mix (slow connections, oversized headers and
idle sockets beside the normal load). Ceiling and served rate are measured back to back in
one run, so both see the same machine. Also times each stage of one request in-process.
Writes serve.md and serve.json.

    python benchmarks/serve_load.py runs/snips/bundle --requests 7000 --microbatch-ms 0,2
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from voicenlu.experiments.provenance import provenance

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
# One worker's model loop, as the server runs it: one thread, no spinning between runs.
CEILING = (
    "import sys, time; from voicenlu.runtime import Parser; "
    "p = Parser.load(sys.argv[1], threads=1, spin_wait=False); texts = sys.argv[3:]; "
    "[p.parse(t) for t in texts * 5]; print('ready', flush=True)\n"
    "while sys.stdin.readline():\n"
    "    n, end = 0, time.perf_counter() + float(sys.argv[2]); start = time.perf_counter()\n"
    "    while time.perf_counter() < end:\n"
    "        p.parse(texts[n % len(texts)]); n += 1\n"
    "    print(n / (time.perf_counter() - start), flush=True)"
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


@contextmanager
def model_only(bundle: Path, workers: int, seconds: float):
    """``workers`` processes with the model loaded and warm, each calling the Parser in a loop
    on request; yields a function that runs them together once and returns their total
    requests a second (the ceiling)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CEILING, str(bundle), str(seconds), *TEXTS],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    try:
        for p in procs:
            if p.stdout.readline().strip() != "ready":
                sys.exit("A model-only process failed to start.")

        def run() -> float:
            for p in procs:
                p.stdin.write("go\n")
                p.stdin.flush()
            return round(sum(float(p.stdout.readline()) for p in procs), 1)

        yield run
    finally:
        for p in procs:
            p.stdin.close()
            p.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children so far, from /proc (Linux)."""
    total = 0
    for proc in _descendants(pid):
        try:
            fields = Path(f"/proc/{proc}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def hostile_traffic(url: str, stop: threading.Event) -> None:
    """Slow-drip connections, oversized headers and idle sockets until ``stop``."""
    host, port = url.removeprefix("http://").split(":")
    socks: list[socket.socket] = []

    def connect() -> socket.socket | None:
        try:
            return socket.create_connection((host, int(port)), timeout=2)
        except OSError:
            return None

    while not stop.is_set():
        while len(socks) < 100:  # slow ones: a byte of header a second; half say nothing
            sock = connect()
            if sock is None:
                break
            if len(socks) % 2:
                sock.sendall(b"GET /health HTTP/1.1\r\n")
            socks.append(sock)
        for sock in list(socks):
            try:
                sock.sendall(b"X")
            except OSError:
                socks.remove(sock)
                sock.close()
        big = connect()  # a 1 MiB header, cut off by the server after its limit
        if big is not None:
            try:
                big.sendall(b"GET /metadata HTTP/1.1\r\nX-Pad: " + b"a" * 2**20)
            except OSError:
                pass
            big.close()
        stop.wait(1.0)
    for sock in socks:
        sock.close()


def run_row(url, pid, requests, concurrency) -> dict:
    rss_start, cpu_start = rss_mb(pid), cpu_seconds(pid)
    own_start = resource.getrusage(resource.RUSAGE_SELF)
    latencies, errors, seconds = asyncio.run(load(url, requests, concurrency))
    own = resource.getrusage(resource.RUSAGE_SELF)
    latencies.sort()
    client_cpu = own.ru_utime + own.ru_stime - own_start.ru_utime - own_start.ru_stime
    return {
        "concurrency": concurrency,
        "requests": requests,
        "errors": errors,
        "rps": round(len(latencies) / seconds, 1),
        "p50_ms": percentile_ms(latencies, 0.50),
        "p95_ms": percentile_ms(latencies, 0.95),
        "p99_ms": percentile_ms(latencies, 0.99),
        "server_cpu_ms": round(1000 * (cpu_seconds(pid) - cpu_start) / requests, 3),
        "client_cpu_ms": round(1000 * client_cpu / requests, 3),
        "rss_start_mb": rss_start,
        "rss_end_mb": rss_mb(pid),
    }


def measure(bundle, requests, concurrencies, windows, workers, start_timeout) -> list[dict]:
    rows = []
    for n_workers, window in itertools.product(workers, windows):
        with (
            model_only(bundle, n_workers, seconds=8) as ceiling_now,
            running_server(bundle, window, n_workers, start_timeout) as (url, pid),
        ):
            asyncio.run(load(url, 50 * n_workers, 2 * n_workers))  # warm every worker
            for concurrency in [*concurrencies, "hostile"]:
                hostile = concurrency == "hostile"
                # The ceiling right before the served row (the server idle meanwhile), so
                # both see the same machine.
                ceiling = ceiling_now()
                stop = threading.Event()
                mix = threading.Thread(target=hostile_traffic, args=(url, stop), daemon=True)
                if hostile:
                    mix.start()
                    time.sleep(2)
                try:
                    level = max(concurrencies) if hostile else concurrency
                    row = run_row(url, pid, requests, level)
                finally:
                    stop.set()
                    if hostile:
                        mix.join()
                row = {
                    "workers": n_workers,
                    "microbatch": window,
                    "mix": "hostile" if hostile else "normal",
                    **row,
                    "ceiling_rps": ceiling,
                    "share_of_ceiling": round(row["rps"] / ceiling, 3),
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def breakdown(bundle: Path, repeats: int = 2000) -> dict:
    """CPU microseconds of one /parse request per stage, timed in this process."""
    from voicenlu.calibration import in_scope_scores, softmax
    from voicenlu.features import encode, pad_batch
    from voicenlu.runtime import Parser
    from voicenlu.server import create_app

    parser = Parser.load(bundle, threads=1, spin_wait=False)
    texts = [TEXTS[i % len(TEXTS)] for i in range(repeats)]

    def per_call(fn, args) -> float:
        """CPU time (all threads of this process), not wall time: other jobs on the machine
        stretch the wall clock, not the work."""
        for a in args[:50]:
            fn(a)
        start = time.process_time()
        for a in args:
            fn(a)
        return round(1e6 * (time.process_time() - start) / len(args), 1)

    encodings = [encode(parser.tokenizer, [t]) for t in TEXTS]
    feeds = [pad_batch(e, parser.pad_id) for e in encodings]
    names = [i.name for i in parser.session.get_inputs()]
    outputs = [parser.session.run(None, {k: f[k] for k in names}) for f in feeds]
    cycle = [i % len(TEXTS) for i in range(repeats)]
    stages = {
        "tokenise": per_call(lambda i: encode(parser.tokenizer, [TEXTS[i]]), cycle),
        "pad": per_call(lambda i: pad_batch(encodings[i], parser.pad_id), cycle),
        "model (onnxruntime)": per_call(
            lambda i: parser.session.run(None, {k: feeds[i][k] for k in names}), cycle
        ),
        "scores": per_call(
            lambda i: (
                softmax(outputs[i][0], parser.temperature),
                in_scope_scores(
                    outputs[i][0],
                    parser.calibration,
                    parser.scope.density(outputs[i][2]) if parser.scope else None,
                ),
            ),
            cycle,
        ),
    }
    whole = per_call(parser.parse, texts)
    stages["slots and result"] = round(whole - sum(stages.values()), 1)
    stages["Parser.parse, all of the above"] = whole

    app = create_app(parser, api_key="")
    bodies = [json.dumps({"text": t}).encode() for t in TEXTS]

    async def through_app(n: int) -> float:
        async with app.router.lifespan_context(app):
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": "/parse",
                "raw_path": b"/parse",
                "query_string": b"",
                "root_path": "",
                "server": ("127.0.0.1", 8000),
                "client": ("127.0.0.1", 5000),
                "state": {},
            }

            async def call(body: bytes) -> None:
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ]
                messages = [{"type": "http.request", "body": body, "more_body": False}]

                async def receive():
                    if messages:
                        return messages.pop()
                    await asyncio.Event().wait()  # the client stays: nothing more comes

                async def send(message):
                    pass

                await app({**scope, "headers": headers}, receive, send)

            for b in bodies * 10:
                await call(b)
            start = time.process_time()
            for i in range(n):
                await call(bodies[i % len(bodies)])
            return 1e6 * (time.process_time() - start) / n

    app_total = asyncio.run(through_app(repeats))
    stages["ASGI app: middleware, routing, validation, JSON (without the parse)"] = round(
        app_total - whole, 1
    )
    stages["ASGI app, all of the above"] = round(app_total, 1)
    return stages


def write_report(rows: list[dict], stages: dict, record: dict, setup: dict, out: Path) -> None:
    (out / "serve.json").write_text(
        json.dumps({**record, "setup": setup, "rows": rows, "breakdown_us": stages}, indent=2)
        + "\n"
    )
    header = (
        "| workers | micro-batch (ms) | traffic | concurrency | requests | errors | req/s "
        "| ceiling req/s | share | p50 ms | p95 ms | p99 ms | server CPU ms/req "
        "| client CPU ms/req | RSS start MB | RSS end MB |"
    )
    lines = [
        "# Serving load test: POST /parse",
        "",
        f"{setup['note']}",
        "",
        f"Bundle `{record['bundle']['path']}` (manifest digest "
        f"`{record['bundle']['digest'][:16]}`), {setup['cpus']} CPUs ({setup['machine']}), Python "
        f"{setup['python']}, load average {setup['load_before']} before the run. Each worker "
        "runs its model on one thread. The ceiling is the same number of processes calling "
        "`Parser.parse` in a loop on the same texts with the same thread settings, no HTTP, "
        "measured just before each served row. The load generator (one process, keep-alive "
        "connections) ran on the same machine; its CPU per request is shown. The hostile rows "
        "add 100 slow or silent connections and a 1 MiB header each second to the normal "
        f"load at the highest concurrency. Commit `{record['commit'][:12]}`, "
        f"{record['created']}. Command: `{record['command']}`.",
        "",
        header,
        "|" + "---|" * 16,
    ]
    keys = (
        "workers",
        "microbatch",
        "mix",
        "concurrency",
        "requests",
        "errors",
        "rps",
        "ceiling_rps",
        "share_of_ceiling",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "server_cpu_ms",
        "client_cpu_ms",
        "rss_start_mb",
        "rss_end_mb",
    )
    for r in rows:
        lines.append("| " + " | ".join(str(r[k]) for k in keys) + " |")
    normal = [r for r in rows if r["mix"] == "normal"]
    ends = {min(r["concurrency"] for r in normal), max(r["concurrency"] for r in normal)}
    lines += [
        "",
        "## The lowest and highest concurrency beside the model's own ceiling",
        "",
        "| workers | micro-batch (ms) | concurrency | served req/s | model-only req/s | share "
        "| p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['workers']} | {r['microbatch']} | {r['concurrency']} | {r['rps']} "
        f"| {r['ceiling_rps']} | {r['share_of_ceiling']} | {r['p50_ms']} | {r['p99_ms']} |"
        for r in normal
        if r["concurrency"] in ends
    ]
    lines += [
        "",
        "## Where one request's time goes",
        "",
        "CPU microseconds per request, in-process (no sockets), the request texts above in "
        "turn. Under load the server also spends its CPU on HTTP parsing, the event "
        "loop and the sockets: compare with server CPU ms/req in the table above.",
        "",
        "| stage | µs |",
        "|---|---|",
    ]
    lines += [f"| {name} | {us} |" for name, us in stages.items()]
    (out / "serve.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="the model bundle to serve")
    parser.add_argument("--requests", type=int, default=1000, help="requests per row")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated levels")
    parser.add_argument("--microbatch-ms", default="0,2", help="comma-separated windows (0: off)")
    parser.add_argument("--workers", default="2", help="comma-separated worker counts")
    parser.add_argument("--note", default="", help="a sentence on the conditions, for serve.md")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for serve.md/json")
    parser.add_argument("--start-timeout", type=float, default=600.0, help="seconds")
    parser.add_argument(
        "--breakdown-repeats", type=int, default=500, help="requests timed per stage"
    )
    args = parser.parse_args()
    try:
        concurrencies = [int(c) for c in args.concurrency.split(",")]
        workers = [int(w) for w in args.workers.split(",")]
        windows = [float(w) for w in args.microbatch_ms.split(",")]
    except ValueError:
        parser.error("--concurrency, --workers and --microbatch-ms take comma-separated numbers")
    if args.requests < 1 or min(concurrencies + workers) < 1 or min(windows) < 0:
        parser.error("--requests, --concurrency and --workers must be positive, windows 0 or more")
    record = provenance(bundle=args.bundle)
    load_before = round(os.getloadavg()[0], 2)
    stages = breakdown(args.bundle, args.breakdown_repeats)
    rows = measure(args.bundle, args.requests, concurrencies, windows, workers, args.start_timeout)
    setup = {
        "note": args.note,
        "load_before": load_before,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_report(rows, stages, record, setup, args.out)


if __name__ == "__main__":
    main()
