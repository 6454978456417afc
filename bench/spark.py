"""Spark-profile bench: the point-in-time training frame through Feast's Spark offline store on a
local Spark session (the profile's `local[2]`) against the default profile (Feast's DuckDB store),
on the same project, and whether the two frames are equal. Needs Redis and PostgreSQL on
127.0.0.1 (the spark profile's online store and registry).

    nice .venv/bin/python bench/spark.py                  # 10^5 events
    nice .venv/bin/python bench/spark.py --sizes 10000    # smoke test

Data as in bench/features.py (synthetic events → feature table with 50-item lists → the
leave-one-out entity frame the train stage builds). Spark is timed twice: the first frame
includes starting the JVM and the session, the second is a warm session (a long-lived worker).
Prints a table, writes bench/results/spark.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.features import MAX_LEN, int_list, write_events  # noqa: E402
from bench.loop import drop_database, print_table  # noqa: E402
from seqops.config import Paths  # noqa: E402
from seqops.features import store  # noqa: E402
from seqops.features.sequences import write_user_features  # noqa: E402
from seqops.models.training.splits import target_entities  # noqa: E402
from tests.conftest import make_project  # noqa: E402
from tests.features.conftest import reachable  # noqa: E402
from tests.features.test_spark_profile import comparable, isolate_profile, stop_spark  # noqa: E402


def timed_frame(paths: Paths, entities: pd.DataFrame, profile: str) -> tuple[pd.DataFrame, float]:
    started = time.perf_counter()
    frame = store.historical_features(paths, entities.copy(), profile)
    return frame, round(time.perf_counter() - started, 2)


def same_frame(spark: pd.DataFrame, default: pd.DataFrame) -> bool:
    """The test's check (tests/features/test_spark_profile.py): same rows and values, order-normalised."""
    try:
        pd.testing.assert_frame_equal(comparable(spark), comparable(default), check_dtype=False)
    except AssertionError:
        return False
    return True


def spark_conf(paths: Paths) -> dict:
    config = store.open_store(paths, "spark").config.offline_store
    return dict(config.spark_conf or {})


def measure(n_events: int) -> dict:
    """Seconds for the training frame on the default profile and on the spark profile (cold, warm)."""
    with tempfile.TemporaryDirectory() as tmp:
        project = make_project(Path(tmp) / "project")
        database = isolate_profile(project, "spark", f"bench_{uuid.uuid4().hex[:8]}")
        paths = Paths(project)
        try:
            rows = write_events(n_events, paths.events)
            write_user_features(paths.events, paths.user_features, MAX_LEN)
            store.apply(paths)
            store.apply(paths, "spark")
            entities = target_entities(
                pd.read_parquet(paths.events, columns=["user_id", "item_id", "ts", "event_type"])
            )
            default, default_s = timed_frame(paths, entities, "local")
            spark, spark_cold_s = timed_frame(paths, entities, "spark")
            _, spark_warm_s = timed_frame(paths, entities, "spark")
            return {
                "events": rows,
                "entity_rows": len(entities),
                "default_duckdb_s": default_s,
                "spark_first_s": spark_cold_s,
                "spark_warm_s": spark_warm_s,
                "same_frame": same_frame(spark, default),
                "spark_master": spark_conf(paths).get("spark.master", ""),
            }
        finally:
            stop_spark()
            try:
                store.open_store(paths, "spark").teardown()  # drops this project's Redis keys
            finally:
                drop_database(database)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int_list, default=[100_000], help="events, comma-separated")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "spark.json")
    args = parser.parse_args()
    if not (reachable(6379) and reachable(5432)):
        sys.exit("the spark profile needs Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432")

    results = []
    for size in args.sizes:
        results.append(measure(size))
        print_table("training frame: default profile (DuckDB) vs spark profile", results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"pit": results}, indent=2) + "\n")
    print(f"\n→ {args.out}")


if __name__ == "__main__":
    main()
