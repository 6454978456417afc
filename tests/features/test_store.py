"""Real Feast: apply the repo, point-in-time join, materialize, online read — on the embedded
default (SQLite + file registry) and on the scale-out profile (Redis + PostgreSQL registry)."""

import pandas as pd

from seqops.config import Paths
from seqops.features import store
from seqops.features.sequences import write_user_features
from tests.features.conftest import events_frame


def check_store_round_trip(paths: Paths, profile: str) -> None:
    paths.events.parent.mkdir(parents=True)
    events_frame().to_parquet(paths.events)
    write_user_features(paths.events, paths.user_features, max_len=10)
    store.apply(paths, profile)

    entities = pd.DataFrame(
        {
            "user_id": [1, 1, 2],
            "event_timestamp": pd.to_datetime(
                ["2026-01-01 04:59:59", "2026-01-01 06:00:00", "2026-01-02 00:00:29"], utc=True
            ),
        }
    )
    joined = store.historical_features(paths, entities, profile)
    # only rows at or before each entity time: the 05:00 event is invisible at 04:59:59
    assert joined["last_items"].map(list).tolist() == [[5, 6], [5, 6, 7], [8]]

    store.materialize(paths, profile=profile)
    rows = store.online_features(store.open_store(paths, profile), [1, 2, 99])
    assert list(rows[0]["last_items"]) == [5, 6, 7]
    assert rows[1]["n_events"] == 2
    assert rows[2]["last_items"] is None


def test_local_profile(project):
    check_store_round_trip(Paths(project), "local")


def test_scale_out_profile_on_real_redis_and_postgres(scale_out_project):
    check_store_round_trip(Paths(scale_out_project), "scale_out")
