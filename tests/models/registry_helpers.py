"""Shared by the registry tests: registries on both backends, fake and real artifacts, child processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from seqops.config import ModelParams, Paths, RegistryParams
from seqops.io import CRASH_ENV
from seqops.models.nets.baselines import PopularityModel
from seqops.models.nets.sasrec import SASRecModel
from seqops.models.release.registry import Registry
from seqops.models.training.artifact import save_artifact

DSN = os.environ.get("SEQOPS_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def postgres_unreachable() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None when they can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    try:
        psycopg.connect(DSN, connect_timeout=2).close()
    except psycopg.OperationalError as exc:
        return f"PostgreSQL not reachable at {DSN}: {str(exc).strip().splitlines()[0]}"
    return None


def settings_for(backend: str) -> RegistryParams:
    if backend == "postgres":
        reason = postgres_unreachable()
        if reason:
            pytest.skip(reason)
        return RegistryParams(backend="postgres", postgres_dsn=DSN, namespace=f"test-{uuid.uuid4().hex[:12]}")
    return RegistryParams()


def open_registry(root: Path, settings: RegistryParams) -> Registry:
    return Registry(Paths(root), settings)


def drop(registry: Registry) -> None:
    if registry.settings.backend == "postgres":
        registry.store.drop_namespace()


def fake_artifact(tmp_path: Path, content: str) -> Path:
    path = tmp_path / f"artifact-{content}"
    path.mkdir()
    (path / "model.safetensors").write_text(content)
    return path


def approve(registry: Registry, version: str, verdict: str = "promote") -> None:
    registry.record_decision(version, {"verdict": verdict, "reasons": [f"test: {verdict}"]})


CHILD = """
import json, os, sys, time
from pathlib import Path
from seqops.config import Paths, RegistryParams
from seqops.models.release.registry import Registry
root, settings, calls = Path(sys.argv[1]), RegistryParams(**json.loads(sys.argv[2])), json.loads(sys.argv[3])
registry = Registry(Paths(root), settings)
go = os.environ.get("SEQOPS_TEST_GO")  # start line: every child has imported and opened the registry
if go:
    Path(f"{go}.ready.{os.getpid()}").touch()
while go and not Path(go).exists():
    time.sleep(0.005)
for call in calls:
    getattr(registry, call["op"])(*call.get("args", []), **call.get("kwargs", {}))
"""


def child(
    root: Path, settings: RegistryParams, calls: list[dict], crash_at: str | None = None, go: Path | None = None
) -> subprocess.Popen:
    """A separate Python process running registry calls (optionally SIGKILLed at a crash point,
    optionally waiting for the file `go` before it starts)."""
    env = {**os.environ, "BENTOML_HOME": str(Paths(root).bentoml_home)}
    env.pop(CRASH_ENV, None)
    if crash_at:
        env[CRASH_ENV] = crash_at
    if go:
        env["SEQOPS_TEST_GO"] = str(go)
    args = [sys.executable, "-c", CHILD, str(root), settings.model_dump_json(), json.dumps(calls)]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def tiny_artifact(
    out: Path,
    seed: int,
    n_items: int,
    *,
    max_len: int = 8,
    counts: np.ndarray | None = None,
    items: pd.DataFrame | None = None,
    reference: pd.DataFrame | None = None,
) -> Path:
    """A real artifact directory: an untrained (seeded) tiny SASRec, popularity counts, the item
    vocabulary and a reference summary (small defaults for what the caller does not care about)."""
    torch.manual_seed(seed)
    model = SASRecModel.from_params(
        n_items, max_len, ModelParams(hidden_size=16, num_layers=1, num_heads=2, dropout=0.0)
    )
    ids = np.arange(1, n_items + 1)
    if items is None:
        items = pd.DataFrame(
            {"raw_id": [f"i{i:04d}" for i in ids], "item_id": ids, "category": [f"c{i % 3}" for i in ids]}
        )
    if reference is None:
        reference = pd.DataFrame(
            {
                "user_id": [1, 2],
                "n_events": [5, 6],
                "n_sessions": [1, 2],
                "log_gap_s": [3.0, 4.0],
                "share_cart": [0.2, 0.0],
                "share_purchase": [0.0, 0.1],
                "last_items": [[1, 2, 3], [4, 5]],
            }
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    items_path = out.parent / f"{out.name}-items.parquet"
    items.to_parquet(items_path)
    popularity = PopularityModel.from_counts(np.r_[0, ids[::-1]] if counts is None else counts)
    save_artifact(out, model, popularity, {"seed": seed}, items_path, reference)
    return out


def check_consistent(registry, champion: str) -> None:
    """Pointer readable, audit seqs 1..n, and the log's last champion move is the pointer's."""
    history = registry.history()
    assert [e["seq"] for e in history] == list(range(1, len(history) + 1))
    moves = [e for e in history if e["action"] != "register"]
    assert moves[-1]["version"] == champion == registry.champion()
    for before, after in zip(moves, moves[1:]):
        assert after["previous"] == before["version"], "a champion move lost the one before it"
