"""Feature-store bench: the point-in-time training frame (Feast file/dask store vs DuckDB) and
materialize throughput (SQLite; Redis through the scale_out profile when Redis and PostgreSQL are
reachable on 127.0.0.1), full and incremental.

    .venv/bin/python bench/features.py --sizes 1e5,1e6,1e7 --users 1e4,1e5,1e6
    .venv/bin/python bench/features.py --parts materialize --users 1e4,1e5   # one part: the other's rows are kept
    .venv/bin/python bench/features.py --sizes 10000 --users 10000          # smoke test

PIT: synthetic events streamed in user chunks → canonical events → the feature table (one row per
event, 50-item lists) → the leave-one-out entity frame the train stage builds → historical_features.
Materialize: a feature table with one row per user (50-item lists), a full run (no state), then a
run after 1% of the users got a newer row (incremental), then a run with nothing new. Feast is
imported before the clock starts (a once-per-process cost, reported as `import_s`); each run's time
is `store.materialize` from opening the store to the state file written. `cpu_s` is this process's
CPU time (the Redis server's is not in it), `load` the 1-minute load average when the run ended:
on a shared machine wall times are upper bounds.
Prints a table, writes bench/results/features.json (a part not run keeps its earlier rows) and
bench/results/features.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.loop import print_table  # noqa: E402
from seqops.config import Paths, SyntheticParams  # noqa: E402
from seqops.features import scale_out, store  # noqa: E402
from seqops.features.sequences import write_user_features  # noqa: E402
from seqops.features.synthetic import iter_batch_chunks  # noqa: E402
from seqops.models.training.splits import target_entities  # noqa: E402
from tests.conftest import make_project  # noqa: E402

MAX_LEN = 50
EVENTS_PER_USER = SyntheticParams().sessions_per_user * SyntheticParams().session_length
PIT_STORES = {"file": "file", "duckdb": "local"}  # bench name -> profile
INCREMENTAL_SHARE = 0.01


def canonical_chunk(raw: pd.DataFrame) -> pd.DataFrame:
    """Raw generator rows → canonical events (dense ids straight from the generator's indices)."""
    frame = pd.DataFrame(
        {
            "user_id": raw["user_id"].str[1:].astype(np.int64) + 1,
            "item_id": raw["item_id"].str[1:].astype(np.int64) + 1,
            "ts": pd.to_datetime(raw["timestamp"].astype(np.int64), unit="s", utc=True).astype("datetime64[us, UTC]"),
            "event_type": raw["event_type"].astype(str),
        }
    ).sort_values(["user_id", "ts"], kind="stable")
    gap = frame.groupby("user_id")["ts"].diff().dt.total_seconds()
    return frame.assign(session_id=(gap.isna() | (gap > 1800)).cumsum())


def write_events(n_events: int, path: Path) -> int:
    """Stream about `n_events` synthetic events to a canonical Parquet file; returns the row count."""
    p = SyntheticParams(n_users=max(1, round(n_events / EVENTS_PER_USER)), n_items=20_000, seed=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows, writer = 0, None
    for raw in iter_batch_chunks(p, 0):
        table = pa.Table.from_pandas(canonical_chunk(raw), preserve_index=False)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
        rows += table.num_rows
    writer.close()
    return rows


def pit_part(n_events: int, stores: list[str]) -> list[dict]:
    """Seconds for the training frame (leave-one-out entities) on each offline store."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = Paths(make_project(Path(tmp) / "project"))
        rows = write_events(n_events, paths.events)
        started = time.perf_counter()
        write_user_features(paths.events, paths.user_features, MAX_LEN)
        features_s = time.perf_counter() - started
        store.apply(paths)
        entities = target_entities(pd.read_parquet(paths.events, columns=["user_id", "item_id", "ts", "event_type"]))
        out = []
        for name in stores:
            started = time.perf_counter()
            frame = store.historical_features(paths, entities.copy(), PIT_STORES[name])
            out.append(
                {
                    "events": rows,
                    "entity_rows": len(entities),
                    "store": name,
                    "pit_s": round(time.perf_counter() - started, 2),
                    "load": round(os.getloadavg()[0], 1),
                    "features_s": round(features_s, 2),
                    "joined_with_history": int(frame["last_items"].notna().sum()),
                }
            )
        return out


def latest_rows_table(n_users: int, seed: int = 0) -> pa.Table:
    """One feature row per user, shaped like the real table (50-item lists)."""
    rng = np.random.default_rng(seed)
    offsets = pa.array(np.arange(n_users + 1, dtype=np.int32) * MAX_LEN)
    items = rng.integers(1, 20_000, n_users * MAX_LEN)
    types = pa.array(["view", "cart"]).take(pa.array((rng.random(n_users * MAX_LEN) >= 0.85).astype(np.int8)))
    ts = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 14 * 86400, n_users), unit="s")
    return pa.table(
        {
            "user_id": pa.array(np.arange(1, n_users + 1), pa.int64()),
            "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "last_items": pa.ListArray.from_arrays(offsets, pa.array(items, pa.int64())),
            "last_types": pa.ListArray.from_arrays(offsets, types),
            "secs_since_prev": pa.array(rng.exponential(3600, n_users)),
            "n_events": pa.array(rng.integers(MAX_LEN, 200, n_users), pa.int64()),
            "n_sessions": pa.array(rng.integers(1, 20, n_users), pa.int64()),
            "last_ts": pa.array((ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1), pa.int64()),
        }
    )


def with_newer_rows(table: pa.Table, share: float) -> pa.Table:
    """The table plus a row one hour later for the first `share` of the users (their new state)."""
    newer = table.slice(0, max(1, int(table.num_rows * share))).to_pandas()
    newer["event_timestamp"] += pd.Timedelta(hours=1)
    newer["n_events"] += 1
    return pa.concat_tables([table, pa.Table.from_pandas(newer, schema=table.schema, preserve_index=False)])


def materialize_part(n_users: int, profile: str) -> dict:
    """Users/s of a full materialize, then the incremental and the idle run."""
    with tempfile.TemporaryDirectory() as tmp:
        project = make_project(Path(tmp) / "project")
        paths, database = Paths(project), None
        if profile == "scale_out":
            database = scale_out.isolate(project, "seqops_bench")
        try:
            table = latest_rows_table(n_users)
            paths.user_features.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, paths.user_features)
            store.apply(paths, profile)
            full, full_cpu = timed_materialize(paths, profile)
            pq.write_table(with_newer_rows(table, INCREMENTAL_SHARE), paths.user_features)
            incremental, incremental_cpu = timed_materialize(paths, profile)
            idle, _ = timed_materialize(paths, profile)
            return {
                "profile": profile,
                "online": "redis" if profile == "scale_out" else "sqlite",
                "users": n_users,
                "full_s": round(full.seconds, 2),
                "full_cpu_s": round(full_cpu, 2),
                "full_users_per_s": round(full.users_per_s),
                "incremental_users": incremental.users_written,
                "incremental_s": round(incremental.seconds, 2),
                "incremental_cpu_s": round(incremental_cpu, 2),
                "incremental_users_per_s": round(incremental.users_per_s),
                "incremental_scanned_per_s": round(incremental.users_total / incremental.seconds),
                "idle_s": round(idle.seconds, 2),
                "load": round(os.getloadavg()[0], 1),
            }
        finally:
            if profile == "scale_out":
                scale_out.remove(project, database)


def timed_materialize(paths: Paths, profile: str) -> tuple[store.MaterializeResult, float]:
    cpu = time.process_time()
    result = store.materialize(paths, profile=profile)
    return result, time.process_time() - cpu


def import_seconds() -> float:
    """Import Feast and the project's offline store once, before any clock starts."""
    started = time.perf_counter()
    import feast  # noqa: F401

    from seqops.features import offline_store, online_write  # noqa: F401

    return round(time.perf_counter() - started, 2)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name in PIT_STORES:
        rows = [r for r in results.get("pit", []) if r["store"] == name]
        if rows:
            left.plot([r["events"] for r in rows], [r["pit_s"] for r in rows], marker="o", label=name)
    left.set(xscale="log", yscale="log", xlabel="events", ylabel="seconds", title="point-in-time training frame")
    for online in ("sqlite", "redis"):
        rows = [r for r in results.get("materialize", []) if r["online"] == online]
        if rows:
            users = [r["users"] for r in rows]
            right.plot(users, [r["full_users_per_s"] for r in rows], marker="o", label=f"{online}, wall")
            per_cpu = [r["users"] / r["full_cpu_s"] for r in rows]  # this process's CPU, not the shared cores'
            right.plot(users, per_cpu, marker="x", linestyle=":", label=f"{online}, per CPU-second")
    right.axhline(20_000, color="grey", linestyle="--", label="target 20k users/s")
    right.set(xscale="log", xlabel="users", ylabel="users / s", title="materialize (full run)")
    for axis in (left, right):
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def merged(rows: list[dict], new: list[dict], *keys: str) -> list[dict]:
    """Earlier rows, with those measured again replaced (same values of `keys`)."""
    fresh = {tuple(row[k] for k in keys) for row in new}
    kept = [row for row in rows if tuple(row[k] for k in keys) not in fresh]
    return sorted(kept + new, key=lambda row: tuple(row[k] for k in keys))


def int_list(text: str) -> list[int]:
    return [int(float(part)) for part in text.split(",") if part]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes", type=int_list, default=[100_000, 1_000_000], help="events for the PIT part, comma-separated"
    )
    parser.add_argument("--users", type=int_list, default=[100_000, 1_000_000], help="users for the materialize part")
    parser.add_argument("--pit-stores", default="file,duckdb", help="offline stores to time: file, duckdb")
    parser.add_argument("--parts", nargs="+", default=["pit", "materialize"], choices=["pit", "materialize"])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "features.json")
    args = parser.parse_args()

    results: dict = json.loads(args.out.read_text()) if args.out.exists() else {}
    results["import_s"] = import_seconds()
    if "pit" in args.parts:
        for size in args.sizes:
            results["pit"] = merged(
                results.get("pit", []), pit_part(size, args.pit_stores.split(",")), "events", "store"
            )
            print_table("point-in-time training frame", results["pit"])
    if "materialize" in args.parts:
        profiles = ["local"] + (["scale_out"] if scale_out.services_up() else [])
        for n_users in args.users:
            for profile in profiles:
                row = materialize_part(n_users, profile)
                results["materialize"] = merged(results.get("materialize", []), [row], "users", "online")
                print_table("materialize", results["materialize"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.out.with_suffix(".png"))
    print(f"\n→ {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
