"""The `monitor` flow: compare fresh events (landed, not yet trained on) with the champion's
training data using the gate's Evidently drift check, and trigger `retrain` when behaviour has
drifted past `gate.drift_share_threshold` — not only on the clock."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from seqops.config import load_params, project_paths
from seqops.features.sequences import canonical_from_raw
from seqops.models.artifact import Artifact
from seqops.models.gate import behaviour_drift
from seqops.models.registry import Registry


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


@flow(name="monitor", timeout_seconds=900)
def monitor(project: str = ".", trigger: bool = True) -> dict:
    """Drift of landed events vs the champion's reference; retrain when it passes the threshold."""
    logger = get_run_logger()
    paths = project_paths(project)
    params = load_params(paths.project / "params.yaml")
    champion = Registry(paths).champion()
    files = sorted(paths.landing.glob("*.csv"))
    if champion is None or not files:
        logger.info("nothing to monitor (champion: %s, landed files: %d)", champion, len(files))
        return {"status": "idle"}

    artifact = Artifact.load(Registry(paths).model_dir(champion))
    items, users = artifact.items(), pd.read_parquet(paths.vocab / "users.parquet")
    raw = pd.concat([pd.read_csv(f, dtype=str) for f in files], ignore_index=True)
    fresh = canonical_from_raw(raw, dict(zip(users["raw_id"].astype(str), users["user_id"])),
                               dict(zip(items["raw_id"].astype(str), items["item_id"])), params.ingest.session_gap_s)
    if fresh["user_id"].nunique() < params.flows.monitor_min_users:
        logger.info("only %d fresh users (< %d): too few to judge drift", fresh["user_id"].nunique(), params.flows.monitor_min_users)
        return {"status": "too_few_users", "users": int(fresh["user_id"].nunique())}

    known = pd.read_parquet(paths.events, columns=["user_id", "item_id", "ts", "event_type", "session_id"])
    seen = known.groupby("user_id").size()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    drift = behaviour_drift(pd.concat([known, fresh], ignore_index=True), seen, artifact.popularity.counts,
                            params.gate, paths.reports / "monitor" / stamp)
    drifted = bool(drift["dataset_drift"])
    action = trigger_retrain(str(paths.project)) if drifted and trigger else "none"
    result = {"status": "drift" if drifted else "stable", "users": int(fresh["user_id"].nunique()), "champion": champion,
              "drift_share": drift["drift_share"], "new_user_share": drift["new_user_share"], "action": action,
              "report": drift["html"]}
    logger.info("monitor: %s", json.dumps(result))
    rows = "\n".join(f"| {col} | {score:.4g} |" for col, score in drift["column_scores"].items())
    create_markdown_artifact(
        f"## Monitor: {result['status'].upper()} (share {drift['drift_share']:.2f}, threshold "
        f"{params.gate.drift_share_threshold:.2f})\n\n{result['users']} fresh users vs champion {champion}; action: {action}\n\n"
        f"| feature | drift score |\n|---|---|\n{rows}\n\nEvidently report: `{drift['html']}`\n",
        key="monitor", description="fresh events vs champion")
    return result
