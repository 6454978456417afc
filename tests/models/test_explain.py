"""Leave-one-out attribution (models/explain.py) through the real `Artifact.scores`: on an additive toy
model it recovers each event's known contribution, so the top event is the one whose removal lowers
the score most; on a SASRec the one batched pass equals scoring each shortened history on its own."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from seqops.config import ModelParams
from seqops.models.explain import leave_one_out, read_positions
from seqops.models.nets.baselines import PopularityModel
from seqops.models.nets.sasrec import SASRecModel
from seqops.models.training.artifact import Artifact

N_ITEMS, MAX_LEN = 12, 6


class AdditiveToy(nn.Module):
    """score_j(history) = sum over the history's items h of W[h, j]: event h's contribution to j is W[h, j]."""

    def __init__(self, weights: torch.Tensor):
        super().__init__()
        self.config = SimpleNamespace(n_items=N_ITEMS, max_len=MAX_LEN)
        self.weights = weights

    def next_item_scores(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.weights[input_ids].sum(dim=1)  # padding row 0 is zero


def artifact_of(model: nn.Module) -> Artifact:
    return Artifact(Path("."), model, PopularityModel.from_counts(np.ones(N_ITEMS + 1)), {})


def test_top_event_is_the_one_whose_removal_lowers_the_score_most():
    rng = np.random.default_rng(0)
    weights = torch.as_tensor(rng.normal(size=(N_ITEMS + 1, N_ITEMS + 1)), dtype=torch.float32)
    weights[0] = 0
    history = np.array([3, 7, 1, 9, 4], dtype=np.int64)
    targets = np.array([2, 5, 11])
    attribution = leave_one_out(artifact_of(AdditiveToy(weights)), history, targets)
    expected = weights.numpy()[history][:, targets].T  # [T, E]
    np.testing.assert_allclose(attribution.drops, expected, rtol=1e-5, atol=1e-5)
    for t in range(len(targets)):
        top = attribution.top(t, 2)
        assert top[0][0] == int(np.argmax(expected[t])) and top[0][1] == max(top[i][1] for i in range(len(top)))
        assert all(w > 0 for _, w in top)


def test_only_the_events_the_model_reads_are_attributed():
    artifact = artifact_of(AdditiveToy(torch.ones(N_ITEMS + 1, N_ITEMS + 1)))
    history = np.array([5, 99, 1, 2, 3, 0, 4, 6, 7, 8], dtype=np.int64)  # 99 unknown, 0 padding, longer than MAX_LEN
    positions = read_positions(artifact, history)
    assert positions.tolist() == [3, 4, 6, 7, 8, 9]  # the last MAX_LEN known items
    assert leave_one_out(artifact, history, np.array([1])).drops.shape == (1, MAX_LEN)


def test_one_batched_pass_equals_scoring_each_shortened_history():
    torch.manual_seed(0)
    model = SASRecModel.from_params(N_ITEMS, MAX_LEN, ModelParams(hidden_size=16, num_layers=1, num_heads=2)).eval()
    artifact = artifact_of(model)
    history = np.array([2, 4, 6, 8, 10], dtype=np.int64)
    targets = np.array([1, 3, 5])
    attribution = leave_one_out(artifact, history, targets)
    full = artifact.scores([history])[0, targets]
    np.testing.assert_allclose(attribution.scores, full, rtol=1e-4, atol=1e-5)
    for e in range(len(history)):
        alone = artifact.scores([np.delete(history, e)])[0, targets]
        np.testing.assert_allclose(attribution.drops[:, e], full - alone, rtol=1e-4, atol=1e-4)
