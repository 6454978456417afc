"""The spark profile: Feast's Spark offline store on a local Spark session (local[2]), with the
Redis online store and PostgreSQL registry of scale_out. On a project built by the real CLI
(generate → ingest → features) it gives the train stage the same training frame as the default
profile (DuckDB), and its materialize (Feast's Spark pull) writes the same online rows."""

import pandas as pd
import pytest

from seqops.config import Paths
from seqops.features import scale_out, store
from seqops.models.training.splits import target_entities, temporal_entities
from tests.conftest import make_project
from tests.flows.conftest import run_seqops

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

N_USERS = 550  # × 3 sessions × ~6 events ≈ 10^4 events


@pytest.fixture(scope="module")
def spark_paths(tmp_path_factory) -> Paths:
    if not scale_out.services_up():
        pytest.skip("the spark profile needs Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432")
    project = make_project(
        tmp_path_factory.mktemp("spark") / "project",
        {"data": {"synthetic": {"n_users": N_USERS}}, "ingest": {"data_report": False}},
    )
    database = scale_out.isolate(project, "seqops_feast_test", "spark")
    paths = Paths(project)
    try:
        run_seqops(project, "generate", "--batch", "0")
        run_seqops(project, "ingest", "--path", str(paths.landing))
        run_seqops(project, "features")  # the default profile (params.yaml)
        store.apply(paths, "spark")
        yield paths
    finally:
        stop_spark()
        scale_out.remove(project, database, "spark")


def stop_spark() -> None:
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()


def events(paths: Paths) -> pd.DataFrame:
    return pd.read_parquet(paths.events, columns=["user_id", "item_id", "ts", "event_type"])


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """Lists as lists (Spark hands back numpy arrays), rows in one order."""
    lists = {c: frame[c].map(lambda v: None if v is None else list(v)) for c in ("last_items", "last_types")}
    return (
        frame.assign(**lists).sort_values(["user_id", "event_timestamp", "role"], kind="stable").reset_index(drop=True)
    )


@pytest.mark.parametrize(
    "entities", [target_entities, lambda e: temporal_entities(e, 0.2)], ids=["leave_one_out", "temporal"]
)
def test_training_frame_equals_the_default_profile(spark_paths, entities):
    from pyspark.sql import SparkSession

    entity_df = entities(events(spark_paths))
    assert len(entity_df) > 500

    default = store.historical_features(spark_paths, entity_df.copy(), "local")
    spark = store.historical_features(spark_paths, entity_df.copy(), "spark")

    assert SparkSession.getActiveSession().sparkContext.master == "local[2]"  # it was Spark that joined
    assert spark["last_items"].notna().sum() > 500  # (temporal: users new after a cut have no history yet)
    pd.testing.assert_frame_equal(comparable(spark), comparable(default), check_dtype=False)
    assert spark.dtypes.to_dict() == default.dtypes.to_dict() | {
        c: spark[c].dtype for c in ("last_items", "last_types")
    }


def test_materialize_through_spark_writes_the_default_profiles_online_rows(spark_paths):
    user_ids = sorted(events(spark_paths)["user_id"].unique().tolist())

    local_run = store.materialize(spark_paths, profile="local")
    spark_run = store.materialize(spark_paths, profile="spark")
    again = store.materialize(spark_paths, profile="spark")

    assert spark_run.users_written == local_run.users_written == len(user_ids)
    assert again.users_written == 0  # the incremental state works on Spark's rows too
    local_rows = store.online_features(store.open_store(spark_paths, "local"), user_ids)
    spark_rows = store.online_features(store.open_store(spark_paths, "spark"), user_ids)
    as_lists = lambda rows: [{k: list(v) if isinstance(v, (list, tuple)) else v for k, v in r.items()} for r in rows]  # noqa: E731
    assert as_lists(spark_rows) == as_lists(local_rows)
