"""The efficient next-item losses: the logQ correction on hand-computed cases, in-batch negatives,
gSASRec's beta, and sampled softmax ranking like full CE after training on the same toy data."""

import math

import numpy as np
import pytest
import torch

from seqops.config import EvaluateParams, ModelParams, TrainParams
from seqops.models.nets.base import draw_negatives, gbce_beta, gbce_loss, logq_softmax_loss, sampled_item_loss
from seqops.models.nets.sasrec import SASRecModel
from seqops.models.training.train import item_counts, train_model


def test_logq_lowers_each_negative_by_the_log_of_its_expected_count():
    # positive logit 2; two negatives (ids 3, 4) with logit 0, each drawn with expected count 2/8
    # (uniform: k = 2 of n = 8), so each stands for 4 items: loss = -2 + ln(e^2 + 4 + 4) = ln(1 + 8 / e^2)
    loss = logq_softmax_loss(
        torch.tensor([2.0]),
        torch.zeros(1, 2),
        torch.tensor([3, 4]),
        torch.tensor([1]),
        torch.full((2,), math.log(2 / 8)),
    )
    assert loss.item() == pytest.approx(math.log(1 + 8 / math.e**2), rel=1e-6)  # 0.7337; uncorrected: ln(1 + 2/e^2)


def test_a_negative_equal_to_the_rows_own_target_is_left_out():
    # row 0's target is item 3, which was also drawn: only item 4 (logit 0, expected count 1) remains
    loss = logq_softmax_loss(
        torch.tensor([1.0, 1.0]), torch.zeros(2, 2), torch.tensor([3, 4]), torch.tensor([3, 5]), torch.zeros(2)
    )
    assert loss.tolist() == pytest.approx((math.log(1 + 1 / math.e) + math.log(1 + 2 / math.e)) / 2)


def test_popularity_negatives_carry_log_k_q():
    # counts of items 1..3 are 3, 0, 1; +1 each -> 4, 1, 2 of 7; with k = 7 draws the expected counts are 4, 1, 2
    ids, log_expected = draw_negatives(torch.tensor([1]), 3, "popularity", 7, torch.tensor([0.0, 4.0, 1.0, 2.0]))
    expected = {1: math.log(4), 2: math.log(1), 3: math.log(2)}
    assert log_expected.tolist() == pytest.approx([expected[i] for i in ids.tolist()])
    ids, log_expected = draw_negatives(torch.tensor([1]), 8, "uniform", 2, None)
    assert log_expected.tolist() == pytest.approx([math.log(2 / 8)] * 2) and ids.min() >= 1 and ids.max() <= 8


def test_the_model_sets_item_counts_plus_one_and_never_draws_padding():
    model = SASRecModel.from_params(
        3, 5, ModelParams(hidden_size=8, num_layers=1, loss="sampled", negatives="popularity")
    )
    model.set_item_counts(torch.from_numpy(item_counts([np.array([1, 1, 3]), np.array([1])], 3)))
    assert model.item_counts.tolist() == [0.0, 4.0, 1.0, 2.0]
    assert "item_counts" not in model.state_dict()  # never saved with the model


def test_in_batch_softmax_corrects_the_positive_too():
    # items 1 = [1, 0], 2 = [0, 1]; targets 1, 1, 2 -> candidates 1 (count 2) and 2 (count 1).
    # rows 0, 1 (state [1, 0]): logits [1 - ln 2, 0], target column 0 -> ln(1 + 2/e)
    # row 2 (state [0, 1]): logits [0 - ln 2, 1], target column 1 -> -1 + ln(1/2 + e) = ln(1 + 1/(2e))
    table = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    hidden = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    loss = sampled_item_loss(hidden, torch.tensor([1, 1, 2]), table, "sampled", 0, "in_batch")
    assert loss.item() == pytest.approx((2 * math.log(1 + 2 / math.e) + math.log(1 + 1 / (2 * math.e))) / 3, rel=1e-6)


