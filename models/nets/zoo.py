"""Which class each `model.kind` of params.yaml builds, and how an artifact names its class.

Classes are imported lazily ("module:Class"), so serving a SASRec never imports the text encoder's
code. An artifact records its class in seqops.json (`model_class`); anything importable with the
model contract of `models/nets/base.py` can be served (see serving/engine.py).
"""

from __future__ import annotations

import importlib

from torch import nn

from seqops.config import MODEL_KINDS, ModelParams

KINDS = {
    "sasrec": "seqops.models.nets.sasrec:SASRecModel",
    "bert4rec": "seqops.models.nets.bert4rec:BERT4RecModel",
    "gru4rec": "seqops.models.nets.rnn:GRU4RecModel",
    "lstm": "seqops.models.nets.rnn:LSTMRecModel",
    "lm": "seqops.models.nets.lm:LMRecModel",
    "markov": "seqops.models.nets.markov:MarkovModel",
    "popularity": "seqops.models.nets.markov:PopularityRecModel",
}
assert tuple(KINDS) == MODEL_KINDS, "models/nets/zoo.py KINDS and seqops/config.py ModelKind must list the same kinds"


def model_class(spec: str) -> type:
    """ "package.module:Class" (or a kind name) -> the class."""
    spec = KINDS.get(spec, spec)
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def class_path(model: nn.Module) -> str:
    return f"{type(model).__module__}:{type(model).__name__}"


def build_model(
    p: ModelParams,
    n_items: int,
    max_len: int,
    event_types: list[str] | None = None,
    item_texts: list[str] | None = None,
) -> nn.Module:
    """A fresh model of kind `p.kind`. `item_texts` (one per item id 0..n_items) feed the language
    model's item tokens and, with `p.item_text: init`, an id model's item table."""
    cls = model_class(p.kind)
    if p.kind == "lm":
        return cls.from_params(n_items, max_len, p, event_types, item_texts=item_texts)
    model = cls.from_params(n_items, max_len, p, event_types)
    if p.item_text == "init" and hasattr(model, "item_emb"):
        from seqops.models.nets.text import embed_texts, init_item_embeddings

        texts = item_texts or [""] + [f"item {i}" for i in range(1, n_items + 1)]
        init_item_embeddings(model, embed_texts(texts, p.text_model))
    return model


__all__ = ["KINDS", "build_model", "class_path", "model_class"]
