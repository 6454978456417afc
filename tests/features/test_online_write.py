"""The fast online write (seqops/features/online_write.py) against Feast's own
`write_to_online_store`, on the real SQLite store and on real Redis: the same stored bytes and the
same `get_online_features` values, for lists (empty, null), null and NaN scalars, big and negative
numbers, sub-second times, a changed user, unchanged users, a same-time rewrite and an older row."""

import math

import pandas as pd
import pyarrow as pa
import pytest

from seqops.features import online_write, store
from tests.features.conftest import clear_online, stored_online

T0 = pd.Timestamp("2026-01-01", tz="UTC")
SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("event_timestamp", pa.timestamp("us", tz="UTC")),
        ("last_items", pa.list_(pa.int64())),
        ("last_types", pa.list_(pa.string())),
        ("secs_since_prev", pa.float64()),
        ("n_events", pa.int64()),
        ("n_sessions", pa.int64()),
        ("last_ts", pa.int64()),
    ]
)
NAN = math.nan


def feature_rows(*rows: tuple) -> pa.Table:
    """(user, time offset, items, types, secs_since_prev, n_events, n_sessions) → a feature table."""
    users, offsets, items, types, secs, n_events, n_sessions = zip(*rows)
    stamps = [T0 + pd.Timedelta(offset) for offset in offsets]
    columns = [users, stamps, items, types, secs, n_events, n_sessions, [int(t.timestamp()) for t in stamps]]
    return pa.table([pa.array(c, f.type) for c, f in zip(columns, SCHEMA)], schema=SCHEMA)


BASE = feature_rows(
    (1, "1h", [1, 2, 3], ["view", "cart", "view"], 60.5, 3, 1),
    (2, "2h", [], [], NAN, 0, 0),  # empty lists, NaN
    (3, "3h", None, None, None, None, 2),  # null lists and scalars
    (4, "4h 5min 7.123456s", [2**40, -7], ["é", "purchase"], 1e-9, 2**35, -1),
    (5, "5h", [9], ["view"], 0.0, 1, 1),
)
UPDATE = feature_rows(
    (1, "10h", [1, 2, 3, 4], ["view", "cart", "view", "view"], 30.0, 4, 1),  # newer: written everywhere
    (4, "4h 5min 7.123456s", [8], ["view"], 2.0, 5, 1),  # same time: SQLite writes it, Redis keeps its row
    (5, "30min", [7], ["cart"], 1.0, 9, 9),  # older: SQLite writes it, Redis keeps its row
    (6, "6h", [6, 6], ["cart", "cart"], 3.0, 2, 1),  # new user
)
USERS = [1, 2, 3, 4, 5, 6, 7]  # 7 has no row


def online_values(fs) -> str:
    """`get_online_features` for every user; repr, so NaN equals NaN."""
    return repr(store.online_features(fs, USERS))


def test_the_fast_write_leaves_what_feasts_own_write_leaves(applied_profile, monkeypatch):
    paths, profile = applied_profile
    fs = store.open_store(paths, profile)
    view = fs.get_feature_view(store.FEATURE_VIEW)
    assert online_write.row_layout(fs, view) is not None  # the view is on the fast path
    for rows in (BASE, UPDATE):
        fs.write_to_online_store(store.FEATURE_VIEW, df=rows.to_pandas())
    theirs, their_values = stored_online(paths, profile, USERS), online_values(fs)
    clear_online(paths, profile, USERS)
    assert online_values(fs) != their_values

    monkeypatch.setattr(fs, "write_to_online_store", lambda *a, **k: pytest.fail("took Feast's path"))
    online_write.write_rows(fs, view, BASE, batch_rows=2)
    online_write.write_rows(fs, view, UPDATE, batch_rows=3)

    assert stored_online(paths, profile, USERS) == theirs
    assert online_values(fs) == their_values
    rows = store.online_features(fs, USERS)
    user_4 = ["view"] if profile == "local" else ["é", "purchase"]  # Redis keeps a row as new as the one written
    assert rows[0]["n_events"] == 4 and list(rows[3]["last_types"]) == user_4
    assert rows[6]["last_items"] is None and rows[2]["last_items"] is None and list(rows[1]["last_items"]) == []
