"""Event logs → the canonical events table, id vocabularies and a quarantine of rejected rows.

Files are streamed block by block (`loaders`) into compact arrays (int codes, int64 µs times);
the global steps (duplicates, vocabularies, rating threshold, k-core, sessions) then run once on
those arrays (`cleaning`). Every row read ends up either in the events or in the quarantine with a
reason, its source file and line, so `counts["read"] == counts["kept"] + sum(counts[r] for r in REASONS)`.

Ids are dense ints from 1 (0 is padding). Vocabularies only grow: a raw id an earlier ingest wrote
(under `paths.vocab`) keeps its id whatever this run reads (a one-off `--path` file, late data), and
new raw ids get the ids after the largest, in order of first appearance (timestamp, then raw id).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from queue import Empty, Queue

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from seqops.config import IngestParams, Paths
from seqops.features import cleaning, lineage
from seqops.features.cleaning import REASONS, code
from seqops.io import atomic_path, file_md5
from seqops.features.loaders import SYNTHETIC_COLUMNS, IngestError, Malformed, Plan, Source, first_data_line, plan, read_blocks

__all__ = ["EVENT_COLUMNS", "QUARANTINE_COLUMNS", "RAW_COLUMNS", "REASONS", "IngestError", "IngestResult",
           "counts_table", "ingest", "write_outputs"]

RAW_COLUMNS = SYNTHETIC_COLUMNS  # the synthetic layout (what `seqops generate` writes)
EVENT_COLUMNS = ["user_id", "item_id", "ts", "event_type", "value", "category", "session_id"]
# raw text of the row (parsed values for rows rejected after parsing), where it came from, why
QUARANTINE_COLUMNS = [*RAW_COLUMNS, "value", "source_file", "line", "reason", "detail"]
QUARANTINE_ROLES = {"user": "user_id", "item": "item_id", "category": "category", "event": "event_type",
                    "time": "timestamp", "value": "value"}
UNKNOWN_CATEGORY = "unknown"
EVENTS_SCHEMA = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("ts", pa.timestamp("us", "UTC")),
                           ("event_type", pa.string()), ("value", pa.float64()), ("category", pa.string()),
                           ("session_id", pa.int64())])
QUARANTINE_SCHEMA = pa.schema([(c, pa.int64() if c == "line" else pa.string()) for c in QUARANTINE_COLUMNS])
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
            text_codes = [np.append(entry[start:end], -1)[values]  # local code len(d) stands for null
                          for (values, _), start, end in zip(texts, bounds[:-1], bounds[1:])]
        int_sizes = np.cumsum([0, *(len(values) for values in ints)])
        int_parts = iter(int_codes[a:b] for a, b in zip(int_sizes[:-1], int_sizes[1:])) if ints else iter(())
        text_parts = iter(text_codes)
        out = [next(int_parts) if dictionary is None else next(text_parts) for _, dictionary in self.parts]
        codes = np.concatenate(out).astype(np.int32, copy=False) if out else np.zeros(0, np.int32)
        return codes, uniques


def _text_length(column: pa.Array) -> int:
    """Total bytes of a string array's values (from its offsets, no pass over the data)."""
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int32)[column.offset:column.offset + len(column) + 1]
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
            values = pc.cast(pc.if_else(blank, pa.scalar(None, pa.string()), column), pa.int64()).fill_null(-1).to_numpy()
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


# --- reading -------------------------------------------------------------------------------------

_DONE = object()


