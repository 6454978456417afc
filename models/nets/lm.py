"""LMRec: a pretrained text encoder (default all-MiniLM-L6-v2) fine-tuned on behaviour rendered as
text, with the next-item, next-action and churn heads of `SeqRecModel`.

The last `lm_events` events of a history become one token sequence, newest first,

    [CLS] cart <newest item's text> [SEP] view <the item before> [SEP] ...

so the newest event always sits at the same positions, right after [CLS], however long the history
(the text analogue of SASRec's positions counted from the right). The mean-pooled (or [CLS])
encoder state, through a projection, is the user state. Next-item scores are that state times the
item table `item_emb`, which starts from the encoder's own text embedding of each item, so new
items without interactions still have a representation.

Serving needs only item and type ids: every item's text is tokenized once, at creation, into the
persistent buffer `item_tokens` [n_items + 1, item_text_tokens] (and the event-type words into
`type_tokens`), and the encoder's architecture is kept in `config.encoder_config`; config.json and
model.safetensors rebuild the model without a tokenizer or a hub. The pretrained weights are read
from `resolve_text_model(config.text_model)` only by `from_params` / `start_from_text`.

Padding events and the unused token slots are dropped before the encoder (real tokens are packed to
the left in order), so the encoder reads exactly the plain text above (`text.render_history`) and
extra left padding never changes a score. With `id_input` each item's table row is also added to
the embeddings of its text tokens: warm items get an identity beyond their (often uninformative)
text, which makes fitting much faster.

An encoder forward reads a whole history for one state, so training uses one target per row: a
random labelled position in train mode (torch's global RNG), the newest position in eval mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CONFIG_MAPPING, AutoConfig, AutoModel, PreTrainedConfig

from seqops.models.nets.base import SeqRecConfig, SeqRecModel, SeqRecOutput
from seqops.models.nets.text import (
    DEFAULT_TEXT_MODEL,
    init_item_embeddings,
    is_local,
    load_text_encoder,
    load_tokenizer,
    mean_pool,
    resolve_text_model,
    tokenize_fixed,
)

if TYPE_CHECKING:
    from seqops.config import ModelParams

PAD = -1  # padding in the token buffers (real token ids are >= 0, whatever the tokenizer's pad id)
POOLINGS = ("mean", "cls")
RIDGE = 0.1  # grow_items: ridge strength of the text -> trained-table map, relative to the mean eigenvalue
MAX_FIT_ITEMS = 4096  # grow_items: old items the map is fitted on
MACHINE_KEYS = ("_name_or_path", "transformers_version")  # not kept in encoder_config: they are no architecture


class LMRecConfig(SeqRecConfig):
    model_type = "seqops-lm"

    text_model: str = DEFAULT_TEXT_MODEL  # HF id or path; its weights and tokenizer are read at creation only
    lm_events: int = 10  # the last N events are rendered
    item_text_tokens: int = 16  # tokens kept per item text ("item i000734. category: c05" is 12)
    type_text_tokens: int = 3  # tokens kept per event-type word
    pooling: str = "mean"  # mean: the sentence-embedding pooling MiniLM was trained with | cls
    id_input: bool = True  # add each item's table row to its text tokens
    encoder_config: dict | None = None  # the text encoder's config; None: the text model's
    text_cls_id: int | None = None  # the tokenizer's [CLS] (or BOS) and [SEP] (or EOS), set at creation
    text_sep_id: int | None = None


def _first_set(*ids: int | None) -> int | None:
    return next((i for i in ids if i is not None), None)


def encoder_config_from_dict(values: dict) -> PreTrainedConfig:
    return CONFIG_MAPPING[values["model_type"]].from_dict(values)


class LMRecModel(SeqRecModel):
    config_class = LMRecConfig
    base_model_prefix = "lm"
    item_tokens: torch.Tensor  # buffers, see __init__
    type_tokens: torch.Tensor

    def __init__(self, config: LMRecConfig):
        if config.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {config.pooling!r}: one of {', '.join(POOLINGS)}")
        if config.encoder_config is None:  # a fresh config: the text model's architecture (reads its config.json)
            path = resolve_text_model(config.text_model)
            values = AutoConfig.from_pretrained(path, local_files_only=is_local(path)).to_dict()
            config.encoder_config = {k: v for k, v in values.items() if k not in MACHINE_KEYS}
        encoder_config = encoder_config_from_dict(config.encoder_config)
        config.hidden_size = encoder_config.hidden_size  # the item table lives in the encoder's space
        super().__init__(config)
        self.type_emb = None  # event types enter as words (type_tokens)
        self.encoder = AutoModel.from_config(encoder_config)
        self.drop = nn.Dropout(config.dropout)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        n_types = len(config.event_types or ())
        self.register_buffer("item_tokens", torch.full((config.n_items + 1, config.item_text_tokens), PAD))
        self.register_buffer("type_tokens", torch.full((n_types + 1, config.type_text_tokens), PAD))
        width = 1 + config.lm_events * (config.type_text_tokens + config.item_text_tokens + 1)
        limit = getattr(encoder_config, "max_position_embeddings", None)
        if limit is not None and width > limit:
            raise ValueError(
                f"{config.lm_events} events of up to {width // config.lm_events} tokens exceed the "
                f"encoder's {limit} positions: lower lm_events or item_text_tokens"
            )
        self.post_init()

    @classmethod
    def from_params(
        cls,
        n_items: int,
        max_len: int,
        p: "ModelParams",
        event_types: list[str] | None = None,
        item_texts: Sequence[str] | None = None,
        **overrides,
    ) -> "LMRecModel":
        """Build from params.yaml's `model` section and start from the pretrained text model;
        `item_texts` (ids 0..n_items, see `text.item_texts`) default to "item <id>"."""
        if event_types:  # the type words are part of the text even when only next_item is trained
            overrides = {"event_types": list(event_types), **overrides}
        model = super().from_params(n_items, max_len, p, **overrides)
        return model.start_from_text(item_texts)

    @torch.no_grad()
    def start_from_text(self, item_texts: Sequence[str] | None = None) -> "LMRecModel":
        """Load the text model's pretrained weights, tokenize the item texts and event types into the
        buffers, start the item table from the encoder's text embeddings (`init_item_embeddings`) and
        the user-state projection as the identity: untrained, the model already ranks items by the
        similarity of their text to the history's."""
        tokenizer, pretrained = load_text_encoder(self.config.text_model)
        self.encoder.load_state_dict(pretrained.state_dict())
        self.config.text_cls_id = _first_set(tokenizer.cls_token_id, tokenizer.bos_token_id)
        self.config.text_sep_id = _first_set(tokenizer.sep_token_id, tokenizer.eos_token_id)
        n_items = self.config.n_items
        texts = [""] + [f"item {i}" for i in range(1, n_items + 1)] if item_texts is None else list(item_texts)
        if len(texts) != n_items + 1:
            raise ValueError(f"{len(texts)} item texts for {n_items} items (need n_items + 1, index 0 = padding)")
        self.item_tokens.copy_(tokenize_fixed(tokenizer, texts, self.config.item_text_tokens, PAD))
        self.item_tokens[0] = PAD
        types = ["", *(self.config.event_types or ())]
        self.type_tokens.copy_(tokenize_fixed(tokenizer, types, self.config.type_text_tokens, PAD))
        init_item_embeddings(self, self.item_text_states(torch.arange(n_items + 1, device=self.device)))
        self.proj.weight.copy_(torch.eye(self.config.hidden_size))
        self.proj.bias.zero_()
        return self

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        type_ids: torch.Tensor | None = None,
        action_labels: torch.Tensor | None = None,
        churn_labels: torch.Tensor | None = None,
    ) -> SeqRecOutput:
        """One target per row: the base losses at the chosen position, from the events up to it."""
        at = self.target_positions(input_ids, labels, action_labels, churn_labels)

        def column(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.gather(1, at[:, None])

        types = None if type_ids is None else self.window(type_ids, at)
        return super().forward(
            self.window(input_ids, at), column(labels), types, column(action_labels), column(churn_labels)
        )

    def target_positions(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None,
        action_labels: torch.Tensor | None,
        churn_labels: torch.Tensor | None,
    ) -> torch.Tensor:
        """[B] column per row: a uniformly random labelled one in train mode, the newest in eval mode."""
        batch, width = input_ids.shape
        if not self.training:
            return torch.full((batch,), width - 1, device=input_ids.device)
        labelled = torch.zeros_like(input_ids, dtype=torch.bool)
        if labels is not None:
            labelled |= labels != 0
        if action_labels is not None:
            labelled |= action_labels > 0
        if churn_labels is not None:
            labelled |= churn_labels >= 0
        return torch.rand(labelled.shape, device=input_ids.device).masked_fill(~labelled, -1.0).argmax(1)

    def window(self, x: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
        """[B, L] -> [B, lm_events]: per row the columns up to and including `end`, left-padded with 0."""
        n = self.config.lm_events
        columns = end[:, None] + 1 + torch.arange(n, device=x.device)
        return F.pad(x, (n, 0)).gather(1, columns)

    def encode(self, input_ids: torch.Tensor, type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L] histories -> [B, 1, H]: the user state after the newest event (one state per row)."""
        newest = torch.full((len(input_ids),), input_ids.shape[1] - 1, device=input_ids.device)
        types = None if type_ids is None else self.window(type_ids, newest)
        state = self.encode_tokens(*self.render(self.window(input_ids, newest), types))
        return self.proj(self.drop(state))[:, None]

    def render(
        self, item_ids: torch.Tensor, type_ids: torch.Tensor | None, id_input: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """[B, E] events -> (tokens [B, S], attention mask [B, S], extra input embeddings [B, S, H] or
        None): "[CLS] type item [SEP] type item [SEP] ...", newest first, real tokens packed to the left."""
        item_ids = item_ids.flip(1)
        type_ids = None if type_ids is None or not self.config.event_types else type_ids.flip(1)
        is_event = item_ids != 0
        pieces = [] if type_ids is None else [self.type_tokens[type_ids * is_event]]
        sep = PAD if self.config.text_sep_id is None else self.config.text_sep_id
        pieces += [self.item_tokens[item_ids], torch.full_like(item_ids, sep).masked_fill(~is_event, PAD)[..., None]]
        events = torch.cat(pieces, -1)  # [B, E, W]
        cls = PAD if self.config.text_cls_id is None else self.config.text_cls_id
        tokens = torch.cat([torch.full_like(item_ids[:, :1], cls), events.flatten(1)], 1)
        extra = None
        if id_input and self.config.id_input:  # the item's row on each of its text tokens
            start = 0 if type_ids is None else self.config.type_text_tokens
            slot = torch.zeros(events.shape[-1], device=tokens.device)
            slot[start : start + self.config.item_text_tokens] = 1.0
            extra = (self.item_emb(item_ids)[:, :, None] * slot[:, None]).flatten(1, 2)
            extra = F.pad(extra, (0, 0, 1, 0))  # nothing on [CLS]
        real = tokens != PAD
        width = max(int(real.sum(1).max()), 1)
        order = real.long().sort(dim=1, descending=True, stable=True).indices[:, :width]
        if extra is not None:
            extra = extra.gather(1, order[..., None].expand(-1, -1, extra.shape[-1]))
        return tokens.gather(1, order).clamp(min=0), real.gather(1, order), extra

    def encode_tokens(
        self, tokens: torch.Tensor, mask: torch.Tensor, extra: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Packed tokens -> [B, H] pooled encoder states."""
        embeds = self.encoder.get_input_embeddings()(tokens)
        if extra is not None:
            embeds = embeds + extra.to(embeds.dtype)
        hidden = self.encoder(inputs_embeds=embeds, attention_mask=mask.long()).last_hidden_state
        return mean_pool(hidden, mask) if self.config.pooling == "mean" else hidden[:, 0]

    @torch.no_grad()
    def item_text_states(self, item_ids: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """[N] item ids -> [N, H] encoder states of "[CLS] <item text> [SEP]" alone (eval mode, no id input)."""
        was_training = self.training
        self.eval()
        states = [
            self.encode_tokens(*self.render(chunk[:, None], None, id_input=False))
            for chunk in item_ids.split(batch_size)
        ]
        self.train(was_training)
        return torch.cat(states).float()

    @torch.no_grad()
    def grow_items(self, new_n_items: int, texts: Sequence[str] | None = None) -> None:
        """Enlarge the item table and tokens to ids 1..new_n_items, keeping old rows exactly.

        `texts` are all item texts 0..new_n_items (as `text.item_texts` gives) or only the new
        items'; default "item <id>". A new item's row is its text state mapped into the trained
        table by a ridge fit on old items (text state -> row), so it starts next to the old items
        with similar text rather than at random. Needs the tokenizer of `config.text_model`.
        """
        old_n = self.config.n_items
        super().grow_items(new_n_items)
        if new_n_items == old_n:
            return
        n_new = new_n_items - old_n
        if texts is None:
            texts = [f"item {i}" for i in range(old_n + 1, new_n_items + 1)]
        elif len(texts) == new_n_items + 1:
            texts = list(texts)[old_n + 1 :]
        elif len(texts) != n_new:
            raise ValueError(f"{len(texts)} texts: give {new_n_items + 1} (all items) or {n_new} (the new ones)")
        tokens = tokenize_fixed(load_tokenizer(self.config.text_model), texts, self.config.item_text_tokens, PAD)
        self.item_tokens = torch.cat([self.item_tokens, tokens.to(self.item_tokens.device)])
        new_ids = torch.arange(old_n + 1, new_n_items + 1, device=self.device)
        table = self.item_emb.weight
        table[new_ids] = self.text_to_table(new_ids, old_n).to(table.dtype)

    def text_to_table(self, item_ids: torch.Tensor, old_n: int) -> torch.Tensor:
        """[N, H] rows for `item_ids` from their text states, by a ridge map fitted on old items."""
        fit = torch.randperm(old_n, device=self.device)[:MAX_FIT_ITEMS] + 1
        x, y = self.item_text_states(fit).double(), self.item_emb.weight[fit].double()
        x_mean, y_mean = x.mean(0), y.mean(0)
        x, y = x - x_mean, y - y_mean
        gram = x.T @ x
        ridge = RIDGE * gram.trace() / gram.shape[0] + 1e-12
        eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        weights = torch.linalg.solve(gram + ridge * eye, x.T @ y)
        return ((self.item_text_states(item_ids).double() - x_mean) @ weights + y_mean).float()


__all__ = ["LMRecConfig", "LMRecModel"]
