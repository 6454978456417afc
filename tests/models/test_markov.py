import numpy as np
import torch

from seqops.config import EvaluateParams, ModelParams, TrainParams
from seqops.models.nets.markov import MarkovConfig, MarkovModel, PopularityRecModel
from seqops.models.nets.zoo import build_model
from seqops.models.training.train import train_model

SEQS = [np.array([1, 2, 3]), np.array([1, 2, 4]), np.array([2, 3, 5])]


def test_transitions_rank_the_observed_next_item_first():
    model = MarkovModel(MarkovConfig(n_items=5, max_len=4, backoff=0.1)).fit(SEQS)
    scores = model.next_item_scores(torch.tensor([[0, 0, 1], [0, 1, 2]]))
    assert torch.isneginf(scores[:, 0]).all()
    assert scores[:, 1:].argmax(1).tolist() == [1, 2]  # after 1 comes 2; after 2 comes 3 (2 of 3 times)
    # P(3|2) - P(4|2) plus the popularity back-off: 0.1 x (2/9 - 1/9)
    np.testing.assert_allclose(scores[1, 3] - scores[1, 4], 1 / 3 + 0.1 / 9, rtol=1e-5)


def test_unseen_last_item_falls_back_to_popularity():
    model = MarkovModel(MarkovConfig(n_items=5, max_len=4)).fit(SEQS)
    popularity = PopularityRecModel.from_params(5, 4, ModelParams()).fit(SEQS)
    unseen = model.next_item_scores(torch.tensor([[5]]))
    assert (
        unseen[0, 1:].argmax().item() + 1
        == popularity.next_item_scores(torch.tensor([[5]]))[0, 1:].argmax().item() + 1
        == 2
    )


def test_round_trip_and_growth(tmp_path):
    model = MarkovModel(MarkovConfig(n_items=5, max_len=4)).fit(SEQS)
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors"}
    loaded = MarkovModel.from_pretrained(tmp_path)
    histories = torch.tensor([[1, 2], [0, 3]])
    assert torch.equal(loaded.next_item_scores(histories), model.next_item_scores(histories))
    loaded.grow_items(7)
    assert loaded.next_item_scores(torch.tensor([[7]])).shape == (1, 8)


def test_the_trainer_fits_count_models_once():
    model = build_model(ModelParams(kind="markov"), 5, 4)
    result = train_model(
        model,
        SEQS,
        [np.array([1]), np.array([2])],
        np.array([2, 3]),
        TrainParams(device="cpu"),
        EvaluateParams(),
        progress=False,
    )
    assert len(result.history) == 1 and result.best["val_hr@10"] == 1.0
