"""`seqops materialize` (the Prefect flow) SIGKILLed at each step of an incremental run: training
can still read the view (no view left unusable), every online row is a user's old row or new one,
and running the same command again writes the rest by itself — online reads return the new rows,
and a further run has nothing left to write."""

from __future__ import annotations

import pandas as pd
import pytest

from seqops.config import Paths
from seqops.features import store
from tests.conftest import run_killed_at, seqops_command
from tests.features.conftest import DAY0, build_features, events_at
from tests.flows.conftest import run_seqops

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

USERS = list(range(1, 7))
BEFORE = [(u, 10 * u + k, f"{u}h{k}min") for u in USERS for k in range(3)]
AFTER = BEFORE + [(u, 90 + u, f"{20 + u}h") for u in USERS[1:]]  # five users come back with one event each
TRAINING = pd.DataFrame({"user_id": USERS, "event_timestamp": DAY0 + pd.Timedelta("2d")})
STEPS = [
    "materialize-between-batches",  # the first batch of the new rows written
    "materialize-online-written",  # every new row written, the Feast registry not updated
    "materialize-registry-updated",  # the registry updated, the incremental state not
    "before-rename",  # the incremental state written, not yet renamed into place
]


def last_items(paths: Paths) -> dict[int, list[int]]:
    rows = store.online_features(store.open_store(paths), USERS)
    return {user: list(row["last_items"]) for user, row in zip(USERS, rows)}


def latest_items(paths: Paths) -> dict[int, list[int]]:
    """Each user's newest feature row in the offline table: what online reads must return."""
    table = pd.read_parquet(paths.user_features).sort_values(["user_id", "event_timestamp"], kind="stable")
    latest = table.groupby("user_id").tail(1)
    return {int(u): list(items) for u, items in zip(latest["user_id"], latest["last_items"])}


@pytest.mark.parametrize("step", STEPS)
def test_a_materialize_killed_at_any_step_recovers_by_running_again(feature_paths, step):
    paths = feature_paths
    yaml_path = paths.feature_repo / "feature_store.yaml"  # two rows per online write: several batches
    yaml_path.write_text(yaml_path.read_text().replace("online_write_batch_size: 10000", "online_write_batch_size: 2"))
    build_features(paths, events_at(BEFORE))
    store.materialize(paths)
    old = last_items(paths)
    build_features(paths, events_at(AFTER))
    new = latest_items(paths)
    assert sum(old[u] != new[u] for u in USERS) == 5

    run_killed_at(step, seqops_command(paths.project, "materialize"), paths.project)

    training = store.historical_features(paths, TRAINING.copy())  # the view still serves training reads
    assert training["last_items"].map(list).tolist() == [new[u] for u in USERS]
    online = last_items(paths)
    assert all(online[u] in (old[u], new[u]) for u in USERS)
    written = sum(online[u] != old[u] for u in USERS)
    assert written == (2 if step == "materialize-between-batches" else 5)

    run_seqops(paths.project, "materialize")  # the same command, without the kill

    assert last_items(paths) == new
    assert store.materialize(paths).users_written == 0  # the state agrees with the online store
    assert not list(store.materialized_state_path(paths, "local").parent.glob(".*.tmp"))
