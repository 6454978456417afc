"""User sequences -> left-padded tensors for SASRec.

Every user sequence [i1, i2, ..., in] (oldest first) becomes one training row: input = [i1..i(n-1)],
labels = [i2..in], both cut to their last max_len items and left-padded with 0 (0 = ignore), so the
label at each position is the item that followed it. Users with fewer than 2 items give no row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def pad_left(seqs: Sequence[np.ndarray], max_len: int) -> np.ndarray:
    """[B, max_len] int64: each sequence cut to its last max_len items, newest in the last column."""
    out = np.zeros((len(seqs), max_len), dtype=np.int64)
    for row, seq in zip(out, seqs):
        tail = np.asarray(seq, dtype=np.int64)[-max_len:]
        row[max_len - len(tail) :] = tail
    return out


def trim_left_padding(*arrays: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Drop the leading columns that are padding in every row of every array (same width for all)."""
    used = torch.stack([(a != 0).any(dim=0) for a in arrays]).any(dim=0)
    first = int(used.int().argmax()) if used.any() else used.shape[0] - 1  # keep >= 1 column
    return tuple(a[:, first:] for a in arrays)


class NextItemDataset(Dataset):
    """(input_ids, labels) rows of width max_len, one per user with at least 2 items."""

    def __init__(self, train_seqs: Sequence[np.ndarray], max_len: int):
        seqs = [np.asarray(s, dtype=np.int64) for s in train_seqs if len(s) >= 2]
        self.input_ids = torch.from_numpy(pad_left([s[:-1] for s in seqs], max_len))
        self.labels = torch.from_numpy(pad_left([s[1:] for s in seqs], max_len))

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.input_ids[index], self.labels[index]


def collate_left_padded(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack rows and trim the all-padding columns on the left (the model counts positions from the right)."""
    input_ids, labels = trim_left_padding(*(torch.stack(column) for column in zip(*batch)))
    return input_ids, labels


def make_loader(
    train_seqs: Sequence[np.ndarray], max_len: int, batch_size: int, shuffle: bool = True, seed: int = 0
) -> DataLoader:
    """Shuffled (seeded) batches of (input_ids, labels)."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        NextItemDataset(train_seqs, max_len),
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=collate_left_padded,
        generator=generator,
    )


def iter_batches(items: Sequence, batch_size: int) -> Iterator[Sequence]:
    """Consecutive slices of at most batch_size items."""
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


__all__ = ["NextItemDataset", "collate_left_padded", "iter_batches", "make_loader", "pad_left", "trim_left_padding"]
