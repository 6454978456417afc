import numpy as np
import torch

from seqops.config import EvaluateParams, ModelParams, TrainParams
from seqops.models.nets.sasrec import SASRecConfig, SASRecModel
from seqops.models.training.train import plot_history, score_fn_for, train_model

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


def test_bf16_autocast_on_cpu_trains_and_validates_in_fp32(tmp_path):
    train_seqs, valid_inputs, valid_targets = walk_pattern()
    model = tiny_model(hidden_size=32)
    p = TrainParams(epochs=15, batch_size=20, lr=1e-2, patience=15, device="cpu", amp="bf16")
    result = train_model(model, train_seqs, valid_inputs, valid_targets, p, EvaluateParams(), progress=False)
    assert result.history[-1]["train_loss"] < 0.7 * result.history[0]["train_loss"]
    assert score_fn_for(model, MAX_LEN, "cpu")(valid_inputs).dtype == np.float32
    assert all(param.dtype == torch.float32 for param in model.parameters())
    assert {"seconds", "seq_per_s", "val_ndcg@10"} <= result.history[0].keys()
    assert plot_history(result.history, tmp_path / "curve.png").stat().st_size > 0


def test_from_params_uses_model_params():
    model = SASRecModel.from_params(N_ITEMS, MAX_LEN, ModelParams(hidden_size=8, num_layers=1, num_heads=2))
    assert (model.config.hidden_size, model.config.num_layers, len(model.encoder.blocks)) == (8, 1, 1)
