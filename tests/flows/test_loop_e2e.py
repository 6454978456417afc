"""End to end on the real stack: Prefect flow → DVC repro → Feast → SASRec → Evidently gate →
registry → BentoML HTTP service on a free loopback port."""

import json
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from seqops.config import Paths
from seqops.features import store as feature_store
from seqops.models.release.registry import Registry
from seqops.serving.launch import running_service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_the_whole_loop(project, seqops):
    paths = Paths(project)
    seqops(project, "retrain", "--batch", "0")
    registry = Registry.of_project(paths)
    first = registry.versions()[-1]
    assert first["decision"]["verdict"] == "promote", first["decision"]["reasons"]
    assert registry.champion() == first["version"]

    # lineage: the model names the exact events snapshot DVC recorded, and the remote has it
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    events_out = next(o for o in lock["stages"]["ingest"]["outs"] if o["path"].endswith("events.parquet"))
    assert first["data_version"] == events_out["md5"]
    assert any((project / ".seqops" / "dvc-remote").rglob("*"))
    decision = first["decision"]
    assert Path(decision["reports"]["drift_html"]).exists() and Path(decision["reports"]["drift_json"]).exists()

    seqops(project, "retrain", "--batch", "1", "--drift", "0.5")
    second = registry.versions()[-1]
    assert second["version"] != first["version"] and second["data_version"] != first["data_version"]
    assert second["parent_version"] == first["version"]  # warm start from the champion
    assert second["decision"]["verdict"] in {"promote", "reject"}
    champion = registry.champion()
    profiles = json.loads((paths.home / "profiles" / "segments.json").read_text())
    assert profiles["model_version"] == champion  # profiled after the promote: the embedding of the model that serves

    users = pd.read_parquet(paths.vocab / "users.parquet")
    uid = int(pd.read_parquet(paths.events, columns=["user_id"])["user_id"].value_counts().index[0])
    raw_user = str(users.loc[users["user_id"] == uid, "raw_id"].iloc[0])
    recent = feature_store.online_features(feature_store.open_store(paths), [uid])[0]["last_items"]
    items = pd.read_parquet(paths.vocab / "items.parquet")
    recent_raw = set(items.set_index("item_id").loc[recent, "raw_id"].astype(str))

    with running_service(project) as url:
        answer = httpx.post(f"{url}/recommend", json={"user_id": raw_user, "k": 7}, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert len(body["items"]) == 7 and not body["fallback"]
        assert not recent_raw & set(body["items"])
        assert body["model_version"] == champion

        unknown = httpx.post(f"{url}/recommend", json={"user_id": "nobody", "k": 3}, timeout=30).json()
        assert unknown["fallback"] and len(unknown["items"]) == 3

        for bad in ({"user_id": raw_user, "k": 0}, {"user_id": raw_user, "k": "ten"}, {"k": 3}):
            response = httpx.post(f"{url}/recommend", json=bad, timeout=30)
            assert 400 <= response.status_code < 500, (bad, response.status_code, response.text)

        profile = httpx.post(f"{url}/profile", json={"user_id": raw_user}, timeout=30).json()
        assert not profile["fallback"] and profile["source"] == "online", profile
        assert profile["model_version"] == champion and profile["segment"]["label"]

        meta = httpx.post(f"{url}/metadata", json={}, timeout=30).json()
        assert meta["model_version"] == champion

    # package the champion as a Bento (real `bentoml build`)
    built = seqops(project, "build", "--source", str(Path(__file__).resolve().parents[2]))
    tag = built.stdout.split("built Bento ")[1].split()[0]
    bento = paths.bentoml_home / "bentos" / tag.replace(":", "/") / "bento.yaml"
    assert yaml.safe_load(bento.read_text())["labels"]["model_version"] == champion

    # the monitor sees a drifted batch waiting in the landing folder (no retrain triggered here)
    seqops(project, "generate", "--batch", "2", "--drift", "0.9")
    report = seqops(project, "monitor", "--no-trigger").stdout
    assert "'status': 'drift'" in report, report
