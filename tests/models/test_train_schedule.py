"""The trainer's learning-rate schedule (warm-up, cosine / linear decay) and weight-decay groups."""

import math

import numpy as np
import pytest

from seqops.config import EvaluateParams, ModelParams, TrainParams
from seqops.models.nets.sasrec import SASRecModel
from seqops.models.training.train import make_optimizer, scheduled_lr, train_model


def test_warmup_then_cosine_by_hand():
    p = TrainParams(lr=1.0, lr_schedule="cosine", warmup_steps=4)
    assert [scheduled_lr(p, step, 0.0) for step in (1, 2, 4)] == [0.25, 0.5, 1.0]
    assert scheduled_lr(p, 5, 0.5) == pytest.approx(0.5)  # cos(pi / 2) = 0 -> half
    assert scheduled_lr(p, 9, 1.0) == pytest.approx(0.0)
    assert scheduled_lr(TrainParams(lr=1.0, lr_schedule="linear"), 3, 0.25) == pytest.approx(0.75)
    assert scheduled_lr(TrainParams(lr=0.3), 100, 0.9) == 0.3  # constant


def test_the_trainer_follows_the_schedule():
    seqs = [np.arange(u + 1, u + 8) for u in range(16)]  # 16 rows, batch 8: 2 steps per epoch
    p = TrainParams(epochs=4, batch_size=8, lr=0.01, patience=10, device="cpu", lr_schedule="cosine", warmup_steps=2)
    model = SASRecModel.from_params(30, 8, ModelParams(hidden_size=8, num_layers=1, dropout=0.0))
    result = train_model(
        model, seqs, [s[:-1] for s in seqs], np.array([s[-1] for s in seqs]), p, EvaluateParams(), progress=False
    )
    # the lr of each epoch's last step (2, 4, 6, 8 of 8): warm-up ends at 2, then cosine over the 8 steps
    expected = [0.01] + [0.01 * 0.5 * (1 + math.cos(math.pi * s / 8)) for s in (4, 6, 8)]
    assert [row["lr"] for row in result.history] == pytest.approx(expected, abs=1e-12)


def test_weight_decay_spares_biases_and_layer_norms():
    model = SASRecModel.from_params(30, 8, ModelParams(hidden_size=8, num_layers=1))
    decayed, spared = make_optimizer(model, TrainParams(weight_decay=0.1)).param_groups
    assert decayed["weight_decay"] == 0.1 and spared["weight_decay"] == 0.0
    assert any(q is model.item_emb.weight for q in decayed["params"])
    assert all(q.dim() == 1 for q in spared["params"]) and len(spared["params"]) > 0


def test_a_time_budget_ends_training_mid_epoch():
    seqs = [np.arange(u % 20 + 1, u % 20 + 8) for u in range(64)]  # 64 rows, batch 4: 16 steps per epoch
    p = TrainParams(epochs=5, batch_size=4, lr=0.01, patience=10, device="cpu", max_minutes=1e-6)
    model = SASRecModel.from_params(30, 8, ModelParams(hidden_size=8, num_layers=1, dropout=0.0))
    result = train_model(
        model, seqs, [s[:-1] for s in seqs], np.array([s[-1] for s in seqs]), p, EvaluateParams(), progress=False
    )
    assert result.stopped == "time_budget" and len(result.history) == 1
    assert round(result.history[0]["seq_per_s"] * result.history[0]["seconds"]) == 4  # one step, then the budget
