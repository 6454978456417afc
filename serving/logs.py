"""What the service writes down: the request log (every answer, for monitoring) and the landing
log of fresh events (for the next retrain). Both are written before the answer leaves the worker:
a worker killed right after answering has lost nothing it acknowledged.

Request log: `.seqops/logs/requests/requests-YYYY-MM-DD.jsonl`, one JSON object per answer —
client errors included (time, endpoint, user_id, status, model_version, items, latency_ms,
fallback, error). Each line is one O_APPEND write on a file descriptor the worker keeps open (no
fsync: it survives a killed process, not a power cut), so several workers share the file and a
line costs one system call.

Readers live here too, beside what they read: `read_requests` (the monitor's view of the request
log) and `landed_events` (fresh landed events, dead workers' part files adopted first); exploring
answers' impressions and the events that respond to them: serving/impressions.py.

Landing log: fresh events in the raw CSV layout that ingest reads (user_id, item_id, category,
event_type, timestamp; csv quoting, ids validated at the edge by `schemas.Event`), written to
`.seqops/data/landing/`. The file being appended to is hidden (`.serving-<start>-<pid>.csv.part`)
and becomes `serving-<start>-<pid>.csv` when it is closed (after `rotate_s`, at shutdown), so the
retrain flow's `collect_landing` and the monitor only ever see complete files. Each accepted batch
is one O_APPEND write that has returned before /events answers 200.

A killed worker cannot rename its part file. Its writer holds an exclusive `flock` on the file for
as long as it is open, and the kernel drops that lock when the process dies, however it dies; so
`adopt_orphans` (run at every worker start, by `collect_landing` and by the monitor) renames every
part file whose lock it can take — never a live writer's, whatever its PID — after cutting a
half-written last line (its write never returned, so its request was never acknowledged). A batch
cut by the kill keeps its complete rows: they were not acknowledged either, and a client that
retries them with their timestamps gets them quarantined as duplicates at ingest.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import logging
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pandas as pd

from seqops.features.ingest import RAW_COLUMNS
from seqops.io import FILE_MODE, fsync_dir

log = logging.getLogger("seqops.serving")
DIR_MODE = 0o755
PART_GLOB = ".serving-*.csv.part"
EMPTY_STALE_S = 60.0  # an empty, unlocked part file this old has no writer coming back
TAIL_BYTES = 1 << 16  # far more than one landed row (ids are at most 200 characters)


def make_dir(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)


def open_append(path: Path, *, exclusive: bool = False) -> int:
    """An O_APPEND descriptor on `path`, created FILE_MODE whatever the process umask."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_EXCL if exclusive else 0)
    fd = os.open(path, flags, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class RequestLog:
    def __init__(self, directory: Path, *, enabled: bool = True):
        self.directory, self.enabled = directory, enabled
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None

    def add(self, record: dict) -> None:
        if not self.enabled:
            return
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        path = self.directory / f"requests-{datetime.now(timezone.utc):%Y-%m-%d}.jsonl"
        with self._lock:
            if path != self._path:  # a new UTC day: a new file
                self._close()
                make_dir(self.directory)
                self._fd, self._path = open_append(path), path
            write_all(self._fd, line)

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._path = None, None

    def close(self) -> None:
        with self._lock:
            self._close()


class EventLanding:
    def __init__(self, directory: Path, *, rotate_s: float = 60.0):
        self.directory, self.rotate_s = directory, rotate_s
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._part: Path | None = None
        self._opened = 0.0

    def append(self, rows: list[dict]) -> None:
        """Append raw-layout rows in one write that has reached the OS when this returns."""
        if not rows:
            return
        buffer = io.StringIO()
        csv.DictWriter(buffer, fieldnames=RAW_COLUMNS, lineterminator="\n").writerows(rows)
        with self._lock:
            if self._fd is not None and time.time() - self._opened >= self.rotate_s:
                self._close()
            if self._fd is None:
                self._open()
            write_all(self._fd, buffer.getvalue().encode())

    def _open(self) -> None:
        make_dir(self.directory)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        part = self.directory / f".serving-{stamp}-{os.getpid()}.csv.part"
        fd = open_append(part, exclusive=True)
        # locked before its first byte: adopt_orphans never mistakes a live, empty file for a dead one
        fcntl.flock(fd, fcntl.LOCK_EX)
        write_all(fd, (",".join(RAW_COLUMNS) + "\n").encode())
        self._fd, self._part, self._opened = fd, part, time.time()

    def _close(self) -> Path | None:
        if self._fd is None:
            return None
        os.fsync(self._fd)
        final = final_name(self._part)
        os.replace(self._part, final)  # still locked: nobody adopts it meanwhile
        fsync_dir(self.directory)
        os.close(self._fd)
        self._fd, self._part = None, None
        return final

    def rotate(self, *, force: bool = False) -> Path | None:
        """Close the current file if it is old enough (or `force`); returns the closed file."""
        with self._lock:
            if self._fd is not None and (force or time.time() - self._opened >= self.rotate_s):
                return self._close()
        return None


def final_name(part: Path) -> Path:
    return part.with_name(part.name.lstrip(".").removesuffix(".part"))


def adopt_orphans(directory: Path) -> list[Path]:
    """Give the part files of dead writers their final names (see the module docstring); returns them."""
    adopted = []
    for part in sorted(directory.glob(PART_GLOB)) if directory.is_dir() else []:
        final = _adopt(part)
        if final is not None:
            log.warning("adopted %s, left by a writer that died before closing it", final.name)
            adopted.append(final)
    if adopted:
        fsync_dir(directory)
    return adopted


def _adopt(part: Path) -> Path | None:
    try:
        fd = os.open(part, os.O_RDWR)
    except FileNotFoundError:
        return None  # closed (renamed) or adopted by someone else meanwhile
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # a live writer
        if not _same_file(part, fd):
            return None  # renamed between our open and our lock: not an orphan any more
        info = os.fstat(fd)
        if info.st_size == 0:  # created this instant, its writer about to lock it — or dead right then
            if time.time() - info.st_mtime > EMPTY_STALE_S:
                part.unlink()  # no events in it
            return None
        if not _cut_partial_line(fd):
            part.unlink()  # not even the header is complete: no events
            return None
        os.fsync(fd)
        final = final_name(part)
        os.replace(part, final)
        return final
    finally:
        os.close(fd)


def _same_file(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _cut_partial_line(fd: int) -> bool:
    """Truncate after the last newline; False when there is none."""
    size = os.fstat(fd).st_size
    end = size
    while end > 0:
        start = max(0, end - TAIL_BYTES)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            if start + newline + 1 < size:
                os.ftruncate(fd, start + newline + 1)
            return True
        end = start
    return False


# -- reading what was written (the monitor, the retrain flow) ----------------------------------

REQUEST_COLUMNS = ["time", "user_id", "items", "fallback", "client"]


def answer_records(directory: Path, since: pd.Timestamp | None = None) -> Iterator[dict]:
    """The request log's lines of /recommend answers (status 200), from the UTC day of `since` on."""
    for path in sorted(directory.glob("requests-*.jsonl")):
        if since is not None and path.stem.removeprefix("requests-") < f"{since:%Y-%m-%d}":
            continue  # one file per UTC day: older days cannot hold newer answers
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if record.get("endpoint") == "recommend" and record.get("status") == 200:
                yield record


def read_requests(directory: Path, since: pd.Timestamp | None = None) -> pd.DataFrame:
    """/recommend answers from the request log (time, user_id, items, fallback, client), from `since` on."""
    rows = [{k: record.get(k) for k in REQUEST_COLUMNS} for record in answer_records(directory, since)]
    frame = pd.DataFrame(rows, columns=REQUEST_COLUMNS)
    frame["client"] = frame["client"].fillna("unknown")  # logs written before the guard named clients
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    return frame if since is None else frame[frame["time"] >= since]


def landed_events(landing: Path) -> tuple[list[Path], pd.DataFrame]:
    """The complete landed files and their raw rows — with the part files of dead service workers
    adopted first: the events they acknowledged are fresh events too."""
    adopt_orphans(landing)
    files = sorted(landing.glob("*.csv"))
    raw = (
        pd.concat([pd.read_csv(f, dtype=str) for f in files], ignore_index=True)
        if files
        else pd.DataFrame(columns=RAW_COLUMNS)
    )
    return files, raw


class Housekeeper:
    """Rotates the landing file in the background; at stop, closes both logs."""

    def __init__(self, request_log: RequestLog, landing: EventLanding, every_s: float = 0.5):
        self.request_log, self.landing, self.every_s = request_log, landing, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="seqops-housekeeping")

    def start(self) -> "Housekeeper":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.landing.rotate()
            except Exception:  # noqa: BLE001 - logging must never take the service down
                log.exception("housekeeping failed")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.request_log.close()
        self.landing.rotate(force=True)
