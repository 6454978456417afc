import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seqops.config import GateParams, IngestParams, Paths, SyntheticParams
from seqops.features.ingest import ingest
from seqops.features.synthetic import write_batch
from seqops.models.release.drift import (
    DRIFT_COLUMNS,
    behaviour_drift,
    drift_columns,
    evidently_reports,
    prediction_drift,
    split_at,
    time_windows,
    window_behaviour,
)
from seqops.models.release.policy import Check, bootstrap_means, compare, decide, performance_check
from seqops.models.training.evaluate import metrics_from_ranks, per_user
from seqops.models.training.evaluate import top_items as top_k

GP = GateParams(min_uplift_vs_baseline=0.05, max_regression=0.01, bootstrap_samples=500)


def ranks_with_hits(rng, n, hit_rate):
    """Ranks where about `hit_rate` of users have their target in the top 10."""
    return np.where(rng.random(n) < hit_rate, rng.integers(1, 11, n), rng.integers(11, 500, n))


def test_per_user_values_average_to_the_reported_metrics():
    ranks = np.array([1, 3, 10, 11, 200])
    reported = metrics_from_ranks(ranks, ks=[10])
    for metric in ("ndcg@10", "hr@10", "mrr"):
        assert per_user(ranks, metric).mean() == pytest.approx(reported[metric])
    with pytest.raises(ValueError, match="unknown metric"):
        per_user(ranks, "auc")


def test_the_bootstrap_is_paired_and_reproducible():
    rng = np.random.default_rng(0)
    champion = ranks_with_hits(rng, 400, 0.3)
    same = compare(champion, champion, ["ndcg@10"], GP)["ndcg@10"]
    assert same["delta"] == same["low"] == same["high"] == 0.0  # paired: identical models have no spread
    better = np.where(rng.random(400) < 0.3, 1, champion)  # 30% of users moved to rank 1
    gain = compare(better, champion, ["ndcg@10", "hr@10"], GP)
    assert 0 < gain["ndcg@10"]["low"] < gain["ndcg@10"]["delta"] < gain["ndcg@10"]["high"]
    assert compare(better, champion, ["ndcg@10", "hr@10"], GP) == gain  # fixed seed: the same decision twice
    assert bootstrap_means(np.ones((2, 7)), 250).shape == (250, 2)


def test_non_inferior_rejects_only_a_significant_regression_and_superior_needs_a_real_gain():
    rng = np.random.default_rng(1)
    champion = ranks_with_hits(rng, 600, 0.3)
    noisy_equal = np.where(rng.random(600) < 0.1, ranks_with_hits(rng, 600, 0.3), champion)
    worse = np.where(rng.random(600) < 0.5, 400, champion)
    better = np.where(rng.random(600) < 0.3, 1, champion)
    checks = {
        name: {
            policy: performance_check(
                compare(cand, champion, ["ndcg@10"], GP), GP.model_copy(update={"policy": policy}), "champion", 600
            )
            for policy in ("non_inferior", "superior")
        }
        for name, cand in (("equal", noisy_equal), ("worse", worse), ("better", better))
    }
    assert checks["equal"]["non_inferior"].passed and not checks["equal"]["superior"].passed
    assert (
        not checks["worse"]["non_inferior"].passed
        and "a significant regression" in checks["worse"]["non_inferior"].sentence
    )
    assert checks["better"]["superior"].passed and "real improvement" in checks["better"]["superior"].sentence
    assert (
        "95% CI" in checks["equal"]["non_inferior"].sentence and "600 users" in checks["equal"]["non_inferior"].sentence
    )


def test_a_first_model_must_beat_popularity_by_the_uplift_at_the_lower_bound():
    rng = np.random.default_rng(2)
    popularity = ranks_with_hits(rng, 500, 0.2)
    good = np.where(rng.random(500) < 0.4, 1, popularity)
    barely = np.where(rng.random(500) < 0.02, popularity + 1, popularity)  # no better than popularity
    assert performance_check(compare(good, popularity, ["ndcg@10"], GP), GP, "popularity", 500).passed
    weak = performance_check(compare(barely, popularity, ["ndcg@10"], GP), GP, "popularity", 500)
    assert not weak.passed and "popularity" in weak.sentence and "not met" in weak.sentence


def test_drift_alone_never_rejects():
    checks = [Check("perf", 1, 0, True, True, "better"), Check("drift_share", 0.9, 0.5, False, False, "drifted")]
    verdict, reasons = decide(checks)
    assert verdict == "promote" and "drifted" in reasons


