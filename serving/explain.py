"""`/recommend` with `explain: true`: for each recommended item, the history events that raised it
most (leave-one-out attribution, models/explain.py, through the champion's own `Artifact`), with
their weights and as a sentence: "because you viewed item i7 (category c1) and carted item i9".

Answers without `explain` are not touched (no `explanations` key). A popularity fallback (unknown
user, no online row, feature store down, model error) has nothing personal to explain: each item
says so, with the reason. An attribution that fails is logged and answered as unavailable, never a 500.
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np
from pydantic import BaseModel, Field

from seqops.models.explain import leave_one_out

log = logging.getLogger("seqops.serving")

EVENTS_PER_ITEM = 3  # most events named per recommended item
VERBS = {"view": "viewed", "cart": "carted", "purchase": "bought", "fav": "favourited", "rating": "rated"}
NO_SINGLE_EVENT = (
    "no single event of your history raised it on its own: the model ranks it high for the history as a whole"
)


class ExplainedEvent(BaseModel):
    item: str = Field(description="the event's item id, as in the logs")
    category: Optional[str] = None
    event_type: Optional[str] = None
    events_ago: int = Field(description="1 = the user's latest event")
    weight: float = Field(description="how much the item's score drops when this event is left out of the history")


class ItemExplanation(BaseModel):
    item: str = Field(description="the recommended item")
    text: str = Field(description="the reason as a sentence")
    events: list[ExplainedEvent] = Field(description="the events that raised this item most, largest weight first")


def describe(raw_item: str, category: str | None) -> str:
    return f"item {raw_item}" + (f" (category {category})" if category and category != "unknown" else "")


def sentence(events: list[dict]) -> str:
    """'because you viewed item a (category x), carted item b and bought item c'."""
    phrases = [
        f"{VERBS.get(e['event_type'] or '', 'interacted with')} {describe(e['item'], e['category'])}" for e in events
    ]
    if not phrases:
        return NO_SINGLE_EVENT
    return "because you " + (phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1])


def explain_query(champion, vocab, q, answer: dict) -> list[dict]:
    """The explanations of one personal answer: one leave-one-out pass over q's history."""
    targets = np.asarray([vocab.catalog[raw] for raw in answer["items"]], dtype=np.int64)
    types = champion.type_ids([q.items], [q.types or []])
    attribution = leave_one_out(champion.artifact, q.items, targets, None if types is None else types[0])
    out = []
    for t, raw in enumerate(answer["items"]):
        events = [
            {
                "item": str(champion.raw_items[q.items[pos]]),
                "category": vocab.categories.get(int(q.items[pos])),
                "event_type": q.types[pos] if q.types and len(q.types) == len(q.items) else None,
                "events_ago": len(q.items) - pos,
                "weight": round(weight, 5),
            }
            for pos, weight in attribution.top(t, EVENTS_PER_ITEM)
        ]
        out.append({"item": raw, "text": sentence(events), "events": events})
    return out


def unexplained(answer: dict, why: str) -> list[dict]:
    return [{"item": raw, "text": why, "events": []} for raw in answer["items"]]


def explain_answers(champion, vocab, requests: list, queries: list, answers: list) -> list:
    """Add `explanations` to the answers whose request asked for them (the others are returned as they are)."""
    for req, q, answer in zip(requests, queries, answers):
        if not getattr(req, "explain", False) or not isinstance(answer, dict):
            continue
        if answer["fallback"]:
            why = f"popular with all users: no personal history to explain from ({answer['fallback_reason']})"
            answer["explanations"] = unexplained(answer, why)
            continue
        try:
            answer["explanations"] = explain_query(champion, vocab, q, answer)
        except Exception:  # noqa: BLE001 - the answer stands without its explanation
            log.exception("explanation failed for model %s", champion.version)
            answer["explanations"] = unexplained(answer, "explanation unavailable (attribution failed)")
    return answers


__all__ = ["ExplainedEvent", "ItemExplanation", "explain_answers", "sentence"]
