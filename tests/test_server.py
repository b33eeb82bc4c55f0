"""The HTTP API, exercised through a real uvicorn server on a free loopback port."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import select
import signal
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
from voicenlu.server import Limits, app_from_env, create_app, serve, to_rasa
from voicenlu.server.schemas import rasa_value

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "demo.png"
API_KEY = "test-key-0123456789"
MAX_CHARS, MAX_BATCH, MAX_BATCH_CHARS, MAX_BODY = 200, 8, 1000, 8192
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
        parser,
        max_chars=MAX_CHARS,
        max_batch=MAX_BATCH,
        max_batch_chars=MAX_BATCH_CHARS,
        max_body_bytes=MAX_BODY,
        api_key="",
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
def typed_example(parser, tiny_data) -> str:
    """A training request in which the tiny model finds a time slot that resolves."""
    for utterance in tiny_data.train:
        result = parser.parse(utterance.text)
        if any((s["resolved"] or {}).get("kind") == "time" for s in result["slots"]):
            return utterance.text
    pytest.fail("the tiny model finds no resolvable time in any training request")


@pytest.fixture(scope="module")
def slot_example(parser, tiny_data) -> str:
    """A training request the tiny model parses in scope with at least one slot."""
    for utterance in tiny_data.train:
        result = parser.parse(utterance.text)
        if utterance.slots and result["in_scope"] and result["slots"]:
            return utterance.text
    pytest.fail("the tiny model finds no slot in any training request")


@pytest.fixture(scope="module")
def two_requests(parser, tiny_data) -> str:
    """Two test requests joined with "and then" that the tiny model's segmenter splits."""
    for a, b in zip(tiny_data.test, tiny_data.test[7:], strict=False):
        text = f"{a.text.strip()} and then {b.text.strip()}"
        if a.intent != b.intent and "requests" in parser.parse(text):
            return text
    pytest.fail("the tiny model's segmenter splits no join of two test requests")


# --- Endpoints ---------------------------------------------------------------------------------


def test_parse_answers_the_design_result(client, parser, slot_example):
    text = slot_example
    result = client.post("/parse", json={"text": text}).raise_for_status().json()
    expected = parser.parse(text)
    assert set(result) == {
        "text",
        "intent",
        "in_scope",
        "in_scope_score",
        "intent_ranking",
        "slots",
    }
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
        assert set(entity) == {
            "entity",
            "value",
            "text",
            "start",
            "end",
            "confidence_entity",
            "extractor",
            "additional_info",
        }
        assert (entity["entity"], entity["text"], entity["start"], entity["end"]) == (
            slot["slot"],
            slot["value"],
            slot["start"],
            slot["end"],
        )
        assert entity["additional_info"] == slot["resolved"]
        assert entity["value"] == (slot["value"] if slot["resolved"] is None else rasa_value(slot))
        assert entity["extractor"] == "voicenlu"
    assert all(set(r) == {"name", "confidence"} for r in rasa["intent_ranking"])


def test_several_requests_over_http(client, parser, two_requests):
    """/parse and /parse/batch add ``requests``, as the schema says; /model/parse keeps Rasa's
    shape, with the first request in it."""
    from voicenlu.server.schemas import ParseResult

    result = client.post("/parse", json={"text": two_requests}).raise_for_status().json()
    ParseResult.model_validate(result, strict=True)
    expected = parser.parse(two_requests)
    assert [(r["start"], r["end"], r["intent"]["name"]) for r in result["requests"]] == [
        (r["start"], r["end"], r["intent"]["name"]) for r in expected["requests"]
    ]
    assert result["slots"] == result["requests"][0]["slots"]
    for request in result["requests"]:
        for slot in request["slots"]:
            assert two_requests[slot["start"] : slot["end"]] == slot["value"]
    batch = client.post("/parse/batch", json={"texts": [TEXTS[0], two_requests]}).json()
    assert "requests" not in batch[0] and len(batch[1]["requests"]) == len(result["requests"])
    rasa = client.post("/model/parse", json={"text": two_requests}).raise_for_status().json()
    assert set(rasa) == {"text", "intent", "entities", "intent_ranking"}
    assert rasa["text"] == two_requests
    assert rasa["intent"]["name"] == result["requests"][0]["intent"]["name"]
    assert [e["start"] for e in rasa["entities"]] == [s["start"] for s in result["slots"]]
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert "requests" in schema["ParseResult"]["properties"] and "Request" in schema


