import math

import numpy as np
import pytest

from seqops.config import EvaluateParams
from seqops.models.evaluate import evaluate, rank_metrics, target_ranks

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
