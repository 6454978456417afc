"""Feast declarations only: the user entity, the sequence-feature source and view, the service.

The table behind the source is computed by `seqops.features.sequences` (one row per user per
event, the user's state after it). Fresh events reach the online store through the push source.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource
from feast.types import Array, Float64, Int64, String
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
