"""Drift between the champion's data and the candidate's, measured with Evidently: behaviour drift
(per-user behaviour over each user's last N events, champion's training data vs what is new) and
prediction drift (popularity rank and category of the items both models recommend to the same
users). Both inform the decision; neither blocks it alone — drift is the reason we retrain.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from seqops.config import GateParams

# Per-user behaviour, all intensive (they do not grow with the length of a user's history), so the
# champion's data and a later, longer history compare like with like.
DRIFT_COLUMNS = ["events_per_session", "log_gap_s", "share_cart", "share_purchase", "mean_pop_rank", "new_item_share"]
# What a short batch (the monitor's day of landed events) is judged on: how a day cuts sessions and
# gaps depends on where and how long it is, not only on behaviour; what users do and which items
# they pick does not. With half the features needed for a dataset drift, the two session-structure
# features would also halve the power of a day's few users to see a real shift.
SHORT_BATCH_COLUMNS = ["share_cart", "share_purchase", "mean_pop_rank", "new_item_share"]
# Recommendations are paired (same users) and many (k per user): p-values would flag any change, so
# prediction drift uses effect sizes — Wasserstein distance (in reference std units) and
# Jensen-Shannon distance — at Evidently's customary 0.1.
PREDICTION_METHODS = {"rec_log_pop_rank": ("wasserstein", 0.1), "rec_category": ("jensenshannon", 0.1)}


# -- behaviour drift --------------------------------------------------------------------------


def popularity_rank(item_counts: np.ndarray) -> np.ndarray:
    """rank[i] of item i in a catalogue (1 = most seen); ids past the catalogue get len(item_counts)."""
    order = np.argsort(-item_counts[1:], kind="stable") + 1
    rank = np.full(len(item_counts), len(item_counts), dtype=np.float64)
    rank[order] = np.arange(1, len(order) + 1)
    return rank


def drift_columns(summary: pd.DataFrame, item_counts: np.ndarray) -> pd.DataFrame:
    """The behaviour columns from a `user_summary` (one row per user, cumulative): kept for callers
    that only have summaries. The gate itself uses `window_behaviour`, which compares windows of
    equal size — summaries of longer histories have smaller spread, and tests notice that."""
    rank, known = popularity_rank(item_counts), len(item_counts) - 1

    def per_user(items: list) -> tuple[float, float]:
        ids = np.asarray(items, dtype=np.int64)
        new = ids > known
        return float(np.log1p(np.where(new, len(item_counts), rank[np.minimum(ids, known)])).mean()), float(new.mean())

    stats = np.array([per_user(items) for items in summary["last_items"]]).reshape(-1, 2)
    per_session = summary["n_events"].to_numpy(np.float64) / np.maximum(summary["n_sessions"].to_numpy(np.float64), 1)
    return summary.assign(events_per_session=per_session, mean_pop_rank=stats[:, 0], new_item_share=stats[:, 1])[
        DRIFT_COLUMNS
    ]


def window_behaviour(
    events: pd.DataFrame, item_counts: np.ndarray, window: int, own: pd.DataFrame | None = None, unit: str = "user_id"
) -> pd.DataFrame:
    """One row per user with at least `window` events: behaviour over their last `window` events
    (canonical events: user_id, item_id, ts, event_type, session_id). Every row summarises the same
    number of events, so two sets of rows differ only if behaviour does. `unit` names the column
    that makes a row (default the user; `time_windows` adds one per user and stretch of time).

    Item popularity is the item's rank among `item_counts` after taking out the user's own part of
    the counts (`own`: user_id, item_id, own): otherwise a user's niche items look popular in the
    data the counts came from, and only there — a drift that is not one."""
    events = events.sort_values([unit, "ts"], kind="stable")
    sizes = events.groupby(unit)["item_id"].transform("size")
    last = events[sizes >= window].groupby(unit, sort=True).tail(window)
    if last.empty:
        return pd.DataFrame(columns=["user_id", *DRIFT_COLUMNS])
    known = len(item_counts) - 1
    items = last["item_id"].to_numpy(np.int64)
    mine = last.merge(own, on=["user_id", "item_id"], how="left")["own"].fillna(0).to_numpy() if own is not None else 0
    others = np.maximum(np.where(items > known, 0, item_counts[np.minimum(items, known)]) - mine, 0)
    ascending = np.sort(item_counts[1:])
    rank = len(ascending) - np.searchsorted(ascending, others, side="right") + 1  # 1 = most seen
    frame = pd.DataFrame(
        {
            "user_id": last[unit].to_numpy(),
            "session": last["session_id"].to_numpy(),
            "log_gap_s": np.log1p(last.groupby(unit)["ts"].diff().dt.total_seconds().to_numpy()),
            "share_cart": (last["event_type"] == "cart").to_numpy(np.float64),
            "share_purchase": (last["event_type"] == "purchase").to_numpy(np.float64),
            "mean_pop_rank": np.log1p(rank),
            "new_item_share": (items > known).astype(np.float64),
        }
    )
    per_user = frame.groupby("user_id").agg(
        sessions=("session", "nunique"),
        log_gap_s=("log_gap_s", "mean"),
        share_cart=("share_cart", "mean"),
        share_purchase=("share_purchase", "mean"),
        mean_pop_rank=("mean_pop_rank", "mean"),
        new_item_share=("new_item_share", "mean"),
    )
    per_user["events_per_session"] = window / per_user["sessions"]
    return per_user.reset_index()[["user_id", *DRIFT_COLUMNS]]


def time_windows(events: pd.DataFrame, start: pd.Timestamp, span: pd.Timedelta) -> pd.DataFrame:
    """`events` with a `window` column: one value per user and stretch of `span` (stretches aligned
    at `start`). A batch that covers `span` of time truncates sessions and gaps at its edges; cut into
    such stretches, the champion's data is truncated the same way (see `behaviour_drift`)."""
    stretch = np.floor((events["ts"] - start) / span).astype(np.int64)
    return events.assign(window=events.groupby([events["user_id"].to_numpy(), stretch.to_numpy()], sort=False).ngroup())


