"""The promotion gate: Evidently drift + quality reports and candidate-vs-champion metrics.

Policy (also in the README): drift alone never rejects a better model — drift is the reason we
retrain. A candidate is rejected when it cannot be evaluated fairly (too few held-out users), when
data quality fails (missing values, too much quarantined at ingest), or when it is not good enough
by a paired bootstrap over the same held-out users: a first model must beat popularity by
`min_uplift_vs_baseline` at the interval's lower bound; a later one must not regress significantly
(`non_inferior`) or must improve significantly (`superior`), as `gate.policy` says.

Three Evidently reports explain a decision: behaviour drift between the champion's training data
and what is new in the candidate's, a data summary, and prediction drift — the popularity rank and
category of the items both models recommend to the same users. `decision.html` puts it together.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from seqops.config import GateParams, Params, Paths
from seqops.features.cleaning import DATA_ERRORS, DUPLICATES
from seqops.models.training.artifact import Artifact
from seqops.models.training.evaluate import head_metrics, metrics_from_ranks, target_ranks, top_items
from seqops.io import now_iso, write_json_atomic
from seqops.models.release.registry import Registry, version_number
from seqops.models.training.splits import EvalSet, protocol_label

# Per-user behaviour, all intensive (they do not grow with the length of a user's history), so the
# champion's data and a later, longer history compare like with like.
DRIFT_COLUMNS = ["events_per_session", "log_gap_s", "share_cart", "share_purchase", "mean_pop_rank", "new_item_share"]
# Recommendations are paired (same users) and many (k per user): p-values would flag any change, so
# prediction drift uses effect sizes — Wasserstein distance (in reference std units) and
# Jensen-Shannon distance — at Evidently's customary 0.1.
PREDICTION_METHODS = {"rec_log_pop_rank": ("wasserstein", 0.1), "rec_category": ("jensenshannon", 0.1)}
PREDICTION_K = 10
BOOTSTRAP_SEED = 0  # the same candidate gated twice gets the same interval
BOOTSTRAP_CELLS = 4_000_000  # resample weights held in memory at once


@dataclass
class Check:
    name: str
    value: float
    threshold: float
    passed: bool
    blocking: bool
    sentence: str


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
    return summary.assign(events_per_session=per_session, mean_pop_rank=stats[:, 0], new_item_share=stats[:, 1])[DRIFT_COLUMNS]


def window_behaviour(events: pd.DataFrame, item_counts: np.ndarray, window: int, own: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per user with at least `window` events: behaviour over their last `window` events
    (canonical events: user_id, item_id, ts, event_type, session_id). Every row summarises the same
    number of events, so two sets of rows differ only if behaviour does.

    Item popularity is the item's rank among `item_counts` after taking out the user's own part of
    the counts (`own`: user_id, item_id, own): otherwise a user's niche items look popular in the
    data the counts came from, and only there — a drift that is not one."""
    events = events.sort_values(["user_id", "ts"], kind="stable")
    sizes = events.groupby("user_id")["item_id"].transform("size")
    last = events[sizes >= window].groupby("user_id", sort=True).tail(window)
    if last.empty:
        return pd.DataFrame(columns=["user_id", *DRIFT_COLUMNS])
    known = len(item_counts) - 1
    items = last["item_id"].to_numpy(np.int64)
    mine = last.merge(own, on=["user_id", "item_id"], how="left")["own"].fillna(0).to_numpy() if own is not None else 0
    others = np.maximum(np.where(items > known, 0, item_counts[np.minimum(items, known)]) - mine, 0)
    ascending = np.sort(item_counts[1:])
    rank = len(ascending) - np.searchsorted(ascending, others, side="right") + 1  # 1 = most seen
    frame = pd.DataFrame({
        "user_id": last["user_id"].to_numpy(),
        "session": last["session_id"].to_numpy(),
        "log_gap_s": np.log1p(last.groupby("user_id")["ts"].diff().dt.total_seconds().to_numpy()),
        "share_cart": (last["event_type"] == "cart").to_numpy(np.float64),
        "share_purchase": (last["event_type"] == "purchase").to_numpy(np.float64),
        "mean_pop_rank": np.log1p(rank),
        "new_item_share": (items > known).astype(np.float64),
    })
    per_user = frame.groupby("user_id").agg(
        sessions=("session", "nunique"), log_gap_s=("log_gap_s", "mean"), share_cart=("share_cart", "mean"),
        share_purchase=("share_purchase", "mean"), mean_pop_rank=("mean_pop_rank", "mean"), new_item_share=("new_item_share", "mean"))
    per_user["events_per_session"] = window / per_user["sessions"]
    return per_user.reset_index()[["user_id", *DRIFT_COLUMNS]]


