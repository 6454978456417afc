"""Exploration on the real BentoML service (small served project, tiny SASRec, real Feast):

- off (the default): every answer is today's — the champion's top k, same items, same scores, same
  keys — and the request log carries no propensities;
- epsilon: answers carry each shown item's propensity (as the formula says), the request log the
  seed, the candidates and the context, and replaying the seed draws the logged slate again; bad
  input is still a 4xx naming the field.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from seqops.config import Paths
from seqops.config_ope import ExploreParams
from seqops.features import store as feature_store
from seqops.models.release.registry import Registry
from seqops.serving.champion import Champion
from seqops.serving.explore import sample_slates
from seqops.serving.launch import Service
from seqops.serving.ranking import recommend_items
from tests.serving.conftest import mini_project, raw_item, raw_user

TODAY_KEYS = {"user_id", "items", "scores", "model_version", "fallback", "fallback_reason"}
EPSILON = ExploreParams(policy="epsilon", epsilon=0.5, candidates=8)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return mini_project(tmp_path_factory.mktemp("explore-http") / "project")


@pytest.fixture(scope="module")
def champion(project) -> Champion:
    registry = Registry.of_project(Paths(project))
    return Champion.load(registry, registry.champion(), quantized=False)


def serve(project, **serving) -> Service:
    return Service(project, env={"SEQOPS_SERVING_OVERRIDES": json.dumps({"workers": 1, **serving})})


def post(url: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/recommend", json=body, timeout=30)


def histories(project, users: list[int]) -> dict[int, np.ndarray]:
    store = feature_store.open_store(Paths(project))
    return {u: np.asarray(row["last_items"]) for u, row in zip(users, feature_store.online_features(store, users))}


def todays_answer(champion: Champion, history: np.ndarray, k: int, exclude_seen: bool = True) -> dict:
    """What /recommend answered before exploration existed: the top k of the champion's scores."""
    scores = champion.next_item_scores([history], [["view"] * len(history)])[0]
    top, top_scores = recommend_items(scores, history if exclude_seen else np.zeros(0, np.int64), k)
    return {"items": champion.raw_items[top].tolist(), "scores": [round(float(s), 5) for s in top_scores]}


def log_lines(project) -> list[dict]:
    folder = Paths(project).logs / "requests"
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines()]


def test_off_answers_are_todays(project, champion):
    users = list(range(1, 9))
    known = histories(project, users)
    with serve(project) as service:
        for user in users:
            for k, exclude_seen in ((5, True), (12, False)):
                body = {"user_id": raw_user(user), "k": k, "exclude_seen": exclude_seen}
                answer = post(service.url, body).json()
                assert set(answer) == TODAY_KEYS and not answer["fallback"]
                assert {key: answer[key] for key in ("items", "scores")} == todays_answer(
                    champion, known[user], k, exclude_seen
                )
        by_items = post(service.url, {"items": [raw_item(1), raw_item(4)], "k": 4}).json()
        assert set(by_items) == TODAY_KEYS
        assert by_items["items"] == todays_answer(champion, np.array([1, 4]), 4)["items"]
    answered = [r for r in log_lines(project) if r["endpoint"] == "recommend"]
    assert len(answered) == 17 and not any("propensities" in r or "explore" in r for r in answered)


def test_epsilon_answers_log_their_propensities_and_replay(project, champion):
    user, k = 2, 3
    history = histories(project, [user])[user]
    greedy = todays_answer(champion, history, EPSILON.candidates)["items"]
    before = len(log_lines(project))
    with serve(project, explore=EPSILON.model_dump()) as service:
        answers = [post(service.url, {"user_id": raw_user(user), "k": k}).json() for _ in range(30)]
        bad = [
            (post(service.url, {"user_id": raw_user(user), "k": 0}), 400, "k"),
            (post(service.url, {"user_id": raw_user(user), "category": "nope"}), 422, "category"),
            (post(service.url, {"items": ["no-such-item"]}), 422, "items[0]"),
            (post(service.url, {"user_id": raw_user(user), "explore": True}), 400, "explore"),
        ]
        wide = post(service.url, {"user_id": raw_user(user), "k": 10}).json()
    for response, status, field in bad:
        assert response.status_code == status and field in response.json()["error"], response.text
    top, rest = 1 - EPSILON.epsilon + EPSILON.epsilon * k / 8, EPSILON.epsilon * k / 8
    for answer in answers:
        assert "explore" not in answer and len(answer["items"]) == len(answer["propensities"]) == k
        expected = [top if item in greedy[:k] else rest for item in answer["items"]]
        assert answer["propensities"] == pytest.approx(expected)
        assert set(answer["items"]) <= set(greedy)
    assert any(a["items"] != greedy[:k] for a in answers) and any(a["items"] == greedy[:k] for a in answers)
    assert wide["propensities"] == [1.0] * 10  # k beyond the candidates: nothing to explore

    logged = [r for r in log_lines(project)[before:] if r["endpoint"] == "recommend" and r["status"] == 200]
    assert len(logged) == 31
    scores = champion.next_item_scores([history], [["view"] * len(history)])[0]
    pool, pool_scores = recommend_items(scores, history, EPSILON.candidates)
    for record, answer in zip(logged, answers):
        explore = record["explore"]
        assert record["items"] == answer["items"] and record["propensities"] == answer["propensities"]
        assert explore["policy"] == "epsilon" and explore["candidates"] == greedy and explore["exclude_seen"]
        shown, _ = sample_slates(pool_scores, k, EPSILON, np.random.default_rng(explore["seed"]))
        assert champion.raw_items[pool[shown[0]]].tolist() == record["items"]  # the seed replays the answer
