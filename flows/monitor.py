"""The `monitor` flow: compare fresh events (landed, not yet trained on) with the champion's
training data using the gate's Evidently drift check, read the service's request log, and trigger
`retrain` when behaviour has drifted past `gate.drift_share_threshold` or the served quality
dropped — more than `flows.max_fallback_share` of the answers came from the popularity fallback
(users or items the champion does not know) — not only on the clock. The online hit rate (the
share of fresh events whose item was in that user's latest earlier recommendation) is reported, and
so is the share of the batch's fresh users the anomaly detector flags (models/anomaly.py), with an
alert past `anomaly.alert_share` — an alert, not a retrain: bot traffic is not behaviour to learn —
and the segment sizes of the last profile runs (one per retrain, so one per landed batch) over time."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from seqops.config import FlowParams, load_params, project_paths
from seqops.features.profiles import segment_history
from seqops.features.sequences import canonical_from_raw, user_feature_table, user_summary
from seqops.models.anomaly import AnomalyModel, windows_from_reference
from seqops.models.release.drift import behaviour_drift
from seqops.models.release.registry import Registry
from seqops.models.training.artifact import Artifact
from seqops.serving.logs import landed_events, read_requests


def counted_fallbacks(requests: pd.DataFrame, per_client: bool = True) -> pd.Series:
    """Which answers the fallback trigger counts (True = given by the popularity fallback): with
    `per_client`, all but those of the client that received the most fallback answers. One client
    asking for many unknown users — a burst, a scraper, a misconfigured caller — then cannot move
    the trigger alone: the share, and the minimum number of answers, come from everyone else.
    (Behind a single reverse proxy every request has one client: `flows.fallback_per_client: false`.)"""
    fallback = requests["fallback"].astype(bool)
    if per_client and len(requests):
        loudest = fallback.groupby(requests["client"]).sum().idxmax()
        fallback = fallback[requests["client"] != loudest]
    return fallback


def serving_quality(requests: pd.DataFrame, fresh_raw: pd.DataFrame, per_client: bool = True) -> dict:
    """Answers, the fallback share of the counted ones (`counted_fallbacks`), and the online hit
    rate of fresh raw events (user_id, item_id, timestamp in unix s) against each user's latest
    earlier answer."""
    counted = counted_fallbacks(requests, per_client)
    out = {
        "answers": len(requests),
        "clients": int(requests["client"].nunique()),
        "counted_answers": len(counted),
        "fallback_share": float(counted.mean()) if len(counted) else 0.0,
    }
    events = fresh_raw.assign(
        time=pd.to_datetime(pd.to_numeric(fresh_raw["timestamp"], errors="coerce"), unit="s", utc=True),
        user_id=fresh_raw["user_id"].astype(str),
    ).dropna(subset=["time"])
    answered = requests[~requests["fallback"].astype(bool)].assign(user_id=lambda f: f["user_id"].astype(str))
    if answered.empty or events.empty:
        return {**out, "hit_rate": None, "events_after_an_answer": 0}
    matched = pd.merge_asof(
        events.sort_values("time"),
        answered.sort_values("time")[["time", "user_id", "items"]],
        on="time",
        by="user_id",
        direction="backward",
    ).dropna(subset=["items"])
    hits = [str(item) in set(map(str, items)) for item, items in zip(matched["item_id"], matched["items"])]
    return {**out, "hit_rate": float(np.mean(hits)) if hits else None, "events_after_an_answer": len(hits)}


def quality_dropped(quality: dict, flows: FlowParams) -> bool:
    """More of the counted answers than `flows.max_fallback_share` came from the fallback, with enough of them to judge."""
    return (
        quality["counted_answers"] >= flows.monitor_min_requests
        and quality["fallback_share"] > flows.max_fallback_share
    )


def trigger_retrain(project: str) -> str:
    """Start the deployed retrain flow if there is one (non-blocking), else run it inline."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    try:
        run = run_deployment("retrain/retrain", parameters={"project": project, "land": False}, timeout=0)
        return f"triggered deployment run {run.id}"
    except ObjectNotFound:
        from seqops.flows.retrain import retrain

        return f"ran retrain inline: {retrain(project=project, land=False)['verdict']}"


