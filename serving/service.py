"""BentoML service: recommendations (and, when the champion has those heads, next-action and churn
predictions) from the champion model, with histories from the Feast online store; fresh events
in through `/events`. `bentoml serve seqops.serving.service:Recommender`.

    POST /recommend     by user_id (online history) or by an explicit item list; k, exclude_seen, category
    POST /next_action   P(next event type)   — 404 unless the champion has a next_action head
    POST /churn         P(churn)             — 404 unless the champion has a churn head
    POST /events        fresh events → the user's online feature row (Feast push) + the landing log
    GET  /metadata      champion version, data version, metrics (POST kept for old clients)
    GET  /healthz /livez /readyz /metrics   BentoML's; /readyz is 200 once model and feature store are loaded

The project folder comes from $SEQOPS_PROJECT (default: the working directory). A promote is picked
up without a restart (the champion pointer is re-read every 0.25 s; the new model loads on a side
thread while the old one answers); each answer names the model version that produced it.

Request path: validation (pydantic, in BentoML) on the event loop → the micro-batcher → the engine's
single worker thread (one Feast read and one forward pass per batch) → JSON. See serving/engine.py.

Nothing acknowledged is lost to a dying worker: the request log line and the landed events are
written before the answer, and every worker start adopts the landing part files of dead workers
(serving/logs.py).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import time
from datetime import datetime, timezone

import bentoml
from fastapi import FastAPI
from starlette.responses import JSONResponse, Response

from seqops.config import Params, ServingParams, load_params, project_paths
from seqops.models.release.registry import use_bentoml_home
from seqops.serving.batcher import MicroBatcher
from seqops.serving.engine import Engine, RequestError, engine_executor
from seqops.serving.logs import EventLanding, Housekeeper, RequestLog, adopt_orphans
from seqops.serving.schemas import (
    ChurnResponse,
    EventsRequest,
    EventsResponse,
    HistoryRequest,
    Metadata,
    NextActionResponse,
    RecommendRequest,
    RecommendResponse,
)

log = logging.getLogger("seqops.serving")
OVERRIDES_ENV = "SEQOPS_SERVING_OVERRIDES"


def serving_params(params: Params) -> Params:
    """params.yaml, with `serving:` keys overridden by $SEQOPS_SERVING_OVERRIDES (a JSON object,
    e.g. '{"quantize": true}'; validated like params.yaml) — for benchmarks and one-off runs."""
    raw = os.environ.get(OVERRIDES_ENV)
    if not raw:
        return params
    serving = ServingParams.model_validate({**params.serving.model_dump(), **json.loads(raw)})
    return params.model_copy(update={"serving": serving})


PATHS = project_paths()
PARAMS = serving_params(load_params(PATHS.project / "params.yaml"))
use_bentoml_home(PATHS)

FALLBACKS = bentoml.metrics.Counter(
    name="seqops_fallback_total", documentation="answers given by the popularity fallback", labelnames=["reason"])
BATCH_SIZE = bentoml.metrics.Histogram(
    name="seqops_batch_size", documentation="requests scored per forward pass",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
EVENTS = bentoml.metrics.Counter(name="seqops_events_total", documentation="events accepted by POST /events")


class NextActionRequest(HistoryRequest):
    pass


class ChurnRequest(HistoryRequest):
    pass


def error_response(exc: RequestError) -> Response:
    return JSONResponse(exc.body(), status_code=exc.status)


def json_response(body: dict) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


metadata_app = FastAPI(title="seqops metadata")


@bentoml.asgi_app(metadata_app, path="/")
@bentoml.service(
    name="seqops-recommender",
    workers=PARAMS.serving.workers,
    traffic={"timeout": 30},
    logging={"access": {"enabled": False}},  # every answer is in the request log instead
)
class Recommender:
    def __init__(self) -> None:
        self.engine = Engine(PATHS, PARAMS)
        # By default the engine runs on the event loop itself: one process has one GIL, so a worker
        # thread buys no parallelism, only GIL hand-offs (each costs up to the 5 ms switch interval
        # while the loop is busy parsing requests). serving.engine_thread switches to a thread.
        self.executor = engine_executor(PARAMS.serving.torch_threads) if PARAMS.serving.engine_thread else None
        self.batcher = MicroBatcher(self._score_batch, self.executor,
                                    max_batch_size=PARAMS.serving.max_batch_size, max_wait_ms=PARAMS.serving.max_wait_ms)
        self.request_log = RequestLog(PATHS.logs / "requests", enabled=PARAMS.serving.request_log)
        adopt_orphans(PATHS.landing)  # events acknowledged by workers that died before closing their file
        self.landing = EventLanding(PATHS.landing)
        self.housekeeper = Housekeeper(self.request_log, self.landing).start()
        # Everything loaded so far (torch, transformers, Feast, BentoML: millions of objects) is
        # long-lived; without this, every full GC walks it: ~0.4 s stalls every few seconds under load.
        gc.collect()
        gc.freeze()

    def __is_ready__(self) -> bool:
        """/readyz: a champion is loaded and the feature store is open."""
        return self.engine.ready()

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        self.housekeeper.stop()
        if self.executor is not None:
            self.executor.shutdown(wait=True)

    def _score_batch(self, requests: list) -> list:
        BATCH_SIZE.observe(len(requests))
        return self.engine.recommend(requests)

    async def _on_engine(self, fn, *args):
        """Everything that touches the engine runs where the batches run (the engine is single-threaded)."""
        if self.executor is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _log(self, endpoint: str, started: float, body: dict, user: str | None, status: int = 200) -> None:
        """One request-log line per answer, written before the answer leaves."""
        self.request_log.add({
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "endpoint": endpoint,
            "user_id": user,
            "status": status,
            "model_version": body.get("model_version"),
            "items": body.get("items"),
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            "fallback": body.get("fallback", False),
            "fallback_reason": body.get("fallback_reason"),
        })

    @bentoml.api(route="/recommend")
    async def recommend(self, request: RecommendRequest, /) -> RecommendResponse:
        """Top-k next items for a user (history from the online store) or for an explicit list of
        recent items. Unknown users, users without online features, and a feature store that
        cannot be reached get popular items, flagged `fallback` with the reason."""
        started = time.perf_counter()
        result = await self.batcher.submit(request)
        if isinstance(result, RequestError):
            self._log("recommend", started, {}, request.user_id, result.status)
            return error_response(result)
        if result["fallback"]:
            FALLBACKS.labels(reason=result["fallback_reason"]).inc()
        self._log("recommend", started, result, request.user_id)
        return json_response(result)

    async def _head(self, name: str, request: HistoryRequest) -> Response:
        started = time.perf_counter()
        try:
            result = await self._on_engine(self.engine.head, name, request)
        except RequestError as exc:
            self._log(name, started, {}, request.user_id, exc.status)
            return error_response(exc)
        self._log(name, started, result, request.user_id)
        return json_response(result)

    @bentoml.api(route="/next_action")
    async def next_action(self, request: NextActionRequest, /) -> NextActionResponse:
        """Probabilities of the next event type. 404 when the champion has no next_action head."""
        return await self._head("next_action", request)

    @bentoml.api(route="/churn")
    async def churn(self, request: ChurnRequest, /) -> ChurnResponse:
        """Churn probability. 404 when the champion has no churn head."""
        return await self._head("churn", request)

    @bentoml.api(route="/events")
    async def events(self, request: EventsRequest, /) -> EventsResponse:
        """Fresh events (user_id, item_id, event_type, optional timestamp). Each user's online
        feature row is recomputed from their current row plus these events and pushed through
        the Feast push source, so their next /recommend sees them; the events are also appended
        to the landing log the next retrain ingests. Unknown item ids are refused (400, naming
        `events[i].item_id`); a user the trained vocabulary does not know is kept under a
        provisional key (`new_user: true`) until the next retrain gives them an id."""
        started = time.perf_counter()
        try:
            summary = await self._on_engine(self._ingest_events, request.events)
        except RequestError as exc:
            self._log("events", started, {}, None, exc.status)
            return error_response(exc)
        EVENTS.inc(len(request.events))
        body = {"accepted": len(request.events), "users": summary}
        self._log("events", started, {}, None)
        return json_response(body)

    def _ingest_events(self, events: list) -> list[dict]:
        prepared = self.engine.prepare_events(events)  # validates; raises before any side effect
        self.landing.append(prepared.landed)  # the durable record first
        return self.engine.push_prepared(prepared)

    @metadata_app.get("/metadata", response_model=Metadata)
    @metadata_app.post("/metadata", response_model=Metadata, include_in_schema=False)
    async def metadata(self):
        """Which model answers, the data it was trained on and its gate metrics."""
        try:
            return await self._on_engine(self.engine.metadata)
        except RequestError as exc:
            return error_response(exc)
