"""Hostile clients against `voicenlu serve` in its own process, on loopback: every connection
ends on a timer whatever it sends, refusals are counted, a damaged bundle never half-starts,
shutdown never answers 500, and the settings apply however they are given.

Times in these tests only detect hangs: each limit is 1 s, each wait for it 10 s or more.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from test_server import API_KEY, _answer, _counter, _raw, cli_server

from voicenlu import bundle as bundles
from voicenlu.data.records import is_blank
from voicenlu.errors import BundleError
from voicenlu.runtime import Parser
from voicenlu.server import create_app

LIMITS = {
    "--header-timeout": "1",
    "--body-timeout": "1",
    "--keepalive-timeout": "1",
    "--max-connections": "24",
    "--max-headers": "32",
}
HANG = 10  # seconds after which a connection that should have ended is taken to hang
KEY = f"Authorization: Bearer {API_KEY}\r\n".encode()


@pytest.fixture(scope="module")
def server(tiny_bundle) -> Iterator[str]:
    """Two workers with an API key and one-second timeouts."""
    flags = [x for pair in LIMITS.items() for x in pair]
    env = {"VOICENLU_API_KEY": API_KEY}
    with cli_server(tiny_bundle, "--workers", "2", *flags, env=env) as (url, process):
        started, deadline = 0, time.monotonic() + 120
        while started < 2:  # both workers, so that a flood meets both of their caps
            assert time.monotonic() < deadline, "the second worker did not start"
            line = process.stderr.readline()
            assert line, "the server stopped"
            started += b"Application startup complete" in line
        yield url


@pytest.fixture(scope="module")
def one_worker(tiny_bundle) -> Iterator[tuple[str, subprocess.Popen]]:
    """One worker with room for 8 connections, for floods that must meet the cap: with two
    workers the kernel may hand every connection of a flood to one of them, and the other,
    left free, answers /health whether or not the flood's connections end."""
    flags = [x for pair in {**LIMITS, "--max-connections": "8"}.items() for x in pair]
    env = {"VOICENLU_API_KEY": API_KEY}
    with cli_server(tiny_bundle, "--workers", "1", *flags, env=env) as (url, process):
        os.set_blocking(process.stderr.fileno(), False)  # for _log_so_far
        yield url, process


def _log_so_far(process: subprocess.Popen) -> str:
    """What the server has written to its log and nobody has read yet."""
    return (process.stderr.read() or b"").decode()


def _metric(url: str, sample: str) -> float:
    """A counter summed over both workers (any of them answers the scrape)."""
    answer = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    return _counter(answer.text, sample)


def _ends(sock: socket.socket, drip: bytes = b"x", every: float = 0.1) -> tuple[bool, bytes]:
    """Send ``drip`` every ``every`` seconds until the server ends the connection (True) or
    HANG seconds pass (False); also returns what the server sent."""
    received = b""
    sock.settimeout(every)
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
            if not chunk:
                return True, received
            received += chunk
        except TimeoutError:
            pass
        except OSError:
            return True, received
        try:
            sock.sendall(drip)
        except OSError:
            return True, received
    return False, received


# --- Every connection ends, whatever it sends -------------------------------------------------

UNREAD = [
    ("POST /parse", b"", b"401"),  # no key
    ("POST /parse/audio", b"", b"401"),
    ("PUT /parse", KEY, b"405"),
    ("GET /health", b"", b"200"),  # public
    ("GET /nowhere", KEY, b"404"),
]


