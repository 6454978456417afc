"""Count baselines as models the pipeline can train, gate and serve like any other: a first-order
Markov chain (item -> next item transition counts) backed off to popularity, and popularity alone
(`order = 0`). They are `PreTrainedModel`s whose state is buffers (no trainable parameters), so
`save_pretrained` writes safetensors and the trainer fits them by counting instead of by gradient.

Scores: P(next = j | last item = i) from the transition counts plus `backoff` x P(j) from the item
counts, so an item never seen after i still ranks by popularity and an unseen last item falls
back to popularity entirely. Transitions are stored as CSR (row pointer, column, count).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import PreTrainedConfig, PreTrainedModel

if TYPE_CHECKING:
    from seqops.config import ModelParams


class MarkovConfig(PreTrainedConfig):
    model_type = "seqops-markov"

    n_items: int = 1000
    max_len: int = 50
    order: int = 1  # 1: transitions + popularity back-off; 0: popularity only
    backoff: float = 0.1
    nnz: int = 0  # number of stored transitions (fixes the buffer shapes when loading)


class MarkovModel(PreTrainedModel):
    config_class = MarkovConfig
    main_input_name = "input_ids"

    def __init__(self, config: MarkovConfig):
        super().__init__(config)
        self.register_buffer("item_counts", torch.zeros(config.n_items + 1))
        self.register_buffer("row_ptr", torch.zeros(config.n_items + 2, dtype=torch.long))
        self.register_buffer("next_item", torch.zeros(config.nnz, dtype=torch.long))
        self.register_buffer("transitions", torch.zeros(config.nnz))
        # the back-off weight as a frozen parameter: transformers needs one to save the model
        self.backoff = torch.nn.Parameter(torch.tensor(config.backoff if config.order else 1.0), requires_grad=False)
        self.post_init()

    @classmethod
    def from_params(
        cls, n_items: int, max_len: int, p: "ModelParams", event_types: list[str] | None = None
    ) -> "MarkovModel":
        return cls(cls.config_class(n_items=n_items, max_len=max_len, backoff=p.markov_backoff))

    def _init_weights(self, module: torch.nn.Module) -> None:
        pass  # counts, not weights

    def fit(self, train_seqs: Sequence[np.ndarray]) -> "MarkovModel":
        """Count items and consecutive (item, next item) pairs of the training sequences."""
        n = self.config.n_items
        seqs = [np.asarray(s, dtype=np.int64) for s in train_seqs]
        items = np.concatenate(seqs + [np.zeros(0, np.int64)])
        if len(items) and (items.min() < 1 or items.max() > n):
            raise ValueError(f"item ids must be in 1..{n}")
        self.item_counts = torch.from_numpy(np.bincount(items, minlength=n + 1).astype(np.float32))
        pairs = np.concatenate(
            [np.stack([s[:-1], s[1:]], 1) for s in seqs if len(s) > 1] + [np.zeros((0, 2), np.int64)]
        )
        keys, counts = np.unique(pairs[:, 0] * (n + 1) + pairs[:, 1], return_counts=True)
        rows, cols = np.divmod(keys, n + 1)
        self.row_ptr = torch.from_numpy(np.r_[0, np.cumsum(np.bincount(rows, minlength=n + 1))].astype(np.int64))
        self.next_item = torch.from_numpy(cols.astype(np.int64))
        self.transitions = torch.from_numpy(counts.astype(np.float32))
        self.config.nnz = len(keys)
        return self

    @torch.no_grad()
    def next_item_scores(self, input_ids: torch.Tensor, type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L] left-padded histories -> [B, n_items + 1] float32; padding column -inf."""
        popularity = self.item_counts / self.item_counts.sum().clamp(min=1)
        scores = self.backoff * popularity.expand(len(input_ids), -1)
        if self.config.order:
            last = input_ids[:, -1].clamp(0, self.config.n_items)
            starts, ends = self.row_ptr[last], self.row_ptr[last + 1]
            lengths = ends - starts
            rows = torch.repeat_interleave(torch.arange(len(last)), lengths)
            flat = torch.repeat_interleave(starts - (lengths.cumsum(0) - lengths), lengths) + torch.arange(
                int(lengths.sum())
            )
            totals = torch.zeros(len(last)).index_add_(0, rows, self.transitions[flat])
            scores.index_put_((rows, self.next_item[flat]), self.transitions[flat] / totals[rows], accumulate=True)
        scores[:, 0] = float("-inf")
        return scores

    @torch.no_grad()
    def grow_items(self, new_n_items: int) -> None:
        """More items (no counts yet): the pipeline refits counts on every retrain anyway."""
        grow = new_n_items - self.config.n_items
        if grow < 0:
            raise ValueError(f"cannot shrink from {self.config.n_items} to {new_n_items} items")
        self.item_counts = torch.cat([self.item_counts, torch.zeros(grow)])
        self.row_ptr = torch.cat([self.row_ptr, self.row_ptr[-1:].expand(grow)])
        self.config.n_items = new_n_items


class PopularityConfig(MarkovConfig):
    model_type = "seqops-popularity"
    order: int = 0


class PopularityRecModel(MarkovModel):
    """Popularity as a servable model (`model.kind: popularity`): the Markov model of order 0."""

    config_class = PopularityConfig


__all__ = ["MarkovConfig", "MarkovModel", "PopularityConfig", "PopularityRecModel"]
