import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seqops.config import ModelParams
from seqops.models.nets.bert4rec import BERT4RecConfig, BERT4RecModel
from seqops.models.training.data import pad_left
from tests.conftest import assert_same_scores

N_ITEMS, MAX_LEN = 30, 8


def tiny_model(seed: int = 0, **overrides) -> BERT4RecModel:
    torch.manual_seed(seed)
    config = dict(n_items=N_ITEMS, max_len=MAX_LEN, hidden_size=16, num_layers=1, num_heads=2, dropout=0.0)
    return BERT4RecModel(BERT4RecConfig(**{**config, **overrides})).eval()


def batch(*histories) -> torch.Tensor:
    return torch.from_numpy(pad_left([np.asarray(h) for h in histories], MAX_LEN))


def test_from_params_uses_model_params():
    p = ModelParams(hidden_size=8, num_layers=1, num_heads=2, mask_prob=0.3, dropout=0.1)
    model = BERT4RecModel.from_params(N_ITEMS, MAX_LEN, p)
    c = model.config
    assert (c.hidden_size, c.num_layers, c.num_heads, c.mask_prob, c.dropout) == (8, 1, 2, 0.3, 0.1)
    assert len(model.encoder.blocks) == 1
    assert model.item_emb.weight.shape == (N_ITEMS + 2, 8)  # items, padding and [MASK]


def test_grow_items_keeps_old_rows_and_moves_the_mask(tmp_path):
    model = tiny_model()
    history = batch([1, 2, 3], [7, 8])
    before = model.next_item_scores(history)
    old = model.item_emb.weight.detach().clone()
    model.grow_items(N_ITEMS + 5)
    new = model.item_emb.weight
    assert new.shape == (N_ITEMS + 7, 16) and model.config.n_items == N_ITEMS + 5
    assert model.mask_id == N_ITEMS + 6
    assert torch.equal(new[: N_ITEMS + 1], old[: N_ITEMS + 1])
    assert torch.equal(new[-1], old[-1])  # the [MASK] row is at the new end
    after = model.next_item_scores(history)
    assert after.shape == (2, N_ITEMS + 6)
    assert_same_scores(after[:, : N_ITEMS + 1], before)  # same encoder, same mask: old scores unchanged
    assert torch.isfinite(model.next_item_scores(batch([1, 2, N_ITEMS + 5]))[:, 1:]).all()
    with pytest.raises(ValueError):
        model.grow_items(N_ITEMS)
    model.save_pretrained(tmp_path)
    assert BERT4RecModel.from_pretrained(tmp_path).item_emb.weight.shape == new.shape


def test_a_full_history_drops_its_oldest_item_for_the_mask():
    model = tiny_model()
    full = torch.arange(1, MAX_LEN + 1)[None]
    torch.testing.assert_close(model.next_item_scores(full), model.next_item_scores(full[:, 1:]))


def test_cloze_mask_is_seeded_and_covers_every_row():
    model = tiny_model(mask_prob=0.2, mask_last_prob=0.3)
    items = torch.cat([torch.zeros(200, 3, dtype=torch.long), torch.randint(1, N_ITEMS + 1, (200, 5))], 1)
    items[:10] = 0  # rows without items
    torch.manual_seed(1)
    masked = model.cloze_mask(items)
    torch.manual_seed(1)
    assert torch.equal(masked, model.cloze_mask(items))
    assert not masked[items == 0].any()
    assert not masked[:10].any() and masked[10:].any(1).all()
    only_last = masked[:, -1] & (masked.sum(1) == 1)
    assert 0.2 < only_last[10:].float().mean() < 0.6  # the mask_last_prob rows and a few random ones
    cloze = masked[10:][~only_last[10:]][:, 3:]  # the other rows' items
    assert 0.15 < cloze.float().mean() < 0.35  # mask_prob, plus the one forced where none was drawn


def test_eval_loss_is_the_next_item_loss_of_inference():
    model = tiny_model()
    input_ids = torch.tensor([[0, 1, 2, 3], [5, 6, 7, 8]])
    labels = torch.tensor([[0, 2, 3, 4], [6, 7, 8, 9]])
    loss = model(input_ids, labels=labels).loss
    full = torch.cat([input_ids, labels[:, -1:]], 1)
    torch.testing.assert_close(loss, F.cross_entropy(model.next_item_scores(full[:, :-1]), labels[:, -1]))


def test_heads_train_at_the_masked_newest_item():
    model = tiny_model(event_types=["view", "buy"], heads=["next_item", "next_action", "churn"], mask_last_prob=1.0)
    input_ids, type_ids = torch.tensor([[0, 1, 2, 3], [5, 6, 7, 8]]), torch.tensor([[0, 1, 1, 2], [1, 1, 2, 1]])
    labels, action_labels = torch.tensor([[0, 2, 3, 4], [6, 7, 8, 9]]), torch.tensor([[0, 1, 2, 2], [1, 2, 1, 1]])
    churn_labels = torch.tensor([[-1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    model.train()
    out = model(input_ids, labels, type_ids, action_labels, churn_labels)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(out.aux_loss)
    assert model.action_head.weight.grad.abs().sum() > 0 and model.churn_head.weight.grad.abs().sum() > 0
    model.eval()
    assert model.next_action_scores(input_ids, type_ids).shape == (2, 2)
    assert model.churn_scores(input_ids, type_ids).shape == (2,)
