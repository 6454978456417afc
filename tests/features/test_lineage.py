"""Lineage: the ingest manifest, two DVC snapshots with `dvc metrics diff`, `seqops lineage` naming
the right one, and the per-snapshot Evidently data report."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from seqops.cli import app
from seqops.config import IngestParams, Paths, SyntheticParams
from seqops.features.ingest import ingest, write_outputs
from seqops.features.lineage import data_report, lineage, read_manifest, render_lineage, write_manifest
from seqops.features.synthetic import write_batch
from seqops.io import file_md5
from tests.conftest import make_project

SMALL = SyntheticParams(n_users=120, n_items=80, n_categories=5, sessions_per_user=2.0)


def sh(project: Path, *args: str) -> str:
    """Run a tool in the project with this interpreter's `dvc` and `seqops` first on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(list(args), cwd=project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


def events_md5_in_lock(project: Path) -> str:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return next(o["md5"] for o in lock["stages"]["ingest"]["outs"] if o["path"].endswith("events.parquet"))


def snapshot(project: Path, batch: int, drift: float = 0.0) -> dict:
    """Land a batch, `dvc add` the landing folder, `dvc repro ingest`, `dvc push` (as the retrain flow does)."""
    write_batch(SMALL.model_copy(update={"drift": drift}), Paths(project).raw, batch)
    sh(project, "dvc", "add", ".seqops/data/raw")
    sh(project, "dvc", "repro", "ingest")
    sh(project, "dvc", "push")
    raw = yaml.safe_load((project / ".seqops" / "data" / "raw.dvc").read_text())["outs"][0]["md5"]
    return {"events": events_md5_in_lock(project), "raw": raw, "manifest": read_manifest(Paths(project))}


def register(paths: Paths, version: str, snap: dict) -> None:
    """Registry metadata as `register_candidate` writes it (no model training needed for lineage)."""
    from seqops.models.release.registry import Registry

    Registry.of_project(paths).store.put(
        {
            "version": version,
            "created_at": "2026-01-01T00:00:00+00:00",
            "content_hash": version,
            "data_version": snap["events"],
            "raw_data_version": snap["raw"],
            "sources": snap["manifest"],
            "params_hash": "abc",
            "params": {"model": {"kind": "sasrec"}},
            "parent_version": None,
            "decision": None,
            "eval_metrics": {"sasrec": {"ndcg@10": 0.25}, "popularity": {"ndcg@10": 0.1}},
        }
    )


def test_two_ingests_two_dvc_versions_and_lineage_names_the_right_one(tmp_path):
    project = make_project(tmp_path / "project", {"ingest": {"data_report": False}})
    paths = Paths(project)
    first = snapshot(project, 0)
    sh(project, "git", "add", "-A")
    sh(project, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "snapshot 0")
    second = snapshot(project, 1, drift=0.5)
    assert first["events"] != second["events"] and first["raw"] != second["raw"]
    assert [f["name"] for f in first["manifest"]["files"]] == ["batch-000.csv"]
    assert [f["name"] for f in second["manifest"]["files"]] == ["batch-000.csv", "batch-001.csv"]
    assert second["manifest"]["events_md5"] == second["events"]  # the manifest names what DVC recorded

    # dvc metrics diff between the committed snapshot and the workspace shows what changed
    diff = json.loads(sh(project, "dvc", "metrics", "diff", "--json"))
    changed = diff[".seqops/events/ingest_metrics.json"]
    assert changed["read"]["old"] == first["manifest"]["counts"]["read"]
    assert changed["read"]["new"] == second["manifest"]["counts"]["read"] > changed["read"]["old"]

    register(paths, "v0001-aaaaaa", first)
    register(paths, "v0002-bbbbbb", second)
    for version, snap, other in (("v0001-aaaaaa", first, second), ("v0002-bbbbbb", second, first)):
        from seqops.models.release.registry import Registry

        info = lineage(Registry.of_project(paths), version, paths)
        assert info["data_version"] == snap["events"] and info["raw_data_version"] == snap["raw"]
        assert info["in_dvc_cache"] is True and info["in_dvc_remote"] is True  # both snapshots restorable
        done = CliRunner().invoke(app, ["lineage", version, "--project", str(project)])
        assert done.exit_code == 0, done.output
        assert snap["events"] in done.output and other["events"] not in done.output
        for f in snap["manifest"]["files"]:
            assert f["name"] in done.output and f["md5"] in done.output
            assert f["md5"] == file_md5(paths.raw / f["name"])
    assert "batch-001.csv" not in render_lineage(lineage(Registry.of_project(paths), "v0001-aaaaaa", paths))

    done = CliRunner().invoke(app, ["lineage", "v9999-nope", "--project", str(project)])
    assert done.exit_code == 1 and "unknown model version" in done.output


def test_manifest_lists_sources_and_the_events_it_wrote(tmp_path):
    paths = Paths(tmp_path)
    write_batch(SMALL, paths.raw, 0)
    write_batch(SMALL, paths.raw, 1)
    result = ingest(paths.raw, IngestParams(), paths)
    write_outputs(result, paths)
    manifest = write_manifest(result, paths, IngestParams())
    assert manifest == read_manifest(paths)
    assert manifest["events_md5"] == file_md5(paths.events)
    assert [(f["name"], f["path"]) for f in manifest["files"]] == [
        ("batch-000.csv", ".seqops/data/raw/batch-000.csv"),
        ("batch-001.csv", ".seqops/data/raw/batch-001.csv"),
    ]
    for f in manifest["files"]:
        assert f["md5"] == file_md5(paths.raw / f["name"]) and f["size"] == (paths.raw / f["name"]).stat().st_size
        assert f["rows_read"] == f["rows_kept"] + f["rows_quarantined"]
    assert manifest["counts"] == result.counts and manifest["format"] == "synthetic"
    metrics = json.loads(paths.ingest_metrics.read_text())
    assert metrics["stats"]["events"] == result.counts["kept"] and metrics["stats"]["gap_s_p50"] > 0


def test_data_report_per_snapshot(tmp_path):
    paths = Paths(tmp_path)
    write_batch(SMALL, paths.raw, 0)
    write_outputs(ingest(paths.raw, IngestParams(), paths), paths)
    md5 = file_md5(paths.events)
    html = data_report(paths, md5, sample=2000)
    assert html == paths.reports / "data" / md5[:12] / "data_summary.html"
    assert html.stat().st_size > 10_000
    summary = json.loads(html.with_suffix(".json").read_text())
    assert "event_type" in json.dumps(summary) and "log_gap_s" in json.dumps(summary)
