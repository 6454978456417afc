import numpy as np

from seqops.serving.ranking import recommend_items


def test_top_k_skips_padding_seen_and_unrankable_items():
    scores = np.array([9.0, 1.0, 5.0, 4.0, -np.inf, 3.0])
    top, top_scores = recommend_items(scores, exclude=np.array([2]), k=3)
    assert top.tolist() == [3, 5, 1] and top_scores.tolist() == [4.0, 3.0, 1.0]
    assert recommend_items(scores, exclude=np.array([], dtype=int), k=10)[0].tolist() == [2, 3, 5, 1]