def test_rasa_entity_values_follow_rasas_duckling_extractor():
    def slot(resolved):
        return {"value": "the text", "resolved": resolved}

    instant = {"kind": "time", "type": "value", "value": "2026-11-29T20:00:00.000+01:00"}
    interval = {
        "kind": "time",
        "type": "interval",
        "from": {"value": "2026-11-28T17:00:00.000+01:00", "grain": "hour"},
        "to": None,
    }
    custom = {"kind": "custom", "entity": "city", "value": "New York", "match": "synonym"}
    assert rasa_value(slot(instant)) == "2026-11-29T20:00:00.000+01:00"
    assert rasa_value(slot(interval)) == {"to": None, "from": "2026-11-28T17:00:00.000+01:00"}
    assert rasa_value(slot({"kind": "number", "value": 4})) == 4
    assert rasa_value(slot(custom)) == "New York"
    assert rasa_value(slot(None)) == "the text"


def test_slots_resolve_relative_to_the_request(client, parser, typed_example):
    ref = {"reference_time": "2026-11-28T12:00:00+01:00", "timezone": "Asia/Tokyo"}
    result = client.post("/parse", json={"text": typed_example, **ref}).raise_for_status().json()
    expected = parser.parse(typed_example, **ref)
    assert [s["resolved"] for s in result["slots"]] == [s["resolved"] for s in expected["slots"]]
    assert any(s["resolved"] for s in result["slots"])
    batch = client.post("/parse/batch", json={"texts": [typed_example], **ref}).json()
    assert batch[0]["slots"] == result["slots"]
    rasa = client.post("/model/parse", json={"text": typed_example, **ref}).json()
    assert [e["additional_info"] for e in rasa["entities"]] == [
        s["resolved"] for s in result["slots"]
    ]


def test_server_timezone_setting(tiny_bundle, typed_example):
    with TestClient(create_app(tiny_bundle, api_key="", timezone="Asia/Tokyo")) as c:
        assert c.get("/metadata").json()["timezone"] == "Asia/Tokyo"
        result = c.post("/parse", json={"text": typed_example}).json()
    times = [s["resolved"] for s in result["slots"] if (s["resolved"] or {}).get("kind") == "time"]
    assert all("+09:00" in json.dumps(t) for t in times)
    with pytest.raises(ConfigError, match="timezone setting: Unknown timezone 'Mars/Base'"):
        create_app(tiny_bundle, timezone="Mars/Base")


