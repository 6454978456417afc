"""Small file utilities every stage shares: content hashes, atomic writes with explicit file modes,
UTC clock strings, and the crash points the fault-injection tests use."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

CRASH_ENV = "SEQOPS_CRASH_AT"
FILE_MODE = 0o644  # state files: explicit, whatever the process umask (0000 would give 0666)
SECRET_MODE = 0o600


def file_md5(path: Path | str) -> str:
    """The md5 DVC records for a file output (its data version)."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def crash_point(step: str) -> None:
    """Fault injection for the atomicity tests: SIGKILL this process when $SEQOPS_CRASH_AT names
    `step` — no cleanup runs, exactly like a power cut or the OOM killer."""
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def fsync_dir(directory: Path) -> None:
    """Make a rename inside `directory` survive a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path, *, mode: int = FILE_MODE) -> Iterator[Path]:
    """Yield a hidden temporary path beside `path`; on success it replaces `path` in one rename
    (readers see the old file or the new one, never a partial one), on an exception it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphan_temps(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, mode)
            crash_point("before-rename")
            os.replace(tmp, path)
            fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_orphan_temps(path: Path) -> None:
    """Remove the temporary files of `path` that writers killed before their rename left (their
    process is gone): each kill would otherwise leave one more beside the file."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 : -len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def write_bytes_atomic(path: Path, data: bytes, *, mode: int = FILE_MODE) -> None:
    with atomic_path(path, mode=mode) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def write_json_atomic(path: Path, data: Any, *, mode: int = FILE_MODE) -> None:
    """Write-then-rename JSON: readers see the old file or the new one, never a partial one."""
    write_bytes_atomic(path, json.dumps(data, indent=2, default=str).encode(), mode=mode)


def tool_env() -> dict[str, str]:
    """Subprocess environment where `seqops`, `dvc`, `bentoml` and `prefect` resolve to this
    interpreter's install."""
    bin_dir = str(Path(sys.executable).parent)
    # progress bars through a pipe: one update every 10 s instead of hundreds of lines
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "TQDM_MININTERVAL": "10"}
