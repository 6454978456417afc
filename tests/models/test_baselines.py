import numpy as np

from seqops.models.nets.baselines import PopularityModel
from seqops.models.training.evaluate import rank_metrics


def test_popularity_ranks_most_frequent_first(tmp_path):
    seqs = [np.array([3, 3, 1]), np.array([3, 2]), np.array([2, 3])]
    model = PopularityModel.fit(seqs, n_items=4)
    scores = model.next_item_scores([np.array([1]), np.array([])])
    assert scores.shape == (2, 5)
    assert np.isneginf(scores[:, 0]).all()
    assert scores[:, 1:].argmax(axis=1).tolist() == [2, 2]  # column 3 = item 3
    assert rank_metrics(scores, np.array([3, 3]), ks=(1,))["hr@1"] == 1.0

    model.save(tmp_path)
    assert not list(tmp_path.glob("*.pkl"))
    loaded = PopularityModel.load(tmp_path)
    np.testing.assert_array_equal(loaded.next_item_scores([np.array([1])]), scores[:1])
    assert loaded.n_items == 4


def test_from_counts_matches_fit():
    seqs = [np.array([1, 2, 2]), np.array([2])]
    counts = np.bincount(np.concatenate(seqs), minlength=4)
    assert (
        PopularityModel.from_counts(counts).counts.tolist()
        == PopularityModel.fit(seqs, 3).counts.tolist()
        == [0, 1, 3, 0]
    )