def test_microbatched_requests_keep_their_own_time_zone(parser, typed_example):
    zones = {"Asia/Tokyo": "+09:00", "Asia/Kolkata": "+05:30"}  # no daylight saving time
    asked = list(zones) * 3

    async def ask(url):
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            bodies = [{"text": typed_example, "timezone": z} for z in asked]
            answers = await asyncio.gather(*(c.post("/parse", json=b) for b in bodies))
            return [a.json() for a in answers]

    with live_server(create_app(parser, microbatch_ms=50, api_key="")) as url:
        results = asyncio.run(ask(url))
    for zone, result in zip(asked, results, strict=True):
        times = [
            s["resolved"] for s in result["slots"] if (s["resolved"] or {}).get("kind") == "time"
        ]
        assert times and all(zones[zone] in json.dumps(t) for t in times), (zone, result)


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
    assert meta["in_scope_score"] == "mahalanobis_softmax" and meta["threshold"] == parser.threshold
    expected = Limits(
        max_chars=MAX_CHARS,
        max_batch=MAX_BATCH,
        max_batch_chars=MAX_BATCH_CHARS,
        max_body_bytes=MAX_BODY,
    )
    assert meta["limits"] == expected.asdict()
    assert meta["limits"]["header_timeout"] > 0 and meta["limits"]["max_connections"] > 0
    assert "version" in meta and "metrics" in meta
    # The demo page's examples: the bundle's own training requests, one per intent (at most 6).
    assert meta["examples"] == parser.manifest["examples"] and len(meta["examples"]) == 6


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
    ("/parse", b"[1, 2]", JSON, 422, "Input should be an object"),
    ("/parse", b'{"text": ""}', JSON, 422, "at least 1 character"),
    ("/parse", b'{"text": "  \\t "}', JSON, 422, "empty (or only white space"),
    ("/parse", b'{"text": "\\u200b\\u200b"}', JSON, 422, "zero-width"),
    ("/parse", b'{"text": "\\ufeff"}', JSON, 422, "zero-width"),
    ("/parse", b'{"text": "\\u0000 \\u0007"}', JSON, 422, "control"),
    ("/parse", b'{"text": "\\u0301\\u0308"}', JSON, 422, "combining"),
    ("/parse", b'{"text": "\\ud800"}', JSON, 400, "not valid JSON"),
    ("/parse", b'{"text": "%s"}' % (b"a" * (MAX_CHARS + 1)), JSON, 422, "at most 200 characters"),
    ("/parse", b'{"text": "hi", "lang": "en"}', JSON, 422, "lang: Extra inputs are not permitted"),
    ("/parse", b'{"text": "hi", "threshold": 1.5}', JSON, 422, "threshold"),
    ("/parse", b'{"text": "hi", "threshold": "0.5"}', JSON, 422, "threshold"),
    ("/parse", b'{"text": "hi", "threshold": NaN}', JSON, 422, "threshold"),
    ("/parse", b'{"text": "hi"}', {"Content-Type": "text/plain"}, 415, "Content-Type"),
    ("/parse", b'{"text": "%s"}' % (b"a" * MAX_BODY), JSON, 413, f"limit of {MAX_BODY} bytes"),
    ("/parse/batch", b'{"texts": "hello"}', JSON, 422, "texts: Input should be a valid array"),
    ("/parse/batch", b'{"texts": []}', JSON, 422, "at least 1 item"),
    ("/parse/batch", b'{"texts": ["a", " "]}', JSON, 422, "texts.1:"),
    ("/parse/batch", b'{"texts": [%s]}' % b",".join([b'"a"'] * 9), JSON, 422, "at most 8 items"),
    (
        "/parse/batch",
        b'{"texts": [%s]}' % b",".join([b'"%s"' % (b"a" * 150)] * 8),
        JSON,
        422,
        f"1200 characters together, more than this server's limit of {MAX_BATCH_CHARS}",
    ),
    ("/model/parse", b'{"text": "hi", "sender": "me"}', JSON, 422, "sender"),
    (
        "/parse",
        b'{"text": "hi", "timezone": "Mars/Base"}',
        JSON,
        422,
        "timezone: Unknown timezone 'Mars/Base'",
    ),
    (
        "/parse",
        b'{"text": "hi", "reference_time": "soon"}',
        JSON,
        422,
        "reference_time: reference_time 'soon' is not an ISO-8601 date-time",
    ),
    ("/parse", b'{"text": "hi", "reference_time": 5}', JSON, 422, "reference_time"),
    ("/parse/batch", b'{"texts": ["hi"], "timezone": ""}', JSON, 422, "timezone:"),
    ("/model/parse", b'{"text": "hi", "timezone": "{0}"}', JSON, 422, "Unknown timezone '{0}'"),
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


@pytest.mark.parametrize(
    "path", ["/health", "/ready", "/metadata", "/metrics", "/", "/openapi.json"]
)
def test_head_works_where_get_does(client, path):
    get, head = client.get(path), client.head(path)
    assert (get.status_code, head.status_code) == (200, 200)
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


def test_docs_need_nothing_from_elsewhere(client):
    """FastAPI's /docs and /redoc pull scripts from a CDN; they are off, the schema is served."""
    assert client.get("/docs").status_code == 404
    assert client.get("/redoc").status_code == 404
    assert "/parse" in client.get("/openapi.json").json()["paths"]
    page = client.get("/").text
    assert "http://" not in page and "https://" not in page


def test_long_text_is_parsed_from_its_start_and_says_so(client, parser):
    short = client.post("/parse", json={"text": TEXTS[0]}).json()
    assert "truncated" not in short
    long = ("play jazz by " + "x " * MAX_CHARS)[:MAX_CHARS]  # a sub-token every two characters
    assert len(parser.tokenizer.encode(long).ids) == parser.max_length < len(long) / 2
    result = client.post("/parse", json={"text": long}).raise_for_status().json()
    assert result["truncated"] is True
    assert all(s["end"] <= len(long) for s in result["slots"])
    assert parser.parse(long)["truncated"] is True


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


