"""SASRec (Kang & McAuley, 2018): a causal Transformer over a user's item sequence that scores the
next item against the item-embedding table (input and output embeddings are tied).

The loss is `config.loss`: full softmax cross-entropy (default; Klenitskiy & Vasilev 2023 show it
is what makes SASRec beat BERT4Rec), BCE with one negative (the original paper), or a sampled
softmax over `n_negatives` items.

Inputs are LEFT-padded with 0, the newest item in the last column. Positions are counted from the
right, so an input of width L < max_len is treated exactly as if it were padded to max_len: extra
left padding never changes a score. Padding keys are masked out of attention; every position may
attend to itself, so all-padding rows stay finite (their outputs are never used as targets).
"""

from __future__ import annotations

import torch
from torch import nn

from seqops.models.base import SeqRecConfig, SeqRecModel, SeqRecOutput, positions_from_right


class SASRecConfig(SeqRecConfig):
    model_type = "seqops-sasrec"

    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int | None = None  # feed-forward width, default 4 * hidden_size


SASRecOutput = SeqRecOutput


def encoder_layer(config: SASRecConfig) -> nn.TransformerEncoderLayer:
    """One pre-LayerNorm Transformer block of the config's size (SASRec's and BERT4Rec's)."""
    if config.hidden_size % config.num_heads:
        raise ValueError(f"hidden_size {config.hidden_size} is not divisible by num_heads {config.num_heads}")
    return nn.TransformerEncoderLayer(
        d_model=config.hidden_size,
        nhead=config.num_heads,
        dim_feedforward=config.intermediate_size or 4 * config.hidden_size,
        dropout=config.dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )


class SASRecModel(SeqRecModel):
    config_class = SASRecConfig
    base_model_prefix = "sasrec"

    def __init__(self, config: SASRecConfig):
        super().__init__(config)
        self.pos_emb = nn.Embedding(config.max_len, config.hidden_size)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(encoder_layer(config) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(config.hidden_size)
        self.post_init()

    def encode(self, input_ids: torch.Tensor, type_ids: torch.Tensor | None = None) -> torch.Tensor:
        positions = positions_from_right(input_ids, self.config.max_len)
        x = self.drop(self.embed(input_ids, type_ids) + self.pos_emb(positions))
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


__all__ = ["SASRecConfig", "SASRecModel", "SASRecOutput", "encoder_layer"]
