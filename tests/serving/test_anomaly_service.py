"""POST /anomaly on the small served project (real Feast online store, real registry, tiny SASRec):
the engine's answer for a known user, an explicit item list and an unknown user (a fallback, never
an error), then the real BentoML service over HTTP: 200s, and bad input → 4xx naming the field."""

from __future__ import annotations

import httpx
import pytest

from seqops.config import Paths
from seqops.serving.engine import Engine, RequestError
from seqops.serving.launch import running_service
from seqops.serving.schemas import HistoryRequest
from tests.serving.conftest import mini_project, raw_item, raw_user


@pytest.fixture(scope="module")
def engine(served_project, params):
    return Engine(Paths(served_project), params)


def assert_scored(answer: dict) -> None:
    assert isinstance(answer["score"], float) and isinstance(answer["flagged"], bool)
    assert answer["flagged"] == (answer["score"] > answer["threshold"])
    assert answer["fallback"] is False and isinstance(answer["reasons"], list)
    for reason in answer["reasons"]:
        assert {"feature", "value", "z", "direction", "description"} <= set(reason)


def test_known_user_and_explicit_items_are_scored(engine):
    by_user = engine.anomaly(HistoryRequest(user_id=raw_user(1)))
    assert_scored(by_user)
    assert by_user["user_id"] == raw_user(1) and by_user["model_version"]
    assert_scored(engine.anomaly(HistoryRequest(items=[raw_item(i) for i in (1, 2, 3, 2, 1)])))


def test_unknown_user_gets_a_clear_fallback(engine):
    answer = engine.anomaly(HistoryRequest(user_id="nobody-at-all"))
    assert answer["fallback"] is True and answer["fallback_reason"] == "unknown user"
    assert answer["score"] is None and answer["flagged"] is False and answer["reasons"] == []


def test_unknown_item_is_refused_naming_it(engine):
    with pytest.raises(RequestError) as refused:
        engine.anomaly(HistoryRequest(items=[raw_item(1), "no-such-item"]))
    assert refused.value.status == 400 and "items[1]" in refused.value.message


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with running_service(mini_project(tmp_path_factory.mktemp("anomaly-http") / "project")) as base:
        yield base


BAD = [
    ({"user_id": 7}, "user_id"),
    ({}, "user_id"),
    ({"user_id": "u", "verbose": True}, "verbose"),
    ({"items": ["a"], "event_types": ["teleport"]}, "event_types.0"),
    ({"items": ["no-such-item"]}, "items[0]"),
]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_real_service_answers_and_refuses_naming_the_field(url):
    known = httpx.post(f"{url}/anomaly", json={"user_id": raw_user(2)}, timeout=60)
    assert known.status_code == 200, known.text
    assert_scored(known.json())
    unknown = httpx.post(f"{url}/anomaly", json={"user_id": "nobody-at-all"}, timeout=30)
    assert unknown.status_code == 200, unknown.text
    assert unknown.json()["fallback_reason"] == "unknown user"
    for body, field in BAD:
        response = httpx.post(f"{url}/anomaly", json=body, timeout=30)
        assert 400 <= response.status_code < 500, (body, response.status_code, response.text)
        assert field in response.json()["error"], (body, response.text)
