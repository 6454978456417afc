"""Anomaly scores per user: how surprising a user's recent events are to the champion (mean
negative log-likelihood and log rank of the actual next items; whether they are better explained
without the user's earlier history) beside behaviour features (speed, repetition, catalogue
walking, popularity, categories and their change), in an Isolation Forest. The signals are in
models/anomaly_features.py.

Each feature is standardised on the training users and read on its suspicious side only
(`DIRECTION`: a user far more predictable than usual is not an abuser), so the share the threshold
flags is spent on departures that mean something. The training users are described as a new user
would be: their own events are taken out of the item counts before their popularity is read (as
the gate's drift check does), otherwise every new user's niche items look rarer than the fit set's.

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

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from seqops.config import AnomalyParams
from seqops.models.anomaly_features import (
    CATEGORICAL,
    DIRECTION,
    FEATURES,
    TIMED,
    VIEWS,
    UserWindow,
    behaviour,
    item_categories,
    surprise,
    windows_from_reference,
)
from seqops.models.training.artifact import Artifact

MIN_Z = 2.0  # a feature is a reason when its value is this many standard deviations from the training users'
# Ranks saturate past the training range (and an Isolation Forest isolates every point beyond the
# most extreme training user at the same depth), so a bot 50 sd out would score like a user 4 sd out.
# The score adds a tail term for that: TAIL_WEIGHT per standard deviation of the most extreme feature past TAIL_Z.
TAIL_Z, TAIL_WEIGHT = 4.0, 0.02
MIN_STD = 0.05  # features are shares, logs and NLLs: a spread below this is treated as this
BEYOND_MARGIN = 1.0  # standard deviations past the most extreme fit user that make a signal out of range


def _tail_share(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Share of the (sorted) reference at least as high as each value, counting the value itself:
    in (0, 1], 1 / (N + 1) past the most extreme fit user."""
    above = len(reference) - np.searchsorted(reference, values, side="left")
    return (above + 1.0) / (len(reference) + 1.0)


