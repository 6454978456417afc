"""Typed settings of exploration (`serving.explore`) and off-policy evaluation (`gate.ope`), as
sections of the one config (seqops/config.py holds them as fields; this module is imported by it).

Exploration is off by default: answers are then exactly the model's top k. The policies and their
propensities are in serving/explore.py; the estimators in models/release/ope.py; the page is
docs/exploration-ope.md.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, field_validator

from seqops.config_base import Section

ExplorePolicy = Literal["off", "epsilon", "softmax"]
EXPLORE_POLICIES: tuple[str, ...] = get_args(ExplorePolicy)
OpeEstimator = Literal["ips", "snips", "dr"]
OPE_ESTIMATORS: tuple[str, ...] = get_args(OpeEstimator)
OpeReward = Literal["click", "purchase"]
OPE_REWARDS: tuple[str, ...] = get_args(OpeReward)
OpeInterval = Literal["clt", "bootstrap"]
OpeTarget = Literal["serving", "greedy"]


class ExploreParams(Section):
    """Which k of the model's top `candidates` items an answer shows (serving/explore.py)."""

    policy: ExplorePolicy = Field(
        "off",
        description="off: the top k, as without exploration | epsilon: with probability epsilon k candidates drawn "
        "uniformly | softmax: candidates shown with probability ∝ exp(score / temperature), capped at 1",
    )
    epsilon: float = Field(0.1, ge=0, le=1, description="epsilon: share of answers whose slate is a uniform draw")
    temperature: float = Field(
        1.0, gt=0, description="softmax: on the scale of the model's scores (logits); small = nearly the top k"
    )
    candidates: int = Field(
        20, ge=1, le=1000, description="the policy picks among the model's top max(candidates, k) items"
    )
    seed: int = Field(0, description="mixed into each answer's seed (the seed is logged: any answer can be replayed)")

    @field_validator("policy", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        return "off" if value is False else value  # YAML reads a bare `off` as false


class OpeParams(Section):
    """Off-policy evaluation of a candidate on the logged, exploring answers (models/release/ope_view.py)."""

    enabled: bool = Field(True, description="estimate the candidate's click/purchase rate from the request log")
    blocking: bool = Field(
        False,
        description="the ope check blocks: reject when the whole interval of (candidate - logged) < -max_regression",
    )
    estimator: OpeEstimator = Field("dr", description="the estimate the check reads (all three are reported)")
    reward: OpeReward = Field("click", description="the rate the check reads (both are reported)")
    target: OpeTarget = Field(
        "serving", description="the candidate's policy: as served (serving.explore) | greedy (its plain top k)"
    )
    window_s: float = Field(
        1800.0, gt=0, description="an event on a shown item this long after the answer is its response"
    )
    click_events: list[str] = Field(
        ["view", "cart", "fav", "purchase"], min_length=1, description="event types that count as a click"
    )
    purchase_events: list[str] = Field(["purchase"], min_length=1, description="event types that count as a purchase")
    min_impressions: int = Field(200, ge=1, description="fewer logged exploring answers: reported, never blocks")
    max_impressions: int = Field(20000, ge=1, description="the most recent exploring answers evaluated")
    max_regression: float = Field(0.0, ge=0, description="blocking: tolerated drop of the rate (absolute)")
    interval: OpeInterval = Field(
        "clt", description="clt (normal, delta method for SNIPS) | bootstrap (gate.bootstrap_samples)"
    )
