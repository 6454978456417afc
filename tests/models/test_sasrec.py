import numpy as np
import pytest
import torch

from seqops.config import EvaluateParams, ModelParams, TrainParams
from seqops.models.data import pad_left
from seqops.models.sasrec import SASRecConfig, SASRecModel
from seqops.models.train import plot_history, score_fn_for, train_model

N_ITEMS, MAX_LEN = 30, 8


def tiny_model(seed: int = 0, **overrides) -> SASRecModel:
    torch.manual_seed(seed)
    config = dict(n_items=N_ITEMS, max_len=MAX_LEN, hidden_size=16, num_layers=1, num_heads=2, dropout=0.0)
    return SASRecModel(SASRecConfig(**{**config, **overrides})).eval()


def walk_pattern() -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """User u walks u+1 -> u+2 -> ...; the next item is always last + 1. (train, valid inputs, valid targets)"""
    train_seqs = [np.arange(u + 1, u + 7) for u in range(20)]
    valid_inputs = [np.arange(u + 1, u + 8) for u in range(20)]
    return train_seqs, valid_inputs, np.array([u + 8 for u in range(20)])


def test_overfits_a_deterministic_pattern(tmp_path):
    train_seqs, valid_inputs, valid_targets = walk_pattern()
    model = tiny_model(hidden_size=32)
    p = TrainParams(epochs=40, batch_size=20, lr=1e-2, patience=40, device="cpu")
    result = train_model(model, train_seqs, valid_inputs, valid_targets, p, EvaluateParams(), progress=False)

    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.best["val_hr@10"] >= 0.9
    scores = score_fn_for(model, MAX_LEN, "cpu")(valid_inputs)
    assert (scores.argmax(axis=1) == valid_targets).mean() >= 0.8
    assert {"seconds", "seq_per_s", "val_ndcg@10"} <= result.history[0].keys()
    assert plot_history(result.history, tmp_path / "curve.png").stat().st_size > 0


def test_bf16_autocast_on_cpu_trains_and_validates_in_fp32():
    train_seqs, valid_inputs, valid_targets = walk_pattern()
    model = tiny_model(hidden_size=32)
    p = TrainParams(epochs=15, batch_size=20, lr=1e-2, patience=15, device="cpu", amp="bf16")
    result = train_model(model, train_seqs, valid_inputs, valid_targets, p, EvaluateParams(), progress=False)
    assert result.history[-1]["train_loss"] < 0.7 * result.history[0]["train_loss"]
    assert score_fn_for(model, MAX_LEN, "cpu")(valid_inputs).dtype == np.float32
    assert all(param.dtype == torch.float32 for param in model.parameters())


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model(num_layers=2)
    input_ids = torch.from_numpy(pad_left([np.array([1, 2, 3]), np.array([5]), np.arange(1, 12)], MAX_LEN))
    model.save_pretrained(tmp_path)
    names = {f.name for f in tmp_path.iterdir()}
    assert "model.safetensors" in names and "config.json" in names
    assert not any(n.endswith((".bin", ".pkl", ".pt")) for n in names)
    loaded = SASRecModel.from_pretrained(tmp_path).eval()
    assert loaded.config.n_items == N_ITEMS and loaded.config.max_len == MAX_LEN
    assert torch.equal(loaded.next_item_scores(input_ids), model.next_item_scores(input_ids))


def test_from_params_uses_model_params():
    model = SASRecModel.from_params(N_ITEMS, MAX_LEN, ModelParams(hidden_size=8, num_layers=1, num_heads=2))
    assert (model.config.hidden_size, model.config.num_layers, len(model.encoder.blocks)) == (8, 1, 1)


def test_grow_items_keeps_old_rows(tmp_path):
    model = tiny_model()
    old = model.item_emb.weight.detach().clone()
    model.grow_items(N_ITEMS + 5)
    new = model.item_emb.weight
    assert new.shape == (N_ITEMS + 6, 16) and model.config.n_items == N_ITEMS + 5
    assert torch.equal(new[: N_ITEMS + 1], old)
    assert torch.equal(new[0], torch.zeros(16))
    scores = model.next_item_scores(torch.tensor([[1, 2, N_ITEMS + 5]]))
    assert scores.shape == (1, N_ITEMS + 6)
    with pytest.raises(ValueError):
        model.grow_items(N_ITEMS)
    model.save_pretrained(tmp_path)  # the grown size survives a round trip
    assert SASRecModel.from_pretrained(tmp_path).item_emb.weight.shape == new.shape


def test_left_padding_does_not_change_scores():
    model = tiny_model(num_layers=2)
    history = np.array([4, 9, 2])
    narrow = model.next_item_scores(torch.from_numpy(history[None]))
    wide = model.next_item_scores(torch.from_numpy(pad_left([history], MAX_LEN)))
    torch.testing.assert_close(narrow, wide, rtol=1e-5, atol=1e-5)
    assert torch.isneginf(narrow[:, 0]).all()
