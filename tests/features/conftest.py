"""Feature-store fixtures: a real project whose feature table is built from hand-made events and
applied with the real `feast apply`."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest

from seqops.config import Paths
from seqops.features import scale_out, store
from seqops.features.lineage import manifest_path
from seqops.features.sequences import write_user_features

DAY0 = pd.Timestamp("2026-01-01", tz="UTC")


def events_at(rows: list[tuple[int, int, str]]) -> pd.DataFrame:
    """Canonical events from (user_id, item_id, time offset like "10h" or "10h30min"); one session each."""
    return pd.DataFrame(
        {
            "user_id": [u for u, _, _ in rows],
            "item_id": [i for _, i, _ in rows],
            "ts": [DAY0 + pd.Timedelta(offset) for _, _, offset in rows],
            "event_type": "view",
            "session_id": [u for u, _, _ in rows],
        }
    )


def build_features(paths: Paths, events: pd.DataFrame, max_len: int = 5) -> None:
    """Write events the way ingest does, then the feature table the way `seqops features` does."""
    paths.events.parent.mkdir(parents=True, exist_ok=True)
    events.to_parquet(paths.events)
    write_user_features(paths.events, paths.user_features, max_len=max_len)


@pytest.fixture
def feature_paths(project) -> Paths:
    """A project with its feature repo applied (registry created) and no feature rows yet."""
    paths = Paths(project)
    build_features(paths, events_at([(1, 1, "0h")]))
    store.apply(paths)
    return paths


def events_frame() -> pd.DataFrame:
    ts = pd.to_datetime(
        [
            "2026-01-01 00:00:00",
            "2026-01-01 00:01:00",
            "2026-01-01 05:00:00",
            "2026-01-02 00:00:00",
            "2026-01-02 00:00:30",
        ],
        utc=True,
    )
    return pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2],
            "item_id": [5, 6, 7, 8, 9],
            "ts": ts,
            "event_type": ["view", "view", "cart", "view", "purchase"],
            "session_id": [1, 1, 2, 3, 3],
        }
    )


@pytest.fixture
def scale_out_project(project):
    """The project with its scale_out profile in a private namespace: its own registry database and
    Redis keys (project name); skipped when the servers are not reachable."""
    if not scale_out.services_up():
        pytest.skip("scale-out profile needs Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432")
    database = scale_out.isolate(project, "seqops_feast_test")
    yield project
    scale_out.remove(project, database)


@pytest.fixture(params=["local", "scale_out"])
def applied_profile(request) -> tuple[Paths, str]:
    """A project with its feature repo applied, on SQLite (`local`) or on Redis (`scale_out`)."""
    profile = request.param
    paths = Paths(request.getfixturevalue("scale_out_project" if profile == "scale_out" else "project"))
    build_features(paths, events_at([(1, 1, "0h")]))
    store.apply(paths, profile)
    return paths, profile


def entity_key(user_id: int):
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=user_id)])


def redis_keys(paths: Paths, users) -> list[bytes]:
    """Feast's Redis key of each user in the scale_out profile's project."""
    from feast.infra.online_stores.helpers import _redis_key

    project = store.open_store(paths, "scale_out").config.project
    return [_redis_key(project, entity_key(int(u))) for u in users]


def stored_online(paths: Paths, profile: str, users) -> dict[int, object]:
    """What the online store holds for each user, as stored: the user's rows of Feast's SQLite
    table (every column), or the user's Redis hash."""
    from feast.infra.key_encoding_utils import serialize_entity_key

    if profile == "scale_out":
        import redis

        client = redis.Redis("127.0.0.1", 6379)
        return {int(u): client.hgetall(key) for u, key in zip(users, redis_keys(paths, users))}
    with sqlite3.connect(paths.home / "feature_store" / "online.db") as conn:
        rows = conn.execute(f"SELECT * FROM seqops_{store.FEATURE_VIEW} ORDER BY entity_key, feature_name").fetchall()
    keys = {serialize_entity_key(entity_key(int(u)), 3): int(u) for u in users}
    out: dict[int, object] = {int(u): [] for u in users}
    for row in rows:
        if row[0] in keys:
            out[keys[row[0]]].append(row)
    return out


def clear_online(paths: Paths, profile: str, users) -> None:
    if profile == "scale_out":
        import redis

        redis.Redis("127.0.0.1", 6379).delete(*redis_keys(paths, users))
        return
    with sqlite3.connect(paths.home / "feature_store" / "online.db") as conn:
        conn.execute(f"DELETE FROM seqops_{store.FEATURE_VIEW}")


def mark_online(paths: Paths, profile: str, user_id: int, n_events: int) -> None:
    """Overwrite one stored value in place (nothing else of the row changes), to see whether a run
    writes the user again."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.infra.online_stores.helpers import _mmh3
    from feast.protos.feast.types.Value_pb2 import Value

    value = Value(int64_val=n_events).SerializeToString()
    if profile == "scale_out":
        import redis

        field = _mmh3(f"{store.FEATURE_VIEW}:n_events")
        redis.Redis("127.0.0.1", 6379).hset(redis_keys(paths, [user_id])[0], field, value)
        return
    with sqlite3.connect(paths.home / "feature_store" / "online.db") as conn:
        conn.execute(
            f"UPDATE seqops_{store.FEATURE_VIEW} SET value = ? WHERE entity_key = ? AND feature_name = 'n_events'",
            (value, serialize_entity_key(entity_key(user_id), 3)),
        )


def snapshot_files(paths: Paths, reports: bool = True) -> dict[str, bytes]:
    """Every file an ingest writes (with `reports`, the data reports too), by path; the vocabulary
    folder whole, as DVC takes it (a stray file in it would be part of the snapshot)."""
    files = [
        paths.events,
        paths.quarantine,
        paths.ingest_metrics,
        manifest_path(paths),
        *sorted(paths.vocab.glob("*")),
        *(sorted((paths.reports / "data").rglob("*")) if reports else []),
    ]
    return {str(f): f.read_bytes() for f in files if f.is_file()}
