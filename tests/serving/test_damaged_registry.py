"""A damaged registry never stops the service: started with a damaged or dangling champion pointer
the engine is not ready (every request a 503 with the reason, the reason logged once); while
serving, a damaged or dangling pointer keeps the last good champion answering, with one WARNING per
change of the pointer rather than a traceback per poll; a repaired pointer is picked up as usual.
The real `bentoml serve` started on a damaged pointer answers 503 instead of crash-looping."""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest

from seqops.config import Paths, load_params
from seqops.serving import engine as engine_module
from seqops.serving.engine import Engine, RequestError
from seqops.serving.launch import Service
from seqops.serving.schemas import HistoryRequest, RecommendRequest
from tests.serving.conftest import mini_project, raw_user

GARBAGE = b'{"champion": "v0001-'
DANGLING = "v0099-abcdef"  # a well-formed version the registry has no model files for


@pytest.fixture
def pointer(served_project, monkeypatch):
    """The champion pointer file, restored after the test; the engine re-reads it on every call."""
    path = Paths(served_project).registry / "champion.json"
    good = path.read_bytes()
    monkeypatch.setattr(engine_module, "CHAMPION_CHECK_S", 0.0)
    yield path
    path.write_bytes(good)


def dangling(path) -> bytes:
    return json.dumps({**json.loads(path.read_bytes()), "champion": DANGLING}).encode()


def problems(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "seqops.serving" and r.levelno >= logging.WARNING]


def ask(engine: Engine):
    return engine.recommend([RecommendRequest(user_id=raw_user(1), k=3)])[0]


@pytest.mark.parametrize(
    "damage, named", [(lambda p: GARBAGE, "champion.json"), (dangling, DANGLING)], ids=["damaged", "dangling"]
)
def test_started_on_a_bad_pointer_the_engine_is_not_ready_and_says_why_once(
    served_project, params, pointer, caplog, damage, named
):
    good = pointer.read_bytes()
    pointer.write_bytes(damage(pointer))
    with caplog.at_level(logging.INFO, logger="seqops.serving"):
        engine = Engine(Paths(served_project), params)  # was: an exception, and BentoML restarts the worker forever
        assert not engine.ready() and named in engine.not_ready_reason
        for _ in range(20):  # polls: the reason is logged once, not per poll
            answer = ask(engine)
            assert isinstance(answer, RequestError) and answer.status == 503 and named in answer.message
        for call in (engine.metadata, lambda: engine.head("churn", HistoryRequest(user_id=raw_user(1)))):
            with pytest.raises(RequestError) as caught:
                call()
            assert caught.value.status == 503 and named in caught.value.message
        assert len(problems(caplog)) == 1 and named in problems(caplog)[0].getMessage()

        pointer.write_bytes(good)  # repaired: ready again, without a restart and without a request
        assert engine.ready() and engine.not_ready_reason is None
    assert not isinstance(ask(engine), RequestError)


def test_while_serving_a_bad_pointer_keeps_the_last_good_champion(served_project, params, pointer, caplog):
    engine = Engine(Paths(served_project), params)
    serving = ask(engine)["model_version"]
    good = pointer.read_bytes()
    with caplog.at_level(logging.INFO, logger="seqops.serving"):
        for damage, named in ((GARBAGE, "champion.json"), (dangling(pointer), DANGLING)):
            pointer.write_bytes(damage)
            for _ in range(20):
                assert ask(engine)["model_version"] == serving and engine.ready()
                engine.wait_for_load()  # the dangling version is tried on the side thread, once
        pointer.write_bytes(good)
        for _ in range(5):
            assert ask(engine)["model_version"] == serving
    warnings = problems(caplog)
    assert [r.levelname for r in warnings] == ["WARNING", "WARNING"]  # one per change of the pointer, not per poll
    assert "champion.json" in warnings[0].getMessage() and DANGLING in warnings[1].getMessage()
    assert all(f"still serving {serving}" in r.getMessage() and r.exc_info is None for r in warnings)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bentoml_serve_on_a_damaged_pointer_answers_503_with_the_reason(tmp_path):
    project = mini_project(tmp_path / "project")
    pointer = Paths(project).registry / "champion.json"
    good = pointer.read_bytes()
    pointer.write_bytes(GARBAGE)
    workers = load_params(project / "params.yaml").serving.workers
    service = Service(project)
    try:
        # was: no worker ever initialised (each start raised and BentoML restarted it forever), no answer at all
        wait_for_log(service, "Service seqops-recommender initialized", workers, timeout_s=240)
        readyz = httpx.get(f"{service.url}/readyz", timeout=10)
        assert readyz.status_code == 503, service.log_path.read_text()[-3000:]
        answer = httpx.post(f"{service.url}/recommend", json={"user_id": raw_user(1), "k": 3}, timeout=30)
        assert answer.status_code == 503 and "champion.json" in answer.json()["error"], answer.text
        time.sleep(3)
        log = service.log_path.read_text()
        assert service.proc.poll() is None and "Traceback" not in log, log[-3000:]
        assert log.count("] not ready: damaged registry record") == workers, log[-3000:]  # once per worker

        pointer.write_bytes(good)  # repaired: ready without a restart
        service.wait_ready(timeout_s=60)
        assert (
            httpx.post(f"{service.url}/recommend", json={"user_id": raw_user(1), "k": 3}, timeout=30).status_code == 200
        )
    finally:
        service.stop()


def wait_for_log(service: Service, text: str, count: int, timeout_s: float) -> None:
    """Until the server's log holds `text` `count` times (the server process must stay up meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while service.log_path.read_text().count(text) < count:
        assert service.proc.poll() is None and time.monotonic() < deadline, service.log_path.read_text()[-3000:]
        time.sleep(0.5)
