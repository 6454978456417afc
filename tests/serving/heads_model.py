"""A stand-in for a future multi-task champion: SASRec plus next-action and churn heads."""

from __future__ import annotations

import torch
from torch import nn

from seqops.models.nets.sasrec import SASRecConfig, SASRecModel

EVENT_TYPES = ["view", "cart", "purchase"]


class HeadsConfig(SASRecConfig):
    model_type = "seqops-sasrec-heads"
    event_types: list[str] | None = None
    heads: list[str] | None = None


class HeadsModel(SASRecModel):
    config_class = HeadsConfig

    def __init__(self, config: HeadsConfig):
        super().__init__(config)
        self.action = nn.Linear(config.hidden_size, len(config.event_types or EVENT_TYPES))
        self.churn = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def next_action_scores(self, input_ids: torch.Tensor, type_ids: torch.Tensor) -> torch.Tensor:
        return self.action(self.encode(input_ids)[:, -1])

    def churn_scores(self, input_ids: torch.Tensor, type_ids: torch.Tensor) -> torch.Tensor:
        return self.churn(self.encode(input_ids)[:, -1]).squeeze(-1)


def make(n_items: int, max_len: int) -> HeadsModel:
    config = HeadsConfig(
        n_items=n_items,
        max_len=max_len,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        event_types=EVENT_TYPES,
        heads=["next_item", "next_action", "churn"],
    )
    return HeadsModel(config)
