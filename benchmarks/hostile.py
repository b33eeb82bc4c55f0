"""Hostile probe of `voicenlu serve --workers 2` with an API key, on loopback, with the
shipped defaults: attacks one by one (each with what it should get and what it got), then a
load of normal requests with a share of hostile ones, watching /health, 5xx answers and
memory, then attacks on the bundle and on shutdown. Writes hostile.md and hostile.json.

    python benchmarks/hostile.py BUNDLE --requests 3000 --hostile-share 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from serve_load import TEXTS, free_port, rss_mb  # noqa: E402

from voicenlu.experiments.provenance import provenance  # noqa: E402

KEY = "hostile-probe-key-0123456789"
AUTH = f"Authorization: Bearer {KEY}\r\n".encode()
HANG = 30.0  # seconds after which an attack that should have ended is taken to hang
# What a client can send into a connection the server has closed before its sends fail: the
# kernels of both ends buffer a few MiB on loopback. A server that reads on takes it all.
BUFFERED_MIB = 16


@contextmanager
def server(bundle: Path, *flags: str):
    port = free_port()
    env = {**os.environ, "VOICENLU_API_KEY": KEY}
    cli = [sys.executable, "-m", "voicenlu", "serve", str(bundle), "--port", str(port), *flags]
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(cli, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        ready = 0
        while ready < 8:  # several answers in a row: both workers are up
            if proc.poll() is not None:
                log.seek(0)
                sys.exit(f"The server exited with code {proc.returncode}:\n{log.read()}")
            if time.monotonic() > deadline:
                sys.exit("The server was not ready after 600 s.")
            try:
                answer = httpx.get(url + "/ready", headers={"Authorization": f"Bearer {KEY}"})
                ok = answer.status_code == 200
                ready = ready + 1 if ok else 0
            except httpx.TransportError:
                ready = 0
            time.sleep(0.2)
        yield url, proc, log
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)


def connect(url: str, rcvbuf: int | None = None) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(HANG)
    sock.connect((host, int(port)))
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except OSError:
        pass
    return data


def status_of(answer: bytes) -> str:
    parts = answer.split(b" ", 2)
    return parts[1].decode() if len(parts) > 1 and answer.startswith(b"HTTP/") else "none"


def request(head: str, body: bytes = b"", auth: bool = True, extra: str = "") -> bytes:
    line = f"{head} HTTP/1.1\r\nHost: x\r\n{extra}".encode() + (AUTH if auth else b"")
    return line + b"Content-Length: %d\r\n\r\n" % len(body) + body


def exchange(url: str, data: bytes) -> tuple[bytes, float]:
    """Send ``data`` and read until the server closes; (answer, seconds)."""
    sock, start = connect(url), time.monotonic()
    sock.sendall(data)
    answer = read_all(sock)
    sock.close()
    return answer, time.monotonic() - start


def json_post(path: str, body: dict | bytes, auth=True, ctype="application/json") -> bytes:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return request(f"POST {path}", raw, auth, f"Content-Type: {ctype}\r\nConnection: close\r\n")


def drip_until_closed(sock: socket.socket, drip: bytes, every: float) -> tuple[bool, bytes, float]:
    """Send ``drip`` every ``every`` s until the server closes (True) or HANG s pass."""
    received, start = b"", time.monotonic()
    sock.settimeout(every)
    while time.monotonic() - start < HANG:
        try:
            chunk = sock.recv(65536)
            if not chunk:
                return True, received, time.monotonic() - start
            received += chunk
        except TimeoutError:
            pass
        except OSError:
            return True, received, time.monotonic() - start
        try:
            sock.sendall(drip)
        except OSError:
            return True, received, time.monotonic() - start
    return False, received, time.monotonic() - start


def wav(seconds: float) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0" * int(16000 * seconds))
    return out.getvalue()


def metric(url: str, sample: str) -> float:
    text = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(sample))


# --- The attacks: each returns (expected, observed, ok) -------------------------------------


def simple(path_or_data, expected_status: str, what: str):
    """An attack whose answer is one status, read until the server closes."""

    def attack(url):
        answer, seconds = exchange(url, path_or_data)
        got = status_of(answer)
        is_json = b"application/json" in answer.split(b"\r\n\r\n")[0].lower()
        return what, f"{got} in {seconds:.2f} s, json={is_json}", got == expected_status and is_json

    return attack


def big_header(url):
    sock, start, sent = connect(url), time.monotonic(), 0
    sock.sendall(b"GET /metadata HTTP/1.1\r\nHost: x\r\nX-Pad: ")
    try:
        while sent < 64 * 2**20:
            sock.sendall(b"a" * 65536)
            sent += 65536
    except OSError:
        pass
    got = status_of(read_all(sock))
    sock.close()
    observed = f"{got} after {sent / 2**20:.2f} MiB sent, {time.monotonic() - start:.2f} s"
    expected = f"431, and closed before {BUFFERED_MIB} MiB of a 64 MiB header"
    return expected, observed, got == "431" and sent < BUFFERED_MIB * 2**20


def many_headers(url):
    fields = "".join(f"X-{i}: 1\r\n" for i in range(100))
    answer, _ = exchange(url, f"GET /metadata HTTP/1.1\r\nHost: x\r\n{fields}\r\n".encode())
    return "431 (more than 64 fields)", status_of(answer), status_of(answer) == "431"


def silent(url):
    answer, seconds = exchange(url, b"")
    ok = status_of(answer) == "408" and seconds < 12
    return "408 after the 10 s header timeout", f"{status_of(answer)} in {seconds:.1f} s", ok


def slow_headers(url):
    sock = connect(url)
    sock.sendall(b"GET /health HTTP/1.1\r\n")
    ended, answer, seconds = drip_until_closed(sock, b"X", 0.5)
    sock.close()
    ok = ended and status_of(answer) == "408" and seconds < 12
    return "408 after 10 s of a byte every 0.5 s", f"{status_of(answer)} in {seconds:.1f} s", ok


def slow_body(url):
    sock = connect(url)
    head = b"POST /parse HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + AUTH
    sock.sendall(head + b"Content-Length: 100\r\n\r\n{")
    ended, answer, seconds = drip_until_closed(sock, b" ", 0.5)
    sock.close()
    ok = ended and status_of(answer) == "408" and seconds < 12
    return "408 after the 10 s body timeout", f"{status_of(answer)} in {seconds:.1f} s", ok


def unread_body(head: str, auth: bool, expected: str):
    def attack(url):
        sock = connect(url)
        extra = "Content-Type: application/json\r\n"
        data = f"{head} HTTP/1.1\r\nHost: x\r\n{extra}".encode() + (AUTH if auth else b"")
        sock.sendall(data + b"Content-Length: 100000000\r\n\r\n{")
        ended, answer, seconds = drip_until_closed(sock, b"x" * 1024, 0.05)
        sock.close()
        ok = ended and status_of(answer) == expected
        what = f"{expected}, then the connection closed though body bytes keep coming"
        state = "closed" if ended else "still open"
        return what, f"{status_of(answer)}, {state} after {seconds:.2f} s", ok

    return attack


def endless_chunked(path: str, auth: bool, expected: str):
    def attack(url):
        sock, sent = connect(url), 0
        extra = "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n{extra}".encode())
        sock.sendall((AUTH if auth else b"") + b"\r\n")
        chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
        try:
            while sent < 256 * 16:
                sock.sendall(chunk)
                sent += 1
        except OSError:
            pass
        got = status_of(read_all(sock))
        sock.close()
        mib = sent / 16
        what = f"{expected}, and closed before {BUFFERED_MIB} MiB of an endless body"
        return what, f"{got} after {mib:.2f} MiB sent", got == expected and mib < BUFFERED_MIB

    return attack


def crlf_keepalive(url):
    sock = connect(url)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    ended, answer, seconds = drip_until_closed(sock, b"\r\n", 0.5)
    sock.close()
    ok = ended and status_of(answer) == "200" and seconds < 7
    state = "closed" if ended else "still open"
    return "closed 5 s after the answer, line breaks or not", f"{state} after {seconds:.1f} s", ok


def idle_keepalive(url):
    sock = connect(url)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    start = time.monotonic()
    answer = read_all(sock)
    seconds = time.monotonic() - start
    sock.close()
    ok = status_of(answer) == "200" and seconds < 7
    return "closed 5 s after its answer", f"closed after {seconds:.1f} s", ok


def not_reading(url):
    """Clients that pipeline 1,000 schema requests (10 MB of answers, more than the kernel's
    largest send buffer) and never read: the server is cut off from its answers."""
    socks = []
    for _ in range(40):
        sock = connect(url, rcvbuf=4096)
        sock.sendall((b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n") * 1000)
        socks.append(sock)
    start, alive = time.monotonic(), socks
    while alive and time.monotonic() - start < HANG:
        time.sleep(0.5)
        alive = [sock for sock in alive if established(sock)]
    seconds = time.monotonic() - start
    for sock in socks:
        sock.close()
    return (
        "all cut off (10 s after their answers stop going out)",
        f"{len(alive)}/40 still open {seconds:.1f} s after the last connected",
        not alive,
    )


def established(sock: socket.socket) -> bool:
    """Whether the server has neither closed nor reset the connection (Linux TCP_INFO)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == 1  # TCP_ESTABLISHED


