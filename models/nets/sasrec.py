"""SASRec (Kang & McAuley, 2018): a causal Transformer over a user's item sequence that scores the
next item against the item-embedding table (input and output embeddings are tied).

The loss is `config.loss`: full softmax cross-entropy (default; Klenitskiy & Vasilev 2023 show it
is what makes SASRec beat BERT4Rec), BCE with one negative (the original paper), or a sampled
softmax over `n_negatives` items.

Inputs are LEFT-padded with 0, the newest item in the last column; the causal encoder is the
Transformer stack shared with BERT4Rec (`models/nets/transformer.py`).
"""

from __future__ import annotations

import torch

from seqops.models.nets.base import SeqRecModel
from seqops.models.nets.transformer import TransformerConfig, TransformerEncoder


class SASRecConfig(TransformerConfig):
    model_type = "seqops-sasrec"


class SASRecModel(SeqRecModel):
    config_class = SASRecConfig
    base_model_prefix = "sasrec"

    def __init__(self, config: SASRecConfig):
        super().__init__(config)
        self.encoder = TransformerEncoder(config, causal=True)
        self.post_init()

    def encode(self, input_ids: torch.Tensor, type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(self.embed(input_ids, type_ids), input_ids)


__all__ = ["SASRecConfig", "SASRecModel"]
