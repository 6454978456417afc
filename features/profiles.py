"""Per-user profiles from the canonical events, without a model: activity (recency, frequency and,
where the data has purchase values, monetary value: RFM), session habits, event-type shares and
interest shares by category. `seqops.models.profiles` adds the champion's sequence embedding and
the segment (features must not import models: data flows features → models → serving).

All times are measured against the data's own last event (`reference`), not the wall clock, so the
same events always give the same profiles. The files of a profile run, and the Feast online write of
its rows (the `user_profile` view of feature_repo/definitions.py), live here too: the service and
the monitor read them without importing models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from seqops.config import Paths

PROFILE_VIEW = "user_profile"
PROFILE_SERVICE = "profile"
PURCHASE = "purchase"  # the event type whose `value` is money (RFM's monetary)
CLUSTER_CATEGORIES = 20  # the data's most frequent categories get a share column for clustering; the rest: other
RFM_LEVELS = 5  # quintile scores 1..5, 5 = most recent / most frequent / most spent
DAY_S = 86_400.0


@dataclass(frozen=True)
class ProfileFiles:
    """Where a profile run writes: DVC-tracked outputs under `.seqops/profiles/`, and under
    `.seqops/reports/profiles/` the per-data-version reports and the history of segment sizes."""

    home: Path
    reports: Path

    @classmethod
    def of(cls, paths: Paths) -> "ProfileFiles":
        return cls(paths.home / "profiles", paths.reports / "profiles")

    table = property(lambda self: self.home / "profiles.parquet")
    segments = property(lambda self: self.home / "segments.json")
    metrics = property(lambda self: self.home / "metrics.json")
    history = property(lambda self: self.reports / "history.jsonl")

    def report_dir(self, data_version: str) -> Path:
        return self.reports / data_version[:12]


@dataclass
class BehaviourProfiles:
    """One row per user (`table`, indexed by user_id) and the category-share matrix the clustering
    reads (`category_shares`: the CLUSTER_CATEGORIES most frequent categories and `other`)."""

    table: pd.DataFrame
    category_shares: pd.DataFrame
    reference: pd.Timestamp
    has_monetary: bool


def _rfm_score(values: pd.Series, higher_is_better: bool = True) -> pd.Series:
    """Quintile score 1..RFM_LEVELS by rank (ties share a rank, so a constant column scores in the middle)."""
    pct = values.rank(method="average", pct=True, ascending=higher_is_better)
    return np.ceil(pct * RFM_LEVELS).clip(1, RFM_LEVELS).astype(np.int64)


def _activity(events: pd.DataFrame, reference: pd.Timestamp, churn_days: float) -> pd.DataFrame:
    by_user = events.groupby("user_id", sort=True)
    first, last = by_user["ts"].min(), by_user["ts"].max()
    n_sessions = by_user["session_id"].nunique()
    span_weeks = np.maximum((last - first).dt.total_seconds() / (7 * DAY_S), 1.0)
    out = pd.DataFrame(
        {
            "recency_days": (reference - last).dt.total_seconds() / DAY_S,
            "n_events": by_user.size(),
            "n_sessions": n_sessions,
            "active_days": events["ts"].dt.floor("D").groupby(events["user_id"]).nunique(),
            "sessions_per_week": n_sessions / span_weeks,
        }
    )
    out["churned"] = out["recency_days"] > churn_days
    return out


def _monetary(events: pd.DataFrame, users: pd.Index) -> pd.Series | None:
    """Sum of purchase values per user; None when the data has no purchase with a value."""
    paid = events[(events["event_type"].astype(str) == PURCHASE) & events["value"].notna()]
    if paid.empty:
        return None
    return paid.groupby("user_id")["value"].sum().reindex(users, fill_value=0.0)


def _habits(events: pd.DataFrame) -> pd.DataFrame:
    sessions = events.groupby(["user_id", "session_id"])["ts"].agg(["min", "max", "size"])
    minutes = (sessions["max"] - sessions["min"]).dt.total_seconds() / 60.0
    by_user = sessions.assign(minutes=minutes).groupby(level="user_id")
    hours = events.assign(hour=events["ts"].dt.hour).groupby(["user_id", "hour"]).size()
    return pd.DataFrame(
        {
            "events_per_session": by_user["size"].mean(),
            "session_minutes": by_user["minutes"].mean(),
            "weekend_share": (events["ts"].dt.dayofweek >= 5).groupby(events["user_id"]).mean(),
            "peak_hour": hours.groupby(level="user_id").idxmax().map(lambda key: key[1]).astype(np.int64),
        }
    )


def _shares(events: pd.DataFrame, column: str) -> pd.DataFrame:
    """User × value share of events (rows sum to 1)."""
    return pd.crosstab(events["user_id"], events[column].astype(str), normalize="index")


def _top_categories(events: pd.DataFrame, top_n: int) -> tuple[pd.Series, pd.Series]:
    """Per user: the `top_n` categories with the most events (ties by name) and their shares."""
    counts = events.groupby(["user_id", "category"], observed=True).size().rename("n").reset_index()
    counts["share"] = counts["n"] / counts.groupby("user_id")["n"].transform("sum")
    counts = counts.sort_values(["user_id", "n", "category"], ascending=[True, False, True])
    top = counts.groupby("user_id").head(top_n).groupby("user_id")
    return top["category"].agg(list), top["share"].agg(lambda s: [round(float(v), 4) for v in s])


def cluster_category_shares(events: pd.DataFrame) -> pd.DataFrame:
    """Shares of the CLUSTER_CATEGORIES most frequent categories per user, the rest summed as `other`."""
    if events.empty:
        return pd.DataFrame(index=pd.Index([], name="user_id"))
    common = events["category"].value_counts().index[:CLUSTER_CATEGORIES]
    shares = _shares(
        events.assign(category=events["category"].where(events["category"].isin(common), "other")), "category"
    )
    return shares.rename(columns=lambda c: f"cat:{c}")


def behaviour_profiles(events: pd.DataFrame, churn_days: float, top_categories: int) -> BehaviourProfiles:
    """Everything a profile holds but the embedding and the segment (see the module docstring)."""
    events = events.assign(category=events["category"].astype("string")) if "category" in events else events
    reference = events["ts"].max()
    table = _activity(events, reference, churn_days)
    monetary = _monetary(events, table.index)
    table["monetary"] = np.nan if monetary is None else monetary
    table = table.join(_habits(events))
    table["rfm_r"] = _rfm_score(table["recency_days"], higher_is_better=False)
    table["rfm_f"] = _rfm_score(table["n_sessions"])
    table["rfm_m"] = _rfm_score(table["monetary"]) if monetary is not None else 0
    table["rfm"] = [f"{r}-{f}-{m or 'x'}" for r, f, m in zip(table["rfm_r"], table["rfm_f"], table["rfm_m"])]
    types = _shares(events, "event_type")
    table["event_types"] = [list(types.columns)] * len(table)
    table["event_type_shares"] = list(types.reindex(table.index).round(4).to_numpy().tolist())
    has_category = "category" in events and events["category"].notna().any()
    known = events.dropna(subset=["category"]) if has_category else events.iloc[:0]
    names, shares = _top_categories(known, top_categories) if has_category else (pd.Series(), pd.Series())
    table["top_categories"] = names.reindex(table.index).map(lambda v: v if isinstance(v, list) else [])
    table["top_category_shares"] = shares.reindex(table.index).map(lambda v: v if isinstance(v, list) else [])
    category_shares = cluster_category_shares(known).reindex(table.index, fill_value=0.0)
    return BehaviourProfiles(table, category_shares, reference, monetary is not None)


def write_online(paths: Paths, store_profile: str = "local") -> int:
    """The last profile run's rows into the Feast online store (`user_profile` view, through
    features/online_write.py as materialize writes, in the store's batch size); returns the number of users written."""
    from seqops.features import online_write
    from seqops.features import store as feature_store

    table = pq.read_table(ProfileFiles.of(paths).table)
    store = feature_store.open_store(paths, store_profile)
    view = store.get_feature_view(PROFILE_VIEW)
    online_write.write_rows(store, view, table, feature_store.write_batch_rows(store))
    return table.num_rows


def segment_history(paths: Paths, last: int = 20) -> list[dict]:
    """The segment sizes of the last `last` profile runs, oldest first (what the monitor shows)."""
    history = ProfileFiles.of(paths).history
    if not history.exists():
        return []
    lines = [line for line in history.read_text().splitlines() if line.strip()]
    return [json.loads(line) for line in lines[-last:]]
