"""Impressions and their responses, for off-policy evaluation (models/release/ope_view.py).

An impression is one item an exploring /recommend answer showed: read from the request log (one
row per shown item, with its logged propensity, the answer's slate size and what the answer was
asked for). A response is an event of the same user on the same item (a click or a purchase, as
`gate.ope.click_events` / `purchase_events` say) strictly after the answer and at most `window_s`
later; it is joined to the latest answer that showed the item before it, so a response counts once
however often the item was shown. An event before the answer, or after the window, is no response.
Answers by an item list (no user) cannot be joined and are left out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from seqops.serving.logs import answer_records

IMPRESSION_COLUMNS = [
    "impression",  # answer number (0, 1, ...) among the answers read
    "time",
    "user_id",
    "item_id",
    "position",
    "propensity",
    "size",  # items the answer showed
    "model_version",
    "policy",
    "category",
    "exclude_seen",
    "fallback",
    "candidates",  # the ids the policy could show (positive propensity), best first
]


def read_impressions(directory: Path, since: pd.Timestamp | None = None, limit: int | None = None) -> pd.DataFrame:
    """One row per item shown by the last `limit` exploring answers (with a user) in the request log."""
    answers: deque = deque(maxlen=limit)
    for record in answer_records(directory, since):
        items, propensities = record.get("items") or [], record.get("propensities")
        if record.get("user_id") is not None and propensities is not None and len(propensities) == len(items):
            answers.append(record)
    rows = [
        {
            "impression": n,
            "time": record["time"],
            "user_id": str(record["user_id"]),
            "item_id": str(item),
            "position": position,
            "propensity": float(propensity),
            "size": len(record["items"]),
            "model_version": record.get("model_version"),
            "policy": (record.get("explore") or {}).get("policy"),
            "category": (record.get("explore") or {}).get("category"),
            "exclude_seen": (record.get("explore") or {}).get("exclude_seen", True),
            "fallback": bool(record.get("fallback")),
            "candidates": (record.get("explore") or {}).get("candidates"),
        }
        for n, record in enumerate(answers)
        for position, (item, propensity) in enumerate(zip(record["items"], record["propensities"]))
    ]
    frame = pd.DataFrame(rows, columns=IMPRESSION_COLUMNS)
    frame["time"] = pd.to_datetime(frame["time"], utc=True).astype("datetime64[ns, UTC]")
    return frame if since is None else frame[frame["time"] >= since].reset_index(drop=True)


def join_responses(
    shown: pd.DataFrame, events: pd.DataFrame, window_s: float, rewards: Mapping[str, Sequence[str]]
) -> pd.DataFrame:
    """`shown` (time, user_id, item_id, ...) with a 0/1 column per reward name: 1 when an event of one
    of its types (events: user_id, item_id, time, event_type) answered that impression (see above)."""
    out = shown.reset_index(drop=True)
    keyed = _keyed(out).assign(_row=np.arange(len(out))).sort_values("time", kind="stable")
    for name, types in rewards.items():
        chosen = _keyed(events[events["event_type"].isin(list(types))]).sort_values("time", kind="stable")
        matched = pd.merge_asof(
            chosen[["time", "_user", "_item"]],
            keyed[["time", "_user", "_item", "_row"]],
            on="time",
            by=["_user", "_item"],
            direction="backward",
            tolerance=pd.Timedelta(seconds=window_s),
            allow_exact_matches=False,  # an event stamped with the answer's own time is no response to it
        )
        flag = np.zeros(len(out), dtype=np.int64)
        flag[matched["_row"].dropna().astype(np.int64).unique()] = 1
        out[name] = flag
    return out


def _keyed(frame: pd.DataFrame) -> pd.DataFrame:
    """Join keys of one type on both sides: ids as text, times as ns UTC."""
    return pd.DataFrame(
        {
            "time": pd.to_datetime(frame["time"], utc=True).astype("datetime64[ns, UTC]"),
            "_user": frame["user_id"].astype(str),
            "_item": frame["item_id"].astype(str),
        },
        index=frame.index,
    )