@pytest.mark.parametrize("request_line,auth,status", UNREAD, ids=[u[0] for u in UNREAD])
def test_an_answer_before_the_body_ends_the_connection(server, request_line, auth, status):
    """The answer leaves the body unread: more body bytes must not keep the connection."""
    sock = _raw(server)
    sock.sendall(
        request_line.encode()
        + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + auth
        + b"Content-Length: 100000000\r\n\r\n{"
    )
    ended, answer = _ends(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
    assert ended, "the connection stayed open while the client sent body bytes"


def test_an_endless_body_without_a_key_is_not_read(server):
    sock = _raw(server)
    sock.sendall(
        b"POST /parse/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (2**20, b" " * 2**20)
    sent = 0
    try:
        while sent < 256:  # MiB, if nobody stops it
            sock.sendall(chunk)
            sent += 1
    except OSError:
        pass
    sock.close()
    assert sent < 64, f"the server read {sent} MiB of a body it had refused"


def test_bytes_that_begin_no_request_do_not_keep_a_connection(server):
    sock = _raw(server)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    ended, answer = _ends(sock, drip=b"\r\n", every=0.3)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert ended, "line breaks every 0.3 s kept an idle connection open"


def test_half_open_connections_cannot_take_every_slot(one_worker):
    """More connections than the cap, each refused and then sending body bytes forever:
    /health must answer again once they have been closed."""
    url, _ = one_worker
    socks = []
    for _ in range(30):  # past the cap of 8
        sock = _raw(url)
        sock.sendall(b"POST /parse HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n{")
        socks.append(sock)
    healthy = None
    deadline = time.monotonic() + HANG
    try:
        while time.monotonic() < deadline:
            for sock in socks:
                try:
                    sock.sendall(b"x")
                except OSError:
                    pass
            healthy = httpx.get(url + "/health", timeout=HANG).status_code
            if healthy == 200:
                break
            time.sleep(0.2)
    finally:
        for sock in socks:
            sock.close()
    assert healthy == 200, "refused clients that keep sending body bytes hold every slot"


def test_a_client_that_does_not_read_its_answers_is_cut_off(one_worker):
    """Requests pipelined by clients that never read: their connections end once their
    answers stop going out, so they cannot hold the connection slots. 1,000 schemas (10 MB)
    are more than the kernel's largest send buffer (4 MiB by default on Linux): the server
    cannot hand all its answers to the kernel and close as it would on an idle connection.
    The answers cut off are dropped without an error in the log."""
    url, process = one_worker
    _log_so_far(process)
    request = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n" + KEY + b"\r\n"
    host, port = url.removeprefix("http://").split(":")
    socks = []
    for _ in range(30):  # past the cap of 8
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        sock.settimeout(HANG)
        sock.sendall(request * 1000)
        socks.append(sock)
    try:
        deadline = time.monotonic() + 3 * HANG
        while httpx.get(url + "/health", timeout=HANG).status_code != 200:
            assert time.monotonic() < deadline, "clients that do not read hold every slot"
            time.sleep(0.2)
    finally:
        for sock in socks:
            sock.close()
    log = _log_so_far(process)
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]


def test_a_long_header_that_arrives_in_one_piece_is_refused(server):
    """The header limit holds when the whole request comes in one read, as on loopback."""
    sock = _raw(server)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 20_000 + b"\r\n\r\n")
    answer = _answer(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]


def test_malformed_requests_get_json_and_are_counted(server):
    before = _metric(server, 'voicenlu_requests_total{endpoint="none",status="400"}')
    sock = _raw(server)
    sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    answer = _answer(sock)
    sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head, answer
    assert "error" in json.loads(body)
    after = _metric(server, 'voicenlu_requests_total{endpoint="none",status="400"}')
    assert after == before + 1


