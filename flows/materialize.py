"""The `materialize` flow: write the latest feature rows of users with new events to the online store."""

from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow, get_run_logger

from seqops.config import load_params, project_paths
from seqops.features import store as feature_store


@flow(name="materialize", retries=2, retry_delay_seconds=10, timeout_seconds=900)
def materialize(project: str = ".") -> str:
    """Incremental materialize up to now (only users whose latest row changed since the last run)."""
    paths = project_paths(project)
    params = load_params(paths.project / "params.yaml")
    end = datetime.now(timezone.utc)
    result = feature_store.materialize(paths, end=end, profile=params.features.store_profile)
    get_run_logger().info(
        "materialized up to %s: %d of %d users written in %.1f s",
        end.isoformat(timespec="seconds"),
        result.users_written,
        result.users_total,
        result.seconds,
    )
    return end.isoformat()
