"""Impressions read from the request log, and events joined back to the answer that preceded them."""

import json

import pandas as pd
import pytest

from seqops.serving.impressions import join_responses, read_impressions
from seqops.serving.logs import RequestLog

T0 = pd.Timestamp("2026-06-01 12:00:00", tz="UTC")
REWARDS = {"click": ["view", "cart", "purchase"], "purchase": ["purchase"]}


def answer(seconds: float, user: str | None, items: list[str], propensities: list[float] | None) -> dict:
    record = {
        "time": (T0 + pd.Timedelta(seconds=seconds)).isoformat(timespec="milliseconds"),
        "endpoint": "recommend",
        "user_id": user,
        "status": 200,
        "model_version": "v0001",
        "items": items,
        "fallback": False,
    }
    if propensities is not None:
        record |= {
            "propensities": propensities,
            "explore": {"policy": "epsilon", "seed": 1, "candidates": items + ["x"], "category": None},
        }
    return record


@pytest.fixture
def log_dir(tmp_path):
    log = RequestLog(tmp_path)
    for record in [
        answer(0, "u1", ["a", "b"], [0.9, 0.25]),
        answer(5, "u2", ["a"], None),  # not exploring: no impression
        answer(10, None, ["c"], [0.5]),  # by items: no user to join
        answer(60, "u1", ["b", "c"], [0.5, 0.1]),
        {**answer(70, "u3", ["a"], [1.0]), "status": 422},  # refused: nothing shown
    ]:
        log.add(record)
    log.close()
    return tmp_path


def events(*rows: tuple) -> pd.DataFrame:
    return pd.DataFrame(
        [{"user_id": u, "item_id": i, "event_type": t, "time": T0 + pd.Timedelta(seconds=s)} for u, i, t, s in rows]
    )


def test_exploring_answers_with_a_user_become_one_row_per_shown_item(log_dir):
    shown = read_impressions(log_dir)
    assert shown[["impression", "user_id", "item_id", "position", "propensity", "size"]].values.tolist() == [
        [0, "u1", "a", 0, 0.9, 2],
        [0, "u1", "b", 1, 0.25, 2],
        [1, "u1", "b", 0, 0.5, 2],
        [1, "u1", "c", 1, 0.1, 2],
    ]
    assert shown["policy"].eq("epsilon").all() and shown["candidates"].iloc[0] == ["a", "b", "x"]
    assert read_impressions(log_dir, limit=1)["impression"].tolist() == [0, 0]  # the most recent answer only
    assert len(read_impressions(log_dir, since=T0 + pd.Timedelta(seconds=30))) == 2


def test_an_event_after_the_impression_within_the_window_joins(tmp_path):
    shown = read_impressions_of(tmp_path, [answer(0, "u1", ["a", "b"], [0.9, 0.25])])
    joined = join_responses(shown, events(("u1", "a", "view", 30), ("u1", "b", "purchase", 100)), 600, REWARDS)
    assert joined["click"].tolist() == [1, 1] and joined["purchase"].tolist() == [0, 1]


def test_an_event_before_the_impression_or_after_the_window_does_not(tmp_path):
    shown = read_impressions_of(tmp_path, [answer(100, "u1", ["a", "b"], [0.9, 0.25])])
    joined = join_responses(
        shown,
        events(
            ("u1", "a", "view", 50),  # before the answer
            ("u1", "a", "view", 100),  # at the answer's own time
            ("u1", "b", "view", 100 + 601),  # past the window
            ("u2", "a", "view", 120),  # another user
            ("u1", "c", "view", 120),  # an item not shown
            ("u1", "a", "rating", 120),  # not a click type
        ),
        600,
        REWARDS,
    )
    assert joined["click"].tolist() == [0, 0]


def test_an_event_joins_the_latest_answer_that_showed_the_item_only(tmp_path):
    shown = read_impressions_of(tmp_path, [answer(0, "u1", ["b"], [0.5]), answer(60, "u1", ["b", "c"], [0.5, 0.1])])
    joined = join_responses(shown, events(("u1", "b", "cart", 90)), 600, REWARDS)
    assert joined[["impression", "item_id", "click"]].values.tolist() == [[0, "b", 0], [1, "b", 1], [1, "c", 0]]


def test_ids_of_any_type_join(tmp_path):
    shown = read_impressions_of(tmp_path, [answer(0, "7", ["42"], [0.5])])
    joined = join_responses(shown, events((7, 42, "view", 1)), 600, REWARDS)  # dense ints vs logged text
    assert joined["click"].tolist() == [1]


def read_impressions_of(folder, records: list[dict]) -> pd.DataFrame:
    (folder / "requests-2026-06-01.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return read_impressions(folder)
