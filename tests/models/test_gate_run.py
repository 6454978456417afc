"""`run_gate` on real state without the heavy stages: generated + ingested events (the second batch
drifted), two tiny SASRec artifacts in the registry, a held-out set; real Evidently reports."""

import json
from html import escape

import numpy as np
import pandas as pd
import pytest

from seqops.config import GateParams, IngestParams, Params, Paths, SyntheticParams
from seqops.features.ingest import ingest, write_outputs
from seqops.features.sequences import user_feature_table, user_summary
from seqops.features.synthetic import write_batch
from seqops.models.release.gate import run_gate
from seqops.models.release.registry import Registry, RegistryError
from seqops.models.training.splits import EvalSet
from tests.models.registry_helpers import approve, tiny_artifact


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """A champion trained on batch 0 and a candidate on batches 0 + 1 (drift 0.5), registered."""
    root = tmp_path_factory.mktemp("project")
    paths = Paths(root)
    p = SyntheticParams(n_users=300, n_items=150, n_categories=8, seed=5)
    write_batch(p, paths.raw, 0)
    write_batch(p.model_copy(update={"drift": 0.5}), paths.raw, 1)
    result = ingest(paths.raw, IngestParams(data_report=False), paths)
    write_outputs(result, paths)
    events = result.events
    old = events[events["ts"] < pd.Timestamp(p.start, tz="UTC") + pd.Timedelta(days=p.days_per_batch)]
    features = user_feature_table(events, 8).to_pandas()

    last = events.sort_values(["user_id", "ts"]).groupby("user_id")
    users = [u for u, g in last if len(g) >= 3]
    histories = [g["item_id"].to_numpy()[:-1][-8:] for u, g in last if len(g) >= 3]
    targets = np.array([g["item_id"].iloc[-1] for u, g in last if len(g) >= 3])
    EvalSet(np.array(users), histories, targets).to_parquet(paths.home / "models" / "test_set.parquet")

    with pytest.MonkeyPatch.context() as env:  # BENTOML_HOME must not leak into later tests
        env.setenv("BENTOML_HOME", str(paths.bentoml_home))
        registry = Registry.of_project(paths)
        n_old, n_all = int(old["item_id"].max()), int(events["item_id"].max())
        champion = tiny_artifact(
            root / "a" / "champion",
            1,
            n_old,
            counts=np.bincount(old["item_id"]),
            items=result.items,
            reference=user_summary(features[features["event_timestamp"] < old["ts"].max() + pd.Timedelta(1)]),
        )
        candidate = tiny_artifact(
            root / "a" / "candidate",
            2,
            n_all,
            counts=np.bincount(events["item_id"]),
            items=result.items,
            reference=user_summary(features),
        )
        v1 = registry.register(champion, {})
        approve(registry, v1)
        registry.promote(v1)
        v2 = registry.register(candidate, {})
        decision = run_gate(registry, v2, paths, Params(gate=GateParams(bootstrap_samples=300)))
        yield registry, paths, v1, v2, decision


def test_the_decision_explains_itself_and_keeps_its_reports(gated):
    registry, paths, v1, v2, decision = gated
    assert decision["candidate"] == v2 and decision["champion"] == v1
    assert registry.get(v2)["decision"]["verdict"] == decision["verdict"]
    checks = {c["name"]: c for c in decision["checks"]}
    assert set(checks) == {
        "eval_users",
        "missing_share",
        "quarantine_share",
        "vs_champion",
        "drift_share",
        "prediction_drift",
    }
    assert (
        not checks["drift_share"]["passed"] and not checks["drift_share"]["blocking"]
    )  # drift 0.5: seen, not blocking
    assert decision["drift"]["dataset_drift"] and decision["drift"]["columns"]["new_item_share"]["drifted"]
    assert decision["comparison"]["n_users"] == checks["eval_users"]["value"] > 200
    ndcg = decision["comparison"]["metrics"]["ndcg@10"]
    assert ndcg["low"] <= ndcg["delta"] <= ndcg["high"] and "hr@10" in decision["comparison"]["metrics"]
    assert 0 <= decision["prediction_drift"]["overlap_at_k"] <= 1
    for key in ("drift_html", "drift_json", "prediction_html", "prediction_json", "decision_json", "decision_html"):
        assert (paths.reports / "gate" / v2 / decision["reports"][key].split("/")[-1]).exists(), key
    assert json.loads((paths.reports / "gate" / v2 / "decision.json").read_text())["verdict"] == decision["verdict"]


def test_the_html_report_shows_verdict_intervals_drift_and_links(gated):
    _, paths, _, v2, decision = gated
    html = (paths.reports / "gate" / v2 / "decision.html").read_text()
    assert decision["verdict"].upper() in html and v2 in html
    assert "interval" in html and "<svg" in html and "new_item_share" in html
    assert 'href="drift_report.html"' in html and 'href="prediction_drift.html"' in html
    assert all(escape(reason) in html for reason in decision["reasons"])


def test_unfair_evaluation_or_bad_quality_rejects_and_a_rejected_candidate_never_serves(gated):
    registry, paths, v1, v2, _ = gated
    paths.ingest_metrics.write_text(json.dumps({"read": 1000, "kept": 800}))
    strict = Params(gate=GateParams(min_eval_users=10_000, bootstrap_samples=200))
    decision = run_gate(registry, v2, paths, strict)
    assert decision["verdict"] == "reject"
    assert any("held-out users evaluated (minimum 10000)" in r for r in decision["reasons"])
    assert any("quarantined 20.00% of 1000 raw rows" in r for r in decision["reasons"])
    with pytest.raises(RegistryError, match="not approved"):
        registry.promote(v2)
    with pytest.raises(RegistryError, match="not approved"):
        registry.promote()  # the default, the newest gated candidate, is this rejected one
    assert registry.champion() == v1


def test_scoring_in_batches_gives_the_same_decision_numbers(gated, monkeypatch):
    from seqops.models.release import gate

    registry, paths, _, v2, decision = gated
    monkeypatch.setattr(gate, "SCORE_BATCH", 7)  # many uneven batches instead of one
    again = run_gate(registry, v2, paths, Params(gate=GateParams(bootstrap_samples=300)))
    assert again["metrics"]["candidate"] == decision["metrics"]["candidate"]
    assert again["metrics"]["champion"] == decision["metrics"]["champion"]
    assert again["prediction_drift"]["overlap_at_k"] == decision["prediction_drift"]["overlap_at_k"]
