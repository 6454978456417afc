"""The hyper-parameter search: Optuna's TPE sampler over params.yaml's `tune:` ranges, every trial
trained by the one trainer (`train_model`) under `tune.trial_minutes`, its validation NDCG@10
reported after each epoch to a median pruner (a trial below the median of earlier trials at the
same epoch stops there). The search ends after `n_trials` or `minutes`; each trial's row keeps its
parameters, state, best validation NDCG@10 and per-epoch history.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import optuna
import torch

from seqops.config import EvaluateParams, ModelParams, TrainParams, TuneParams
from seqops.models.nets.zoo import build_model
from seqops.models.training.train import SELECT_METRIC, train_model

log = logging.getLogger(__name__)

SAMPLED_LOSSES = ("sampled", "gbce")  # the losses that draw negatives


def suggest(
    trial: optuna.Trial, space: TuneParams, model_p: ModelParams, train_p: TrainParams
) -> tuple[ModelParams, TrainParams]:
    """One trial's model and train params: the searched keys from `space`, the rest as configured."""
    model = {
        "dropout": trial.suggest_float("dropout", *space.dropout),
        "hidden_size": trial.suggest_categorical("hidden_size", space.hidden_size),
        "loss": trial.suggest_categorical("loss", space.loss),
    }
    if model["loss"] in SAMPLED_LOSSES:  # conditional: only trials that sample negatives search them
        model["negatives"] = trial.suggest_categorical("negatives", space.negatives)
        if model["negatives"] != "in_batch":
            model["n_negatives"] = trial.suggest_categorical("n_negatives", space.n_negatives)
    train = {
        "lr": trial.suggest_float("lr", *space.lr, log=True),
        "weight_decay": trial.suggest_float("weight_decay", *space.weight_decay),
        "lr_schedule": trial.suggest_categorical("lr_schedule", space.lr_schedule),
        "warmup_steps": trial.suggest_categorical("warmup_steps", space.warmup_steps),
        "max_minutes": space.trial_minutes,
    }
    return model_p.model_copy(update=model), train_p.model_copy(update=train)


def pruning_callback(trial: optuna.Trial):
    """Report each epoch's validation NDCG@10 and stop the trial when the pruner says so."""

    def on_epoch(row: dict[str, float]) -> None:
        trial.report(row[f"val_{SELECT_METRIC}"], step=int(row["epoch"]))
        if trial.should_prune():
            trial.set_user_attr("history", row_history(trial) + [row])
            raise optuna.TrialPruned(f"pruned after epoch {int(row['epoch'])}")
        trial.set_user_attr("history", row_history(trial) + [row])

    return on_epoch


def row_history(trial: optuna.Trial) -> list[dict[str, float]]:
    return list(trial.user_attrs.get("history", []))


def tune(
    train_seqs: Sequence[np.ndarray],
    valid_inputs: Sequence[np.ndarray],
    valid_targets: np.ndarray,
    n_items: int,
    max_len: int,
    model_p: ModelParams,
    train_p: TrainParams,
    eval_p: EvaluateParams,
    space: TuneParams,
    progress: bool = False,
) -> dict:
    """Run the search; returns {"best": {...}, "trials": [...]} (see the module docstring)."""
    sampler = optuna.samplers.TPESampler(seed=space.seed, n_startup_trials=space.startup_trials)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=space.startup_trials, n_warmup_steps=1)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)

    def objective(trial: optuna.Trial) -> float:
        trial_model_p, trial_train_p = suggest(trial, space, model_p, train_p)
        torch.manual_seed(train_p.seed)
        model = build_model(trial_model_p, n_items, max_len)
        started = time.perf_counter()
        result = train_model(
            model,
            train_seqs,
            valid_inputs,
            valid_targets,
            trial_train_p,
            eval_p,
            progress=progress,
            on_epoch=pruning_callback(trial),
        )
        trial.set_user_attr("seconds", time.perf_counter() - started)
        trial.set_user_attr("stopped", result.stopped)
        return result.best[f"val_{SELECT_METRIC}"]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=space.n_trials, timeout=60 * space.minutes)
    trials = [trial_row(t) for t in study.trials]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = trial_row(study.best_trial) if done else None
    return {"metric": f"val_{SELECT_METRIC}", "best": best, "trials": trials}


def trial_row(trial: optuna.trial.FrozenTrial) -> dict:
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "params": trial.params,
        "epochs": len(trial.user_attrs.get("history", [])),
        "stopped": trial.user_attrs.get("stopped", "pruned"),
        "seconds": trial.user_attrs.get("seconds"),
        "history": trial.user_attrs.get("history", []),
    }


__all__ = ["suggest", "trial_row", "tune"]
