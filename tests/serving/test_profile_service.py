"""POST /profile on the small served project after a real profile run (models/profiles.py under the
promoted tiny SASRec, rows written to the real Feast online store): the answer for a known user
from the online store and from the run's file, the fallbacks (unknown user, not profiled yet), then
the real BentoML service over HTTP: 200s, and bad input → 4xx naming the field."""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
import pytest

from seqops.config import Paths
from seqops.features.profiles import write_online
from seqops.io import file_md5
from seqops.models.profiles import profile_stage
from seqops.models.release.registry import Registry
from seqops.serving.engine import Engine
from seqops.serving.launch import running_service
from seqops.serving.profile import NOT_PROFILED, UNKNOWN_USER, ProfileBook
from tests.serving.conftest import N_CATEGORIES, N_USERS, raw_user, write_state


@pytest.fixture(scope="module")
def profiled(served_project, params) -> dict:
    """The served project with canonical events (the same ones its features came from), profiled
    and written online; returns the run's summary."""
    paths = Paths(served_project)
    events = write_state(paths)  # same seed: the events behind the served feature rows
    categories = [f"c{i % N_CATEGORIES}" for i in events["item_id"]]
    events.assign(value=np.nan, category=categories).to_parquet(paths.events)
    summary = profile_stage(params, paths)
    assert write_online(paths) == N_USERS
    return summary


@pytest.fixture(scope="module")
def book(served_project, params, profiled) -> ProfileBook:
    return ProfileBook(Paths(served_project), Engine(Paths(served_project), params))


def assert_profiled(answer: dict, summary: dict) -> None:
    assert answer["fallback"] is False and answer["fallback_reason"] is None
    profile, segment = answer["profile"], answer["segment"]
    assert profile["n_events"] >= 3 and profile["monetary"] is None and profile["rfm"].endswith("-x")
    assert profile["event_types"] == [{"name": "view", "share": 1.0}]
    assert 1 <= len(profile["top_categories"]) <= N_CATEGORIES and len(profile["embedding"]) == 16
    described = {s["segment"]: s for s in summary["segments"]}[segment["id"]]
    assert segment["label"] == described["label"] and segment["size"] == described["size"]
    assert segment["description"] == described["description"]
    assert answer["model_version"] == summary["model_version"]


def test_a_profiled_user_from_the_online_store(book, profiled, served_project):
    answer = book.answer(raw_user(3))
    assert answer["source"] == "online" and answer["user_id"] == raw_user(3)
    assert_profiled(answer, profiled)
    paths = Paths(served_project)
    assert answer["model_version"] == Registry.of_project(paths).champion()  # the champion's embedding
    assert answer["data_version"] == file_md5(paths.events)


def test_the_runs_file_answers_when_the_store_cannot(book):
    online = book.answer(raw_user(4))
    store, book.engine.store = book.engine.store, None
    try:
        from_file = book.answer(raw_user(4))
    finally:
        book.engine.store = store
    assert from_file["source"] == "profile_run"
    assert {**from_file, "source": "online"} == online


def test_unknown_and_not_yet_profiled_users_get_a_clear_fallback(book, served_project):
    for user, reason in (("nobody-at-all", UNKNOWN_USER), (raw_user(N_USERS + 1), UNKNOWN_USER)):
        answer = book.answer(user)
        assert answer["fallback"] is True and answer["fallback_reason"] == reason
        assert answer["profile"] is None and answer["segment"] is None
    vocab = Paths(served_project).vocab / "users.parquet"
    users = pd.read_parquet(vocab)
    new = pd.DataFrame({"raw_id": [raw_user(N_USERS + 1)], "user_id": [N_USERS + 1]})
    try:
        pd.concat([users, new]).to_parquet(vocab, index=False)  # a retrain's ingest met a new user
        book.engine.vocab.refresh(force=True)
        answer = book.answer(raw_user(N_USERS + 1))
        assert answer["fallback"] is True and answer["fallback_reason"] == NOT_PROFILED
    finally:
        users.to_parquet(vocab, index=False)
        book.engine.vocab.refresh(force=True)


BAD = [
    ({"user_id": 7}, "user_id"),
    ({}, "user_id"),
    ({"user_id": raw_user(1), "verbose": True}, "verbose"),
    ({"user_id": " " + raw_user(1)}, "user_id"),
    ({"user_id": "x" * 201}, "user_id"),
    ({"items": [raw_user(1)]}, "items"),
]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_real_service_answers_and_refuses_naming_the_field(served_project, profiled):
    with running_service(served_project) as url:
        known = httpx.post(f"{url}/profile", json={"user_id": raw_user(2)}, timeout=60)
        assert known.status_code == 200, known.text
        assert_profiled(known.json(), profiled)
        unknown = httpx.post(f"{url}/profile", json={"user_id": "nobody-at-all"}, timeout=30)
        assert unknown.status_code == 200, unknown.text
        assert unknown.json()["fallback_reason"] == UNKNOWN_USER
        for body, field in BAD:
            response = httpx.post(f"{url}/profile", json=body, timeout=30)
            assert 400 <= response.status_code < 500, (body, response.status_code, response.text)
            assert field in response.json()["error"], (body, response.text)
        not_json = httpx.post(f"{url}/profile", content=b"{not json", timeout=30)
        assert not_json.status_code == 400, not_json.text
        docs = httpx.get(f"{url}/docs.json", timeout=30).json()
        assert docs["paths"]["/profile"]["post"]["tags"] == ["Predictions"]


def test_forgetting_a_user_removes_their_profile_online(book, served_project):
    """forget-user's online delete reaches every view: the sequence row and the profile row."""
    from seqops.features.erasure import delete_online_row

    assert book.answer(raw_user(N_USERS))["source"] == "online"
    assert delete_online_row(Paths(served_project), N_USERS) > 0
    assert book.answer(raw_user(N_USERS))["source"] == "profile_run"  # only the run's file is left (forget scrubs it)
    store = book.engine.store
    sequence = store.get_online_features(features=["user_sequence:n_events"], entity_rows=[{"user_id": N_USERS}])
    assert sequence.to_dict()["n_events"] == [None]
