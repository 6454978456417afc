"""A small servable project without the training loop: vocabularies and per-user feature rows
written the way ingest/features write them, `feast apply` + materialize (real Feast, SQLite), and
a tiny SASRec (random weights) registered, gated and promoted through the real Registry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from seqops.config import IngestParams, ModelParams, Paths, load_params
from seqops.features import store as feature_store
from seqops.features.ingest import ingest
from seqops.features.sequences import user_feature_table
from seqops.models.nets.baselines import PopularityModel
from seqops.models.nets.sasrec import SASRecModel
from seqops.models.release.registry import Registry
from seqops.models.training.artifact import save_artifact
from tests.conftest import make_project

N_USERS, N_ITEMS, N_CATEGORIES, MAX_LEN = 40, 30, 3, 10


def raw_user(i: int) -> str:
    return f"u{i:05d}"


def raw_item(i: int) -> str:
    return f"i{i:05d}"


def write_state(paths: Paths, seed: int = 0) -> pd.DataFrame:
    """Vocabularies, events and the feature table; returns the events."""
    rng = np.random.default_rng(seed)
    paths.vocab.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {"raw_id": [raw_user(i) for i in range(1, N_USERS + 1)], "user_id": np.arange(1, N_USERS + 1)}
    ).to_parquet(paths.vocab / "users.parquet", index=False)
    pd.DataFrame(
        {
            "raw_id": [raw_item(i) for i in range(1, N_ITEMS + 1)],
            "item_id": np.arange(1, N_ITEMS + 1),
            "category": [f"c{i % N_CATEGORIES}" for i in range(1, N_ITEMS + 1)],
        }
    ).to_parquet(paths.vocab / "items.parquet", index=False)
    rows = []
    start = pd.Timestamp("2026-01-01", tz="UTC")
    for user in range(1, N_USERS + 1):
        n = int(rng.integers(3, 12))
        times = start + pd.to_timedelta(np.sort(rng.integers(0, 5 * 86400, n)), unit="s")
        for t, item in zip(times, rng.integers(1, N_ITEMS + 1, n)):
            rows.append({"user_id": user, "item_id": int(item), "ts": t, "event_type": "view", "session_id": user})
    events = pd.DataFrame(rows)
    events["ts"] = events["ts"].astype("datetime64[us, UTC]")
    table = user_feature_table(events, MAX_LEN)
    paths.user_features.parent.mkdir(parents=True, exist_ok=True)
    import pyarrow.parquet as pq

    pq.write_table(table, paths.user_features)
    return events


def register_model(
    paths: Paths, seed: int, events: pd.DataFrame, *, promote: bool = True, model: SASRecModel | None = None
) -> str:
    """Save a tiny SASRec as an artifact, register it, record an approving decision, promote it."""
    torch.manual_seed(seed)
    model = model or SASRecModel.from_params(N_ITEMS, MAX_LEN, ModelParams(hidden_size=16, num_layers=1, num_heads=2))
    counts = np.bincount(events["item_id"], minlength=N_ITEMS + 1)
    out = paths.home / "models" / f"candidate-{seed}"
    reference = pd.DataFrame(
        {
            "user_id": [1],
            "n_events": [3],
            "n_sessions": [1],
            "log_gap_s": [0.0],
            "share_cart": [0.0],
            "share_purchase": [0.0],
            "last_items": [[1, 2, 3]],
        }
    )
    meta = {"kind": "sasrec", "data_version": f"data-{seed}", "params_hash": f"params-{seed}", "seed": seed}
    save_artifact(out, model, PopularityModel.from_counts(counts), meta, paths.vocab / "items.parquet", reference)
    registry = Registry.of_project(paths)
    version = registry.register(out, {**meta, "eval_metrics": {"sasrec": {"ndcg@10": 0.1}}})
    registry.record_decision(
        version,
        {"verdict": "promote", "reasons": ["test"], "candidate": version, "metrics": {"candidate": {"ndcg@10": 0.1}}},
    )
    if promote:
        registry.promote(version, actor="tests", reason="test")
    return version


def mini_project(root: Path) -> Path:
    project = make_project(root)
    paths = Paths(project)
    events = write_state(paths)
    feature_store.apply(paths)
    feature_store.materialize(paths)
    register_model(paths, 0, events)
    (paths.home / "models").mkdir(parents=True, exist_ok=True)
    (paths.home / "mini.json").write_text(json.dumps({"users": N_USERS, "items": N_ITEMS}))
    return project


@pytest.fixture(scope="module")
def served_project(tmp_path_factory) -> Path:
    return mini_project(tmp_path_factory.mktemp("serving") / "project")


@pytest.fixture(scope="module")
def params(served_project):
    return load_params(served_project / "params.yaml")


def ingested_rows(raw: Path, paths: Paths, params: IngestParams | None = None) -> pd.DataFrame:
    """Every row the real ingest reads from `raw` — kept or quarantined — as raw (user_id, item_id)
    text: what the next retrain sees of the landed files."""
    result = ingest(raw, params or IngestParams(), paths)
    users = dict(zip(result.users["user_id"], result.users["raw_id"].astype(str)))
    items = dict(zip(result.items["item_id"], result.items["raw_id"].astype(str)))
    kept = pd.DataFrame(
        {"user_id": result.events["user_id"].map(users), "item_id": result.events["item_id"].map(items)}
    )
    return pd.concat([kept, result.quarantine[["user_id", "item_id"]].astype(str)], ignore_index=True)


SCHEMATHESIS_CONFIG = Path(__file__).with_name("schemathesis.toml")


def schemathesis_all_checks(url: str, report_dir: Path, *, max_time_s: int = 150) -> subprocess.CompletedProcess:
    """schemathesis with every check (`-c all`) against the service's own OpenAPI document, bounded:
    25 examples per operation and phase, at most `max_time_s`. schemathesis.toml says why a 422 is an
    expected answer to schema-valid data."""
    cmd = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(SCHEMATHESIS_CONFIG),
        "run",
        f"{url}/docs.json",
        "--checks",
        "all",
        "--max-examples",
        "25",
        "--max-time",
        str(max_time_s),
        "--seed",
        "7",
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--report-dir",
        str(report_dir),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=max_time_s + 90)
