"""Raw ids → int codes → stable vocabulary ids, and the vocabularies an ingest writes.

`IdEncoder` turns raw id columns into int codes block by block (int64 ids kept as numbers, other
text dictionary-encoded) and settles one code per unique raw id at the end. `vocab_ids` gives each
code its vocabulary id: vocabularies only grow, so a raw id an earlier ingest wrote (`Known`) keeps
its id, and new raw ids get the ids after the largest, in order of first appearance (timestamp,
then raw id). `items_table` adds each item's category and title.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from seqops.config import Paths
from seqops.features.layouts import IngestError

if TYPE_CHECKING:
    from seqops.features.reading import Rows

UNKNOWN_CATEGORY = "unknown"
_POW10 = 10 ** np.arange(1, 19, dtype=np.int64)


# --- raw ids → codes -----------------------------------------------------------------------------


class IdEncoder:
    """Raw ids → int codes, block by block; the global mapping is settled once in `finish`.

    Integer text that round-trips (no signs, inner blanks or leading zeros) is kept as int64, the
    fast path for numeric-id logs (blank ids allowed: they are missing); other text is
    dictionary-encoded per block and stripped on the (small) dictionary. Blank and null ids are
    missing (code -1).
    """

    def __init__(self) -> None:
        # (per-row int ids with -1 for missing, None) or (per-row local codes, block dictionary)
        self.parts: list[tuple[np.ndarray, pa.Array | None]] = []

    def add(self, column: pa.Array, integer_ids: bool = False) -> np.ndarray:
        """Append a block; returns its rows' missing mask. `integer_ids`: the format defines ids as
        integers, so "007" is the id 7 (no check that the text is canonical)."""
        ints = _round_trip_ints(column, canonical=not integer_ids)
        if ints is not None:
            self.parts.append((ints, None))
            return ints < 0
        text = column if pa.types.is_string(column.type) else pc.cast(column, pa.string())
        encoded = pc.dictionary_encode(text)
        dictionary = pc.utf8_trim_whitespace(encoded.dictionary)
        blank = np.append(pc.equal(dictionary, "").to_numpy(zero_copy_only=False), True)
        local = encoded.indices.fill_null(len(dictionary)).to_numpy()
        self.parts.append((local, dictionary))
        return blank[local]

    def finish(self) -> tuple[np.ndarray, pa.Array]:
        """(int32 code per row in the order added, -1 for missing; unique raw ids as text)."""
        ints = [values for values, dictionary in self.parts if dictionary is None]
        texts = [(values, dictionary) for values, dictionary in self.parts if dictionary is not None]
        int_uniques, int_codes = _factorize_ints(np.concatenate(ints)) if ints else (np.zeros(0, np.int64), None)
        uniques = pc.cast(pa.array(int_uniques), pa.string())
        text_codes: list[np.ndarray] = []
        if texts:
            merged = pc.dictionary_encode(pa.concat_arrays([uniques, *(d for _, d in texts)]))
            uniques, entry = merged.dictionary, merged.indices.to_numpy().astype(np.int32)
            entry[pc.equal(merged, "").to_numpy(zero_copy_only=False)] = -1  # blank ids are missing
            if int_codes is not None:
                int_codes = np.append(entry[: len(int_uniques)], -1)[int_codes]  # -1 stays missing
            bounds = np.cumsum([len(int_uniques), *(len(d) for _, d in texts)])
            text_codes = [
                np.append(entry[start:end], -1)[values]  # local code len(d) stands for null
                for (values, _), start, end in zip(texts, bounds[:-1], bounds[1:])
            ]
        int_sizes = np.cumsum([0, *(len(values) for values in ints)])
        int_parts = iter(int_codes[a:b] for a, b in zip(int_sizes[:-1], int_sizes[1:])) if ints else iter(())
        text_parts = iter(text_codes)
        out = [next(int_parts) if dictionary is None else next(text_parts) for _, dictionary in self.parts]
        codes = np.concatenate(out).astype(np.int32, copy=False) if out else np.zeros(0, np.int32)
        return codes, uniques


def _text_length(column: pa.Array) -> int:
    """Total bytes of a string array's values (from its offsets, no pass over the data)."""
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int32)[column.offset : column.offset + len(column) + 1]
    return int(offsets[-1] - offsets[0]) if len(offsets) else 0


