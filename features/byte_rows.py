"""Rows of bytes built a column at a time in numpy: protobuf varints, fixed-width numbers, RESP
decimals, and row-wise concatenation of such pieces. Materialize serializes a batch of feature rows
with these (one numpy pass per column instead of one protobuf object per value)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class ByteRows:
    """n byte strings: row i is data[starts[i] : starts[i] + sizes[i]]."""

    data: np.ndarray  # uint8
    starts: np.ndarray  # int64
    sizes: np.ndarray  # int64

    @classmethod
    def laid_out(cls, data: np.ndarray, offsets: np.ndarray) -> ByteRows:
        """Rows back to back: row i is data[offsets[i] : offsets[i + 1]]."""
        return cls(data, offsets[:-1], np.diff(offsets))

    def __len__(self) -> int:
        return len(self.sizes)

    def grouped(self, offsets: np.ndarray) -> ByteRows:
        """Rows joining consecutive rows of this one (which must lie back to back, as every
        `ByteRows` made here except `const` does): row i joins rows offsets[i]..offsets[i + 1]."""
        end = self.starts[-1] + self.sizes[-1] if len(self) else 0
        bounds = np.append(self.starts, end)[np.asarray(offsets, np.int64)]
        return ByteRows(self.data, bounds[:-1], np.diff(bounds))

    def to_list(self) -> list[bytes]:
        blob, starts, ends = self.data.tobytes(), self.starts.tolist(), (self.starts + self.sizes).tolist()
        return [blob[start:end] for start, end in zip(starts, ends)]

    def to_bytes(self) -> bytes:
        """All rows back to back (the data of a `concat_rows` result is exactly that)."""
        return self.data.tobytes()


def offsets_of(sizes: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(sizes) + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return offsets


def const(value: bytes, n: int) -> ByteRows:
    """The same bytes in each of n rows (stored once)."""
    return ByteRows(np.frombuffer(value, np.uint8), np.zeros(n, np.int64), np.full(n, len(value), np.int64))


def from_list(values: list[bytes]) -> ByteRows:
    return ByteRows.laid_out(np.frombuffer(b"".join(values), np.uint8), offsets_of([len(v) for v in values]))


def from_arrow(array: pa.Array) -> ByteRows:
    """The values of a string or binary array (nulls as empty rows), sharing Arrow's buffers."""
    array = array.cast(pa.large_binary()) if not pa.types.is_large_binary(array.type) else array
    offsets = np.frombuffer(array.buffers()[1], np.int64)[array.offset : array.offset + len(array) + 1]
    data = array.buffers()[2]
    return ByteRows.laid_out(np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8), offsets)


def fixed(values: np.ndarray, dtype: str) -> ByteRows:
    """Little-endian fixed-width numbers (protobuf fixed32/fixed64: float, double)."""
    data = np.ascontiguousarray(values, dtype=dtype).view(np.uint8)
    width = np.dtype(dtype).itemsize
    return ByteRows(data, np.arange(len(values), dtype=np.int64) * width, np.full(len(values), width, np.int64))


_VARINT_LIMITS = np.array([1 << (7 * k) for k in range(1, 10)], np.uint64)  # a varint's size grows past each


def varints(values: np.ndarray) -> ByteRows:
    """Protobuf base-128 varints; negative integers take ten bytes (their 64-bit two's complement),
    as protobuf writes int32 and int64 fields."""
    word = np.asarray(values).astype(np.int64, copy=False).view(np.uint64)
    sizes = np.searchsorted(_VARINT_LIMITS, word, side="right").astype(np.int64) + 1
    offsets = offsets_of(sizes)
    data = np.empty(offsets[-1], np.uint8)
    for k in range(int(sizes.max(initial=0))):  # the k-th 7-bit group of every value that has one
        rows = np.flatnonzero(sizes > k)
        low = ((word[rows] >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        data[offsets[rows] + k] = low | ((sizes[rows] > k + 1).astype(np.uint8) << 7)  # more bytes follow
    return ByteRows.laid_out(data, offsets)


def decimals(values: np.ndarray) -> ByteRows:
    """Non-negative integers as ASCII decimal digits (the lengths in Redis' RESP protocol)."""
    values = np.asarray(values, np.int64)
    sizes = np.ones(len(values), np.int64)
    power = 10
    while len(values) and (values >= power).any():
        sizes += values >= power
        power *= 10
    offsets = offsets_of(sizes)
    data = np.empty(offsets[-1], np.uint8)
    rest = values.copy()
    for k in range(int(sizes.max(initial=0))):  # k-th digit from the right
        rows = np.flatnonzero(sizes > k)
        data[offsets[rows + 1] - 1 - k] = (rest[rows] % 10 + ord("0")).astype(np.uint8)
        rest //= 10
    return ByteRows.laid_out(data, offsets)


def concat_rows(parts: list[ByteRows], keep: np.ndarray | None = None) -> ByteRows:
    """Row i is parts[0][i] + parts[1][i] + ...; rows where `keep` is False come out empty. The
    result lies back to back."""
    n, width = len(parts[0]), len(parts)
    sizes = np.empty((n, width), np.int64)
    for j, part in enumerate(parts):
        sizes[:, j] = part.sizes
    if keep is not None:
        sizes[~np.asarray(keep, bool)] = 0
    segments = offsets_of(sizes.ravel())
    data = np.empty(segments[-1], np.uint8)
    at = segments[:-1].reshape(n, width)
    for j, part in enumerate(parts):
        _place(data, part, at[:, j], sizes[:, j])
    row_bounds = segments[::width]
    return ByteRows(data, row_bounds[:-1], np.diff(row_bounds))


SHORT = 16  # values up to this size are copied one byte position at a time


def _place(data: np.ndarray, part: ByteRows, at: np.ndarray, sizes: np.ndarray) -> None:
    """Copy row i of `part` (its first sizes[i] bytes) to data[at[i]:]."""
    rows = np.flatnonzero(sizes)
    if not len(rows):
        return
    at, starts, sizes = at[rows], part.starts[rows], sizes[rows]
    widest = int(sizes.max())
    if widest <= SHORT:  # headers, varints, numbers: a pass per byte position
        for k in range(widest):
            sel = slice(None) if k < sizes.min() else np.flatnonzero(sizes > k)
            data[at[sel] + k] = part.data[starts[sel] + k]
    elif (starts[1:] == starts[:-1] + sizes[:-1]).all():  # back to back in the source: one masked copy
        marks = np.zeros(len(data) + 1, np.int8)
        marks[at] = 1
        marks[at + sizes] -= 1  # a run ending where the next begins: 1 - 1, the run goes on
        begin = starts[0]
        data[np.cumsum(marks[:-1], dtype=np.int8).view(bool)] = part.data[begin : begin + sizes.sum()]
    else:
        within = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        data[np.repeat(at, sizes) + within] = part.data[np.repeat(starts, sizes) + within]


def take(table: ByteRows, indices: np.ndarray) -> ByteRows:
    """Rows of `table` picked by index, back to back; a table of equal-sized rows (the encoded
    values of a category column) is gathered as one 2-D block."""
    sizes = table.sizes[indices]
    if len(table) and (table.sizes == table.sizes[0]).all():
        width = int(table.sizes[0])
        block = table.data[table.starts[:, None] + np.arange(width)]  # one row per table entry
        return ByteRows(block[indices].ravel(), np.arange(len(indices), dtype=np.int64) * width, sizes)
    return concat_rows([ByteRows(table.data, table.starts[indices], sizes)])
