"""`dvc push` to the project's local DVC remote (`.dvc/config`: `../.seqops/dvc-remote`) SIGKILLed
in the middle of copying an object: the remote holds no partial object under a real name, the same
`dvc push` again completes it, and a workspace with no cache restores the snapshot from the remote
byte for byte."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest

from seqops.io import file_md5
from tests.conftest import dvc, make_project, run_killed_at

N_FILES = 12
# Real dvc, with one fault hook: the Nth object copy into the remote writes half the object to
# DVC's temporary file and then the process is SIGKILLed (seqops' crash point), as a kill mid-copy.
DVC_WITH_A_KILL = """
import os, sys
import dvc_objects.fs.local as local
from seqops.io import CRASH_ENV, crash_point

real_copyfile, copies = local.copyfile, []
remote, kill_at = sys.argv[1], int(sys.argv[2])


def copyfile(src, dest, *args, **kwargs):
    if str(dest).startswith(remote):
        copies.append(dest)
        if len(copies) == kill_at:
            with open(src, "rb") as fh, open(dest, "wb") as out:
                out.write(fh.read()[: os.path.getsize(src) // 2])
            crash_point(os.environ[CRASH_ENV])
    return real_copyfile(src, dest, *args, **kwargs)


local.copyfile = copyfile
from dvc.cli import main

sys.exit(main(["push", "-j", "1"]))
"""


def remote_objects(remote: Path) -> dict[str, Path]:
    """Objects under their final names (md5 → path); DVC's temporary files are named `.*.tmp`."""
    return {
        p.parent.name + p.name.removesuffix(".dir"): p
        for p in (remote / "files" / "md5").rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


@pytest.fixture
def added(tmp_path) -> tuple[Path, dict[str, str]]:
    """A project whose raw folder (N_FILES files) is `dvc add`ed, nothing pushed yet."""
    project = make_project(tmp_path / "project")
    raw = project / ".seqops" / "data" / "raw"
    raw.mkdir(parents=True)
    for i in range(N_FILES):
        (raw / f"batch-{i:03d}.csv").write_bytes(hashlib.sha256(str(i).encode()).digest() * 4096 * (i + 1))
    dvc(project, "add", ".seqops/data/raw")
    return project, {f.name: file_md5(f) for f in raw.iterdir()}


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [1, N_FILES // 2, N_FILES + 1])  # the first, a middle, the last object
def test_a_dvc_push_killed_mid_copy_is_completed_by_the_next_push(added, kill_at):
    project, files = added
    remote = project / ".seqops" / "dvc-remote"
    code = [sys.executable, "-c", DVC_WITH_A_KILL, str(remote), str(kill_at)]

    run_killed_at("dvc-push-mid-copy", code, project)

    objects = remote_objects(remote)
    assert len(objects) == kill_at - 1  # the copies before the kill, none after it
    for md5, path in objects.items():
        assert file_md5(path) == md5, f"{path} is a partial object under its final name"
    assert "raw" in dvc(project, "status", "--cloud")  # DVC sees what is missing

    dvc(project, "push")  # the same command, without the kill

    assert len(remote_objects(remote)) == N_FILES + 1  # every file and the folder's .dir listing
    assert "in sync" in dvc(project, "status", "--cloud")
    shutil.rmtree(project / ".dvc" / "cache")
    shutil.rmtree(project / ".seqops" / "data" / "raw")
    dvc(project, "pull", ".seqops/data/raw.dvc")  # a machine with nothing but the remote
    raw = project / ".seqops" / "data" / "raw"
    assert {f.name: file_md5(f) for f in raw.iterdir()} == files
    assert not [f for f in os.listdir(raw) if f.startswith(".")]


def test_dvc_push_and_gc_see_the_raw_snapshot(added):
    """`dvc push` without targets (what the retrain flow runs) sends the raw snapshot, and `dvc gc
    --workspace --cloud` (what `seqops purge-snapshots` runs) keeps it: DVC finds .seqops/data/raw.dvc."""
    project, _ = added
    remote = project / ".seqops" / "dvc-remote"
    dvc(project, "push")
    assert len(remote_objects(remote)) == N_FILES + 1
    dvc(project, "gc", "--workspace", "--cloud", "--force")
    assert len(remote_objects(remote)) == N_FILES + 1
    assert len([p for p in (project / ".dvc" / "cache").rglob("*") if p.is_file()]) >= N_FILES + 1
