"""The HTTP API, exercised through a real uvicorn server on a free loopback port."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import schemathesis
import uvicorn
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from playwright.sync_api import expect, sync_playwright
from schemathesis import GenerationMode

from voicenlu.errors import ConfigError
from voicenlu.runtime import Parser
from voicenlu.server import app_from_env, create_app, serve, to_rasa

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "demo.png"
API_KEY = "test-key-0123456789"
MAX_CHARS, MAX_BATCH, MAX_BODY = 200, 8, 8192
TEXTS = [
    "add Diamonds to my roadtrip playlist",
    "will it rain in Paris tomorrow",
    "book a table for two at a sushi place tonight",
    "play something by Miles Davis",
    "rate this book four out of six stars",
    "find the movie schedule for the nearest cinema",
    "i want to hear the album Thriller",
    "what is the weather like in Berlin",
]


@contextmanager
def live_server(app) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread; yield its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def parser(tiny_bundle) -> Parser:
    return Parser.load(tiny_bundle)


@pytest.fixture(scope="module")
def api(parser) -> Iterator[str]:
    """The server as most tests see it: no key, small limits so the limit tests stay cheap."""
    app = create_app(
        parser, max_chars=MAX_CHARS, max_batch=MAX_BATCH, max_body_bytes=MAX_BODY, api_key=""
    )
    with live_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def batched_api(parser) -> Iterator[str]:
    with live_server(create_app(parser, microbatch_ms=50, api_key="")) as url:
        yield url


@pytest.fixture(scope="module")
def secured_api(parser) -> Iterator[str]:
    with live_server(create_app(parser, api_key=API_KEY)) as url:
        yield url


@pytest.fixture(scope="module")
def client(api) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def slot_example(parser, tiny_data) -> str:
    """A training request the tiny model parses in scope with at least one slot."""
    for utterance in tiny_data.train:
        result = parser.parse(utterance.text)
        if utterance.slots and result["in_scope"] and result["slots"]:
            return utterance.text
    pytest.fail("the tiny model finds no slot in any training request")


# --- Endpoints ---------------------------------------------------------------------------------


def test_parse_answers_the_design_result(client, parser, slot_example):
    text = slot_example
    result = client.post("/parse", json={"text": text}).raise_for_status().json()
    expected = parser.parse(text)
    assert set(result) == {"text", "intent", "in_scope", "intent_ranking", "slots"}
    assert result["intent"]["name"] == expected["intent"]["name"]
    assert [r["name"] for r in result["intent_ranking"]] == [
        r["name"] for r in expected["intent_ranking"]
    ]
    spans = [(s["slot"], s["start"], s["end"]) for s in result["slots"]]
    assert spans and spans == [(s["slot"], s["start"], s["end"]) for s in expected["slots"]]
    for slot in result["slots"]:
        assert text[slot["start"] : slot["end"]] == slot["value"]


def test_threshold_one_rejects_as_out_of_scope(client):
    result = client.post("/parse", json={"text": "qwv zzk", "threshold": 1.0}).json()
    assert result["in_scope"] is False
    assert result["intent"]["name"] is None
    assert result["slots"] == []
    assert result["intent_ranking"], "a rejected request still has its ranking"


def test_batch_answers_in_order(client):
    results = client.post("/parse/batch", json={"texts": TEXTS}).raise_for_status().json()
    assert [r["text"] for r in results] == TEXTS
    singles = [client.post("/parse", json={"text": t}).json() for t in TEXTS]
    assert [r["intent"]["name"] for r in results] == [r["intent"]["name"] for r in singles]


def test_rasa_endpoint_answers_rasa_shape(client, slot_example):
    body = {"text": slot_example, "message_id": "b2831e73"}
    rasa = client.post("/model/parse", json=body).raise_for_status().json()
    ours = client.post("/parse", json={"text": slot_example}).json()
    assert set(rasa) == {"text", "intent", "entities", "intent_ranking"}
    assert rasa["intent"] == {
        "name": ours["intent"]["name"],
        "confidence": pytest.approx(ours["intent"]["confidence"], abs=1e-3),
    }
    assert rasa["entities"], "slot_example has a slot"
    for entity, slot in zip(rasa["entities"], ours["slots"], strict=True):
        assert set(entity) == {"entity", "value", "start", "end", "confidence_entity", "extractor"}
        assert (entity["entity"], entity["value"], entity["start"], entity["end"]) == (
            slot["slot"],
            slot["value"],
            slot["start"],
            slot["end"],
        )
        assert entity["extractor"] == "voicenlu"
    assert all(set(r) == {"name", "confidence"} for r in rasa["intent_ranking"])


def test_rasa_out_of_scope_is_nlu_fallback():
    rejected = {
        "text": "hm",
        "intent": {"name": None, "confidence": 0.31},
        "in_scope": False,
        "intent_ranking": [{"name": "PlayMusic", "confidence": 0.31}],
        "slots": [],
    }
    rasa = to_rasa(rejected, threshold=0.5)
    assert rasa["intent"] == {"name": "nlu_fallback", "confidence": 0.5}
    assert [r["name"] for r in rasa["intent_ranking"]] == ["nlu_fallback", "PlayMusic"]


def test_health_ready_metadata(client, parser):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"ready": True}
    meta = client.get("/metadata").json()
    assert meta["intents"] == parser.intents
    assert meta["slots"] == parser.slots
    assert meta["backbone"] == parser.manifest["backbone"]
    assert meta["in_scope_score"] == "energy" and meta["threshold"] == parser.threshold
    assert meta["limits"] == {
        "max_chars": MAX_CHARS,
        "max_batch": MAX_BATCH,
        "max_body_bytes": MAX_BODY,
    }
    assert "version" in meta and "metrics" in meta


def test_metrics_count_requests_by_endpoint_and_status(client):
    client.post("/parse", json={"text": "play jazz"})
    client.post("/parse", json={})
    text = client.get("/metrics").text
    assert re.search(r'voicenlu_requests_total\{endpoint="/parse",status="200"\} [1-9]', text)
    assert re.search(r'voicenlu_requests_total\{endpoint="/parse",status="422"\} [1-9]', text)
    assert 'voicenlu_request_duration_seconds_bucket{endpoint="/parse",le="+Inf"}' in text
    assert "# TYPE voicenlu_request_duration_seconds histogram" in text


def test_cors_is_off_unless_asked_for(client):
    response = client.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers


# --- Bad requests: 4xx JSON naming the problem, never a 500 ------------------------------------

JSON = {"Content-Type": "application/json"}
BAD_REQUESTS = [
    ("/parse", b'{"text": ', JSON, 400, "not valid JSON"),
    ("/parse", b'{"text": "caf\xe9"}', JSON, 400, "not valid UTF-8"),
    ("/parse", b'{"text": 5}', JSON, 422, "text: Input should be a valid string"),
    ("/parse", b'{"text": ["a"]}', JSON, 422, "text: Input should be a valid string"),
    ("/parse", b"{}", JSON, 422, "text: Field required"),
    ("/parse", b"", JSON, 422, "Field required"),
    ("/parse", b"[1, 2]", JSON, 422, "valid dictionary"),
    ("/parse", b'{"text": ""}', JSON, 422, "at least 1 character"),
    ("/parse", b'{"text": "  \\t "}', JSON, 422, "empty (or only white space)"),
    ("/parse", b'{"text": "\\ud800"}', JSON, 422, "text:"),
    ("/parse", b'{"text": "%s"}' % (b"a" * (MAX_CHARS + 1)), JSON, 422, "at most 200 characters"),
    ("/parse", b'{"text": "hi", "lang": "en"}', JSON, 422, "lang: Extra inputs are not permitted"),
    ("/parse", b'{"text": "hi", "threshold": 1.5}', JSON, 422, "threshold"),
    ("/parse", b'{"text": "hi", "threshold": "0.5"}', JSON, 422, "threshold"),
    ("/parse", b'{"text": "hi", "threshold": NaN}', JSON, 422, "threshold"),
    ("/parse", b'{"text": "hi"}', {"Content-Type": "text/plain"}, 415, "Content-Type"),
    ("/parse", b'{"text": "%s"}' % (b"a" * MAX_BODY), JSON, 413, f"limit of {MAX_BODY} bytes"),
    ("/parse/batch", b'{"texts": "hello"}', JSON, 422, "texts: Input should be a valid list"),
    ("/parse/batch", b'{"texts": []}', JSON, 422, "at least 1 item"),
    ("/parse/batch", b'{"texts": ["a", " "]}', JSON, 422, "texts.1:"),
    ("/parse/batch", b'{"texts": [%s]}' % b",".join([b'"a"'] * 9), JSON, 422, "at most 8 items"),
    ("/model/parse", b'{"text": "hi", "sender": "me"}', JSON, 422, "sender"),
    ("/model/parse", b'{"message_id": "x"}', JSON, 422, "text: Field required"),
]


@pytest.mark.parametrize(
    "path,body,headers,status,message",
    BAD_REQUESTS,
    ids=[f"{p}-{m}" for p, _, _, _, m in BAD_REQUESTS],
)
def test_bad_requests_get_a_clear_4xx(client, path, body, headers, status, message):
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()
    assert message in error["error"], error
    assert isinstance(error["detail"], list)


def test_unknown_endpoint_and_wrong_method_get_json(client):
    missing = client.get("/nope")
    assert missing.status_code == 404 and "/nope" in missing.json()["error"]
    wrong = client.get("/parse")
    assert wrong.status_code == 405 and "GET is not allowed" in wrong.json()["error"]


# --- API key -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ready", "/metadata", "/metrics", "/openapi.json"])
def test_api_key_guards_every_endpoint_but_health(secured_api, path):
    without = httpx.get(secured_api + path)
    assert without.status_code == 401 and "API key" in without.json()["error"]
    assert without.headers["www-authenticate"] == "Bearer"
    wrong = httpx.get(secured_api + path, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "wrong" in wrong.json()["error"]
    right = httpx.get(secured_api + path, headers={"Authorization": f"Bearer {API_KEY}"})
    assert right.status_code == 200


def test_api_key_guards_parsing(secured_api):
    body = {"text": TEXTS[1]}
    assert httpx.post(secured_api + "/parse", json=body).status_code == 401
    headers = {"Authorization": f"Bearer {API_KEY}"}
    assert httpx.post(secured_api + "/parse", json=body, headers=headers).status_code == 200


def test_health_and_demo_page_stay_open_with_a_key(secured_api):
    assert httpx.get(secured_api + "/health").status_code == 200
    assert httpx.get(secured_api + "/").status_code == 200
    assert httpx.get(secured_api + "/static/app.js").status_code == 200


# --- Micro-batching ----------------------------------------------------------------------------


async def _parse_concurrently(url: str, texts: list[str]) -> list[dict]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        responses = await asyncio.gather(*(c.post("/parse", json={"text": t}) for t in texts))
    return [r.raise_for_status().json() for r in responses]


def _counter(metrics: str, name: str) -> int:
    return int(re.search(rf"^{name} (\d+)$", metrics, re.MULTILINE).group(1))


def test_microbatching_gives_the_same_results(api, batched_api):
    texts = TEXTS * 2
    plain = asyncio.run(_parse_concurrently(api, texts))
    batched = asyncio.run(_parse_concurrently(batched_api, texts))
    for a, b in zip(plain, batched, strict=True):
        assert b["text"] == a["text"]
        assert b["intent"]["name"] == a["intent"]["name"]
        assert b["intent"]["confidence"] == pytest.approx(a["intent"]["confidence"], abs=1e-3)
        assert [(s["slot"], s["start"], s["end"]) for s in b["slots"]] == [
            (s["slot"], s["start"], s["end"]) for s in a["slots"]
        ]
    metrics = httpx.get(batched_api + "/metrics").text
    assert _counter(metrics, "voicenlu_microbatched_requests_total") == len(texts)
    assert _counter(metrics, "voicenlu_microbatches_total") < len(texts), "nothing was grouped"


def test_model_runs_one_at_a_time(tiny_bundle):
    """Concurrent requests queue for the model instead of running it side by side."""
    parser = Parser.load(tiny_bundle)
    lock, running, peak = threading.Lock(), 0, 0
    unwatched = parser.parse_batch

    def watched(*args, **kwargs):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.005)  # long enough for the other requests to arrive meanwhile
            return unwatched(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    parser.parse_batch = watched  # parse() goes through it too
    with live_server(create_app(parser, api_key="")) as url:
        results = asyncio.run(_parse_concurrently(url, TEXTS * 2))
    assert [r["text"] for r in results] == TEXTS * 2
    assert peak == 1


# --- Settings ----------------------------------------------------------------------------------


def test_app_from_env_reads_settings(monkeypatch, tiny_bundle):
    monkeypatch.setenv("VOICENLU_BUNDLE", str(tiny_bundle))
    monkeypatch.setenv("VOICENLU_MAX_CHARS", "30")
    monkeypatch.setenv("VOICENLU_CORS_ORIGINS", "https://app.example, https://b.example")
    monkeypatch.delenv("VOICENLU_API_KEY", raising=False)
    with TestClient(app_from_env()) as c:
        assert c.get("/metadata").json()["limits"]["max_chars"] == 30
        preflight = c.options(
            "/parse",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"


def test_bad_settings_are_config_errors(monkeypatch, parser):
    monkeypatch.setenv("VOICENLU_BUNDLE", "/some/bundle")
    monkeypatch.setenv("VOICENLU_MAX_CHARS", "lots")
    with pytest.raises(ConfigError, match="VOICENLU_MAX_CHARS='lots'"):
        app_from_env()
    with pytest.raises(ConfigError, match="max_batch"):
        create_app(parser, max_batch=0)
    with pytest.raises(ConfigError, match="microbatch_ms"):
        create_app(parser, microbatch_ms=-1)
    with pytest.raises(ConfigError, match="--threads"):
        serve("/some/bundle", threads=0)


def test_two_worker_processes_answer_concurrent_requests(tiny_bundle):
    """`voicenlu serve --workers 2`: each worker loads the model from the settings it is given."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cli = [sys.executable, "-m", "voicenlu", "serve", str(tiny_bundle), "--port", str(port)]
    server = subprocess.Popen([*cli, "--workers", "2", "--threads", "1"], stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read().decode()
            assert time.monotonic() < deadline, "the workers did not get ready"
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)

        async def many() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                return await asyncio.gather(
                    *(client.post("/parse", json={"text": t}) for t in TEXTS * 4)
                )

        answers = asyncio.run(many())
        assert [a.status_code for a in answers] == [200] * len(TEXTS) * 4
        assert [a.json()["text"] for a in answers] == TEXTS * 4
    finally:
        server.terminate()
        server.wait(timeout=30)


