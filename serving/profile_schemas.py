"""Request and answer of `POST /profile` (serving/profile.py); their own module beside
serving/schemas.py, whose conventions they follow (unknown fields refused, 400 naming the field)."""

from __future__ import annotations

from typing import Literal, Optional

from bentoml import IODescriptor
from pydantic import Field

from seqops.serving.schemas import RawId, Strict


class ProfileRequest(Strict):
    user_id: RawId = Field(description="the user's id as in the event logs")


class Share(IODescriptor):
    name: str
    share: float


class UserProfile(IODescriptor):
    recency_days: float = Field(description="days from the user's last event to the data's last event")
    n_events: int
    n_sessions: int = Field(description="RFM frequency")
    active_days: int
    monetary: Optional[float] = Field(description="sum of purchase values; null when the data has none")
    rfm: str = Field(description="recency-frequency-monetary quintile scores 1..5 (5 best), x: no values")
    events_per_session: float
    session_minutes: float = Field(description="mean session length")
    sessions_per_week: float
    weekend_share: float
    peak_hour: int = Field(description="UTC hour with the most events")
    churned: bool = Field(description="quiet for longer than model.churn_horizon_days at the data's end")
    event_types: list[Share] = Field(description="share of the user's events per event type")
    top_categories: list[Share] = Field(description="categories with the most events, largest share first")
    embedding: list[float] = Field(description="the model's sequence embedding of the user (empty: none)")


class Segment(IODescriptor):
    id: int = Field(description="0 = the largest segment of the run; -1 = unclustered (hdbscan noise)")
    label: str = Field(description="what sets the segment apart, in words")
    size: Optional[int] = Field(None, description="users in it (null when the run's summary is not at hand)")
    churn_rate: Optional[float] = None
    description: list[str] = Field([], description="the features that set it apart, segment vs everyone")


class ProfileResponse(IODescriptor):
    user_id: str
    profile: Optional[UserProfile] = Field(description="null on a fallback")
    segment: Optional[Segment] = Field(description="null on a fallback")
    model_version: Optional[str] = Field(description="the model whose embedding the profile holds")
    data_version: Optional[str] = Field(description="md5 of the events profiled")
    source: Optional[Literal["online", "profile_run"]] = Field(
        description="the Feast online store, or the last profile run's file when the store has no row"
    )
    fallback: bool = Field(
        description="true when there is no profile for this user (then profile and segment are null)"
    )
    fallback_reason: Optional[str] = None
