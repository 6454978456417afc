"""The Transformer stack SASRec and BERT4Rec share: learned positions counted from the right, dropout,
`num_layers` pre-LayerNorm blocks and a final LayerNorm. The two models differ only in what each
position may attend to — SASRec is causal, BERT4Rec sees both sides — so that is the one switch.

Padding keys are masked out of attention and every position may attend to itself, so all-padding
rows stay finite (their outputs are never used as targets). Positions are counted from the right,
so an input of width L < max_len scores exactly as if it were padded to max_len.
"""

from __future__ import annotations

import torch
from torch import nn

from seqops.models.nets.base import SeqRecConfig, positions_from_right


class TransformerConfig(SeqRecConfig):
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int | None = None  # feed-forward width, default 4 * hidden_size


class TransformerEncoder(nn.Module):
    def __init__(self, config: TransformerConfig, *, causal: bool):
        super().__init__()
        if config.hidden_size % config.num_heads:
            raise ValueError(f"hidden_size {config.hidden_size} is not divisible by num_heads {config.num_heads}")
        self.causal, self.num_heads, self.max_len = causal, config.num_heads, config.max_len
        self.pos_emb = nn.Embedding(config.max_len, config.hidden_size)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(block(config) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(config.hidden_size)

    def forward(self, embedded: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, L, H] input embeddings of the left-padded `input_ids` → [B, L, H] states."""
        x = self.drop(embedded + self.pos_emb(positions_from_right(input_ids, self.max_len)))
        mask = self.attention_mask(input_ids == 0)
        for layer in self.blocks:
            x = layer(x, src_mask=mask)
        return self.norm(x)

    def attention_mask(self, is_pad: torch.Tensor) -> torch.Tensor:
        """[B * num_heads, L, L] bool, True = blocked: padding keys (and future keys when causal),
        but never a position's own key."""
        width = is_pad.shape[1]
        blocked = is_pad[:, None, :].expand(-1, width, -1)
        if self.causal:
            blocked = blocked | torch.ones(width, width, dtype=torch.bool, device=is_pad.device).triu(1)
        blocked = blocked & ~torch.eye(width, dtype=torch.bool, device=is_pad.device)
        return blocked.repeat_interleave(self.num_heads, dim=0)


def block(config: TransformerConfig) -> nn.TransformerEncoderLayer:
    """One pre-LayerNorm Transformer block of the config's size."""
    return nn.TransformerEncoderLayer(
        d_model=config.hidden_size,
        nhead=config.num_heads,
        dim_feedforward=config.intermediate_size or 4 * config.hidden_size,
        dropout=config.dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )


__all__ = ["TransformerConfig", "TransformerEncoder"]