def test_refusals_of_the_http_layer_are_counted(server):
    def count(endpoint: str, status: int) -> float:
        return _metric(
            server, f'voicenlu_requests_total{{endpoint="{endpoint}",status="{status}"}}'
        )

    before = {
        "431": count("/metadata", 431),
        "408": count("none", 408),
        "503": count("/health", 503),
        "audio": count("/parse/audio", 401),
    }
    sock = _raw(server)
    sock.sendall(b"GET /metadata HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(40)))
    sock.sendall(b"\r\n")
    assert _answer(sock).startswith(b"HTTP/1.1 431")
    sock.close()
    silent = _raw(server)
    assert _answer(silent).startswith(b"HTTP/1.1 408")
    silent.close()
    idle = [_raw(server) for _ in range(100)]  # past the cap of each worker (24)
    try:
        time.sleep(0.2)
        statuses = {httpx.get(server + "/health").status_code for _ in range(3)}
    finally:
        for sock in idle:
            sock.close()
    assert 503 in statuses
    assert httpx.post(server + "/parse/audio", content=b"RIFF").status_code == 401
    assert count("/metadata", 431) == before["431"] + 1
    assert count("none", 408) >= before["408"] + 1
    assert count("/health", 503) >= before["503"] + 1
    assert count("/parse/audio", 401) == before["audio"] + 1


# --- Shutdown ---------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_shutdown_past_its_deadline_closes_without_a_500(tiny_bundle, workers):
    flags = ["--workers", workers, "--body-timeout", "600", "--shutdown-timeout", "1"]
    with cli_server(tiny_bundle, *flags) as (url, server):
        sock = _raw(url)
        sock.sendall(
            b"POST /parse HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n"
        )
        time.sleep(0.5)
        server.send_signal(signal.SIGTERM)
        ended, answer = _ends(sock, drip=b"1\r\n \r\n")  # the body goes on and on
        sock.close()
        server.wait(timeout=HANG)
        log = server.stderr.read().decode()
    assert ended
    assert not answer.startswith(b"HTTP/1.1 500"), answer[:200]
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log
    assert server.returncode == -signal.SIGTERM, log[-2000:]


# --- A damaged bundle never half-starts -------------------------------------------------------


@pytest.fixture
def copy(tiny_bundle, tmp_path):
    return shutil.copytree(
        tiny_bundle, tmp_path / "bundle", ignore=shutil.ignore_patterns("report")
    )


def _serve_and_wait(bundle, *flags: str) -> subprocess.CompletedProcess:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cli = [sys.executable, "-m", "voicenlu", "serve", str(bundle), "--port", str(port), *flags]
    return subprocess.run(cli, capture_output=True, text=True, timeout=120)


def _damage(file) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("damaged", ["model.onnx", "speech.json", "model.safetensors"])
def test_a_damaged_bundle_is_refused_before_serving(copy, workers, damaged):
    _damage(copy / damaged)
    done = _serve_and_wait(copy, "--workers", workers)
    assert done.returncode == 1, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and damaged in errors[0], done.stderr[-2000:]
    assert "does not match the checksum" in errors[0]
    assert "Traceback" not in done.stderr


def test_a_malformed_speech_json_is_refused_before_serving(copy):
    bundles.put_text(copy, "speech.json", '{"prompt": 3}')
    done = _serve_and_wait(copy)
    assert done.returncode == 1
    assert "speech.json: prompt must be a str" in done.stderr, done.stderr[-2000:]


def test_a_worker_that_cannot_start_stops_the_service(copy, tmp_path):
    """The factory each worker runs: one line and uvicorn's startup-failure status (3),
    which stops the supervisor instead of starting the worker again."""
    _damage(copy / "model.onnx")
    code = "from voicenlu.server.run import worker_app; worker_app()"
    env = {**os.environ, "VOICENLU_BUNDLE": str(copy)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1 and "model.onnx does not match" in done.stderr


def test_max_length_beyond_the_model_is_refused(copy):
    bundles.update_manifest(copy, max_length=1000)  # the encoder has 512 positions
    with pytest.raises(BundleError, match="cannot read max_length=1000 sub-tokens"):
        Parser.load(copy)
    bundles.update_manifest(copy, max_length=100_000)
    with pytest.raises(BundleError, match="max_length must be a whole number from 2 to 4096"):
        Parser.load(copy)


# --- Settings from the environment, flags over them -------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_reads_the_environment_and_flags_override_it(tiny_bundle, workers):
    env = {
        "VOICENLU_MAX_CHARS": "30",
        "VOICENLU_MAX_BATCH": "7",
        "VOICENLU_TIMEZONE": "Europe/Zurich",
        "VOICENLU_MICROBATCH_MS": "2",
    }
    flags = ["--workers", workers, "--max-batch", "5"]
    with cli_server(tiny_bundle, *flags, env=env) as (url, _):
        for _ in range(4):  # either worker may answer
            shown = httpx.get(url + "/metadata").json()
            assert shown["limits"]["max_chars"] == 30
            assert shown["limits"]["max_batch"] == 5
            assert shown["timezone"] == "Europe/Zurich"
            assert shown["microbatch_ms"] == 2.0
            assert shown["threads"] == 1
        assert httpx.post(url + "/parse", json={"text": "a" * 31}).status_code == 422


# --- Text, bodies and headers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def app_client(tiny_bundle) -> Iterator[TestClient]:
    with TestClient(create_app(Parser.load(tiny_bundle), api_key="")) as client:
        yield client


def test_the_body_limit_fits_any_spelling_of_a_batch_within_the_character_limits(app_client):
    texts = ["é" * 1000] * 16  # 16,000 characters: the batch limit
    escaped = json.dumps({"texts": texts}).encode()  # \\u00e9: 6 bytes a character
    raw = json.dumps({"texts": texts}, ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json"}
    for body in (escaped, raw):
        assert app_client.post("/parse/batch", content=body, headers=headers).status_code == 200
    astral = json.dumps({"texts": ["😀" * 1000] * 16}).encode()  # 12 bytes a character
    assert app_client.post("/parse/batch", content=astral, headers=headers).status_code == 200


@pytest.mark.parametrize("text", ["\u3164", "\u115f\u1160", "\u2800\u2800", "\uffa0 \u3164"])
def test_blank_looking_letters_are_blank(app_client, text):
    assert is_blank(text)
    answer = app_client.post("/parse", json={"text": text})
    assert answer.status_code == 422 and "empty" in answer.json()["error"]


def test_stacked_combining_marks_stay_in_their_slot(tiny_bundle, tiny_data):
    parser = Parser.load(tiny_bundle)
    for utterance in tiny_data.train:
        slots = parser.parse(utterance.text)["slots"]
        if slots and slots[0]["value"][-1].isalpha():
            break
    else:
        pytest.fail("the tiny model finds no slot ending in a letter")
    end = slots[0]["end"]
    marked = utterance.text[:end] + "\u0301\u0323" + utterance.text[end:]
    first = parser.parse(marked)["slots"][0]
    assert first["value"] == slots[0]["value"] + "\u0301\u0323"
    assert marked[first["start"] : first["end"]] == first["value"]


@pytest.mark.parametrize("path", ["/", "/static/index.html", "/health", "/nowhere"])
def test_every_answer_carries_the_security_headers(app_client, path):
    answer = app_client.get(path)
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in answer.headers["content-security-policy"]
