"""The served model: one registered version loaded as its training `Artifact` (so the service
scores exactly as evaluation and the gate do: one padding helper, unknown items dropped), plus what
answers need — raw item ids, category masks and the popularity fallback. Swapped whole on promote.

Heads. A model can declare more heads than the next item through its config (`config.heads`, or
`heads` in seqops.json) or simply by having the methods below; they are found generically, so a
multi-task champion is served without code changes:

  next_item    next_item_scores(input_ids[, type_ids]) -> [B, n_items + 1]
  next_action  next_action_scores(input_ids, type_ids) -> [B, len(config.event_types)] logits
  churn        churn_scores(input_ids, type_ids) -> [B] logits
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from seqops.models.nets.base import SeqRecModel
from seqops.models.release.registry import Registry
from seqops.models.training.artifact import Artifact

HEAD_METHODS = {"next_item": "next_item_scores", "next_action": "next_action_scores", "churn": "churn_scores"}


def quantize(model: nn.Module) -> nn.Module:
    """int8 dynamic quantisation of the Linear layers (weights int8, activations quantised per call)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    for module in quantized.modules():
        if isinstance(module, nn.TransformerEncoderLayer):
            # the fused fast path reads `linear1.weight` as a tensor; quantised layers expose a method
            module.activation_relu_or_gelu = 0
    return quantized


def detect_heads(model: nn.Module, meta: dict) -> tuple[str, ...]:
    declared = getattr(model.config, "heads", None) or meta.get("heads")
    if not declared and isinstance(model, SeqRecModel):
        declared = model.heads  # the base class has every head method; its config says which are trained
    if declared:
        return tuple(h for h in declared if callable(getattr(model, HEAD_METHODS.get(h, ""), None)))
    return tuple(h for h, method in HEAD_METHODS.items() if callable(getattr(model, method, None)))


@dataclass
class Champion:
    """One loaded model version and everything needed to answer with it."""

    version: str
    artifact: Artifact
    popularity: np.ndarray  # [n_items + 1] float32, padding column -inf
    raw_items: np.ndarray  # dense id -> raw id (object array), index 0 unused
    category_masks: dict[str, np.ndarray]  # category -> bool [n_items + 1]
    heads: tuple[str, ...]
    event_types: tuple[str, ...]
    quantized: bool
    loaded_at: float = field(default_factory=time.time)

    @property
    def model(self) -> nn.Module:
        return self.artifact.model

    @property
    def meta(self) -> dict:
        return self.artifact.meta

    @property
    def n_items(self) -> int:
        return self.artifact.n_items

    @property
    def max_len(self) -> int:
        return self.model.config.max_len

    @classmethod
    def load(cls, registry: Registry, version: str, *, quantized: bool) -> "Champion":
        return cls.from_dir(registry.model_dir(version), version, quantized=quantized)

    @classmethod
    def from_dir(cls, path: Path, version: str, *, quantized: bool) -> "Champion":
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # no "Loading weights" bar in the server log per promote
        artifact = Artifact.load(path)
        if quantized:
            artifact = dataclasses.replace(artifact, model=quantize(artifact.model))
        n_items = artifact.n_items
        popularity = artifact.popularity.counts.astype(np.float32)
        popularity = np.pad(popularity, (0, max(0, n_items + 1 - len(popularity))))[: n_items + 1]
        popularity[0] = -np.inf
        items = artifact.items()
        items = items[(items["item_id"] >= 1) & (items["item_id"] <= n_items)]
        raw_items = np.empty(n_items + 1, dtype=object)
        raw_items[:] = [str(i) for i in range(n_items + 1)]
        raw_items[items["item_id"].to_numpy()] = items["raw_id"].astype(str).to_numpy()
        masks = {}
        if "category" in items:
            for category, group in items.groupby(items["category"].astype(str)):
                mask = np.zeros(n_items + 1, dtype=bool)
                mask[group["item_id"].to_numpy()] = True
                masks[category] = mask
        event_types = tuple(
            getattr(artifact.model.config, "event_types", None) or artifact.meta.get("event_types") or ()
        )
        return cls(
            version,
            artifact,
            popularity,
            raw_items,
            masks,
            detect_heads(artifact.model, artifact.meta),
            event_types,
            quantized,
        )

    def next_item_scores(self, histories: list[np.ndarray], types: list[list[str]] | None = None) -> np.ndarray:
        """[B, n_items + 1] float32 for dense-id histories, newest last: items this champion never saw
        are dropped (an older champion serves newer data); a model that embeds event types gets them
        (missing or misaligned types count as unknown)."""
        return self.artifact.scores(histories, types=self.type_ids(histories, types))

    def head(self, name: str, histories: list[np.ndarray], types: list[list[str]]) -> np.ndarray:
        """Logits of the next_action ([B, n_types]) or churn ([B]) head, unknown items dropped as above."""
        return self.artifact.head_scores(name, histories, self.type_ids(histories, types))

    def type_ids(self, histories: list[np.ndarray], types: list[list[str]] | None) -> list[np.ndarray] | None:
        if not self.event_types:
            return None
        index = {t: i + 1 for i, t in enumerate(self.event_types)}
        types = types or [[] for _ in histories]
        return [
            np.asarray([index.get(t, 0) for t in ts], dtype=np.int64)
            if len(ts) == len(h)
            else np.zeros(len(h), np.int64)
            for h, ts in zip(histories, types)
        ]


__all__ = ["HEAD_METHODS", "Champion", "detect_heads", "quantize"]
