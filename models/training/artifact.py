"""The model artifact: a `save_pretrained` directory (config.json + model.safetensors) plus
`seqops.json` (lineage and metrics), the popularity fallback, the item vocabulary and the
per-user reference summary the gate compares drift against.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from seqops.models.nets.baselines import PopularityModel
from seqops.models.nets.zoo import class_path, model_class
from seqops.models.training.data import pad_left, trim_left_padding

META_FILE = "seqops.json"
POPULARITY_DIR = "popularity"
ITEMS_FILE = "items.parquet"
REFERENCE_FILE = "reference.parquet"
HEAD_BATCH = 1024  # histories per forward pass when scoring a whole test set


def save_artifact(
    out_dir: Path, model: nn.Module, popularity: PopularityModel, meta: dict, items_vocab: Path, reference: pd.DataFrame
) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    meta = {**meta, "model_class": class_path(model)}
    model.save_pretrained(out_dir)
    popularity.save(out_dir / POPULARITY_DIR)
    shutil.copy(items_vocab, out_dir / ITEMS_FILE)
    reference.to_parquet(out_dir / REFERENCE_FILE, index=False)
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2, default=str))


@dataclass
class Artifact:
    """A loaded model ready to score histories, whatever vocabulary size the caller uses."""

    path: Path
    model: nn.Module
    popularity: PopularityModel
    meta: dict

    @classmethod
    def load(cls, path: Path) -> "Artifact":
        meta = json.loads((path / META_FILE).read_text())
        model = model_class(meta["model_class"]).from_pretrained(path)
        model.eval()
        popularity = PopularityModel.load(path / POPULARITY_DIR)
        return cls(path, model, popularity, meta)

    @property
    def reads_types(self) -> bool:
        """Whether the model embeds event types in its input (then scoring needs them)."""
        return bool(getattr(self.model.config, "event_types", None))

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(getattr(self.model, "heads", ("next_item",)))

    @property
    def n_items(self) -> int:
        return self.model.config.n_items

    def items(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / ITEMS_FILE)

    def reference(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / REFERENCE_FILE)

    def _inputs(self, histories: list[np.ndarray], types: list[np.ndarray] | None) -> list[torch.Tensor]:
        """Left-padded input_ids[, type_ids]; items this model never saw are dropped with their types."""
        max_len = self.model.config.max_len
        known = [(h > 0) & (h <= self.n_items) for h in histories]
        columns = [[h[k][-max_len:] for h, k in zip(histories, known)]]
        if types is not None and self.reads_types:
            columns.append([np.asarray(t)[k][-max_len:] for t, k in zip(types, known)])
        return list(trim_left_padding(*(torch.as_tensor(pad_left(c, max_len)) for c in columns)))

    @torch.inference_mode()
    def scores(
        self, histories: list[np.ndarray], n_items: int | None = None, types: list[np.ndarray] | None = None
    ) -> np.ndarray:
        """Next-item scores [B, n_items+1]. Items this model never saw are unknown inputs (dropped)
        and unrankable outputs (-inf), so an older champion can be scored on newer data."""
        out = self.model.next_item_scores(*self._inputs(histories, types)).float().numpy()
        width = (n_items or self.n_items) + 1
        if width > out.shape[1]:
            out = np.pad(out, ((0, 0), (0, width - out.shape[1])), constant_values=-np.inf)
        return out[:, :width]

    @torch.inference_mode()
    def head_scores(self, head: str, histories: list[np.ndarray], types: list[np.ndarray]) -> np.ndarray:
        """Logits of the next_action ([B, n_types]) or churn ([B]) head."""
        method = {"next_action": self.model.next_action_scores, "churn": self.model.churn_scores}[head]
        parts = [
            method(*self._inputs(histories[i : i + HEAD_BATCH], types[i : i + HEAD_BATCH])).float().numpy()
            for i in range(0, len(histories), HEAD_BATCH)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    @torch.inference_mode()
    def embeddings(self, histories: list[np.ndarray], types: list[np.ndarray] | None = None) -> np.ndarray | None:
        """[B, hidden_size] float32: the sequence state after each history's newest item, the vector
        the next-item scores are read from. None for a model without a sequence encoder (markov, popularity)."""
        if not callable(getattr(self.model, "last_state", None)):
            return None
        parts = []
        for i in range(0, len(histories), HEAD_BATCH):
            inputs = self._inputs(histories[i : i + HEAD_BATCH], None if types is None else types[i : i + HEAD_BATCH])
            parts.append(self.model.last_state(inputs[0], inputs[1] if len(inputs) > 1 else None).float().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, self.model.config.hidden_size), np.float32)
