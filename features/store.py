"""Feast operations on the project's feature repo: apply, materialize, point-in-time training
frames, online reads and pushes. The declarations themselves live in `feature_repo/`.

Materialize is incremental: it writes the latest feature row of only those users whose latest row
changed since the last run, in large batches, in the online store's own format (so online reads
are exactly what Feast's own materialize gives; seqops/features/online_write.py), and keeps what
it wrote in a small state file per profile (`.seqops/feature_store/materialized-<profile>.parquet`).
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from seqops.config import Paths
from seqops.io import atomic_path, crash_point

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

    return FeatureStore(
        repo_path=str(paths.feature_repo), fs_yaml_file=profile_dir(paths, profile) / "feature_store.yaml"
    )


def apply(paths: Paths, profile: str = "local") -> None:
    """`feast apply` on the repo (the real CLI, so the registry matches what users would get)."""
    (paths.home / "feature_store").mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "feast.cli.cli",
        "--chdir",
        str(paths.feature_repo),
        "--feature-store-yaml",
        str(profile_dir(paths, profile) / "feature_store.yaml"),
        "apply",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise FeatureStoreError(f"feast apply failed:\n{done.stderr[-2000:]}")
    log.info("feast apply: %s", done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "ok")


MATERIALIZE_START = datetime(1970, 1, 2, tzinfo=timezone.utc)
DEFAULT_WRITE_BATCH_ROWS = 10_000  # when the profile sets no `materialization.online_write_batch_size`
STATE_COLUMNS = ["user_id", "event_timestamp", "row_hash"]
SPARK_OFFLINE_STORE = "seqops.features.spark_offline_store.ProjectSparkOfflineStore"  # the spark profile's
_ENTITY_ROW = "__entity_row"  # the entity frame's own order, to break ties the same way in every store


@dataclass(frozen=True)
class MaterializeResult:
    users_written: int  # users whose latest row changed (all of them when `full`)
    users_total: int  # users with a feature row at or before `end`
    seconds: float
    full: bool  # no usable state from an earlier run: every user was written
    end: datetime

    @property
    def users_per_s(self) -> float:
        return self.users_written / self.seconds if self.seconds > 0 else float("inf")


def materialize(
    paths: Paths, end: datetime | None = None, profile: str = "local", full: bool = False
) -> MaterializeResult:
    """Write the latest feature row (at or before `end`) of every user whose row changed since the
    last run into the online store; `full` rewrites every user."""
    from seqops.features import online_write  # imports Feast, as open_store does

    started = time.perf_counter()
    store = open_store(paths, profile)
    end = end or datetime.now(timezone.utc)
    view = store.get_feature_view(FEATURE_VIEW)
    features = [f.name for f in view.features]
    latest = latest_rows(store, view, features, end)
    state_path = materialized_state_path(paths, profile)
    fingerprint = store_fingerprint(paths, profile, features)
    previous = None if full else read_materialized_state(state_path, fingerprint)
    changed = latest if previous is None else changed_rows(latest, previous)
    online_write.write_rows(store, view, changed.drop(["row_hash"]), write_batch_rows(store))
    crash_point("materialize-online-written")
    # Recorded like Feast's own materialize: `feast materialize-incremental` continues from `end`,
    # and a view left MATERIALIZING by an interrupted `feast materialize` becomes servable again.
    store.registry.apply_materialization(view, store.project, MATERIALIZE_START, end)
    crash_point("materialize-registry-updated")
    write_materialized_state(state_path, latest.select(STATE_COLUMNS), fingerprint)
    result = MaterializeResult(changed.num_rows, latest.num_rows, time.perf_counter() - started, previous is None, end)
    log.info("materialize: %d of %d users written in %.1f s", result.users_written, result.users_total, result.seconds)
    return result


def latest_rows(store, view, features: list[str], end: datetime) -> pa.Table:
    """Each user's latest feature row and its hash: DuckDB on the Parquet source, or, on the spark
    profile, Feast's Spark pull (the executors read the source, not this machine)."""
    if store.config.offline_store.type != SPARK_OFFLINE_STORE:
        return latest_feature_rows(feature_source_path(store, view), features, end)
    from seqops.features import spark_offline_store

    return with_row_hash(
        spark_offline_store.latest_feature_rows(store, view, features, MATERIALIZE_START, end), features
    )


def with_row_hash(rows: pa.Table, features: list[str]) -> pa.Table:
    """(user_id, event_timestamp, features, row_hash) sorted by user, hashed as `latest_feature_rows` does."""
    import duckdb

    columns = ", ".join(f'"{name}"' for name in features)
    with duckdb.connect() as con:
        con.register("rows", rows)
        return con.sql(
            f"SELECT user_id, event_timestamp, {columns}, hash({columns}) AS row_hash FROM rows ORDER BY user_id"
        ).to_arrow_table()


