"""Feast operations on the project's feature repo: apply, materialize, point-in-time training
frames, online reads and pushes. The declarations themselves live in `feature_repo/`.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from seqops.config import Paths

log = logging.getLogger(__name__)

FEATURE_VIEW = "user_sequence"
FEATURE_SERVICE = "recommender"
PUSH_SOURCE = "user_sequence_push"


class FeatureStoreError(RuntimeError):
    """Feast could not apply, materialize or read the project's feature repo."""


def profile_dir(paths: Paths, profile: str = "local") -> Path:
    """Folder holding the feature_store.yaml of a profile (`local` is the repo's own)."""
    return paths.feature_repo if profile == "local" else paths.feature_repo / "profiles" / profile


def open_store(paths: Paths, profile: str = "local"):
    from feast import FeatureStore

    return FeatureStore(repo_path=str(paths.feature_repo), fs_yaml_file=profile_dir(paths, profile) / "feature_store.yaml")


def apply(paths: Paths, profile: str = "local") -> None:
    """`feast apply` on the repo (the real CLI, so the registry matches what users would get)."""
    (paths.home / "feature_store").mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "feast.cli.cli", "--chdir", str(paths.feature_repo),
           "--feature-store-yaml", str(profile_dir(paths, profile) / "feature_store.yaml"), "apply"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise FeatureStoreError(f"feast apply failed:\n{done.stderr[-2000:]}")
    log.info("feast apply: %s", done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "ok")


def materialize(paths: Paths, end: datetime | None = None, profile: str = "local") -> None:
    """Load the latest feature row of every user into the online store."""
    store = open_store(paths, profile)
    end = end or datetime.now(timezone.utc)
    store.materialize(start_date=datetime(1970, 1, 2, tzinfo=timezone.utc), end_date=end, feature_views=[FEATURE_VIEW])


def historical_features(paths: Paths, entity_df: pd.DataFrame, profile: str = "local") -> pd.DataFrame:
    """Point-in-time join: for each (user_id, event_timestamp) the newest row at or before it."""
    store = open_store(paths, profile)
    service = store.get_feature_service(FEATURE_SERVICE)
    frame = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    return frame.sort_values(["user_id", "event_timestamp"], kind="stable").reset_index(drop=True)


def online_features(store, user_ids: list[int]) -> list[dict]:
    """Latest features per user from the online store; a user with no row gets None values."""
    response = store.get_online_features(
        features=store.get_feature_service(FEATURE_SERVICE),
        entity_rows=[{"user_id": int(u)} for u in user_ids],
    ).to_dict()
    return [{key: values[i] for key, values in response.items()} for i in range(len(user_ids))]


def registry_path(paths: Paths) -> Path:
    return paths.home / "feature_store" / "registry.db"


def push_user_rows(store, rows: list[dict]) -> None:
    """Write whole feature rows (user_id, event_timestamp and every feature of the view) to the
    online store through the push source; the next online read returns them."""
    if rows:
        store.push(PUSH_SOURCE, pd.DataFrame(rows))
