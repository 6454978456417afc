"""Forgetting a user (right to erasure): the erasure list ingest applies, and the scrub of every
file under `.seqops/` that can hold the user.

The list (`.seqops/data/erasures/erased.txt`, DVC-tracked like the raw data) holds one salted
hash per erased user (HMAC-SHA256 of the raw id under a salt kept in `.seqops/secrets/`, never
committed or pushed), so the list can travel with the data without naming anyone. Ingest drops
every row whose user hashes into it (`erased` in the metrics, never quarantined), in this and
every later snapshot, so a user who comes back in late data stays forgotten.

`forget` scrubs what is already on disk, in place and atomically per file: text files (raw drops,
landing CSVs, request logs, the server log) lose each line naming the raw id as a whole token;
Parquet files (events, quarantine, vocabulary, feature table, materialize state, every model's
`reference.parquet`) lose each row holding the raw id, or its integer id in a `user_id` column;
the Feast online store loses the user's row. The audit (`.seqops/registry/erasures.jsonl`) says
who, when and why, with the hash, never the id. Old DVC versions go with `purge_snapshots`.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import os
import re
import secrets
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from seqops.config import Paths
from seqops.io import now_iso, tool_env, write_bytes_atomic

ERASED = -1  # the reason code ingest gives erased rows while it cleans (never a quarantine reason)
SALT_BYTES = 32
# data whose user ids are raw (a number there is a raw id, not a vocabulary id)
RAW_FOLDERS = ("data/raw", "data/landing")
# where a later line may name an erased user again (new drops, requests naming them): `scrub_listed`
RESCRUBBED_FOLDERS = (*RAW_FOLDERS, "logs")
SKIPPED_FOLDERS = ("data/erasures", "secrets", "prefect")  # hashes, the salt; Prefect's own DB holds no events


def erasure_dir(paths: Paths) -> Path:
    return paths.home / "data" / "erasures"


def list_path(paths: Paths) -> Path:
    return erasure_dir(paths) / "erased.txt"


def salt_path(paths: Paths) -> Path:
    return paths.home / "secrets" / "erasure.salt"


def audit_path(paths: Paths) -> Path:
    return paths.registry / "erasures.jsonl"


def read_salt(paths: Paths, create: bool = False) -> bytes | None:
    """The project's salt (made on the first erasure): without it a hash cannot be tried against
    guessed ids, so it stays out of git and of the DVC remote."""
    path = salt_path(paths)
    if not path.exists():
        if not create:
            return None
        write_bytes_atomic(path, secrets.token_bytes(SALT_BYTES), mode=0o600)
    return path.read_bytes()


def user_hash(raw_id: str, salt: bytes) -> str:
    return hmac.new(salt, str(raw_id).encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class ErasureList:
    """The salted hashes of the erased users (empty when nothing was erased)."""

    salt: bytes = b""
    hashes: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def read(cls, paths: Paths) -> ErasureList:
        salt, path = read_salt(paths), list_path(paths)
        if salt is None or not path.exists():
            return cls()
        return cls(salt, frozenset(line.strip() for line in path.read_text().splitlines() if line.strip()))

    def __bool__(self) -> bool:
        return bool(self.hashes)

    def contains(self, raw_ids: pa.Array) -> np.ndarray:
        """Per value of `raw_ids` (any type, compared as text): is it an erased user?"""
        if not self or not len(raw_ids):
            return np.zeros(len(raw_ids), bool)
        text = pc.cast(raw_ids, pa.string()).to_pylist()
        return np.fromiter((v is not None and _cached_hash(self.salt, v) in self.hashes for v in text), bool, len(text))


@lru_cache(maxsize=1 << 20)
def _cached_hash(salt: bytes, raw_id: str) -> str:
    return user_hash(raw_id, salt)  # log lines repeat the same tokens (field names, ids)


def add_to_list(paths: Paths, raw_id: str) -> str:
    """Append the user's hash to the erasure list (once); return the hash."""
    digest = user_hash(raw_id, read_salt(paths, create=True))
    path = list_path(paths)
    known = path.read_text().split() if path.exists() else []
    if digest not in known:
        write_bytes_atomic(path, "".join(f"{h}\n" for h in [*known, digest]).encode())
    return digest


# --- the ingest hook ---------------------------------------------------------------------------


def mark_erased(rows, rejected: list[pa.Table], files: list, erased: ErasureList) -> tuple[np.ndarray, list[pa.Table]]:
    """Give the rows of erased users the ERASED reason (ingest parks them like invalid rows, so they
    get no id and no event); drop them from the row-check rejects (which keep raw text) and redact
    malformed lines naming them. Returns the erased-row mask and the remaining rejects."""
    if not erased:
        return np.zeros(len(rows.reason), bool), rejected
    erased_code = np.append(erased.contains(rows.user_ids), False)  # code -1 (missing user) → the spare
    mask = erased_code[rows.user]
    rows.reason[mask] = ERASED
    kept_rejects = [t.filter(pa.array(~erased.contains(t["user_id"]))) for t in rejected]
    for f in files:  # malformed lines keep their place (line numbers of the others), not their text
        f.malformed.texts = ["[erased]" if _names_erased(text, erased) else text for text in f.malformed.texts]
    return mask, kept_rejects


