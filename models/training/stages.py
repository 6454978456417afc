"""DVC stage bodies for `train` and `evaluate` (the CLI calls these; `dvc repro` calls the CLI)."""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pandas as pd
import torch
from torch import nn

from seqops.config import Params, Paths
from seqops.features.sequences import user_summary
from seqops.io import file_md5
from seqops.models.nets.baselines import PopularityModel
from seqops.models.nets.zoo import build_model
from seqops.models.release.registry import Registry
from seqops.models.training.artifact import Artifact, save_artifact
from seqops.models.training.evaluate import evaluate, head_metrics
from seqops.models.training.splits import EvalSet, build_splits, protocol_label
from seqops.models.training.train import is_fitted_by_counting, plot_history, train_model

log = logging.getLogger(__name__)


def params_hash(params: Params) -> str:
    return hashlib.sha256(params.model_dump_json().encode()).hexdigest()[:12]


SHAPE_FREE_KEYS = {"n_items", "nnz", "transformers_version", "architectures", "dtype", "_name_or_path", "_commit_hash"}


def _shape(config) -> dict:
    return {k: v for k, v in config.to_dict().items() if k not in SHAPE_FREE_KEYS}


def item_texts_for(params: Params, paths: Paths) -> list[str] | None:
    """Item texts when the model needs them (the lm, or item_text: init), from the item vocabulary."""
    if params.model.kind != "lm" and params.model.item_text != "init":
        return None
    from seqops.models.nets.text import item_texts

    return item_texts(pd.read_parquet(paths.vocab / "items.parquet"))


def initial_model(n_items: int, params: Params, paths: Paths) -> tuple[nn.Module, str | None]:
    """Warm start from the champion when allowed and its class and shape match; else a fresh model.
    Count models are refitted every time (their state is the counts)."""
    torch.manual_seed(params.train.seed)
    texts = item_texts_for(params, paths)
    fresh = build_model(params.model, n_items, params.features.max_len, params.ingest.event_types, texts)
    champion = (
        Registry(paths, params.registry).champion()
        if params.train.warm_start and not is_fitted_by_counting(fresh)
        else None
    )
    if champion is None:
        return fresh, None
    model = Artifact.load(Registry(paths, params.registry).model_dir(champion)).model
    if type(model) is not type(fresh) or _shape(model.config) != _shape(fresh.config) or n_items < model.config.n_items:
        log.info("champion %s has another architecture or a larger catalogue: training from scratch", champion)
        return fresh, None
    log.info("warm start from champion %s (%d → %d items)", champion, model.config.n_items, n_items)
    if texts is not None and params.model.kind == "lm":
        model.grow_items(n_items, texts=texts[model.config.n_items + 1 :])
    else:
        model.grow_items(n_items)
    return model, champion


def train_stage(params: Params, paths: Paths) -> dict:
    splits = build_splits(
        paths,
        params.features.store_profile,
        params.evaluate,
        params.ingest.event_types,
        params.model.churn_horizon_days * 86400,
    )
    item_counts = np.bincount(np.concatenate(splits.train_seqs), minlength=splits.n_items + 1)
    popularity = PopularityModel.from_counts(item_counts)
    model, parent = initial_model(splits.n_items, params, paths)
    reads_types = bool(getattr(model.config, "event_types", None))
    result = train_model(
        model,
        splits.train_seqs,
        splits.valid.inputs,
        splits.valid.targets,
        params.train,
        params.evaluate,
        train_types=splits.train_types if reads_types else None,
        train_churn=splits.train_churn if reads_types else None,
        valid_types=splits.valid.types if reads_types else None,
    )
    model.to("cpu")

    features = pd.read_parquet(paths.user_features)
    manifest = paths.events.parent / "manifest.json"
    meta = {
        "kind": params.model.kind,
        "heads": list(getattr(model, "heads", ("next_item",))),
        "data_version": file_md5(paths.events),
        "features_version": file_md5(paths.user_features),
        "params_hash": params_hash(params),
        "params": params.model_dump(include={"model", "train", "features", "evaluate"}),
        "parent_version": parent,
        "n_items": splits.n_items,
        "n_train_sequences": len(splits.train_seqs),
        "best_epoch": result.best_epoch,
        "history": result.history,
        "protocol": protocol_label(params.evaluate),
        "sources": json.loads(manifest.read_text()) if manifest.exists() else None,
    }
    save_artifact(paths.candidate, model, popularity, meta, paths.vocab / "items.parquet", user_summary(features))
    plot_history(result.history, paths.candidate / "training_curve.png")
    splits.test.to_parquet(paths.home / "models" / "test_set.parquet")
    return meta


def evaluate_stage(params: Params, paths: Paths) -> dict:
    artifact = Artifact.load(paths.candidate)
    test = EvalSet.from_parquet(paths.home / "models" / "test_set.parquet")
    types = test.types if artifact.reads_types else None
    counts = artifact.popularity.counts
    metrics = {
        "protocol": protocol_label(params.evaluate),
        "exclude_seen": params.evaluate.exclude_seen,
        "kind": params.model.kind,
        "model": evaluate(
            lambda h, t=None: artifact.scores(h, types=t),
            test.inputs,
            test.targets,
            params.evaluate,
            types=types,
            item_counts=counts,
        ),
        "popularity": evaluate(
            artifact.popularity.next_item_scores, test.inputs, test.targets, params.evaluate, item_counts=counts
        ),
        "heads": head_metrics(artifact, test, params.ingest.event_types, params.model.churn_horizon_days * 86400),
    }
    paths.eval_metrics.parent.mkdir(parents=True, exist_ok=True)
    paths.eval_metrics.write_text(json.dumps(metrics, indent=2))
    return metrics
