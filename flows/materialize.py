"""The `materialize` flow: load feature rows newer than the last run into the online store."""

from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow, get_run_logger

from seqops.config import load_params, project_paths
from seqops.features import store as feature_store


@flow(name="materialize", retries=2, retry_delay_seconds=10, timeout_seconds=900)
def materialize(project: str = ".") -> str:
    """`feast materialize-incremental` up to now for the project's feature views."""
    paths = project_paths(project)
    params = load_params(paths.project / "params.yaml")
    end = datetime.now(timezone.utc)
    feature_store.open_store(paths, params.features.store_profile).materialize_incremental(end_date=end)
    get_run_logger().info("materialized up to %s", end.isoformat(timespec="seconds"))
    return end.isoformat()
