"""Where BentoML's HTTP edge differs from what this service promises, one ASGI middleware corrects it:

- /docs.json: BentoML's OpenAPI document, with this service's error body (`ErrorBody`: BentoML
  documents `detail` as a string, the service answers a list of reasons) and its 422 and 503
  answers documented;
- the declared content type: request bodies are JSON whatever it says (serving/schemas.py), but
  BentoML refuses `application/vnd.bentoml+pickle` itself, with an ERROR traceback in the log and a
  list for a body; such a request is read as JSON instead (and refused as a 400 if it is not)."""

from __future__ import annotations

import copy

from pydantic import BaseModel
from starlette.responses import JSONResponse

from seqops.serving.schemas import ErrorBody

REF = "#/components/schemas/{model}"
BENTOML_ERRORS = ("InvalidArgument", "NotFound", "InternalServerError")  # BentoML's error components
PICKLE = b"application/vnd.bentoml+pickle"
EXTRA_ERRORS = {  # status → (component, description)
    "422": (
        "Unprocessable",
        "Unprocessable Content: the body matches the schema but names an unknown item or "
        "category, its lists disagree in length, or a timestamp is in the future",
    ),
    "503": ("Unavailable", "Service Unavailable: no champion model yet, or the feature store cannot be reached"),
    # the guard's answers (serving/guard.py)
    "401": ("Unauthorized", "Unauthorized: this route needs `Authorization: Bearer <token>` (serving.auth)"),
    "413": ("TooLarge", "Content Too Large: the body is over serving.max_body_bytes"),
    "429": ("TooManyRequests", "Too Many Requests: over this client's rate; retry after `Retry-After` seconds"),
    "504": ("Timeout", "Gateway Timeout: not answered within serving.request_timeout_s"),
}


def error_response(component: str, description: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=component)}}},
    }


def body_schema(operation: dict, status: str | None = None) -> dict:
    return body_content(operation, status)["schema"]


def restore_properties(flattened: dict, model: type[BaseModel], mode: str) -> None:
    """BentoML flattens a body's top-level properties by keeping the first branch of each `anyOf`:
    `Optional[str]` loses its null. Put back the model's own schema of every property."""
    exact = model.model_json_schema(ref_template=REF, mode=mode)["properties"]
    flattened["properties"] = {
        name: exact.get(name, schema) for name, schema in flattened.get("properties", {}).items()
    }


INFO = {
    "title": "seqops recommender",
    "description": (
        "Next-item recommendations, next-action and churn probabilities, user profiles and segments from "
        "user-behaviour sequences, "
        "served by the champion model of a seqops project (the version is in every answer and in GET /metadata). "
        "Histories come from the Feast online store; `POST /events` folds fresh events into them at once and "
        "lands them for the next retrain. Errors are `{error, detail[]}`: 400 breaks this schema, 422 matches "
        "it but names something unknown, 503 means not ready (no champion yet, or the feature store is away)."
    ),
}
TAGS = [
    {"name": "Predictions", "description": "answers from the champion model"},
    {"name": "Events", "description": "fresh behaviour in"},
    {"name": "Infrastructure", "description": "probes, metrics and the served model's metadata"},
]
API_TAGS = {
    "recommend": "Predictions",
    "next_action": "Predictions",
    "churn": "Predictions",
    "profile": "Predictions",
    "events": "Events",
}
EXAMPLES = {  # API name → (request, answer): what a client sends and gets back
    "recommend": (
        {"user_id": "u000042", "k": 3},
        {
            "user_id": "u000042",
            "items": ["i000107", "i000031", "i000260"],
            "scores": [7.91, 7.45, 7.02],
            "model_version": "v0003-1a2b3c",
            "fallback": False,
            "fallback_reason": None,
        },
    ),
    "next_action": (
        {"items": ["i000107", "i000031"], "event_types": ["view", "cart"]},
        {
            "user_id": None,
            "probabilities": {"view": 0.61, "cart": 0.12, "purchase": 0.27},
            "model_version": "v0003-1a2b3c",
        },
    ),
    "churn": (
        {"user_id": "u000042"},
        {"user_id": "u000042", "churn_probability": 0.18, "model_version": "v0003-1a2b3c"},
    ),
    "profile": (
        {"user_id": "u000042"},
        {
            "user_id": "u000042",
            "profile": {
                "recency_days": 0.92,
                "n_events": 31,
                "n_sessions": 5,
                "active_days": 4,
                "monetary": None,
                "rfm": "5-4-x",
                "events_per_session": 6.2,
                "session_minutes": 3.1,
                "sessions_per_week": 2.5,
                "weekend_share": 0.29,
                "peak_hour": 14,
                "churned": False,
                "event_types": [{"name": "cart", "share": 0.1}, {"name": "view", "share": 0.9}],
                "top_categories": [{"name": "c03", "share": 0.41}, {"name": "c11", "share": 0.22}],
                "embedding": [0.0132, -1.2586, 0.4471],
            },
            "segment": {
                "id": 2,
                "label": "recently active, frequent visitors, into c03",
                "size": 311,
                "churn_rate": 0.04,
                "description": ["days since the last event: 0.85 vs 5.73 overall"],
            },
            "model_version": "v0003-1a2b3c",
            "data_version": "8e56ea93c44223c53dc47f9aedacf954",
            "source": "online",
            "fallback": False,
            "fallback_reason": None,
        },
    ),
    "events": (
        {"events": [{"user_id": "u000042", "item_id": "i000107", "event_type": "cart", "timestamp": 1767225600.0}]},
        {"accepted": 1, "users": [{"user_id": "u000042", "n_events": 37, "new_user": False}]},
    ),
}