def split_at(events: pd.DataFrame, seen: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's first `seen[user]` events (what the champion trained on) and the rest (new)."""
    events = events.sort_values(["user_id", "ts"], kind="stable")
    position = events.groupby("user_id").cumcount().to_numpy()
    old = position < events["user_id"].map(seen).fillna(0).to_numpy()
    return events[old], events[~old]


def _drift_report(reference: pd.DataFrame, current: pd.DataFrame, methods: dict[str, tuple[str, float]],
                  drift_share: float, out_dir: Path | None, stem: str, summary: bool) -> dict:
    """One Evidently report (DataDriftPreset with per-column stattests); HTML + JSON when out_dir is given."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    columns = list(methods)
    # Column types are declared, not inferred: Evidently would call a mostly-zero share categorical.
    numerical = [c for c in columns if pd.api.types.is_numeric_dtype(reference[c])]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=[c for c in columns if c not in numerical])  # a method of "auto" (threshold None) lets Evidently choose by column type and size
    options = dict(columns=columns, drift_share=drift_share,
                   per_column_method={c: m for c, (m, _) in methods.items() if m != "auto"} or None,
                   per_column_threshold={c: t for c, (_, t) in methods.items() if t is not None} or None)
    # Without a report to keep, only the count (same stattests, same decision): the preset's
    # per-column widgets are most of Evidently's run time.
    metrics = [DataDriftPreset(**options), *([DataSummaryPreset()] if summary else [])] if out_dir else [DriftedColumnsCount(**options)]
    with np.errstate(divide="ignore", invalid="ignore"):  # constant columns make correlations 0/0
        snapshot = Report(metrics, include_tests=True).run(
            current_data=Dataset.from_pandas(current[columns], data_definition=definition),
            reference_data=Dataset.from_pandas(reference[columns], data_definition=definition))
    result = snapshot.dict()
    value_drift = [m for m in result["metrics"] if m["metric_name"].startswith("ValueDrift")]
    scores = {m["config"]["column"]: float(m["value"]) for m in value_drift}
    resolved = {m["config"]["column"]: (m["config"]["method"], m["config"]["threshold"]) for m in value_drift}
    drifted = {t["metric_config"]["params"]["column"] for t in result["tests"]
               if t["metric_config"]["params"]["type"].endswith("ValueDrift") and t["status"] == "FAIL"}
    count = next(m["value"] for m in result["metrics"] if m["metric_name"].startswith("DriftedColumnsCount"))
    out = {
        "drift_share": float(count["share"]), "drifted_columns": int(count["count"]), "n_columns": len(columns),
        "dataset_drift": float(count["share"]) >= drift_share, "share_threshold": drift_share,
        "columns": {c: {"method": resolved[c][0], "threshold": resolved[c][1], "score": scores[c], "drifted": c in drifted}
                    for c in scores},  # per column only with a kept report
        "column_scores": scores, "n_reference": len(reference), "n_current": len(current), "html": None, "json": None,
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        out["html"], out["json"] = str(out_dir / f"{stem}.html"), str(out_dir / f"{stem}.json")
        snapshot.save_html(out["html"])
        snapshot.save_json(out["json"])
    return out


def evidently_reports(reference: pd.DataFrame, current: pd.DataFrame, out_dir: Path | None,
                      gp: GateParams | None = None) -> dict:
    """Evidently behaviour drift (`gate.drift_method` per column, dataset drift at
    `gate.drift_share_threshold`) plus a data summary when the report is kept under `out_dir`."""
    gp = gp or GateParams()
    methods = {c: (gp.drift_method, None if gp.drift_method == "auto" else gp.drift_threshold) for c in DRIFT_COLUMNS}
    return _drift_report(reference, current, methods, gp.drift_share_threshold, out_dir, "drift_report", out_dir is not None)


def behaviour_drift(events: pd.DataFrame, seen: pd.Series | None, item_counts: np.ndarray, gp: GateParams,
                    out_dir: Path | None = None) -> dict:
    """The gate's drift decision: behaviour in the champion's training data (each user's first
    `seen[user]` events) vs behaviour in the events that are new since, both over each user's last
    `gate.drift_window` events, item popularity in the champion's catalogue; plus the share of users
    with new events that the champion never saw. `seen=None` (no champion): the data vs itself."""
    old, new = split_at(events, seen) if seen is not None else (events, events)
    own = old.groupby(["user_id", "item_id"]).size().rename("own").reset_index()
    reference = window_behaviour(old, item_counts, gp.drift_window, own)
    current = window_behaviour(new, item_counts, gp.drift_window, own)
    active = new["user_id"].drop_duplicates()
    new_users = float((~active.isin(seen.index)).mean()) if seen is not None and len(active) else 0.0
    extra = {"new_user_share": new_users, "n_new_events": len(new) if seen is not None else 0, "window": gp.drift_window}
    if min(len(reference), len(current)) < 2:
        return {**extra, "drift_share": 0.0, "drifted_columns": 0, "n_columns": len(DRIFT_COLUMNS), "dataset_drift": False,
                "share_threshold": gp.drift_share_threshold, "columns": {}, "column_scores": {}, "html": None, "json": None,
                "n_reference": len(reference), "n_current": len(current)}
    return {**evidently_reports(reference, current, out_dir, gp), **extra}


# -- candidate vs champion ------------------------------------------------------------------

def per_user(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Each user's contribution to `metric` ("ndcg@10", "hr@10", "mrr"): the metric is its mean."""
    ranks = np.asarray(ranks, dtype=np.float64)
    name, _, k = metric.partition("@")
    if name == "mrr":
        return 1.0 / ranks
    if name not in ("hr", "ndcg") or not k.isdigit():
        raise ValueError(f"unknown metric {metric!r} (use ndcg@K, hr@K or mrr)")
    hit = ranks <= int(k)
    return hit.astype(np.float64) if name == "hr" else np.where(hit, 1.0 / np.log2(ranks + 1), 0.0)


def bootstrap_means(values: np.ndarray, samples: int, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """[m, n] per-user values → [samples, m] means over users resampled with replacement; the same
    resamples for every row, so differences of rows are paired."""
    n = values.shape[1]
    rng = np.random.default_rng(seed)
    chunk = max(1, BOOTSTRAP_CELLS // max(n, 1))
    means = []
    for start in range(0, samples, chunk):
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=min(chunk, samples - start))
        means.append(weights @ values.T / n)
    return np.concatenate(means)


def compare(candidate_ranks: np.ndarray, reference_ranks: np.ndarray, metrics: list[str], gp: GateParams) -> dict:
    """Per metric: candidate, reference, delta and the paired bootstrap interval of the delta."""
    deltas = np.array([per_user(candidate_ranks, m) - per_user(reference_ranks, m) for m in metrics])
    boot = bootstrap_means(deltas, gp.bootstrap_samples)
    alpha = 1 - gp.confidence
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2], axis=0)
    return {m: {"candidate": float(per_user(candidate_ranks, m).mean()), "reference": float(per_user(reference_ranks, m).mean()),
                "delta": float(deltas[i].mean()), "low": float(low[i]), "high": float(high[i])}
            for i, m in enumerate(metrics)}


