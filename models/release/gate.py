"""The promotion gate: score the held-out users with the candidate, the champion and popularity,
run the checks of policy.py and the drift reports of drift.py, and record the decision (JSON, the
HTML page of report.py, the registry). The policy in words is in docs/gate-and-registry.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pandas as pd

from seqops.config import Params, Paths
from seqops.io import now_iso, write_json_atomic
from seqops.models.release.drift import behaviour_drift, drift_sentence, prediction_drift, prediction_sentence
from seqops.models.release.ope_view import ope_check, ope_view
from seqops.models.release.policy import Check, compare, decide, ingest_quality, performance_check, quarantine_check
from seqops.models.release.registry import Registry
from seqops.models.training.artifact import Artifact
from seqops.models.training.evaluate import head_metrics, metrics_from_ranks, target_ranks, top_items
from seqops.models.training.splits import EvalSet, protocol_label

PREDICTION_K = 10


SCORE_BATCH = 1024  # users scored at once: [batch, n_items] floats, whatever the test set's size


def score_test_set(
    candidate: Artifact,
    champion: Artifact | None,
    test: EvalSet,
    n_items: int,
    exclude: list | None,
    exclude_seen_in_top: bool,
) -> dict:
    """Ranks of the test targets under the candidate, the reference (champion, else popularity) and
    popularity, and both models' top-k lists, computed batch by batch (a full score matrix of a
    large catalogue would not fit in memory)."""
    parts: dict[str, list] = {
        k: [] for k in ("candidate_ranks", "reference_ranks", "popularity_ranks", "candidate_top", "reference_top")
    }
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
    empty = {
        "candidate_top": np.zeros((0, PREDICTION_K), np.int64),
        "reference_top": np.zeros((0, PREDICTION_K), np.int64),
    }
    return {k: np.concatenate(v) if v else empty.get(k, np.zeros(0, np.int64)) for k, v in parts.items()}


def compared_version(registry: Registry, champion: str) -> str:
    """The version that stands for the champion in the comparison: a served refit saw each user's
    held-out events, so on users without new events it would be judged on targets it trained on;
    the candidate it refits (`refit_of`) was trained as the new candidate is, without them."""
    return registry.get(champion).get("refit_of") or champion


def run_gate(registry: Registry, version: str, paths: Paths, params: Params) -> dict:
    """Gate a registered candidate against the current champion; record and return the decision."""
    from seqops.models.release.report import write_decision_html

    gp, out_dir = params.gate, paths.reports / "gate" / version
    horizon_s = params.model.churn_horizon_days * 86400
    test = EvalSet.from_parquet(paths.home / "models" / "test_set.parquet")
    candidate = Artifact.load(registry.model_dir(version))
    champ_version = registry.champion()
    judged_as = compared_version(registry, champ_version) if champ_version and champ_version != version else None
    champion = Artifact.load(registry.model_dir(judged_as)) if judged_as else None
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
        category = (
            candidate.items()
            .set_index("item_id")["category"]
            .reindex(np.arange(n_items + 1))
            .fillna("unknown")
            .to_numpy()
        )
        pred = prediction_drift(
            scored["candidate_top"], scored["reference_top"], candidate.popularity.counts, category, out_dir
        )
    quality = {
        "missing_share": float(candidate.reference().isna().mean().mean()),
        **ingest_quality(paths, registry, version),
    }

    checks = [
        Check(
            "eval_users",
            len(test),
            gp.min_eval_users,
            len(test) >= gp.min_eval_users,
            True,
            f"{len(test)} held-out users evaluated (minimum {gp.min_eval_users}).",
        ),
        Check(
            "missing_share",
            quality["missing_share"],
            gp.max_missing_share,
            quality["missing_share"] <= gp.max_missing_share,
            True,
            f"Missing values in the candidate's training-data summary: {quality['missing_share']:.2%} (max {gp.max_missing_share:.2%}).",
        ),
        quarantine_check(quality, gp),
    ]
    if comparison:
        checks.append(performance_check(comparison, gp, "champion" if champion else "popularity", len(test)))
    checks += [
        Check(
            "drift_share",
            drift["drift_share"],
            gp.drift_share_threshold,
            not drift["dataset_drift"],
            False,
            drift_sentence(drift, gp, champ_version if champion else None),
        ),
        Check(
            "prediction_drift",
            pred["drift_share"] if pred else 0.0,
            0.5,
            not (pred and pred["dataset_drift"]),
            False,
            prediction_sentence(pred),
        ),
    ]
    ope = ope_view(paths, params, registry.model_dir(version), version) if gp.ope.enabled else None
    if ope and (check := ope_check(ope, gp)):  # no check without logged exploring answers
        checks.append(check)
    verdict, reasons = decide(checks)
    decision = {
        "candidate": version,
        "champion": champ_version,
        "champion_compared_as": judged_as,
        "verdict": verdict,
        "reasons": reasons,
        "checks": [asdict(c) for c in checks],
        "protocol": protocol_label(params.evaluate),
        "policy": gp.model_dump(),
        "comparison": {
            "against": "champion" if champion else "popularity",
            "n_users": len(test),
            "confidence": gp.confidence,
            "bootstrap_samples": gp.bootstrap_samples,
            "metrics": comparison,
        },
        "metrics": {
            "candidate": metrics_from_ranks(cand_ranks, params.evaluate.ks),
            "champion": metrics_from_ranks(ref_ranks, params.evaluate.ks) if champion else None,
            "popularity": base_m,
            "heads": {
                "candidate": head_metrics(candidate, test, params.ingest.event_types, horizon_s),
                "champion": head_metrics(champion, test, params.ingest.event_types, horizon_s) if champion else None,
            },
        },
        "quality": quality,
        "drift": drift,
        "prediction_drift": pred,
        "ope": ope,
        "reports": {
            "drift_html": drift["html"],
            "drift_json": drift["json"],
            **({"prediction_html": pred["html"], "prediction_json": pred["json"]} if pred else {}),
            "decision_json": str(out_dir / "decision.json"),
            "decision_html": str(out_dir / "decision.html"),
        },
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
