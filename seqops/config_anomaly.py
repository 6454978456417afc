"""The `anomaly:` section of params.yaml (models/anomaly.py, POST /anomaly, the monitor's flagged
share; docs/anomaly.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from seqops.config_base import Section


class AnomalyParams(Section):
    """The anomaly detector (models/anomaly.py): an Isolation Forest over behaviour features and the
    champion's surprise, fitted on the champion's training users when the service loads it."""

    detector: Literal["isolation_forest"] = Field("isolation_forest", description="the unsupervised detector")
    contamination: float = Field(
        0.005, gt=0, lt=0.5, description="the threshold flags this share of the training users"
    )
    window: int = Field(10, ge=3, le=200, description="behaviour and surprise over each user's last N events")
    n_estimators: int = Field(200, gt=0, description="trees in the forest")
    max_fit_users: int = Field(
        5000, gt=0, description="training users the forest is fitted on (a seeded sample past it)"
    )
    n_reasons: int = Field(3, ge=1, description="most reasons given per answer")
    seed: int = Field(0, description="the forest's and the sample's seed (same champion, same detector)")
    alert_share: float = Field(0.05, gt=0, le=1, description="monitor: alert when more fresh users are flagged")