def performance_check(comparison: dict, gp: GateParams, against: str, n_users: int) -> Check:
    """Decide on `gp.metric`'s interval: vs popularity for a first model, else vs the champion by policy."""
    c = comparison[gp.metric]
    ci = f"{c['delta']:+.4f} ({gp.confidence:.0%} CI {c['low']:+.4f} … {c['high']:+.4f})"
    if against == "popularity":
        need = gp.min_uplift_vs_baseline * c["reference"]
        ok = c["low"] >= need
        return Check("beats_popularity", c["low"], need, ok, True,
                     f"First model: {gp.metric} {c['candidate']:.4f} vs popularity {c['reference']:.4f} on the same "
                     f"{n_users} users, gain {ci}; its lower bound must reach +{need:.4f} "
                     f"({gp.min_uplift_vs_baseline:.0%} of popularity) — {'met' if ok else 'not met'}.")
    head = f"Candidate {gp.metric} {c['candidate']:.4f} vs champion {c['reference']:.4f} on the same {n_users} users: {ci}."
    if gp.policy == "superior":
        ok = c["low"] > gp.min_uplift
        return Check("vs_champion", c["low"], gp.min_uplift, ok, True,
                     f"{head} Policy superior: the lower bound must exceed +{gp.min_uplift:.4f} — "
                     f"{'met, a real improvement' if ok else 'not met, no proven improvement'}.")
    ok = c["high"] >= -gp.max_regression
    bar = f"-{gp.max_regression:.4f}" if gp.max_regression else "zero"
    return Check("vs_champion", c["high"], -gp.max_regression + 0.0, ok, True,
                 f"{head} Policy non_inferior: reject only if the whole interval lies below {bar} — "
                 f"{'no significant regression' if ok else 'a significant regression'}.")