def fresh_and_known(paths, params, artifact: Artifact, raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The landed raw events in the champion's id space, and the events already ingested."""
    items, users = artifact.items(), pd.read_parquet(paths.vocab / "users.parquet")
    fresh = canonical_from_raw(
        raw,
        dict(zip(users["raw_id"].astype(str), users["user_id"])),
        dict(zip(items["raw_id"].astype(str), items["item_id"])),
        params.ingest.session_gap_s,
    )
    known = pd.read_parquet(paths.events, columns=["user_id", "item_id", "ts", "event_type", "session_id"])
    return fresh, known


def behaviour_drift_of(paths, params, artifact: Artifact, fresh: pd.DataFrame, known: pd.DataFrame) -> dict | None:
    """The gate's drift check of landed events vs the champion's training data; None when there
    are too few fresh users to judge (`flows.monitor_min_users`)."""
    if fresh["user_id"].nunique() < params.flows.monitor_min_users:
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    # same_span: landed events cover hours or days, the champion's data weeks — compare stretches of equal length
    drift = behaviour_drift(
        pd.concat([known, fresh], ignore_index=True),
        known.groupby("user_id").size(),
        artifact.popularity.counts,
        params.gate,
        paths.reports / "monitor" / stamp,
        same_span=True,
    )
    return {**drift, "users": int(fresh["user_id"].nunique())}


def flagged_share(params, artifact: Artifact, fresh: pd.DataFrame, known: pd.DataFrame) -> dict | None:
    """The batch's fresh users scored as /anomaly scores them (their feature rows after these
    events): the share flagged, and an alert past `anomaly.alert_share` (the threshold flags
    `anomaly.contamination` of usual users). None when there are too few fresh users to judge."""
    users = fresh["user_id"].unique()
    if len(users) < params.flows.monitor_min_users:
        return None
    events = pd.concat([known[known["user_id"].isin(users)], fresh], ignore_index=True)
    rows = user_summary(user_feature_table(events, params.features.max_len).to_pandas())
    answers = AnomalyModel.for_artifact(artifact, params.anomaly).score(windows_from_reference(rows))
    flagged = [a for a in answers if a["flagged"]]
    share = len(flagged) / len(answers)
    reasons = Counter(a["reasons"][0]["feature"] for a in flagged if a["reasons"])
    return {
        "users": len(answers),
        "flagged": len(flagged),
        "flagged_share": share,
        "alert": share > params.anomaly.alert_share,
        "top_reasons": dict(reasons.most_common(3)),
    }


def promoted_at(registry: Registry, version: str) -> pd.Timestamp | None:
    return next(
        (
            pd.Timestamp(e["time"])
            for e in reversed(registry.history())
            if e.get("version") == version and e["action"] != "register"
        ),
        None,
    )


SEGMENT_RUNS = 10  # profile runs whose segment sizes the monitor shows


def segment_sizes(paths) -> list[dict]:
    """Segment sizes per profile run, oldest first: when, data and model, {segment: users}, {segment: label}."""
    return [{**run, "data_version": run["data_version"][:12]} for run in segment_history(paths, last=SEGMENT_RUNS)]


def segments_markdown(runs: list[dict]) -> list[str]:
    if not runs:
        return []
    rows = [f"| {r['time']} | {r['data_version']} | {r['users']} | " for r in runs]
    sizes = [", ".join(f"{s}: {n} ({r['labels'][s]})" for s, n in r["sizes"].items()) for r in runs]
    return [
        "",
        "Segment sizes per profile run (segment: users (label)):",
        "",
        "| run | data | users | sizes |",
        "|---|---|---|---|",
        *(row + size + " |" for row, size in zip(rows, sizes)),
    ]


def monitor_markdown(result: dict, drift: dict | None, params) -> str:
    quality = result["quality"]
    lines = [f"## Monitor: {result['status'].upper()} — champion {result['champion']}, action: {result['action']}", ""]
    if drift is not None:
        lines += [
            f"{drift['users']} fresh users; drift share {drift['drift_share']:.2f} "
            f"(threshold {params.gate.drift_share_threshold:.2f})",
            "",
            "| feature | drift score |",
            "|---|---|",
            *(f"| {col} | {score:.4g} |" for col, score in drift["column_scores"].items()),
            "",
            f"Evidently report: `{drift['html']}`",
            "",
        ]
    anomalies = result.get("anomalies")
    if anomalies is not None:
        lines += [
            f"{'**ANOMALY ALERT**: ' if anomalies['alert'] else ''}{anomalies['flagged']} of {anomalies['users']} "
            f"fresh users flagged by the anomaly detector ({anomalies['flagged_share']:.1%}; alert above "
            f"{params.anomaly.alert_share:.0%}), top reasons {anomalies['top_reasons']}",
            "",
        ]
    lines.append(
        f"Serving since the promote: {quality['answers']} answers from {quality['clients']} clients, fallback share {quality['fallback_share']:.1%} "
        f"(max {params.flows.max_fallback_share:.0%}), online hit rate {quality['hit_rate']} "
        f"over {quality['events_after_an_answer']} events"
    )
    lines += segments_markdown(result["segments"])
    return "\n".join(lines) + "\n"


@flow(name="monitor", timeout_seconds=900)
def monitor(project: str = ".", trigger: bool = True) -> dict:
    """Drift of landed events and the served quality vs the champion; retrain when either passes its threshold."""
    logger = get_run_logger()
    paths = project_paths(project)
    params = load_params(paths.project / "params.yaml")
    registry = Registry.of_project(paths)
    champion = registry.champion()
    if champion is None:
        logger.info("nothing to monitor: no champion yet")
        return {"status": "idle", "segments": segment_sizes(paths)}
    files, raw = landed_events(paths.landing)
    quality = serving_quality(
        read_requests(paths.logs / "requests", promoted_at(registry, champion)), raw, params.flows.fallback_per_client
    )
    quality_drop = quality_dropped(quality, params.flows)
    drift = anomalies = None
    if files:
        artifact = Artifact.load(registry.model_dir(champion))
        fresh, known = fresh_and_known(paths, params, artifact, raw)
        drift = behaviour_drift_of(paths, params, artifact, fresh, known)
        anomalies = flagged_share(params, artifact, fresh, known)
        if anomalies is not None and anomalies["alert"]:
            logger.warning("anomaly alert: %.1f%% of the fresh users flagged", 100 * anomalies["flagged_share"])
    if drift is not None and drift["dataset_drift"]:
        status = "drift"
    elif quality_drop:
        status = "quality_drop"
    else:
        status = "stable" if drift is not None else "idle" if not files else "too_few_users"
    action = trigger_retrain(str(paths.project)) if status in ("drift", "quality_drop") and trigger else "none"
    result = {
        "status": status,
        "champion": champion,
        "landed_files": len(files),
        "quality": quality,
        "action": action,
        "segments": segment_sizes(paths),
        "anomalies": anomalies,
        **(
            {
                "users": drift["users"],
                "drift_share": drift["drift_share"],
                "new_user_share": drift["new_user_share"],
                "report": drift["html"],
            }
            if drift is not None
            else {}
        ),
    }
    logger.info("monitor: %s", json.dumps(result, default=str))
    create_markdown_artifact(
        monitor_markdown(result, drift, params), key="monitor", description="fresh events and serving vs champion"
    )
    return result
