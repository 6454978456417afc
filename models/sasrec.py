"""SASRec (Kang & McAuley, 2018): a causal Transformer over a user's item sequence that scores the
next item against the item-embedding table (input and output embeddings are tied).

Inputs are LEFT-padded with 0, the newest item in the last column. Positions are counted from the
right, so an input of width L < max_len is treated exactly as if it were padded to max_len: extra
left padding never changes a score. Padding keys are masked out of attention; every position may
attend to itself, so all-padding rows stay finite (their outputs are never used as targets).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from seqops.config import ModelParams


class SASRecConfig(PreTrainedConfig):
    model_type = "seqops-sasrec"

    n_items: int = 1000  # item ids are 1..n_items, 0 is padding
    max_len: int = 50
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    dropout: float = 0.2
    intermediate_size: int | None = None  # feed-forward width, default 4 * hidden_size
    initializer_range: float = 0.02


@dataclass
class SASRecOutput(ModelOutput):
    loss: torch.Tensor | None = None  # mean cross-entropy over the non-padded targets
    last_hidden_state: torch.Tensor | None = None  # [B, L, hidden_size], after the final LayerNorm


class SASRecModel(PreTrainedModel):
    config_class = SASRecConfig
    base_model_prefix = "sasrec"
    main_input_name = "input_ids"

    def __init__(self, config: SASRecConfig):
        super().__init__(config)
        if config.hidden_size % config.num_heads:
            raise ValueError(f"hidden_size {config.hidden_size} is not divisible by num_heads {config.num_heads}")
        self.item_emb = nn.Embedding(config.n_items + 1, config.hidden_size, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, config.hidden_size)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model=config.hidden_size,
                nhead=config.num_heads,
                dim_feedforward=config.intermediate_size or 4 * config.hidden_size,
                dropout=config.dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(config.hidden_size)
        self.post_init()

    @classmethod
    def from_params(cls, n_items: int, max_len: int, p: ModelParams) -> SASRecModel:
        return cls(
            SASRecConfig(
                n_items=n_items,
                max_len=max_len,
                hidden_size=p.hidden_size,
                num_layers=p.num_layers,
                num_heads=p.num_heads,
                dropout=p.dropout,
            )
        )

    def get_input_embeddings(self) -> nn.Embedding:
        return self.item_emb

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> SASRecOutput:
        """input_ids, labels: [B, L] left-padded; labels[b, t] is the item after input_ids[b, t], 0 = ignore."""
        hidden = self.encode(input_ids)
        loss = None
        if labels is not None:
            is_target = labels != 0
            logits = self.item_logits(hidden[is_target])  # only the target positions: [N, n_items + 1]
            loss = F.cross_entropy(logits.float(), labels[is_target], reduction="sum") / is_target.sum().clamp(min=1)
        return SASRecOutput(loss=loss, last_hidden_state=hidden)

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        width = input_ids.shape[1]
        if width > self.config.max_len:
            raise ValueError(f"input width {width} exceeds max_len {self.config.max_len}")
        positions = torch.arange(self.config.max_len - width, self.config.max_len, device=input_ids.device)
        x = self.drop(self.item_emb(input_ids) + self.pos_emb(positions))
        mask = self.attention_mask(input_ids == 0)
        for block in self.blocks:
            x = block(x, src_mask=mask)
        return self.norm(x)

    def attention_mask(self, is_pad: torch.Tensor) -> torch.Tensor:
        """[B * num_heads, L, L] bool, True = blocked: no future keys, no padding keys, but always itself."""
        width = is_pad.shape[1]
        future = torch.ones(width, width, dtype=torch.bool, device=is_pad.device).triu(1)
        blocked = (future | is_pad[:, None, :]) & ~torch.eye(width, dtype=torch.bool, device=is_pad.device)
        return blocked.repeat_interleave(self.config.num_heads, dim=0)

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., hidden_size] -> [..., n_items + 1] scores against the tied item table; padding column = -inf."""
        logits = hidden @ self.item_emb.weight.T
        logits[..., 0] = float("-inf")
        return logits

    @torch.no_grad()
    def next_item_scores(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, L] left-padded histories -> [B, n_items + 1] float32 scores for the next item."""
        return self.item_logits(self.encode(input_ids)[:, -1]).float()

    @torch.no_grad()
    def grow_items(self, new_n_items: int) -> None:
        """Enlarge the item table to ids 1..new_n_items for a warm start; existing rows are kept exactly."""
        old = self.item_emb.weight
        if new_n_items < self.config.n_items:
            raise ValueError(f"cannot shrink the item table from {self.config.n_items} to {new_n_items} items")
        if new_n_items == self.config.n_items:
            return
        grown = nn.Embedding(new_n_items + 1, old.shape[1], padding_idx=0, device=old.device, dtype=old.dtype)
        nn.init.normal_(grown.weight, std=self.config.initializer_range)
        grown.weight[: old.shape[0]] = old
        grown.weight.requires_grad_(old.requires_grad)
        self.item_emb = grown
        self.config.n_items = new_n_items


__all__ = ["SASRecConfig", "SASRecModel", "SASRecOutput"]
