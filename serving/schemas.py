"""Request and response bodies of the HTTP API (pydantic; they generate the OpenAPI schema).

Every request model forbids unknown fields; bounds come from `params.yaml` (`serving:` and
`ingest.event_types`). A bad request is answered 400 by BentoML with `detail[].loc` naming the
field, e.g. `{"error": "1 validation error for RecommendRequest", "detail": [{"loc": ["k"], ...}]}`.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal, Optional

from bentoml import IODescriptor
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from seqops.config import ConfigError, Params, load_params, project_paths


def _params() -> Params:
    try:
        return load_params(project_paths().project / "params.yaml")
    except ConfigError:
        return Params()


PARAMS = _params()
SERVING = PARAMS.serving
EventType = Literal[tuple(PARAMS.ingest.event_types)]  # type: ignore[valid-type]
RawId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
MAX_HISTORY = 200
FUTURE_TOLERANCE_S = getattr(PARAMS.ingest, "future_tolerance_s", 3600)  # ingest quarantines events further ahead


def name_fields(exc: ValidationError, model: str) -> ValidationError:
    """The same errors, with the offending fields in the title, so BentoML's 400 message
    (`"N validation errors for <title>"`) names them, e.g. `RecommendRequest (fields: k, bogus)`."""
    errors = exc.errors()
    fields = sorted({".".join(map(str, e["loc"])) for e in errors if e["loc"]})
    parts = [f"field{'s' if len(fields) > 1 else ''}: {', '.join(fields)}"] if fields else []
    parts += sorted({e["msg"].removeprefix("Value error, ") for e in errors if not e["loc"]})  # whole-body rules
    title = f"{model} ({'; '.join(parts)})"
    details = [{"type": e["type"], "loc": e["loc"], "input": e.get("input"), **({"ctx": e["ctx"]} if "ctx" in e else {})}
               for e in errors]
    try:
        return ValidationError.from_exception_data(title, details)
    except Exception:  # noqa: BLE001 - an error type pydantic cannot rebuild: keep the original
        return exc


class Strict(IODescriptor):
    """Unknown fields are refused; validation errors name the fields in their message."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    async def from_http_request(cls, request, serde):
        """The body is JSON whatever the declared content type (a multipart header without a
        boundary made BentoML's multipart parser answer 500); not JSON → 400 naming the body."""
        from _bentoml_impl.serde import JSONSerde

        try:
            return await super().from_http_request(request, JSONSerde())
        except ValidationError as exc:
            raise name_fields(exc, cls.__name__) from None


class HistoryRequest(Strict):
    """Whose history to use: a known user (history from the Feast online store) or an explicit
    list of recent items (anonymous or session users), oldest first."""

    user_id: Optional[RawId] = Field(None, description="the user's id as in the event logs")
    items: Optional[list[RawId]] = Field(
        None, min_length=1, max_length=MAX_HISTORY,
        description="recent item ids (as in the logs), oldest first; instead of user_id")
    event_types: Optional[list[EventType]] = Field(
        None, min_length=1, max_length=MAX_HISTORY, description="event type of each item in `items` (same length)")

    @model_validator(mode="after")
    def _one_history(self):
        if (self.user_id is None) == (self.items is None):
            raise ValueError("give exactly one of `user_id` or `items`")
        if self.event_types is not None:
            if self.items is None:
                raise ValueError("`event_types` needs `items`")
            if len(self.event_types) != len(self.items):
                raise ValueError(f"`event_types` has {len(self.event_types)} entries but `items` has {len(self.items)}")
        return self


class RecommendRequest(HistoryRequest):
    k: int = Field(SERVING.default_k, ge=1, le=SERVING.max_k, description="how many items")
    exclude_seen: bool = Field(SERVING.exclude_seen, description="leave out items already in the history")
    category: Optional[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]] = Field(
        None, description="only items of this category")


class RecommendResponse(IODescriptor):
    user_id: Optional[str] = None
    items: list[str] = Field(description="item ids as in the logs, best first")
    scores: list[float]
    model_version: str
    fallback: bool = Field(description="true when popularity answered instead of the model")
    fallback_reason: Optional[str] = None


class NextActionResponse(IODescriptor):
    user_id: Optional[str] = None
    probabilities: dict[str, float] = Field(description="P(next event type)")
    model_version: str


class ChurnResponse(IODescriptor):
    user_id: Optional[str] = None
    churn_probability: float
    model_version: str


class Event(Strict):
    user_id: RawId
    item_id: RawId
    event_type: EventType
    timestamp: Optional[float] = Field(
        None, ge=0, allow_inf_nan=False, description="unix seconds; default: when the service receives it")

    @field_validator("timestamp")
    @classmethod
    def _not_future(cls, value: float | None) -> float | None:
        if value is not None and value > time.time() + FUTURE_TOLERANCE_S:
            raise ValueError(f"timestamp is more than {FUTURE_TOLERANCE_S:g} s in the future")
        return value


class EventsRequest(Strict):
    events: list[Event] = Field(min_length=1, max_length=SERVING.max_events)


class UserUpdate(IODescriptor):
    user_id: str
    n_events: int = Field(description="the user's event count after these events")
    new_user: bool = Field(description="not in the trained vocabulary: kept under a provisional key until the next retrain")


class EventsResponse(IODescriptor):
    accepted: int
    users: list[UserUpdate]


class Metadata(IODescriptor):
    model_version: str
    data_version: Optional[str] = None
    params_hash: Optional[str] = None
    metrics: Optional[dict] = None
    heads: list[str]
    quantized: bool
    items: int


class ErrorBody(IODescriptor):
    error: str
    detail: list[dict] = []
