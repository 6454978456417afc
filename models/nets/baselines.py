"""Popularity baseline: every user gets the same scores, the training count of each item."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

FILE_NAME = "popularity.json"


class PopularityModel:
    def __init__(self, counts: np.ndarray):
        """counts[i] = how often item i was seen, for i in 0..n_items (index 0 = padding, ignored)."""
        self.counts = np.asarray(counts, dtype=np.int64).copy()
        self.counts[0] = 0

    @property
    def n_items(self) -> int:
        return len(self.counts) - 1

    @classmethod
    def from_counts(cls, counts: np.ndarray) -> PopularityModel:
        return cls(counts)

    @classmethod
    def fit(cls, train_seqs: Sequence[np.ndarray], n_items: int) -> PopularityModel:
        """Count every item occurrence in the training sequences."""
        items = np.concatenate([np.asarray(s, dtype=np.int64) for s in train_seqs] + [np.zeros(0, np.int64)])
        if len(items) and (items.min() < 0 or items.max() > n_items):
            raise ValueError(f"item ids must be in 0..{n_items}")
        return cls(np.bincount(items, minlength=n_items + 1))

    def next_item_scores(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """[B, n_items + 1] float32; the padding column is -inf."""
        scores = self.counts.astype(np.float32)
        scores[0] = -np.inf
        return np.broadcast_to(scores, (len(histories), len(scores))).copy()

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / FILE_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"kind": "popularity", "counts": self.counts.tolist()}))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> PopularityModel:
        return cls(np.asarray(json.loads((Path(directory) / FILE_NAME).read_text())["counts"], dtype=np.int64))


__all__ = ["PopularityModel"]
