import json

import numpy as np
import pytest
import torch
from torch import nn

from seqops.config import EvaluateParams, ModelParams, TrainParams
from seqops.models.data import pad_left
from seqops.models.rnn import GRU4RecConfig, GRU4RecModel, LSTMRecConfig, LSTMRecModel, RNNRecModel
from tests.conftest import assert_same_scores

N_ITEMS, MAX_LEN = 30, 8
MODELS = pytest.mark.parametrize("cls", [GRU4RecModel, LSTMRecModel], ids=["gru", "lstm"])


def tiny_model(cls: type[RNNRecModel], seed: int = 0, **overrides) -> RNNRecModel:
    torch.manual_seed(seed)
    config = dict(n_items=N_ITEMS, max_len=MAX_LEN, hidden_size=16, num_layers=1, dropout=0.0)
    return cls(cls.config_class(**{**config, **overrides})).eval()


def batch(*histories) -> torch.Tensor:
    return torch.from_numpy(pad_left([np.asarray(h) for h in histories], MAX_LEN))


def test_the_cell_is_the_only_difference():
    assert isinstance(tiny_model(GRU4RecModel).rnn, nn.GRU) and GRU4RecConfig().cell == "gru"
    assert isinstance(tiny_model(LSTMRecModel).rnn, nn.LSTM) and LSTMRecConfig().cell == "lstm"
    assert GRU4RecConfig.model_type != LSTMRecConfig.model_type
    with pytest.raises(ValueError):
        tiny_model(RNNRecModel, cell="rnn")


@MODELS
def test_overfits_a_deterministic_pattern(cls):
    from seqops.models.train import train_model

    # user u walks u+1 -> u+2 -> ...; the next item is always last + 1 (the last two users' targets
    # never occur in training, so at most 18 of 20 can be first)
    train_seqs = [np.arange(u + 1, u + 7) for u in range(20)]
    valid_inputs = [np.arange(u + 1, u + 8) for u in range(20)]
    valid_targets = np.array([u + 8 for u in range(20)])
    model = tiny_model(cls, hidden_size=32)
    p = TrainParams(epochs=100, batch_size=20, lr=1e-2, patience=100, device="cpu")
    result = train_model(model, train_seqs, valid_inputs, valid_targets, p, EvaluateParams(), progress=False)

    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.best["val_hr@10"] >= 0.9
    scores = model.eval().next_item_scores(batch(*valid_inputs)).numpy()
    assert (scores.argmax(axis=1) == valid_targets).mean() >= 0.8


@MODELS
def test_save_and_load_round_trip(cls, tmp_path):
    model = tiny_model(cls, num_layers=2, rnn_size=24)
    input_ids = batch([1, 2, 3], [5], np.arange(1, 12), [])
    model.save_pretrained(tmp_path)
    names = {f.name for f in tmp_path.iterdir()}
    assert {"model.safetensors", "config.json"} <= names
    assert not any(n.endswith((".bin", ".pkl", ".pt")) for n in names)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == cls.config_class.model_type
    loaded = cls.from_pretrained(tmp_path).eval()
    assert (loaded.config.n_items, loaded.config.num_layers, loaded.config.rnn_size) == (N_ITEMS, 2, 24)
    assert loaded.config.cell == model.config.cell
    assert torch.equal(loaded.next_item_scores(input_ids), model.next_item_scores(input_ids))


@MODELS
def test_from_params_uses_model_params(cls):
    model = cls.from_params(N_ITEMS, MAX_LEN, ModelParams(hidden_size=8, num_layers=3, dropout=0.1))
    c = model.config
    assert (c.hidden_size, c.num_layers, c.dropout, c.max_len) == (8, 3, 0.1, MAX_LEN)
    assert (model.rnn.num_layers, model.rnn.hidden_size, model.rnn.dropout) == (3, 8, 0.1)


@MODELS
def test_grow_items_keeps_old_rows(cls, tmp_path):
    model = tiny_model(cls)
    history = batch([1, 2, 3], [7, 8])
    before = model.next_item_scores(history)
    old = model.item_emb.weight.detach().clone()
    model.grow_items(N_ITEMS + 5)
    new = model.item_emb.weight
    assert new.shape == (N_ITEMS + 6, 16) and model.config.n_items == N_ITEMS + 5
    assert torch.equal(new[: N_ITEMS + 1], old)
    after = model.next_item_scores(history)
    assert after.shape == (2, N_ITEMS + 6)
    assert_same_scores(after[:, : N_ITEMS + 1], before)
    model.save_pretrained(tmp_path)
    assert cls.from_pretrained(tmp_path).item_emb.weight.shape == new.shape


@MODELS
def test_left_padding_does_not_change_scores(cls):
    model = tiny_model(cls, num_layers=2)
    history = np.array([4, 9, 2])
    narrow = model.next_item_scores(torch.from_numpy(history[None]))
    wide = model.next_item_scores(batch(history, np.arange(1, 9), []))[:1]
    torch.testing.assert_close(narrow, wide, rtol=1e-5, atol=1e-5)
    assert torch.isneginf(narrow[:, 0]).all()


@MODELS
def test_outputs_line_up_with_the_inputs(cls):
    model = tiny_model(cls, rnn_size=12)
    input_ids = batch([4, 9, 2], [1, 2, 3, 4, 5])
    hidden = model.encode(input_ids)
    head = lambda state: model.out_norm(model.proj(state))  # noqa: E731
    alone = head(model.rnn(model.in_norm(model.item_emb(torch.tensor([[4, 9, 2]]))))[0])
    torch.testing.assert_close(hidden[0, -3:], alone[0])
    assert torch.equal(hidden[0, :-3], head(torch.zeros(12)).expand(5, -1))  # padding: a constant


def test_heads_train_through_the_base():
    model = tiny_model(GRU4RecModel, event_types=["view", "buy"], heads=["next_item", "next_action", "churn"])
    input_ids, type_ids = torch.tensor([[0, 1, 2, 3]]), torch.tensor([[0, 1, 1, 2]])
    labels, action_labels = torch.tensor([[0, 2, 3, 4]]), torch.tensor([[0, 1, 2, 2]])
    out = model.train()(input_ids, labels, type_ids, action_labels, torch.tensor([[-1.0, 0.0, 1.0, 0.0]]))
    out.loss.backward()
    assert torch.isfinite(out.aux_loss) and model.churn_head.weight.grad.abs().sum() > 0
    assert model.eval().next_action_scores(input_ids, type_ids).shape == (1, 2)
