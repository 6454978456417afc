"""The guard (serving/guard.py) over HTTP against the real `bentoml serve`, with a token in the
environment: 401 without it on writes, reads open (`auth: writes`), 413 for oversized bodies
(declared or streamed) with the worker answering after, 429 past the rate, 504 for a body that
never finishes — and the token in no log. `auth: all` is checked on the middleware itself."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from seqops.config import Paths, ServingParams
from seqops.serving.guard import Guard, RateLimiter, load_token
from seqops.serving.launch import Service
from tests.serving.conftest import mini_project, raw_item, raw_user

TOKEN = "s3cret-guard-token-5f1e0c"
RATE, BURST, TIMEOUT_S = 20, 30, 3
OVERRIDES = {"workers": 1, "rate_limit_per_s": RATE, "rate_burst": BURST, "request_timeout_s": TIMEOUT_S}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return mini_project(tmp_path_factory.mktemp("guard") / "project")


@pytest.fixture(scope="module")
def url(project) -> str:
    env = {"SEQOPS_API_TOKEN": TOKEN, "SEQOPS_SERVING_OVERRIDES": json.dumps(OVERRIDES)}
    with Service(project, env=env) as service:
        yield service.url


def events_body(user: str = "guard-user") -> dict:
    return {"events": [{"user_id": user, "item_id": raw_item(1), "event_type": "view"}]}


def authorised(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


def refill() -> None:
    time.sleep(BURST / RATE + 0.2)  # a full bucket again for the address


@pytest.mark.slow
@pytest.mark.timeout(600)
class TestServedGuard:
    def test_writes_need_the_token_reads_stay_open(self, url):
        refill()
        assert httpx.post(f"{url}/events", json=events_body(), timeout=30).status_code == 401
        wrong = httpx.post(f"{url}/events", json=events_body(), headers=authorised("nope"), timeout=30)
        assert (
            wrong.status_code == 401
            and wrong.headers["www-authenticate"] == "Bearer"
            and "bearer token" in wrong.json()["error"]
        )
        assert httpx.post(f"{url}/events", json=events_body(), headers=authorised(), timeout=30).status_code == 200
        assert httpx.post(f"{url}/recommend", json={"user_id": raw_user(1)}, timeout=30).status_code == 200
        assert httpx.get(f"{url}/metadata", timeout=30).status_code == 200

    def test_oversized_bodies_are_refused_before_parsing_and_the_worker_still_answers(self, url):
        refill()
        big = b'{"user_id": "' + b"x" * (2 * ServingParams().max_body_bytes) + b'"}'
        declared = httpx.post(f"{url}/recommend", content=big, headers={"content-type": "application/json"}, timeout=30)
        assert declared.status_code == 413 and "bytes" in declared.json()["error"]

        def chunks():  # no Content-Length: the guard counts what streams in
            for start in range(0, len(big), 65536):
                yield big[start : start + 65536]

        try:
            streamed = httpx.post(
                f"{url}/events",
                content=chunks(),
                headers={**authorised(), "content-type": "application/json"},
                timeout=30,
            )
            assert streamed.status_code == 413
        except httpx.HTTPError:  # the server may close while the client is still sending: refused either way
            pass
        assert httpx.post(f"{url}/recommend", json={"user_id": raw_user(2)}, timeout=30).status_code == 200

    def test_past_the_rate_a_client_gets_429_with_retry_after(self, url):
        refill()
        with httpx.Client(timeout=30) as client:
            statuses = [client.post(f"{url}/recommend", json={"user_id": raw_user(3)}) for _ in range(3 * BURST)]
        codes = [r.status_code for r in statuses]
        assert codes[:BURST].count(200) == BURST and 429 in codes, codes
        refused = next(r for r in statuses if r.status_code == 429)
        assert (
            int(refused.headers["retry-after"]) >= 1 and refused.json()["error"] == "too many requests from this client"
        )
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200  # the probes are never rate-limited
        refill()
        assert httpx.post(f"{url}/recommend", json={"user_id": raw_user(3)}, timeout=30).status_code == 200

    def test_a_request_that_never_finishes_gets_504(self, url):
        refill()
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=TIMEOUT_S + 20) as sock:
            sock.sendall(
                b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 100\r\n\r\n{"user_id"'
            )  # 90 bytes never come
            started = time.monotonic()
            answer = sock.recv(4096).decode()
        assert answer.startswith("HTTP/1.1 504") and time.monotonic() - started < TIMEOUT_S + 10, answer

    def test_the_token_is_in_no_log(self, url, project):
        paths = Paths(project)
        httpx.post(f"{url}/events", json=events_body("log-check"), headers=authorised(), timeout=30)
        logs = [paths.logs / "bentoml-serve.log", *sorted((paths.logs / "requests").glob("*.jsonl"))]
        assert len(logs) > 1
        for path in logs:
            assert TOKEN not in path.read_text(), path
        clients = {json.loads(line).get("client") for line in logs[1].read_text().splitlines()}
        assert "addr:127.0.0.1" in clients  # the request log names the client (the monitor weighs clients)


# -- the middleware itself (auth: all, the token file), behind a plain ASGI app ---------------


async def ok_app(scope, receive, send):
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


def guarded(**params) -> httpx.AsyncClient:
    app = Guard(ok_app, ServingParams(**params), TOKEN)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://guarded")


def test_auth_all_asks_for_the_token_on_reads_but_not_on_probes():
    async def probe() -> None:
        async with guarded(auth="all") as client:
            assert (await client.post("/recommend", json={})).status_code == 401
            assert (await client.get("/docs.json")).status_code == 401
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.post("/recommend", json={}, headers=authorised())).status_code == 200
        async with guarded(auth="writes") as client:
            assert (await client.post("/recommend", json={})).status_code == 200
            assert (await client.post("/events", json={})).status_code == 401
        async with guarded(auth="off") as client:
            assert (await client.post("/events", json={})).status_code == 200

    asyncio.run(probe())


def test_the_body_reaches_the_app_whole_below_the_limit():
    async def probe() -> None:
        async with guarded(max_body_bytes=1000) as client:
            answer = await client.post("/events", content=b"x" * 1000, headers=authorised())
            assert answer.status_code == 200 and answer.text == "1000"
            assert (await client.post("/events", content=b"x" * 1001, headers=authorised())).status_code == 413

    asyncio.run(probe())


def test_the_token_comes_from_the_environment_or_the_secret_file(tmp_path, monkeypatch):
    monkeypatch.delenv("SEQOPS_API_TOKEN", raising=False)
    assert load_token(ServingParams(), tmp_path) is None
    (tmp_path / "token").write_text(TOKEN + "\n")
    assert load_token(ServingParams(token_file="token"), tmp_path) == TOKEN
    monkeypatch.setenv("SEQOPS_API_TOKEN", "from-env")
    assert load_token(ServingParams(token_file="token"), tmp_path) == "from-env"


def test_a_token_bucket_lets_a_burst_through_then_the_rate():
    limiter = RateLimiter(rate=10, burst=5)
    waits = [limiter.wait_s("a") for _ in range(6)]
    assert waits[:5] == [0.0] * 5 and 0 < waits[5] <= 0.1
    assert limiter.wait_s("b") == 0.0  # another client has its own bucket
