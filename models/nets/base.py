"""What the id-based sequence recommenders share: an item table tied to the output, the next-item
losses, the optional next-action and churn heads, event-type input embeddings, the growth of the
item table for warm starts, and the scoring methods the trainer, evaluator, gate and service call.

A subclass builds its encoder in `__init__` (after `super().__init__`, before `post_init()`) and
implements `encode(input_ids, type_ids) -> [B, L, hidden_size]`. Inputs are LEFT-padded with 0,
the newest item in the last column; outputs at padding positions are never used as targets.

Training rows (see `models/training/data.py`): `labels[b, t]` is the item after `input_ids[b, t]` (0 = no
target); `type_ids` the event type of each input (1 + index in `config.event_types`, 0 = padding);
`action_labels[b, t]` the type of the next event (0 = none); `churn_labels[b, t]` 1.0 when the user
went quiet for longer than the churn horizon after event t, 0.0 when not, -1 = unknown.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from seqops.config import HEADS, ITEM_LOSSES, NEGATIVE_SAMPLERS

if TYPE_CHECKING:
    from seqops.config import ModelParams


class SeqRecConfig(PreTrainedConfig):
    n_items: int = 1000  # item ids are 1..n_items, 0 is padding
    max_len: int = 50
    hidden_size: int = 64
    dropout: float = 0.2
    initializer_range: float = 0.02
    loss: str = "ce"  # ce: full softmax | bce: one negative | sampled: softmax over n_negatives | gbce: gSASRec
    n_negatives: int = 1024  # shared by the batch (sampled, gbce)
    negatives: str = "uniform"  # uniform | popularity | in_batch (see draw_negatives)
    gbce_t: float = 0.75  # gbce calibration t in [0, 1]
    event_types: list[str] | None = None  # names of type ids 1..; set: types are embedded in the input
    heads: list[str] | None = None  # subset of HEADS; None = next_item only
    aux_weight: float = 0.5  # weight of the next-action and churn losses beside the item loss


@dataclass
class SeqRecOutput(ModelOutput):
    loss: torch.Tensor | None = None
    item_loss: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None


def sampled_item_loss(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    table: torch.Tensor,
    kind: str,
    n_negatives: int,
    negatives: str = "uniform",
    item_counts: torch.Tensor | None = None,
    gbce_t: float = 0.75,
) -> torch.Tensor:
    """Mean next-item loss for [N, H] target-position states against the [n_items + 1, H] table.

    ce: softmax over every item. bce: the target against one uniform negative per position (the
    original SASRec). sampled: softmax over the target and `n_negatives` negatives shared by the
    batch, drawn by `negatives` (see `draw_negatives`), with the logQ correction. gbce: gSASRec's
    generalised BCE over the same shared negatives (`gbce_beta`).
    """
    n_items = table.shape[0] - 1
    if kind == "ce":  # against items 1..n_items only: padding is never a class (no -inf column to write)
        return F.cross_entropy((hidden @ table[1:].T).float(), targets - 1)
    if kind == "bce":
        positive = (hidden * table[targets]).sum(-1).float()
        negative_ids = torch.randint(1, n_items + 1, targets.shape, device=targets.device)
        negative = (hidden * table[negative_ids]).sum(-1).float()
        return F.softplus(-positive).mean() + F.softplus(negative).mean()
    if kind not in ("sampled", "gbce"):
        raise ValueError(f"unknown item loss {kind!r}: one of {', '.join(ITEM_LOSSES)}")
    if negatives == "in_batch":
        return (
            in_batch_softmax(hidden, targets, table)
            if kind == "sampled"
            else gbce_loss(hidden, targets, table, *batch_candidates(targets), gbce_t)
        )
    negative_ids, log_expected = draw_negatives(targets, n_items, negatives, n_negatives, item_counts)
    if kind == "gbce":
        return gbce_loss(hidden, targets, table, negative_ids, log_expected, gbce_t)
    positive = (hidden * table[targets]).sum(-1).float()
    return logq_softmax_loss(positive, (hidden @ table[negative_ids].T).float(), negative_ids, targets, log_expected)


def logq_softmax_loss(
    positive: torch.Tensor,
    negative: torch.Tensor,
    negative_ids: torch.Tensor,
    targets: torch.Tensor,
    log_expected: torch.Tensor,
) -> torch.Tensor:
    """Cross-entropy of the [N] positive logits against [N, K] shared negative logits, each negative
    lowered by the log of its expected count log(K q) (it stands for 1 / (K q) items); negatives equal
    to the row's own target (accidental hits) are left out."""
    negative = (negative - log_expected).masked_fill(negative_ids[None, :] == targets[:, None], float("-inf"))
    logits = torch.cat([positive[:, None], negative], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(targets))


