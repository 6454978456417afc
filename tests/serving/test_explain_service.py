"""POST /recommend with `explain` on the small served project (real Feast online store, real registry,
tiny SASRec): reasons per item whose weights are the score lost without the event; without
`explain` the answer is exactly today's; an unknown user is a clear fallback; then the real BentoML
service over HTTP, where a bad `explain` is refused naming the field."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from seqops.config import Paths
from seqops.serving.engine import Engine
from seqops.serving.explain import NO_SINGLE_EVENT, sentence
from seqops.serving.launch import running_service
from seqops.serving.schemas import RecommendRequest
from tests.serving.conftest import mini_project, raw_item, raw_user


@pytest.fixture(scope="module")
def engine(served_project, params):
    return Engine(Paths(served_project), params)


def assert_explained(answer: dict) -> None:
    explanations = answer["explanations"]
    assert [e["item"] for e in explanations] == answer["items"]
    for explanation in explanations:
        weights = [event["weight"] for event in explanation["events"]]
        assert weights == sorted(weights, reverse=True) and all(w > 0 for w in weights)
        assert explanation["text"].startswith("because you ") or explanation["text"] == NO_SINGLE_EVENT
        for event in explanation["events"]:
            assert event["item"] in explanation["text"] and event["events_ago"] >= 1


def test_explained_answer_is_the_same_answer_with_reasons(engine):
    plain = engine.recommend([RecommendRequest(user_id=raw_user(3), k=5)])[0]
    off = engine.recommend([RecommendRequest(user_id=raw_user(3), k=5, explain=False)])[0]
    explained = engine.recommend([RecommendRequest(user_id=raw_user(3), k=5, explain=True)])[0]
    assert plain == off and "explanations" not in plain
    assert {k: v for k, v in explained.items() if k != "explanations"} == plain
    assert_explained(explained)
    assert any(e["events"] for e in explained["explanations"])


def test_weights_are_the_score_lost_without_the_event(engine):
    history = [raw_item(i) for i in (4, 9, 14, 19, 24)]
    answer = engine.recommend([RecommendRequest(items=history, k=3, exclude_seen=False, explain=True)])[0]
    assert_explained(answer)
    top = answer["explanations"][0]["events"][0]
    shorter = [raw for i, raw in enumerate(history) if i != len(history) - top["events_ago"]]
    champion, index = engine.current(), engine.vocab.catalog
    scores = champion.next_item_scores([np.asarray([index[r] for r in h]) for h in (history, shorter)])
    target = index[answer["items"][0]]
    assert scores[0, target] - scores[1, target] == pytest.approx(top["weight"], abs=1e-3)


def test_unknown_user_is_a_clear_fallback_with_explain(engine):
    answer = engine.recommend([RecommendRequest(user_id="nobody-at-all", k=3, explain=True)])[0]
    assert answer["fallback"] is True and answer["fallback_reason"] == "unknown user"
    assert all("unknown user" in e["text"] and e["events"] == [] for e in answer["explanations"])


def test_sentence_names_each_event():
    events = [
        {"item": "a", "category": "c1", "event_type": "view"},
        {"item": "b", "category": None, "event_type": "cart"},
    ]
    assert sentence(events) == "because you viewed item a (category c1) and carted item b"
    assert sentence([]) == NO_SINGLE_EVENT


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with running_service(mini_project(tmp_path_factory.mktemp("explain-http") / "project")) as base:
        yield base


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_real_service_explains_and_refuses_a_bad_explain(url):
    def post(body: dict) -> httpx.Response:
        return httpx.post(f"{url}/recommend", json=body, timeout=60)

    explained = post({"user_id": raw_user(2), "k": 4, "explain": True})
    assert explained.status_code == 200, explained.text
    assert_explained(explained.json())
    assert (
        post({"user_id": raw_user(2), "k": 4, "explain": False}).json() == post({"user_id": raw_user(2), "k": 4}).json()
    )
    unknown = post({"user_id": "nobody-at-all", "explain": True})
    assert unknown.status_code == 200 and unknown.json()["fallback_reason"] == "unknown user"
    for bad in ("maybe", 3, [True], {"on": 1}):
        response = post({"user_id": raw_user(2), "explain": bad})
        assert response.status_code in (400, 422), (bad, response.text)
        assert "explain" in response.json()["error"], (bad, response.text)