def _counter(metrics: str, name: str) -> float:
    """A sample's value from /metrics text (0 when it is not there yet)."""
    found = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_microbatching_gives_the_same_results(api, batched_api):
    texts = TEXTS * 2
    names = ("microbatched_requests", "parsed_texts", "microbatches")
    before = httpx.get(batched_api + "/metrics").text
    start = {n: _counter(before, f"voicenlu_{n}_total") for n in names}
    plain = asyncio.run(_parse_concurrently(api, texts))
    batched = asyncio.run(_parse_concurrently(batched_api, texts))
    for a, b in zip(plain, batched, strict=True):
        assert b["text"] == a["text"]
        assert b["intent"]["name"] == a["intent"]["name"]
        assert b["intent"]["confidence"] == pytest.approx(a["intent"]["confidence"], abs=1e-3)
        assert [(s["slot"], s["start"], s["end"]) for s in b["slots"]] == [
            (s["slot"], s["start"], s["end"]) for s in a["slots"]
        ]
    after = httpx.get(batched_api + "/metrics").text
    grown = {n: _counter(after, f"voicenlu_{n}_total") - start[n] for n in names}
    assert grown["microbatched_requests"] == grown["parsed_texts"] == len(texts)
    assert grown["microbatches"] < len(texts), "nothing was grouped"


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
    with pytest.raises(ConfigError, match="VOICENLU_MAX_CHARS='lots'"):
        serve("/some/bundle")  # serve reads the environment too
    monkeypatch.delenv("VOICENLU_MAX_CHARS")
    with pytest.raises(ConfigError, match="--threads"):
        serve("/some/bundle", threads=0)


@contextmanager
def cli_server(
    bundle: Path, *flags: str, env: dict | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`voicenlu serve` in its own process on a free loopback port, once it is ready."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cli = [sys.executable, "-m", "voicenlu", "serve", str(bundle), "--port", str(port), *flags]
    environ = {**os.environ, **(env or {})}
    server = subprocess.Popen(cli, stderr=subprocess.PIPE, env=environ)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read().decode()
            assert time.monotonic() < deadline, "the server did not get ready"
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url, server
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)


