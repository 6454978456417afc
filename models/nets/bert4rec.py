"""BERT4Rec (Sun et al., 2019): a bidirectional Transformer over a user's item sequence, trained
by cloze: random items are replaced by a [MASK] token and predicted from both sides.

The [MASK] token is one extra row of the item table (id n_items + 1, `extra_item_rows = 1`, so it
moves to the new end when the table grows); items are scored against the table without it, so it
is never recommended. To recommend, [MASK] is appended after the history (the oldest item dropped
if that exceeds max_len) and scored at that position.

Training rows are the generic next-item rows (input = [i1..i(n-1)], labels = [i2..in]); `forward`
rebuilds each full sequence [i1..in], masks each item with probability `mask_prob` (at least one
per row), and in a `mask_last_prob` share of rows masks the newest item alone, the exact
inference case (as the paper does). In eval mode it masks only the newest item: the loss is the
next-item loss of inference. The next_action / churn heads are trained at the newest position of
rows where only it is masked (the state that predicts the next event); rows with random masks
train the items alone, since their states see future events.

The bidirectional encoder is the Transformer stack shared with SASRec (`models/nets/transformer.py`):
pre-LayerNorm blocks with a final LayerNorm (the paper's post-LN BERT blocks learnt markedly slower
in the overfitting test).
"""

from __future__ import annotations

import torch

from seqops.models.nets.base import SeqRecModel, SeqRecOutput
from seqops.models.nets.transformer import TransformerConfig, TransformerEncoder


class BERT4RecConfig(TransformerConfig):
    model_type = "seqops-bert4rec"

    mask_prob: float = 0.2  # share of items replaced by [MASK] in training
    mask_last_prob: float = 0.1  # share of training rows that mask only their newest item


class BERT4RecModel(SeqRecModel):
    config_class = BERT4RecConfig
    base_model_prefix = "bert4rec"
    extra_item_rows = 1  # the [MASK] token

    def __init__(self, config: BERT4RecConfig):
        super().__init__(config)
        self.encoder = TransformerEncoder(config, causal=False)
        self.post_init()

    @property
    def mask_id(self) -> int:
        return self.config.n_items + 1

    def encode(self, input_ids: torch.Tensor, type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(self.embed(input_ids, type_ids), input_ids)

    def last_state(self, input_ids: torch.Tensor, type_ids: torch.Tensor | None) -> torch.Tensor:
        """The state at a [MASK] appended after the history (its type unknown: 0)."""
        append = torch.full_like(input_ids[:, :1], self.mask_id)
        input_ids = torch.cat([input_ids, append], 1)[:, -self.config.max_len :]
        if type_ids is not None:
            type_ids = torch.cat([type_ids, torch.zeros_like(append)], 1)[:, -self.config.max_len :]
        return super().last_state(input_ids, type_ids)

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        type_ids: torch.Tensor | None = None,
        action_labels: torch.Tensor | None = None,
        churn_labels: torch.Tensor | None = None,
    ) -> SeqRecOutput:
        """With labels: the cloze loss (see the module docstring); last_hidden_state is then the
        encoding of the masked full sequence, one column wider than input_ids below max_len.
        Without labels: the base behaviour on the unmasked input (no item loss)."""
        if labels is None:
            return super().forward(input_ids, None, type_ids, action_labels, churn_labels)
        width = self.config.max_len
        items = torch.cat([input_ids, labels[:, -1:]], 1)[:, -width:]
        masked = self.cloze_mask(items) if self.training else self.last_only(items)
        types = None
        if type_ids is not None:  # the newest event's type is action_labels[:, -1]; masked events show none
            newest = action_labels[:, -1:] if action_labels is not None else torch.zeros_like(labels[:, -1:])
            types = torch.cat([type_ids, newest], 1)[:, -width:].masked_fill(masked, 0)
        hidden = self.encode(items.masked_fill(masked, self.mask_id), types)
        item_loss = self.item_loss(hidden[masked], items[masked])

        only_last = masked[:, -1:] & (masked.sum(1, keepdim=True) == 1)
        aux_loss = self.head_losses(
            hidden[:, -1:],
            None if action_labels is None else action_labels[:, -1:].masked_fill(~only_last, 0),
            None if churn_labels is None else churn_labels[:, -1:].masked_fill(~only_last, -1),
        )
        loss = item_loss if aux_loss is None else item_loss + self.config.aux_weight * aux_loss
        return SeqRecOutput(loss=loss, item_loss=item_loss, aux_loss=aux_loss, last_hidden_state=hidden)

    @staticmethod
    def last_only(items: torch.Tensor) -> torch.Tensor:
        """[B, L] bool: the newest item of each row that has one."""
        masked = torch.zeros_like(items, dtype=torch.bool)
        masked[:, -1] = items[:, -1] != 0
        return masked

    def cloze_mask(self, items: torch.Tensor) -> torch.Tensor:
        """[B, L] bool, True = replaced by [MASK]: each item with probability mask_prob, one random
        item where none was drawn, and only the newest item in a mask_last_prob share of rows.
        Drawn from torch's global RNG, so torch.manual_seed makes it reproducible."""
        is_item = items != 0
        draw = torch.rand(items.shape, device=items.device)
        masked = (draw < self.config.mask_prob) & is_item
        pick = draw.masked_fill(~is_item, -1.0).argmax(1)  # a random item of each row
        masked[torch.arange(len(items), device=items.device), pick] |= ~masked.any(1) & is_item.any(1)
        last = torch.rand(len(items), 1, device=items.device) < self.config.mask_last_prob
        return torch.where(last, self.last_only(items), masked)


__all__ = ["BERT4RecConfig", "BERT4RecModel"]
