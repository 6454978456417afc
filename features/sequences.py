"""Canonical events → user sequence features: one row per user per event, describing the user's
state *after* that event. Feast joins these point-in-time, so a label at time t only sees rows
with event_timestamp <= t.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

_EPOCH = pd.Timestamp(0, tz="UTC")
FEATURE_COLUMNS = ["last_items", "last_types", "secs_since_prev", "n_events", "n_sessions", "last_ts"]


def _window_index(position: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """List offsets and flat row indices so row i holds rows [i-len+1 .. i] of its own user."""
    lengths = np.minimum(position + 1, max_len)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    row = np.arange(len(lengths), dtype=np.int64)
    first = np.repeat(row - lengths + 1, lengths)
    within = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    return offsets, first + within


def user_feature_table(events: pd.DataFrame, max_len: int) -> pa.Table:
    """Rolling last-N items/types, gaps and counts for every event (events sorted by user, ts)."""
    events = events.sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True)
    user = events["user_id"].to_numpy()
    position = events.groupby("user_id").cumcount().to_numpy()
    offsets, index = _window_index(position, max_len)
    offsets_arr = pa.array(offsets.astype(np.int32))

    ts = events["ts"]
    gap = ts.diff().dt.total_seconds().to_numpy()
    gap[position == 0] = 0.0
    new_session = np.r_[True, (events["session_id"].to_numpy()[1:] != events["session_id"].to_numpy()[:-1])]
    new_session |= position == 0
    session_count = pd.Series(new_session.astype(np.int64)).groupby(user).cumsum().to_numpy()

    items = events["item_id"].to_numpy(np.int64)[index]
    types = events["event_type"].astype(str).to_numpy()[index]
    return pa.table(
        {
            "user_id": pa.array(user, pa.int64()),
            "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "last_items": pa.ListArray.from_arrays(offsets_arr, pa.array(items, pa.int64())),
            "last_types": pa.ListArray.from_arrays(offsets_arr, pa.array(types, pa.string())),
            "secs_since_prev": pa.array(gap, pa.float64()),
            "n_events": pa.array(position + 1, pa.int64()),
            "n_sessions": pa.array(session_count, pa.int64()),
            "last_ts": pa.array((ts - _EPOCH) // pd.Timedelta(seconds=1), pa.int64()),
        }
    )


def write_user_features(events_path: Path, out_path: Path, max_len: int) -> int:
    """Compute the feature table from the events Parquet and write it; returns the row count."""
    events = pd.read_parquet(events_path)
    table = user_feature_table(events, max_len)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out_path)
    return table.num_rows


def user_summary(features: pd.DataFrame) -> pd.DataFrame:
    """One row per user from their latest feature row: what the gate compares for drift."""
    latest = features.sort_values("event_timestamp").groupby("user_id").tail(1)
    types = latest["last_types"].map(lambda t: pd.Series(list(t)).value_counts(normalize=True))
    shares = pd.DataFrame(list(types), index=latest.index).fillna(0.0)
    return pd.DataFrame(
        {
            "user_id": latest["user_id"].to_numpy(),
            "n_events": latest["n_events"].to_numpy(),
            "n_sessions": latest["n_sessions"].to_numpy(),
            "log_gap_s": np.log1p(latest["secs_since_prev"].to_numpy()),
            "share_cart": shares.get("cart", pd.Series(0.0, index=latest.index)).to_numpy(),
            "share_purchase": shares.get("purchase", pd.Series(0.0, index=latest.index)).to_numpy(),
            "last_items": [list(h) for h in latest["last_items"]],
        }
    ).reset_index(drop=True)


def canonical_from_raw(
    raw: pd.DataFrame, user_ids: dict[str, int], item_ids: dict[str, int], session_gap_s: int
) -> pd.DataFrame:
    """Raw-layout events not ingested yet → canonical events in the known id space (what the monitor
    compares with the champion's data). Unknown users get fresh ids after the known ones; unknown
    items share one id past the catalogue; unparseable rows are skipped: ingest will judge them."""
    ts = pd.to_datetime(pd.to_numeric(raw["timestamp"], errors="coerce"), unit="s", utc=True).astype(
        "datetime64[us, UTC]"
    )
    raw_users = raw["user_id"].astype(str)
    unknown = pd.Index(raw_users[~raw_users.isin(user_ids)].unique())
    users = raw_users.map(user_ids).fillna(
        raw_users.map(dict(zip(unknown, range(max(user_ids.values(), default=0) + 1, 10**12))))
    )
    items = raw["item_id"].astype(str).map(item_ids).fillna(max(item_ids.values(), default=0) + 1)
    frame = pd.DataFrame(
        {
            "user_id": users.astype(np.int64),
            "item_id": items.astype(np.int64),
            "ts": ts,
            "event_type": raw["event_type"].astype(str),
        }
    ).dropna(subset=["ts"])
    frame = frame.sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True)
    gap = frame.groupby("user_id")["ts"].diff().dt.total_seconds()
    return frame.assign(session_id=(gap.isna() | (gap > session_gap_s)).cumsum())


def next_row(current: dict | None, events: list[tuple[int, str, float]], max_len: int, session_gap_s: int) -> dict:
    """A user's online feature row after `events` ((dense item, type, unix seconds), any order),
    computed the way `features.sequences.user_feature_table` computes it from the full log."""
    items = list(current["last_items"]) if current else []
    types = list(current["last_types"]) if current else []
    n_events = int(current["n_events"]) if current else 0
    n_sessions = int(current["n_sessions"]) if current else 0
    last = float(current["last_ts"]) if current and current.get("last_ts") is not None else None
    gap = float(current["secs_since_prev"]) if current and current.get("secs_since_prev") is not None else 0.0
    latest = last
    for item, kind, ts in sorted(events, key=lambda e: e[2]):
        gap = 0.0 if last is None else max(0.0, ts - last)
        if last is None or gap > session_gap_s:
            n_sessions += 1
        items.append(int(item))
        types.append(kind)
        n_events += 1
        last = ts
        latest = ts if latest is None else max(latest, ts)
    return {
        "event_timestamp": datetime.fromtimestamp(latest, tz=timezone.utc),
        "last_items": items[-max_len:],
        "last_types": types[-max_len:],
        "secs_since_prev": float(gap),
        "n_events": n_events,
        "n_sessions": n_sessions,
        "last_ts": int(math.floor(latest)),
    }
