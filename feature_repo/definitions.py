"""Feast declarations only: the user entity, the sequence-feature source and view, the service;
the per-user profile source, view and service.

The table behind the sequence source is computed by `seqops.features.sequences` (one row per user per
event, the user's state after it). Fresh events reach the online store through the push source.
The profile table is the `profile` stage's (`seqops.models.profiles`): one row per user per profile
run, stamped with the time of the data's last event; the retrain flow writes it online.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource
from feast.types import Array, Bool, Float32, Float64, Int64, String
from feast.value_type import ValueType

user = Entity(
    name="user", join_keys=["user_id"], value_type=ValueType.INT64, description="a user (dense id from ingest)"
)

user_sequence_file = FileSource(
    name="user_sequence_file",
    path="../.seqops/features/user_features.parquet",
    timestamp_field="event_timestamp",
)

user_sequence_push = PushSource(name="user_sequence_push", batch_source=user_sequence_file)

user_sequence = FeatureView(
    name="user_sequence",
    entities=[user],
    ttl=timedelta(days=0),  # 0 = no expiry: a quiet user keeps their last known state
    schema=[
        Field(name="last_items", dtype=Array(Int64), description="last N item ids, newest last"),
        Field(name="last_types", dtype=Array(String), description="event types of last_items"),
        Field(name="secs_since_prev", dtype=Float64, description="gap before the latest event"),
        Field(name="n_events", dtype=Int64),
        Field(name="n_sessions", dtype=Int64),
        Field(name="last_ts", dtype=Int64, description="unix seconds of the latest event"),
    ],
    source=user_sequence_push,
    online=True,
)

recommender_features = FeatureService(name="recommender", features=[user_sequence])

user_profile_file = FileSource(
    name="user_profile_file",
    path="../.seqops/profiles/profiles.parquet",
    timestamp_field="event_timestamp",
)

user_profile = FeatureView(
    name="user_profile",
    entities=[user],
    ttl=timedelta(days=0),
    schema=[
        Field(
            name="user_id", dtype=Int64
        ),  # declared: `feast apply` must not read a file the first run has not written
        Field(name="recency_days", dtype=Float64, description="days from the last event to the data's last event"),
        Field(name="n_events", dtype=Int64),
        Field(name="n_sessions", dtype=Int64, description="RFM frequency"),
        Field(name="active_days", dtype=Int64),
        Field(name="monetary", dtype=Float64, description="sum of purchase values (NaN: the data has none)"),
        Field(name="rfm", dtype=String, description="R, F, M quintile scores, e.g. 5-4-x (x: no values)"),
        Field(name="events_per_session", dtype=Float64),
        Field(name="session_minutes", dtype=Float64, description="mean session length"),
        Field(name="sessions_per_week", dtype=Float64),
        Field(name="weekend_share", dtype=Float64),
        Field(name="peak_hour", dtype=Int64, description="UTC hour with most events"),
        Field(name="churned", dtype=Bool, description="quiet longer than model.churn_horizon_days at the data's end"),
        Field(name="event_types", dtype=Array(String)),
        Field(name="event_type_shares", dtype=Array(Float64)),
        Field(name="top_categories", dtype=Array(String), description="most frequent categories, largest share first"),
        Field(name="top_category_shares", dtype=Array(Float64)),
        Field(name="embedding", dtype=Array(Float32), description="the model's last hidden state (empty: none)"),
        Field(name="segment", dtype=Int64, description="-1: unclustered (hdbscan noise)"),
        Field(name="segment_label", dtype=String),
        Field(name="model_version", dtype=String, description="the model whose embedding this is"),
        Field(name="data_version", dtype=String, description="md5 of the events profiled"),
    ],
    source=user_profile_file,
    online=True,
)

profile_features = FeatureService(name="profile", features=[user_profile])
