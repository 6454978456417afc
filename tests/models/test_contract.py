"""What every id-based sequence model promises the trainer, the gate and the service (the
contract of models/base.py), checked on each kind; model-specific behaviour has its own file."""

import pytest
import torch

from seqops.config import ModelParams
from seqops.models.zoo import build_model

N_ITEMS, MAX_LEN = 30, 8
KINDS = ["sasrec", "bert4rec", "gru4rec", "lstm"]


@pytest.mark.parametrize("kind", KINDS)
def test_all_padding_rows_are_finite_and_train_with_finite_gradients(kind):
    torch.manual_seed(0)
    model = build_model(ModelParams(kind=kind, hidden_size=16, num_layers=1, num_heads=2, dropout=0.0), N_ITEMS, MAX_LEN).eval()
    scores = model.next_item_scores(torch.zeros(2, MAX_LEN, dtype=torch.long))
    assert scores.shape == (2, N_ITEMS + 1) and torch.isfinite(scores[:, 1:]).all() and torch.isneginf(scores[:, 0]).all()
    model.train()
    input_ids = torch.tensor([[0, 0, 0, 0], [0, 1, 2, 3]])
    labels = torch.tensor([[0, 0, 0, 0], [0, 2, 3, 4]])
    loss = model(input_ids, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