# --- Fuzzing from the OpenAPI schema -----------------------------------------------------------


def test_fuzzed_requests_never_get_a_server_error(api):
    """Schemathesis makes valid and invalid requests from /openapi.json; none may get a 5xx.

    Driven through ``as_strategy`` rather than ``schemathesis.pytest.from_fixture``, whose lazy
    loader fails on pytest 9 ('Function' object has no attribute '_nodeid').
    """
    schema = schemathesis.openapi.from_url(f"{api}/openapi.json")
    for result in schema.get_all_operations():
        operation = result.ok()
        # The GET endpoints take no input: there is nothing invalid to make for them.
        post = operation.method.upper() == "POST"
        for mode in list(GenerationMode) if post else [GenerationMode.POSITIVE]:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=30,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def no_server_error(case):
                response = case.call()
                assert response.status_code < 500, f"{case.method} {case.path}: {response.text}"

            no_server_error()


# --- The demo page, in a real browser ----------------------------------------------------------


def test_demo_page_shows_intent_and_slots(api, parser, slot_example):
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install chromium` to run this test")
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
            page.goto(api + "/")
            page.fill("#text", slot_example)
            page.click("#submit")
            expect(page.locator("#intent")).not_to_be_empty()
            expect(page.locator("#highlighted mark.slot").first).to_be_visible()
            expect(page.locator("#ranking li")).to_have_count(len(parser.intents))
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

            page.set_viewport_size({"width": 900, "height": 760})
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            # A rejected request: the tiny model rejects nothing, so the answer is staged.
            rejected = {
                "text": "what is the capital of France",
                "intent": {"name": None, "confidence": 0.3},
                "in_scope": False,
                "intent_ranking": [{"name": name, "confidence": 0.1} for name in parser.intents],
                "slots": [],
            }
            page.route("**/parse", lambda route: route.fulfill(json=rejected))
            page.fill("#text", rejected["text"])
            page.click("#submit")
            expect(page.locator("#intent")).to_have_text("out of scope")
            nearest = parser.intents[0]
            expect(page.locator("#confidence")).to_have_text(f"nearest: {nearest} 10.0%")
            expect(page.locator("#highlighted mark")).to_have_count(0)
        finally:
            browser.close()
