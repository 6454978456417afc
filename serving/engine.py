"""What the service does, without HTTP: hold the champion and the vocabularies, read histories
from the Feast online store, score many requests in one forward pass, turn scores into answers,
and fold fresh events into users' online feature rows.

`Engine` is single-threaded: the service calls it from one thread only (the event loop, or its
one worker thread with `serving.engine_thread`), so model calls, Feast reads and pushes are
serialised and a user's read-modify-write in `push_events` cannot interleave with another request
of the same process (several worker processes can race on the same user: last push wins). Only a
new champion is loaded on a side thread, and swapped in with one reference assignment.

The model itself is a `Champion` (serving/champion.py): the training artifact plus what answers
need (raw item ids, category masks, the popularity fallback); scoring goes through the artifact,
the one path training, evaluation, the gate and the service share.

A registry that cannot name a loadable champion (a damaged pointer, one naming a version whose
files are gone, an unreachable registry) never stops the process: at start the engine is simply
not ready (`ready()` False, `not_ready_reason` says why, every request is answered 503 with that
reason); while serving, the last good champion keeps answering. Either way the problem is logged
once per change of the pointer, not once per poll, and a repaired pointer is picked up as usual.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from seqops.config import Params, Paths
from seqops.features import store as feature_store
from seqops.models.training.evaluate import model_metrics
from seqops.models.release.registry import Registry, RegistryError
from seqops.serving.champion import Champion
from seqops.serving.package import PINNED_ENV, SNAPSHOT_DIR
from seqops.serving.ranking import recommend_items

log = logging.getLogger("seqops.serving")

CHAMPION_CHECK_S = 0.25  # how often the registry's champion pointer is re-read (any backend)
VOCAB_CHECK_S = 1.0  # how often the vocabulary files are stat-ed for a new ingest
STORE_RETRY_S = 5.0  # how often a feature store that could not be opened is tried again
STORE_BREAK_S = 1.0  # after a failed read, answer with the fallback for this long before trying again
REGISTRY_RETRY_S = 5.0  # how often a registry that could not be opened is tried again
NO_CHAMPION = "no champion model yet: run the retrain flow and promote one"
_UNSEEN = object()  # the pointer state before the first read


class RequestError(Exception):
    """A request that is well-formed but cannot be answered as asked (unknown item, missing head)."""

    def __init__(self, status: int, message: str, loc: tuple = ()):
        super().__init__(message)
        self.status, self.message, self.loc = status, message, loc

    def body(self) -> dict:
        return {"error": self.message, "detail": [{"loc": list(self.loc), "msg": self.message}] if self.loc else []}


def provisional_key(raw_user: str) -> int:
    """Online-store key of a user the trained vocabulary does not know yet: negative (ingest hands
    out 1, 2, ...), stable across processes and restarts."""
    digest = hashlib.blake2b(raw_user.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return -(int.from_bytes(digest, "big") >> 1) - 1


@dataclass
class Query:
    """One request's history, resolved to dense ids."""

    raw_user: str | None
    items: np.ndarray | None = None  # dense ids, oldest first
    types: list[str] | None = None
    fallback_reason: str | None = None
    user_key: int | None = None  # online-store key still to read


def engine_executor(threads: int):
    """The engine's single worker thread. torch's intra-op thread count is per calling thread
    (OpenMP), so it is set in the worker itself: left at the default (all cores) every tiny
    forward pass spin-waits for a second core the event loop is using — 100 ms stalls."""
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="seqops-engine", initializer=torch.set_num_threads,
                              initargs=(threads,))


