"""Right to erasure end to end on the real stack: train and serve, forget a user through the
service's admin endpoint, retrain, purge the old snapshots; then no file under `.seqops/` or in
the DVC cache holds the user's raw id, and the service answers for them as for an unknown user."""

import json
from pathlib import Path

import httpx
import pandas as pd
import pytest

from seqops.config import Paths
from seqops.serving.launch import running_service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]
TOKEN = "forget-test-token"


def a_unique_user(paths: Paths) -> str:
    """A user with events whose raw id is no part of another id (a byte scan then means that user)."""
    users = pd.read_parquet(paths.vocab / "users.parquet")
    active = set(pd.read_parquet(paths.events, columns=["user_id"])["user_id"])
    raw_ids = users["raw_id"].astype(str).tolist()
    return next(
        r for r, uid in zip(raw_ids, users["user_id"]) if uid in active and sum(r in other for other in raw_ids) == 1
    )


def files_naming(roots: list[Path], needle: bytes) -> list[str]:
    return [str(p) for root in roots for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def recommend(url: str, user: str) -> dict:
    answer = httpx.post(f"{url}/recommend", json={"user_id": user, "k": 3}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_forgotten_user_leaves_nothing_and_is_unknown(project, seqops, monkeypatch):
    monkeypatch.setenv("SEQOPS_API_TOKEN", TOKEN)
    paths = Paths(project)
    seqops(project, "retrain", "--batch", "0")
    gone = a_unique_user(paths)
    item = str(pd.read_parquet(paths.vocab / "items.parquet")["raw_id"].iloc[0])
    auth = {"Authorization": f"Bearer {TOKEN}"}

    with running_service(project) as url:
        assert not recommend(url, gone)["fallback"]  # known: the request log names them
        landed = httpx.post(
            f"{url}/events",
            headers=auth,
            timeout=30,
            json={"events": [{"user_id": gone, "item_id": item, "event_type": "view"}]},
        )
        assert landed.status_code == 200, landed.text  # the landing log names them
        request = {"user_id": gone, "reason": "erasure request #1"}
        assert httpx.post(f"{url}/admin/forget", json=request, timeout=30).status_code == 401
        forgot = httpx.post(f"{url}/admin/forget", json=request, headers=auth, timeout=120)
        assert forgot.status_code == 200, forgot.text
        assert forgot.json()["files"] > 0 and forgot.json()["online_rows"] > 0  # one per feature
        unknown, answer = recommend(url, "nobody-at-all"), recommend(url, gone)
        assert answer["fallback"] and answer["fallback_reason"] == unknown["fallback_reason"]
        assert answer["items"] == unknown["items"]

    seqops(project, "retrain", "--batch", "1")  # its ingest drops them again if the new batch names them
    metrics = json.loads(paths.ingest_metrics.read_text())
    assert "erased" in metrics
    purged = seqops(project, "purge-snapshots")
    assert "purged" in purged.stdout

    leftovers = files_naming([paths.home, project / ".dvc" / "cache"], gone.encode())
    assert not leftovers, leftovers
    audit = (paths.registry / "erasures.jsonl").read_text().splitlines()
    assert len(audit) == 1 and json.loads(audit[0])["reason"] == "erasure request #1"

    with running_service(project) as url:
        unknown, answer = recommend(url, "nobody-at-all"), recommend(url, gone)
        assert answer["fallback"] and answer["fallback_reason"] == unknown["fallback_reason"]
