"""What every id-based sequence model promises the trainer, the gate and the service (the
contract of models/nets/base.py), checked on each kind; model-specific behaviour has its own file."""

import json

import numpy as np
import pytest
import torch

from seqops.config import EvaluateParams, ModelParams, TrainParams
from seqops.models.nets.zoo import build_model
from seqops.models.training.data import pad_left
from seqops.models.training.train import score_fn_for, train_model
from tests.conftest import assert_same_scores

N_ITEMS, MAX_LEN = 30, 8
KINDS = ["sasrec", "bert4rec", "gru4rec", "lstm"]
# Epochs and the share of exact next items each kind reaches on the walk: cloze training sees few
# targets per step, so BERT4Rec gets more epochs and a lower bar.
OVERFIT = {"sasrec": (40, 0.8), "bert4rec": (150, 0.7), "gru4rec": (100, 0.8), "lstm": (100, 0.8)}


def tiny_model(kind: str, seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    p = ModelParams(kind=kind, hidden_size=16, num_layers=1, num_heads=2, dropout=0.0)
    return build_model(p.model_copy(update=overrides), N_ITEMS, MAX_LEN).eval()


def batch(*histories) -> torch.Tensor:
    return torch.from_numpy(pad_left([np.asarray(h) for h in histories], MAX_LEN))


def walk_pattern() -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """User u walks u+1 -> u+2 -> ...; the next item is always last + 1. (train, valid inputs, valid targets)"""
    train_seqs = [np.arange(u + 1, u + 7) for u in range(20)]
    valid_inputs = [np.arange(u + 1, u + 8) for u in range(20)]
    return train_seqs, valid_inputs, np.array([u + 8 for u in range(20)])


@pytest.mark.parametrize("kind", KINDS)
def test_overfits_a_deterministic_pattern(kind):
    train_seqs, valid_inputs, valid_targets = walk_pattern()
    model = tiny_model(kind, hidden_size=32)
    if kind == "bert4rec":
        model.config.mask_last_prob = 0.2
    epochs, share = OVERFIT[kind]
    p = TrainParams(epochs=epochs, batch_size=20, lr=1e-2, patience=epochs, device="cpu")
    result = train_model(model, train_seqs, valid_inputs, valid_targets, p, EvaluateParams(), progress=False)

    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.best["val_hr@10"] >= 0.9
    scores = score_fn_for(model, MAX_LEN, "cpu")(valid_inputs)
    assert (scores.argmax(axis=1) == valid_targets).mean() >= share


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_round_trip_in_safetensors(kind, tmp_path):
    model = tiny_model(kind, num_layers=2)
    input_ids = batch([1, 2, 3], [5], np.arange(1, 12), [])
    model.save_pretrained(tmp_path)
    names = {f.name for f in tmp_path.iterdir()}
    assert {"model.safetensors", "config.json"} <= names
    assert not any(n.endswith((".bin", ".pkl", ".pt")) for n in names)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == model.config.model_type
    loaded = type(model).from_pretrained(tmp_path).eval()
    assert (loaded.config.n_items, loaded.config.max_len, loaded.config.num_layers) == (N_ITEMS, MAX_LEN, 2)
    assert torch.equal(loaded.next_item_scores(input_ids), model.next_item_scores(input_ids))


@pytest.mark.parametrize("kind", KINDS)
def test_grow_items_keeps_old_rows_and_scores(kind, tmp_path):
    model = tiny_model(kind)
    history = batch([1, 2, 3], [7, 8])
    before = model.next_item_scores(history)
    old = model.item_emb.weight.detach().clone()
    model.grow_items(N_ITEMS + 5)
    new = model.item_emb.weight
    assert new.shape == (N_ITEMS + 6 + model.extra_item_rows, 16) and model.config.n_items == N_ITEMS + 5
    assert torch.equal(new[: N_ITEMS + 1], old[: N_ITEMS + 1]) and torch.equal(new[0], torch.zeros(16))
    after = model.next_item_scores(history)
    assert after.shape == (2, N_ITEMS + 6)
    assert_same_scores(after[:, : N_ITEMS + 1], before)
    assert torch.isfinite(model.next_item_scores(batch([1, 2, N_ITEMS + 5]))[:, 1:]).all()
    with pytest.raises(ValueError):
        model.grow_items(N_ITEMS)
    model.save_pretrained(tmp_path)  # the grown size survives a round trip
    assert type(model).from_pretrained(tmp_path).item_emb.weight.shape == new.shape


@pytest.mark.parametrize("kind", KINDS)
def test_left_padding_does_not_change_scores(kind):
    model = tiny_model(kind, num_layers=2)
    history = np.array([4, 9, 2])
    narrow = model.next_item_scores(torch.from_numpy(history[None]))
    wide = model.next_item_scores(batch(history, np.arange(1, 9), []))[:1]
    torch.testing.assert_close(narrow, wide, rtol=1e-5, atol=1e-5)
    assert narrow.shape == (1, N_ITEMS + 1) and torch.isneginf(narrow[:, 0]).all()


@pytest.mark.parametrize("kind", KINDS)
def test_all_padding_rows_are_finite_and_train_with_finite_gradients(kind):
    model = tiny_model(kind)
    scores = model.next_item_scores(torch.zeros(2, MAX_LEN, dtype=torch.long))
    assert (
        scores.shape == (2, N_ITEMS + 1) and torch.isfinite(scores[:, 1:]).all() and torch.isneginf(scores[:, 0]).all()
    )
    model.train()
    input_ids = torch.tensor([[0, 0, 0, 0], [0, 1, 2, 3]])
    labels = torch.tensor([[0, 0, 0, 0], [0, 2, 3, 4]])
    loss = model(input_ids, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
