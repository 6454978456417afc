"""The gate's ingest-quality check: bad rows block, duplicates (normal in click logs) never do, and
each raw file is judged by the first candidate trained on it, so one old burst cannot block forever."""

from datetime import datetime, timezone

import pytest

from seqops.config import GateParams, IngestParams, Paths
from seqops.features.ingest import ingest, write_outputs
from seqops.features.lineage import read_manifest
from seqops.models.release.policy import ingest_quality, quarantine_check
from seqops.models.release.registry import Registry

GP = GateParams()
NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
HEADER = "user_id,item_id,category,event_type,timestamp"
T0 = 1767225600


def clean_rows(user: str, n: int = 20) -> list[str]:
    return [f"{user},i{k % 7},c1,view,{T0 + 60 * k}" for k in range(n)]


def land(paths: Paths, name: str, rows: list[str]) -> None:
    paths.raw.mkdir(parents=True, exist_ok=True)
    (paths.raw / name).write_text("\n".join([HEADER, *rows]) + "\n")


def register(paths: Paths, version: str) -> None:
    """Ingest the raw folder and register a version whose `sources` are that manifest (as the train
    stage copies it); no model is needed to judge data quality."""
    write_outputs(ingest(paths.raw, IngestParams(data_report=False), paths, now=NOW), paths)
    Registry.of_project(paths).store.put(
        {
            "version": version,
            "created_at": "2026-01-01T00:00:00+00:00",
            "content_hash": version,
            "sources": read_manifest(paths),
            "decision": None,
        }
    )


@pytest.fixture
def paths(tmp_path, monkeypatch):
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    return Paths(tmp_path)


def judged(paths: Paths, version: str):
    quality = ingest_quality(paths, Registry.of_project(paths), version)
    return quality, quarantine_check(quality, GP)


def test_repeated_events_count_apart_and_never_block(paths):
    # 60 requests of 100 repeated events each: exact duplicates (same receive time), besides 2,000 clean rows
    repeats = [f"u{r},i1,c1,view,{T0 + 3600 + r}" for r in range(60) for _ in range(100)]
    land(paths, "batch-000.csv", [row for u in range(100) for row in clean_rows(f"c{u}")] + repeats)
    register(paths, "v0001-aaaaaa")
    quality, check = judged(paths, "v0001-aaaaaa")
    assert quality["duplicate_rows"] == 60 * 99
    assert quality["quarantine_share"] < 0.05 and check.passed and check.blocking
    assert "5,940 duplicate" in check.sentence and "never block" in check.sentence


def test_a_bad_burst_blocks_the_candidate_trained_on_it_not_every_later_one(paths):
    land(paths, "batch-000.csv", clean_rows("u1") + clean_rows("u2"))
    register(paths, "v0001-aaaaaa")
    land(paths, "batch-001.csv", clean_rows("u3") + [f"u4,i1,c1,click,{T0}"] * 10)  # 10 of 30: bad event type
    register(paths, "v0002-bbbbbb")
    land(paths, "batch-002.csv", clean_rows("u5"))
    register(paths, "v0003-cccccc")

    first, first_check = judged(paths, "v0001-aaaaaa")
    assert first["files_judged"] == ["batch-000.csv"] and first_check.passed  # no earlier version: every file
    burst, burst_check = judged(paths, "v0002-bbbbbb")
    assert burst["files_judged"] == ["batch-001.csv"] and burst["rows_read"] == 30
    assert not burst_check.passed and "new since v0001-aaaaaa" in burst_check.sentence
    later, later_check = judged(paths, "v0003-cccccc")
    assert later["files_judged"] == ["batch-002.csv"] and later["quarantine_share"] == 0
    assert later_check.passed and "all history" in later_check.sentence
    assert later["history_share"] == pytest.approx(10 / 90)  # still reported, no longer blocking


def test_a_retrain_without_new_files_has_nothing_new_to_judge(paths):
    land(paths, "batch-000.csv", clean_rows("u1") + [f"u4,i1,c1,click,{T0}"] * 10)
    register(paths, "v0001-aaaaaa")
    Registry.of_project(paths).store.put(
        {**Registry.of_project(paths).get("v0001-aaaaaa"), "version": "v0002-bbbbbb", "content_hash": "b"}
    )
    quality, check = judged(paths, "v0002-bbbbbb")
    assert quality["files_judged"] == [] and quality["rows_read"] == 0 and check.passed
    assert "No raw file is new since v0001-aaaaaa" in check.sentence


def test_without_recorded_sources_the_whole_ingest_is_judged(paths):
    paths.ingest_metrics.parent.mkdir(parents=True)
    paths.ingest_metrics.write_text('{"read": 1000, "kept": 800}')
    Registry.of_project(paths).store.put(
        {
            "version": "v0001-aaaaaa",
            "created_at": "2026-01-01T00:00:00+00:00",
            "content_hash": "a",
            "sources": None,
            "decision": None,
        }
    )
    quality, check = judged(paths, "v0001-aaaaaa")
    assert quality["quarantine_share"] == pytest.approx(0.2) and not check.passed
    assert "quarantined 20.00% of 1000 raw rows" in check.sentence
