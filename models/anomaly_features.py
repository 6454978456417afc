"""The signals the anomaly detector (models/anomaly.py) reads, per user, from what the online
feature row holds: the champion's surprise at the user's latest events (step by step, as a block
given only the earlier history, and with vs without that history — a change of person), and
behaviour without the model (repetition, catalogue walking, popularity, categories, speed)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from seqops.models.training.artifact import Artifact

SCORE_BATCH = 512  # histories per forward pass

FEATURES: dict[str, str] = {
    "surprise_nll": "how surprising each next item was to the model (mean negative log-likelihood)",
    "surprise_log_rank": "where the model ranked each actual next item (mean log rank)",
    "context_nll": "how unlike the user's earlier history the latest events are (NLL given the history before them)",
    "repeat_share": "share of repeated items in the window",
    "cycle_share": "share of events repeating the item 1 to 4 steps back (loops over a short cycle)",
    "id_step_share": "share of steps to the next item id (walking the catalogue in id order)",
    "log_popularity": "popularity of the items (mean log training count)",
    "category_entropy": "spread over categories (entropy)",
    "category_shift": "categories of the latest events vs the earlier history (total variation)",
    "category_novelty": "how unlikely the latest events' categories are under the user's earlier history (mean -log p)",
    "embedding_shift": "the latest events vs the earlier history in the champion's item space (1 - cosine of the means)",
    "switch_llr": "how much better the latest events are explained without the user's earlier history (a change of person)",
    "events_per_session": "events per session (speed, session shape)",
    "log_gap_s": "gap before the last event (log seconds)",
}
# Which side of the training users is suspicious: +1 high, -1 low, 0 both. The other side is not
# (a very predictable user, a popular-items-only user): its z counts as 0, so the flagged share is
# spent on departures that mean abuse.
DIRECTION: dict[str, int] = {"log_popularity": -1, "category_entropy": 0, "events_per_session": 0, "log_gap_s": 0}
# Abuse that moves several signals a little at once; the detector ranks each group's mean z (on the
# suspicious side) against the training users beside its Isolation Forest.
VIEWS: dict[str, tuple[str, ...]] = {
    "random_clicking": ("surprise_nll", "surprise_log_rank", "log_popularity"),
    "change_of_person": ("context_nll", "switch_llr", "embedding_shift", "category_shift", "category_novelty"),
}
TIMED = ("events_per_session", "log_gap_s")  # need real timestamps
CATEGORICAL = ("category_entropy", "category_shift", "category_novelty")  # need item categories


@dataclass
class UserWindow:
    """One user as the online feature row describes them."""

    items: np.ndarray  # dense item ids, oldest first
    n_events: int | None = None  # None (an explicit item list): speed unknown, counted as usual
    n_sessions: int | None = None
    secs_since_prev: float | None = None

    @classmethod
    def from_row(cls, row: dict) -> "UserWindow":
        gap = row.get("secs_since_prev")
        return cls(
            np.asarray(row["last_items"], dtype=np.int64),
            int(row.get("n_events") or len(row["last_items"])),
            max(1, int(row.get("n_sessions") or 1)),
            None if gap is None else float(gap),
        )


def windows_from_reference(reference: pd.DataFrame) -> list[UserWindow]:
    """The artifact's per-user training summary (features/sequences.py `user_summary`) as windows."""
    gaps = np.expm1(reference["log_gap_s"].to_numpy(dtype=np.float64))
    return [
        UserWindow(np.asarray(items, dtype=np.int64), int(n), max(1, int(s)), float(g))
        for items, n, s, g in zip(reference["last_items"], reference["n_events"], reference["n_sessions"], gaps)
    ]


