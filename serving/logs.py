"""What the service writes down: the request log (every answer, for monitoring) and the landing
log of fresh events (for the next retrain). Both are buffered; a housekeeping thread flushes them.

Request log: `.seqops/logs/requests/requests-YYYY-MM-DD.jsonl`, one JSON object per answered
request: time, endpoint, user, model_version, items, latency_ms, fallback. Lines are buffered and
written with one append per flush (every `flush_s` or `max_buffer` lines), never one fsync per
request; several workers can share the file (each flush is a single O_APPEND write).

Landing log: fresh events in the raw CSV layout that ingest reads (user_id, item_id, category,
event_type, timestamp), written to `.seqops/data/landing/`. The file being appended to is hidden
(`.serving-*.csv.part`) and becomes `serving-<start>-<pid>.csv` when it is closed (after
`rotate_s`, at shutdown), so the retrain flow's `collect_landing` and the monitor only ever see
complete files.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from seqops.features.ingest import RAW_COLUMNS

log = logging.getLogger("seqops.serving")


class RequestLog:
    def __init__(self, directory: Path, *, flush_s: float = 1.0, max_buffer: int = 2000, enabled: bool = True):
        self.directory, self.flush_s, self.max_buffer, self.enabled = directory, flush_s, max_buffer, enabled
        self._lines: list[str] = []
        self._lock = threading.Lock()

    def add(self, record: dict) -> None:
        if not self.enabled:
            return
        line = json.dumps(record, separators=(",", ":"), default=str)
        with self._lock:
            self._lines.append(line)
            full = len(self._lines) >= self.max_buffer
        if full:
            self.flush()

    def flush(self) -> int:
        with self._lock:
            lines, self._lines = self._lines, []
        if not lines:
            return 0
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"requests-{datetime.now(timezone.utc):%Y-%m-%d}.jsonl"
        data = ("\n".join(lines) + "\n").encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return len(lines)


class EventLanding:
    def __init__(self, directory: Path, *, rotate_s: float = 60.0):
        self.directory, self.rotate_s = directory, rotate_s
        self._lock = threading.Lock()
        self._fh = None
        self._part: Path | None = None
        self._opened = 0.0

    def append(self, rows: list[dict]) -> None:
        """Append raw-layout rows and flush them to the OS before the request is answered."""
        if not rows:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=RAW_COLUMNS, lineterminator="\n")
        writer.writerows(rows)
        with self._lock:
            if self._fh is not None and time.time() - self._opened >= self.rotate_s:
                self._close()
            if self._fh is None:
                self._open()
            self._fh.write(buffer.getvalue())
            self._fh.flush()

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        self._part = self.directory / f".serving-{stamp}-{os.getpid()}.csv.part"
        self._fh = open(self._part, "w", newline="")
        csv.writer(self._fh, lineterminator="\n").writerow(RAW_COLUMNS)
        self._opened = time.time()

    def _close(self) -> Path | None:
        if self._fh is None:
            return None
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        final = self._part.with_name(self._part.name.lstrip(".").removesuffix(".part"))
        os.replace(self._part, final)
        self._fh, self._part = None, None
        return final

    def rotate(self, *, force: bool = False) -> Path | None:
        """Close the current file if it is old enough (or `force`); returns the closed file."""
        with self._lock:
            if self._fh is not None and (force or time.time() - self._opened >= self.rotate_s):
                return self._close()
        return None


class Housekeeper:
    """Flushes the request log and rotates the landing file in the background."""

    def __init__(self, request_log: RequestLog, landing: EventLanding, every_s: float = 0.5):
        self.request_log, self.landing, self.every_s = request_log, landing, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="seqops-housekeeping")
        self._last_flush = time.monotonic()

    def start(self) -> "Housekeeper":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                if time.monotonic() - self._last_flush >= self.request_log.flush_s:
                    self.request_log.flush()
                    self._last_flush = time.monotonic()
                self.landing.rotate()
            except Exception:  # noqa: BLE001 - logging must never take the service down
                log.exception("housekeeping failed")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.request_log.flush()
        self.landing.rotate(force=True)