# -- prediction drift -----------------------------------------------------------------------

def recommendation_frame(top: np.ndarray, item_counts: np.ndarray, category: np.ndarray) -> pd.DataFrame:
    """One row per recommended item: log popularity rank (in one catalogue) and category."""
    items = top.ravel()
    rank = popularity_rank(item_counts)
    known = items < len(rank)
    return pd.DataFrame({"rec_log_pop_rank": np.log1p(np.where(known, rank[np.minimum(items, len(rank) - 1)], len(rank))),
                         "rec_category": category[np.minimum(items, len(category) - 1)].astype(str)})


def prediction_drift(candidate_top: np.ndarray, champion_top: np.ndarray, item_counts: np.ndarray,
                     category: np.ndarray, out_dir: Path | None) -> dict:
    """Evidently drift of what the champion recommends (reference) vs the candidate (current)."""
    overlap = np.mean([len(set(a) & set(b)) / max(len(a), 1) for a, b in zip(candidate_top, champion_top)])
    result = _drift_report(recommendation_frame(champion_top, item_counts, category),
                           recommendation_frame(candidate_top, item_counts, category),
                           PREDICTION_METHODS, 0.5, out_dir, "prediction_drift", summary=False)
    return {**result, "overlap_at_k": float(overlap), "k": int(candidate_top.shape[1])}


# -- decision -------------------------------------------------------------------------------

def decide(checks: list[Check]) -> tuple[str, list[str]]:
    failed = [c for c in checks if c.blocking and not c.passed]
    verdict = "reject" if failed else "promote"
    reasons = [c.sentence for c in (failed or checks)]
    return verdict, reasons