def test_gbce_beta_follows_the_paper():
    # alpha = 256 / (3417 - 1) = 0.0749; beta = alpha (t (1 - 1/alpha) + 1/alpha) = 1 - t (1 - alpha)
    assert gbce_beta(256, 3417, 0.75) == pytest.approx(1 - 0.75 * (1 - 256 / 3416))
    assert gbce_beta(256, 3417, 0.0) == pytest.approx(1.0)  # plain BCE
    assert gbce_beta(256, 3417, 1.0) == pytest.approx(256 / 3416)  # fully calibrated


def test_gbce_scales_only_the_positive_term():
    # positive logit 0 -> beta ln 2; negatives item 2 (logit 0 -> ln 2) and item 1, the target itself (left out)
    table = torch.tensor([[0.0], [0.0], [0.0]])
    loss = gbce_loss(torch.tensor([[1.0]]), torch.tensor([1]), table, torch.tensor([2, 1]), torch.zeros(2), 0.5)
    assert loss.item() == pytest.approx(gbce_beta(2, 2, 0.5) * math.log(2) + math.log(2))


def skewed_walk(n_users: int = 60, n_items: int = 60, length: int = 12) -> list[np.ndarray]:
    """User u walks items u % n_items + 1, +1, ... with a popular item 1 every third step: a next
    item a model must learn from the sequence, next to a popularity head that is always wrong."""
    rng = np.random.default_rng(0)
    seqs = []
    for u in range(n_users):
        start = int(rng.integers(2, n_items))
        walk = [(start + i - 2) % (n_items - 1) + 2 for i in range(length)]
        seqs.append(np.array([1 if i % 3 == 2 else item for i, item in enumerate(walk)], dtype=np.int64))
    return seqs


def train_on_walk(loss: str, negatives: str = "uniform") -> np.ndarray:
    seqs = skewed_walk()
    torch.manual_seed(0)
    model = SASRecModel.from_params(
        60, 12, ModelParams(hidden_size=32, num_layers=1, dropout=0.0, loss=loss, negatives=negatives, n_negatives=6)
    )
    train_model(
        model,
        [s[:-1] for s in seqs],
        [s[:-1] for s in seqs],
        np.array([s[-1] for s in seqs]),
        TrainParams(epochs=40, batch_size=30, lr=1e-2, patience=40, device="cpu"),
        EvaluateParams(),
        progress=False,
    )
    histories = torch.from_numpy(np.stack([s[:-1] for s in seqs]))
    return model.next_item_scores(histories).argmax(-1).numpy()


@pytest.mark.parametrize("negatives", ["uniform", "popularity"])
def test_sampled_softmax_ranks_like_full_ce(negatives):
    full, sampled = train_on_walk("ce"), train_on_walk("sampled", negatives)
    targets = np.array([s[-1] for s in skewed_walk()])
    assert (full == targets).mean() >= 0.9  # the walk is learnable
    assert (sampled == full).mean() >= 0.9, negatives


@pytest.mark.parametrize("negatives", ["uniform", "popularity"])
def test_sampled_loss_estimates_the_full_softmax_loss(negatives):
    # the regression: without logQ, 1,000 uniform negatives out of 20,000 items gave a 1,001-way loss
    # (~ln 1001 at the start) that fell while ranking over all items did not improve; corrected, its
    # value tracks full CE over every item
    torch.manual_seed(0)
    n_items = 20_000
    table = torch.randn(n_items + 1, 16) * 0.3
    hidden = torch.randn(64, 16)
    targets = torch.randint(1, n_items + 1, (64,))
    full = sampled_item_loss(hidden, targets, table, "ce", 0).item()
    counts = torch.rand(n_items + 1) * 10
    sampled = np.mean(
        [sampled_item_loss(hidden, targets, table, "sampled", 1000, negatives, counts).item() for _ in range(20)]
    )
    assert sampled == pytest.approx(full, rel=0.03)
