"""Next-item ranking metrics, and the classification metrics of the next-action and churn heads.

Full ranking (default): every item 1..n_items is ranked for every user. Rank of the target = number
of items scored >= the target's score, the target included. Ties are therefore counted
pessimistically: a model that scores everything equally gets rank n_items, not 1. The padding
column 0 is never ranked; with `exclude`, the given item ids (the user's history) are removed from
the ranking, except the target itself.

Sampled ranking (`evaluate.sampled_negatives: N`, as many papers report): the target is ranked
among N negatives drawn per user (by popularity or uniformly, never the target or, with
exclude_seen, a history item). Its numbers are much higher than full ranking's and are labelled so.

Coverage@k: the share of the catalogue that appears in at least one user's top k.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from seqops.config import EvaluateParams

ScoreFn = Callable[..., np.ndarray]  # (histories[, types]) -> [B, n_items + 1]


def _mask(scores: np.ndarray, targets: np.ndarray, exclude: Sequence[np.ndarray] | None) -> np.ndarray:
    """A float64 copy with padding and the excluded items at -inf; the target keeps its score."""
    scores = np.array(scores, dtype=np.float64)
    rows = np.arange(len(targets))
    target_scores = scores[rows, targets]
    scores[:, 0] = -np.inf
    if exclude is not None:
        lengths = [len(items) for items in exclude]
        flat = np.concatenate([np.asarray(items, dtype=np.int64) for items in exclude] + [np.zeros(0, np.int64)])
        scores[np.repeat(rows, lengths), flat] = -np.inf
    scores[rows, targets] = target_scores
    return scores


def _check_targets(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    targets = np.asarray(targets, dtype=np.int64)
    n_rows, n_cols = scores.shape
    if len(targets) != n_rows:
        raise ValueError(f"{n_rows} score rows but {len(targets)} targets")
    if n_rows and (targets.min() < 1 or targets.max() >= n_cols):
        raise ValueError(f"targets must be item ids in 1..{n_cols - 1}")
    return targets


def target_ranks(scores: np.ndarray, targets: np.ndarray, exclude: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """[N, n_items + 1] scores, [N] target ids -> [N] 1-based ranks of the targets (ties pessimistic)."""
    targets = _check_targets(scores, targets)
    masked = _mask(scores, targets, exclude)
    return (masked >= masked[np.arange(len(targets)), targets][:, None]).sum(axis=1)


def sampled_ranks(
    scores: np.ndarray,
    targets: np.ndarray,
    n_negatives: int,
    rng: np.random.Generator,
    weights: np.ndarray | None = None,
    exclude: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Ranks of the targets among `n_negatives` negatives per row, drawn with `weights` over the
    items (uniform when None) without the target and the excluded items."""
    targets = _check_targets(scores, targets)
    n_items = scores.shape[1] - 1
    base = np.ones(n_items + 1) if weights is None else np.asarray(weights, dtype=np.float64).clip(min=0) + 1e-12
    base[0] = 0.0
    ranks = np.empty(len(targets), dtype=np.int64)
    for row, target in enumerate(targets):
        w = base.copy()
        w[target] = 0.0
        if exclude is not None:
            w[np.asarray(exclude[row], dtype=np.int64)] = 0.0
        size = min(n_negatives, int((w > 0).sum()))
        negatives = rng.choice(n_items + 1, size=size, replace=False, p=w / w.sum())
        ranks[row] = 1 + int((scores[row, negatives] >= scores[row, target]).sum())
    return ranks


