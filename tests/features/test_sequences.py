from seqops.features.sequences import user_feature_table, user_summary
from tests.features.conftest import events_frame


def test_rows_hold_the_state_after_each_event_truncated_to_max_len():
    table = user_feature_table(events_frame(), max_len=2).to_pandas()
    assert table["last_items"].map(list).tolist() == [[5], [5, 6], [6, 7], [8], [8, 9]]
    assert table["last_types"].map(list).tolist()[2] == ["view", "cart"]
    assert table["n_events"].tolist() == [1, 2, 3, 1, 2]
    assert table["n_sessions"].tolist() == [1, 1, 2, 1, 1]
    assert table["secs_since_prev"].tolist() == [0.0, 60.0, 17940.0, 0.0, 30.0]
    assert table["last_ts"].iloc[0] == 1767225600


def test_user_summary_takes_each_users_latest_row():
    summary = user_summary(user_feature_table(events_frame(), max_len=5).to_pandas())
    assert summary["n_events"].tolist() == [3, 2]
    assert summary["share_purchase"].tolist() == [0.0, 0.5]
    assert summary["last_items"].tolist() == [[5, 6, 7], [8, 9]]
