"""The served version: the gate-approved candidate refitted on every event up to the data cut.

A candidate is trained without each user's held-out events (leave-one-out: the last two; temporal:
everything after the validation cut) so that it can be selected and gated. Serving it as trained
would throw away the freshest transitions — and every event of an item that appeared since the
validation cut. After an approving gate the flow therefore builds the served version here:

- `all`: a model of the same configuration, started the way the candidate was (the champion's
  weights when warm starting is on — the champion has not moved yet), trained for the candidate's
  `best_epoch` epochs on every user's full history (no early stopping: nothing held out is left);
  count models (Markov, popularity) simply recount.
- `tail`: the candidate itself, fine-tuned for one epoch on the full histories.

Either way the result is a new artifact whose metadata says `refit_of: <candidate version>`; its
metrics are the candidate's (it cannot be scored on data it trained on) — its own evaluation is
the next batch's gate. `bench/refit.py` measures what the refit gains (docs/operations.md).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from seqops.config import Params, Paths, TrainParams
from seqops.features import store
from seqops.features.sequences import user_summary
from seqops.models.nets.baselines import PopularityModel
from seqops.models.training.artifact import Artifact, save_artifact
from seqops.models.training.data import churn_flags, type_ids
from seqops.models.training.splits import history_times
from seqops.models.training.train import TrainResult, train_model

log = logging.getLogger(__name__)

REFIT_MODES = ("all", "tail", "off")
FIT_CHECK_USERS = 2048  # users whose last event is scored after each refit epoch (a fit check, not a selection)


@dataclass
class RefitRows:
    """Training rows of the refit: each user's history through their last event up to the cut."""

    users: np.ndarray
    seqs: list[np.ndarray]
    types: list[np.ndarray]
    churn: list[np.ndarray]

    def fit_check(
        self, limit: int = FIT_CHECK_USERS, seed: int = 0
    ) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray]]:
        """(inputs, targets, types) predicting each sampled user's last event from the ones before it.
        These targets are trained on: the numbers show the fit, they select nothing."""
        rng = np.random.default_rng(seed)
        rows = [i for i, s in enumerate(self.seqs) if len(s) >= 2]
        rows = sorted(rng.choice(rows, size=min(limit, len(rows)), replace=False)) if rows else []
        return (
            [self.seqs[i][:-1] for i in rows],
            np.array([self.seqs[i][-1] for i in rows], dtype=np.int64),
            [self.types[i][:-1] for i in rows],
        )


def refit_entities(events: pd.DataFrame, through: pd.Timestamp | None = None, drop_last: int = 0) -> pd.DataFrame:
    """One entity row per user at their last kept event: events after `through` and each user's last
    `drop_last` events are left out (the flow keeps all; the bench drops the test event)."""
    events = events.sort_values(["user_id", "ts"], kind="stable")
    if through is not None:
        events = events[events["ts"] <= through]
    if drop_last:
        events = events[events.groupby("user_id").cumcount(ascending=False) >= drop_last]
    last = events.groupby("user_id", sort=True).tail(1)
    return pd.DataFrame(
        {"user_id": last["user_id"].to_numpy(np.int64), "event_timestamp": last["ts"].to_numpy(), "role": "refit"}
    ).reset_index(drop=True)


def refit_rows(params: Params, paths: Paths, through: pd.Timestamp | None = None, drop_last: int = 0) -> RefitRows:
    """Ask Feast for each user's history as of their last kept event (point in time, like the splits)."""
    events = pd.read_parquet(paths.events, columns=["user_id", "item_id", "ts", "event_type"])
    events = events.sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True)
    entities = refit_entities(events, through, drop_last)
    entities["event_timestamp"] = pd.to_datetime(entities["event_timestamp"], utc=True)
    joined = store.historical_features(paths, entities, params.features.store_profile)
    joined = joined[joined["last_items"].map(lambda h: h is not None and len(h) >= 2)].sort_values(
        "user_id", kind="stable"
    )
    times = history_times(events, joined)
    data_end = float((events["ts"].max() - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1))
    horizon_s = params.model.churn_horizon_days * 86400
    event_types = list(params.ingest.event_types)
    return RefitRows(
        users=joined["user_id"].to_numpy(np.int64),
        seqs=[np.asarray(h, dtype=np.int64) for h in joined["last_items"]],
        types=[type_ids(t, event_types) for t in joined["last_types"]],
        churn=[churn_flags(t, horizon_s, data_end) for t in times],
    )


def refit_train_params(train: TrainParams, epochs: int) -> TrainParams:
    """The candidate's epoch count, no time budget, no early stop: model selection already happened."""
    return train.model_copy(update={"epochs": max(1, int(epochs)), "patience": int(epochs) + 1, "max_minutes": None})


def refit_model(
    params: Params, paths: Paths, candidate: Artifact, rows: RefitRows, mode: str
) -> tuple[object, TrainResult]:
    """Train the served model on `rows` (see the module docstring for the modes); returns it on CPU."""
    # imported here: the train stage's module imports the registry, which the refit's callers hold already
    from seqops.models.training.stages import initial_model

    if mode == "tail":
        model, epochs = candidate.model, 1
    elif mode == "all":
        model, _ = initial_model(candidate.n_items, params, paths)
        epochs = max(1, int(candidate.meta.get("best_epoch") or params.train.epochs))
    else:
        raise ValueError(f"train.refit must be one of {REFIT_MODES} to refit (got {mode!r})")
    train_p = refit_train_params(params.train, epochs)
    check_inputs, check_targets, check_types = rows.fit_check(seed=params.train.seed)
    reads_types = bool(getattr(model.config, "event_types", None))
    result = train_model(
        model,
        rows.seqs,
        check_inputs,
        check_targets,
        train_p,
        params.evaluate,
        train_types=rows.types if reads_types else None,
        train_churn=rows.churn if reads_types else None,
        valid_types=check_types if reads_types else None,
        progress=False,
    )
    model.to("cpu")
    return model, result


def refit_stage(
    params: Params,
    paths: Paths,
    candidate_dir: Path,
    out_dir: Path,
    mode: str | None = None,
    rows: RefitRows | None = None,
) -> dict:
    """Write the refit of the candidate in `candidate_dir` to `out_dir`; returns its metadata."""
    mode = mode or params.train.refit
    start = time.perf_counter()
    candidate = Artifact.load(candidate_dir)
    rows = rows if rows is not None else refit_rows(params, paths)
    model, result = refit_model(params, paths, candidate, rows, mode)
    counts = np.bincount(np.concatenate(rows.seqs), minlength=candidate.n_items + 1)[: candidate.n_items + 1]
    meta = {
        **{k: v for k, v in candidate.meta.items() if k != "model_class"},
        "refit_mode": mode,
        "n_train_sequences": len(rows.seqs),
        "n_train_events": int(sum(len(s) for s in rows.seqs)),
        "refit_epochs": len(result.history),
        "history": result.history,
        "refit_seconds": time.perf_counter() - start,
    }
    if out_dir.exists():
        shutil.rmtree(out_dir)
    features = pd.read_parquet(paths.user_features)
    save_artifact(
        out_dir, model, PopularityModel.from_counts(counts), meta, paths.vocab / "items.parquet", user_summary(features)
    )
    log.info(
        "refit (%s) of the candidate: %d sequences, %d epoch(s), %.1f s",
        mode,
        len(rows.seqs),
        len(result.history),
        meta["refit_seconds"],
    )
    return meta


__all__ = [
    "REFIT_MODES",
    "RefitRows",
    "refit_entities",
    "refit_model",
    "refit_rows",
    "refit_stage",
    "refit_train_params",
]
