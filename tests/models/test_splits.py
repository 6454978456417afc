import pandas as pd

from seqops.models.splits import BEFORE_TARGET, target_entities


def test_last_two_events_become_test_and_validation_targets_just_before_they_happen():
    ts = pd.date_range("2026-01-01", periods=6, freq="h", tz="UTC")
    events = pd.DataFrame({"user_id": [1, 1, 1, 1, 2, 2], "item_id": [10, 11, 12, 13, 20, 21], "ts": ts})
    entities = target_entities(events)
    assert entities["user_id"].tolist() == [1, 1]  # user 2 has < 3 events
    assert dict(zip(entities["role"], entities["target"])) == {"valid": 12, "test": 13}
    assert (entities["event_timestamp"] == ts[2:4] - BEFORE_TARGET).all()
