"""`seqops demo`: run the retrain flow on a first batch, again on a drifted batch, then start the
real BentoML HTTP service, ask it for an explained recommendation, a profile and an anomaly score,
and say where everything landed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pandas as pd
from rich.console import Console
from rich.panel import Panel

from seqops.config import project_paths
from seqops.flows.retrain import retrain
from seqops.models.release.registry import Registry
from seqops.serving.launch import running_service


def most_active_user(project: Path) -> str:
    paths = project_paths(project)
    events = pd.read_parquet(paths.events, columns=["user_id"])
    users = pd.read_parquet(paths.vocab / "users.parquet")
    top = events["user_id"].value_counts().index[0]
    return str(users.loc[users["user_id"] == top, "raw_id"].iloc[0])


def profile_line(answer: dict) -> str:
    """A /profile answer in one line: the segment in words and the profile's headline figures."""
    if answer.get("fallback", True):
        return f"fallback: {answer.get('fallback_reason') or answer.get('error')}"
    p, seg = answer["profile"], answer["segment"]
    top = ", ".join(f"{c['name']} {c['share']:.0%}" for c in p["top_categories"][:3])
    churn = "?" if seg["churn_rate"] is None else f"{seg['churn_rate']:.0%}"
    return (
        f'segment {seg["id"]} "{seg["label"]}" ({seg["size"]} users, churn {churn}); '
        f"RFM {p['rfm']}, {p['n_events']} events in {p['n_sessions']} sessions, last {p['recency_days']:.1f} days "
        f"ago, top {top}; embedding {len(p['embedding'])} dims of {answer['model_version']}"
    )


def anomaly_line(answer: dict) -> str:
    """An /anomaly answer in one line: the score against the threshold and the strongest signals."""
    if answer.get("fallback", True):
        return f"fallback: {answer.get('fallback_reason') or answer.get('error')}"
    reasons = "; ".join(r["description"] for r in answer["reasons"][:2])
    flagged = "FLAGGED" if answer["flagged"] else "not flagged"
    return f"score {answer['score']:.3f} vs threshold {answer['threshold']:.3f} → {flagged} ({reasons})"


def run_demo(project: Path, console: Console) -> None:
    started = time.monotonic()
    first = retrain(project=str(project), batch=0, drift=0.0)
    second = retrain(project=str(project), batch=1, drift=0.5)
    paths = project_paths(project)
    registry = Registry.of_project(paths)
    user = most_active_user(project)
    with running_service(project) as url:
        answer = httpx.post(f"{url}/recommend", json={"user_id": user, "k": 10, "explain": True}, timeout=30).json()
        profile = httpx.post(f"{url}/profile", json={"user_id": user}, timeout=30).json()
        anomaly = httpx.post(f"{url}/anomaly", json={"user_id": user}, timeout=120).json()  # fits at first call
    champion = registry.champion()
    meta = registry.get(champion)
    evaluation = json.loads(paths.eval_metrics.read_text())
    lines = [
        f"data: raw snapshot {second['raw_data_version']} (dvc: .seqops/data/raw.dvc), events md5 {meta['data_version']}, pushed to .seqops/dvc-remote",
        f"feature store: {paths.home / 'feature_store'} (Feast registry + SQLite online store)",
        f"run 1: {first['candidate']} → {first['verdict'].upper()}; run 2 (drift 0.5): {second['candidate']} → {second['verdict'].upper()}",
        f"champion: {champion} (trained on data {meta['data_version'][:12]}, parent {meta.get('parent_version')})",
        f"last candidate: {evaluation['kind']} ndcg@10 {evaluation['model']['ndcg@10']:.4f} / hr@10 {evaluation['model']['hr@10']:.4f}"
        f" vs popularity {evaluation['popularity']['ndcg@10']:.4f} / {evaluation['popularity']['hr@10']:.4f}",
        f"gate report: {second['reports']['drift_html']}",
        f"gate decision: {second['reports']['decision_json']}",
        "reasons: " + " | ".join(second["reasons"]),
        f"service: answered on {url} (stopped); start it with `seqops serve` or `bentoml serve seqops.serving.service:Recommender`",
        f'sample: POST /recommend {{"user_id": "{user}", "k": 10}} → {answer["items"]} (model {answer["model_version"]}, fallback={answer["fallback"]})',
        f"why {answer['items'][0]}? {answer['explanations'][0]['text']} (POST /recommend with explain: true)",
        f'sample: POST /profile {{"user_id": "{user}"}} → {profile_line(profile)}',
        f'sample: POST /anomaly {{"user_id": "{user}"}} → {anomaly_line(anomaly)}',
        f"segments: {second['profiles']['k']} for {second['profiles']['users']} users, report {second['profiles']['report']}",
        "",
        "look at each piece in its own tool:",
        "  dvc dag; dvc metrics show; dvc params diff",
        "  cd feature_repo && feast feature-views list   (or `feast ui`)",
        "  PREFECT_HOME=.seqops/prefect prefect server start   → flow runs and the gate-decision artifact",
        "  seqops models; seqops history; seqops promote; seqops rollback",
        f"demo wall time: {time.monotonic() - started:.0f}s",
    ]
    console.print(Panel("\n".join(lines), title="seqops demo: where everything landed"))
