"""Fresh events from `POST /events`: validated against the catalogue, grouped by user, folded into
each user's online feature row (read the current row, append, push), and handed to the landing log
for the next retrain. A mixin of `Engine` (it uses the engine's vocabulary and feature store)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from seqops.features import store as feature_store
from seqops.features.sequences import next_row
from seqops.serving.errors import RequestError

log = logging.getLogger("seqops.serving")


class EventFolding:
    def prepare_events(self, events: list, received_at: float | None = None) -> "PreparedEvents":
        """Validate events against the catalogue and group them by user; no side effects.
        Unknown item → RequestError naming `events[i].item_id`."""
        received_at = received_at or time.time()
        prepared = PreparedEvents()
        for i, ev in enumerate(events):
            dense = self.vocab.catalog.get(ev.item_id)
            if dense is None:
                raise RequestError(
                    400, f"events[{i}].item_id: unknown item id {ev.item_id!r}", ("events", i, "item_id")
                )
            ts = received_at if ev.timestamp is None else float(ev.timestamp)
            prepared.by_user.setdefault(ev.user_id, []).append((dense, ev.event_type, ts))
            prepared.landed.append(
                {
                    "user_id": ev.user_id,
                    "item_id": ev.item_id,
                    "category": self.vocab.categories.get(dense, ""),
                    "event_type": ev.event_type,
                    "timestamp": f"{ts:.3f}",
                }
            )
        return prepared

    def push_prepared(self, prepared: "PreparedEvents") -> list[dict] | None:
        """Fold the events into each user's online row (read current row, append, push); None when
        the feature store cannot be reached. The caller has landed the events already, so that is
        no error to answer: a 5xx would have the client send them again, and ingest count them twice
        (the next materialize brings the online rows up to date)."""
        if self.store is None:
            self._open_store()
        if self.store is None:
            log.warning("feature store unavailable for /events: %s", self.store_error)
            return None
        keys = {user: self.user_key(user) for user in prepared.by_user}
        try:
            current = self.store.get_online_features(
                features=self.feature_service, entity_rows=[{"user_id": k} for k, _ in keys.values()]
            ).to_dict()
            columns = ["last_items", "last_types", "secs_since_prev", "n_events", "n_sessions", "last_ts"]
            rows, summary = [], []
            for i, (user, evs) in enumerate(prepared.by_user.items()):
                key, known = keys[user]
                before = {c: current[c][i] for c in columns}
                row = next_row(
                    before if before["last_items"] else None,
                    evs,
                    self.params.features.max_len,
                    self.params.ingest.session_gap_s,
                )
                rows.append({"user_id": key, **row})
                summary.append({"user_id": user, "n_events": row["n_events"], "new_user": not known})
            feature_store.push_user_rows(self.store, rows)
        except Exception as exc:  # noqa: BLE001 - landed already; the next retrain still sees them
            self.store_error = f"{type(exc).__name__}: {exc}"
            log.warning("feature store push failed: %s", self.store_error)
            return None
        return summary

    def push_events(self, events: list, received_at: float | None = None) -> list[dict] | None:
        return self.push_prepared(self.prepare_events(events, received_at))


@dataclass
class PreparedEvents:
    by_user: dict[str, list[tuple[int, str, float]]] = field(default_factory=dict)
    landed: list[dict] = field(default_factory=list)
