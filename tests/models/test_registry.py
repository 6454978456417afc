"""The registry API against the real BentoML model store (temp BENTOML_HOME), on both backends:
local files and PostgreSQL (skipped, with the reason, when the server is unreachable)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from seqops.config import Paths
from seqops.models.release.registry import Registry, RegistryError
from tests.models.registry_helpers import approve, fake_artifact


def test_register_is_idempotent_and_lands_in_the_bentoml_store(registry, tmp_path):
    v1 = registry.register(fake_artifact(tmp_path, "a"), {"data_version": "d1", "parent_version": None})
    assert registry.register(tmp_path / "artifact-a", {}) == v1
    assert (registry.model_dir(v1) / "model.safetensors").read_text() == "a"
    meta = registry.get(v1)
    assert meta["data_version"] == "d1" and meta["decision"] is None and meta["created_at"]


def test_a_rejected_candidate_never_becomes_champion(registry, tmp_path):
    v1 = registry.register(fake_artifact(tmp_path, "a"), {})
    with pytest.raises(RegistryError, match="not approved.*not gated"):
        registry.promote(v1)
    approve(registry, v1, "reject")
    for attempt in (
        lambda: registry.promote(v1),
        lambda: registry.promote(),
        lambda: registry.promote(v1, force=False, reason="pls"),
    ):
        with pytest.raises(RegistryError, match="not approved"):
            attempt()
    assert registry.champion() is None
    assert [e["action"] for e in registry.history()] == ["register"]


def test_forced_promote_needs_and_records_who_and_why(registry, tmp_path):
    v1 = registry.register(fake_artifact(tmp_path, "a"), {})
    approve(registry, v1, "reject")
    with pytest.raises(RegistryError, match="--reason"):
        registry.promote(v1, force=True, reason="  ")
    registry.promote(v1, force=True, reason="hotfix for launch", actor="alice")
    assert registry.champion() == v1
    entry = registry.history()[-1]
    assert (entry["action"], entry["actor"], entry["reason"], entry["verdict"]) == (
        "promote-forced",
        "alice",
        "hotfix for launch",
        "reject",
    )
    assert registry.pointer()["event"] == entry


def test_rollback_walks_back_the_champion_stack(registry, tmp_path):
    v1, v2, v3 = (registry.register(fake_artifact(tmp_path, c), {}) for c in "abc")
    for v in (v1, v2, v3):
        approve(registry, v)
        registry.promote(v)
    assert registry.pointer()["previous"] == [v2, v1]
    assert registry.rollback(reason="bad metrics") == v2
    assert registry.rollback() == v1
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback()
    actions = [(e["action"], e["version"], e.get("previous")) for e in registry.history() if e["action"] != "register"]
    assert actions == [
        ("promote", v1, None),
        ("promote", v2, v1),
        ("promote", v3, v2),
        ("rollback", v2, v3),
        ("rollback", v1, v2),
    ]
    assert [e["seq"] for e in registry.history()] == list(range(1, 9))


def test_promoting_an_earlier_champion_does_not_duplicate_it_in_the_stack(registry, tmp_path):
    v1, v2 = (registry.register(fake_artifact(tmp_path, c), {}) for c in "ab")
    for v in (v1, v2, v1):
        approve(registry, v)
        registry.promote(v)
    assert registry.pointer()["previous"] == [v2]
    assert registry.promote(v1) == v1  # already champion: no-op, no audit entry
    assert len([e for e in registry.history() if e["action"] == "promote"]) == 3


def test_default_promote_takes_the_latest_gated_candidate(registry, tmp_path):
    v1 = registry.register(fake_artifact(tmp_path, "a"), {})
    registry.register(fake_artifact(tmp_path, "b"), {})  # not gated yet
    approve(registry, v1)
    assert registry.promote() == v1


def test_a_version_whose_model_files_are_gone_cannot_be_promoted(registry, tmp_path):
    v1 = registry.register(fake_artifact(tmp_path, "a"), {})
    approve(registry, v1)
    registry._store.delete(f"seqops-recommender:{v1}")
    with pytest.raises(RegistryError, match="missing from the BentoML store"):
        registry.promote(v1)
    assert registry.champion() is None


def test_unknown_versions_are_named(registry):
    with pytest.raises(RegistryError, match="unknown model version 'v0042-x'"):
        registry.promote("v0042-x")


# -- local store specifics ------------------------------------------------------------------


def test_a_torn_audit_line_is_skipped_and_the_next_entry_starts_clean(local, tmp_path):
    v1 = local.register(fake_artifact(tmp_path, "a"), {})
    with open(local.root / "audit.jsonl", "a") as fh:
        fh.write('{"seq": 2, "action": "prom')  # a writer killed mid-line
    approve(local, v1)
    local.promote(v1)
    assert [e["action"] for e in local.history()] == ["register", "promote"]
    assert all(json.loads(line) for line in (local.root / "audit.jsonl").read_text().splitlines()[-1:])


def test_the_backend_comes_from_params_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv("BENTOML_HOME", str(Paths(tmp_path).bentoml_home))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"registry": {"backend": "local"}}))
    assert Registry.of_project(Paths(tmp_path)).settings.backend == "local"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"registry": {"backend": "sqlite"}}))
    with pytest.raises(RegistryError, match="registry.backend"):
        Registry.of_project(Paths(tmp_path))


def test_an_unreachable_postgres_registry_says_where(tmp_path, monkeypatch):
    from seqops.config import RegistryParams

    monkeypatch.setenv("BENTOML_HOME", str(Paths(tmp_path).bentoml_home))
    settings = RegistryParams(backend="postgres", postgres_dsn="postgresql://postgres@127.0.0.1:1/none")
    with pytest.raises(
        RegistryError, match="cannot reach the PostgreSQL registry at postgresql://postgres@127.0.0.1:1/none"
    ):
        Registry(Paths(tmp_path), settings)


def test_cli_lists_shows_promotes_with_force_and_prints_history(local, tmp_path):
    v1 = local.register(
        fake_artifact(tmp_path, "a"),
        {"data_version": "abc123", "params_hash": "p1", "eval_metrics": {"model": {"ndcg@10": 0.25}}},
    )
    approve(local, v1, "reject")
    (tmp_path / "params.yaml").write_text("{}\n")  # all defaults: the local backend
    seqops = [sys.executable, "-m", "seqops"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*seqops, *args, "--project", str(tmp_path)],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "200", "SEQOPS_ACTOR": "bob"},
        )

    refused = run("promote")
    assert refused.returncode == 1 and "not approved" in refused.stderr
    assert run("promote", "--force", "--reason", "launch day").returncode == 0
    listing = run("models")
    assert v1 in listing.stdout and "reject" in listing.stdout and "0.2500" in listing.stdout
    shown = run("models", "show", v1)
    assert shown.returncode == 0 and "abc123" in shown.stdout and "champion" in shown.stdout
    assert "launch day" in run("history").stdout and "bob" in run("history").stdout
    assert run("models", "show", "v9999-none").returncode == 1


def test_register_replaces_a_partial_model_a_killed_writer_left_in_the_store(local, tmp_path):
    import bentoml

    from seqops.models.release.registry import MODEL_NAME, content_hash

    source = fake_artifact(tmp_path, "full")
    tag = f"{MODEL_NAME}:v0001-{content_hash(source)[:6]}"
    with bentoml.models.create(tag, _model_store=local._store) as model:  # same tag, half the files
        (Path(model.path) / "partial.bin").write_text("x")
    version = local.register(source, {})
    assert f"{MODEL_NAME}:{version}" == tag
    assert (local.model_dir(version) / "model.safetensors").read_text() == "full"
    assert not (local.model_dir(version) / "partial.bin").exists()