def describe_service(spec: dict, version: str) -> None:
    """seqops's own title, version, description and tags instead of BentoML's defaults and links."""
    spec["info"] = {**INFO, "version": version}
    spec["tags"] = TAGS
    for path, item in spec["paths"].items():
        for operation in item.values():
            name = operation.get("x-bentoml-name")
            operation["tags"] = [API_TAGS.get(name, "Infrastructure")]
            if name in EXAMPLES:
                request, answer = EXAMPLES[name]
                body_content(operation)["example"] = request
                body_content(operation, "200")["example"] = answer


def body_content(operation: dict, status: str | None = None) -> dict:
    holder = operation["requestBody"] if status is None else operation["responses"][int(status)]
    return holder["content"]["application/json"]


def documented(spec: dict, models: dict[str, tuple[type[BaseModel], type[BaseModel]]]) -> dict:
    """`spec` (BentoML's document as a dict) with exact body schemas (`models`: API name → request
    and response model) and this service's error bodies and statuses."""
    spec = copy.deepcopy(spec)
    schemas = spec["components"]["schemas"]
    error = ErrorBody.model_json_schema(ref_template=REF)
    schemas.update(error.pop("$defs", {}))
    for name in BENTOML_ERRORS:
        schemas[name] = {**error, "title": name, "description": schemas[name].get("description", "")}
    for status, (name, description) in EXTRA_ERRORS.items():
        schemas[name] = {**error, "title": name, "description": description}
    for item in spec["paths"].values():
        for operation in item.values():
            if "x-bentoml-name" in operation:  # one of the service's APIs (BentoML's probes answer no errors)
                request_model, response_model = models[operation["x-bentoml-name"]]
                operation["requestBody"]["required"] = True  # BentoML leaves it optional: an empty body is no request
                restore_properties(body_schema(operation), request_model, "validation")
                restore_properties(body_schema(operation, "200"), response_model, "serialization")
                operation["responses"].update(
                    {status: error_response(*EXTRA_ERRORS[status]) for status in EXTRA_ERRORS}
                )
    metadata = spec["paths"].get("/metadata", {})
    for operation in metadata.values():
        operation["responses"]["503"] = error_response(*EXTRA_ERRORS["503"])
    if "post" in metadata:  # one route answers both methods (so a 405 lists both in `Allow`); POST is the old one
        metadata["post"]["deprecated"] = True
    describe_service(spec, package_version())
    return spec


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("seqops")
    except PackageNotFoundError:  # a Bento without the installed distribution
        return "unknown"


def json_content_type(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers, with a pickle content type declared as JSON."""
    return [
        (name, b"application/json")
        if name == b"content-type" and value.split(b";")[0].strip() == PICKLE
        else (name, value)
        for name, value in headers
    ]


def service_document(service) -> dict:
    """The corrected OpenAPI document of a BentoML service."""
    models = {name: (api.input_spec, api.output_spec) for name, api in service.apis.items()}
    return documented(service.openapi_spec.asdict(), models)


class Edge:
    """ASGI middleware: GET /docs.json answers the corrected document; a pickle body is read as JSON."""

    def __init__(self, app, service):
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            if scope["path"] == "/docs.json" and scope["method"] in ("GET", "HEAD"):
                await JSONResponse(service_document(self.service))(scope, receive, send)
                return
            scope = {**scope, "headers": json_content_type(scope["headers"])}
        await self.app(scope, receive, send)