@dataclass
class AnomalyDetector:
    """Views of the standardised features, each ranked against the fit users: an Isolation Forest
    over all of them (a user far out on one or several signals: loops, scrapers, bots) and one
    composite per abuse that moves several signals a little at once (`VIEWS`: the mean of their
    z on the suspicious side — random clicking, a change of person). The score is the rarest view,
    as -log10 of the share of fit users at least as extreme; the threshold flags `contamination` of them."""

    names: list[str]
    mean: np.ndarray
    std: np.ndarray
    forest: IsolationForest | None
    threshold: float
    references: dict[str, np.ndarray] = field(default_factory=dict)  # view → the fit users' values, sorted
    reach: np.ndarray = field(default_factory=lambda: np.zeros(0))  # each feature's largest suspicious z in fit

    @classmethod
    def fit(cls, table: pd.DataFrame, params: AnomalyParams) -> "AnomalyDetector":
        names = list(table.columns)
        x = table.to_numpy(dtype=np.float64)
        mean = np.nanmean(x, axis=0)
        std = np.nanstd(x, axis=0)
        # A floor, not 1.0, for features (nearly) constant in training: nobody looping makes any
        # loop far out (Beauty's users never repeat a cycle), not a shrug.
        std = np.maximum(np.nan_to_num(std), MIN_STD)
        detector = cls(names, mean, std, None, 0.0)
        signed = np.nan_to_num((x - mean) / std)
        z = detector._suspicious(signed)
        detector.forest = IsolationForest(n_estimators=params.n_estimators, random_state=params.seed).fit(z)
        detector.references = {view: np.sort(values) for view, values in detector._views(signed).items()}
        detector.reach = z.max(axis=0, initial=0.0)
        detector.threshold = float(np.quantile(detector._scores(signed), 1.0 - params.contamination))
        return detector

    def _sides(self) -> np.ndarray:
        return np.asarray([DIRECTION.get(name, 1) for name in self.names], dtype=np.float64)

    def _suspicious(self, z: np.ndarray) -> np.ndarray:
        """z on each feature's suspicious side (DIRECTION), 0 on the other; |z| where both are."""
        side = self._sides()
        return np.where(side == 0, np.abs(z), np.maximum(0.0, side * z))

    def signed_z(self, table: pd.DataFrame) -> np.ndarray:
        return np.nan_to_num((table[self.names].to_numpy(dtype=np.float64) - self.mean) / self.std)  # nan → the mean

    def z(self, table: pd.DataFrame) -> np.ndarray:
        """How far on its suspicious side each feature is (standard deviations of the training users)."""
        return self._suspicious(self.signed_z(table))

    def scores(self, table: pd.DataFrame) -> np.ndarray:
        """Higher = more anomalous: -log10 of the rarest view's tail share among the fit users, plus the tail term."""
        return self._scores(self.signed_z(table))

    def _views(self, signed: np.ndarray) -> dict[str, np.ndarray]:
        """Each view's value per user (higher = more suspicious)."""
        oriented = signed * np.where(self._sides() == 0, 1.0, self._sides())
        out = {"forest": -self.forest.score_samples(self._suspicious(signed))}  # short isolation paths = high
        for view, members in VIEWS.items():
            columns = [i for i, name in enumerate(self.names) if name in members]
            if columns:
                out[view] = oriented[:, columns].mean(axis=1)
        return out

    def _scores(self, signed: np.ndarray) -> np.ndarray:
        z = self._suspicious(signed)
        shares = [_tail_share(self.references[view], values) for view, values in self._views(signed).items()]
        rarest = np.min(shares, axis=0)
        # Past every fit user on some signal (by a margin): as rare as it gets, whatever the forest
        # makes of a feature that was constant in training (it cannot split on one).
        beyond = (z > self.reach + BEYOND_MARGIN).any(axis=1)
        rarest = np.where(beyond, 1.0 / (len(self.references["forest"]) + 1.0), rarest)
        return -np.log10(rarest) + TAIL_WEIGHT * np.maximum(0.0, z.max(axis=1, initial=0.0) - TAIL_Z)

    def reasons(self, table: pd.DataFrame, n_reasons: int) -> list[list[dict]]:
        """Per user: the features furthest on their suspicious side (z ≥ MIN_Z), furthest first."""
        out = []
        for row_z, row_signed, (_, row) in zip(self.z(table), self.signed_z(table), table.iterrows()):
            order = [i for i in np.argsort(-row_z, kind="stable") if row_z[i] >= MIN_Z][:n_reasons]
            out.append(
                [
                    {
                        "feature": self.names[i],
                        "value": round(float(row[self.names[i]]), 4),
                        "z": round(float(row_signed[i]), 2),
                        "direction": "high" if row_signed[i] > 0 else "low",
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
    counts: np.ndarray  # training count per item id
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
        counts = np.pad(counts, (0, max(0, artifact.n_items + 1 - len(counts))))[: artifact.n_items + 1]
        names = [f for f in FEATURES if (timed or f not in TIMED) and (categories is not None or f not in CATEGORICAL)]
        model = cls(artifact, params, categories, counts, names)
        counted = windows is None  # the training users' own events are in the counts
        if windows is None:
            windows = windows_from_reference(artifact.reference())
        if len(windows) > params.max_fit_users:
            pick = np.random.default_rng(params.seed).choice(len(windows), params.max_fit_users, replace=False)
            windows = [windows[i] for i in np.sort(pick)]
        model.detector = AnomalyDetector.fit(model.features(windows, counted=counted), params)
        return model

    def features(self, windows: list[UserWindow], counted: bool = False) -> pd.DataFrame:
        rows = pd.DataFrame([behaviour(w, self.params.window, self.categories, self.counts, counted) for w in windows])
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
