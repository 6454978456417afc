"""User sequences -> left-padded training batches for the sequence models.

Every user sequence [i1, i2, ..., in] (oldest first) becomes one training row: input = [i1..i(n-1)],
labels = [i2..in], both cut to their last max_len items and left-padded with 0 (0 = ignore), so the
label at each position is the item that followed it. Users with fewer than 2 items give no row.

With event types (type ids 1.., aligned with the items) a row also carries `type_ids` (the type
of each input event) and `action_labels` (the type of the next event); with churn flags (1/0 per
event: the user went quiet for longer than the horizon after it, -1 = unknown) it carries
`churn_labels` for each input position. Batches are dicts of [B, L] tensors named like the
arguments of `SeqRecModel.forward`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def pad_left(seqs: Sequence[np.ndarray], max_len: int, fill: float = 0, dtype=np.int64) -> np.ndarray:
    """[B, max_len]: each sequence cut to its last max_len entries, newest in the last column."""
    out = np.full((len(seqs), max_len), fill, dtype=dtype)
    for row, seq in zip(out, seqs):
        tail = np.asarray(seq, dtype=dtype)[-max_len:]
        row[max_len - len(tail) :] = tail
    return out


def trim_left_padding(*arrays: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Drop the leading columns that are padding in every row of every array (same width for all)."""
    used = torch.stack([(a != 0).any(dim=0) for a in arrays]).any(dim=0)
    first = int(used.int().argmax()) if used.any() else used.shape[0] - 1  # keep >= 1 column
    return tuple(a[:, first:] for a in arrays)


class NextItemDataset(Dataset):
    """Rows of width max_len, one per user with at least 2 items (see the module docstring)."""

    def __init__(
        self,
        train_seqs: Sequence[np.ndarray],
        max_len: int,
        types: Sequence[np.ndarray] | None = None,
        churn: Sequence[np.ndarray] | None = None,
    ):
        keep = [i for i, s in enumerate(train_seqs) if len(s) >= 2]
        seqs = [np.asarray(train_seqs[i], dtype=np.int64) for i in keep]
        self.columns = {
            "input_ids": torch.from_numpy(pad_left([s[:-1] for s in seqs], max_len)),
            "labels": torch.from_numpy(pad_left([s[1:] for s in seqs], max_len)),
        }
        if types is not None:
            kept = [np.asarray(types[i], dtype=np.int64) for i in keep]
            self.columns["type_ids"] = torch.from_numpy(pad_left([t[:-1] for t in kept], max_len))
            self.columns["action_labels"] = torch.from_numpy(pad_left([t[1:] for t in kept], max_len))
        if churn is not None:
            kept = [np.asarray(churn[i], dtype=np.float32) for i in keep]
            self.columns["churn_labels"] = torch.from_numpy(pad_left([c[:-1] for c in kept], max_len, -1.0, np.float32))

    def __len__(self) -> int:
        return len(self.columns["input_ids"])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: column[index] for name, column in self.columns.items()}


def collate_left_padded(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack rows and trim the columns on the left where input and labels are all padding (the
    models count positions from the right)."""
    batch = {name: torch.stack([row[name] for row in rows]) for name in rows[0]}
    input_ids, labels = trim_left_padding(batch["input_ids"], batch["labels"])
    width = input_ids.shape[1]
    return {name: column[:, -width:] for name, column in batch.items()}


def make_loader(
    train_seqs: Sequence[np.ndarray],
    max_len: int,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    types: Sequence[np.ndarray] | None = None,
    churn: Sequence[np.ndarray] | None = None,
) -> DataLoader:
    """Shuffled (seeded) batches: dicts of input_ids, labels and, when given, the side columns."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        NextItemDataset(train_seqs, max_len, types, churn),
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=collate_left_padded,
        generator=generator,
    )


def iter_batches(items: Sequence, batch_size: int) -> Iterator[Sequence]:
    """Consecutive slices of at most batch_size items."""
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


def type_ids(types: Sequence[str], event_types: Sequence[str]) -> np.ndarray:
    """Event-type names -> ids (1 + index in event_types; unknown names -> 0, like padding)."""
    index = {name: i + 1 for i, name in enumerate(event_types)}
    return np.asarray([index.get(str(t), 0) for t in types], dtype=np.int64)


def churn_flags(ts_seconds: np.ndarray, horizon_s: float, data_end_s: float | None = None) -> np.ndarray:
    """Per event: 1.0 when the next event came more than horizon_s later, else 0.0. The last event
    is 1.0 if the data end is more than horizon_s after it (with data_end_s), else -1 (unknown)."""
    ts = np.asarray(ts_seconds, dtype=np.float64)
    flags = np.full(len(ts), -1.0, dtype=np.float32)
    if len(ts) > 1:
        flags[:-1] = (np.diff(ts) > horizon_s).astype(np.float32)
    if len(ts) and data_end_s is not None and data_end_s - ts[-1] > horizon_s:
        flags[-1] = 1.0
    return flags


__all__ = [
    "NextItemDataset",
    "churn_flags",
    "collate_left_padded",
    "iter_batches",
    "make_loader",
    "pad_left",
    "trim_left_padding",
    "type_ids",
]