def test_a_failed_blocking_check_rejects_with_its_sentence():
    checks = [
        Check("perf", 0, 1, False, True, "worse than champion"),
        Check("drift_share", 0, 0.5, True, False, "calm"),
    ]
    assert decide(checks) == ("reject", ["worse than champion"])


def events_frame(rows):
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "ts", "event_type", "session_id"])
    frame["ts"] = pd.to_datetime(frame["ts"], unit="s", utc=True)
    return frame


def test_window_behaviour_summarises_equal_windows_and_leaves_a_users_own_counts_out():
    rows = [(1, i, 100 * i, "cart" if i == 4 else "view", 1 + (i > 3)) for i in range(1, 7)]  # user 1: items 1..6
    rows += [(2, 9, 10, "view", 5), (2, 1, 20, "view", 5)]  # user 2: too few events for a window of 4
    events = events_frame(rows)
    counts = np.array([0, 50, 1, 1, 1, 1, 1, 0, 0])  # item 8 unseen; item 9 past the catalogue
    frame = window_behaviour(events, counts, window=4)
    assert frame["user_id"].tolist() == [1] and list(frame.columns) == ["user_id", *DRIFT_COLUMNS]
    row = frame.iloc[0]
    assert row["share_cart"] == 0.25 and row["events_per_session"] == 2.0 and row["new_item_share"] == 0.0
    assert row["log_gap_s"] == pytest.approx(np.log1p(100))
    own = events.groupby(["user_id", "item_id"]).size().rename("own").reset_index()
    # items 3..6 were seen once, by user 1 only: without her own counts they rank with the unseen items
    assert window_behaviour(events, counts, 4, own)["mean_pop_rank"].iloc[0] > row["mean_pop_rank"]


def test_split_at_gives_the_champion_its_first_events_per_user():
    events = events_frame([(1, 1, 1, "view", 1), (1, 2, 2, "view", 1), (1, 3, 3, "view", 1), (2, 4, 1, "view", 2)])
    old, new = split_at(events, pd.Series({1: 2}))
    assert old["item_id"].tolist() == [1, 2] and new["item_id"].tolist() == [3, 4]  # user 2 is new


def summary(rng, n, shift=0.0, max_item=50):
    return pd.DataFrame(
        {
            "n_events": rng.poisson(20 + 20 * shift, n),
            "n_sessions": rng.poisson(3, n) + 1,
            "log_gap_s": rng.normal(5 + shift, 1, n),
            "share_cart": rng.uniform(0, 0.2 + shift, n),
            "share_purchase": rng.uniform(0, 0.1, n),
            "last_items": [list(rng.integers(1, max_item + 1, 10)) for _ in range(n)],
        }
    )


def test_drift_columns_mark_items_the_catalogue_does_not_know():
    counts = np.array([0, 10, 5, 1])
    frame = drift_columns(
        pd.DataFrame(
            {
                "n_events": [6],
                "n_sessions": [2],
                "log_gap_s": [0.0],
                "share_cart": [0.0],
                "share_purchase": [0.0],
                "last_items": [[1, 2, 9]],
            }
        ),
        counts,
    )
    assert list(frame.columns) == DRIFT_COLUMNS
    assert frame["new_item_share"].iloc[0] == 1 / 3 and frame["events_per_session"].iloc[0] == 3


def test_evidently_reports_detect_a_shift_and_keep_html_and_json(tmp_path):
    rng = np.random.default_rng(0)
    counts = np.r_[0, rng.integers(1, 100, 60)]
    reference = drift_columns(summary(rng, 400), counts)
    same = evidently_reports(reference, drift_columns(summary(rng, 400), counts), tmp_path / "same")
    shifted = evidently_reports(
        reference, drift_columns(summary(rng, 400, shift=1.0, max_item=60), counts), tmp_path / "shift"
    )
    assert shifted["drift_share"] > same["drift_share"] and shifted["dataset_drift"] and not same["dataset_drift"]
    assert shifted["drifted_columns"] >= 3 and shifted["columns"]["share_cart"]["drifted"]
    assert shifted["columns"]["log_gap_s"]["method"] == "ks" and shifted["columns"]["log_gap_s"]["threshold"] == 0.05
    assert (tmp_path / "shift" / "drift_report.html").stat().st_size > 10_000
    assert "metrics" in json.loads((tmp_path / "shift" / "drift_report.json").read_text())
    fast = evidently_reports(reference, drift_columns(summary(rng, 400, shift=1.0, max_item=60), counts), None)
    assert fast["dataset_drift"] and fast["html"] is None  # the decision without a report to keep


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    """Real events of a champion batch and a next one without and with drift (300 users)."""
    out = {}
    for drift in (0.0, 0.5):
        root = tmp_path_factory.mktemp(f"drift{drift}")
        p = SyntheticParams(n_users=300, n_items=150, n_categories=8, seed=11)
        write_batch(p, root / "raw", 0)
        write_batch(p.model_copy(update={"drift": drift}), root / "raw", 1)
        events = ingest(root / "raw", IngestParams(), Paths(root)).events
        old = events[events["ts"] < pd.Timestamp(p.start, tz="UTC") + pd.Timedelta(days=p.days_per_batch)]
        out[drift] = (events, old.groupby("user_id").size(), np.bincount(old["item_id"]))
    return out


