"""The real served API: a project trained by the real loop (`seqops retrain`, once per module),
`bentoml serve` on a free loopback port, HTTP from the outside.

- schemathesis with every check against the service's own OpenAPI document (bounded run);
- validation: every endpoint answers 4xx naming the offending field;
- POST /events, then /recommend reflects the events at once;
- a promote while requests are flowing: every response 200, answers switch to the new version.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from seqops.config import Paths
from seqops.io import tool_env
from seqops.models.release.registry import Registry
from seqops.serving.launch import running_service
from tests.conftest import make_project
from tests.serving.conftest import schemathesis_all_checks

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    project = make_project(tmp_path_factory.mktemp("serve-e2e") / "project")
    cmd = [str(Path(sys.executable).parent / "seqops"), "retrain", "--batch", "0", "--project", str(project)]
    done = subprocess.run(cmd, cwd=project, env=tool_env(), capture_output=True, text=True)
    assert done.returncode == 0, f"retrain failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    assert Registry.of_project(Paths(project)).champion() is not None
    return project


@pytest.fixture(scope="module")
def url(trained) -> str:
    with running_service(trained) as base:
        yield base


@pytest.fixture(scope="module")
def users(trained) -> list[str]:
    paths = Paths(trained)
    vocab = pd.read_parquet(paths.vocab / "users.parquet")
    active = pd.read_parquet(paths.events, columns=["user_id"])["user_id"].value_counts().index[:20]
    return vocab.set_index("user_id").loc[active, "raw_id"].astype(str).tolist()


@pytest.fixture(scope="module")
def catalogue(trained) -> list[str]:
    return pd.read_parquet(Paths(trained).vocab / "items.parquet")["raw_id"].astype(str).tolist()


def post(url: str, path: str, body) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=30)


def test_probes_metadata_and_metrics(url, trained):
    champion = Registry.of_project(Paths(trained)).champion()
    for probe in ("/healthz", "/livez", "/readyz"):
        assert httpx.get(f"{url}{probe}", timeout=10).status_code == 200, probe
    meta = httpx.get(f"{url}/metadata", timeout=10).json()
    assert meta["model_version"] == champion and meta["data_version"] and meta["heads"] == ["next_item"]
    assert meta["metrics"]["ndcg@10"] > 0
    assert post(url, "/metadata", {}).json()["model_version"] == champion  # the old POST still answers
    post(url, "/recommend", {"user_id": "nobody", "k": 2})
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert "seqops_batch_size_count" in metrics and 'seqops_fallback_total{reason="unknown user"}' in metrics
    assert 'endpoint="/recommend"' in metrics  # BentoML's request counters and latency histograms


def test_recommend_by_user_and_by_items(url, users, catalogue, trained):
    answer = post(url, "/recommend", {"user_id": users[0], "k": 5}).json()
    assert len(answer["items"]) == 5 and not answer["fallback"]
    items = pd.read_parquet(Paths(trained).vocab / "items.parquet").set_index("raw_id")["category"].astype(str)
    category = items.iloc[0]
    anonymous = post(
        url,
        "/recommend",
        {"items": catalogue[:3], "event_types": ["view", "cart", "view"], "k": 4, "category": category},
    ).json()
    assert anonymous["user_id"] is None and not anonymous["fallback"]
    assert {items[i] for i in anonymous["items"]} == {category} and not set(catalogue[:3]) & set(anonymous["items"])


BAD = [
    ("/recommend", {"user_id": "u", "k": 0}, "k"),
    ("/recommend", {"user_id": "u", "k": "ten"}, "k"),
    ("/recommend", {"user_id": "u", "k": 10_000}, "k"),
    ("/recommend", {"user_id": "u", "surprise": 1}, "surprise"),
    ("/recommend", {"items": []}, "items"),
    ("/recommend", {"items": ["no-such-item"]}, "items[0]"),
    ("/recommend", {"user_id": "u", "category": "no-such-category"}, "category"),
    ("/recommend", {"k": 3}, "user_id"),
    ("/next_action", {"user_id": 7}, "user_id"),
    ("/next_action", {"items": ["a", "b"], "event_types": ["view"]}, "event_types"),
    ("/churn", {"user_id": "u", "verbose": True}, "verbose"),
    ("/churn", {"items": ["a"], "event_types": ["teleport"]}, "event_types.0"),
    ("/events", {"events": []}, "events"),
    ("/events", {"events": [{"user_id": "u", "item_id": "i", "event_type": "teleport"}]}, "events.0.event_type"),
    (
        "/events",
        {"events": [{"user_id": "u", "item_id": "i", "event_type": "view", "timestamp": "yesterday"}]},
        "events.0.timestamp",
    ),
    ("/events", {"events": [{"user_id": "u", "item_id": "no-such-item", "event_type": "view"}]}, "events[0].item_id"),
    ("/events", {"events": [{"user_id": "u", "event_type": "view"}]}, "events.0.item_id"),
]


@pytest.mark.parametrize("path, body, field", BAD, ids=[f"{p}-{f}" for p, _, f in BAD])
def test_bad_requests_are_4xx_naming_the_field(url, path, body, field):
    response = post(url, path, body)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert field in response.json()["error"], response.text


def test_not_json_is_a_400(url):
    for content_type in ("application/json", "multipart/form-data", "text/plain"):
        response = httpx.post(
            f"{url}/recommend", content=b"{not json", headers={"content-type": content_type}, timeout=10
        )
        assert response.status_code == 400, (content_type, response.text)


def test_missing_heads_are_a_clear_404(url, users):
    for path in ("/next_action", "/churn"):
        response = post(url, path, {"user_id": users[0]})
        assert response.status_code == 404 and f"no {path[1:]} head" in response.json()["error"]


def test_pushed_events_are_reflected_at_once(url, users, trained):
    user = users[1]
    before = post(url, "/recommend", {"user_id": user, "k": 5, "exclude_seen": True}).json()
    now = time.time()
    events = [
        {"user_id": user, "item_id": item, "event_type": "view", "timestamp": now + i}
        for i, item in enumerate(before["items"][:3])
    ]
    pushed = post(url, "/events", {"events": events})
    pushed_at = time.monotonic()
    assert pushed.status_code == 200, pushed.text
    assert pushed.json()["accepted"] == 3 and pushed.json()["users"][0]["new_user"] is False
    after = post(url, "/recommend", {"user_id": user, "k": 5, "exclude_seen": True}).json()
    assert time.monotonic() - pushed_at < 1.0
    assert not set(before["items"][:3]) & set(after["items"]) and after["items"] != before["items"]
    kept = post(url, "/recommend", {"user_id": user, "k": 50, "exclude_seen": False}).json()
    assert kept["items"] != post(url, "/recommend", {"user_id": user, "k": 50, "exclude_seen": True}).json()["items"]

    # a user the trained vocabulary does not know: personalised from their first event on
    newcomer = post(
        url, "/events", {"events": [{"user_id": "walk-in-42", "item_id": before["items"][0], "event_type": "cart"}]}
    )
    assert newcomer.json()["users"] == [{"user_id": "walk-in-42", "n_events": 1, "new_user": True}]
    answer = post(url, "/recommend", {"user_id": "walk-in-42", "k": 3}).json()
    assert not answer["fallback"] and before["items"][0] not in answer["items"]

    # the events wait in the landing folder (in the raw layout) for the next retrain
    paths = Paths(trained)
    landed = list(paths.landing.glob(".serving-*.csv.part")) + list(paths.landing.glob("serving-*.csv"))
    rows = pd.concat([pd.read_csv(f, dtype=str) for f in landed])
    assert set(before["items"][:3]) <= set(rows.loc[rows["user_id"] == user, "item_id"])
    log_lines = [
        json.loads(line) for f in (paths.logs / "requests").glob("*.jsonl") for line in f.read_text().splitlines()
    ]
    mine = [r for r in log_lines if r["endpoint"] == "recommend" and r["user_id"] == user]
    assert mine and {"time", "model_version", "items", "latency_ms", "fallback"} <= set(mine[-1])


def test_schemathesis_with_every_check_finds_nothing(url, trained):
    done = schemathesis_all_checks(url, trained / ".seqops" / "reports" / "schemathesis", max_time_s=100)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]


def test_a_promote_under_load_fails_no_request(url, users, trained, tmp_path):
    """Requests keep flowing while a second version is registered, approved and promoted."""
    paths = Paths(trained)
    registry = Registry.of_project(paths)
    old = registry.champion()
    artifact = tmp_path / "artifact"
    shutil.copytree(registry.model_dir(old), artifact)
    meta_file = artifact / "seqops.json"
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "note": "re-registered by the e2e test"}))
    promoted: dict = {}

    def promote() -> None:
        version = registry.register(
            artifact,
            {
                "kind": "sasrec",
                "data_version": registry.get(old).get("data_version"),
                "parent_version": old,
                "actor": "tests",
            },
        )
        registry.record_decision(
            version,
            {
                "verdict": "promote",
                "reasons": ["e2e: promote under load"],
                "candidate": version,
                "champion": old,
                "metrics": {},
            },
        )
        registry.promote(version, actor="tests", reason="e2e: promote under load")
        promoted["version"], promoted["at"] = version, time.monotonic()

    results: list[tuple[float, int, str | None]] = []

    async def load() -> None:
        deadline = time.monotonic() + 60

        async def worker(i: int) -> None:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                n = i
                while time.monotonic() < deadline and len(results) < 20_000:
                    if "at" in promoted and time.monotonic() > promoted["at"] + 5:
                        return
                    response = await client.post("/recommend", json={"user_id": users[n % len(users)], "k": 5})
                    n += 1
                    body = response.json() if response.status_code == 200 else {}
                    results.append((time.monotonic(), response.status_code, body.get("model_version")))

        async def promote_soon() -> None:
            await asyncio.sleep(1.0)
            await asyncio.to_thread(promote)

        await asyncio.gather(*(worker(i) for i in range(8)), promote_soon())

    asyncio.run(load())
    assert "version" in promoted and promoted["version"] != old
    statuses = {status for _, status, _ in results}
    assert statuses == {200}, f"failed requests during the promote: {statuses}"
    ordered = sorted(results)
    assert ordered[0][2] == old and ordered[-1][2] == promoted["version"]
    # every worker process switches on its own (pointer re-read every 0.25 s, the new model loads
    # beside the old one): well before the load stops, every answer comes from the new version
    assert {v for t, _, v in ordered if t > promoted["at"] + 3.5} == {promoted["version"]}
    assert len(results) > 50
    deadline = time.monotonic() + 15  # a worker that got no request meanwhile notices on its next one
    while httpx.get(f"{url}/metadata", timeout=10).json()["model_version"] != promoted["version"]:
        assert time.monotonic() < deadline, "a worker still answers with the old champion"
        time.sleep(0.3)