def draw_negatives(
    targets: torch.Tensor, n_items: int, scheme: str, k: int, item_counts: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`k` negative ids (with replacement, shared by the batch) and the log of each one's expected
    count among the k draws, log(k q(i)). The positive is always a candidate (not drawn), so only
    negatives are corrected: sum_j exp(s_j) / (k q_j) is then an unbiased estimate of the full
    softmax's sum over all items, and the sampled loss tracks full CE instead of a 1 + k-way
    softmax that the positive wins early (the uncorrected loss kept falling while ranking over all
    items got worse). uniform: q = 1/n_items; popularity: q ∝ the training count of each item + 1
    (`item_counts`, set by the trainer through `SeqRecModel.set_item_counts`)."""
    device = targets.device
    if scheme == "uniform":
        ids = torch.randint(1, n_items + 1, (k,), device=device)
        return ids, torch.full((k,), math.log(k / n_items), device=device)
    if scheme == "popularity":
        if item_counts is None:
            raise ValueError(
                "popularity negatives need item counts: SeqRecModel.set_item_counts (train_model sets them)"
            )
        q = item_counts[: n_items + 1].float().to(device)
        q = q / q.sum()
        ids = torch.multinomial(q, k, replacement=True)
        return ids, torch.log(k * q[ids])
    raise ValueError(f"unknown negative sampler {scheme!r}: one of {', '.join(NEGATIVE_SAMPLERS)}")


def batch_candidates(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """In-batch candidates: the batch's distinct targets and the log of each one's count among them
    (its expected count under popularity sampling, estimated by the batch itself)."""
    ids, counts = torch.unique(targets, return_counts=True)
    return ids, counts.float().log()


def in_batch_softmax(hidden: torch.Tensor, targets: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Softmax over the batch's distinct targets. The positive is one of those draws itself, so its
    logit is logQ-corrected like every other column (Yi et al. 2019), else popular items, which are
    in almost every batch, would be pushed down far more than full CE does."""
    ids, log_expected = batch_candidates(targets)
    logits = (hidden @ table[ids].T).float() - log_expected
    return F.cross_entropy(logits, torch.searchsorted(ids, targets))


def gbce_beta(n_negatives: int, n_items: int, t: float) -> float:
    """gSASRec's beta = alpha (t (1 - 1/alpha) + 1/alpha) with the sampling rate alpha = k / (n_items - 1);
    t = 0: plain BCE (beta 1), t = 1: beta = alpha, fully calibrated to the full softmax."""
    alpha = min(n_negatives / max(n_items - 1, 1), 1.0)
    return alpha * (t * (1 - 1 / alpha) + 1 / alpha)


def gbce_loss(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    table: torch.Tensor,
    negative_ids: torch.Tensor,
    log_expected: torch.Tensor,
    t: float,
) -> torch.Tensor:
    """Generalised BCE (Petrov & Macdonald 2023): -log(sigmoid(s+)^beta) - sum_j log(1 - sigmoid(s_j)),
    per position, averaged. Accidental hits are left out; no logQ (BCE has no partition to estimate)."""
    del log_expected
    beta = gbce_beta(len(negative_ids), table.shape[0] - 1, t)
    positive = (hidden * table[targets]).sum(-1).float()
    negative = (hidden @ table[negative_ids].T).float()
    is_negative = (negative_ids[None, :] != targets[:, None]).float()
    return (beta * F.softplus(-positive) + (F.softplus(negative) * is_negative).sum(-1)).mean()


class SeqRecModel(PreTrainedModel):
    """Base class; see the module docstring. `extra_item_rows` rows follow the items in the table
    (BERT4Rec's mask token) and move with the table when it grows."""

    config_class = SeqRecConfig
    main_input_name = "input_ids"
    extra_item_rows = 0

    def __init__(self, config: SeqRecConfig):
        super().__init__(config)
        unknown = set(config.heads or ()) - set(HEADS)
        if unknown:
            raise ValueError(f"unknown heads {sorted(unknown)}: choose from {', '.join(HEADS)}")
        if config.loss not in ITEM_LOSSES:
            raise ValueError(f"unknown item loss {config.loss!r}: one of {', '.join(ITEM_LOSSES)}")
        if config.negatives not in NEGATIVE_SAMPLERS:
            raise ValueError(f"unknown negative sampler {config.negatives!r}: one of {', '.join(NEGATIVE_SAMPLERS)}")
        n_types = len(config.event_types or ())
        if {"next_action", "churn"} & set(config.heads or ()) and not n_types:
            raise ValueError("next_action/churn heads need config.event_types")
        self.item_emb = nn.Embedding(config.n_items + 1 + self.extra_item_rows, config.hidden_size, padding_idx=0)
        self.type_emb = nn.Embedding(n_types + 1, config.hidden_size, padding_idx=0) if n_types else None
        self.action_head = nn.Linear(config.hidden_size, n_types) if "next_action" in self.heads else None
        self.churn_head = nn.Linear(config.hidden_size, 1) if "churn" in self.heads else None
        self.set_item_counts(None)

    @classmethod
    def from_params(
        cls, n_items: int, max_len: int, p: "ModelParams", event_types: list[str] | None = None, **overrides
    ) -> "SeqRecModel":
        """Build from params.yaml's `model` section: every field the config class declares is taken."""
        declared = {f.name for f in dataclasses.fields(cls.config_class)}
        values = {k: v for k, v in p.model_dump().items() if k in declared}
        heads = list(p.heads)
        values.update(
            n_items=n_items,
            max_len=max_len,
            heads=heads,
            event_types=list(event_types) if event_types and heads != ["next_item"] else None,
        )
        return cls(cls.config_class(**{**values, **overrides}))

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(self.config.heads or ("next_item",))

    def get_input_embeddings(self) -> nn.Embedding:
        return self.item_emb

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, self.config.initializer_range)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.data.zero_()
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    def embed(self, input_ids: torch.Tensor, type_ids: torch.Tensor | None) -> torch.Tensor:
        x = self.item_emb(input_ids)
        if self.type_emb is not None and type_ids is not None:
            x = x + self.type_emb(type_ids)
        return x

    def encode(self, input_ids: torch.Tensor, type_ids: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def item_table(self) -> torch.Tensor:
        """[n_items + 1, H]: the rows items are scored against (extra rows excluded)."""
        return self.item_emb.weight[: self.config.n_items + 1]

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = hidden @ self.item_table().T
        logits[..., 0] = float("-inf")
        return logits

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        type_ids: torch.Tensor | None = None,
        action_labels: torch.Tensor | None = None,
        churn_labels: torch.Tensor | None = None,
    ) -> SeqRecOutput:
        hidden = self.encode(input_ids, type_ids)
        item_loss = None
        if labels is not None and (labels != 0).any():  # a batch without targets has no item loss
            is_target = labels != 0
            item_loss = self.item_loss(hidden[is_target], labels[is_target])
        aux_loss = self.head_losses(hidden, action_labels, churn_labels)
        loss = item_loss
        if aux_loss is not None:
            weighted = self.config.aux_weight * aux_loss
            loss = weighted if loss is None else loss + weighted
        return SeqRecOutput(loss=loss, item_loss=item_loss, aux_loss=aux_loss, last_hidden_state=hidden)

    def item_loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """`sampled_item_loss` with this model's configured loss, negatives and item counts."""
        c = self.config
        return sampled_item_loss(
            hidden, targets, self.item_table(), c.loss, c.n_negatives, c.negatives, self.item_counts, c.gbce_t
        )

    def set_item_counts(self, counts: torch.Tensor | None) -> None:
        """Training counts per item id ([n_items + 1], index 0 ignored) for popularity negatives; a
        non-persistent buffer (never saved): the trainer sets it from its training sequences."""
        if counts is not None:
            counts = torch.as_tensor(counts, dtype=torch.float32, device=self.item_emb.weight.device)
            if counts.shape != (self.config.n_items + 1,):
                raise ValueError(f"item counts must have shape ({self.config.n_items + 1},), got {tuple(counts.shape)}")
            counts = (counts + 1.0).clone()  # + 1: every item can be drawn (finite logQ)
            counts[0] = 0.0  # padding is never a negative
        self.register_buffer("item_counts", counts, persistent=False)

    def head_losses(
        self, hidden: torch.Tensor, action_labels: torch.Tensor | None, churn_labels: torch.Tensor | None
    ) -> torch.Tensor | None:
        """Sum of the next-action cross-entropy and the churn BCE at their labelled positions."""
        terms = []
        if self.action_head is not None and action_labels is not None and (action_labels > 0).any():
            at = action_labels > 0
            terms.append(F.cross_entropy(self.action_head(hidden[at]).float(), action_labels[at] - 1))
        if self.churn_head is not None and churn_labels is not None and (churn_labels >= 0).any():
            at = churn_labels >= 0
            logits = self.churn_head(hidden[at]).squeeze(-1).float()
            terms.append(F.binary_cross_entropy_with_logits(logits, churn_labels[at].float()))
        return sum(terms) if terms else None

    def last_state(self, input_ids: torch.Tensor, type_ids: torch.Tensor | None) -> torch.Tensor:
        if type_ids is not None and type_ids.shape != input_ids.shape:
            raise ValueError(f"type_ids {tuple(type_ids.shape)} must match input_ids {tuple(input_ids.shape)}")
        return self.encode(input_ids, type_ids)[:, -1]

    @torch.no_grad()
    def next_item_scores(self, input_ids: torch.Tensor, type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L] left-padded histories -> [B, n_items + 1] float32 scores; padding column -inf."""
        return self.item_logits(self.last_state(input_ids, type_ids)).float()

    @torch.no_grad()
    def next_action_scores(self, input_ids: torch.Tensor, type_ids: torch.Tensor) -> torch.Tensor:
        """[B, len(event_types)] logits of the next event's type."""
        if self.action_head is None:
            raise AttributeError("this model has no next_action head")
        return self.action_head(self.last_state(input_ids, type_ids)).float()

    @torch.no_grad()
    def churn_scores(self, input_ids: torch.Tensor, type_ids: torch.Tensor) -> torch.Tensor:
        """[B] logits that the user goes quiet for longer than the churn horizon."""
        if self.churn_head is None:
            raise AttributeError("this model has no churn head")
        return self.churn_head(self.last_state(input_ids, type_ids)).squeeze(-1).float()

    @torch.no_grad()
    def grow_items(self, new_n_items: int) -> None:
        """Enlarge the item table to ids 1..new_n_items for a warm start; existing rows (and the
        extra rows after them) are kept exactly, new rows are initialised like fresh ones."""
        old_n = self.config.n_items
        if new_n_items < old_n:
            raise ValueError(f"cannot shrink the item table from {old_n} to {new_n_items} items")
        if new_n_items == old_n:
            return
        old = self.item_emb.weight
        grown = nn.Embedding(
            new_n_items + 1 + self.extra_item_rows, old.shape[1], padding_idx=0, device=old.device, dtype=old.dtype
        )
        nn.init.normal_(grown.weight, std=self.config.initializer_range)
        grown.weight[: old_n + 1] = old[: old_n + 1]
        if self.extra_item_rows:
            grown.weight[new_n_items + 1 :] = old[old_n + 1 :]
        grown.weight[0] = 0.0
        grown.weight.requires_grad_(old.requires_grad)
        self.item_emb = grown
        self.config.n_items = new_n_items
        self.set_item_counts(None)  # counts of the old vocabulary; the trainer sets new ones


def positions_from_right(input_ids: torch.Tensor, max_len: int) -> torch.Tensor:
    """Position ids counted from the right, so extra left padding never changes a score."""
    width = input_ids.shape[1]
    if width > max_len:
        raise ValueError(f"input width {width} exceeds max_len {max_len}")
    return torch.arange(max_len - width, max_len, device=input_ids.device)


__all__ = [
    "HEADS",
    "ITEM_LOSSES",
    "NEGATIVE_SAMPLERS",
    "draw_negatives",
    "gbce_beta",
    "logq_softmax_loss",
    "SeqRecConfig",
    "SeqRecModel",
    "SeqRecOutput",
    "positions_from_right",
    "sampled_item_loss",
]
