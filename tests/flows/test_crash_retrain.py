"""The `retrain` flow (`seqops retrain`, real Prefect, DVC, Feast, registry) SIGKILLed between its
steps — landed files collected but not snapshotted, trained but neither pushed nor gated, gated but
not promoted — and then the same command run again: it recovers by itself. The champion never
moves on a killed run and the pointer agrees with the audit log; the workspace matches dvc.lock
and the remote holds every snapshot (the raw one included); each acknowledged landed event is in
the events exactly once; training and online reads serve the new rows."""

from __future__ import annotations

import sys

import pandas as pd
import pytest
from prefect.logging import disable_run_logger

from seqops.config import Paths, SyntheticParams
from seqops.features import store
from seqops.features.synthetic import write_batch
from seqops.flows.retrain import collect_landing
from seqops.models.release.registry import Registry
from tests.conftest import dvc, make_project, run_killed_at, seqops_command
from tests.models.registry_helpers import check_consistent

STEPS = ["retrain-collected", "retrain-before-push", "retrain-before-promote"]
LANDED_USERS, EVENTS_EACH = 4, 5


def land_served_events(paths: Paths, batch: int) -> dict[str, list[str]]:
    """Events the service acknowledged, waiting in the landing folder as its closed files are:
    LANDED_USERS new users with EVENTS_EACH views of known items each; returns user → items."""
    first = pd.read_csv(paths.raw / "batch-000.csv")
    items, t0 = sorted(first["item_id"].unique()), int(first["timestamp"].max())
    rows, landed = [], {}
    for k in range(LANDED_USERS):
        user = f"landed-{batch}-{k}"
        landed[user] = [items[(7 * k + j) % len(items)] for j in range(EVENTS_EACH)]
        rows += [(user, item, "c00", "view", t0 + 60 * j) for j, item in enumerate(landed[user])]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "category", "event_type", "timestamp"])
    paths.landing.mkdir(parents=True, exist_ok=True)
    frame.to_csv(paths.landing / f"serving-2026010{batch}T000000000000-{4000 + batch}.csv", index=False)
    return landed


def check_recovered(paths: Paths, landed: dict[str, list[str]]) -> None:
    registry = Registry.of_project(paths)
    check_consistent(registry, registry.champion())
    served = [v for v in registry.versions() if v.get("decision")][-1]
    raw_version = paths.raw.with_suffix(".dvc").read_text().split("md5: ")[1].split()[0]
    assert served["raw_data_version"] == raw_version
    if served["decision"]["verdict"] == "promote":
        assert registry.champion() == served["version"]

    assert "up to date" in dvc(paths.project, "status")  # the workspace is the snapshot dvc.lock names
    assert "in sync" in dvc(paths.project, "status", "--cloud")  # and the remote has all of it

    users = pd.read_parquet(paths.vocab / "users.parquet")
    ids = dict(zip(users["raw_id"].astype(str), users["user_id"]))
    counts = pd.read_parquet(paths.events, columns=["user_id"])["user_id"].value_counts()
    assert {u: int(counts.get(ids.get(u), 0)) for u in landed} == {u: EVENTS_EACH for u in landed}

    user_ids = [int(ids[u]) for u in landed]
    now = pd.Timestamp.now(tz="UTC")
    training = store.historical_features(paths, pd.DataFrame({"user_id": user_ids, "event_timestamp": now}))
    online = store.online_features(store.open_store(paths), user_ids)
    assert training["n_events"].tolist() == [row["n_events"] for row in online] == [EVENTS_EACH] * len(user_ids)
    assert not [p for p in paths.home.rglob("*.tmp") if "prefect" not in p.parts]


def collect(paths: Paths) -> list[str]:
    with disable_run_logger():
        return collect_landing.fn(paths)


def test_a_batch_landed_again_by_a_rerun_is_collected_once(tmp_path):
    """A run killed after collecting batch 1 is rerun with the same `--batch 1`: the batch lands again."""
    paths = Paths(tmp_path)
    small = SyntheticParams(n_users=30, n_items=20)
    write_batch(small, paths.landing, 1)
    assert collect(paths) == ["batch-001.csv"]
    write_batch(small, paths.landing, 1)  # the same content again
    assert collect(paths) == [] and not list(paths.landing.iterdir())
    (paths.landing / "batch-001.csv").write_text("user_id,item_id,category,event_type,timestamp\n")
    with pytest.raises(FileExistsError, match="other content"):
        collect(paths)


def test_a_batch_killed_while_it_is_written_is_never_collected(tmp_path):
    paths = Paths(tmp_path)
    code = (
        "from seqops.config import SyntheticParams; from seqops.features.synthetic import write_batch; "
        f"write_batch(SyntheticParams(n_users=30, n_items=20), {str(paths.landing)!r}, 1, chunk_users=10)"
    )
    run_killed_at("land-between-chunks", [sys.executable, "-c", code], tmp_path)
    assert [f.name.startswith(".batch-001.csv.") for f in paths.landing.iterdir()] == [True]  # hidden, partial
    assert collect(paths) == []


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_retrain_killed_at_each_step_recovers_by_running_the_same_command(tmp_path, seqops):
    project = make_project(tmp_path / "project", {"model": {"kind": "markov"}})
    paths = Paths(project)
    seqops(project, "retrain", "--batch", "0")

    for batch, step in enumerate(STEPS, start=1):
        landed = land_served_events(paths, batch)
        champion = Registry.of_project(paths).champion()
        command = ["retrain", "--batch", str(batch)]

        run_killed_at(step, seqops_command(project, *command), project)

        registry = Registry.of_project(paths)
        check_consistent(registry, champion)  # a killed run moved no pointer
        seqops(project, *command)  # the same command, without the kill
        check_recovered(paths, landed)
        assert len(list(paths.raw.glob("serving-*.csv"))) == batch  # each landed file collected once
