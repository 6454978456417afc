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
the one path training, evaluation, the gate and the service share. Which of its top items an answer
shows (exploration, off by default): serving/explore.py. Which champion answers, and how a damaged
registry is survived: serving/follower.py.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from seqops.config import Params, Paths
from seqops.features import store as feature_store
from seqops.models.release.registry import Registry
from seqops.models.training.evaluate import model_metrics
from seqops.serving.champion import Champion
from seqops.serving.errors import RequestError
from seqops.serving.events import EventFolding
from seqops.serving.explain import explain_answers
from seqops.serving.explore import Exploring
from seqops.serving.follower import ChampionFollower
from seqops.serving.vocab import ServedVocabulary

log = logging.getLogger("seqops.serving")

CHAMPION_CHECK_S = 0.25  # how often the registry's champion pointer is re-read (any backend)
STORE_RETRY_S = 5.0  # how often a feature store that could not be opened is tried again
STORE_BREAK_S = 1.0  # after a failed read, answer with the fallback for this long before trying again
NO_CHAMPION = "no champion model yet: run the retrain flow and promote one"


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

    return ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="seqops-engine", initializer=torch.set_num_threads, initargs=(threads,)
    )


class Engine(EventFolding, Exploring):
    def __init__(
        self, paths: Paths, params: Params, *, quantized: bool | None = None, registry: Registry | None = None
    ):
        self.paths, self.params = paths, params
        self.quantized = params.serving.quantize if quantized is None else quantized
        torch.set_num_threads(params.serving.torch_threads)
        self.store = None
        self.store_error: str | None = None
        self._store_retry_at = self._store_down_until = 0.0
        self._open_store()
        self.vocab = ServedVocabulary(paths)
        self.follower = ChampionFollower(paths, params, quantized=self.quantized, registry=registry)
        self._polling = threading.Lock()  # readiness probes poll too, maybe from another thread
        if self.champion is not None:
            if not self.vocab.catalog:  # no ingest vocabulary here (a Bento): the model's own catalogue
                self.vocab.catalog = dict(
                    zip(self.champion.raw_items[1:].tolist(), range(1, self.champion.n_items + 1))
                )
        self._champion_checked = time.monotonic()

    # -- state ------------------------------------------------------------------------------
    def _open_store(self) -> None:
        """Open the FeatureStore and its feature service once; after a failure, retry at most
        every STORE_RETRY_S (a request must not pay for a reconnect attempt each time)."""
        if time.monotonic() < self._store_retry_at:
            return
        self._store_retry_at = time.monotonic() + STORE_RETRY_S
        try:
            profile = getattr(self.params.features, "store_profile", None)
            self.store = (
                feature_store.open_store(self.paths, profile) if profile else feature_store.open_store(self.paths)
            )
            self.feature_service = self.store.get_feature_service(feature_store.FEATURE_SERVICE)
            self.store_error = None
        except Exception as exc:  # noqa: BLE001 - any Feast failure means "answer without it"
            self.store, self.store_error = None, f"{type(exc).__name__}: {exc}"
            log.warning("feature store unavailable: %s", self.store_error)

    @property
    def champion(self) -> Champion | None:
        return self.follower.champion

    @property
    def champion_problem(self) -> str | None:
        return self.follower.problem

    @property
    def registry(self) -> Registry | None:
        return self.follower.registry

    def wait_for_load(self, timeout: float = 60) -> None:
        self.follower.wait_for_load(timeout)

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
            self.vocab.refresh()
            self.follower.follow()
        finally:
            self._polling.release()

    def user_key(self, raw_user: str) -> tuple[int, bool]:
        """(online-store key, known to the trained vocabulary)."""
        dense = self.vocab.users.get(raw_user)
        return (dense, True) if dense is not None else (provisional_key(raw_user), False)

    def item_id(self, raw_item: str) -> int | None:
        return self.vocab.catalog.get(raw_item)

    # -- histories --------------------------------------------------------------------------
    def resolve(self, req) -> Query:
        """Explicit items → dense ids (unknown → RequestError naming the index); user → key to read."""
        if req.items is not None:
            ids = []
            for i, raw in enumerate(req.items):
                dense = self.vocab.catalog.get(raw)
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
                    features=self.feature_service, entity_rows=[{"user_id": k} for k in keys]
                ).to_dict()
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

    def finish(
        self, champion: Champion, requests: list, queries: list, personal: list, matrix: np.ndarray | None
    ) -> list:
        """Scores → answers (matrix rows follow `personal`; None = the model failed), explained where asked."""
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
        return explain_answers(champion, self.vocab, requests, queries, out)  # only where `explain` is asked

    def _answer(self, champion: Champion, req, q: Query, row: np.ndarray | None) -> dict:
        if req.category is not None and req.category not in champion.category_masks:
            raise RequestError(400, f"category: unknown category {req.category!r}", ("category",))
        scores = champion.popularity if row is None else row
        history = q.items if q.items is not None else np.zeros(0, dtype=np.int64)
        exclude = history if req.exclude_seen else np.zeros(0, dtype=np.int64)
        if req.category is not None:
            scores = np.where(champion.category_masks[req.category], scores, -np.inf)
        top, top_scores, explored = self.slate(champion, scores, exclude, req, q)
        return {
            "user_id": q.raw_user,
            "items": champion.raw_items[top].tolist(),
            "scores": [round(float(s), 5) for s in top_scores],
            "model_version": champion.version,
            "fallback": q.fallback_reason is not None,
            "fallback_reason": q.fallback_reason,
            **explored,
        }

    def head(self, name: str, req) -> dict:
        """/next_action and /churn: answered only by a champion with that head."""
        champion = self.current()
        if name not in champion.heads:
            raise RequestError(
                404, f"model {champion.version} has no {name} head (its heads: {', '.join(champion.heads)})"
            )
        q = self.resolve(req)
        self.read_histories([q])
        if q.fallback_reason is not None:
            raise RequestError(404, f"user_id: no history for {req.user_id!r} ({q.fallback_reason})", ("user_id",))
        out = champion.head(name, [q.items], [q.types or []])[0]
        if name == "next_action":
            names = champion.event_types or tuple(self.params.ingest.event_types)
            probs = np.exp(out - out.max())
            probs /= probs.sum()
            return {
                "user_id": q.raw_user,
                "model_version": champion.version,
                "probabilities": {t: round(float(p), 5) for t, p in zip(names, probs)},
            }
        return {
            "user_id": q.raw_user,
            "model_version": champion.version,
            "churn_probability": round(1.0 / (1.0 + math.exp(-float(np.ravel(out)[0]))), 5),
        }

    def anomaly(self, req) -> dict:
        """/anomaly: the user's anomaly score under the champion's detector (models/anomaly.py, fitted
        on the champion's training users at its first use), the flag at the configured threshold and
        the reasons. A user without history gets a fallback answer (no score, not flagged) saying why."""
        from seqops.models.anomaly import AnomalyModel, UserWindow

        champion = self.current()
        cached = getattr(self, "_anomaly_model", None)
        if cached is None or cached[0] != champion.version:
            try:
                cached = (champion.version, AnomalyModel.for_artifact(champion.artifact, self.params.anomaly))
            except Exception as exc:  # noqa: BLE001 - e.g. an artifact without its training reference
                log.warning("anomaly detector for %s failed: %s", champion.version, exc)
                raise RequestError(
                    503, f"anomaly detector unavailable for model {champion.version}: {type(exc).__name__}"
                ) from None
            self._anomaly_model = cached
        detector = cached[1]
        q = self.resolve(req)
        answer = {
            "user_id": q.raw_user,
            "model_version": champion.version,
            "threshold": round(detector.detector.threshold, 5),
        }
        if q.items is not None:
            window = UserWindow(q.items)  # an explicit list: no speed or session facts
        else:
            row = self._online_row(q.user_key)
            if row is None or not row.get("last_items"):
                reason = (
                    "feature store unavailable"
                    if row is None
                    else "unknown user"
                    if q.user_key < 0
                    else "no online features for this user"
                )
                return {
                    **answer,
                    "score": None,
                    "flagged": False,
                    "reasons": [],
                    "fallback": True,
                    "fallback_reason": reason,
                }
            window = UserWindow.from_row(row)
        return {**answer, **detector.score([window])[0], "fallback": False, "fallback_reason": None}

    def _online_row(self, key: int) -> dict | None:
        """The user's whole online feature row (None: the feature store cannot be read)."""
        if self.store is None:
            self._open_store()
        if self.store is None or time.monotonic() < self._store_down_until:
            return None
        try:
            response = self.store.get_online_features(
                features=self.feature_service, entity_rows=[{"user_id": key}]
            ).to_dict()
        except Exception as exc:  # noqa: BLE001
            self.store_error = f"{type(exc).__name__}: {exc}"
            self._store_down_until = time.monotonic() + STORE_BREAK_S
            log.warning("feature store read failed: %s", self.store_error)
            return None
        return {name: values[0] for name, values in response.items()}

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


__all__ = ["Engine", "Query", "RequestError", "provisional_key"]
