"""Exploration and off-policy evaluation end to end, from params.yaml: `seqops retrain` trains a
champion; the real BentoML service explores (softmax) and logs each shown item's propensity; clicks
and purchases come back through POST /events; the next `seqops retrain` lands them, and its gate
joins them to the answers that preceded them and reports IPS, SNIPS and DR estimates of the new
candidate (a non-blocking `ope` check, the HTML page's off-policy section)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from seqops.config import Paths
from seqops.models.release.registry import Registry
from seqops.serving.launch import running_service
from tests.conftest import make_project

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
WINDOW_S, K, USERS = 5, 5, 40
OVERRIDES = {
    "serving": {"explore": {"policy": "softmax", "temperature": 0.5, "candidates": 15}},
    "gate": {"ope": {"window_s": WINDOW_S, "min_impressions": 40}},
}


def test_exploring_answers_and_their_clicks_reach_the_gate(tmp_path, seqops):
    project = make_project(tmp_path / "project", OVERRIDES)
    paths = Paths(project)
    seqops(project, "retrain", "--batch", "0")
    first = Registry.of_project(paths).versions()[-1]
    assert first["decision"]["ope"]["status"] == "no_data"  # nothing logged yet: no ope check
    assert "ope" not in {c["name"] for c in first["decision"]["checks"]}

    vocab = pd.read_parquet(paths.vocab / "users.parquet")
    active = pd.read_parquet(paths.events, columns=["user_id"])["user_id"].value_counts().index[:USERS]
    users = vocab.set_index("user_id").loc[active, "raw_id"].astype(str).tolist()
    rng = np.random.default_rng(0)
    clicks = purchases = 0
    with running_service(project) as url:
        for user in users:
            answer = httpx.post(f"{url}/recommend", json={"user_id": user, "k": K}, timeout=30).json()
            assert len(answer["propensities"]) == K and all(0 < p <= 1 for p in answer["propensities"])
            assert "explore" not in answer
            clicked = [item for item in answer["items"] if rng.random() < 0.4]
            bought = [item for item in clicked if rng.random() < 0.3]
            events = [{"user_id": user, "item_id": i, "event_type": "view"} for i in clicked] + [
                {"user_id": user, "item_id": i, "event_type": "purchase"} for i in bought
            ]
            if events:
                response = httpx.post(f"{url}/events", json={"events": events}, timeout=30)
                assert response.status_code == 200, response.text
            clicks, purchases = clicks + len(clicked), purchases + len(bought)
        for bad, field in (
            ({"user_id": users[0], "k": 0}, "k"),
            ({"user_id": users[0], "category": "nope"}, "category"),
        ):
            response = httpx.post(f"{url}/recommend", json=bad, timeout=30)
            assert 400 <= response.status_code < 500 and field in response.json()["error"], response.text
    time.sleep(WINDOW_S + 1)  # every answer's response window is closed before the gate reads the log

    seqops(project, "retrain", "--batch", "1")
    second = Registry.of_project(paths).versions()[-1]
    decision = second["decision"]
    ope = decision["ope"]
    assert ope["status"] == "ok" and ope["answers_logged"] == ope["answers"] == USERS, ope
    assert ope["items_shown"] == USERS * K
    logged = ope["estimates"]
    assert logged["click"]["logged"]["value"] == pytest.approx(clicks / (USERS * K))
    assert logged["purchase"]["logged"]["value"] == pytest.approx(purchases / (USERS * K))
    for reward in ("click", "purchase"):
        for name in ("ips", "snips", "dr"):
            e = logged[reward][name]
            assert e["low"] <= e["value"] <= e["high"] and np.isfinite(e["value"]), (reward, name, e)
    check = next(c for c in decision["checks"] if c["name"] == "ope")
    assert check["blocking"] is False and "DR" in check["sentence"]
    html = Path(decision["reports"]["decision_html"]).read_text()  # the candidate's (a refit adopts its decision)
    assert "Off-policy view" in html and "DR (decides)" in html
