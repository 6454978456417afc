"""Per-user behaviour profiles (features/profiles.py) on small hand-made event frames: recency,
frequency and monetary value (RFM), session habits, event-type and category shares, churn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seqops.features.profiles import behaviour_profiles

END = pd.Timestamp("2026-01-10 12:00", tz="UTC")  # a Saturday


def frame(rows: list[tuple]) -> pd.DataFrame:
    """(user, session, time, event_type, value, category) → canonical events."""
    users, sessions, times, types, values, cats = zip(*rows)
    return pd.DataFrame(
        {
            "user_id": np.asarray(users, dtype=np.int64),
            "item_id": np.arange(1, len(rows) + 1, dtype=np.int64),
            "ts": pd.to_datetime(list(times), utc=True).astype("datetime64[us, UTC]"),
            "event_type": list(types),
            "value": np.asarray(values, dtype=float),
            "category": list(cats),
            "session_id": np.asarray(sessions, dtype=np.int64),
        }
    )


SHOP = frame(
    [
        # user 1: two sessions, a purchase worth 30, mostly books, active until the end
        (1, 1, "2026-01-05 10:00", "view", np.nan, "books"),
        (1, 1, "2026-01-05 10:20", "purchase", 30.0, "books"),
        (1, 2, "2026-01-10 12:00", "view", np.nan, "toys"),
        # user 2: one short session long ago, a cheap purchase
        (2, 3, "2026-01-01 09:00", "view", np.nan, "toys"),
        (2, 3, "2026-01-01 09:05", "purchase", 5.0, "toys"),
        # user 3: three sessions, no purchase, all on the weekend
        (3, 4, "2026-01-03 20:00", "view", np.nan, "games"),
        (3, 5, "2026-01-04 20:00", "cart", np.nan, "games"),
        (3, 6, "2026-01-10 08:00", "view", np.nan, "books"),
    ]
)


def test_rfm_habits_and_shares():
    got = behaviour_profiles(SHOP, churn_days=3.0, top_categories=2)
    t = got.table
    assert got.reference == END and got.has_monetary
    assert t.loc[1, "recency_days"] == 0.0 and t.loc[2, "recency_days"] == pytest.approx(9 + (2 * 60 + 55) / 1440)
    assert list(t["n_sessions"]) == [2, 1, 3] and list(t["n_events"]) == [3, 2, 3]
    assert list(t["monetary"]) == [30.0, 5.0, 0.0]
    assert list(t["churned"]) == [False, True, False]
    # quintile scores: 5 = most recent / frequent / spent
    assert t.loc[1, "rfm"] == "5-4-5" and t.loc[2, "rfm"] == "2-2-4" and t.loc[3, "rfm"] == "4-5-2"
    assert t.loc[1, "events_per_session"] == 1.5 and t.loc[1, "session_minutes"] == 10.0
    assert t.loc[3, "weekend_share"] == 1.0 and t.loc[3, "peak_hour"] == 20
    assert t.loc[1, "active_days"] == 2 and t.loc[3, "sessions_per_week"] == 3.0
    assert t.loc[1, "top_categories"] == ["books", "toys"] and t.loc[1, "top_category_shares"] == [0.6667, 0.3333]
    assert t.loc[1, "event_types"] == ["cart", "purchase", "view"]
    assert t.loc[3, "event_type_shares"] == [0.3333, 0.0, 0.6667]
    assert np.allclose(got.category_shares.sum(axis=1), 1.0)
    assert set(got.category_shares.columns) == {"cat:books", "cat:toys", "cat:games"}


def test_data_without_purchase_values_or_categories():
    plain = SHOP.assign(value=np.nan, category=None)
    got = behaviour_profiles(plain, churn_days=3.0, top_categories=3)
    assert not got.has_monetary and got.table["monetary"].isna().all()
    assert all(r.endswith("-x") for r in got.table["rfm"])
    assert all(c == [] for c in got.table["top_categories"]) and got.category_shares.shape[1] == 0


def test_same_events_same_profiles_in_any_order():
    shuffled = SHOP.sample(frac=1.0, random_state=3)
    a = behaviour_profiles(SHOP, 3.0, 2).table
    b = behaviour_profiles(shuffled, 3.0, 2).table
    pd.testing.assert_frame_equal(a, b)
