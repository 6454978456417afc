"""The id vocabularies the service answers with: raw user and item ids → the dense ids ingest
assigned, and each item's category. Re-read when ingest writes new files (a retrain adds users and
items; known ids never move)."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from seqops.config import Paths
from seqops.serving.package import SNAPSHOT_DIR

log = logging.getLogger("seqops.serving")

VOCAB_CHECK_S = 1.0  # how often the vocabulary files are stat-ed for a new ingest


class ServedVocabulary:
    def __init__(self, paths: Paths):
        self.paths = paths
        self.users: dict[str, int] = {}
        self.catalog: dict[str, int] = {}
        self.categories: dict[int, str] = {}
        self._stamp: tuple = ()
        self._checked = 0.0
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        """Users and items as ingest last wrote them, checked at most every VOCAB_CHECK_S."""
        now = time.monotonic()
        if not force and now - self._checked < VOCAB_CHECK_S:
            return
        self._checked = now
        vocab = self.paths.vocab
        if not (vocab / "users.parquet").exists() and (self.paths.project / SNAPSHOT_DIR / "vocab").exists():
            vocab = self.paths.project / SNAPSHOT_DIR / "vocab"  # a Bento without the project's state
        files = [vocab / "users.parquet", vocab / "items.parquet"]
        stamp = tuple(f.stat().st_mtime_ns if f.exists() else 0 for f in files)
        if stamp == self._stamp:
            return
        try:
            users = pd.read_parquet(files[0]) if files[0].exists() else pd.DataFrame(columns=["raw_id", "user_id"])
            items = (
                pd.read_parquet(files[1])
                if files[1].exists()
                else pd.DataFrame(columns=["raw_id", "item_id", "category"])
            )
        except Exception:  # noqa: BLE001 - a half-written file: try again next time
            log.warning("vocabulary not readable yet; keeping the previous one")
            return
        self.users = dict(zip(users["raw_id"].astype(str), users["user_id"].astype(np.int64).tolist()))
        self.catalog = dict(zip(items["raw_id"].astype(str), items["item_id"].astype(np.int64).tolist()))
        categories = items["category"].astype(str) if "category" in items else pd.Series("unknown", index=items.index)
        self.categories = dict(zip(items["item_id"].astype(np.int64).tolist(), categories))
        self._stamp = stamp


__all__ = ["ServedVocabulary"]
