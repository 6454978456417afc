"""The refit after the gate: its training rows hold each user's held-out events (what the candidate
never saw), and the registry keeps the gate's decision on the evaluated candidate."""

from __future__ import annotations

import numpy as np
import pytest

from seqops.config import Params, Paths
from seqops.features import store
from seqops.models.release.gate import compared_version
from seqops.models.release.registry_schema import RegistryError
from seqops.models.training.refit import refit_entities, refit_rows
from seqops.models.training.splits import build_splits
from tests.features.conftest import build_features, events_at
from tests.models.registry_helpers import approve, fake_artifact

# user 1: 5 events, user 2: 4 events, user 3: 3 events (items unique per user, so targets are traceable)
EVENTS = [
    (1, 11, "0h"),
    (1, 12, "1h"),
    (1, 13, "2h"),
    (1, 14, "3h"),
    (1, 15, "4h"),
    (2, 21, "0h30min"),
    (2, 22, "1h30min"),
    (2, 23, "2h30min"),
    (2, 24, "3h30min"),
    (3, 31, "0h"),
    (3, 32, "5h"),
    (3, 33, "6h"),
]


@pytest.fixture
def featured(project) -> Paths:
    paths = Paths(project)
    events = events_at(EVENTS)
    build_features(paths, events, max_len=20)
    paths.vocab.mkdir(parents=True, exist_ok=True)
    events[["item_id"]].drop_duplicates().to_parquet(paths.vocab / "items.parquet")
    store.apply(paths)
    return paths


def test_refit_rows_hold_the_held_out_events_of_every_user(featured):
    params = Params()
    splits = build_splits(featured, params.features.store_profile, params.evaluate)
    held_out = {
        int(u): {int(v), int(t)} for u, v, t in zip(splits.test.users, splits.valid.targets, splits.test.targets)
    }
    trained = {int(seq[0]) // 10: set(seq.tolist()) for seq in splits.train_seqs}
    assert all(not held_out[u] & trained.get(u, set()) for u in held_out)  # the candidate never saw them

    rows = refit_rows(params, featured)
    refit = {int(u): seq.tolist() for u, seq in zip(rows.users, rows.seqs)}
    assert set(refit) == {1, 2, 3}
    for user, targets in held_out.items():
        assert targets <= set(refit[user]), f"user {user}: held-out {targets} missing from {refit[user]}"
    assert refit[1] == [11, 12, 13, 14, 15]  # the whole history, in order, up to the cut
    assert [len(t) for t in rows.types] == [len(s) for s in rows.seqs] == [len(c) for c in rows.churn]


def test_refit_rows_can_leave_out_the_last_event_or_stop_at_a_cut(featured):
    params = Params()
    without_last = refit_rows(params, featured, drop_last=1)
    assert {int(u): s[-1] for u, s in zip(without_last.users, without_last.seqs)} == {1: 14, 2: 23, 3: 32}
    events = events_at(EVENTS)
    cut = events["ts"].min() + np.timedelta64(2, "h")
    assert refit_entities(events, through=cut)["user_id"].tolist() == [1, 2, 3]
    up_to_cut = refit_rows(params, featured, through=cut)
    assert {int(u): s.tolist() for u, s in zip(up_to_cut.users, up_to_cut.seqs)} == {
        1: [11, 12, 13],
        2: [21, 22],
    }  # user 3: one event, no row


def test_the_refit_adopts_the_candidates_decision_and_the_candidate_keeps_it(local, tmp_path):
    candidate = local.register(fake_artifact(tmp_path, "candidate"), {"actor": "test"})
    approve(local, candidate)
    refit = local.register(fake_artifact(tmp_path, "refit"), {"actor": "test", "refit_of": candidate})

    adopted = local.adopt_decision(refit, candidate)
    assert adopted["verdict"] == "promote" and adopted["adopted_from"] == candidate and adopted["served_as"] == refit
    assert local.get(candidate)["served_as"] == refit
    assert local.get(candidate)["decision"] == {"verdict": "promote", "reasons": ["test: promote"]}  # untouched
    assert local.promote(refit, actor="test") == refit and local.champion() == refit

    other = local.register(fake_artifact(tmp_path, "other"), {"actor": "test"})
    with pytest.raises(RegistryError, match="not a refit"):
        local.adopt_decision(other, candidate)
    # the next gate compares a new candidate with the refit's candidate, trained as it is (without held-out events)
    assert compared_version(local, refit) == candidate and compared_version(local, other) == other


def test_a_version_that_is_not_a_version_name_is_refused_as_refit_of(local, tmp_path):
    with pytest.raises(RegistryError, match="refit_of"):
        local.register(fake_artifact(tmp_path, "bad"), {"actor": "test", "refit_of": "latest"})
