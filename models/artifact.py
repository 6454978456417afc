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

from seqops.models.baselines import PopularityModel
from seqops.models.sasrec import SASRecModel

META_FILE = "seqops.json"
POPULARITY_DIR = "popularity"
ITEMS_FILE = "items.parquet"
REFERENCE_FILE = "reference.parquet"


def save_artifact(out_dir: Path, model: SASRecModel, popularity: PopularityModel, meta: dict,
                  items_vocab: Path, reference: pd.DataFrame) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model.save_pretrained(out_dir)
    popularity.save(out_dir / POPULARITY_DIR)
    shutil.copy(items_vocab, out_dir / ITEMS_FILE)
    reference.to_parquet(out_dir / REFERENCE_FILE, index=False)
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2, default=str))


@dataclass
class Artifact:
    """A loaded model ready to score histories, whatever vocabulary size the caller uses."""

    path: Path
    model: SASRecModel
    popularity: PopularityModel
    meta: dict

    @classmethod
    def load(cls, path: Path) -> "Artifact":
        model = SASRecModel.from_pretrained(path)
        model.eval()
        popularity = PopularityModel.load(path / POPULARITY_DIR)
        return cls(path, model, popularity, json.loads((path / META_FILE).read_text()))

    @property
    def n_items(self) -> int:
        return self.model.config.n_items

    def items(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / ITEMS_FILE)

    def reference(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / REFERENCE_FILE)

    @torch.inference_mode()
    def scores(self, histories: list[np.ndarray], n_items: int | None = None) -> np.ndarray:
        """Next-item scores [B, n_items+1]. Items this model never saw are unknown inputs (dropped)
        and unrankable outputs (-inf), so an older champion can be scored on newer data."""
        from seqops.models.data import pad_left

        max_len = self.model.config.max_len
        known = [h[(h > 0) & (h <= self.n_items)][-max_len:] for h in histories]
        input_ids = torch.as_tensor(pad_left(known, max_len))
        out = self.model.next_item_scores(input_ids).float().numpy()
        width = (n_items or self.n_items) + 1
        if width > out.shape[1]:
            out = np.pad(out, ((0, 0), (0, width - out.shape[1])), constant_values=-np.inf)
        return out[:, :width]
