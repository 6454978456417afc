"""Full-ranking next-item metrics: every item 1..n_items is ranked for every user (no sampling).

Rank of the target = number of items scored >= the target's score, the target included. Ties are
therefore counted pessimistically: a model that scores everything equally gets rank n_items, not 1.
The padding column 0 is never ranked; with `exclude`, the given item ids (the user's history) are
removed from the ranking, except the target itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from seqops.config import EvaluateParams
from seqops.models.data import iter_batches

ScoreFn = Callable[[Sequence[np.ndarray]], np.ndarray]


def target_ranks(scores: np.ndarray, targets: np.ndarray, exclude: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """[N, n_items + 1] scores, [N] target ids -> [N] 1-based ranks of the targets (ties pessimistic)."""
    targets = np.asarray(targets, dtype=np.int64)
    n_rows, n_cols = scores.shape
    if len(targets) != n_rows:
        raise ValueError(f"{n_rows} score rows but {len(targets)} targets")
    if n_rows and (targets.min() < 1 or targets.max() >= n_cols):
        raise ValueError(f"targets must be item ids in 1..{n_cols - 1}")
    scores = np.array(scores, dtype=np.float64)  # a copy (columns are masked below), no precision lost
    rows = np.arange(n_rows)
    target_scores = scores[rows, targets]
    scores[:, 0] = -np.inf
    if exclude is not None:
        lengths = [len(items) for items in exclude]
        flat = np.concatenate([np.asarray(items, dtype=np.int64) for items in exclude] + [np.zeros(0, np.int64)])
        scores[np.repeat(rows, lengths), flat] = -np.inf
    scores[rows, targets] = target_scores  # the target is never excluded
    return (scores >= target_scores[:, None]).sum(axis=1)


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = (5, 10, 20)) -> dict[str, float]:
    """HR@k, NDCG@k (one relevant item: 1 / log2(rank + 1) inside the top k), MRR and n_users."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if len(ranks) == 0:  # no users: all metrics 0, n_users tells the caller
        return {**{f"{m}@{k}": 0.0 for k in ks for m in ("hr", "ndcg")}, "mrr": 0.0, "n_users": 0}
    metrics: dict[str, float] = {}
    for k in ks:
        hit = ranks <= k
        metrics[f"hr@{k}"] = float(hit.mean())
        metrics[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 1), 0.0).mean())
    metrics["mrr"] = float((1.0 / ranks).mean())
    metrics["n_users"] = len(ranks)
    return metrics


def rank_metrics(
    scores: np.ndarray,
    targets: np.ndarray,
    ks: Sequence[int] = (5, 10, 20),
    exclude: Sequence[np.ndarray] | None = None,
) -> dict[str, float]:
    return metrics_from_ranks(target_ranks(scores, targets, exclude), ks)


def evaluate(
    score_fn: ScoreFn,
    inputs: Sequence[np.ndarray],
    targets: np.ndarray,
    p: EvaluateParams,
    batch_size: int = 256,
    *,
    progress: bool = True,
) -> dict[str, float]:
    """Score histories in batches with score_fn(histories) -> [B, n_items + 1] and rank the targets."""
    targets = np.asarray(targets, dtype=np.int64)
    if len(inputs) != len(targets):
        raise ValueError(f"{len(inputs)} histories but {len(targets)} targets")
    ranks = [np.zeros(0, dtype=np.int64)]
    batches = zip(iter_batches(inputs, batch_size), iter_batches(targets, batch_size))
    total = -(-len(inputs) // batch_size)
    for histories, batch_targets in tqdm(batches, total=total, desc="evaluate", leave=False, disable=not progress):
        exclude = histories if p.exclude_seen else None
        ranks.append(target_ranks(score_fn(histories), batch_targets, exclude))
    return metrics_from_ranks(np.concatenate(ranks), p.ks)


__all__ = ["ScoreFn", "evaluate", "metrics_from_ranks", "rank_metrics", "target_ranks"]
