"""An ingest publishes all of its outputs or none: a run that keeps no event, or fails on the way
(the data report included), leaves the previous snapshot byte for byte and says why in one line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from seqops.config import IngestParams, Paths, SyntheticParams
from seqops.features.ingest import IngestError, ingest, write_outputs
from seqops.features.lineage import data_report_dir
from seqops.features.synthetic import write_batch
from seqops.io import file_md5
from tests.conftest import make_project
from tests.features.conftest import snapshot_files

HEADER = "user_id,item_id,category,event_type,timestamp"
T0 = 1767225600
SYNTHETIC = SyntheticParams(n_users=120, n_items=80, n_categories=5, sessions_per_user=2.0)
KEPT_NOTHING = {  # each keeps no event
    "header-only.csv": [],
    "one-row.csv": [f"u1,i1,c1,view,{T0}"],
    "all-duplicates.csv": [f"u1,i1,c1,view,{T0}"] * 5,
}


def seqops(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("SEQOPS_TRACEBACK", None)
    return subprocess.run(
        [str(Path(sys.executable).parent / "seqops"), *args, "--project", str(project)],
        capture_output=True,
        text=True,
        env=env,
    )


@pytest.fixture(scope="module")
def ingested_project(tmp_path_factory) -> Path:
    """A project after one real `seqops ingest` (Evidently data report on)."""
    project = make_project(tmp_path_factory.mktemp("publish") / "project", {"ingest": {"data_report": True}})
    write_batch(SYNTHETIC, Paths(project).raw, 0)
    done = seqops(project, "ingest")
    assert done.returncode == 0, done.stderr
    return project


@pytest.mark.parametrize("name", KEPT_NOTHING)
def test_cli_ingest_that_keeps_nothing_changes_nothing_and_says_why_in_one_line(ingested_project, tmp_path, name):
    paths = Paths(ingested_project)
    before = snapshot_files(paths)
    assert any("data_summary.html" in f for f in before)
    bad = tmp_path / name
    bad.write_text("\n".join([HEADER, *KEPT_NOTHING[name]]) + "\n")

    done = seqops(ingested_project, "ingest", "--path", str(bad))

    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr
    message = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(message) == 1 and "no event kept" in message[0] and "nothing was written" in message[0]
    assert snapshot_files(paths) == before


def test_write_outputs_refuses_an_empty_result_before_writing(tmp_path):
    paths = Paths(tmp_path)
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "a.csv").write_text(f"{HEADER}\nu1,i1,c1,view,{T0}\n")
    empty = ingest(tmp_path / "one", IngestParams(data_report=False), paths)
    with pytest.raises(IngestError, match="no event kept of 1 row read"):
        write_outputs(empty, paths)
    assert not paths.events.parent.exists()


def test_a_failing_data_report_leaves_the_previous_snapshot(tmp_path):
    paths = Paths(tmp_path)
    write_batch(SYNTHETIC, paths.raw, 0)
    write_outputs(ingest(paths.raw, IngestParams(data_report=False), paths), paths)
    before = snapshot_files(paths)
    write_batch(SYNTHETIC, paths.raw, 1)
    result = ingest(paths.raw, IngestParams(data_report=True), paths)
    paths.reports.mkdir(parents=True)
    (paths.reports / "data").write_text("a file where the report folder goes")  # the report cannot be written
    with pytest.raises(OSError):
        write_outputs(result, paths)
    assert snapshot_files(paths) == before
    assert not [f for f in paths.events.parent.rglob("*") if f.name.startswith(".")]  # no temp file left


def test_write_outputs_publishes_the_manifest_and_the_data_report_with_the_events(tmp_path):
    paths = Paths(tmp_path)
    write_batch(SYNTHETIC, paths.raw, 0)
    manifest = write_outputs(ingest(paths.raw, IngestParams(data_report=True), paths), paths)
    assert manifest["events_md5"] == file_md5(paths.events)
    report = data_report_dir(paths, manifest["events_md5"])
    assert (report / "data_summary.html").stat().st_size > 10_000 and (report / "data_summary.json").exists()
