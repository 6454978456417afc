"""BentoML service: recommendations (and, when the champion has those heads, next-action and churn
predictions) from the champion model, with histories from the Feast online store; fresh events
in through `/events`. `bentoml serve seqops.serving.service:Recommender`.

    POST /recommend     by user_id (online history) or by an explicit item list; k, exclude_seen, category
    POST /next_action   P(next event type)   — 404 unless the champion has a next_action head
    POST /churn         P(churn)             — 404 unless the champion has a churn head
    POST /anomaly       anomaly score, flag at the threshold, reasons (models/anomaly.py); no history → fallback
    POST /profile       the user's profile and segment (serving/profile.py); unknown or not yet profiled → fallback
    POST /events        fresh events → the user's online feature row (Feast push) + the landing log
    GET  /metadata      champion version, data version, metrics (POST kept for old clients, documented deprecated)
    GET  /healthz /livez /readyz /metrics   BentoML's; /readyz is 200 once model and feature store are loaded

The project folder comes from $SEQOPS_PROJECT (default: the working directory). A promote is picked
up without a restart (the champion pointer is re-read every 0.25 s; the new model loads on a side
thread while the old one answers); each answer names the model version that produced it.

Request path: validation (pydantic, in BentoML) on the event loop → the micro-batcher → the engine's
single worker thread (one Feast read and one forward pass per batch) → JSON. See serving/engine.py.

Guard (serving/guard.py): 413 = body over `serving.max_body_bytes` (refused before parsing),
401 = no valid bearer token where `serving.auth` asks for one ($SEQOPS_API_TOKEN), 429 = over the
client's rate, 504 = not answered within `serving.request_timeout_s`.

Errors: 400 = the body breaks the published schema, 422 = it matches but cannot be processed (an
unknown item or category, lists of different lengths, a future timestamp), 404 = no such head or
history, 503 = no champion or no feature store; the body is always `{"error", "detail": [...]}`
(serving/schemas.py). A client error is one INFO line in the server log (no traceback: a client
cannot flood it) and a line with its status in the request log.

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
from seqops.serving.edge import Edge
from seqops.serving.engine import Engine, RequestError, engine_executor
from seqops.serving.explore import public_answer
from seqops.serving.guard import CLIENT, Guard, load_token
from seqops.serving.logs import EventLanding, Housekeeper, RequestLog, adopt_orphans
from seqops.serving.profile import ProfileBook
from seqops.serving.profile_schemas import ProfileRequest, ProfileResponse
from seqops.serving.schemas import (
    AnomalyResponse,
    ChurnResponse,
    EventsRequest,
    EventsResponse,
    ForgetRequest,
    ForgetResponse,
    HistoryRequest,
    Metadata,
    NextActionResponse,
    RecommendRequest,
    RecommendResponse,
)

log = logging.getLogger("seqops.serving")
# BentoML's server logging keeps the root logger at WARNING; the service's own INFO lines (which
# champion answers, one line per client error) belong in the server log too.
log.setLevel(logging.INFO)
OVERRIDES_ENV = "SEQOPS_SERVING_OVERRIDES"
LOGGED_MESSAGE_CHARS = (
    300  # a client chooses the text of its errors (field names): the log gets a bounded, quoted excerpt
)


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
    name="seqops_fallback_total", documentation="answers given by the popularity fallback", labelnames=["reason"]
)
BATCH_SIZE = bentoml.metrics.Histogram(
    name="seqops_batch_size",
    documentation="requests scored per forward pass",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
EVENTS = bentoml.metrics.Counter(name="seqops_events_total", documentation="events accepted by POST /events")


class NextActionRequest(HistoryRequest):
    pass


class ChurnRequest(HistoryRequest):
    pass


class AnomalyRequest(HistoryRequest):
    pass


def wire_status(exc: RequestError) -> int:
    """The engine answers 400 to a schema-valid body it cannot process (an unknown item or category);
    on the wire that is 422, so that a 400 always means "breaks the published schema"."""
    return 422 if exc.status == 400 else exc.status


def error_response(exc: RequestError) -> Response:
    return JSONResponse(exc.body(), status_code=wire_status(exc))


def log_client_error(endpoint: str, status: int, message: str) -> None:
    """One INFO line per client error (4xx). A 503's cause is logged once by the engine, not per request."""
    if status < 500:
        log.info("client error %d on /%s: %s", status, endpoint, json.dumps(message[:LOGGED_MESSAGE_CHARS]))


