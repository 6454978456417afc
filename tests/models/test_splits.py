import numpy as np
import pandas as pd

from seqops.models.training.splits import BEFORE_TARGET, history_times, target_entities, temporal_entities


def events_frame(users, items, ts, types=None) -> pd.DataFrame:
    return pd.DataFrame({"user_id": users, "item_id": items, "ts": ts, "event_type": types or ["view"] * len(users)})


def test_last_two_events_become_test_and_validation_targets_just_before_they_happen():
    ts = pd.date_range("2026-01-01", periods=6, freq="h", tz="UTC")
    events = events_frame(
        [1, 1, 1, 1, 2, 2], [10, 11, 12, 13, 20, 21], ts, ["view", "view", "cart", "purchase", "view", "view"]
    )
    entities = target_entities(events)
    assert entities["user_id"].tolist() == [1, 1]  # user 2 has < 3 events
    assert dict(zip(entities["role"], entities["target"])) == {"valid": 12, "test": 13}
    assert dict(zip(entities["role"], entities["target_type"])) == {"valid": "cart", "test": "purchase"}
    assert (entities["event_timestamp"] == ts[2:4] - BEFORE_TARGET).all()


def test_temporal_split_cuts_the_time_span_globally():
    # 10 days; share 0.2: validation from day 6.4, test from day 8.2 (of 0..9)
    ts = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta([0, 3, 7, 8.5, 9, 1, 2, 5], unit="D")
    events = events_frame([1, 1, 1, 1, 1, 2, 2, 2], [1, 2, 3, 4, 5, 6, 7, 8], ts)
    rows = temporal_entities(events, 0.2)
    by_role = {role: group for role, group in rows.groupby("role")}
    assert sorted(by_role["train"]["user_id"]) == [1, 2]  # both active before the validation cut
    assert by_role["valid"][["user_id", "target"]].values.tolist() == [[1, 3]]  # first event in [6.4, 8.2)
    assert by_role["test"][["user_id", "target"]].values.tolist() == [[1, 4]]  # first event from 8.2 on
    cut = by_role["train"]["event_timestamp"].iloc[0]
    assert events.loc[events["item_id"] == 3, "ts"].iloc[0] > cut  # no validation event is in training


def test_history_times_align_with_the_point_in_time_history():
    ts = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta([0, 10, 20, 30], unit="s")
    events = events_frame([1, 1, 1, 1], [1, 2, 3, 4], ts)
    rows = pd.DataFrame({"user_id": [1], "event_timestamp": [ts[3] - BEFORE_TARGET], "last_items": [[2, 3]]})
    (times,) = history_times(events, rows)
    start = pd.Timestamp("2026-01-01", tz="UTC").timestamp()
    np.testing.assert_allclose(times - start, [10, 20])
