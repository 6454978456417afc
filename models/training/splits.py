"""Train / validation / test sets built from Feast point-in-time joins, under one of two protocols.

leave_one_out (default): per user with ≥ 3 events, the last event's item is the test target and
the second-to-last the validation target; training sequences are everything before the
validation target. temporal: two global cuts split the time span; the last `temporal_share` of
it tests (each user's first event after the test cut is their target), the share before it
validates (first event after the validation cut), and training sees only events before the
validation cut.

Each target gets an entity row (user, target time − 1 ms), so Feast returns the history as it
was just before the target happened — the target itself can never leak into its input. Beside
the items, every set carries the event types (as ids for the next-action head) and, for the
churn head, the gap from the last history event to the target; training sequences carry per-
event churn flags (see `models/training/data.py`), computed from the event times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from seqops.config import EvaluateParams, Paths
from seqops.features import store
from seqops.models.training.data import churn_flags, type_ids

BEFORE_TARGET = pd.Timedelta(milliseconds=1)
PROTOCOLS = {
    "leave_one_out": "leave-one-out (last item = test, second-to-last = validation)",
    "temporal": "global temporal split (last {share:.0%} of the time span = test, the {share:.0%} before = validation)",
}


def protocol_label(p: EvaluateParams) -> str:
    from seqops.models.training.evaluate import ranking_label

    seen = "history items excluded from the ranking" if p.exclude_seen else "history items ranked too"
    return f"{PROTOCOLS[p.protocol].format(share=p.temporal_share)}, {ranking_label(p)}, {seen}"


@dataclass
class EvalSet:
    users: np.ndarray
    inputs: list[np.ndarray]
    targets: np.ndarray
    types: list[np.ndarray] | None = None  # type ids of the history events
    target_types: np.ndarray | None = None  # type id of the target event
    target_gaps: np.ndarray | None = None  # seconds from the last history event to the target

    def __len__(self) -> int:
        return len(self.targets)

    def churn_labels(self, horizon_s: float) -> np.ndarray:
        return (self.target_gaps > horizon_s).astype(np.int64)

    def to_parquet(self, path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame({"user_id": self.users, "history": [list(h) for h in self.inputs], "target": self.targets})
        if self.types is not None:
            frame = frame.assign(
                types=[list(t) for t in self.types], target_type=self.target_types, target_gap_s=self.target_gaps
            )
        frame.to_parquet(path, index=False)

    @classmethod
    def from_parquet(cls, path) -> "EvalSet":
        frame = pd.read_parquet(path)
        inputs = [np.asarray(h, dtype=np.int64) for h in frame["history"]]
        extra = {}
        if "types" in frame:
            extra = {
                "types": [np.asarray(t, dtype=np.int64) for t in frame["types"]],
                "target_types": frame["target_type"].to_numpy(np.int64),
                "target_gaps": frame["target_gap_s"].to_numpy(np.float64),
            }
        return cls(frame["user_id"].to_numpy(np.int64), inputs, frame["target"].to_numpy(np.int64), **extra)


@dataclass
class Splits:
    train_seqs: list[np.ndarray]
    valid: EvalSet
    test: EvalSet
    n_items: int
    train_types: list[np.ndarray] | None = None
    train_churn: list[np.ndarray] | None = None


def _rows(targets: pd.DataFrame, role: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": targets["user_id"].to_numpy(np.int64),
            "event_timestamp": targets["ts"] - BEFORE_TARGET,
            "role": role,
            "target": targets["item_id"].to_numpy(np.int64),
            "target_type": targets["event_type"].astype(str).to_numpy(),
        }
    )


def target_entities(events: pd.DataFrame) -> pd.DataFrame:
    """Leave-one-out entity rows (user_id, event_timestamp, role, target, target_type)."""
    events = events.sort_values(["user_id", "ts"], kind="stable")
    sizes = events.groupby("user_id")["item_id"].transform("size")
    eligible = events[sizes >= 3]
    rank_from_end = eligible.groupby("user_id").cumcount(ascending=False)
    rows = pd.concat([_rows(eligible[rank_from_end == 1], "valid"), _rows(eligible[rank_from_end == 0], "test")])
    return rows.reset_index(drop=True)


def temporal_entities(events: pd.DataFrame, share: float) -> pd.DataFrame:
    """Temporal entity rows: each user's first event after each cut, plus training rows at the
    validation cut for users active before it (their target is unused: -1)."""
    events = events.sort_values(["user_id", "ts"], kind="stable")
    start, end = events["ts"].min(), events["ts"].max()
    test_cut = end - (end - start) * share
    valid_cut = test_cut - (end - start) * share
    first_after = lambda frame: frame.groupby("user_id", sort=False).head(1)  # noqa: E731
    valid = first_after(events[(events["ts"] >= valid_cut) & (events["ts"] < test_cut)])
    test = first_after(events[events["ts"] >= test_cut])
    train_users = events.loc[events["ts"] < valid_cut, "user_id"].unique()
    train = pd.DataFrame(
        {
            "user_id": train_users.astype(np.int64),
            "event_timestamp": valid_cut - BEFORE_TARGET,
            "role": "train",
            "target": -1,
            "target_type": "",
        }
    )
    return pd.concat([train, _rows(valid, "valid"), _rows(test, "test")]).reset_index(drop=True)


def history_times(events: pd.DataFrame, rows: pd.DataFrame) -> list[np.ndarray]:
    """Unix seconds of each joined row's history events: the user's last len(last_items) events
    at or before the row's event_timestamp (what the point-in-time join returned)."""
    seconds = (events["ts"] - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    by_user = dict(tuple(seconds.groupby(events["user_id"].to_numpy())))
    cuts = (rows["event_timestamp"] - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    out = []
    for user, cut, history in zip(rows["user_id"], cuts, rows["last_items"]):
        times = by_user[user].to_numpy()
        end = int(np.searchsorted(times, cut, side="right"))
        out.append(times[max(0, end - len(history)) : end])
    return out


def _eval_set(rows: pd.DataFrame, times: list[np.ndarray], event_types: list[str]) -> EvalSet:
    target_s = (rows["event_timestamp"] + BEFORE_TARGET - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    return EvalSet(
        users=rows["user_id"].to_numpy(np.int64),
        inputs=[np.asarray(h, dtype=np.int64) for h in rows["last_items"]],
        targets=rows["target"].to_numpy(np.int64),
        types=[type_ids(t, event_types) for t in rows["last_types"]],
        target_types=type_ids(rows["target_type"], event_types),
        target_gaps=target_s.to_numpy(np.float64) - np.array([t[-1] for t in times]),
    )


def build_splits(
    paths: Paths,
    profile: str = "local",
    p: EvaluateParams | None = None,
    event_types: list[str] | None = None,
    churn_horizon_s: float = 3 * 86400,
) -> Splits:
    """Read events, ask Feast for the point-in-time histories, return train/valid/test."""
    p = p or EvaluateParams()
    event_types = list(event_types or ["view", "cart", "purchase"])
    events = pd.read_parquet(paths.events, columns=["user_id", "item_id", "ts", "event_type"])
    events = events.sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True)
    entities = temporal_entities(events, p.temporal_share) if p.protocol == "temporal" else target_entities(events)
    joined = store.historical_features(paths, entities, profile)
    joined = joined[joined["last_items"].map(lambda h: h is not None and len(h) > 0)].sort_values(
        "user_id", kind="stable"
    )
    times = dict(zip(joined.index, history_times(events, joined)))
    sets = {role: joined[joined["role"] == role] for role in ("train", "valid", "test")}
    valid, test = (_eval_set(sets[r], [times[i] for i in sets[r].index], event_types) for r in ("valid", "test"))
    # Training sequences: the validation histories (leave-one-out) or the histories at the cut (temporal).
    train = sets["train"] if p.protocol == "temporal" else sets["valid"]
    keep = [i for i, h in zip(train.index, train["last_items"]) if len(h) >= 2]
    train = train.loc[keep]
    n_items = int(pd.read_parquet(paths.vocab / "items.parquet", columns=["item_id"])["item_id"].max())
    return Splits(
        train_seqs=[np.asarray(h, dtype=np.int64) for h in train["last_items"]],
        valid=valid,
        test=test,
        n_items=n_items,
        train_types=[type_ids(t, event_types) for t in train["last_types"]],
        train_churn=[churn_flags(times[i], churn_horizon_s) for i in train.index],
    )