def _ingest_quality(paths: Paths, registry: Registry, version: str) -> dict:
    """The share of raw rows ingest rejected as bad data, over the rows that are new in this
    candidate's snapshot: the raw files in its `sources` (the ingest manifest the train stage
    recorded) that the previous registered version's did not have. Each file is judged once, by the
    first candidate trained on it, so one bad burst blocks that candidate and not every later one
    (the raw folder is append-only); the first version judges every file. Only bad data counts:
    duplicates and near-duplicates (normal in click logs) are reported apart, and rows a cleaning
    policy removed (rating threshold, k-core) are the configuration working. Without per-file counts
    (no manifest recorded) the whole last ingest is judged."""
    sources = registry.get(version).get("sources") or {}
    counts = sources.get("counts") or (json.loads(paths.ingest_metrics.read_text()) if paths.ingest_metrics.exists() else {})
    history = _shares(*_bad_rows(counts))
    over_history = {"history_share": history["quarantine_share"], "history_rows": history["rows_read"]}
    files = sources.get("files") or []
    if not files or any("rows_invalid" not in f for f in files):
        return {**history, **over_history, "files_judged": None, "since": None}
    since, seen = _previous_snapshot(registry, version)
    new = [f for f in files if f["md5"] not in seen]
    judged = _shares(*(sum(f[key] for f in new) for key in ("rows_read", "rows_invalid", "rows_duplicate")))
    return {**judged, **over_history, "files_judged": [f["name"] for f in new], "since": since}


def _bad_rows(counts: dict) -> tuple[int, int, int]:
    """(rows read, bad rows, duplicates) from ingest counts (per reason, or the older summary keys)."""
    read = int(counts.get("read", 0))
    if any(reason in counts for reason in DATA_ERRORS):
        return read, sum(int(counts.get(r, 0)) for r in DATA_ERRORS), sum(int(counts.get(r, 0)) for r in DUPLICATES)
    return read, int(counts["invalid"]) if "invalid" in counts else read - int(counts.get("kept", read)), 0


def _shares(read: int, invalid: int, duplicates: int) -> dict:
    return {"quarantine_share": invalid / max(read, 1), "rows_read": read, "rows_invalid": invalid,
            "duplicate_rows": duplicates}


def _previous_snapshot(registry: Registry, version: str) -> tuple[str | None, set[str]]:
    """(the version registered last before `version` with a recorded snapshot, the md5s of its raw files)."""
    earlier = [v for v in registry.versions() if version_number(v["version"]) < version_number(version)
               and (v.get("sources") or {}).get("files")]
    if not earlier:
        return None, set()
    previous = max(earlier, key=lambda v: version_number(v["version"]))
    return previous["version"], {f["md5"] for f in previous["sources"]["files"]}


def _quarantine_check(quality: dict, gp: GateParams) -> Check:
    """Blocks when too much of what is new is bad data; says what was judged and what was not."""
    share, limit, files, since = quality["quarantine_share"], gp.max_quarantine_share, quality["files_judged"], quality["since"]
    if files is None:
        judged = (f"Ingest quarantined {share:.2%} of {quality['rows_read']} raw rows as bad data (max {limit:.2%}; "
                  f"the whole last ingest: no per-file counts recorded)")
    elif not files:
        judged = f"No raw file is new since {since}: nothing new to judge (max {limit:.2%} bad rows in new files)"
    else:
        names = ", ".join(files[:3]) + (f", … ({len(files) - 3} more)" if len(files) > 3 else "")
        where = f"the {len(files)} raw file(s) new since {since}" if since else f"all {len(files)} raw file(s) (no earlier version)"
        judged = (f"Ingest quarantined {share:.2%} of {quality['rows_read']} raw rows as bad data in {where}: {names} "
                  f"(max {limit:.2%}; each file is judged once, by the first candidate trained on it)")
    repeats = f"{quality['duplicate_rows']:,} duplicate or near-duplicate rows (normal in click logs) are counted apart and never block"
    history = f"; all history: {quality['history_share']:.2%} of {quality['history_rows']:,} rows bad" if files is not None else ""
    return Check("quarantine_share", share, limit, share <= limit, True, f"{judged}; {repeats}{history}.")