def top_items(scores: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """[n, k] best item ids per row, best first (padding, excluded and -inf items last)."""
    scores = np.array(scores, dtype=np.float64)
    scores[:, 0] = -np.inf
    if exclude is not None:
        rows = np.repeat(np.arange(len(exclude)), [len(h) for h in exclude])
        flat = np.concatenate([np.asarray(h, dtype=np.int64) for h in exclude] + [np.zeros(0, np.int64)])
        keep = flat < scores.shape[1]
        scores[rows[keep], flat[keep]] = -np.inf
    k = min(k, scores.shape[1] - 1)
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def per_user(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Each user's contribution to `metric` ("ndcg@10", "hr@10", "mrr") from the 1-based rank of
    their one relevant item: the metric is its mean. NDCG@k = 1 / log2(rank + 1) inside the top k."""
    ranks = np.asarray(ranks, dtype=np.float64)
    name, _, k = metric.partition("@")
    if name == "mrr":
        return 1.0 / ranks
    if name not in ("hr", "ndcg") or not k.isdigit():
        raise ValueError(f"unknown metric {metric!r} (use ndcg@K, hr@K or mrr)")
    hit = ranks <= int(k)
    return hit.astype(np.float64) if name == "hr" else np.where(hit, 1.0 / np.log2(ranks + 1), 0.0)


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = (5, 10, 20)) -> dict[str, float]:
    """HR@k, NDCG@k, MRR (the means of `per_user`) and n_users."""
    if len(ranks) == 0:  # no users: all metrics 0, n_users tells the caller
        return {**{f"{m}@{k}": 0.0 for k in ks for m in ("hr", "ndcg")}, "mrr": 0.0, "n_users": 0}
    metrics = {f"{m}@{k}": float(per_user(ranks, f"{m}@{k}").mean()) for k in ks for m in ("hr", "ndcg")}
    return {**metrics, "mrr": float(per_user(ranks, "mrr").mean()), "n_users": len(ranks)}


def rank_metrics(
    scores: np.ndarray,
    targets: np.ndarray,
    ks: Sequence[int] = (5, 10, 20),
    exclude: Sequence[np.ndarray] | None = None,
) -> dict[str, float]:
    return metrics_from_ranks(target_ranks(scores, targets, exclude), ks)


def model_metrics(evaluation: dict) -> dict:
    """The candidate's own metrics in an evaluate-stage file."""
    return evaluation.get("model") or {}


def ranking_label(p: EvaluateParams) -> str:
    if p.sampled_negatives:
        return f"sampled: target among {p.sampled_negatives} {p.sampled_by}-sampled negatives"
    return "full ranking over all items"


def evaluate(
    score_fn: ScoreFn, inputs: Sequence[np.ndarray], targets: np.ndarray, p: EvaluateParams, *args, **kwargs
) -> dict[str, float]:
    """Score histories in batches (score_fn(histories[, types]) -> [B, n_items + 1]), rank the
    targets and add coverage@k, under p.exclude_seen's protocol: `evaluate_seen_both_ways` (same
    arguments) with only that protocol computed."""
    return evaluate_seen_both_ways(score_fn, inputs, targets, p, *args, **kwargs, both=False)[p.exclude_seen]


def evaluate_seen_both_ways(
    score_fn: ScoreFn,
    inputs: Sequence[np.ndarray],
    targets: np.ndarray,
    p: EvaluateParams,
    batch_size: int = 256,
    *,
    types: Sequence[np.ndarray] | None = None,
    item_counts: np.ndarray | None = None,
    progress: bool = True,
    both: bool = True,
) -> dict[bool, dict[str, float]]:
    """The ranking metrics keyed by exclude_seen, True (history items removed from the ranking, the
    published protocol) and False, from the same scores (each batch is scored once); with
    `both=False` only p.exclude_seen's."""
    targets = np.asarray(targets, dtype=np.int64)
    if len(inputs) != len(targets):
        raise ValueError(f"{len(inputs)} histories but {len(targets)} targets")
    settings = (True, False) if both else (p.exclude_seen,)
    rngs = {exclude_seen: np.random.default_rng(p.seed) for exclude_seen in settings}
    weights = item_counts if p.sampled_by == "popularity" else None
    ranks = {exclude_seen: [np.zeros(0, dtype=np.int64)] for exclude_seen in settings}
    recommended = {exclude_seen: {k: set() for k in p.ks} for exclude_seen in settings}
    n_items, total = 0, -(-len(inputs) // batch_size)
    for start in tqdm(
        range(0, len(inputs), batch_size), total=total, desc="evaluate", leave=False, disable=not progress
    ):
        histories, batch_targets = inputs[start : start + batch_size], targets[start : start + batch_size]
        scores = score_fn(histories) if types is None else score_fn(histories, types[start : start + batch_size])
        n_items = scores.shape[1] - 1
        for exclude_seen in settings:
            exclude = histories if exclude_seen else None
            if p.sampled_negatives:
                ranks[exclude_seen].append(
                    sampled_ranks(scores, batch_targets, p.sampled_negatives, rngs[exclude_seen], weights, exclude)
                )
            else:
                ranks[exclude_seen].append(target_ranks(scores, batch_targets, exclude))
            top = top_items(scores, max(p.ks), exclude)
            for k in p.ks:
                recommended[exclude_seen][k].update(top[:, :k].ravel().tolist())
    out = {}
    for exclude_seen in settings:
        metrics = metrics_from_ranks(np.concatenate(ranks[exclude_seen]), p.ks)
        for k in p.ks:
            metrics[f"coverage@{k}"] = len(recommended[exclude_seen][k]) / max(n_items, 1)
        out[exclude_seen] = metrics
    return out


def classification_metrics(
    scores: np.ndarray, labels: np.ndarray, classes: Sequence[str] | None = None
) -> dict[str, float]:
    """Accuracy, macro precision / recall / F1 and (one-vs-rest macro) AUC.

    Binary: `scores` [N] logits, `labels` [N] in {0, 1}. Multi-class: `scores` [N, C] logits,
    `labels` [N] class indices 0..C-1; AUC averages the classes present in the labels.
    """
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score

    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    out: dict[str, float] = {"n": int(len(labels))}
    if len(labels) == 0:
        return out
    if scores.ndim == 1:
        predicted = (scores > 0).astype(np.int64)
        present = np.unique(labels)
        auc = float(roc_auc_score(labels, scores)) if len(present) == 2 else float("nan")
        out["positive_share"] = float(labels.mean())
        average = "binary"
    else:
        predicted = scores.argmax(axis=1)
        present = np.unique(labels)
        probs = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        aucs = [roc_auc_score(labels == c, probs[:, c]) for c in present if 0 < (labels == c).sum() < len(labels)]
        auc = float(np.mean(aucs)) if aucs else float("nan")
        average = "macro"
        if classes is not None:
            out["class_shares"] = {str(classes[c]): float((labels == c).mean()) for c in present}
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, average=average, labels=None if average == "binary" else present, zero_division=0
    )
    out.update(
        accuracy=float(accuracy_score(labels, predicted)),
        precision=float(precision),
        recall=float(recall),
        f1=float(f1),
        auc=auc,
    )
    return out


def head_metrics(artifact, test, event_types: Sequence[str], churn_horizon_s: float) -> dict:
    """Classification metrics of an artifact's next_action / churn heads on an EvalSet's targets
    (only the heads the model has; duck-typed: `artifact.heads`, `artifact.head_scores`)."""
    out = {}
    if "next_action" in artifact.heads:
        known = test.target_types > 0
        histories = [h for h, k in zip(test.inputs, known) if k]
        types = [t for t, k in zip(test.types, known) if k]
        logits = artifact.head_scores("next_action", histories, types) if histories else np.zeros((0, 1))
        out["next_action"] = classification_metrics(logits, test.target_types[known] - 1, event_types)
    if "churn" in artifact.heads:
        logits = artifact.head_scores("churn", test.inputs, test.types)
        out["churn"] = classification_metrics(logits, test.churn_labels(churn_horizon_s))
    return out


__all__ = [
    "ScoreFn",
    "classification_metrics",
    "evaluate",
    "evaluate_seen_both_ways",
    "head_metrics",
    "metrics_from_ranks",
    "model_metrics",
    "rank_metrics",
    "ranking_label",
    "sampled_ranks",
    "target_ranks",
    "top_items",
]
