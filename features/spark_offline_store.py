"""Feast's Spark offline store, reading the project's Parquet sources relative to the feature repo.

The declarations in `feature_repo/` use one FileSource for every profile (the DuckDB and file
stores need it). Feast's Spark store only takes a SparkSource, so this subclass hands it, per
call, the same source as a SparkSource: the same name, timestamp and mappings, the path resolved
against the repo like every other Feast tool does (a URI such as `s3a://…` or `hdfs://…` is kept
as it is), format Parquet. Everything else — the point-in-time join SQL, the latest-row pull for
materialize, the full pull — is Feast's (`feast.infra.offline_stores.contrib.spark_offline_store`),
run by whichever Spark the profile's `spark_conf` names (`spark.master`).

feature_store.yaml: `offline_store: {type: seqops.features.spark_offline_store.ProjectSparkOfflineStore,
spark_conf: {...}}` (see `feature_repo/profiles/spark/`).
"""

from __future__ import annotations

import copy
import os
import shutil
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pyarrow as pa
from feast.data_source import DataSource
from feast.infra.offline_stores.contrib.spark_offline_store.spark import SparkOfflineStore, SparkOfflineStoreConfig
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.infra.offline_stores.file_source import FileSource
from pydantic import StrictStr

from seqops.features.offline_store import bound_call, resolve_source_path
from seqops.features.store import SPARK_OFFLINE_STORE


def ensure_java_home() -> None:
    """Spark's launcher finds Java through JAVA_HOME or `java` on PATH; set JAVA_HOME from the
    `java` on PATH when it is unset, so a shell without it starts the same JVM."""
    java = shutil.which("java")
    if "JAVA_HOME" not in os.environ and java:
        os.environ["JAVA_HOME"] = str(Path(java).resolve().parents[1])


def spark_path(path: str, repo_path: str) -> str:
    """A source path as Spark reads it: a URI stays, a local path becomes an absolute file: URI
    (so a cluster whose default file system is HDFS still reads the shared mount)."""
    if "://" in path:
        return path
    return Path(resolve_source_path(path, repo_path)).as_uri()


def as_spark_source(source: DataSource, repo_path: str) -> DataSource:
    """The project's FileSource as the SparkSource Feast's Spark store expects; other sources as
    they are."""
    if not isinstance(source, FileSource):
        return source
    with warnings.catch_warnings():  # "experimental" RuntimeWarning on every construction
        warnings.simplefilter("ignore", RuntimeWarning)
        return SparkSource(
            name=source.name,
            path=spark_path(source.path, repo_path),
            file_format="parquet",
            timestamp_field=source.timestamp_field,
            created_timestamp_column=source.created_timestamp_column,
            field_mapping=dict(source.field_mapping),
            date_partition_column=source.date_partition_column or None,
        )


def with_spark_source(view, repo_path: str):
    """A copy of the feature view reading its batch source through Spark (the registry's view is
    left alone)."""
    view = copy.copy(view)
    view.batch_source = as_spark_source(view.batch_source, repo_path)
    return view


class ProjectSparkOfflineStoreConfig(SparkOfflineStoreConfig):
    type: StrictStr = SPARK_OFFLINE_STORE


def through_spark(feast_method: Callable) -> staticmethod:
    """`feast_method` (a SparkOfflineStore method) with the project's FileSources handed over as
    SparkSources — the data source of a pull, the views' batch sources of a join."""

    def method(*args, **kwargs):
        ensure_java_home()
        bound = bound_call(feast_method, args, kwargs)
        arguments, repo = bound.arguments, str(bound.arguments["config"].repo_path)
        if "data_source" in arguments:
            arguments["data_source"] = as_spark_source(arguments["data_source"], repo)
        if "feature_views" in arguments:
            arguments["feature_views"] = [with_spark_source(view, repo) for view in arguments["feature_views"]]
        return feast_method(*bound.args, **bound.kwargs)

    return staticmethod(method)


class ProjectSparkOfflineStore(SparkOfflineStore):
    """Feast's Spark offline store over the project's FileSource (see the module docstring)."""

    get_historical_features = through_spark(SparkOfflineStore.get_historical_features)
    pull_latest_from_table_or_query = through_spark(SparkOfflineStore.pull_latest_from_table_or_query)
    pull_all_from_table_or_query = through_spark(SparkOfflineStore.pull_all_from_table_or_query)


def latest_feature_rows(store, view, features: list[str], start: datetime, end: datetime) -> pa.Table:
    """Each user's newest row in [start, end] through Feast's Spark pull (what `feast materialize`
    reads), with UTC timestamps (Spark hands them back naive, in the session's UTC)."""
    source = view.batch_source
    job = ProjectSparkOfflineStore.pull_latest_from_table_or_query(
        store.config,
        source,
        ["user_id"],
        features,
        source.timestamp_field,
        source.created_timestamp_column or None,
        start,
        end,
    )
    table = job.to_arrow()
    utc = table.column("event_timestamp").cast(pa.timestamp("us", tz="UTC"))  # naive values are read as UTC
    return table.set_column(table.schema.get_field_index("event_timestamp"), "event_timestamp", utc)
