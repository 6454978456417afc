"""The anomaly detector on a small catalogue: normal users browse popular items inside one category
over a few sessions; click bots, loops and scrapers are flagged with the reason that fits them, the
detector is the same for the same champion and seed (it is refitted, never pickled), and the
threshold flags about `contamination` of the training users."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from seqops.config import AnomalyParams, ModelParams
from seqops.models.anomaly import AnomalyModel, UserWindow, windows_from_reference
from seqops.models.nets.baselines import PopularityModel
from seqops.models.nets.sasrec import SASRecModel
from seqops.models.training.artifact import Artifact, save_artifact

N_ITEMS, N_CATEGORIES, MAX_LEN, N_USERS = 200, 10, 30, 400


def normal_user(rng: np.random.Generator) -> UserWindow:
    """Popular-ish items of one or two categories, a handful of events per session."""
    n = int(rng.integers(8, MAX_LEN + 1))
    home = rng.integers(0, N_CATEGORIES, 2)
    cats = rng.choice(home, n, p=[0.8, 0.2])
    offsets = np.minimum(rng.geometric(0.15, n) - 1, N_ITEMS // N_CATEGORIES - 1)
    items = 1 + cats + N_CATEGORIES * offsets  # item i is in category (i - 1) % N_CATEGORIES
    sessions = max(1, n // int(rng.integers(3, 8)))
    return UserWindow(items.astype(np.int64), n, sessions, float(rng.uniform(30, 600)))


def reference_of(windows: list[UserWindow]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": np.arange(1, len(windows) + 1),
            "n_events": [w.n_events for w in windows],
            "n_sessions": [w.n_sessions for w in windows],
            "log_gap_s": [np.log1p(w.secs_since_prev) for w in windows],
            "share_cart": 0.0,
            "share_purchase": 0.0,
            "last_items": [w.items.tolist() for w in windows],
        }
    )


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Artifact:
    """A tiny SASRec artifact whose reference holds N_USERS normal users."""
    folder = tmp_path_factory.mktemp("anomaly")
    rng = np.random.default_rng(0)
    users = [normal_user(rng) for _ in range(N_USERS)]
    items = pd.DataFrame(
        {
            "raw_id": [f"i{i}" for i in range(1, N_ITEMS + 1)],
            "item_id": np.arange(1, N_ITEMS + 1),
            "category": [f"c{(i - 1) % N_CATEGORIES}" for i in range(1, N_ITEMS + 1)],
        }
    )
    items.to_parquet(folder / "items.parquet", index=False)
    counts = np.bincount(np.concatenate([w.items for w in users]), minlength=N_ITEMS + 1)
    torch.manual_seed(0)
    model = SASRecModel.from_params(N_ITEMS, MAX_LEN, ModelParams(hidden_size=16, num_layers=1, num_heads=2))
    save_artifact(
        folder / "model",
        model,
        PopularityModel.from_counts(counts),
        {"kind": "sasrec"},
        folder / "items.parquet",
        reference_of(users),
    )
    return Artifact.load(folder / "model")


@pytest.fixture(scope="module")
def detector(artifact) -> AnomalyModel:
    return AnomalyModel.for_artifact(artifact, AnomalyParams(window=10, n_estimators=100))


def bot(rng) -> UserWindow:
    return UserWindow(rng.integers(1, N_ITEMS + 1, MAX_LEN), 200, 1, 1.0)


def loop(rng) -> UserWindow:
    cycle = rng.integers(1, N_ITEMS + 1, 3)
    return UserWindow(np.tile(cycle, MAX_LEN // 3), 30, 3, 60.0)


def scraper(rng) -> UserWindow:
    start = int(rng.integers(1, N_ITEMS - MAX_LEN))
    return UserWindow(np.arange(start, start + MAX_LEN), 30, 3, 60.0)


@pytest.mark.parametrize("make, reason", [(bot, "log_gap_s"), (loop, "cycle_share"), (scraper, "id_step_share")])
def test_injected_anomalies_are_flagged_with_their_reason(detector, make, reason):
    rng = np.random.default_rng(1)
    answers = detector.score([make(rng) for _ in range(20)])
    assert np.mean([a["flagged"] for a in answers]) >= 0.9
    assert all(reason in [r["feature"] for r in a["reasons"]] for a in answers if a["flagged"])


def test_threshold_flags_about_the_contamination_share_of_normal_users(detector):
    rng = np.random.default_rng(2)  # fresh normal users, not the fitted ones
    answers = detector.score([normal_user(rng) for _ in range(300)])
    assert np.mean([a["flagged"] for a in answers]) <= 0.05
    assert answers[0]["threshold"] == pytest.approx(detector.detector.threshold, abs=1e-5)


def test_refit_is_deterministic_and_uses_the_artifacts_training_users(artifact, detector):
    again = AnomalyModel.for_artifact(artifact, AnomalyParams(window=10, n_estimators=100))
    probe = [bot(np.random.default_rng(3)), normal_user(np.random.default_rng(4))]
    assert [a["score"] for a in again.score(probe)] == [a["score"] for a in detector.score(probe)]
    assert len(windows_from_reference(artifact.reference())) == N_USERS


def test_short_history_and_unknown_items_still_get_a_score(detector):
    short = UserWindow(np.array([5], dtype=np.int64), 1, 1, 0.0)
    unknown = UserWindow(np.array([3, N_ITEMS + 50, 7], dtype=np.int64), 3, 1, 10.0)
    answers = detector.score([short, unknown])
    assert all(np.isfinite(a["score"]) for a in answers)


def test_a_feature_constant_in_training_still_flags_a_departure_from_it():
    """Beauty's training users never loop (cycle_share is 0 for all of them): a loop must stand out,
    not be read as 'this feature says nothing'."""
    from seqops.models.anomaly import AnomalyDetector

    rng = np.random.default_rng(0)
    train = pd.DataFrame({"surprise_nll": rng.normal(6, 1, 500), "cycle_share": 0.0})
    detector = AnomalyDetector.fit(train, AnomalyParams(n_estimators=50))
    looped = pd.DataFrame({"surprise_nll": [6.0], "cycle_share": [1.0]})
    assert detector.scores(looped)[0] > detector.threshold
    assert detector.reasons(looped, 3)[0][0]["feature"] == "cycle_share"


def test_a_change_of_person_raises_the_change_signals_and_the_score(detector):
    """A user's latest five events replaced by someone else's, in categories the user never visits."""
    rng = np.random.default_rng(5)
    users = [normal_user(rng) for _ in range(40)]
    foreign = [
        1 + (int(u.items[0] - 1) % N_CATEGORIES + 5) % N_CATEGORIES + N_CATEGORIES * rng.integers(0, 5, 5)
        for u in users
    ]
    taken = [
        UserWindow(np.r_[u.items[:-5], f].astype(np.int64), u.n_events, u.n_sessions, u.secs_since_prev)
        for u, f in zip(users, foreign)
    ]
    before, after = detector.features(users), detector.features(taken)
    for signal in ("category_novelty", "category_shift", "switch_llr"):
        assert after[signal].mean() > before[signal].mean(), signal
    assert np.mean(detector.detector.scores(after)) > np.mean(detector.detector.scores(before))


def test_only_the_suspicious_side_counts(detector):
    """Items more popular than anyone's are not a reason (bots pick rare ones)."""
    popular = UserWindow(np.array([1, 11, 21, 1, 11, 21, 1, 11, 31, 41], dtype=np.int64), 10, 2, 60.0)
    z = detector.detector.z(detector.features([popular]))[0]
    assert z[detector.names.index("log_popularity")] == 0.0


def test_training_users_popularity_leaves_their_own_events_out():
    """A training user's items are counted in the training counts: read as a new user would see them."""
    from seqops.models.anomaly import behaviour

    counts = np.zeros(N_ITEMS + 1)
    counts[[3, 4]] = [1.0, 5.0]  # item 3: only this user; item 4: this user and four more
    window = UserWindow(np.array([3, 4], dtype=np.int64), 2, 1, 10.0)
    assert behaviour(window, 10, None, counts, counted=True)["log_popularity"] == pytest.approx(np.log1p(4) / 2)
    assert behaviour(window, 10, None, counts)["log_popularity"] == pytest.approx((np.log1p(1) + np.log1p(5)) / 2)