def _names_erased(text: str, erased: ErasureList) -> bool:
    return bool(erased.contains(pa.array(re.findall(r"[\w.@-]+", text), pa.string())).any())


def known_users_without(users: pa.Table, erased: ErasureList) -> pa.Table:
    """A vocabulary without the erased users (a restored old vocabulary cannot bring them back; the
    highest id, if erased, may be given again to a new user, who inherits nothing of the old one)."""
    return users.filter(pa.array(~erased.contains(users["raw_id"]))) if erased else users


# --- scrubbing what is on disk -----------------------------------------------------------------


@dataclass
class Touched:
    """What one erasure changed: file (relative to the project) → rows or lines removed."""

    user_hash: str = ""
    files: dict[str, int] = field(default_factory=dict)
    online_rows: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, path: Path, paths: Paths, removed: int) -> None:
        if removed:
            self.files[str(path.relative_to(paths.project))] = removed


def token_pattern(raw_id: str) -> re.Pattern[bytes]:
    """The raw id as a whole token: `u42` matches in `u42,i7` and `"u42"`, not in `u420`."""
    return re.compile(rb"(?<![\w.@-])" + re.escape(raw_id.encode()) + rb"(?![\w.@-])")


def scrub_text(path: Path, pattern: re.Pattern[bytes]) -> int:
    """Drop every line naming the id; the file is replaced atomically. Returns lines removed."""
    data = path.read_bytes()
    if not pattern.search(data):
        return 0
    lines = data.splitlines(keepends=True)
    kept = [line for line in lines if not pattern.search(line)]
    write_bytes_atomic(path, b"".join(kept), mode=path.stat().st_mode & 0o777)
    return len(lines) - len(kept)


def scrub_parquet(path: Path, raw_id: str, user_int: int | None) -> int:
    """Drop every row holding the raw id in a text column, or `user_int` in an integer `user_id`
    column (vocabulary ids, outside the raw folders). Returns rows removed."""
    table = pq.read_table(path)
    hit = np.zeros(table.num_rows, bool)
    for name, column in zip(table.column_names, table.columns):
        kind = column.type
        if pa.types.is_dictionary(kind):
            column, kind = column.cast(kind.value_type), kind.value_type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            hit |= pc.fill_null(pc.equal(column, raw_id), False).to_numpy(zero_copy_only=False)
        elif name == "user_id" and user_int is not None and pa.types.is_integer(kind):
            hit |= pc.fill_null(pc.equal(column, user_int), False).to_numpy(zero_copy_only=False)
    if not hit.any():
        return 0
    kept = table.filter(pa.array(~hit))
    tmp = path.with_name(f".{path.name}.erasing")
    pq.write_table(kept, tmp)
    tmp.replace(path)
    return int(hit.sum())


def user_int_id(paths: Paths, raw_id: str) -> int | None:
    vocab = paths.vocab / "users.parquet"
    if not vocab.exists():
        return None
    users = pd.read_parquet(vocab)
    match = users.loc[users["raw_id"].astype(str) == raw_id, "user_id"]
    return int(match.iloc[0]) if len(match) else None


def scrub_files(paths: Paths, raw_id: str, user_int: int | None, touched: Touched) -> None:
    """Every file under `.seqops/` except the erasure list, the salt and Prefect's database."""
    pattern = token_pattern(raw_id)
    skipped = [paths.home / s for s in SKIPPED_FOLDERS]
    raw = [paths.home / r for r in RAW_FOLDERS]
    for path in sorted(p for p in paths.home.rglob("*") if p.is_file() and not p.is_symlink()):
        if any(path.is_relative_to(s) for s in skipped) or path.name.endswith(".lock"):
            continue
        in_raw = any(path.is_relative_to(r) for r in raw)
        if path.suffix == ".parquet":
            touched.add(path, paths, scrub_parquet(path, raw_id, None if in_raw else user_int))
        elif path.suffix in (".db", ".sqlite") or path.is_relative_to(paths.home / "dvc-remote"):
            continue  # the online store (below) and the remote (purge_snapshots)
        elif _is_text(path):
            touched.add(path, paths, scrub_text(path, pattern))
        elif pattern.search(path.read_bytes()):
            touched.notes.append(
                f"{path.relative_to(paths.project)}: names the user but is not text or Parquet; not changed"
            )


def _is_text(path: Path) -> bool:
    with path.open("rb") as f:
        return b"\0" not in f.read(8192)


