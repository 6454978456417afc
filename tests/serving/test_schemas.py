"""Request validation: every bad request names the offending field; the published schema says
exactly what is accepted (400 otherwise), rules it cannot state are a 422."""

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from seqops.serving.schemas import (
    SERVING,
    STORED_ID_PATTERN,
    TEXT_PATTERN,
    Event,
    EventsRequest,
    HistoryRequest,
    RecommendRequest,
    name_fields,
    refusal_of,
)


def fields_of(exc: ValidationError) -> set[str]:
    return {".".join(map(str, e["loc"])) for e in exc.errors()}


@pytest.mark.parametrize(
    "body, field",
    [
        ({"user_id": "u1", "k": 0}, "k"),
        ({"user_id": "u1", "k": SERVING.max_k + 1}, "k"),
        ({"user_id": "u1", "k": "ten"}, "k"),
        ({"user_id": "u1", "bogus": 1}, "bogus"),
        ({"user_id": 42}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"items": []}, "items"),
        ({"items": ["i1", ""]}, "items.1"),
        ({"items": ["i1"], "event_types": ["teleport"]}, "event_types.0"),
        ({"user_id": "u1", "exclude_seen": "maybe"}, "exclude_seen"),
        ({"user_id": "u1", "category": ""}, "category"),
    ],
)
def test_recommend_request_names_the_field(body, field):
    with pytest.raises(ValidationError) as caught:
        RecommendRequest.model_validate(body)
    assert field in fields_of(caught.value)
    assert field in str(name_fields(caught.value, "RecommendRequest").title)


@pytest.mark.parametrize(
    "body, words",
    [
        ({}, "`user_id` or `items`"),
        ({"user_id": "u1", "items": ["i1"]}, "`user_id` or `items`"),
        ({"items": ["i1", "i2"], "event_types": ["view"]}, "`event_types` has 1"),
        ({"user_id": "u1", "event_types": ["view"]}, "`event_types` needs `items`"),
    ],
)
def test_history_rules_name_the_fields_in_the_message(body, words):
    with pytest.raises(ValidationError, match=words):
        HistoryRequest.model_validate(body)


@pytest.mark.parametrize(
    "event, field",
    [
        ({"user_id": "u", "item_id": "i", "event_type": "click"}, "events.0.event_type"),
        ({"user_id": "u", "item_id": "i", "event_type": "view", "timestamp": -1}, "events.0.timestamp"),
        (
            {"user_id": "u", "item_id": "i", "event_type": "view", "timestamp": time.time() + 86400},
            "events.0.timestamp",
        ),
        ({"user_id": "u", "item_id": "", "event_type": "view"}, "events.0.item_id"),
        ({"user_id": "u", "item_id": "i", "event_type": "view", "extra": 1}, "events.0.extra"),
    ],
)
def test_events_name_the_field(event, field):
    with pytest.raises(ValidationError) as caught:
        EventsRequest.model_validate({"events": [event]})
    assert field in fields_of(caught.value)


def test_events_batch_bounds():
    with pytest.raises(ValidationError, match="events"):
        EventsRequest.model_validate({"events": []})
    one = {"user_id": "u", "item_id": "i", "event_type": "view"}
    with pytest.raises(ValidationError, match="events"):
        EventsRequest.model_validate({"events": [one] * (SERVING.max_events + 1)})
    assert EventsRequest.model_validate({"events": [one]}).events == [Event(**one)]


def test_json_errors_keep_their_type_when_renamed():
    with pytest.raises(ValidationError) as caught:
        RecommendRequest.model_validate_json(b'{"user_id": ')
    renamed = name_fields(caught.value, "RecommendRequest")
    assert renamed.errors()[0]["type"] == "json_invalid" and "Invalid JSON" in renamed.title


def test_whole_body_rules_put_their_message_in_the_title():
    with pytest.raises(ValidationError) as caught:
        RecommendRequest.model_validate({"k": 3})
    assert "`user_id` or `items`" in name_fields(caught.value, "RecommendRequest").title


def one_event(**fields) -> dict:
    return {"events": [{"user_id": "u", "item_id": "i", "event_type": "view", **fields}]}


@pytest.mark.parametrize(
    "user, words",
    [
        ("a\rb", r"control character '\\r'"),
        ("a\x00b", "control character"),
        ("a\nb", "control character"),
        ("a\u2028b", "control character"),
        (" u1", "blanks"),
        ("u1\t", "control character"),
        ("=1+1", "formula"),
        ("+31", "formula"),
        ("-1", "formula"),
        ("@SUM(A1)", "formula"),
    ],
)
def test_stored_ids_refuse_control_characters_blanks_and_formulas(user, words):
    with pytest.raises(ValidationError, match=words) as caught:
        EventsRequest.model_validate(one_event(user_id=user))
    refusal = refusal_of(caught.value, "EventsRequest")
    assert refusal.status == 400 and "events.0.user_id" in refusal.body["error"]


def test_only_stored_ids_refuse_formula_starts():
    assert RecommendRequest.model_validate({"user_id": "-1"}).user_id == "-1"  # never written to a CSV
    with pytest.raises(ValidationError, match="control character"):
        RecommendRequest.model_validate({"user_id": "a\rb"})


@pytest.mark.parametrize(
    "model, body",
    [
        (RecommendRequest, {"items": ["i1", "i2"], "event_types": ["view"]}),
        (EventsRequest, one_event(timestamp=time.time() + 86400)),
    ],
)
def test_rules_a_schema_cannot_state_are_a_422(model, body):
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    assert refusal_of(caught.value, model.__name__).status == 422


def test_a_body_that_also_breaks_the_schema_is_a_400():
    late = {"user_id": "u", "item_id": "i", "event_type": "view", "timestamp": time.time() + 86400}
    with pytest.raises(ValidationError) as caught:
        EventsRequest.model_validate({"events": [late, {**late, "event_type": "teleport"}]})
    refusal = refusal_of(caught.value, "EventsRequest")
    assert refusal.status == 400 and refusal.body["error"].startswith("3 validation errors")


def accepted(model, body) -> bool:
    try:
        model.model_validate(body)
        return True
    except ValidationError:
        return False


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=8))
def test_the_published_patterns_say_exactly_what_is_accepted(text):
    """schemathesis generates from the pattern with Python's `re`: it must agree with the validators."""
    assert accepted(EventsRequest, one_event(user_id=text)) == bool(text and re.fullmatch(STORED_ID_PATTERN, text))
    assert accepted(RecommendRequest, {"user_id": text}) == bool(text and re.fullmatch(TEXT_PATTERN, text))
