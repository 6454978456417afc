"""The DuckDB offline store (default profile) joins point-in-time like Feast's file (dask) store:
the same rows for a hand-built case, and no row from after a label's time.

Two entity rows the file store loses and DuckDB keeps (Feast's documented semantics: one output
row per entity row, null features when no row is at or before it): a repeated (user, time) entity
row (dask keeps only the last copy) and a label before the user's first feature row (dask drops
the row instead of returning nulls)."""

import pandas as pd
import pytest

from seqops.config import Paths
from seqops.features import store
from tests.conftest import make_project
from tests.features.conftest import DAY0, build_features, events_at

# user 1: rows at 10h, 11h, 12h; user 2: rows at 10h30 and 13h; user 3: one row at 9h
EVENTS = [(1, 11, "10h"), (2, 21, "10h30min"), (1, 12, "11h"), (1, 13, "12h"), (2, 22, "13h"), (3, 31, "9h")]

# (user, label time, role, the items the join must return: None = no row at or before the label)
LABELS = [
    (1, "10h59min59s", "before", [11]),  # one second before the 11h row
    (1, "11h", "at", [11, 12]),  # exactly at a row: it is visible
    (1, "11h", "at-again", [11, 12]),  # a repeated entity row keeps its own copy
    (1, "12h30min", "after", [11, 12, 13]),
    (2, "10h", "before-any", None),  # before the user's first row
    (2, "12h59min", "later-row", [21]),  # the 13h row is later than the label: not joined
    (3, "1d", "days-later", [31]),  # ttl 0: the last known state never expires
    (4, "12h", "unknown-user", None),
]


@pytest.fixture(scope="module")
def pit_paths(tmp_path_factory) -> Paths:
    paths = Paths(make_project(tmp_path_factory.mktemp("pit") / "project"))
    build_features(paths, events_at(EVENTS))
    store.apply(paths)
    return paths


def label_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [u for u, *_ in LABELS],
            "event_timestamp": [DAY0 + pd.Timedelta(t) for _, t, *_ in LABELS],
            "role": [r for *_, r, _ in LABELS],
        }
    )


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    lists = {c: frame[c].map(lambda v: None if v is None else list(v)) for c in ("last_items", "last_types")}
    return frame.assign(**lists)


def test_duckdb_join_equals_the_file_store_join_with_no_leaked_rows(pit_paths):
    labels = label_frame()

    duck = store.historical_features(pit_paths, labels.copy(), "local")
    dask = store.historical_features(pit_paths, labels.copy(), "file")

    only_duckdb = {"at", "before-any"}  # the two rows the file store loses (module docstring)
    assert set(duck["role"]) - set(dask["role"]) == only_duckdb and set(dask["role"]) <= set(duck["role"])
    pd.testing.assert_frame_equal(
        comparable(duck[~duck["role"].isin(only_duckdb)]).reset_index(drop=True), comparable(dask)
    )
    by_role = dict(zip(duck["role"], duck["last_items"]))
    assert {role: None if items is None else list(items) for role, items in by_role.items()} == {
        role: items for *_, role, items in LABELS
    }
    joined = duck.dropna(subset=["last_ts"])
    label_s = (joined["event_timestamp"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    assert (joined["last_ts"] <= label_s).all(), "a feature row from after its label leaked into the join"


def test_rows_come_back_sorted_with_the_entity_timestamp_type(pit_paths):
    labels = label_frame().sample(frac=1.0, random_state=3)

    joined = store.historical_features(pit_paths, labels, "local")

    assert joined["event_timestamp"].dtype == labels["event_timestamp"].dtype
    assert list(zip(joined["user_id"], joined["event_timestamp"])) == sorted(
        zip(labels["user_id"], labels["event_timestamp"])
    )
    assert (
        joined.loc[joined["event_timestamp"] == DAY0 + pd.Timedelta("11h"), "role"].tolist()
        == labels.loc[labels["event_timestamp"] == DAY0 + pd.Timedelta("11h"), "role"].tolist()
    )
