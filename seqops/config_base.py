"""The base of every params.yaml section: seqops/config.py and the per-topic modules beside it
(config_anomaly, config_ope, config_profile) build their sections on it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Unknown keys are errors (a typo never passes silently); a loaded section never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
