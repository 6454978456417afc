"""DVC stage bodies for `train` and `evaluate` (the CLI calls these; `dvc repro` calls the CLI)."""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pandas as pd
import torch

from seqops.config import Params, Paths
from seqops.features.sequences import user_summary
from seqops.models.artifact import Artifact, save_artifact
from seqops.models.baselines import PopularityModel
from seqops.models.evaluate import evaluate
from seqops.models.registry import Registry
from seqops.models.sasrec import SASRecModel
from seqops.models.splits import PROTOCOL, EvalSet, build_splits
from seqops.models.train import plot_history, train_sasrec

log = logging.getLogger(__name__)


def file_md5(path) -> str:
    """Same hash DVC records for a file output in dvc.lock: the data version."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def params_hash(params: Params) -> str:
    return hashlib.sha256(params.model_dump_json().encode()).hexdigest()[:12]


def initial_model(n_items: int, params: Params, paths: Paths) -> tuple[SASRecModel, str | None]:
    """Warm start from the champion when allowed and the architecture matches; else a fresh model."""
    torch.manual_seed(params.train.seed)
    fresh = SASRecModel.from_params(n_items, params.features.max_len, params.model)
    champion = Registry(paths).champion() if params.train.warm_start else None
    if champion is None:
        return fresh, None
    model = Artifact.load(Registry(paths).model_dir(champion)).model
    shape = ("hidden_size", "num_layers", "num_heads", "max_len")
    if any(getattr(model.config, key) != getattr(fresh.config, key) for key in shape) or n_items < model.config.n_items:
        log.info("champion %s has another architecture or a larger catalogue: training from scratch", champion)
        return fresh, None
    log.info("warm start from champion %s (%d → %d items)", champion, model.config.n_items, n_items)
    model.grow_items(n_items)
    return model, champion


def train_stage(params: Params, paths: Paths) -> dict:
    splits = build_splits(paths, params.features.store_profile)
    item_counts = np.bincount(np.concatenate(splits.train_seqs), minlength=splits.n_items + 1)
    popularity = PopularityModel.from_counts(item_counts)
    model, parent = initial_model(splits.n_items, params, paths)
    result = train_sasrec(model, splits.train_seqs, splits.valid.inputs, splits.valid.targets, params.train, params.evaluate)

    features = pd.read_parquet(paths.user_features)
    meta = {
        "kind": params.model.kind,
        "data_version": file_md5(paths.events),
        "features_version": file_md5(paths.user_features),
        "params_hash": params_hash(params),
        "params": params.model_dump(include={"model", "train", "features"}),
        "parent_version": parent,
        "n_items": splits.n_items,
        "n_train_sequences": len(splits.train_seqs),
        "best_epoch": result.best_epoch,
        "history": result.history,
        "protocol": PROTOCOL,
        "sources": json.loads((paths.events.parent / "manifest.json").read_text()) if (paths.events.parent / "manifest.json").exists() else None,
    }
    save_artifact(paths.candidate, model, popularity, meta, paths.vocab / "items.parquet", user_summary(features))
    plot_history(result.history, paths.candidate / "training_curve.png")
    splits.test.to_parquet(paths.home / "models" / "test_set.parquet")
    return meta


def evaluate_stage(params: Params, paths: Paths) -> dict:
    artifact = Artifact.load(paths.candidate)
    test = EvalSet.from_parquet(paths.home / "models" / "test_set.parquet")
    metrics = {
        "protocol": PROTOCOL,
        "exclude_seen": params.evaluate.exclude_seen,
        "sasrec": evaluate(lambda h: artifact.scores(h), test.inputs, test.targets, params.evaluate),
        "popularity": evaluate(artifact.popularity.next_item_scores, test.inputs, test.targets, params.evaluate),
    }
    paths.eval_metrics.parent.mkdir(parents=True, exist_ok=True)
    paths.eval_metrics.write_text(json.dumps(metrics, indent=2))
    return metrics
