"""The engine on a real (small) project: Feast online reads and pushes, the real registry, a tiny
SASRec. No HTTP here (tests/serving/test_service_e2e.py drives the real server)."""

import dataclasses
import time

import numpy as np
import pandas as pd
import pytest

from seqops.config import Paths
from seqops.features import store as feature_store
from seqops.features.sequences import next_row
from seqops.models.release.registry import Registry
from seqops.serving import engine as engine_module
from seqops.serving.champion import Champion, quantize
from seqops.serving.engine import Engine, RequestError, provisional_key
from seqops.serving.schemas import Event, HistoryRequest, RecommendRequest
from tests.serving import heads_model
from tests.serving.conftest import MAX_LEN, N_ITEMS, raw_item, raw_user, register_model


@pytest.fixture(scope="module")
def engine(served_project, params):
    return Engine(Paths(served_project), params)


def online(engine, user_key):
    return feature_store.online_features(engine.store, [user_key])[0]


def test_recommend_by_user_by_items_and_unknown_user(engine, served_project):
    row = online(engine, 1)
    seen = {raw_item(i) for i in row["last_items"]}
    by_user, by_items, unknown = engine.recommend(
        [
            RecommendRequest(user_id=raw_user(1), k=5),
            RecommendRequest(items=[raw_item(1), raw_item(2)], k=4, category="c1"),
            RecommendRequest(user_id="nobody", k=3),
        ]
    )
    champion = Registry.of_project(Paths(served_project)).champion()
    assert by_user["model_version"] == champion and not by_user["fallback"]
    assert len(by_user["items"]) == 5 and not seen & set(by_user["items"])
    assert by_user["scores"] == sorted(by_user["scores"], reverse=True)
    items = pd.read_parquet(Paths(served_project).vocab / "items.parquet").set_index("raw_id")["category"]
    assert len(by_items["items"]) == 4 and {items[i] for i in by_items["items"]} == {"c1"}
    assert by_items["user_id"] is None and not by_items["fallback"]
    assert unknown["fallback"] and unknown["fallback_reason"] == "unknown user" and len(unknown["items"]) == 3


def test_a_batch_answers_like_single_requests(engine):
    requests = [RecommendRequest(user_id=raw_user(u), k=6, exclude_seen=False) for u in range(1, 9)]
    batched = engine.recommend(requests)
    single = [engine.recommend([r])[0] for r in requests]
    assert [b["items"] for b in batched] == [s["items"] for s in single]
    np.testing.assert_allclose([b["scores"] for b in batched], [s["scores"] for s in single], atol=1e-4)


def test_unknown_item_and_category_are_named(engine):
    bad_item, bad_category = engine.recommend(
        [
            RecommendRequest(items=[raw_item(1), "nope"], k=3),
            RecommendRequest(user_id=raw_user(1), k=3, category="no-such-category"),
        ]
    )
    assert isinstance(bad_item, RequestError) and bad_item.status == 400 and bad_item.loc == ("items", 1)
    assert "items[1]" in bad_item.message
    assert isinstance(bad_category, RequestError) and bad_category.loc == ("category",)


def test_feature_store_down_means_flagged_popularity(engine):
    class Down:
        def get_online_features(self, **_):
            raise ConnectionError("redis is gone")

    store, engine.store = engine.store, Down()
    try:
        answer = engine.recommend([RecommendRequest(user_id=raw_user(1), k=4)])[0]
        explicit = engine.recommend([RecommendRequest(items=[raw_item(3)], k=4)])[0]
    finally:
        engine.store = store
    assert answer["fallback"] and answer["fallback_reason"] == "feature store unavailable" and len(answer["items"]) == 4
    assert not explicit["fallback"]  # an explicit history needs no feature store
    # for a moment after a failure the store is not asked at all (no waiting on a dead store)...
    assert engine.recommend([RecommendRequest(user_id=raw_user(1), k=4)])[0]["fallback"]
    engine._store_down_until = 0.0  # ...then it is, and answers again
    assert not engine.recommend([RecommendRequest(user_id=raw_user(1), k=4)])[0]["fallback"]


def test_events_extend_the_online_row_and_create_new_users(engine, params):
    user = raw_user(2)
    before = online(engine, 2)
    now = time.time()
    events = [Event(user_id=user, item_id=raw_item(i), event_type="cart", timestamp=now + i) for i in (7, 8)]
    events.append(Event(user_id="brand-new", item_id=raw_item(9), event_type="view"))
    summary = engine.push_events(events)
    assert summary == [
        {"user_id": user, "n_events": before["n_events"] + 2, "new_user": False},
        {"user_id": "brand-new", "n_events": 1, "new_user": True},
    ]
    after = online(engine, 2)
    assert after["last_items"] == (before["last_items"] + [7, 8])[-params.features.max_len :]
    assert after["last_types"][-2:] == ["cart", "cart"] and after["last_ts"] == int(now + 8)
    assert after["n_sessions"] == before["n_sessions"] + 1  # days after the last event: a new session
    fresh = online(engine, provisional_key("brand-new"))
    assert fresh["last_items"] == [9] and fresh["n_events"] == 1 and fresh["n_sessions"] == 1

    answer, new_user = engine.recommend(
        [RecommendRequest(user_id=user, k=N_ITEMS, exclude_seen=True), RecommendRequest(user_id="brand-new", k=3)]
    )
    assert not {raw_item(7), raw_item(8)} & set(answer["items"])
    assert not new_user["fallback"] and raw_item(9) not in new_user["items"]


