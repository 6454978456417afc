import numpy as np
import pytest
import torch
from torch import nn

from seqops.config import ModelParams
from seqops.models.nets.rnn import GRU4RecConfig, GRU4RecModel, LSTMRecConfig, LSTMRecModel, RNNRecModel
from seqops.models.training.data import pad_left

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
def test_from_params_uses_model_params(cls):
    model = cls.from_params(N_ITEMS, MAX_LEN, ModelParams(hidden_size=8, num_layers=3, dropout=0.1))
    c = model.config
    assert (c.hidden_size, c.num_layers, c.dropout, c.max_len) == (8, 3, 0.1, MAX_LEN)
    assert (model.rnn.num_layers, model.rnn.hidden_size, model.rnn.dropout) == (3, 8, 0.1)


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
