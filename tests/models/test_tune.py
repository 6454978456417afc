"""The Optuna search on a tiny synthetic project: trials run, pruned or complete, with histories."""

import numpy as np

from seqops.config import EvaluateParams, ModelParams, TrainParams, TuneParams
from seqops.models.training.tune import tune


def test_a_tiny_search_records_every_trial():
    seqs = [np.arange(u % 20 + 1, u % 20 + 9) for u in range(40)]
    space = TuneParams(
        n_trials=4,
        minutes=2,
        trial_minutes=0.05,
        startup_trials=1,
        hidden_size=[8, 16],
        loss=["ce", "sampled"],
        n_negatives=[8],
    )
    result = tune(
        [s[:-2] for s in seqs],
        [s[:-2] for s in seqs],
        np.array([s[-2] for s in seqs]),
        30,
        10,
        ModelParams(num_layers=1),
        TrainParams(epochs=4, batch_size=16, patience=4, device="cpu"),
        EvaluateParams(ks=[10]),
        space,
    )
    assert len(result["trials"]) == 4
    assert {t["state"] for t in result["trials"]} <= {"COMPLETE", "PRUNED"}
    best = result["best"]
    assert best["value"] == max(t["value"] for t in result["trials"] if t["state"] == "COMPLETE")
    assert all(len(t["history"]) == t["epochs"] >= 1 for t in result["trials"])
    assert best["params"]["hidden_size"] in (8, 16) and 1e-4 <= best["params"]["lr"] <= 5e-3
