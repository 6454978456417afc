import math

import numpy as np
import pytest

from seqops.config import EvaluateParams
from seqops.models.training.evaluate import (
    classification_metrics,
    evaluate,
    model_metrics,
    rank_metrics,
    ranking_label,
    sampled_ranks,
    target_ranks,
)

# 3 users, 5 items (column 0 = padding, never ranked even with the highest score).
SCORES = np.array(
    [
        [9.0, 0.5, 0.4, 0.3, 0.2, 0.1],  # target 1 -> rank 1
        [9.0, 0.5, 0.4, 0.3, 0.2, 0.1],  # target 3 -> rank 3
        [9.0, 0.1, 0.2, 0.3, 0.4, 0.5],  # target 1 -> rank 5
    ]
)
TARGETS = np.array([1, 3, 1])


def test_rank_metrics_match_hand_computation():
    m = rank_metrics(SCORES, TARGETS, ks=(1, 3))
    assert m["n_users"] == 3
    assert m["hr@1"] == pytest.approx(1 / 3)
    assert m["hr@3"] == pytest.approx(2 / 3)
    assert m["ndcg@1"] == pytest.approx(1 / 3)
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 5) / 3)


def test_ties_are_pessimistic_and_padding_is_never_ranked():
    flat = np.zeros((1, 6))
    assert target_ranks(flat, np.array([2]))[0] == 5  # all 5 items tie: the target goes last


def test_exclusion_removes_history_but_never_the_target():
    # user 1: items 1 and 2 (history) are dropped -> target 3 moves from rank 3 to rank 1
    # user 3: history contains the target itself (1) and item 5 -> target stays, rank 5 -> 4
    exclude = [np.array([], dtype=np.int64), np.array([1, 2]), np.array([1, 5])]
    ranks = target_ranks(SCORES, TARGETS, exclude)
    assert ranks.tolist() == [1, 1, 4]
    assert rank_metrics(SCORES, TARGETS, ks=(1,), exclude=exclude)["hr@1"] == pytest.approx(2 / 3)


def test_evaluate_batches_and_exclude_seen():
    inputs = [np.array([]), np.array([1, 2]), np.array([1, 5])]
    score_fn = lambda histories: np.tile(SCORES[1], (len(histories), 1))  # noqa: E731
    targets = np.array([3, 3, 3])
    plain = evaluate(score_fn, inputs, targets, EvaluateParams(ks=[1]), batch_size=2, progress=False)
    seen = evaluate(score_fn, inputs, targets, EvaluateParams(ks=[1], exclude_seen=True), batch_size=2, progress=False)
    assert plain["hr@1"] == 0.0 and plain["n_users"] == 3
    assert seen["hr@1"] == pytest.approx(1 / 3)  # only user 2's history removes both better items


def test_bad_targets_are_rejected():
    with pytest.raises(ValueError):
        rank_metrics(SCORES, np.array([0, 1, 1]))


def test_coverage_counts_distinct_items_in_the_top_k():
    score_fn = lambda histories: SCORES[: len(histories)]  # noqa: E731
    m = evaluate(score_fn, [np.array([1])] * 3, TARGETS, EvaluateParams(ks=[1, 2]), progress=False)
    assert m["coverage@1"] == pytest.approx(2 / 5)  # items 1 (rows 1-2) and 5 (row 3)
    assert m["coverage@2"] == pytest.approx(4 / 5)  # + items 2 and 4


def test_sampled_ranking_ranks_against_the_negatives_only():
    scores = np.array([[0.0, 5, 4, 3, 2, 1]])
    rng = np.random.default_rng(0)
    # 4 negatives out of the 4 other items: every item is drawn, so the rank equals the full rank
    assert sampled_ranks(scores, np.array([3]), 4, rng).tolist() == [3]
    # weights 0 for the two better items: they can never be drawn, the target ranks first
    weights = np.array([0, 0, 0, 1, 1, 1.0])
    assert sampled_ranks(scores, np.array([3]), 2, rng, weights).tolist() == [1]
    p = EvaluateParams(ks=[1], sampled_negatives=2, sampled_by="uniform")
    assert "sampled" in ranking_label(p) and ranking_label(EvaluateParams()) == "full ranking over all items"


def test_classification_metrics_by_hand():
    binary = classification_metrics(np.array([2.0, -1, 0.5, -3]), np.array([1, 0, 0, 0]))
    assert binary["accuracy"] == pytest.approx(0.75) and binary["precision"] == pytest.approx(0.5)
    assert binary["recall"] == 1.0 and binary["auc"] == 1.0 and binary["positive_share"] == 0.25
    logits = np.array([[3.0, 0, 0], [0, 3, 0], [0, 3, 0], [0, 0, 3]])
    multi = classification_metrics(logits, np.array([0, 1, 2, 2]), ["view", "cart", "purchase"])
    assert multi["accuracy"] == pytest.approx(0.75)
    assert multi["recall"] == pytest.approx((1 + 1 + 0.5) / 3)  # macro over the classes present
    assert multi["class_shares"] == {"view": 0.25, "cart": 0.25, "purchase": 0.5}


def test_model_metrics_reads_old_and_new_files():
    assert model_metrics({"model": {"ndcg@10": 0.3}}) == {"ndcg@10": 0.3}
    assert model_metrics({"model": {"ndcg@10": 0.2}}) == {"ndcg@10": 0.2}
