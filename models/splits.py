"""Leave-one-out splits built from Feast point-in-time joins.

Per user (≥ 3 events): the last event's item is the test target, the second-to-last the validation
target. Each target gets an entity row (user, target time − 1 ms), so Feast returns the history as
it was just before the target happened — the target itself can never leak into its input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from seqops.config import Paths
from seqops.features import store

BEFORE_TARGET = pd.Timedelta(milliseconds=1)
PROTOCOL = "leave-one-out (last item = test, second-to-last = validation), full ranking over all items"


@dataclass
class EvalSet:
    users: np.ndarray
    inputs: list[np.ndarray]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)

    def to_parquet(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame({"user_id": self.users, "history": [list(h) for h in self.inputs], "target": self.targets})
        frame.to_parquet(path, index=False)

    @classmethod
    def from_parquet(cls, path: Path) -> "EvalSet":
        frame = pd.read_parquet(path)
        inputs = [np.asarray(h, dtype=np.int64) for h in frame["history"]]
        return cls(frame["user_id"].to_numpy(np.int64), inputs, frame["target"].to_numpy(np.int64))


@dataclass
class Splits:
    train_seqs: list[np.ndarray]
    valid: EvalSet
    test: EvalSet
    n_items: int


def target_entities(events: pd.DataFrame) -> pd.DataFrame:
    """Entity rows (user_id, event_timestamp, role, target) for the validation and test targets."""
    events = events.sort_values(["user_id", "ts"], kind="stable")
    sizes = events.groupby("user_id")["item_id"].transform("size")
    eligible = events[sizes >= 3]
    rank_from_end = eligible.groupby("user_id").cumcount(ascending=False)
    targets = eligible[rank_from_end < 2].assign(role=np.where(rank_from_end[rank_from_end < 2] == 0, "test", "valid"))
    return pd.DataFrame(
        {
            "user_id": targets["user_id"].to_numpy(np.int64),
            "event_timestamp": targets["ts"] - BEFORE_TARGET,
            "role": targets["role"].to_numpy(),
            "target": targets["item_id"].to_numpy(np.int64),
        }
    )


def _eval_set(rows: pd.DataFrame) -> EvalSet:
    inputs = [np.asarray(h, dtype=np.int64) for h in rows["last_items"]]
    return EvalSet(rows["user_id"].to_numpy(np.int64), inputs, rows["target"].to_numpy(np.int64))


def build_splits(paths: Paths, profile: str = "local") -> Splits:
    """Read events, ask Feast for the point-in-time histories, return train/valid/test."""
    events = pd.read_parquet(paths.events, columns=["user_id", "item_id", "ts"])
    joined = store.historical_features(paths, target_entities(events), profile)
    joined = joined[joined["last_items"].map(lambda h: h is not None and len(h) > 0)]
    valid = joined[joined["role"] == "valid"].sort_values("user_id")
    test = joined[joined["role"] == "test"].sort_values("user_id")
    n_items = int(pd.read_parquet(paths.vocab / "items.parquet", columns=["item_id"])["item_id"].max())
    # Training sequences are the validation histories: everything before the validation target.
    train_seqs = [np.asarray(h, dtype=np.int64) for h in valid["last_items"] if len(h) >= 2]
    return Splits(train_seqs=train_seqs, valid=_eval_set(valid), test=_eval_set(test), n_items=n_items)