def batch_span(events: pd.DataFrame) -> tuple[pd.Timestamp, pd.Timedelta]:
    """Where a batch of events starts and how much time it covers (at least a second)."""
    start = events["ts"].min()
    return start, max(events["ts"].max() - start, pd.Timedelta(seconds=1))


def split_at(events: pd.DataFrame, seen: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's first `seen[user]` events (what the champion trained on) and the rest (new)."""
    events = events.sort_values(["user_id", "ts"], kind="stable")
    position = events.groupby("user_id").cumcount().to_numpy()
    old = position < events["user_id"].map(seen).fillna(0).to_numpy()
    return events[old], events[~old]


def _drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    methods: dict[str, tuple[str, float]],
    drift_share: float,
    out_dir: Path | None,
    stem: str,
    summary: bool,
) -> dict:
    """One Evidently report (DataDriftPreset with per-column stattests); HTML + JSON when out_dir is given."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    columns = list(methods)
    # Column types are declared, not inferred: Evidently would call a mostly-zero share categorical.
    numerical = [c for c in columns if pd.api.types.is_numeric_dtype(reference[c])]
    definition = DataDefinition(
        numerical_columns=numerical, categorical_columns=[c for c in columns if c not in numerical]
    )  # a method of "auto" (threshold None) lets Evidently choose by column type and size
    options = dict(
        columns=columns,
        drift_share=drift_share,
        per_column_method={c: m for c, (m, _) in methods.items() if m != "auto"} or None,
        per_column_threshold={c: t for c, (_, t) in methods.items() if t is not None} or None,
    )
    # Without a report to keep, only the count (same stattests, same decision): the preset's
    # per-column widgets are most of Evidently's run time.
    metrics = (
        [DataDriftPreset(**options), *([DataSummaryPreset()] if summary else [])]
        if out_dir
        else [DriftedColumnsCount(**options)]
    )
    with np.errstate(divide="ignore", invalid="ignore"):  # constant columns make correlations 0/0
        snapshot = Report(metrics, include_tests=True).run(
            current_data=Dataset.from_pandas(current[columns], data_definition=definition),
            reference_data=Dataset.from_pandas(reference[columns], data_definition=definition),
        )
    result = snapshot.dict()
    value_drift = [m for m in result["metrics"] if m["metric_name"].startswith("ValueDrift")]
    scores = {m["config"]["column"]: float(m["value"]) for m in value_drift}
    resolved = {m["config"]["column"]: (m["config"]["method"], m["config"]["threshold"]) for m in value_drift}
    drifted = {
        t["metric_config"]["params"]["column"]
        for t in result["tests"]
        if t["metric_config"]["params"]["type"].endswith("ValueDrift") and t["status"] == "FAIL"
    }
    count = next(m["value"] for m in result["metrics"] if m["metric_name"].startswith("DriftedColumnsCount"))
    out = {
        "drift_share": float(count["share"]),
        "drifted_columns": int(count["count"]),
        "n_columns": len(columns),
        "dataset_drift": float(count["share"]) >= drift_share,
        "share_threshold": drift_share,
        "columns": {
            c: {"method": resolved[c][0], "threshold": resolved[c][1], "score": scores[c], "drifted": c in drifted}
            for c in scores
        },  # per column only with a kept report
        "column_scores": scores,
        "n_reference": len(reference),
        "n_current": len(current),
        "html": None,
        "json": None,
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        out["html"], out["json"] = str(out_dir / f"{stem}.html"), str(out_dir / f"{stem}.json")
        snapshot.save_html(out["html"])
        snapshot.save_json(out["json"])
    return out


def evidently_reports(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    out_dir: Path | None,
    gp: GateParams | None = None,
    columns: list[str] = DRIFT_COLUMNS,
) -> dict:
    """Evidently behaviour drift (`gate.drift_method` per column, dataset drift at
    `gate.drift_share_threshold`) plus a data summary when the report is kept under `out_dir`."""
    gp = gp or GateParams()
    methods = {c: (gp.drift_method, None if gp.drift_method == "auto" else gp.drift_threshold) for c in columns}
    return _drift_report(
        reference, current, methods, gp.drift_share_threshold, out_dir, "drift_report", out_dir is not None
    )


def behaviour_drift(
    events: pd.DataFrame,
    seen: pd.Series | None,
    item_counts: np.ndarray,
    gp: GateParams,
    out_dir: Path | None = None,
    *,
    same_span: bool = False,
) -> dict:
    """The gate's drift decision: behaviour in the champion's training data (each user's first
    `seen[user]` events) vs behaviour in the events that are new since, both over each user's last
    `gate.drift_window` events, item popularity in the champion's catalogue; plus the share of users
    with new events that the champion never saw. `seen=None` (no champion): the data vs itself.

    `same_span` (the monitor: the new events are a short batch, e.g. a day): the champion's data is
    cut into stretches of the batch's time length, one reference row per user and stretch, and the
    decision is over `SHORT_BATCH_COLUMNS`. A day holds only the part of a session or a gap that
    falls inside it, so against whole histories events per session, gaps and type shares drift by
    construction (false alarms); against day-sized stretches of the champion's data they compare
    like with like."""
    old, new = split_at(events, seen) if seen is not None else (events, events)
    own = old.groupby(["user_id", "item_id"]).size().rename("own").reset_index()
    if same_span and len(new):
        reference = window_behaviour(
            time_windows(old, *batch_span(new)), item_counts, gp.drift_window, own, unit="window"
        )
    else:
        reference = window_behaviour(old, item_counts, gp.drift_window, own)
    current = window_behaviour(new, item_counts, gp.drift_window, own)
    active = new["user_id"].drop_duplicates()
    new_users = float((~active.isin(seen.index)).mean()) if seen is not None and len(active) else 0.0
    extra = {
        "new_user_share": new_users,
        "n_new_events": len(new) if seen is not None else 0,
        "window": gp.drift_window,
    }
    columns = SHORT_BATCH_COLUMNS if same_span else DRIFT_COLUMNS
    if min(len(reference), len(current)) < 2:
        return {
            **extra,
            "drift_share": 0.0,
            "drifted_columns": 0,
            "n_columns": len(columns),
            "dataset_drift": False,
            "share_threshold": gp.drift_share_threshold,
            "columns": {},
            "column_scores": {},
            "html": None,
            "json": None,
            "n_reference": len(reference),
            "n_current": len(current),
        }
    return {**evidently_reports(reference, current, out_dir, gp, columns), **extra}


# -- prediction drift -----------------------------------------------------------------------


def recommendation_frame(top: np.ndarray, item_counts: np.ndarray, category: np.ndarray) -> pd.DataFrame:
    """One row per recommended item: log popularity rank (in one catalogue) and category."""
    items = top.ravel()
    rank = popularity_rank(item_counts)
    known = items < len(rank)
    return pd.DataFrame(
        {
            "rec_log_pop_rank": np.log1p(np.where(known, rank[np.minimum(items, len(rank) - 1)], len(rank))),
            "rec_category": category[np.minimum(items, len(category) - 1)].astype(str),
        }
    )


def prediction_drift(
    candidate_top: np.ndarray,
    champion_top: np.ndarray,
    item_counts: np.ndarray,
    category: np.ndarray,
    out_dir: Path | None,
) -> dict:
    """Evidently drift of what the champion recommends (reference) vs the candidate (current)."""
    overlap = np.mean([len(set(a) & set(b)) / max(len(a), 1) for a, b in zip(candidate_top, champion_top)])
    result = _drift_report(
        recommendation_frame(champion_top, item_counts, category),
        recommendation_frame(candidate_top, item_counts, category),
        PREDICTION_METHODS,
        0.5,
        out_dir,
        "prediction_drift",
        summary=False,
    )
    return {**result, "overlap_at_k": float(overlap), "k": int(candidate_top.shape[1])}


def drift_sentence(drift: dict, gp: GateParams, champion: str | None) -> str:
    if champion is None:
        return "No champion to compare with: the drift report summarises the candidate's own data — does not block."
    if not drift["columns"]:
        return f"Too few users with {drift['window']}+ new events to measure drift ({drift['n_current']}) — does not block."
    names = [c for c, v in drift["columns"].items() if v["drifted"]]
    what = f": {', '.join(names)}" if names else ""
    return (
        f"{drift['drifted_columns']} of {drift['n_columns']} behaviour features drifted vs the champion's training data"
        f"{what} (share {drift['drift_share']:.2f}, dataset drift at ≥ {gp.drift_share_threshold:.2f}: "
        f"{'yes' if drift['dataset_drift'] else 'no'}; {gp.drift_method} at {gp.drift_threshold:g}); "
        f"{drift['new_user_share']:.0%} of the users with new events are new — informs, does not block."
    )


def prediction_sentence(pred: dict | None) -> str:
    if pred is None:
        return "No champion yet: prediction drift not measured."
    moved = [f"{c} ({v['method']} {v['score']:.3f})" for c, v in pred["columns"].items() if v["drifted"]]
    return (
        f"Top-{pred['k']} recommendations for the same users overlap {pred['overlap_at_k']:.0%} with the champion's; "
        f"{'drifted: ' + ', '.join(moved) if moved else 'popularity rank and category mix stable'} — informs, does not block."
    )