def conn_flood(url):
    socks = [connect(url) for _ in range(1100)]  # past 512 per worker
    time.sleep(0.5)
    statuses = []
    for _ in range(6):
        try:
            statuses.append(httpx.get(url + "/health", timeout=5).status_code)
        except httpx.TransportError:
            statuses.append(0)
    for sock in socks:
        sock.close()
    time.sleep(0.5)
    after = httpx.get(url + "/health", timeout=5).status_code
    ok = 503 in statuses and after == 200
    return "503 with Retry-After past the cap, 200 once they close", f"{statuses}, then {after}", ok


def half_open_flood(url):
    socks = []
    for _ in range(1100):
        sock = connect(url)
        sock.sendall(b"POST /parse HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n{")
        socks.append(sock)
    start, healthy = time.monotonic(), 0
    while time.monotonic() - start < HANG:
        for sock in socks:
            try:
                sock.sendall(b"x")
            except OSError:
                pass
        try:
            healthy = httpx.get(url + "/health", timeout=5).status_code
        except httpx.TransportError:
            healthy = 0
        if healthy == 200:
            break
        time.sleep(0.2)
    for sock in socks:
        sock.close()
    seconds = time.monotonic() - start
    ok = healthy == 200
    return (
        "/health answers while 1,100 refused clients send body bytes",
        f"{healthy} after {seconds:.1f} s",
        ok,
    )


