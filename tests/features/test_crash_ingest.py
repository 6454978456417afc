"""`seqops ingest` SIGKILLed while it publishes a new snapshot: the events, quarantine, vocabularies,
metrics and manifest stay the previous snapshot byte for byte, or (killed after the commit point)
become the new one whole once the next step settles them — never a mix, and no stray file inside
the DVC-tracked vocabulary folder. Running the same command again gives exactly the snapshot an
uninterrupted run gives."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from seqops.config import Paths, SyntheticParams, load_params
from seqops.features.ingest import ingest, settle_snapshot, staging_dir, write_outputs
from seqops.features.lineage import data_report_dir, read_manifest
from seqops.features.synthetic import write_batch
from tests.conftest import make_project, run_killed_at, seqops_command
from tests.features.conftest import snapshot_files
from tests.flows.conftest import run_seqops

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SYNTHETIC = SyntheticParams(n_users=120, n_items=80, n_categories=5, sessions_per_user=2.0)
# step → which snapshot a reader finds once the next ingest has settled what the kill left
STEPS = {
    "before-rename": "previous",  # the first atomic rename of the run: its commit journal's
    "ingest-staged": "previous",  # every output written and synced, the journal not yet
    "ingest-mid-publish": "new",  # the journal written, one output renamed into place
}


def relative(files: dict[str, bytes], paths: Paths) -> dict[str, bytes]:
    return {str(Path(name).relative_to(paths.home)): data for name, data in files.items()}


def ingest_and_publish(paths: Paths) -> None:
    """What `seqops ingest` does, in this process (with the project's params)."""
    p = load_params(paths.project / "params.yaml").ingest
    write_outputs(ingest(paths.raw, p, paths), paths)


def uninterrupted(project: Path, tmp_path: Path) -> dict[str, bytes]:
    """The snapshot an uninterrupted ingest of the project's raw data gives (in a copy of it)."""
    copy = tmp_path / "reference"
    shutil.copytree(project / ".seqops", copy / ".seqops")
    shutil.copy(project / "params.yaml", copy / "params.yaml")
    paths = Paths(copy)
    ingest_and_publish(paths)
    return relative(snapshot_files(paths, reports=False), paths)


@pytest.fixture
def second_batch(tmp_path) -> tuple[Path, dict[str, bytes], dict[str, bytes]]:
    """A project whose first batch is ingested (the previous snapshot) and whose second batch has
    landed in raw/; returns it, the previous snapshot and the one the second ingest must give."""
    project = make_project(tmp_path / "project", {"ingest": {"data_report": True}})
    paths = Paths(project)
    write_batch(SYNTHETIC, paths.raw, 0)
    ingest_and_publish(paths)
    previous = relative(snapshot_files(paths, reports=False), paths)
    write_batch(SYNTHETIC, paths.raw, 1)
    return project, previous, uninterrupted(project, tmp_path)


@pytest.mark.parametrize("step", list(STEPS))
def test_an_ingest_killed_while_publishing_leaves_one_whole_snapshot(second_batch, step):
    project, previous, new = second_batch
    paths = Paths(project)
    assert previous != new

    run_killed_at(step, seqops_command(project, "ingest"), project)

    assert sorted(p.name for p in paths.vocab.iterdir()) == ["items.parquet", "users.parquet"]  # nothing stray
    settle_snapshot(paths)  # what the next ingest does first
    after_kill = relative(snapshot_files(paths, reports=False), paths)
    assert after_kill == (previous if STEPS[step] == "previous" else new)
    assert not [p for p in staging_dir(paths).iterdir() if p.name != ".lock"]

    run_seqops(project, "ingest")  # the same command, without the kill

    assert relative(snapshot_files(paths, reports=False), paths) == new
    report = data_report_dir(paths, read_manifest(paths)["events_md5"])
    assert (report / "data_summary.html").exists() and (report / "data_summary.json").exists()
    assert not [p for p in paths.home.rglob("*") if p.name.endswith(".tmp")]
