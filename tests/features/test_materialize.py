"""Incremental materialize on the real SQLite online store (and on Redis): only users whose latest
row changed are written, untouched rows stay byte for byte, the rows equal Feast's own materialize,
and neither a view left MATERIALIZING nor a killed run blocks the next training read."""

import os
import signal
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone

import pandas as pd
import pytest
from feast.feature_view import FeatureViewState

from seqops.config import Paths
from seqops.features import store
from tests.features.conftest import DAY0, build_features, events_at, mark_online, stored_online

USERS = range(1, 6)
EVENTS = [(u, 10 * u + k, f"{u}h{k}min") for u in USERS for k in range(3)]
NEW_EVENTS = [(2, 99, "20h"), (4, 98, "21h"), (4, 97, "22h")]  # users 2 and 4 come back
LABELS = pd.DataFrame({"user_id": list(USERS), "event_timestamp": DAY0 + pd.Timedelta("1d")})


def online_rows(paths: Paths) -> dict[bytes, dict[str, tuple]]:
    """Every stored online row, straight from Feast's SQLite table: entity key → feature → (value, event_ts)."""
    with sqlite3.connect(paths.home / "feature_store" / "online.db") as conn:
        rows = conn.execute(
            f"SELECT entity_key, feature_name, value, event_ts FROM seqops_{store.FEATURE_VIEW}"
        ).fetchall()
    out: dict[bytes, dict[str, tuple]] = {}
    for key, feature, value, event_ts in rows:
        out.setdefault(key, {})[feature] = (value, event_ts)
    return out


def online_by_user(paths: Paths) -> dict[int, dict]:
    return dict(zip(USERS, store.online_features(store.open_store(paths), list(USERS))))


def feast_materialize(paths: Paths) -> None:
    """Feast's own path: every user's latest row through the offline store and the batch engine."""
    store.open_store(paths).materialize(
        start_date=store.MATERIALIZE_START, end_date=datetime.now(timezone.utc), feature_views=[store.FEATURE_VIEW]
    )


def overwrite_online(paths: Paths, user_id: int, **features) -> None:
    """Put a marker into one user's online row (same event time), to see whether a run rewrites it."""
    fs = store.open_store(paths)
    row = {k: v for k, v in online_by_user(paths)[user_id].items()}
    latest = pd.read_parquet(paths.user_features).query("user_id == @user_id").iloc[-1]
    fs.write_to_online_store(
        store.FEATURE_VIEW, df=pd.DataFrame([{**row, **features, "event_timestamp": latest["event_timestamp"]}])
    )


def test_second_run_writes_only_users_with_new_events_and_matches_feast(feature_paths):
    build_features(feature_paths, events_at(EVENTS))
    first = store.materialize(feature_paths)
    assert (first.users_written, first.users_total, first.full) == (5, 5, True)
    before = online_rows(feature_paths)
    overwrite_online(feature_paths, 1, n_events=999)  # rewritten only if the run touches user 1

    build_features(feature_paths, events_at(EVENTS + NEW_EVENTS))
    second = store.materialize(feature_paths)

    assert (second.users_written, second.users_total, second.full) == (2, 5, False)
    after, values = online_rows(feature_paths), online_by_user(feature_paths)
    assert values[1]["n_events"] == 999, "an unchanged user was written again"
    assert list(values[2]["last_items"])[-1] == 99 and list(values[4]["last_items"])[-2:] == [98, 97]
    unchanged = [key for key in before if key in after and after[key]["n_events"] == before[key]["n_events"]]
    assert len(unchanged) == 2 and all(
        after[key] == before[key] for key in unchanged
    )  # users 3 and 5: same bytes and times
    assert store.materialize(feature_paths).users_written == 0

    ours = online_rows(feature_paths)
    feast_materialize(feature_paths)
    theirs = online_rows(feature_paths)
    assert online_by_user(feature_paths)[1]["n_events"] == 3  # Feast rewrote everyone, marker included
    marked = [key for key in ours if ours[key]["n_events"] != theirs[key]["n_events"]]
    assert len(marked) == 1 and {k: v for k, v in ours.items() if k not in marked} == {
        k: v for k, v in theirs.items() if k not in marked
    }


def test_a_view_left_materializing_by_feast_is_servable_again_after_materialize(feature_paths):
    build_features(feature_paths, events_at(EVENTS))
    store.materialize(feature_paths)
    # What a `feast materialize` killed mid-run leaves behind: the view committed as MATERIALIZING.
    store.open_store(feature_paths).set_feature_view_state(store.FEATURE_VIEW, FeatureViewState.MATERIALIZING)
    with pytest.raises(ValueError, match="MATERIALIZING"):
        store.historical_features(feature_paths, LABELS.copy())

    store.materialize(feature_paths)

    assert store.historical_features(feature_paths, LABELS.copy())["n_events"].tolist() == [3] * 5


def test_a_killed_materialize_blocks_no_read_and_the_next_run_writes_the_rest(feature_paths):
    yaml_path = feature_paths.feature_repo / "feature_store.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("online_write_batch_size: 10000", "online_write_batch_size: 2"))
    build_features(feature_paths, events_at(EVENTS))
    code = f"from seqops.config import Paths; from seqops.features import store; store.materialize(Paths({str(feature_paths.project)!r}))"
    env = {**os.environ, "SEQOPS_CRASH_AT": "materialize-between-batches"}

    killed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)

    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(online_rows(feature_paths)) == 2  # the first batch landed, the run died after it
    assert store.historical_features(feature_paths, LABELS.copy())["n_events"].tolist() == [3] * 5
    assert not store.materialized_state_path(feature_paths, "local").exists()
    again = store.materialize(feature_paths)
    assert (again.users_written, again.full) == (5, True)
    assert [v["n_events"] for v in online_by_user(feature_paths).values()] == [3] * 5


def test_a_one_percent_batch_rewrites_only_its_users_on_sqlite_and_redis(applied_profile):
    paths, profile = applied_profile
    users = range(1, 201)
    events = [(u, 1000 + u, f"{u % 23}h") for u in users]
    build_features(paths, events_at(events))
    assert store.materialize(paths, profile=profile).users_written == 200
    for user in (7, 150):  # markers the next run overwrites only if it writes these users again
        mark_online(paths, profile, user, n_events=999)
    before = stored_online(paths, profile, users)

    build_features(paths, events_at(events + [(1, 5, "23h"), (2, 6, "23h")]))  # 1% of the users come back
    second = store.materialize(paths, profile=profile)

    assert (second.users_written, second.users_total, second.full) == (2, 200, False)
    after = stored_online(paths, profile, users)
    assert [u for u in users if after[u] != before[u]] == [1, 2]  # the rest: same bytes, same event_ts
    rows = store.online_features(store.open_store(paths, profile), [1, 2, 7, 150])
    assert [list(r["last_items"]) for r in rows[:2]] == [[1001, 5], [1002, 6]]
    assert [r["n_events"] for r in rows] == [2, 2, 999, 999]