def prefetch(blocks: Iterator, depth: int = 2) -> Iterator:
    """Iterate `blocks` in a background thread, `depth` ahead: Arrow parses the next block (without
    the GIL) while the caller cleans this one. Errors surface in the caller, at the same place."""
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for block in blocks:
                if stop.is_set():
                    return
                queue.put(block)
            queue.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            queue.put(exc)

    thread = threading.Thread(target=produce, name="ingest-reader", daemon=True)
    thread.start()
    try:
        while (item := queue.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                queue.get_nowait()
            except Empty:
                thread.join(0.01)

@dataclass
class FileRead:
    """One source file: where its rows start in the arrays, its malformed lines, its hash."""

    path: Path
    first_line: int
    start: int = 0
    rows: int = 0
    malformed: Malformed = field(default_factory=Malformed)
    md5: Future | None = None

    def lines(self, good_index: np.ndarray) -> np.ndarray:
        """Physical line of the good rows with these indices (within the file)."""
        bad = np.asarray(self.malformed.lines, dtype=np.int64) - self.first_line
        shift = np.searchsorted(bad - np.arange(len(bad)), good_index, side="right")
        return good_index + shift + self.first_line


@dataclass
class Rows:
    """Every parsed row, in file order, as compact arrays (codes index the unique raw values)."""

    user: np.ndarray  # int32 code into user_ids (-1: missing)
    item: np.ndarray  # int32 code into item_ids (-1: missing)
    category: np.ndarray | None  # int32 code into category_names (-1: none); None: no category field
    ts: np.ndarray  # int64 µs since the epoch (NO_TIME: unparseable)
    event: np.ndarray  # int8 index into event_types (-1: unknown)
    value: np.ndarray | None  # float64; None: no value field
    reason: np.ndarray  # int8 reason code, 0 = passes the row checks
    user_ids: pa.Array
    item_ids: pa.Array
    category_names: pa.Array


class _Reader:
    """Streams the sources into compact per-row arrays and row-check reasons."""

    def __init__(self, p: IngestParams, latest_us: int, hasher: ThreadPoolExecutor):
        self.p, self.latest_us, self.hasher = p, latest_us, hasher
        self.users, self.items, self.categories = IdEncoder(), IdEncoder(), IdEncoder()
        self.parts: dict[str, list[np.ndarray]] = {"ts": [], "event": [], "value": [], "reason": []}
        self.rejected: list[pa.Table] = []  # row-check rejects: raw text + file + index in file
        self.files: list[FileRead] = []
        self.row_count = 0
        self.start_us = int(pd.Timestamp(p.sasrec_start, tz="UTC").value // 1000)

    def read(self, source: Source) -> None:
        f = FileRead(source.path, first_data_line(source), start=self.row_count)
        f.md5 = self.hasher.submit(file_md5, source.path)
        self.files.append(f)
        for block in prefetch(read_blocks(source, f.malformed, self.p.block_mb)):
            reasons = self._block(block, source, len(self.files) - 1, f.rows)
            if f.rows == 0:
                _check_readable(source, f, block, reasons)
            f.rows += len(reasons)
            self.row_count += len(reasons)
        if f.rows == 0:
            _check_readable(source, f, {}, np.zeros(0, np.int8))

    def _block(self, block: dict[str, pa.Array], source: Source, file_index: int, offset: int) -> np.ndarray:
        layout, n = source.layout, len(block["user"])
        integer = layout.integer_ids
        missing_user, missing_item = self.users.add(block["user"], integer), self.items.add(block["item"], integer)
        if "category" in block:
            self.categories.add(block["category"])
        if layout.time_unit == "row":  # no times in the file: keep the order, one second apart
            ts = self.start_us + (self.row_count + np.arange(n, dtype=np.int64)) * 1_000_000
        else:
            ts = cleaning.parse_time(block["time"], layout.time_unit)
        event = cleaning.event_codes(block.get("event"), n, self.p.event_types, layout.event_map, layout.default_event)
        value, bad_value = cleaning.parse_value(block.get("value"), n)
        reasons = cleaning.row_reasons(missing_user, missing_item, ts, event, bad_value, self.latest_us)
        for name, array in (("ts", ts), ("event", event), ("value", value if "value" in block else None),
                            ("reason", reasons)):
            if array is not None:
                self.parts[name].append(array)
        bad = np.flatnonzero(reasons)
        if len(bad):
            self.rejected.append(_raw_rows(block, bad, reasons[bad], file_index, offset))
        return reasons

    def finish(self) -> Rows:
        (user, user_ids), (item, item_ids) = self.users.finish(), self.items.finish()
        category, names = self.categories.finish() if self.categories.parts else (None, pa.array([], pa.string()))
        value = _concat(self.parts["value"], np.float64) if self.parts["value"] else None
        return Rows(user, item, category,
                    _concat(self.parts["ts"], np.int64), _concat(self.parts["event"], np.int8), value,
                    _concat(self.parts["reason"], np.int8), user_ids, item_ids, names)


def _raw_rows(block: dict[str, pa.Array], rows: np.ndarray, reasons: np.ndarray, file_index: int, offset: int) -> pa.Table:
    take = pa.array(rows)
    text = {column: pc.cast(block[role].take(take), pa.string()) if role in block else pa.nulls(len(rows), pa.string())
            for role, column in QUARANTINE_ROLES.items()}
    return pa.table({**text, "file": pa.array(np.full(len(rows), file_index, np.int32)),
                     "index": pa.array(rows + offset), "code": pa.array(reasons)})


def _check_readable(source: Source, f: FileRead, block: dict[str, pa.Array], reasons: np.ndarray) -> None:
    """The first block of a file with no readable row means a wrong format or mapping: fail at once."""
    if (reasons == 0).any() or not (len(reasons) or f.malformed.lines):
        return
    layout, name = source.layout, source.path.name
    hint = "(no row of the first block is readable: wrong --format or ingest.csv mapping?)"
    if not len(reasons):
        line, text = f.malformed.lines[0], f.malformed.texts[0]
        raise IngestError(f"{name} line {line}: expected {layout.describe()}, found {text[:120]!r} {hint}")
    reason = REASONS[reasons[0] - 1]
    role = {"missing_user_id": "user", "missing_item_id": "item", "bad_timestamp": "time", "negative_timestamp": "time",
            "future_timestamp": "time", "unknown_event_type": "event", "bad_value": "value"}[reason]
    column = layout.roles.get(role, role)
    value = block[role][0].as_py() if role in block else layout.default_event
    what = {"time": f"a time in unit {layout.time_unit!r}", "event": "an event type in ingest.event_types"}.get(role, "")
    line = int(f.lines(np.zeros(1, np.int64))[0])
    raise IngestError(f"{name} line {line}: column {column!r}: {value!r} is {reason.replace('_', ' ')}"
                      f"{' (expected ' + what + ')' if what else ''} {hint}")


# --- vocabularies --------------------------------------------------------------------------------

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
        return cls(_read_vocab(paths.vocab / "users.parquet", "user_id"), _read_vocab(paths.vocab / "items.parquet", "item_id"))


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
        raise IngestError(f"{path}: {clashes or int((frame[id_col] < 1).sum())} {id_col}s are not one id per raw id "
                          f"(ids from 1); growing it would move them. Nothing was written: restore the file "
                          f"(`dvc checkout .seqops/events/vocab`) or remove it to start new ids.")
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


def _vocab_table(ids: np.ndarray, uniques: pa.Array, id_col: str, known: pa.Table) -> pa.Table:
    """The known rows, then the new ids of this run (`ids` per code, 0 for none), sorted by id."""
    new = np.flatnonzero(ids > int(pc.max(known[id_col]).as_py() or 0))
    table = pa.table({"raw_id": uniques.take(pa.array(new)), id_col: pa.array(ids[new], pa.int64())})
    return pa.concat_tables([known.select(["raw_id", id_col]), table]).sort_by(id_col)


def _first_row_category(item: np.ndarray, row_cat: np.ndarray, n_items: int) -> np.ndarray:
    """Category code of each item's first row (in file order) that has one; -1 where none has."""
    first_row = np.full(n_items + 1, len(item))
    np.minimum.at(first_row, np.where(row_cat >= 0, item, n_items), np.arange(len(item)))
    return np.append(row_cat, -1)[first_row[:-1]]


# --- the run -------------------------------------------------------------------------------------

@dataclass
class IngestResult:
    """Canonical events, quarantine, vocabularies, counts per reason and statistics of one ingest."""

    events_table: pa.Table
    quarantine_table: pa.Table
    counts: dict[str, int]
    users_table: pa.Table
    items_table: pa.Table
    stats: dict = field(default_factory=dict)
    files: list[dict] = field(default_factory=list)  # per source file: name, path, size, md5, rows
    meta_files: list[dict] = field(default_factory=list)
    format: str = "synthetic"
    params: IngestParams = field(default_factory=IngestParams)  # what it ran with (manifest, data report)

    @cached_property
    def events(self) -> pd.DataFrame:
        return self.events_table.cast(EVENTS_SCHEMA).to_pandas()

    @cached_property
    def quarantine(self) -> pd.DataFrame:
        return self.quarantine_table.to_pandas()

    @cached_property
    def users(self) -> pd.DataFrame:
        return self.users_table.to_pandas()

    @cached_property
    def items(self) -> pd.DataFrame:
        return self.items_table.to_pandas()


def ingest(path: Path, p: IngestParams, paths: Paths, now: datetime | None = None, fmt: str | None = None) -> IngestResult:
    """Read every source of `path` in format `fmt` (default `p.format`); clean; build the outputs.

    `now` (default: the wall clock) is the reference for `future_timestamp`. The vocabularies of a
    previous run (under `paths.vocab`) are grown: every id they hold is kept (IngestError when they
    cannot be, e.g. a raw id under two ids).
    """
    the_plan = plan(fmt or p.format, Path(path), p)
    known = Known.read(paths)
    now_us = int(pd.Timestamp(now or datetime.now(timezone.utc)).value // 1000)
    with ThreadPoolExecutor(max_workers=1) as hasher:  # hashing overlaps parsing
        reader = _Reader(p, now_us + p.future_tolerance_s * 1_000_000, hasher)
        for source in the_plan.sources:
            reader.read(source)
        result = _build(reader, the_plan, p, known)
        result.meta_files = [{"name": f.name, "path": str(f.resolve()), "size": f.stat().st_size, "md5": file_md5(f)}
                             for f in the_plan.meta_files]
    return result


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)


def _park_invalid(rows: Rows) -> int:
    """Give rows that failed a row check a spare user and item code (one past the last) and a
    harmless time, so the global steps run on whole arrays and those rows sort last; returns the
    number of valid rows. (Their raw text is already kept for the quarantine.)"""
    invalid = rows.reason != 0
    n_valid = len(invalid) - int(invalid.sum())
    if n_valid < len(invalid):
        rows.user[invalid], rows.item[invalid] = len(rows.user_ids), len(rows.item_ids)
        rows.ts[invalid] = rows.ts[~invalid].min() if n_valid else 0
        if rows.category is not None:
            rows.category[invalid] = -1
    return n_valid


@dataclass
class Kept:
    """The kept events, sorted by (user id, time): row positions and their canonical columns."""

    at: np.ndarray  # row positions (into `Rows`)
    user: np.ndarray  # user ids (vocabulary)
    item: np.ndarray  # item ids (vocabulary)
    ts: np.ndarray
    event: np.ndarray


def _vocab_ids(rows: Rows, known: Known) -> tuple[np.ndarray, np.ndarray]:
    """User and item id per code (known ids kept, new ones after), each with one more entry for the
    spare code of parked rows: a user id after every other (sorts last), the item id 0."""
    uid_of = _grown_ids(_first_times(rows.user, rows.ts, len(rows.user_ids) + 1)[:-1], rows.user_ids, known.users)
    iid_of = _grown_ids(_first_times(rows.item, rows.ts, len(rows.item_ids) + 1)[:-1], rows.item_ids, known.items)
    last_user = max(int(uid_of.max(initial=0)), int(pc.max(known.users["user_id"]).as_py() or 0))
    return np.append(uid_of, last_user + 1), np.append(iid_of, 0)


def _clean(rows: Rows, n_valid: int, uid_of: np.ndarray, iid_of: np.ndarray, p: IngestParams) -> Kept:
    """Duplicates, rating threshold and k-core on the valid rows; their reasons land in `rows.reason`."""
    at = cleaning.user_time_order(uid_of[rows.user], rows.ts)[:n_valid]  # parked rows sort last
    user, item, ts, event = uid_of[rows.user[at]], iid_of[rows.item[at]], rows.ts[at], rows.event[at]
    reason = cleaning.duplicates(user, item, event, ts, int(p.duplicate_window_s * 1e6))
    if rows.value is not None and p.rating_threshold is not None and p.below_threshold == "quarantine":
        reason[(reason == 0) & (rows.value[at] < p.rating_threshold)] = code("below_rating_threshold")
    alive = np.flatnonzero(reason == 0)
    reason[alive] = cleaning.kcore(user[alive], item[alive], p.min_user_events, p.min_item_events, p.kcore_iterative)
    rows.reason[at] = reason
    keep = reason == 0
    if keep.all():
        return Kept(at, user, item, ts, event)
    return Kept(at[keep], user[keep], item[keep], ts[keep], event[keep])


def _events_table(rows: Rows, kept: Kept, iid_of: np.ndarray, names: pa.Array, item_cat: np.ndarray,
                  session: np.ndarray, event_types: list[str]) -> pa.Table:
    """The canonical events (EVENT_COLUMNS); event type and category dictionary-encoded."""
    by_iid = np.zeros(int(iid_of.max(initial=0)) + 1, dtype=np.int64)
    by_iid[iid_of] = item_cat  # category code by item id (unused id 0 takes the codes without an id)
    category = by_iid[kept.item]
    if rows.category is not None:  # the row's own category where it has one
        own = rows.category[kept.at]
        category = own if (own >= 0).all() else np.where(own >= 0, own, category)
    value = rows.value[kept.at] if rows.value is not None else np.full(len(kept.ts), np.nan)
    return pa.table({
        "user_id": pa.array(kept.user, pa.int64()), "item_id": pa.array(kept.item, pa.int64()),
        "ts": pa.array(kept.ts, pa.int64()).cast(pa.timestamp("us", "UTC")),
        "event_type": pa.DictionaryArray.from_arrays(pa.array(kept.event), pa.array(event_types, pa.string())),
        "value": pa.array(value),
        "category": pa.DictionaryArray.from_arrays(pa.array(category.astype(np.int32)), names),
        "session_id": pa.array(session),
    })


def _counts(r: _Reader, rows: Rows, kept: Kept) -> dict[str, int]:
    per_reason = np.bincount(rows.reason, minlength=len(REASONS) + 1)[1:]
    per_reason[0] = sum(len(f.malformed.lines) for f in r.files)  # never reach the arrays
    return {"read": len(rows.reason) + int(per_reason[0]), "kept": len(kept.at), **dict(zip(REASONS, map(int, per_reason)))}


def _build(r: _Reader, the_plan: Plan, p: IngestParams, known: Known) -> IngestResult:
    rows = r.finish()
    n_valid = _park_invalid(rows)
    uid_of, iid_of = _vocab_ids(rows, known)
    meta = the_plan.item_meta()
    row_cat = None if rows.category is None else _first_row_category(rows.item, rows.category, len(rows.item_ids))
    names, item_cat = _categories(rows, row_cat, meta)
    item_cat = np.append(item_cat, -1)  # the spare code

    kept = _clean(rows, n_valid, uid_of, iid_of, p)
    session = cleaning.sessions(kept.user, kept.ts, p.session_gap_s)
    events = _events_table(rows, kept, iid_of, names, item_cat, session, p.event_types)
    stats = cleaning.statistics(kept.user, kept.item, kept.ts, kept.event, session, p.event_types, p.session_gap_s)
    kept_per_file = np.bincount(np.searchsorted([f.start for f in r.files], kept.at, side="right") - 1,
                                minlength=len(r.files))
    return IngestResult(events, _quarantine(r, rows, names, item_cat, p.event_types), _counts(r, rows, kept),
                        _vocab_table(uid_of[:-1], rows.user_ids, "user_id", known.users),
                        _items_table(iid_of[:-1], rows, names, item_cat, meta, known.items),
                        stats=stats, files=_file_entries(r.files, kept_per_file, rows.reason), format=the_plan.format,
                        params=p)


def _items_table(iid_of: np.ndarray, rows: Rows, names: pa.Array, item_cat: np.ndarray, meta: pd.DataFrame | None,
                 known: pa.Table) -> pa.Table:
    """The item vocabulary with category and title: this run's for the items it read (a known one
    where this run has none), the known row's for the items it did not read."""
    items = _vocab_table(iid_of, rows.item_ids, "item_id", known)
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


def _categories(rows: Rows, first_row_cat: np.ndarray | None, meta: pd.DataFrame | None) -> tuple[pa.Array, np.ndarray]:
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


def _quarantine(r: _Reader, rows: Rows, names: pa.Array, item_cat: np.ndarray, event_types: list[str]) -> pa.Table:
    """Rejected rows of every kind with file, line and reason, sorted by file and line."""
    parts = []
    for index, f in enumerate(r.files):
        if f.malformed.lines:
            m = len(f.malformed.lines)
            parts.append(pa.table({"file": np.full(m, index, np.int32), "line": np.asarray(f.malformed.lines, np.int64),
                                   "reason": pa.array(["malformed_row"] * m), "detail": pa.array(f.malformed.texts)}))
    parts += [_with_lines(table, r.files) for table in r.rejected]
    late = np.flatnonzero(rows.reason >= code("duplicate"))  # rejected after parsing: parsed values as text
    if len(late):
        category = item_cat[rows.item[late]]
        if rows.category is not None:
            category = np.where(rows.category[late] >= 0, rows.category[late], category)
        value = rows.value[late] if rows.value is not None else np.full(len(late), np.nan)
        parts.append(_with_lines(pa.table({
            "user_id": rows.user_ids.take(pa.array(rows.user[late])),
            "item_id": rows.item_ids.take(pa.array(rows.item[late])),
            "category": names.take(pa.array(category)),
            "event_type": pa.array(event_types).take(pa.array(rows.event[late])),
            "timestamp": pc.cast(pa.array(rows.ts[late]).cast(pa.timestamp("us", "UTC")), pa.string()),
            "value": pc.cast(pa.array(value, from_pandas=True), pa.string()),
            "file": np.searchsorted([f.start for f in r.files], late, side="right").astype(np.int32) - 1,
            "index": late, "code": rows.reason[late]}), r.files, global_index=True))
    if not parts:
        return QUARANTINE_SCHEMA.empty_table()
    table = pa.concat_tables(parts, promote_options="default")
    table = table.take(pc.sort_indices(table, [("file", "ascending"), ("line", "ascending")]))
    table = table.append_column("source_file", pa.array([f.path.name for f in r.files]).take(table["file"]))
    return pa.table({c: table[c] if c in table.column_names else pa.nulls(len(table), QUARANTINE_SCHEMA.field(c).type)
                     for c in QUARANTINE_COLUMNS}, schema=QUARANTINE_SCHEMA)


def _with_lines(table: pa.Table, files: list[FileRead], global_index: bool = False) -> pa.Table:
    """Replace (file, index) by (file, line); `index` is within the file unless `global_index`."""
    file = table["file"].to_numpy()
    index = table["index"].to_numpy()
    line = np.empty(len(index), np.int64)
    for k in np.unique(file):
        at = file == k
        line[at] = files[k].lines(index[at] - (files[k].start if global_index else 0))
    reasons = np.asarray(REASONS, dtype=object)[table["code"].to_numpy() - 1]
    return table.drop_columns(["index", "code"]).append_column("line", pa.array(line)).append_column(
        "reason", pa.array(reasons, pa.string()))


def _file_entries(files: list[FileRead], kept: np.ndarray, reason: np.ndarray) -> list[dict]:
    """Per source file: what it is (name, path, size, md5) and its rows — read, kept, quarantined, and
    of those the bad data (`rows_invalid`, what the gate judges per new file) and the repeats."""
    invalid, repeats = ([code(r) for r in group] for group in (cleaning.DATA_ERRORS, cleaning.DUPLICATES))
    entries = []
    for f, rows_kept in zip(files, kept.tolist()):
        read = f.rows + len(f.malformed.lines)
        per_reason = np.bincount(reason[f.start:f.start + f.rows], minlength=len(REASONS) + 1)
        entries.append({"name": f.path.name, "path": str(f.path.resolve()), "size": f.path.stat().st_size,
                        "md5": f.md5.result(), "rows_read": read, "rows_kept": rows_kept,
                        "rows_quarantined": read - rows_kept,
                        "rows_invalid": len(f.malformed.lines) + int(per_reason[invalid].sum()),
                        "rows_duplicate": int(per_reason[repeats].sum())})
    return entries


# --- outputs -------------------------------------------------------------------------------------

def write_outputs(result: IngestResult, paths: Paths) -> dict:
    """Publish one ingest, all or nothing; return its manifest.

    A result that kept no event is refused (IngestError) before anything is written. Events,
    quarantine, vocabularies, the metrics JSON (counts + stats), the manifest and, when
    `ingest.data_report`, the Evidently data summary are written to temporary files beside their
    places and renamed into place only once every one of them was written (the manifest last: it
    names the events it came with). A failure on the way leaves the previous snapshot as it was.
    """
    _check_publishable(result, paths)
    with ExitStack() as stack:  # on leaving: every rename (in reverse order), or, on an error, none
        def staged(path: Path) -> Path:
            return stack.enter_context(atomic_path(path))

        manifest_tmp = staged(lineage.manifest_path(paths))
        events = staged(paths.events)
        # dictionary-encoded types stay in the file, not in its schema: readers get plain strings
        pq.write_table(result.events_table, events, store_schema=False, use_dictionary=["event_type", "category"],
                       column_encoding={c: "DELTA_BINARY_PACKED" for c in ("user_id", "ts", "session_id")})
        pq.write_table(result.quarantine_table, staged(paths.quarantine))
        pq.write_table(result.users_table, staged(paths.vocab / "users.parquet"))
        pq.write_table(result.items_table, staged(paths.vocab / "items.parquet"))
        staged(paths.ingest_metrics).write_text(json.dumps(metrics_of(result), indent=2) + "\n")
        manifest = lineage.manifest_of(result, paths, result.params, file_md5(events))
        lineage.dump_manifest(manifest, manifest_tmp)
        if result.params.data_report:
            html, json_path = lineage.report_files(paths, manifest["events_md5"])
            lineage.write_data_report(events, staged(html), staged(json_path))
    return manifest


def _check_publishable(result: IngestResult, paths: Paths) -> None:
    """An ingest that kept no event would replace the project's data with nothing: refuse it."""
    counts = result.counts
    if counts["kept"]:
        return
    why = ", ".join(f"{counts[r]:,} {r}" for r in REASONS if counts.get(r)) or "no data rows"
    if counts.get("too_few_user_events"):
        why += f" (k-core: ingest.min_user_events is {result.params.min_user_events})"
    read = counts["read"]
    raise IngestError(f"no event kept of {read:,} row{'' if read == 1 else 's'} read ({why}); nothing was written: "
                      f"the previous snapshot in {paths.events.parent} is unchanged")


def metrics_of(result: IngestResult) -> dict:
    """The DVC metric: counts per reason at the top (what `dvc metrics diff` compares), then the rows
    rejected as bad data (`invalid`) apart from repeats (`duplicates`: exact and near duplicates,
    normal in click logs) and from those a cleaning policy removed (`filtered`: rating threshold,
    k-core), then the statistics of the kept events."""
    counts = result.counts
    return {**counts, "invalid": sum(counts[r] for r in cleaning.DATA_ERRORS),
            "duplicates": sum(counts[r] for r in cleaning.DUPLICATES),
            "filtered": sum(counts[r] for r in cleaning.FILTERS), "stats": result.stats}


def counts_table(counts: dict[str, int]) -> str:
    """A small aligned text table: read, kept, then each reason that rejected rows."""
    read = max(counts.get("read", 0), 1)
    rows = [("read", counts.get("read", 0)), ("kept", counts.get("kept", 0))]
    rows += [(f"  {r}", counts[r]) for r in REASONS if counts.get(r)]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {n:>12,}  {n / read:6.1%}" for name, n in rows)