class Engine:
    def __init__(self, paths: Paths, params: Params, *, quantized: bool | None = None, registry: Registry | None = None):
        self.paths, self.params = paths, params
        self.quantized = params.serving.quantize if quantized is None else quantized
        torch.set_num_threads(params.serving.torch_threads)
        self.registry = registry
        self._registry_retry_at = 0.0
        self._registry_error = ""
        self.store = None
        self.store_error: str | None = None
        self._store_retry_at = 0.0
        self._store_down_until = 0.0
        self._open_store()
        self._users: dict[str, int] = {}
        self._catalog: dict[str, int] = {}
        self._categories: dict[int, str] = {}
        self._vocab_stamp: tuple = ()
        self._vocab_checked = 0.0
        self._refresh_vocab(force=True)
        self.champion: Champion | None = None
        self.champion_problem: str | None = None  # why no champion is loaded (None: there just is none yet)
        self._pointer_seen: object = _UNSEEN  # the pointer state last acted on: a version, None, or a problem
        self._polling = threading.Lock()  # readiness probes poll too, maybe from another thread
        self._loading: threading.Thread | None = None
        self._follow_pointer()  # loads the registry's champion, or says why it cannot
        if self.champion is None and self.champion_problem is None and os.environ.get(PINNED_ENV):
            self.champion = self._pinned(os.environ[PINNED_ENV])
            log.info("serving %s packaged in this Bento (heads: %s)", self.champion.version, ", ".join(self.champion.heads))
        if self.champion is not None:
            if not self._catalog:  # no ingest vocabulary here (a Bento): the model's own catalogue
                self._catalog = dict(zip(self.champion.raw_items[1:].tolist(), range(1, self.champion.n_items + 1)))
        self._champion_checked = time.monotonic()

    def _pinned(self, version: str) -> Champion:
        """The model packaged in a Bento (BentoML's own store), when no registry names a champion."""
        import bentoml

        from seqops.models.release.registry import MODEL_NAME

        path = Path(bentoml.models.get(f"{MODEL_NAME}:{version}").path)
        return Champion.from_dir(path, version, quantized=self.quantized)

    # -- state ------------------------------------------------------------------------------
    def _open_store(self) -> None:
        """Open the FeatureStore and its feature service once; after a failure, retry at most
        every STORE_RETRY_S (a request must not pay for a reconnect attempt each time)."""
        if time.monotonic() < self._store_retry_at:
            return
        self._store_retry_at = time.monotonic() + STORE_RETRY_S
        try:
            profile = getattr(self.params.features, "store_profile", None)
            self.store = feature_store.open_store(self.paths, profile) if profile else feature_store.open_store(self.paths)
            self.feature_service = self.store.get_feature_service(feature_store.FEATURE_SERVICE)
            self.store_error = None
        except Exception as exc:  # noqa: BLE001 - any Feast failure means "answer without it"
            self.store, self.store_error = None, f"{type(exc).__name__}: {exc}"
            log.warning("feature store unavailable: %s", self.store_error)

    def ready(self) -> bool:
        if self.champion is None:
            self._poll_pointer()  # a first promote or a repaired pointer makes it ready without a request
        return self.not_ready_reason is None

    @property
    def not_ready_reason(self) -> str | None:
        """Why the service cannot answer with a model (None when it can): for /readyz and the log."""
        if self.champion is None:
            return self.champion_problem or NO_CHAMPION
        if self.store is None:
            return f"feature store unavailable: {self.store_error}"
        return None

    def current(self) -> Champion:
        """The champion to answer with; notices a promote within CHAMPION_CHECK_S and loads the
        new version on a side thread while the old one keeps answering."""
        self._poll_pointer()
        if self.champion is None:
            raise RequestError(503, f"not ready: {self.champion_problem or NO_CHAMPION}")
        return self.champion

    def _poll_pointer(self) -> None:
        """At most every CHAMPION_CHECK_S, by one thread at a time: new vocabularies, the pointer."""
        if time.monotonic() - self._champion_checked < CHAMPION_CHECK_S or not self._polling.acquire(blocking=False):
            return
        try:
            self._champion_checked = time.monotonic()
            self._refresh_vocab()
            self._follow_pointer()
        finally:
            self._polling.release()

    def _follow_pointer(self) -> None:
        """Read the champion pointer and act only on a change since the last read: a new version is
        loaded (at once while nothing is served, else on a side thread while the old one answers);
        a pointer that cannot be read or names a model that cannot be loaded is logged once."""
        try:
            version, problem = self._registry().champion(), None
        except RegistryError as exc:  # damaged pointer, unreachable PostgreSQL, bad registry settings
            version, problem = None, str(exc)
        state = problem or version
        if state == self._pointer_seen or (self._loading is not None and self._loading.is_alive()):
            return  # nothing new, or a load is under way: look again at the next poll
        self._pointer_seen = state
        if problem is not None:
            self._report(problem)
        elif version is None or (self.champion is not None and version == self.champion.version):
            self.champion_problem = None
        elif self.champion is None:
            self._load(version)
        else:
            self._loading = threading.Thread(target=self._load, args=(version,), daemon=True, name="champion-load")
            self._loading.start()

    def _registry(self) -> Registry:
        """The project's registry, opened on first use; an open that failed is retried at most every
        REGISTRY_RETRY_S (a PostgreSQL connect can take seconds)."""
        if self.registry is None:
            if time.monotonic() < self._registry_retry_at:
                raise RegistryError(self._registry_error)
            self._registry_retry_at = time.monotonic() + REGISTRY_RETRY_S
            try:
                self.registry = Registry(self.paths)
            except RegistryError as exc:
                self._registry_error = str(exc)
                raise
        return self.registry

    def _load(self, version: str) -> None:
        torch.set_num_threads(self.params.serving.torch_threads)
        try:
            champion = Champion.load(self.registry, version, quantized=self.quantized)
        except Exception as exc:  # noqa: BLE001 - a model that cannot load must not stop the service
            self._report(f"champion {version} cannot be loaded: {type(exc).__name__}: {exc}")
            return
        self.champion, self.champion_problem = champion, None  # one reference swap: a batch holds the object it started with
        log.info("serving champion %s (heads: %s, quantized: %s)", version, ", ".join(champion.heads), self.quantized)

    def _report(self, problem: str) -> None:
        """One log line per new problem: not ready when nothing is served, else keep the last good one."""
        if self.champion is None:
            self.champion_problem = problem
            log.error("not ready: %s", problem)
        else:
            log.warning("%s; still serving %s", problem, self.champion.version)

    def wait_for_load(self, timeout: float = 60) -> None:
        if self._loading is not None:
            self._loading.join(timeout)

    def _refresh_vocab(self, force: bool = False) -> None:
        """Users and items as ingest last wrote them (a retrain adds users; ids never move)."""
        now = time.monotonic()
        if not force and now - self._vocab_checked < VOCAB_CHECK_S:
            return
        self._vocab_checked = now
        vocab = self.paths.vocab
        if not (vocab / "users.parquet").exists() and (self.paths.project / SNAPSHOT_DIR / "vocab").exists():
            vocab = self.paths.project / SNAPSHOT_DIR / "vocab"  # a Bento without the project's state
        files = [vocab / "users.parquet", vocab / "items.parquet"]
        stamp = tuple(f.stat().st_mtime_ns if f.exists() else 0 for f in files)
        if stamp == self._vocab_stamp:
            return
        try:
            users = pd.read_parquet(files[0]) if files[0].exists() else pd.DataFrame(columns=["raw_id", "user_id"])
            items = pd.read_parquet(files[1]) if files[1].exists() else pd.DataFrame(columns=["raw_id", "item_id", "category"])
        except Exception:  # noqa: BLE001 - a half-written file: try again next time
            log.warning("vocabulary not readable yet; keeping the previous one")
            return
        self._users = dict(zip(users["raw_id"].astype(str), users["user_id"].astype(np.int64).tolist()))
        self._catalog = dict(zip(items["raw_id"].astype(str), items["item_id"].astype(np.int64).tolist()))
        categories = items["category"].astype(str) if "category" in items else pd.Series("unknown", index=items.index)
        self._categories = dict(zip(items["item_id"].astype(np.int64).tolist(), categories))
        self._vocab_stamp = stamp

    def user_key(self, raw_user: str) -> tuple[int, bool]:
        """(online-store key, known to the trained vocabulary)."""
        dense = self._users.get(raw_user)
        return (dense, True) if dense is not None else (provisional_key(raw_user), False)

    def item_id(self, raw_item: str) -> int | None:
        return self._catalog.get(raw_item)

    # -- histories --------------------------------------------------------------------------
    def resolve(self, req) -> Query:
        """Explicit items → dense ids (unknown → RequestError naming the index); user → key to read."""
        if req.items is not None:
            ids = []
            for i, raw in enumerate(req.items):
                dense = self._catalog.get(raw)
                if dense is None:
                    raise RequestError(400, f"items[{i}]: unknown item id {raw!r}", ("items", i))
                ids.append(dense)
            types = list(req.event_types) if req.event_types is not None else ["view"] * len(ids)
            return Query(None, np.asarray(ids, dtype=np.int64), types)
        key, _ = self.user_key(req.user_id)
        return Query(req.user_id, user_key=key)

    def read_histories(self, queries: list[Query]) -> None:
        """One online read for every query that needs one; Feast down → popularity fallback."""
        todo = [q for q in queries if q.user_key is not None and q.items is None and q.fallback_reason is None]
        if not todo:
            return
        if self.store is None:
            self._open_store()
        rows = None
        if self.store is not None and time.monotonic() >= self._store_down_until:
            keys = sorted({q.user_key for q in todo})
            try:
                response = self.store.get_online_features(
                    features=self.feature_service, entity_rows=[{"user_id": k} for k in keys]).to_dict()
                rows = {k: (response["last_items"][i], response["last_types"][i]) for i, k in enumerate(keys)}
            except Exception as exc:  # noqa: BLE001
                self.store_error = f"{type(exc).__name__}: {exc}"
                self._store_down_until = time.monotonic() + STORE_BREAK_S  # don't wait on a dead store per batch
                log.warning("feature store read failed: %s", self.store_error)
        for q in todo:
            if rows is None:
                q.fallback_reason = "feature store unavailable"
                continue
            items, types = rows[q.user_key]
            if not items:
                q.fallback_reason = "unknown user" if q.user_key < 0 else "no online features for this user"
                continue
            q.items = np.asarray(items, dtype=np.int64)
            q.types = list(types or [])

    # -- answers ----------------------------------------------------------------------------
    def recommend(self, requests: list) -> list:
        """Answer many /recommend requests with one online read and one forward pass. Each result
        is a response dict or a RequestError; the whole batch names one model version."""
        prepared = self.prepare(requests)
        if isinstance(prepared, RequestError):
            return [prepared] * len(requests)
        champion, queries, personal = prepared
        matrix = None
        if personal:
            try:
                matrix = champion.next_item_scores([q.items for q in personal], [q.types for q in personal])
            except Exception:  # noqa: BLE001 - a model failure degrades to popularity, flagged
                log.exception("model %s failed on a batch of %d", champion.version, len(personal))
        return self.finish(champion, requests, queries, personal, matrix)

    def prepare(self, requests: list):
        """(champion, queries, the queries the model scores) — or a RequestError for all."""
        try:
            champion = self.current()
        except RequestError as exc:
            return exc
        queries: list[Query | RequestError] = []
        for req in requests:
            try:
                queries.append(self.resolve(req))
            except RequestError as exc:
                queries.append(exc)
        valid = [q for q in queries if isinstance(q, Query)]
        self.read_histories(valid)
        return champion, queries, [q for q in valid if q.fallback_reason is None]

    def finish(self, champion: Champion, requests: list, queries: list, personal: list, matrix: np.ndarray | None) -> list:
        """Scores → answers (matrix rows follow `personal`; None = the model failed)."""
        if matrix is None:
            for q in personal:
                q.fallback_reason = "model error"
        scores = {} if matrix is None else {id(q): row for q, row in zip(personal, matrix)}
        out = []
        for req, q in zip(requests, queries):
            if isinstance(q, RequestError):
                out.append(q)
                continue
            try:
                out.append(self._answer(champion, req, q, scores.get(id(q))))
            except RequestError as exc:
                out.append(exc)
        return out

    def _answer(self, champion: Champion, req, q: Query, row: np.ndarray | None) -> dict:
        if req.category is not None and req.category not in champion.category_masks:
            raise RequestError(400, f"category: unknown category {req.category!r}", ("category",))
        scores = champion.popularity if row is None else row
        history = q.items if q.items is not None else np.zeros(0, dtype=np.int64)
        exclude = history if req.exclude_seen else np.zeros(0, dtype=np.int64)
        if req.category is not None:
            scores = np.where(champion.category_masks[req.category], scores, -np.inf)
        top, top_scores = recommend_items(scores, exclude, req.k)
        return {
            "user_id": q.raw_user,
            "items": champion.raw_items[top].tolist(),
            "scores": [round(float(s), 5) for s in top_scores],
            "model_version": champion.version,
            "fallback": q.fallback_reason is not None,
            "fallback_reason": q.fallback_reason,
        }

    def head(self, name: str, req) -> dict:
        """/next_action and /churn: answered only by a champion with that head."""
        champion = self.current()
        if name not in champion.heads:
            raise RequestError(404, f"model {champion.version} has no {name} head (its heads: {', '.join(champion.heads)})")
        q = self.resolve(req)
        self.read_histories([q])
        if q.fallback_reason is not None:
            raise RequestError(404, f"user_id: no history for {req.user_id!r} ({q.fallback_reason})", ("user_id",))
        out = champion.head(name, [q.items], [q.types or []])[0]
        if name == "next_action":
            names = champion.event_types or tuple(self.params.ingest.event_types)
            probs = np.exp(out - out.max())
            probs /= probs.sum()
            return {"user_id": q.raw_user, "model_version": champion.version,
                    "probabilities": {t: round(float(p), 5) for t, p in zip(names, probs)}}
        return {"user_id": q.raw_user, "model_version": champion.version,
                "churn_probability": round(1.0 / (1.0 + math.exp(-float(np.ravel(out)[0]))), 5)}

    def metadata(self) -> dict:
        champion = self.current()
        try:
            meta = self.registry.get(champion.version)
        except Exception:  # noqa: BLE001 - the artifact's own metadata is still an answer
            meta = champion.meta
        decision = meta.get("decision") or {}
        return {
            "model_version": champion.version,
            "data_version": meta.get("data_version"),
            "params_hash": meta.get("params_hash"),
            "metrics": (decision.get("metrics") or {}).get("candidate") or model_metrics(meta.get("eval_metrics", {})),
            "heads": list(champion.heads),
            "quantized": champion.quantized,
            "items": champion.n_items,
        }

    # -- fresh events -----------------------------------------------------------------------
    def prepare_events(self, events: list, received_at: float | None = None) -> "PreparedEvents":
        """Validate events against the catalogue and group them by user; no side effects.
        Unknown item → RequestError naming `events[i].item_id`."""
        received_at = received_at or time.time()
        prepared = PreparedEvents()
        for i, ev in enumerate(events):
            dense = self._catalog.get(ev.item_id)
            if dense is None:
                raise RequestError(400, f"events[{i}].item_id: unknown item id {ev.item_id!r}", ("events", i, "item_id"))
            ts = received_at if ev.timestamp is None else float(ev.timestamp)
            prepared.by_user.setdefault(ev.user_id, []).append((dense, ev.event_type, ts))
            prepared.landed.append({"user_id": ev.user_id, "item_id": ev.item_id, "category": self._categories.get(dense, ""),
                                    "event_type": ev.event_type, "timestamp": f"{ts:.3f}"})
        return prepared

    def push_prepared(self, prepared: "PreparedEvents") -> list[dict]:
        """Fold the events into each user's online row (read current row, append, push)."""
        if self.store is None:
            self._open_store()
        if self.store is None:
            raise RequestError(503, f"feature store unavailable: {self.store_error}")
        keys = {user: self.user_key(user) for user in prepared.by_user}
        try:
            current = self.store.get_online_features(
                features=self.feature_service, entity_rows=[{"user_id": k} for k, _ in keys.values()]).to_dict()
            columns = ["last_items", "last_types", "secs_since_prev", "n_events", "n_sessions", "last_ts"]
            rows, summary = [], []
            for i, (user, evs) in enumerate(prepared.by_user.items()):
                key, known = keys[user]
                before = {c: current[c][i] for c in columns}
                row = next_row(before if before["last_items"] else None, evs,
                               self.params.features.max_len, self.params.ingest.session_gap_s)
                rows.append({"user_id": key, **row})
                summary.append({"user_id": user, "n_events": row["n_events"], "new_user": not known})
            feature_store.push_user_rows(self.store, rows)
        except Exception as exc:  # noqa: BLE001 - landed already; the next retrain still sees them
            self.store_error = f"{type(exc).__name__}: {exc}"
            log.warning("feature store push failed: %s", self.store_error)
            raise RequestError(503, f"feature store unavailable: {self.store_error} (events were logged for the next retrain)") from None
        return summary

    def push_events(self, events: list, received_at: float | None = None) -> list[dict]:
        return self.push_prepared(self.prepare_events(events, received_at))