def _drift_sentence(drift: dict, gp: GateParams, champion: str | None) -> str:
    if champion is None:
        return "No champion to compare with: the drift report summarises the candidate's own data — does not block."
    if not drift["columns"]:
        return (f"Too few users with {drift['window']}+ new events to measure drift ({drift['n_current']}) — does not block.")
    names = [c for c, v in drift["columns"].items() if v["drifted"]]
    what = f": {', '.join(names)}" if names else ""
    return (f"{drift['drifted_columns']} of {drift['n_columns']} behaviour features drifted vs the champion's training data"
            f"{what} (share {drift['drift_share']:.2f}, dataset drift at ≥ {gp.drift_share_threshold:.2f}: "
            f"{'yes' if drift['dataset_drift'] else 'no'}; {gp.drift_method} at {gp.drift_threshold:g}); "
            f"{drift['new_user_share']:.0%} of the users with new events are new — informs, does not block.")


def _prediction_sentence(pred: dict | None) -> str:
    if pred is None:
        return "No champion yet: prediction drift not measured."
    moved = [f"{c} ({v['method']} {v['score']:.3f})" for c, v in pred["columns"].items() if v["drifted"]]
    return (f"Top-{pred['k']} recommendations for the same users overlap {pred['overlap_at_k']:.0%} with the champion's; "
            f"{'drifted: ' + ', '.join(moved) if moved else 'popularity rank and category mix stable'} — informs, does not block.")


SCORE_BATCH = 1024  # users scored at once: [batch, n_items] floats, whatever the test set's size


def score_test_set(candidate: Artifact, champion: Artifact | None, test: EvalSet, n_items: int,
                   exclude: list | None, exclude_seen_in_top: bool) -> dict:
    """Ranks of the test targets under the candidate, the reference (champion, else popularity) and
    popularity, and both models' top-k lists, computed batch by batch (a full score matrix of a
    large catalogue would not fit in memory)."""
    parts: dict[str, list] = {k: [] for k in ("candidate_ranks", "reference_ranks", "popularity_ranks",
                                                 "candidate_top", "reference_top")}
    for start in range(0, len(test), SCORE_BATCH):
        rows = slice(start, start + SCORE_BATCH)
        inputs, targets = test.inputs[rows], test.targets[rows]
        types = test.types[rows] if test.types is not None else None
        batch_exclude = exclude[rows] if exclude is not None else None
        popularity = candidate.popularity.next_item_scores(inputs)
        cand = candidate.scores(inputs, n_items, types)
        ref = champion.scores(inputs, n_items, types) if champion else popularity
        seen = inputs if exclude_seen_in_top else None
        parts["candidate_ranks"].append(target_ranks(cand, targets, batch_exclude))
        parts["reference_ranks"].append(target_ranks(ref, targets, batch_exclude))
        parts["popularity_ranks"].append(target_ranks(popularity, targets, batch_exclude))
        parts["candidate_top"].append(top_items(cand, PREDICTION_K, seen))
        parts["reference_top"].append(top_items(ref, PREDICTION_K, seen))
    empty = {"candidate_top": np.zeros((0, PREDICTION_K), np.int64), "reference_top": np.zeros((0, PREDICTION_K), np.int64)}
    return {k: np.concatenate(v) if v else empty.get(k, np.zeros(0, np.int64)) for k, v in parts.items()}