def _nll_and_rank(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: -log softmax(scores)[target] over the real items, and the target's 1-based rank
    (ties pessimistic). Targets the model cannot rank (unknown, -inf) → nan."""
    items = scores[:, 1:].astype(np.float64)
    finite = np.where(np.isfinite(items), items, -np.inf)
    top = finite.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(finite - top).sum(axis=1))
    target_scores = scores[np.arange(len(targets)), targets].astype(np.float64)
    nll = log_z - target_scores
    rank = (finite >= target_scores[:, None]).sum(axis=1).astype(np.float64)
    bad = ~np.isfinite(target_scores)
    nll[bad], rank[bad] = np.nan, np.nan
    return nll, rank


def _score_targets(
    artifact: Artifact, contexts: list[np.ndarray], targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    nll, rank = np.full(len(targets), np.nan), np.full(len(targets), np.nan)
    for i in range(0, len(contexts), SCORE_BATCH):
        scores = artifact.scores(contexts[i : i + SCORE_BATCH])
        t = np.clip(targets[i : i + SCORE_BATCH], 0, scores.shape[1] - 1)
        nll[i : i + SCORE_BATCH], rank[i : i + SCORE_BATCH] = _nll_and_rank(scores, t)
        unknown = (targets[i : i + SCORE_BATCH] <= 0) | (targets[i : i + SCORE_BATCH] >= scores.shape[1])
        nll[i : i + SCORE_BATCH][unknown] = rank[i : i + SCORE_BATCH][unknown] = np.nan
    return nll, rank


def _half(n: int, window: int) -> int:
    """The latest events compared with the earlier history: half the window (at least one)."""
    return max(1, min(window, n - 1) // 2)


def surprise(artifact: Artifact, windows: list[UserWindow], window: int) -> dict[str, np.ndarray]:
    """The champion's view of each user's last `window` events: step by step (each next item given
    everything before it) and as a block (the last half-window given only the history before it,
    so a history that continues in another person's style cannot be absorbed as it goes)."""
    owners, contexts, targets, latest = [], [], [], []
    block_owners, block_contexts, block_targets = [], [], []
    for u, w in enumerate(windows):
        n = len(w.items)
        half = _half(n, window)
        for t in range(max(1, n - window), n):
            owners.append(u), contexts.append(w.items[:t]), targets.append(w.items[t]), latest.append(t >= n - half)
        for t in range(n - half, n) if n > half else ():
            block_owners.append(u), block_contexts.append(w.items[: n - half]), block_targets.append(w.items[t])
    nll, rank = _score_targets(artifact, contexts, np.asarray(targets, dtype=np.int64))
    block_nll, _ = _score_targets(artifact, block_contexts, np.asarray(block_targets, dtype=np.int64))
    # The same latest events given only the latest events before them (no earlier history):
    # better explained that way = the earlier history is someone else's.
    latest_a = np.asarray(latest, dtype=bool)
    alone_nll = _alone_nll(artifact, _alone(windows, window), np.asarray(targets, dtype=np.int64)[latest_a])
    return {
        "surprise_nll": _mean_by(owners, nll, len(windows)),
        "surprise_log_rank": _mean_by(owners, np.log(rank), len(windows)),
        "context_nll": _mean_by(block_owners, block_nll, len(windows)),
        "switch_llr": _mean_by(list(np.asarray(owners)[latest_a]), nll[latest_a] - alone_nll, len(windows)),
        "embedding_shift": embedding_shift(artifact, windows, window),
    }


def _alone_nll(artifact: Artifact, contexts: list[np.ndarray], targets: np.ndarray) -> np.ndarray:
    """NLL of each target given its context; an empty context (a new person's first event) is
    scored by training popularity, what the model has no input to do."""
    empty = np.asarray([len(c) == 0 for c in contexts], dtype=bool)
    out = np.full(len(targets), np.nan)
    if (~empty).any():
        out[~empty], _ = _score_targets(artifact, [c for c in contexts if len(c)], targets[~empty])
    counts = np.asarray(artifact.popularity.counts, dtype=np.float64)
    first = targets[empty]
    known = (first > 0) & (first < len(counts))
    log_p = np.log(counts[np.where(known, first, 0)] + 1.0) - np.log(counts[1:].sum() + len(counts) - 1)
    out[empty] = np.where(known, -log_p, np.nan)
    return out


def _alone(windows: list[UserWindow], window: int) -> list[np.ndarray]:
    """For each latest event (in `surprise`'s order): the latest events before it, without the earlier history."""
    out = []
    for w in windows:
        n = len(w.items)
        half = _half(n, window)
        start = n - half
        out += [w.items[start:t] for t in range(max(1, n - window), n) if t >= start]
    return out


def embedding_shift(artifact: Artifact, windows: list[UserWindow], window: int) -> np.ndarray:
    """1 - cosine between the mean unit item vectors (the champion's item table) of the latest
    half-window and of the history before it; nan without an item table or an earlier history."""
    out = np.full(len(windows), np.nan)
    table = getattr(artifact.model, "item_table", None)
    if table is None:
        return out
    with torch.inference_mode():
        vectors = table().float().numpy()
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
    for u, w in enumerate(windows):
        items = w.items[(w.items > 0) & (w.items < len(vectors))]
        half = _half(len(items), window)
        if len(items) > half:
            a, b = vectors[items[:-half]].mean(axis=0), vectors[items[-half:]].mean(axis=0)
            out[u] = 1.0 - float(a @ b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-9)
    return out


def _mean_by(owners: list[int], values: np.ndarray, n: int) -> np.ndarray:
    owners_a = np.asarray(owners, dtype=np.int64)
    ok = np.isfinite(values)
    sums = np.bincount(owners_a[ok], values[ok], minlength=n)
    counts = np.bincount(owners_a[ok], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _cycle_share(items: np.ndarray, max_period: int = 4) -> float:
    """Best over periods 1..max_period of the share of positions equal to the item one period back."""
    shares = [float((items[k:] == items[:-k]).mean()) for k in range(1, max_period + 1) if len(items) > k]
    return max(shares, default=0.0)


def _entropy(labels: np.ndarray) -> float:
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def _novelty(early: np.ndarray, latest: np.ndarray, n_categories: int) -> float:
    """Mean -log p(category) of the `latest` events under the `early` ones' category distribution,
    smoothed by one pseudo-event spread evenly over the categories (an unseen category is possible)."""
    counts = np.bincount(early[early >= 0], minlength=n_categories).astype(np.float64)
    p = (counts + 1.0 / n_categories) / (counts.sum() + 1.0)
    return float(-np.log(p[latest[latest >= 0]]).mean()) if (latest >= 0).any() else np.nan


def _total_variation(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) == 0 or len(b) == 0:
        return 0.0
    values = np.union1d(a, b)
    pa = np.array([(a == v).mean() for v in values])
    pb = np.array([(b == v).mean() for v in values])
    return float(0.5 * np.abs(pa - pb).sum())


def behaviour(
    w: UserWindow, window: int, categories: np.ndarray | None, counts: np.ndarray, counted: bool = False
) -> dict[str, float]:
    """Behaviour over the last `window` events (no model). `counted`: the user's own events are in
    the training `counts` (a training user): they are left out, so that a training user's items
    are as popular as they would be for a new user (Beauty's tail items are often known only to
    the one user who bought them)."""
    recent = w.items[-window:]
    steps = np.diff(recent)
    known = recent[(recent > 0) & (recent < len(counts))]
    popularity = counts[known]
    if counted and len(known):
        own = pd.Series(w.items).value_counts()
        popularity = np.maximum(0.0, popularity - own.reindex(known).to_numpy(dtype=np.float64))
    out = {
        "repeat_share": 1.0 - len(np.unique(recent)) / max(1, len(recent)),
        "cycle_share": _cycle_share(recent),
        "id_step_share": float(((steps >= 1) & (steps <= 2)).mean()) if len(steps) else 0.0,
        "log_popularity": float(np.log1p(popularity).mean()) if len(known) else 0.0,
        "events_per_session": w.n_events / max(1, w.n_sessions) if w.n_events and w.n_sessions else np.nan,
        "log_gap_s": float(np.log1p(max(0.0, w.secs_since_prev))) if w.secs_since_prev is not None else np.nan,
    }
    if categories is not None:
        cats = categories[np.clip(w.items, 0, len(categories) - 1)]
        half = max(1, min(window, len(cats)) // 2)
        out["category_entropy"] = _entropy(cats[-window:])
        out["category_shift"] = _total_variation(cats[:-half], cats[-half:]) if len(cats) > half else 0.0
        n_categories = int(categories.max()) + 1
        out["category_novelty"] = _novelty(cats[:-half], cats[-half:], n_categories) if len(cats) > half else np.nan
    return out


def item_categories(artifact: Artifact) -> np.ndarray | None:
    """Dense item id → category code (-1 unknown); None when the catalogue has fewer than two categories."""
    items = artifact.items()
    if "category" not in items or items["category"].astype(str).nunique() < 2:
        return None
    codes = np.full(artifact.n_items + 1, -1, dtype=np.int64)
    items = items[(items["item_id"] >= 1) & (items["item_id"] <= artifact.n_items)]
    codes[items["item_id"].to_numpy()] = pd.factorize(items["category"].astype(str))[0]
    return codes


__all__ = [
    "CATEGORICAL",
    "VIEWS",
    "DIRECTION",
    "FEATURES",
    "TIMED",
    "UserWindow",
    "behaviour",
    "item_categories",
    "surprise",
    "windows_from_reference",
]
