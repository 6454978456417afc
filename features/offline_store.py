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

import inspect
from collections.abc import Callable
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


def bound_call(feast_method: Callable, args: tuple, kwargs: dict) -> inspect.BoundArguments:
    """A call's arguments by name as the overridden Feast method takes them (Feast passes them by
    keyword, our own code by position), defaults filled in."""
    bound = inspect.signature(feast_method).bind(*args, **kwargs)
    bound.apply_defaults()
    return bound


def on_project_sources(ibis_call: Callable, feast_method: Callable) -> staticmethod:
    """A store method taking `feast_method`'s arguments and running Feast's ibis implementation of
    it (`ibis_call`) with the project's source reader instead of Feast's DuckDB one."""

    def method(*args, **kwargs):
        arguments = bound_call(feast_method, args, kwargs).arguments
        return ibis_call(**arguments, **_store_options(arguments["config"]))

    return staticmethod(method)


class ProjectDuckDBOfflineStoreConfig(feast_duckdb.DuckDBOfflineStoreConfig):
    type: StrictStr = "seqops.features.offline_store.ProjectDuckDBOfflineStore"


class ProjectDuckDBOfflineStore(feast_duckdb.DuckDBOfflineStore):
    """Feast's DuckDB offline store with repo-relative source paths (see the module docstring)."""

    get_historical_features = on_project_sources(
        get_historical_features_ibis, feast_duckdb.DuckDBOfflineStore.get_historical_features
    )
    pull_latest_from_table_or_query = on_project_sources(
        pull_latest_from_table_or_query_ibis, feast_duckdb.DuckDBOfflineStore.pull_latest_from_table_or_query
    )
    pull_all_from_table_or_query = on_project_sources(
        pull_all_from_table_or_query_ibis, feast_duckdb.DuckDBOfflineStore.pull_all_from_table_or_query
    )
