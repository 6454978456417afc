"""Turning next-item scores into a top-k answer."""

from __future__ import annotations

import numpy as np


def recommend_items(scores: np.ndarray, exclude: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k item ids and scores, best first; padding, excluded and -inf items never appear."""
    scores = scores.copy()
    scores[0] = -np.inf
    scores[exclude[exclude < len(scores)]] = -np.inf
    top = np.argpartition(-scores, min(k, len(scores) - 1))[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    top = top[np.isfinite(scores[top])]
    return top, scores[top]
