"""Request validation: every bad request names the offending field."""

import time

import pytest
from pydantic import ValidationError

from seqops.serving.schemas import SERVING, Event, EventsRequest, HistoryRequest, RecommendRequest, name_fields


def fields_of(exc: ValidationError) -> set[str]:
    return {".".join(map(str, e["loc"])) for e in exc.errors()}


@pytest.mark.parametrize("body, field", [
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
])
def test_recommend_request_names_the_field(body, field):
    with pytest.raises(ValidationError) as caught:
        RecommendRequest.model_validate(body)
    assert field in fields_of(caught.value)
    assert field in str(name_fields(caught.value, "RecommendRequest").title)


@pytest.mark.parametrize("body, words", [
    ({}, "`user_id` or `items`"),
    ({"user_id": "u1", "items": ["i1"]}, "`user_id` or `items`"),
    ({"items": ["i1", "i2"], "event_types": ["view"]}, "`event_types` has 1"),
    ({"user_id": "u1", "event_types": ["view"]}, "`event_types` needs `items`"),
])
def test_history_rules_name_the_fields_in_the_message(body, words):
    with pytest.raises(ValidationError, match=words):
        HistoryRequest.model_validate(body)


@pytest.mark.parametrize("event, field", [
    ({"user_id": "u", "item_id": "i", "event_type": "click"}, "events.0.event_type"),
    ({"user_id": "u", "item_id": "i", "event_type": "view", "timestamp": -1}, "events.0.timestamp"),
    ({"user_id": "u", "item_id": "i", "event_type": "view", "timestamp": time.time() + 86400}, "events.0.timestamp"),
    ({"user_id": "u", "item_id": "", "event_type": "view"}, "events.0.item_id"),
    ({"user_id": "u", "item_id": "i", "event_type": "view", "extra": 1}, "events.0.extra"),
])
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
