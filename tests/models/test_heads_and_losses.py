"""Multi-task heads and every next-item loss (and negative sampler), on SASRec (the base class serves them all)."""

import numpy as np
import pytest
import torch

from seqops.config import EvaluateParams, ModelParams, TrainParams
from seqops.models.nets.baselines import PopularityModel
from seqops.models.nets.sasrec import SASRecModel
from seqops.models.training.artifact import Artifact, save_artifact
from seqops.models.training.evaluate import classification_metrics
from seqops.models.training.train import train_model

TYPES = ["view", "cart", "purchase"]


def pattern(n_users: int = 24):
    """User u walks u+1, u+2, ...; every third event is a cart, the one after a cart a purchase;
    the user churns (long gap) after each purchase."""
    seqs = [np.arange(u + 1, u + 10) for u in range(n_users)]
    types = [np.array([1 + (i % 3) for i in range(9)]) for _ in range(n_users)]
    churn = [np.array([1.0 if t == 3 else 0.0 for t in ts]) for ts in types]
    return seqs, types, churn


@pytest.mark.parametrize(
    "loss, negatives",
    [
        ("ce", "uniform"),
        ("bce", "uniform"),
        ("sampled", "uniform"),
        ("sampled", "popularity"),
        ("sampled", "in_batch"),
        pytest.param(
            "gbce",
            "uniform",
            marks=pytest.mark.xfail(
                reason="gBCE over 8 negatives shared by the batch reaches HR@10 ~0.42 here in "
                "60 steps (plain BCE with one negative per position: >= 0.8); open",
                strict=False,
            ),
        ),
    ],
)
def test_every_loss_learns_the_walk(loss, negatives):
    seqs, _, _ = pattern()
    torch.manual_seed(0)
    model = SASRecModel.from_params(
        40, 10, ModelParams(hidden_size=32, num_layers=1, dropout=0.0, loss=loss, n_negatives=8, negatives=negatives)
    )
    valid_inputs = [s[:-1] for s in seqs]
    result = train_model(
        model,
        [s[:-1] for s in seqs],
        valid_inputs,
        np.array([s[-1] for s in seqs]),
        TrainParams(epochs=60, batch_size=24, lr=1e-2, patience=60, device="cpu"),
        EvaluateParams(),
        progress=False,
    )
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.best["val_hr@10"] >= 0.8, loss


def test_heads_learn_next_action_and_churn_and_survive_a_round_trip(tmp_path):
    seqs, types, churn = pattern()
    torch.manual_seed(0)
    params = ModelParams(
        hidden_size=32, num_layers=1, dropout=0.0, heads=["next_item", "next_action", "churn"], aux_weight=1.0
    )
    model = SASRecModel.from_params(40, 10, params, TYPES)
    assert model.heads == ("next_item", "next_action", "churn") and model.config.event_types == TYPES
    train_model(
        model,
        seqs,
        [s[:-1] for s in seqs],
        np.array([s[-1] for s in seqs]),
        TrainParams(epochs=60, batch_size=24, lr=1e-2, patience=60, device="cpu"),
        EvaluateParams(),
        train_types=types,
        train_churn=churn,
        valid_types=[t[:-1] for t in types],
        progress=False,
    )
    model.eval()
    input_ids = torch.from_numpy(np.stack([s[:-1] for s in seqs]))
    type_ids = torch.from_numpy(np.stack([t[:-1] for t in types]))
    action = model.next_action_scores(input_ids, type_ids)
    assert action.shape == (24, 3)
    # the last input event is a purchase (type 3 at index 8 of 9? index 7 -> 1 + 7 % 3 = 2: a cart) -> next: purchase
    assert classification_metrics(action.numpy(), types[0][-1].repeat(24) - 1)["accuracy"] >= 0.9
    churn_logits = model.churn_scores(input_ids, type_ids)
    assert churn_logits.shape == (24,)

    counts = np.ones(41, dtype=np.int64)
    vocab = tmp_path / "items.parquet"
    import pandas as pd

    pd.DataFrame({"item_id": np.arange(1, 41), "raw_id": [str(i) for i in range(1, 41)]}).to_parquet(vocab)
    save_artifact(
        tmp_path / "artifact",
        model,
        PopularityModel(counts),
        {"heads": list(model.heads)},
        vocab,
        pd.DataFrame({"user_id": [1]}),
    )
    loaded = Artifact.load(tmp_path / "artifact")
    histories, hist_types = [s[:-1] for s in seqs], [t[:-1] for t in types]
    np.testing.assert_array_equal(loaded.head_scores("next_action", histories, hist_types), action.numpy())
    np.testing.assert_array_equal(
        loaded.scores(histories, types=hist_types), model.next_item_scores(input_ids, type_ids).numpy()
    )


def test_a_model_without_heads_refuses_them():
    model = SASRecModel.from_params(10, 5, ModelParams(hidden_size=8, num_layers=1))
    with pytest.raises(AttributeError):
        model.churn_scores(torch.tensor([[1, 2]]), torch.tensor([[1, 1]]))
    with pytest.raises(ValueError):
        SASRecModel.from_params(
            10, 5, ModelParams(hidden_size=8, num_layers=1, heads=["next_item", "churn"])
        )  # no event types
