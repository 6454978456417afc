"""Feast's DuckDB offline store, reading the project's Parquet sources relative to the feature repo.

Feast's own DuckDB store hands a FileSource path to DuckDB as it is, so a relative path
(`../.seqops/features/user_features.parquet`, what keeps the repo portable) would be resolved
against the process's working directory. The file (dask) store resolves it against the repo, as
`feast apply` and every other Feast tool do; this subclass does the same and changes nothing else:
the point-in-time join, the latest-row pull for materialize and the full pull are Feast's
(`feast.infra.offline_stores.ibis`), so their semantics are exactly Feast's.

feature_store.yaml: `offline_store: {type: seqops.features.offline_store.ProjectDuckDBOfflineStore}`.
"""

from __future__ import annotations

from pathlib import Path

import ibis
from feast.data_source import DataSource
from feast.infra.offline_stores import duckdb as feast_duckdb
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.ibis import (
    get_historical_features_ibis,
    pull_all_from_table_or_query_ibis,
    pull_latest_from_table_or_query_ibis,
)
from ibis.expr.types import Table
from pydantic import StrictStr


def resolve_source_path(path: str, repo_path: str) -> str:
    """A local source path as Feast's file store reads it: relative paths start at the repo."""
    if "://" in path or Path(path).is_absolute():
        return path
    return str((Path(repo_path) / path).resolve())


def parquet_glob(path: str) -> str:
    """A Parquet file, or every Parquet file below a folder (a partitioned source)."""
    return f"{path.rstrip('/')}/**/*.parquet" if Path(path).is_dir() else path


def read_project_source(data_source: DataSource, repo_path: str) -> Table:
    if isinstance(data_source, FileSource) and "://" not in data_source.path:
        return ibis.read_parquet(parquet_glob(resolve_source_path(data_source.path, repo_path)))
    return feast_duckdb._read_data_source(data_source, repo_path)


def _store_options(config) -> dict:
    return {
        "data_source_reader": read_project_source,
        "data_source_writer": feast_duckdb._write_data_source,
        "staging_location": config.offline_store.staging_location,
        "staging_location_endpoint_override": config.offline_store.staging_location_endpoint_override,
    }


class ProjectDuckDBOfflineStoreConfig(feast_duckdb.DuckDBOfflineStoreConfig):
    type: StrictStr = "seqops.features.offline_store.ProjectDuckDBOfflineStore"


class ProjectDuckDBOfflineStore(feast_duckdb.DuckDBOfflineStore):
    """Feast's DuckDB offline store with repo-relative source paths (see the module docstring)."""

    @staticmethod
    def pull_latest_from_table_or_query(
        config,
        data_source,
        join_key_columns,
        feature_name_columns,
        timestamp_field,
        created_timestamp_column,
        start_date,
        end_date,
    ):
        return pull_latest_from_table_or_query_ibis(
            config=config,
            data_source=data_source,
            join_key_columns=join_key_columns,
            feature_name_columns=feature_name_columns,
            timestamp_field=timestamp_field,
            created_timestamp_column=created_timestamp_column,
            start_date=start_date,
            end_date=end_date,
            **_store_options(config),
        )

    @staticmethod
    def get_historical_features(
        config,
        feature_views,
        feature_refs,
        entity_df,
        registry,
        project,
        full_feature_names=False,
        filter_by_created_timestamp=False,
    ):
        return get_historical_features_ibis(
            config=config,
            feature_views=feature_views,
            feature_refs=feature_refs,
            entity_df=entity_df,
            registry=registry,
            project=project,
            full_feature_names=full_feature_names,
            filter_by_created_timestamp=filter_by_created_timestamp,
            **_store_options(config),
        )

    @staticmethod
    def pull_all_from_table_or_query(
        config,
        data_source,
        join_key_columns,
        feature_name_columns,
        timestamp_field,
        created_timestamp_column=None,
        start_date=None,
        end_date=None,
    ):
        return pull_all_from_table_or_query_ibis(
            config=config,
            data_source=data_source,
            join_key_columns=join_key_columns,
            feature_name_columns=feature_name_columns,
            timestamp_field=timestamp_field,
            created_timestamp_column=created_timestamp_column,
            start_date=start_date,
            end_date=end_date,
            **_store_options(config),
        )
