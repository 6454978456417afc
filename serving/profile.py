"""`POST /profile`: a user's profile and segment, as the last profile run computed them
(models/profiles.py, docs/profiles.md). Read from the Feast online store (`user_profile` view, the
`profile` feature service), else from the run's own file (`.seqops/profiles/profiles.parquet`: a
store not written yet, or away); the segment's words and size from the run's `segments.json`.

Never an error for a well-formed request: an unknown user, or a user no profile run has seen yet
(new since it ran), gets `fallback: true` with the reason and no profile. No champion is needed —
profiles are data, not a model answer. Runs on the engine's thread, like every engine read.
"""

from __future__ import annotations

import json
import logging
import math

import pyarrow.parquet as pq

from seqops.config import Paths
from seqops.features.profiles import PROFILE_SERVICE, ProfileFiles

log = logging.getLogger("seqops.serving")

PLAIN = (  # profile fields answered as they are stored
    "recency_days",
    "n_events",
    "n_sessions",
    "active_days",
    "rfm",
    "events_per_session",
    "session_minutes",
    "sessions_per_week",
    "weekend_share",
    "peak_hour",
    "churned",
)
UNKNOWN_USER = "unknown user"
NOT_PROFILED = "no profile for this user yet: the next profile run computes it"
NO_RUN = "no profile run yet: run `seqops profile` or the retrain flow"


def _number(value):
    """Floats rounded for the wire; NaN (no such value in the data) → null."""
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 5)
    return value


def _shares(names, shares) -> list[dict]:
    return [{"name": str(n), "share": _number(float(s))} for n, s in zip(names or [], shares or [])]


class ProfileBook:
    """Answers /profile for one service process (see the module docstring)."""

    def __init__(self, paths: Paths, engine):
        self.files = ProfileFiles.of(paths)
        self.engine = engine  # its online store and user vocabulary
        self._service = (None, None)  # (store, its `profile` feature service)
        self._summary = (None, {})  # (segments.json mtime, its segments by id)

    def answer(self, raw_user: str) -> dict:
        self.engine.vocab.refresh()
        key = self.engine.vocab.users.get(raw_user)
        if key is None:
            return self._fallback(raw_user, UNKNOWN_USER)
        row, source = self._online(key), "online"
        if row is None:
            row, source = self._from_run(key), "profile_run"
        if row is None:
            return self._fallback(raw_user, NOT_PROFILED if self.files.table.exists() else NO_RUN)
        profile = {name: _number(row[name]) for name in PLAIN}
        profile.update(
            monetary=_number(row["monetary"]),
            event_types=_shares(row["event_types"], row["event_type_shares"]),
            top_categories=_shares(row["top_categories"], row["top_category_shares"]),
            embedding=[round(float(v), 5) for v in row["embedding"] or []],
        )
        segment = {"id": int(row["segment"]), "label": row["segment_label"], "size": None, "churn_rate": None}
        segment.update(self._segment_facts(row))
        return {
            "user_id": raw_user,
            "profile": profile,
            "segment": segment,
            "model_version": row["model_version"],
            "data_version": row["data_version"],
            "source": source,
            "fallback": False,
            "fallback_reason": None,
        }

    @staticmethod
    def _fallback(raw_user: str, reason: str) -> dict:
        return {
            "user_id": raw_user,
            "profile": None,
            "segment": None,
            "model_version": None,
            "data_version": None,
            "source": None,
            "fallback": True,
            "fallback_reason": reason,
        }

    def _online(self, key: int) -> dict | None:
        """The user's `user_profile` row from the engine's online store (None: no row, no store)."""
        store = self.engine.store
        if store is None:
            return None
        try:
            if self._service[0] is not store:
                self._service = (store, store.get_feature_service(PROFILE_SERVICE))
            response = store.get_online_features(features=self._service[1], entity_rows=[{"user_id": key}]).to_dict()
        except Exception as exc:  # noqa: BLE001 - a registry without the view, a store away: the file answers
            log.warning("profile online read failed: %s: %s", type(exc).__name__, exc)
            return None
        row = {name: values[0] for name, values in response.items()}
        return row if row.get("segment") is not None else None

    def _from_run(self, key: int) -> dict | None:
        """The user's row of the last profile run's file (sorted by user: row groups are skipped by stats)."""
        try:
            rows = pq.read_table(self.files.table, filters=[("user_id", "=", key)]).to_pylist()
        except (FileNotFoundError, OSError):  # no run yet, or the file is being replaced
            return None
        return rows[0] if rows else None

    def _segment_facts(self, row: dict) -> dict:
        """Size, churn rate and description of the row's segment, when segments.json is of the same run."""
        try:
            stamp = self.files.segments.stat().st_mtime_ns
            if stamp != self._summary[0]:
                summary = json.loads(self.files.segments.read_text())
                by_id = {s["segment"]: s for s in summary["segments"]}
                self._summary = (stamp, {"data_version": summary["data_version"], "segments": by_id})
        except (FileNotFoundError, OSError, ValueError, KeyError):
            return {}
        facts = self._summary[1]
        seg = facts["segments"].get(int(row["segment"])) if facts["data_version"] == row["data_version"] else None
        if seg is None:
            return {}
        return {"size": seg["size"], "churn_rate": seg["churn_rate"], "description": seg["description"]}