def json_response(body: dict) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


metadata_app = FastAPI(title="seqops metadata")


@bentoml.asgi_app(metadata_app, path="/")
@bentoml.service(
    name="seqops-recommender",
    workers=PARAMS.serving.workers,
    traffic={"timeout": PARAMS.serving.request_timeout_s},  # 504 past it (serving/guard.py)
    logging={"access": {"enabled": False}},  # every answer is in the request log instead
)
class Recommender:
    def __init__(self) -> None:
        self.engine = Engine(PATHS, PARAMS)
        self.profiles = ProfileBook(PATHS, self.engine)
        # By default the engine runs on the event loop itself: one process has one GIL, so a worker
        # thread buys no parallelism, only GIL hand-offs (each costs up to the 5 ms switch interval
        # while the loop is busy parsing requests). serving.engine_thread switches to a thread.
        self.executor = engine_executor(PARAMS.serving.torch_threads) if PARAMS.serving.engine_thread else None
        self.batcher = MicroBatcher(
            self._score_batch,
            self.executor,
            max_batch_size=PARAMS.serving.max_batch_size,
            max_wait_ms=PARAMS.serving.max_wait_ms,
        )
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
        self.request_log.add(
            {
                "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                "endpoint": endpoint,
                "user_id": user,
                "status": status,
                "model_version": body.get("model_version"),
                "items": body.get("items"),
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                "fallback": body.get("fallback", False),
                "fallback_reason": body.get("fallback_reason"),
                "client": CLIENT.get(),  # address or token hash (serving/guard.py): the monitor weighs clients, not requests
                **({"error": body["error"][:LOGGED_MESSAGE_CHARS]} if "error" in body else {}),
                **{key: body[key] for key in ("propensities", "explore") if key in body},  # exploring answers
            }
        )

    def _error(self, endpoint: str, started: float, status: int, body: dict, user: str | None = None) -> Response:
        """Answer a refusal or an engine error: one log line, one request-log line, the JSON body."""
        log_client_error(endpoint, status, body["error"])
        self._log(endpoint, started, body, user, status)
        return JSONResponse(body, status_code=status)

    def _engine_error(self, endpoint: str, started: float, exc: RequestError, user: str | None) -> Response:
        return self._error(endpoint, started, wire_status(exc), exc.body(), user)

    @bentoml.api(route="/recommend")
    async def recommend(self, request: RecommendRequest, /) -> RecommendResponse:
        """Top-k next items for a user (history from the online store) or for an explicit list of
        recent items. Unknown users, users without online features, and a feature store that
        cannot be reached get popular items, flagged `fallback` with the reason."""
        started = time.perf_counter()
        if request.refusal:
            return self._error("recommend", started, *request.refusal)
        result = await self.batcher.submit(request)
        if isinstance(result, RequestError):
            return self._engine_error("recommend", started, result, request.user_id)
        if result["fallback"]:
            FALLBACKS.labels(reason=result["fallback_reason"]).inc()
        self._log("recommend", started, result, request.user_id)
        return json_response(public_answer(result))

    async def _head(self, name: str, request: HistoryRequest) -> Response:
        started = time.perf_counter()
        if request.refusal:
            return self._error(name, started, *request.refusal)
        try:
            result = await self._on_engine(self.engine.head, name, request)
        except RequestError as exc:
            return self._engine_error(name, started, exc, request.user_id)
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

    @bentoml.api(route="/anomaly")
    async def anomaly(self, request: AnomalyRequest, /) -> AnomalyResponse:
        """Anomaly score of a user's recent events (champion surprise + behaviour, Isolation Forest;
        models/anomaly.py), flagged at the configured threshold, with the reasons. A user without
        history gets `fallback: true`, no score, not flagged."""
        started = time.perf_counter()
        if request.refusal:
            return self._error("anomaly", started, *request.refusal)
        try:
            result = await self._on_engine(self.engine.anomaly, request)
        except RequestError as exc:
            return self._engine_error("anomaly", started, exc, request.user_id)
        self._log("anomaly", started, result, request.user_id)
        return json_response(result)

    @bentoml.api(route="/profile")
    async def profile(self, request: ProfileRequest, /) -> ProfileResponse:
        """The user's profile (RFM, session habits, category interests, the champion's embedding) and
        segment, from the Feast online store or the last profile run. An unknown user, or one no
        profile run has seen yet, gets `fallback: true` with the reason and no profile."""
        started = time.perf_counter()
        if request.refusal:
            return self._error("profile", started, *request.refusal)
        result = await self._on_engine(self.profiles.answer, request.user_id)
        self._log("profile", started, result, request.user_id)
        return json_response(result)

    @bentoml.api(route="/events")
    async def events(self, request: EventsRequest, /) -> EventsResponse:
        """Fresh events (user_id, item_id, event_type, optional timestamp). Each user's online
        feature row is recomputed from their current row plus these events and pushed through
        the Feast push source, so their next /recommend sees them; the events are also appended
        to the landing log the next retrain ingests. Unknown item ids are refused (422, naming
        `events[i].item_id`); a user the trained vocabulary does not know is kept under a
        provisional key (`new_user: true`) until the next retrain gives them an id. Ids with control
        characters, or starting with = + - @ (spreadsheet formulas), are refused with 400. A 200
        means the events are in the landing log: the next retrain ingests them exactly once (also
        with `online: false`: the feature store was down, the rows catch up at the next materialize)."""
        started = time.perf_counter()
        if request.refusal:
            return self._error("events", started, *request.refusal)
        try:
            summary = await self._on_engine(self._ingest_events, request.events)
        except RequestError as exc:
            return self._engine_error("events", started, exc, None)
        EVENTS.inc(len(request.events))
        body = {"accepted": len(request.events), "users": summary or [], "online": summary is not None}
        down = {"fallback": True, "fallback_reason": "feature store unavailable"}  # the engine's reason
        self._log("events", started, {} if body["online"] else down, None)
        return json_response(body)

    def _ingest_events(self, events: list) -> list[dict]:
        prepared = self.engine.prepare_events(events)  # validates; raises before any side effect
        self.landing.append(prepared.landed)  # the durable record first
        return self.engine.push_prepared(prepared)

    @bentoml.api(route="/admin/forget")
    async def forget(self, request: ForgetRequest, /) -> ForgetResponse:
        """Forget a user (right to erasure; `seqops forget-user` does the same): always needs the
        bearer token (401 without one, also when none is configured). The id is never logged."""
        started = time.perf_counter()
        if request.refusal:
            return self._error("admin/forget", started, *request.refusal)
        touched = await self._on_engine(self._forget, request.user_id, request.reason)
        body = {
            "user_hash": touched.user_hash,
            "files": len(touched.files),
            "rows": sum(touched.files.values()),
            "online_rows": touched.online_rows,
        }
        self._log("admin/forget", started, {}, None)
        return json_response(body)

    def _forget(self, user_id: str, reason: str):
        from seqops.features import erasure

        # close this worker's open request log and landing file first: the scrub replaces files, and
        # an open descriptor would go on writing to the replaced one (other workers: see docs/security.md)
        self.request_log.close()
        self.landing.rotate(force=True)
        touched = erasure.forget(
            PATHS, user_id, reason, by=CLIENT.get() or "api", profile=PARAMS.features.store_profile
        )
        self.engine.vocab.refresh(force=True)
        return touched

    @metadata_app.api_route(
        "/metadata", methods=["GET", "POST"], response_model=Metadata
    )  # POST: old clients, deprecated
    async def metadata(self):
        """Which model answers, the data it was trained on and its gate metrics."""
        try:
            return await self._on_engine(self.engine.metadata)
        except RequestError as exc:
            return error_response(exc)


# The guard first (outermost of the two): oversized, unauthenticated and over-rate requests stop there.
Recommender.add_asgi_middleware(Guard, params=PARAMS.serving, token=load_token(PARAMS.serving, PATHS.project))
Recommender.add_asgi_middleware(Edge, service=Recommender)
