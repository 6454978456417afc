"""Feature-store fixtures: a real project whose feature table is built from hand-made events and
applied with the real `feast apply`."""

from __future__ import annotations

import socket

import pandas as pd
import pytest

from seqops.config import Paths
from seqops.features import store
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


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def reachable(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


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
