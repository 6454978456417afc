"""Loop measurements: online freshness after a push, materialization throughput (SQLite vs Redis),
warm- vs cold-start training time to the same validation NDCG@10, and drift → promoted model:
a drifted batch lands at t0, the monitor sees it, the retrain flow runs, and at t2 the gate has
promoted the new model (the real CLI and flows on a ~10^6-event project).

    .venv/bin/python bench/loop.py [--users 20000] [--pushes 30] [--drift-users 21000] [--parts store warm drift]
                                   [--out bench/results/loop.json]

Prints a table per part and writes JSON. Redis rows are skipped (with the reason) when Redis or
PostgreSQL on 127.0.0.1 are unreachable. Runs in a temp project; nothing is left behind.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from seqops.config import EvaluateParams, ModelParams, Paths, SyntheticParams, TrainParams  # noqa: E402
from seqops.features import store  # noqa: E402
from seqops.features.sequences import write_user_features  # noqa: E402
from seqops.features.synthetic import generate_batch  # noqa: E402
from seqops.models.nets.sasrec import SASRecModel  # noqa: E402
from seqops.models.training.train import train_model  # noqa: E402
from tests.conftest import make_project  # noqa: E402
from tests.features.conftest import PG_ADMIN, reachable  # noqa: E402


def feature_events(n_users: int, seed: int = 0) -> pd.DataFrame:
    """Canonical-looking events straight from the generator (ids made dense), for store benchmarks."""
    raw = generate_batch(SyntheticParams(n_users=n_users, n_items=2000, seed=seed), 0)
    ts = pd.to_datetime(raw["timestamp"].astype(np.int64), unit="s", utc=True)
    frame = pd.DataFrame(
        {
            "user_id": pd.factorize(raw["user_id"])[0] + 1,
            "item_id": pd.factorize(raw["item_id"])[0] + 1,
            "ts": ts,
            "event_type": raw["event_type"],
        }
    ).sort_values(["user_id", "ts"])
    gap = frame.groupby("user_id")["ts"].diff().dt.total_seconds()
    return frame.assign(session_id=(gap.isna() | (gap > 1800)).cumsum())


def scale_out_profile(project: Path) -> tuple[str, str]:
    import psycopg

    suffix = uuid.uuid4().hex[:8]
    database = f"seqops_bench_{suffix}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {database}")
    profile = project / "feature_repo" / "profiles" / "scale_out" / "feature_store.yaml"
    config = yaml.safe_load(profile.read_text())
    config["project"] = f"seqops_bench_{suffix}"
    config["registry"]["path"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
    profile.write_text(yaml.safe_dump(config))
    return database, config["project"]


def drop_database(database: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def measure_store(paths: Paths, profile: str, pushes: int) -> dict:
    """Materialize all users, then push fresh rows and time until an online read returns them."""
    store.apply(paths, profile)
    n_users = pd.read_parquet(paths.user_features, columns=["user_id"])["user_id"].nunique()
    started = time.perf_counter()
    store.materialize(paths, profile=profile)
    materialize_s = time.perf_counter() - started

    fs = store.open_store(paths, profile)
    latencies = []
    for i in range(pushes):
        user, marker = int(i % n_users) + 1, 10_000_000 + i
        row = {
            "user_id": user,
            "event_timestamp": pd.Timestamp.now(tz="UTC"),
            "last_items": [marker],
            "last_types": ["view"],
            "secs_since_prev": 1.0,
            "n_events": 1,
            "n_sessions": 1,
            "last_ts": int(time.time()),
        }
        t0 = time.perf_counter()
        store.push_user_rows(fs, [row])
        while list(store.online_features(fs, [user])[0]["last_items"] or [])[-1:] != [marker]:
            if time.perf_counter() - t0 > 5:
                raise TimeoutError(f"push for user {user} not visible after 5 s ({profile})")
        latencies.append(time.perf_counter() - t0)
    return {
        "profile": profile,
        "entities": n_users,
        "materialize_s": round(materialize_s, 2),
        "entities_per_s": round(n_users / materialize_s),
        "push_to_online_p50_ms": round(1000 * statistics.median(latencies), 1),
        "push_to_online_max_ms": round(1000 * max(latencies), 1),
        "pushes": pushes,
    }


def store_part(n_users: int, pushes: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        project = make_project(Path(tmp) / "project")
        paths = Paths(project)
        paths.events.parent.mkdir(parents=True)
        feature_events(n_users).to_parquet(paths.events)
        write_user_features(paths.events, paths.user_features, max_len=50)
        rows.append(measure_store(paths, "local", pushes))
        if reachable(6379) and reachable(5432):
            database, _ = scale_out_profile(project)
            try:
                rows.append(measure_store(paths, "scale_out", pushes))
                store.open_store(paths, "scale_out").teardown()
            finally:
                drop_database(database)
        else:
            rows.append({"profile": "scale_out", "skipped": "Redis/PostgreSQL on 127.0.0.1 unreachable"})
    return rows


def sequences(events: pd.DataFrame) -> list[np.ndarray]:
    return [g.to_numpy(np.int64) for _, g in events.sort_values(["user_id", "ts"]).groupby("user_id")["item_id"]]


def loo(seqs: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    keep = [s for s in seqs if len(s) >= 3]
    return [s[:-2] for s in keep], [s[:-2] for s in keep], np.array([s[-2] for s in keep])


def time_to(history: list[dict], target: float) -> float | None:
    elapsed = 0.0
    for row in history:
        elapsed += row["seconds"] + row["eval_seconds"]
        if row["val_ndcg@10"] >= target:
            return elapsed
    return None


def warm_part(epochs: int) -> dict:
    """Cold: train on batches 0+1 from scratch. Warm: start from a model trained on batch 0."""
    synthetic = SyntheticParams()
    raw = pd.concat([generate_batch(synthetic, 0), generate_batch(synthetic, 1)], ignore_index=True)
    ts = pd.to_datetime(raw["timestamp"].astype(np.int64), unit="s", utc=True)
    item_codes, item_index = pd.factorize(raw["item_id"])
    events = pd.DataFrame({"user_id": pd.factorize(raw["user_id"])[0] + 1, "item_id": item_codes + 1, "ts": ts})
    n_items = len(item_index)
    first = events[ts < ts.min() + pd.Timedelta(days=synthetic.days_per_batch)]
    model_p, eval_p = ModelParams(), EvaluateParams()
    train_p = TrainParams(epochs=epochs, patience=epochs)

    def fit(model: SASRecModel, frame: pd.DataFrame) -> list[dict]:
        train, valid_in, valid_t = loo(sequences(frame))
        return train_model(model, train, valid_in, valid_t, train_p, eval_p, progress=False).history

    torch.manual_seed(0)
    cold = fit(SASRecModel.from_params(n_items, 50, model_p), events)
    target = 0.95 * max(r["val_ndcg@10"] for r in cold)
    torch.manual_seed(0)
    champion = SASRecModel.from_params(n_items, 50, model_p)
    fit(champion, first)
    warm = fit(champion, events)
    cold_s, warm_s = time_to(cold, target), time_to(warm, target)
    return {
        "target_val_ndcg@10": round(target, 4),
        "cold_s": cold_s and round(cold_s, 1),
        "warm_s": warm_s and round(warm_s, 1),
        "speedup": round(cold_s / warm_s, 2) if cold_s and warm_s else None,
        "cold_epochs_to_target": next((r["epoch"] for r in cold if r["val_ndcg@10"] >= target), None),
        "warm_epochs_to_target": next((r["epoch"] for r in warm if r["val_ndcg@10"] >= target), None),
    }


def run_cli(project: Path, *args: str) -> tuple[float, str]:
    """`seqops ARGS --project P` as a user runs it; (seconds, stdout)."""
    from seqops.io import tool_env

    started = time.perf_counter()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "seqops"), *args, "--project", str(project)],
        cwd=project,
        env=tool_env(),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"seqops {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started, done.stdout


def drift_part(n_users: int, max_minutes: float) -> dict:
    """A champion on batch 0, then a drifted batch 1 lands at t0: monitor → retrain → promoted at t2."""
    from seqops.models.release.registry import Registry

    defaults = yaml.safe_load((REPO / "params.yaml").read_text())  # full-size params, not the tests' small ones
    defaults["data"]["synthetic"]["n_users"] = n_users
    defaults["train"]["max_minutes"] = max_minutes
    with tempfile.TemporaryDirectory() as tmp:
        project = make_project(Path(tmp) / "project", defaults)
        first_s, _ = run_cli(project, "retrain", "--batch", "0")
        t0 = time.perf_counter()
        run_cli(project, "generate", "--batch", "1", "--drift", "0.5")
        monitor_s, monitor_out = run_cli(project, "monitor", "--no-trigger")
        retrain_s, _ = run_cli(project, "retrain", "--no-land")
        t2 = time.perf_counter() - t0
        registry = Registry.of_project(Paths(project))
        last = registry.versions()[-1]
        counts = json.loads(Paths(project).ingest_metrics.read_text())
        return {
            "events": counts.get("kept"),
            "users": n_users,
            "train_max_minutes": max_minutes,
            "first_retrain_s": round(first_s, 1),
            "monitor_s": round(monitor_s, 1),
            "monitor_saw_drift": "'status': 'drift'" in monitor_out,
            "retrain_s": round(retrain_s, 1),
            "t2_s": round(t2, 1),
            "verdict": last["decision"]["verdict"],
            "promoted": registry.champion() == last["version"],
            "epochs": len(last.get("history", [])),
            "stopped_by": "time budget"
            if last.get("history") and sum(r["seconds"] for r in last["history"]) >= 60 * max_minutes
            else "early stopping / epochs",
        }


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    keys = list(dict.fromkeys(k for row in rows for k in row))
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(str(row.get(k, "")) for k in keys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20000, help="entities to materialize")
    parser.add_argument("--pushes", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--drift-users", type=int, default=21000, help="users of the drift part (~48 events each)")
    parser.add_argument(
        "--drift-max-minutes", type=float, default=6.0, help="train.max_minutes of the drift part's retrains"
    )
    parser.add_argument("--parts", nargs="+", default=["store", "warm", "drift"], choices=["store", "warm", "drift"])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "loop.json")
    args = parser.parse_args()
    torch.set_num_threads(2)

    out = json.loads(args.out.read_text()) if args.out.exists() else {}
    parts = {  # part -> (JSON key, run, table title)
        "store": (
            "stores",
            lambda: store_part(args.users, args.pushes),
            "feature store: materialization and push → online freshness",
        ),
        "warm": (
            "warm_start",
            lambda: warm_part(args.epochs),
            "warm vs cold start (time to 95% of cold's best validation NDCG@10)",
        ),
        "drift": (
            "drift_to_promote",
            lambda: drift_part(args.drift_users, args.drift_max_minutes),
            "drift lands at t0 → monitor → retrain → promoted at t2",
        ),
    }
    for part in args.parts:  # in the order given; the JSON is rewritten after each part
        key, run, title = parts[part]
        out[key] = run()
        print_table(title, out[key] if isinstance(out[key], list) else [out[key]])
        out["load"] = open("/proc/loadavg").read().split()[:3]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