def test_the_drift_decision_stays_calm_without_drift_and_fires_with_it(batches):
    calm = behaviour_drift(*batches[0.0], GateParams())
    drifted = behaviour_drift(*batches[0.5], GateParams())
    assert not calm["dataset_drift"] and drifted["dataset_drift"]
    assert calm["new_user_share"] == 0.0 and calm["n_reference"] > 200 and calm["n_current"] > 200


def test_top_k_skips_padding_and_excluded_items_and_identical_lists_do_not_drift(tmp_path):
    scores = np.array([[9.0, 1, 5, 3, 4], [9.0, 4, 3, 2, 1]])
    assert top_k(scores, 2).tolist() == [[2, 4], [1, 2]]
    assert top_k(scores, 2, [np.array([2]), np.array([])]).tolist() == [[4, 3], [1, 2]]
    rng = np.random.default_rng(0)
    top = top_k(rng.normal(size=(200, 41)), 10)
    result = prediction_drift(
        top, top.copy(), np.r_[0, np.arange(40, 0, -1)], np.array(["c0", *["c1", "c2"] * 20]), tmp_path
    )
    assert result["overlap_at_k"] == 1.0 and not result["dataset_drift"] and Path(result["html"]).exists()


@pytest.fixture(scope="module")
def day_batches(tmp_path_factory):
    """What the monitor compares: a champion's 14-day batch, and one day of the next batch (without
    and with drift) as fresh events — arguments of `behaviour_drift`."""
    out = {}
    for drift in (0.0, 0.3):
        root = tmp_path_factory.mktemp(f"day{drift}")
        p = SyntheticParams(n_users=2000, n_items=300, n_categories=8, seed=2)
        write_batch(p, root / "raw", 0)
        write_batch(p.model_copy(update={"drift": drift}), root / "raw", 1)
        events = ingest(root / "raw", IngestParams(), Paths(root)).events
        end = pd.Timestamp(p.start, tz="UTC") + pd.Timedelta(days=p.days_per_batch)
        old = events[events["ts"] < end]
        day = events[(events["ts"] >= end + pd.Timedelta(days=3)) & (events["ts"] < end + pd.Timedelta(days=4))]
        out[drift] = (pd.concat([old, day]), old.groupby("user_id").size(), np.bincount(old["item_id"]))
    return out


def test_a_day_of_fresh_events_without_drift_does_not_alarm_and_one_with_drift_does(day_batches, tmp_path):
    whole = behaviour_drift(*day_batches[0.0], GateParams(), tmp_path / "whole")
    # the cause: a day truncates sessions and gaps, so against whole histories they drift by construction
    assert whole["columns"]["events_per_session"]["drifted"] and whole["columns"]["log_gap_s"]["drifted"]
    calm = behaviour_drift(*day_batches[0.0], GateParams(), tmp_path / "calm", same_span=True)
    assert not calm["dataset_drift"] and not any(c["drifted"] for c in calm["columns"].values()), calm["column_scores"]
    assert calm["n_current"] > 100 and calm["n_reference"] > calm["n_current"]
    assert behaviour_drift(*day_batches[0.3], GateParams(), same_span=True)["dataset_drift"]


def test_time_windows_cut_each_users_history_into_stretches_aligned_with_the_batch():
    events = events_frame([(1, 1, 0, "view", 1), (1, 2, 50, "view", 1), (1, 3, 150, "view", 1), (2, 4, 60, "view", 2)])
    windows = time_windows(events, pd.Timestamp(100, unit="s", tz="UTC"), pd.Timedelta(seconds=100))
    # stretches [0, 100) and [100, 200) per user: user 1's first two events share one, user 2 has its own
    assert windows["window"].nunique() == 3 and windows["window"].iloc[0] == windows["window"].iloc[1]
