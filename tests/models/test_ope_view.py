"""The gate's off-policy view on real state: generated + ingested events, a tiny SASRec artifact, and
a request log written by the engine's own exploring slate choice (serving/explore.py), with clicks
and purchases appended to the events after the answers."""

import json

import numpy as np
import pandas as pd
import pytest

from seqops.config import FeatureParams, GateParams, IngestParams, Params, Paths, ServingParams, SyntheticParams
from seqops.config_ope import ExploreParams, OpeParams
from seqops.features.ingest import ingest, write_outputs
from seqops.features.synthetic import write_batch
from seqops.models.release.ope_view import ope_check, ope_view
from seqops.models.release.report import render_decision_html
from seqops.serving.champion import Champion
from seqops.serving.engine import Query
from seqops.serving.explore import Exploring
from seqops.serving.schemas import RecommendRequest
from tests.models.registry_helpers import tiny_artifact

MAX_LEN, K = 8, 3
EXPLORE = ExploreParams(policy="softmax", temperature=0.5, candidates=10)


def params_with(**ope) -> Params:
    return Params(
        features=FeatureParams(max_len=MAX_LEN),
        serving=ServingParams(explore=EXPLORE),
        gate=GateParams(ope=OpeParams(**{"min_impressions": 50, "window_s": 60, **ope}), bootstrap_samples=200),
    )


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One exploring answer per user, after all of the data; ~30% of shown items clicked 5 s later."""
    root = tmp_path_factory.mktemp("ope-view")
    paths = Paths(root)
    p = SyntheticParams(n_users=120, n_items=60, n_categories=4, seed=3)
    write_batch(p, paths.raw, 0)
    result = ingest(paths.raw, IngestParams(data_report=False), paths)
    write_outputs(result, paths)
    events = result.events
    model_dir = tiny_artifact(root / "candidate", 1, int(events["item_id"].max()), max_len=MAX_LEN, items=result.items)
    champion = Champion.from_dir(model_dir, "v0001", quantized=False)

    logger = Exploring()
    logger.params = params_with()
    users = dict(zip(result.users["user_id"], result.users["raw_id"].astype(str)))
    start = events["ts"].max() + pd.Timedelta(hours=1)
    rng = np.random.default_rng(0)
    lines, responses = [], []
    for n, (user, group) in enumerate(events.sort_values("ts").groupby("user_id")):
        history = group["item_id"].to_numpy()[-MAX_LEN:]
        scores = champion.next_item_scores([history], [group["event_type"].tolist()[-MAX_LEN:]])[0]
        request = RecommendRequest(user_id=users[user], k=K)
        top, _, extra = logger.slate(champion, scores, history, request, Query(users[user]), nonce=n)
        when = start + pd.Timedelta(minutes=n)
        lines.append(
            {
                "time": when.isoformat(),
                "endpoint": "recommend",
                "user_id": users[user],
                "status": 200,
                "model_version": "v0001",
                "items": champion.raw_items[top].tolist(),
                "fallback": False,
                **extra,
            }
        )
        for item in top[rng.random(len(top)) < 0.3]:
            responses.append((user, item, when + pd.Timedelta(seconds=5), "view"))
            if rng.random() < 0.3:
                responses.append((user, item, when + pd.Timedelta(seconds=8), "purchase"))
    log_dir = paths.logs / "requests"
    log_dir.mkdir(parents=True)
    (log_dir / "requests-2026-01-20.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    extra_events = pd.DataFrame(responses, columns=["user_id", "item_id", "ts", "event_type"])
    everything = pd.concat([events, extra_events.astype({"ts": events["ts"].dtype})], ignore_index=True)
    everything.to_parquet(paths.events, index=False)
    return paths, model_dir, len(lines), len(responses)


def test_the_logging_policy_as_target_estimates_its_own_logged_rate(logged):
    paths, model_dir, n_answers, _ = logged
    view = ope_view(paths, params_with(), model_dir, "v0001")
    assert view["status"] == "ok" and view["answers"] == view["answers_logged"] == n_answers
    assert view["left_out"] == {"window still open": 0, "unknown user or item": 0, "no history": 0}
    assert view["items_shown"] == n_answers * K
    assert view["effective_answers"] == pytest.approx(n_answers) and view["unsupported_mass"] == pytest.approx(0)
    for reward in ("click", "purchase"):
        logged_rate = view["estimates"][reward]["logged"]["value"]
        assert 0 < logged_rate < 1
        for name in ("ips", "snips"):  # weights 1: exactly the logged mean (up to float32 scoring noise)
            assert view["estimates"][reward][name]["value"] == pytest.approx(logged_rate), (reward, name)
            assert view["deltas"][reward][name]["value"] == pytest.approx(0, abs=1e-8)
        dr = view["deltas"][reward]["dr"]  # model term over all candidates vs over the shown: 0 in expectation
        assert abs(dr["value"]) < 0.01 and dr["low"] < 0 < dr["high"]
    assert view["estimates"]["click"]["logged"]["value"] == pytest.approx(0.3, abs=0.08)
    check = ope_check(view, params_with().gate)
    assert check.name == "ope" and check.passed and not check.blocking and "DR" in check.sentence


def test_a_greedy_target_is_estimated_with_intervals_and_shown_in_the_report(logged):
    paths, model_dir, n_answers, _ = logged
    params = params_with(target="greedy", interval="bootstrap")
    view = ope_view(paths, params, model_dir, "v0001")
    dr = view["estimates"]["click"]["dr"]
    assert view["status"] == "ok" and dr["low"] < dr["value"] < dr["high"]
    assert view["effective_answers"] < n_answers  # the greedy target reweights the logged slates
    html = render_decision_html(minimal_decision(view, params))
    assert "Off-policy view" in html and "DR (decides)" in html and "greedy" in html


def test_too_few_answers_inform_and_a_significant_drop_blocks_only_when_asked(logged):
    paths, model_dir, _, _ = logged
    few = ope_view(paths, params_with(min_impressions=10_000), model_dir, "v0001")
    check = ope_check(few, params_with(min_impressions=10_000, blocking=True).gate)
    assert few["status"] == "too_few" and check.passed and "at least 10000" in check.sentence
    view = ope_view(paths, params_with(), model_dir, "v0001")
    drop = {**view, "deltas": {"click": {"dr": {"value": -0.1, "low": -0.15, "high": -0.05}}}}
    assert not ope_check(drop, params_with().gate).blocking
    blocked = ope_check(drop, params_with(blocking=True).gate)
    assert not blocked.passed and blocked.blocking and "significant drop" in blocked.sentence
    assert ope_check(drop, params_with(blocking=True, max_regression=0.06).gate).passed


def test_no_exploring_answers_means_no_check(tmp_path):
    view = ope_view(Paths(tmp_path), params_with(), tmp_path / "no-model", "v0001")
    assert view["status"] == "no_data" and view["answers_logged"] == 0
    assert ope_check(view, params_with().gate) is None


def minimal_decision(view: dict, params: Params) -> dict:
    """The fields render_decision_html reads, around an OPE view."""
    drift = {"columns": {}, "drifted_columns": 0, "n_columns": 0, "drift_share": 0.0, "share_threshold": 0.5}
    drift |= {"dataset_drift": False, "n_reference": 0, "n_current": 0, "new_user_share": 0.0, "html": None}
    return {
        "verdict": "promote",
        "candidate": "v0002",
        "champion": "v0001",
        "created_at": "now",
        "protocol": "leave_one_out",
        "policy": params.gate.model_dump(),
        "reasons": [],
        "checks": [],
        "comparison": {"against": "champion", "metrics": {}},
        "metrics": {"candidate": {"ndcg@10": 0.1}},
        "drift": drift,
        "prediction_drift": None,
        "quality": {"missing_share": 0.0, "quarantine_share": 0.0, "rows_read": 0},
        "ope": view,
        "reports": {"decision_json": "decision.json"},
    }