def delete_online_row(paths: Paths, user_int: int, profile: str = "local") -> int:
    """Remove the user's rows (every feature view's) from the Feast online store. Feast has no single-key delete
    (`online_write_batch` only upserts, `update`/`teardown` drop whole tables), so this deletes the
    key Feast itself wrote, built with Feast's own key encoding: SQLite (then VACUUM, so the freed
    pages do not keep the values) or Redis."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.infra.online_stores.helpers import _redis_key
    from feast.infra.online_stores.sqlite import SqliteOnlineStore, _table_id
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from seqops.features.store import open_store

    store = open_store(paths, profile)
    config = store.config
    key = EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=int(user_int))])
    version = config.entity_key_serialization_version
    kind = config.online_store.type
    if kind == "sqlite":
        import sqlite3

        db = SqliteOnlineStore._get_db_path(config)
        if not Path(db).exists():
            return 0
        versioning = config.registry.enable_online_feature_view_versioning
        removed = 0
        with sqlite3.connect(db) as conn:  # every view's table (the sequences, the profiles): one per view
            for view in store.list_feature_views():
                table = _table_id(config.project, view, versioning)
                try:
                    removed += conn.execute(
                        f'DELETE FROM "{table}" WHERE entity_key = ?', (serialize_entity_key(key, version),)
                    ).rowcount
                except sqlite3.OperationalError:  # a view no write has created a table for yet
                    continue
        conn.close()
        sqlite3.connect(db, isolation_level=None).execute("VACUUM").connection.close()
        return max(removed, 0)
    if kind == "redis":
        from feast.infra.online_stores.redis import RedisOnlineStore

        client = RedisOnlineStore()._get_client(config.online_store)
        return int(client.delete(_redis_key(config.project, key, version)))
    raise RuntimeError(
        f"online store {kind!r}: no delete path here; run `seqops materialize --full` after the "
        "next retrain, which rewrites every user that has features"
    )


def dvc(paths: Paths, *args: str) -> None:
    subprocess.run(["dvc", *args], cwd=paths.project, env=tool_env(), check=True, capture_output=True, text=True)


def forget(paths: Paths, raw_id: str, reason: str, by: str | None = None, profile: str = "local") -> Touched:
    """Erase one user everywhere under `.seqops/` (see the module doc); audit it; re-snapshot the
    raw data and the erasure list with DVC (old versions: `purge_snapshots`)."""
    raw_id = str(raw_id)
    digest = add_to_list(paths, raw_id)
    user_int = user_int_id(paths, raw_id)
    touched = Touched(user_hash=digest)
    if user_int is not None:
        try:
            touched.online_rows = delete_online_row(paths, user_int, profile)
        except Exception as exc:  # noqa: BLE001 - reported; the files are still scrubbed
            touched.notes.append(f"online store: {exc}")
    scrub_files(paths, raw_id, user_int, touched)
    if (paths.project / ".dvc").is_dir():
        for folder in (paths.raw, erasure_dir(paths)):
            if folder.exists():
                dvc(paths, "add", str(folder.relative_to(paths.project)))
    append_audit(
        paths,
        {
            "at": now_iso(),
            "by": by or _actor(),
            "reason": reason,
            "user_hash": digest,
            "files": len(touched.files),
            "rows": sum(touched.files.values()),
            "online_rows": touched.online_rows,
        },
    )
    return touched


def _actor() -> str:
    try:
        return os.environ.get("SEQOPS_ACTOR") or getpass.getuser()
    except (KeyError, OSError):  # containers may have no passwd entry
        return "unknown"


def append_audit(paths: Paths, record: dict) -> None:
    path = audit_path(paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def scrub_listed(paths: Paths, touched: Touched) -> None:
    """Raw drops that arrived after an erasure may name an erased user again (ingest drops those
    rows), and so may requests that asked for them: drop those lines from the raw, landing and log
    text files too, by hashing each line's tokens (the list holds no ids to search for)."""
    erased = ErasureList.read(paths)
    if not erased:
        return
    for folder in (paths.home / r for r in RESCRUBBED_FOLDERS):
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix != ".parquet"):
            if not _is_text(path):
                continue
            lines = path.read_bytes().splitlines(keepends=True)
            kept = [line for line in lines if not _names_erased(line.decode(errors="replace"), erased)]
            if len(kept) < len(lines):
                write_bytes_atomic(path, b"".join(kept), mode=path.stat().st_mode & 0o777)
                touched.add(path, paths, len(lines) - len(kept))


def purge_snapshots(paths: Paths) -> Touched:
    """Policy: after an erasure only the current data versions are kept. The raw and landing files
    are scrubbed once more against the list (`scrub_listed`) and re-snapshotted; then `dvc gc
    --workspace` removes from the cache, and with `--cloud` from the remote, every object that the
    workspace's .dvc files and dvc.lock do not name — the superseded snapshots that still hold an
    erased user included. Run it after the retrain that follows `forget` (that retrain rewrites
    dvc.lock's outputs from the scrubbed data)."""
    touched = Touched()
    scrub_listed(paths, touched)
    if touched.files and paths.raw.exists():
        dvc(paths, "add", str(paths.raw.relative_to(paths.project)))
    dvc(paths, "gc", "--workspace", "--force")
    dvc(paths, "gc", "--workspace", "--cloud", "--force")
    return touched