def run_gate(registry: Registry, version: str, paths: Paths, params: Params) -> dict:
    """Gate a registered candidate against the current champion; record and return the decision."""
    from seqops.models.release.gate_report import write_decision_html

    gp, out_dir = params.gate, paths.reports / "gate" / version
    horizon_s = params.model.churn_horizon_days * 86400
    test = EvalSet.from_parquet(paths.home / "models" / "test_set.parquet")
    candidate = Artifact.load(registry.model_dir(version))
    champ_version = registry.champion()
    champion = Artifact.load(registry.model_dir(champ_version)) if champ_version and champ_version != version else None
    n_items, exclude = candidate.n_items, (test.inputs if params.evaluate.exclude_seen else None)

    scored = score_test_set(candidate, champion, test, n_items, exclude, params.serving.exclude_seen)
    cand_ranks, ref_ranks = scored["candidate_ranks"], scored["reference_ranks"]
    metrics_list = list(dict.fromkeys([gp.metric, *gp.compare_metrics]))
    comparison = compare(cand_ranks, ref_ranks, metrics_list, gp) if len(test) else {}
    base_m = metrics_from_ranks(scored["popularity_ranks"], params.evaluate.ks)

    seen = champion.reference().set_index("user_id")["n_events"] if champion else None
    events = pd.read_parquet(paths.events, columns=["user_id", "item_id", "ts", "event_type", "session_id"])
    drift = behaviour_drift(events, seen, (champion or candidate).popularity.counts, gp, out_dir)
    pred = None
    if champion is not None:
        category = candidate.items().set_index("item_id")["category"].reindex(np.arange(n_items + 1)).fillna("unknown").to_numpy()
        pred = prediction_drift(scored["candidate_top"], scored["reference_top"],
                                candidate.popularity.counts, category, out_dir)
    quality = {"missing_share": float(candidate.reference().isna().mean().mean()), **_ingest_quality(paths, registry, version)}

    checks = [
        Check("eval_users", len(test), gp.min_eval_users, len(test) >= gp.min_eval_users, True,
              f"{len(test)} held-out users evaluated (minimum {gp.min_eval_users})."),
        Check("missing_share", quality["missing_share"], gp.max_missing_share, quality["missing_share"] <= gp.max_missing_share, True,
              f"Missing values in the candidate's training-data summary: {quality['missing_share']:.2%} (max {gp.max_missing_share:.2%})."),
        _quarantine_check(quality, gp),
    ]
    if comparison:
        checks.append(performance_check(comparison, gp, "champion" if champion else "popularity", len(test)))
    checks += [
        Check("drift_share", drift["drift_share"], gp.drift_share_threshold, not drift["dataset_drift"], False,
              _drift_sentence(drift, gp, champ_version if champion else None)),
        Check("prediction_drift", pred["drift_share"] if pred else 0.0, 0.5, not (pred and pred["dataset_drift"]), False,
              _prediction_sentence(pred)),
    ]
    verdict, reasons = decide(checks)
    decision = {
        "candidate": version, "champion": champ_version, "verdict": verdict, "reasons": reasons,
        "checks": [asdict(c) for c in checks], "protocol": protocol_label(params.evaluate), "policy": gp.model_dump(),
        "comparison": {"against": "champion" if champion else "popularity", "n_users": len(test),
                       "confidence": gp.confidence, "bootstrap_samples": gp.bootstrap_samples, "metrics": comparison},
        "metrics": {"candidate": metrics_from_ranks(cand_ranks, params.evaluate.ks),
                    "champion": metrics_from_ranks(ref_ranks, params.evaluate.ks) if champion else None, "popularity": base_m,
                    "heads": {"candidate": head_metrics(candidate, test, params.ingest.event_types, horizon_s),
                              "champion": head_metrics(champion, test, params.ingest.event_types, horizon_s) if champion else None}},
        "quality": quality, "drift": drift, "prediction_drift": pred,
        "reports": {"drift_html": drift["html"], "drift_json": drift["json"],
                    **({"prediction_html": pred["html"], "prediction_json": pred["json"]} if pred else {}),
                    "decision_json": str(out_dir / "decision.json"), "decision_html": str(out_dir / "decision.html")},
        "created_at": now_iso(),
    }
    decision = json.loads(json.dumps(decision, default=_plain))  # numpy scalars → JSON types, NaN-safe
    write_json_atomic(out_dir / "decision.json", decision)
    write_decision_html(decision, out_dir / "decision.html")
    registry.record_decision(version, decision)
    return decision


def _plain(value: object) -> object:
    if isinstance(value, np.generic):
        item = value.item()
        return None if isinstance(item, float) and not math.isfinite(item) else item
    return str(value)