def disconnect_counted(url):
    before = metric(url, 'voicenlu_requests_total{endpoint="/parse/batch",status="499"}')
    body = json.dumps({"texts": [("play the song " + "la " * 400)[:1000]] * 16}).encode()
    sock = connect(url)
    sock.sendall(json_post("/parse/batch", body))
    time.sleep(0.05)
    sock.close()
    deadline, after = time.monotonic() + HANG, before
    while after == before and time.monotonic() < deadline:
        time.sleep(0.2)
        after = metric(url, 'voicenlu_requests_total{endpoint="/parse/batch",status="499"}')
    return "counted as 499, not 500", f"499 count {before:.0f} -> {after:.0f}", after == before + 1


def refusals_counted(url):
    samples = {
        "431": 'voicenlu_requests_total{endpoint="/metadata",status="431"}',
        "408": 'voicenlu_requests_total{endpoint="none",status="408"}',
        "503": 'voicenlu_requests_total{endpoint="/health",status="503"}',
        "400": 'voicenlu_requests_total{endpoint="none",status="400"}',
        "audio 401": 'voicenlu_requests_total{endpoint="/parse/audio",status="401"}',
    }
    seen = {k: metric(url, s) for k, s in samples.items()}
    ok = all(v > 0 for v in seen.values())
    observed = ", ".join(f"{k}: {v:.0f}" for k, v in seen.items())
    return "the HTTP layer's refusals above are in /metrics", observed, ok


def headers_everywhere(url):
    got = []
    for path in ("/", "/static/index.html", "/health", "/nowhere"):
        h = httpx.get(url + path).headers
        got.append(
            "nosniff" in h.get("x-content-type-options", "")
            and "default-src" in h.get("content-security-policy", "")
        )
    return "CSP and nosniff on /, /static/index.html, JSON and 404", str(got), all(got)