def test_two_worker_processes_answer_concurrent_requests(tiny_bundle):
    """`voicenlu serve --workers 2`: each worker loads the model from the settings it is given,
    and any worker's /metrics counts the requests of both."""
    with cli_server(tiny_bundle, "--workers", "2", "--threads", "1") as (url, _):
        deadline = time.monotonic() + 120
        while httpx.get(url + "/ready", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "the workers did not get ready"
            time.sleep(0.3)

        async def many() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                return await asyncio.gather(
                    *(client.post("/parse", json={"text": t}) for t in TEXTS * 4)
                )

        answers = asyncio.run(many())
        assert [a.status_code for a in answers] == [200] * len(TEXTS) * 4
        assert [a.json()["text"] for a in answers] == TEXTS * 4
        sample = 'voicenlu_requests_total{endpoint="/parse",status="200"}'
        for _ in range(4):  # a new connection each time: either worker may answer
            assert _counter(httpx.get(url + "/metrics").text, sample) == len(TEXTS) * 4


# --- Hostile clients, against `voicenlu serve` in its own process ------------------------------

HOSTILE_LIMITS = {
    "--max-header-bytes": "8192",
    "--max-headers": "32",
    "--header-timeout": "1",
    "--body-timeout": "1",
    "--max-connections": "24",
    "--max-inflight": "8",
    "--keepalive-timeout": "1",
    "--max-batch-chars": "256000",
}
# 1,000 characters of words: the model reads the first 48 sub-tokens (tiny_bundle's max_length).
LONG = ("play the song " + "la " * 400)[:1000]


@pytest.fixture(scope="module")
def hostile(tiny_bundle) -> Iterator[tuple[str, subprocess.Popen]]:
    """A server with an API key and short timeouts: every limit is hit before the key is."""
    flags = [x for pair in HOSTILE_LIMITS.items() for x in pair]
    with cli_server(tiny_bundle, *flags, env={"VOICENLU_API_KEY": API_KEY}) as running:
        yield running


def _authorized() -> dict:
    return {"Authorization": f"Bearer {API_KEY}"}


def _raw(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def _rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


def _metric(url: str, sample: str) -> float:
    return _counter(httpx.get(url + "/metrics", headers=_authorized()).text, sample)


def test_huge_headers_are_refused_before_the_key_and_cost_nothing(hostile):
    url, server = hostile
    before = _rss_mb(server.pid)
    sock, started = _raw(url), time.monotonic()
    sock.sendall(b"GET /metadata HTTP/1.1\r\nHost: x\r\nX-Pad: ")
    sent = 0
    while sent < 64 * 2**20 and not select.select([sock], [], [], 0.005)[0]:
        try:
            sock.sendall(b"a" * 4096)  # 64 MiB if nobody stops it
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += 4096
    answer = _answer(sock)
    elapsed = time.monotonic() - started
    sock.close()
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"8192 bytes" in answer
    assert sent < 2**20 and elapsed < 2, (sent, elapsed)
    started = time.monotonic()
    assert httpx.get(url + "/health").status_code == 200
    assert time.monotonic() - started < 0.5
    assert _rss_mb(server.pid) - before < 20

    many = b"".join(b"X-%d: 1\r\n" % i for i in range(40))
    sock = _raw(url)
    sock.sendall(b"GET /metadata HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    answer = _answer(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 431") and b"32 header fields" in answer


def test_slow_and_silent_connections_are_closed(hostile):
    url, _ = hostile
    started = time.monotonic()
    silent = [_raw(url) for _ in range(4)]
    dripping = [_raw(url) for _ in range(4)]
    for sock in dripping:
        sock.sendall(b"GET /health HTTP/1.1\r\n")
    for _ in range(4):  # a byte every 0.3 s: never a whole header
        time.sleep(0.3)
        for sock in dripping:
            try:
                sock.sendall(b"X")
            except OSError:
                pass
    answers = [_answer(sock) for sock in silent + dripping]
    elapsed = time.monotonic() - started
    for sock in silent + dripping:
        sock.close()
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers
    assert elapsed < 3, elapsed


def test_connections_past_the_cap_get_a_fast_503(hostile):
    url, _ = hostile
    idle = [_raw(url) for _ in range(24)]
    try:
        time.sleep(0.1)
        started = time.monotonic()
        extra = httpx.get(url + "/health")
        assert extra.status_code == 503 and extra.headers["retry-after"] == "1"
        assert "too many open connections" in extra.json()["error"]
        assert time.monotonic() - started < 0.5
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 3
    while httpx.get(url + "/health").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_slow_and_abandoned_bodies(hostile):
    """A body that stalls gets a 408; one whose client leaves is counted as 499, not 500."""
    url, _ = hostile
    head = b"POST /parse HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += b"Authorization: Bearer %s\r\nContent-Length: 100\r\n\r\n" % API_KEY.encode()
    sock, started = _raw(url), time.monotonic()
    sock.sendall(head + b'{"text": "pl')
    answer = _answer(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert 0.9 < time.monotonic() - started < 2.5

    gone = 'voicenlu_requests_total{endpoint="/parse",status="499"}'
    failed = 'voicenlu_requests_total{endpoint="/parse",status="500"}'
    before = _metric(url, gone)
    for _ in range(3):
        sock = _raw(url)
        sock.sendall(head + b'{"text": "pl')
        sock.close()
    deadline = time.monotonic() + 3
    while _metric(url, gone) < before + 3:
        assert time.monotonic() < deadline, "the abandoned requests were not counted as 499"
        time.sleep(0.05)
    assert _metric(url, failed) == 0


def test_work_for_a_client_that_left_is_not_done(hostile):
    url, _ = hostile
    parsed = "voicenlu_parsed_texts_total"
    gone = 'voicenlu_requests_total{endpoint="/parse/batch",status="499"}'
    before, gone_before = _metric(url, parsed), _metric(url, gone)
    body = json.dumps({"texts": [LONG] * 256}).encode()
    sock = _raw(url)
    sock.sendall(
        b"POST /parse/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s"
        % (API_KEY.encode(), len(body), body)
    )
    time.sleep(0.3)
    sock.close()
    deadline = time.monotonic() + 30
    while _metric(url, gone) == gone_before:
        assert time.monotonic() < deadline, "the abandoned batch was not counted as 499"
        time.sleep(0.1)
    time.sleep(0.5)
    assert _metric(url, parsed) - before < 256 / 2


def test_big_batches_neither_block_single_requests_nor_keep_memory(hostile):
    url, server = hostile
    client = httpx.Client(base_url=url, headers=_authorized(), timeout=60)
    for text in TEXTS:
        client.post("/parse", json={"text": text}).raise_for_status()
    baseline = _rss_mb(server.pid)

    async def batches_and_one_parse() -> tuple[float, float]:
        async with httpx.AsyncClient(base_url=url, headers=_authorized(), timeout=60) as c:
            started = time.monotonic()
            big = [
                asyncio.create_task(c.post("/parse/batch", json={"texts": [LONG] * 64}))
                for _ in range(3)
            ]
            await asyncio.sleep(0.2)
            one = await c.post("/parse", json={"text": TEXTS[1]})
            single = time.monotonic() - started
            answers = await asyncio.gather(*big)
            assert one.status_code == 200
            assert all(a.status_code == 200 for a in answers)
            assert all(r["truncated"] for a in answers for r in a.json())
            return single, time.monotonic() - started

    single, total = asyncio.run(batches_and_one_parse())
    assert single < 0.5 * total, (single, total)
    for text in TEXTS:
        client.post("/parse", json={"text": text}).raise_for_status()
    assert _rss_mb(server.pid) - baseline < 40, (baseline, _rss_mb(server.pid))
    client.close()


def test_sigterm_ends_a_never_ending_body_within_the_shutdown_deadline(tiny_bundle):
    flags = ["--body-timeout", "600", "--shutdown-timeout", "1"]
    with cli_server(tiny_bundle, *flags) as (url, server):
        sock = _raw(url)
        sock.sendall(
            b"POST /parse HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        sock.sendall(b"1\r\n{\r\n")
        time.sleep(0.2)
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        while server.poll() is None and time.monotonic() - started < 10:
            try:
                sock.sendall(b"1\r\n \r\n")  # the body goes on and on
            except OSError:
                break
            time.sleep(0.1)
        server.wait(timeout=10)
        sock.close()
        assert time.monotonic() - started < 4
        # uvicorn shuts down, then lets SIGTERM end the process as it would have: not a kill.
        assert server.returncode == -signal.SIGTERM


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


def slot(name: str, value: str, start: int) -> dict:
    return {
        "slot": name,
        "value": value,
        "start": start,
        "end": start + len(value),
        "confidence": 0.9,
        "resolved": None,
    }


def test_demo_page_shows_intent_and_slots(api, parser, slot_example, tmp_path):
    """The page, driven in headless Chromium, draws exactly what the API answered.

    Without Chromium the test skips on a workstation but fails in CI (``CI`` set), where
    ``make browser`` installs it. The screenshot goes to a temporary folder; set
    VOICENLU_REFRESH_DEMO_PNG=1 to refresh docs/demo.png with it.
    """
    if not CHROMIUM.exists():
        message = f"no Chromium at {CHROMIUM}: run `make browser` (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    expected = parser.parse(slot_example)
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
            problems = []
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(api + "/")
            expect(page.locator("#model")).to_contain_text(parser.manifest["backbone"])
            page.fill("#text", slot_example)
            page.click("#submit")
            expect(page.locator("#intent")).to_have_text(expected["intent"]["name"])
            expect(page.locator("#confidence")).to_have_text(
                f"{expected['intent']['confidence'] * 100:.1f}%"
            )
            expect(page.locator("#highlighted mark.slot .value")).to_have_text(
                [s["value"] for s in expected["slots"]]
            )
            expect(page.locator("#highlighted")).to_contain_text(slot_example.split()[0])
            expect(page.locator("#ranking .rank-name")).to_have_text(
                [r["name"] for r in expected["intent_ranking"]]
            )
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

            page.set_viewport_size({"width": 900, "height": 760})
            refresh = os.environ.get("VOICENLU_REFRESH_DEMO_PNG") == "1"
            shot = SCREENSHOT if refresh else tmp_path / "demo.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.read_bytes().startswith(b"\x89PNG")

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

            # Resolved values, staged too, next to their slots; the page asks in its own zone.
            text = "table near me for four tomorrow at 8 pm"
            staged = {
                "text": text,
                "intent": {"name": "BookRestaurant", "confidence": 0.9},
                "in_scope": True,
                "intent_ranking": [{"name": "BookRestaurant", "confidence": 0.9}],
                "slots": [
                    {
                        "slot": "party_size_number",
                        "value": "four",
                        "start": 18,
                        "end": 22,
                        "confidence": 0.9,
                        "resolved": {"kind": "number", "value": 4},
                    },
                    {
                        "slot": "timeRange",
                        "value": "tomorrow at 8 pm",
                        "start": 23,
                        "end": 39,
                        "confidence": 0.9,
                        "resolved": {
                            "kind": "time",
                            "type": "value",
                            "value": "2026-11-29T20:00:00.000+01:00",
                            "grain": "hour",
                        },
                    },
                    {
                        "slot": "spatial_relation",
                        "value": "near",
                        "start": 6,
                        "end": 10,
                        "confidence": 0.9,
                        "resolved": None,
                    },
                ],
            }
            two = {
                "text": "play some jazz and then what's the weather in Oslo",
                "intent": {"name": "PlayMusic", "confidence": 0.9},
                "in_scope": True,
                "intent_ranking": [{"name": "PlayMusic", "confidence": 0.9}],
                "slots": [slot("genre", "jazz", 10)],
                "requests": [
                    {
                        "text": "play some jazz",
                        "start": 0,
                        "end": 14,
                        "intent": {"name": "PlayMusic", "confidence": 0.9},
                        "in_scope": True,
                        "intent_ranking": [{"name": "PlayMusic", "confidence": 0.9}],
                        "slots": [slot("genre", "jazz", 10)],
                    },
                    {
                        "text": "what's the weather in Oslo",
                        "start": 24,
                        "end": 50,
                        "intent": {"name": "GetWeather", "confidence": 0.8},
                        "in_scope": True,
                        "intent_ranking": [{"name": "GetWeather", "confidence": 0.8}],
                        "slots": [slot("city", "Oslo", 46)],
                    },
                ],
            }
            sent = []

            def answer(route):
                sent.append(route.request.post_data_json)
                route.fulfill(json=staged)

            page.unroute("**/parse")
            page.route("**/parse", answer)
            page.fill("#text", text)
            page.click("#submit")
            expect(page.locator("#slots .slot-resolved")).to_have_text(
                ["= 4", "= 2026-11-29T20:00:00.000+01:00"]
            )
            assert sent[-1]["timezone"] == page.evaluate(
                "Intl.DateTimeFormat().resolvedOptions().timeZone"
            )
            expect(page.locator("#requests-section")).to_be_hidden()

            # Two requests in one text: one line each; every slot marked in the whole text.
            page.unroute("**/parse")
            page.route("**/parse", lambda route: route.fulfill(json=two))
            page.fill("#text", two["text"])
            page.click("#submit")
            expect(page.locator("#requests .request-intent")).to_have_text(
                ["PlayMusic", "GetWeather"]
            )
            expect(page.locator("#requests .request-text")).to_have_text(
                ["“play some jazz”", "“what's the weather in Oslo”"]
            )
            expect(page.locator("#intent")).to_have_text("PlayMusic")
            expect(page.locator("#highlighted mark.slot .value")).to_have_text(["jazz", "Oslo"])
            assert problems == [], problems
        finally:
            browser.close()


def test_readme_documents_every_limit_with_its_default():
    readme = (Path(__file__).resolve().parents[1] / "docs" / "production.md").read_text(
        encoding="utf-8"
    )
    for f in dataclasses.fields(Limits):
        row = f"| `--{f.name.replace('_', '-')}` | `{Limits.env_name(f.name)}` | {f.default} |"
        assert row in readme, f"README's limits table lacks or misstates {f.name}"


def test_derived_body_limits_follow_the_limits_they_come_from():
    """A body limit left at 0 is derived anew from the text limits of each copy, as the CLI
    makes them, and /metadata shows the size that applies."""
    from voicenlu.server.app import limits_with

    default = Limits()
    wider = limits_with(None, {"max_batch_chars": 256_000})
    assert wider.body_bytes > 4 * 256_000 > default.body_bytes
    assert limits_with(None, {"max_body_bytes": 5000}).body_bytes == 5000
    longer = limits_with(None, {"max_audio_seconds": 30.0})
    assert longer.audio_bytes > 2 * 16_000 * 30 > default.audio_bytes
    shown = wider.asdict()
    assert shown["max_body_bytes"] == wider.body_bytes and wider.max_body_bytes == 0
    assert Limits.from_env(wider.to_env()) == wider
