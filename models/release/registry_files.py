"""The local registry store: JSON files under `.seqops/registry/` — `versions/<v>.json`,
`champion.json` (replaced with one `os.replace`; the audit entry of that change travels inside it),
and the append-only `audit.jsonl` — written under a file lock, with explicit file modes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock

from seqops.io import FILE_MODE, write_json_atomic
from seqops.models.release.registry_schema import (
    AuditEntry,
    DamagedRegistryError,
    Pointer,
    VersionMeta,
    check_version,
    checked,
    empty_pointer,
    version_number,
)

DIR_MODE = 0o755  # registry folders (files: seqops.io.FILE_MODE), whatever the process umask


class LocalStore:
    """JSON files under `.seqops/registry/`: `versions/<v>.json`, `champion.json`, `audit.jsonl`."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        (root / "versions").mkdir(mode=DIR_MODE, exist_ok=True)
        self._lock = FileLock(str(root / ".lock"), timeout=60, mode=FILE_MODE)
        self._pointer_path = root / "champion.json"
        self._audit_path = root / "audit.jsonl"

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self._lock:  # flock: released by the kernel when a holder dies
            self._recover()
            yield

    def _recover(self) -> None:
        """Finish what a killed writer left: drop its temp files, append its pending audit entry.
        Only lock holders write here, so under the lock every temp file is an orphan."""
        for tmp in [*self.root.glob(".*.tmp"), *(self.root / "versions").glob(".*.tmp")]:
            tmp.unlink(missing_ok=True)
        pending = self._pending_event(self.audit())
        if pending:
            self.append_audit(pending)

    def _pending_event(self, entries: list[dict]) -> dict | None:
        event = self.pointer().get("event")
        last = entries[-1]["seq"] if entries else 0
        return event if event and event["seq"] > last else None

    def get(self, version: str) -> dict | None:
        path = self.root / "versions" / f"{check_version(version)}.json"
        return self._meta(path) if path.exists() else None

    def versions(self) -> list[dict]:
        metas = [self._meta(f) for f in (self.root / "versions").glob("v*.json")]
        return sorted(metas, key=lambda m: version_number(m["version"]))

    @staticmethod
    def _meta(path: Path) -> dict:
        meta = checked(VersionMeta, read_json(path), str(path))
        if meta["version"] != path.stem:
            raise DamagedRegistryError(str(path), f"version: {meta['version']!r} is not the version the file name says")
        return meta

    def put(self, meta: dict) -> None:
        write_json_atomic(self.root / "versions" / f"{meta['version']}.json", meta)

    def pointer(self) -> dict:
        if not self._pointer_path.exists():
            return empty_pointer()
        return {**empty_pointer(), **checked(Pointer, read_json(self._pointer_path), str(self._pointer_path))}

    def set_pointer(self, pointer: dict) -> None:
        write_json_atomic(self._pointer_path, pointer)

    def audit(self) -> list[dict]:
        """The log as written. A torn line (a writer killed mid-append; the next append starts on a
        new line) is skipped; any other line that is not an audit entry is damage."""
        if not self._audit_path.exists():
            return []
        lines = enumerate(self._audit_path.read_bytes().splitlines(), start=1)
        rows = [
            (where, entry)
            for number, line in lines
            if (entry := audit_line(line, where := f"{self._audit_path} line {number}")) is not None
        ]
        for index, (where, entry) in enumerate(rows, start=1):
            entry.setdefault("seq", index)  # logs written before entries carried a seq
            checked(AuditEntry, entry, where)
        return [entry for _, entry in rows]

    def append_audit(self, entry: dict) -> None:
        created = not self._audit_path.exists()  # only lock holders append: no one creates it meanwhile
        fd = os.open(self._audit_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, FILE_MODE)
        if created:
            os.fchmod(fd, FILE_MODE)  # exactly 0644: a umask of 000 would leave it world-writable
        with os.fdopen(fd, "a+b") as fh:
            size = fh.seek(0, os.SEEK_END)
            torn = size > 0 and fh.seek(size - 1) >= 0 and fh.read(1) != b"\n"  # finish a torn line first
            fh.write((b"\n" if torn else b"") + json.dumps(entry).encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())

    def history(self) -> list[dict]:
        entries = self.audit()
        pending = self._pending_event(entries)
        return entries + [pending] if pending else entries


def read_json(path: Path) -> Any:
    """A registry file's JSON; bytes that are not UTF-8 JSON are damage, named with the file."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DamagedRegistryError(str(path), f"not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DamagedRegistryError(str(path), f"not JSON ({exc})") from None


def audit_line(line: bytes, where: str) -> dict | None:
    """One audit log line as a dict, None for a torn or empty line. Every entry we write starts with
    `{`, so a line that starts so but does not parse is a torn append, not damage."""
    text = line.decode("utf-8", errors="replace").strip()  # entries are written ASCII-only (json.dumps)
    try:
        entry = json.loads(text)
    except json.JSONDecodeError:
        if not text or text.startswith("{"):
            return None
        raise DamagedRegistryError(where, "not a JSON audit entry") from None
    if "\ufffd" in text:  # a replaced byte: the line was not UTF-8
        raise DamagedRegistryError(where, "not UTF-8 text")
    if not isinstance(entry, dict):
        raise DamagedRegistryError(where, f"not a JSON object (got {type(entry).__name__})")
    return entry