def feature_source_path(store, view) -> str:
    """The Parquet file or folder behind the view's offline source, as the offline stores read it."""
    from seqops.features.offline_store import parquet_glob, resolve_source_path

    return parquet_glob(resolve_source_path(view.batch_source.path, str(store.repo_path)))


def latest_feature_rows(source: str, features: list[str], end: datetime) -> pa.Table:
    """Each user's newest row at or before `end` (Feast's materialize window) plus a hash of its
    features. Rows with the same timestamp: the one written last (the later event) wins."""
    import duckdb

    columns = ", ".join(f'"{name}"' for name in features)
    query = f"""
        SELECT user_id, event_timestamp, {columns}, hash({columns}) AS row_hash
        FROM read_parquet(?, file_row_number = true, filename = true)
        WHERE event_timestamp >= ? AND event_timestamp <= ?
        QUALIFY row_number() OVER (PARTITION BY user_id
                                   ORDER BY event_timestamp DESC, filename DESC, file_row_number DESC) = 1
        ORDER BY user_id"""
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        return con.sql(query, params=[source, MATERIALIZE_START, end]).to_arrow_table()


def changed_rows(latest: pa.Table, previous: pa.Table) -> pa.Table:
    """Rows of `latest` whose user is new or whose timestamp or features differ from `previous`."""
    import duckdb

    with duckdb.connect() as con:
        con.register("latest", latest)
        con.register("previous", previous)
        return con.sql("""
            SELECT latest.* FROM latest LEFT JOIN previous USING (user_id)
            WHERE previous.user_id IS NULL OR previous.event_timestamp <> latest.event_timestamp
               OR previous.row_hash <> latest.row_hash
            ORDER BY user_id""").to_arrow_table()


def write_batch_rows(store) -> int:
    return store.config.materialization_config.online_write_batch_size or DEFAULT_WRITE_BATCH_ROWS


def materialized_state_path(paths: Paths, profile: str) -> Path:
    return paths.home / "feature_store" / f"materialized-{profile}.parquet"


def store_fingerprint(paths: Paths, profile: str, features: list[str]) -> str:
    """What the state is valid for: the profile's store config and the view's features. Another
    online store (or a changed view) means the recorded rows are not there: write everyone."""
    config = (profile_dir(paths, profile) / "feature_store.yaml").read_bytes()
    return hashlib.md5(config + repr(features).encode()).hexdigest()


def read_materialized_state(path: Path, fingerprint: str) -> pa.Table | None:
    """The (user_id, event_timestamp, row_hash) rows of the last run, or None when there is no
    state for this store."""
    if not path.exists():
        return None
    table = pq.read_table(path)
    if (table.schema.metadata or {}).get(b"store_fingerprint", b"").decode() != fingerprint:
        return None
    return table


def write_materialized_state(path: Path, state: pa.Table, fingerprint: str) -> None:
    """Replace the state file in one rename: a crash leaves the previous run's state, so the next
    run writes the same users again (writes are idempotent)."""
    state = state.replace_schema_metadata({"store_fingerprint": fingerprint})
    with atomic_path(path) as tmp:
        pq.write_table(state, tmp)


def historical_features(paths: Paths, entity_df: pd.DataFrame, profile: str = "local") -> pd.DataFrame:
    """Point-in-time join: for each (user_id, event_timestamp) the newest row at or before it.
    Rows come back sorted by user and time (ties in the entity frame's order), with the entity
    frame's timestamp type, whichever offline store the profile uses."""
    store = open_store(paths, profile)
    service = store.get_feature_service(FEATURE_SERVICE)
    entities = entity_df.assign(**{_ENTITY_ROW: range(len(entity_df))})
    frame = store.get_historical_features(entity_df=entities, features=service).to_df()
    frame = frame.sort_values(["user_id", "event_timestamp", _ENTITY_ROW], kind="stable")
    frame = frame.drop(columns=_ENTITY_ROW).reset_index(drop=True)
    if isinstance(entity_df["event_timestamp"].dtype, pd.DatetimeTZDtype):  # DuckDB returns us, the file store ns
        stamps = frame["event_timestamp"]
        if stamps.dt.tz is None:  # Spark returns them naive, in its session time zone (UTC in the profile)
            stamps = stamps.dt.tz_localize("UTC")
        frame["event_timestamp"] = stamps.astype(entity_df["event_timestamp"].dtype)
    return frame


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
