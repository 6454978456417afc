"""Request and response bodies of the HTTP API (pydantic; they generate the OpenAPI schema).

Every request model forbids unknown fields; bounds come from `params.yaml` (`serving:` and
`ingest.event_types`). What the OpenAPI document says is what is accepted: a body that breaks it is
answered 400, with the offending fields in `error` and `detail[].loc`, e.g.
`{"error": "1 validation error for RecommendRequest (field: k)", "detail": [{"loc": ["k"], ...}]}`;
a body that matches it but cannot be processed (`event_types` and `items` of different lengths, a
timestamp in the future; the engine adds unknown items and categories) is answered 422.

Ids and other text are taken verbatim — no control characters (C0, DEL, C1, U+2028/9: a `\\r` in an
id used to split a landed CSV row in two), no leading or trailing blanks (ingest would strip them;
refused rather than silently changed, so the schema's `pattern` says exactly what is accepted).
Ids that /events stores in the landing CSV must not start with `=`, `+`, `-` or `@`: a spreadsheet
opening the file would run them as formulas. They are refused (400) rather than neutralised,
because a neutralised id (`'=x`) would be another user after ingest.

A refused body never raises inside BentoML (which logs every ValidationError at ERROR with a
traceback): `from_http_request` returns an empty request carrying the `refusal`, and the service
answers it, logs one line and records it in the request log.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal, NamedTuple, Optional, Union

from bentoml import IODescriptor
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from seqops.config import ConfigError, Params, load_params, project_paths
from seqops.serving.explain import ItemExplanation


def _params() -> Params:
    try:
        return load_params(project_paths().project / "params.yaml")
    except ConfigError:
        return Params()


PARAMS = _params()
SERVING = PARAMS.serving
EventType = Literal[tuple(PARAMS.ingest.event_types)]  # type: ignore[valid-type]
MAX_HISTORY = 200
FUTURE_TOLERANCE_S = getattr(PARAMS.ingest, "future_tolerance_s", 3600)  # ingest quarantines events further ahead
UNPROCESSABLE = "unprocessable"  # error type of rules a schema cannot state: answered 422, not 400

CONTROL = r"\x00-\x1f\x7f-\x9f\u2028\u2029"  # C0, DEL, C1, line and paragraph separators
FORMULA_START = "=+-@"
TEXT_PATTERN = rf"^[^\s{CONTROL}](?:[^{CONTROL}]*[^\s{CONTROL}])?$"
STORED_ID_PATTERN = rf"^[^\s{CONTROL}{re.escape(FORMULA_START)}](?:[^{CONTROL}]*[^\s{CONTROL}])?$"
_CONTROL_CHAR = re.compile(f"[{CONTROL}]")


def _plain_text(value: Any) -> Any:
    """Say what is wrong with text the pattern refuses (the pattern then still checks it)."""
    if isinstance(value, str):
        if found := _CONTROL_CHAR.search(value):
            raise ValueError(
                f"control character {found.group()!r} at position {found.start()} "
                "(no CR, LF, NUL, TAB or other control characters in ids and names)"
            )
        if value != value.strip():
            raise ValueError("leading or trailing blanks")
    return value


def _not_a_formula(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in tuple(FORMULA_START):
        raise ValueError(
            f"ids stored by /events cannot start with {' '.join(FORMULA_START)} "
            "(a spreadsheet would run them as a formula)"
        )
    return value


# Validators listed last run first: plain-text checks, then the formula check, then the constraints.
Text = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=TEXT_PATTERN), BeforeValidator(_plain_text)
]
RawId = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=TEXT_PATTERN), BeforeValidator(_plain_text)
]
StoredId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, pattern=STORED_ID_PATTERN),
    BeforeValidator(_not_a_formula),
    BeforeValidator(_plain_text),
]


def name_fields(exc: ValidationError, model: str) -> ValidationError:
    """The same errors, with the offending fields in the title, so BentoML's 400 message
    (`"N validation errors for <title>"`) names them, e.g. `RecommendRequest (fields: k, bogus)`."""
    errors = exc.errors()
    fields = sorted({".".join(map(str, e["loc"])) for e in errors if e["loc"]})
    parts = [f"field{'s' if len(fields) > 1 else ''}: {', '.join(fields)}"] if fields else []
    parts += sorted({e["msg"].removeprefix("Value error, ") for e in errors if not e["loc"]})  # whole-body rules
    title = f"{model} ({'; '.join(parts)})"
    details = [
        {
            "type": PydanticCustomError(e["type"], e["msg"]) if e["type"] == UNPROCESSABLE else e["type"],
            "loc": e["loc"],
            "input": e.get("input"),
            **({"ctx": e["ctx"]} if "ctx" in e else {}),
        }
        for e in errors
    ]
    try:
        return ValidationError.from_exception_data(title, details)
    except Exception:  # noqa: BLE001 - an error type pydantic cannot rebuild: keep the original
        return exc


class Refusal(NamedTuple):
    """Why a request body was refused: the HTTP status and the JSON body to answer."""

    status: int
    body: dict


def refusal_of(exc: ValidationError, model: str) -> Refusal:
    """400 when the body breaks the published schema; 422 when it only breaks rules a schema cannot state."""
    exc = name_fields(exc, model)
    errors = exc.errors(include_context=False, include_input=False, include_url=False)
    status = 422 if errors and all(e["type"] == UNPROCESSABLE for e in errors) else 400
    count = len(errors)
    return Refusal(
        status, {"error": f"{count} validation error{'s' if count != 1 else ''} for {exc.title}", "detail": errors}
    )


def unprocessable(message: str) -> PydanticCustomError:
    return PydanticCustomError(UNPROCESSABLE, message)


class Strict(IODescriptor):
    """Unknown fields are refused; validation errors name the fields in their message. A body that
    cannot be validated comes back as an empty request whose `refusal` says why (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")
    _refusal: Optional[Refusal] = PrivateAttr(None)

    @property
    def refusal(self) -> Refusal | None:
        return self._refusal

    @classmethod
    async def from_http_request(cls, request, serde):
        """The body is JSON whatever the declared content type (a multipart header without a
        boundary made BentoML's multipart parser answer 500); not JSON → 400 naming the body."""
        from _bentoml_impl.serde import JSONSerde

        try:
            return await super().from_http_request(request, JSONSerde())
        except ValidationError as exc:
            refused = cls.model_construct()
            refused._refusal = refusal_of(exc, cls.__name__)
            return refused


# "Exactly one of user_id or items; event_types only with items", as a schema can say it (each branch
# names the other fields null or absent, so a body matches at most one).
ONE_HISTORY = [
    {
        "title": "by user",
        "required": ["user_id"],
        "properties": {"user_id": {"type": "string"}, "items": {"type": "null"}, "event_types": {"type": "null"}},
    },
    {
        "title": "by items",
        "required": ["items"],
        "properties": {"items": {"type": "array"}, "user_id": {"type": "null"}},
    },
]


class HistoryRequest(Strict):
    """Whose history to use: a known user (history from the Feast online store) or an explicit
    list of recent items (anonymous or session users), oldest first."""

    model_config = ConfigDict(json_schema_extra={"oneOf": ONE_HISTORY})

    user_id: Optional[RawId] = Field(None, description="the user's id as in the event logs")
    items: Optional[list[RawId]] = Field(
        None,
        min_length=1,
        max_length=MAX_HISTORY,
        description="recent item ids (as in the logs), oldest first; instead of user_id",
    )
    event_types: Optional[list[EventType]] = Field(
        None, min_length=1, max_length=MAX_HISTORY, description="event type of each item in `items` (same length)"
    )

    @model_validator(mode="after")
    def _one_history(self):
        if (self.user_id is None) == (self.items is None):
            raise ValueError("give exactly one of `user_id` or `items`")
        if self.event_types is not None:
            if self.items is None:
                raise ValueError("`event_types` needs `items`")
            if len(self.event_types) != len(self.items):
                raise unprocessable(
                    f"`event_types` has {len(self.event_types)} entries but `items` has {len(self.items)}"
                )
        return self


class RecommendRequest(HistoryRequest):
    k: int = Field(SERVING.default_k, ge=1, le=SERVING.max_k, description="how many items")
    exclude_seen: bool = Field(SERVING.exclude_seen, description="leave out items already in the history")
    category: Optional[Text] = Field(None, description="only items of this category")
    explain: bool = Field(False, description="also say which history events drove each item (serving/explain.py)")


class RecommendResponse(IODescriptor):
    user_id: Optional[str] = None
    items: list[str] = Field(description="item ids as in the logs, best first")
    scores: list[float]
    model_version: str
    fallback: bool = Field(description="true when popularity answered instead of the model")
    fallback_reason: Optional[str] = None
    propensities: Optional[list[float]] = Field(
        None, description="only when exploring (serving.explore): P(each shown item was shown), as logged"
    )
    explanations: Optional[list[ItemExplanation]] = Field(None, description="only with explain: true, one per item")


class NextActionResponse(IODescriptor):
    user_id: Optional[str] = None
    probabilities: dict[str, float] = Field(description="P(next event type)")
    model_version: str


class ChurnResponse(IODescriptor):
    user_id: Optional[str] = None
    churn_probability: float
    model_version: str


class AnomalyReason(IODescriptor):
    feature: str = Field(description="a signal of models/anomaly.py FEATURES")
    value: float
    z: float = Field(description="standard deviations from the champion's training users")
    direction: str = Field(description="high or low")
    description: str


class AnomalyResponse(IODescriptor):
    user_id: Optional[str] = None
    model_version: str
    score: Optional[float] = Field(description="higher = more anomalous; null on a fallback")
    flagged: bool = Field(description="score above the threshold (anomaly.contamination of the training users)")
    threshold: float
    reasons: list[AnomalyReason] = Field(description="the signals furthest from usual, furthest first")
    fallback: bool = Field(description="true when there was no history to score (then not flagged)")
    fallback_reason: Optional[str] = None


class Event(Strict):
    user_id: StoredId
    item_id: StoredId
    event_type: EventType
    timestamp: Optional[float] = Field(
        None, ge=0, allow_inf_nan=False, description="unix seconds; default: when the service receives it"
    )

    @field_validator("timestamp")
    @classmethod
    def _not_future(cls, value: float | None) -> float | None:
        if value is not None and value > time.time() + FUTURE_TOLERANCE_S:
            raise unprocessable(f"timestamp is more than {FUTURE_TOLERANCE_S:g} s in the future")
        return value


class EventsRequest(Strict):
    events: list[Event] = Field(min_length=1, max_length=SERVING.max_events)


class UserUpdate(IODescriptor):
    user_id: str
    n_events: int = Field(description="the user's event count after these events")
    new_user: bool = Field(
        description="not in the trained vocabulary: kept under a provisional key until the next retrain"
    )


class EventsResponse(IODescriptor):
    accepted: int
    users: list[UserUpdate]
    online: bool = Field(
        True, description="false: landed, but the feature store was down; online rows catch up at the next materialize"
    )


class ForgetRequest(Strict):
    user_id: StoredId = Field(description="the user's raw id, as in the event logs")
    reason: Text = Field(description="why (recorded in the erasure audit, without the id)")


class ForgetResponse(IODescriptor):
    user_hash: str = Field(description="the salted hash the erasure list and the audit hold (never the id)")
    files: int = Field(description="files under .seqops/ that lost rows or lines")
    rows: int = Field(description="rows and lines removed from them")
    online_rows: int = Field(description="online-store entries removed (SQLite: one per feature; Redis: the key)")


class Metadata(IODescriptor):
    model_version: str
    data_version: Optional[str] = None
    params_hash: Optional[str] = None
    metrics: Optional[dict] = None
    heads: list[str]
    quantized: bool
    items: int


class ErrorDetail(BaseModel):
    """One reason: where (`loc`, the path to the field; empty for the whole body) and why."""

    model_config = ConfigDict(extra="allow")

    loc: list[Union[str, int]]
    msg: str
    type: Optional[str] = None


class ErrorBody(BaseModel):
    """Every error answer: what went wrong in one line, and the reasons field by field (none for a 5xx)."""

    error: str
    detail: list[ErrorDetail] = []