def test_events_while_the_feature_store_is_down_are_no_error(engine):
    """The service lands the events before it pushes them: with the store down that is done, and a
    5xx would only have the client send them again (ingest would count them twice)."""

    class Down:
        def get_online_features(self, **_):
            raise ConnectionError("redis is gone")

    store, engine.store = engine.store, Down()
    try:
        summary = engine.push_events([Event(user_id=raw_user(4), item_id=raw_item(1), event_type="view")])
    finally:
        engine.store = store
    assert summary is None


def test_unknown_item_in_events_is_refused_before_anything_is_written(engine):
    before = online(engine, 3)
    with pytest.raises(RequestError) as caught:
        engine.push_events(
            [
                Event(user_id=raw_user(3), item_id=raw_item(1), event_type="view"),
                Event(user_id=raw_user(3), item_id="ghost", event_type="view"),
            ]
        )
    assert caught.value.loc == ("events", 1, "item_id") and caught.value.status == 400
    assert online(engine, 3)["last_items"] == before["last_items"]


def test_a_promote_is_picked_up_without_restart(served_project, params, monkeypatch):
    paths = Paths(served_project)
    engine = Engine(paths, params)
    old = engine.current().version
    events = pd.DataFrame({"item_id": np.arange(1, N_ITEMS + 1)})
    new = register_model(paths, 1, events)
    monkeypatch.setattr(engine_module, "CHAMPION_CHECK_S", 0.0)
    assert engine.current().version == old  # the new one loads on a side thread; the old one answers
    engine.wait_for_load()
    assert engine.current().version == new != old
    assert engine.recommend([RecommendRequest(user_id=raw_user(1), k=2)])[0]["model_version"] == new


def test_heads_are_found_generically(served_project, params, monkeypatch):
    paths = Paths(served_project)
    engine = Engine(paths, params)
    request = HistoryRequest(user_id=raw_user(4))
    with pytest.raises(RequestError) as caught:
        engine.head("next_action", request)
    assert caught.value.status == 404 and "no next_action head" in caught.value.message

    import json

    events = pd.DataFrame({"item_id": np.arange(1, N_ITEMS + 1)})
    version = register_model(paths, 2, events, model=heads_model.make(N_ITEMS, MAX_LEN), promote=False)
    meta_file = Registry.of_project(paths).model_dir(version) / "seqops.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "model_class": "tests.serving.heads_model:HeadsModel"}))
    Registry.of_project(paths).promote(version, actor="tests", reason="heads")
    monkeypatch.setattr(engine_module, "CHAMPION_CHECK_S", 0.0)
    engine.current()
    engine.wait_for_load()
    assert engine.current().heads == ("next_item", "next_action", "churn")
    action = engine.head("next_action", request)
    assert set(action["probabilities"]) == set(heads_model.EVENT_TYPES)
    assert abs(sum(action["probabilities"].values()) - 1) < 1e-3
    churn = engine.head("churn", HistoryRequest(items=[raw_item(1)], event_types=["cart"]))
    assert 0 <= churn["churn_probability"] <= 1 and churn["model_version"] == version


def test_an_item_newer_than_the_champion_scores_as_if_absent_on_every_head(served_project):
    paths = Paths(served_project)
    events = pd.DataFrame({"item_id": np.arange(1, N_ITEMS + 1)})
    version = register_model(paths, 3, events, model=heads_model.make(N_ITEMS, MAX_LEN), promote=False)
    champion = Champion.load(Registry.of_project(paths), version, quantized=False)
    newer = [np.array([1, 2, N_ITEMS + 3, 4])], [["view", "cart", "purchase", "view"]]
    absent = [np.array([1, 2, 4])], [["view", "cart", "view"]]
    np.testing.assert_allclose(
        champion.next_item_scores(*newer), champion.next_item_scores(*absent), rtol=1e-5, atol=1e-6
    )
    for head in ("next_action", "churn"):
        np.testing.assert_allclose(champion.head(head, *newer), champion.head(head, *absent), rtol=1e-5, atol=1e-6)


def test_quantised_model_scores_close_to_fp32(engine):
    champion = engine.current()
    fp32 = champion.next_item_scores([np.array([1, 2, 3]), np.array([4])])
    champion_q = dataclasses.replace(
        champion, artifact=dataclasses.replace(champion.artifact, model=quantize(champion.model)), quantized=True
    )
    int8 = champion_q.next_item_scores([np.array([1, 2, 3]), np.array([4])])
    assert int8.shape == fp32.shape
    np.testing.assert_allclose(int8[:, 1:], fp32[:, 1:], atol=0.2)


def test_next_row_counts_sessions_gaps_and_truncates():
    row = next_row(None, [(5, "view", 100.0), (6, "cart", 160.0), (7, "view", 5000.0)], max_len=2, session_gap_s=1800)
    assert row["last_items"] == [6, 7] and row["last_types"] == ["cart", "view"]
    assert row["n_events"] == 3 and row["n_sessions"] == 2 and row["secs_since_prev"] == 4840.0
    assert row["last_ts"] == 5000 and row["event_timestamp"].timestamp() == 5000.0
    current = {
        "last_items": [1],
        "last_types": ["view"],
        "n_events": 9,
        "n_sessions": 4,
        "last_ts": 4990,
        "secs_since_prev": 3.0,
    }
    again = next_row(current, [(2, "purchase", 5000.5)], max_len=5, session_gap_s=1800)
    assert again["last_items"] == [1, 2] and again["n_events"] == 10 and again["n_sessions"] == 4
    assert again["secs_since_prev"] == 10.5


def test_provisional_keys_are_negative_and_stable():
    assert provisional_key("someone") == provisional_key("someone") < 0
    assert provisional_key("someone") != provisional_key("someone else")