@dataclass
class PreparedEvents:
    by_user: dict[str, list[tuple[int, str, float]]] = field(default_factory=dict)
    landed: list[dict] = field(default_factory=list)


def next_row(current: dict | None, events: list[tuple[int, str, float]], max_len: int, session_gap_s: int) -> dict:
    """A user's online feature row after `events` ((dense item, type, unix seconds), any order),
    computed the way `features.sequences.user_feature_table` computes it from the full log."""
    items = list(current["last_items"]) if current else []
    types = list(current["last_types"]) if current else []
    n_events = int(current["n_events"]) if current else 0
    n_sessions = int(current["n_sessions"]) if current else 0
    last = float(current["last_ts"]) if current and current.get("last_ts") is not None else None
    gap = float(current["secs_since_prev"]) if current and current.get("secs_since_prev") is not None else 0.0
    latest = last
    for item, kind, ts in sorted(events, key=lambda e: e[2]):
        gap = 0.0 if last is None else max(0.0, ts - last)
        if last is None or gap > session_gap_s:
            n_sessions += 1
        items.append(int(item))
        types.append(kind)
        n_events += 1
        last = ts
        latest = ts if latest is None else max(latest, ts)
    return {
        "event_timestamp": datetime.fromtimestamp(latest, tz=timezone.utc),
        "last_items": items[-max_len:],
        "last_types": types[-max_len:],
        "secs_since_prev": float(gap),
        "n_events": n_events,
        "n_sessions": n_sessions,
        "last_ts": int(math.floor(latest)),
    }


__all__ = ["Engine", "Query", "RequestError", "next_row", "provisional_key"]