def wrong_key_timing(url):
    """The key comparison is constant-time: a key right but for its last byte takes no
    longer than one wrong from its first byte (medians of 200 each, interleaved)."""
    near = KEY[:-1] + ("x" if KEY[-1] != "x" else "y")
    far = "x" + KEY[1:]
    times = {near: [], far: []}
    with httpx.Client(base_url=url) as c:
        for _ in range(200):
            for key in (near, far):
                start = time.perf_counter()
                c.get("/metadata", headers={"Authorization": f"Bearer {key}"})
                times[key].append(time.perf_counter() - start)
    med = {k: sorted(v)[len(v) // 2] * 1e6 for k, v in times.items()}
    ok = abs(med[near] - med[far]) < 0.2 * min(med.values())
    return "no measurable difference (under 20%)", f"{med[near]:.0f} vs {med[far]:.0f} µs", ok


def body(status: str, what: str, path: str, payload, auth=True, ctype="application/json"):
    return simple(json_post(path, payload, auth, ctype), status, what)


long_text = "play " + "a" * 1000
ATTACKS = [
    ("64 MiB header", big_header),
    ("100 header fields", many_headers),
    (
        "20 kB header in one piece",
        simple(
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 20_000 + b"\r\n\r\n",
            "431",
            "431 (past 16 KiB, however it arrives)",
        ),
    ),
    ("silent connection", silent),
    ("header a byte at a time", slow_headers),
    ("body a byte at a time", slow_body),
    ("401 then body bytes forever", unread_body("POST /parse", False, "401")),
    ("401 on /parse/batch then body bytes", unread_body("POST /parse/batch", False, "401")),
    ("401 on /parse/audio then body bytes", unread_body("POST /parse/audio", False, "401")),
    ("405 then body bytes", unread_body("PUT /parse", True, "405")),
    ("404 then body bytes", unread_body("POST /nowhere", True, "404")),
    ("public /health then body bytes", unread_body("GET /health", False, "200")),
    ("/metadata then body bytes", unread_body("GET /metadata", True, "200")),
    ("endless chunked body without a key", endless_chunked("/parse/batch", False, "401")),
    ("endless chunked body with a key", endless_chunked("/parse", True, "413")),
    ("endless audio body with a key", endless_chunked("/parse/audio", True, "413")),
    (
        "declared 10 GB body",
        simple(
            b"POST /parse HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + AUTH
            + b"Content-Length: 10000000000\r\n\r\n",
            "413",
            "413 before any body byte",
        ),
    ),
    ("line breaks on an idle keep-alive", crlf_keepalive),
    ("idle keep-alive", idle_keepalive),
    ("pipelined clients that never read", not_reading),
    ("1,100 idle connections", conn_flood),
    ("1,100 refused clients sending body bytes", half_open_flood),
    ("no key", body("401", "401", "/parse", {"text": "hi"}, auth=False)),
    (
        "wrong key",
        simple(
            request(
                "GET /metadata", b"", False, "Authorization: Bearer nope\r\nConnection: close\r\n"
            ),
            "401",
            "401",
        ),
    ),
    (
        "Basic scheme",
        simple(
            request(
                "GET /metadata", b"", False, f"Authorization: Basic {KEY}\r\nConnection: close\r\n"
            ),
            "401",
            "401",
        ),
    ),
    ("key compared in constant time", wrong_key_timing),
    ("malformed HTTP", simple(b"NOT HTTP AT ALL\r\n\r\n", "400", "400 JSON")),
    (
        "NUL in a header",
        simple(b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n", "400", "400 JSON"),
    ),
    (
        "Content-Length and Transfer-Encoding both",
        simple(
            b"POST /parse HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "400",
            "400 JSON",
        ),
    ),
    ("bad JSON", body("400", "400", "/parse", b'{"text": ')),
    ("invalid UTF-8", body("400", "400", "/parse", b'{"text": "\xff\xfe"}')),
    ("wrong content type", body("415", "415", "/parse", b"text=hi", ctype="text/plain")),
    ("text over 1,000 characters", body("422", "422", "/parse", {"text": long_text})),
    ("257 texts", body("422", "422", "/parse/batch", {"texts": ["hi"] * 257})),
    ("empty text", body("422", "422", "/parse", {"text": "   "})),
    ("zero-width text", body("422", "422", "/parse", {"text": "\u200b\u200d\ufeff"})),
    ("Hangul fillers", body("422", "422", "/parse", {"text": "\u3164\u115f\u1160"})),
    ("braille blanks", body("422", "422", "/parse", {"text": "\u2800\u2800"})),
    ("16 x 1,000 é, escaped", body("200", "200", "/parse/batch", {"texts": ["é" * 1000] * 16})),
    (
        "16 x 1,000 emoji, escaped",
        body("200", "200", "/parse/batch", {"texts": ["😀" * 1000] * 16}),
    ),
    ("bad time zone", body("422", "422", "/parse", {"text": "hi", "timezone": "Mars/Base"})),
    ("bad reference time", body("422", "422", "/parse", {"text": "hi", "reference_time": "soon"})),
    ("threshold 2", body("422", "422", "/parse", {"text": "hi", "threshold": 2})),
    (
        "path traversal",
        simple(
            request("GET /static/../../etc/passwd", b"", True, "Connection: close\r\n"),
            "404",
            "404",
        ),
    ),
    (
        "audio that is not WAV",
        body("422", "422 (or 501 without speech)", "/parse/audio", b"RIFFjunk", ctype="audio/wav"),
    ),
    ("audio with a JSON type", body("415", "415", "/parse/audio", b"{}")),
    ("20 s of audio", body("413", "413", "/parse/audio", wav(20), ctype="audio/wav")),
    ("client gone mid-batch", disconnect_counted),
    ("security headers", headers_everywhere),
    ("refusals in /metrics", refusals_counted),
]


def run_attacks(url: str) -> list[dict]:
    results = []
    for name, attack in ATTACKS:
        try:
            expected, observed, ok = attack(url)
        except Exception as exc:  # the probe reports, it does not stop
            expected, observed, ok = (
                "no failure of the probe",
                f"{type(exc).__name__}: {exc}",
                False,
            )
        if name == "audio that is not WAV" and "501" in observed:
            ok = True
        results.append({"name": name, "expected": expected, "observed": observed, "ok": bool(ok)})
        print(json.dumps(results[-1]), flush=True)
    return results


# --- Load with a hostile share ---------------------------------------------------------------


HOSTILE_LOAD = [
    lambda: json_post("/parse", {"text": "hi"}, auth=False),
    lambda: json_post("/parse", b'{"text": '),
    lambda: json_post("/parse", {"text": long_text}),
    lambda: json_post("/parse", {"text": "\u3164"}),
    lambda: b"GET /metadata HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 20000 + b"\r\n\r\n",
    lambda: b"POST /parse HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n{" + b"x" * 5000,
    lambda: b"NOT HTTP\r\n\r\n",
]


async def load(url: str, requests: int, concurrency: int, share: float, seed: int = 7):
    host, port = url.removeprefix("http://").split(":")
    rng = random.Random(seed)
    plan = [rng.random() < share for _ in range(requests)]
    statuses = [""] * requests  # by request, as in plan
    next_index = 0

    async def one(data: bytes) -> str:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(data)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(65536), HANG)
            return status_of(answer)
        except (TimeoutError, OSError):
            return "reset"
        finally:
            writer.close()

    async def worker():
        nonlocal next_index
        while next_index < requests:
            i = next_index
            next_index += 1
            if plan[i]:
                data = rng.choice(HOSTILE_LOAD)()
            else:
                data = json_post("/parse", {"text": TEXTS[i % len(TEXTS)]})
            statuses[i] = await one(data)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses, plan, time.perf_counter() - start


def health_probe(url: str, stop: threading.Event, times: list[float], failures: list[str]):
    with httpx.Client(base_url=url, timeout=HANG) as c:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                status = c.get("/health").status_code
                if status != 200:
                    failures.append(str(status))
            except httpx.TransportError as exc:
                failures.append(type(exc).__name__)
            times.append(time.perf_counter() - start)
            stop.wait(0.05)


def run_load(url: str, pid: int, requests: int, concurrency: int, share: float) -> dict:
    asyncio.run(load(url, 200, concurrency, 0.0))  # warm both workers
    rss_before = rss_mb(pid)
    stop, times, failures = threading.Event(), [], []
    probe = threading.Thread(target=health_probe, args=(url, stop, times, failures))
    probe.start()
    statuses, plan, seconds = asyncio.run(load(url, requests, concurrency, share))
    stop.set()
    probe.join()
    rss_after = rss_mb(pid)
    times.sort()
    normal = [s for s, bad in zip(statuses, plan, strict=True) if not bad]
    hostile = Counter(s for s, bad in zip(statuses, plan, strict=True) if bad)
    return {
        "requests": requests,
        "concurrency": concurrency,
        "hostile_share": share,
        "hostile_requests": sum(plan),
        "errors_5xx": sum(s.startswith("5") for s in statuses),
        "normal_not_200": sum(s != "200" for s in normal),
        "hostile_answers": dict(sorted(hostile.items())),
        "health_probes": len(times),
        "health_failures": len(failures),
        "health_p50_ms": round(1000 * times[len(times) // 2], 2),
        "health_p99_ms": round(1000 * times[min(len(times) - 1, int(0.99 * len(times)))], 2),
        "seconds": round(seconds, 1),
        "rss_before_mb": rss_before,
        "rss_after_mb": rss_after,
        "rss_growth_mb": round(rss_after - rss_before, 1),
    }


# --- The bundle and shutdown -------------------------------------------------------------------


def refused_bundle(bundle: Path, change, expect: str, *flags: str):
    def attack(_url):
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(
                shutil.copytree(bundle, Path(tmp) / "b", ignore=shutil.ignore_patterns("report"))
            )
            extra = change(copy, Path(tmp)) or []
            cli = [sys.executable, "-m", "voicenlu", "serve", str(copy), "--port", str(free_port())]
            try:
                done = subprocess.run(
                    [*cli, "--workers", "2", *flags, *extra],
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
            except subprocess.TimeoutExpired:
                return f"exit 1 with one line naming {expect}", "still running after 300 s", False
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        ok = done.returncode == 1 and len(errors) == 1 and expect in errors[0]
        ok = ok and "Traceback" not in done.stderr
        observed = f"exit {done.returncode}: {errors[0][:160] if errors else done.stderr[-160:]}"
        return f"exit 1 at once, one line naming {expect}", observed, ok

    return attack


def flip(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))


def manifest_edit(**fields):
    def change(copy, _tmp):
        from voicenlu.bundle import update_manifest

        update_manifest(copy, **fields)

    return change


def unsigned(copy, tmp):
    from voicenlu.signing import generate_key

    return ["--require-signature", str(generate_key(tmp / "ops.key"))]


def signed_then_changed(copy, tmp):
    from voicenlu.bundle import update_manifest
    from voicenlu.signing import generate_key, sign_bundle

    public = generate_key(tmp / "ops.key")
    sign_bundle(copy, tmp / "ops.key")
    update_manifest(copy, calibration={"threshold": 0.0, "temperature": 1.0})
    return ["--require-signature", str(public)]


def bundle_attacks(bundle: Path, model: str) -> list:
    return [
        (f"damaged {model}", refused_bundle(bundle, lambda c, t: flip(c / model), model)),
        (
            "damaged speech.json",
            refused_bundle(bundle, lambda c, t: flip(c / "speech.json"), "speech.json"),
        ),
        (
            "damaged tokenizer.json",
            refused_bundle(bundle, lambda c, t: flip(c / "tokenizer.json"), "tokenizer.json"),
        ),
        (
            "max_length 100000",
            refused_bundle(bundle, manifest_edit(max_length=100000), "max_length"),
        ),
        (
            "max_length 1000 (past 512 positions)",
            refused_bundle(bundle, manifest_edit(max_length=1000), "max_length=1000"),
        ),
        ("unsigned with --require-signature", refused_bundle(bundle, unsigned, "not signed")),
        ("changed after signing", refused_bundle(bundle, signed_then_changed, "does not match")),
    ]


def shutdown_attack(url: str, proc: subprocess.Popen, log) -> tuple[str, str, bool]:
    sock = connect(url)
    sock.sendall(
        b"POST /parse HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + AUTH
        + b"Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n"
    )
    time.sleep(0.5)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    ended, answer, _ = drip_until_closed(sock, b"1\r\n \r\n", 1.0)  # 1 s: under the body timeout
    sock.close()
    proc.wait(timeout=60)
    seconds = time.monotonic() - start
    log.seek(0)
    text = log.read()
    ok = ended and status_of(answer) not in ("500",) and proc.returncode == -signal.SIGTERM
    ok = ok and "Traceback" not in text and "Exception in ASGI" not in text
    observed = (
        f"answer {status_of(answer)}, exit {proc.returncode} after {seconds:.1f} s, "
        f"traceback in log: {'Traceback' in text}"
    )
    return "closed or 408/503 (never 500), no traceback, exit by SIGTERM", observed, ok


def write(out: Path, attacks: list[dict], load_row: dict, setup: dict) -> None:
    data = {**setup, "attacks": attacks, "load": load_row}
    (out / "hostile.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    good = sum(a["ok"] for a in attacks)
    lines = [
        "# Hostile probe of `voicenlu serve --workers 2`",
        "",
        setup["note"],
        "",
        f"Bundle `{setup['bundle']['path']}` ({setup['model']}, manifest digest "
        f"`{setup['bundle']['digest'][:16]}`), two workers, an API key, every limit at its "
        f"default; probe and server on loopback on the same machine ({setup['cpus']} CPUs). "
        f"Commit `{setup['commit'][:12]}`, {setup['created']}. Command: `{setup['command']}`.",
        "",
        f"## Attacks: {good} of {len(attacks)} as expected",
        "",
        "| attack | expected | observed | ok |",
        "|---|---|---|---|",
    ]
    for a in attacks:
        cells = [
            a["name"],
            a["expected"],
            a["observed"].replace("|", "/"),
            "yes" if a["ok"] else "NO",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    r = load_row
    lines += [
        "",
        "## Load with a hostile share",
        "",
        f"{r['requests']} requests over {r['concurrency']} concurrent clients, a new connection "
        f"each, {100 * r['hostile_share']:.0f}% of them hostile ({r['hostile_requests']}: no "
        "key, bad JSON, a text too long, a blank text, a 20 kB header, a refused body that keeps "
        "coming, bytes that are not HTTP), /health asked every 50 ms throughout.",
        "",
        "| goal | result |",
        "|---|---|",
        f"| zero 5xx | {r['errors_5xx']} |",
        f"| every normal request 200 | {r['normal_not_200']} not 200 |",
        "| the hostile ones refused | "
        + ", ".join(f"{n} x {status}" for status, n in r["hostile_answers"].items())
        + " |",
        f"| /health p99 under 100 ms | p99 {r['health_p99_ms']} ms, p50 {r['health_p50_ms']} ms, "
        f"{r['health_probes']} probes, {r['health_failures']} failed |",
        f"| RSS growth under 20 MB | {r['rss_growth_mb']} MB ({r['rss_before_mb']} -> "
        f"{r['rss_after_mb']} MB, parent and workers) |",
        f"| (duration) | {r['seconds']} s |",
    ]
    (out / "hostile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="the model bundle (with model.int8.onnx)")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--hostile-share", type=float, default=0.05)
    parser.add_argument("--note", default="", help="a sentence on the conditions, for the md")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    manifest = json.loads((args.bundle / "voicenlu.json").read_text())
    model = "model.int8.onnx" if "model.int8.onnx" in manifest["files"] else "model.onnx"
    setup = {
        **provenance(bundle=args.bundle),
        "note": args.note,
        "model": model,
        "cpus": os.cpu_count(),
    }
    with server(args.bundle, "--workers", "2") as (url, proc, log):
        attacks = run_attacks(url)
        load_row = run_load(url, proc.pid, args.requests, args.concurrency, args.hostile_share)
        print(json.dumps(load_row), flush=True)
        expected, observed, ok = shutdown_attack(url, proc, log)
        attacks.append(
            {
                "name": "SIGTERM with a body in progress",
                "expected": expected,
                "observed": observed,
                "ok": ok,
            }
        )
    for name, attack in bundle_attacks(args.bundle, model):
        expected, observed, ok = attack(None)
        attacks.append({"name": name, "expected": expected, "observed": observed, "ok": ok})
        print(json.dumps(attacks[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    write(args.out, attacks, load_row, setup)


if __name__ == "__main__":
    main()
