"""All-or-nothing publication of several files, even across a SIGKILL or a power cut.

One `atomic_path` per file makes each file whole, but a set of them (an ingest's events,
quarantine, vocabularies, metrics, manifest, data report) still changes one rename at a time, and
a temporary file left beside its target by a killed writer stays there (inside a DVC-tracked
folder such as the vocabularies, the next `dvc repro` would take it into the snapshot). So:

1. every file is written into one staging folder (never inside a tracked folder), under a lock;
2. the staged files are synced, then a journal naming every (staged file, target) pair is written
   in one rename — the commit point;
3. the staged files are renamed into place, the journal and the staging folder removed.

A crash before the commit point leaves the previous files, and the next publication (or `settle`)
clears the staging folder; a crash after it is rolled forward by the next `settle`: whoever looks
after it sees the whole old set or the whole new one. The lock (released by the kernel when its
holder dies) keeps a second writer from clearing a live writer's staging folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from seqops.io import FILE_MODE, crash_point, fsync_dir, write_json_atomic

JOURNAL = "journal.json"
LOCK = ".lock"


class Publication:
    """Files staged for one publication; `stage(target)` gives the path to write the new file to."""

    def __init__(self, staging: Path, name: str):
        self.staging = staging
        self.name = name  # names its crash points: `<name>-staged`, `<name>-mid-publish`
        self.pairs: list[tuple[Path, Path]] = []

    def stage(self, target: Path) -> Path:
        Path(target).parent.mkdir(parents=True, exist_ok=True)  # fails here, before the commit point
        staged = self.staging / f"{len(self.pairs):02d}-{Path(target).name}"
        self.pairs.append((staged, Path(target)))
        return staged

    def commit(self) -> None:
        """Sync the staged files, write the journal (the commit point), then rename them into place."""
        for staged, _ in self.pairs:
            if staged.exists():
                os.chmod(staged, FILE_MODE)
                _fsync(staged)
        crash_point(f"{self.name}-staged")
        journal = [[str(staged), str(target)] for staged, target in self.pairs if staged.exists()]
        write_json_atomic(self.staging / JOURNAL, journal)
        _roll_forward(self.staging, journal, crash_at=f"{self.name}-mid-publish")


@contextmanager
def publishing(staging: Path, name: str) -> Iterator[Publication]:
    """Stage files in the body; on leaving, publish them all (or, on an error, none of them)."""
    with _locked(staging):
        _settle_locked(staging)
        publication = Publication(staging, name)
        try:
            yield publication
            publication.commit()
        finally:
            if not (staging / JOURNAL).exists():  # committed files are rolled forward, never dropped
                _clear(staging)


def settle(staging: Path) -> bool:
    """Finish a publication a crash interrupted after its commit point (True when there was one)
    and clear what a crash before it left; a no-op when nothing is pending."""
    if not staging.exists():
        return False
    with _locked(staging):
        return _settle_locked(staging)


def _settle_locked(staging: Path) -> bool:
    journal_path = staging / JOURNAL
    pending = journal_path.exists()
    if pending:
        _roll_forward(staging, json.loads(journal_path.read_text()))
    _clear(staging)
    return pending


def _roll_forward(staging: Path, journal: list[list[str]], crash_at: str | None = None) -> None:
    """Rename each staged file of `journal` that is still staged to its target (an earlier attempt
    may have moved some), sync the folders, then drop the journal."""
    for i, (staged, target) in enumerate(journal):
        if i == 1 and crash_at:
            crash_point(crash_at)  # one file published, the others not yet
        if Path(staged).exists():
            os.replace(staged, target)
    for folder in {Path(target).parent for _, target in journal}:
        fsync_dir(folder)
    (staging / JOURNAL).unlink()
    fsync_dir(staging)


@contextmanager
def _locked(staging: Path) -> Iterator[None]:
    staging.mkdir(parents=True, exist_ok=True)
    fd = os.open(staging / LOCK, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _clear(staging: Path) -> None:
    """Remove every staged file (the lock file stays: another process may be waiting on it)."""
    for entry in staging.iterdir() if staging.exists() else []:
        if entry.name != LOCK:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