def _round_trip_ints(column: pa.Array, canonical: bool = True) -> np.ndarray | None:
    """The ids as int64 (-1 where blank) when every other one is a plain non-negative integer
    (written canonically, unless `canonical` is False); None otherwise (the text path)."""
    if pa.types.is_integer(column.type):
        values = column.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        return values if (values[~column.is_null().to_numpy(zero_copy_only=False)] >= 0).all() else None
    if not pa.types.is_string(column.type):
        return None
    blank_bytes, blank = 0, None
    try:
        values = pc.cast(column, pa.int64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # blanks among the numbers?
        blank = pc.equal(pc.utf8_trim_whitespace(column), "").fill_null(True)
        if not pc.any(blank).as_py():
            return None
        try:
            values = (
                pc.cast(pc.if_else(blank, pa.scalar(None, pa.string()), column), pa.int64()).fill_null(-1).to_numpy()
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        blank_bytes = pc.sum(pc.binary_length(column.filter(blank))).as_py() or 0
        blank = blank.to_numpy(zero_copy_only=False)
    present = values if blank is None else values[~blank]
    if len(present) and present.min() < 0:
        return None
    if not canonical:
        return values
    digits = int(np.searchsorted(_POW10, present, side="right").sum()) + len(present)
    return values if digits == _text_length(column) - blank_bytes else None  # no '+', blanks or leading zeros


def _factorize_ints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unique values ≥ 0, int32 code per value, -1 for the -1 of missing ids): a lookup table when
    the ids are dense enough (at most 16 M + 4 per row), a hash table otherwise."""
    top = int(values.max(initial=-1))
    if top < 4 * len(values) + (1 << 24):
        present = np.zeros(top + 2, dtype=bool)  # the last slot takes the missing ids (-1)
        present[values] = True
        present[-1] = False
        lookup = np.cumsum(present, dtype=np.int32) - 1
        lookup[-1] = -1
        return np.flatnonzero(present), lookup[values]
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    missing = np.flatnonzero(uniques < 0)
    if len(missing):  # the -1 of missing ids got a code of its own: give it -1 and close the gap
        codes = np.where(codes == missing[0], -1, codes - (codes > missing[0]))
        uniques = np.delete(uniques, missing[0])
    return uniques, codes.astype(np.int32)


# --- vocabulary ids --------------------------------------------------------------------------------


def _first_times(codes: np.ndarray, ts: np.ndarray, n: int) -> np.ndarray:
    """Earliest time per code (int64 max where the code has no row)."""
    first = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first, codes, ts)
    return first


def _first_seen(first: np.ndarray, uniques: pa.Array) -> np.ndarray:
    """Dense id (from 1) per code, in order of first appearance (time, then raw id); 0 if never valid."""
    text_rank = np.empty(len(uniques), dtype=np.int64)
    text_rank[pc.sort_indices(uniques).to_numpy()] = np.arange(len(uniques))
    order = np.lexsort((text_rank, first))[: int((first < np.iinfo(np.int64).max).sum())]
    ids = np.zeros(len(uniques), dtype=np.int64)
    ids[order] = np.arange(1, len(order) + 1)
    return ids


@dataclass
class Known:
    """The vocabularies an earlier ingest wrote (empty tables on a first run): their ids never change."""

    users: pa.Table  # raw_id, user_id
    items: pa.Table  # raw_id, item_id, category, title

    @classmethod
    def read(cls, paths: Paths) -> Known:
        return cls(
            _read_vocab(paths.vocab / "users.parquet", "user_id"), _read_vocab(paths.vocab / "items.parquet", "item_id")
        )


def _read_vocab(path: Path, id_col: str) -> pa.Table:
    """A vocabulary file, checked to be one id per raw id and one raw id per id (else no growth can
    keep every id it gave out: refuse, before anything is read or written)."""
    if not path.exists():
        return pa.table({"raw_id": pa.array([], pa.string()), id_col: pa.array([], pa.int64())})
    table = pq.read_table(path)
    for name, kind in (("raw_id", pa.string()), (id_col, pa.int64())):
        table = table.set_column(table.column_names.index(name), name, pc.cast(table[name], kind))
    frame = table.select(["raw_id", id_col]).to_pandas()
    clashes = int(frame["raw_id"].duplicated(keep=False).sum() + frame[id_col].duplicated(keep=False).sum())
    if clashes or (frame[id_col] < 1).any():
        raise IngestError(
            f"{path}: {clashes or int((frame[id_col] < 1).sum())} {id_col}s are not one id per raw id "
            f"(ids from 1); growing it would move them. Nothing was written: restore the file "
            f"(`dvc checkout .seqops/events/vocab`) or remove it to start new ids."
        )
    return table


def _grown_ids(first: np.ndarray, uniques: pa.Array, known: pa.Table) -> np.ndarray:
    """Id per code: a known raw id's own, else (if it has a valid row) the next after the largest
    known id, in order of first appearance; 0 for codes with no valid row that are not known."""
    known_at = pc.index_in(uniques, value_set=known["raw_id"]).to_numpy(zero_copy_only=False)
    is_known = ~np.isnan(known_at)
    never = np.iinfo(np.int64).max
    ids = _first_seen(np.where(is_known, never, first), uniques)
    ids[ids > 0] += int(pc.max(known[known.column_names[1]]).as_py() or 0)
    ids[is_known] = known[known.column_names[1]].to_numpy()[known_at[is_known].astype(np.int64)]
    return ids


def vocab_table(ids: np.ndarray, uniques: pa.Array, id_col: str, known: pa.Table) -> pa.Table:
    """The known rows, then the new ids of this run (`ids` per code, 0 for none), sorted by id."""
    new = np.flatnonzero(ids > int(pc.max(known[id_col]).as_py() or 0))
    table = pa.table({"raw_id": uniques.take(pa.array(new)), id_col: pa.array(ids[new], pa.int64())})
    return pa.concat_tables([known.select(["raw_id", id_col]), table]).sort_by(id_col)


def first_row_category(item: np.ndarray, row_cat: np.ndarray, n_items: int) -> np.ndarray:
    """Category code of each item's first row (in file order) that has one; -1 where none has."""
    first_row = np.full(n_items + 1, len(item))
    np.minimum.at(first_row, np.where(row_cat >= 0, item, n_items), np.arange(len(item)))
    return np.append(row_cat, -1)[first_row[:-1]]


def vocab_ids(rows: Rows, known: Known) -> tuple[np.ndarray, np.ndarray]:
    """User and item id per code (known ids kept, new ones after), each with one more entry for the
    spare code of parked rows: a user id after every other (sorts last), the item id 0."""
    uid_of = _grown_ids(_first_times(rows.user, rows.ts, len(rows.user_ids) + 1)[:-1], rows.user_ids, known.users)
    iid_of = _grown_ids(_first_times(rows.item, rows.ts, len(rows.item_ids) + 1)[:-1], rows.item_ids, known.items)
    last_user = max(int(uid_of.max(initial=0)), int(pc.max(known.users["user_id"]).as_py() or 0))
    return np.append(uid_of, last_user + 1), np.append(iid_of, 0)


def items_table(
    iid_of: np.ndarray, rows: Rows, names: pa.Array, item_cat: np.ndarray, meta: pd.DataFrame | None, known: pa.Table
) -> pa.Table:
    """The item vocabulary with category and title: this run's for the items it read (a known one
    where this run has none), the known row's for the items it did not read."""
    items = vocab_table(iid_of, rows.item_ids, "item_id", known)
    read_here = np.flatnonzero(iid_of > 0)
    at = pd.Index(iid_of[read_here]).get_indexer(items["item_id"].to_numpy())  # -1: not read by this run
    category = names.take(pa.array(np.append(item_cat[read_here], 0)[at], mask=at < 0))
    old_category, old_title = (_known_column(known, name, len(items)) for name in ("category", "title"))
    category = pc.if_else(pc.equal(category, UNKNOWN_CATEGORY), pc.coalesce(old_category, category), category)
    category = pc.coalesce(category, old_category, pa.scalar(UNKNOWN_CATEGORY))
    title = pc.coalesce(_titles(items["raw_id"], meta), old_title)
    return items.append_column("category", category).append_column("title", title)


def _known_column(known: pa.Table, name: str, n: int) -> pa.Array:
    """A text column of the known items in id order (they come first in the grown table), nulls after."""
    values = known.sort_by("item_id")[name].combine_chunks() if name in known.column_names else pa.nulls(len(known))
    return pa.concat_arrays([values.cast(pa.string()), pa.nulls(n - len(known), pa.string())])


def item_categories(
    rows: Rows, first_row_cat: np.ndarray | None, meta: pd.DataFrame | None
) -> tuple[pa.Array, np.ndarray]:
    """(category names, category code per item code): the item metadata's where it has one, else
    the category of the item's first valid row (`first_row_cat`), else 'unknown'."""
    n_rows = len(rows.category_names)
    names = pa.concat_arrays([rows.category_names, pa.array([UNKNOWN_CATEGORY])])
    item_cat = first_row_cat.copy() if first_row_cat is not None else np.full(len(rows.item_ids), -1)
    if meta is not None and len(meta):
        meta = meta.dropna(subset=["category"])
        meta_names = pd.Index(pd.unique(meta["category"]))
        names = pa.concat_arrays([names, pa.array(meta_names.astype(str).tolist(), pa.string())])
        at = pd.Index(meta["raw_id"]).get_indexer(rows.item_ids.to_pandas())
        has = at >= 0
        item_cat[has] = n_rows + 1 + meta_names.get_indexer(meta["category"].to_numpy()[at[has]])
    item_cat[item_cat < 0] = n_rows  # unknown
    return names, item_cat


def _titles(raw_ids: pa.ChunkedArray, meta: pd.DataFrame | None) -> pa.Array:
    if meta is None or not len(meta):
        return pa.nulls(len(raw_ids), pa.string())
    titles = meta.set_index("raw_id")["title"]
    return pa.array(titles.reindex(raw_ids.to_pandas()), pa.string(), from_pandas=True)
