"""Anomaly scores per user: how surprising a user's recent events are to the champion (mean
negative log-likelihood and log rank of the actual next items) beside behaviour features (speed,
repetition, catalogue walking, category entropy, session shape), in an Isolation Forest.

Where it lives (models/, not models/release/): it scores users with a trained artifact, like the
evaluator; it is not part of the gate or the registry.

Nothing is pickled. The detector is refitted deterministically (seeded forest, seeded sample) on
the champion's own training users — the artifact's `reference.parquet` (each user's latest
feature row) — whenever a champion is loaded, so a Bento, a rollback or a restart all get the same
forest for the same version without a second file to keep in step. The cost is a fit at the first
/anomaly of a new champion (seconds: one forward pass per history prefix of `max_fit_users` users).

A user is described by what the online feature row holds (and what a Bento can read): the last
items, events and sessions so far and the gap before the last event. Speed is therefore the
session shape (events per session) and that last gap, not a per-event gap series.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from seqops.config import AnomalyParams
from seqops.models.training.artifact import Artifact

SCORE_BATCH = 512  # histories per forward pass
MIN_Z = 2.0  # a feature is a reason when its value is this many standard deviations from the training users'
# An Isolation Forest saturates past the training range: every point beyond the most extreme training
# user is isolated at the same depth, so a bot 50 sd out scores like a user 4 sd out. The score adds a
# tail term for that: TAIL_WEIGHT per standard deviation of the most extreme feature past TAIL_Z.
TAIL_Z, TAIL_WEIGHT = 4.0, 0.02
MIN_STD = 0.05  # features are shares, logs and NLLs: a spread below this is treated as this

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
    "events_per_session": "events per session (speed, session shape)",
    "log_gap_s": "gap before the last event (log seconds)",
}
TIMED = ("events_per_session", "log_gap_s")  # need real timestamps
CATEGORICAL = ("category_entropy", "category_shift")  # need item categories


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


def surprise(artifact: Artifact, windows: list[UserWindow], window: int) -> dict[str, np.ndarray]:
    """The champion's view of each user's last `window` events: step by step (each next item given
    everything before it) and as a block (the last half-window given only the history before it,
    so a history that continues in another person's style cannot be absorbed as it goes)."""
    owners, contexts, targets = [], [], []
    block_owners, block_contexts, block_targets = [], [], []
    for u, w in enumerate(windows):
        n = len(w.items)
        for t in range(max(1, n - window), n):
            owners.append(u), contexts.append(w.items[:t]), targets.append(w.items[t])
        half = max(1, min(window, n - 1) // 2)
        for t in range(n - half, n) if n > half else ():
            block_owners.append(u), block_contexts.append(w.items[: n - half]), block_targets.append(w.items[t])
    nll, rank = _score_targets(artifact, contexts, np.asarray(targets, dtype=np.int64))
    block_nll, _ = _score_targets(artifact, block_contexts, np.asarray(block_targets, dtype=np.int64))
    return {
        "surprise_nll": _mean_by(owners, nll, len(windows)),
        "surprise_log_rank": _mean_by(owners, np.log(rank), len(windows)),
        "context_nll": _mean_by(block_owners, block_nll, len(windows)),
    }


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


def _total_variation(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) == 0 or len(b) == 0:
        return 0.0
    values = np.union1d(a, b)
    pa = np.array([(a == v).mean() for v in values])
    pb = np.array([(b == v).mean() for v in values])
    return float(0.5 * np.abs(pa - pb).sum())


def behaviour(w: UserWindow, window: int, categories: np.ndarray | None, log_counts: np.ndarray) -> dict[str, float]:
    """Behaviour over the last `window` events (no model)."""
    recent = w.items[-window:]
    steps = np.diff(recent)
    known = recent[(recent > 0) & (recent < len(log_counts))]
    out = {
        "repeat_share": 1.0 - len(np.unique(recent)) / max(1, len(recent)),
        "cycle_share": _cycle_share(recent),
        "id_step_share": float(((steps >= 1) & (steps <= 2)).mean()) if len(steps) else 0.0,
        "log_popularity": float(log_counts[known].mean()) if len(known) else 0.0,
        "events_per_session": w.n_events / max(1, w.n_sessions) if w.n_events and w.n_sessions else np.nan,
        "log_gap_s": float(np.log1p(max(0.0, w.secs_since_prev))) if w.secs_since_prev is not None else np.nan,
    }
    if categories is not None:
        cats = categories[np.clip(w.items, 0, len(categories) - 1)]
        half = max(1, min(window, len(cats)) // 2)
        out["category_entropy"] = _entropy(cats[-window:])
        out["category_shift"] = _total_variation(cats[:-half], cats[-half:]) if len(cats) > half else 0.0
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


@dataclass
class AnomalyDetector:
    """Standardised features → Isolation Forest; the threshold flags `contamination` of the fit users."""

    names: list[str]
    mean: np.ndarray
    std: np.ndarray
    forest: IsolationForest
    threshold: float

    @classmethod
    def fit(cls, table: pd.DataFrame, params: AnomalyParams) -> "AnomalyDetector":
        names = list(table.columns)
        x = table.to_numpy(dtype=np.float64)
        mean = np.nanmean(x, axis=0)
        std = np.nanstd(x, axis=0)
        # A floor, not 1.0, for features (nearly) constant in training: nobody looping makes any
        # loop far out (Beauty's users never repeat a cycle), not a shrug.
        std = np.maximum(np.nan_to_num(std), MIN_STD)
        z = np.nan_to_num((x - mean) / std)
        forest = IsolationForest(n_estimators=params.n_estimators, random_state=params.seed).fit(z)
        detector = cls(names, mean, std, forest, 0.0)
        detector.threshold = float(np.quantile(detector._scores(z), 1.0 - params.contamination))
        return detector

    def z(self, table: pd.DataFrame) -> np.ndarray:
        return np.nan_to_num((table[self.names].to_numpy(dtype=np.float64) - self.mean) / self.std)  # nan → the mean

    def scores(self, table: pd.DataFrame) -> np.ndarray:
        """Higher = more anomalous: the forest's negated score (short isolation paths) plus the tail term."""
        return self._scores(self.z(table))

    def _scores(self, z: np.ndarray) -> np.ndarray:
        tail = np.maximum(0.0, np.abs(z).max(axis=1, initial=0.0) - TAIL_Z)
        return -self.forest.score_samples(z) + TAIL_WEIGHT * tail

    def reasons(self, table: pd.DataFrame, n_reasons: int) -> list[list[dict]]:
        """Per user: the features furthest from the training users (|z| ≥ MIN_Z), furthest first."""
        out = []
        for row_z, (_, row) in zip(self.z(table), table.iterrows()):
            order = [i for i in np.argsort(-np.abs(row_z)) if abs(row_z[i]) >= MIN_Z][:n_reasons]
            out.append(
                [
                    {
                        "feature": self.names[i],
                        "value": round(float(row[self.names[i]]), 4),
                        "z": round(float(row_z[i]), 2),
                        "direction": "high" if row_z[i] > 0 else "low",
                        "description": FEATURES[self.names[i]],
                    }
                    for i in order
                ]
            )
        return out


@dataclass
class AnomalyModel:
    """One champion's detector: the artifact that supplies the surprise, the item facts the
    behaviour features need, and the forest fitted on that champion's training users."""

    artifact: Artifact
    params: AnomalyParams
    categories: np.ndarray | None
    log_counts: np.ndarray
    names: list[str]
    detector: AnomalyDetector | None = None

    @classmethod
    def for_artifact(
        cls, artifact: Artifact, params: AnomalyParams, *, timed: bool = True, windows: list[UserWindow] | None = None
    ) -> "AnomalyModel":
        """Fit on `windows` (default: the artifact's training users, sampled to `max_fit_users`).
        `timed=False` for data without real timestamps (the speed features would be artefacts)."""
        categories = item_categories(artifact)
        counts = np.asarray(artifact.popularity.counts, dtype=np.float64)
        log_counts = np.log1p(np.pad(counts, (0, max(0, artifact.n_items + 1 - len(counts))))[: artifact.n_items + 1])
        names = [f for f in FEATURES if (timed or f not in TIMED) and (categories is not None or f not in CATEGORICAL)]
        model = cls(artifact, params, categories, log_counts, names)
        if windows is None:
            windows = windows_from_reference(artifact.reference())
        if len(windows) > params.max_fit_users:
            pick = np.random.default_rng(params.seed).choice(len(windows), params.max_fit_users, replace=False)
            windows = [windows[i] for i in np.sort(pick)]
        model.detector = AnomalyDetector.fit(model.features(windows), params)
        return model

    def features(self, windows: list[UserWindow]) -> pd.DataFrame:
        rows = pd.DataFrame([behaviour(w, self.params.window, self.categories, self.log_counts) for w in windows])
        model_view = pd.DataFrame(surprise(self.artifact, windows, self.params.window))
        return pd.concat([model_view, rows], axis=1)[self.names]

    def score(self, windows: list[UserWindow]) -> list[dict]:
        """Per user: score, flagged, threshold, reasons (the features that made it high)."""
        table = self.features(windows)
        scores = self.detector.scores(table)
        reasons = self.detector.reasons(table, self.params.n_reasons)
        return [
            {
                "score": round(float(s), 5),
                "flagged": bool(s > self.detector.threshold),
                "threshold": round(self.detector.threshold, 5),
                "reasons": r,
            }
            for s, r in zip(scores, reasons)
        ]


__all__ = [
    "FEATURES",
    "AnomalyDetector",
    "AnomalyModel",
    "UserWindow",
    "behaviour",
    "surprise",
    "windows_from_reference",
]
